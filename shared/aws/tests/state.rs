//! DynamoDB state against moto server: concurrency decided by conditions, TTL filtered on read,
//! idempotent events, monotonic claims.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::{BTreeMap, BTreeSet};

use nodewright_aws::state::{
    ClaimRecord, ClaimUpdate, EventStart, Holder, OFFERING_UNAVAILABLE_SECS, Once, RESERVATION_TTL_SECS,
    TransitionOutcome, UsageDecision, UsageDelta, UsageDrift,
};
use nodewright_core::model::ClaimState;
use nodewright_core::nodepool::Limits;
use nodewright_core::{CapacityType, Resource, Resources};

const NOW: i64 = 1_790_000_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_reserve_overlapping_pods_each_exactly_once() {
    let clients = support::clients().await;
    let store = support::store(&clients, "reserve").await;
    let pods: Vec<String> = (0..200).map(|i| format!("pod-{i:03}")).collect();

    let mut tasks = Vec::new();
    for t in 0..16usize {
        let store = store.clone();
        // Task t wants 60 pods starting at t*13 (wrapping): every pod is wanted by 4-5 tasks.
        let wanted: Vec<String> = (0..60).map(|k| pods[(t * 13 + k) % 200].clone()).collect();
        tasks.push(tokio::spawn(async move {
            let holder = Holder::Invocation(format!("inv-{t}"));
            let won = store
                .reserve_pods(&wanted, &holder, NOW, RESERVATION_TTL_SECS)
                .await
                .unwrap();
            (holder, wanted, won)
        }));
    }
    let mut winner: BTreeMap<String, Holder> = BTreeMap::new();
    let mut wanted_any = BTreeSet::new();
    for task in tasks {
        let (holder, wanted, won) = task.await.unwrap();
        wanted_any.extend(wanted);
        for uid in won {
            assert!(
                winner.insert(uid.clone(), holder.clone()).is_none(),
                "{uid} reserved twice"
            );
        }
    }
    // Every pod some task wanted was reserved by exactly one task: none lost.
    assert_eq!(wanted_any.len(), 200);
    assert_eq!(
        winner.len(),
        200,
        "pods lost: {:?}",
        wanted_any.difference(&winner.keys().cloned().collect())
    );
    let stored = store.reservations(NOW).await.unwrap();
    assert_eq!(stored.len(), 200);
    for r in stored {
        assert_eq!(
            winner.get(&r.pod_uid),
            Some(&r.holder),
            "stored holder of {} differs",
            r.pod_uid
        );
    }
}

