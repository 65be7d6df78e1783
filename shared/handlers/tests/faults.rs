//! Crash and retry safety of provisioning, by sweep: the sample Pod Pending batch is handled with a
//! fault injected at every port call in turn (the invocation dies there, the call fails, or it
//! applies and its response is lost), then the platform's retry, the schedule and the nodes'
//! boot run without faults, and the invariants are checked: no instance without exactly one live
//! claim, no pod on two live claims, every pod on one, and the pools' counters equal to what the
//! live claims hold.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use nodewright_core::model::ClaimState;
use nodewright_core::model::cluster_event::PodPending;
use nodewright_handlers::adapters::faults::{FaultKind, Faults};
use nodewright_handlers::adapters::memory::MemoryCapacity;
use nodewright_handlers::consolidation::{USAGE_STABLE_MS, usage_of_claims};
use nodewright_handlers::event::parse_bytes;
use nodewright_handlers::ports::State;
use nodewright_handlers::{Function, Outcome, handle};
use support::*;

/// Runs `function` under the fault plan; None when the invocation died.
async fn run_faulty(
    function: Function,
    deps: &FaultyDeps,
    faults: &Faults,
    bytes: &[u8],
    now: i64,
) -> Option<nodewright_handlers::Result<Outcome>> {
    let parsed = parse_bytes(bytes).unwrap();
    // Biased: branch order fixed, so a seed gives one run (tokio picks at random otherwise).
    tokio::select! {
        biased;
        r = handle(function, deps, parsed, now) => Some(r),
        () = faults.crashed() => None,
    }
}

/// Lambda's retries of a failed invocation: one at `first` (the dead attempt's hold on the
/// event may still be there: `Busy`), and one two minutes after that, which must succeed.
async fn retry_as_lambda(function: Function, base: &MemDeps, bytes: &[u8], first: i64) {
    if try_run(function, base, bytes, first).await.is_err() {
        try_run(function, base, bytes, first + 120_000).await.unwrap();
    }
}

/// One clean invocation, its error returned (a failed invocation is retried by the platform).
async fn try_run(function: Function, deps: &MemDeps, bytes: &[u8], now: i64) -> nodewright_handlers::Result<Outcome> {
    handle(function, deps, parse_bytes(bytes).unwrap(), now).await
}

fn sample_pods() -> Vec<nodewright_core::Pod> {
    let event: serde_json::Value = serde_json::from_str(&event_text("pod-pending.json")).unwrap();
    let mut detail: PodPending = serde_json::from_value(event["detail"].clone()).unwrap();
    detail.normalize();
    detail.pods.into_iter().map(|p| p.pod).collect()
}

