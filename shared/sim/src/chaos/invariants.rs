//! What must hold, checked after every step of a story. Some invariants hold at every instant;
//! some only within a bound (an instance may exist for a moment before its launch is recorded);
//! conservation of the usage counters holds once the story has settled (the reconciler corrects a
//! counter only after it has been still for `USAGE_STABLE_MS`).

use std::collections::{BTreeMap, BTreeSet};

use nodewright_core::model::ClaimState;
use nodewright_core::ports::State;
use nodewright_core::ports::capacity::InstanceSummary;
use nodewright_core::ports::state::Holder;
use nodewright_core::{Pod, Resource};
use nodewright_handlers::Settings;
use nodewright_handlers::adapters::memory::MemoryState;
use nodewright_handlers::consolidation::{LAUNCHING_TIMEOUT_MS, usage_of_claims};

/// How long an instance may run without a live claim owning it: the launch-to-record window plus
/// the reconciler's next passes (the schedule runs every minute; adoption and clean-up of orphans
/// happen there).
pub const ORPHAN_BOUND_MS: i64 = 5 * 60_000;
/// The same while faults are on: a reconciler run reads claims, instances, nodes and groups first
/// and fails if one of those reads does (about one run in three at the stories' fault rate), and
/// the launch event's own retries may all fail too.
pub const ORPHAN_BOUND_MS_FAULTS: i64 = 10 * 60_000;
/// How long past the registration timeout a claim may stay before Ready (the sweep that closes it
/// runs on the next schedule; retries of a failed schedule come a minute and three minutes later).
pub const CLAIM_TIMEOUT_SLACK_MS: i64 = 4 * 60_000;
/// The same while faults are on: a sweep that fails is retried after 1 and 3 minutes, and the next
/// scheduled runs may fail too.
pub const CLAIM_TIMEOUT_SLACK_MS_FAULTS: i64 = 10 * 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invariant {
    /// Every running instance tagged for the cluster is owned by a live claim (within
    /// [`ORPHAN_BOUND_MS`], [`ORPHAN_BOUND_MS_FAULTS`] while faults are on; strictly once
    /// settled).
    InstanceOwned,
    /// No two live claims hold one instance.
    SingleOwner,
    /// No pod is planned onto two claims in flight (capacity launched twice for one pod: an event
    /// taking effect twice, or a retry re-planning what an earlier attempt decided, would do it).
    PodOnOneClaim,
    /// No usage counter below zero.
    UsageNotNegative,
    /// A pool's live claims (in flight included) stay within its limits.
    LimitsHold,
    /// Once settled, a pool's counters equal what its live claims hold.
    UsageConserved,
    /// No claim stays before Ready past the registration timeout (plus the sweep's slack).
    ClaimTimeout,
    /// No reservation held by an ended claim lives longer than its TTL after the claim ended.
    ReservationTtl,
    /// A node with workload pods is drained (an eviction attempted) before Nodewright terminates
    /// its instance (EC2 reclaiming a spot instance aside).
    DrainBeforeTerminate,
    /// Once settled, every pending pod that fits a pool is held by a live claim.
    PendingPodsServed,
}

impl Invariant {
    pub const ALL: [Invariant; 10] = [
        Invariant::InstanceOwned,
        Invariant::SingleOwner,
        Invariant::PodOnOneClaim,
        Invariant::UsageNotNegative,
        Invariant::LimitsHold,
        Invariant::UsageConserved,
        Invariant::ClaimTimeout,
        Invariant::ReservationTtl,
        Invariant::DrainBeforeTerminate,
        Invariant::PendingPodsServed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Invariant::InstanceOwned => "instance-owned-by-a-live-claim",
            Invariant::SingleOwner => "no-instance-held-twice",
            Invariant::PodOnOneClaim => "pod-on-one-claim",
            Invariant::UsageNotNegative => "usage-never-negative",
            Invariant::LimitsHold => "limits-hold-with-in-flight",
            Invariant::UsageConserved => "usage-equals-live-claims",
            Invariant::ClaimTimeout => "claim-within-its-timeout",
            Invariant::ReservationTtl => "reservation-within-ttl-of-holder",
            Invariant::DrainBeforeTerminate => "drain-before-terminate",
            Invariant::PendingPodsServed => "pending-pods-served",
        }
    }
}