/// A burst's reservation writes land on many partition key values, not the cluster's one: read
/// back raw from the table, every record sits under its uid's shard, and 1,000 random-looking
/// uids (as Kubernetes makes them) use every shard with none above twice its even share.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservations_spread_over_the_shards_of_the_cluster() {
    use nodewright_aws::state::{RESERVATION_SHARDS, Table, reservation_partition};
    let clients = support::clients().await;
    let store = support::store(&clients, "shards").await;
    // UUID-shaped uids from a fixed LCG, so the draw is the same on every run.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let uids: Vec<String> = (0..1_000)
        .map(|_| {
            let mut next = || {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                x >> 16
            };
            let (a, b) = (next(), next());
            format!(
                "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                a & 0xffff_ffff,
                (a >> 32) & 0xffff,
                b & 0xfff,
                (b >> 12) & 0xfff,
                (a ^ b) & 0xffff_ffff_ffff
            )
        })
        .collect();
    let holder = Holder::Invocation("burst".into());
    let won = store
        .reserve_pods(&uids, &holder, NOW, RESERVATION_TTL_SECS)
        .await
        .unwrap();
    assert_eq!(won.len(), uids.len());
    let to = Holder::Claim("nc-1".into());
    for u in uids.iter().take(10) {
        assert!(
            store
                .transfer_pod(u, &holder, &to, NOW, RESERVATION_TTL_SECS)
                .await
                .unwrap()
        );
    }

    let table = store.table_name(Table::Reservations);
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut start = None;
    loop {
        let page = clients
            .dynamodb
            .scan()
            .table_name(&table)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let key = item["cluster"].as_s().unwrap().clone();
            let uid = item["podUid"].as_s().unwrap();
            assert_eq!(
                key,
                reservation_partition(store.cluster(), uid),
                "{uid} stored under {key}"
            );
            *per_key.entry(key).or_default() += 1;
        }
        match page.last_evaluated_key() {
            Some(k) => start = Some(k.clone()),
            None => break,
        }
    }
    assert_eq!(per_key.len() as u64, RESERVATION_SHARDS, "shards used: {per_key:?}");
    let fair = uids.len() / RESERVATION_SHARDS as usize;
    assert!(per_key.values().all(|&n| n <= 2 * fair), "uneven spread: {per_key:?}");
    // The whole-cluster listing gathers every shard, in uid order; the hand-over found its record.
    let listed = store.reservations(NOW).await.unwrap();
    assert_eq!(listed.len(), uids.len());
    assert!(listed.windows(2).all(|w| w[0].pod_uid < w[1].pod_uid));
    assert_eq!(listed.iter().filter(|r| r.holder == to).count(), 10);
    assert_eq!(store.reservations_of(&to, NOW).await.unwrap().len(), 10);
    // Released by its holder, under the same key.
    assert!(store.release_pod(&uids[0], &to).await.unwrap());
    assert_eq!(store.reservations(NOW).await.unwrap().len(), uids.len() - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_tasks_never_push_a_pool_past_its_limit() {
    let clients = support::clients().await;
    let store = support::store(&clients, "usage").await;
    let limits = Limits {
        resources: Resources::new()
            .with(Resource::Cpu, 100_000)
            .with(Resource::Memory, 1 << 40),
        nodes: Some(40),
        ..Limits::default()
    };
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let store = store.clone();
        let limits = limits.clone();
        tasks.push(tokio::spawn(async move {
            let mut granted = Vec::new();
            for k in 0..8u64 {
                // Sizes vary so the cpu limit, not only the node count, binds.
                let cpu = 2_000 * (1 + (t + k) % 4);
                let delta = UsageDelta {
                    cpu_milli: cpu,
                    memory_bytes: cpu << 20,
                    gpus: 0,
                    nodes: 1,
                };
                match store.try_add_usage("general", &delta, &limits).await.unwrap() {
                    UsageDecision::Granted => granted.push(delta),
                    UsageDecision::Denied {
                        used, requested, limit, ..
                    } => {
                        assert!(
                            used + requested > limit,
                            "denied without reason: {used}+{requested} <= {limit}"
                        )
                    }
                }
            }
            granted
        }));
    }
    let mut cpu = 0;
    let mut nodes = 0;
    let mut memory = 0;
    for task in tasks {
        for d in task.await.unwrap() {
            cpu += d.cpu_milli;
            nodes += d.nodes;
            memory += d.memory_bytes;
        }
    }
    let usage = store.pool_usage("general").await.unwrap();
    assert_eq!(usage.cpu_milli, cpu, "counter equals the sum of granted increments");
    assert_eq!(usage.nodes, nodes);
    assert_eq!(usage.memory_bytes, memory);
    assert_eq!(usage.nodes_in_flight, nodes);
    assert!(usage.cpu_milli <= 100_000, "cpu limit exceeded: {}", usage.cpu_milli);
    assert!(usage.nodes <= 40);
    assert!(
        usage.cpu_milli > 90_000,
        "the limit was approached (128 requests for ~5x the limit)"
    );

    // Releasing gives capacity back; a ready node leaves the in-flight count.
    store.mark_usage_running("general", 1).await.unwrap();
    let first = UsageDelta {
        cpu_milli: 2_000,
        memory_bytes: 2_000 << 20,
        gpus: 0,
        nodes: 1,
    };
    store.release_usage("general", &first, false).await.unwrap();
    let after = store.pool_usage("general").await.unwrap();
    assert_eq!(after.cpu_milli, cpu - 2_000);
    assert_eq!(after.nodes_running(), 0);
}