/// Fails with every run that broke an invariant; prints how many runs the sweep made.
fn assert_no_violations(failures: &[String], calls: usize) {
    let runs = calls * FaultKind::ALL.len();
    eprintln!(
        "{runs} runs ({calls} port calls x {} fault kinds)",
        FaultKind::ALL.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {runs} runs broke an invariant:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The kube-scheduler's part: each pod held by a live claim whose node is up binds to that node;
/// the rest stay pending.
fn bind_as_scheduled(deps: &MemDeps, pods: &[nodewright_core::Pod]) {
    let cluster = deps.cluster.as_ref().unwrap();
    let nodes = cluster.node_list();
    let claims = deps.state.claim_records();
    let mut bound = Vec::new();
    let mut pending = Vec::new();
    for p in pods {
        let node = claims
            .iter()
            .filter(|c| c.state.is_live() && c.pods.contains(&p.uid))
            .find_map(|c| {
                nodes
                    .iter()
                    .find(|n| n.instance_id.is_some() && n.instance_id == c.instance_id)
            });
        match node {
            Some(n) => bound.push(nodewright_core::Pod {
                node_name: Some(n.node.name.clone()),
                ..p.clone()
            }),
            None => pending.push(p.clone()),
        }
    }
    cluster.set_bound(bound);
    cluster.set_pending(pending);
}

/// What must hold once the retry and the schedule have run; a description of each violation.
/// With `retiring_allowed`, a pod may also still be listed by a claim being retired (cordoned,
/// draining, terminating) besides the one active claim that replaced it.
fn violations(deps: &MemDeps, pods: &[nodewright_core::Pod], retiring_allowed: bool) -> Vec<String> {
    let mut out = Vec::new();
    let claims = deps.state.claim_records();
    let live: Vec<_> = claims.iter().filter(|c| c.state.is_live()).collect();
    let mut owners: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in &live {
        if let Some(i) = &c.instance_id {
            owners.entry(i.as_str()).or_default().push(c.id.as_str());
        }
    }
    for i in deps.capacity.all_instances() {
        if matches!(i.state.as_str(), "terminated" | "shutting-down") {
            continue;
        }
        match owners.get(i.instance_id.as_str()).map(Vec::len) {
            Some(1) => {}
            Some(n) => out.push(format!("instance {} owned by {n} live claims", i.instance_id)),
            None => out.push(format!("instance {} ({}) has no live claim", i.instance_id, i.state)),
        }
    }
    let mut holders: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for c in &live {
        for p in &c.pods {
            holders.entry(p.as_str()).or_default().insert(c.id.as_str());
        }
    }
    let mut active: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for c in live.iter().filter(|c| c.state <= ClaimState::Ready) {
        for p in &c.pods {
            active.entry(p.as_str()).or_default().insert(c.id.as_str());
        }
    }
    let holders = if retiring_allowed { active } else { holders };
    for p in pods {
        match holders.get(p.uid.as_str()).map(BTreeSet::len) {
            Some(1) => {}
            Some(n) => out.push(format!("pod {} on {n} live claims", p.name)),
            None => out.push(format!("pod {} on no live claim", p.name)),
        }
    }
    for pool in &deps.settings.pools().config.node_pools {
        let want = usage_of_claims(&claims, &pool.name, &deps.settings.pools().instance_types);
        let have = deps.state.usage(&pool.name);
        if want.is_some_and(|w| w != have) {
            out.push(format!("pool {} counts {have:?}, its claims hold {want:?}", pool.name));
        }
    }
    out
}

#[tokio::test]
async fn provisioning_survives_a_fault_at_every_call() {
    let pods = sample_pods();
    let batch = event_text("pod-pending.json").into_bytes();
    let tick = event_text("scheduled.json").into_bytes();

    let clean = deps();
    let none = Faults::none();
    let calls = {
        let d = faulty(&clean, &none);
        run_faulty(Function::PodPending, &d, &none, &batch, NOW)
            .await
            .unwrap()
            .unwrap();
        none.calls()
    };
    assert!(calls > 10, "a clean run makes {calls} port calls");

    let mut failures = Vec::new();
    let mut injected = BTreeMap::<(&'static str, String), usize>::new();
    for call in 0..calls {
        for kind in FaultKind::ALL {
            let base = deps();
            base.cluster.as_ref().unwrap().set_pending(pods.clone());
            let faults = Faults::at(call, kind);
            let d = faulty(&base, &faults);
            let first = run_faulty(Function::PodPending, &d, &faults, &batch, NOW).await;
            let (at, method) = faults.injected().expect("the planned call is reached");
            assert_eq!(at, call);
            *injected.entry((method, format!("{kind:?}"))).or_default() += 1;
            // Lambda retries a failed or timed-out invocation about a minute later (the dead
            // attempt's lease may still hold: Busy), then two minutes after that.
            if !matches!(first, Some(Ok(_))) {
                retry_as_lambda(Function::PodPending, &base, &batch, NOW + 60_000).await;
            }
            // The schedule, then the nodes boot, then enough ticks for the counters to settle.
            let mut t = NOW + 5 * 60_000;
            run(Function::Consolidation, &base, &tick, t).await;
            boot_nodes(&base);
            bind_as_scheduled(&base, &pods);
            for _ in 0..4 {
                t += USAGE_STABLE_MS / 2 + 1;
                run(Function::Consolidation, &base, &tick, t).await;
            }
            let v = violations(&base, &pods, false);
            if !v.is_empty() {
                let claims: Vec<String> = base
                    .state
                    .claim_records()
                    .iter()
                    .map(|c| format!("{} {} {:?} {:?}", c.id, c.state.as_str(), c.instance_id, c.pods))
                    .collect();
                failures.push(format!(
                    "{kind:?} at call {call} ({method}): {}\n  claims: {}",
                    v.join("; "),
                    claims.join("\n          ")
                ));
            }
        }
    }
    assert_no_violations(&failures, calls);
    // Every port method the handler calls had every fault kind injected.
    let methods: BTreeSet<&str> = injected.keys().map(|(m, _)| *m).collect();
    for m in &methods {
        for kind in FaultKind::ALL {
            assert!(injected.contains_key(&(*m, format!("{kind:?}"))), "{m} {kind:?}");
        }
    }
    assert!(
        methods.contains("launch") && methods.contains("create_claim"),
        "{methods:?}"
    );
}

/// The schedule, the nodes' boot and enough ticks for the counters to settle; the violations.
async fn settle(base: &MemDeps, pods: &[nodewright_core::Pod], tick: &[u8], mut t: i64) -> Vec<String> {
    run(Function::Consolidation, base, tick, t).await;
    boot_nodes(base);
    bind_as_scheduled(base, pods);
    for _ in 0..4 {
        t += USAGE_STABLE_MS / 2 + 1;
        run(Function::Consolidation, base, tick, t).await;
    }
    violations(base, pods, false)
}

/// Delivers every `Claim Launch` on the bus to state-change, twice each (EventBridge delivers at
/// least once); a failed delivery is retried as Lambda retries an asynchronous invocation.
async fn deliver_bus(base: &MemDeps, now: i64) {
    for event in base.capacity.take_bus_events() {
        let bytes = event.to_string().into_bytes();
        for _ in 0..2 {
            if try_run(Function::StateChange, base, &bytes, now).await.is_err() {
                try_run(Function::StateChange, base, &bytes, now + 60_000)
                    .await
                    .unwrap();
            }
        }
    }
}

/// Provisioning with launches handed off through the bus, under the same sweep twice: a fault at
/// every call of the decision (then the bus's deliveries, the platform's retry of the decision,
/// the deliveries it caused), and a fault at every call of one handed-off launch (then Lambda's
/// retry of it and a duplicate delivery). The decision's retry and a late delivery may both
/// reach one claim; it still gets one instance and its usage is settled once.
#[tokio::test]
async fn handed_off_provisioning_survives_a_fault_at_every_call() {
    let pods = sample_pods();
    let batch = event_text("pod-pending.json").into_bytes();
    let tick = event_text("scheduled.json").into_bytes();
    let with_bus = || {
        let mut d = deps();
        d.capacity = MemoryCapacity::new("demo").with_bus();
        d.cluster.as_ref().unwrap().set_pending(pods.clone());
        d
    };
    let describe = |base: &MemDeps| {
        base.state
            .claim_records()
            .iter()
            .map(|c| format!("{} {} {:?} {:?}", c.id, c.state.as_str(), c.instance_id, c.pods))
            .collect::<Vec<_>>()
            .join("\n          ")
    };
    let mut failures = Vec::new();

    // 1. A fault in the decision.
    let calls = {
        let base = with_bus();
        let none = Faults::none();
        let d = faulty(&base, &none);
        run_faulty(Function::PodPending, &d, &none, &batch, NOW)
            .await
            .unwrap()
            .unwrap();
        assert!(none.called().contains_key("hand_off_launches"));
        none.calls()
    };
    let mut reached = BTreeSet::new();
    for call in 0..calls {
        for kind in FaultKind::ALL {
            let base = with_bus();
            let faults = Faults::at(call, kind);
            let d = faulty(&base, &faults);
            let first = run_faulty(Function::PodPending, &d, &faults, &batch, NOW).await;
            let (_, method) = faults.injected().expect("the planned call is reached");
            reached.insert(method);
            // EventBridge delivers within a second; Lambda retries the decision a minute later.
            deliver_bus(&base, NOW + 1_000).await;
            if !matches!(first, Some(Ok(_))) {
                retry_as_lambda(Function::PodPending, &base, &batch, NOW + 60_000).await;
                deliver_bus(&base, NOW + 181_000).await;
            }
            let v = settle(&base, &pods, &tick, NOW + 5 * 60_000).await;
            if !v.is_empty() {
                failures.push(format!(
                    "decision: {kind:?} at call {call} ({method}): {}\n  claims: {}",
                    v.join("; "),
                    describe(&base)
                ));
            }
        }
    }
    assert!(
        reached.contains("hand_off_launches") && reached.contains("create_claim"),
        "{reached:?}"
    );

    // 2. A fault in a handed-off launch.
    let decided = || async {
        let base = with_bus();
        run(Function::PodPending, &base, &batch, NOW).await;
        let events = base.capacity.take_bus_events();
        assert!(!events.is_empty());
        (base, events)
    };
    let calls = {
        let (base, events) = decided().await;
        let none = Faults::none();
        let d = faulty(&base, &none);
        let bytes = events[0].to_string().into_bytes();
        run_faulty(Function::StateChange, &d, &none, &bytes, NOW + 1_000)
            .await
            .unwrap()
            .unwrap();
        assert!(none.called().contains_key("launch"));
        none.calls()
    };
    for call in 0..calls {
        for kind in FaultKind::ALL {
            let (base, events) = decided().await;
            let faults = Faults::at(call, kind);
            let d = faulty(&base, &faults);
            let bytes = events[0].to_string().into_bytes();
            let first = run_faulty(Function::StateChange, &d, &faults, &bytes, NOW + 1_000).await;
            let (_, method) = faults.injected().expect("the planned call is reached");
            // Lambda retries a failed asynchronous invocation after a minute, then two more; the
            // bus may also deliver the event again. The other claims' events arrive as usual.
            if !matches!(first, Some(Ok(_))) {
                retry_as_lambda(Function::StateChange, &base, &bytes, NOW + 61_000).await;
            }
            try_run(Function::StateChange, &base, &bytes, NOW + 182_000)
                .await
                .unwrap();
            for e in &events[1..] {
                try_run(Function::StateChange, &base, e.to_string().as_bytes(), NOW + 2_000)
                    .await
                    .unwrap();
            }
            let v = settle(&base, &pods, &tick, NOW + 5 * 60_000).await;
            if !v.is_empty() {
                failures.push(format!(
                    "launch: {kind:?} at call {call} ({method}): {}\n  claims: {}",
                    v.join("; "),
                    describe(&base)
                ));
            }
        }
    }
    assert_no_violations(&failures, calls);
}

/// The interruption path under the same sweep: a Ready node's spot interruption warning handled
/// with a fault at every call, then the retry, the instance's termination two minutes later, and
/// the schedule. The node's pods end on exactly one active claim.
#[tokio::test]
async fn interruption_survives_a_fault_at_every_call() {
    let pods = sample_pods();
    let batch = event_text("pod-pending.json").into_bytes();
    let tick = event_text("scheduled.json").into_bytes();

    // A cluster after the batch: every node up, Ready, its pods bound.
    let settled = || async {
        let base = deps();
        base.cluster.as_ref().unwrap().set_pending(pods.clone());
        run(Function::PodPending, &base, &batch, NOW).await;
        boot_nodes(&base);
        bind_as_scheduled(&base, &pods);
        run(Function::Consolidation, &base, &tick, NOW + 60_000).await;
        let victim = base
            .state
            .claim_records()
            .into_iter()
            .find(|c| c.state == ClaimState::Ready && c.pods.len() > 1)
            .unwrap();
        let iid = victim.instance_id.clone().unwrap();
        (base, iid)
    };
    let t = NOW + 10 * 60_000;
    let calls = {
        let (base, iid) = settled().await;
        let none = Faults::none();
        let d = faulty(&base, &none);
        let warning = event_for("spot-interruption.json", &iid);
        run_faulty(Function::SpotInterruption, &d, &none, &warning, t)
            .await
            .unwrap()
            .unwrap();
        none.calls()
    };
    assert!(calls > 5, "{calls}");

    let mut failures = Vec::new();
    for call in 0..calls {
        for kind in FaultKind::ALL {
            let (base, iid) = settled().await;
            let warning = event_for("spot-interruption.json", &iid);
            let faults = Faults::at(call, kind);
            let d = faulty(&base, &faults);
            let first = run_faulty(Function::SpotInterruption, &d, &faults, &warning, t).await;
            let (_, method) = faults.injected().expect("the planned call is reached");
            if !matches!(first, Some(Ok(_))) {
                // Lambda's retries: about a minute later (the dead attempt's lease may still
                // hold: Busy), then two minutes after that.
                retry_as_lambda(Function::SpotInterruption, &base, &warning, t + 60_000).await;
            }
            // Two minutes after the warning the instance is reclaimed.
            let mut gone: serde_json::Value =
                serde_json::from_slice(&event_for("instance-state-change-terminated.json", &iid)).unwrap();
            gone["id"] = format!("gone-{call}-{kind:?}").into();
            let _ = run(Function::StateChange, &base, gone.to_string().as_bytes(), t + 120_000).await;
            let mut now = t + 3 * 60_000;
            run(Function::Consolidation, &base, &tick, now).await;
            boot_nodes(&base);
            bind_as_scheduled(&base, &pods);
            for _ in 0..4 {
                now += USAGE_STABLE_MS / 2 + 1;
                run(Function::Consolidation, &base, &tick, now).await;
            }
            let v = violations(&base, &pods, true);
            if !v.is_empty() {
                failures.push(format!("{kind:?} at call {call} ({method}): {}", v.join("; ")));
            }
        }
    }
    assert_no_violations(&failures, calls);
}

/// The schedule's disruption under the same sweep: one node's pods finish, and the consolidation
/// run that would retire it meets a fault at every call in turn (no retry: the next tick is the
/// retry). Later ticks finish the job: the empty node's instance is gone, its claim ended, and
/// every other pod still on exactly one active claim.
#[tokio::test]
async fn consolidation_survives_a_fault_at_every_call() {
    let pods = sample_pods();
    let batch = event_text("pod-pending.json").into_bytes();
    let tick = event_text("scheduled.json").into_bytes();
    let settled = || async {
        let base = deps();
        base.cluster.as_ref().unwrap().set_pending(pods.clone());
        run(Function::PodPending, &base, &batch, NOW).await;
        boot_nodes(&base);
        bind_as_scheduled(&base, &pods);
        run(Function::Consolidation, &base, &tick, NOW + 60_000).await;
        // The smallest node's pods finish (a batch job): its node is empty.
        let done = base
            .state
            .claim_records()
            .into_iter()
            .filter(|c| c.state == ClaimState::Ready)
            .min_by_key(|c| c.pods.len())
            .unwrap();
        let left: Vec<_> = pods.iter().filter(|p| !done.pods.contains(&p.uid)).cloned().collect();
        bind_as_scheduled(&base, &left);
        // The schedule sees the change; consolidateAfter counts from it.
        run(Function::Consolidation, &base, &tick, NOW + 5 * 60_000).await;
        (base, done, left)
    };
    let t = NOW + 10 * 60_000;
    let calls = {
        let (base, done, _) = settled().await;
        let none = Faults::none();
        let d = faulty(&base, &none);
        let o = run_faulty(Function::Consolidation, &d, &none, &tick, t)
            .await
            .unwrap()
            .unwrap();
        let state = base.state.get_claim(&done.id).await.unwrap().unwrap().state;
        assert!(state >= ClaimState::Cordoned, "this run retires the empty node: {o:#?}");
        none.calls()
    };
    assert!(calls >= 5, "the disrupting run makes {calls} calls");

    let mut failures = Vec::new();
    for call in 0..calls {
        for kind in FaultKind::ALL {
            let (base, done, left) = settled().await;
            let faults = Faults::at(call, kind);
            let d = faulty(&base, &faults);
            let _ = run_faulty(Function::Consolidation, &d, &faults, &tick, t).await;
            let (_, method) = faults.injected().expect("the planned call is reached");
            let mut now = t;
            for _ in 0..6 {
                now += USAGE_STABLE_MS / 2 + 1;
                run(Function::Consolidation, &base, &tick, now).await;
                boot_nodes(&base);
                bind_as_scheduled(&base, &left);
            }
            let mut v = violations(&base, &left, true);
            let ended = base.state.get_claim(&done.id).await.unwrap().unwrap();
            if !matches!(ended.state, ClaimState::Terminating | ClaimState::Terminated) {
                v.push(format!("the empty node's claim is {}", ended.state.as_str()));
            }
            let iid = ended.instance_id.clone().unwrap();
            if !base.capacity.terminated().contains(&iid) {
                v.push(format!("the empty node's instance {iid} was not terminated"));
            }
            if !v.is_empty() {
                failures.push(format!("{kind:?} at call {call} ({method}): {}", v.join("; ")));
            }
        }
    }
    assert_no_violations(&failures, calls);
}
