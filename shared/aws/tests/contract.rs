//! One contract for the `State` port, run against both of its adapters: the DynamoDB store on moto
//! server and the in-memory store the handler tests, the simulator and `nodewright chaos` run on.
//! The cases are written from what DynamoDB does (conditions on whole seconds, TTL attributes that
//! the reader filters, conditional deletes, unconditional ADD); the memory store is held to them,
//! so a handler test on memory proves what the deployed functions would do.
//!
//! The `Capacity` port's Auto Scaling and termination guard are held to one contract the same way,
//! against the EC2/Auto Scaling adapter on moto and the memory capacity, each with its world (a
//! group created, the group's launches, an instance that is not ours).
//!
//! Each case is a generic function over the port; `contract!` instantiates it once per adapter.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod ec2_support;
mod support;

use nodewright_aws::AwsCapacity;
use nodewright_aws::capacity::{AsgPool, ClusterEndpoint, Fleet};
use nodewright_aws::state::StateStore;
use nodewright_core::model::ClaimState;
use nodewright_core::nodepool::Limits;
use nodewright_core::ports::Capacity;
use nodewright_core::ports::State;
use nodewright_core::ports::state::{
    ClaimRecord, ClaimUpdate, EventStart, Holder, IDEMPOTENCY_LEASE_SECS, IDEMPOTENCY_TTL_SECS,
    OFFERING_UNAVAILABLE_SECS, PoolUsage, TransitionOutcome, UsageDecision, UsageDelta, UsageDrift,
};
use nodewright_core::{CapacityType, Resource, Resources};
use nodewright_handlers::adapters::memory::MemoryCapacity;
use nodewright_handlers::adapters::memory::MemoryState;

/// A time on a whole second, and the same second's last millisecond: DynamoDB compares seconds.
const NOW: i64 = 1_790_000_000_000;

fn uids(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_string()).collect()
}

fn invocation(id: &str) -> Holder {
    Holder::Invocation(id.into())
}

/// An event is run once: a second start while it runs is told it is in progress until the lease
/// has run out (whole seconds, inclusive), a completed event replays its outcome until its record
/// expires after a day, and abandoning only releases an event still in progress.
async fn events_run_once_within_their_lease_and_record<S: State>(store: S) {
    assert_eq!(store.begin_event("e1", NOW).await.unwrap(), EventStart::New);
    assert_eq!(store.begin_event("e1", NOW + 1).await.unwrap(), EventStart::InProgress);
    let lease_end = NOW + IDEMPOTENCY_LEASE_SECS * 1000;
    assert_eq!(
        store.begin_event("e1", lease_end + 999).await.unwrap(),
        EventStart::InProgress,
        "the lease holds through its last second"
    );
    assert_eq!(
        store.begin_event("e1", lease_end + 1000).await.unwrap(),
        EventStart::New
    );
    let started = lease_end + 1000;
    store.complete_event("e1", "done", started + 5).await.unwrap();
    assert_eq!(
        store.begin_event("e1", started + 10).await.unwrap(),
        EventStart::Completed("done".into())
    );
    // Abandoning a completed event (a late failure path) must not forget its outcome.
    store.abandon_event("e1").await.unwrap();
    assert_eq!(
        store.begin_event("e1", started + 20).await.unwrap(),
        EventStart::Completed("done".into())
    );
    // The record lives a day from its start; after that the same id is a new event.
    let expiry = started + IDEMPOTENCY_TTL_SECS * 1000;
    assert_eq!(
        store.begin_event("e1", expiry + 999).await.unwrap(),
        EventStart::Completed("done".into())
    );
    assert_eq!(store.begin_event("e1", expiry + 1000).await.unwrap(), EventStart::New);

    // An abandoned event in progress can be started again at once.
    assert_eq!(store.begin_event("e2", NOW).await.unwrap(), EventStart::New);
    store.abandon_event("e2").await.unwrap();
    assert_eq!(store.begin_event("e2", NOW + 1).await.unwrap(), EventStart::New);
    // Abandoning an unknown event is not an error.
    store.abandon_event("never-begun").await.unwrap();
}

