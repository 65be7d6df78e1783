//! What an invocation reads does not grow with the cluster's history: ended claims are never
//! read on hot paths (the memory store bills reads as DynamoDB does, so the bill shows it), and
//! they expire.
#![allow(clippy::unwrap_used)]

mod support;

use nodewright_core::model::ClaimState;
use nodewright_core::ports::state::{CLAIM_RETENTION_SECS, ClaimRecord, ClaimUpdate};
use nodewright_handlers::Function;
use nodewright_handlers::adapters::billing::Bill;
use nodewright_handlers::ports::State;
use support::*;

/// A cluster after the sample batch launched and its nodes booted; with `history` ended claims
/// from the past week (each had an instance), as a busy cluster's table holds them.
async fn cluster(history: usize) -> MemDeps {
    let deps = deps();
    sample_batch(&deps).await;
    boot_nodes(&deps);
    run(
        Function::Consolidation,
        &deps,
        event_text("scheduled.json").as_bytes(),
        NOW + 60_000,
    )
    .await;
    add_claims(&deps, "old", history, ClaimState::Terminated).await;
    deps.state.reset_bill();
    deps
}

/// `count` claims of a day ago, each with an instance, moved along their life to `last` (Ready,
/// or Terminated an hour after it started).
async fn add_claims(deps: &MemDeps, prefix: &str, count: usize, last: ClaimState) {
    for i in 0..count {
        let at = NOW - 86_400_000 + i as i64 * 1_000;
        let id = format!("{prefix}-{i:05}");
        let mut claim = ClaimRecord::launching(&id, "general", vec![format!("{prefix}-pod-{i}")], at);
        claim.requested = Some(nodewright_core::Resources::new().with(nodewright_core::Resource::Cpu, 1_000));
        assert!(deps.state.create_claim(&claim).await.unwrap());
        let launched = ClaimUpdate {
            instance_id: Some(format!("i-{prefix}{i:05}")),
            instance_type: Some("m5.large".into()),
            ..ClaimUpdate::default()
        };
        for (state, t) in [
            (ClaimState::Launched, at + 1_000),
            (ClaimState::Ready, at + 60_000),
            (ClaimState::Terminated, at + 3_600_000),
        ] {
            if state > last {
                break;
            }
            deps.state.transition_claim(&id, state, t, &launched).await.unwrap();
        }
    }
}

/// Every function's hot path on the cluster: a new pod-pending batch, a state change of a live
/// instance, two consolidation runs. Returns what they read.
async fn invocations(deps: &MemDeps) -> Bill {
    let batch = event_text("pod-pending.json").replace("6a7e8f9b-1c2d-4e3f-8a9b-0c1d2e3f4a5b", "second-batch");
    run(Function::PodPending, deps, batch.as_bytes(), NOW + 120_000).await;
    let live = deps
        .state
        .claim_records()
        .into_iter()
        .find(|c| !c.state.is_terminal() && !c.id.starts_with("old-"))
        .unwrap();
    let iid = live.instance_id.unwrap();
    run(
        Function::StateChange,
        deps,
        &event_for("instance-state-change-running.json", &iid),
        NOW + 130_000,
    )
    .await;
    run(
        Function::SpotInterruption,
        deps,
        &event_for("rebalance-recommendation.json", &iid),
        NOW + 140_000,
    )
    .await;
    for t in [NOW + 180_000, NOW + 240_000] {
        run(
            Function::Consolidation,
            deps,
            event_text("scheduled.json").as_bytes(),
            t,
        )
        .await;
    }
    deps.state.bill()
}

#[tokio::test]
async fn ended_claims_are_never_read_on_hot_paths() {
    let fresh = cluster(0).await;
    let busy = cluster(3_000).await;
    let (fresh_bill, busy_bill) = (invocations(&fresh).await, invocations(&busy).await);

    assert!(
        fresh_bill.read_units > 0.0 && fresh_bill.bytes_read > 0,
        "{fresh_bill:?}"
    );
    // The same live cluster reads the same, whatever its history: 3,000 ended claims add nothing.
    assert_eq!(
        busy_bill.bytes_read, fresh_bill.bytes_read,
        "{busy_bill:#?}\n{fresh_bill:#?}"
    );
    assert_eq!(busy_bill.read_units, fresh_bill.read_units);
    assert_eq!(busy_bill.requests, fresh_bill.requests);

    // The history is there and would have cost: one full read of it bills more than all the
    // invocations above together.
    busy.state.reset_bill();
    assert_eq!(
        busy.state.claims().await.unwrap().len(),
        3_000 + fresh.state.claim_records().len()
    );
    let full = busy.state.bill();
    assert!(full.bytes_read > 10 * fresh_bill.bytes_read, "{full:?}");
}

#[tokio::test]
async fn ended_claims_expire_a_retention_after_they_end_and_live_ones_never() {
    let deps = cluster(50).await;
    let live_before: Vec<String> = deps
        .state
        .live_claims()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(!live_before.is_empty());
    // The last ended claim ended at NOW - 1 day + 49 s + 1 h.
    let last_end = NOW - 86_400_000 + 49_000 + 3_600_000;
    assert_eq!(deps.state.expire(NOW), 0, "nothing is due a day later");
    let due = last_end + CLAIM_RETENTION_SECS * 1000;
    assert_eq!(deps.state.expire(due), 49, "all but the last are past their second");
    assert_eq!(deps.state.expire(due + 1_000), 1);
    let left: Vec<String> = deps.state.claim_records().into_iter().map(|c| c.id).collect();
    assert_eq!(left, live_before, "live claims never expire");
    assert!(deps.state.claim_records().iter().all(|c| c.expires_at().is_none()));
}

/// A cluster as [`cluster`] builds it, plus `ready` live claims whose nodes are up (Ready).
async fn with_ready_nodes(ready: usize) -> MemDeps {
    let deps = cluster(0).await;
    add_claims(&deps, "up", ready, ClaimState::Ready).await;
    deps.state.reset_bill();
    deps
}

/// Provisioning reads the claims in flight (what it packs onto or resumes), not every live claim:
/// a batch on a cluster with 2,000 more Ready nodes reads exactly what it reads without them.
#[tokio::test]
async fn a_pod_pending_batch_reads_the_claims_in_flight_not_the_ready_nodes() {
    // New pods (the sample's own are on the cluster's nodes already).
    let batch = event_text("pod-pending.json")
        .replace("6a7e8f9b-1c2d-4e3f-8a9b-0c1d2e3f4a5b", "second-batch")
        .replace("\"uid\": \"5f0c", "\"uid\": \"6f0c");
    assert!(batch.contains("6f0c0001"), "the sample's uids changed");
    let mut bills = Vec::new();
    for ready in [0, 2_000] {
        let deps = with_ready_nodes(ready).await;
        let outcome = run(Function::PodPending, &deps, batch.as_bytes(), NOW + 120_000).await;
        assert!(
            outcome
                .actions
                .iter()
                .any(|a| matches!(a, nodewright_handlers::outcome::Action::Launched { .. })),
            "{outcome:?}"
        );
        bills.push(deps.state.bill());
    }
    assert!(bills[0].read_units > 0.0, "{:?}", bills[0]);
    assert_eq!(bills[1].bytes_read, bills[0].bytes_read, "{:#?}", bills);
    assert_eq!(bills[1].read_units, bills[0].read_units);
    assert_eq!(bills[1].requests, bills[0].requests);
}
