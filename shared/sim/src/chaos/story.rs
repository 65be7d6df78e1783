//! One seeded story: the world around the functions (pods, EC2's instance lifecycle, kubelets,
//! kube-scheduler, EventBridge and Lambda's delivery and retries), driven step by step on a
//! virtual clock, with the invariants checked after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use nodewright_core::disruption::Pdb;
use nodewright_core::model::cluster_event::{self, NodeReady, PendingPod, PodPending};
use nodewright_core::model::{ClaimState, LabelSelector};
use nodewright_core::ports::capacity::InstanceSummary;
use nodewright_core::ports::cluster::{ClusterNode, ConfigKind, cluster_node};
use nodewright_core::{Config, Pod, labels};
use nodewright_handlers::adapters::faults::{
    FaultKind, Faults, FaultyCapacity, FaultyCluster, FaultyState, PORT_METHODS, qualified,
};
use nodewright_handlers::adapters::handle_with_faults;
use nodewright_handlers::adapters::memory::{ClusterWrite, MemoryCapacity, MemoryCluster, MemoryState};
use nodewright_handlers::ports::Capacity;
use nodewright_handlers::{Action, DaemonSets, Deps, Function, Settings, event};
use serde_json::{Value, json};

use super::invariants::{self, Check, Invariant};
use super::{ChaosOptions, Counterexample};
use crate::rng::Rng;

/// 2026-11-21T10:00:00Z, the stories' start.
const START: i64 = 1_795_255_200_000;
const MINUTE: i64 = 60_000;
/// RunInstances to `running`, and to the node's Ready.
const RUNNING_AFTER_MS: i64 = 20_000;
const READY_AFTER_MS: i64 = 45_000;
/// Spot reclaims this long after the warning.
const SPOT_NOTICE_MS: i64 = 2 * MINUTE;
/// Lambda's asynchronous retries of a failed invocation: about 1 minute, then 2 more.
const RETRY_DELAYS_MS: [i64; 2] = [MINUTE, 2 * MINUTE];
/// The watcher re-sends pods still pending this often.
const RESEND_EVERY_MS: i64 = 5 * MINUTE;
/// Look-ups by instance that miss a claim's newly written instance (DynamoDB's index lags its
/// table; the functions must not depend on it being current).
const INDEX_LAG: u64 = 3;
/// Steps of schedule, faults off, before the strict checks.
const SETTLE_STEPS: usize = 12;
/// At most this many more while the usage counters still differ from the live claims (about 20
/// minutes: the reconciler needs 3 still minutes and a schedule run).
const EXTRA_SETTLE_STEPS: usize = 28;

/// Two pools as a Karpenter user writes them: a general spot-or-on-demand pool with a CPU limit,
/// and an on-demand pool pods select by label; and an Auto Scaling pool (an existing group of
/// m5.xlarge, at most 3) that batch pods select.
const POOLS: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: general}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [spot, on-demand]}
        - {key: karpenter.k8s.aws/instance-category, operator: In, values: [c, m, r]}
        - {key: karpenter.k8s.aws/instance-generation, operator: Gt, values: ["4"]}
        - {key: karpenter.k8s.aws/instance-cpu, operator: Lt, values: ["17"]}
  limits: {cpu: "48"}
  disruption: {consolidationPolicy: WhenEmptyOrUnderutilized, consolidateAfter: 1m}
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: critical}
spec:
  template:
    metadata: {labels: {tier: critical}}
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
        - {key: karpenter.k8s.aws/instance-category, operator: In, values: [m]}
        - {key: karpenter.k8s.aws/instance-cpu, operator: Lt, values: ["9"]}
  limits: {cpu: "16"}
  disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 2m}
---
apiVersion: nodewright.io/v1alpha1
kind: AutoScalingPool
metadata: {name: batch}
spec:
  autoScalingGroupName: chaos-batch
  instanceTypes: [m5.xlarge]
  capacityType: on-demand
  minSize: 0
  maxSize: 3
  template:
    metadata: {labels: {workload: batch}}
  disruption: {consolidateAfter: 1m}
---
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  amiFamily: AL2023
  amiSelectorTerms: [{id: ami-0123456789abcdef0}]
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: chaos}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: chaos}}]
  role: KarpenterNodeRole-chaos
"#;

/// The spot instance quota of the accounts that have one.
const SPOT_QUOTA: usize = 3;

/// The Auto Scaling group behind the `batch` pool, and its max size.
const GROUP: &str = "chaos-batch";
const GROUP_MAX: u32 = 3;

/// Pod shapes: (millicores, MiB).
const SHAPES: [(u64, u64); 6] = [
    (250, 256),
    (500, 1024),
    (1000, 2048),
    (1500, 3072),
    (2000, 4096),
    (3500, 7168),
];

