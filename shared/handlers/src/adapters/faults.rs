//! Fault injection around the three ports ([`State`], [`Capacity`], [`ClusterApi`]), for crash and
//! retry tests and `nodewright chaos`: at a chosen call the invocation dies (the call never returns
//! and the handler's future is dropped, as when Lambda times out or kills the sandbox), the call
//! fails before it applies (a transient error, or throttling), or it applies and its response is
//! lost (the caller sees an error for a write that happened, as after an SDK retry gave up). Calls
//! are numbered across the ports in the order the handler makes them, so a sweep over every call
//! number reaches every await; a seeded plan instead faults each call with a probability.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nodewright_core::CapacityType;
use nodewright_core::Pod;
use nodewright_core::disruption::Pdb;
use nodewright_core::model::ClaimState;
use nodewright_core::nodepool::Limits;
use nodewright_core::ports::capacity::{InstanceSummary, LaunchOutcome};
use nodewright_core::ports::cluster::{
    ClusterNode, ConfigKind, ConfigObjects, DrainOptions, DrainReport, Listed, ObjectEvent,
};
use nodewright_core::ports::state::{
    ClaimRecord, ClaimUpdate, EventStart, Holder, PoolUsage, PriceSheet, TransitionOutcome, UnavailableOffering,
    UsageDecision, UsageDelta, UsageDrift, UsageSnapshot,
};
use nodewright_core::ports::{AwsError, AwsResult as Result, EpochMillis, KubeError, KubeResult};
use tokio::sync::Notify;

use crate::ports::{Capacity, ClaimLaunch, ClusterApi, State};

/// What happens at the faulty call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// The invocation dies: the call never returns and [`Faults::crashed`] fires.
    Crash,
    /// The call fails without applying (a 500).
    Error,
    /// The call applies; the caller gets an error instead of its result.
    LostResponse,
    /// The call is throttled without applying (`ThrottlingException`, HTTP 429).
    Throttle,
}

impl FaultKind {
    pub const ALL: [FaultKind; 4] = [
        FaultKind::Crash,
        FaultKind::Error,
        FaultKind::LostResponse,
        FaultKind::Throttle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::Error => "error",
            FaultKind::LostResponse => "lost-response",
            FaultKind::Throttle => "throttle",
        }
    }

    /// Parses a name as [`FaultKind::name`] writes it.
    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }
}

