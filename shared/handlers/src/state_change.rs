//! `state-change`: EC2 instance state changes, Auto Scaling launch/terminate results and the
//! watcher's `Node Ready` move claims through their lifecycle. A `Node Ready` names the node's
//! instance (from its providerID): the claim is found by instance id and the node registered
//! (crate::registration). Transitions are monotonic and take
//! the event's own time, so duplicates and late or out-of-order events are recognised and ignored.
//! An instance that dies releases its reservations and usage, has its Node object deleted, and its
//! pods (pending again) re-planned.

use nodewright_core::model::ClaimState;
use nodewright_core::ports::EpochMillis;
use nodewright_core::ports::state::{ClaimRecord, ClaimUpdate, Holder, TransitionOutcome};

use crate::event::{Event, InstanceState};
use crate::outcome::{Action, Outcome, transition_name};
use crate::ports::{Capacity, ClusterApi, State};
use crate::provision::{fail_claim, provision, release_pods, usage_of_type};
use crate::registration::{claim_of_instance, launch_update, register};
use crate::{Deps, Error, Function, Result};

pub async fn handle<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    event: Event,
    now: EpochMillis,
) -> Result<Outcome> {
    let event = match event {
        Event::ClaimLaunch(envelope, request) => {
            return crate::provision::launch_handed_off(deps, &envelope, request, now).await;
        }
        other => other,
    };
    let envelope = event.envelope().clone();
    // The event's own time orders transitions; one more than a day from our clock (a broken
    // clock, a documentation sample) orders nothing and the receive time stands in.
    let at = envelope
        .time
        .filter(|t| nodewright_core::model::cluster_event::check_event_time("time", *t, now).is_ok())
        .unwrap_or(now);
    let mut out = Outcome::new(Function::StateChange.name(), &envelope.id);
    match event {
        Event::InstanceState { instance_id, state, .. } => {
            let Some(claim) = deps.state.claim_by_instance(&instance_id).await? else {
                tracing::debug!(instance = %instance_id, "state change for an instance that is not ours");
                out.push(Action::Ignored {
                    reason: format!("instance {instance_id} has no Nodewright claim"),
                });
                return Ok(out);
            };
            let to = match state {
                InstanceState::Pending | InstanceState::Running => ClaimState::Launched,
                InstanceState::Stopping | InstanceState::Stopped | InstanceState::ShuttingDown => {
                    ClaimState::Terminating
                }
                InstanceState::Terminated => ClaimState::Terminated,
            };
            transition(deps, &claim, to, at, now, &mut out).await?;
        }
        Event::NodeReady(_, ready) => {
            if ready.cluster != deps.settings.cluster {
                out.push(Action::Ignored {
                    reason: format!("Node Ready for cluster {:?}", ready.cluster),
                });
                return Ok(out);
            }
            ready.check_times(now).map_err(Error::invalid_event)?;
            let Some(claim) = claim_of_instance(deps, &ready.instance_id, ready.ready_at, &mut out).await? else {
                out.push(Action::Ignored {
                    reason: format!(
                        "node {} (instance {}) has no Nodewright claim",
                        ready.node, ready.instance_id
                    ),
                });
                return Ok(out);
            };
            register(deps, &claim, &ready.node, ready.ready_at, &mut out).await?;
        }
        Event::AsgLaunch {
            group,
            instance_id,
            successful,
            ..
        } => {
            asg_launch(
                deps,
                &group,
                instance_id.as_deref(),
                successful,
                true,
                at,
                now,
                &mut out,
            )
            .await?;
        }
        Event::AsgTerminate { instance_id, .. } => {
            if let Some(claim) = deps.state.claim_by_instance(&instance_id).await? {
                transition(deps, &claim, ClaimState::Terminated, at, now, &mut out).await?;
            } else {
                out.push(Action::Ignored {
                    reason: format!("instance {instance_id} has no Nodewright claim"),
                });
            }
        }
        other => out.push(Action::Ignored {
            reason: format!("{} is not a state change", other.envelope().detail_type),
        }),
    }
    Ok(out)
}