/// The settings every story runs with (parsed once).
pub(super) fn settings() -> Settings {
    static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();
    SETTINGS
        .get_or_init(|| {
            let (config, _) = Config::parse_strict(POOLS, "chaos").expect("the chaos pools parse");
            let mut settings = Settings::new("chaos", "us-east-1", config).expect("the chaos settings build");
            // A waiter for a busy group lease lets the holder (in-memory, a few polls) finish;
            // the story's clock is virtual, so the pause need not be the deployed 250 ms.
            settings.group_lease_pause = std::time::Duration::from_millis(1);
            settings
        })
        .clone()
}

/// Prices the price APIs report: the catalogue's for the pools' types, each off by up to 25%.
fn live_prices(settings: &Settings, rng: &mut Rng) -> nodewright_core::ports::state::PriceSheet {
    let mut sheet = nodewright_core::ports::state::PriceSheet {
        region: settings.region.clone(),
        ..Default::default()
    };
    // DescribeAvailabilityZones of the simulated account.
    let zones = settings
        .pools()
        .instance_types
        .iter()
        .flat_map(|t| t.offerings.iter().map(|o| o.zone.clone()))
        .collect::<Vec<_>>();
    sheet.zone_ids = nodewright_core::catalogue::zone_ids::example(&settings.region, zones);
    for t in settings.pools().instance_types.iter() {
        for o in &t.offerings {
            let factor = 0.75 + f64::from(u32::try_from(rng.below(51)).unwrap_or(0)) / 100.0;
            match o.capacity_type {
                nodewright_core::CapacityType::OnDemand => {
                    sheet.on_demand.insert(t.name.clone(), o.price * factor);
                }
                nodewright_core::CapacityType::Spot => {
                    sheet.spot.insert((t.name.clone(), o.zone.clone()), o.price * factor);
                }
                _ => {}
            }
        }
    }
    sheet
}

/// Every port method, qualified (`State.claims`).
pub(super) fn all_methods() -> Vec<String> {
    PORT_METHODS
        .iter()
        .flat_map(|(port, methods)| methods.iter().map(move |m| format!("{port}.{m}")))
        .collect()
}

#[derive(Debug, Clone, PartialEq)]
enum PodState {
    Pending,
    Bound(String),
    Gone,
}

/// One event on its way to a function.
#[derive(Debug, Clone)]
struct Delivery {
    at: i64,
    seq: u64,
    function: Function,
    event: Value,
    /// 0 for the first attempt; Lambda retries twice.
    attempt: usize,
    /// Delivered to two invocations at once.
    concurrent: bool,
}

/// How an invocation ended.
enum Ended {
    /// With the pods it reported unschedulable: (pod, reason).
    Ok(Vec<(String, String)>),
    Failed(String),
    Died,
}

/// What one story found and did.
#[derive(Debug, Default)]
pub(super) struct StoryResult {
    pub steps: usize,
    pub invocations: u64,
    pub deliveries: BTreeMap<&'static str, u64>,
    pub injected: BTreeMap<(String, FaultKind), usize>,
    pub called: BTreeSet<String>,
    pub violations: Vec<Counterexample>,
}

pub(super) struct Story<'o> {
    seed: u64,
    options: &'o ChaosOptions,
    rng: Rng,
    settings: Settings,
    state: MemoryState,
    capacity: MemoryCapacity,
    cluster: MemoryCluster,
    now: i64,
    step: usize,
    faults_on: bool,
    queue: Vec<Delivery>,
    seq: u64,
    trace: Vec<String>,
    pods: BTreeMap<String, (Pod, PodState)>,
    next_pod: u64,
    /// Instances seen, when first seen (EC2's launch time stands in).
    launched: BTreeMap<String, i64>,
    running_sent: BTreeSet<String>,
    booted: BTreeSet<String>,
    warned: BTreeSet<String>,
    /// Spot reclaims due: (at, instance).
    reclaims: Vec<(i64, String)>,
    /// Instances EC2 took back (not Nodewright's termination).
    reclaimed: BTreeSet<String>,
    terminated_seen: BTreeSet<String>,
    /// Instances the Auto Scaling group launched.
    group_instances: BTreeSet<String>,
    last_tick: i64,
    last_resend: i64,
    /// The latest reason each pod was reported unschedulable (by pod name).
    unschedulable: BTreeMap<String, String>,
    /// Each function's warm execution environment.
    warm: BTreeMap<&'static str, Environment>,
    pub result: StoryResult,
}

/// What one Lambda execution environment keeps between invocations.
#[derive(Debug, Clone, Default)]
struct Environment {
    consolidated: nodewright_handlers::consolidation::Consolidated,
    daemonsets: DaemonSets,
}

