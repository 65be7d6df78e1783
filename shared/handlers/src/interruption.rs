//! `spot-interruption`: an instance of ours is about to go (spot interruption warning, capacity
//! reservation interruption, AWS Health scheduled change) or may go (rebalance recommendation).
//!
//! Replacement capacity comes first (the node's pods planned afresh, the interrupted offering
//! excluded and, for spot interruptions, cached unavailable), then the node is tainted, cordoned and
//! drained inside the 2-minute notice. Rebalance recommendations follow `NODEWRIGHT_REBALANCE`:
//! `replace` (replacement + cordon now; the consolidation run drains once the replacement is Ready),
//! `cordon`, or `ignore`. Scheduled changes have days of notice and are handled like `replace`.

use nodewright_core::CapacityType;
use nodewright_core::model::ClaimState;
use nodewright_core::ports::EpochMillis;
use nodewright_core::ports::cluster::{DrainMode, DrainOptions, EventType, INTERRUPTED_TAINT};
use nodewright_core::ports::state::{ClaimUpdate, Holder};

use crate::event::Event;
use crate::outcome::{Action, Outcome, transition_name};
use crate::ports::{Capacity, ClusterApi, State};
use crate::provision::{Exclude, provision, release_from_claims, workload_pods_of};
use crate::settings::RebalancePolicy;
use crate::{Deps, Function, Result, once};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Urgency {
    /// Minutes: replace, cordon, drain now.
    Now,
    /// Advisory: replace and cordon; drain when the replacement is Ready.
    Soon,
    CordonOnly,
}

pub async fn handle<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    event: Event,
    now: EpochMillis,
) -> Result<Outcome> {
    let function = Function::SpotInterruption;
    let envelope = event.envelope().clone();
    let (instances, urgency, spot_warning) = match &event {
        Event::SpotInterruption { instance_id, .. } => (vec![instance_id.clone()], Urgency::Now, true),
        Event::ReservationInterruption { instance_id, .. } => (vec![instance_id.clone()], Urgency::Now, false),
        Event::ScheduledChange { instance_ids, .. } => (instance_ids.clone(), Urgency::Soon, false),
        Event::Rebalance { instance_id, .. } => match deps.settings.rebalance {
            RebalancePolicy::Ignore => {
                return Ok(Outcome::ignored(
                    function.name(),
                    &envelope.id,
                    "rebalance recommendations are ignored (NODEWRIGHT_REBALANCE=ignore)",
                ));
            }
            RebalancePolicy::Cordon => (vec![instance_id.clone()], Urgency::CordonOnly, false),
            RebalancePolicy::Replace => (vec![instance_id.clone()], Urgency::Soon, false),
        },
        other => {
            return Ok(Outcome::ignored(
                function.name(),
                &envelope.id,
                format!("{} is not an interruption", other.envelope().detail_type),
            ));
        }
    };
    // The node Event's reason and note, as `kubectl describe node` shows them.
    let notice = match &event {
        Event::SpotInterruption { .. } => ("SpotInterrupted", "Spot interruption warning was triggered"),
        Event::ReservationInterruption { .. } => (
            "CapacityReservationInterrupted",
            "Capacity reservation interruption warning was triggered",
        ),
        Event::ScheduledChange { .. } => ("ScheduledChange", "AWS Health scheduled change for the instance"),
        _ => (
            "SpotRebalanceRecommendation",
            "EC2 rebalance recommendation was triggered",
        ),
    };
    let key = format!("{}/{}", function.name(), envelope.id);
    let event_id = envelope.id.clone();
    once(deps, function, &key, &envelope.id, now, |mut out| async move {
        for instance_id in &instances {
            let notice = Notice {
                urgency,
                spot_warning,
                reason: notice.0,
                note: notice.1,
            };
            interrupt(deps, instance_id, &notice, &event_id, now, &mut out).await?;
        }
        Ok(out)
    })
    .await
}

/// What an interruption asks for and how it is reported.
struct Notice {
    urgency: Urgency,
    spot_warning: bool,
    /// The node Event's reason and note.
    reason: &'static str,
    note: &'static str,
}

