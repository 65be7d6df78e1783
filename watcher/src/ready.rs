//! When a Nodewright node's turn to Ready deserves a `Node Ready` event: on a transition seen live,
//! and on start-up only for nodes that turned Ready recently (a restarted watcher must not replay
//! every node in the cluster; the consumer is idempotent anyway).

use std::collections::HashMap;

/// Tracks the last Ready state per node.
#[derive(Debug, Default)]
pub struct ReadyTracker {
    ready: HashMap<String, bool>,
}

impl ReadyTracker {
    /// Records the node's state; true when an event should be sent. `initial` marks the watcher's
    /// initial listing; `ready_age_ms` is how long ago the Ready condition last changed.
    pub fn observe(&mut self, node: &str, ready: bool, initial: bool, ready_age_ms: i64) -> bool {
        let before = self.ready.insert(node.to_string(), ready);
        if !ready {
            return false;
        }
        match before {
            Some(true) => false,
            Some(false) => true,
            None => !initial || ready_age_ms < 120_000,
        }
    }

    pub fn forget(&mut self, node: &str) {
        self.ready.remove(node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_on_transitions_and_recent_readiness_only() {
        let mut t = ReadyTracker::default();
        assert!(!t.observe("old", true, true, 3_600_000), "long-ready node at start-up");
        assert!(
            t.observe("fresh", true, true, 5_000),
            "just turned Ready before we started"
        );
        assert!(!t.observe("new", false, false, 0));
        assert!(t.observe("new", true, false, 0), "NotReady -> Ready");
        assert!(!t.observe("new", true, false, 0), "still Ready: label change etc.");
        assert!(t.observe("seen-live", true, false, 0), "first seen live, already Ready");
    }
}
