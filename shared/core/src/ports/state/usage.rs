//! Pool usage counters: the resources and nodes a pool has launched, updated atomically under
//! conditions so that concurrent invocations can never take a pool past its NodePool limits.

use crate::Resources;

/// What one claim adds to its pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageDelta {
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub gpus: u64,
    pub nodes: u64,
}

impl UsageDelta {
    /// The usage of `nodes` nodes of this capacity (Karpenter counts capacity, not allocatable).
    pub fn of(capacity: &Resources, nodes: u64) -> Self {
        UsageDelta {
            cpu_milli: capacity.cpu_milli() * nodes,
            memory_bytes: capacity.memory() * nodes,
            gpus: capacity.accelerators() * nodes,
            nodes,
        }
    }

    /// What `self` holds beyond `other` (resource by resource, never below zero; no nodes).
    pub fn excess_over(&self, other: &UsageDelta) -> UsageDelta {
        UsageDelta {
            cpu_milli: self.cpu_milli.saturating_sub(other.cpu_milli),
            memory_bytes: self.memory_bytes.saturating_sub(other.memory_bytes),
            gpus: self.gpus.saturating_sub(other.gpus),
            nodes: 0,
        }
    }
}

/// A pool's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub gpus: u64,
    /// Nodes launched and not yet released (in flight + running).
    pub nodes: u64,
    pub nodes_in_flight: u64,
}

impl PoolUsage {
    pub fn nodes_running(&self) -> u64 {
        self.nodes.saturating_sub(self.nodes_in_flight)
    }
}

/// A pool's counters as the usage reconciler reads them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageSnapshot {
    /// The pool has a counters item at all.
    pub exists: bool,
    pub usage: PoolUsage,
    /// A counter is below zero (`usage` shows it as zero).
    pub negative: bool,
    /// Bumped by every write to the counters.
    pub version: u64,
    /// The version the reconciler last saw, and when (epoch ms).
    pub checked: Option<(u64, i64)>,
}

/// The answer to a usage request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageDecision {
    Granted,
    /// The named limit would be exceeded: `used + requested > limit`.
    Denied {
        resource: &'static str,
        used: u64,
        requested: u64,
        limit: u64,
    },
}
