//! Regression tests for a node's life on a real cluster: identity by providerID, registration
//! labels, early and lost `Node Ready`, adoption, drains that finish, DaemonSet overhead, bounded
//! event times. Nodes register through the kubelet emulator from the user data each launch
//! recorded; no test writes a label a real kubelet would not.
#![allow(clippy::unwrap_used)]

mod support;

use nodewright_core::model::ClaimState;
use nodewright_core::ports::state::{ClaimRecord, ClaimUpdate};
use nodewright_core::{Pod, Resource};
use nodewright_handlers::adapters::memory::ClusterWrite;
use nodewright_handlers::event::parse_bytes;
use nodewright_handlers::ports::{Capacity, State};
use nodewright_handlers::{Action, Function, handle};
use support::*;

fn consolidation_at(now: i64) -> (Vec<u8>, i64) {
    (event_text("scheduled.json").into_bytes(), now)
}

async fn claim(deps: &MemDeps, id: &str) -> ClaimRecord {
    deps.state.get_claim(id).await.unwrap().unwrap()
}

#[tokio::test]
async fn registration_writes_the_offerings_labels_and_every_pods_selector_then_matches() {
    let deps = deps();
    sample_batch(&deps).await;
    let claims = deps.state.claim_records();
    assert!(!claims.is_empty());
    for c in &claims {
        let o = run(
            Function::StateChange,
            &deps,
            &node_ready_event(&deps, c.instance_id.as_deref().unwrap()),
            NOW,
        )
        .await;
        assert!(
            o.actions.iter().any(|a| matches!(a, Action::Registered { .. })),
            "{o:#?}"
        );
    }
    let nodes = deps.cluster.as_ref().unwrap().node_list();
    let pending: serde_json::Value = serde_json::from_str(&event_text("pod-pending.json")).unwrap();
    for c in deps.state.claim_records() {
        assert_eq!(c.state, ClaimState::Ready);
        let n = nodes.iter().find(|n| n.instance_id == c.instance_id).unwrap();
        assert!(!n.unregistered);
        let l = &n.node.labels;
        assert_eq!(l["karpenter.sh/capacity-type"], c.capacity_type.unwrap().as_str());
        assert_eq!(l["node.kubernetes.io/instance-type"], c.instance_type.clone().unwrap());
        assert_eq!(l["topology.kubernetes.io/zone"], c.zone.clone().unwrap());
        assert!(l.contains_key("karpenter.k8s.aws/instance-family"));
        assert!(!l.keys().any(|k| k.starts_with("nodewright.io/")), "{l:?}");
        for p in pending["detail"]["pods"].as_array().unwrap() {
            if !c.pods.iter().any(|u| p["uid"] == u.as_str()) {
                continue;
            }
            for (k, v) in p["nodeSelector"].as_object().into_iter().flatten() {
                assert_eq!(l.get(k).map(String::as_str), v.as_str(), "{} on {l:?}", p["name"]);
            }
        }
    }
}

#[tokio::test]
async fn a_node_ready_before_the_launch_is_recorded_keeps_the_instance() {
    let deps = deps();
    // An invocation launched but has not recorded the launch yet: the claim is Launching.
    let pool = deps.settings.pools().config.node_pools[0].clone();
    let record = ClaimRecord::launching("nc-early", &pool.name, Vec::new(), NOW);
    assert!(deps.state.create_claim(&record).await.unwrap());
    let launch = nodewright_handlers::ports::ClaimLaunch {
        node_class: None,
        claim_id: "nc-early".into(),
        pool,
        offerings: vec![nodewright_core::scheduler::InstanceOption {
            name: "m6i.large".into(),
            capacity_type: nodewright_core::CapacityType::OnDemand,
            zone: "us-east-1a".into(),
            price: 0.096,
        }],
        labels: Default::default(),
    };
    let launched = deps.capacity.launch(&launch, NOW).await.unwrap();
    let o = run(
        Function::StateChange,
        &deps,
        &node_ready_event(&deps, &launched.instance_id),
        NOW + 60_000,
    )
    .await;
    let c = claim(&deps, "nc-early").await;
    assert_eq!(c.state, ClaimState::Ready, "{o:#?}");
    assert_eq!(c.instance_id.as_deref(), Some(launched.instance_id.as_str()));
    assert_eq!(c.instance_type.as_deref(), Some("m6i.large"));
    // The late record of the launch changes nothing and loses nothing.
    let late = deps
        .state
        .transition_claim("nc-early", ClaimState::Launched, NOW + 61_000, &ClaimUpdate::default())
        .await
        .unwrap();
    assert!(matches!(
        late,
        nodewright_core::ports::state::TransitionOutcome::Stale(_)
    ));
    assert_eq!(
        deps.state
            .claim_by_instance(&launched.instance_id)
            .await
            .unwrap()
            .unwrap()
            .id,
        "nc-early"
    );
}

