//! The broker layer's error type.
//!
//! One struct with a `#[non_exhaustive]` [`ErrorKind`], a message that never
//! contains credentials, and the driver error (fred, lapin) only as the
//! `source`, so no driver type leaks into the public API.

use std::fmt;

/// What kind of failure a [`BrokerError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The URL could not be parsed or has an unknown scheme.
    InvalidUrl,
    /// The scheme is known but its cargo feature is off, or the broker cannot
    /// do this operation.
    Unsupported,
    /// The connection failed or was lost. Temporary: retry with backoff.
    Connection,
    /// No answer in time.
    Timeout,
    /// The queue, exchange or key does not exist.
    NotFound,
    /// The broker refused the request (bad arguments, access denied...).
    Rejected,
    /// What came back could not be decoded.
    Decode,
    /// Bad arguments from the caller.
    InvalidInput,
}

impl ErrorKind {
    /// Stable label for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidUrl => "invalid_url",
            Self::Unsupported => "unsupported",
            Self::Connection => "connection",
            Self::Timeout => "timeout",
            Self::NotFound => "not_found",
            Self::Rejected => "rejected",
            Self::Decode => "decode",
            Self::InvalidInput => "invalid_input",
        }
    }
}

/// A broker-layer failure.
#[derive(thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct BrokerError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl fmt::Debug for BrokerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerError")
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(|s| s.to_string()))
            .finish()
    }
}

impl BrokerError {
    /// A new error. `message` must not contain credentials (use
    /// [`crate::url::redact`]).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the underlying (driver) error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when retrying later may succeed (connection loss, timeout).
    pub fn is_temporary(&self) -> bool {
        matches!(self.kind, ErrorKind::Connection | ErrorKind::Timeout)
    }

    /// A connection error.
    pub fn connection(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Connection, message)
    }

    /// An unsupported operation or disabled feature.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// A caller error.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// A decode error.
    pub fn decode(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Decode, message)
    }
}

/// Result of broker operations.
pub type BrokerResult<T> = Result<T, BrokerError>;
