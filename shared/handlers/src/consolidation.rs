//! `consolidation` (EventBridge schedule, every minute; reserved concurrency 1).
//!
//! Reconciliation first, every run:
//! 1. sweep: provision for unschedulable pods the events missed;
//! 2. adopt instances tagged as ours whose claim record is missing (an invocation died between
//!    launch and record), and terminate untagged-claim orphans past the registration timeout;
//! 3. terminate claims launched but not registered within the registration timeout;
//! 4. close claims whose instance is gone;
//! 5. drain cordoned claims once their replacements are Ready, and terminate drained ones.
//!
//! Then disruption: the core planner's actions (docs/disruption.md), executed within the budgets the
//! planner already applied: replacements are provisioned first and the nodes cordoned; nodes with no
//! replacement are cordoned and drained now; termination follows on a later run once drained.

use std::collections::{BTreeMap, HashMap, HashSet};

use nodewright_aws::EpochMillis;
use nodewright_aws::state::{ClaimRecord, ClaimUpdate, Holder};
use nodewright_core::disruption::{self, ManagedNode};
use nodewright_core::model::ClaimState;
use nodewright_kube::{DISRUPTED_TAINT, DrainMode, DrainOptions};

use crate::event::Envelope;
use crate::outcome::{Action, Outcome, transition_name};
use crate::ports::{Capacity, ClusterApi, State};
use crate::provision::{provision, release_from_claims, workload_pods_of};
use crate::state_change::instance_gone;
use crate::{Deps, Function, Result};

/// EC2's DescribeInstances is eventually consistent: a claim launched this recently may not be
/// listed yet, and is not declared gone.
const DESCRIBE_GRACE_MS: i64 = 2 * 60 * 1000;
/// A claim stuck in `launching` with no instance this long had its invocation die before launching.
const LAUNCHING_TIMEOUT_MS: i64 = 20 * 60 * 1000;
/// How long a voluntary drain retries PDB-blocked evictions in one run.
const DRAIN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