/// The reservation listing: both stores have it, no handler needs it (so it is not in the port).
trait Listing: State {
    async fn live(&self, now: i64) -> Vec<nodewright_core::ports::state::Reservation>;
}

impl Listing for MemoryState {
    async fn live(&self, now: i64) -> Vec<nodewright_core::ports::state::Reservation> {
        self.reservations(now).await.unwrap()
    }
}

impl Listing for StateStore {
    async fn live(&self, now: i64) -> Vec<nodewright_core::ports::state::Reservation> {
        StateStore::reservations(self, now).await.unwrap()
    }
}

/// Reservations: one live holder per pod, the same holder may reserve again, transfers and
/// releases only by the current holder, and a reservation is live through its expiry second.
async fn reservations_have_one_live_holder<S: Listing>(store: S) {
    let a = invocation("a");
    let b = invocation("b");
    let claim = Holder::Claim("c1".into());
    let pods = uids(&["p1", "p2", "p3"]);
    assert_eq!(store.reserve_pods(&pods, &a, NOW, 60).await.unwrap(), pods);
    assert!(store.reserve_pods(&pods, &b, NOW + 1, 60).await.unwrap().is_empty());
    assert_eq!(
        store.reserve_pods(&uids(&["p3", "p4"]), &a, NOW + 2, 60).await.unwrap(),
        uids(&["p3", "p4"]),
        "the holder itself reserves again"
    );
    assert_eq!(
        store.reserve_pods(&uids(&["p4", "p5"]), &b, NOW + 3, 60).await.unwrap(),
        uids(&["p5"])
    );

    assert!(!store.transfer_pod("p1", &b, &claim, NOW + 4, 60).await.unwrap());
    assert!(store.transfer_pod("p1", &a, &claim, NOW + 4, 600).await.unwrap());
    assert!(!store.release_pod("p1", &a).await.unwrap(), "a no longer holds p1");
    assert!(!store.release_pod("absent", &a).await.unwrap());
    assert!(store.release_pod("p2", &a).await.unwrap());
    assert!(!store.release_pod("p2", &a).await.unwrap(), "released once");

    let live = store.live(NOW + 5).await;
    let listed: Vec<(&str, &Holder)> = live.iter().map(|r| (r.pod_uid.as_str(), &r.holder)).collect();
    assert_eq!(
        listed,
        vec![("p1", &claim), ("p3", &a), ("p4", &a), ("p5", &b)],
        "sorted by pod, released ones gone"
    );

    // a's reservations of p3 and p4 were taken at NOW + 2 for 60 s: live through that second.
    let expiry = NOW + 60_000;
    let at_last_second: Vec<String> = store.live(expiry + 999).await.into_iter().map(|r| r.pod_uid).collect();
    assert_eq!(at_last_second, uids(&["p1", "p3", "p4", "p5"]));
    assert!(
        store
            .reserve_pods(&uids(&["p3"]), &b, expiry + 999, 60)
            .await
            .unwrap()
            .is_empty(),
        "not taken over in its last second"
    );
    assert_eq!(
        store.reserve_pods(&uids(&["p3"]), &b, expiry + 1000, 60).await.unwrap(),
        uids(&["p3"]),
        "an expired reservation is taken over"
    );
    let after: Vec<String> = store.live(expiry + 1000).await.into_iter().map(|r| r.pod_uid).collect();
    assert_eq!(after, uids(&["p1", "p3"]), "p4 and p5 expired, p3 retaken by b");
}

fn claim(id: &str, pool: &str) -> ClaimRecord {
    ClaimRecord::launching(id, pool, uids(&["p1", "p2"]), NOW)
}

