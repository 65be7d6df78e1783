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
    /// Another invocation held an Auto Scaling group's lease throughout; fail so the event is
    /// redelivered (its claim stays launching and the retry raises the group for it).
    #[error("Auto Scaling group {0} is being changed by another invocation")]
    GroupBusy(String),
    /// Another invocation is matching this Auto Scaling instance to a claim; fail so the event is
    /// redelivered and sees that invocation's result.
    #[error("instance {0} is being matched to a claim by another invocation")]
    InstanceBusy(String),
    #[error(transparent)]
    Aws(#[from] nodewright_core::ports::AwsError),
    #[error(transparent)]
    Kube(#[from] nodewright_core::ports::KubeError),
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

    /// Whether retrying the same event could succeed (transient), as opposed to bad input, bad
    /// configuration, a refusal or a permission a retry will not get past (those go to the log,
    /// not back to the retry queue).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Busy(_) | Error::GroupBusy(_) | Error::InstanceBusy(_) => true,
            Error::Aws(e) => e.is_transient(),
            Error::Kube(e) => e.is_transient(),
            Error::Event { .. } | Error::Config { .. } | Error::Core(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_a_retry_can_get_past_are_retried() {
        let aws = |code: &str| {
            Error::Aws(nodewright_core::ports::AwsError::Aws {
                operation: "CreateFleet",
                code: code.into(),
                message: "m".into(),
            })
        };
        assert!(aws("RequestLimitExceeded").is_retryable());
        assert!(aws("InternalError").is_retryable());
        assert!(!aws("UnauthorizedOperation").is_retryable());
        assert!(!aws("ValidationException").is_retryable());
        assert!(!Error::Aws(nodewright_core::ports::AwsError::Refused("not ours".into())).is_retryable());
        assert!(
            !Error::Aws(nodewright_core::ports::AwsError::Corrupt {
                table: "t".into(),
                key: "k".into(),
                reason: "r".into()
            })
            .is_retryable()
        );
        let api = |code: u16| {
            Error::Kube(nodewright_core::ports::KubeError::Api {
                operation: "evict".into(),
                code,
                message: "m".into(),
            })
        };
        assert!(api(429).is_retryable());
        assert!(api(503).is_retryable());
        assert!(!api(422).is_retryable());
        assert!(
            !Error::Kube(nodewright_core::ports::KubeError::Unauthorized {
                operation: "list".into(),
                code: 403,
                message: "m".into()
            })
            .is_retryable()
        );
        assert!(Error::Busy("e".into()).is_retryable());
        assert!(!Error::event("detail", "bad").is_retryable());
    }
}
