//! NodePools and EC2NodeClasses from the cluster (`kubectl apply` changes the pools), the status
//! written back on them, and the Events posted on pods and nodes — against the memory cluster,
//! which keeps objects as the API server does (generation bumped on spec changes, status kept, an
//! Event name created twice refused).
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use nodewright_core::ports::cluster::{ConfigKind, EventType};
use nodewright_handlers::adapters::faults::{FaultKind, Faults, FaultyCluster};
use nodewright_handlers::node_pools::POOLS_TTL_MS;
use nodewright_handlers::settings::PoolSource;
use nodewright_handlers::{Action, Deps, Function, Outcome};
use serde_json::{Value, json};
use support::*;

fn class() -> Value {
    json!({
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": "default", "uid": "c1", "resourceVersion": "10"},
        "spec": {
            "role": "KarpenterNodeRole-demo",
            "amiSelectorTerms": [{"alias": "al2023@latest"}],
            "subnetSelectorTerms": [{"tags": {"karpenter.sh/discovery": "demo"}}],
            "securityGroupSelectorTerms": [{"tags": {"karpenter.sh/discovery": "demo"}}],
        },
    })
}

fn pool(name: &str, families: &[&str], extra: Value) -> Value {
    let mut spec = json!({
        "template": {"spec": {
            "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
            "requirements": [
                {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                {"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": families},
            ],
        }},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "managedFields": [{"manager": "kubectl"}]},
        "spec": spec,
    })
}

/// Deps whose pools come from the cluster (the configured `general` pool is the fallback).
fn cluster_deps() -> MemDeps {
    let mut deps = deps();
    deps.settings.pool_source = PoolSource::Cluster;
    deps
}

/// The sample batch as a new event: its own id and pod uids.
fn batch(n: u32) -> Vec<u8> {
    event_text("pod-pending.json")
        .replace(
            "6a7e8f9b-1c2d-4e3f-8a9b-0c1d2e3f4a5b",
            &format!("6a7e8f9b-1c2d-4e3f-8a9b-0c1d2e3f{n:04}"),
        )
        .replace("5f0c000", &format!("5f{n:02}000"))
        .replace("3f9a1c2b7d4e8f60a1b2c3d4", &format!("3f9a1c2b7d4e8f60a1b2{n:04}"))
        .into_bytes()
}

fn launched(o: &Outcome) -> Vec<(String, String)> {
    o.actions
        .iter()
        .filter_map(|a| match a {
            Action::Launched {
                pool, instance_type, ..
            } => Some((pool.clone(), instance_type.clone())),
            _ => None,
        })
        .collect()
}

fn cluster(deps: &MemDeps) -> &nodewright_handlers::adapters::memory::MemoryCluster {
    deps.cluster.as_ref().unwrap()
}