/// An error a faulty call returns in place of its result.
trait Injected {
    fn injected(method: &'static str, kind: FaultKind, call: usize) -> Self;
}

impl Injected for AwsError {
    fn injected(method: &'static str, kind: FaultKind, call: usize) -> Self {
        let code = if kind == FaultKind::Throttle {
            "ThrottlingException"
        } else {
            "InternalError"
        };
        AwsError::Aws {
            operation: method,
            code: code.into(),
            message: format!("injected {} at call {call}", kind.name()),
        }
    }
}

impl Injected for KubeError {
    fn injected(method: &'static str, kind: FaultKind, call: usize) -> Self {
        KubeError::Api {
            operation: method.into(),
            code: if kind == FaultKind::Throttle { 429 } else { 500 },
            message: format!("injected {} at call {call}", kind.name()),
        }
    }
}

/// Methods a story calls a few dozen times in 200 seeds (scale-ins, corrections, deletions): at the
/// common rate they would see one or two faults, so some fault kinds never reach them. They fault
/// at [`RARE_RATE`] instead; they are also the calls whose loss matters most.
pub const RARE_METHODS: &[&str] = &[
    "scale_in",
    "scale_up",
    "set_protection",
    "terminate",
    "delete_node",
    "correct_usage",
    "note_usage_checked",
    "mark_offering_unavailable",
    "put_prices",
    "write_status",
];
pub const RARE_RATE: f64 = 0.3;

/// A seeded plan: each call faults with probability `rate` ([`RARE_RATE`] for [`RARE_METHODS`]),
/// with a kind drawn from `kinds`, at most `max` times per invocation.
#[derive(Debug)]
struct RandomPlan {
    rng: u64,
    rate: f64,
    kinds: Vec<FaultKind>,
    max: usize,
    injected: usize,
}

impl RandomPlan {
    fn next(&mut self) -> u64 {
        // splitmix64: small, seedable, good enough to spread faults over calls.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn draw(&mut self, method: &str) -> Option<FaultKind> {
        if self.injected >= self.max || self.kinds.is_empty() {
            return None;
        }
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        // A run without faults (rate 0) stays without them.
        let rate = if self.rate > 0.0 && RARE_METHODS.contains(&method) {
            self.rate.max(RARE_RATE)
        } else {
            self.rate
        };
        if unit >= rate {
            return None;
        }
        self.injected += 1;
        let i = (self.next() % self.kinds.len() as u64) as usize;
        Some(self.kinds[i])
    }
}

/// The fault plan and call counter shared by the wrapped ports of one invocation.
#[derive(Debug, Default)]
pub struct Faults {
    calls: AtomicUsize,
    at: Option<(usize, FaultKind)>,
    random: Option<std::sync::Mutex<RandomPlan>>,
    crashed: Notify,
    /// (call number, method, kind) of every injected fault, in order.
    injected: std::sync::Mutex<Vec<(usize, &'static str, FaultKind)>>,
    /// Calls made per method.
    called: std::sync::Mutex<BTreeMap<&'static str, usize>>,
    /// Tests: after the first call of this method returns, say so and wait to be resumed (one
    /// invocation held between a read and its write while another runs).
    pause: Option<Pause>,
    /// `nodewright bench-scale`: how long each call takes (slept on the runtime's clock).
    latency: Option<Latency>,
    /// Objects returned by listing calls, per method.
    listed: std::sync::Mutex<BTreeMap<&'static str, u64>>,
    /// When each method was first called, on the runtime's clock (`bench-scale`: how long a
    /// pod-pending batch takes to decide, up to its first launch request).
    first_call: std::sync::Mutex<BTreeMap<&'static str, tokio::time::Instant>>,
}

/// How long the real services take, for `nodewright bench-scale` (run on a paused clock, so the
/// sleeps model time without spending it). The figures are typical in-region latencies, stated in
/// docs/operations.md; concurrent calls overlap as they would.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// One DynamoDB request (GetItem, PutItem, UpdateItem, one Query page).
    pub dynamodb_ms: u64,
    /// Items in one Query page of claims (1 MB).
    pub dynamodb_page_items: u64,
    /// One EC2 or Auto Scaling request; CreateFleet (a launch) takes `launch_ms`.
    pub ec2_ms: u64,
    pub launch_ms: u64,
    /// One EventBridge PutEvents (a launch handed off).
    pub events_ms: u64,
    /// One Kubernetes API request, and the server's time per object listed.
    pub kube_ms: u64,
    pub kube_page_items: u64,
    pub kube_object_us: u64,
}

impl Latency {
    /// Typical figures: DynamoDB 5 ms, EC2 100 ms, CreateFleet 1.5 s, EventBridge PutEvents
    /// 30 ms, Kubernetes 15 ms per request plus 0.3 ms per object listed, in pages of 500.
    pub const TYPICAL: Latency = Latency {
        dynamodb_ms: 5,
        dynamodb_page_items: 700,
        ec2_ms: 100,
        launch_ms: 1_500,
        events_ms: 30,
        kube_ms: 15,
        kube_page_items: 500,
        kube_object_us: 300,
    };

    fn of_call(&self, method: &str) -> std::time::Duration {
        let ms = match port_of(method) {
            "State" => self.dynamodb_ms,
            "Capacity" if method == "launch" => self.launch_ms,
            "Capacity" if method == "hand_off_launches" => self.events_ms,
            "Capacity" => self.ec2_ms,
            _ => self.kube_ms,
        };
        std::time::Duration::from_millis(ms)
    }

    /// The extra time of a listing of `objects` beyond its first request: further pages, and the
    /// server's time per object.
    fn of_listing(&self, method: &str, objects: u64) -> std::time::Duration {
        let (page, page_ms, per_object_us) = if port_of(method) == "State" {
            (self.dynamodb_page_items, self.dynamodb_ms, 0)
        } else {
            (self.kube_page_items, self.kube_ms, self.kube_object_us)
        };
        let pages = objects.div_ceil(page.max(1)).max(1);
        std::time::Duration::from_millis((pages - 1) * page_ms)
            + std::time::Duration::from_micros(objects * per_object_us)
    }

    /// The extra time of `lists` per-node Kubernetes listings of `objects` in all, run
    /// [`nodewright_core::ports::NODE_LISTS_IN_FLIGHT`] at once, beyond the first request.
    fn of_node_lists(&self, objects: u64, lists: u64) -> std::time::Duration {
        let lanes = lists.clamp(1, nodewright_core::ports::NODE_LISTS_IN_FLIGHT as u64);
        let waves = lists.div_ceil(lanes).max(1);
        std::time::Duration::from_millis((waves - 1) * self.kube_ms)
            + std::time::Duration::from_micros(objects * self.kube_object_us / lanes)
    }
}

fn port_of(method: &str) -> &'static str {
    PORT_METHODS
        .iter()
        .find(|(_, methods)| methods.contains(&method))
        .map_or("?", |(port, _)| port)
}

