//! Provisioning: pods in, capacity out. Shared by `pod-pending` (the watcher's batches),
//! `spot-interruption` (replacements) and `consolidation` (the sweep of pods the events missed).
//!
//! Order matters for crash safety. Pods are reserved first (a conditional write per pod: a pod held
//! by a concurrent invocation is skipped). For each planned claim the pool's usage is charged
//! (conditional on its limits), then the claim record is written in `launching`, then the pods'
//! reservations move to the claim, then the instance is launched with the claim id as ClientToken
//! and tag. An invocation that dies anywhere leaves a record the next run can finish: a retried event
//! derives the same claim ids and adopts the instance; the consolidation sweep adopts or times out
//! the rest. Anything that fails releases its pods so a later event or the sweep retries them.

use std::collections::{BTreeMap, HashMap, HashSet};

use nodewright_core::model::claim_launch::ClaimLaunchRequest;
use nodewright_core::model::{ClaimState, HostPort, add_host_ports};
use nodewright_core::nodepool::PoolBacking;
use nodewright_core::ports::capacity::{LaunchOutcome, fleet};
use nodewright_core::ports::state::{ClaimRecord, ClaimUpdate, Holder, TransitionOutcome, UsageDecision, UsageDelta};
use nodewright_core::ports::{AwsError, EpochMillis};
use nodewright_core::scheduler::{ClaimPlan, Input, InstanceOption, Options, PoolUsed, schedule};
use nodewright_core::{CapacityType, InstanceType, Node, NodePool, Pod, Resource, Resources};
use sha2::{Digest, Sha256};

use crate::event::Envelope;
use crate::outcome::{Action, Outcome};
use crate::ports::{Capacity, ClaimLaunch, ClusterApi, State};
use crate::{Deps, Error, Function, Result, once};

/// Launches run this many at a time (CreateFleet takes ~1 s; a 1,000-pod burst plans tens of claims).
const LAUNCH_CONCURRENCY: usize = 8;

/// Reservation writes in flight at once: each is a conditional DynamoDB round trip, and a 100-pod
/// batch taking them one at a time waited a hundred round trips before and after its launch.
const RESERVATION_WRITES_IN_FLIGHT: usize = 16;

/// Moves each pod's reservation from `from` to `to`, [`RESERVATION_WRITES_IN_FLIGHT`] at a time;
/// whether each moved (false: `from` no longer held it), in `uids` order. Every write is tried;
/// the first error is returned.
async fn transfer_pods<'a, S: State>(
    state: &S,
    uids: impl IntoIterator<Item = &'a str>,
    from: &Holder,
    to: &Holder,
    now: EpochMillis,
    ttl: i64,
) -> Result<Vec<bool>> {
    let writes: Vec<_> = uids
        .into_iter()
        .map(|u| state.transfer_pod(u, from, to, now, ttl))
        .collect();
    let moved: std::result::Result<Vec<bool>, AwsError> = crate::in_order(writes, RESERVATION_WRITES_IN_FLIGHT)
        .await
        .into_iter()
        .collect();
    Ok(moved?)
}

/// Releases each pod `holder` still holds (a pod someone else took is left alone), as
/// [`transfer_pods`] writes; each write's result, in `uids` order.
async fn release_each<'a, S: State>(
    state: &S,
    uids: impl IntoIterator<Item = &'a str>,
    holder: &Holder,
) -> Vec<std::result::Result<bool, AwsError>> {
    let writes: Vec<_> = uids.into_iter().map(|u| state.release_pod(u, holder)).collect();
    crate::in_order(writes, RESERVATION_WRITES_IN_FLIGHT).await
}

/// [`release_each`], counting the pods released; the first error is returned.
pub(crate) async fn release_pods<'a, S: State>(
    state: &S,
    uids: impl IntoIterator<Item = &'a str>,
    holder: &Holder,
) -> Result<usize> {
    let mut released = 0;
    for r in release_each(state, uids, holder).await {
        released += usize::from(r?);
    }
    Ok(released)
}

/// An offering to keep out of this plan (the one being interrupted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclude {
    pub capacity_type: CapacityType,
    pub instance_type: String,
    pub zone: String,
}

/// A durable claim id for one decision: the invocation's holder, the pool and the claim's pods. A
/// retry that makes the same decision derives the same id, so its launch adopts the first
/// attempt's instance (the id is the ClientToken and the claim tag); a retry after partial
/// progress plans the pods left over, a different decision with a different id (the plan's own
/// numbering restarts at "claim-1" and must not name it).
pub fn claim_id(holder: &Holder, pool: &str, pods: &[String]) -> String {
    let mut sorted: Vec<&str> = pods.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let mut hasher = Sha256::new();
    hasher.update(holder.encode().as_bytes());
    hasher.update(b"|");
    hasher.update(pool.as_bytes());
    for u in sorted {
        hasher.update(b"|");
        hasher.update(u.as_bytes());
    }
    let hex: String = hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("nc-{hex}")
}

/// Instance types with the ICE cache (and `exclude`) applied.
async fn available_types<S: State>(
    state: &S,
    types: &[InstanceType],
    exclude: &[Exclude],
    now: EpochMillis,
) -> Result<Vec<InstanceType>> {
    let unavailable = state.unavailable_offerings(now).await?;
    let blocked: HashSet<(CapacityType, &str, &str)> = unavailable
        .iter()
        .map(|u| (u.capacity_type, u.instance_type.as_str(), u.zone.as_str()))
        .chain(
            exclude
                .iter()
                .map(|e| (e.capacity_type, e.instance_type.as_str(), e.zone.as_str())),
        )
        .collect();
    if blocked.is_empty() {
        return Ok(types.to_vec());
    }
    // Quota entries stand for every offering of a quota class and capacity type.
    let quotas: Vec<(CapacityType, &str, &str)> = blocked.iter().filter(|b| b.2 == fleet::ANY).copied().collect();
    Ok(types
        .iter()
        .map(|t| {
            let mut t = t.clone();
            for o in &mut t.offerings {
                let offering = (o.capacity_type, t.name.as_str(), o.zone.as_str());
                if blocked.contains(&offering) || quotas.iter().any(|q| fleet::covers(*q, offering)) {
                    o.available = false;
                }
            }
            t
        })
        .collect())
}