#[tokio::test]
async fn pools_applied_to_the_cluster_are_used_and_a_change_takes_effect_after_the_cache() {
    let deps = cluster_deps();
    // No NodePool in the cluster: the configured pool.
    let o = run(Function::PodPending, &deps, &batch(1), NOW).await;
    assert!(launched(&o).iter().all(|(p, _)| p == "general"), "{o:?}");

    cluster(&deps).apply_config(ConfigKind::Ec2NodeClass, class());
    cluster(&deps).apply_config(ConfigKind::NodePool, pool("web", &["m5"], json!({})));
    let later = NOW + POOLS_TTL_MS;
    let o = run(Function::PodPending, &deps, &batch(2), later).await;
    let l = launched(&o);
    assert!(!l.is_empty(), "{o:?}");
    assert!(
        l.iter().all(|(p, t)| p == "web" && t.starts_with("m5.")),
        "the cluster's pool, not the configured one: {l:?}"
    );

    // `kubectl apply` of a changed pool: the cached listing holds until its TTL runs out.
    cluster(&deps).apply_config(ConfigKind::NodePool, pool("web", &["c5"], json!({})));
    assert_eq!(
        cluster(&deps).config_object(ConfigKind::NodePool, "web").unwrap()["metadata"]["generation"],
        2
    );
    let o = run(Function::PodPending, &deps, &batch(3), later + 1_000).await;
    assert!(launched(&o).iter().all(|(_, t)| t.starts_with("m5.")), "{o:?}");
    let o = run(Function::PodPending, &deps, &batch(4), later + POOLS_TTL_MS).await;
    let l = launched(&o);
    assert!(!l.is_empty() && l.iter().all(|(_, t)| t.starts_with("c5.")), "{l:?}");

    // Every NodePool deleted: no pool (as in Karpenter), not the configured fallback, which is
    // only for clusters that do not serve the kind.
    cluster(&deps).delete_config(ConfigKind::NodePool, "web");
    let o = run(Function::PodPending, &deps, &batch(5), later + 2 * POOLS_TTL_MS).await;
    assert!(launched(&o).is_empty(), "{o:?}");
    assert!(
        o.actions.iter().any(|a| matches!(a, Action::Unschedulable { .. })),
        "{o:?}"
    );

    // Deleted and created again (generation 1 again, a new uid): parsed again, not mistaken for
    // the first `web`.
    cluster(&deps).apply_config(ConfigKind::NodePool, pool("web", &["r5"], json!({})));
    let o = run(Function::PodPending, &deps, &batch(6), later + 3 * POOLS_TTL_MS).await;
    let l = launched(&o);
    assert!(!l.is_empty() && l.iter().all(|(_, t)| t.starts_with("r5.")), "{l:?}");

    // Between two listings, deleted and created again with another spec: the same name and
    // generation (1), only the server's uid tells it apart.
    cluster(&deps).delete_config(ConfigKind::NodePool, "web");
    cluster(&deps).apply_config(ConfigKind::NodePool, pool("web", &["m5"], json!({})));
    let o = run(Function::PodPending, &deps, &batch(7), later + 4 * POOLS_TTL_MS).await;
    let l = launched(&o);
    assert!(!l.is_empty() && l.iter().all(|(_, t)| t.starts_with("m5.")), "{l:?}");
}

#[tokio::test]
async fn an_invalid_pool_is_not_used_and_its_status_names_the_field_while_valid_ones_show_ready() {
    let deps = cluster_deps();
    let c = cluster(&deps);
    c.apply_config(ConfigKind::Ec2NodeClass, class());
    c.apply_config(ConfigKind::NodePool, pool("web", &["m5"], json!({})));
    c.apply_config(
        ConfigKind::NodePool,
        pool("broken", &["c5"], json!({"limits": {"cpu": "lots"}, "weight": 100})),
    );
    let mut orphan = pool("orphan", &["r5"], json!({}));
    orphan["spec"]["template"]["spec"]["nodeClassRef"]["name"] = "missing".into();
    c.apply_config(ConfigKind::NodePool, orphan);

    // The broken pool weighs more; were it used, the batch would go to c5.
    let o = run(Function::PodPending, &deps, &batch(1), NOW).await;
    let l = launched(&o);
    assert!(!l.is_empty() && l.iter().all(|(p, _)| p == "web"), "{l:?}");

    run(
        Function::Consolidation,
        &deps,
        event_text("scheduled.json").as_bytes(),
        NOW + 1_000,
    )
    .await;
    let status = |name: &str| c.config_object(ConfigKind::NodePool, name).unwrap()["status"].clone();
    let condition = |s: &Value, kind: &str| {
        s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .cloned()
            .unwrap()
    };
    let web = status("web");
    assert_eq!(condition(&web, "Ready")["status"], "True", "{web}");
    assert_eq!(web["resources"]["nodes"], l.len().to_string(), "{web}");
    assert_eq!(web["nodes"], l.len(), "{web}");
    let broken = status("broken");
    let valid = condition(&broken, "ValidationSucceeded");
    assert_eq!(valid["status"], "False");
    assert!(
        valid["message"].as_str().unwrap().contains("spec.limits.cpu"),
        "{valid}"
    );
    assert_eq!(condition(&broken, "Ready")["status"], "False");
    let orphan = status("orphan");
    assert_eq!(condition(&orphan, "NodeClassReady")["reason"], "NodeClassNotFound");
    let class_status = c.config_object(ConfigKind::Ec2NodeClass, "default").unwrap()["status"].clone();
    assert_eq!(condition(&class_status, "Ready")["status"], "True");

    // Nothing changed: later runs, against a fresh listing (past the cache), write nothing.
    let writes = c.status_writes();
    assert!(writes >= 4, "{writes}");
    for minute in 1..=3 {
        run(
            Function::Consolidation,
            &deps,
            event_text("scheduled.json").as_bytes(),
            NOW + 1_000 + minute * 60_000,
        )
        .await;
    }
    assert_eq!(
        c.status_writes(),
        writes,
        "no churn: unchanged status is not written again"
    );
}

