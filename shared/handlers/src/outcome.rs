//! What a handler did, as data: returned to the Lambda runtime (and so visible in `cargo lambda
//! invoke` and `nodewright invoke`), logged, and asserted in tests.

use nodewright_core::CapacityType;
use serde::Serialize;

/// One thing a handler did or decided not to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// The event is not one this function handles, or not about our capacity.
    #[serde(rename_all = "camelCase")]
    Ignored { reason: String },
    /// The event already ran; nothing was done again.
    #[serde(rename_all = "camelCase")]
    Replayed { event: String },
    #[serde(rename_all = "camelCase")]
    Reserved { pods: usize },
    /// Pods held by another invocation or claim (or already bound): left to their holder.
    #[serde(rename_all = "camelCase")]
    SkippedPods { pods: Vec<String>, reason: String },
    /// A claim an earlier attempt of this invocation wrote but did not launch (or launched without
    /// recording it), launched now as it was decided.
    #[serde(rename_all = "camelCase")]
    ResumedAttempt { claim: String, pods: usize },
    /// The scheduler's plan for the batch: what its new claims cost against the least any
    /// packing of their pods could (the gap is how far above the optimum it may be).
    #[serde(rename_all = "camelCase")]
    Planned {
        pods: usize,
        claims: usize,
        price_per_hour: f64,
        lower_bound_per_hour: f64,
        gap: f64,
    },
    /// Pods packed onto a claim still in flight.
    #[serde(rename_all = "camelCase")]
    PackedOntoClaim { claim: String, pods: usize },
    #[serde(rename_all = "camelCase")]
    Launched {
        claim: String,
        pool: String,
        instance_id: String,
        instance_type: String,
        zone: String,
        capacity_type: CapacityType,
        price_per_hour: Option<f64>,
        pods: usize,
        adopted: bool,
        fell_back_to_on_demand: bool,
    },
    /// A claim written in `launching` and handed to `state-change` to launch (a `Claim Launch`
    /// event on Nodewright's bus): the decision is durable, the instance comes from that invocation.
    #[serde(rename_all = "camelCase")]
    LaunchRequested { claim: String, pool: String, pods: usize },
    /// An Auto Scaling pool asked for one more instance.
    #[serde(rename_all = "camelCase")]
    ScaledUp { claim: String, group: String, pods: usize },
    #[serde(rename_all = "camelCase")]
    LaunchFailed { claim: String, pool: String, error: String },
    #[serde(rename_all = "camelCase")]
    AtLimit {
        pool: String,
        resource: String,
        used: u64,
        requested: u64,
        limit: u64,
    },
    #[serde(rename_all = "camelCase")]
    Unschedulable { pod: String, reason: String },
    #[serde(rename_all = "camelCase")]
    OfferingUnavailable {
        capacity_type: CapacityType,
        instance_type: String,
        zone: String,
        reason: String,
    },
    #[serde(rename_all = "camelCase")]
    ClaimTransition { claim: String, to: String, outcome: String },
    /// A pool's counters disagreed with its live claims and were set to what the claims hold.
    #[serde(rename_all = "camelCase")]
    UsageCorrected {
        pool: String,
        from: nodewright_core::ports::state::PoolUsage,
        to: nodewright_core::ports::state::PoolUsage,
    },
    #[serde(rename_all = "camelCase")]
    Cordoned { node: String, taint: String },
    #[serde(rename_all = "camelCase")]
    Drained {
        node: String,
        evicted: usize,
        skipped: usize,
        /// Deleted directly: the pool's terminationGracePeriod ran out.
        deleted: usize,
        /// Evictions that failed for a reason other than a PDB (retried on the next run).
        failed: usize,
    },
    #[serde(rename_all = "camelCase")]
    DrainBlocked { node: String, error: String },
    #[serde(rename_all = "camelCase")]
    Terminated { instance_ids: Vec<String>, reason: String },
    #[serde(rename_all = "camelCase")]
    NodeDeleted { node: String },
    #[serde(rename_all = "camelCase")]
    ReservationsReleased { holder: String, pods: usize },
    #[serde(rename_all = "camelCase")]
    Adopted { claim: String, instance_id: String },
    /// A Node matched to its claim by providerID got the claim's labels and lost the unregistered
    /// taint.
    #[serde(rename_all = "camelCase")]
    Registered { claim: String, node: String, labels: usize },
    /// A registered node became initialized (Ready, its pool's startup taints gone) and was
    /// labelled `karpenter.sh/initialized`.
    #[serde(rename_all = "camelCase")]
    Initialized { claim: String, node: String },
    /// One step of a run failed; the run went on with the others and the next run retries it.
    #[serde(rename_all = "camelCase")]
    StepFailed {
        step: String,
        target: String,
        error: String,
    },
    /// Registration latency measured from a `Node Ready` event.
    #[serde(rename_all = "camelCase")]
    Ready {
        claim: String,
        node: String,
        launch_to_ready_ms: Option<i64>,
    },
    #[serde(rename_all = "camelCase")]
    Disruption {
        reason: String,
        nodes: Vec<String>,
        replacements: usize,
        saving_per_hour: f64,
    },
    /// A planned disruption not carried out: the cluster changed between planning and acting
    /// (pods arrived or left, or another invocation took the node).
    #[serde(rename_all = "camelCase")]
    DisruptionAborted { nodes: Vec<String>, why: String },
    /// Not planned again: nodes, pods, PDBs and candidates are as they were when a plan at
    /// `planned_at` (epoch ms) found nothing to disrupt (re-planned at least every five minutes).
    #[serde(rename_all = "camelCase")]
    Unchanged { planned_at: i64 },
    /// The run spent its time budget (`consolidation::ACTION_BUDGET`) after `done` disruptions;
    /// `left` were not started: they are stored, and the next run takes up those that still hold.
    #[serde(rename_all = "camelCase")]
    OutOfTime { done: usize, left: usize },
    /// The run took up the plan an earlier run (planned at `planned_at`, epoch ms) did not finish:
    /// of the `stored` actions left, `holding` still held and are carried out instead of planning.
    #[serde(rename_all = "camelCase")]
    Resumed {
        planned_at: i64,
        stored: usize,
        holding: usize,
    },
    /// Scale-in protection of an Auto Scaling pool's instances set: busy ones protected, idle ones
    /// released.
    #[serde(rename_all = "camelCase")]
    Protected {
        group: String,
        protected: Vec<String>,
        released: Vec<String>,
    },
}

