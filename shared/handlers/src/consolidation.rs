//! `consolidation` (EventBridge schedule, every minute; reserved concurrency 1).
//!
//! Reconciliation first, every run:
//! 1. sweep: provision for unschedulable pods the events missed;
//! 2. adopt instances tagged as ours whose claim record is missing (an invocation died between
//!    launch and record), and terminate untagged-claim orphans past the registration timeout;
//! 3. terminate claims launched but not registered within the registration timeout;
//! 4. close claims whose instance is gone;
//! 5. register Ready nodes whose claims are not Ready (matched by providerID), and label nodes
//!    initialized once their pool's startup taints are gone;
//! 6. drain cordoned claims once their replacements are in, drive draining claims every run until
//!    empty or past the pool's terminationGracePeriod, and terminate drained ones.
//!
//! One failed step (a refused termination, a failed eviction) is recorded as `stepFailed` and the
//! run goes on; the next run retries it.
//!
//! Then disruption: the core planner's actions (docs/disruption.md), executed within the budgets the
//! planner already applied: replacements are provisioned first and the nodes cordoned; nodes with no
//! replacement are cordoned and drained now; termination follows on a later run once drained.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use nodewright_core::Resources;
use nodewright_core::disruption::{self, ManagedNode};
use nodewright_core::model::ClaimState;
use nodewright_core::ports::EpochMillis;
use nodewright_core::ports::cluster::{DISRUPTED_TAINT, DrainMode, DrainOptions};
use nodewright_core::ports::state::{ClaimRecord, ClaimUpdate, Holder, PoolUsage, UsageDrift, UsageSnapshot};
use nodewright_core::registration;

use crate::event::Envelope;
use crate::outcome::{Action, Outcome, transition_name};
use crate::ports::{Capacity, ClusterApi, State};
use crate::provision::{provision, release_from_claims, workload_pods_of};
use crate::registration::{launch_update, register};
use crate::state_change::instance_gone;
use crate::{Deps, Error, Function, Result};

/// EC2's DescribeInstances is eventually consistent: a claim launched this recently may not be
/// listed yet, and is not declared gone.
const DESCRIBE_GRACE_MS: i64 = 2 * 60 * 1000;
/// A claim stuck in `launching` with no instance this long had its invocation die before launching.
pub const LAUNCHING_TIMEOUT_MS: i64 = 20 * 60 * 1000;
/// How long a voluntary drain retries PDB-blocked evictions in one run.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// An unchanged cluster is planned again after this long anyway (Karpenter's consolidated state
/// lasts five minutes): what a fingerprint leaves out (a node's remaining lifetime) drifts slowly.
pub const REPLAN_UNCHANGED_MS: i64 = 5 * 60 * 1000;

/// Karpenter's "consolidated" state: the fingerprint ([`disruption::fingerprint`]) of the last
/// cluster a plan found nothing to disrupt in, and when. Planning is most of a run's work and a
/// quiet cluster asks the same question every minute. Held in memory, so a cold start plans afresh
/// and concurrent environments never share a stale answer. Clones share the memo (one execution
/// environment's invocations, as the chaos stories run them).
#[derive(Debug, Default, Clone)]
pub struct Consolidated(std::sync::Arc<std::sync::Mutex<Option<(u64, EpochMillis)>>>);

impl Consolidated {
    /// When the plan that found this cluster quiet ran, if it still stands at `now`.
    fn planned_at(&self, fingerprint: u64, now: EpochMillis) -> Option<EpochMillis> {
        let last = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        last.filter(|&(f, at)| f == fingerprint && (0..REPLAN_UNCHANGED_MS).contains(&(now - at)))
            .map(|(_, at)| at)
    }

    fn set(&self, mark: Option<(u64, EpochMillis)>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = mark;
    }
}

pub async fn handle<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    envelope: &Envelope,
    now: EpochMillis,
) -> Result<Outcome> {
    let mut out = Outcome::new(Function::Consolidation.name(), &envelope.id);
    if let Some(cluster) = &deps.cluster {
        let pending = cluster.unschedulable_pods().await?;
        // Every minute, whether or not the watcher re-sent them: the pods-pending-too-long
        // alarm must see a pod whose unchanged status the watcher never sends again.
        out.oldest_pending_secs = crate::pod_pending::oldest_pending_secs(&pending.items, now);
        if !pending.items.is_empty() {
            let holder = Holder::Invocation(format!("sweep/{}", envelope.id));
            let pods = pending.items.into_iter().map(|p| p.pod).collect();
            // A failed sweep is one step: reconciliation still runs (an instance without a claim
            // must not wait on pending pods; found by `nodewright chaos`, seed 154). Its
            // reservations run out and the next minute sweeps again.
            if let Err(e) = provision(deps, pods, &holder, &[], now, &mut out).await {
                failed(&mut out, "sweep", "pending pods", &e);
            }
        }
    }
    let started = tokio::time::Instant::now();
    let deadline = started + ACTION_BUDGET;
    reconcile(deps, now, &mut out).await?;
    if let Some(cluster) = &deps.cluster {
        disrupt(deps, now, deadline, &mut out).await?;
        if let Err(e) = crate::node_pools::write_statuses(&deps.settings, &deps.state, cluster, now, &mut out).await {
            failed(&mut out, "status", "NodePools", &e);
        }
    }
    // Last: the refresh may wait on the price APIs (up to its own 20 s bound), and the run's own
    // work comes first; a run already long leaves it to the next.
    if started.elapsed() < PRICES_AFTER_AT_MOST && crate::prices::refresh(deps, now).await {
        // The next invocation in this environment plans at them.
        *deps
            .settings
            .prices_checked_at
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        crate::prices::load(&deps.settings, &deps.state, now).await;
    }
    Ok(out)
}