/// Where [`Faults::pause_after`] holds an invocation.
#[derive(Debug)]
struct Pause {
    method: &'static str,
    reached: Arc<Notify>,
    resume: Arc<Notify>,
    done: std::sync::atomic::AtomicBool,
}

/// Every port method the wrappers gate, by port: what a chaos run should reach.
pub const PORT_METHODS: &[(&str, &[&str])] = &[
    (
        "State",
        &[
            "begin_event",
            "complete_event",
            "abandon_event",
            "reserve_pods",
            "transfer_pod",
            "release_pod",
            "take_lease",
            "release_lease",
            "create_claim",
            "get_claim",
            "claim_by_instance",
            "live_claims",
            "in_flight_claims",
            "replace_claim",
            "transition_claim",
            "mark_offering_unavailable",
            "unavailable_offerings",
            "try_add_usage",
            "release_usage",
            "mark_usage_running",
            "usage_snapshot",
            "note_usage_checked",
            "correct_usage",
            "prices",
            "put_prices",
            "resume_point",
            "put_resume_point",
        ],
    ),
    (
        "Capacity",
        &[
            "launch",
            "scale_up",
            "terminate",
            "scale_in",
            "set_protection",
            "group_members",
            "instances",
            "describe",
            "current_prices",
            "hand_off_launches",
        ],
    ),
    (
        "ClusterApi",
        &[
            "unschedulable_pods",
            "pods_on_nodes",
            "nodes",
            "node_named",
            "daemonsets",
            "pdbs",
            "cordon_and_taint",
            "drain",
            "delete_node",
            "register_node",
            "config_objects",
            "write_status",
            "record_events",
        ],
    ),
];