#[tokio::test]
async fn lost_node_ready_and_old_adopted_instances_are_registered_not_reaped() {
    let deps = deps();
    sample_batch(&deps).await;
    // Nodes boot and turn Ready, but no Node Ready reaches the functions (watcher restarted).
    boot_nodes(&deps);
    let later = NOW + 2 * 60 * 60 * 1000;
    let (event, _) = consolidation_at(later);
    let o = run(Function::Consolidation, &deps, &event, later).await;
    assert!(deps.capacity.terminated().is_empty(), "{o:#?}");
    for c in deps.state.claim_records() {
        assert_eq!(c.state, ClaimState::Ready, "{o:#?}");
    }

    // An instance whose record was lost, launched long ago, its node Ready: adopted and Ready.
    let pool = deps.settings.pools().config.node_pools[0].clone();
    let launch = nodewright_handlers::ports::ClaimLaunch {
        node_class: None,
        claim_id: "nc-lost".into(),
        pool,
        offerings: vec![nodewright_core::scheduler::InstanceOption {
            name: "m6i.large".into(),
            capacity_type: nodewright_core::CapacityType::OnDemand,
            zone: "us-east-1a".into(),
            price: 0.096,
        }],
        // The value a split pool chose for its pods: kept on the instance's tag.
        labels: [("team".to_string(), "b".to_string())].into(),
    };
    let lost = deps.capacity.launch(&launch, NOW).await.unwrap();
    boot_nodes(&deps);
    let o = run(Function::Consolidation, &deps, &event, later).await;
    assert!(o.actions.iter().any(|a| matches!(a, Action::Adopted { .. })), "{o:#?}");
    let adopted = claim(&deps, "nc-lost").await;
    assert_eq!(adopted.state, ClaimState::Ready, "{o:#?}");
    assert!(!deps.capacity.terminated().contains(&lost.instance_id));
    // The adopted claim got its labels back from the tag, and its node carries them.
    assert_eq!(adopted.labels.get("team").map(String::as_str), Some("b"));
    let node = node_of_instance(&deps, &lost.instance_id);
    assert_eq!(
        node.node.labels.get("team").map(String::as_str),
        Some("b"),
        "{:?}",
        node.node.labels
    );
}

/// A Ready claim with a node and one workload pod, Cordoned and Draining as a disruption leaves it.
async fn draining_claim(deps: &MemDeps, grace_secs: Option<u64>) -> (ClaimRecord, String, String) {
    sample_batch(deps).await;
    let c = deps.state.claim_records().into_iter().next().unwrap();
    run(
        Function::StateChange,
        deps,
        &node_ready_event(deps, c.instance_id.as_deref().unwrap()),
        NOW,
    )
    .await;
    let cluster = deps.cluster.as_ref().unwrap();
    let node = cluster
        .node_list()
        .into_iter()
        .find(|n| n.instance_id == c.instance_id)
        .unwrap()
        .node
        .name;
    let mut pod = Pod::new("api-0", 500, 1 << 30);
    pod.namespace = "shop".into();
    pod.uid = "u-api-0".into();
    pod.node_name = Some(node.clone());
    let mut mirror = Pod::new("kube-proxy-static", 100, 1 << 20);
    mirror.namespace = "kube-system".into();
    mirror.uid = "u-mirror".into();
    mirror.mirror = true;
    mirror.node_name = Some(node.clone());
    cluster.set_bound(vec![pod, mirror]);
    assert!(
        grace_secs.is_none() || deps.settings.pools().config.node_pools[0].termination_grace_period_secs == grace_secs
    );
    for to in [ClaimState::Cordoned, ClaimState::Draining] {
        deps.state
            .transition_claim(&c.id, to, NOW, &ClaimUpdate::default())
            .await
            .unwrap();
    }
    (c, node, "shop/api-0".into())
}

