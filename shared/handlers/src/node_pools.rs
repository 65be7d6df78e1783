//! NodePools and EC2NodeClasses from the cluster: `kubectl apply -f nodepool.yaml` is how pools
//! change. The listing is cached per execution environment for [`POOLS_TTL_MS`] and parsed again
//! only when an object's generation changed; each object is validated on its own (an invalid one is
//! left out, the others keep working). The consolidation run writes each object's status back:
//! conditions and, for pools, the resources Nodewright holds for them.
//!
//! The configured YAML is the fallback: used when the API does not serve the kinds (no CRDs). A
//! cluster that serves them with none applied has no NodePool. Auto Scaling pools (Nodewright's own kind, which the API does not serve) always come
//! from the configured YAML.

use std::sync::Arc;

use nodewright_core::nodepool::{ClusterConfig, PoolBacking, objects::desired_status};
use nodewright_core::ports::cluster::{ConfigKind, ConfigObjects};
use nodewright_core::ports::{ClusterApi, EpochMillis, State};

use crate::outcome::{Action, Outcome};
use crate::settings::{PoolSource, Pools, Settings};
use crate::{Error, Result};

/// How long a listing of NodePools is reused: a `kubectl apply` takes effect within this.
pub const POOLS_TTL_MS: i64 = 30_000;
/// At most this many status writes per run (a cluster with thousands of NodePools is bounded).
pub const MAX_STATUS_WRITES: usize = 100;

/// The identity of a listing: kinds, names, uids and generations (an object deleted and created
/// again starts at generation 1 with a new uid). Never empty, so an empty listing differs from the
/// configured pools (whose fingerprint is empty).
fn fingerprint(objects: &ConfigObjects) -> String {
    let mut parts: Vec<String> = objects
        .node_pools
        .iter()
        .chain(&objects.node_classes)
        .map(|o| {
            let uid = o.object["metadata"]["uid"].as_str().unwrap_or("");
            format!("{}/{}/{uid}@{}", o.kind.kind(), o.name, o.generation)
        })
        .collect();
    parts.sort();
    format!("cluster:{}", parts.join(","))
}

/// Builds the pools the objects make (with the configured Auto Scaling pools).
pub fn pools_from_objects(settings: &Settings, objects: &ConfigObjects) -> Result<Pools> {
    let cluster = ClusterConfig::from_objects(objects);
    let mut config = cluster.config;
    for p in &settings.configured_pools().config.node_pools {
        if !matches!(p.backing, PoolBacking::Fleet) && !config.node_pools.iter().any(|q| q.name == p.name) {
            config.node_pools.push(p.clone());
        }
    }
    let mut pools = Pools::build(&settings.region, config, settings.prices().as_deref())?;
    pools.objects = cluster.verdicts;
    pools.fingerprint = fingerprint(objects);
    note_statuses(&pools, objects);
    Ok(pools)
}

/// Remembers the statuses a listing carries.
fn note_statuses(pools: &Pools, objects: &ConfigObjects) {
    let mut statuses = pools.statuses.lock().unwrap_or_else(|p| p.into_inner());
    statuses.clear();
    for o in objects.node_classes.iter().chain(&objects.node_pools) {
        statuses.insert((o.kind, o.name.clone()), o.status().clone());
    }
}

/// Brings `settings`' pools up to date with the cluster, at most once per [`POOLS_TTL_MS`]. A
/// failed listing keeps the pools in use (logged): the configured ones until a listing succeeds.
pub async fn refresh<K: ClusterApi>(settings: &Settings, cluster: Option<&K>, now: EpochMillis) -> Result<()> {
    let Some(cluster) = cluster else { return Ok(()) };
    if settings.pool_source != PoolSource::Cluster {
        return Ok(());
    }
    {
        let listed = settings.listed_at.lock().unwrap_or_else(|p| p.into_inner());
        if listed.is_some_and(|at| (0..POOLS_TTL_MS).contains(&(now - at))) {
            return Ok(());
        }
    }
    // A failed listing is retried after the TTL too (not on every invocation).
    *settings.listed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
    let objects = match cluster.config_objects().await {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "listing NodePools failed; keeping the pools in use");
            return Ok(());
        }
    };
    // The configured pools only where the kinds are not served. A cluster that serves them with
    // none applied has no NodePool (deleting every NodePool stops provisioning, as in Karpenter).
    if !objects.served {
        let configured = settings.configured_pools();
        if !Arc::ptr_eq(&settings.pools(), &configured) {
            tracing::info!(
                served = objects.served,
                pools = configured.config.node_pools.len(),
                "the cluster serves no NodePool kind; using the configured pools"
            );
            settings.set_pools(configured);
        }
        return Ok(());
    }
    let current = settings.pools();
    let print = fingerprint(&objects);
    if current.fingerprint == print {
        note_statuses(&current, &objects);
        return Ok(());
    }
    let pools = pools_from_objects(settings, &objects)?;
    for v in pools.objects.iter().filter(|v| !v.ready()) {
        tracing::warn!(
            kind = v.kind.kind(),
            name = %v.name,
            errors = ?v.errors,
            node_class = ?v.node_class_problem,
            "not used: invalid or its EC2NodeClass is not ready"
        );
    }
    tracing::info!(
        pools = ?pools.config.node_pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        classes = pools.config.node_classes.len(),
        instance_types = pools.instance_types.len(),
        "NodePools from the cluster"
    );
    settings.set_pools(Arc::new(pools));
    Ok(())
}

/// Writes each object's status where it changed: conditions, and the pool's resources as the
/// usage counters hold them. A failed write is a step failure, retried on the next run.
pub async fn write_statuses<S: State, K: ClusterApi>(
    settings: &Settings,
    state: &S,
    cluster: &K,
    now: EpochMillis,
    out: &mut Outcome,
) -> Result<()> {
    let pools = settings.pools();
    let stamp = nodewright_core::time::format_rfc3339(now);
    let mut written = 0;
    for verdict in &pools.objects {
        let key = (verdict.kind, verdict.name.clone());
        let current = pools
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
            .unwrap_or_default();
        let usage = match verdict.kind {
            ConfigKind::NodePool => match state.usage_snapshot(&verdict.name).await {
                Ok(s) => Some(s.usage),
                Err(e) => {
                    // This object's status waits for the next run; the others are written.
                    out.push(Action::StepFailed {
                        step: "status".into(),
                        target: format!("NodePool/{}", verdict.name),
                        error: Error::from(e).to_string(),
                    });
                    continue;
                }
            },
            ConfigKind::Ec2NodeClass => None,
        };
        let Some(status) = desired_status(verdict, &current, usage.as_ref(), &stamp) else {
            continue;
        };
        if written == MAX_STATUS_WRITES {
            tracing::warn!(limit = MAX_STATUS_WRITES, "status writes left for the next run");
            break;
        }
        written += 1;
        match cluster.write_status(verdict.kind, &verdict.name, &status).await {
            Ok(_) => {
                pools
                    .statuses
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, status);
            }
            Err(e) => out.push(Action::StepFailed {
                step: "status".into(),
                target: format!("{}/{}", verdict.kind.kind(), verdict.name),
                error: e.to_string(),
            }),
        }
    }
    Ok(())
}