/// The usage counters of the pools that have limits, for the scheduler: without them it sees only
/// the in-flight claims it may pack onto, plans pods onto a pool that is already full, and the
/// charge is then refused (found by `nodewright chaos`: pods that another pool could take stayed
/// pending). A counter that cannot be read is left out; the conditional charge still guards the
/// limit.
async fn limited_pools_usage<S: State, C: Capacity, K: ClusterApi>(deps: &Deps<S, C, K>) -> Vec<PoolUsed> {
    let pools = deps.settings.pools();
    let limited: Vec<&NodePool> = pools
        .config
        .node_pools
        .iter()
        .filter(|p| !p.limits.is_empty())
        .collect();
    // One read per limited pool, concurrently (the decision waits for the slowest, not the sum).
    let reads = limited.iter().map(|p| deps.state.usage_snapshot(&p.name));
    let snapshots = futures::future::join_all(reads).await;
    let mut out = Vec::new();
    for (pool, snapshot) in limited.into_iter().zip(snapshots) {
        match snapshot {
            Ok(s) => out.push(PoolUsed {
                pool: pool.name.clone(),
                resources: Resources::new()
                    .with(Resource::Cpu, s.usage.cpu_milli)
                    .with(Resource::Memory, s.usage.memory_bytes),
                nodes: s.usage.nodes,
            }),
            Err(e) => {
                tracing::warn!(pool = %pool.name, error = %e, "pool usage unread; the charge will check the limit")
            }
        }
    }
    out
}

/// In-flight claims as scheduler nodes: their instance type's allocatable, minus what is planned on
/// them (one synthetic pod carrying the summed requests).
fn in_flight_nodes(claims: &[ClaimRecord]) -> Vec<Node> {
    claims
        .iter()
        .filter(|c| matches!(c.state, ClaimState::Launched | ClaimState::Registered))
        .filter_map(|c| {
            let mut n = Node::new(&c.id, c.instance_type.as_deref()?, c.zone.as_deref()?);
            n.pool = Some(c.pool.clone());
            n.capacity_type = c.capacity_type.unwrap_or(CapacityType::OnDemand);
            n.allocatable = c.allocatable.clone();
            n.in_flight = true;
            n.price = c.price_per_hour;
            n.labels = c.labels.clone();
            if let Some(r) = &c.requested {
                n.pods.push(Pod {
                    uid: format!("{}-planned", c.id),
                    name: format!("{}-planned", c.id),
                    namespace: "nodewright".into(),
                    requests: r.clone(),
                    host_ports: c.host_ports.clone(),
                    node_name: Some(c.id.clone()),
                    ..Default::default()
                });
            }
            Some(n)
        })
        .collect()
}

/// The workload pods bound to `nodes`, unbound again so they can be planned elsewhere.
pub(crate) fn workload_pods_of(bound: &[Pod], nodes: &[&str]) -> Vec<Pod> {
    bound
        .iter()
        .filter(|p| p.node_name.as_deref().is_some_and(|n| nodes.contains(&n)) && !p.goes_with_node())
        .map(|p| Pod {
            node_name: None,
            ..p.clone()
        })
        .collect()
}

/// Frees pods being re-planned off nodes that are going away from the claims that launched those
/// nodes. A claim keeps its pods reserved until the reservations expire, so without this an
/// interruption or replacement soon after launch would skip the very pods it must move. Conditional
/// on the holder: a pod another invocation already took is left alone.
pub(crate) async fn release_from_claims<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    pods: &[Pod],
    claims: &[&str],
) -> Result<()> {
    for claim in claims {
        let holder = Holder::Claim((*claim).to_string());
        release_pods(&deps.state, pods.iter().map(|p| p.uid.as_str()), &holder).await?;
    }
    Ok(())
}

/// Provisions capacity for `pods` on behalf of `holder` (the invocation).
pub async fn provision<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    pods: Vec<Pod>,
    holder: &Holder,
    exclude: &[Exclude],
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let settings = &deps.settings;
    let ttl = settings.reservation_ttl_secs;
    // One entry per pod; bound pods are the scheduler's, not ours.
    let mut seen = HashSet::new();
    let pods: Vec<Pod> = pods
        .into_iter()
        .filter(|p| p.node_name.is_none() && seen.insert(p.uid.clone()))
        .collect();
    if pods.is_empty() {
        return Ok(());
    }
    let uids: Vec<String> = pods.iter().map(|p| p.uid.clone()).collect();
    let mut won: HashSet<String> = deps
        .state
        .reserve_pods(&uids, holder, now, ttl)
        .await?
        .into_iter()
        .collect();
    // Only the claims in flight: what is packed onto or resumed (Ready nodes are never packed
    // onto here, and pool limits are kept by the usage counters), so the read follows the
    // launches under way, not the cluster's size.
    let claims = deps.state.in_flight_claims().await?;
    let mut resumed = resume_dead_attempts(deps, holder, &uids, &claims, now, out).await?;
    won.retain(|u| !resumed.contains(u));
    let adopted = finish_packing(deps, holder, &won, &claims, now, out).await?;
    won.retain(|u| !adopted.contains(u));
    resumed.extend(adopted);
    let skipped: Vec<String> = uids
        .iter()
        .filter(|u| !won.contains(*u) && !resumed.contains(*u))
        .cloned()
        .collect();
    if !skipped.is_empty() {
        out.push(Action::SkippedPods {
            pods: skipped,
            reason: "reserved by another invocation or claim".into(),
        });
    }
    let pods: Vec<Pod> = pods.into_iter().filter(|p| won.contains(&p.uid)).collect();
    if pods.is_empty() {
        return Ok(());
    }
    out.push(Action::Reserved { pods: pods.len() });

    let result = plan_and_launch(deps, &pods, &claims, holder, exclude, now, out).await;
    if let Err(e) = &result {
        // Whatever this invocation still holds goes back for a retry.
        let released = release_each(&deps.state, pods.iter().map(|p| p.uid.as_str()), holder)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(true)))
            .count();
        tracing::warn!(error = %e, released, "provisioning failed; reservations released");
    }
    result
}