const POOLS_WITH_GRACE: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: general}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      terminationGracePeriod: 30m
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [spot, on-demand]}
        - {key: karpenter.k8s.aws/instance-category, operator: In, values: [c, m, r]}
        - {key: karpenter.k8s.aws/instance-generation, operator: Gt, values: ["4"]}
  limits: {cpu: "64"}
  disruption: {consolidationPolicy: WhenEmpty, consolidateAfter: 1h}
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

#[tokio::test]
async fn a_pdb_blocked_drain_is_retried_every_run_then_finishes_after_the_grace_period() {
    let deps = deps_with(POOLS_WITH_GRACE);
    let (c, node, pod) = draining_claim(&deps, Some(1800)).await;
    let cluster = deps.cluster.as_ref().unwrap();
    cluster.block_eviction(&pod);
    let mut drains = 0;
    for minute in [1, 2, 10] {
        let now = NOW + minute * 60_000;
        let (event, _) = consolidation_at(now);
        let o = run(Function::Consolidation, &deps, &event, now).await;
        assert!(
            o.actions.iter().any(|a| matches!(a, Action::DrainBlocked { .. })),
            "minute {minute}: {o:#?}"
        );
        drains += 1;
        assert_eq!(claim(&deps, &c.id).await.state, ClaimState::Draining);
    }
    assert_eq!(
        cluster
            .writes()
            .iter()
            .filter(|w| matches!(w, ClusterWrite::Drain { node: n, .. } if *n == node))
            .count(),
        drains
    );
    // 31 minutes after draining began: the pod is deleted, PDB or not, and the instance goes.
    let now = NOW + 31 * 60_000;
    let (event, _) = consolidation_at(now);
    let o = run(Function::Consolidation, &deps, &event, now).await;
    assert!(
        o.actions
            .iter()
            .any(|a| matches!(a, Action::Drained { deleted: 1, .. })),
        "{o:#?}"
    );
    assert!(
        deps.capacity.terminated().contains(c.instance_id.as_ref().unwrap()),
        "{o:#?}"
    );
    assert_eq!(claim(&deps, &c.id).await.state, ClaimState::Terminating);
    // The mirror pod never counted as work, and was never evicted.
    assert!(cluster.bound().iter().any(|p| p.mirror));
}

/// The cluster double refuses evictions as the API server does, from the PDBs' status: with one
/// disruption allowed, a drain of a node holding two of the budget's pods evicts one and is refused
/// (429) for the other; once the disruption controller counts the evicted pod healthy again
/// elsewhere, the next run evicts the second.
#[tokio::test]
async fn a_pdb_allowing_one_disruption_lets_a_drain_evict_one_pod_per_run() {
    let deps = deps_with(POOLS_WITH_GRACE);
    let (c, node, _) = draining_claim(&deps, Some(1800)).await;
    let cluster = deps.cluster.as_ref().unwrap();
    let mut pods = cluster.bound();
    for p in pods.iter_mut().filter(|p| p.namespace == "shop") {
        p.labels.insert("app".into(), "api".into());
    }
    let mut second = pods.iter().find(|p| p.namespace == "shop").unwrap().clone();
    second.name = "api-1".into();
    second.uid = "u-api-1".into();
    pods.push(second);
    cluster.set_bound(pods);
    let budget = |allowed| nodewright_core::disruption::Pdb {
        name: "api".into(),
        namespace: "shop".into(),
        selector: nodewright_core::model::LabelSelector {
            match_labels: [("app".to_string(), "api".to_string())].into(),
            match_expressions: Vec::new(),
        },
        disruptions_allowed: allowed,
    };
    cluster.set_pdbs(vec![budget(1)]);

    let now = NOW + 60_000;
    let (event, _) = consolidation_at(now);
    let o = run(Function::Consolidation, &deps, &event, now).await;
    assert!(
        o.actions.iter().any(|a| matches!(a, Action::DrainBlocked { .. })),
        "{o:#?}"
    );
    let left: Vec<String> = cluster
        .bound()
        .into_iter()
        .filter(|p| p.namespace == "shop" && p.node_name.as_deref() == Some(node.as_str()))
        .map(|p| p.name)
        .collect();
    assert_eq!(left.len(), 1, "one evicted, one refused: {left:?}");
    assert_eq!(
        cluster.pdb_list()[0].disruptions_allowed,
        0,
        "the eviction spent the budget"
    );
    assert_eq!(claim(&deps, &c.id).await.state, ClaimState::Draining);

    // The evicted pod runs again elsewhere: one disruption allowed again.
    cluster.set_pdbs(vec![budget(1)]);
    let now = now + 60_000;
    let (event, _) = consolidation_at(now);
    let o = run(Function::Consolidation, &deps, &event, now).await;
    assert!(
        o.actions
            .iter()
            .any(|a| matches!(a, Action::Drained { evicted: 1, .. })),
        "{o:#?}"
    );
    assert!(
        cluster
            .bound()
            .iter()
            .all(|p| p.namespace != "shop" || p.node_name.as_deref() != Some(node.as_str())),
        "{o:#?}"
    );
}