#[tokio::test]
async fn a_failed_listing_keeps_the_pools_in_use() {
    let base = cluster_deps();
    cluster(&base).apply_config(ConfigKind::Ec2NodeClass, class());
    cluster(&base).apply_config(ConfigKind::NodePool, pool("web", &["m5"], json!({})));
    let o = run(Function::PodPending, &base, &batch(1), NOW).await;
    assert!(launched(&o).iter().all(|(p, _)| p == "web"));
    // The next invocation's first cluster call (the listing, its TTL run out) is throttled.
    let faults = Faults::at(0, FaultKind::Throttle);
    let deps = Deps {
        settings: base.settings.clone(),
        state: base.state.clone(),
        capacity: base.capacity.clone(),
        cluster: Some(FaultyCluster {
            inner: cluster(&base).clone(),
            faults: Arc::clone(&faults),
        }),
        daemonsets: base.daemonsets.clone(),
        consolidated: Default::default(),
    };
    let parsed = nodewright_handlers::event::parse_bytes(&batch(2)).unwrap();
    let o = nodewright_handlers::handle(Function::PodPending, &deps, parsed, NOW + POOLS_TTL_MS)
        .await
        .unwrap();
    assert_eq!(faults.injected(), Some((0, "config_objects")));
    let l = launched(&o);
    assert!(!l.is_empty() && l.iter().all(|(p, _)| p == "web"), "{l:?}");
}