/// An Auto Scaling group launched an instance (or failed to). The claim of the group that raised
/// it earliest and still waits for an instance takes it; a claim another launch event took meanwhile
/// is passed over, and an event for an instance a claim already holds is a duplicate. An instance
/// no claim waits for (a raise repeated after its record was lost, the group replacing an
/// instance) is adopted as a claim of the pool, so it is used or removed like any node, never left
/// running unowned.
///
/// Matching one instance is serialized by a lease (`instance/<id>`) taken before the claims are
/// read: a late launch event and consolidation's pass over unheld members, each deciding from its
/// own read, gave one instance to two claims. A busy lease fails with [`Error::InstanceBusy`]
/// (retryable); the holder's result is seen by the retry. A launch event waits a few seconds for
/// the lease (`wait`); consolidation's pass over members does not (it takes the member next run),
/// so a run with many busy members still finishes in its time.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn asg_launch<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    group: &str,
    instance_id: Option<&str>,
    successful: bool,
    wait: bool,
    at: EpochMillis,
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let Some(iid) = instance_id.filter(|_| successful) else {
        return match_launch(deps, group, instance_id, successful, at, now, out).await;
    };
    let holder = format!("{}/{}", out.function, out.event_id);
    let lease = format!("instance/{iid}");
    let tries = if wait { crate::provision::GROUP_LEASE_TRIES } else { 1 };
    let matched = crate::provision::with_lease(deps, &lease, &holder, tries, now, || async {
        let mut actions = Outcome::new(&out.function, &out.event_id);
        match_launch(deps, group, instance_id, successful, at, now, &mut actions).await?;
        Ok(actions.actions)
    })
    .await?;
    match matched {
        Some(actions) => {
            out.actions.extend(actions);
            Ok(())
        }
        None => Err(Error::InstanceBusy(format!("{iid} (group {group})"))),
    }
}

#[allow(clippy::too_many_arguments)]
async fn match_launch<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    group: &str,
    instance_id: Option<&str>,
    successful: bool,
    at: EpochMillis,
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let backing = format!("asg:{group}");
    let claims = deps.state.live_claims().await?;
    // Held by a live claim (read consistently), or by an ended one (the instance index: an ended
    // claim's instance was attached long before, so the index has it).
    let held = match instance_id {
        Some(iid) => {
            claims.iter().any(|c| c.instance_id.as_deref() == Some(iid))
                || deps.state.claim_by_instance(iid).await?.is_some()
        }
        None => false,
    };
    if let Some(iid) = instance_id
        && held
    {
        out.push(Action::Ignored {
            reason: format!("instance {iid} already has a claim (duplicate event)"),
        });
        return Ok(());
    }
    let mut waiting: Vec<ClaimRecord> = claims
        .into_iter()
        .filter(|c| c.backing == backing && c.state == ClaimState::Launching && c.instance_id.is_none())
        .collect();
    // Claims that raised the group first, in the order they raised it (the instance answers one
    // of those raises); a claim whose raise never happened (its invocation failed throughout)
    // only after them.
    waiting.sort_by_key(|c| {
        (
            c.scale_requested_at.is_none(),
            c.scale_requested_at.or(c.entered(ClaimState::Launching)),
            c.id.clone(),
        )
    });
    let pools = deps.settings.pools();
    let group_pool = pools.config.node_pools.iter().find(|p| {
        matches!(&p.backing, nodewright_core::nodepool::PoolBacking::AutoScalingGroup { group_name, .. }
            if group_name == group)
    });

    if !successful {
        let Some(claim) = waiting.first() else {
            out.push(Action::Ignored {
                reason: format!("no claim of group {group} is waiting for an instance"),
            });
            return Ok(());
        };
        if let Some(pool) = deps
            .settings
            .pools()
            .config
            .node_pools
            .iter()
            .find(|p| p.name == claim.pool)
        {
            let delta = crate::provision::usage_of_pool_types(pool, &deps.settings.pools().all_types);
            let mut actions = Vec::new();
            fail_claim(
                deps,
                pool,
                &claim.id,
                &delta,
                &claim.pods,
                now,
                "Auto Scaling launch unsuccessful",
                &mut actions,
            )
            .await?;
            out.actions.extend(actions);
        }
        return Ok(());
    }

    // The group chose the type and zone: EC2 says which, for the node's labels.
    let described = match instance_id {
        Some(iid) => deps.capacity.describe(&[iid.to_string()]).await?,
        None => Vec::new(),
    };
    let update = match described.first() {
        Some(i) => launch_update(deps, i),
        None => ClaimUpdate {
            instance_id: instance_id.map(str::to_string),
            ..Default::default()
        },
    };
    for claim in &waiting {
        let t = deps
            .state
            .transition_claim(&claim.id, ClaimState::Launched, at, &update)
            .await?;
        match &t {
            TransitionOutcome::Advanced(_) => {
                out.push(Action::ClaimTransition {
                    claim: claim.id.clone(),
                    to: ClaimState::Launched.as_str().into(),
                    outcome: transition_name(&t).into(),
                });
                // Charged as the pool's largest type; now the group's choice is known, counted
                // as what termination will release.
                let pools = deps.settings.pools();
                let claim_pool = pools.config.node_pools.iter().find(|p| p.name == claim.pool);
                if let (Some(pool), Some(t)) = (claim_pool, update.instance_type.as_deref()) {
                    let types = &pools.all_types;
                    let charged = crate::provision::usage_of_pool_types(pool, types);
                    crate::provision::settle_usage(deps, pool, &charged, t, types).await?;
                }
                return Ok(());
            }
            TransitionOutcome::Duplicate(c) | TransitionOutcome::Stale(c)
                if instance_id.is_some() && c.instance_id.as_deref() == instance_id =>
            {
                out.push(Action::Ignored {
                    reason: format!("claim {} already holds this instance (duplicate event)", c.id),
                });
                return Ok(());
            }
            // Taken by another instance's event since the read: the next claim in line.
            _ => {}
        }
    }
    let (Some(iid), Some(pool)) = (instance_id, group_pool) else {
        out.push(Action::Ignored {
            reason: format!("no claim of group {group} is waiting for an instance"),
        });
        return Ok(());
    };
    let id = format!("asg-{iid}");
    let mut record = ClaimRecord::launching(&id, &pool.name, Vec::new(), at);
    record.backing = backing;
    // Written with its instance: if the invocation dies before the transition below, the claim
    // holds the instance already (never waits for one, never takes another's).
    record.instance_id = Some(iid.to_string());
    record.instance_type.clone_from(&update.instance_type);
    record.zone.clone_from(&update.zone);
    record.capacity_type = update.capacity_type;
    if crate::provision::create_adopted_claim(deps, &record, update.instance_type.as_deref()).await? {
        let t = deps
            .state
            .transition_claim(&id, ClaimState::Launched, at, &update)
            .await?;
        if matches!(t, TransitionOutcome::Advanced(_)) {
            out.push(Action::Adopted {
                claim: id,
                instance_id: iid.to_string(),
            });
        }
    }
    Ok(())
}

