//! The pending-pod watcher: a small in-cluster program that turns what the cluster cannot schedule
//! into EventBridge events for the `pod-pending` function, and Nodewright nodes turning Ready into
//! `Node Ready` events for `state-change`.
//!
//! - [`batch`] collects unschedulable pods into batches (1 s idle / 10 s max, Karpenter's window)
//!   and drops pod versions already sent.
//! - [`entry`] turns a batch into EventBridge entries under the 256 KB entry limit.
//! - [`send`] puts entries with retries of the entries EventBridge refused.
//! - [`ready`] decides when a node's Ready transition is worth an event.
//!
//! The wire schema is `nodewright_core::model::cluster_event` (docs/events.md).

pub mod batch;
pub mod entry;
pub mod ready;
pub mod send;

/// Errors of the watcher.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{field}: {reason}")]
    Config { field: String, reason: String },
    #[error("pod {pod} alone is {bytes} bytes, over the {limit} byte EventBridge entry limit")]
    PodTooLarge { pod: String, bytes: usize, limit: usize },
    #[error("PutEvents failed for {failed} of {total} entries after {attempts} attempts: {last_error}")]
    Send {
        failed: usize,
        total: usize,
        attempts: u32,
        last_error: String,
    },
    #[error("encode event detail: {0}")]
    Encode(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