/// Claims: created once, replaced only at the version read, moved forward only (a late or
/// repeated transition writes nothing), found by their instance once it is recorded.
async fn claims_are_created_once_and_move_forward_only<S: State>(store: S) {
    let mut c = claim("c1", "general");
    // Kept through the store (a later batch must not pack a pod binding one onto the claim).
    c.host_ports = vec![nodewright_core::model::HostPort::new(53, Some("UDP"), "test").unwrap()];
    // And the labels the plan chose (registration writes them when the node joins).
    c.labels = [("team".to_string(), "b".to_string())].into();
    assert!(store.create_claim(&c).await.unwrap());
    assert!(
        !store.create_claim(&claim("c1", "other")).await.unwrap(),
        "created once"
    );
    assert_eq!(store.get_claim("c1").await.unwrap().unwrap().pool, "general");
    assert_eq!(store.get_claim("nope").await.unwrap(), None);
    assert_eq!(store.claim_by_instance("i-1").await.unwrap(), None);

    let launched = ClaimUpdate {
        instance_id: Some("i-1".into()),
        instance_type: Some("m5.large".into()),
        capacity_type: Some(CapacityType::Spot),
        zone: Some("us-east-1a".into()),
        price_per_hour: Some(0.04),
        allocatable: None,
        node_name: None,
    };
    let advanced = match store
        .transition_claim("c1", ClaimState::Launched, NOW + 10, &launched)
        .await
        .unwrap()
    {
        TransitionOutcome::Advanced(c) => c,
        other => panic!("expected Advanced, got {other:?}"),
    };
    assert_eq!(advanced.version, c.version + 1);
    assert_eq!(advanced.instance_id.as_deref(), Some("i-1"));
    assert_eq!(advanced.entered(ClaimState::Launched), Some(NOW + 10));
    assert_eq!(advanced.host_ports, c.host_ports);
    assert_eq!(advanced.labels, c.labels);
    assert_eq!(store.get_claim("c1").await.unwrap().unwrap(), advanced);
    assert!(matches!(
        store
            .transition_claim("c1", ClaimState::Launched, NOW + 11, &ClaimUpdate::default())
            .await
            .unwrap(),
        TransitionOutcome::Duplicate(_)
    ));
    assert!(matches!(
        store
            .transition_claim("c1", ClaimState::Launching, NOW + 12, &ClaimUpdate::default())
            .await
            .unwrap(),
        TransitionOutcome::Stale(_)
    ));
    assert_eq!(store.get_claim("c1").await.unwrap().unwrap().version, advanced.version);
    assert!(
        store
            .transition_claim("nope", ClaimState::Ready, NOW, &ClaimUpdate::default())
            .await
            .is_err(),
        "an unknown claim is an error, not a new claim"
    );

    // A replace at a stale version loses; at the current one it lands.
    let mut edited = advanced.clone();
    edited.pods = uids(&["p1"]);
    edited.version += 1;
    assert!(!store.replace_claim(&edited, c.version).await.unwrap());
    assert!(store.replace_claim(&edited, advanced.version).await.unwrap());
    assert_eq!(store.get_claim("c1").await.unwrap().unwrap().pods, uids(&["p1"]));
    assert!(
        !store.replace_claim(&edited, advanced.version).await.unwrap(),
        "the same replace again finds the version moved"
    );

    let by_instance = store.claim_by_instance("i-1").await.unwrap().unwrap();
    assert_eq!((by_instance.id.as_str(), by_instance.version), ("c1", edited.version));

    assert!(store.create_claim(&claim("c2", "general")).await.unwrap());
    let mut ids: Vec<String> = store.claims().await.unwrap().into_iter().map(|c| c.id).collect();
    ids.sort();
    assert_eq!(ids, uids(&["c1", "c2"]));
}

