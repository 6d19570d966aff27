//! A small Server-Sent Events reader: splits a byte stream into messages and remembers the last
//! event id so a reconnect can resume with `Last-Event-ID`.

/// One dispatched SSE message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    /// The `event:` field, if any.
    pub(crate) event: Option<String>,
    /// The `id:` of this message, or the last one seen before it.
    pub(crate) id: Option<String>,
    /// All `data:` lines joined with `\n`.
    pub(crate) data: String,
}

/// Incremental parser (the SSE rules, minus what a CLI does not need).
#[derive(Debug, Default)]
pub(crate) struct Parser {
    buf: Vec<u8>,
    data: Vec<String>,
    event: Option<String>,
    /// The id of the last dispatched message: what a reconnect sends as `Last-Event-ID`.
    pub(crate) last_id: Option<String>,
    /// An `id:` seen in the message being received, committed when that message ends.
    pending_id: Option<String>,
    /// The server's `retry:` advice in milliseconds.
    pub(crate) retry_ms: Option<u64>,
    saw_data: bool,
}

impl Parser {
    /// A parser resuming after `last_id`.
    pub(crate) fn resuming(last_id: Option<String>) -> Self {
        Self { last_id, ..Self::default() }
    }

    /// Feed bytes; returns the messages they complete. A partial line stays buffered.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<Message> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') {
            // A CR at the very end may be the first half of CRLF: wait for the next byte.
            if self.buf[pos] == b'\r' && pos + 1 == self.buf.len() {
                break;
            }
            let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
            let skip = if self.buf[pos] == b'\r' && self.buf.get(pos + 1) == Some(&b'\n') { 2 } else { 1 };
            self.buf.drain(..pos + skip);
            if let Some(m) = self.line(&line) {
                out.push(m);
            }
        }
        out
    }

    /// Drop a half-received message (the connection broke in the middle of it).
    pub(crate) fn reset_partial(&mut self) {
        self.buf.clear();
        self.data.clear();
        self.event = None;
        self.pending_id = None;
        self.saw_data = false;
    }

    fn line(&mut self, line: &str) -> Option<Message> {
        if line.is_empty() {
            if let Some(id) = self.pending_id.take() {
                self.last_id = Some(id);
            }
            let had = std::mem::take(&mut self.saw_data);
            let data = std::mem::take(&mut self.data).join("\n");
            let event = self.event.take();
            return had.then(|| Message { event, id: self.last_id.clone(), data });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                self.data.push(value.to_string());
                self.saw_data = true;
            }
            "event" => self.event = Some(value.to_string()),
            "id" if !value.contains('\0') => self.pending_id = Some(value.to_string()),
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.retry_ms = Some(ms);
                }
            }
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_ids_comments_and_split_chunks() {
        let mut p = Parser::default();
        assert!(p.feed(b": keep-alive\n\n").is_empty());
        let mut got = p.feed(b"id: 7\ndata: {\"a\":");
        assert!(got.is_empty());
        got.extend(p.feed(b"1}\n\nid: 8\r\nevent: run\r\ndata: x\r\ndata: y\r\n\r"));
        got.extend(p.feed(b"\nretry: 1500\n\n"));
        assert_eq!(
            got,
            vec![
                Message { event: None, id: Some("7".into()), data: "{\"a\":1}".into() },
                Message { event: Some("run".into()), id: Some("8".into()), data: "x\ny".into() },
            ]
        );
        assert_eq!(p.last_id.as_deref(), Some("8"));
        assert_eq!(p.retry_ms, Some(1500));
    }

    #[test]
    fn a_broken_message_does_not_move_the_resume_point() {
        let mut p = Parser::resuming(Some("3".into()));
        assert!(p.feed(b"id: 4\ndata: half").is_empty());
        p.reset_partial();
        // Event 4 never arrived whole, so a reconnect must ask for everything after 3.
        assert_eq!(p.last_id.as_deref(), Some("3"));
        let got = p.feed(b"id: 4\ndata: whole\n\n");
        assert_eq!(got[0].data, "whole");
        assert_eq!(p.last_id.as_deref(), Some("4"));
    }
}