async fn reconcile<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let timeout = deps.settings.registration_timeout_ms;
    let instances = deps.capacity.instances().await?;
    // Counters first, then the claims they should equal (see `reconcile_usage`).
    let mut snapshots = Vec::new();
    for pool in &deps.settings.pools().config.node_pools {
        match deps.state.usage_snapshot(&pool.name).await {
            Ok(s) => snapshots.push((pool.name.clone(), s)),
            Err(e) => failed(out, "read usage", &pool.name, &e.into()),
        }
    }
    let mut claims = deps.state.live_claims().await?;
    for (pool, snapshot) in &snapshots {
        if let Err(e) = reconcile_usage(deps, pool, snapshot, &claims, now, out).await {
            failed(out, "reconcile usage", pool, &e);
        }
    }
    // Ended claims are not read in bulk: an instance naming a claim that is not live is looked up
    // by id (a point read each; in a steady cluster only instances outliving their claim), so an
    // instance of an ended claim is terminated rather than adopted. A failed look-up stops the
    // pass: adopting on a guess could bring an ended claim back.
    let live_ids: HashSet<String> = claims.iter().map(|c| c.id.clone()).collect();
    let not_live: BTreeSet<&str> = instances
        .iter()
        .filter_map(|i| i.claim_id.as_deref())
        .filter(|cid| !live_ids.contains(*cid))
        .collect();
    for cid in not_live {
        if let Some(c) = deps.state.get_claim(cid).await? {
            claims.push(c);
        }
    }

    // 2. Adopt or remove instances without a record; record launches whose record was lost;
    // terminate instances whose claim has ended.
    let mut orphans = Vec::new();
    let mut of_ended_claims = Vec::new();
    let mut adopted = false;
    {
        let known: HashMap<&str, &ClaimRecord> = claims.iter().map(|c| (c.id.as_str(), c)).collect();
        // Auto Scaling instances carry the group's tags (ours only if the group propagates them),
        // never a claim tag: a claim holds them by instance id.
        let held: HashSet<&str> = claims.iter().filter_map(|c| c.instance_id.as_deref()).collect();
        for i in &instances {
            let running = matches!(i.state.as_str(), "pending" | "running" | "stopping" | "stopped");
            match i.claim_id.as_deref().map(|cid| (cid, known.get(cid))) {
                // The launch happened but its record did not (the invocation died in between, the
                // write's response was lost, CreateFleet failed on our side after creating it).
                Some((cid, Some(c))) if c.state == ClaimState::Launching && c.instance_id.is_none() => {
                    match record_lost_launch(deps, c, i, now).await {
                        Ok(()) => {
                            adopted = true;
                            out.push(Action::Adopted {
                                claim: cid.to_string(),
                                instance_id: i.instance_id.clone(),
                            });
                        }
                        Err(e) => failed(out, "record launch", &i.instance_id, &e),
                    }
                }
                // Its claim ended (failed, timed out, closed) while the instance lived on: a second
                // launch under the same claim, or a termination that did not happen.
                Some((_, Some(c))) if c.state.is_terminal() && running => {
                    of_ended_claims.push(i.instance_id.clone());
                }
                Some((cid, None)) => {
                    let pool = i.pool.clone().unwrap_or_default();
                    let launched_at = i.launch_time_millis.unwrap_or(now);
                    let mut record = ClaimRecord::launching(cid, &pool, Vec::new(), launched_at);
                    record.instance_id = Some(i.instance_id.clone());
                    // The labels its claim chose (a split pool's value, the tenancy), from the tag.
                    record.labels = i.labels.clone();
                    match adopt(deps, &record, i, launched_at).await {
                        Ok(true) => {
                            adopted = true;
                            out.push(Action::Adopted {
                                claim: cid.to_string(),
                                instance_id: i.instance_id.clone(),
                            });
                        }
                        Ok(false) => {}
                        Err(e) => failed(out, "adopt", &i.instance_id, &e),
                    }
                }
                None if held.contains(i.instance_id.as_str()) => {}
                // A group's instance (the group propagates our tags): never terminated past the
                // group, which would replace it; the group pass below gives it a claim.
                None if asg_group_of(deps, i.pool.as_deref()).is_some() => {}
                None if i.launch_time_millis.is_some_and(|t| now - t > timeout) => orphans.push(i.instance_id.clone()),
                _ => {}
            }
        }
    }
    // Auto Scaling groups: a member no claim holds (its launch event lost, or dead-lettered) is
    // given to the claim waiting for it, or adopted, as its launch event would have done.
    for (group, members) in group_members(deps, out).await {
        // A member no live claim holds: the claim that held it, if any, by the instance index.
        let mut lookup_failed = false;
        for m in &members {
            if claims.iter().any(|c| c.instance_id.as_deref() == Some(m.as_str())) {
                continue;
            }
            match deps.state.claim_by_instance(m).await {
                Ok(Some(c)) if !claims.iter().any(|k| k.id == c.id) => claims.push(c),
                Ok(_) => {}
                Err(e) => {
                    failed(out, "look up group member", m, &e.into());
                    lookup_failed = true;
                    break;
                }
            }
        }
        if lookup_failed {
            continue;
        }
        let held: HashSet<&str> = claims.iter().filter_map(|c| c.instance_id.as_deref()).collect();
        // A member held only by claims that ended long enough ago for their own retirement to
        // have run (a claim closed from a read taken before its launch was attached): scaled in,
        // as nothing else would ever remove it.
        let ended_only: Vec<String> = members
            .iter()
            .filter(|m| {
                let mut holders = claims.iter().filter(|c| c.instance_id.as_deref() == Some(m.as_str()));
                let mut any = false;
                let all_ended_long_ago = holders.all(|c| {
                    any = true;
                    c.state.is_terminal()
                        && c.transitions
                            .values()
                            .max()
                            .is_some_and(|ended| now - ended > GROUP_ADOPTION_DELAY_MS)
                });
                any && all_ended_long_ago
            })
            .cloned()
            .collect();
        if !ended_only.is_empty() {
            let holder = format!("reap/{}", ended_only.join(","));
            let scaled = crate::provision::with_group_lease(deps, &group, &holder, now, || async {
                Ok(deps.capacity.scale_in(&group, &ended_only).await?)
            })
            .await;
            match scaled {
                Ok(Some(done)) if !done.is_empty() => out.push(Action::Terminated {
                    instance_ids: done,
                    reason: format!("its claim has ended; scaled in {group}"),
                }),
                Ok(_) => {}
                Err(e) => failed(out, "scale in members of ended claims", &group, &e),
            }
        }
        let unheld: Vec<String> = members.into_iter().filter(|m| !held.contains(m.as_str())).collect();
        if unheld.is_empty() {
            continue;
        }
        let described = match deps.capacity.describe(&unheld).await {
            Ok(d) => d,
            Err(e) => {
                failed(out, "describe group instances", &group, &e.into());
                continue;
            }
        };
        for i in described {
            let launched_at = i.launch_time_millis.unwrap_or(now);
            if now - launched_at <= GROUP_ADOPTION_DELAY_MS {
                continue;
            }
            match crate::state_change::asg_launch(
                deps,
                &group,
                Some(&i.instance_id),
                true,
                false,
                launched_at,
                now,
                out,
            )
            .await
            {
                Ok(()) => adopted = true,
                Err(e) => failed(out, "attach group instance", &i.instance_id, &e),
            }
        }
    }
    if adopted {
        claims = deps.state.live_claims().await?;
    }
    if !of_ended_claims.is_empty() {
        match deps.capacity.terminate(&of_ended_claims).await {
            Ok(()) => out.push(Action::Terminated {
                instance_ids: of_ended_claims,
                reason: "its claim has ended".into(),
            }),
            Err(e) => failed(out, "terminate", &of_ended_claims.join(","), &e.into()),
        }
    }
    if !orphans.is_empty() {
        match deps.capacity.terminate(&orphans).await {
            Ok(()) => out.push(Action::Terminated {
                instance_ids: orphans,
                reason: "tagged for this cluster but never claimed".into(),
            }),
            Err(e) => failed(out, "terminate orphans", &orphans.join(","), &e.into()),
        }
    }

    // What is alive: the cluster-tag listing, plus claims' instances it misses (an Auto Scaling
    // group's instances carry the group's tags, not necessarily ours), described by id.
    let mut live_instances: HashSet<String> = instances.iter().map(|i| i.instance_id.clone()).collect();
    let unlisted: Vec<String> = claims
        .iter()
        .filter(|c| c.state.is_live())
        .filter_map(|c| c.instance_id.clone())
        .filter(|i| !live_instances.contains(i))
        .collect();
    if !unlisted.is_empty() {
        for i in deps.capacity.describe(&unlisted).await? {
            if !matches!(i.state.as_str(), "terminated" | "shutting-down") {
                live_instances.insert(i.instance_id);
            }
        }
    }

    // 1b. Register Ready nodes whose claims are not Ready yet: a lost or early `Node Ready`, a
    // restarted watcher, an adopted instance. Matched by providerID, as the event would be.
    let nodes = match &deps.cluster {
        Some(cluster) => Some(cluster.nodes().await?),
        None => None,
    };
    let mut registered: HashSet<&str> = HashSet::new();
    if let Some(nodes) = &nodes {
        for claim in claims.iter().filter(|c| c.state < ClaimState::Ready) {
            let Some(iid) = claim.instance_id.as_deref() else {
                continue;
            };
            let Some(n) = nodes
                .items
                .iter()
                .find(|n| n.ready && n.instance_id.as_deref() == Some(iid))
            else {
                continue;
            };
            match register(deps, claim, &n.node.name, now, out).await {
                Ok(()) => {
                    registered.insert(claim.id.as_str());
                }
                Err(e) => failed(out, "register", &claim.id, &e),
            }
        }
    }

    // 1c. Nodes of pools with startup taints are initialized (Karpenter's
    // `karpenter.sh/initialized`) once Ready with those taints lifted by their agents, which no
    // event reports: each run looks. (Registration labels the rest itself.)
    if let (Some(cluster), Some(nodes)) = (&deps.cluster, &nodes) {
        let pools = deps.settings.pools();
        for claim in claims
            .iter()
            .filter(|c| c.state == ClaimState::Ready && !registered.contains(c.id.as_str()))
        {
            let Some(iid) = claim.instance_id.as_deref() else {
                continue;
            };
            let Some(n) = nodes
                .items
                .iter()
                .find(|n| n.ready && !n.unregistered && n.instance_id.as_deref() == Some(iid))
            else {
                continue;
            };
            let Some(pool) = pools.config.node_pools.iter().find(|p| p.name == claim.pool) else {
                continue;
            };
            if n.node.labels.contains_key(registration::INITIALIZED_LABEL)
                || !registration::initialized(pool, &n.node.taints)
            {
                continue;
            }
            let mark = registration::NodeRegistration {
                labels: [(registration::INITIALIZED_LABEL.to_string(), "true".to_string())].into(),
                taints: Vec::new(),
                startup_taints: Vec::new(),
            };
            match cluster.register_node(&n.node.name, &mark).await {
                Ok(true) => out.push(Action::Initialized {
                    claim: claim.id.clone(),
                    node: n.node.name.clone(),
                }),
                Ok(false) => {}
                Err(e) => failed(out, "initialize", &claim.id, &e.into()),
            }
        }
    }

    for claim in &claims {
        if registered.contains(claim.id.as_str()) {
            continue;
        }
        let launched_at = claim.entered(ClaimState::Launching).unwrap_or(now);
        // The node's registration is timed from when its instance exists: an Auto Scaling claim
        // may wait for its group's instance long after it was decided.
        let instance_at = claim.entered(ClaimState::Launched).unwrap_or(launched_at);
        let result = match claim.state {
            // 3a. An Auto Scaling claim whose group was never raised (every attempt of its
            // decision failed, retries included): raised now.
            ClaimState::Launching
                if claim.instance_id.is_none()
                    && claim.scale_requested_at.is_none()
                    && claim.backing.starts_with("asg:")
                    && now - launched_at > UNRAISED_CLAIM_AFTER_MS =>
            {
                raise_unraised(deps, claim, now, out).await
            }
            // 3b. A fleet claim never launched (its `Claim Launch` was dead-lettered, its
            // PutEvents applied but answered with an error and no retry came, its decision died
            // and was not retried): launched now from its record, once, as state-change would.
            ClaimState::Launching
                if claim.instance_id.is_none()
                    && claim.backing == "fleet"
                    && !claim.offerings.is_empty()
                    && now - launched_at > UNLAUNCHED_CLAIM_AFTER_MS
                    && now - launched_at <= LAUNCHING_TIMEOUT_MS =>
            {
                launch_unlaunched(deps, claim, now, out).await
            }
            // 3. Never registered.
            ClaimState::Launching | ClaimState::Launched if now - instance_at > timeout => {
                if claim.instance_id.is_none() && now - launched_at <= LAUNCHING_TIMEOUT_MS {
                    continue;
                }
                never_registered(deps, claim, &live_instances, timeout, now, out).await
            }
            // 4. Instance gone without an event reaching us.
            s if s.is_live() && !s.is_in_flight() || s == ClaimState::Launched => {
                let Some(iid) = &claim.instance_id else { continue };
                if now - launched_at > DESCRIBE_GRACE_MS && !live_instances.contains(iid.as_str()) {
                    close(deps, claim, ClaimState::Terminated, now, out).await
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            failed(out, "reconcile", &claim.id, &e);
        }
    }

    // 5. Cordoned claims (rebalance, scheduled change, replace actions) drain once their
    // replacements are in; draining claims are driven every run until empty or out of grace.
    let (Some(cluster), Some(nodes)) = (&deps.cluster, &nodes) else {
        return Ok(());
    };
    let in_flight = claims.iter().any(|c| c.state.is_in_flight());
    let retiring: Vec<(&ClaimRecord, Option<String>)> = claims
        .iter()
        .filter(|c| matches!(c.state, ClaimState::Cordoned | ClaimState::Draining))
        .map(|claim| {
            let node = nodes
                .items
                .iter()
                .find(|n| n.instance_id.is_some() && n.instance_id == claim.instance_id)
                .map(|n| n.node.name.clone());
            (claim, node)
        })
        .collect();
    if retiring.is_empty() {
        return Ok(());
    }
    // Only the retiring nodes' pods: a steady cluster lists none here.
    let retiring_nodes: Vec<String> = retiring.iter().filter_map(|(_, n)| n.clone()).collect();
    let bound = cluster.pods_on_nodes(&retiring_nodes).await?;
    // Retirements are independent but for an Auto Scaling group's, which share the group's lease:
    // one lane per group (its claims one after another) and one per fleet claim, lanes
    // RETIRE_LANES at a time (127 terminations one at a time took 13 s of a 5,000-node run).
    let mut lanes: Vec<Vec<(&ClaimRecord, Option<String>)>> = Vec::new();
    let mut lane_of_group: HashMap<&str, usize> = HashMap::new();
    for (claim, node) in retiring {
        match claim.backing.strip_prefix("asg:") {
            Some(group) => {
                let i = *lane_of_group.entry(group).or_insert_with(|| {
                    lanes.push(Vec::new());
                    lanes.len() - 1
                });
                lanes[i].push((claim, node));
            }
            None => lanes.push(vec![(claim, node)]),
        }
    }
    let mut runs = Vec::with_capacity(lanes.len());
    for lane in lanes {
        let bound = &bound.items;
        runs.push(async move {
            let mut lane_out = Outcome::new("", "");
            for (claim, node) in lane {
                if let Err(e) = retire(
                    deps,
                    cluster,
                    claim,
                    node.as_deref(),
                    in_flight,
                    bound,
                    now,
                    &mut lane_out,
                )
                .await
                {
                    failed(&mut lane_out, "retire", &claim.id, &e);
                }
            }
            lane_out
        });
    }
    for lane_out in crate::in_order(runs, RETIRE_LANES).await {
        out.append(lane_out);
    }
    Ok(())
}

/// Retirement lanes (Auto Scaling groups, fleet claims) worked at once.
const RETIRE_LANES: usize = 16;

/// Nodes of one disruption taken, cordoned and drained at once.
const NODE_STEPS_IN_FLIGHT: usize = 16;

/// How long an Auto Scaling claim may wait for its decision's invocation (and Lambda's retries, at
/// about +1 and +3 minutes) to raise its group before consolidation raises it.
const UNRAISED_CLAIM_AFTER_MS: i64 = 4 * 60 * 1000;

/// Raises the group of a claim whose decision never did (see [`UNRAISED_CLAIM_AFTER_MS`]).
/// How long a fleet claim may wait in `launching` without an instance (its `Claim Launch`, with
/// Lambda's retries at about +1 and +3 minutes, or its decision's own retries) before consolidation
/// launches it.
const UNLAUNCHED_CLAIM_AFTER_MS: i64 = 5 * 60 * 1000;

/// Launches a fleet claim nothing launched ([`UNLAUNCHED_CLAIM_AFTER_MS`]); a launch of it under
/// way elsewhere (the claim's launch key held) is left to finish.
async fn launch_unlaunched<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    claim: &ClaimRecord,
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let event = format!("{}/unlaunched/{}", out.event_id, claim.id);
    match crate::provision::launch_once(deps, Function::Consolidation, &claim.id, &event, now).await {
        Ok(o) => {
            out.actions
                .extend(o.actions.into_iter().filter(|a| !matches!(a, Action::Replayed { .. })));
            Ok(())
        }
        Err(Error::Busy(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn raise_unraised<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    claim: &ClaimRecord,
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let pools = deps.settings.pools();
    let (Some(group), Some(pool)) = (
        claim.backing.strip_prefix("asg:"),
        pools.config.node_pools.iter().find(|p| p.name == claim.pool),
    ) else {
        return Ok(());
    };
    let charged = crate::provision::usage_of_pool_types(pool, &pools.all_types);
    let holder = nodewright_core::ports::state::Holder::Invocation(format!("raise/{}", claim.id));
    let mut actions = Vec::new();
    let raised = crate::provision::raise_and_report(
        deps,
        pool,
        group,
        &claim.id,
        &claim.pods,
        &charged,
        &holder,
        now,
        &mut actions,
    )
    .await;
    out.actions.extend(actions);
    raised
}

/// How old an Auto Scaling instance no claim holds must be before consolidation attaches it: its
/// launch event comes within seconds, and it is the one that should take it.
const GROUP_ADOPTION_DELAY_MS: i64 = 2 * 60 * 1000;

/// The members of every Auto Scaling pool's group; a group that cannot be read is reported and
/// left for the next run.
async fn group_members<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    out: &mut Outcome,
) -> Vec<(String, Vec<String>)> {
    let mut all = Vec::new();
    for pool in &deps.settings.pools().config.node_pools {
        if let nodewright_core::nodepool::PoolBacking::AutoScalingGroup { group_name, .. } = &pool.backing {
            match deps.capacity.group_members(group_name).await {
                Ok(m) => all.push((group_name.clone(), m)),
                Err(e) => failed(out, "list group instances", group_name, &e.into()),
            }
        }
    }
    all
}

/// The Auto Scaling group behind a pool, if it is an Auto Scaling pool.
fn asg_group_of<S: State, C: Capacity, K: ClusterApi>(deps: &Deps<S, C, K>, pool: Option<&str>) -> Option<String> {
    let pools = deps.settings.pools();
    let pool = pools.config.node_pools.iter().find(|p| Some(p.name.as_str()) == pool)?;
    match &pool.backing {
        nodewright_core::nodepool::PoolBacking::AutoScalingGroup { group_name, .. } => Some(group_name.clone()),
        _ => None,
    }
}

/// Records an instance found with our claim tag but no record; true when this run created it.
async fn adopt<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    record: &ClaimRecord,
    instance: &nodewright_core::ports::capacity::InstanceSummary,
    launched_at: EpochMillis,
) -> Result<bool> {
    if !crate::provision::create_adopted_claim(deps, record, Some(&instance.instance_type)).await? {
        return Ok(false);
    }
    let update = launch_update(deps, instance);
    deps.state
        .transition_claim(&record.id, ClaimState::Launched, launched_at, &update)
        .await?;
    Ok(true)
}

/// How long a pool's counters must go unwritten before the reconciler trusts a count of its
/// claims against them: longer than any function runs (the longest timeout is 110 s), so every
/// charge older than that either has its claim written or belongs to an invocation that died.
pub const USAGE_STABLE_MS: i64 = 3 * 60 * 1000;

/// What a pool's counters should hold: one node per live claim, its instance type's capacity
/// (Karpenter counts capacity), in flight until Ready. None while a live claim's type is unknown
/// (a launch in progress: its charge is the largest option's, which the claim does not record).
pub fn usage_of_claims(
    claims: &[ClaimRecord],
    pool: &str,
    types: &[nodewright_core::InstanceType],
) -> Option<PoolUsage> {
    let mut usage = PoolUsage::default();
    for c in claims.iter().filter(|c| c.pool == pool && c.state.is_live()) {
        let t = c.instance_type.as_deref()?;
        let d = crate::provision::usage_of_type(t, types);
        usage.cpu_milli += d.cpu_milli;
        usage.memory_bytes += d.memory_bytes;
        usage.gpus += d.gpus;
        usage.nodes += 1;
        if c.counted_in_flight() {
            usage.nodes_in_flight += 1;
        }
    }
    Some(usage)
}

/// Repairs a pool's counters from its live claims. Counters drift when an invocation dies between
/// a charge and its claim, or between a claim's end and its release, or when a write applied but
/// its response was lost and the retry applied it again. A count of claims can only be trusted
/// against counters nobody is writing: so the counters are corrected only when their version is
/// the one this function saw at least [`USAGE_STABLE_MS`] earlier, and the correction is
/// conditional on that version (a charge in between makes it fail, and the next run tries again).
async fn reconcile_usage<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    pool: &str,
    snapshot: &UsageSnapshot,
    claims: &[ClaimRecord],
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let Some(expected) = usage_of_claims(claims, pool, &deps.settings.pools().all_types) else {
        return Ok(());
    };
    if !snapshot.exists && expected == PoolUsage::default() {
        return Ok(());
    }
    if expected == snapshot.usage && !snapshot.negative {
        return Ok(());
    }
    // Only a difference that has stayed the same for USAGE_STABLE_MS is corrected: a charge in
    // progress (counted before its claim is written) changes the difference from one run to the
    // next, a leak or a lost release does not. The counters may change meanwhile (a busy pool is
    // corrected too); the correction is conditional on the version read with them.
    let drift = UsageDrift::between(&snapshot.usage, snapshot.negative, &expected);
    let persisted = snapshot
        .checked
        .is_some_and(|(seen, since)| seen == drift && now - since >= USAGE_STABLE_MS);
    if !persisted {
        if !matches!(snapshot.checked, Some((seen, _)) if seen == drift) {
            deps.state.note_usage_checked(pool, &drift, now).await?;
        }
        return Ok(());
    }
    if deps.state.correct_usage(pool, &expected, snapshot.version, now).await? {
        tracing::warn!(pool, from = ?snapshot.usage, to = ?expected, "pool usage counters corrected from live claims");
        out.push(Action::UsageCorrected {
            pool: pool.to_string(),
            from: snapshot.usage,
            to: expected,
        });
    }
    Ok(())
}

