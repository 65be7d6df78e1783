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
  amiSelectorTerms: [{id: ami-0123456789abcdef0}]
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  role: KarpenterNodeRole-demo
"#;

pub type MemDeps = Deps<MemoryState, MemoryCapacity, MemoryCluster>;

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
        capacity: MemoryCapacity::new("demo", state.clone()),
        state,
        cluster: Some(MemoryCluster::new()),
        daemonsets: Vec::new(),
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
