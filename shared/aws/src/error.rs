//! One error type for the AWS adapters. Variants are what a caller decides on: a capacity problem is
//! retried elsewhere, a conflict is re-read, a refusal is reported, an AWS failure is surfaced.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_smithy_types::error::display::DisplayErrorContext;

#[derive(Debug, thiserror::Error)]
pub enum Error {
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

    /// No offering could be launched; `tried` says what was attempted and why it failed.
    #[error("no capacity for claim {claim}: {}", .tried.join("; "))]
    NoCapacity { claim: String, tried: Vec<String> },

    /// A safety check refused the operation (e.g. terminating an instance that is not ours).
    #[error("refused: {0}")]
    Refused(String),

    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },

    #[error(transparent)]
    Core(#[from] nodewright_core::Error),
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
];

impl Error {
    /// Whether the same call could succeed later: throttling, timeouts, service errors, capacity
    /// and lost races yes; refusals, invalid input, corrupt records and permissions no.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Aws { code, .. } => !PERMANENT_CODES.contains(&code.as_str()),
            Error::Contended(_) | Error::NoCapacity { .. } => true,
            Error::Corrupt { .. }
            | Error::ClaimNotFound(_)
            | Error::Refused(_)
            | Error::Invalid { .. }
            | Error::Core(_) => false,
        }
    }

    pub(crate) fn aws<E>(operation: &'static str, err: E) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let code = err.code().unwrap_or("Unknown").to_string();
        let message = match err.message() {
            Some(m) => m.to_string(),
            None => DisplayErrorContext(&err).to_string(),
        };
        Error::Aws {
            operation,
            code,
            message,
        }
    }

    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The AWS error code, when this is an AWS failure.
    pub fn aws_code(&self) -> Option<&str> {
        match self {
            Error::Aws { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