#[tokio::test]
async fn a_failed_eviction_is_retried_not_fatal_and_an_empty_node_terminates() {
    let deps = deps();
    let (c, _node, pod) = draining_claim(&deps, None).await;
    let cluster = deps.cluster.as_ref().unwrap();
    cluster.fail_eviction(&pod);
    let now = NOW + 60_000;
    let (event, _) = consolidation_at(now);
    let o = run(Function::Consolidation, &deps, &event, now).await;
    assert!(
        o.actions.iter().any(|a| matches!(a, Action::Drained { failed: 1, .. })),
        "{o:#?}"
    );
    assert_eq!(claim(&deps, &c.id).await.state, ClaimState::Draining);
    cluster.allow_eviction(&pod);
    let o = run(Function::Consolidation, &deps, &event, now + 60_000).await;
    assert!(
        o.actions
            .iter()
            .any(|a| matches!(a, Action::Drained { evicted: 1, .. })),
        "{o:#?}"
    );
    // Only the mirror pod is left: the node is empty of work and its instance terminates.
    let o = run(Function::Consolidation, &deps, &event, now + 120_000).await;
    assert!(
        deps.capacity.terminated().contains(c.instance_id.as_ref().unwrap()),
        "{o:#?}"
    );
}

#[tokio::test]
async fn a_claim_recorded_cordoned_gets_its_node_cordoned_by_the_next_run() {
    let deps = deps();
    sample_batch(&deps).await;
    let c = deps.state.claim_records().into_iter().next().unwrap();
    run(
        Function::StateChange,
        &deps,
        &node_ready_event(&deps, c.instance_id.as_deref().unwrap()),
        NOW,
    )
    .await;
    // A run recorded Cordoned and died before it cordoned the node.
    deps.state
        .transition_claim(&c.id, ClaimState::Cordoned, NOW, &ClaimUpdate::default())
        .await
        .unwrap();
    let cluster = deps.cluster.as_ref().unwrap();
    assert!(
        !cluster
            .writes()
            .iter()
            .any(|w| matches!(w, ClusterWrite::CordonAndTaint { .. }))
    );
    let (event, _) = consolidation_at(NOW + 60_000);
    run(Function::Consolidation, &deps, &event, NOW + 60_000).await;
    let node = cluster
        .node_list()
        .into_iter()
        .find(|n| n.instance_id == c.instance_id)
        .unwrap();
    assert!(node.node.unschedulable);
}

#[tokio::test]
async fn pod_pending_plans_with_the_clusters_daemonsets() {
    let plain = deps();
    let with_ds = deps();
    let mut ds = Pod::new("aws-node", 0, 0);
    ds.requests.set(Resource::Cpu, 1_500);
    ds.requests.set(Resource::Memory, 3 << 30);
    ds.owner = Some(nodewright_core::model::OwnerRef {
        kind: "DaemonSet".into(),
        name: "aws-node".into(),
    });
    with_ds.cluster.as_ref().unwrap().set_daemonsets(vec![ds]);
    sample_batch(&plain).await;
    sample_batch(&with_ds).await;
    let requested = |d: &MemDeps| -> u64 {
        d.state
            .claim_records()
            .iter()
            .map(|c| c.requested.as_ref().unwrap().get(Resource::Cpu))
            .sum()
    };
    let claims = with_ds.state.claim_records().len() as u64;
    assert_eq!(
        requested(&with_ds),
        requested(&plain) + claims * 1_500,
        "every claim reserves the DaemonSet"
    );
}