/// The ICE cache: one entry per offering (the latest reason), live through its expiry second.
async fn unavailable_offerings_expire_after_their_window<S: State>(store: S) {
    store
        .mark_offering_unavailable(CapacityType::Spot, "m5.large", "us-east-1a", "first", NOW)
        .await
        .unwrap();
    store
        .mark_offering_unavailable(CapacityType::OnDemand, "m5.large", "us-east-1a", "od", NOW)
        .await
        .unwrap();
    store
        .mark_offering_unavailable(
            CapacityType::Spot,
            "m5.large",
            "us-east-1a",
            "InsufficientInstanceCapacity",
            NOW + 30_000,
        )
        .await
        .unwrap();
    let mut listed = store.unavailable_offerings(NOW + 31_000).await.unwrap();
    listed.sort_by_key(|o| o.capacity_type == CapacityType::Spot);
    let seen: Vec<(CapacityType, &str, i64)> = listed
        .iter()
        .map(|o| (o.capacity_type, o.reason.as_str(), o.expires_at))
        .collect();
    let second = NOW / 1000;
    assert_eq!(
        seen,
        vec![
            (CapacityType::OnDemand, "od", second + OFFERING_UNAVAILABLE_SECS),
            (
                CapacityType::Spot,
                "InsufficientInstanceCapacity",
                second + 30 + OFFERING_UNAVAILABLE_SECS
            ),
        ]
    );
    let od_expiry = NOW + OFFERING_UNAVAILABLE_SECS * 1000;
    assert_eq!(store.unavailable_offerings(od_expiry + 999).await.unwrap().len(), 2);
    let later = store.unavailable_offerings(od_expiry + 1000).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].capacity_type, CapacityType::Spot);
}

async fn a_price_sheet_replaces_the_last_and_expires<S: State>(store: S) {
    use nodewright_core::ports::state::{PRICES_TTL_SECS, PriceSheet};
    assert!(store.prices(NOW).await.unwrap().is_none());
    let sheet = |at: i64, price: f64| {
        let mut s = PriceSheet {
            region: "us-east-1".into(),
            refreshed_at: at,
            ..Default::default()
        };
        s.on_demand.insert("m5.large".into(), price);
        s.spot.insert(("m5.large".into(), "us-east-1a".into()), price / 3.0);
        s
    };
    store.put_prices(&sheet(NOW, 0.096)).await.unwrap();
    store.put_prices(&sheet(NOW + 3_600_000, 0.1)).await.unwrap();
    let read = store.prices(NOW + 3_600_000).await.unwrap().unwrap();
    assert_eq!(read, sheet(NOW + 3_600_000, 0.1), "the newer sheet, whole");
    assert!(
        store
            .prices(NOW + 3_600_000 + PRICES_TTL_SECS * 1000)
            .await
            .unwrap()
            .is_none()
    );
    // Bounded: a sheet larger than any region's is refused, not stored.
    let mut huge = sheet(NOW + 7_200_000, 0.1);
    for i in 0..=nodewright_core::ports::state::MAX_PRICE_ENTRIES {
        huge.spot.insert((format!("x{i}.large"), "us-east-1a".into()), 0.01);
    }
    assert!(store.put_prices(&huge).await.is_err());
    assert_eq!(
        store.prices(NOW + 7_200_000).await.unwrap().unwrap().refreshed_at,
        NOW + 3_600_000
    );
}

fn node(cpu_milli: u64) -> UsageDelta {
    UsageDelta {
        cpu_milli,
        memory_bytes: cpu_milli << 20,
        gpus: 0,
        nodes: 1,
    }
}

/// Usage counters: a charge is granted only within every limit (a zero limit refuses all), a
/// charge above a limit on its own is refused whatever the counters hold, releases are
/// unconditional (twice takes the counters below zero, which reads as zero and is flagged),
/// running nodes leave the in-flight count but never below zero, and every counter write bumps
/// the version that corrections are conditional on.
/// Where a consolidation run stopped: none at first, the last stored replaces the one before,
/// read back whole (nodes, digests, order), a cleared point is gone, and a second clear is no
/// error (a run that finishes clears whether or not one was stored).
async fn a_resume_point_is_replaced_read_whole_and_cleared<S: State>(store: S) {
    use nodewright_core::disruption::{PendingAction, Reason, ResumePoint};
    assert!(store.resume_point().await.unwrap().is_none());
    let action = |node: &str, reason: Reason| PendingAction {
        reason,
        nodes: vec![node.to_string()],
        replacements: usize::from(reason == Reason::Drifted),
        saving: 0.25,
        digests: [(node.to_string(), format!("{node}-pods"))].into(),
    };
    let first = ResumePoint::new(NOW, &[action("ip-10-0-0-1.ec2.internal", Reason::Empty)]);
    store.put_resume_point(Some(&first)).await.unwrap();
    let second = ResumePoint::new(
        NOW + 60_000,
        &[
            action("ip-10-0-0-2.ec2.internal", Reason::Drifted),
            action("ip-10-0-0-3.ec2.internal", Reason::Underutilized),
        ],
    );
    store.put_resume_point(Some(&second)).await.unwrap();
    assert_eq!(store.resume_point().await.unwrap(), Some(second));
    store.put_resume_point(None).await.unwrap();
    assert!(store.resume_point().await.unwrap().is_none());
    store.put_resume_point(None).await.unwrap();
    // The record shares its table with events: an event is still run once beside it.
    assert_eq!(
        store.begin_event("resume/consolidation-x", NOW).await.unwrap(),
        EventStart::New
    );
}

