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
    /// The difference from the live claims the reconciler last saw, and since when (epoch ms).
    pub checked: Option<(UsageDrift, i64)>,
}

/// What a pool's counters hold beyond its live claims, dimension by dimension (negative: less). A
/// charge in progress (counted before its claim is written) changes it from one check to the next;
/// a leak or a lost release leaves it the same, which is how the reconciler tells them apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageDrift {
    pub cpu_milli: i128,
    pub memory_bytes: i128,
    pub gpus: i128,
    pub nodes: i128,
    pub nodes_in_flight: i128,
    /// A counter is below zero (the difference may read zero once clamped).
    pub negative: bool,
}

impl UsageDrift {
    /// `counted` (with `negative` from the snapshot) minus `held`.
    pub fn between(counted: &PoolUsage, negative: bool, held: &PoolUsage) -> UsageDrift {
        let d = |a: u64, b: u64| i128::from(a) - i128::from(b);
        UsageDrift {
            cpu_milli: d(counted.cpu_milli, held.cpu_milli),
            memory_bytes: d(counted.memory_bytes, held.memory_bytes),
            gpus: d(counted.gpus, held.gpus),
            nodes: d(counted.nodes, held.nodes),
            nodes_in_flight: d(counted.nodes_in_flight, held.nodes_in_flight),
            negative,
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == UsageDrift::default()
    }

    /// As stored: `cpu,memory,gpus,nodes,inFlight[,negative]`.
    pub fn encode(&self) -> String {
        let mut s = format!(
            "{},{},{},{},{}",
            self.cpu_milli, self.memory_bytes, self.gpus, self.nodes, self.nodes_in_flight
        );
        if self.negative {
            s.push_str(",negative");
        }
        s
    }

    pub fn decode(s: &str) -> Option<UsageDrift> {
        let mut parts = s.split(',');
        let mut next = || parts.next()?.parse::<i128>().ok();
        let drift = UsageDrift {
            cpu_milli: next()?,
            memory_bytes: next()?,
            gpus: next()?,
            nodes: next()?,
            nodes_in_flight: next()?,
            negative: false,
        };
        Some(UsageDrift {
            negative: s.ends_with(",negative"),
            ..drift
        })
    }
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