async fn interrupt<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    instance_id: &str,
    notice: &Notice,
    event_id: &str,
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let (urgency, spot_warning) = (notice.urgency, notice.spot_warning);
    let Some(claim) = deps.state.claim_by_instance(instance_id).await? else {
        tracing::debug!(instance = instance_id, "interruption for an instance that is not ours");
        out.push(Action::Ignored {
            reason: format!("instance {instance_id} is not a Nodewright instance"),
        });
        return Ok(());
    };
    if claim.state.is_terminal() {
        out.push(Action::Ignored {
            reason: format!("claim {} is already {}", claim.id, claim.state.as_str()),
        });
        return Ok(());
    }
    let offering = match (&claim.instance_type, &claim.zone) {
        (Some(t), Some(z)) => Some(Exclude {
            capacity_type: claim.capacity_type.unwrap_or(CapacityType::OnDemand),
            instance_type: t.clone(),
            zone: z.clone(),
        }),
        _ => None,
    };
    if spot_warning && let Some(o) = &offering {
        deps.state
            .mark_offering_unavailable(CapacityType::Spot, &o.instance_type, &o.zone, "SpotInterruption", now)
            .await?;
        out.push(Action::OfferingUnavailable {
            capacity_type: CapacityType::Spot,
            instance_type: o.instance_type.clone(),
            zone: o.zone.clone(),
            reason: "SpotInterruption".into(),
        });
    }
    let Some(cluster) = &deps.cluster else {
        out.push(Action::Ignored {
            reason: "no cluster access configured: cannot find the node's pods, cordon or drain".into(),
        });
        return Ok(());
    };
    let node = crate::registration::node_of(cluster, &claim, instance_id).await?;

    if urgency != Urgency::CordonOnly
        && let Some(node) = &node
    {
        // The node's workload pods, re-planned elsewhere before the node goes.
        let bound = cluster.pods_on_nodes(std::slice::from_ref(node)).await?;
        let pods = workload_pods_of(&bound.items, &[node.as_str()]);
        if !pods.is_empty() {
            let holder = Holder::Invocation(format!("{event_id}/{instance_id}"));
            let exclude: Vec<Exclude> = offering.iter().cloned().collect();
            release_from_claims(deps, &pods, &[claim.id.as_str()]).await?;
            provision(deps, pods, &holder, &exclude, now, out).await?;
        }
    }
    // The Node is cordoned before the claim is recorded as cordoned: a claim never says cordoned
    // while pods can still land on its node.
    if let Some(node) = &node {
        cluster.cordon_and_taint(node, INTERRUPTED_TAINT).await?;
        out.events.push(crate::events::node(
            node,
            EventType::Warning,
            notice.reason,
            "Interrupt",
            format!("{} for {instance_id}; cordoned and draining", notice.note),
        ));
        out.push(Action::Cordoned {
            node: node.clone(),
            taint: INTERRUPTED_TAINT.into(),
        });
    }
    let t = deps
        .state
        .transition_claim(&claim.id, ClaimState::Cordoned, now, &ClaimUpdate::default())
        .await?;
    out.push(Action::ClaimTransition {
        claim: claim.id.clone(),
        to: ClaimState::Cordoned.as_str().into(),
        outcome: transition_name(&t).into(),
    });
    let Some(node) = node else {
        out.push(Action::Ignored {
            reason: format!("instance {instance_id} has no Node object (not registered yet)"),
        });
        return Ok(());
    };
    if urgency == Urgency::Now {
        deps.state
            .transition_claim(&claim.id, ClaimState::Draining, now, &ClaimUpdate::default())
            .await?;
        let options = DrainOptions::new(DrainMode::Forced, deps.settings.interruption_drain_deadline);
        match cluster.drain(&node, &options).await {
            Ok(report) => out.push(Action::drained(node, &report)),
            Err(e @ nodewright_core::ports::KubeError::PdbBlocked { .. }) => out.push(Action::DrainBlocked {
                node,
                error: e.to_string(),
            }),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