pub async fn handle<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    envelope: &Envelope,
    now: EpochMillis,
) -> Result<Outcome> {
    let mut out = Outcome::new(Function::Consolidation.name(), &envelope.id);
    if let Some(cluster) = &deps.cluster {
        let pending = cluster.unschedulable_pods().await?;
        if !pending.items.is_empty() {
            let holder = Holder::Invocation(format!("sweep/{}", envelope.id));
            provision(deps, pending.items, &holder, &[], now, &mut out).await?;
        }
    }
    reconcile(deps, now, &mut out).await?;
    if deps.cluster.is_some() {
        disrupt(deps, now, &mut out).await?;
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
    let claims = deps.state.claims().await?;
    let by_id: HashMap<&str, &ClaimRecord> = claims.iter().map(|c| (c.id.as_str(), c)).collect();

    // 2. Adopt or remove instances without a record.
    let mut orphans = Vec::new();
    for i in &instances {
        match &i.claim_id {
            Some(cid) if !by_id.contains_key(cid.as_str()) => {
                let pool = i.pool.clone().unwrap_or_default();
                let launched_at = i.launch_time_millis.unwrap_or(now);
                let mut record = ClaimRecord::launching(cid, &pool, Vec::new(), launched_at);
                record.instance_id = Some(i.instance_id.clone());
                if deps.state.create_claim(&record).await? {
                    let update = ClaimUpdate {
                        instance_id: Some(i.instance_id.clone()),
                        instance_type: Some(i.instance_type.clone()),
                        capacity_type: Some(if i.spot {
                            nodewright_core::CapacityType::Spot
                        } else {
                            nodewright_core::CapacityType::OnDemand
                        }),
                        zone: Some(i.zone.clone()),
                        ..Default::default()
                    };
                    deps.state
                        .transition_claim(cid, ClaimState::Launched, launched_at, &update)
                        .await?;
                    out.push(Action::Adopted {
                        claim: cid.clone(),
                        instance_id: i.instance_id.clone(),
                    });
                }
            }
            None if i.launch_time_millis.is_some_and(|t| now - t > timeout) => orphans.push(i.instance_id.clone()),
            _ => {}
        }
    }
    if !orphans.is_empty() {
        deps.capacity.terminate(&orphans).await?;
        out.push(Action::Terminated {
            instance_ids: orphans,
            reason: "tagged for this cluster but never claimed".into(),
        });
    }

    let live_instances: HashSet<&str> = instances.iter().map(|i| i.instance_id.as_str()).collect();
    for claim in &claims {
        let launched_at = claim.entered(ClaimState::Launching).unwrap_or(now);
        match claim.state {
            // 3. Never registered.
            ClaimState::Launching | ClaimState::Launched if now - launched_at > timeout => {
                if let Some(iid) = &claim.instance_id {
                    if live_instances.contains(iid.as_str()) {
                        deps.capacity.terminate(std::slice::from_ref(iid)).await?;
                    }
                    out.push(Action::Terminated {
                        instance_ids: vec![iid.clone()],
                        reason: format!("not registered within {} s", timeout / 1000),
                    });
                } else if now - launched_at <= LAUNCHING_TIMEOUT_MS {
                    continue;
                }
                close(deps, claim, ClaimState::Terminated, now, out).await?;
            }
            // 4. Instance gone without an event reaching us.
            s if s.is_live() && !s.is_in_flight() || s == ClaimState::Launched => {
                let Some(iid) = &claim.instance_id else { continue };
                if now - launched_at > DESCRIBE_GRACE_MS && !live_instances.contains(iid.as_str()) {
                    close(deps, claim, ClaimState::Terminated, now, out).await?;
                }
            }
            _ => {}
        }
    }

    // 5. Cordoned claims (rebalance, scheduled change, replace actions) drain once nothing is in
    // flight; drained claims terminate.
    let Some(cluster) = &deps.cluster else {
        return Ok(());
    };
    let in_flight = claims.iter().any(|c| c.state.is_in_flight());
    let nodes = cluster.nodes().await?;
    let node_of = |iid: &Option<String>| {
        nodes
            .items
            .iter()
            .find(|n| n.instance_id.is_some() && n.instance_id == *iid)
            .map(|n| n.node.name.clone())
    };
    for claim in claims.iter().filter(|c| c.state == ClaimState::Cordoned) {
        if in_flight {
            break;
        }
        let Some(node) = node_of(&claim.instance_id) else {
            continue;
        };
        deps.state
            .transition_claim(&claim.id, ClaimState::Draining, now, &ClaimUpdate::default())
            .await?;
        drain(deps, &node, DrainMode::Voluntary, out).await?;
    }
    let bound = cluster.bound_pods().await?;
    for claim in claims.iter().filter(|c| c.state == ClaimState::Draining) {
        let node = node_of(&claim.instance_id);
        let busy = node.as_ref().is_some_and(|n| {
            bound.items.iter().any(|p| {
                p.node_name.as_deref() == Some(n.as_str()) && p.owner.as_ref().is_none_or(|o| o.kind != "DaemonSet")
            })
        });
        if busy {
            continue;
        }
        if let Some(iid) = &claim.instance_id {
            let ids = std::slice::from_ref(iid);
            match claim.backing.strip_prefix("asg:") {
                // An Auto Scaling pool's node leaves with a desired-capacity decrement (else the
                // group would launch a replacement); released from protection first.
                Some(group) => {
                    deps.capacity.set_protection(group, ids, false).await?;
                    let done = deps.capacity.scale_in(group, ids).await?;
                    out.push(Action::Terminated {
                        instance_ids: done,
                        reason: format!("drained; scaled in {group}"),
                    });
                }
                None => {
                    deps.capacity.terminate(ids).await?;
                    out.push(Action::Terminated {
                        instance_ids: vec![iid.clone()],
                        reason: "drained".into(),
                    });
                }
            }
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
    }
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
    if matches!(t, nodewright_aws::state::TransitionOutcome::Advanced(_)) {
        instance_gone(deps, claim, now, out).await?;
    }
    Ok(())
}

async fn drain<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    node: &str,
    mode: DrainMode,
    out: &mut Outcome,
) -> Result<()> {
    let Some(cluster) = &deps.cluster else { return Ok(()) };
    match cluster.drain(node, &DrainOptions::new(mode, DRAIN_DEADLINE)).await {
        Ok(r) => out.push(Action::Drained {
            node: node.into(),
            evicted: r.evicted.len(),
            skipped: r.skipped.len(),
        }),
        Err(e @ (nodewright_kube::Error::PdbBlocked { .. } | nodewright_kube::Error::DoNotDisrupt { .. })) => {
            out.push(Action::DrainBlocked {
                node: node.into(),
                error: e.to_string(),
            })
        }
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
    let mut uids: Vec<&str> = pods.filter(|p| !p.is_daemonset()).map(|p| p.uid.as_str()).collect();
    uids.sort_unstable();
    let digest = nodewright_core::digest::fnv1a_hex(uids.iter().flat_map(|u| u.bytes().chain([0])));
    format!("{digest}:{}", uids.len())
}

/// When the pods on `claim`'s node last changed, given their digest now; records a change on the
/// claim. The first sighting counts from the node's readiness (when its pods arrived is unknown).
async fn pods_changed_at<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    claim: &ClaimRecord,
    digest: &str,
    now: EpochMillis,
) -> Result<EpochMillis> {
    if let (Some(d), Some(at)) = (&claim.pods_digest, claim.pods_changed_at)
        && d == digest
    {
        return Ok(at);
    }
    let at = match claim.pods_digest {
        None => claim.entered(ClaimState::Ready).unwrap_or(now),
        Some(_) => now,
    };
    let mut updated = claim.clone();
    updated.pods_digest = Some(digest.to_string());
    updated.pods_changed_at = Some(at);
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
    let bound = cluster.bound_pods().await?;
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
            let fresh = deps.state.get_claim(&claim.id).await?;
            let state = fresh.map(|c| c.state);
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

async fn disrupt<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let Some(cluster) = &deps.cluster else { return Ok(()) };
    let claims = deps.state.claims().await?;
    let nodes = cluster.nodes().await?;
    let bound = cluster.bound_pods().await?;
    let daemonsets = cluster.daemonsets().await?;
    let pdbs = cluster.pdbs().await?;
    let mut pods_by_node: HashMap<&str, Vec<nodewright_core::Pod>> = HashMap::new();
    for p in &bound.items {
        if let Some(n) = &p.node_name {
            pods_by_node.entry(n.as_str()).or_default().push(p.clone());
        }
    }
    let claim_of: HashMap<&str, &ClaimRecord> = claims
        .iter()
        .filter_map(|c| Some((c.instance_id.as_deref()?, c)))
        .collect();
    let mut managed = Vec::new();
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
            m.last_pod_change_at = Some(pods_changed_at(deps, claim, &digest, now).await? / 1000);
        }
        planned_digests.insert(n.node.name.as_str(), digest);
        managed.push(m);
    }
    if managed.is_empty() {
        return Ok(());
    }
    let plan = disruption::plan(
        &disruption::Input {
            nodes: &managed,
            pools: &deps.settings.config.node_pools,
            instance_types: &deps.settings.instance_types,
            type_index: Some(&deps.settings.type_index),
            daemonsets: &daemonsets.items,
            pdbs: &pdbs,
            node_class_hashes: &deps.settings.node_class_hashes,
            now: now / 1000,
        },
        &disruption::Options::default(),
    );
    let node_claim: HashMap<&str, &ClaimRecord> = nodes
        .items
        .iter()
        .filter_map(|n| Some((n.node.name.as_str(), *claim_of.get(n.instance_id.as_deref()?)?)))
        .collect();
    protect_busy_asg_nodes(deps, &plan.protect, &node_claim, out).await?;
    for action in &plan.actions {
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
        let mut taken = Vec::new();
        for node in &action.nodes {
            let Some(claim) = node_claim.get(node.as_str()) else {
                continue;
            };
            let t = deps
                .state
                .transition_claim(&claim.id, ClaimState::Cordoned, now, &ClaimUpdate::default())
                .await?;
            if !matches!(t, nodewright_aws::state::TransitionOutcome::Advanced(_)) {
                break;
            }
            taken.push((node.as_str(), *claim));
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
        out.push(Action::Disruption {
            reason: format!("{:?}", action.reason),
            nodes: action.nodes.clone(),
            replacements: action.replacements.len(),
            saving_per_hour: action.saving(),
        });
        if !action.replacements.is_empty() {
            // Replacement first: the pods of the nodes go through provisioning (which plans the
            // replacement afresh against current offerings); the nodes drain once it is Ready.
            let nodes: Vec<&str> = action.nodes.iter().map(String::as_str).collect();
            let pods = workload_pods_of(&bound.items, &nodes);
            let holder = Holder::Invocation(format!("disrupt/{}", action.nodes.join(",")));
            let claims: Vec<&str> = taken.iter().map(|(_, c)| c.id.as_str()).collect();
            release_from_claims(deps, &pods, &claims).await?;
            provision(deps, pods, &holder, &[], now, out).await?;
        }
        for (node, claim) in &taken {
            cluster.cordon_and_taint(node, DISRUPTED_TAINT).await?;
            out.push(Action::Cordoned {
                node: (*node).to_string(),
                taint: DISRUPTED_TAINT.into(),
            });
            out.push(Action::ClaimTransition {
                claim: claim.id.clone(),
                to: ClaimState::Cordoned.as_str().into(),
                outcome: "advanced".into(),
            });
            if action.replacements.is_empty() {
                deps.state
                    .transition_claim(&claim.id, ClaimState::Draining, now, &ClaimUpdate::default())
                    .await?;
                drain(deps, node, DrainMode::Voluntary, out).await?;
            }
        }
    }
    Ok(())
}
