//! The adapter's one error type, classified so callers can decide (retry, skip, give up).

/// Errors from the Kubernetes adapter.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object does not exist (HTTP 404).
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    /// A write lost an optimistic-concurrency race (HTTP 409) after the allowed retries.
    #[error("conflict writing {kind} {name:?}: {message}")]
    Conflict {
        kind: &'static str,
        name: String,
        message: String,
    },
    /// Evictions still refused by PodDisruptionBudgets when the drain deadline passed.
    #[error("drain of node {node:?} blocked by PodDisruptionBudgets at the deadline: {}", pods.join(", "))]
    PdbBlocked { node: String, pods: Vec<String> },
    /// A pod on the node carries `karpenter.sh/do-not-disrupt` and the drain is voluntary.
    #[error("node {node:?} has do-not-disrupt pods: {}", pods.join(", "))]
    DoNotDisrupt { node: String, pods: Vec<String> },
    /// The API server rejected our credentials (401) or our RBAC role (403).
    #[error("unauthorized ({code}) for {operation}: {message}")]
    Unauthorized {
        operation: String,
        code: u16,
        message: String,
    },
    /// The call did not finish within its timeout.
    #[error("{operation} timed out after {seconds} s")]
    Timeout { operation: String, seconds: u64 },
    /// Any other API error (status and message from the server).
    #[error("{operation} failed ({code}): {message}")]
    Api {
        operation: String,
        code: u16,
        message: String,
    },
    /// Transport or client-side failure (connection, TLS, decoding).
    #[error("{operation}: {message}")]
    Client { operation: String, message: String },
    /// Bad configuration or input, naming the field.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A Kubernetes object the core model could not take.
    #[error(transparent)]
    Core(#[from] nodewright_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the same call could succeed later: conflicts, blocked drains, timeouts, throttling,
    /// server and transport errors yes; missing objects, permissions, invalid input and other
    /// client errors (4xx) no.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Conflict { .. }
            | Error::PdbBlocked { .. }
            | Error::DoNotDisrupt { .. }
            | Error::Timeout { .. }
            | Error::Client { .. } => true,
            Error::Api { code, .. } => *code == 429 || *code >= 500,
            Error::NotFound { .. } | Error::Unauthorized { .. } | Error::Invalid { .. } | Error::Core(_) => false,
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Classifies a kube client error for `operation` on the object `kind`/`name`.
    pub(crate) fn from_kube(err: kube::Error, operation: &str, kind: &'static str, name: &str) -> Self {
        match err {
            kube::Error::Api(status) => {
                let code = status.code;
                let message = status.message.clone();
                match code {
                    404 => Error::NotFound {
                        kind,
                        name: name.to_string(),
                    },
                    409 => Error::Conflict {
                        kind,
                        name: name.to_string(),
                        message,
                    },
                    401 | 403 => Error::Unauthorized {
                        operation: operation.to_string(),
                        code,
                        message,
                    },
                    _ => Error::Api {
                        operation: operation.to_string(),
                        code,
                        message,
                    },
                }
            }
            other => Error::Client {
                operation: operation.to_string(),
                message: other.to_string(),
            },
        }
    }

    /// HTTP status of an API error, if it was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::NotFound { .. } => Some(404),
            Error::Conflict { .. } => Some(409),
            Error::Unauthorized { code, .. } | Error::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}
