//! A claim remembers the Node its instance registered as, so a termination or an interruption
//! reaches the node by name (one GET) instead of listing every node; the name is trusted only
//! while the node is still that instance's (EKS names nodes by private IP, and an IP, with its
//! name, comes back with a later instance).
#![allow(clippy::unwrap_used)]

mod support;

use nodewright_core::model::ClaimState;
use nodewright_core::ports::State;
use nodewright_core::ports::state::ClaimRecord;
use nodewright_handlers::Function;
use nodewright_handlers::adapters::memory::ClusterWrite;
use support::*;

/// The sample batch launched, its nodes booted and registered (Node Ready through state-change);
/// returns one Ready claim.
async fn registered() -> (MemDeps, ClaimRecord) {
    let deps = deps();
    sample_batch(&deps).await;
    let claims = deps.state.live_claims().await.unwrap();
    let iid = claims[0].instance_id.clone().unwrap();
    run(
        Function::StateChange,
        &deps,
        &node_ready_event(&deps, &iid),
        NOW + 60_000,
    )
    .await;
    let claim = deps.state.get_claim(&claims[0].id).await.unwrap().unwrap();
    assert_eq!(claim.state, ClaimState::Ready);
    (deps, claim)
}

#[tokio::test]
async fn registration_records_the_node_and_a_termination_deletes_it_by_name() {
    let (deps, claim) = registered().await;
    let iid = claim.instance_id.clone().unwrap();
    let node = claim
        .node_name
        .clone()
        .expect("the node's name is recorded at registration");
    let cluster = deps.cluster.as_ref().unwrap();
    assert!(
        cluster
            .node_list()
            .iter()
            .any(|n| n.node.name == node && n.instance_id.as_deref() == Some(iid.as_str())),
        "the recorded name is the node the kubelet registered"
    );
    run(
        Function::StateChange,
        &deps,
        &event_for("instance-state-change-terminated.json", &iid),
        NOW + 120_000,
    )
    .await;
    assert!(
        cluster.writes().contains(&ClusterWrite::DeleteNode(node.clone())),
        "{:?}",
        cluster.writes()
    );
}

#[tokio::test]
async fn a_recorded_name_that_now_belongs_to_another_instance_is_left_alone() {
    let (deps, claim) = registered().await;
    let iid = claim.instance_id.clone().unwrap();
    let name = claim.node_name.clone().unwrap();
    let cluster = deps.cluster.as_ref().unwrap();
    // The instance's node went; a new instance came up on the same private IP, so its Node has the
    // same name and another providerID.
    let nodes = cluster
        .node_list()
        .into_iter()
        .map(|mut n| {
            if n.node.name == name {
                n.instance_id = Some("i-0fedcba9876543210".into());
            }
            n
        })
        .collect();
    cluster.set_nodes(nodes);
    let before = cluster.writes().len();
    let outcome = run(
        Function::SpotInterruption,
        &deps,
        &event_for("spot-interruption.json", &iid),
        NOW + 100_000,
    )
    .await;
    let outcome = format!("{outcome:?}");
    assert!(outcome.contains("ClaimTransition"), "the claim is handled: {outcome}");
    run(
        Function::StateChange,
        &deps,
        &event_for("instance-state-change-terminated.json", &iid),
        NOW + 120_000,
    )
    .await;
    let writes = &cluster.writes()[before..];
    assert!(
        !writes.iter().any(|w| match w {
            ClusterWrite::DeleteNode(n) => n == &name,
            ClusterWrite::CordonAndTaint { node, .. } | ClusterWrite::Drain { node, .. } => node == &name,
            ClusterWrite::Register { .. } => false,
        }),
        "another instance's node was touched: {writes:?}"
    );
}
