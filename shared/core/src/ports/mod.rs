//! The three ports the handlers act through, and the records they deal in. The core owns them;
//! each has an adapter over the real services (`nodewright-aws` for [`State`] and [`Capacity`],
//! `nodewright-kube` for [`ClusterApi`]) and an in-process one (`nodewright_handlers::adapters::memory`)
//! used by `nodewright invoke`, the simulator, the handler tests and the decision-time benchmark.
//! Nothing here does I/O, so the handlers, the memory adapters and the simulator build without any
//! SDK.

pub mod capacity;
pub mod cluster;
mod error;
pub mod state;

use std::future::Future;

pub use error::{AwsError, AwsResult, KubeError, KubeResult};

use crate::disruption::Pdb;
use crate::model::ClaimState;
use crate::model::claim_launch::ClaimLaunchRequest;
use crate::model::cluster_event::PendingPod;
use crate::nodepool::Limits;
use crate::scheduler::InstanceOption;
use crate::{CapacityType, NodePool, Pod};
use capacity::{InstanceSummary, LaunchOutcome};
use cluster::{ClusterNode, ConfigKind, ConfigObjects, DrainOptions, DrainReport, Listed, ObjectEvent};
use state::{
    ClaimRecord, ClaimUpdate, EventStart, Holder, PoolUsage, TransitionOutcome, UnavailableOffering, UsageDecision,
    UsageDelta, UsageDrift, UsageSnapshot,
};

/// Milliseconds since the Unix epoch. Every time the ports see is passed in explicitly (never read
/// from the clock inside an adapter) so that TTLs and lifecycle ordering are testable.
pub type EpochMillis = i64;

/// The current time, for callers at the edge (Lambda handlers, the CLI).
pub fn now_millis() -> EpochMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Durable state (DynamoDB in AWS).
pub trait State: Send + Sync {
    fn begin_event(&self, key: &str, now: EpochMillis) -> impl Future<Output = AwsResult<EventStart>> + Send;
    fn complete_event(&self, key: &str, outcome: &str, now: EpochMillis) -> impl Future<Output = AwsResult<()>> + Send;
    fn abandon_event(&self, key: &str) -> impl Future<Output = AwsResult<()>> + Send;

    /// Reserves each pod for `holder`; returns the uids won (others are held by someone else).
    fn reserve_pods(
        &self,
        uids: &[String],
        holder: &Holder,
        now: EpochMillis,
        ttl_secs: i64,
    ) -> impl Future<Output = AwsResult<Vec<String>>> + Send;
    fn transfer_pod(
        &self,
        uid: &str,
        from: &Holder,
        to: &Holder,
        now: EpochMillis,
        ttl_secs: i64,
    ) -> impl Future<Output = AwsResult<bool>> + Send;
    fn release_pod(&self, uid: &str, holder: &Holder) -> impl Future<Output = AwsResult<bool>> + Send;

    /// Takes the named lease for `holder` through `now + ttl_secs` (whole seconds, inclusive)
    /// when it is free, expired or already `holder`'s; false while another holder has it. Guards
    /// read-modify-writes of what lives outside DynamoDB (an Auto Scaling group's desired
    /// capacity), so concurrent invocations take turns.
    fn take_lease(
        &self,
        name: &str,
        holder: &str,
        now: EpochMillis,
        ttl_secs: i64,
    ) -> impl Future<Output = AwsResult<bool>> + Send;
    /// Gives the lease back if `holder` still has it (else nothing).
    fn release_lease(&self, name: &str, holder: &str) -> impl Future<Output = AwsResult<()>> + Send;

    fn create_claim(&self, claim: &ClaimRecord) -> impl Future<Output = AwsResult<bool>> + Send;
    fn get_claim(&self, id: &str) -> impl Future<Output = AwsResult<Option<ClaimRecord>>> + Send;
    fn claim_by_instance(&self, instance_id: &str) -> impl Future<Output = AwsResult<Option<ClaimRecord>>> + Send;
    /// Every claim kept, ended ones included until they expire ([`state::CLAIM_RETENTION_SECS`]):
    /// for inspection and tests. Handlers read [`State::live_claims`].
    fn claims(&self) -> impl Future<Output = AwsResult<Vec<ClaimRecord>>> + Send;
    /// The claims not ended (consistent read): what every handler decides from. Its cost follows
    /// the cluster's live nodes, never its history (ended claims are stored apart and expire).
    fn live_claims(&self) -> impl Future<Output = AwsResult<Vec<ClaimRecord>>> + Send;
    /// The claims launching or not yet Ready (Launching, Launched, Registered), from the state
    /// index: what provisioning packs onto and resumes, a few claims whatever the cluster's size.
    /// Eventually consistent (a claim written a moment ago may be missing or a version behind),
    /// so callers change a claim only by a version-conditional write.
    fn in_flight_claims(&self) -> impl Future<Output = AwsResult<Vec<ClaimRecord>>> + Send;
    /// Writes `claim` if the stored version is still `expected_version` (false: someone else wrote).
    fn replace_claim(&self, claim: &ClaimRecord, expected_version: u64)
    -> impl Future<Output = AwsResult<bool>> + Send;
    fn transition_claim(
        &self,
        id: &str,
        to: ClaimState,
        at: EpochMillis,
        update: &ClaimUpdate,
    ) -> impl Future<Output = AwsResult<TransitionOutcome>> + Send;

