//! Auto Scaling pools under concurrency and crashes (#19): scale-ups of one group serialized by
//! the group's lease (the adapter's raise is a read-modify-write of the desired capacity, and the
//! memory group loses an interleaved one as the real service would), one raise per claim across
//! retries, launch events matched to claims when they race, and the group's extra instances
//! adopted and scaled in, never terminated past the group or left unowned.
#![allow(clippy::unwrap_used)]

mod support;

use nodewright_core::Pod;
use nodewright_core::model::ClaimState;
use nodewright_core::ports::state::{ClaimRecord, Holder};
use nodewright_handlers::ports::{Capacity, State};
use nodewright_handlers::provision::provision;
use nodewright_handlers::{Action, Function, Outcome};
use support::*;

const GROUP: &str = "gpu-pool";

fn pools() -> String {
    format!(
        r#"{POOLS}
---
apiVersion: nodewright.io/v1alpha1
kind: AutoScalingPool
metadata: {{name: gpu}}
spec:
  autoScalingGroupName: {GROUP}
  instanceTypes: [g5.2xlarge]
  capacityType: on-demand
  minSize: 0
  maxSize: 4
  disruption: {{consolidateAfter: 1m}}
  template:
    spec:
      taints: [{{key: nvidia.com/gpu, effect: NoSchedule}}]
"#
    )
}

fn group_deps(max: u32) -> MemDeps {
    let mut deps = deps_with(&pools());
    // The waits at a busy lease are real time; in memory the holder finishes within a few polls.
    deps.settings.group_lease_pause = std::time::Duration::from_millis(1);
    deps.capacity.declare_group(GROUP, max, "g5.2xlarge", "us-east-1a");
    deps
}

async fn provision_as(deps: &MemDeps, holder: &str, pods: Vec<Pod>, now: i64) -> Outcome {
    let mut out = Outcome::new("pod-pending", holder);
    provision(deps, pods, &Holder::Invocation(holder.into()), &[], now, &mut out)
        .await
        .unwrap();
    out
}

fn scaled_up(o: &Outcome) -> usize {
    o.actions
        .iter()
        .filter(|a| matches!(a, Action::ScaledUp { group, .. } if group == GROUP))
        .count()
}

/// The group's launch event for one instance (events/asg-launch-successful.json, re-addressed).
fn launch_event(instance_id: &str, n: usize) -> Vec<u8> {
    event_text("asg-launch-successful.json")
        .replace("i-0fedcba9876543210", instance_id)
        .replace("738495a6-b7c8-d9e0-f1a2-b3c4d5e6f708", &format!("asg-launch-{n}"))
        .into_bytes()
}

fn claims_of_group(deps: &MemDeps) -> Vec<ClaimRecord> {
    deps.state
        .claim_records()
        .into_iter()
        .filter(|c| c.backing == format!("asg:{GROUP}"))
        .collect()
}

/// The memory group is as unkind as the service: two raises that interleave (each reads the
/// desired capacity, then sets it one higher) raise it once between them.
#[tokio::test]
async fn interleaved_raises_of_a_group_lose_one() {
    let deps = group_deps(4);
    let (a, b) = tokio::join!(deps.capacity.scale_up(GROUP), deps.capacity.scale_up(GROUP));
    assert!(a.unwrap() && b.unwrap());
    assert_eq!(deps.capacity.group(GROUP).unwrap().desired, 1, "one raise was lost");
}

/// Two invocations deciding a claim each for the same group at the same time: each raise lands,
/// because they take the group's lease in turn.
#[tokio::test]
async fn concurrent_decisions_raise_the_group_once_per_claim() {
    let deps = group_deps(4);
    let (a, b) = tokio::join!(
        provision_as(&deps, "event-a", vec![gpu_pod("a")], NOW),
        provision_as(&deps, "event-b", vec![gpu_pod("b")], NOW),
    );
    assert_eq!((scaled_up(&a), scaled_up(&b)), (1, 1), "{a:#?}\n{b:#?}");
    assert_eq!(deps.capacity.group(GROUP).unwrap().desired, 2);
    let claims = claims_of_group(&deps);
    assert_eq!(claims.len(), 2);
    assert!(claims.iter().all(|c| c.scale_requested_at == Some(NOW)), "{claims:#?}");

    // The group launches two instances; their events, delivered at once, give one to each claim.
    let launched = deps.capacity.launch_group_instances(NOW + 20_000);
    assert_eq!(launched.len(), 2);
    let (e0, e1) = (launch_event(&launched[0].1, 0), launch_event(&launched[1].1, 1));
    tokio::join!(
        run(Function::StateChange, &deps, &e0, NOW + 40_000),
        run(Function::StateChange, &deps, &e1, NOW + 40_000),
    );
    let mut held: Vec<String> = claims_of_group(&deps)
        .into_iter()
        .map(|c| {
            assert_eq!(c.state, ClaimState::Launched, "{c:#?}");
            c.instance_id.unwrap()
        })
        .collect();
    held.sort();
    let mut ids: Vec<String> = launched.into_iter().map(|(_, i)| i).collect();
    ids.sort();
    assert_eq!(held, ids, "each instance to its own claim, none unowned");
}