#[tokio::test]
async fn pods_without_a_pod_slot_still_count_against_max_pods() {
    let deps = deps();
    let pods: Vec<serde_json::Value> = (0..300)
        .map(|i| serde_json::json!({"uid": format!("u-{i}"), "name": format!("tiny-{i}"), "resourceVersion": "1"}))
        .collect();
    let mut event: serde_json::Value = serde_json::from_str(&event_text("pod-pending.json")).unwrap();
    event["detail"]["pods"] = serde_json::Value::Array(pods);
    let o = run(Function::PodPending, &deps, event.to_string().as_bytes(), NOW).await;
    let mut placed = 0;
    for c in deps.state.claim_records() {
        let t = deps.settings.type_by_name(c.instance_type.as_deref().unwrap()).unwrap();
        let max = t.allocatable.get(Resource::Pods);
        assert!(
            c.pods.len() as u64 <= max,
            "{} pods on {} (max {max})",
            c.pods.len(),
            t.name
        );
        placed += c.pods.len();
    }
    assert_eq!(placed, 300, "{o:#?}");
}

#[tokio::test]
async fn event_times_outside_a_day_are_refused_with_the_field_named() {
    let deps = deps();
    sample_batch(&deps).await;
    let c = deps.state.claim_records().into_iter().next().unwrap();
    let ready = String::from_utf8(node_ready_event(&deps, c.instance_id.as_deref().unwrap())).unwrap();
    let far = ready.replace("1795255262000", "253402300799000");
    let err = handle(Function::StateChange, &deps, parse_bytes(far.as_bytes()).unwrap(), NOW)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("detail.readyAt"), "{err}");
    assert!(!err.is_retryable());
    let past = ready.replace("1795255262000", "-1000");
    let err = handle(Function::StateChange, &deps, parse_bytes(past.as_bytes()).unwrap(), NOW)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("detail.readyAt"), "{err}");
    assert_eq!(claim(&deps, &c.id).await.state, ClaimState::Launched);
}

/// An EC2NodeClass's kubelet settings reach the plan and the node alike: the allocatable a claim is
/// planned and recorded with is what its node registers when the kubelet emulator reads the launch's
/// user data as nodeadm would (max pods, pods per core, kube- and system-reserved, the hard memory
/// eviction threshold). Before, the plan used the defaults whatever the class said: a class with
/// `maxPods: 20` was planned for the ENI formula's 58 pods on an m5.xlarge.
#[tokio::test]
async fn a_classes_kubelet_settings_reach_the_plan_and_the_node_alike() {
    let kubelet = "  role: KarpenterNodeRole-demo
  kubelet:
    maxPods: 20
    podsPerCore: 3
    kubeReserved: {cpu: 300m}
    systemReserved: {cpu: 200m, memory: 512Mi}
    evictionHard: {memory.available: 5%}
";
    // AL2023 (nodeadm's NodeConfig) and AL2 (bootstrap.sh's kubelet flags) alike.
    for family in ["AL2023", "AL2"] {
        let config = POOLS
            .replace("  role: KarpenterNodeRole-demo\n", kubelet)
            .replace("amiFamily: AL2023", &format!("amiFamily: {family}"));
        let deps = deps_with(&config);
        kubelet_settings_reach_the_node(&deps, family).await;
    }
}

