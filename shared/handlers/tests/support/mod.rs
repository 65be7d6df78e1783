//! Fixtures for handler tests: settings from a small NodePool file, in-memory adapters, and the
//! sample events in events/.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use nodewright_core::Config;
use nodewright_handlers::adapters::memory::{MemoryCapacity, MemoryCluster, MemoryState};
use nodewright_handlers::event::parse_bytes;
use nodewright_handlers::{Deps, Function, Outcome, Parsed, Settings, handle};

pub const POOLS: &str = r#"
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
  limits: {cpu: "64"}
  disruption: {consolidationPolicy: WhenEmptyOrUnderutilized, consolidateAfter: 1m}
---
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  amiFamily: AL2023
  amiSelectorTerms: [{id: ami-0123456789abcdef0}]
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  role: KarpenterNodeRole-demo
"#;

pub type MemDeps = Deps<MemoryState, MemoryCapacity, MemoryCluster>;

/// [`MemDeps`] with the state and capacity calls going through a fault plan.
pub type FaultyDeps = Deps<
    nodewright_handlers::adapters::faults::FaultyState<MemoryState>,
    nodewright_handlers::adapters::faults::FaultyCapacity<MemoryCapacity>,
    MemoryCluster,
>;

/// `base`'s state and capacity (shared, not copied) behind `faults`.
pub fn faulty(base: &MemDeps, faults: &std::sync::Arc<nodewright_handlers::adapters::faults::Faults>) -> FaultyDeps {
    use nodewright_handlers::adapters::faults::{FaultyCapacity, FaultyState};
    Deps {
        settings: base.settings.clone(),
        state: FaultyState {
            inner: base.state.clone(),
            faults: faults.clone(),
        },
        capacity: FaultyCapacity {
            inner: base.capacity.clone(),
            faults: faults.clone(),
        },
        cluster: base.cluster.clone(),
        daemonsets: nodewright_handlers::DaemonSets::default(),
        consolidated: Default::default(),
    }
}

pub fn settings(pools: &str) -> Settings {
    let (config, _) = Config::parse_strict(pools, "test").unwrap();
    Settings::new("demo", "us-east-1", config).unwrap()
}

pub fn deps() -> MemDeps {
    deps_with(POOLS)
}

pub fn deps_with(pools: &str) -> MemDeps {
    let state = MemoryState::new();
    Deps {
        settings: settings(pools),
        capacity: MemoryCapacity::new("demo"),
        state,
        cluster: Some(MemoryCluster::new()),
        daemonsets: nodewright_handlers::DaemonSets::default(),
        consolidated: Default::default(),
    }
}

pub fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events")
}

pub fn event_text(name: &str) -> String {
    std::fs::read_to_string(events_dir().join(name)).unwrap()
}

/// A sample event with its instance id replaced.
pub fn event_for(name: &str, instance_id: &str) -> Vec<u8> {
    event_text(name)
        .replace("i-0123456789abcdef0", instance_id)
        .into_bytes()
}

pub const NOW: i64 = 1_795_255_200_000; // 2026-11-21T10:00:00Z

pub async fn run(function: Function, deps: &MemDeps, bytes: &[u8], now: i64) -> Outcome {
    let parsed: Parsed = parse_bytes(bytes).unwrap();
    handle(function, deps, parsed, now).await.unwrap()
}

/// Runs pod-pending on events/pod-pending.json (7 pods) at NOW.
pub async fn sample_batch(deps: &MemDeps) -> Outcome {
    run(
        Function::PodPending,
        deps,
        event_text("pod-pending.json").as_bytes(),
        NOW,
    )
    .await
}

