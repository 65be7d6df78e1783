//! The four handlers end to end over the in-memory adapters: the flows of the functions, replayed
//! and concurrent events, limits, the ICE cache, and reconciliation.
#![allow(clippy::unwrap_used)]

mod support;

use nodewright_core::CapacityType;
use nodewright_core::model::ClaimState;
use nodewright_core::ports::cluster::ClusterNode;
use nodewright_core::ports::state::Holder;
use nodewright_handlers::adapters::memory::ClusterWrite;
use nodewright_handlers::ports::{Capacity, State};
use nodewright_handlers::{Action, Function};
use support::*;

/// The cluster writes other than registration (which every node gets when it turns Ready).
fn disruption_writes(cluster: &nodewright_handlers::adapters::memory::MemoryCluster) -> Vec<ClusterWrite> {
    cluster
        .writes()
        .into_iter()
        .filter(|w| !matches!(w, ClusterWrite::Register { .. }))
        .collect()
}

/// The stored state of claim `id`.
async fn claim_state(deps: &MemDeps, id: &str) -> ClaimState {
    deps.state.get_claim(id).await.unwrap().unwrap().state
}

/// The actions of one kind in an outcome, as `pick` extracts them.
fn actions_of<T>(o: &nodewright_handlers::Outcome, pick: impl Fn(&Action) -> Option<T>) -> Vec<T> {
    o.actions.iter().filter_map(pick).collect()
}

fn launched(o: &nodewright_handlers::Outcome) -> Vec<(String, String)> {
    actions_of(o, |a| match a {
        Action::Launched { claim, instance_id, .. } => Some((claim.clone(), instance_id.clone())),
        _ => None,
    })
}

#[tokio::test]
async fn pod_pending_launches_records_and_is_idempotent() {
    let deps = deps();
    let bytes = event_text("pod-pending.json").into_bytes();
    let first = run(Function::PodPending, &deps, &bytes, NOW).await;
    let launches = launched(&first);
    assert!(!launches.is_empty(), "{first:#?}");
    // Every pod of the batch is reserved, by a claim.
    let reservations = deps.state.reservations(NOW).await.unwrap();
    assert_eq!(reservations.len(), 7);
    assert!(reservations.iter().all(|r| matches!(r.holder, Holder::Claim(_))));
    // Claims are launched with their instances; instances carry the claim id.
    let claims = deps.state.claim_records();
    assert_eq!(claims.len(), launches.len());
    for c in &claims {
        assert_eq!(c.state, ClaimState::Launched);
        assert!(c.instance_id.is_some() && c.instance_type.is_some() && c.requested.is_some());
    }
    let instances = deps.capacity.instances().await.unwrap();
    assert_eq!(instances.len(), launches.len());
    assert!(instances.iter().all(|i| i.spot), "spot first: {instances:?}");

    // The same event again: replayed, nothing new.
    let again = run(Function::PodPending, &deps, &bytes, NOW + 1000).await;
    assert!(matches!(again.actions[..], [Action::Replayed { .. }]), "{again:#?}");
    assert_eq!(deps.capacity.instances().await.unwrap().len(), launches.len());

    // The same pods in a new event (the watcher re-sent them): all skipped, nothing launched.
    let resent = String::from_utf8(bytes)
        .unwrap()
        .replace("6a7e8f9b-1c2d", "ffffffff-1c2d");
    let third = run(Function::PodPending, &deps, resent.as_bytes(), NOW + 2000).await;
    assert!(launched(&third).is_empty());
    assert!(
        third
            .actions
            .iter()
            .any(|a| matches!(a, Action::SkippedPods { pods, .. } if pods.len() == 7))
    );
}

#[tokio::test]
async fn a_batch_for_another_cluster_is_ignored() {
    let deps = deps();
    let bytes = event_text("pod-pending.json").replace("\"cluster\": \"demo\"", "\"cluster\": \"other\"");
    let o = run(Function::PodPending, &deps, bytes.as_bytes(), NOW).await;
    assert!(matches!(&o.actions[..], [Action::Ignored { reason }] if reason.contains("other")));
    assert!(deps.state.claim_records().is_empty());
}

#[tokio::test]
async fn pool_limits_hold_and_refused_pods_are_released() {
    // 4 vCPU limit: the 4-cpu reporting pod needs an 8-vCPU class node, which the limit refuses.
    let pools = POOLS.replace("limits: {cpu: \"64\"}", "limits: {cpu: \"4\"}");
    let deps = deps_with(&pools);
    let o = sample_batch(&deps).await;
    // The planner sees the limit (and the usage counter refuses whatever slips past it).
    let refused = o
        .actions
        .iter()
        .filter(|a| match a {
            Action::AtLimit { .. } => true,
            Action::Unschedulable { reason, .. } => reason.contains("limit cpu"),
            _ => false,
        })
        .count();
    assert!(refused >= 1, "{o:#?}");
    let used = deps.state.usage("general");
    assert!(used.cpu_milli <= 4000, "usage {used:?} over the limit");
    // Pods of refused claims are free again for a later event.
    let reserved = deps.state.reservations(NOW).await.unwrap().len();
    assert!(reserved < 7, "{reserved} reserved");
}