pub(super) async fn run_story(seed: u64, options: &ChaosOptions) -> StoryResult {
    let mut story = Story::new(seed, options);
    for _ in 0..options.steps {
        story.step(true).await;
        if !story.result.violations.is_empty() {
            return story.finish();
        }
    }
    story.faults_on = false;
    for i in 0..SETTLE_STEPS + EXTRA_SETTLE_STEPS {
        story.step(false).await;
        if !story.result.violations.is_empty() {
            return story.finish();
        }
        // Settled: the minimum has passed and the usage reconciler has caught up (it corrects a
        // counter only once it has been still for `USAGE_STABLE_MS`).
        if i + 1 >= SETTLE_STEPS && story.usage_conserved() {
            break;
        }
    }
    story.check(Check::Settled).await;
    story.finish()
}

impl<'o> Story<'o> {
    fn new(seed: u64, options: &'o ChaosOptions) -> Story<'o> {
        let state = MemoryState::with_index_lag(INDEX_LAG);
        let mut settings = settings().detached();
        // The user's group, its launch template's user data written as docs/configuration.md
        // says (the pool's labels and taints).
        let capacity = MemoryCapacity::new(&settings.cluster);
        capacity.declare_group(GROUP, GROUP_MAX, "m5.xlarge", "us-east-1a");
        if let Some(pool) = settings.pools().config.node_pools.iter().find(|p| p.name == "batch") {
            capacity.set_group_user_data_for(GROUP, pool);
        }
        let mut rng = Rng::new(seed ^ 0x5EED_C4A0_5000_0000);
        // Half the accounts have a small spot quota: past it, a spot request fails whole
        // (MaxSpotInstanceCountExceeded) and launches fall back to on-demand.
        if rng.below(2) == 0 {
            capacity.limit_spot_instances(SPOT_QUOTA);
        }
        // Half the clusters hold their NodePools and EC2NodeClasses as API objects (listed,
        // cached, status written back); the others configure them.
        let cluster = MemoryCluster::new();
        if rng.below(2) == 0 {
            settings.pool_source = nodewright_handlers::settings::PoolSource::Cluster;
            for doc in nodewright_core::model::documents(POOLS, "chaos").unwrap_or_default() {
                let kind = match doc["kind"].as_str() {
                    Some("NodePool") => ConfigKind::NodePool,
                    Some("EC2NodeClass") => ConfigKind::Ec2NodeClass,
                    _ => continue,
                };
                cluster.apply_config(kind, doc);
            }
        }
        // A third of the accounts reach the price APIs: live prices within 25% of the catalogue's.
        if rng.below(3) == 0 {
            capacity.set_live_prices(live_prices(&settings, &mut rng));
        }
        Story {
            seed,
            options,
            rng,
            capacity,
            settings,
            state,
            cluster,
            now: START,
            step: 0,
            faults_on: true,
            queue: Vec::new(),
            seq: 0,
            trace: Vec::new(),
            pods: BTreeMap::new(),
            next_pod: 0,
            launched: BTreeMap::new(),
            running_sent: BTreeSet::new(),
            booted: BTreeSet::new(),
            warned: BTreeSet::new(),
            reclaims: Vec::new(),
            reclaimed: BTreeSet::new(),
            terminated_seen: BTreeSet::new(),
            group_instances: BTreeSet::new(),
            last_tick: START,
            last_resend: START,
            unschedulable: BTreeMap::new(),
            warm: BTreeMap::new(),
            result: StoryResult::default(),
        }
    }

    fn finish(mut self) -> StoryResult {
        self.result.steps = self.step;
        self.result
    }

    fn note(&mut self, line: String) {
        self.trace.push(format!(
            "[{}] step {} +{}s {line}",
            self.seed,
            self.step,
            (self.now - START) / 1000
        ));
    }

    /// One step: time passes, the world moves, due events are delivered, invariants are checked.
    async fn step(&mut self, story_moves: bool) {
        self.step += 1;
        self.now += 15_000 + 1000 * self.rng.below(61) as i64;
        if story_moves {
            let r = self.rng.unit();
            if r < 0.35 {
                let n = 1 + self.rng.below(6) as usize;
                self.arrive(n);
            } else if r < 0.5 {
                let n = 1 + self.rng.below(3) as usize;
                self.depart(n);
            } else if r < 0.6 {
                self.warn_spot();
            } else if r < 0.7 {
                self.exhaust_spot();
            }
        }
        if self.now - self.last_tick >= MINUTE {
            self.last_tick = self.now;
            let tick = self.envelope(
                "aws.events",
                "Scheduled Event",
                vec!["arn:aws:events:us-east-1:123456789012:rule/nodewright-consolidation".into()],
                json!({}),
            );
            self.send(Function::Consolidation, tick);
        }
        if self.now - self.last_resend >= RESEND_EVERY_MS {
            self.last_resend = self.now;
            let pending: Vec<String> = self.pending_uids();
            if !pending.is_empty() {
                self.send_pods(&pending);
            }
        }
        self.physics().await;
        self.deliver_due().await;
        // Pods evicted by those invocations come back pending, and their events go out now
        // (a bounded number of rounds: each can evict again).
        for _ in 0..3 {
            if self.evictions() == 0 {
                break;
            }
            self.deliver_due().await;
        }
        self.schedule_pods();
        self.sync_cluster();
        let check = if story_moves { Check::Running } else { Check::Settling };
        self.check(check).await;
    }

    fn pending_uids(&self) -> Vec<String> {
        self.pods
            .iter()
            .filter(|(_, (_, s))| *s == PodState::Pending)
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    fn new_pod(&mut self) -> String {
        self.next_pod += 1;
        let (cpu, mib) = *self.rng.pick(&SHAPES);
        let name = format!("app-{}", self.next_pod);
        let mut pod = Pod::new(&name, cpu, mib * 1024 * 1024);
        pod.uid = format!("uid-{:06}", self.next_pod);
        pod.namespace = "default".into();
        match self.rng.below(10) {
            0 | 1 => {
                pod.node_selector.insert("tier".into(), "critical".into());
            }
            2 | 3 => {
                pod.node_selector.insert("workload".into(), "batch".into());
            }
            // A Deployment with a PDB (maxUnavailable 1), on the pool that consolidates and
            // takes spot interruptions.
            4 | 5 => {
                pod.labels.insert("app".into(), "web".into());
            }
            _ => {}
        }
        let uid = pod.uid.clone();
        self.pods.insert(uid.clone(), (pod, PodState::Pending));
        uid
    }

    fn arrive(&mut self, n: usize) {
        let uids: Vec<String> = (0..n).map(|_| self.new_pod()).collect();
        self.note(format!("{n} pods arrive: {}", uids.join(",")));
        self.send_pods(&uids);
    }

    fn depart(&mut self, n: usize) {
        let bound: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, (_, s))| matches!(s, PodState::Bound(_)))
            .map(|(uid, _)| uid.clone())
            .collect();
        for _ in 0..n.min(bound.len()) {
            let uid = self.rng.pick(&bound).clone();
            if let Some(p) = self.pods.get_mut(&uid) {
                p.1 = PodState::Gone;
            }
            self.note(format!("pod {uid} deleted"));
        }
    }