/// What EC2 holds for a memory instance, as the kubelet emulator needs it: its type's vCPUs,
/// memory and architecture from DescribeInstanceTypes (the embedded catalogue is generated from
/// it), a private IP, and the region.
fn facts(i: &nodewright_core::ports::capacity::InstanceSummary) -> nodewright_kubelet::InstanceFacts {
    use nodewright_core::labels;
    let types = nodewright_core::Catalogue::embedded()
        .instance_types("us-east-1", &nodewright_core::catalogue::OverheadConfig::default());
    let t = types.iter().find(|t| t.name == i.instance_type).unwrap();
    let n = u64::from_str_radix(i.instance_id.trim_start_matches("i-"), 16).unwrap_or(1);
    nodewright_kubelet::InstanceFacts {
        instance_id: i.instance_id.clone(),
        private_ip: format!("10.0.{}.{}", (n >> 8) % 256, n % 256),
        zone: i.zone.clone(),
        region: "us-east-1".into(),
        instance_type: i.instance_type.clone(),
        architecture: match t.labels[labels::ARCH].as_str() {
            "amd64" => "x86_64".into(),
            other => other.into(),
        },
        vcpus: t.labels[labels::INSTANCE_CPU].parse().unwrap(),
        memory_mib: t.labels[labels::INSTANCE_MEMORY].parse().unwrap(),
        // The AMI's ENI table, not our allocatable: what the node registers with when the user
        // data does not say.
        default_max_pods: nodewright_core::Catalogue::embedded()
            .get(&i.instance_type)
            .ok()
            .and_then(|s| s.eni_max_pods())
            .unwrap_or(110),
    }
}

/// Boots a Node for every live instance that has none, as a real node would register: the kubelet
/// emulator reads the user data the launch recorded, builds the Node object, and the product's own
/// Kubernetes conversion reads it. The nodes report Ready. Returns the nodes added.
pub fn boot_nodes(deps: &MemDeps) -> Vec<nodewright_core::ports::cluster::ClusterNode> {
    boot_nodes_where(deps, |_| true)
}

/// [`boot_nodes`] for the instances `which` selects.
pub fn boot_nodes_where(
    deps: &MemDeps,
    which: impl Fn(&str) -> bool,
) -> Vec<nodewright_core::ports::cluster::ClusterNode> {
    let cluster = deps.cluster.as_ref().unwrap();
    let mut nodes = cluster.node_list();
    let mut added = Vec::new();
    for i in deps.capacity.all_instances() {
        if i.state == "terminated"
            || !which(&i.instance_id)
            || nodes
                .iter()
                .any(|n| n.instance_id.as_deref() == Some(i.instance_id.as_str()))
        {
            continue;
        }
        let user_data = deps.capacity.user_data(&i.instance_id).unwrap();
        let boot = nodewright_kubelet::read_user_data(&user_data).unwrap();
        let mut json = nodewright_kubelet::register(&facts(&i), &boot);
        nodewright_kubelet::mark_ready(&mut json, "2026-11-21T10:01:02Z");
        let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(json).unwrap();
        let name = node.metadata.name.clone().unwrap();
        let n = nodewright_core::ports::cluster::cluster_node(&node, &name).unwrap();
        added.push(n.clone());
        nodes.push(n);
    }
    cluster.set_nodes(nodes);
    added
}

/// The Node of `instance_id` (from its providerID); panics when it has not booted.
pub fn node_of_instance(deps: &MemDeps, instance_id: &str) -> nodewright_core::ports::cluster::ClusterNode {
    deps.cluster
        .as_ref()
        .unwrap()
        .node_list()
        .into_iter()
        .find(|n| n.instance_id.as_deref() == Some(instance_id))
        .unwrap_or_else(|| panic!("no node for {instance_id}"))
}

/// The watcher's `Node Ready` for `instance_id`'s node, booting nodes first (events/node-ready.json
/// with the instance and node names replaced).
pub fn node_ready_event(deps: &MemDeps, instance_id: &str) -> Vec<u8> {
    boot_nodes_where(deps, |i| i == instance_id);
    let node = node_of_instance(deps, instance_id);
    event_text("node-ready.json")
        .replace("i-0123456789abcdef0", instance_id)
        .replace("ip-10-0-12-34.ec2.internal", &node.node.name)
        .into_bytes()
}

/// A pod asking for one NVIDIA GPU and tolerating the GPU taint.
pub fn gpu_pod(uid: &str) -> nodewright_core::Pod {
    let mut p = nodewright_core::Pod::new(uid, 1000, 1 << 30);
    p.uid = uid.into();
    p.requests.set(nodewright_core::Resource::NvidiaGpu, 1);
    p.tolerations.push(nodewright_core::model::Toleration {
        key: Some("nvidia.com/gpu".into()),
        operator: nodewright_core::model::TolerationOperator::Exists,
        value: None,
        effect: None,
    });
    p.normalize();
    p
}
