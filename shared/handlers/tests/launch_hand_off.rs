//! Launches handed off through Nodewright's bus: `pod-pending` writes each claim in `launching`
//! and puts a `Claim Launch` event; `state-change` launches it. The bus is the memory account's
//! (events as EventBridge delivers them), and every delivery here is at least once.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use nodewright_core::model::ClaimState;
use nodewright_handlers::adapters::faults::{FaultKind, Faults};
use nodewright_handlers::adapters::memory::MemoryCapacity;
use nodewright_handlers::event::parse_bytes;
use nodewright_handlers::ports::State;
use nodewright_handlers::{Action, Function, Outcome, handle};
use support::*;

fn with_bus() -> MemDeps {
    let mut d = deps();
    d.capacity = MemoryCapacity::new("demo").with_bus();
    d
}

fn count(o: &Outcome, what: impl Fn(&Action) -> bool) -> usize {
    o.actions.iter().filter(|a| what(a)).count()
}

fn launched_types(d: &MemDeps) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for i in d.capacity.all_instances() {
        *out.entry(i.instance_type).or_default() += 1;
    }
    out
}

/// Delivers every event on the bus to state-change `times` times; the outcomes in order.
async fn deliver(d: &MemDeps, times: usize, now: i64) -> Vec<Outcome> {
    let mut out = Vec::new();
    for event in d.capacity.take_bus_events() {
        for _ in 0..times {
            out.push(run(Function::StateChange, d, event.to_string().as_bytes(), now).await);
        }
    }
    out
}

#[tokio::test]
async fn the_decision_returns_with_its_claims_durable_and_state_change_launches_them() {
    let inline = deps();
    let inline_outcome = sample_batch(&inline).await;
    let d = with_bus();
    let o = sample_batch(&d).await;

    let requested = count(&o, |a| matches!(a, Action::LaunchRequested { .. }));
    assert!(requested >= 1, "{:?}", o.actions);
    assert_eq!(count(&o, |a| matches!(a, Action::Launched { .. })), 0);
    assert!(d.capacity.all_instances().is_empty(), "nothing launched in pod-pending");
    let claims = d.state.claim_records();
    assert_eq!(claims.len(), requested);
    for c in &claims {
        assert_eq!(c.state, ClaimState::Launching);
        assert!(!c.offerings.is_empty(), "{} records what it launches from", c.id);
        // Its pods are the claim's already, so another batch cannot plan them again.
        for r in d
            .state
            .reservation_records()
            .iter()
            .filter(|r| c.pods.contains(&r.pod_uid))
        {
            assert_eq!(r.holder.encode(), format!("claim:{}", c.id));
        }
    }
    // Each pod of a requested claim is nominated in the decision, as when launched inline.
    let nominated = |d: &MemDeps| {
        let (events, _) = d.cluster.as_ref().unwrap().events();
        events.iter().filter(|e| e.reason == "Nominated").count()
    };
    assert_eq!(nominated(&d), nominated(&inline));
    assert!(nominated(&d) > 0);

    let launches = deliver(&d, 1, NOW + 300).await;
    assert_eq!(launches.len(), requested);
    for l in &launches {
        assert_eq!(
            count(l, |a| matches!(a, Action::Launched { adopted: false, .. })),
            1,
            "{:?}",
            l.actions
        );
    }
    // The same decision as launching inline: the same types, the same pool usage.
    assert_eq!(launched_types(&d), launched_types(&inline));
    assert_eq!(
        inline_outcome.launched(),
        launches.iter().map(Outcome::launched).sum::<usize>()
    );
    assert_eq!(d.state.usage("general"), inline.state.usage("general"));
    assert!(
        d.state
            .claim_records()
            .iter()
            .all(|c| c.state == ClaimState::Launched && c.instance_id.is_some())
    );
}