async fn kubelet_settings_reach_the_node(deps: &MemDeps, family: &str) {
    sample_batch(deps).await;
    let booted = boot_nodes(deps);
    assert!(!booted.is_empty(), "{family}: the batch launched nodes");
    for n in &booted {
        let instance = n.instance_id.as_deref().unwrap();
        let claim = deps.state.claim_by_instance(instance).await.unwrap().unwrap();
        let user_data = deps.capacity.user_data(instance).unwrap();
        assert_eq!(
            user_data.contains("/etc/eks/bootstrap.sh"),
            family == "AL2",
            "{family}: the node boots from its family's agent"
        );
        let planned = claim.allocatable.clone().unwrap();
        let registered = n.node.allocatable.clone().unwrap();
        let vcpu = registered.cpu_milli().div_ceil(1000);
        assert_eq!(
            planned.get(Resource::Pods),
            registered.get(Resource::Pods),
            "{family} {instance}: max pods"
        );
        assert!(registered.get(Resource::Pods) <= 20.min(3 * vcpu), "{family}");
        assert_eq!(planned.cpu_milli(), registered.cpu_milli(), "{family} {instance}: cpu");
        // The plan keeps back the VM's memory overhead as well (an estimate the kubelet does not
        // know of): never more than the node has.
        assert!(
            planned.memory() <= registered.memory(),
            "{instance}: planned {} > registered {}",
            planned.memory(),
            registered.memory()
        );
    }
}

/// `amiFamily: Custom`: the node boots from the class's user data as given (here a user's own
/// nodeadm `NodeConfig` that registers with the unregistered taint, as Karpenter requires of
/// Custom nodes, and nothing of the pool's), read by the kubelet emulator; registration then
/// writes the pool's labels and its startup taint, and lifts the unregistered taint; once the
/// startup taint's agent lifts it, a consolidation run labels the node `karpenter.sh/initialized`.
#[tokio::test]
async fn a_custom_family_node_gets_the_pools_labels_and_taints_at_registration() {
    let user_data = "    apiVersion: node.eks.aws/v1alpha1
    kind: NodeConfig
    spec:
      cluster:
        name: demo
        apiServerEndpoint: https://example.eks.amazonaws.com
        certificateAuthority: Y2E=
      kubelet:
        config:
          registerWithTaints:
          - {key: karpenter.sh/unregistered, effect: NoExecute}
";
    let config = POOLS
        .replace(
            "    spec:\n      nodeClassRef",
            "    metadata: {labels: {team: batch}}\n    spec:\n      startupTaints: [{key: example.com/agent-not-ready, effect: NoSchedule}]\n      nodeClassRef",
        )
        .replace("amiFamily: AL2023", "amiFamily: Custom")
        .replace(
            "  role: KarpenterNodeRole-demo\n",
            &format!("  role: KarpenterNodeRole-demo\n  userData: |\n{user_data}"),
        );
    let deps = deps_with(&config);
    sample_batch(&deps).await;
    let claims = deps.state.claim_records();
    assert!(!claims.is_empty(), "the batch launched");
    for c in &claims {
        let instance = c.instance_id.as_deref().unwrap();
        assert!(
            deps.capacity
                .user_data(instance)
                .unwrap()
                .starts_with("apiVersion: node.eks.aws"),
            "the class's user data, as given"
        );
        let event = node_ready_event(&deps, instance);
        let booted = node_of_instance(&deps, instance);
        assert!(
            !booted.node.labels.contains_key("team"),
            "nothing of the pool's at boot"
        );
        assert!(booted.unregistered);
        let o = run(Function::StateChange, &deps, &event, NOW).await;
        assert!(
            o.actions.iter().any(|a| matches!(a, Action::Registered { .. })),
            "{o:#?}"
        );
    }
    for n in deps.cluster.as_ref().unwrap().node_list() {
        assert!(!n.unregistered);
        assert_eq!(n.node.labels.get("team").map(String::as_str), Some("batch"));
        assert_eq!(
            n.node.labels.get("karpenter.sh/nodepool").map(String::as_str),
            Some("general")
        );
        let keys: Vec<&str> = n.node.taints.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["example.com/agent-not-ready"], "{:?}", n.node.taints);
        assert!(
            !n.node.labels.contains_key("karpenter.sh/initialized"),
            "not initialized while its startup taint holds"
        );
    }
    for c in deps.state.claim_records() {
        assert_eq!(c.state, ClaimState::Ready);
    }
    // A run while the agent has not finished leaves the nodes uninitialized.
    let cluster = deps.cluster.as_ref().unwrap();
    let later = NOW + 60_000;
    let (event, _) = consolidation_at(later);
    let o = run(Function::Consolidation, &deps, &event, later).await;
    assert!(
        !o.actions.iter().any(|a| matches!(a, Action::Initialized { .. })),
        "{o:#?}"
    );
    // The agent lifts its taint on every node: the next run labels them initialized, once.
    let mut nodes = cluster.node_list();
    for n in nodes.iter_mut() {
        n.node.taints.retain(|t| t.key != "example.com/agent-not-ready");
    }
    let count = nodes.len();
    cluster.set_nodes(nodes);
    let o = run(Function::Consolidation, &deps, &event, later + 60_000).await;
    let initialized = o
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Initialized { .. }))
        .count();
    assert_eq!(initialized, count, "{o:#?}");
    for n in cluster.node_list() {
        assert_eq!(
            n.node.labels.get("karpenter.sh/initialized").map(String::as_str),
            Some("true")
        );
    }
    let o = run(Function::Consolidation, &deps, &event, later + 120_000).await;
    assert!(
        !o.actions.iter().any(|a| matches!(a, Action::Initialized { .. })),
        "once: {o:#?}"
    );
}