    fn mark_offering_unavailable(
        &self,
        capacity_type: CapacityType,
        instance_type: &str,
        zone: &str,
        reason: &str,
        now: EpochMillis,
    ) -> impl Future<Output = AwsResult<()>> + Send;
    fn unavailable_offerings(
        &self,
        now: EpochMillis,
    ) -> impl Future<Output = AwsResult<Vec<UnavailableOffering>>> + Send;

    fn try_add_usage(
        &self,
        pool: &str,
        delta: &UsageDelta,
        limits: &Limits,
    ) -> impl Future<Output = AwsResult<UsageDecision>> + Send;
    fn release_usage(
        &self,
        pool: &str,
        delta: &UsageDelta,
        was_in_flight: bool,
    ) -> impl Future<Output = AwsResult<()>> + Send;
    fn mark_usage_running(&self, pool: &str, nodes: u64) -> impl Future<Output = AwsResult<()>> + Send;
    /// The pool's counters, their write version and the reconciler's last check (consistent read).
    /// The live price sheet the scheduled function last stored (None: never, or expired at `now`).
    fn prices(&self, now: EpochMillis) -> impl Future<Output = AwsResult<Option<state::PriceSheet>>> + Send;
    /// Stores a refreshed price sheet (replacing the previous one).
    fn put_prices(&self, sheet: &state::PriceSheet) -> impl Future<Output = AwsResult<()>> + Send;
    fn usage_snapshot(&self, pool: &str) -> impl Future<Output = AwsResult<UsageSnapshot>> + Send;
    /// Where the last consolidation run stopped ([`crate::disruption::ResumePoint`]; None: it
    /// finished, or none was stored), read consistently.
    fn resume_point(&self) -> impl Future<Output = AwsResult<Option<crate::disruption::ResumePoint>>> + Send;
    /// Stores the point a consolidation run will stop at, replacing the last; None clears it.
    fn put_resume_point(
        &self,
        point: Option<&crate::disruption::ResumePoint>,
    ) -> impl Future<Output = AwsResult<()>> + Send;
    /// Records the difference between the counters and the live claims seen at `now`; a
    /// difference equal to the one recorded keeps its older time (it has persisted since then).
    fn note_usage_checked(
        &self,
        pool: &str,
        drift: &UsageDrift,
        now: EpochMillis,
    ) -> impl Future<Output = AwsResult<()>> + Send;
    /// Overwrites the counters if still at `expected_version`; false when they moved.
    fn correct_usage(
        &self,
        pool: &str,
        usage: &PoolUsage,
        expected_version: u64,
        now: EpochMillis,
    ) -> impl Future<Output = AwsResult<bool>> + Send;
}