async fn usage_counters_hold_limits_and_show_drift<S: State>(store: S) {
    let limits = Limits {
        resources: Resources::new().with(Resource::Cpu, 10_000),
        nodes: Some(3),
        ..Limits::default()
    };
    let fresh = store.usage_snapshot("p").await.unwrap();
    assert!(!fresh.exists);
    assert_eq!((fresh.version, fresh.usage), (0, PoolUsage::default()));

    assert_eq!(
        store.try_add_usage("p", &node(4_000), &limits).await.unwrap(),
        UsageDecision::Granted
    );
    assert_eq!(
        store.try_add_usage("p", &node(4_000), &limits).await.unwrap(),
        UsageDecision::Granted
    );
    assert_eq!(
        store.try_add_usage("p", &node(4_000), &limits).await.unwrap(),
        UsageDecision::Denied {
            resource: "cpuMilli",
            used: 8_000,
            requested: 4_000,
            limit: 10_000
        }
    );
    assert_eq!(
        store.try_add_usage("p", &node(12_000), &limits).await.unwrap(),
        UsageDecision::Denied {
            resource: "cpuMilli",
            used: 0,
            requested: 12_000,
            limit: 10_000
        },
        "larger than the limit on its own"
    );
    let two = store.usage_snapshot("p").await.unwrap();
    assert!(two.exists && !two.negative);
    assert_eq!(
        (
            two.usage.cpu_milli,
            two.usage.nodes,
            two.usage.nodes_in_flight,
            two.version
        ),
        (8_000, 2, 2, 2),
        "denied charges write nothing"
    );

    store.mark_usage_running("p", 1).await.unwrap();
    store.mark_usage_running("p", 5).await.unwrap(); // more than in flight: ignored
    let running = store.usage_snapshot("p").await.unwrap();
    assert_eq!(
        (
            running.usage.nodes_in_flight,
            running.usage.nodes_running(),
            running.version
        ),
        (1, 1, 3)
    );

    store.release_usage("p", &node(4_000), false).await.unwrap();
    store.release_usage("p", &node(4_000), true).await.unwrap();
    store.release_usage("p", &node(4_000), false).await.unwrap(); // one too many
    let below = store.usage_snapshot("p").await.unwrap();
    assert!(below.negative, "{below:?}");
    assert_eq!((below.usage.cpu_milli, below.usage.nodes, below.version), (0, 0, 6));

    // The reconciler's note keeps the time a difference was first seen and bumps no version.
    let drift = UsageDrift::between(&below.usage, below.negative, &PoolUsage::default());
    store.note_usage_checked("p", &drift, NOW).await.unwrap();
    store.note_usage_checked("p", &drift, NOW + 60_000).await.unwrap();
    let noted = store.usage_snapshot("p").await.unwrap();
    assert_eq!((noted.checked, noted.version), (Some((drift, NOW)), 6));
    store.note_usage_checked("q", &drift, NOW).await.unwrap();
    assert!(
        !store.usage_snapshot("q").await.unwrap().exists,
        "no note without counters"
    );

    assert!(
        !store
            .correct_usage("p", &PoolUsage::default(), 5, NOW + 1)
            .await
            .unwrap()
    );
    assert!(
        store
            .correct_usage("p", &PoolUsage::default(), 6, NOW + 2)
            .await
            .unwrap()
    );
    let fixed = store.usage_snapshot("p").await.unwrap();
    assert_eq!(
        (fixed.negative, fixed.usage, fixed.version, fixed.checked),
        (false, PoolUsage::default(), 7, Some((UsageDrift::default(), NOW + 2)))
    );

    let zero = Limits {
        nodes: Some(0),
        ..Limits::default()
    };
    assert!(matches!(
        store.try_add_usage("z", &node(1_000), &zero).await.unwrap(),
        UsageDecision::Denied { resource: "nodes", .. }
    ));
    assert_eq!(
        store
            .try_add_usage("u", &node(1_000_000), &Limits::default())
            .await
            .unwrap(),
        UsageDecision::Granted,
        "no limits, no refusal"
    );
}