/// A pool allowing `team In [a, b]` serves pods of either team: each pod's node is labelled with
/// the value it asked for, the claim keeps the value through the store, a later batch sees it on
/// the claim in flight, and registration writes it on the Node (Karpenter narrows the
/// requirement to the pod's value and labels the node with it).
#[tokio::test]
async fn a_multi_valued_pool_requirement_labels_each_node_with_the_value_its_pods_need() {
    let config = POOLS.replace(
        "        - {key: karpenter.sh/capacity-type",
        "        - {key: team, operator: In, values: [a, b]}\n        - {key: karpenter.sh/capacity-type",
    );
    assert_ne!(config, POOLS, "the requirement was added");
    let deps = deps_with(&config);
    let pod = |uid: &str, team: &str| {
        serde_json::json!({"uid": uid, "name": uid, "resourceVersion": "1",
            "requests": {"cpu": "500m", "memory": "512Mi"}, "nodeSelector": {"team": team}})
    };
    let mut event: serde_json::Value = serde_json::from_str(&event_text("pod-pending.json")).unwrap();
    event["detail"]["pods"] = serde_json::json!([pod("pa", "a"), pod("pb", "b")]);
    let o = run(Function::PodPending, &deps, event.to_string().as_bytes(), NOW).await;
    let claims = deps.state.claim_records();
    assert_eq!(claims.len(), 2, "one node per team: {o:#?}");
    for c in &claims {
        let team = if c.pods.iter().any(|p| p == "pa") { "a" } else { "b" };
        assert_eq!(c.labels.get("team").map(String::as_str), Some(team), "{c:#?}");
    }
    // A second pod of team b joins b's claim while it is in flight, not a's.
    event["id"] = serde_json::json!("second-batch");
    event["detail"]["pods"] = serde_json::json!([pod("pb2", "b")]);
    run(Function::PodPending, &deps, event.to_string().as_bytes(), NOW + 1_000).await;
    let claims = deps.state.claim_records();
    let b = claims.iter().find(|c| c.pods.iter().any(|p| p == "pb")).unwrap();
    if claims.len() == 2 {
        assert!(b.pods.iter().any(|p| p == "pb2"), "{claims:#?}");
    } else {
        let new = claims.iter().find(|c| c.pods.iter().any(|p| p == "pb2")).unwrap();
        assert_eq!(new.labels.get("team").map(String::as_str), Some("b"), "{claims:#?}");
    }
    for c in deps.state.claim_records() {
        let instance = c.instance_id.as_deref().unwrap();
        let event = node_ready_event(&deps, instance);
        run(Function::StateChange, &deps, &event, NOW + 2_000).await;
    }
    let nodes = deps.cluster.as_ref().unwrap().node_list();
    assert_eq!(nodes.len(), deps.state.claim_records().len());
    for c in deps.state.claim_records() {
        let n = nodes
            .iter()
            .find(|n| n.instance_id.as_deref() == c.instance_id.as_deref())
            .unwrap();
        assert!(!n.unregistered);
        assert_eq!(n.node.labels.get("team"), c.labels.get("team"), "{:?}", n.node.labels);
    }
}
