//! The Kubernetes adapter fails with the cluster port's [`KubeError`] (re-exported here as
//! `Error`); this module classifies a kube client error into it.

pub use nodewright_core::ports::KubeError as Error;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Classifies a kube client error for `operation` on the object `kind`/`name`
/// (`Error::from_kube(...)` with this in scope).
pub(crate) trait FromKube {
    fn from_kube(err: kube::Error, operation: &str, kind: &'static str, name: &str) -> Self;
}

impl FromKube for Error {
    fn from_kube(err: kube::Error, operation: &str, kind: &'static str, name: &str) -> Self {
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
}