#[tokio::test]
async fn a_duplicate_event_returns_the_first_outcome_without_a_second_write() {
    let clients = support::clients().await;
    let store = support::store(&clients, "idem").await;
    let limits = Limits::default();
    let delta = UsageDelta {
        cpu_milli: 1_000,
        memory_bytes: 1,
        gpus: 0,
        nodes: 1,
    };
    let run = |n: u32| {
        let store = store.clone();
        let limits = limits.clone();
        async move {
            store
                .run_once("evt-1", NOW, || async {
                    store.try_add_usage("p", &delta, &limits).await?;
                    Ok(format!("launched claim c-{n}"))
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(run(1).await, Once::Ran("launched claim c-1".into()));
    assert_eq!(run(2).await, Once::Replayed("launched claim c-1".into()));
    // The write ran once.
    assert_eq!(store.pool_usage("p").await.unwrap().cpu_milli, 1_000);

    // An event another invocation is running is reported busy; after its lease it may run again.
    assert_eq!(store.begin_event("evt-2", NOW).await.unwrap(), EventStart::New);
    assert_eq!(
        store.begin_event("evt-2", NOW + 1_000).await.unwrap(),
        EventStart::InProgress
    );
    let after_lease = NOW + (nodewright_aws::state::IDEMPOTENCY_LEASE_SECS + 1) * 1000;
    assert_eq!(store.begin_event("evt-2", after_lease).await.unwrap(), EventStart::New);

    // A failed run releases the event so a redelivery runs it.
    let failed = store
        .run_once("evt-3", NOW, || async {
            Err(nodewright_aws::Error::Refused("boom".into()))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(store.begin_event("evt-3", NOW).await.unwrap(), EventStart::New);
}

#[tokio::test]
async fn a_late_running_after_terminated_does_not_resurrect_a_claim() {
    let clients = support::clients().await;
    let store = support::store(&clients, "claims").await;
    let mut claim = ClaimRecord::launching("c-1", "general", vec!["pod-a".into(), "pod-b".into()], NOW);
    claim.node_class_hash = Some("0123456789abcdef".into());
    claim.pods_digest = Some("feedface".into());
    claim.pods_changed_at = Some(NOW + 5);
    assert!(store.create_claim(&claim).await.unwrap());
    assert!(!store.create_claim(&claim).await.unwrap(), "a second create is refused");

    let launched = ClaimUpdate {
        instance_id: Some("i-0123".into()),
        instance_type: Some("m5.large".into()),
        capacity_type: Some(CapacityType::Spot),
        zone: Some("us-east-1a".into()),
        price_per_hour: Some(0.035),
        allocatable: Some(Resources::new().with(Resource::Cpu, 1_930)),
        node_name: None,
    };
    let out = store
        .transition_claim("c-1", ClaimState::Launched, NOW + 1_000, &launched)
        .await
        .unwrap();
    assert!(matches!(out, TransitionOutcome::Advanced(ref c) if c.version == 1));
    store
        .transition_claim("c-1", ClaimState::Terminated, NOW + 60_000, &ClaimUpdate::default())
        .await
        .unwrap();
    // The late `running` state-change (maps to Launched) and a duplicate terminated.
    let late = store
        .transition_claim("c-1", ClaimState::Launched, NOW + 2_000, &ClaimUpdate::default())
        .await
        .unwrap();
    assert!(matches!(late, TransitionOutcome::Stale(ref c) if c.state == ClaimState::Terminated));
    let dup = store
        .transition_claim("c-1", ClaimState::Terminated, NOW + 61_000, &ClaimUpdate::default())
        .await
        .unwrap();
    assert!(matches!(dup, TransitionOutcome::Duplicate(_)));

    let stored = store.get_claim("c-1").await.unwrap().unwrap();
    assert_eq!(stored.state, ClaimState::Terminated);
    assert_eq!(stored.version, 2, "stale and duplicate events wrote nothing");
    assert_eq!(stored.entered(ClaimState::Launched), Some(NOW + 1_000));
    assert_eq!(stored.instance_type.as_deref(), Some("m5.large"));
    assert_eq!(stored.allocatable.as_ref().map(|a| a.cpu_milli()), Some(1_930));
    assert_eq!(stored.pods, vec!["pod-a".to_string(), "pod-b".to_string()]);
    assert_eq!(stored.node_class_hash.as_deref(), Some("0123456789abcdef"));
    assert_eq!(stored.pods_digest.as_deref(), Some("feedface"));
    assert_eq!(stored.pods_changed_at, Some(NOW + 5));

    // Look-ups by instance, state and pool.
    assert_eq!(
        store.claim_by_instance("i-0123").await.unwrap().map(|c| c.id),
        Some("c-1".into())
    );
    assert!(store.claim_by_instance("i-none").await.unwrap().is_none());
    assert_eq!(store.claims_in_state(ClaimState::Terminated).await.unwrap().len(), 1);
    assert!(store.claims_in_state(ClaimState::Launched).await.unwrap().is_empty());
    assert_eq!(store.claims_in_pool("general").await.unwrap().len(), 1);
    assert_eq!(store.claims().await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transitions_of_one_claim_all_land_in_order() {
    let clients = support::clients().await;
    let store = support::store(&clients, "race").await;
    store
        .create_claim(&ClaimRecord::launching("c-9", "p", Vec::new(), NOW))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for (i, state) in [ClaimState::Launched, ClaimState::Registered, ClaimState::Ready]
        .into_iter()
        .enumerate()
    {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .transition_claim("c-9", state, NOW + i as i64, &ClaimUpdate::default())
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let claim = store.get_claim("c-9").await.unwrap().unwrap();
    assert_eq!(
        claim.state,
        ClaimState::Ready,
        "the furthest state wins whatever the arrival order"
    );
}

#[tokio::test]
async fn ttl_records_are_filtered_on_read() {
    let clients = support::clients().await;
    let store = support::store(&clients, "ttl").await;
    store
        .mark_offering_unavailable(
            CapacityType::Spot,
            "m5.large",
            "us-east-1a",
            "InsufficientInstanceCapacity",
            NOW,
        )
        .await
        .unwrap();
    let during = store.unavailable_offerings(NOW + 179_000).await.unwrap();
    assert_eq!(during.len(), 1);
    assert_eq!(during[0].instance_type, "m5.large");
    assert_eq!(during[0].reason, "InsufficientInstanceCapacity");
    let after = NOW + (OFFERING_UNAVAILABLE_SECS + 1) * 1000;
    assert!(
        store.unavailable_offerings(after).await.unwrap().is_empty(),
        "expired after 3 minutes"
    );

    // An expired reservation (still stored: TTL deletion is lazy) does not count and can be taken.
    let a = Holder::Invocation("a".into());
    let b = Holder::Invocation("b".into());
    assert!(store.reserve_pod("p1", &a, NOW, 60).await.unwrap());
    assert!(!store.reserve_pod("p1", &b, NOW + 30_000, 60).await.unwrap());
    assert!(
        store.reserve_pod("p1", &a, NOW + 30_000, 60).await.unwrap(),
        "the holder may renew"
    );
    assert!(store.reservations(NOW + 200_000).await.unwrap().is_empty());
    assert!(store.reserve_pod("p1", &b, NOW + 200_000, 60).await.unwrap());

    // Transfer and release only by the current holder.
    let claim = Holder::Claim("c-1".into());
    assert!(!store.transfer_pod("p1", &a, &claim, NOW + 200_000, 60).await.unwrap());
    assert!(store.transfer_pod("p1", &b, &claim, NOW + 200_000, 60).await.unwrap());
    assert!(!store.release_pod("p1", &b).await.unwrap());
    assert_eq!(store.reservations_of(&claim, NOW + 200_000).await.unwrap().len(), 1);
    assert!(store.release_pod("p1", &claim).await.unwrap());
    assert!(store.reservations(NOW + 200_000).await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_names_are_rejected_with_the_field() {
    let err = nodewright_aws::state::TableNames::new("bad prefix!").unwrap_err();
    assert!(err.to_string().contains("NODEWRIGHT_TABLE_PREFIX"), "{err}");
    let clients = support::clients().await;
    let store = support::store(&clients, "names").await;
    let err = store
        .reserve_pod("", &Holder::Invocation("x".into()), NOW, 60)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("podUid"), "{err}");
}

/// The usage reconciler's three calls: every counter write bumps the version; a check is recorded
/// only at the version seen; a correction applies only at the version it was computed against;
/// counters below zero are reported, not hidden.
#[tokio::test]
async fn usage_corrections_are_conditional_on_the_counters_version() {
    let clients = support::clients().await;
    let store = support::store(&clients, "usage-version").await;
    assert!(!store.usage_snapshot("p").await.unwrap().exists);
    let one = UsageDelta {
        cpu_milli: 2_000,
        memory_bytes: 8 << 30,
        gpus: 0,
        nodes: 1,
    };
    let none = Limits::default();
    assert_eq!(
        store.try_add_usage("p", &one, &none).await.unwrap(),
        UsageDecision::Granted
    );
    let first = store.usage_snapshot("p").await.unwrap();
    assert!(first.exists && !first.negative);
    assert_eq!((first.usage.nodes, first.version, first.checked), (1, 1, None));

    // The reconciler notes the difference it sees; the same difference seen again keeps its
    // first time (it has persisted since), a different one restarts the clock. Notes do not bump
    // the counters' version.
    let held = nodewright_aws::state::PoolUsage::default();
    let drift = UsageDrift::between(&first.usage, false, &held);
    assert_eq!((drift.cpu_milli, drift.nodes, drift.negative), (2_000, 1, false));
    store.note_usage_checked("p", &drift, NOW).await.unwrap();
    assert_eq!(store.usage_snapshot("p").await.unwrap().checked, Some((drift, NOW)));
    store.note_usage_checked("p", &drift, NOW + 1).await.unwrap();
    assert_eq!(store.usage_snapshot("p").await.unwrap().checked, Some((drift, NOW)));
    let other = UsageDrift { nodes: 2, ..drift };
    store.note_usage_checked("p", &other, NOW + 2).await.unwrap();
    assert_eq!(store.usage_snapshot("p").await.unwrap().checked, Some((other, NOW + 2)));
    assert_eq!(store.usage_snapshot("p").await.unwrap().version, first.version);
    // A pool without counters gets no note (and no item).
    store.note_usage_checked("q", &drift, NOW).await.unwrap();
    assert!(!store.usage_snapshot("q").await.unwrap().exists);

    // A charge lands between the read and the correction: the correction does not apply.
    assert_eq!(
        store.try_add_usage("p", &one, &none).await.unwrap(),
        UsageDecision::Granted
    );
    let zero = nodewright_aws::state::PoolUsage::default();
    assert!(!store.correct_usage("p", &zero, first.version, NOW + 2).await.unwrap());
    assert_eq!(store.pool_usage("p").await.unwrap().nodes, 2);
    // At the current version it does, and records itself as the last check.
    let now = store.usage_snapshot("p").await.unwrap();
    assert_eq!(now.version, 2);
    let fixed = nodewright_aws::state::PoolUsage {
        cpu_milli: 2_000,
        memory_bytes: 8 << 30,
        gpus: 0,
        nodes: 1,
        nodes_in_flight: 0,
    };
    assert!(store.correct_usage("p", &fixed, now.version, NOW + 3).await.unwrap());
    let after = store.usage_snapshot("p").await.unwrap();
    assert_eq!(after.usage, fixed);
    assert_eq!(
        (after.version, after.checked),
        (3, Some((UsageDrift::default(), NOW + 3)))
    );

    // Releases past zero (a release applied twice) show as negative.
    store.release_usage("p", &one, false).await.unwrap();
    store.release_usage("p", &one, false).await.unwrap();
    let below = store.usage_snapshot("p").await.unwrap();
    assert!(below.negative, "{below:?}");
    assert_eq!(below.usage.cpu_milli, 0);
    assert_eq!(below.version, 5);
}

/// The lease outlasts every function's timeout in the deployment template (no live invocation is
/// doubled) and has run out by Lambda's second asynchronous retry after any of them fails: the
/// first comes about 60 s after the failure, the second about 120 s after the first.
#[test]
fn the_idempotency_lease_fits_the_templates_timeouts_and_lambdas_retries() {
    let template = std::fs::read_to_string(support::workspace_root().join("infra/template.yaml")).unwrap();
    let timeouts: Vec<i64> = template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Timeout:"))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert!(timeouts.len() >= 2, "{timeouts:?}");
    let lease = nodewright_aws::state::IDEMPOTENCY_LEASE_SECS;
    for t in timeouts {
        assert!(t < lease, "a {t} s function outlives the {lease} s lease");
    }
    // The worst case is an invocation that dies as it starts: retried about 60 s and 180 s later.
    assert!(lease < 180, "the second retry finds the {lease} s lease held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_claims_leave_the_live_partition_are_never_revived_and_expire() {
    use aws_sdk_dynamodb::types::AttributeValue;
    use nodewright_aws::state::Table;
    use nodewright_core::ports::state::CLAIM_RETENTION_SECS;

    let clients = support::clients().await;
    let store = support::store(&clients, "ended").await;
    for i in 0..5 {
        let claim = ClaimRecord::launching(&format!("c-{i}"), "general", vec![format!("pod-{i}")], NOW);
        assert!(store.create_claim(&claim).await.unwrap());
    }
    let launched = ClaimUpdate {
        instance_id: Some("i-0".into()),
        ..ClaimUpdate::default()
    };
    store
        .transition_claim("c-0", ClaimState::Launched, NOW + 1_000, &launched)
        .await
        .unwrap();
    let ended_at = NOW + 60_000;
    store
        .transition_claim("c-0", ClaimState::Terminated, ended_at, &ClaimUpdate::default())
        .await
        .unwrap();
    store
        .transition_claim("c-1", ClaimState::Failed, ended_at, &ClaimUpdate::default())
        .await
        .unwrap();

    // The live read returns the live claims only; the full read and the point reads still see all.
    let live: BTreeSet<String> = store.live_claims().await.unwrap().into_iter().map(|c| c.id).collect();
    assert_eq!(live, BTreeSet::from(["c-2".into(), "c-3".into(), "c-4".into()]));
    assert_eq!(store.claims().await.unwrap().len(), 5);
    let ended = store.get_claim("c-0").await.unwrap().unwrap();
    assert_eq!((ended.state, ended.version), (ClaimState::Terminated, 2));
    assert_eq!(
        store.claim_by_instance("i-0").await.unwrap().map(|c| c.id),
        Some("c-0".into())
    );
    // A late event about the ended claim is stale, as before it moved.
    let late = store
        .transition_claim("c-0", ClaimState::Ready, NOW + 2_000, &ClaimUpdate::default())
        .await
        .unwrap();
    assert!(matches!(late, TransitionOutcome::Stale(_)));

    // A retried decision that re-derives an ended claim's id does not bring it back.
    let again = ClaimRecord::launching("c-0", "general", vec!["pod-0".into()], NOW + 90_000);
    assert!(!store.create_claim(&again).await.unwrap());
    assert_eq!(store.live_claims().await.unwrap().len(), 3);
    assert_eq!(
        store.get_claim("c-0").await.unwrap().unwrap().state,
        ClaimState::Terminated
    );

    // Expiry: the ended item carries the TTL attribute a week after its end, and the table's TTL
    // is enabled on that attribute (DynamoDB deletes it; moto never does).
    let table = store.table_name(Table::Claims);
    let raw = clients
        .dynamodb
        .get_item()
        .table_name(&table)
        .key("cluster", AttributeValue::S(format!("{}#ended", store.cluster())))
        .key("claimId", AttributeValue::S("c-0".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let expires: i64 = raw["expiresAt"].as_n().unwrap().parse().unwrap();
    assert_eq!(expires, ended_at / 1000 + CLAIM_RETENTION_SECS);
    let ttl = clients
        .dynamodb
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("expiresAt"));
    // Live items carry no expiry.
    let live_item = clients
        .dynamodb
        .get_item()
        .table_name(&table)
        .key("cluster", AttributeValue::S(store.cluster().to_string()))
        .key("claimId", AttributeValue::S("c-2".into()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert!(!live_item.contains_key("expiresAt"));

    // A claim stored ended in the live partition (by a release before the move) is left out of
    // the live read and moved to the ended partition.
    let mut legacy = ClaimRecord::launching("c-old", "general", Vec::new(), NOW);
    legacy.state = ClaimState::Terminated;
    legacy.transitions.insert(ClaimState::Terminated, NOW);
    let mut item = std::collections::HashMap::new();
    item.insert("cluster".to_string(), AttributeValue::S(store.cluster().to_string()));
    item.insert("claimId".to_string(), AttributeValue::S("c-old".into()));
    item.insert("pool".to_string(), AttributeValue::S("general".into()));
    item.insert("state".to_string(), AttributeValue::S("terminated".into()));
    item.insert("version".to_string(), AttributeValue::N("0".into()));
    item.insert("pods".to_string(), AttributeValue::L(Vec::new()));
    item.insert(
        "transitions".to_string(),
        AttributeValue::M(std::collections::HashMap::from([(
            "terminated".to_string(),
            AttributeValue::N(NOW.to_string()),
        )])),
    );
    clients
        .dynamodb
        .put_item()
        .table_name(&table)
        .set_item(Some(item))
        .send()
        .await
        .unwrap();
    assert_eq!(store.live_claims().await.unwrap().len(), 3);
    assert_eq!(store.live_claims().await.unwrap().len(), 3);
    let moved = store.get_claim("c-old").await.unwrap().unwrap();
    assert_eq!(moved.state, ClaimState::Terminated);
    assert_eq!(store.claims().await.unwrap().len(), 6, "moved, not copied");
}

/// The memory store's bill (`nodewright bench-scale`, the cost model) sizes claim items from the
/// same layout as this store: checked against the items this store really writes.
#[test]
fn the_memory_bill_sizes_claim_items_as_this_store_writes_them() {
    use nodewright_aws::state::{StateStore, TableNames};
    use nodewright_core::scheduler::InstanceOption;
    use nodewright_handlers::adapters::billing::{CLUSTER_NAME_BYTES, claim_item_bytes};

    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .build();
    let cluster = "c".repeat(CLUSTER_NAME_BYTES);
    let store = StateStore::new(
        aws_sdk_dynamodb::Client::from_conf(config),
        TableNames::new("size").unwrap(),
        cluster,
    )
    .unwrap();

    let fresh = ClaimRecord::launching("nw-7f3a9c", "general", vec!["3f1c-uid".into()], NOW);
    let mut decided = fresh.clone();
    decided.offerings = (0..40)
        .map(|i| InstanceOption {
            name: format!("m5.{i}xlarge"),
            capacity_type: CapacityType::Spot,
            zone: format!("us-east-1{}", ["a", "b", "c"][i % 3]),
            price: 0.0416 * f64::from(i as u32 + 1),
        })
        .collect();
    decided.requested = Some(
        Resources::new()
            .with(Resource::Cpu, 3_500)
            .with(Resource::Memory, 7 << 30),
    );
    decided.scale_requested_at = Some(NOW + 17);
    let mut ready = decided.clone();
    for (state, at) in [
        (ClaimState::Launched, NOW + 1_234),
        (ClaimState::Registered, NOW + 45_678),
        (ClaimState::Ready, NOW + 51_000),
    ] {
        ready.advance(
            state,
            at,
            &ClaimUpdate {
                instance_id: Some("i-0abc1234def567890".into()),
                instance_type: Some("m5.xlarge".into()),
                capacity_type: Some(CapacityType::Spot),
                zone: Some("us-east-1b".into()),
                price_per_hour: Some(0.0731),
                allocatable: Some(
                    Resources::new()
                        .with(Resource::Cpu, 3_920)
                        .with(Resource::Memory, 15_000_000_000),
                ),
                node_name: None,
            },
        );
    }
    ready.pods = (0..30).map(|i| format!("0b9d6c2e-1f4a-4e8b-9c3d-{i:012}")).collect();
    ready.node_class_hash = Some("0123456789abcdef".into());
    ready.node_name = Some("ip-10-0-1-17.ec2.internal".into());
    ready.pods_digest = Some("feedfacecafebeef".into());
    ready.pods_changed_at = Some(NOW + 600_000);
    let mut ended = ready.clone();
    ended.advance(ClaimState::Terminated, NOW + 9_000_000, &ClaimUpdate::default());

    for claim in [&fresh, &decided, &ready, &ended] {
        let real = store.claim_item_bytes(claim).unwrap();
        assert_eq!(claim_item_bytes(claim), real, "claim in {:?}", claim.state);
        assert!(real > 0);
    }
    // The sizes bill differently: a decided claim (offerings) is over 1 KB, an ended one is not
    // read by the live Query at all.
    assert!(claim_item_bytes(&decided) > 1024);
}

/// Provisioning's read: the claims Launching, Launched or Registered, from the state index (three
/// Queries), never the Ready or ended ones.
#[tokio::test]
async fn in_flight_claims_are_read_from_the_state_index() {
    let clients = support::clients().await;
    let store = support::store(&clients, "inflight").await;
    let states = [
        ClaimState::Launching,
        ClaimState::Launched,
        ClaimState::Registered,
        ClaimState::Ready,
        ClaimState::Cordoned,
        ClaimState::Terminated,
    ];
    for (i, to) in states.iter().enumerate() {
        let id = format!("c-{i}");
        let claim = ClaimRecord::launching(&id, "general", vec![format!("pod-{i}")], NOW);
        assert!(store.create_claim(&claim).await.unwrap());
        let update = ClaimUpdate {
            instance_id: Some(format!("i-{i}")),
            ..ClaimUpdate::default()
        };
        // Along the lifecycle to `to`.
        let path = [
            ClaimState::Launched,
            ClaimState::Registered,
            ClaimState::Ready,
            ClaimState::Cordoned,
        ];
        for (k, s) in path.iter().take_while(|s| **s <= *to).enumerate() {
            store
                .transition_claim(&id, *s, NOW + 1_000 * (k as i64 + 1), &update)
                .await
                .unwrap();
        }
        if *to == ClaimState::Terminated {
            store
                .transition_claim(&id, ClaimState::Terminated, NOW + 10_000, &update)
                .await
                .unwrap();
        }
    }
    let mut got: Vec<(String, ClaimState)> = store
        .in_flight_claims()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("c-0".to_string(), ClaimState::Launching),
            ("c-1".to_string(), ClaimState::Launched),
            ("c-2".to_string(), ClaimState::Registered),
        ]
    );
}
