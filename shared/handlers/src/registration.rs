//! Registration: how a Node becomes its claim's. A Node is matched to its claim the way a real node
//! can be, by `spec.providerID` → instance id → claim (the state index on instance id, or, when the
//! launch was not recorded yet, the instance's `nodewright.io/claim` tag). Registration then writes
//! the claim's labels on the Node and removes the unregistered taint
//! ([`nodewright_core::registration`]), and moves the claim to Ready.
//!
//! Two paths reach it: the watcher's `Node Ready` (the state-change function) and every
//! consolidation run's reconcile, which registers any Ready node whose claim is not Ready yet (a lost
//! event, a restarted watcher, an adopted instance).

use nodewright_core::model::ClaimState;
use nodewright_core::ports::EpochMillis;
use nodewright_core::ports::capacity::InstanceSummary;
use nodewright_core::ports::state::{ClaimRecord, ClaimUpdate, TransitionOutcome};
use nodewright_core::registration::NodeRegistration;
use nodewright_core::{CapacityType, NodePool, registration};

use crate::outcome::{Action, Outcome, transition_name};
use crate::ports::{Capacity, ClusterApi, State};
use crate::{Deps, Result};

/// The name of `claim`'s Node, if it has one. A claim that registered recorded its node's name:
/// one GET, accepted only while that node is still the instance's (`spec.providerID`; a
/// private-IP name comes back with a new instance); if it is gone or another instance's, the
/// claim has no node. A claim that never registered through us (adopted, or its report lost) is
/// looked up in the node list by instance id.
pub(crate) async fn node_of<K: ClusterApi>(
    cluster: &K,
    claim: &ClaimRecord,
    instance_id: &str,
) -> Result<Option<String>> {
    if let Some(name) = &claim.node_name {
        let node = cluster.node_named(name).await?;
        return Ok(node
            .filter(|n| n.instance_id.as_deref() == Some(instance_id))
            .map(|n| n.node.name));
    }
    let nodes = cluster.nodes().await?;
    Ok(nodes
        .items
        .into_iter()
        .find(|n| n.instance_id.as_deref() == Some(instance_id))
        .map(|n| n.node.name))
}

/// What EC2 says about an instance, as a claim update (adoption, an early `Node Ready`, an Auto
/// Scaling launch).
pub(crate) fn launch_update<S, C, K>(deps: &Deps<S, C, K>, i: &InstanceSummary) -> ClaimUpdate {
    let capacity_type = if i.spot {
        CapacityType::Spot
    } else {
        CapacityType::OnDemand
    };
    let t = deps.settings.type_by_name(&i.instance_type);
    let pools = deps.settings.pools();
    ClaimUpdate {
        instance_id: Some(i.instance_id.clone()),
        instance_type: Some(i.instance_type.clone()),
        capacity_type: Some(capacity_type),
        zone: Some(i.zone.clone()),
        price_per_hour: t.as_ref().and_then(|t| {
            t.offerings
                .iter()
                .filter(|o| o.capacity_type == capacity_type && o.zone == i.zone)
                .map(|o| o.price)
                .min_by(f64::total_cmp)
        }),
        // What the node will register with: its pool's EC2NodeClass applied.
        allocatable: t.map(|t| match i.pool.as_deref().and_then(|p| pools.config.pool(p)) {
            Some(pool) => pool.allocatable_of(&t),
            None => t.allocatable.clone(),
        }),
        node_name: None,
    }
}

