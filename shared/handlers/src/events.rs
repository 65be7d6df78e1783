//! Kubernetes Events for what Nodewright decided, as Karpenter posts them, so `kubectl describe pod`
//! and `kubectl describe node` say it: a pod was nominated to a claim (and what it launched), could
//! not be scheduled (and why), a launch failed; a node is being disrupted or interrupted (and why).
//!
//! Handlers collect Events in their [`Outcome`]; they are posted once the handler is done, at most
//! [`MAX_EVENTS_PER_INVOCATION`] per invocation, and never fail it (an Event is a report, not
//! state). Each has a name derived from its object, reason and note
//! ([`ObjectEvent::name`]), so a replayed or duplicated invocation does not post it twice.

use std::collections::HashMap;

use nodewright_core::Pod;
use nodewright_core::ports::cluster::{EventObject, EventType, MAX_EVENTS_PER_INVOCATION, ObjectEvent};
use nodewright_core::ports::{ClusterApi, EpochMillis};

use crate::outcome::{Action, Outcome};

/// The object an Event about `pod` regards (a real pod's uid; a test pod's `ns/name` is none).
pub fn pod_object(pod: &Pod) -> EventObject {
    let uid = (!pod.uid.contains('/')).then_some(pod.uid.as_str());
    EventObject::pod(&pod.namespace, &pod.name, uid)
}

/// The pod named `namespace/name`.
fn pod_named(name: &str) -> Option<EventObject> {
    let (namespace, name) = name.split_once('/')?;
    Some(EventObject::pod(namespace, name, None))
}

/// Events for the pods of one claim, from what its launch did.
pub fn for_claim(pods: &[&Pod], actions: &[Action]) -> Vec<ObjectEvent> {
    let mut out = Vec::new();
    for a in actions {
        let (event_type, reason, note) = match a {
            Action::Launched {
                claim,
                instance_type,
                capacity_type,
                zone,
                instance_id,
                ..
            } => (
                EventType::Normal,
                "Nominated",
                format!(
                    "Pod should schedule on: nodeclaim/{claim} ({instance_type}, {capacity_type}, {zone}, {instance_id})"
                ),
            ),
            Action::ScaledUp { claim, group, .. } => (
                EventType::Normal,
                "Nominated",
                format!("Pod should schedule on: nodeclaim/{claim} (Auto Scaling group {group})"),
            ),
            Action::LaunchRequested { claim, .. } => (
                EventType::Normal,
                "Nominated",
                format!("Pod should schedule on: nodeclaim/{claim} (launching)"),
            ),
            Action::PackedOntoClaim { claim, .. } | Action::ResumedAttempt { claim, .. } => (
                EventType::Normal,
                "Nominated",
                format!("Pod should schedule on: nodeclaim/{claim} (in flight)"),
            ),
            Action::LaunchFailed { claim, error, .. } => (
                EventType::Warning,
                "FailedLaunch",
                format!("Launching nodeclaim/{claim} failed, retrying: {error}"),
            ),
            _ => continue,
        };
        out.extend(
            pods.iter()
                .map(|p| ObjectEvent::new(pod_object(p), event_type, reason, "Provision", note.clone())),
        );
    }
    out
}

/// Events for the pods of claims packed onto, by claim.
pub fn for_packed(by_uid: &HashMap<&str, &Pod>, claim: &str, uids: &[&str]) -> Vec<ObjectEvent> {
    let pods: Vec<&Pod> = uids.iter().filter_map(|u| by_uid.get(u).copied()).collect();
    for_claim(
        &pods,
        &[Action::PackedOntoClaim {
            claim: claim.into(),
            pods: pods.len(),
        }],
    )
}

/// A `FailedScheduling` Event for a pod nothing can take.
pub fn unschedulable(pod: Option<&Pod>, name: &str, reason: &str) -> Option<ObjectEvent> {
    let object = pod.map(pod_object).or_else(|| pod_named(name))?;
    Some(ObjectEvent::new(
        object,
        EventType::Warning,
        "FailedScheduling",
        "Provision",
        format!("Failed to schedule pod, {reason}"),
    ))
}

/// An Event on a node Nodewright is disrupting or that is being interrupted.
pub fn node(node: &str, event_type: EventType, reason: &str, action: &'static str, note: String) -> ObjectEvent {
    ObjectEvent::new(EventObject::node(node), event_type, reason, action, note)
}

/// Posts the outcome's Events (best effort), at most [`MAX_EVENTS_PER_INVOCATION`].
pub async fn post<K: ClusterApi>(cluster: Option<&K>, outcome: &mut Outcome, now: EpochMillis) {
    let mut events = std::mem::take(&mut outcome.events);
    for e in &mut events {
        e.time = now;
    }
    let Some(cluster) = cluster else { return };
    if events.is_empty() {
        return;
    }
    // One Event per object, reason and note (a pod in two actions of one claim is said once).
    let mut seen = std::collections::HashSet::new();
    events.retain(|e| seen.insert(e.name()));
    let dropped = events.len().saturating_sub(MAX_EVENTS_PER_INVOCATION);
    events.truncate(MAX_EVENTS_PER_INVOCATION);
    match cluster.record_events(&events).await {
        Ok(created) => tracing::debug!(created, dropped, "events posted"),
        Err(e) => tracing::warn!(error = %e, events = events.len(), "posting events failed"),
    }
    if dropped > 0 {
        tracing::info!(
            dropped,
            limit = MAX_EVENTS_PER_INVOCATION,
            "events over the limit not posted"
        );
    }
}
