//! The ports' errors: [`AwsError`] for the state and capacity ports (what the AWS adapters and
//! their stand-ins fail with), [`KubeError`] for the cluster port. Variants are what a caller
//! decides on: a capacity problem is retried elsewhere, a conflict is re-read, a refusal is
//! reported, a service failure is surfaced.

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// An AWS call failed after the SDK's retries. `code` is the AWS error code when there is one.
    #[error("{operation} failed: {code}: {message}")]
    Aws {
        operation: &'static str,
        code: String,
        message: String,
    },

    /// A stored record could not be read back; names the table, key and field.
    #[error("corrupt record in {table} (key {key}): {reason}")]
    Corrupt { table: String, key: String, reason: String },

    #[error("claim {0:?} not found")]
    ClaimNotFound(String),

    /// Optimistic concurrency lost too many times in a row.
    #[error("claim {0:?} changed concurrently too often; giving up")]
    Contended(String),

    /// No offering could be launched; `tried` says what was attempted and why it failed, and
    /// `unavailable` the offerings found without capacity (capacity type, type, zone, code), for
    /// the caller to record in the ICE cache.
    #[error("no capacity for claim {claim}: {}", .tried.join("; "))]
    NoCapacity {
        claim: String,
        tried: Vec<String>,
        unavailable: Vec<(crate::CapacityType, String, String, String)>,
    },

    /// A safety check refused the operation (e.g. terminating an instance that is not ours).
    #[error("refused: {0}")]
    Refused(String),

    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },

    #[error(transparent)]
    Core(#[from] crate::Error),
}

/// AWS error codes a retry of the same request cannot get past: credentials, permissions, and
/// requests the service rejected as malformed.
const PERMANENT_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "AuthFailure",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ValidationError",
    "ValidationException",
    "MissingParameter",
    "InvalidParameter",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "ResourceNotFoundException",
    "ValidationFailure",
    "OptInRequired",
    "UnsupportedOperation",
    "Unsupported",
    "InvalidAction",
    "MalformedQueryString",
    // The SDK could not build the request: the same input fails the same way.
    "ConstructionFailure",
];

/// Whether an AWS error code names a request no retry can get past: the list above, and EC2's
/// families of client errors (`Invalid*`: a malformed or unknown id, parameter or template;
/// `*.NotFound`, `*.Malformed`).
fn is_permanent_code(code: &str) -> bool {
    PERMANENT_CODES.contains(&code)
        || code.starts_with("Invalid")
        || code.ends_with(".NotFound")
        || code.ends_with(".Malformed")
}

impl AwsError {
    /// Whether the same call could succeed later: throttling, timeouts, service errors, capacity
    /// and lost races yes; refusals, invalid input, corrupt records and permissions no.
    pub fn is_transient(&self) -> bool {
        match self {
            AwsError::Aws { code, .. } => !is_permanent_code(code),
            AwsError::Contended(_) | AwsError::NoCapacity { .. } => true,
            AwsError::Corrupt { .. }
            | AwsError::ClaimNotFound(_)
            | AwsError::Refused(_)
            | AwsError::Invalid { .. }
            | AwsError::Core(_) => false,
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        AwsError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The AWS error code, when this is an AWS failure.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            AwsError::Aws { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The error of the cluster port (what the Kubernetes adapter and its stand-in fail with).
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
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
    Core(#[from] crate::Error),
}

impl KubeError {
    /// Whether the same call could succeed later: conflicts, blocked drains, timeouts, throttling,
    /// server and transport errors yes; missing objects, permissions, invalid input and other
    /// client errors (4xx) no.
    pub fn is_transient(&self) -> bool {
        match self {
            KubeError::Conflict { .. }
            | KubeError::PdbBlocked { .. }
            | KubeError::DoNotDisrupt { .. }
            | KubeError::Timeout { .. }
            | KubeError::Client { .. } => true,
            KubeError::Api { code, .. } => *code == 429 || *code >= 500,
            KubeError::NotFound { .. }
            | KubeError::Unauthorized { .. }
            | KubeError::Invalid { .. }
            | KubeError::Core(_) => false,
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        KubeError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// HTTP status of an API error, if it was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            KubeError::NotFound { .. } => Some(404),
            KubeError::Conflict { .. } => Some(409),
            KubeError::Unauthorized { code, .. } | KubeError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

pub type AwsResult<T, E = AwsError> = std::result::Result<T, E>;
pub type KubeResult<T, E = KubeError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(code: &str) -> AwsError {
        AwsError::Aws {
            operation: "Call",
            code: code.into(),
            message: String::new(),
        }
    }

    /// Retried only when a retry can succeed: throttling, service and transport failures and
    /// capacity; never what the same request will fail again with.
    #[test]
    fn only_errors_a_retry_can_get_past_are_transient() {
        for code in [
            "ThrottlingException",
            "RequestLimitExceeded",
            "ProvisionedThroughputExceededException",
            "InternalError",
            "ServiceUnavailable",
            "InsufficientInstanceCapacity",
            "DispatchFailure",
            "Timeout",
            "ResponseError",
        ] {
            assert!(aws(code).is_transient(), "{code}");
        }
        for code in [
            "AccessDeniedException",
            "UnauthorizedOperation",
            "ValidationError",
            "InvalidParameterValue",
            "InvalidLaunchTemplateId.NotFound",
            "InvalidInstanceID.Malformed",
            "InvalidAMIID.NotFound",
            "ConstructionFailure",
            "OptInRequired",
        ] {
            assert!(!aws(code).is_transient(), "{code}");
        }
        assert!(!AwsError::Refused("not ours".into()).is_transient());
        assert!(!AwsError::invalid("field", "bad").is_transient());
        assert!(
            !AwsError::Corrupt {
                table: "t".into(),
                key: "k".into(),
                reason: "r".into()
            }
            .is_transient()
        );
        assert!(AwsError::Contended("c".into()).is_transient());
        assert!(
            KubeError::Api {
                operation: "list".into(),
                code: 429,
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !KubeError::Unauthorized {
                operation: "list".into(),
                code: 403,
                message: String::new()
            }
            .is_transient()
        );
        assert!(
            !KubeError::Api {
                operation: "patch".into(),
                code: 422,
                message: String::new()
            }
            .is_transient()
        );
    }
}
