//! When a node's turn to Ready deserves a `Node Ready` event, and the event itself.
//!
//! The watcher watches every node: a node Nodewright launched carries nothing that says so before
//! it is registered (its claim's labels are written by registration), and Auto Scaling pool nodes
//! carry only what the group's own launch template gives them. What links a node to its claim is
//! `spec.providerID` (`aws:///<zone>/<instance-id>`); nodes without one are not EC2 instances and
//! are skipped. On start-up (the watch's initial listing, and every re-list after a lost watch)
//! every Ready node is reported: a restarted watcher cannot know what it sent before, and the
//! consumer is idempotent. Live, an event goes out on each NotReady -> Ready transition.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Node;
use nodewright_core::model::cluster_event::{NODE_READY_SCHEMA_VERSION, NodeReady};
use nodewright_core::model::{self};

/// Tracks the last Ready state per node.
#[derive(Debug, Default)]
pub struct ReadyTracker {
    ready: HashMap<String, bool>,
}

impl ReadyTracker {
    /// Records the node's state; true when an event should be sent: the node is Ready and was not
    /// known Ready before (first sight, at start-up or live, or a NotReady -> Ready transition).
    pub fn observe(&mut self, node: &str, ready: bool) -> bool {
        let before = self.ready.insert(node.to_string(), ready);
        ready && before != Some(true)
    }

    pub fn forget(&mut self, node: &str) {
        self.ready.remove(node);
    }

    /// Forgets everything: a re-list (after a lost watch) reports every Ready node again.
    pub fn reset(&mut self) {
        self.ready.clear();
    }
}

/// When the node's Ready condition last turned True (Unix ms), if it is Ready.
pub fn ready_since(node: &Node) -> Option<i64> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map(|t| t.0.as_millisecond())
                .unwrap_or(0)
        })
}

/// The `Node Ready` event for a Ready EC2 node at `now` (None: not Ready, not an EC2 instance).
/// `readyAt` is the condition's transition time, kept within the consumer's window of `now`.
pub fn node_ready_event(cluster: &str, node: &Node, now: i64) -> Option<NodeReady> {
    let name = node.metadata.name.clone()?;
    let since = ready_since(node)?;
    let instance_id = node
        .spec
        .as_ref()
        .and_then(|s| s.provider_id.as_deref())
        .and_then(model::instance_id_from_provider_id)?
        .to_string();
    let window = nodewright_core::model::cluster_event::EVENT_TIME_WINDOW_MS;
    let ready_at = if since > 0 && (now - since).abs() < window {
        since
    } else {
        now
    };
    Some(NodeReady {
        schema_version: NODE_READY_SCHEMA_VERSION,
        cluster: cluster.to_string(),
        node: name,
        instance_id,
        ready_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_on_first_sight_and_transitions_only() {
        let mut t = ReadyTracker::default();
        assert!(t.observe("old", true), "a long-Ready node at start-up is reported");
        assert!(!t.observe("old", true), "still Ready: label change etc.");
        assert!(!t.observe("new", false));
        assert!(t.observe("new", true), "NotReady -> Ready");
        assert!(!t.observe("new", true));
        t.reset();
        assert!(t.observe("new", true), "a re-list reports again");
    }

    fn node(provider_id: Option<&str>, ready_at: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "ip-10-0-1-7.ec2.internal"},
            "spec": {"providerID": provider_id},
            "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ready_at}]}
        }))
        .expect("node")
    }

    #[test]
    fn events_name_the_instance_from_the_provider_id() {
        let now = 1_700_000_000_000;
        let n = node(Some("aws:///us-east-1a/i-0123456789abcdef0"), "2023-11-14T22:13:10Z");
        let e = node_ready_event("prod", &n, now).expect("event");
        assert_eq!(e.instance_id, "i-0123456789abcdef0");
        assert_eq!(e.ready_at, 1_699_999_990_000);
        e.validate().expect("valid");
        assert!(node_ready_event("prod", &node(None, "2023-11-14T22:13:10Z"), now).is_none());
        assert!(node_ready_event("prod", &node(Some("kind://docker/x/y"), "2023-11-14T22:13:10Z"), now).is_none());
        let skewed = node(Some("aws:///us-east-1a/i-0123456789abcdef0"), "1999-01-01T00:00:00Z");
        assert_eq!(
            node_ready_event("prod", &skewed, now).expect("event").ready_at,
            now,
            "a transition time outside the window is replaced by now"
        );
    }
}
