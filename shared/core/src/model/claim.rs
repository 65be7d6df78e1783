//! The lifecycle of a node claim: the states a launched node passes through, and the rule that
//! keeps late or duplicated events from moving a claim backwards.

use serde::{Deserialize, Serialize};

/// Where a node claim is in its life. The order of the variants is the order of the lifecycle:
/// a claim only ever moves forward, so an event that arrives late (a `running` state-change after
/// `terminated`) or twice is recognised and ignored instead of resurrecting or rewinding the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaimState {
    /// Capacity was decided and a launch is in progress (no instance id yet, or not confirmed).
    Launching,
    /// EC2 returned an instance (pending or running).
    Launched,
    /// The instance registered as a Kubernetes Node.
    Registered,
    /// The Node reported Ready.
    Ready,
    /// Cordoned for disruption or interruption: takes no new pods.
    Cordoned,
    /// Pods are being evicted.
    Draining,
    /// Termination was requested.
    Terminating,
    /// The instance is gone. Terminal.
    Terminated,
    /// The launch failed or the node never registered. Terminal.
    Failed,
}

/// What applying an event to a claim's state does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The claim moves to the new state.
    Advance,
    /// The claim is already in that state (a duplicate event): nothing to write.
    Duplicate,
    /// The event is older than the claim's state (late or out of order): ignored.
    Stale,
}

impl ClaimState {
    pub const ALL: [ClaimState; 9] = [
        ClaimState::Launching,
        ClaimState::Launched,
        ClaimState::Registered,
        ClaimState::Ready,
        ClaimState::Cordoned,
        ClaimState::Draining,
        ClaimState::Terminating,
        ClaimState::Terminated,
        ClaimState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClaimState::Launching => "launching",
            ClaimState::Launched => "launched",
            ClaimState::Registered => "registered",
            ClaimState::Ready => "ready",
            ClaimState::Cordoned => "cordoned",
            ClaimState::Draining => "draining",
            ClaimState::Terminating => "terminating",
            ClaimState::Terminated => "terminated",
            ClaimState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ClaimState::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Terminated and failed claims never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, ClaimState::Terminated | ClaimState::Failed)
    }

    /// The instance exists (or may exist) and costs money.
    pub fn is_live(self) -> bool {
        !self.is_terminal()
    }

    /// Launched but not yet able to run pods.
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            ClaimState::Launching | ClaimState::Launched | ClaimState::Registered
        )
    }

    /// Whether moving from `self` to `to` is progress, a duplicate, or stale. `Failed` may follow
    /// any non-terminal state (a launch can fail at any point before termination).
    pub fn transition(self, to: ClaimState) -> Transition {
        if self == to {
            return Transition::Duplicate;
        }
        if self.is_terminal() {
            return Transition::Stale;
        }
        if to == ClaimState::Failed || to > self {
            Transition::Advance
        } else {
            Transition::Stale
        }
    }
}

impl std::fmt::Display for ClaimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_only_moves_forward() {
        use ClaimState::*;
        assert_eq!(Launching.transition(Launched), Transition::Advance);
        assert_eq!(
            Launched.transition(Ready),
            Transition::Advance,
            "skipping registered is allowed"
        );
        assert_eq!(Ready.transition(Ready), Transition::Duplicate);
        assert_eq!(Terminated.transition(Launched), Transition::Stale, "no resurrection");
        assert_eq!(Ready.transition(Launched), Transition::Stale);
        assert_eq!(Draining.transition(Failed), Transition::Advance);
        assert_eq!(Failed.transition(Terminated), Transition::Stale);
        for s in ClaimState::ALL {
            assert_eq!(ClaimState::parse(s.as_str()), Some(s));
        }
    }
}