#[tokio::test]
async fn a_request_delivered_twice_or_late_launches_once() {
    let d = with_bus();
    sample_batch(&d).await;
    let events = d.capacity.take_bus_events();
    assert!(!events.is_empty());
    for e in &events {
        run(Function::StateChange, &d, e.to_string().as_bytes(), NOW + 300).await;
    }
    let usage = d.state.usage("general");
    let instances = d.capacity.all_instances().len();
    for e in &events {
        // The same event again (EventBridge delivers at least once) is a replay.
        let again = run(Function::StateChange, &d, e.to_string().as_bytes(), NOW + 400).await;
        assert_eq!(
            count(&again, |a| matches!(a, Action::Replayed { .. })),
            1,
            "{:?}",
            again.actions
        );
        // Another event naming the same claim (a retried decision asked again) finds it launched.
        let mut other = e.clone();
        other["id"] = format!("{}-again", e["id"].as_str().unwrap()).into();
        let late = run(Function::StateChange, &d, other.to_string().as_bytes(), NOW + 500).await;
        assert_eq!(
            count(&late, |a| matches!(a, Action::Replayed { .. })),
            1,
            "{:?}",
            late.actions
        );
    }
    assert_eq!(d.capacity.all_instances().len(), instances);
    assert_eq!(d.state.usage("general"), usage, "usage settled once");
}

