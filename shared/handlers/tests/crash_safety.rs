//! Regression tests for crash and retry safety (#19), each a hand-built sequence of what a dying
//! or retried invocation leaves behind: a launch whose record was lost, a claim that ended while
//! its instance lived on, a retry after partial progress, a retry of a decision already carried
//! out, a disruption holder reused by a node name that came back.
#![allow(clippy::unwrap_used)]

mod support;

use nodewright_core::model::ClaimState;
use nodewright_core::ports::state::{ClaimRecord, ClaimUpdate, Holder};
use nodewright_core::{CapacityType, Pod};
use nodewright_handlers::ports::{Capacity, ClaimLaunch, State};
use nodewright_handlers::provision::{claim_id, provision};
use nodewright_handlers::{Action, Function, Outcome};
use support::*;

fn m6i_launch(deps: &MemDeps, claim: &str) -> ClaimLaunch {
    ClaimLaunch {
        node_class: None,
        claim_id: claim.into(),
        pool: deps.settings.pools().config.node_pools[0].clone(),
        offerings: vec![nodewright_core::scheduler::InstanceOption {
            name: "m6i.large".into(),
            capacity_type: CapacityType::OnDemand,
            zone: "us-east-1a".into(),
            price: 0.096,
        }],
        labels: Default::default(),
    }
}

fn scheduled() -> Vec<u8> {
    event_text("scheduled.json").into_bytes()
}

#[tokio::test]
async fn a_launch_whose_record_was_lost_is_recorded_not_leaked() {
    let deps = deps();
    // The invocation wrote the claim, launched, and died before recording the launch.
    let record = ClaimRecord::launching("nc-lost-record", "general", Vec::new(), NOW);
    assert!(deps.state.create_claim(&record).await.unwrap());
    let launched = deps
        .capacity
        .launch(&m6i_launch(&deps, "nc-lost-record"), NOW)
        .await
        .unwrap();

    // The next schedule finds the instance by its claim tag and records the launch.
    let later = NOW + 3 * 60_000;
    let o = run(Function::Consolidation, &deps, &scheduled(), later).await;
    let c = deps.state.get_claim("nc-lost-record").await.unwrap().unwrap();
    assert_eq!(c.state, ClaimState::Launched, "{o:#?}");
    assert_eq!(c.instance_id.as_deref(), Some(launched.instance_id.as_str()), "{o:#?}");
    assert_eq!(c.instance_type.as_deref(), Some("m6i.large"));
    assert!(
        o.actions
            .iter()
            .any(|a| matches!(a, Action::Adopted { claim, .. } if claim == "nc-lost-record")),
        "{o:#?}"
    );
    // ...and then lives its normal life: the node boots and the claim goes Ready.
    boot_nodes(&deps);
    let o = run(Function::Consolidation, &deps, &scheduled(), later + 60_000).await;
    let c = deps.state.get_claim("nc-lost-record").await.unwrap().unwrap();
    assert_eq!(c.state, ClaimState::Ready, "{o:#?}");
    assert!(deps.capacity.terminated().is_empty());
}

#[tokio::test]
async fn a_lost_launch_record_whose_node_never_came_is_terminated_not_leaked() {
    let deps = deps();
    let record = ClaimRecord::launching("nc-lost-late", "general", Vec::new(), NOW);
    assert!(deps.state.create_claim(&record).await.unwrap());
    let launched = deps
        .capacity
        .launch(&m6i_launch(&deps, "nc-lost-late"), NOW)
        .await
        .unwrap();
    // First seen past the launching timeout, with no node: the claim closes and its instance goes.
    let later = NOW + 21 * 60_000;
    let o = run(Function::Consolidation, &deps, &scheduled(), later).await;
    let c = deps.state.get_claim("nc-lost-late").await.unwrap().unwrap();
    assert_eq!(c.state, ClaimState::Terminated, "{o:#?}");
    assert_eq!(deps.capacity.terminated(), vec![launched.instance_id], "{o:#?}");
}

#[tokio::test]
async fn an_instance_whose_claim_ended_is_terminated() {
    let deps = deps();
    // A launch that failed on our side (timeout) was recorded as Failed, but EC2 created the instance.
    let record = ClaimRecord::launching("nc-failed", "general", Vec::new(), NOW);
    assert!(deps.state.create_claim(&record).await.unwrap());
    deps.state
        .transition_claim("nc-failed", ClaimState::Failed, NOW + 1_000, &ClaimUpdate::default())
        .await
        .unwrap();
    let stray = deps
        .capacity
        .launch(&m6i_launch(&deps, "nc-failed"), NOW)
        .await
        .unwrap();
    let o = run(Function::Consolidation, &deps, &scheduled(), NOW + 60_000).await;
    assert_eq!(deps.capacity.terminated(), vec![stray.instance_id.clone()], "{o:#?}");
    // Once it is shutting down it is not terminated again.
    let again = run(Function::Consolidation, &deps, &scheduled(), NOW + 120_000).await;
    assert_eq!(deps.capacity.terminated().len(), 1, "{again:#?}");
}

