//! The handlers' state-keeping run on the DynamoDB store (moto), not only on the memory store the
//! handler tests use: the usage reconciler's read, check and conditional correction, as the
//! consolidation function runs them (#19).
#![allow(clippy::unwrap_used)]

mod support;

use nodewright_aws::state::StateStore;
use nodewright_core::Config;
use nodewright_core::ports::state::{Holder, UsageDelta};
use nodewright_handlers::adapters::memory::{MemoryCapacity, MemoryCluster};
use nodewright_handlers::consolidation::{USAGE_STABLE_MS, usage_of_claims};
use nodewright_handlers::{Action, Deps, Function, Outcome, Settings};

/// 2026-11-21T10:00:00Z.
const NOW: i64 = 1_795_255_200_000;

const POOLS: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: general}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
        - {key: karpenter.k8s.aws/instance-category, operator: In, values: [m]}
  limits: {cpu: "64"}
  disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 1h}
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

fn scheduled(at: i64) -> nodewright_handlers::Parsed {
    let event = serde_json::json!({
        "version": "0",
        "id": format!("tick-{at}"),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": nodewright_core::time::format_rfc3339(at),
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/nodewright-consolidation"],
        "detail": {}
    });
    nodewright_handlers::event::parse_value(&event).unwrap()
}

/// A release applied twice (its response lost, the call retried) takes DynamoDB's counters below
/// zero; the consolidation function's reconciler sees the difference from the live claims stay
/// for three minutes and writes the claims' sum back, conditional on the counters' version.
#[tokio::test]
async fn the_reconciler_corrects_dynamodb_counters_taken_below_zero() {
    let clients = support::clients().await;
    let store: StateStore = support::store(&clients, "reconciler").await;
    let (config, _) = Config::parse_strict(POOLS, "test").unwrap();
    let settings = Settings::new(store.cluster(), "us-east-1", config).unwrap();
    let deps = Deps {
        capacity: MemoryCapacity::new(store.cluster()),
        state: store.clone(),
        cluster: Some(MemoryCluster::new()),
        settings,
        daemonsets: Default::default(),
        consolidated: Default::default(),
    };
    let mut pods = Vec::new();
    for i in 0..3 {
        let mut p = nodewright_core::Pod::new(&format!("web-{i}"), 1500, 3 << 30);
        p.uid = format!("u-web-{i}");
        p.normalize();
        pods.push(p);
    }
    let mut out = Outcome::new("pod-pending", "batch-1");
    nodewright_handlers::provision::provision(&deps, pods, &Holder::Invocation("batch-1".into()), &[], NOW, &mut out)
        .await
        .unwrap();
    assert!(
        out.actions.iter().any(|a| matches!(a, Action::Launched { .. })),
        "{out:#?}"
    );
    let types = &deps.settings.pools().instance_types;
    let truth = usage_of_claims(&store.claims().await.unwrap(), "general", types).unwrap();
    assert!(truth.nodes >= 1);
    assert_eq!(store.pool_usage("general").await.unwrap(), truth, "charged as decided");

    let all = UsageDelta {
        cpu_milli: truth.cpu_milli,
        memory_bytes: truth.memory_bytes,
        gpus: truth.gpus,
        nodes: truth.nodes,
    };
    store.release_usage("general", &all, true).await.unwrap();
    store.release_usage("general", &all, true).await.unwrap();
    let snapshot = store.usage_snapshot("general").await.unwrap();
    assert!(snapshot.negative, "{snapshot:?}");

    let t0 = NOW + 60_000;
    let first = nodewright_handlers::handle(Function::Consolidation, &deps, scheduled(t0), t0)
        .await
        .unwrap();
    assert!(
        !first.actions.iter().any(|a| matches!(a, Action::UsageCorrected { .. })),
        "not before the difference has stayed: {first:#?}"
    );
    let t1 = t0 + USAGE_STABLE_MS;
    let second = nodewright_handlers::handle(Function::Consolidation, &deps, scheduled(t1), t1)
        .await
        .unwrap();
    assert!(
        second
            .actions
            .iter()
            .any(|a| matches!(a, Action::UsageCorrected { .. })),
        "{second:#?}"
    );
    assert_eq!(store.pool_usage("general").await.unwrap(), truth);
    assert!(!store.usage_snapshot("general").await.unwrap().negative);
}
