//! Pool usage counters: the resources and nodes a pool has launched, updated atomically under
//! conditions so that concurrent invocations can never take a pool past its NodePool limits. The
//! condition carries the limit minus the increment ("room"), because DynamoDB conditions cannot add.

use nodewright_core::Resource;
use nodewright_core::nodepool::Limits;

use super::item::{Fields, is_condition_failure, n, s};
use super::{PoolUsage, StateStore, Table, UsageDecision, UsageDelta, UsageDrift, UsageSnapshot};
use crate::error::FromSdk;
use crate::{Error, Result};

/// The limited dimensions: attribute name, limit, increment.
fn dimensions(limits: &Limits, delta: &UsageDelta) -> Vec<(&'static str, Option<u64>, u64)> {
    let limit_of = |r: Resource| limits.of(r);
    let gpu_limit = limits.gpus();
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
                "ADD cpuMilli :cpuMilli, memoryBytes :memoryBytes, gpus :gpus, nodes :nodes, nodesInFlight :nodes, \
                 version :one",
            )
            .expression_attribute_values(":one", n(1));
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
            .update_expression("ADD nodesInFlight :minus, version :one")
            .condition_expression("nodesInFlight >= :n")
            .expression_attribute_values(":one", n(1))
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
            .update_expression(
                "ADD cpuMilli :cpu, memoryBytes :mem, gpus :gpus, nodes :nodes, nodesInFlight :inFlight, version :one",
            )
            .expression_attribute_values(":one", n(1))
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

    /// The pool's counters with their write version and the reconciler's last check (consistent read).
    pub async fn usage_snapshot(&self, pool: &str) -> Result<UsageSnapshot> {
        let table = self.table_name(Table::Usage);
        let Some(item) = self.get_one(Table::Usage, pool).await? else {
            return Ok(UsageSnapshot::default());
        };
        let f = Fields::new(&table, "pool", &item);
        let raw: Vec<i128> = ["cpuMilli", "memoryBytes", "gpus", "nodes", "nodesInFlight"]
            .iter()
            .map(|a| f.n_or_zero::<i128>(a))
            .collect::<Result<_>>()?;
        let (_, usage) = parse_usage(&table, &item)?;
        let checked = match (f.opt_s("checkedDrift")?, f.opt_n::<i64>("checkedAt")?) {
            (Some(d), Some(at)) => Some((
                UsageDrift::decode(&d).ok_or_else(|| f.corrupt(format!("checkedDrift {d:?} is not five integers")))?,
                at,
            )),
            _ => None,
        };
        Ok(UsageSnapshot {
            exists: true,
            usage,
            negative: raw.iter().any(|v| *v < 0),
            version: f.n_or_zero("version")?,
            checked,
        })
    }

    /// Records the difference between the counters and the live claims the reconciler saw at
    /// `now`; nothing when that same difference is already recorded (it keeps its older time) or
    /// the pool has no counters. The counters' version is not bumped: this is a note, not a write
    /// to them.
    pub async fn note_usage_checked(&self, pool: &str, drift: &UsageDrift, now: i64) -> Result<()> {
        let request = self
            .client
            .update_item()
            .table_name(self.table_name(Table::Usage))
            .key("cluster", s(&self.cluster))
            .key("pool", s(pool))
            .update_expression("SET checkedDrift = :d, checkedAt = :now")
            .condition_expression(
                "attribute_exists(#pool) AND (attribute_not_exists(checkedDrift) OR checkedDrift <> :d)",
            )
            .expression_attribute_names("#pool", "pool")
            .expression_attribute_values(":d", s(drift.encode()))
            .expression_attribute_values(":now", n(now));
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(Error::aws("UpdateItem", e)),
        }
    }

    /// Overwrites the counters with `usage` if their version is still `expected_version` (false:
    /// they moved, and the caller's count may be stale).
    pub async fn correct_usage(&self, pool: &str, usage: &PoolUsage, expected_version: u64, now: i64) -> Result<bool> {
        let request = self
            .client
            .update_item()
            .table_name(self.table_name(Table::Usage))
            .key("cluster", s(&self.cluster))
            .key("pool", s(pool))
            .update_expression(
                "SET cpuMilli = :cpu, memoryBytes = :mem, gpus = :gpus, nodes = :nodes, nodesInFlight = :inFlight, \
                 version = :next, checkedDrift = :none, checkedAt = :now",
            )
            .expression_attribute_values(":cpu", n(usage.cpu_milli))
            .expression_attribute_values(":mem", n(usage.memory_bytes))
            .expression_attribute_values(":gpus", n(usage.gpus))
            .expression_attribute_values(":nodes", n(usage.nodes))
            .expression_attribute_values(":inFlight", n(usage.nodes_in_flight))
            .expression_attribute_values(":next", n(expected_version + 1))
            .expression_attribute_values(":none", s(UsageDrift::default().encode()))
            .expression_attribute_values(":now", n(now));
        let request = version_condition(request, expected_version);
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(Error::aws("UpdateItem", e)),
        }
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

/// The condition that the usage item is at `version` (version 0: no item, or one written before
/// versions were kept).
fn version_condition(
    request: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    version: u64,
) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
    if version == 0 {
        request.condition_expression("attribute_not_exists(version)")
    } else {
        request
            .condition_expression("version = :expected")
            .expression_attribute_values(":expected", n(version))
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