/// Leases: one holder at a time, re-taken by the holder, free once released by it (not by
/// another) or run out (after its last second).
async fn leases_have_one_holder_until_released_or_run_out<S: State>(store: S) {
    assert!(store.take_lease("asg/g", "inv-a", NOW, 30).await.unwrap());
    assert!(!store.take_lease("asg/g", "inv-b", NOW + 1, 30).await.unwrap());
    assert!(
        store.take_lease("asg/h", "inv-b", NOW + 1, 30).await.unwrap(),
        "leases are per name"
    );
    assert!(
        store.take_lease("asg/g", "inv-a", NOW + 2, 30).await.unwrap(),
        "the holder again"
    );
    store.release_lease("asg/g", "inv-b").await.unwrap();
    assert!(
        !store.take_lease("asg/g", "inv-b", NOW + 3, 30).await.unwrap(),
        "only its holder releases it"
    );
    store.release_lease("asg/g", "inv-a").await.unwrap();
    assert!(store.take_lease("asg/g", "inv-b", NOW + 4, 30).await.unwrap());
    // inv-b took it in second NOW for 30 s: held through second NOW + 30, then anyone may take it.
    assert!(!store.take_lease("asg/g", "inv-c", NOW + 30_999, 30).await.unwrap());
    assert!(store.take_lease("asg/g", "inv-c", NOW + 31_000, 30).await.unwrap());
    // A lease is not an event: the event with the same name is unaffected.
    assert_eq!(store.begin_event("asg/g", NOW).await.unwrap(), EventStart::New);
}

/// What surrounds the capacity port: the user's Auto Scaling groups and the account's other
/// instances.
trait World: Capacity {
    /// A group with max size `max`, desired 0.
    async fn create_group(&self, name: &str, max: u32);
    /// The group's desired capacity.
    async fn desired(&self, name: &str) -> u32;
    /// The group's live members once it has launched towards its desired capacity.
    async fn members(&self, name: &str) -> Vec<String>;
    /// An instance of the account that is not this cluster's.
    async fn foreign_instance(&self) -> String;
}

impl World for MemoryCapacity {
    async fn create_group(&self, name: &str, max: u32) {
        self.declare_group(name, max, "m5.large", "us-east-1a");
    }
    async fn desired(&self, name: &str) -> u32 {
        self.group(name).unwrap().desired
    }
    async fn members(&self, name: &str) -> Vec<String> {
        self.launch_group_instances(NOW);
        self.group(name).unwrap().members.into_iter().collect()
    }
    async fn foreign_instance(&self) -> String {
        self.add_foreign_instance("i-0f0000000000000f0");
        "i-0f0000000000000f0".into()
    }
}

/// The AWS capacity adapter with the clients it was built from.
struct MotoCapacity {
    capacity: AwsCapacity,
    clients: nodewright_aws::AwsClients,
}