/// Claims an earlier attempt of this invocation wrote but did not launch, or launched without
/// recording it (it died, or a call failed, in between): launched now as they were decided, from
/// the offerings the claim recorded, with the claim id as ClientToken and tag, so an instance the
/// first attempt did create is adopted, not doubled. A claim is ours when this holder derives its
/// id from the claim's own pool and pods; another invocation's claim is never touched. The
/// batch's pods still held by this invocation move to the claim. Returns the pods of the claims
/// resumed (not planned again).
async fn resume_dead_attempts<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    holder: &Holder,
    batch: &[String],
    claims: &[ClaimRecord],
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<HashSet<String>> {
    let batch: HashSet<&str> = batch.iter().map(String::as_str).collect();
    let ttl = deps.settings.reservation_ttl_secs;
    let types = &deps.settings.pools().all_types;
    let mut resumed = HashSet::new();
    for c in claims {
        // The in-flight claims come from an eventually consistent index: a claim this holder
        // might resume is read again, consistently, before anything is done with it.
        if c.state != ClaimState::Launching
            || c.instance_id.is_some()
            || !c.pods.iter().any(|u| batch.contains(u.as_str()))
            || claim_id(holder, &c.pool, &c.pods) != c.id
        {
            continue;
        }
        let Some(c) = deps.state.get_claim(&c.id).await? else {
            continue;
        };
        let c = &c;
        // A fleet claim launches from its recorded offerings; an Auto Scaling claim whose raise
        // was not recorded raises its group.
        let fleet = c.backing == "fleet" && !c.offerings.is_empty();
        let group = c
            .backing
            .strip_prefix("asg:")
            .filter(|_| c.scale_requested_at.is_none());
        if c.state != ClaimState::Launching
            || c.instance_id.is_some()
            || !(fleet || group.is_some())
            || !c.pods.iter().any(|u| batch.contains(u.as_str()))
            || claim_id(holder, &c.pool, &c.pods) != c.id
        {
            continue;
        }
        let pools = deps.settings.pools();
        let Some(pool) = pools.config.node_pools.iter().find(|p| p.name == c.pool) else {
            continue;
        };
        let claim_holder = Holder::Claim(c.id.clone());
        transfer_pods(
            &deps.state,
            c.pods.iter().map(String::as_str),
            holder,
            &claim_holder,
            now,
            ttl,
        )
        .await?;
        resumed.extend(c.pods.iter().cloned());
        out.push(Action::ResumedAttempt {
            claim: c.id.clone(),
            pods: c.pods.len(),
        });
        if let Some(group) = group {
            let charged = usage_of_pool_types(pool, types);
            let mut actions = Vec::new();
            raise_and_report(deps, pool, group, &c.id, &c.pods, &charged, holder, now, &mut actions).await?;
            out.actions.extend(actions);
            continue;
        }
        let mut actions = Vec::new();
        launch_recorded(deps, &pools, pool, c, now, &mut actions).await?;
        out.actions.extend(actions);
    }
    Ok(resumed)
}

/// Launches a fleet claim written in `launching` from the offerings it recorded: recorded as
/// launched with its usage settled to the type launched, or failed with its usage and pods
/// released. What a resumed attempt and a handed-off launch both do.
async fn launch_recorded<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    pools: &crate::settings::Pools,
    pool: &NodePool,
    c: &ClaimRecord,
    now: EpochMillis,
    actions: &mut Vec<Action>,
) -> Result<()> {
    let types = &pools.all_types;
    let charged = usage_of_options(&c.offerings, types);
    let launch = ClaimLaunch {
        claim_id: c.id.clone(),
        pool: pool.clone(),
        node_class: node_class_of(pools, pool),
        offerings: c.offerings.clone(),
        labels: c.labels.clone(),
    };
    match launch_offerings(deps, &launch, now).await? {
        Ok(outcome) => {
            if record_launch(deps, pool, &c.id, &outcome, types, c.pods.len(), now, actions).await? {
                settle_usage(deps, pool, &charged, &outcome.instance_type, types).await?;
            }
        }
        Err(e) => fail_claim(deps, pool, &c.id, &charged, &c.pods, now, &e.to_string(), actions).await?,
    }
    Ok(())
}

/// `state-change`'s side of a hand-off: launches the claim a `Claim Launch` event names, at most
/// once per claim (the idempotency key is the claim's, so a second request for it, from a retried
/// decision or a redelivery, is a replay). A claim that is gone, has moved on or has an instance
/// already launches nothing: the request was late or repeated.
pub async fn launch_handed_off<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    envelope: &Envelope,
    request: ClaimLaunchRequest,
    now: EpochMillis,
) -> Result<Outcome> {
    let function = Function::StateChange;
    if request.cluster != deps.settings.cluster {
        return Ok(Outcome::ignored(
            function.name(),
            &envelope.id,
            format!(
                "launch request for cluster {:?}; this is {:?}",
                request.cluster, deps.settings.cluster
            ),
        ));
    }
    request.check_times(now).map_err(Error::invalid_event)?;
    let outcome = launch_once(deps, function, &request.claim, &envelope.id, now).await?;
    if outcome.launched() > 0 {
        tracing::info!(
            claim = %request.claim,
            requested_at = request.requested_at,
            waited_ms = now - request.requested_at,
            "handed-off launch done"
        );
    }
    Ok(outcome)
}