    fn warn_spot(&mut self) {
        let spot: Vec<InstanceSummary> = self
            .capacity
            .all_instances()
            .into_iter()
            .filter(|i| i.spot && i.state == "running" && !self.warned.contains(&i.instance_id))
            .collect();
        if spot.is_empty() {
            return;
        }
        let id = self.rng.pick(&spot).instance_id.clone();
        self.warned.insert(id.clone());
        self.note(format!("spot interruption warning for {id}"));
        self.reclaims.push((self.now + SPOT_NOTICE_MS, id.clone()));
        let ev = self.ec2_event(
            "EC2 Spot Instance Interruption Warning",
            &id,
            json!({"instance-id": id, "instance-action": "terminate"}),
        );
        self.send(Function::SpotInterruption, ev);
    }

    /// EC2 runs out of spot capacity for an offering the cluster uses (the planner's favourite:
    /// the next launch asks for it), for the rest of the story.
    fn exhaust_spot(&mut self) {
        let used: Vec<(String, String)> = self
            .capacity
            .all_instances()
            .into_iter()
            .filter(|i| i.spot)
            .map(|i| (i.instance_type, i.zone))
            .collect();
        if used.is_empty() {
            return;
        }
        let (instance_type, zone) = self.rng.pick(&used).clone();
        self.note(format!("EC2 has no spot capacity left for {instance_type} in {zone}"));
        self.capacity
            .exhaust(nodewright_core::CapacityType::Spot, &instance_type, &zone);
    }