fn pod(uid: &str, cpu_milli: u64) -> Pod {
    let mut p = Pod::new(uid, cpu_milli, 1 << 30);
    p.uid = uid.into();
    p.normalize();
    p
}

async fn provision_as(deps: &MemDeps, holder: &Holder, pods: Vec<Pod>, now: i64) -> Outcome {
    let mut out = Outcome::new("pod-pending", "retry");
    provision(deps, pods, holder, &[], now, &mut out).await.unwrap();
    out
}

#[tokio::test]
async fn a_retry_after_partial_progress_plans_a_new_claim_not_the_first_ones() {
    let deps = deps();
    let holder = Holder::Invocation("event-1".into());
    // The first attempt got as far as one claim for pods a and b (then died).
    let first = provision_as(&deps, &holder, vec![pod("a", 1000), pod("b", 1000)], NOW).await;
    let first_claims = deps.state.claim_records();
    assert_eq!(first_claims.len(), 1, "{first:#?}");
    // The retry finds a and b held by that claim and plans only c: its plan is numbered "claim-1"
    // again, which must not name the first attempt's claim.
    // c is too big to pack onto the first claim's instance: it needs a claim of its own.
    let retry = provision_as(
        &deps,
        &holder,
        vec![pod("a", 1000), pod("b", 1000), pod("c", 30_000)],
        NOW + 5_000,
    )
    .await;
    let claims = deps.state.claim_records();
    assert_eq!(claims.len(), 2, "{retry:#?}");
    let second = claims.iter().find(|c| c.id != first_claims[0].id).unwrap();
    assert_eq!(second.pods, vec!["c".to_string()]);
    assert_ne!(
        second.instance_id, first_claims[0].instance_id,
        "c has its own instance"
    );
    let first_now = claims.iter().find(|c| c.id == first_claims[0].id).unwrap();
    assert_eq!(
        first_now.pods, first_claims[0].pods,
        "the first claim's pods are its own"
    );
    // Usage counts two nodes, once each.
    assert_eq!(deps.state.usage("general").nodes, 2);
}

#[tokio::test]
async fn a_retry_of_a_decision_already_made_is_charged_once() {
    let deps = deps();
    let holder = Holder::Invocation("event-2".into());
    let pods = vec![pod("x", 1000)];
    // The first attempt wrote and charged its claim, then died before launching.
    let id = claim_id(&holder, "general", &["x".to_string()]);
    let first = provision_as(&deps, &holder, pods.clone(), NOW).await;
    assert!(deps.state.get_claim(&id).await.unwrap().is_some(), "{first:#?}");
    let charged = deps.state.usage("general");
    // The same decision again (its reservation expired, so the retry wins the pod again): the
    // claim is not charged twice and its instance is the first one.
    deps.state.release_pod("x", &Holder::Claim(id.clone())).await.unwrap();
    let retry = provision_as(&deps, &holder, pods, NOW + 5_000).await;
    assert_eq!(deps.state.usage("general"), charged, "{retry:#?}");
    assert_eq!(deps.state.claim_records().len(), 1);
    assert_eq!(deps.capacity.all_instances().len(), 1, "no second instance");
}

#[test]
fn claim_ids_name_one_decision() {
    let h = Holder::Invocation("e".into());
    let ab = claim_id(&h, "general", &["a".into(), "b".into()]);
    assert_eq!(ab, claim_id(&h, "general", &["b".into(), "a".into()]), "order of pods");
    assert_ne!(ab, claim_id(&h, "general", &["a".into()]));
    assert_ne!(ab, claim_id(&h, "gpu", &["a".into(), "b".into()]));
    assert_ne!(
        ab,
        claim_id(&Holder::Invocation("f".into()), "general", &["a".into(), "b".into()])
    );
}