/// Launches a `launching` fleet claim from its record, at most once per claim whoever asks (a
/// `Claim Launch`, or consolidation finding a claim whose request never arrived): the idempotency
/// key is the claim's. A concurrent launch of the same claim fails with [`Error::Busy`].
pub(crate) async fn launch_once<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    function: Function,
    claim: &str,
    event_id: &str,
    now: EpochMillis,
) -> Result<Outcome> {
    let key = format!("launch/{claim}");
    once(deps, function, &key, event_id, now, |mut out| async move {
        let id = claim;
        let Some(claim) = deps.state.get_claim(id).await? else {
            out.push(Action::Ignored {
                reason: format!("claim {id} does not exist"),
            });
            return Ok(out);
        };
        if claim.state != ClaimState::Launching || claim.instance_id.is_some() {
            out.push(Action::Ignored {
                reason: format!(
                    "claim {id} is {} already; nothing to launch",
                    if claim.instance_id.is_some() && claim.state == ClaimState::Launching {
                        "holding an instance"
                    } else {
                        claim.state.as_str()
                    }
                ),
            });
            return Ok(out);
        }
        if claim.backing != "fleet" || claim.offerings.is_empty() {
            out.push(Action::Ignored {
                reason: format!("claim {id} is not a fleet claim with recorded offerings"),
            });
            return Ok(out);
        }
        let pools = deps.settings.pools();
        let Some(pool) = pools.config.node_pools.iter().find(|p| p.name == claim.pool) else {
            // Its pods stay held by the claim until the sweep times it out and releases them.
            out.push(Action::Ignored {
                reason: format!(
                    "claim {id}'s NodePool {} no longer exists; the sweep ends the claim",
                    claim.pool
                ),
            });
            return Ok(out);
        };
        let mut actions = Vec::new();
        launch_recorded(deps, &pools, pool, &claim, now, &mut actions).await?;
        out.actions.extend(actions);
        Ok(out)
    })
    .await
}

/// Pods an earlier decision already planned onto a claim still in flight (its record lists them and
/// was charged and sized for them) but that the claim does not hold: the decision's invocation died
/// or lost a response between growing the claim's record and moving the reservations. They move to
/// that claim now instead of being planned a second time (capacity launched twice for one pod).
/// A claim already Ready is not adopted onto: a pod still pending while such a node is up did not
/// fit there, and is planned again.
async fn finish_packing<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    holder: &Holder,
    won: &HashSet<String>,
    claims: &[ClaimRecord],
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<HashSet<String>> {
    let ttl = deps.settings.reservation_ttl_secs;
    let mut adopted = HashSet::new();
    for c in claims.iter().filter(|c| c.state.is_in_flight()) {
        let mine: Vec<&String> = c
            .pods
            .iter()
            .filter(|u| won.contains(*u) && !adopted.contains(*u))
            .collect();
        if mine.is_empty() {
            continue;
        }
        let to = Holder::Claim(c.id.clone());
        let mut moved = 0;
        let results = transfer_pods(&deps.state, mine.iter().map(|u| u.as_str()), holder, &to, now, ttl).await?;
        for (u, took) in mine.iter().zip(results) {
            if took {
                adopted.insert((*u).clone());
                moved += 1;
            }
        }
        if moved > 0 {
            out.push(Action::PackedOntoClaim {
                claim: c.id.clone(),
                pods: moved,
            });
        }
    }
    Ok(adopted)
}

