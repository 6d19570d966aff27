-- Web UI sessions and run watch links (docs/ui.md). Only the SHA-256 of each secret is kept, so
-- a copy of the database opens no session. Every replica reads the same rows, and they survive
-- restarts. A `ui` session stands for a token (by its hash: revoking the token ends the
-- session); a `watch` link lets a build button read one run and nothing else.
CREATE TABLE ui_sessions (
    hash       TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('ui', 'watch')),
    token_hash TEXT,
    run_id     TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
