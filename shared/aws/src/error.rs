//! The AWS adapters fail with the ports' [`AwsError`] (re-exported here as `Error`); this module
//! turns an SDK error into it, keeping the AWS error code callers decide on.
//!
//! The message is the error's chain of causes, each level's `Display` joined with ": " (the SDK's
//! `DisplayErrorContext` appends the whole `Debug` dump after that, which no user should read).
//! Errors without an AWS code (the request never got an answer) get the SDK's failure kind as their
//! code: `DispatchFailure`, `Timeout`, `ConstructionFailure` or `ResponseError`.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
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
        let code = match err.code() {
            Some(c) => c.to_string(),
            None => failure_kind(&err.to_string()).to_string(),
        };
        let message = match err.message() {
            Some(m) => m.to_string(),
            None => causes(&err),
        };
        Error::Aws {
            operation,
            code,
            message,
        }
    }
}

/// The SDK's failure kind from its top-level message (`SdkError`'s `Display`), for errors that
/// carry no AWS error code.
fn failure_kind(top: &str) -> &'static str {
    if top.starts_with("dispatch failure") {
        "DispatchFailure"
    } else if top.starts_with("request has timed out") {
        "Timeout"
    } else if top.starts_with("failed to construct request") {
        "ConstructionFailure"
    } else if top.starts_with("response error") {
        "ResponseError"
    } else {
        "Unknown"
    }
}

/// Every level of an error's `source()` chain, `Display`ed and joined with ": "; a level already
/// said by the one above it is skipped.
pub(crate) fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let said = e.to_string();
        if !said.is_empty() && !parts.last().is_some_and(|p| p.contains(&said)) {
            parts.push(said);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Level(&'static str, Option<Box<Level>>);

    impl std::fmt::Display for Level {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Level {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn std::error::Error + 'static))
        }
    }

    #[test]
    fn causes_are_displayed_in_order_without_the_debug_dump() {
        let err = Level(
            "dispatch failure",
            Some(Box::new(Level(
                "io error",
                Some(Box::new(Level("tcp connect error: Connection refused", None))),
            ))),
        );
        let said = causes(&err);
        assert_eq!(
            said,
            "dispatch failure: io error: tcp connect error: Connection refused"
        );
        assert!(!said.contains("Level("), "{said}");
        // A level that repeats its parent's words is not said twice.
        let err = Level("timeout: read", Some(Box::new(Level("read", None))));
        assert_eq!(causes(&err), "timeout: read");
    }

    #[test]
    fn errors_without_a_code_are_named_by_the_sdk_failure_kind() {
        assert_eq!(failure_kind("dispatch failure"), "DispatchFailure");
        assert_eq!(failure_kind("request has timed out"), "Timeout");
        assert_eq!(failure_kind("failed to construct request"), "ConstructionFailure");
        assert_eq!(failure_kind("response error"), "ResponseError");
        assert_eq!(failure_kind("service error"), "Unknown");
        // Still retried: none of these is a permanent code.
        let e = Error::Aws {
            operation: "Query",
            code: failure_kind("dispatch failure").into(),
            message: String::new(),
        };
        assert!(e.is_transient());
    }
}
