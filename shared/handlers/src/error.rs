//! The handlers' one error type. `Event` and `Config` name the offending field or variable.

/// Errors of the handlers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The event cannot be handled as sent (malformed, oversized, wrong schema).
    #[error("event {field}: {reason}")]
    Event { field: String, reason: String },
    /// Configuration (environment variable or NodePool file) is missing or invalid.
    #[error("{variable}: {reason}")]
    Config { variable: String, reason: String },
    /// Another invocation holds this event's lease; fail so the event is redelivered later.
    #[error("event {0} is being handled by another invocation")]
    Busy(String),
    #[error(transparent)]
    Aws(#[from] nodewright_aws::Error),
    #[error(transparent)]
    Kube(#[from] nodewright_kube::Error),
    #[error(transparent)]
    Core(#[from] nodewright_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn event(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Event {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A core validation error about the event, kept with the field it names.
    pub fn invalid_event(e: nodewright_core::Error) -> Self {
        match e {
            nodewright_core::Error::Invalid { field, reason } => Error::Event { field, reason },
            other => Error::event("detail", other.to_string()),
        }
    }

    pub fn config(variable: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            variable: variable.into(),
            reason: reason.into(),
        }
    }

    /// Whether retrying the same event could succeed (transient), as opposed to bad input.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Error::Event { .. } | Error::Config { .. } | Error::Core(_))
    }
}