async fn plan_and_launch<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    pods: &[Pod],
    claims: &[ClaimRecord],
    holder: &Holder,
    exclude: &[Exclude],
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let settings = &deps.settings;
    let pools = settings.pools();
    let ttl = settings.reservation_ttl_secs;
    let nodes: Vec<Node> = in_flight_nodes(claims)
        .into_iter()
        .filter(|n| {
            !exclude
                .iter()
                .any(|e| e.instance_type == n.instance_type && e.zone == n.zone && e.capacity_type == n.capacity_type)
        })
        .collect();
    let types = available_types(&deps.state, &pools.instance_types, exclude, now).await?;
    let daemonsets = deps.daemonsets.current(deps.cluster.as_ref(), now).await?;
    let pool_usage = limited_pools_usage(deps).await;
    let plan = schedule(
        &Input {
            pods,
            nodes: &nodes,
            pools: &pools.config.node_pools,
            instance_types: &types,
            daemonsets: &daemonsets,
            pool_usage: &pool_usage,
        },
        &Options::default(),
    );
    let by_uid: HashMap<&str, &Pod> = pods.iter().map(|p| (p.uid.as_str(), p)).collect();
    if let Some(cost) = plan.cost {
        tracing::info!(
            pods = pods.len(),
            claims = plan.claims.len(),
            bound_to_existing = plan.bindings.len(),
            unschedulable = plan.unschedulable.len(),
            price_per_hour = cost.price,
            lower_bound_per_hour = cost.lower_bound,
            gap = cost.gap,
            "decision: plan priced against its lower bound"
        );
        out.push(Action::Planned {
            pods: pods.len(),
            claims: plan.claims.len(),
            price_per_hour: cost.price,
            lower_bound_per_hour: cost.lower_bound,
            gap: cost.gap,
        });
    }

    if !plan.relaxed.is_empty() {
        let examples: Vec<String> = plan
            .relaxed
            .iter()
            .take(5)
            .map(|r| format!("{}: {}", r.name, r.relaxations.join("; ")))
            .collect();
        tracing::info!(
            pods = plan.relaxed.len(),
            examples = ?examples,
            "decision: preferences relaxed to place pods (Karpenter's order)"
        );
    }

    // Pods nothing can take: released (a later event may find capacity, e.g. after a limit rises).
    release_pods(&deps.state, plan.unschedulable.iter().map(|u| u.pod.as_str()), holder).await?;
    for u in &plan.unschedulable {
        out.events.extend(crate::events::unschedulable(
            by_uid.get(u.pod.as_str()).copied(),
            &u.name,
            &u.reason,
        ));
        out.push(Action::Unschedulable {
            pod: u.name.clone(),
            reason: u.reason.clone(),
        });
    }

    // Pods packed onto in-flight claims: the claim's record grows (conditional on its version).
    let mut onto: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for b in &plan.bindings {
        onto.entry(b.node.as_str()).or_default().push(b.pod.as_str());
    }
    for (claim_id, uids) in onto {
        let Some(mut claim) = claims.iter().find(|c| c.id == claim_id).cloned() else {
            release_pods(&deps.state, uids, holder).await?;
            continue;
        };
        let expected = claim.version;
        let mut requested = claim.requested.clone().unwrap_or_default();
        for u in &uids {
            if let Some(p) = by_uid.get(u) {
                requested.add(&p.requests);
            }
            claim.pods.push((*u).to_string());
        }
        claim.requested = Some(requested);
        add_host_ports(
            &mut claim.host_ports,
            uids.iter().filter_map(|u| by_uid.get(u)).flat_map(|p| &p.host_ports),
        );
        claim.version += 1;
        if deps.state.replace_claim(&claim, expected).await? {
            let to = Holder::Claim(claim.id.clone());
            transfer_pods(&deps.state, uids.iter().copied(), holder, &to, now, ttl).await?;
            out.events.extend(crate::events::for_packed(&by_uid, &claim.id, &uids));
            out.push(Action::PackedOntoClaim {
                claim: claim.id.clone(),
                pods: uids.len(),
            });
        } else {
            // The claim changed under us (another batch packed onto it); let a retry re-plan.
            release_pods(&deps.state, uids, holder).await?;
        }
    }

    // Futures built eagerly (not in a stream closure), so the whole handler future stays Send.
    let mut launches = Vec::with_capacity(plan.claims.len());
    for c in &plan.claims {
        let mut host_ports: Vec<HostPort> = Vec::new();
        add_host_ports(
            &mut host_ports,
            c.pods
                .iter()
                .filter_map(|u| by_uid.get(u.as_str()))
                .flat_map(|p| &p.host_ports),
        );
        launches.push(launch_claim(deps, c, host_ports, &types, holder, now));
    }
    let results: Vec<Result<Vec<Action>>> = crate::in_order(launches, LAUNCH_CONCURRENCY).await;
    let mut first_error = None;
    for (c, r) in plan.claims.iter().zip(results) {
        match r {
            Ok(actions) => {
                let claim_pods: Vec<&Pod> = c.pods.iter().filter_map(|u| by_uid.get(u.as_str()).copied()).collect();
                out.events.extend(crate::events::for_claim(&claim_pods, &actions));
                out.actions.extend(actions);
            }
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The pool's EC2NodeClass in `pools`.
fn node_class_of(pools: &crate::settings::Pools, pool: &NodePool) -> Option<nodewright_core::nodepool::Ec2NodeClass> {
    let name = pool.node_class.as_deref().unwrap_or("default");
    pools.config.node_classes.iter().find(|c| c.name == name).cloned()
}

/// What an Auto Scaling pool's claim was charged: the largest of the pool's instance types (the
/// group picks the type).
pub(crate) fn usage_of_pool_types(pool: &NodePool, types: &[InstanceType]) -> UsageDelta {
    let mut most = Resources::new();
    for t in types.iter().filter(|t| pool.admits_type(t)) {
        most.max_with(&t.capacity);
    }
    UsageDelta::of(&most, 1)
}

/// The pool usage one claim may add: the largest capacity among its options, so limits hold
/// whichever instance type the fleet picks.
fn usage_of_options(options: &[nodewright_core::scheduler::InstanceOption], types: &[InstanceType]) -> UsageDelta {
    let mut most = Resources::new();
    for o in options {
        if let Some(t) = types.iter().find(|t| t.name == o.name) {
            most.max_with(&t.capacity);
        }
    }
    UsageDelta::of(&most, 1)
}

/// The offerings a claim launches with: the plan's (each type's cheapest allowed offering), then,
/// when the claim may run on-demand, the on-demand offering (cheapest of the claim's zones) of each
/// type the plan chose spot for. The fleet tries spot first and falls back to these in the same
/// launch when spot has no capacity or the account's spot quota is spent; without them a mixed
/// pool's claim failed, and its pods waited for a re-plan that chose spot again once the ICE
/// cache forgot (found by `nodewright chaos` with a spot quota).
fn with_on_demand_fallback(plan: &ClaimPlan, types: &[InstanceType]) -> Vec<InstanceOption> {
    let mut offerings = plan.instance_types.clone();
    if !plan.capacity_types.contains(&CapacityType::OnDemand) {
        return offerings;
    }
    for o in plan
        .instance_types
        .iter()
        .filter(|o| o.capacity_type == CapacityType::Spot)
    {
        let Some(t) = types.iter().find(|t| t.name == o.name) else {
            continue;
        };
        let on_demand = t
            .offerings
            .iter()
            .filter(|x| x.available && x.capacity_type == CapacityType::OnDemand && plan.zones.contains(&x.zone))
            .min_by(|a, b| a.price.total_cmp(&b.price).then_with(|| a.zone.cmp(&b.zone)));
        let Some(x) = on_demand else { continue };
        let fallback = InstanceOption {
            name: t.name.clone(),
            capacity_type: CapacityType::OnDemand,
            zone: x.zone.clone(),
            price: x.price,
        };
        if !offerings.contains(&fallback) {
            offerings.push(fallback);
        }
    }
    offerings
}

fn log_decision(plan: &ClaimPlan, claim: &str) {
    let options: Vec<String> = plan
        .instance_types
        .iter()
        .take(5)
        .map(|o| format!("{}/{}/{}@{:.4}", o.name, o.zone, o.capacity_type, o.price))
        .collect();
    tracing::info!(
        claim,
        pool = %plan.pool,
        pods = plan.pods.len(),
        requests = ?plan.requests,
        price_per_hour = plan.price,
        options_count = plan.instance_types.len(),
        cheapest = ?options,
        "decision: cheapest compatible offerings for the claim"
    );
}

async fn launch_claim<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    plan: &ClaimPlan,
    host_ports: Vec<HostPort>,
    types: &[InstanceType],
    holder: &Holder,
    now: EpochMillis,
) -> Result<Vec<Action>> {
    let mut actions = Vec::new();
    let ttl = deps.settings.reservation_ttl_secs;
    let id = claim_id(holder, &plan.pool, &plan.pods);
    log_decision(plan, &id);
    let Some(pool) = deps
        .settings
        .pools()
        .config
        .node_pools
        .iter()
        .find(|p| p.name == plan.pool)
        .cloned()
    else {
        return Ok(actions);
    };
    let release_all = |actions: &mut Vec<Action>, h: Holder| {
        actions.push(Action::ReservationsReleased {
            holder: h.encode(),
            pods: plan.pods.len(),
        });
    };
    // An Auto Scaling group picks the type itself: charged (and released) as its largest.
    let delta = match pool.backing {
        PoolBacking::AutoScalingGroup { .. } => usage_of_pool_types(&pool, &deps.settings.pools().all_types),
        _ => usage_of_options(&plan.instance_types, types),
    };
    if let UsageDecision::Denied {
        resource,
        used,
        requested,
        limit,
    } = deps.state.try_add_usage(&pool.name, &delta, &pool.limits).await?
    {
        release_pods(&deps.state, plan.pods.iter().map(String::as_str), holder).await?;
        actions.push(Action::AtLimit {
            pool: pool.name.clone(),
            resource: resource.into(),
            used,
            requested,
            limit,
        });
        release_all(&mut actions, holder.clone());
        return Ok(actions);
    }

    let offerings = with_on_demand_fallback(plan, types);
    let mut record = ClaimRecord::launching(&id, &pool.name, plan.pods.clone(), now);
    record.offerings = offerings
        .iter()
        .take(nodewright_core::ports::state::MAX_STORED_OFFERINGS)
        .cloned()
        .collect();
    let mut requested = plan.requests.clone();
    requested.add(&plan.daemonset_overhead);
    record.requested = Some(requested);
    record.host_ports = host_ports;
    // What the plan chose beyond the labels every node of the pool gets.
    let common = nodewright_core::registration::pool_labels(&pool);
    record.labels = plan
        .labels
        .iter()
        .filter(|(k, v)| common.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    record.node_class_hash = pool
        .node_class
        .as_ref()
        .and_then(|c| deps.settings.pools().node_class_hashes.get(c).cloned());
    if let PoolBacking::AutoScalingGroup { group_name, .. } = &pool.backing {
        record.backing = format!("asg:{group_name}");
    }
    let created = deps.state.create_claim(&record).await?;
    if !created {
        // An earlier attempt of this decision wrote the claim and charged its usage: this
        // attempt's charge goes back, so the claim is counted once.
        deps.state.release_usage(&pool.name, &delta, true).await?;
        let existing = deps.state.get_claim(&id).await?;
        if let Some(c) = existing.filter(|c| c.state != ClaimState::Launching) {
            // Carried out (or ended) already: nothing to launch; the pods go back for a retry.
            release_pods(&deps.state, plan.pods.iter().map(String::as_str), holder).await?;
            actions.push(Action::Ignored {
                reason: format!("claim {id} of an earlier attempt is already {}", c.state.as_str()),
            });
            return Ok(actions);
        }
        tracing::info!(claim = %id, "claim exists from an earlier attempt of this decision; resuming it");
    }
    let claim_holder = Holder::Claim(id.clone());
    transfer_pods(
        &deps.state,
        plan.pods.iter().map(String::as_str),
        holder,
        &claim_holder,
        now,
        ttl,
    )
    .await?;

    if let PoolBacking::AutoScalingGroup { group_name, .. } = &pool.backing {
        // A retry of the decision (the claim exists) raises the group only if the first attempt
        // did not record that it had.
        raise_and_report(
            deps,
            &pool,
            group_name,
            &id,
            &plan.pods,
            &delta,
            holder,
            now,
            &mut actions,
        )
        .await?;
        return Ok(actions);
    }

    // The claim is durable and holds its pods: where there is a bus, another invocation launches
    // it. A hand-off that fails or is refused launches here, as without a bus.
    let request = ClaimLaunchRequest::new(&deps.settings.cluster, &id, now);
    let handed_off = if deps.capacity.has_launch_bus() {
        deps.capacity.hand_off_launches(std::slice::from_ref(&request)).await
    } else {
        Ok(Vec::new())
    };
    match handed_off {
        Ok(handed) if handed.contains(&id) => {
            actions.push(Action::LaunchRequested {
                claim: id.clone(),
                pool: pool.name.clone(),
                pods: plan.pods.len(),
            });
            return Ok(actions);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(claim = %id, error = %e, "launch hand-off failed; launching here"),
    }

    let launch = ClaimLaunch {
        claim_id: id.clone(),
        pool: pool.clone(),
        node_class: node_class_of(&deps.settings.pools(), &pool),
        offerings,
        labels: record.labels.clone(),
    };
    match launch_offerings(deps, &launch, now).await? {
        Ok(outcome) => {
            if record_launch(deps, &pool, &id, &outcome, types, plan.pods.len(), now, &mut actions).await? {
                settle_usage(deps, &pool, &delta, &outcome.instance_type, types).await?;
            }
            Ok(actions)
        }
        Err(e) => {
            fail_claim(deps, &pool, &id, &delta, &plan.pods, now, &e.to_string(), &mut actions).await?;
            Ok(actions)
        }
    }
}

/// Launches a claim through the capacity port. The ICE cache is read and written here and nowhere
/// else: offerings it holds are left out (when that leaves none, the launch fails without a call),
/// and every offering the launch found without capacity is recorded for every invocation. The
/// outer error is the state's (the invocation fails and is retried); the inner one the launch's.
pub(crate) async fn launch_offerings<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    launch: &ClaimLaunch,
    now: EpochMillis,
) -> Result<std::result::Result<LaunchOutcome, AwsError>> {
    let cached = deps.state.unavailable_offerings(now).await?;
    let offerings: Vec<_> = launch
        .offerings
        .iter()
        .filter(|o| {
            !cached.iter().any(|u| {
                fleet::covers(
                    (u.capacity_type, &u.instance_type, &u.zone),
                    (o.capacity_type, &o.name, &o.zone),
                )
            })
        })
        .cloned()
        .collect();
    if offerings.is_empty() {
        return Ok(Err(AwsError::NoCapacity {
            claim: launch.claim_id.clone(),
            tried: vec!["every offering is in the unavailable-offerings cache".into()],
            unavailable: Vec::new(),
        }));
    }
    let launch = ClaimLaunch {
        offerings,
        ..launch.clone()
    };
    let result = deps.capacity.launch(&launch, now).await;
    let found = match &result {
        Ok(outcome) => outcome.unavailable.as_slice(),
        Err(AwsError::NoCapacity { unavailable, .. }) => unavailable.as_slice(),
        Err(_) => &[],
    };
    for (capacity_type, instance_type, zone, code) in found {
        deps.state
            .mark_offering_unavailable(*capacity_type, instance_type, zone, code, now)
            .await?;
    }
    Ok(result)
}

/// How long an Auto Scaling group's lease is held at most, counted from the invocation's start
/// (the time the handlers are given): longer than any function runs (the longest timeout is
/// 110 s), so a lease is never written already run out by a late caller. An invocation that dies
/// holding it blocks the group's changes this long: decisions meanwhile fail (`GroupBusy`) and
/// Lambda's retry, about 3 minutes later, raises the group.
pub const GROUP_LEASE_SECS: i64 = 150;
/// Tries at a busy group lease, and the pause after each.
/// (With `Settings::group_lease_pause`, about 5 s in all: enough for a burst's claims to raise one
/// group in turn, a raise being two Auto Scaling calls and a write.)
pub(crate) const GROUP_LEASE_TRIES: u32 = 20;

/// Runs `work` holding the group's lease, so that read-modify-writes of its desired capacity
/// (scale-ups here, scale-ins in consolidation) never interleave: None when the lease stayed busy.
pub(crate) async fn with_group_lease<S, C, K, T, F, Fut>(
    deps: &Deps<S, C, K>,
    group: &str,
    holder: &str,
    now: EpochMillis,
    work: F,
) -> Result<Option<T>>
where
    S: State,
    C: Capacity,
    K: ClusterApi,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    with_lease(deps, &format!("asg/{group}"), holder, GROUP_LEASE_TRIES, now, work).await
}

/// Runs `work` holding the named lease (trying `tries` times, a pause apart): None when it stayed
/// busy. The lease is given back whether `work` succeeded or not; one left by an invocation that
/// died runs out [`GROUP_LEASE_SECS`] after that invocation's start.
pub(crate) async fn with_lease<S, C, K, T, F, Fut>(
    deps: &Deps<S, C, K>,
    lease: &str,
    holder: &str,
    tries: u32,
    now: EpochMillis,
    work: F,
) -> Result<Option<T>>
where
    S: State,
    C: Capacity,
    K: ClusterApi,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut taken = false;
    for attempt in 0..tries {
        if deps.state.take_lease(lease, holder, now, GROUP_LEASE_SECS).await? {
            taken = true;
            break;
        }
        if attempt + 1 < tries {
            tokio::time::sleep(deps.settings.group_lease_pause).await;
        }
    }
    if !taken {
        return Ok(None);
    }
    let result = work().await;
    deps.state.release_lease(lease, holder).await?;
    result.map(Some)
}

