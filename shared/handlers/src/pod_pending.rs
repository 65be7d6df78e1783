//! `pod-pending`: one watcher batch (`Pod Pending`, docs/events.md) -> capacity.

use nodewright_core::model::cluster_event::{PendingPod, PodPending};
use nodewright_core::ports::EpochMillis;
use nodewright_core::ports::state::Holder;

use crate::event::Envelope;
use crate::outcome::Outcome;
use crate::ports::{Capacity, ClusterApi, State};
use crate::provision::provision;
use crate::{Deps, Function, Result, once};

pub async fn handle<S: State, C: Capacity, K: ClusterApi>(
    deps: &Deps<S, C, K>,
    envelope: &Envelope,
    detail: PodPending,
    now: EpochMillis,
) -> Result<Outcome> {
    let function = Function::PodPending;
    if detail.cluster != deps.settings.cluster {
        return Ok(Outcome::ignored(
            function.name(),
            &envelope.id,
            format!(
                "batch for cluster {:?}; this is {:?}",
                detail.cluster, deps.settings.cluster
            ),
        ));
    }
    detail.check_times(now).map_err(crate::Error::invalid_event)?;
    let oldest_pending_secs = oldest_pending_secs(&detail.pods, now);
    let key = format!("{}/{}", function.name(), envelope.id);
    let mut outcome = once(deps, function, &key, &envelope.id, now, |mut out| async move {
        let pods = detail.pods.into_iter().map(|p| p.pod).collect();
        provision(deps, pods, &Holder::Invocation(envelope.id.clone()), &[], now, &mut out).await?;
        tracing::info!(
            event = %envelope.id,
            batch = %detail.batch_id,
            part = detail.part,
            launched = out.launched(),
            "pod-pending handled"
        );
        Ok(out)
    })
    .await?;
    outcome.oldest_pending_secs = oldest_pending_secs;
    Ok(outcome)
}

/// How long the oldest of `pods` has been pending, in whole seconds; None when no pod's creation
/// time is known. The `OldestPendingSeconds` metric that the pods-pending-too-long alarm watches.
pub(crate) fn oldest_pending_secs(pods: &[PendingPod], now: EpochMillis) -> Option<u64> {
    pods.iter()
        .filter(|p| p.created_at > 0)
        .map(|p| u64::try_from((now - p.created_at).max(0) / 1000).unwrap_or(0))
        .max()
}