/// The claim of `instance_id`: by the state index, else by the instance's claim tag when the
/// launch has not been recorded yet (then the launch is recorded first, so the instance id is never
/// lost). None when the instance is not a claimed one of ours.
pub(crate) async fn claim_of_instance<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    instance_id: &str,
    at: EpochMillis,
    out: &mut Outcome,
) -> Result<Option<ClaimRecord>> {
    if let Some(c) = deps.state.claim_by_instance(instance_id).await? {
        return Ok(Some(c));
    }
    let described = deps.capacity.describe(&[instance_id.to_string()]).await?;
    let Some(instance) = described
        .into_iter()
        .find(|i| i.cluster.as_deref() == Some(deps.settings.cluster.as_str()))
    else {
        return Ok(None);
    };
    let Some(claim_id) = &instance.claim_id else {
        return Ok(None);
    };
    if deps.state.get_claim(claim_id).await?.is_none() {
        return Ok(None);
    }
    let update = launch_update(deps, &instance);
    let t = deps
        .state
        .transition_claim(claim_id, ClaimState::Launched, at, &update)
        .await?;
    out.push(Action::ClaimTransition {
        claim: claim_id.clone(),
        to: ClaimState::Launched.as_str().into(),
        outcome: transition_name(&t).into(),
    });
    Ok(Some(match t {
        TransitionOutcome::Advanced(c) | TransitionOutcome::Duplicate(c) | TransitionOutcome::Stale(c) => c,
    }))
}

/// What a claim's node carries once registered: its labels, and its pool's taints and startup
/// taints.
pub(crate) fn claim_registration<S, C, K>(deps: &Deps<S, C, K>, claim: &ClaimRecord) -> NodeRegistration {
    let fallback;
    let pools = deps.settings.pools();
    let pool = match pools.config.node_pools.iter().find(|p| p.name == claim.pool) {
        Some(p) => p,
        None => {
            // The pool was removed from the configuration: the node still gets its identity.
            fallback = NodePool::new(&claim.pool);
            &fallback
        }
    };
    let t = claim.instance_type.as_deref().and_then(|n| pools.type_by_name(n));
    let mut labels = registration::node_labels(
        pool,
        t,
        claim.zone.as_deref().unwrap_or(""),
        claim.capacity_type.unwrap_or(CapacityType::OnDemand),
    );
    // The values the plan chose for the pool's multi-valued requirements.
    labels.extend(claim.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    NodeRegistration::for_pool(pool, labels)
}

/// Registers `node` as `claim`'s: labels and the unregistered taint (when there is cluster access),
/// then the claim goes Ready at `ready_at`.
pub(crate) async fn register<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    claim: &ClaimRecord,
    node: &str,
    ready_at: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    if claim.state > ClaimState::Ready {
        out.push(Action::Ignored {
            reason: format!("claim {} is already {}", claim.id, claim.state.as_str()),
        });
        return Ok(());
    }
    if let Some(cluster) = &deps.cluster {
        let registration = claim_registration(deps, claim);
        match cluster.register_node(node, &registration).await {
            Ok(true) => out.push(Action::Registered {
                claim: claim.id.clone(),
                node: node.to_string(),
                labels: registration.labels.len(),
            }),
            Ok(false) => {}
            Err(nodewright_core::ports::KubeError::NotFound { .. }) => {
                // Deleted since it reported Ready (its instance is going): nothing to register.
                out.push(Action::Ignored {
                    reason: format!("node {node} no longer exists"),
                });
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    let update = ClaimUpdate {
        instance_id: claim.instance_id.clone(),
        node_name: Some(node.to_string()),
        ..ClaimUpdate::default()
    };
    let t = deps
        .state
        .transition_claim(&claim.id, ClaimState::Ready, ready_at, &update)
        .await?;
    out.push(Action::ClaimTransition {
        claim: claim.id.clone(),
        to: ClaimState::Ready.as_str().into(),
        outcome: transition_name(&t).into(),
    });
    if let TransitionOutcome::Advanced(c) = &t {
        deps.state.mark_usage_running(&c.pool, 1).await?;
        let latency = c.entered(ClaimState::Launching).map(|l| ready_at - l);
        tracing::info!(claim = %c.id, node, launch_to_ready_ms = ?latency, "node registered and ready");
        out.push(Action::Ready {
            claim: c.id.clone(),
            node: node.to_string(),
            launch_to_ready_ms: latency,
        });
    }
    Ok(())
}
