//! Fault injection around the [`State`] and [`Capacity`] ports, for crash and retry tests: at a
//! chosen call the invocation dies (the call never returns and the handler's future is dropped,
//! as when Lambda times out or kills the sandbox), the call fails before it applies (a transient
//! error), or it applies and its response is lost (the caller sees an error for a write that
//! happened). Calls are numbered across both ports in the order the handler makes them, so a
//! sweep over every call number reaches every await.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nodewright_core::CapacityType;
use nodewright_core::model::ClaimState;
use nodewright_core::nodepool::Limits;
use nodewright_core::ports::capacity::{InstanceSummary, LaunchOutcome};
use nodewright_core::ports::state::{
    ClaimRecord, ClaimUpdate, EventStart, Holder, PoolUsage, Reservation, TransitionOutcome, UnavailableOffering,
    UsageDecision, UsageDelta, UsageSnapshot,
};
use nodewright_core::ports::{AwsError as Error, AwsResult as Result, EpochMillis};
use tokio::sync::Notify;

use crate::ports::{Capacity, ClaimLaunch, State};

/// What happens at the faulty call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The invocation dies: the call never returns and [`Faults::crashed`] fires.
    Crash,
    /// The call fails without applying.
    Error,
    /// The call applies; the caller gets an error instead of its result.
    LostResponse,
}

impl FaultKind {
    pub const ALL: [FaultKind; 3] = [FaultKind::Crash, FaultKind::Error, FaultKind::LostResponse];
}

/// The fault plan and call counter shared by the wrapped ports of one invocation.
#[derive(Debug, Default)]
pub struct Faults {
    calls: AtomicUsize,
    at: Option<(usize, FaultKind)>,
    crashed: Notify,
    /// (call number, method) of the injected fault, once injected.
    injected: std::sync::Mutex<Option<(usize, &'static str)>>,
}

impl Faults {
    /// No fault: only counts calls.
    pub fn none() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    /// `kind` at call number `call` (0-based).
    pub fn at(call: usize, kind: FaultKind) -> Arc<Faults> {
        Arc::new(Faults {
            at: Some((call, kind)),
            ..Faults::default()
        })
    }

    /// How many port calls were made.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The fault injected, if the plan's call was reached: (call number, method).
    pub fn injected(&self) -> Option<(usize, &'static str)> {
        *self.injected.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Completes when the invocation has died; race the handler against it and drop the handler.
    pub async fn crashed(&self) {
        self.crashed.notified().await;
    }

    async fn gate<T>(&self, method: &'static str, call: impl Future<Output = Result<T>>) -> Result<T> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let Some((at, kind)) = self.at.filter(|(at, _)| *at == n) else {
            return call.await;
        };
        *self.injected.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, method));
        let injected = || Error::Aws {
            operation: method,
            code: "InternalError".into(),
            message: format!("injected fault at call {at}"),
        };
        match kind {
            FaultKind::Crash => {
                self.crashed.notify_one();
                std::future::pending().await
            }
            FaultKind::Error => Err(injected()),
            FaultKind::LostResponse => {
                let _applied = call.await;
                Err(injected())
            }
        }
    }
}

/// A [`State`] whose calls go through a fault plan.
#[derive(Debug, Clone)]
pub struct FaultyState<S> {
    pub inner: S,
    pub faults: Arc<Faults>,
}

/// A [`Capacity`] whose calls go through a fault plan.
#[derive(Debug, Clone)]
pub struct FaultyCapacity<C> {
    pub inner: C,
    pub faults: Arc<Faults>,
}

