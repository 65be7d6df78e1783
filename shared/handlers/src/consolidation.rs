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
            deps.capacity.terminate(std::slice::from_ref(iid)).await?;
            out.push(Action::Terminated {
                instance_ids: vec![iid.clone()],
                reason: "drained".into(),
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
        let mut m = ManagedNode::new(node, claim.entered(ClaimState::Launching).unwrap_or(now) / 1000);
        m.disrupting = !matches!(claim.state, ClaimState::Ready | ClaimState::Registered);
        m.do_not_disrupt = n
            .node
            .labels
            .get(nodewright_core::labels::DO_NOT_DISRUPT)
            .is_some_and(|v| v == "true");
        // Without a pod-change history, the node's readiness time stands in (conservative).
        m.last_pod_change_at = claim.entered(ClaimState::Ready).map(|t| t / 1000);
        managed.push(m);
    }
    if managed.is_empty() {
        return Ok(());
    }
    let hashes = BTreeMap::new();
    let plan = disruption::plan(
        &disruption::Input {
            nodes: &managed,
            pools: &deps.settings.config.node_pools,
            instance_types: &deps.settings.instance_types,
            type_index: Some(&deps.settings.type_index),
            daemonsets: &daemonsets.items,
            pdbs: &pdbs,
            node_class_hashes: &hashes,
            now: now / 1000,
        },
        &disruption::Options::default(),
    );
    let node_claim: HashMap<&str, &ClaimRecord> = nodes
        .items
        .iter()
        .filter_map(|n| Some((n.node.name.as_str(), *claim_of.get(n.instance_id.as_deref()?)?)))
        .collect();
    for action in &plan.actions {
        out.push(Action::Disruption {
            reason: format!("{:?}", action.reason),
            nodes: action.nodes.clone(),
            replacements: action.replacements.len(),
            saving_per_hour: action.saving(),
        });
        if !action.replacements.is_empty() {
            // Replacement first: the pods of the nodes go through provisioning (which plans the
            // replacement afresh against current offerings).
            let nodes: Vec<&str> = action.nodes.iter().map(String::as_str).collect();
            let pods = workload_pods_of(&bound.items, &nodes);
            let holder = Holder::Invocation(format!("disrupt/{}", action.nodes.join(",")));
            let claims: Vec<&str> = nodes
                .iter()
                .filter_map(|n| node_claim.get(n).map(|c| c.id.as_str()))
                .collect();
            release_from_claims(deps, &pods, &claims).await?;
            provision(deps, pods, &holder, &[], now, out).await?;
        }
        for node in &action.nodes {
            let Some(claim) = node_claim.get(node.as_str()) else {
                continue;
            };
            cluster.cordon_and_taint(node, DISRUPTED_TAINT).await?;
            out.push(Action::Cordoned {
                node: node.clone(),
                taint: DISRUPTED_TAINT.into(),
            });
            deps.state
                .transition_claim(&claim.id, ClaimState::Cordoned, now, &ClaimUpdate::default())
                .await?;
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
