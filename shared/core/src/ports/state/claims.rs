//! Node claims: one record per node Nodewright decided to launch, from decision to termination.
//! Claims move forward only (see `ClaimState::transition`), under an optimistic version number, so
//! a late or duplicated event can never rewind or resurrect one.

use std::collections::BTreeMap;

use crate::model::{ClaimState, Transition};
use crate::ports::EpochMillis;
use crate::{CapacityType, Resources};

/// A node claim as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRecord {
    pub id: String,
    pub pool: String,
    pub state: ClaimState,
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub capacity_type: Option<CapacityType>,
    pub zone: Option<String>,
    pub price_per_hour: Option<f64>,
    pub allocatable: Option<Resources>,
    /// Sum of the requests of the pods planned onto the claim (daemonset overhead included), so a
    /// later batch can pack onto the claim while it is still in flight.
    pub requested: Option<Resources>,
    /// Host ports the pods planned onto the claim bind, so a later batch does not pack a pod that
    /// binds one of them onto the claim while it is in flight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_ports: Vec<crate::model::HostPort>,
    /// Labels the plan chose for the node beyond what its pool gives every node (the value of a
    /// multi-valued custom requirement a pod asked for): registration writes them, and a later
    /// batch sees them on the claim while it is in flight.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Pod uids reserved onto this claim.
    pub pods: Vec<String>,
    /// When the claim entered each state (epoch ms).
    pub transitions: BTreeMap<ClaimState, EpochMillis>,
    /// Where the capacity comes from: `fleet` or `asg:<group name>`.
    pub backing: String,
    /// Drift hash of the EC2NodeClass the claim was launched under (`Ec2NodeClass::drift_hash`);
    /// None for adopted instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_class_hash: Option<String>,
    /// Digest of the workload pods last seen on the claim's node, and when that set last changed
    /// (epoch ms): consolidateAfter counts from this change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods_changed_at: Option<EpochMillis>,
    /// The offerings the claim was decided with (cheapest first, at most [`MAX_STORED_OFFERINGS`]),
    /// so a retry of a decision whose invocation died before launching can launch it as decided.
    /// Dropped once the launch is recorded (`Launched`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offerings: Vec<crate::scheduler::InstanceOption>,
    /// When an Auto Scaling pool's group was raised by one for this claim (epoch ms), so a retry of
    /// the decision does not raise it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_requested_at: Option<EpochMillis>,
    /// The Node the instance registered as (from its Ready report): an interruption or a
    /// termination finds the node by name instead of listing every node. Checked against the
    /// node's providerID before use (private-IP names come back with new instances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Incremented by every write; the condition for the next one.
    pub version: u64,
}

impl ClaimRecord {
    /// A new claim in `launching`, as the scheduler decided it.
    pub fn launching(id: &str, pool: &str, pods: Vec<String>, now: EpochMillis) -> Self {
        ClaimRecord {
            id: id.into(),
            pool: pool.into(),
            state: ClaimState::Launching,
            instance_id: None,
            instance_type: None,
            capacity_type: None,
            zone: None,
            price_per_hour: None,
            allocatable: None,
            requested: None,
            host_ports: Vec::new(),
            labels: BTreeMap::new(),
            pods,
            transitions: BTreeMap::from([(ClaimState::Launching, now)]),
            backing: "fleet".into(),
            node_class_hash: None,
            pods_digest: None,
            pods_changed_at: None,
            offerings: Vec::new(),
            scale_requested_at: None,
            node_name: None,
            version: 0,
        }
    }

    /// Moves the record to `to` at `at` with what was learned, if that is forward (the version is
    /// bumped); otherwise leaves it untouched and says why. Every state store applies transitions
    /// through this one function.
    pub fn advance(&mut self, to: ClaimState, at: EpochMillis, update: &ClaimUpdate) -> Transition {
        let transition = self.state.transition(to);
        if transition != Transition::Advance {
            return transition;
        }
        self.state = to;
        self.transitions.entry(to).or_insert(at);
        self.version += 1;
        if to == ClaimState::Launched {
            // Kept only until the launch is recorded (a retry of a dead decision launches from
            // them); after that they are dead weight in every read of the claims.
            self.offerings = Vec::new();
        }
        if update.instance_id.is_some() {
            self.instance_id.clone_from(&update.instance_id);
        }
        if update.instance_type.is_some() {
            self.instance_type.clone_from(&update.instance_type);
        }
        if update.capacity_type.is_some() {
            self.capacity_type = update.capacity_type;
        }
        if update.zone.is_some() {
            self.zone.clone_from(&update.zone);
        }
        if update.price_per_hour.is_some() {
            self.price_per_hour = update.price_per_hour;
        }
        if update.allocatable.is_some() {
            self.allocatable.clone_from(&update.allocatable);
        }
        if update.node_name.is_some() {
            self.node_name.clone_from(&update.node_name);
        }
        transition
    }

    pub fn entered(&self, state: ClaimState) -> Option<EpochMillis> {
        self.transitions.get(&state).copied()
    }

    /// When an ended claim may be forgotten (epoch seconds, DynamoDB's TTL unit): its end plus
    /// [`CLAIM_RETENTION_SECS`]. None while it is live.
    pub fn expires_at(&self) -> Option<i64> {
        if !self.state.is_terminal() {
            return None;
        }
        let ended = self
            .entered(self.state)
            .or_else(|| self.transitions.values().max().copied())
            .unwrap_or(0);
        Some(ended.div_euclid(1000) + CLAIM_RETENTION_SECS)
    }

    /// Whether the pool's `nodesInFlight` counts this claim: from its charge until it becomes
    /// Ready (`mark_usage_running`), whatever it went through instead (a claim stopped or
    /// terminated before Ready stays counted until its release).
    pub fn counted_in_flight(&self) -> bool {
        self.entered(ClaimState::Ready).is_none()
    }
}

/// How long a claim is kept after it ended (Terminated or Failed): long enough for late events
/// about its instance to find it and for the reconciler to terminate an instance that outlived it
/// (every minute), short enough that the store does not grow with the cluster's history. Ended
/// claims are never read on hot paths (`State::live_claims`); they expire by TTL.
pub const CLAIM_RETENTION_SECS: i64 = 7 * 86_400;

/// The most offerings a claim record keeps (about 80 bytes each; items are limited to 400 KB).
pub const MAX_STORED_OFFERINGS: usize = 200;

/// Facts learned along with a transition (the launch result, mostly).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClaimUpdate {
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub capacity_type: Option<CapacityType>,
    pub zone: Option<String>,
    pub price_per_hour: Option<f64>,
    pub allocatable: Option<Resources>,
    pub node_name: Option<String>,
}

/// What a transition did.
#[derive(Debug, Clone, PartialEq)]
pub enum TransitionOutcome {
    /// The claim moved; the stored record after the write.
    Advanced(ClaimRecord),
    /// The claim was already in that state.
    Duplicate(ClaimRecord),
    /// The claim is past that state; the event was late and is ignored.
    Stale(ClaimRecord),
}
