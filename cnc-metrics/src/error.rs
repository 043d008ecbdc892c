//! Errors of the exporters. Transport errors (tonic, hyper) are only ever a
//! source, never part of the public type.

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration cannot work (bad endpoint, header, scheme).
    Config,
    /// An export did not reach the receiver, or it refused it.
    Export,
    /// An export took longer than its deadline.
    Timeout,
}

/// An exporter error.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct MetricsError {
    /// The kind.
    pub kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl MetricsError {
    /// A configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Config,
            message: message.into(),
            source: None,
        }
    }

    /// An export error.
    pub fn export(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Export,
            message: message.into(),
            source: None,
        }
    }

    /// A timeout.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Timeout,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}

/// Shorthand.
pub type MetricsResult<T> = Result<T, MetricsError>;