/// One invocation's claims for one group (two GPU pods, one GPU per instance) raise it once each:
/// they run concurrently, so they take the group's lease in turn like anyone else's (a lease held
/// per invocation let both in, and one raise was lost).
#[tokio::test]
async fn one_decisions_claims_for_one_group_raise_it_once_each() {
    let deps = group_deps(4);
    let o = provision_as(&deps, "event-1", vec![gpu_pod("a"), gpu_pod("b")], NOW).await;
    assert_eq!(scaled_up(&o), 2, "{o:#?}");
    assert_eq!(deps.capacity.group(GROUP).unwrap().desired, 2, "{o:#?}");
    assert_eq!(deps.capacity.launch_group_instances(NOW + 20_000).len(), 2);
}

/// A retry of a decision whose raise was recorded does not raise again; one whose invocation died
/// after the raise but before recording it raises again, and the extra instance is adopted by its
/// launch event and later scaled in with a decrement, never terminated past the group.
#[tokio::test]
async fn a_retried_decision_raises_once_and_an_extra_instance_is_adopted_then_scaled_in() {
    let deps = group_deps(4);
    let first = provision_as(&deps, "event-1", vec![gpu_pod("g")], NOW).await;
    assert_eq!(scaled_up(&first), 1, "{first:#?}");
    let claim = claims_of_group(&deps).pop().unwrap();

    // The invocation died after its claim was written and before the pods moved to it: the
    // retry resumes the same claim and, its raise being recorded, does not raise again.
    for pod in &claim.pods {
        let from = Holder::Claim(claim.id.clone());
        let to = Holder::Invocation("event-1".into());
        assert!(deps.state.transfer_pod(pod, &from, &to, NOW, 600).await.unwrap());
    }
    let retry = provision_as(&deps, "event-1", vec![gpu_pod("g")], NOW + 60_000).await;
    assert_eq!(scaled_up(&retry), 0, "{retry:#?}");
    assert_eq!(deps.capacity.group(GROUP).unwrap().desired, 1);

    // Now the same, but the raise's record was lost too: the retry raises again.
    let mut unmarked = deps.state.get_claim(&claim.id).await.unwrap().unwrap();
    let version = unmarked.version;
    unmarked.scale_requested_at = None;
    unmarked.version += 1;
    assert!(deps.state.replace_claim(&unmarked, version).await.unwrap());
    for pod in &claim.pods {
        let from = Holder::Claim(claim.id.clone());
        let to = Holder::Invocation("event-1".into());
        assert!(deps.state.transfer_pod(pod, &from, &to, NOW, 600).await.unwrap());
    }
    let again = provision_as(&deps, "event-1", vec![gpu_pod("g")], NOW + 120_000).await;
    assert_eq!(scaled_up(&again), 1, "{again:#?}");
    assert_eq!(deps.capacity.group(GROUP).unwrap().desired, 2);
    assert_eq!(claims_of_group(&deps).len(), 1, "one claim still");

    // Two instances come; the claim takes one, the other is adopted as a claim of the pool.
    let launched = deps.capacity.launch_group_instances(NOW + 150_000);
    assert_eq!(launched.len(), 2);
    let mut outcomes = Vec::new();
    for (n, (_, iid)) in launched.iter().enumerate() {
        outcomes.push(run(Function::StateChange, &deps, &launch_event(iid, n), NOW + 160_000).await);
    }
    let adopted: Vec<(String, String)> = outcomes
        .iter()
        .flat_map(|o| o.actions.iter())
        .filter_map(|a| match a {
            Action::Adopted { claim, instance_id } => Some((claim.clone(), instance_id.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(adopted.len(), 1, "{outcomes:#?}");
    let (extra_claim, extra) = adopted[0].clone();
    assert_eq!(
        deps.state
            .get_claim(&claim.id)
            .await
            .unwrap()
            .unwrap()
            .instance_id
            .as_deref(),
        Some(launched[0].1.as_str())
    );
    // A launch event delivered again changes nothing.
    let dup = run(Function::StateChange, &deps, &launch_event(&extra, 7), NOW + 170_000).await;
    assert!(
        dup.actions.iter().all(|a| matches!(a, Action::Ignored { .. })),
        "{dup:#?}"
    );
    assert_eq!(claims_of_group(&deps).len(), 2);

    // Both nodes join; the extra one stays empty and is scaled in with a decrement once its
    // consolidateAfter has passed. The claimed one keeps its pod's node.
    let cluster = deps.cluster.as_ref().unwrap();
    let mut nodes = Vec::new();
    for (_, iid) in &launched {
        // A group's node registers from the group's launch template (the user's): nothing of
        // ours on it until its claim's labels are written; matched by providerID.
        let mut node = nodewright_core::Node::new(&format!("node-{iid}"), "g5.2xlarge", "us-east-1a");
        node.capacity_type = nodewright_core::CapacityType::OnDemand;
        nodes.push(nodewright_core::ports::cluster::ClusterNode {
            node,
            instance_id: Some(iid.clone()),
            ready: true,
            unregistered: false,
        });
    }
    cluster.set_nodes(nodes);
    let mut bound = gpu_pod("g");
    bound.node_name = Some(cluster.node_list()[0].node.name.clone());
    cluster.set_bound(vec![bound]);
    let mut t = NOW + 180_000;
    for _ in 0..10 {
        run(
            Function::Consolidation,
            &deps,
            &event_text("scheduled.json").into_bytes(),
            t,
        )
        .await;
        t += 60_000;
    }
    assert_eq!(
        deps.capacity.asg_scale_ins(),
        [(GROUP.to_string(), vec![extra.clone()])],
        "{:#?}",
        deps.state.get_claim(&extra_claim).await
    );
    assert_eq!(deps.capacity.group(GROUP).unwrap().desired, 1);
    assert!(
        deps.capacity.terminated() == [extra.clone()],
        "only the extra instance, and only by scale-in"
    );
    assert!(
        deps.capacity.launch_group_instances(t).is_empty(),
        "the group replaces nothing"
    );
}

/// A group at its max size grants nothing: the claim fails at once and gives its usage and pods
/// back, instead of waiting out the launch timeout for an instance that never comes.
#[tokio::test]
async fn a_group_at_its_max_fails_the_claim_at_once() {
    let deps = group_deps(1);
    let first = provision_as(&deps, "event-1", vec![gpu_pod("a")], NOW).await;
    assert_eq!(scaled_up(&first), 1, "{first:#?}");
    let second = provision_as(&deps, "event-2", vec![gpu_pod("b")], NOW + 1_000).await;
    assert_eq!(scaled_up(&second), 0, "{second:#?}");
    let failed: Vec<ClaimRecord> = claims_of_group(&deps)
        .into_iter()
        .filter(|c| c.state == ClaimState::Failed)
        .collect();
    assert_eq!(failed.len(), 1, "{second:#?}");
    assert_eq!(failed[0].pods, ["b"]);
    let usage = deps.state.usage("gpu");
    assert_eq!(
        (usage.nodes, usage.nodes_in_flight),
        (1, 1),
        "only the first claim is charged"
    );
    assert!(
        deps.state
            .reservations(NOW + 2_000)
            .await
            .unwrap()
            .iter()
            .all(|r| r.pod_uid != "b"),
        "b is free to be planned again"
    );
}

/// A lease left by an invocation that died holding it blocks the group until it runs out; a
/// decision meanwhile fails its invocation (retried later) and keeps its claim launching.
#[tokio::test]
async fn a_lease_left_by_a_dead_invocation_delays_the_raise_until_it_runs_out() {
    let deps = group_deps(4);
    assert!(
        deps.state
            .take_lease(&format!("asg/{GROUP}"), "dead", NOW, 30)
            .await
            .unwrap()
    );
    let holder = Holder::Invocation("event-1".into());
    let mut out = Outcome::new("pod-pending", "event-1");
    let err = provision(&deps, vec![gpu_pod("a")], &holder, &[], NOW + 1_000, &mut out)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert_eq!(deps.capacity.group(GROUP).unwrap().desired, 0);
    let claim = claims_of_group(&deps).pop().unwrap();
    assert_eq!((claim.state, claim.scale_requested_at), (ClaimState::Launching, None));

    // Lambda's retry comes after the lease has run out and raises the group for the same claim.
    let retry = provision_as(&deps, "event-1", vec![gpu_pod("a")], NOW + 61_000).await;
    assert_eq!(scaled_up(&retry), 1, "{retry:#?}");
    assert_eq!(deps.capacity.group(GROUP).unwrap().desired, 1);
    assert_eq!(claims_of_group(&deps).len(), 1);
}

/// A group member held only by a claim that ended (closed from a read taken before its launch was
/// attached, say) is scaled in by consolidation: group instances carry no claim tag, so nothing
/// else would ever remove it.
#[tokio::test]
async fn a_member_whose_claim_ended_is_scaled_in() {
    let deps = group_deps(4);
    let o = provision_as(&deps, "event-1", vec![gpu_pod("a")], NOW).await;
    assert_eq!(scaled_up(&o), 1, "{o:#?}");
    let (_, iid) = deps.capacity.launch_group_instances(NOW + 20_000).remove(0);
    run(Function::StateChange, &deps, &launch_event(&iid, 0), NOW + 30_000).await;
    let claim = claims_of_group(&deps).pop().unwrap();
    assert_eq!(claim.instance_id.as_deref(), Some(iid.as_str()));
    // Ended without its instance being removed.
    deps.state
        .transition_claim(
            &claim.id,
            ClaimState::Failed,
            NOW + 40_000,
            &nodewright_core::ports::state::ClaimUpdate::default(),
        )
        .await
        .unwrap();
    let scheduled = event_text("scheduled.json").into_bytes();
    run(Function::Consolidation, &deps, &scheduled, NOW + 60_000).await;
    assert!(
        deps.capacity.asg_scale_ins().is_empty(),
        "not while it may still be retiring"
    );
    let o = run(Function::Consolidation, &deps, &scheduled, NOW + 5 * 60_000).await;
    assert_eq!(
        deps.capacity.asg_scale_ins(),
        [(GROUP.to_string(), vec![iid.clone()])],
        "{o:#?}"
    );
    assert_eq!(deps.capacity.group(GROUP).unwrap().desired, 0);
}

/// A late launch event for a member and consolidation's pass over unheld members race for the
/// same instance: the event read the claims before a decision raised the group for a new claim,
/// consolidation read them after and gave the instance to that claim, then the event adopted it as
/// well. Two claims held one instance (and charged it twice). Matching is serialized per instance
/// (a lease taken before the claims are read), so one of them waits and sees the other's result.
#[tokio::test]
async fn a_late_launch_event_and_consolidation_never_both_take_one_instance() {
    use nodewright_handlers::adapters::faults::{Faults, FaultyCapacity, FaultyCluster, FaultyState};
    use std::sync::Arc;
    use tokio::sync::Notify;

    let deps = group_deps(4);
    // A member whose raise no claim remembers (its decision's record was lost), launched at NOW;
    // its launch event comes late.
    assert!(deps.capacity.scale_up(GROUP).await.unwrap());
    let (_, member) = deps.capacity.launch_group_instances(NOW).remove(0);

    let (reached, resume) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let faults = Faults::pause_after("live_claims", reached.clone(), resume.clone());
    let paused = nodewright_handlers::Deps {
        settings: deps.settings.clone(),
        state: FaultyState {
            inner: deps.state.clone(),
            faults: faults.clone(),
        },
        capacity: FaultyCapacity {
            inner: deps.capacity.clone(),
            faults: faults.clone(),
        },
        cluster: deps.cluster.clone().map(|inner| FaultyCluster {
            inner,
            faults: faults.clone(),
        }),
        daemonsets: Default::default(),
        consolidated: Default::default(),
    };
    let late = NOW + 3 * 60_000;
    let event = launch_event(&member, 0);
    let parsed = nodewright_handlers::event::parse_bytes(&event).unwrap();
    let event_run = nodewright_handlers::handle(Function::StateChange, &paused, parsed, late);
    let meanwhile = async {
        reached.notified().await;
        // A pod for the pool: its claim raises the group and waits for an instance.
        let o = provision_as(&deps, "event-2", vec![gpu_pod("b")], late).await;
        assert_eq!(scaled_up(&o), 1, "{o:#?}");
        // Consolidation's pass over members no claim holds, more than 2 minutes old.
        run(
            Function::Consolidation,
            &deps,
            &event_text("scheduled.json").into_bytes(),
            late + 1_000,
        )
        .await;
        resume.notify_one();
    };
    let (event_outcome, ()) = tokio::join!(event_run, meanwhile);
    let event_outcome = event_outcome.unwrap();
    let holders: Vec<ClaimRecord> = claims_of_group(&deps)
        .into_iter()
        .filter(|c| c.state.is_live() && c.instance_id.as_deref() == Some(member.as_str()))
        .collect();
    assert_eq!(
        holders.len(),
        1,
        "one claim holds {member}: {holders:#?}\n{event_outcome:#?}"
    );
    // The group was raised for the new claim: its own instance comes next.
    assert_eq!(deps.capacity.group(GROUP).unwrap().desired, 2);
}
