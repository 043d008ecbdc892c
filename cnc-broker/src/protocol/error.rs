//! The one error type of the protocol module, with stable reason labels.

/// Why bytes from the broker or the result backend could not be decoded.
///
/// Every variant has a short, stable [`reason`](DecodeError::reason) label
/// meant for counters (`decode_errors_total{reason="not_json"}`) and logs.
/// Decoding never panics and never executes anything: a pickle, msgpack or
/// yaml payload is reported as [`DecodeError::UnsupportedContentType`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not valid JSON (or not the JSON shape expected at the top).
    #[error("{what} is not valid JSON: {detail}")]
    NotJson {
        /// Which part was being parsed (`envelope`, `body`, ...).
        what: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// The JSON ends early: the message was cut off.
    #[error("{what} is truncated: {detail}")]
    Truncated {
        /// Which part was being parsed.
        what: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// The JSON nests deeper than the parser allows (128 levels).
    #[error("{what} nests too deeply")]
    TooDeep {
        /// Which part was being parsed.
        what: &'static str,
    },
    /// The body is not valid UTF-8.
    #[error("{what} is not valid UTF-8")]
    NotUtf8 {
        /// Which part was being decoded.
        what: &'static str,
    },
    /// The Redis envelope's `body` is not valid base64.
    #[error("body is not valid base64: {0}")]
    BadBase64(String),
    /// A serializer other than JSON (pickle, msgpack, yaml, ...). Reported,
    /// never executed.
    #[error("unsupported content type {0:?} (only application/json is decoded)")]
    UnsupportedContentType(String),
    /// A content encoding or body encoding this module does not handle
    /// (for example a compressed body).
    #[error("unsupported encoding {0:?}")]
    UnsupportedEncoding(String),
    /// The message is larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of what was offered.
        size: usize,
        /// The configured limit ([`crate::protocol::Limits`]).
        limit: usize,
    },
    /// A field that must be present is absent (or null).
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field is present but has the wrong shape.
    #[error("field `{field}` is malformed: {detail}")]
    BadField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// One event object is not a usable Celery event.
    #[error("bad event: {0}")]
    BadEvent(#[from] cnc_model::EventShapeError),
}

impl DecodeError {
    /// A short, stable label for counters: `not_json`, `truncated`,
    /// `too_deep`, `not_utf8`, `bad_base64`, `unsupported_content_type`,
    /// `unsupported_encoding`, `too_large`, `missing_field`, `bad_field`,
    /// `bad_event`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotJson { .. } => "not_json",
            Self::Truncated { .. } => "truncated",
            Self::TooDeep { .. } => "too_deep",
            Self::NotUtf8 { .. } => "not_utf8",
            Self::BadBase64(_) => "bad_base64",
            Self::UnsupportedContentType(_) => "unsupported_content_type",
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::TooLarge { .. } => "too_large",
            Self::MissingField(_) => "missing_field",
            Self::BadField { .. } => "bad_field",
            Self::BadEvent(_) => "bad_event",
        }
    }

    /// Classify a `serde_json` error met while parsing `what`.
    pub(crate) fn json(what: &'static str, err: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let detail = err.to_string();
        match err.classify() {
            Category::Eof => Self::Truncated { what, detail },
            // Valid JSON of the wrong shape (an array where an object goes, a
            // number where a string goes).
            Category::Data => Self::BadField {
                field: what,
                detail,
            },
            _ if detail.starts_with("recursion limit exceeded") => Self::TooDeep { what },
            _ => Self::NotJson { what, detail },
        }
    }

    /// A malformed field.
    pub(crate) fn bad(field: &'static str, detail: impl Into<String>) -> Self {
        Self::BadField {
            field,
            detail: detail.into(),
        }
    }
}