/// Records the launch of a `Launching` claim from its instance, found by the claim tag.
async fn record_lost_launch<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    claim: &ClaimRecord,
    instance: &nodewright_core::ports::capacity::InstanceSummary,
    now: EpochMillis,
) -> Result<()> {
    let update = launch_update(deps, instance);
    let at = instance.launch_time_millis.unwrap_or(now);
    deps.state
        .transition_claim(&claim.id, ClaimState::Launched, at, &update)
        .await?;
    Ok(())
}

/// A claim whose node never registered: its instance terminated (if any) and the claim closed.
async fn never_registered<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    claim: &ClaimRecord,
    live_instances: &HashSet<String>,
    timeout: i64,
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    if let Some(iid) = &claim.instance_id {
        if live_instances.contains(iid.as_str()) {
            terminate_instance(deps, claim, iid, now).await?;
        }
        out.push(Action::Terminated {
            instance_ids: vec![iid.clone()],
            reason: format!("not registered within {} s", timeout / 1000),
        });
    }
    close(deps, claim, ClaimState::Terminated, now, out).await
}

/// Records a failed step; the run goes on.
fn failed(out: &mut Outcome, step: &str, target: &str, e: &crate::Error) {
    tracing::warn!(step, target, error = %e, "consolidation step failed; the next run retries it");
    out.push(Action::StepFailed {
        step: step.into(),
        target: target.into(),
        error: e.to_string(),
    });
}