/// A charge whose claim was never written (the invocation died in between), then a pool that
/// reads fuller than its claims: the schedule corrects the counters once the same difference has
/// persisted for [`USAGE_STABLE_MS`], and not while it keeps changing.
#[tokio::test]
async fn leaked_usage_is_corrected_once_the_difference_has_persisted() {
    use nodewright_handlers::consolidation::{USAGE_STABLE_MS, usage_of_claims};
    let deps = deps();
    sample_batch(&deps).await;
    let types = &deps.settings.pools().instance_types;
    let truth = usage_of_claims(&deps.state.claim_records(), "general", types).unwrap();
    assert_eq!(
        deps.state.usage("general"),
        truth,
        "the batch charged what its claims hold"
    );
    let leak = nodewright_core::ports::state::UsageDelta {
        cpu_milli: 16_000,
        memory_bytes: 64 << 30,
        gpus: 0,
        nodes: 1,
    };
    let limits = deps.settings.pools().config.node_pools[0].limits.clone();
    deps.state.try_add_usage("general", &leak, &limits).await.unwrap();
    assert_ne!(deps.state.usage("general"), truth);

    let corrected = |o: &Outcome| o.actions.iter().any(|a| matches!(a, Action::UsageCorrected { .. }));
    let t0 = NOW + 60_000;
    let o = run(Function::Consolidation, &deps, &scheduled(), t0).await;
    assert!(!corrected(&o), "first sight only records the version: {o:#?}");
    // Another charge lands (a concurrent launch): the stable clock starts again.
    deps.state.try_add_usage("general", &leak, &limits).await.unwrap();
    let o = run(Function::Consolidation, &deps, &scheduled(), t0 + USAGE_STABLE_MS + 1).await;
    assert!(!corrected(&o), "{o:#?}");
    let o = run(
        Function::Consolidation,
        &deps,
        &scheduled(),
        t0 + 2 * USAGE_STABLE_MS + 2,
    )
    .await;
    assert!(corrected(&o), "{o:#?}");
    assert_eq!(deps.state.usage("general"), truth);
    // Nothing more to do next time.
    let o = run(
        Function::Consolidation,
        &deps,
        &scheduled(),
        t0 + 3 * USAGE_STABLE_MS + 3,
    )
    .await;
    assert!(!corrected(&o), "{o:#?}");
}

/// An instance that stops before it is Ready and then terminates leaves the pool's counters as
/// if it had never launched: its node was in flight until the end.
#[tokio::test]
async fn stopping_then_terminated_before_ready_releases_the_in_flight_node() {
    let deps = deps();
    sample_batch(&deps).await;
    let before = deps.state.usage("general");
    let claim = deps.state.claim_records().into_iter().next().unwrap();
    let iid = claim.instance_id.clone().unwrap();
    let mut stopping: serde_json::Value =
        serde_json::from_slice(&event_for("instance-state-change-terminated.json", &iid)).unwrap();
    stopping["detail"]["state"] = "stopping".into();
    stopping["id"] = "stopping-1".into();
    let o = run(
        Function::StateChange,
        &deps,
        stopping.to_string().as_bytes(),
        NOW + 60_000,
    )
    .await;
    assert_ne!(
        deps.state.get_claim(&claim.id).await.unwrap().unwrap().state,
        ClaimState::Launched,
        "{o:#?}"
    );
    let o = run(
        Function::StateChange,
        &deps,
        &event_for("instance-state-change-terminated.json", &iid),
        NOW + 120_000,
    )
    .await;
    let after = deps.state.usage("general");
    assert_eq!(after.nodes, before.nodes - 1, "{o:#?}");
    assert_eq!(after.nodes_in_flight, before.nodes_in_flight - 1, "{o:#?}");
    assert_eq!(
        Some(after),
        nodewright_handlers::consolidation::usage_of_claims(
            &deps.state.claim_records(),
            "general",
            &deps.settings.pools().instance_types
        ),
        "the counters equal what the live claims hold"
    );
}

const GPU_GROUP: &str = r#"
---
apiVersion: nodewright.io/v1alpha1
kind: AutoScalingPool
metadata: {name: gpu}
spec:
  autoScalingGroupName: gpu-pool
  instanceTypes: [g5.2xlarge]
  capacityType: on-demand
  minSize: 0
  maxSize: 2
  template:
    spec:
      taints: [{key: nvidia.com/gpu, effect: NoSchedule}]
"#;

