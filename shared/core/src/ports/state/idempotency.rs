//! Event idempotency: the first invocation to claim an event id runs it and records the outcome; a
//! redelivery gets that outcome back and does nothing. An invocation that died mid-way holds only a
//! short lease, after which the event may be run again (its writes are themselves idempotent).

/// How long a started-but-unfinished event blocks redeliveries: longer than any function runs (the
/// longest timeout in infra/template.yaml is 110 s), so a live invocation is never doubled, and
/// short enough that Lambda's asynchronous retries (about 1 and then 2 more minutes after a
/// failure) find it expired: an invocation that was killed or timed out is run again by the
/// second retry at the latest, not sent to the dead-letter queue.
pub const IDEMPOTENCY_LEASE_SECS: i64 = 150;
/// How long a finished event's outcome is remembered (EventBridge retries for up to 24 h).
pub const IDEMPOTENCY_TTL_SECS: i64 = 24 * 60 * 60;

/// What `begin_event` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventStart {
    /// This invocation owns the event: run it, then `complete_event`.
    New,
    /// The event already ran; here is its outcome. Do nothing.
    Completed(String),
    /// Another invocation is running it now (its lease has not expired).
    InProgress,
}

/// What `run_once` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Once {
    /// The event ran now; its outcome.
    Ran(String),
    /// The event had already run; the first outcome, and nothing was done.
    Replayed(String),
    /// Another invocation holds the event's lease; nothing was done (the caller should fail so the
    /// event is redelivered later).
    Busy,
}