impl Capacity for MotoCapacity {
    async fn launch(
        &self,
        launch: &nodewright_core::ports::ClaimLaunch,
        now: i64,
    ) -> nodewright_core::ports::AwsResult<nodewright_core::ports::capacity::LaunchOutcome> {
        self.capacity.launch(launch, now).await
    }
    async fn scale_up(&self, group: &str) -> nodewright_core::ports::AwsResult<bool> {
        self.capacity.scale_up(group).await
    }
    async fn terminate(&self, ids: &[String]) -> nodewright_core::ports::AwsResult<()> {
        self.capacity.terminate(ids).await
    }
    async fn scale_in(&self, group: &str, ids: &[String]) -> nodewright_core::ports::AwsResult<Vec<String>> {
        self.capacity.scale_in(group, ids).await
    }
    async fn set_protection(
        &self,
        group: &str,
        ids: &[String],
        protect: bool,
    ) -> nodewright_core::ports::AwsResult<()> {
        self.capacity.set_protection(group, ids, protect).await
    }
    async fn group_members(&self, group: &str) -> nodewright_core::ports::AwsResult<Vec<String>> {
        self.capacity.group_members(group).await
    }
    async fn instances(
        &self,
    ) -> nodewright_core::ports::AwsResult<Vec<nodewright_core::ports::capacity::InstanceSummary>> {
        self.capacity.instances().await
    }
    async fn describe(
        &self,
        ids: &[String],
    ) -> nodewright_core::ports::AwsResult<Vec<nodewright_core::ports::capacity::InstanceSummary>> {
        self.capacity.describe(ids).await
    }
    async fn current_prices(
        &self,
        types: &[String],
        now: i64,
    ) -> nodewright_core::ports::AwsResult<nodewright_core::ports::state::PriceSheet> {
        self.capacity.current_prices(types, now).await
    }
}