/// Applies an instance lifecycle transition and, when the instance is gone, cleans up after it.
async fn transition<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    claim: &ClaimRecord,
    to: ClaimState,
    at: EpochMillis,
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let t = deps
        .state
        .transition_claim(&claim.id, to, at, &ClaimUpdate::default())
        .await?;
    out.push(Action::ClaimTransition {
        claim: claim.id.clone(),
        to: to.as_str().into(),
        outcome: transition_name(&t).into(),
    });
    if to == ClaimState::Terminated
        && let TransitionOutcome::Advanced(_) = t
    {
        instance_gone(deps, claim, now, out).await?;
    }
    Ok(())
}

/// Cleans up after an instance that is gone: reservations, usage, the Node object, and a re-plan of
/// pods left unschedulable when it died unexpectedly.
pub(crate) async fn instance_gone<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    claim: &ClaimRecord,
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let holder = Holder::Claim(claim.id.clone());
    let released = release_pods(&deps.state, claim.pods.iter().map(String::as_str), &holder).await?;
    out.push(Action::ReservationsReleased {
        holder: holder.encode(),
        pods: released,
    });
    let delta = usage_of_type(
        claim.instance_type.as_deref().unwrap_or(""),
        &deps.settings.pools().all_types,
    );
    deps.state
        .release_usage(&claim.pool, &delta, claim.counted_in_flight())
        .await?;
    let expected = matches!(claim.state, ClaimState::Draining | ClaimState::Terminating);
    let Some(cluster) = &deps.cluster else {
        return Ok(());
    };
    if let Some(iid) = &claim.instance_id
        && let Some(node) = crate::registration::node_of(cluster, claim, iid).await?
        && cluster.delete_node(&node).await?
    {
        out.push(Action::NodeDeleted { node });
    }
    if !expected {
        // Its pods are pending again (controllers recreate them): plan for them now rather than wait
        // for the watcher's next batch.
        let pending = cluster.unschedulable_pods().await?;
        if !pending.items.is_empty() {
            let holder = Holder::Invocation(format!("replan-{}", claim.id));
            let pods = pending.items.into_iter().map(|p| p.pod).collect();
            provision(deps, pods, &holder, &[], now, out).await?;
        }
    }
    Ok(())
}
