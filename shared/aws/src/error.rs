//! The AWS adapters fail with the ports' [`AwsError`] (re-exported here as `Error`); this module
//! turns an SDK error into it, keeping the AWS error code callers decide on.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_smithy_types::error::display::DisplayErrorContext;
pub use nodewright_core::ports::AwsError as Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds an [`Error::Aws`] from an SDK error (`Error::aws(operation, err)` with this in scope).
pub(crate) trait FromSdk {
    fn aws<E>(operation: &'static str, err: E) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static;
}

impl FromSdk for Error {
    fn aws<E>(operation: &'static str, err: E) -> Self
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
}