impl Action {
    /// What a drain did.
    pub fn drained(node: String, r: &nodewright_core::ports::cluster::DrainReport) -> Action {
        Action::Drained {
            node,
            evicted: r.evicted.len(),
            skipped: r.skipped.len(),
            deleted: r.deleted.len(),
            failed: r.failed.len(),
        }
    }
}

/// Everything one invocation did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    pub function: String,
    pub event_id: String,
    pub actions: Vec<Action>,
    /// pod-pending: how long the batch's oldest pod has been pending (since its creation), for the
    /// `OldestPendingSeconds` metric and the template's pods-pending-too-long alarm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_pending_secs: Option<u64>,
    /// Kubernetes Events to post on pods and nodes (posted after the handler, best effort).
    #[serde(skip)]
    pub events: Vec<nodewright_core::ports::cluster::ObjectEvent>,
}

impl Outcome {
    pub fn new(function: &str, event_id: &str) -> Self {
        Outcome {
            function: function.into(),
            event_id: event_id.into(),
            actions: Vec::new(),
            oldest_pending_secs: None,
            events: Vec::new(),
        }
    }

    /// Adds what a part of this invocation did (one retirement lane, one node's steps), after
    /// what is here.
    pub fn append(&mut self, part: Outcome) {
        self.actions.extend(part.actions);
        self.events.extend(part.events);
    }

    pub fn push(&mut self, a: Action) {
        self.actions.push(a);
    }

    pub fn ignored(function: &str, event_id: &str, reason: impl Into<String>) -> Self {
        let mut o = Outcome::new(function, event_id);
        o.push(Action::Ignored { reason: reason.into() });
        o
    }

    /// Instances launched (not adopted).
    pub fn launched(&self) -> usize {
        self.actions
            .iter()
            .filter(|a| matches!(a, Action::Launched { adopted: false, .. }))
            .count()
    }

    /// A short summary stored as the idempotency record's outcome.
    pub fn summary(&self) -> String {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for a in &self.actions {
            let v = serde_json::to_value(a).unwrap_or_default();
            let name = v
                .get("action")
                .and_then(|n| n.as_str())
                .unwrap_or("unknown")
                .to_string();
            *counts.entry(name).or_default() += 1;
        }
        serde_json::to_string(&counts).unwrap_or_default()
    }
}

/// How a claim transition went, for [`Action::ClaimTransition`].
pub fn transition_name(t: &nodewright_core::ports::state::TransitionOutcome) -> &'static str {
    match t {
        nodewright_core::ports::state::TransitionOutcome::Advanced(_) => "advanced",
        nodewright_core::ports::state::TransitionOutcome::Duplicate(_) => "duplicate",
        nodewright_core::ports::state::TransitionOutcome::Stale(_) => "stale",
    }
}