#[tokio::test]
async fn pods_get_nominated_and_failed_scheduling_events_once_and_nodes_get_interruption_events() {
    let deps = deps();
    let mut text = event_text("pod-pending.json");
    // One pod asks for more than any instance has.
    text = text.replacen(r#""cpu": "1""#, r#""cpu": "5000""#, 1);
    let o = run(Function::PodPending, &deps, text.as_bytes(), NOW).await;
    assert!(o.launched() > 0);
    let (events, duplicates) = cluster(&deps).events();
    let nominated: Vec<_> = events.iter().filter(|e| e.reason == "Nominated").collect();
    assert_eq!(nominated.len(), 6, "{events:#?}");
    for e in &nominated {
        assert_eq!(e.regarding.kind, "Pod");
        assert_eq!(e.regarding.namespace, "shop");
        assert!(e.regarding.uid.as_deref().is_some_and(|u| u.starts_with("5f0c")));
        assert!(e.note.starts_with("Pod should schedule on: nodeclaim/"), "{}", e.note);
        assert_eq!(e.time, NOW);
    }
    let failed: Vec<_> = events.iter().filter(|e| e.reason == "FailedScheduling").collect();
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert_eq!(failed[0].event_type, EventType::Warning);
    assert_eq!(failed[0].regarding.name, "checkout-7d9f8b-00001");
    assert!(failed[0].note.starts_with("Failed to schedule pod, "));
    assert_eq!(duplicates, 0);

    // The watcher sends the pending pod again (a new event): the same decision is not a new Event.
    let resent = text.replace(
        "6a7e8f9b-1c2d-4e3f-8a9b-0c1d2e3f4a5b",
        "6a7e8f9b-1c2d-4e3f-8a9b-0c1d2e3f0099",
    );
    let o = run(Function::PodPending, &deps, resent.as_bytes(), NOW + 60_000).await;
    assert!(
        o.actions.iter().any(|a| matches!(a, Action::Unschedulable { .. })),
        "{o:?}"
    );
    let (again, duplicates) = cluster(&deps).events();
    assert_eq!(again.iter().filter(|e| e.reason == "FailedScheduling").count(), 1);
    assert!(duplicates >= 1, "the second FailedScheduling was refused by name");

    // A spot interruption: the node says so.
    let nodes = boot_nodes(&deps);
    let node = &nodes[0];
    let instance = node.instance_id.clone().unwrap();
    run(
        Function::SpotInterruption,
        &deps,
        &event_for("spot-interruption.json", &instance),
        NOW + 60_000,
    )
    .await;
    let (events, _) = cluster(&deps).events();
    let on_node: Vec<_> = events.iter().filter(|e| e.regarding.name == node.node.name).collect();
    assert_eq!(on_node.len(), 1, "{events:#?}");
    assert_eq!(on_node[0].reason, "SpotInterrupted");
    assert_eq!(on_node[0].regarding.kind, "Node");
}

/// Live prices: the scheduled run stores what the Pricing API and the spot price history report,
/// every function plans at them, and an unreachable price source leaves the catalogue's.
#[tokio::test]
async fn live_prices_are_refreshed_by_the_schedule_and_decisions_use_them() {
    use nodewright_core::CapacityType;
    use nodewright_core::ports::state::PriceSheet;
    use nodewright_handlers::ports::State;
    let deps = deps_with(
        r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: general}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
        - {key: node.kubernetes.io/instance-type, operator: In, values: [m5.2xlarge, c5.2xlarge]}
"#,
    );
    let catalogue_price = |name: &str| {
        deps.settings
            .pools()
            .type_by_name(name)
            .unwrap()
            .offerings
            .iter()
            .find(|o| o.capacity_type == CapacityType::OnDemand)
            .unwrap()
            .price
    };
    let (m5, c5) = (catalogue_price("m5.2xlarge"), catalogue_price("c5.2xlarge"));
    assert!(c5 < m5, "the catalogue makes c5 the cheaper choice");

    // No price source: the run goes on at the catalogue's prices, nothing stored.
    let scheduled = event_text("scheduled.json");
    run(Function::Consolidation, &deps, scheduled.as_bytes(), NOW).await;
    assert!(deps.state.prices(NOW + 60 * 60_000).await.unwrap().is_none());

    // The Pricing API now says c5 costs more than m5.
    let mut live = PriceSheet {
        region: "us-east-1".into(),
        ..Default::default()
    };
    live.on_demand.insert("c5.2xlarge".into(), m5 * 1.5);
    live.on_demand.insert("m5.2xlarge".into(), m5);
    deps.capacity.set_live_prices(live);
    // The failed try is not repeated every minute, but after PRICES_RETRY_MS.
    run(Function::Consolidation, &deps, scheduled.as_bytes(), NOW + 60_000).await;
    assert!(
        deps.state.prices(NOW + 60 * 60_000).await.unwrap().is_none(),
        "backing off"
    );
    let retry = NOW + nodewright_handlers::prices::PRICES_RETRY_MS;
    run(Function::Consolidation, &deps, scheduled.as_bytes(), retry).await;
    let stored = deps
        .state
        .prices(NOW + 60 * 60_000)
        .await
        .unwrap()
        .expect("stored by the scheduled run");
    assert_eq!(stored.refreshed_at, retry);
    assert_eq!(
        catalogue_price("c5.2xlarge"),
        m5 * 1.5,
        "this environment plans at them"
    );

    let o = run(Function::PodPending, &deps, &batch(1), retry + 60_000).await;
    let l = launched(&o);
    assert!(!l.is_empty() && l.iter().all(|(_, t)| t == "m5.2xlarge"), "{l:?}");

    // Within the hour the sheet is not refreshed again.
    run(
        Function::Consolidation,
        &deps,
        scheduled.as_bytes(),
        retry + 30 * 60_000,
    )
    .await;
    assert_eq!(deps.state.prices(retry).await.unwrap().unwrap().refreshed_at, retry);
}

/// Events are bounded per invocation: a sweep of 150 pods that fit no pool says FailedScheduling
/// for 100 of them only (the API server's rate limits and etcd's size are the cluster's, not
/// ours to fill).
#[tokio::test]
async fn events_are_capped_per_invocation() {
    use nodewright_core::ports::cluster::MAX_EVENTS_PER_INVOCATION;
    let deps = deps();
    let too_big: Vec<_> = (0..150)
        .map(|i| nodewright_core::Pod::new(&format!("huge-{i:03}"), 5_000_000, 1 << 30))
        .collect();
    cluster(&deps).set_pending(too_big);
    let tick = event_text("scheduled.json");
    run(Function::Consolidation, &deps, tick.as_bytes(), NOW).await;
    let (events, duplicates) = cluster(&deps).events();
    let failed = events.iter().filter(|e| e.reason == "FailedScheduling").count();
    assert_eq!(MAX_EVENTS_PER_INVOCATION, 100);
    assert_eq!(failed, MAX_EVENTS_PER_INVOCATION, "{} events", events.len());
    assert_eq!(events.len(), MAX_EVENTS_PER_INVOCATION);
    assert_eq!(duplicates, 0);
}