#[tokio::test]
async fn insufficient_capacity_falls_back_and_is_cached() {
    let deps = deps();
    // Exhaust every spot offering of every type the plan may pick in every zone.
    for t in deps.settings.pools().instance_types.iter() {
        for o in &t.offerings {
            if o.capacity_type == CapacityType::Spot {
                deps.capacity.exhaust(CapacityType::Spot, &t.name, &o.zone);
            }
        }
    }
    let o = sample_batch(&deps).await;
    let fell_back = o
        .actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Launched {
                    fell_back_to_on_demand: true,
                    capacity_type: CapacityType::OnDemand,
                    ..
                }
            )
        })
        .count();
    assert!(fell_back >= 1, "{o:#?}");
    assert!(!deps.state.unavailable_offerings(NOW).await.unwrap().is_empty());
}

/// The ICE cache is kept in one place, the handler: what a launch reports without capacity is
/// recorded through the State port, and a launch within the next 3 minutes leaves those offerings
/// out (the capacity port is not asked about them again).
/// A second decision, for one more pod, at `at`.
async fn decide_one_more_pod(deps: &MemDeps, at: i64) -> nodewright_handlers::Outcome {
    let mut later = nodewright_core::Pod::new("later", 1000, 1 << 30);
    later.uid = "later".into();
    later.normalize();
    let mut out = nodewright_handlers::Outcome::new("pod-pending", "second");
    let holder = nodewright_core::ports::state::Holder::Invocation("second".into());
    nodewright_handlers::provision::provision(deps, vec![later], &holder, &[], at, &mut out)
        .await
        .unwrap();
    out
}

#[tokio::test]
async fn offerings_without_capacity_are_recorded_and_left_out_of_the_next_launch() {
    let deps = deps();
    for t in deps.settings.pools().instance_types.iter() {
        for o in &t.offerings {
            if o.capacity_type == CapacityType::Spot {
                deps.capacity.exhaust(CapacityType::Spot, &t.name, &o.zone);
            }
        }
    }
    let reported = |o: &nodewright_handlers::Outcome| {
        o.actions
            .iter()
            .filter(|a| matches!(a, Action::OfferingUnavailable { .. }))
            .count()
    };
    let first = sample_batch(&deps).await;
    let cached = deps.state.unavailable_offerings(NOW).await.unwrap();
    assert!(reported(&first) >= 1, "{first:#?}");
    assert_eq!(cached.len(), reported(&first), "each reported offering recorded once");

    let out = decide_one_more_pod(&deps, NOW + 60_000).await;
    // Whatever the second launch tried, it was not an offering the first one found without
    // capacity; what it found is recorded too.
    let text = format!("{out:?}");
    let tried_again: Vec<_> = cached
        .iter()
        .filter(|c| text.contains(&format!("{}/{}/{}", c.capacity_type, c.instance_type, c.zone)))
        .collect();
    assert!(tried_again.is_empty(), "{tried_again:?}");
    let now_cached = deps.state.unavailable_offerings(NOW + 60_000).await.unwrap();
    assert!(now_cached.len() > cached.len(), "{out:#?}");
}

/// The account's spot quota is spent: a mixed pool's claims launch on-demand in the same
/// invocation (the launch carries each type's on-demand offering after the spot ones), spot of the
/// quota's class is recorded unavailable with one entry, and the next decision asks for no spot. Before, the
/// launch carried only the plan's spot offerings: the claims failed, and their pods waited for a
/// re-plan that chose spot again once the ICE cache had forgotten.
#[tokio::test]
async fn a_spent_spot_quota_falls_back_to_on_demand_in_the_same_launch() {
    let deps = deps();
    deps.capacity.limit_spot_instances(0);
    let first = sample_batch(&deps).await;
    let launched: Vec<(CapacityType, bool)> = first
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Launched {
                capacity_type,
                fell_back_to_on_demand,
                ..
            } => Some((*capacity_type, *fell_back_to_on_demand)),
            _ => None,
        })
        .collect();
    assert!(!launched.is_empty(), "{first:#?}");
    // Every claim runs on-demand; those the plan gave spot offerings fell back.
    assert!(
        launched.iter().all(|l| l.0 == CapacityType::OnDemand) && launched.iter().any(|l| l.1),
        "{launched:?}\n{first:#?}"
    );
    let cached = deps.state.unavailable_offerings(NOW).await.unwrap();
    assert!(
        cached
            .iter()
            .any(|c| c.capacity_type == CapacityType::Spot && c.instance_type == "quota:standard" && c.zone == "*"),
        "{cached:?}"
    );

    let requests_before = deps.capacity.fleet_requests().len();
    let out = decide_one_more_pod(&deps, NOW + 60_000).await;
    let requests: Vec<CapacityType> = deps.capacity.fleet_requests()[requests_before..]
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(requests, [CapacityType::OnDemand], "{out:#?}");
}