    /// EC2 and the kubelets: instances turn running and their nodes register and turn Ready;
    /// spot reclaims happen; instances Nodewright terminated take their nodes and pods with them.
    async fn physics(&mut self) {
        // The Auto Scaling group launches towards its desired capacity (replacing members that
        // were terminated past it) and says so.
        for (group, id) in self.capacity.launch_group_instances(self.now) {
            self.group_instances.insert(id.clone());
            self.note(format!("group {group} launches {id}"));
            let ev = self.asg_event("EC2 Instance Launch Successful", &group, &id);
            self.send(Function::StateChange, ev);
        }
        let due: Vec<String> = self
            .reclaims
            .iter()
            .filter(|(at, _)| *at <= self.now)
            .map(|(_, id)| id.clone())
            .collect();
        self.reclaims.retain(|(at, _)| *at > self.now);
        for id in due {
            let alive = self
                .capacity
                .all_instances()
                .iter()
                .any(|i| i.instance_id == id && i.state != "terminated");
            if alive {
                self.reclaimed.insert(id.clone());
                self.note(format!("EC2 reclaims {id}"));
                if let Err(e) = self.capacity.terminate(std::slice::from_ref(&id)).await {
                    self.note(format!("reclaim of {id} refused: {e}"));
                }
            }
        }
        for i in self.capacity.all_instances() {
            let id = i.instance_id.clone();
            let first_seen = *self.launched.entry(id.clone()).or_insert(self.now);
            if i.state == "terminated" || i.state == "shutting-down" {
                if self.terminated_seen.insert(id.clone()) {
                    self.on_terminated(&i).await;
                }
                continue;
            }
            if self.now - first_seen >= RUNNING_AFTER_MS && self.running_sent.insert(id.clone()) {
                let ev = self.ec2_event(
                    "EC2 Instance State-change Notification",
                    &id,
                    json!({"instance-id": id, "state": "running"}),
                );
                self.send(Function::StateChange, ev);
            }
            if self.now - first_seen >= READY_AFTER_MS && !self.booted.contains(&id) {
                self.booted.insert(id.clone());
                match self.boot(&i) {
                    Some(node) => {
                        let detail = NodeReady {
                            schema_version: cluster_event::NODE_READY_SCHEMA_VERSION,
                            cluster: self.settings.cluster.clone(),
                            node: node.node.name.clone(),
                            instance_id: id.clone(),
                            ready_at: self.now,
                        };
                        self.note(format!("{id} boots as node {}", node.node.name));
                        let mut nodes = self.cluster.node_list();
                        nodes.push(node);
                        self.cluster.set_nodes(nodes);
                        let detail = serde_json::to_value(&detail).unwrap_or_default();
                        let ev = self.envelope(cluster_event::SOURCE, cluster_event::NODE_READY, Vec::new(), detail);
                        self.send(Function::StateChange, ev);
                    }
                    None => self.note(format!("{id} cannot boot: no readable user data")),
                }
            }
        }
    }