/// Raises the group for a claim and reports it: a group at its max size fails the claim (its usage
/// and pods go back), as does an Auto Scaling error; a lease that stayed busy fails the invocation
/// with the claim left launching, so the event's retry raises the group for it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn raise_and_report<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    pool: &NodePool,
    group: &str,
    claim: &str,
    pods: &[String],
    charged: &UsageDelta,
    holder: &Holder,
    now: EpochMillis,
    actions: &mut Vec<Action>,
) -> Result<()> {
    // One holder per claim: the claims of one invocation raise concurrently, and must take turns
    // like anyone else's (a holder re-takes its own lease, which lets a retry past a lease its
    // dead first attempt left).
    let lease_holder = format!("{}/{claim}", holder.encode());
    match raise_group_for_claim(deps, group, claim, &lease_holder, now).await {
        Ok(GroupRaise::Raised) => actions.push(Action::ScaledUp {
            claim: claim.to_string(),
            group: group.to_string(),
            pods: pods.len(),
        }),
        Ok(GroupRaise::Done) => actions.push(Action::Ignored {
            reason: format!("group {group} was raised for claim {claim} by an earlier attempt"),
        }),
        Ok(GroupRaise::AtMax) => {
            let why = format!("Auto Scaling group {group} is at its max size");
            fail_claim(deps, pool, claim, charged, pods, now, &why, actions).await?;
        }
        Ok(GroupRaise::Busy) => {
            return Err(Error::GroupBusy(group.to_string()));
        }
        Err(e) => fail_claim(deps, pool, claim, charged, pods, now, &e.to_string(), actions).await?,
    }
    Ok(())
}