/// A batch says how long its oldest pod has been pending (from the pods' creation times), for the
/// `OldestPendingSeconds` metric the template's pods-pending-too-long alarm watches; a replayed
/// batch says it too.
#[tokio::test]
async fn a_batch_reports_how_long_its_oldest_pod_has_been_pending() {
    let deps = deps();
    let first = sample_batch(&deps).await;
    // events/pod-pending.json: every pod created 10 s before the batch is handled.
    assert_eq!(first.oldest_pending_secs, Some(10), "{first:#?}");
    let replay = run(
        Function::PodPending,
        &deps,
        event_text("pod-pending.json").as_bytes(),
        NOW + 60_000,
    )
    .await;
    assert_eq!(replay.oldest_pending_secs, Some(70));
}

/// A pod stuck pending with an unchanged status is never re-sent by the watcher (it sends a pod
/// again only on a new resourceVersion), so consolidation's minute sweep reports the oldest
/// pending pod too, and its EMF line carries the age the pods-pending-too-long alarm reads.
#[tokio::test]
async fn the_minute_sweep_reports_how_long_the_oldest_pending_pod_has_waited() {
    let deps = deps();
    let cluster = deps.cluster.as_ref().unwrap();
    let stuck = |uid: &str, minutes_ago: i64| nodewright_core::model::cluster_event::PendingPod {
        resource_version: "7".into(),
        created_at: NOW - minutes_ago * 60_000,
        // More than any offering holds: it stays pending however often it is swept.
        pod: pod(uid, uid, "4000"),
    };
    cluster.set_pending_since(vec![stuck("stuck-1", 25), stuck("stuck-2", 40)]);
    let o = run(Function::Consolidation, &deps, &tick(1), NOW).await;
    assert_eq!(o.oldest_pending_secs, Some(40 * 60), "{o:#?}");
    let line = nodewright_handlers::metrics::emf(&o, 1.0, NOW);
    assert_eq!(line["Function"], "consolidation");
    assert_eq!(line["OldestPendingSeconds"], 2400);

    // Nothing pending: the sweep says nothing of age.
    cluster.set_pending_since(Vec::new());
    let o = run(Function::Consolidation, &deps, &tick(2), NOW + 60_000).await;
    assert_eq!(o.oldest_pending_secs, None, "{o:#?}");
}

fn node_for(instance_id: &str, instance_type: &str) -> ClusterNode {
    let mut n = nodewright_core::Node::new(&format!("node-{instance_id}"), instance_type, "us-east-1a");
    n.pool = Some("general".into());
    n.capacity_type = CapacityType::Spot;
    ClusterNode {
        node: n,
        instance_id: Some(instance_id.into()),
        ready: true,
        unregistered: false,
    }
}

/// Every claim's node reports Ready (the watcher's Node Ready, once per claim).
async fn all_ready(deps: &MemDeps) {
    for c in deps.state.claim_records() {
        let text = node_ready_event(deps, c.instance_id.as_deref().unwrap());
        run(Function::StateChange, deps, &text, NOW).await;
    }
}