/// `Port.method` for a gated method name.
pub fn qualified(method: &str) -> String {
    format!("{}.{method}", port_of(method))
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

    /// Each call faults with probability `rate` (a kind from `kinds`), at most `max` calls; the
    /// same seed gives the same faults for the same sequence of calls.
    pub fn random(seed: u64, rate: f64, kinds: &[FaultKind], max: usize) -> Arc<Faults> {
        Arc::new(Faults {
            random: Some(std::sync::Mutex::new(RandomPlan {
                rng: seed,
                rate,
                kinds: kinds.to_vec(),
                max,
                injected: 0,
            })),
            ..Faults::default()
        })
    }

    /// No fault, but the invocation stops after its first call of `method` returns: `reached` is
    /// notified, and the call's result is handed back once `resume` is notified.
    pub fn pause_after(method: &'static str, reached: Arc<Notify>, resume: Arc<Notify>) -> Arc<Faults> {
        Arc::new(Faults {
            pause: Some(Pause {
                method,
                reached,
                resume,
                done: std::sync::atomic::AtomicBool::new(false),
            }),
            ..Faults::default()
        })
    }

    /// No fault; every call takes the time `latency` gives it (`nodewright bench-scale`).
    pub fn with_latency(latency: Latency) -> Arc<Faults> {
        Arc::new(Faults {
            latency: Some(latency),
            ..Faults::default()
        })
    }

    /// Objects returned by listing calls, per method (`pods_on_nodes`, `nodes`, `live_claims` ...).
    pub fn listed(&self) -> BTreeMap<&'static str, u64> {
        self.listed.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn tally_listed(&self, method: &'static str, objects: usize) {
        *self
            .listed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(method)
            .or_default() += objects as u64;
    }

    /// Counts a listing's objects and spends its extra time.
    async fn count_listed(&self, method: &'static str, objects: usize) {
        self.tally_listed(method, objects);
        if let Some(l) = &self.latency {
            tokio::time::sleep(l.of_listing(method, objects as u64)).await;
        }
    }

    /// `lists` per-node listings in one port call (`pods_on_nodes`): they run
    /// [`nodewright_core::ports::NODE_LISTS_IN_FLIGHT`] at once, each a request plus its objects.
    async fn count_listed_across(&self, method: &'static str, objects: usize, lists: usize) {
        self.tally_listed(method, objects);
        if let Some(l) = &self.latency {
            tokio::time::sleep(l.of_node_lists(objects as u64, lists as u64)).await;
        }
    }

    /// A listing call through the gate, its objects counted.
    async fn gate_list<T, E: Injected>(
        &self,
        method: &'static str,
        call: impl Future<Output = std::result::Result<T, E>>,
        count: impl Fn(&T) -> usize,
    ) -> std::result::Result<T, E> {
        let result = self.gate(method, call).await;
        if let Ok(r) = &result {
            self.count_listed(method, count(r)).await;
        }
        result
    }

    /// When `method` was first called, on the runtime's clock.
    pub fn first_call_at(&self, method: &str) -> Option<tokio::time::Instant> {
        self.first_call
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(method)
            .copied()
    }

    /// How many port calls were made.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The first fault injected, if any: (call number, method).
    pub fn injected(&self) -> Option<(usize, &'static str)> {
        self.injected_all().first().map(|&(call, method, _)| (call, method))
    }

    /// Every fault injected: (call number, method, kind).
    pub fn injected_all(&self) -> Vec<(usize, &'static str, FaultKind)> {
        self.injected.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Injected faults counted by (method, kind).
    pub fn counts(&self) -> BTreeMap<(&'static str, FaultKind), usize> {
        let mut out = BTreeMap::new();
        for (_, method, kind) in self.injected_all() {
            *out.entry((method, kind)).or_default() += 1;
        }
        out
    }

    /// Calls made per method.
    pub fn called(&self) -> BTreeMap<&'static str, usize> {
        self.called.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Completes when the invocation has died; race the handler against it and drop the handler.
    pub async fn crashed(&self) {
        self.crashed.notified().await;
    }

    fn plan(&self, n: usize, method: &str) -> Option<FaultKind> {
        if let Some((at, kind)) = self.at {
            return (at == n).then_some(kind);
        }
        self.random
            .as_ref()
            .and_then(|r| r.lock().unwrap_or_else(|p| p.into_inner()).draw(method))
    }

    async fn gate<T, E: Injected>(
        &self,
        method: &'static str,
        call: impl Future<Output = std::result::Result<T, E>>,
    ) -> std::result::Result<T, E> {
        self.first_call
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(method)
            .or_insert_with(tokio::time::Instant::now);
        if let Some(l) = &self.latency {
            tokio::time::sleep(l.of_call(method)).await;
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        *self
            .called
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(method)
            .or_default() += 1;
        let Some(kind) = self.plan(n, method) else {
            let result = call.await;
            if let Some(p) = &self.pause
                && p.method == method
                && !p.done.swap(true, Ordering::SeqCst)
            {
                p.reached.notify_one();
                p.resume.notified().await;
            }
            return result;
        };
        self.injected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((n, method, kind));
        match kind {
            FaultKind::Crash => {
                self.crashed.notify_one();
                std::future::pending().await
            }
            FaultKind::Error | FaultKind::Throttle => Err(E::injected(method, kind, n)),
            FaultKind::LostResponse => {
                let _applied = call.await;
                Err(E::injected(method, kind, n))
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
    async fn take_lease(&self, name: &str, holder: &str, now: EpochMillis, ttl_secs: i64) -> Result<bool> {
        self.faults
            .gate("take_lease", self.inner.take_lease(name, holder, now, ttl_secs))
            .await
    }
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.faults
            .gate("release_lease", self.inner.release_lease(name, holder))
            .await
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
    async fn live_claims(&self) -> Result<Vec<ClaimRecord>> {
        self.faults
            .gate_list("live_claims", self.inner.live_claims(), Vec::len)
            .await
    }
    async fn in_flight_claims(&self) -> Result<Vec<ClaimRecord>> {
        self.faults
            .gate_list("in_flight_claims", self.inner.in_flight_claims(), Vec::len)
            .await
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
    async fn prices(&self, now: EpochMillis) -> Result<Option<PriceSheet>> {
        self.faults.gate("prices", self.inner.prices(now)).await
    }
    async fn resume_point(&self) -> Result<Option<nodewright_core::disruption::ResumePoint>> {
        self.faults.gate("resume_point", self.inner.resume_point()).await
    }
    async fn put_resume_point(&self, point: Option<&nodewright_core::disruption::ResumePoint>) -> Result<()> {
        self.faults
            .gate("put_resume_point", self.inner.put_resume_point(point))
            .await
    }
    async fn put_prices(&self, sheet: &PriceSheet) -> Result<()> {
        self.faults.gate("put_prices", self.inner.put_prices(sheet)).await
    }
    async fn usage_snapshot(&self, pool: &str) -> Result<UsageSnapshot> {
        self.faults
            .gate("usage_snapshot", self.inner.usage_snapshot(pool))
            .await
    }
    async fn note_usage_checked(&self, pool: &str, drift: &UsageDrift, now: EpochMillis) -> Result<()> {
        self.faults
            .gate("note_usage_checked", self.inner.note_usage_checked(pool, drift, now))
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
    async fn scale_up(&self, group: &str) -> Result<bool> {
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
    async fn group_members(&self, group: &str) -> Result<Vec<String>> {
        self.faults.gate("group_members", self.inner.group_members(group)).await
    }
    async fn instances(&self) -> Result<Vec<InstanceSummary>> {
        self.faults.gate("instances", self.inner.instances()).await
    }
    async fn current_prices(&self, instance_types: &[String], now: EpochMillis) -> Result<PriceSheet> {
        self.faults
            .gate("current_prices", self.inner.current_prices(instance_types, now))
            .await
    }
    async fn describe(&self, instance_ids: &[String]) -> Result<Vec<InstanceSummary>> {
        self.faults.gate("describe", self.inner.describe(instance_ids)).await
    }
    fn has_launch_bus(&self) -> bool {
        self.inner.has_launch_bus()
    }
    async fn hand_off_launches(
        &self,
        requests: &[nodewright_core::model::claim_launch::ClaimLaunchRequest],
    ) -> Result<Vec<String>> {
        self.faults
            .gate("hand_off_launches", self.inner.hand_off_launches(requests))
            .await
    }
}

/// A [`ClusterApi`] whose calls go through a fault plan.
#[derive(Debug, Clone)]
pub struct FaultyCluster<K> {
    pub inner: K,
    pub faults: Arc<Faults>,
}

impl<K: ClusterApi> ClusterApi for FaultyCluster<K> {
    async fn unschedulable_pods(&self) -> KubeResult<Listed<nodewright_core::model::cluster_event::PendingPod>> {
        self.faults
            .gate_list("unschedulable_pods", self.inner.unschedulable_pods(), |l| l.items.len())
            .await
    }
    async fn pods_on_nodes(&self, nodes: &[String]) -> nodewright_core::ports::KubeResult<Listed<Pod>> {
        let listed = self
            .faults
            .gate("pods_on_nodes", self.inner.pods_on_nodes(nodes))
            .await?;
        self.faults
            .count_listed_across("pods_on_nodes", listed.items.len(), nodes.len())
            .await;
        Ok(listed)
    }
    async fn nodes(&self) -> KubeResult<Listed<ClusterNode>> {
        self.faults
            .gate_list("nodes", self.inner.nodes(), |l| l.items.len())
            .await
    }
    async fn node_named(&self, name: &str) -> KubeResult<Option<ClusterNode>> {
        self.faults.gate("node_named", self.inner.node_named(name)).await
    }
    async fn daemonsets(&self) -> KubeResult<Listed<Pod>> {
        self.faults
            .gate_list("daemonsets", self.inner.daemonsets(), |l| l.items.len())
            .await
    }
    async fn pdbs(&self) -> KubeResult<Vec<Pdb>> {
        self.faults.gate_list("pdbs", self.inner.pdbs(), Vec::len).await
    }
    async fn cordon_and_taint(&self, node: &str, taint_key: &str) -> KubeResult<()> {
        self.faults
            .gate("cordon_and_taint", self.inner.cordon_and_taint(node, taint_key))
            .await
    }
    async fn drain(&self, node: &str, options: &DrainOptions) -> KubeResult<DrainReport> {
        self.faults.gate("drain", self.inner.drain(node, options)).await
    }
    async fn delete_node(&self, node: &str) -> KubeResult<bool> {
        self.faults.gate("delete_node", self.inner.delete_node(node)).await
    }
    async fn register_node(
        &self,
        node: &str,
        registration: &nodewright_core::registration::NodeRegistration,
    ) -> KubeResult<bool> {
        self.faults
            .gate("register_node", self.inner.register_node(node, registration))
            .await
    }
    async fn config_objects(&self) -> KubeResult<ConfigObjects> {
        self.faults.gate("config_objects", self.inner.config_objects()).await
    }
    async fn write_status(&self, kind: ConfigKind, name: &str, status: &serde_json::Value) -> KubeResult<bool> {
        self.faults
            .gate("write_status", self.inner.write_status(kind, name, status))
            .await
    }
    async fn record_events(&self, events: &[ObjectEvent]) -> KubeResult<usize> {
        self.faults
            .gate("record_events", self.inner.record_events(events))
            .await
    }
}