    /// A node registering as the real kubelet would, from what EC2 holds for the instance.
    fn boot(&self, i: &InstanceSummary) -> Option<ClusterNode> {
        let user_data = self.capacity.user_data(&i.instance_id)?;
        let boot = nodewright_kubelet::read_user_data(&user_data).ok()?;
        let t = self.settings.type_by_name(&i.instance_type)?;
        let n = u64::from_str_radix(i.instance_id.trim_start_matches("i-"), 16).unwrap_or(1);
        let facts = nodewright_kubelet::InstanceFacts {
            instance_id: i.instance_id.clone(),
            private_ip: format!("10.{}.{}.{}", (n >> 16) % 256, (n >> 8) % 256, n % 256),
            zone: i.zone.clone(),
            region: self.settings.region.clone(),
            instance_type: i.instance_type.clone(),
            architecture: match t.labels.get(labels::ARCH).map(String::as_str) {
                Some("arm64") => "arm64".into(),
                _ => "x86_64".into(),
            },
            vcpus: t.labels.get(labels::INSTANCE_CPU)?.parse().ok()?,
            memory_mib: t.labels.get(labels::INSTANCE_MEMORY)?.parse().ok()?,
            // The AMI's ENI table (what the node registers with when the user data does not say).
            default_max_pods: nodewright_core::Catalogue::embedded()
                .get(&i.instance_type)
                .ok()
                .and_then(|s| s.eni_max_pods())
                .unwrap_or(110),
        };
        let mut json = nodewright_kubelet::register(&facts, &boot);
        nodewright_kubelet::mark_ready(&mut json, &nodewright_core::time::format_rfc3339(self.now));
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json).ok()?;
        let name = node.metadata.name.clone()?;
        cluster_node(&node, &name).ok()
    }

    /// An instance is gone: Nodewright's termination must have drained its node first (unless EC2
    /// reclaimed it); its node leaves and its pods are recreated pending.
    async fn on_terminated(&mut self, i: &InstanceSummary) {
        let id = &i.instance_id;
        let node = self
            .cluster
            .node_list()
            .into_iter()
            .find(|n| n.instance_id.as_deref() == Some(id.as_str()));
        if let Some(node) = node {
            let name = node.node.name.clone();
            let workload: Vec<String> = self
                .pods
                .iter()
                .filter(|(_, (_, s))| *s == PodState::Bound(name.clone()))
                .map(|(uid, _)| uid.clone())
                .collect();
            let drained = self
                .cluster
                .writes()
                .iter()
                .any(|w| matches!(w, ClusterWrite::Drain { node, .. } if *node == name));
            if !workload.is_empty() && !drained && !self.reclaimed.contains(id) {
                self.violation(
                    Invariant::DrainBeforeTerminate,
                    format!(
                        "{id} (node {name}) terminated with {} pods and no eviction attempt",
                        workload.len()
                    ),
                );
            }
            let nodes = self
                .cluster
                .node_list()
                .into_iter()
                .filter(|n| n.node.name != name)
                .collect();
            self.cluster.set_nodes(nodes);
            for uid in workload {
                self.replace_pod(&uid);
            }
        }
        self.note(format!("{id} terminated"));
        if self.group_instances.contains(id) {
            let ev = self.asg_event("EC2 Instance Terminate Successful", GROUP, id);
            self.send(Function::StateChange, ev);
        }
        let ev = self.ec2_event(
            "EC2 Instance State-change Notification",
            id,
            json!({"instance-id": id, "state": "terminated"}),
        );
        self.send(Function::StateChange, ev);
    }

    /// A pod lost with its node or evicted: its Deployment creates a new one, pending.
    fn replace_pod(&mut self, uid: &str) {
        if let Some(p) = self.pods.get_mut(uid) {
            p.1 = PodState::Gone;
        }
        let new = self.new_pod();
        self.note(format!("pod {uid} replaced by {new}"));
        self.send_pods(&[new]);
    }

    /// Pods the cluster stand-in no longer lists as bound were evicted by a drain; how many.
    fn evictions(&mut self) -> usize {
        let listed: BTreeSet<String> = self.cluster.bound().into_iter().map(|p| p.uid).collect();
        let evicted: Vec<String> = self
            .pods
            .iter()
            .filter(|(uid, (_, s))| matches!(s, PodState::Bound(_)) && !listed.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        let n = evicted.len();
        for uid in evicted {
            self.replace_pod(&uid);
        }
        n
    }

    /// kube-scheduler's part: a pending pod held by a live claim whose node is up binds to it.
    fn schedule_pods(&mut self) {
        let nodes = self.cluster.node_list();
        let claims = self.state.claim_records();
        for (uid, (_, s)) in self.pods.iter_mut() {
            if *s != PodState::Pending {
                continue;
            }
            let node = claims
                .iter()
                .filter(|c| c.state.is_live() && c.state <= ClaimState::Ready && c.pods.contains(uid))
                .find_map(|c| {
                    nodes
                        .iter()
                        .find(|n| n.instance_id.is_some() && n.instance_id == c.instance_id && !n.unregistered)
                });
            if let Some(n) = node {
                *s = PodState::Bound(n.node.name.clone());
            }
        }
    }

    fn sync_cluster(&self) {
        let mut pending = Vec::new();
        let mut bound = Vec::new();
        for (pod, s) in self.pods.values() {
            match s {
                PodState::Pending => pending.push(pod.clone()),
                PodState::Bound(node) => bound.push(Pod {
                    node_name: Some(node.clone()),
                    ..pod.clone()
                }),
                PodState::Gone => {}
            }
        }
        // The disruption controller: the web pods' PDB (maxUnavailable 1) allows a disruption
        // only while none of them is pending.
        let unavailable = pending
            .iter()
            .filter(|p| p.labels.get("app").map(String::as_str) == Some("web"))
            .count();
        self.cluster.set_pdbs(vec![Pdb {
            name: "web".into(),
            namespace: "default".into(),
            selector: LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                match_expressions: Vec::new(),
            },
            disruptions_allowed: u32::from(unavailable == 0),
        }]);
        self.cluster.set_pending(pending);
        self.cluster.set_bound(bound);
    }

    // ---- delivery ----

    fn envelope(&mut self, source: &str, detail_type: &str, resources: Vec<String>, detail: Value) -> Value {
        self.seq += 1;
        json!({
            "version": "0",
            "id": format!("chaos-{}-{:06}", self.seed, self.seq),
            "detail-type": detail_type,
            "source": source,
            "account": "123456789012",
            "time": nodewright_core::time::format_rfc3339(self.now),
            "region": self.settings.region,
            "resources": resources,
            "detail": detail,
        })
    }

    fn ec2_event(&mut self, detail_type: &str, instance_id: &str, detail: Value) -> Value {
        let arn = format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}");
        self.envelope("aws.ec2", detail_type, vec![arn], detail)
    }

    /// An Auto Scaling activity event, as the service sends it.
    fn asg_event(&mut self, detail_type: &str, group: &str, instance_id: &str) -> Value {
        let resources = vec![
            format!("arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:uuid:autoScalingGroupName/{group}"),
            format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}"),
        ];
        let detail = json!({
            "StatusCode": "InProgress",
            "AutoScalingGroupName": group,
            "EC2InstanceId": instance_id,
            "Details": {"Availability Zone": "us-east-1a"},
            "StatusMessage": "",
            "Cause": "a user request update of AutoScalingGroup constraints",
        });
        self.envelope("aws.autoscaling", detail_type, resources, detail)
    }

    fn send_pods(&mut self, uids: &[String]) {
        let pods: Vec<PendingPod> = uids
            .iter()
            .filter_map(|uid| self.pods.get(uid))
            .map(|(pod, _)| PendingPod {
                resource_version: "1".into(),
                created_at: self.now,
                pod: pod.clone(),
            })
            .collect();
        if pods.is_empty() {
            return;
        }
        self.seq += 1;
        let detail = PodPending {
            schema_version: cluster_event::SCHEMA_VERSION,
            cluster: self.settings.cluster.clone(),
            batch_id: format!("batch-{}-{}", self.seed, self.seq),
            part: 1,
            parts: 1,
            sent_at: self.now,
            pods,
        };
        let detail = serde_json::to_value(&detail).unwrap_or_default();
        let ev = self.envelope(cluster_event::SOURCE, cluster_event::POD_PENDING, Vec::new(), detail);
        self.send(Function::PodPending, ev);
    }

    /// Queues an event as EventBridge delivers it: at least once, possibly late, possibly to two
    /// invocations at once.
    fn send(&mut self, function: Function, event: Value) {
        self.seq += 1;
        let mut d = Delivery {
            at: self.now,
            seq: self.seq,
            function,
            event,
            attempt: 0,
            concurrent: false,
        };
        if self.faults_on && self.options.delivery_faults {
            let r = self.rng.unit();
            if r < 0.08 {
                let mut copy = d.clone();
                copy.at += 1000 * self.rng.below(90) as i64;
                copy.seq += 1_000_000;
                self.count("duplicated");
                self.queue.push(copy);
            } else if r < 0.16 {
                d.at += 30_000 + 1000 * self.rng.below(120) as i64;
                self.count("delayed");
            } else if r < 0.22 {
                d.concurrent = true;
                self.count("concurrent");
            }
        }
        self.queue.push(d);
    }

    fn count(&mut self, what: &'static str) {
        *self.result.deliveries.entry(what).or_default() += 1;
    }

    async fn deliver_due(&mut self) {
        // Deliveries made now may queue more (retries): loop until nothing is due.
        loop {
            self.queue.sort_by_key(|d| (d.at, d.seq));
            let Some(pos) = self.queue.iter().position(|d| d.at <= self.now) else {
                return;
            };
            let d = self.queue.remove(pos);
            let copies = if d.concurrent { 2 } else { 1 };
            // As deployed, only pod-pending hands its launches to the bus; whatever it put there
            // is delivered to state-change like any event (late, twice, or to two at once).
            self.capacity.set_bus(d.function == Function::PodPending);
            let ended = self.invoke(&d, copies).await;
            for event in self.capacity.take_bus_events() {
                self.count("launch handed off");
                self.send(Function::StateChange, event);
            }
            for (copy, e) in ended.into_iter().enumerate() {
                let what = d.event["detail-type"].as_str().unwrap_or("?").to_string();
                let failed = match e {
                    Ended::Ok(unschedulable) => {
                        for (pod, reason) in unschedulable {
                            self.unschedulable.insert(pod, reason);
                        }
                        false
                    }
                    Ended::Failed(err) => {
                        self.note(format!(
                            "{} {what} (attempt {}, copy {copy}) failed: {err}",
                            d.function.name(),
                            d.attempt
                        ));
                        true
                    }
                    Ended::Died => {
                        self.note(format!(
                            "{} {what} (attempt {}, copy {copy}) died",
                            d.function.name(),
                            d.attempt
                        ));
                        true
                    }
                };
                if !failed {
                    continue;
                }
                if let Some(delay) = RETRY_DELAYS_MS.get(d.attempt) {
                    self.count("retried");
                    self.seq += 1;
                    self.queue.push(Delivery {
                        at: self.now + delay,
                        seq: self.seq,
                        attempt: d.attempt + 1,
                        concurrent: false,
                        ..d.clone()
                    });
                } else {
                    self.count("dead-lettered");
                    self.note(format!("{} {what} dead-lettered", d.function.name()));
                }
            }
        }
    }

    /// Runs `copies` invocations of the delivery concurrently, each with its own fault plan.
    async fn invoke(&mut self, d: &Delivery, copies: usize) -> Vec<Ended> {
        let plans: Vec<Arc<Faults>> = (0..copies)
            .map(|_| {
                if self.faults_on {
                    Faults::random(self.rng.next_u64(), self.options.rate, &self.options.kinds, 2)
                } else {
                    Faults::none()
                }
            })
            .collect();
        // The first copy runs in the function's warm execution environment (its per-environment
        // caches: the consolidated memo, the DaemonSets), unless this is a cold start; other
        // copies run concurrently, in environments of their own.
        if self.rng.below(5) == 0 {
            self.warm.remove(d.function.name());
        }
        let envs: Vec<Environment> = (0..copies)
            .map(|copy| match copy {
                0 => self.warm.entry(d.function.name()).or_default().clone(),
                _ => Environment::default(),
            })
            .collect();
        let runs = plans
            .iter()
            .zip(&envs)
            .map(|(faults, env)| self.invoke_once(d, faults, env));
        let ended = futures::future::join_all(runs).await;
        for faults in &plans {
            self.result.invocations += 1;
            for ((method, kind), n) in faults.counts() {
                *self.result.injected.entry((qualified(method), kind)).or_default() += n;
            }
            for method in faults.called().keys() {
                self.result.called.insert(qualified(method));
            }
            for (call, method, kind) in faults.injected_all() {
                self.trace.push(format!(
                    "[{}] step {}   {} call {call}: {} at {}",
                    self.seed,
                    self.step,
                    d.function.name(),
                    kind.name(),
                    qualified(method)
                ));
            }
        }
        ended
    }

    async fn invoke_once(&self, d: &Delivery, faults: &Arc<Faults>, env: &Environment) -> Ended {
        let deps = Deps {
            settings: self.settings.clone(),
            state: FaultyState {
                inner: self.state.clone(),
                faults: faults.clone(),
            },
            capacity: FaultyCapacity {
                inner: self.capacity.clone(),
                faults: faults.clone(),
            },
            cluster: Some(FaultyCluster {
                inner: self.cluster.clone(),
                faults: faults.clone(),
            }),
            daemonsets: env.daemonsets.clone(),
            consolidated: env.consolidated.clone(),
        };
        let parsed = match event::parse_value(&d.event) {
            Ok(p) => p,
            Err(e) => return Ended::Failed(format!("the story built an event the parser refused: {e}")),
        };
        // Biased: the branches are polled in this order every time, so a seed replays exactly
        // (tokio picks one at random otherwise, and a crash could cut concurrent calls short or
        // not from one run to the next).
        tokio::select! {
            biased;
            r = handle_with_faults(d.function, &deps, parsed, self.now) => match r {
                Ok(outcome) => Ended::Ok(
                    outcome
                        .actions
                        .iter()
                        .filter_map(|a| match a {
                            Action::Unschedulable { pod, reason } => Some((pod.clone(), reason.clone())),
                            _ => None,
                        })
                        .collect(),
                ),
                // As the function's main: an error a retry cannot fix is logged and not retried.
                Err(e) if !e.is_retryable() => {
                    tracing::debug!(error = %e, "permanent handler error");
                    Ended::Ok(Vec::new())
                }
                Err(e) => Ended::Failed(e.to_string()),
            },
            () = faults.crashed() => Ended::Died,
        }
    }

    // ---- invariants ----

    fn violation(&mut self, invariant: Invariant, detail: String) {
        self.note(format!("VIOLATION {}: {detail}", invariant.name()));
        self.result.violations.push(Counterexample {
            seed: self.seed,
            step: self.step,
            invariant: invariant.name(),
            detail,
            trace: self.trace.clone(),
        });
    }

    async fn check(&mut self, check: Check) {
        let found = invariants::check(
            check,
            self.now,
            &self.settings,
            &self.state,
            &self.capacity.all_instances(),
            &self.launched,
            &self.pods_by_state(),
        )
        .await;
        for (invariant, detail) in found {
            self.violation(invariant, detail);
        }
    }

    fn usage_conserved(&self) -> bool {
        let claims = self.state.claim_records();
        let pools = self.settings.pools();
        pools.config.node_pools.iter().all(|p| {
            nodewright_handlers::consolidation::usage_of_claims(&claims, &p.name, &pools.all_types)
                .is_none_or(|held| held == self.state.usage(&p.name))
        })
    }

    /// (pod, pending, the latest unschedulable reason) of every pod that exists.
    fn pods_by_state(&self) -> Vec<(Pod, bool, Option<String>)> {
        self.pods
            .iter()
            .filter(|(_, (_, s))| *s != PodState::Gone)
            .map(|(_, (pod, s))| {
                let reason = self
                    .unschedulable
                    .get(&pod.name)
                    .or_else(|| self.unschedulable.get(&pod.key()))
                    .cloned();
                (pod.clone(), *s == PodState::Pending, reason)
            })
            .collect()
    }
}