/// Terminates a claim's instance: an Auto Scaling pool's with a desired-capacity decrement (else
/// the group would launch a replacement), released from protection first; a fleet's directly.
async fn terminate_instance<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    claim: &ClaimRecord,
    iid: &str,
    now: EpochMillis,
) -> Result<Vec<String>> {
    let ids = [iid.to_string()];
    match claim.backing.strip_prefix("asg:") {
        // Under the group's lease: a scale-up's read-modify-write of the desired capacity would
        // otherwise undo this decrement.
        Some(group) => {
            let holder = format!("retire/{}", claim.id);
            crate::provision::with_group_lease(deps, group, &holder, now, || async {
                deps.capacity.set_protection(group, &ids, false).await?;
                Ok(deps.capacity.scale_in(group, &ids).await?)
            })
            .await?
            .ok_or_else(|| crate::Error::GroupBusy(group.to_string()))
        }
        None => {
            deps.capacity.terminate(&ids).await?;
            Ok(ids.to_vec())
        }
    }
}

/// Moves a cordoned or draining claim on. Re-entrant: whatever a run that died left half-done, the
/// next completes. The Node is cordoned first (no write when it already is), so a claim recorded
/// as cordoned always ends with a cordoned node. A cordoned claim starts draining once nothing is
/// in flight (its replacement is in), or after the registration timeout regardless. A draining
/// node with workload pods (DaemonSet and mirror pods never count) is drained again every run;
/// once the pool's `terminationGracePeriod` has run out since draining began, the remaining pods
/// are deleted, PDBs and do-not-disrupt notwithstanding, as Karpenter does. An empty node's
/// instance is terminated.
#[allow(clippy::too_many_arguments)]
async fn retire<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    cluster: &K,
    claim: &ClaimRecord,
    node: Option<&str>,
    in_flight: bool,
    bound: &[nodewright_core::Pod],
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let Some(node) = node else {
        // No Node (never registered, or already deleted): nothing to drain.
        if claim.state == ClaimState::Draining {
            finish_retirement(deps, claim, now, out).await?;
        }
        return Ok(());
    };
    cluster.cordon_and_taint(node, DISRUPTED_TAINT).await?;
    let mut draining_since = claim.entered(ClaimState::Draining);
    if claim.state == ClaimState::Cordoned {
        let cordoned_at = claim.entered(ClaimState::Cordoned).unwrap_or(now);
        if in_flight && now - cordoned_at < deps.settings.registration_timeout_ms {
            return Ok(());
        }
        deps.state
            .transition_claim(&claim.id, ClaimState::Draining, now, &ClaimUpdate::default())
            .await?;
        draining_since = Some(now);
    }
    let grace_expired = deps
        .settings
        .pools()
        .config
        .node_pools
        .iter()
        .find(|p| p.name == claim.pool)
        .and_then(|p| p.termination_grace_period_secs)
        .is_some_and(|g| now - draining_since.unwrap_or(now) >= (g as i64).saturating_mul(1000));
    let busy = bound
        .iter()
        .any(|p| p.node_name.as_deref() == Some(node) && !p.goes_with_node());
    if busy {
        drain(deps, node, DrainMode::Voluntary, grace_expired, out).await?;
        if !grace_expired {
            // Evicted pods take their own grace period to go: terminated on a later run.
            return Ok(());
        }
    }
    finish_retirement(deps, claim, now, out).await
}