/// Failed Auto Scaling launches give their usage back, once each: four failures in a row used to
/// leave a two-node group reading "at limit" with no live claims.
#[tokio::test]
async fn failed_auto_scaling_launches_release_their_usage_once() {
    let deps = deps_with(&format!("{POOLS}{GPU_GROUP}"));
    for round in 0..4 {
        let holder = Holder::Invocation(format!("gpu-{round}"));
        let o = provision_as(
            &deps,
            &holder,
            vec![gpu_pod(&format!("g{round}"))],
            NOW + round * 60_000,
        )
        .await;
        assert!(
            o.actions
                .iter()
                .any(|a| matches!(a, Action::ScaledUp { group, .. } if group == "gpu-pool")),
            "round {round}: {o:#?}"
        );
        let mut failed: serde_json::Value = serde_json::from_str(&event_text("asg-launch-unsuccessful.json")).unwrap();
        failed["id"] = format!("asg-failed-{round}").into();
        let bytes = failed.to_string().into_bytes();
        let at = NOW + round * 60_000 + 30_000;
        run(Function::StateChange, &deps, &bytes, at).await;
        // The same failure delivered again under another id (a second rule, a replay).
        failed["id"] = format!("asg-failed-{round}-again").into();
        run(Function::StateChange, &deps, failed.to_string().as_bytes(), at + 1_000).await;
        let usage = deps.state.usage("gpu");
        assert_eq!(
            (usage.nodes, usage.nodes_in_flight, usage.gpus),
            (0, 0, 0),
            "round {round}: {usage:?}"
        );
    }
}

/// A release applied twice (a lost response, retried) takes the counters below zero, as
/// DynamoDB's ADD does; reads show zero, and the reconciler sets them from the claims.
#[tokio::test]
async fn counters_taken_below_zero_are_corrected() {
    use nodewright_handlers::consolidation::{USAGE_STABLE_MS, usage_of_claims};
    let deps = deps();
    sample_batch(&deps).await;
    let truth = usage_of_claims(
        &deps.state.claim_records(),
        "general",
        &deps.settings.pools().instance_types,
    )
    .unwrap();
    let all = nodewright_core::ports::state::UsageDelta {
        cpu_milli: truth.cpu_milli,
        memory_bytes: truth.memory_bytes,
        gpus: 0,
        nodes: truth.nodes,
    };
    deps.state.release_usage("general", &all, true).await.unwrap();
    deps.state.release_usage("general", &all, true).await.unwrap();
    let snapshot = deps.state.usage_snapshot("general").await.unwrap();
    assert!(snapshot.negative, "{snapshot:?}");
    assert_eq!(snapshot.usage.nodes, 0, "reads show zero");
    let t0 = NOW + 60_000;
    run(Function::Consolidation, &deps, &scheduled(), t0).await;
    let o = run(Function::Consolidation, &deps, &scheduled(), t0 + USAGE_STABLE_MS).await;
    assert!(
        o.actions.iter().any(|a| matches!(a, Action::UsageCorrected { .. })),
        "{o:#?}"
    );
    assert_eq!(deps.state.usage("general"), truth);
    assert!(!deps.state.usage_snapshot("general").await.unwrap().negative);
}

/// A leak in a pool that never rests (found by `nodewright chaos`, seeds 10-12): every minute a
/// new batch is charged and its claim written, so the counters' version never stays the same for
/// three minutes. The difference from the claims does, and the reconciler corrects it.
#[tokio::test]
async fn leaked_usage_is_corrected_in_a_busy_pool() {
    use nodewright_handlers::consolidation::{USAGE_STABLE_MS, usage_of_claims};
    let deps = deps();
    sample_batch(&deps).await;
    let types = &deps.settings.pools().instance_types;
    let leak = nodewright_core::ports::state::UsageDelta {
        cpu_milli: 4_000,
        memory_bytes: 16 << 30,
        gpus: 0,
        nodes: 1,
    };
    let limits = deps.settings.pools().config.node_pools[0].limits.clone();
    deps.state.try_add_usage("general", &leak, &limits).await.unwrap();

    let mut corrected_at = None;
    for minute in 1..=8 {
        let now = NOW + minute * 60_000;
        // The pool's usual business: a new pod, a new claim, charged.
        let holder = Holder::Invocation(format!("busy-{minute}"));
        provision_as(&deps, &holder, vec![pod(&format!("busy-{minute}"), 1500)], now).await;
        let o = run(Function::Consolidation, &deps, &scheduled(), now + 1_000).await;
        if o.actions.iter().any(|a| matches!(a, Action::UsageCorrected { .. })) {
            corrected_at = Some(minute * 60_000);
            break;
        }
    }
    let truth = usage_of_claims(&deps.state.claim_records(), "general", types).unwrap();
    assert_eq!(deps.state.usage("general"), truth, "the leak is gone");
    let at = corrected_at.expect("corrected within 8 busy minutes");
    assert!(at >= USAGE_STABLE_MS, "not before the difference persisted ({at} ms)");
}