#[tokio::test]
async fn a_request_for_a_claim_that_moved_on_or_never_existed_launches_nothing() {
    let d = with_bus();
    sample_batch(&d).await;
    let events = d.capacity.take_bus_events();
    let e = &events[0];
    let claim = e["detail"]["claim"].as_str().unwrap().to_string();
    // The claim timed out and failed before its request arrived (a delivery held for hours).
    d.state
        .transition_claim(&claim, ClaimState::Failed, NOW + 100, &Default::default())
        .await
        .unwrap();
    let o = run(Function::StateChange, &d, e.to_string().as_bytes(), NOW + 300).await;
    assert_eq!(count(&o, |a| matches!(a, Action::Ignored { .. })), 1, "{:?}", o.actions);
    assert!(d.capacity.all_instances().is_empty());

    let unknown = event_text("claim-launch.json");
    let o = run(Function::StateChange, &d, unknown.as_bytes(), NOW + 300).await;
    match &o.actions[..] {
        [Action::Ignored { reason }] => assert!(reason.contains("does not exist"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Another cluster's request is not ours.
    let other = unknown.replace("\"cluster\": \"demo\"", "\"cluster\": \"prod\"");
    let o = run(Function::StateChange, &d, other.as_bytes(), NOW + 300).await;
    assert!(matches!(&o.actions[..], [Action::Ignored { reason }] if reason.contains("prod")));
}

#[tokio::test]
async fn a_malformed_request_is_refused_naming_the_field() {
    let bad = event_text("claim-launch.json").replace("nc-0123456789abcdef", "nc-; rm -rf");
    let err = parse_bytes(bad.as_bytes()).unwrap_err().to_string();
    assert!(err.contains("detail.claim"), "{err}");
    let extra = event_text("claim-launch.json").replace("\"schemaVersion\": 1,", "\"schemaVersion\": 1, \"x\": 1,");
    let err = parse_bytes(extra.as_bytes()).unwrap_err().to_string();
    assert!(err.contains("detail"), "{err}");
    // Only state-change takes it.
    let d = with_bus();
    let o = run(
        Function::PodPending,
        &d,
        event_text("claim-launch.json").as_bytes(),
        NOW,
    )
    .await;
    assert!(matches!(&o.actions[..], [Action::Ignored { .. }]), "{:?}", o.actions);
}

#[tokio::test]
async fn a_bus_that_refuses_the_request_leaves_the_launch_to_the_decision() {
    // The first PutEvents fails (answered 500, nothing put): that claim launches inline, the
    // others are handed off as usual.
    for call in 0.. {
        let base = with_bus();
        let faults = Faults::at(call, FaultKind::Error);
        let d = faulty(&base, &faults);
        let parsed = parse_bytes(event_text("pod-pending.json").as_bytes()).unwrap();
        let result = handle(Function::PodPending, &d, parsed, NOW).await;
        if faults.injected().map(|(_, m)| m) != Some("hand_off_launches") {
            assert!(faults.injected().is_some(), "no hand-off call was reached");
            continue;
        }
        let o = result.unwrap();
        assert_eq!(o.launched(), 1, "the refused claim launched inline: {:?}", o.actions);
        let requested = count(&o, |a| matches!(a, Action::LaunchRequested { .. }));
        assert_eq!(base.capacity.take_bus_events().len(), requested);
        assert_eq!(base.state.claim_records().len(), requested + 1);
        return;
    }
}

/// A handed-off launch and the decision's retry reach one claim at once: the launch is held after
/// CreateFleet answered while the retry (its first attempt died after handing off) resumes the
/// claim, adopts the same instance by ClientToken and records it. The held launch then finds the
/// claim launched: one instance, and the usage settled once, to exactly the type launched (before
/// any reconciliation could mend it).
#[tokio::test]
async fn a_handed_off_launch_racing_the_decisions_retry_settles_usage_once() {
    use tokio::sync::Notify;
    let base = with_bus();
    let batch = event_text("pod-pending.json").into_bytes();
    // The first attempt hands off and dies before it records its outcome.
    let complete = {
        let probe = with_bus();
        let none = Faults::none();
        handle(
            Function::PodPending,
            &faulty(&probe, &none),
            parse_bytes(&batch).unwrap(),
            NOW,
        )
        .await
        .unwrap();
        none.calls() - 1
    };
    let faults = Faults::at(complete, FaultKind::Crash);
    let d = faulty(&base, &faults);
    let first = tokio::select! {
        biased;
        r = handle(Function::PodPending, &d, parse_bytes(&batch).unwrap(), NOW) => Some(r),
        () = faults.crashed() => None,
    };
    assert!(first.is_none());
    assert_eq!(faults.injected().map(|(_, m)| m), Some("complete_event"));
    let events = base.capacity.take_bus_events();
    assert!(!events.is_empty());
    assert!(base.capacity.all_instances().is_empty());

    let (reached, resume) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let held = Faults::pause_after("launch", reached.clone(), resume.clone());
    let paused = faulty(&base, &held);
    let bytes = events[0].to_string().into_bytes();
    let launch = handle(
        Function::StateChange,
        &paused,
        parse_bytes(&bytes).unwrap(),
        NOW + 1_000,
    );
    let meanwhile = async {
        reached.notified().await;
        // Lambda's second retry, once the dead attempt's hold on the batch ran out (the first,
        // a minute in, found it busy); it resumes every claim.
        let retry = handle(Function::PodPending, &base, parse_bytes(&batch).unwrap(), NOW + 180_000)
            .await
            .unwrap();
        resume.notify_one();
        retry
    };
    let (launch, retry) = tokio::join!(launch, meanwhile);
    let launch = launch.unwrap();
    assert!(
        count(&retry, |a| matches!(a, Action::ResumedAttempt { .. })) >= 1,
        "{:?}",
        retry.actions
    );
    let claims = base.state.claim_records();
    let instances = base.capacity.all_instances();
    assert_eq!(
        instances.len(),
        claims.len(),
        "one instance per claim: {:?}",
        launch.actions
    );
    // The pool counts exactly what was launched.
    let types = base.settings.pools().all_types.clone();
    let mut want = nodewright_core::Resources::new();
    for i in &instances {
        want.add(&types.iter().find(|t| t.name == i.instance_type).unwrap().capacity);
    }
    let have = base.state.usage("general");
    assert_eq!(have.nodes, instances.len() as u64, "{have:?}");
    assert_eq!(
        have.cpu_milli,
        want.get(nodewright_core::Resource::Cpu),
        "{have:?} vs {want:?}"
    );
    assert_eq!(have.memory_bytes, want.get(nodewright_core::Resource::Memory));
}

/// A `Claim Launch` that never arrives (dead-lettered after its retries) does not leave its pods
/// waiting for the 20-minute launching timeout: five minutes after the decision, the consolidation
/// run launches the claim from its record, once; the request arriving after that launches nothing.
#[tokio::test]
async fn a_request_that_never_arrives_is_carried_out_by_consolidation() {
    let d = with_bus();
    sample_batch(&d).await;
    let lost = d.capacity.take_bus_events();
    assert!(!lost.is_empty());
    let claims = d.state.claim_records().len();
    let tick = event_text("scheduled.json").into_bytes();
    // Within five minutes the request (or its retries) may still come: nothing is launched.
    run(Function::Consolidation, &d, &tick, NOW + 4 * 60_000).await;
    assert!(d.capacity.all_instances().is_empty());
    let o = run(Function::Consolidation, &d, &tick, NOW + 5 * 60_000 + 1_000).await;
    assert_eq!(o.launched(), claims, "{:?}", o.actions);
    assert_eq!(d.capacity.all_instances().len(), claims);
    assert!(d.state.claim_records().iter().all(|c| c.state == ClaimState::Launched));
    let usage = d.state.usage("general");
    for e in &lost {
        let late = run(Function::StateChange, &d, e.to_string().as_bytes(), NOW + 6 * 60_000).await;
        assert_eq!(late.launched(), 0, "{:?}", late.actions);
    }
    assert_eq!(d.capacity.all_instances().len(), claims);
    assert_eq!(d.state.usage("general"), usage);
}