/// Terminates a drained claim's instance and records it.
async fn finish_retirement<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    claim: &ClaimRecord,
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    if let Some(iid) = &claim.instance_id {
        let done = terminate_instance(deps, claim, iid, now).await?;
        out.push(Action::Terminated {
            instance_ids: done,
            reason: match claim.backing.strip_prefix("asg:") {
                Some(group) => format!("drained; scaled in {group}"),
                None => "drained".into(),
            },
        });
    }
    let t = deps
        .state
        .transition_claim(&claim.id, ClaimState::Terminating, now, &ClaimUpdate::default())
        .await?;
    out.push(Action::ClaimTransition {
        claim: claim.id.clone(),
        to: ClaimState::Terminating.as_str().into(),
        outcome: transition_name(&t).into(),
    });
    Ok(())
}

async fn close<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    claim: &ClaimRecord,
    to: ClaimState,
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let t = deps
        .state
        .transition_claim(&claim.id, to, now, &ClaimUpdate::default())
        .await?;
    out.push(Action::ClaimTransition {
        claim: claim.id.clone(),
        to: to.as_str().into(),
        outcome: transition_name(&t).into(),
    });
    if matches!(t, nodewright_core::ports::state::TransitionOutcome::Advanced(_)) {
        instance_gone(deps, claim, now, out).await?;
    }
    Ok(())
}