#[tokio::test]
async fn spot_interruption_replaces_first_then_cordons_and_drains() {
    let deps = deps();
    sample_batch(&deps).await;
    // Every claim registered: no in-flight capacity to pack onto, so a replacement must launch.
    all_ready(&deps).await;
    let (claim, node) = one_listed_node(&deps, vec![pod("bound-1", "web-0", "500m")]);
    let iid = claim.instance_id.clone().unwrap();
    let itype = claim.instance_type.clone().unwrap();
    let zone = claim.zone.clone().unwrap();
    let cluster = deps.cluster.as_ref().unwrap();

    let o = run(
        Function::SpotInterruption,
        &deps,
        &event_for("spot-interruption.json", &iid),
        NOW + 60_000,
    )
    .await;
    // The offering is cached unavailable, a replacement launched on a different offering...
    assert!(
        o.actions
            .iter()
            .any(|a| matches!(a, Action::OfferingUnavailable { instance_type, .. } if *instance_type == itype))
    );
    let replacement = launched(&o);
    assert_eq!(replacement.len(), 1, "{o:#?}");
    let new_claim = deps.state.get_claim(&replacement[0].0).await.unwrap().unwrap();
    assert!(
        !(new_claim.instance_type.as_deref() == Some(itype.as_str())
            && new_claim.zone.as_deref() == Some(zone.as_str())
            && new_claim.capacity_type == Some(CapacityType::Spot)),
        "replacement must avoid the interrupted offering"
    );
    // ...before the node is tainted, cordoned and drained.
    let order: Vec<usize> = ["Launched", "Cordoned", "Drained"]
        .iter()
        .map(|k| {
            o.actions
                .iter()
                .position(|a| format!("{a:?}").starts_with(k))
                .unwrap_or_else(|| panic!("no {k} in {o:#?}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert_eq!(
        disruption_writes(cluster),
        [
            ClusterWrite::CordonAndTaint {
                node: node.clone(),
                taint: "nodewright.io/interrupted".into()
            },
            ClusterWrite::Drain { node, forced: true }
        ]
    );
    assert_eq!(claim_state(&deps, &claim.id).await, ClaimState::Draining);
}

/// The pods on an interrupted node are still reserved by the claim that launched it (reservations
/// outlive Ready by their TTL): the replacement must take them over, not skip them.
#[tokio::test]
async fn interruption_soon_after_launch_replaces_the_claims_own_pods() {
    let deps = deps();
    sample_batch(&deps).await;
    all_ready(&deps).await;
    let reserved = deps.state.claim_records().into_iter().next().unwrap().pods;
    let bound: Vec<nodewright_core::Pod> = reserved
        .iter()
        .map(|uid| pod(uid, &format!("pod-{uid}"), "500m"))
        .collect();
    assert!(!bound.is_empty());
    let (claim, _) = one_listed_node(&deps, bound.clone());
    let iid = claim.instance_id.clone().unwrap();
    let o = run(
        Function::SpotInterruption,
        &deps,
        &event_for("spot-interruption.json", &iid),
        NOW + 60_000,
    )
    .await;
    assert!(
        !o.actions.iter().any(|a| matches!(a, Action::SkippedPods { .. })),
        "{o:#?}"
    );
    let replacements = launched(&o);
    assert!(!replacements.is_empty(), "{o:#?}");
    let mut moved = Vec::new();
    for r in &replacements {
        moved.extend(deps.state.get_claim(&r.0).await.unwrap().unwrap().pods);
    }
    moved.sort();
    let mut expected: Vec<String> = bound.iter().map(|p| p.uid.clone()).collect();
    expected.sort();
    assert_eq!(moved, expected, "the replacement holds the node's pods");
}

#[tokio::test]
async fn interruptions_of_instances_that_are_not_ours_are_ignored() {
    let deps = deps();
    let o = run(
        Function::SpotInterruption,
        &deps,
        &event_for("spot-interruption.json", "i-0aaaaaaaaaaaaaaaa"),
        NOW,
    )
    .await;
    assert!(matches!(&o.actions[..], [Action::Ignored { .. }]), "{o:#?}");
    assert!(deps.capacity.all_instances().is_empty());
}

#[tokio::test]
async fn terminated_releases_reservations_and_late_events_are_stale() {
    let deps = deps();
    sample_batch(&deps).await;
    let claim = deps.state.claim_records().into_iter().next().unwrap();
    let iid = claim.instance_id.clone().unwrap();
    let before = deps.state.reservations(NOW).await.unwrap().len();
    let o = run(
        Function::StateChange,
        &deps,
        &event_for("instance-state-change-terminated.json", &iid),
        NOW,
    )
    .await;
    assert!(o.actions.iter().any(
        |a| matches!(a, Action::ClaimTransition { outcome, to, .. } if outcome == "advanced" && to == "terminated")
    ));
    let after = deps.state.reservations(NOW).await.unwrap().len();
    assert_eq!(after, before - claim.pods.len());
    // A late "running" after "terminated" changes nothing.
    let late = run(
        Function::StateChange,
        &deps,
        &event_for("instance-state-change-running.json", &iid),
        NOW,
    )
    .await;
    assert!(
        late.actions
            .iter()
            .any(|a| matches!(a, Action::ClaimTransition { outcome, .. } if outcome == "stale"))
    );
    assert_eq!(claim_state(&deps, &claim.id).await, ClaimState::Terminated);
}

#[tokio::test]
async fn node_ready_measures_registration_latency() {
    let deps = deps();
    sample_batch(&deps).await;
    let claim = deps.state.claim_records().into_iter().next().unwrap();
    let text = node_ready_event(&deps, claim.instance_id.as_deref().unwrap());
    let o = run(Function::StateChange, &deps, &text, NOW).await;
    let latency = o.actions.iter().find_map(|a| match a {
        Action::Ready { launch_to_ready_ms, .. } => *launch_to_ready_ms,
        _ => None,
    });
    assert_eq!(latency, Some(1_795_255_262_000 - NOW));
    assert_eq!(
        deps.state.usage("general").nodes_in_flight,
        deps.state.claim_records().len() as u64 - 1
    );
}

#[tokio::test]
async fn consolidation_terminates_claims_never_registered() {
    let deps = deps();
    sample_batch(&deps).await;
    let claims = deps.state.claim_records();
    // One registers; the others never do.
    let ready = &claims[0];
    let text = node_ready_event(&deps, ready.instance_id.as_deref().unwrap());
    run(Function::StateChange, &deps, &text, NOW).await;
    let later = NOW + 16 * 60 * 1000;
    let o = run(
        Function::Consolidation,
        &deps,
        event_text("scheduled.json").as_bytes(),
        later,
    )
    .await;
    let terminated: Vec<String> = deps.capacity.terminated();
    assert_eq!(terminated.len(), claims.len() - 1, "{o:#?}");
    assert!(!terminated.contains(ready.instance_id.as_ref().unwrap()));
    for c in &claims[1..] {
        assert_eq!(claim_state(&deps, &c.id).await, ClaimState::Terminated);
    }
}

#[tokio::test]
async fn consolidation_adopts_instances_whose_record_was_lost() {
    let deps = deps();
    // An invocation launched but died before writing its claim: only the instance exists.
    let pool = deps.settings.pools().config.node_pools[0].clone();
    let launch = nodewright_handlers::ports::ClaimLaunch {
        node_class: None,
        claim_id: "nc-lost".into(),
        pool,
        offerings: vec![nodewright_core::scheduler::InstanceOption {
            name: "m6i.large".into(),
            capacity_type: CapacityType::OnDemand,
            zone: "us-east-1a".into(),
            price: 0.096,
        }],
        labels: Default::default(),
    };
    let outcome = deps.capacity.launch(&launch, NOW).await.unwrap();
    let o = run(
        Function::Consolidation,
        &deps,
        event_text("scheduled.json").as_bytes(),
        NOW + 60_000,
    )
    .await;
    assert!(
        o.actions
            .iter()
            .any(|a| matches!(a, Action::Adopted { claim, .. } if claim == "nc-lost")),
        "{o:#?}"
    );
    let claim = deps
        .state
        .claim_by_instance(&outcome.instance_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.state, ClaimState::Launched);
}

#[tokio::test]
async fn twenty_concurrent_overlapping_batches_reserve_each_pod_once() {
    let deps = std::sync::Arc::new(deps());
    let base = event_text("pod-pending.json");
    let mut tasks = Vec::new();
    for i in 0..20 {
        // Each event has its own id; pods overlap across events (every event carries all 7).
        let text = base.replace("6a7e8f9b-1c2d-4e3f-8a9b-0c1d2e3f4a5b", &format!("event-{i:02}"));
        let deps = deps.clone();
        tasks.push(tokio::spawn(async move {
            run(Function::PodPending, &deps, text.as_bytes(), NOW).await
        }));
    }
    let mut launches = 0;
    for t in tasks {
        launches += launched(&t.await.unwrap()).len();
    }
    let reservations = deps.state.reservations(NOW).await.unwrap();
    assert_eq!(reservations.len(), 7, "each pod reserved once");
    let instances = deps.capacity.instances().await.unwrap();
    assert_eq!(instances.len(), launches, "no duplicate instances");
    let claims = deps.state.claim_records();
    let pods_in_claims: usize = claims.iter().map(|c| c.pods.len()).sum();
    assert_eq!(pods_in_claims, 7);
}

/// The scheduled event with its own id (each tick is a new event, not a replay).
fn tick(n: u32) -> Vec<u8> {
    event_text("scheduled.json")
        .replace("a6b7c8d9-e0f1-a2b3-c4d5-e6f708192a3b", &format!("tick-{n}"))
        .into_bytes()
}

/// One claim's node listed in the cluster (the claim Ready at NOW), with `pods` bound to it.
fn one_listed_node(
    deps: &MemDeps,
    pods: Vec<nodewright_core::Pod>,
) -> (nodewright_core::ports::state::ClaimRecord, String) {
    let claim = deps.state.claim_records().into_iter().next().unwrap();
    let iid = claim.instance_id.clone().unwrap();
    let cluster = deps.cluster.as_ref().unwrap();
    // The node the instance registered as (booted from its user data), when it did; the claim
    // recorded that name.
    let booted = cluster
        .node_list()
        .into_iter()
        .find(|n| n.instance_id.as_deref() == Some(iid.as_str()));
    let listed = booted.unwrap_or_else(|| node_for(&iid, claim.instance_type.as_deref().unwrap()));
    let node = listed.node.name.clone();
    cluster.set_nodes(vec![listed]);
    cluster.set_bound(
        pods.into_iter()
            .map(|mut p| {
                p.node_name = Some(node.clone());
                p
            })
            .collect(),
    );
    (claim, node)
}

/// A pod in namespace `shop` requesting `cpu` and one pod slot.
fn pod(uid: &str, name: &str, cpu: &str) -> nodewright_core::Pod {
    let mut p = nodewright_core::Pod {
        uid: uid.into(),
        name: name.into(),
        namespace: "shop".into(),
        ..Default::default()
    };
    p.requests.set_quantity("cpu", cpu).unwrap();
    p.requests.set_quantity("pods", "1").unwrap();
    p
}

fn small_pod(uid: &str) -> nodewright_core::Pod {
    pod(uid, uid, "250m")
}

fn disruptions(o: &nodewright_handlers::Outcome) -> Vec<(String, Vec<String>)> {
    actions_of(o, |a| match a {
        Action::Disruption { reason, nodes, .. } => Some((reason.clone(), nodes.clone())),
        _ => None,
    })
}

#[tokio::test]
async fn a_node_launched_under_a_changed_node_class_is_replaced_as_drifted() {
    let mut deps = deps();
    sample_batch(&deps).await;
    all_ready(&deps).await;
    let (claim, node) = one_listed_node(&deps, vec![small_pod("web-0")]);
    // Claims carry the drift hash of the class they were launched under.
    let launched_under = deps.settings.pools().node_class_hashes["default"].clone();
    assert_eq!(claim.node_class_hash.as_deref(), Some(launched_under.as_str()));

    // Same class: nothing drifted (and consolidateAfter has not passed).
    let o = run(Function::Consolidation, &deps, &tick(1), NOW + 30_000).await;
    assert!(disruptions(&o).is_empty(), "{o:#?}");

    // The class now selects other subnets: the node is replaced, launch first, then cordoned.
    let moved = POOLS.replace(
        "subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]",
        "subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo-v2}}]",
    );
    deps.settings = settings(&moved);
    assert_ne!(deps.settings.pools().node_class_hashes["default"], launched_under);
    let o = run(Function::Consolidation, &deps, &tick(2), NOW + 40_000).await;
    assert_eq!(
        disruptions(&o),
        vec![("Drifted".to_string(), vec![node.clone()])],
        "{o:#?}"
    );
    assert!(
        o.actions
            .iter()
            .any(|a| matches!(a, Action::Disruption { replacements, .. } if *replacements == 1))
    );
    assert_eq!(
        disruption_writes(deps.cluster.as_ref().unwrap()),
        [ClusterWrite::CordonAndTaint {
            node,
            taint: nodewright_core::ports::cluster::DISRUPTED_TAINT.into()
        }],
        "cordoned, not drained before the replacement is ready"
    );
    assert_eq!(claim_state(&deps, &claim.id).await, ClaimState::Cordoned);
}

/// A consolidation run stores its plan before acting, so a run that dies right after (a timeout,
/// a crash) leaves the plan to the next run. That run carries out the actions that still hold,
/// without planning again, and drops an action whose node's pods changed since; the run after
/// plans that node afresh. Nothing is left stored once the plan is through.
#[tokio::test]
async fn a_plan_left_by_a_run_that_died_is_carried_on_by_the_next() {
    use nodewright_handlers::adapters::faults::{Faults, FaultyState};
    let mut deps = deps();
    sample_batch(&deps).await;
    all_ready(&deps).await;
    let cluster = deps.cluster.clone().unwrap();
    let nodes: Vec<String> = cluster.node_list().into_iter().map(|n| n.node.name).collect();
    assert!(nodes.len() >= 2, "{nodes:?}");
    cluster.set_bound(
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let mut p = small_pod(&format!("web-{i}"));
                p.node_name = Some(n.clone());
                p
            })
            .collect(),
    );
    // Every node drifts (its class selects other subnets): one action per node, all at once
    // (the default budget, 10%, would take one node a run).
    deps.settings = settings(
        &POOLS
            .replace(
                "subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]",
                "subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo-v2}}]",
            )
            .replace(
                "consolidateAfter: 1m}",
                "consolidateAfter: 1m, budgets: [{nodes: '100%'}]}",
            ),
    );

    // The first run plans, stores the plan, and dies there.
    let (reached, resume) = (std::sync::Arc::default(), std::sync::Arc::default());
    let dying = nodewright_handlers::Deps {
        settings: deps.settings.clone(),
        state: FaultyState {
            inner: deps.state.clone(),
            faults: Faults::pause_after("put_resume_point", std::sync::Arc::clone(&reached), resume),
        },
        capacity: deps.capacity.clone(),
        cluster: deps.cluster.clone(),
        daemonsets: Default::default(),
        consolidated: Default::default(),
    };
    let parsed = nodewright_handlers::event::parse_bytes(&tick(1)).unwrap();
    tokio::select! {
        biased;
        r = nodewright_handlers::handle(Function::Consolidation, &dying, parsed, NOW + 60_000) => {
            panic!("the run was to die after storing its plan: {r:?}")
        }
        () = reached.notified() => {}
    }
    let stored = deps.state.resume_point().await.unwrap().expect("the plan is stored");
    assert_eq!(stored.actions.len(), nodes.len(), "{stored:#?}");
    assert!(disruption_writes(&cluster).is_empty(), "nothing was carried out");

    // Meanwhile a pod lands on the first node of the plan.
    let changed = stored.actions[0].nodes[0].clone();
    let mut bound = cluster.bound();
    let mut extra = small_pod("late-0");
    extra.node_name = Some(changed.clone());
    bound.push(extra);
    cluster.set_bound(bound);

    // The next run takes the plan up: every other node is replaced, without planning again.
    let o = run(Function::Consolidation, &deps, &tick(2), NOW + 120_000).await;
    let resumed = actions_of(&o, |a| match a {
        Action::Resumed { stored, holding, .. } => Some((*stored, *holding)),
        _ => None,
    });
    assert_eq!(resumed, vec![(nodes.len(), nodes.len() - 1)], "{o:#?}");
    let mut carried: Vec<String> = disruptions(&o).into_iter().flat_map(|(_, n)| n).collect();
    carried.sort();
    let mut expected: Vec<String> = nodes.iter().filter(|n| **n != changed).cloned().collect();
    expected.sort();
    assert_eq!(carried, expected, "{o:#?}");
    assert!(
        deps.state.resume_point().await.unwrap().is_none(),
        "the plan is through"
    );

    // The node whose pods changed is planned afresh by the run after.
    let o = run(Function::Consolidation, &deps, &tick(3), NOW + 180_000).await;
    assert!(actions_of(&o, |a| matches!(a, Action::Resumed { .. }).then_some(())).is_empty());
    assert_eq!(disruptions(&o), vec![("Drifted".to_string(), vec![changed])], "{o:#?}");
}

#[tokio::test]
async fn consolidate_after_counts_from_the_last_pod_change_not_from_readiness() {
    let deps = deps();
    sample_batch(&deps).await;
    all_ready(&deps).await;
    let mut pinned = small_pod("batch-0");
    pinned.do_not_disrupt = true;
    let (claim, node) = one_listed_node(&deps, vec![pinned]);

    // Busy with a do-not-disrupt pod: nothing happens; the pods are recorded, the change dated
    // at readiness (the first sighting).
    let o = run(Function::Consolidation, &deps, &tick(1), NOW + 10 * 60_000).await;
    assert!(disruptions(&o).is_empty(), "{o:#?}");
    let seen = deps.state.get_claim(&claim.id).await.unwrap().unwrap();
    assert!(seen.pods_digest.is_some());
    assert!(seen.entered(ClaimState::Ready).is_some());
    assert_eq!(seen.pods_changed_at, seen.entered(ClaimState::Ready));
    // What the node's bound pods request is recorded (avail reads free capacity from it), not
    // what provisioning once planned there.
    let bound = small_pod("batch-0");
    assert_eq!(
        seen.requested.as_ref().map(|r| r.cpu_milli()),
        Some(bound.requests.cpu_milli()),
        "{:?}",
        seen.requested
    );

    // The pod leaves: the node is empty, but only just (consolidateAfter is 1m).
    deps.cluster.as_ref().unwrap().set_bound(Vec::new());
    let left = NOW + 10 * 60_000 + 30_000;
    let o = run(Function::Consolidation, &deps, &tick(2), left).await;
    assert!(disruptions(&o).is_empty(), "{o:#?}");
    let after = deps.state.get_claim(&claim.id).await.unwrap().unwrap();
    assert_eq!(after.pods_changed_at, Some(left));
    assert_eq!(after.requested.as_ref().map(|r| r.cpu_milli()), Some(0), "the pod left");

    // A minute after the change: deleted as empty.
    let o = run(Function::Consolidation, &deps, &tick(3), left + 61_000).await;
    assert_eq!(disruptions(&o), vec![("Empty".to_string(), vec![node])], "{o:#?}");
}

fn unchanged(o: &nodewright_handlers::Outcome) -> Option<i64> {
    actions_of(o, |a| match a {
        Action::Unchanged { planned_at } => Some(*planned_at),
        _ => None,
    })
    .first()
    .copied()
}

/// Karpenter's consolidated state: a cluster a plan found nothing to do in is not planned again
/// while it stays the same, for at most five minutes; any change plans at once.
#[tokio::test]
async fn an_unchanged_cluster_is_not_planned_again_until_it_changes() {
    let deps = deps();
    sample_batch(&deps).await;
    all_ready(&deps).await;
    let mut pinned = small_pod("batch-0");
    pinned.do_not_disrupt = true;
    let (_, node) = one_listed_node(&deps, vec![pinned.clone()]);
    let t0 = NOW + 10 * 60_000;
    let o = run(Function::Consolidation, &deps, &tick(1), t0).await;
    assert!(disruptions(&o).is_empty() && unchanged(&o).is_none(), "planned: {o:#?}");
    let o = run(Function::Consolidation, &deps, &tick(2), t0 + 60_000).await;
    assert_eq!(unchanged(&o), Some(t0), "{o:#?}");
    // Five minutes on, planned again anyway.
    let o = run(Function::Consolidation, &deps, &tick(3), t0 + 5 * 60_000).await;
    assert_eq!(unchanged(&o), None, "{o:#?}");
    let t1 = t0 + 5 * 60_000;
    // A second pod arrives: the cluster changed, so the next run plans.
    let mut second = small_pod("batch-1");
    second.node_name = Some(node.clone());
    pinned.node_name = Some(node.clone());
    deps.cluster.as_ref().unwrap().set_bound(vec![pinned, second]);
    let o = run(Function::Consolidation, &deps, &tick(4), t1 + 60_000).await;
    assert_eq!(unchanged(&o), None, "a pod arrived: {o:#?}");
    // All pods leave: the node becomes empty, but consolidateAfter (1m) has not passed; then it
    // has, and the empty node goes although nothing else changed.
    deps.cluster.as_ref().unwrap().set_bound(Vec::new());
    let left = t1 + 2 * 60_000;
    let o = run(Function::Consolidation, &deps, &tick(5), left).await;
    assert!(disruptions(&o).is_empty(), "{o:#?}");
    let o = run(Function::Consolidation, &deps, &tick(6), left + 61_000).await;
    assert_eq!(disruptions(&o), vec![("Empty".to_string(), vec![node])], "{o:#?}");
}

#[tokio::test]
async fn a_plan_is_abandoned_when_pods_arrive_between_planning_and_acting() {
    let deps = deps();
    sample_batch(&deps).await;
    all_ready(&deps).await;
    let (claim, node) = one_listed_node(&deps, Vec::new());
    // The handler lists bound pods to plan (nothing is retiring, so reconciliation lists none),
    // then the planned nodes' pods to re-validate: a pod lands on the empty node after the
    // planning listing.
    let mut arrived = small_pod("late-0");
    arrived.node_name = Some(node.clone());
    let cluster = deps.cluster.as_ref().unwrap();
    cluster.change_bound_after(1, vec![arrived]);

    let o = run(Function::Consolidation, &deps, &tick(1), NOW + 5 * 60_000).await;
    assert!(disruptions(&o).is_empty(), "{o:#?}");
    assert!(
        o.actions
            .iter()
            .any(|a| matches!(a, Action::DisruptionAborted { nodes, why }
            if *nodes == [node.clone()] && why.contains("changed since planning"))),
        "{o:#?}"
    );
    assert!(disruption_writes(cluster).is_empty(), "nothing cordoned or drained");
    assert_eq!(claim_state(&deps, &claim.id).await, ClaimState::Ready);
}

const ASG_POOL: &str = r#"
---
apiVersion: nodewright.io/v1alpha1
kind: AutoScalingPool
metadata: {name: inference}
spec:
  autoScalingGroupName: eks-inference
  instanceTypes: [g5.2xlarge]
  capacityType: on-demand
  minSize: 0
  maxSize: 4
  disruption: {consolidateAfter: 5m}
"#;

#[tokio::test]
async fn auto_scaling_pool_nodes_are_protected_while_busy_and_scaled_in_when_idle() {
    use nodewright_core::ports::state::{ClaimRecord, ClaimUpdate};
    let deps = deps_with(&format!("{POOLS}{ASG_POOL}"));
    let cluster = deps.cluster.as_ref().unwrap();
    let mut nodes = Vec::new();
    for (id, iid) in [("asg-a", "i-00000000000000a0a"), ("asg-b", "i-00000000000000b0b")] {
        let mut c = ClaimRecord::launching(id, "inference", Vec::new(), NOW - 3_600_000);
        c.backing = "asg:eks-inference".into();
        assert!(deps.state.create_claim(&c).await.unwrap());
        let launched = ClaimUpdate {
            instance_id: Some(iid.into()),
            instance_type: Some("g5.2xlarge".into()),
            capacity_type: Some(CapacityType::OnDemand),
            zone: Some("us-east-1a".into()),
            ..Default::default()
        };
        let none = ClaimUpdate::default();
        for (state, at, update) in [
            (ClaimState::Launched, 3_500_000, &launched),
            (ClaimState::Ready, 3_400_000, &none),
        ] {
            deps.state.transition_claim(id, state, NOW - at, update).await.unwrap();
        }
        let mut n = node_for(iid, "g5.2xlarge");
        n.node.pool = Some("inference".into());
        n.node.capacity_type = CapacityType::OnDemand;
        nodes.push(n);
    }
    deps.capacity.resume_from_claims(&deps.state.claim_records());
    cluster.set_nodes(nodes);
    // A pod on the first node; the second is empty.
    let mut busy = small_pod("infer-0");
    busy.node_name = Some("node-i-00000000000000a0a".into());
    cluster.set_bound(vec![busy]);

    let o = run(Function::Consolidation, &deps, &tick(1), NOW).await;
    assert!(
        o.actions.iter().any(|a| matches!(a, Action::Protected { group, protected, released }
            if group == "eks-inference" && *protected == ["i-00000000000000a0a"] && *released == ["i-00000000000000b0b"])),
        "{o:#?}"
    );
    assert_eq!(
        deps.capacity.protected().into_iter().collect::<Vec<_>>(),
        ["i-00000000000000a0a"]
    );
    assert_eq!(
        disruptions(&o),
        vec![("Empty".to_string(), vec!["node-i-00000000000000b0b".to_string()])],
        "{o:#?}"
    );

    // Drained: the next run takes it out of the group with a decrement, not a plain terminate.
    let o = run(Function::Consolidation, &deps, &tick(2), NOW + 60_000).await;
    assert_eq!(
        deps.capacity.asg_scale_ins(),
        [("eks-inference".to_string(), vec!["i-00000000000000b0b".to_string()])],
        "{o:#?}"
    );
    assert_eq!(deps.capacity.terminated(), ["i-00000000000000b0b"]);
    assert_eq!(claim_state(&deps, "asg-b").await, ClaimState::Terminating);
    assert_eq!(claim_state(&deps, "asg-a").await, ClaimState::Ready);
}

/// A claim whose node has joined but is not Ready keeps what provisioning planned onto it: its
/// pods are not bound yet, and the next batch packs onto it by those numbers. Only Ready claims
/// take their requests from the bound pods.
#[tokio::test]
async fn a_registering_claim_keeps_its_planned_requests() {
    let deps = deps();
    sample_batch(&deps).await;
    let claim = deps.state.claim_records().into_iter().next().unwrap();
    let planned = claim.requested.clone();
    assert!(planned.as_ref().is_some_and(|r| r.cpu_milli() > 0), "{planned:?}");
    let iid = claim.instance_id.clone().unwrap();
    let mut joined = node_for(&iid, claim.instance_type.as_deref().unwrap());
    joined.ready = false;
    deps.cluster.as_ref().unwrap().set_nodes(vec![joined]);
    deps.cluster.as_ref().unwrap().set_bound(Vec::new());
    deps.state
        .transition_claim(
            &claim.id,
            ClaimState::Registered,
            NOW + 30_000,
            &nodewright_core::ports::state::ClaimUpdate::default(),
        )
        .await
        .unwrap();

    run(Function::Consolidation, &deps, &tick(1), NOW + 60_000).await;
    let seen = deps.state.get_claim(&claim.id).await.unwrap().unwrap();
    assert_eq!(seen.state, ClaimState::Registered, "still joining");
    assert_eq!(seen.requested, planned, "no bound pods yet: the planned requests stay");
}
