//! The one public error of every provider call, and the rule that decides what may be retried.

use std::time::Duration;

/// A boxed source error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result of a provider call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether a call may safely be repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// Status, list, cancel, approve: repeating them changes nothing.
    Idempotent,
    /// Trigger and rerun: each call may start a build.
    StartsBuild,
}

/// What went wrong in a provider call. Each adapter maps provider answers into it in one place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request never left (connect or DNS failure): safe to retry.
    #[error("request not sent: {source}")]
    NotSent {
        /// The transport error.
        #[source]
        source: BoxError,
    },
    /// The request may have been processed (timeout, reset, or 5xx after the body was sent).
    #[error("request may have been processed: {source}")]
    MaybeSent {
        /// The transport error or the server's answer.
        #[source]
        source: BoxError,
    },
    /// The provider refused to process the request because of its rate limit.
    #[error("rate limited by the provider{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs_f32())).unwrap_or_default())]
    RateLimited {
        /// How long the provider asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The credentials were refused.
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// The provider's message.
        message: String,
    },
    /// The credentials lack a permission or scope.
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// The provider's message.
        message: String,
    },
    /// The object does not exist (or the credentials cannot see it).
    #[error("not found: {message}")]
    NotFound {
        /// The provider's message.
        message: String,
    },
    /// The provider refused the request as invalid.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// The provider's message.
        message: String,
    },
    /// The provider (or this target) cannot do this operation.
    #[error("operation not supported: {operation}")]
    Unsupported {
        /// The operation's name.
        operation: &'static str,
    },
    /// The request conflicts with the object's state.
    #[error("conflict: {message}")]
    Conflict {
        /// The provider's message.
        message: String,
    },
    /// The provider is temporarily unavailable and did not process the request.
    #[error("provider unavailable: {message}")]
    Unavailable {
        /// The provider's message.
        message: String,
    },
    /// Anything else (an unexpected answer).
    #[error("{message}")]
    Other {
        /// What happened.
        message: String,
    },
}

impl Error {
    /// Wrap a transport error that happened before the request was sent.
    pub fn not_sent(source: impl Into<BoxError>) -> Self {
        Self::NotSent { source: source.into() }
    }

    /// Wrap an error after which the request may have been processed.
    pub fn maybe_sent(source: impl Into<BoxError>) -> Self {
        Self::MaybeSent { source: source.into() }
    }

    /// An unexpected answer.
    pub fn other(message: impl Into<String>) -> Self {
        Self::Other { message: message.into() }
    }

    /// The retry rule: idempotent calls retry every transient error; calls that start a build
    /// retry only errors that prove the request was not processed.
    pub fn is_retryable(&self, kind: CallKind) -> bool {
        match self {
            Self::NotSent { .. } | Self::RateLimited { .. } => true,
            Self::MaybeSent { .. } | Self::Unavailable { .. } => kind == CallKind::Idempotent,
            _ => false,
        }
    }

    /// The wait the provider asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    /// A stable machine-readable name for the variant (API bodies, metrics labels, events).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotSent { .. } => "not_sent",
            Self::MaybeSent { .. } => "maybe_sent",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unauthenticated { .. } => "unauthenticated",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::NotFound { .. } => "not_found",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::Unsupported { .. } => "unsupported",
            Self::Conflict { .. } => "conflict",
            Self::Unavailable { .. } => "unavailable",
            Self::Other { .. } => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<Error> {
        vec![
            Error::not_sent("connect refused"),
            Error::maybe_sent("timeout"),
            Error::RateLimited { retry_after: Some(Duration::from_secs(3)) },
            Error::Unauthenticated { message: "bad".into() },
            Error::PermissionDenied { message: "scope".into() },
            Error::NotFound { message: "gone".into() },
            Error::InvalidRequest { message: "bad".into() },
            Error::Unsupported { operation: "approve" },
            Error::Conflict { message: "busy".into() },
            Error::Unavailable { message: "503".into() },
            Error::other("weird"),
        ]
    }

    #[test]
    fn idempotent_calls_retry_every_transient_error() {
        let retried: Vec<_> = all().iter().filter(|e| e.is_retryable(CallKind::Idempotent)).map(Error::code).collect();
        assert_eq!(retried, ["not_sent", "maybe_sent", "rate_limited", "unavailable"]);
    }

    #[test]
    fn build_starting_calls_retry_only_when_not_processed() {
        let retried: Vec<_> = all().iter().filter(|e| e.is_retryable(CallKind::StartsBuild)).map(Error::code).collect();
        assert_eq!(retried, ["not_sent", "rate_limited"]);
    }

    #[test]
    fn rate_limit_message_names_the_wait() {
        let e = Error::RateLimited { retry_after: Some(Duration::from_secs(2)) };
        assert_eq!(e.to_string(), "rate limited by the provider (retry after 2s)");
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(Error::RateLimited { retry_after: None }.to_string(), "rate limited by the provider");
    }
}