async fn drain<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    node: &str,
    mode: DrainMode,
    grace_expired: bool,
    out: &mut Outcome,
) -> Result<()> {
    let Some(cluster) = &deps.cluster else { return Ok(()) };
    let mut options = DrainOptions::new(mode, DRAIN_DEADLINE);
    options.grace_expired = grace_expired;
    match cluster.drain(node, &options).await {
        Ok(r) => out.push(Action::drained(node.into(), &r)),
        Err(
            e @ (nodewright_core::ports::KubeError::PdbBlocked { .. }
            | nodewright_core::ports::KubeError::DoNotDisrupt { .. }),
        ) => out.push(Action::DrainBlocked {
            node: node.into(),
            error: e.to_string(),
        }),
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Protects the busy nodes of Auto Scaling pools from their group's own scale-in and releases the
/// idle ones, so that when a group's desired capacity drops it removes an idle node. Two calls per
/// group per run at most.
async fn protect_busy_asg_nodes<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    busy: &[String],
    node_claim: &HashMap<&str, &ClaimRecord>,
    out: &mut Outcome,
) -> Result<()> {
    // group -> (busy instances, idle instances)
    let mut groups: BTreeMap<&str, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for (node, claim) in node_claim {
        let (Some(group), Some(iid)) = (claim.backing.strip_prefix("asg:"), &claim.instance_id) else {
            continue;
        };
        if !matches!(claim.state, ClaimState::Ready | ClaimState::Registered) {
            continue;
        }
        let entry = groups.entry(group).or_default();
        if busy.iter().any(|b| b == node) {
            entry.0.push(iid.clone());
        } else {
            entry.1.push(iid.clone());
        }
    }
    for (group, (mut busy, mut idle)) in groups {
        busy.sort();
        idle.sort();
        deps.capacity.set_protection(group, &busy, true).await?;
        deps.capacity.set_protection(group, &idle, false).await?;
        out.push(Action::Protected {
            group: group.to_string(),
            protected: busy,
            released: idle,
        });
    }
    Ok(())
}

/// A digest of the workload pods on a node (daemonset pods aside): the sorted uids, FNV-1a. Stored
/// on the claim, it tells the next run whether the node's pods changed.
fn pods_digest<'p>(pods: impl Iterator<Item = &'p nodewright_core::Pod>) -> String {
    let mut uids: Vec<&str> = pods.filter(|p| !p.goes_with_node()).map(|p| p.uid.as_str()).collect();
    uids.sort_unstable();
    let digest = nodewright_core::digest::fnv1a_hex(uids.iter().flat_map(|u| u.bytes().chain([0])));
    format!("{digest}:{}", uids.len())
}

/// When the pods on `claim`'s node last changed, given their digest now; records a change on the
/// claim. The first sighting counts from the node's readiness (when its pods arrived is unknown).
///
/// A Ready claim also records what the node's bound pods now request (provisioning only knew what
/// it planned there; `avail` reads free capacity, GPUs above all, from it), whenever that differs.
/// A claim still in flight keeps its planned requests: its pods are not bound yet, and provisioning
/// packs onto it by what was planned.
async fn pods_changed_at<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    claim: &ClaimRecord,
    digest: &str,
    requested: Resources,
    now: EpochMillis,
) -> Result<EpochMillis> {
    let refresh =
        (claim.state == ClaimState::Ready && claim.requested.as_ref() != Some(&requested)).then_some(requested);
    let unchanged = match (&claim.pods_digest, claim.pods_changed_at) {
        (Some(d), Some(at)) if d == digest => Some(at),
        _ => None,
    };
    if let (Some(at), None) = (unchanged, &refresh) {
        return Ok(at);
    }
    let at = match (unchanged, &claim.pods_digest) {
        (Some(at), _) => at,
        (None, None) => claim.entered(ClaimState::Ready).unwrap_or(now),
        (None, Some(_)) => now,
    };
    let mut updated = claim.clone();
    updated.pods_digest = Some(digest.to_string());
    updated.pods_changed_at = Some(at);
    if let Some(r) = refresh {
        updated.requested = Some(r);
    }
    updated.version += 1;
    // A lost race means another run recorded the change; either time is right within a tick.
    deps.state.replace_claim(&updated, claim.version).await?;
    Ok(at)
}