/// An invocation grew an in-flight claim's record with a pod, then died (or lost the response)
/// before moving the pod's reservation to it (found by `nodewright chaos`, seed 8). Whoever
/// reserves the pod next moves it to that claim: the capacity is already on its way, and planning
/// the pod again would launch a second instance for it.
#[tokio::test]
async fn a_pod_packed_onto_an_in_flight_claim_is_not_planned_again() {
    let deps = deps();
    let first = Holder::Invocation("event-a".into());
    provision_as(&deps, &first, vec![pod("a", 500)], NOW).await;
    let claims = deps.state.claim_records();
    assert_eq!(claims.len(), 1);
    let mut claim = claims[0].clone();
    assert!(claim.state.is_in_flight(), "{claim:?}");

    // The second batch's invocation packs c onto the claim's record, then dies.
    let second = Holder::Invocation("event-b".into());
    let won = deps
        .state
        .reserve_pods(&["c".to_string()], &second, NOW + 1_000, 1_200)
        .await
        .unwrap();
    assert_eq!(won, vec!["c".to_string()]);
    let expected = claim.version;
    claim.pods.push("c".into());
    let mut requested = claim.requested.clone().unwrap_or_default();
    requested.add(&pod("c", 500).requests);
    claim.requested = Some(requested);
    claim.version += 1;
    assert!(deps.state.replace_claim(&claim, expected).await.unwrap());
    let charged = deps.state.usage("general");

    // Its retry finds c already decided: moved to the claim, not planned onto a new one.
    let retry = provision_as(&deps, &second, vec![pod("c", 500)], NOW + 60_000).await;
    assert_eq!(deps.state.claim_records().len(), 1, "{retry:#?}");
    assert_eq!(deps.capacity.all_instances().len(), 1, "no second instance");
    assert_eq!(deps.state.usage("general"), charged, "nothing charged twice");
    let held: Vec<_> = deps
        .state
        .reservations(NOW + 60_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.pod_uid == "c")
        .collect();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].holder, Holder::Claim(claim.id.clone()), "{retry:#?}");
    assert!(
        retry
            .actions
            .iter()
            .any(|a| matches!(a, Action::PackedOntoClaim { claim: c, pods: 1 } if *c == claim.id)),
        "{retry:#?}"
    );
}

/// A claim in flight records the host ports of the pods planned onto it: a later batch's pod that
/// binds one of them is given its own claim (the kubelet would refuse it there), while a pod
/// without ports still packs onto the claim's spare room. Read back from the stored record, as a
/// later invocation reads it.
#[tokio::test]
async fn a_pod_whose_host_port_an_in_flight_claim_holds_gets_its_own_claim() {
    let deps = deps();
    // Small pods: the first claim's type has room for all three.
    let with_port = |uid: &str| {
        let mut p = Pod::new(uid, 100, 64 << 20);
        p.uid = uid.into();
        p.host_ports
            .push(nodewright_core::model::HostPort::new(8443, None, "test").unwrap());
        p
    };
    provision_as(
        &deps,
        &Holder::Invocation("event-a".into()),
        vec![with_port("ingress-a")],
        NOW,
    )
    .await;
    let claims = deps.state.claim_records();
    assert_eq!(claims.len(), 1);
    assert!(claims[0].state.is_in_flight(), "{:?}", claims[0]);
    assert_eq!(claims[0].host_ports.len(), 1, "{:?}", claims[0]);

    let later = provision_as(
        &deps,
        &Holder::Invocation("event-b".into()),
        vec![with_port("ingress-b"), {
            // Small enough for the first claim's spare room.
            let mut p = Pod::new("plain", 100, 64 << 20);
            p.uid = "plain".into();
            p
        }],
        NOW + 5_000,
    )
    .await;
    let claims = deps.state.claim_records();
    assert_eq!(claims.len(), 2, "{later:#?}");
    let first = claims
        .iter()
        .find(|c| c.pods.contains(&"ingress-a".to_string()))
        .unwrap();
    assert!(!first.pods.contains(&"ingress-b".to_string()), "{first:?}");
    assert!(
        first.pods.contains(&"plain".to_string()),
        "the portless pod packs on: {first:?}"
    );
    let second = claims
        .iter()
        .find(|c| c.pods.contains(&"ingress-b".to_string()))
        .unwrap();
    assert_eq!(second.host_ports, first.host_ports);
}