/// When a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// During the story, faults on.
    Running,
    /// Faults off, the schedule catching up.
    Settling,
    /// The end: every invariant strictly.
    Settled,
}

/// The violations found now. `pods` is (uid, pending, the latest reason it was reported
/// unschedulable) for every pod that exists.
pub async fn check(
    when: Check,
    now: i64,
    settings: &Settings,
    state: &MemoryState,
    instances: &[InstanceSummary],
    first_seen: &BTreeMap<String, i64>,
    pods: &[(Pod, bool, Option<String>)],
) -> Vec<(Invariant, String)> {
    let mut out = Vec::new();
    let claims = state.claim_records();
    let live: Vec<_> = claims.iter().filter(|c| c.state.is_live()).collect();

    let mut owners: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in &live {
        if let Some(i) = &c.instance_id {
            owners.entry(i.as_str()).or_default().push(c.id.as_str());
        }
    }
    for (instance, ids) in &owners {
        if ids.len() > 1 {
            out.push((
                Invariant::SingleOwner,
                format!("instance {instance} held by claims {}", ids.join(", ")),
            ));
        }
    }
    for i in instances {
        if matches!(i.state.as_str(), "terminated" | "shutting-down") || owners.contains_key(i.instance_id.as_str()) {
            continue;
        }
        let age = now - first_seen.get(&i.instance_id).copied().unwrap_or(now);
        let bound = if when == Check::Running {
            ORPHAN_BOUND_MS_FAULTS
        } else {
            ORPHAN_BOUND_MS
        };
        if when == Check::Settled || age > bound {
            out.push((
                Invariant::InstanceOwned,
                format!(
                    "instance {} ({}, {} s old) has no live claim",
                    i.instance_id,
                    i.state,
                    age / 1000
                ),
            ));
        }
    }

    let mut active: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for c in live.iter().filter(|c| c.state.is_in_flight()) {
        for p in &c.pods {
            active.entry(p.as_str()).or_default().insert(c.id.as_str());
        }
    }
    for (pod, holders) in &active {
        if holders.len() > 1 {
            out.push((
                Invariant::PodOnOneClaim,
                format!(
                    "pod {pod} on {} claims in flight: {}",
                    holders.len(),
                    holders
                        .iter()
                        .filter_map(|id| live.iter().find(|c| c.id == *id))
                        .map(|c| format!(
                            "{} ({} in {}, since +{} s, pods {})",
                            c.id,
                            c.state.as_str(),
                            c.pool,
                            (c.entered(ClaimState::Launching).unwrap_or(now) - now) / 1000,
                            c.pods.join(",")
                        ))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ));
        }
    }

    let pools = settings.pools();
    for pool in &pools.config.node_pools {
        let snapshot = state.usage_snapshot(&pool.name).await;
        if let Ok(s) = &snapshot
            && s.negative
        {
            out.push((
                Invariant::UsageNotNegative,
                format!("pool {} has a counter below zero", pool.name),
            ));
        }
        let held = usage_of_claims(&claims, &pool.name, &pools.all_types);
        if let Some(held) = held {
            if let Some(cpu_limit) = pool.limits.of(Resource::Cpu)
                && held.cpu_milli > cpu_limit
            {
                out.push((
                    Invariant::LimitsHold,
                    format!(
                        "pool {}: live claims hold {} mCPU over the {} mCPU limit",
                        pool.name, held.cpu_milli, cpu_limit
                    ),
                ));
            }
            if let Some(nodes) = pool.limits.nodes
                && held.nodes > nodes
            {
                out.push((
                    Invariant::LimitsHold,
                    format!(
                        "pool {}: {} live claims over the {nodes}-node limit",
                        pool.name, held.nodes
                    ),
                ));
            }
            if when == Check::Settled
                && let Ok(s) = &snapshot
                && s.usage != held
            {
                out.push((
                    Invariant::UsageConserved,
                    format!(
                        "pool {} counts {:?} (version {}, checked {:?}), its live claims hold {held:?}",
                        pool.name, s.usage, s.version, s.checked
                    ),
                ));
            }
        }
    }

    for c in &live {
        if c.entered(ClaimState::Ready).is_some() || c.state > ClaimState::Ready {
            continue;
        }
        let decided = c.entered(ClaimState::Launching).unwrap_or(now);
        // A claim with no instance yet may wait for its decision's retry (LAUNCHING_TIMEOUT_MS);
        // one with an instance for its node (the registration timeout, from the instance's
        // launch: an Auto Scaling claim may get its instance long after it was decided).
        let (since, timeout) = if c.instance_id.is_none() {
            (decided, LAUNCHING_TIMEOUT_MS.max(settings.registration_timeout_ms))
        } else {
            (
                c.entered(ClaimState::Launched).unwrap_or(decided),
                settings.registration_timeout_ms,
            )
        };
        let slack = if when == Check::Running {
            CLAIM_TIMEOUT_SLACK_MS_FAULTS
        } else {
            CLAIM_TIMEOUT_SLACK_MS
        };
        if now - since > timeout + slack {
            out.push((
                Invariant::ClaimTimeout,
                format!(
                    "claim {} ({}, instance {}) still {} {} s after launching (timeout {} s); transitions {:?}",
                    c.id,
                    c.backing,
                    c.instance_id.as_deref().unwrap_or("none"),
                    c.state.as_str(),
                    (now - since) / 1000,
                    timeout / 1000,
                    c.transitions
                        .iter()
                        .map(|(s, at)| format!("{} +{} s", s.as_str(), (at - since) / 1000))
                        .collect::<Vec<_>>()
                ),
            ));
        }
    }

    let reservations = state.reservations(now).await.unwrap_or_default();
    {
        let ended: BTreeMap<&str, i64> = claims
            .iter()
            .filter(|c| !c.state.is_live())
            .filter_map(|c| Some((c.id.as_str(), c.transitions.values().max().copied()?)))
            .collect();
        for r in &reservations {
            if let Holder::Claim(id) = &r.holder
                && let Some(end) = ended.get(id.as_str())
                && now - end > settings.reservation_ttl_secs * 1000
            {
                out.push((
                    Invariant::ReservationTtl,
                    format!(
                        "pod {} still reserved by claim {id}, which ended {} s ago",
                        r.pod_uid,
                        (now - end) / 1000
                    ),
                ));
            }
        }
    }

    if when == Check::Settled {
        let pods_of_live: BTreeSet<&str> = live.iter().flat_map(|c| c.pods.iter().map(String::as_str)).collect();
        // A pod still reserved by an invocation that died waits for the reservation's TTL (the
        // reservation invariant bounds that); any other pending pod must be on its way.
        // So does one whose reservation ran out since the last schedule (the next one takes it).
        let all_reservations = state.reservation_records();
        let reserved: BTreeSet<&str> = all_reservations
            .iter()
            .filter(|r| now - r.expires_at * 1000 < 2 * 60_000)
            .map(|r| r.pod_uid.as_str())
            .collect();
        // A pod no pool may take without passing its limit stays pending, as in Karpenter (the
        // scheduler said so, or plainly no pool has the room); anything else must be on its way.
        let room_for = |pod: &Pod| {
            pools.config.node_pools.iter().any(|p| {
                let selected = pod.node_selector.iter().all(|(k, v)| p.labels.get(k) == Some(v));
                let used = state.usage(&p.name).cpu_milli;
                selected
                    && p.limits
                        .of(Resource::Cpu)
                        .is_none_or(|limit| used + pod.requests.cpu_milli() <= limit)
            })
        };
        let unserved: Vec<String> = pods
            .iter()
            .filter(|(pod, pending, _)| {
                *pending && !pods_of_live.contains(pod.uid.as_str()) && !reserved.contains(pod.uid.as_str())
            })
            .filter(|(pod, _, reason)| room_for(pod) && !reason.as_deref().is_some_and(|r| r.contains("limit")))
            .map(|(pod, _, reason)| match reason {
                Some(r) => format!("{} ({r})", pod.uid),
                None => pod.uid.clone(),
            })
            .collect();
        if !unserved.is_empty() {
            out.push((
                Invariant::PendingPodsServed,
                format!(
                    "{} pending pods on no live claim: {}",
                    unserved.len(),
                    unserved.join(", ")
                ),
            ));
        }
    }
    out
}
