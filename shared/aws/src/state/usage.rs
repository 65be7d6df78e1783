//! Pool usage counters: the resources and nodes a pool has launched, updated atomically under
//! conditions so that concurrent invocations can never take a pool past its NodePool limits. The
//! condition carries the limit minus the increment ("room"), because DynamoDB conditions cannot add.

use nodewright_core::nodepool::Limits;
use nodewright_core::{Resource, Resources};

use super::item::{Fields, is_condition_failure, n, s};
use super::{StateStore, Table};
use crate::{Error, Result};

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

/// The limited dimensions: attribute name, limit, increment.
fn dimensions(limits: &Limits, delta: &UsageDelta) -> Vec<(&'static str, Option<u64>, u64)> {
    let limit_of = |r: Resource| {
        let v = limits.resources.get(r);
        (v > 0).then_some(v)
    };
    let gpu_limit = {
        let v = limits.resources.accelerators();
        (v > 0).then_some(v)
    };
    vec![
        ("cpuMilli", limit_of(Resource::Cpu), delta.cpu_milli),
        ("memoryBytes", limit_of(Resource::Memory), delta.memory_bytes),
        ("gpus", gpu_limit, delta.gpus),
        ("nodes", limits.nodes, delta.nodes),
    ]
}

impl StateStore {
    /// Adds `delta` to the pool's counters if no limit would be exceeded; the new nodes count as in
    /// flight.
    pub async fn try_add_usage(&self, pool: &str, delta: &UsageDelta, limits: &Limits) -> Result<UsageDecision> {
        let dims = dimensions(limits, delta);
        let mut conditions = Vec::new();
        let mut request = self
            .client
            .update_item()
            .table_name(self.table_name(Table::Usage))
            .key("cluster", s(&self.cluster))
            .key("pool", s(pool))
            .update_expression(
                "ADD cpuMilli :cpuMilli, memoryBytes :memoryBytes, gpus :gpus, nodes :nodes, nodesInFlight :nodes",
            );
        for (attr, limit, increment) in &dims {
            request = request.expression_attribute_values(format!(":{attr}"), n(increment));
            if let Some(limit) = limit {
                if increment > limit {
                    return Ok(UsageDecision::Denied {
                        resource: attr,
                        used: 0,
                        requested: *increment,
                        limit: *limit,
                    });
                }
                conditions.push(format!("(attribute_not_exists({attr}) OR {attr} <= :{attr}Room)"));
                request = request.expression_attribute_values(format!(":{attr}Room"), n(limit - increment));
            }
        }
        if !conditions.is_empty() {
            request = request.condition_expression(conditions.join(" AND "));
        }
        match request.send().await {
            Ok(_) => Ok(UsageDecision::Granted),
            Err(e) if is_condition_failure(&e) => {
                let used = self.pool_usage(pool).await?;
                let current = |attr: &str| match attr {
                    "cpuMilli" => used.cpu_milli,
                    "memoryBytes" => used.memory_bytes,
                    "gpus" => used.gpus,
                    _ => used.nodes,
                };
                let (resource, limit, requested) = dims
                    .iter()
                    .find(|(attr, limit, inc)| limit.is_some_and(|l| current(attr) + inc > l))
                    .map(|(a, l, i)| (*a, l.unwrap_or(0), *i))
                    .unwrap_or(("nodes", limits.nodes.unwrap_or(0), delta.nodes));
                Ok(UsageDecision::Denied {
                    resource,
                    used: current(resource),
                    requested,
                    limit,
                })
            }
            Err(e) => Err(Error::aws("UpdateItem", e)),
        }
    }

    /// A node of the pool became ready: it is no longer in flight.
    pub async fn mark_usage_running(&self, pool: &str, nodes: u64) -> Result<()> {
        self.client
            .update_item()
            .table_name(self.table_name(Table::Usage))
            .key("cluster", s(&self.cluster))
            .key("pool", s(pool))
            .update_expression("ADD nodesInFlight :minus")
            .condition_expression("nodesInFlight >= :n")
            .expression_attribute_values(":minus", n(-(nodes as i64)))
            .expression_attribute_values(":n", n(nodes))
            .send()
            .await
            .map(|_| ())
            .or_else(|e| {
                if is_condition_failure(&e) {
                    Ok(())
                } else {
                    Err(Error::aws("UpdateItem", e))
                }
            })
    }

    /// Gives usage back when a claim ends (failed or terminated). Callers release once per claim,
    /// on the claim's transition to a terminal state, which the claim's version guards.
    pub async fn release_usage(&self, pool: &str, delta: &UsageDelta, was_in_flight: bool) -> Result<()> {
        let in_flight = if was_in_flight { delta.nodes } else { 0 };
        self.client
            .update_item()
            .table_name(self.table_name(Table::Usage))
            .key("cluster", s(&self.cluster))
            .key("pool", s(pool))
            .update_expression("ADD cpuMilli :cpu, memoryBytes :mem, gpus :gpus, nodes :nodes, nodesInFlight :inFlight")
            .expression_attribute_values(":cpu", n(-(delta.cpu_milli as i128)))
            .expression_attribute_values(":mem", n(-(delta.memory_bytes as i128)))
            .expression_attribute_values(":gpus", n(-(delta.gpus as i128)))
            .expression_attribute_values(":nodes", n(-(delta.nodes as i128)))
            .expression_attribute_values(":inFlight", n(-(in_flight as i128)))
            .send()
            .await
            .map_err(|e| Error::aws("UpdateItem", e))?;
        Ok(())
    }

    /// The pool's counters (zero when it has never launched).
    pub async fn pool_usage(&self, pool: &str) -> Result<PoolUsage> {
        let table = self.table_name(Table::Usage);
        match self.get_one(Table::Usage, pool).await? {
            Some(item) => parse_usage(&table, &item).map(|(_, usage)| usage),
            None => Ok(PoolUsage::default()),
        }
    }

    /// Every pool's counters, by pool name (one paginated Query).
    pub async fn pool_usages(&self) -> Result<std::collections::BTreeMap<String, PoolUsage>> {
        let table = self.table_name(Table::Usage);
        self.query_all(Table::Usage, None)
            .await?
            .iter()
            .map(|item| parse_usage(&table, item))
            .collect()
    }
}

fn parse_usage(table: &str, item: &super::Item) -> Result<(String, PoolUsage)> {
    let f = Fields::new(table, "pool", item);
    let clamp = |v: i128| u64::try_from(v.max(0)).unwrap_or(u64::MAX);
    let usage = PoolUsage {
        cpu_milli: clamp(f.n_or_zero("cpuMilli")?),
        memory_bytes: clamp(f.n_or_zero("memoryBytes")?),
        gpus: clamp(f.n_or_zero("gpus")?),
        nodes: clamp(f.n_or_zero("nodes")?),
        nodes_in_flight: clamp(f.n_or_zero("nodesInFlight")?),
    };
    Ok((f.s("pool")?, usage))
}