impl<S: State> State for FaultyState<S> {
    async fn begin_event(&self, key: &str, now: EpochMillis) -> Result<EventStart> {
        self.faults.gate("begin_event", self.inner.begin_event(key, now)).await
    }
    async fn complete_event(&self, key: &str, outcome: &str, now: EpochMillis) -> Result<()> {
        self.faults
            .gate("complete_event", self.inner.complete_event(key, outcome, now))
            .await
    }
    async fn abandon_event(&self, key: &str) -> Result<()> {
        self.faults.gate("abandon_event", self.inner.abandon_event(key)).await
    }
    async fn reserve_pods(&self, uids: &[String], holder: &Holder, now: EpochMillis, ttl: i64) -> Result<Vec<String>> {
        self.faults
            .gate("reserve_pods", self.inner.reserve_pods(uids, holder, now, ttl))
            .await
    }
    async fn transfer_pod(&self, uid: &str, from: &Holder, to: &Holder, now: EpochMillis, ttl: i64) -> Result<bool> {
        self.faults
            .gate("transfer_pod", self.inner.transfer_pod(uid, from, to, now, ttl))
            .await
    }
    async fn release_pod(&self, uid: &str, holder: &Holder) -> Result<bool> {
        self.faults
            .gate("release_pod", self.inner.release_pod(uid, holder))
            .await
    }
    async fn reservations(&self, now: EpochMillis) -> Result<Vec<Reservation>> {
        self.faults.gate("reservations", self.inner.reservations(now)).await
    }
    async fn create_claim(&self, claim: &ClaimRecord) -> Result<bool> {
        self.faults.gate("create_claim", self.inner.create_claim(claim)).await
    }
    async fn get_claim(&self, id: &str) -> Result<Option<ClaimRecord>> {
        self.faults.gate("get_claim", self.inner.get_claim(id)).await
    }
    async fn claim_by_instance(&self, instance_id: &str) -> Result<Option<ClaimRecord>> {
        self.faults
            .gate("claim_by_instance", self.inner.claim_by_instance(instance_id))
            .await
    }
    async fn claims(&self) -> Result<Vec<ClaimRecord>> {
        self.faults.gate("claims", self.inner.claims()).await
    }
    async fn replace_claim(&self, claim: &ClaimRecord, expected_version: u64) -> Result<bool> {
        self.faults
            .gate("replace_claim", self.inner.replace_claim(claim, expected_version))
            .await
    }
    async fn transition_claim(
        &self,
        id: &str,
        to: ClaimState,
        at: EpochMillis,
        update: &ClaimUpdate,
    ) -> Result<TransitionOutcome> {
        self.faults
            .gate("transition_claim", self.inner.transition_claim(id, to, at, update))
            .await
    }
    async fn mark_offering_unavailable(
        &self,
        capacity_type: CapacityType,
        instance_type: &str,
        zone: &str,
        reason: &str,
        now: EpochMillis,
    ) -> Result<()> {
        self.faults
            .gate(
                "mark_offering_unavailable",
                self.inner
                    .mark_offering_unavailable(capacity_type, instance_type, zone, reason, now),
            )
            .await
    }
    async fn unavailable_offerings(&self, now: EpochMillis) -> Result<Vec<UnavailableOffering>> {
        self.faults
            .gate("unavailable_offerings", self.inner.unavailable_offerings(now))
            .await
    }
    async fn try_add_usage(&self, pool: &str, delta: &UsageDelta, limits: &Limits) -> Result<UsageDecision> {
        self.faults
            .gate("try_add_usage", self.inner.try_add_usage(pool, delta, limits))
            .await
    }
    async fn release_usage(&self, pool: &str, delta: &UsageDelta, was_in_flight: bool) -> Result<()> {
        self.faults
            .gate("release_usage", self.inner.release_usage(pool, delta, was_in_flight))
            .await
    }
    async fn mark_usage_running(&self, pool: &str, nodes: u64) -> Result<()> {
        self.faults
            .gate("mark_usage_running", self.inner.mark_usage_running(pool, nodes))
            .await
    }
    async fn usage_snapshot(&self, pool: &str) -> Result<UsageSnapshot> {
        self.faults
            .gate("usage_snapshot", self.inner.usage_snapshot(pool))
            .await
    }
    async fn note_usage_checked(&self, pool: &str, version: u64, now: EpochMillis) -> Result<()> {
        self.faults
            .gate("note_usage_checked", self.inner.note_usage_checked(pool, version, now))
            .await
    }
    async fn correct_usage(
        &self,
        pool: &str,
        usage: &PoolUsage,
        expected_version: u64,
        now: EpochMillis,
    ) -> Result<bool> {
        self.faults
            .gate(
                "correct_usage",
                self.inner.correct_usage(pool, usage, expected_version, now),
            )
            .await
    }
}

impl<C: Capacity> Capacity for FaultyCapacity<C> {
    async fn launch(&self, launch: &ClaimLaunch, now: EpochMillis) -> Result<LaunchOutcome> {
        self.faults.gate("launch", self.inner.launch(launch, now)).await
    }
    async fn scale_up(&self, group: &str) -> Result<()> {
        self.faults.gate("scale_up", self.inner.scale_up(group)).await
    }
    async fn terminate(&self, instance_ids: &[String]) -> Result<()> {
        self.faults.gate("terminate", self.inner.terminate(instance_ids)).await
    }
    async fn scale_in(&self, group: &str, instance_ids: &[String]) -> Result<Vec<String>> {
        self.faults
            .gate("scale_in", self.inner.scale_in(group, instance_ids))
            .await
    }
    async fn set_protection(&self, group: &str, instance_ids: &[String], protect: bool) -> Result<()> {
        self.faults
            .gate(
                "set_protection",
                self.inner.set_protection(group, instance_ids, protect),
            )
            .await
    }
    async fn instances(&self) -> Result<Vec<InstanceSummary>> {
        self.faults.gate("instances", self.inner.instances()).await
    }
    async fn describe(&self, instance_ids: &[String]) -> Result<Vec<InstanceSummary>> {
        self.faults.gate("describe", self.inner.describe(instance_ids)).await
    }
}