/// Why `nodes` may no longer be disrupted as planned, if so: their pods changed since planning, or
/// their claims left Ready (another run took them).
async fn changed_since_planning<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    cluster: &K,
    nodes: &[String],
    planned: &HashMap<&str, String>,
    node_claim: &HashMap<&str, &ClaimRecord>,
) -> Result<Option<String>> {
    let bound = cluster.pods_on_nodes(nodes).await?;
    let mut reads = Vec::with_capacity(nodes.len());
    for node in nodes {
        if let Some(claim) = node_claim.get(node.as_str()) {
            reads.push(deps.state.get_claim(&claim.id));
        }
    }
    let mut fresh = crate::in_order(reads, NODE_STEPS_IN_FLIGHT).await.into_iter();
    for node in nodes {
        let now = pods_digest(
            bound
                .items
                .iter()
                .filter(|p| p.node_name.as_deref() == Some(node.as_str())),
        );
        if planned.get(node.as_str()) != Some(&now) {
            return Ok(Some(format!("the pods on {node} changed since planning")));
        }
        if let Some(claim) = node_claim.get(node.as_str()) {
            let state = fresh.next().transpose()?.flatten().map(|c| c.state);
            if !matches!(state, Some(ClaimState::Ready | ClaimState::Registered)) {
                return Ok(Some(format!(
                    "claim {} of {node} is now {}",
                    claim.id,
                    state.map_or("gone", |s| s.as_str())
                )));
            }
        }
    }
    Ok(None)
}

/// How long a run may spend before it stops starting disruptions: a run ends well inside half its
/// 55 s timeout (status, Events and the price refresh come after), so a slow Kubernetes API or a
/// large cluster leaves room. What is left is planned again, from the stored claims, by the next
/// run a minute later: a disruption started is carried on from its claim's state (Cordoned,
/// Draining), one not started is simply planned again.
pub const ACTION_BUDGET: std::time::Duration = std::time::Duration::from_secs(20);

/// A run older than this skips the hourly price refresh (bounded to 20 s itself), so the run
/// ends inside the function's 55 s timeout.
const PRICES_AFTER_AT_MOST: std::time::Duration = std::time::Duration::from_secs(30);

/// Digest writes in flight at once (DynamoDB takes thousands of writes a second per partition).
const DIGEST_WRITE_CONCURRENCY: usize = 32;