/// What raising a group for a claim came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupRaise {
    Raised,
    /// An earlier attempt raised it (recorded on the claim), or the claim has moved on.
    Done,
    /// The group is at its max size.
    AtMax,
    /// Another invocation held the group's lease throughout.
    Busy,
}

/// Raises an Auto Scaling group by one for a claim, once: under the group's lease, and only if the
/// claim has not recorded a raise yet. The raise is recorded on the claim after it lands; an
/// invocation that dies in between leaves a retry to raise it again, and the group's extra
/// instance is adopted by its launch event and removed by consolidation like any empty node.
pub(crate) async fn raise_group_for_claim<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    group: &str,
    claim_id: &str,
    holder: &str,
    now: EpochMillis,
) -> Result<GroupRaise> {
    let raised = with_group_lease(deps, group, holder, now, || async {
        let Some(claim) = deps.state.get_claim(claim_id).await? else {
            return Ok(GroupRaise::Done);
        };
        if claim.scale_requested_at.is_some() || claim.state != ClaimState::Launching {
            return Ok(GroupRaise::Done);
        }
        if !deps.capacity.scale_up(group).await? {
            return Ok(GroupRaise::AtMax);
        }
        // Recorded under the claim's version; a concurrent write (a launch event already taking
        // the instance) is re-read and the mark put on the newer record.
        let mut current = claim;
        for _ in 0..5 {
            let mut marked = current.clone();
            marked.scale_requested_at = Some(now);
            marked.version += 1;
            if deps.state.replace_claim(&marked, current.version).await? {
                break;
            }
            match deps.state.get_claim(claim_id).await? {
                Some(c) if c.scale_requested_at.is_none() => current = c,
                _ => break,
            }
        }
        Ok(GroupRaise::Raised)
    })
    .await?;
    Ok(raised.unwrap_or(GroupRaise::Busy))
}