/// One claim to launch, as the scheduler planned it. What the node boots with (labels, taints)
/// follows from the pool ([`crate::registration`]).
#[derive(Debug, Clone)]
pub struct ClaimLaunch {
    pub claim_id: String,
    pub pool: NodePool,
    /// The pool's EC2NodeClass as the decision saw it (the cluster's pools change at run time);
    /// None: the adapter's configured class of the pool's `nodeClassRef`.
    pub node_class: Option<crate::nodepool::Ec2NodeClass>,
    /// Offerings the claim may use (cheapest first).
    pub offerings: Vec<InstanceOption>,
    /// The labels the plan chose for the claim (`ClaimRecord::labels`); the launch reads what
    /// EC2 must know from them (`karpenter.k8s.aws/instance-tenancy: dedicated`).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// EC2 and Auto Scaling.
pub trait Capacity: Send + Sync {
    /// Launches (or adopts) one instance for the claim from the offerings given (the caller leaves
    /// out those in the ICE cache); the offerings found without capacity come back in the outcome
    /// (or in `NoCapacity`) for the caller to record. Adapters never touch the cache.
    fn launch(&self, launch: &ClaimLaunch, now: EpochMillis) -> impl Future<Output = AwsResult<LaunchOutcome>> + Send;
    /// Raises an Auto Scaling pool's desired capacity by one (the instance id arrives with the
    /// group's launch event); false when the group is at its max size and nothing was raised.
    /// A read-modify-write of the group: callers serialize it (the group's lease).
    fn scale_up(&self, group: &str) -> impl Future<Output = AwsResult<bool>> + Send;
    /// Terminates instances tagged as this cluster's; refuses any other.
    fn terminate(&self, instance_ids: &[String]) -> impl Future<Output = AwsResult<()>> + Send;
    /// Terminates instances of an Auto Scaling pool with a desired-capacity decrement, so the group
    /// does not replace them; protected instances and instances outside the group are skipped.
    /// Returns the instances terminated.
    fn scale_in(&self, group: &str, instance_ids: &[String]) -> impl Future<Output = AwsResult<Vec<String>>> + Send;
    /// Protects (or releases) instances of an Auto Scaling pool from the group's own scale-in.
    fn set_protection(
        &self,
        group: &str,
        instance_ids: &[String],
        protect: bool,
    ) -> impl Future<Output = AwsResult<()>> + Send;
    /// An Auto Scaling group's instances that are launching or in service (not terminating), as
    /// the group lists them: how consolidation finds an instance whose launch event was lost.
    fn group_members(&self, group: &str) -> impl Future<Output = AwsResult<Vec<String>>> + Send;
    /// The region's prices as AWS reports them now: on-demand from the Pricing API, spot from
    /// DescribeSpotPriceHistory for `instance_types`. Fails only when neither could be read.
    fn current_prices(
        &self,
        instance_types: &[String],
        now: EpochMillis,
    ) -> impl Future<Output = AwsResult<state::PriceSheet>> + Send;
    /// Instances tagged as this cluster's (any state but terminated).
    fn instances(&self) -> impl Future<Output = AwsResult<Vec<InstanceSummary>>> + Send;
    /// The named instances as EC2 describes them now, whatever their tags (Auto Scaling pool
    /// instances may carry none of ours) and state; unknown ids are left out.
    fn describe(&self, instance_ids: &[String]) -> impl Future<Output = AwsResult<Vec<InstanceSummary>>> + Send;
    /// Whether launches can be handed off ([`Capacity::hand_off_launches`]): the adapter has a
    /// bus. Without one no call is made and the caller launches itself.
    fn has_launch_bus(&self) -> bool {
        false
    }
    /// Hands each claim's launch to an invocation of its own: a `Claim Launch` event on
    /// Nodewright's bus, which `state-change` takes. Returns the claims handed off; the caller
    /// launches the rest itself. Adapters without a bus hand off none.
    fn hand_off_launches(
        &self,
        requests: &[ClaimLaunchRequest],
    ) -> impl Future<Output = AwsResult<Vec<String>>> + Send {
        let _ = requests;
        async { Ok(Vec::new()) }
    }
}

/// Per-node pod lists in flight at once ([`ClusterApi::pods_on_nodes`]). The API server answers a
/// `spec.nodeName` list from its watch cache's node index (consistent reads come from the cache
/// since Kubernetes 1.31), so each is cheap; 16 keeps one invocation to a small share of the
/// server's default 400 read-only requests in flight.
pub const NODE_LISTS_IN_FLIGHT: usize = 16;

/// The Kubernetes API.
pub trait ClusterApi: Send + Sync {
    /// The pods the scheduler marked unschedulable, with their creation time: the consolidation
    /// sweep provisions them and reports the oldest one's age (a pod stuck pending with an
    /// unchanged status is never re-sent by the watcher).
    fn unschedulable_pods(&self) -> impl Future<Output = KubeResult<Listed<PendingPod>>> + Send;
    /// The unfinished pods bound to these nodes (a field-selected list per node, at most
    /// [`NODE_LISTS_IN_FLIGHT`] at once), in the order of `nodes`: what an interruption reads,
    /// and what consolidation reads for the nodes it manages, whatever else the cluster runs.
    fn pods_on_nodes(&self, nodes: &[String]) -> impl Future<Output = KubeResult<Listed<Pod>>> + Send;
    fn nodes(&self) -> impl Future<Output = KubeResult<Listed<ClusterNode>>> + Send;
    /// One Node by name (a GET), None when there is none: a claim's recorded node, without
    /// listing every node.
    fn node_named(&self, name: &str) -> impl Future<Output = KubeResult<Option<ClusterNode>>> + Send;
    fn daemonsets(&self) -> impl Future<Output = KubeResult<Listed<Pod>>> + Send;
    fn pdbs(&self) -> impl Future<Output = KubeResult<Vec<Pdb>>> + Send;
    fn cordon_and_taint(&self, node: &str, taint_key: &str) -> impl Future<Output = KubeResult<()>> + Send;
    fn drain(&self, node: &str, options: &DrainOptions) -> impl Future<Output = KubeResult<DrainReport>> + Send;
    fn delete_node(&self, node: &str) -> impl Future<Output = KubeResult<bool>> + Send;
    /// Writes the claim's labels and taints a node lacks and removes the unregistered taint (one
    /// patch, [`crate::registration::NodeRegistration`]); false when there was nothing to write.
    fn register_node(
        &self,
        node: &str,
        registration: &crate::registration::NodeRegistration,
    ) -> impl Future<Output = KubeResult<bool>> + Send;
    /// Every NodePool and EC2NodeClass (`served: false` when the API has no such kinds).
    fn config_objects(&self) -> impl Future<Output = KubeResult<ConfigObjects>> + Send;
    /// Merge-patches the status subresource of a NodePool or EC2NodeClass; false when the object
    /// is gone.
    fn write_status(
        &self,
        kind: ConfigKind,
        name: &str,
        status: &serde_json::Value,
    ) -> impl Future<Output = KubeResult<bool>> + Send;
    /// Creates the Events; one whose name exists already (the same object, reason and note) is a
    /// duplicate and skipped. Returns how many were created.
    fn record_events(&self, events: &[ObjectEvent]) -> impl Future<Output = KubeResult<usize>> + Send;
}