async fn disrupt<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    now: EpochMillis,
    deadline: tokio::time::Instant,
    out: &mut Outcome,
) -> Result<()> {
    let Some(cluster) = &deps.cluster else { return Ok(()) };
    let claims = deps.state.live_claims().await?;
    let nodes = cluster.nodes().await?;
    let claim_of: HashMap<&str, &ClaimRecord> = claims
        .iter()
        .filter_map(|c| Some((c.instance_id.as_deref()?, c)))
        .collect();
    // The pods of the nodes it manages, listed per node: the plan moves pods between these nodes
    // only, so the rest of the cluster's pods are never read.
    let ours: Vec<String> = nodes
        .items
        .iter()
        .filter(|n| n.node.pool.is_some() && n.instance_id.as_deref().is_some_and(|i| claim_of.contains_key(i)))
        .map(|n| n.node.name.clone())
        .collect();
    let bound = cluster.pods_on_nodes(&ours).await?;
    let daemonsets = deps.daemonsets.current(Some(cluster), now).await?;
    let pdbs = cluster.pdbs().await?;
    let mut pods_by_node: HashMap<&str, Vec<nodewright_core::Pod>> = HashMap::new();
    for p in &bound.items {
        if let Some(n) = &p.node_name {
            pods_by_node.entry(n.as_str()).or_default().push(p.clone());
        }
    }
    let mut managed = Vec::new();
    let mut changes = Vec::new();
    let mut planned_digests: HashMap<&str, String> = HashMap::new();
    for n in &nodes.items {
        let Some(claim) = n.instance_id.as_deref().and_then(|i| claim_of.get(i)) else {
            continue;
        };
        if n.node.pool.is_none() {
            continue;
        }
        let mut node = n.node.clone();
        node.pods = pods_by_node.get(node.name.as_str()).cloned().unwrap_or_default();
        node.price = claim.price_per_hour;
        let digest = pods_digest(node.pods.iter());
        let mut m = ManagedNode::new(node, claim.entered(ClaimState::Launching).unwrap_or(now) / 1000);
        m.disrupting = !matches!(claim.state, ClaimState::Ready | ClaimState::Registered);
        m.do_not_disrupt = n
            .node
            .labels
            .get(nodewright_core::labels::DO_NOT_DISRUPT)
            .is_some_and(|v| v == "true");
        m.node_class_hash = claim.node_class_hash.clone();
        if !m.disrupting {
            changes.push((managed.len(), *claim, digest.clone(), m.node.requested()));
        }
        planned_digests.insert(n.node.name.as_str(), digest);
        managed.push(m);
    }
    if managed.is_empty() {
        return Ok(());
    }
    // When each node's pods last changed: a write per node whose pods changed, concurrently (a
    // first run over 5,000 nodes writes 5,000 digests; one at a time they took 25 s).
    let mut writes = Vec::with_capacity(changes.len());
    for (_, claim, digest, requested) in &changes {
        writes.push(pods_changed_at(deps, claim, digest, requested.clone(), now));
    }
    let changed_at = crate::in_order(writes, DIGEST_WRITE_CONCURRENCY).await;
    for ((i, ..), at) in changes.iter().zip(changed_at) {
        managed[*i].last_pod_change_at = Some(at? / 1000);
    }
    // One snapshot: the index must be of the very list it indexes.
    let pools = deps.settings.pools();
    let input = disruption::Input {
        nodes: &managed,
        pools: &pools.config.node_pools,
        instance_types: &pools.instance_types,
        type_index: Some(&pools.type_index),
        daemonsets: &daemonsets,
        pdbs: &pdbs,
        node_class_hashes: &pools.node_class_hashes,
        now: now / 1000,
    };
    let node_claim: HashMap<&str, &ClaimRecord> = nodes
        .items
        .iter()
        .filter_map(|n| Some((n.node.name.as_str(), *claim_of.get(n.instance_id.as_deref()?)?)))
        .collect();
    // Every run, planned or not: protection set outside (or a lost write) is put right.
    protect_busy_asg_nodes(deps, &disruption::busy_asg_nodes(&input), &node_claim, out).await?;
    // A plan an earlier run did not finish is taken up first, as far as it still holds, so a
    // cluster with more to do than one run has time for is worked through instead of re-planned
    // (and re-started from its most valuable actions) every minute.
    let digest_of = |n: &str| planned_digests.get(n).cloned();
    let stored = match deps.state.resume_point().await {
        Ok(point) => point,
        Err(e) => {
            failed(out, "read resume point", "consolidation", &e.into());
            None
        }
    };
    let had_stored = stored.is_some();
    let (mut steps, mut planned_at) = (Vec::new(), now);
    if let Some(point) = stored.filter(|p| p.is_current(now)) {
        steps = disruption::still_valid(&input, &point, digest_of);
        planned_at = point.planned_at;
        out.push(Action::Resumed {
            planned_at: point.planned_at,
            stored: point.actions.len(),
            holding: steps.len(),
        });
    }
    if steps.is_empty() {
        // Nothing stored holds: plan afresh, at this run's time.
        planned_at = now;
        let fingerprint = disruption::fingerprint(&input);
        if let Some(planned_at) = fingerprint.and_then(|f| deps.consolidated.planned_at(f, now)) {
            out.push(Action::Unchanged { planned_at });
            if had_stored {
                store_resume_point(deps, None, out).await;
            }
            return Ok(());
        }
        // Cleared first: a run that dies past here leaves no claim that the cluster is quiet.
        deps.consolidated.set(None);
        let plan = disruption::plan(&input, &deps.settings.disruption);
        if plan.actions.is_empty()
            && let Some(f) = fingerprint
        {
            deps.consolidated.set(Some((f, now)));
        }
        steps = plan
            .actions
            .iter()
            .map(|a| disruption::PendingAction::of(a, digest_of))
            .collect();
        // Stored before acting: a run that dies at any await leaves the rest for the next.
        if !steps.is_empty() {
            store_resume_point(deps, Some(&disruption::ResumePoint::new(now, &steps)), out).await;
        } else if had_stored {
            store_resume_point(deps, None, out).await;
        }
    }
    // The planner's order is the value order (empty nodes, then multi-node, then single-node
    // consolidation, as Karpenter's methods run): a run out of time leaves the least.
    let mut finished = true;
    for (done, action) in steps.iter().enumerate() {
        if tokio::time::Instant::now() >= deadline {
            let left = steps.len() - done;
            tracing::warn!(
                done,
                left,
                "consolidation run out of time; the rest is stored for the next run"
            );
            out.push(Action::OutOfTime { done, left });
            store_resume_point(
                deps,
                Some(&disruption::ResumePoint::new(planned_at, &steps[done..])),
                out,
            )
            .await;
            finished = false;
            break;
        }
        // Re-validate against fresh state just before acting.
        if let Some(why) = changed_since_planning(deps, cluster, &action.nodes, &planned_digests, &node_claim).await? {
            tracing::info!(nodes = ?action.nodes, %why, "disruption aborted");
            out.push(Action::DisruptionAborted {
                nodes: action.nodes.clone(),
                why,
            });
            continue;
        }
        // The claims move to Cordoned first: that conditional write is what keeps a concurrent
        // run from acting on the same nodes (it sees them no longer Ready and aborts).
        // The nodes of one action are taken NODE_STEPS_IN_FLIGHT at once (an action may delete
        // hundreds of empty nodes); all are tried, and the action goes on only if all were taken.
        let mut takes = Vec::with_capacity(action.nodes.len());
        for node in &action.nodes {
            let Some(claim) = node_claim.get(node.as_str()).copied() else {
                continue;
            };
            takes.push(async move {
                let t = deps
                    .state
                    .transition_claim(&claim.id, ClaimState::Cordoned, now, &ClaimUpdate::default())
                    .await;
                (node.as_str(), claim, t)
            });
        }
        let mut taken = Vec::new();
        let mut first_error = None;
        for (node, claim, t) in crate::in_order(takes, NODE_STEPS_IN_FLIGHT).await {
            match t {
                Ok(nodewright_core::ports::state::TransitionOutcome::Advanced(_)) => taken.push((node, claim)),
                Ok(_) => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            // Whatever was taken is cordoned by the next run's retirement step.
            return Err(e.into());
        }
        if taken.len() != action.nodes.len() {
            // Nodes already taken stay cordoned: the drain step empties them and their pods are
            // provisioned as pending pods.
            out.push(Action::DisruptionAborted {
                nodes: action.nodes.clone(),
                why: "another invocation is disrupting these nodes".into(),
            });
            for (node, _) in &taken {
                cluster.cordon_and_taint(node, DISRUPTED_TAINT).await?;
            }
            continue;
        }
        let how = if action.is_delete() { "Delete" } else { "Replace" };
        for node in &action.nodes {
            out.events.push(crate::events::node(
                node,
                nodewright_core::ports::cluster::EventType::Normal,
                "DisruptionTerminating",
                "Disrupt",
                format!("Disrupting Node: {:?}/{how}", action.reason),
            ));
        }
        out.push(Action::Disruption {
            reason: format!("{:?}", action.reason),
            nodes: action.nodes.clone(),
            replacements: action.replacements,
            saving_per_hour: action.saving,
        });
        if !action.is_delete() {
            // Replacement first: the pods of the nodes go through provisioning (which plans the
            // replacement afresh against current offerings); the nodes drain once it is Ready.
            let nodes: Vec<&str> = action.nodes.iter().map(String::as_str).collect();
            let pods = workload_pods_of(&bound.items, &nodes);
            // Named by the claims taken, not the nodes: node names (private IPs) come back.
            let claims: Vec<&str> = taken.iter().map(|(_, c)| c.id.as_str()).collect();
            let holder = Holder::Invocation(format!("disrupt/{}", claims.join(",")));
            release_from_claims(deps, &pods, &claims).await?;
            provision(deps, pods, &holder, &[], now, out).await?;
        }
        let deleting = action.is_delete();
        let mut node_steps = Vec::with_capacity(taken.len());
        for &(node, claim) in &taken {
            node_steps.push(async move {
                let mut node_out = Outcome::new("", "");
                cluster.cordon_and_taint(node, DISRUPTED_TAINT).await?;
                node_out.push(Action::Cordoned {
                    node: node.to_string(),
                    taint: DISRUPTED_TAINT.into(),
                });
                node_out.push(Action::ClaimTransition {
                    claim: claim.id.clone(),
                    to: ClaimState::Cordoned.as_str().into(),
                    outcome: "advanced".into(),
                });
                if deleting {
                    deps.state
                        .transition_claim(&claim.id, ClaimState::Draining, now, &ClaimUpdate::default())
                        .await?;
                    if let Err(e) = drain(deps, node, DrainMode::Voluntary, false, &mut node_out).await {
                        failed(&mut node_out, "drain", node, &e);
                    }
                }
                Ok::<Outcome, crate::Error>(node_out)
            });
        }
        for node_out in crate::in_order(node_steps, NODE_STEPS_IN_FLIGHT).await {
            out.append(node_out?);
        }
    }
    if finished && !steps.is_empty() {
        store_resume_point(deps, None, out).await;
    }
    Ok(())
}

/// Stores (or clears) where this run stops. A failed write is a failed step: the next run then
/// plans afresh, or takes up an older point as far as it still holds.
async fn store_resume_point<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    point: Option<&disruption::ResumePoint>,
    out: &mut Outcome,
) {
    if let Err(e) = deps.state.put_resume_point(point).await {
        failed(out, "store resume point", "consolidation", &e.into());
    }
}