impl World for MotoCapacity {
    async fn create_group(&self, name: &str, max: u32) {
        let (ami, subnets) = ec2_support::ami_and_subnets(&self.clients.ec2).await;
        let template_id = ec2_support::launch_template(&self.clients.ec2, &ami, "m5.large").await;
        let subnet = subnets[0].0.clone();
        self.clients
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .min_size(0)
            .max_size(i32::try_from(max).unwrap())
            .desired_capacity(0)
            .vpc_zone_identifier(subnet)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_id(template_id)
                    .version("$Latest")
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    async fn desired(&self, name: &str) -> u32 {
        let state = AsgPool::new(self.clients.autoscaling.clone())
            .group_state(name)
            .await
            .unwrap();
        u32::try_from(state.desired).unwrap()
    }
    async fn members(&self, name: &str) -> Vec<String> {
        let state = AsgPool::new(self.clients.autoscaling.clone())
            .group_state(name)
            .await
            .unwrap();
        let mut ids: Vec<String> = state
            .instances
            .into_iter()
            .filter(|(_, lifecycle, _)| !lifecycle.starts_with("Terminat"))
            .map(|(id, _, _)| id)
            .collect();
        ids.sort();
        ids
    }
    async fn foreign_instance(&self) -> String {
        let (ami, _) = ec2_support::ami_and_subnets(&self.clients.ec2).await;
        ec2_support::foreign_instance(&self.clients.ec2, &ami).await
    }
}

async fn moto_capacity() -> MotoCapacity {
    let clients = support::clients().await;
    let store = support::store(&clients, "contract-capacity").await;
    let cluster = store.cluster().to_string();
    let capacity = AwsCapacity::new(
        Fleet::new(clients.ec2.clone(), &cluster),
        AsgPool::new(clients.autoscaling.clone()),
        store,
        None,
        None,
        ClusterEndpoint {
            name: cluster,
            endpoint: "https://contract.invalid".into(),
            certificate_authority: "Y29udHJhY3Q=".into(),
            service_cidr: None,
        },
        None,
        Vec::new(),
        &[],
    );
    MotoCapacity { capacity, clients }
}

fn memory_capacity() -> MemoryCapacity {
    MemoryCapacity::new("contract")
}

/// A group is raised one instance at a time and never past its max (false: nothing raised).
async fn a_group_is_raised_one_at_a_time_up_to_its_max<W: World>(world: W) {
    let group = support::unique("contract-asg");
    world.create_group(&group, 2).await;
    assert!(world.scale_up(&group).await.unwrap());
    assert!(world.scale_up(&group).await.unwrap());
    assert!(!world.scale_up(&group).await.unwrap(), "at its max");
    assert_eq!(world.desired(&group).await, 2);
    assert_eq!(world.members(&group).await.len(), 2);
}

/// Scale-in takes only unprotected members of the group, lowering its desired capacity so the
/// group replaces nothing; protection can be lifted.
async fn scale_in_takes_unprotected_members_and_lowers_desired<W: World>(world: W) {
    let group = support::unique("contract-asg");
    world.create_group(&group, 3).await;
    for _ in 0..3 {
        assert!(world.scale_up(&group).await.unwrap());
    }
    let members = world.members(&group).await;
    assert_eq!(members.len(), 3);
    let foreign = world.foreign_instance().await;
    world.set_protection(&group, &members[..1], true).await.unwrap();
    let asked = vec![members[0].clone(), members[1].clone(), foreign];
    assert_eq!(
        world.scale_in(&group, &asked).await.unwrap(),
        vec![members[1].clone()],
        "the protected member and the non-member are skipped"
    );
    assert_eq!(world.desired(&group).await, 2);
    let left = world.members(&group).await;
    assert_eq!(left.len(), 2, "nothing replaced: {left:?}");
    assert!(!left.contains(&members[1]));
    let mut listed = world.group_members(&group).await.unwrap();
    listed.sort();
    assert_eq!(listed, left, "the port lists the group's live members");
    world.set_protection(&group, &members[..1], false).await.unwrap();
    assert_eq!(
        world.scale_in(&group, &members[..1]).await.unwrap(),
        vec![members[0].clone()]
    );
    assert_eq!(world.desired(&group).await, 1);
}

/// Termination is refused for any instance not tagged as this cluster's (a group's instance, an
/// instance of the account's); the cluster listing leaves them out; describe tells of any instance
/// by id and leaves out ids that do not exist.
async fn only_our_instances_are_terminated_or_listed<W: World>(world: W) {
    let group = support::unique("contract-asg");
    world.create_group(&group, 1).await;
    assert!(world.scale_up(&group).await.unwrap());
    let member = world.members(&group).await.remove(0);
    let foreign = world.foreign_instance().await;
    for id in [&member, &foreign] {
        let err = world.terminate(std::slice::from_ref(id)).await.unwrap_err();
        assert!(
            matches!(err, nodewright_core::ports::AwsError::Refused(ref m) if m.contains(id.as_str())),
            "{err}"
        );
    }
    let listed: Vec<String> = world
        .instances()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    assert!(!listed.contains(&member) && !listed.contains(&foreign), "{listed:?}");
    let described = world
        .describe(&[member.clone(), "i-0000000000000dead".into()])
        .await
        .unwrap();
    assert_eq!(described.len(), 1, "{described:?}");
    assert_eq!(described[0].instance_id, member);
    assert_eq!(described[0].state, "running");
    assert_eq!(described[0].claim_id, None, "a group's instance carries no claim tag");
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::MemoryState::new()).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test]
                async fn $case() {
                    let clients = super::support::clients().await;
                    let store: super::StateStore = super::support::store(&clients, "contract").await;
                    super::$case(store).await;
                }
            )*
        }
    };
}

macro_rules! capacity_contract {
    ($($case:ident),* $(,)?) => {
        mod memory_capacity {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::memory_capacity()).await;
                }
            )*
        }
        mod moto_capacity {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::moto_capacity().await).await;
                }
            )*
        }
    };
}

capacity_contract!(
    a_group_is_raised_one_at_a_time_up_to_its_max,
    scale_in_takes_unprotected_members_and_lowers_desired,
    only_our_instances_are_terminated_or_listed,
);

contract!(
    events_run_once_within_their_lease_and_record,
    reservations_have_one_live_holder,
    claims_are_created_once_and_move_forward_only,
    unavailable_offerings_expire_after_their_window,
    usage_counters_hold_limits_and_show_drift,
    leases_have_one_holder_until_released_or_run_out,
    a_price_sheet_replaces_the_last_and_expires,
    a_resume_point_is_replaced_read_whole_and_cleared,
);