#[allow(clippy::too_many_arguments)]
async fn record_launch<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    pool: &NodePool,
    id: &str,
    outcome: &LaunchOutcome,
    types: &[InstanceType],
    pods: usize,
    now: EpochMillis,
    actions: &mut Vec<Action>,
) -> Result<bool> {
    for (ct, t, z, reason) in &outcome.unavailable {
        actions.push(Action::OfferingUnavailable {
            capacity_type: *ct,
            instance_type: t.clone(),
            zone: z.clone(),
            reason: reason.clone(),
        });
    }
    let launched_type = types.iter().find(|t| t.name == outcome.instance_type);
    let allocatable = launched_type.map(|t| pool.allocatable_of(t));
    // An adopted instance (a retry's ClientToken found the first attempt's) comes back without a
    // price: the catalogue's for its offering, so consolidation does not take it for free or dear.
    let price = outcome.price.or_else(|| {
        launched_type.and_then(|t| {
            t.offerings
                .iter()
                .filter(|o| o.capacity_type == outcome.capacity_type && o.zone == outcome.zone)
                .map(|o| o.price)
                .min_by(f64::total_cmp)
        })
    });
    let update = ClaimUpdate {
        instance_id: Some(outcome.instance_id.clone()),
        instance_type: Some(outcome.instance_type.clone()),
        capacity_type: Some(outcome.capacity_type),
        zone: Some(outcome.zone.clone()),
        price_per_hour: price,
        allocatable,
        node_name: None,
    };
    let t = deps
        .state
        .transition_claim(id, ClaimState::Launched, now, &update)
        .await?;
    if let TransitionOutcome::Stale(c) = &t {
        tracing::warn!(claim = id, state = %c.state.as_str(), "claim moved on before its launch was recorded");
    }
    actions.push(Action::Launched {
        claim: id.to_string(),
        pool: pool.name.clone(),
        instance_id: outcome.instance_id.clone(),
        instance_type: outcome.instance_type.clone(),
        zone: outcome.zone.clone(),
        capacity_type: outcome.capacity_type,
        price_per_hour: price,
        pods,
        adopted: outcome.adopted,
        fell_back_to_on_demand: outcome.fell_back_to_on_demand,
    });
    // Only the call that moved the claim settles its usage: two launchers of one claim (a
    // handed-off launch and a retried decision resuming it) adopt one instance, and settling twice
    // would give the surplus back twice.
    Ok(matches!(t, TransitionOutcome::Advanced(_)))
}

/// The usage charged before launch was the largest option's; now the instance type is known, charge
/// exactly its capacity (what termination will release).
pub(crate) async fn settle_usage<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    pool: &NodePool,
    charged: &UsageDelta,
    instance_type: &str,
    types: &[InstanceType],
) -> Result<()> {
    let actual = usage_of_type(instance_type, types);
    // Give back only the difference, in one atomic write: releasing the whole charge and adding the
    // actual usage back would open a window in which a concurrent invocation takes the room and the
    // pool ends above its limits.
    let surplus = charged.excess_over(&actual);
    if surplus != UsageDelta::default() {
        deps.state.release_usage(&pool.name, &surplus, false).await?;
    }
    // An instance larger than every option (an adopted one of another type) is counted as it is.
    let shortfall = actual.excess_over(charged);
    if shortfall != UsageDelta::default() {
        tracing::warn!(pool = %pool.name, instance_type, "launched type is larger than the planned options; counted as launched");
        deps.state
            .try_add_usage(&pool.name, &shortfall, &nodewright_core::nodepool::Limits::default())
            .await?;
    }
    Ok(())
}

/// Writes the claim of an instance that exists already (adopted: its record was lost, or a group
/// launched it for no claim), counted in the pool's usage whatever the limits. The charge comes
/// first: an invocation that dies before the claim leaves a charge the usage reconciler takes
/// back, where the other order would leave a claim whose end releases what was never charged (a
/// counter below zero). True when this call created the claim.
pub(crate) async fn create_adopted_claim<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    record: &ClaimRecord,
    instance_type: Option<&str>,
) -> Result<bool> {
    let delta = usage_of_type(instance_type.unwrap_or(""), &deps.settings.pools().all_types);
    let unlimited = nodewright_core::nodepool::Limits::default();
    deps.state.try_add_usage(&record.pool, &delta, &unlimited).await?;
    if deps.state.create_claim(record).await? {
        return Ok(true);
    }
    deps.state.release_usage(&record.pool, &delta, true).await?;
    Ok(false)
}

/// The pool usage of one instance of `instance_type` (zero when unknown).
pub(crate) fn usage_of_type(instance_type: &str, types: &[InstanceType]) -> UsageDelta {
    types
        .iter()
        .find(|t| t.name == instance_type)
        .map(|t| UsageDelta::of(&t.capacity, 1))
        .unwrap_or(UsageDelta {
            nodes: 1,
            ..Default::default()
        })
}

/// A claim that could not get capacity: failed, its usage and pods released.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn fail_claim<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    pool: &NodePool,
    id: &str,
    delta: &UsageDelta,
    pods: &[String],
    now: EpochMillis,
    error: &str,
    actions: &mut Vec<Action>,
) -> Result<()> {
    tracing::warn!(claim = id, pool = %pool.name, error, pods = pods.len(), "launch failed; claim failed and its pods released");
    let t = deps
        .state
        .transition_claim(id, ClaimState::Failed, now, &ClaimUpdate::default())
        .await?;
    // Released once per claim: only the invocation whose transition ended the claim gives its
    // usage back (a redelivered failure event finds it Duplicate).
    if matches!(t, TransitionOutcome::Advanced(_)) {
        deps.state.release_usage(&pool.name, delta, true).await?;
    }
    let holder = Holder::Claim(id.to_string());
    release_pods(&deps.state, pods.iter().map(String::as_str), &holder).await?;
    actions.push(Action::LaunchFailed {
        claim: id.to_string(),
        pool: pool.name.clone(),
        error: error.to_string(),
    });
    actions.push(Action::ReservationsReleased {
        holder: holder.encode(),
        pods: pods.len(),
    });
    Ok(())
}
