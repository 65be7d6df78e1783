//! What `nodewright avail` computes from a [`StateView`]: per pool and instance type, the nodes
//! ready and on their way, how far the pool's limits let the type grow, the pods waiting for it,
//! and how long a new pod would wait, and per GPU model how many GPUs are free, on nodes and
//! allowed by the limits. Pure: no I/O, "now" is the view's time.
//!
//! Waits come from the claims' own transition times (decision -> EC2 instance -> node Ready), the
//! median over the live claims of the type, else of the pool, else of the cluster; only when no
//! claim has ever become Ready is the published default used, and the output says so.

use std::collections::{BTreeMap, BTreeSet};

use nodewright_core::labels;
use nodewright_core::model::ClaimState;
use nodewright_core::nodepool::{Limits, NodePool};
use nodewright_core::ports::state::{ClaimRecord, Holder, PoolUsage, StateView};
use nodewright_core::{CapacityType, Catalogue, Config, InstanceType, Resource, Resources};
use serde::Serialize;

/// Decision to Ready when nothing was measured: a 45 s launch and 35 s registration, the
/// simulator's defaults (docs/simulator.md gives their sources).
pub const DEFAULT_READY_AFTER_SECS: f64 = 80.0;

/// The row for claims whose instance type is not known yet (decided, EC2 not answered).
pub const UNDECIDED_TYPE: &str = "(launching)";

/// How long a pod that needs this type would wait now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Wait {
    /// A Ready node of the type has room the scheduler has not planned away.
    AvailableNow,
    /// Nodes of the type are on their way; the soonest is expected in `seconds`.
    ScalingUp { seconds: f64 },
    /// Nothing on the way, but the pool's limits allow a new node: a full launch.
    NewNode { seconds: f64 },
    /// The pool's limits allow no node of this type.
    AtLimit,
}

impl Wait {
    pub fn text(&self) -> String {
        match self {
            Wait::AvailableNow => "Available now".into(),
            Wait::ScalingUp { seconds } => format!("{} (scaling up)", approx(*seconds)),
            Wait::NewNode { seconds } => format!("{} (new node)", approx(*seconds)),
            Wait::AtLimit => "at limit".into(),
        }
    }
}

/// "~1min" for anything up to 90 s (a pod never waits "0 min" for a node that is not Ready).
fn approx(seconds: f64) -> String {
    if seconds <= 90.0 {
        "~1min".into()
    } else {
        format!("~{}min", (seconds / 60.0).round())
    }
}

/// Where the launch-to-Ready figure came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// Median seconds from the decision to the EC2 instance (the launch call).
    pub launch_seconds: f64,
    /// Median seconds from the EC2 instance to the node Ready (boot and registration).
    pub registration_seconds: f64,
    /// How many claims the medians are over (0: the default was used).
    pub samples: usize,
    /// `type`, `pool`, `cluster` (the narrowest scope with a measurement) or `default`.
    pub scope: &'static str,
}

impl Latency {
    pub fn total(&self) -> f64 {
        self.launch_seconds + self.registration_seconds
    }
}

/// One pool x instance type.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TypeRow {
    pub instance_type: String,
    /// Accelerators per node (GPUs, Neuron); such types are listed first.
    pub gpus_per_node: u64,
    /// The accelerator's model from the catalogue (`A10G`, `H100`, `Inferentia2`); `null` for
    /// types without one.
    pub gpu_model: Option<String>,
    /// GPUs on the type's Ready nodes not requested by the pods planned onto them (allocatable
    /// minus requested, summed over the nodes); `null` for types without GPUs.
    pub free_gpus: Option<u64>,
    /// Nodes Ready (taking pods).
    pub ready: u64,
    /// Nodes decided, launched or registered, not Ready yet.
    pub launching: u64,
    /// Nodes cordoned, draining or terminating (count against limits, take no pods).
    pub leaving: u64,
    /// Every live node of the type: ready + launching + leaving.
    pub current: u64,
    /// How many nodes of this type the pool's limits allow in all (current included); `null`
    /// when the pool has no limit or its NodePool was not given.
    pub max: Option<u64>,
    /// Pods reserved onto nodes of this type that are not Ready yet.
    pub pending_pods: u64,
    pub wait: Wait,
    pub wait_text: String,
    pub latency: Latency,
    /// Share of live nodes on spot, percent; `null` with no live nodes.
    pub spot_percent: Option<f64>,
    /// What the live nodes cost now, USD per hour.
    pub price_per_hour: f64,
    /// The catalogue's cheapest price per node now, USD per hour (spot, on-demand).
    pub node_price_spot: Option<f64>,
    pub node_price_on_demand: Option<f64>,
    /// Offerings of the type currently skipped after capacity errors (`capacityType/zone`).
    pub unavailable_offerings: Vec<String>,
}

/// One pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolRow {
    pub pool: String,
    /// Whether the pool's NodePool was given (limits and admitted types known).
    pub configured: bool,
    /// The pool's node limit, if it has one.
    pub node_limit: Option<u64>,
    /// Whether the pool has any limit (cpu, memory, GPUs or nodes).
    pub limited: bool,
    pub usage: PoolUsage,
    pub types: Vec<TypeRow>,
    pub ready: u64,
    pub launching: u64,
    pub current: u64,
    pub pending_pods: u64,
    /// Free GPUs over the pool's rows; `null` when no row has GPUs.
    pub free_gpus: Option<u64>,
    pub price_per_hour: f64,
}

/// One GPU model across the cluster: what gpu-dev shows as "0 / 90", and how far it can grow.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuModelRow {
    /// As the catalogue names it (`A10G`, `H100`, `Inferentia2`).
    pub model: String,
    /// GPUs of the model on Ready nodes not requested by planned pods (the rows' `freeGpus`).
    pub available_now: u64,
    /// GPUs of the model on Ready and launching nodes.
    pub total: u64,
    /// How many GPUs of the model the pools' limits allow in all: the GPUs on live nodes (leaving
    /// ones too: they hold the limit until gone) plus, per pool admitting the model, what its
    /// remaining room holds of the admitted type of the model that adds the most GPUs. Pools share
    /// their limit between models, so two models' figures may count the same room. `null` when
    /// some pool admitting the model has no limit that bounds it, or when limits are unknown
    /// (`limitsKnown` false).
    pub scalable_to: Option<u64>,
    /// Whether the NodePools of every pool with the model were given (`--nodepool`).
    pub limits_known: bool,
    /// The instance types counted (on live nodes or admitted by a pool), by name.
    pub instance_types: Vec<String>,
}

/// The whole report (`--json` prints it; schema in docs/cli.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Availability {
    pub cluster: String,
    /// The view's time, RFC 3339.
    pub at: String,
    pub pools: Vec<PoolRow>,
    /// Per GPU model, by name: every model on a live node or in a row, and every model a pool
    /// with a GPU limit admits.
    pub gpu_models: Vec<GpuModelRow>,
    /// Pods held by an invocation that is still deciding (no pool yet).
    pub deciding_pods: u64,
    /// Pods reserved onto Ready nodes, about to bind.
    pub binding_pods: u64,
    pub price_per_hour: f64,
    pub notes: Vec<String>,
}

impl Availability {
    /// True when there is nothing to show: no pool has a row.
    pub fn is_empty(&self) -> bool {
        self.pools.iter().all(|p| p.types.is_empty())
    }
}

/// What to compute from.
pub struct Inputs<'a> {
    pub view: &'a StateView,
    /// The deployed NodePools, when given: limits, and rows for pools with nothing running.
    pub config: Option<&'a Config>,
    /// The region's catalogue (capacity for limits, prices for idle rows).
    pub types: &'a [InstanceType],
    /// List every type each configured pool admits, not only those in use.
    pub all_types: bool,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// Medians over the claims that reached Ready, or `None` when none has.
fn measure<'c>(claims: impl Iterator<Item = &'c ClaimRecord>, scope: &'static str) -> Option<Latency> {
    let mut launch = Vec::new();
    let mut registration = Vec::new();
    for c in claims {
        let (Some(start), Some(launched), Some(ready)) = (
            c.entered(ClaimState::Launching),
            c.entered(ClaimState::Launched),
            c.entered(ClaimState::Ready),
        ) else {
            continue;
        };
        if launched < start || ready < launched {
            continue;
        }
        launch.push((launched - start) as f64 / 1000.0);
        registration.push((ready - launched) as f64 / 1000.0);
    }
    Some(Latency {
        samples: launch.len(),
        launch_seconds: median(launch)?,
        registration_seconds: median(registration)?,
        scope,
    })
}

fn type_of(c: &ClaimRecord) -> &str {
    c.instance_type.as_deref().unwrap_or(UNDECIDED_TYPE)
}

/// How many more nodes of `capacity` the limits allow on top of `usage`; `None` when unlimited.
fn room_for(limits: &Limits, usage: &PoolUsage, capacity: &Resources) -> Option<u64> {
    let mut room: Option<u64> = limits.nodes.map(|n| n.saturating_sub(usage.nodes));
    let mut limit_by = |limit: Option<u64>, used: u64, per_node: u64| {
        let Some(limit) = limit else { return };
        if per_node == 0 {
            return;
        }
        let more = limit.saturating_sub(used) / per_node;
        room = Some(room.map_or(more, |r| r.min(more)));
    };
    limit_by(limits.of(Resource::Cpu), usage.cpu_milli, capacity.cpu_milli());
    limit_by(limits.of(Resource::Memory), usage.memory_bytes, capacity.memory());
    limit_by(limits.gpus(), usage.gpus, capacity.accelerators());
    room
}

/// The accelerator model of a type as the catalogue spells it (`A10G`, `L40S`, `Inferentia2`);
/// `None` for types without GPUs or Neuron devices. The type's labels carry the name lower-cased;
/// the embedded catalogue's record keeps the vendor's spelling.
pub fn gpu_model(t: &InstanceType) -> Option<String> {
    if t.capacity.accelerators() == 0 {
        return None;
    }
    if let Ok(spec) = Catalogue::embedded().get(&t.name) {
        let name = if spec.gpu_count > 0 {
            &spec.gpu_name
        } else {
            &spec.accelerator_name
        };
        if !name.is_empty() {
            return Some(name.clone());
        }
    }
    [labels::INSTANCE_GPU_NAME, labels::INSTANCE_ACCELERATOR_NAME]
        .iter()
        .find_map(|k| t.labels.get(*k))
        .map(|n| n.to_ascii_uppercase())
}

/// A claim's allocatable (its record's, else its type's in the catalogue) and what the pods
/// planned onto it leave of that. Planned requests, not live usage: a pod that ended still counts
/// until consolidation replaces the node.
fn room_on(c: &ClaimRecord, t: Option<&InstanceType>) -> Option<(Resources, Resources)> {
    let alloc = c.allocatable.clone().or_else(|| t.map(|t| t.allocatable.clone()))?;
    let mut left = alloc.clone();
    if let Some(req) = &c.requested {
        left.saturating_sub(req);
    }
    Some((alloc, left))
}

/// Whether a Ready node with `alloc` allocatable and `left` unplanned has room for the pod a new
/// user of its type most likely brings:
/// - a type without GPUs: a quarter of its allocatable CPU and of its memory;
/// - a type with GPUs: one GPU, and a quarter of the CPU and memory that go with one GPU on it
///   (allocatable / GPUs per node), the same quarter per GPU. A GPU pod needs its GPU first: a
///   node whose GPUs are all requested has no room however idle its CPU and memory are, and a
///   free GPU whose host is planned away (a stranded GPU) is no room either.
///
/// The records hold each node's summed requests, not its pods' shapes, so the shape is this fixed
/// rule rather than a median of the pods seen; "one GPU" is the smallest GPU pod (gpu-dev's unit).
fn has_room(alloc: &Resources, left: &Resources) -> bool {
    if alloc.cpu_milli() == 0 {
        return false;
    }
    let gpus = alloc.accelerators();
    let quarter_per_gpu = |left: u64, alloc: u64| u128::from(left) * 4 * u128::from(gpus.max(1)) >= u128::from(alloc);
    (gpus == 0 || left.accelerators() >= 1)
        && quarter_per_gpu(left.cpu_milli(), alloc.cpu_milli())
        && quarter_per_gpu(left.memory(), alloc.memory())
}

/// The cheapest type of `admitted` that passes `keep` (spot price, else on-demand).
fn cheapest<'t>(admitted: &[&'t InstanceType], keep: impl Fn(&InstanceType) -> bool) -> Option<&'t str> {
    admitted
        .iter()
        .filter(|t| keep(t))
        .filter_map(|t| {
            Some((
                t.cheapest(CapacityType::Spot).or(t.cheapest(CapacityType::OnDemand))?,
                t.name.as_str(),
            ))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n)
}

/// The per-model summary (see [`GpuModelRow`]).
fn gpu_models(
    view: &StateView,
    pools: &[PoolRow],
    pools_config: &BTreeMap<&str, &NodePool>,
    types: &[InstanceType],
    limits_given: bool,
) -> Vec<GpuModelRow> {
    let with_model: Vec<(&InstanceType, String)> = types.iter().filter_map(|t| Some((t, gpu_model(t)?))).collect();
    let model_of: BTreeMap<&str, (&InstanceType, &str)> = with_model
        .iter()
        .map(|(t, m)| (t.name.as_str(), (*t, m.as_str())))
        .collect();
    // Each configured pool's admitted types that have a model.
    let admitted: Vec<(&NodePool, Vec<(&InstanceType, &str)>)> = pools_config
        .values()
        .map(|p| {
            let requirements: Vec<_> = p.type_requirements().collect();
            let of_pool = with_model
                .iter()
                .filter(|(t, _)| nodewright_core::nodepool::admits(&requirements, t))
                .map(|(t, m)| (*t, m.as_str()))
                .collect();
            (*p, of_pool)
        })
        .collect();

    let mut models: BTreeSet<&str> = BTreeSet::new();
    models.extend(view.claims.iter().filter_map(|c| Some(model_of.get(type_of(c))?.1)));
    models.extend(
        pools
            .iter()
            .flat_map(|p| &p.types)
            .filter_map(|r| model_of.get(r.instance_type.as_str()).map(|(_, m)| *m)),
    );
    for (p, of_pool) in &admitted {
        if p.limits.resources.accelerators() > 0 {
            models.extend(of_pool.iter().map(|(_, m)| *m));
        }
    }

    models
        .into_iter()
        .map(|model| {
            let mut instance_types: BTreeSet<&str> = BTreeSet::new();
            let (mut available_now, mut total, mut live) = (0, 0, 0);
            let mut limits_known = limits_given;
            for c in view.claims.iter().filter(|c| !c.state.is_terminal()) {
                let Some((t, m)) = model_of.get(type_of(c)) else {
                    continue;
                };
                if *m != model {
                    continue;
                }
                instance_types.insert(t.name.as_str());
                limits_known &= pools_config.contains_key(c.pool.as_str());
                let gpus = t.capacity.accelerators();
                live += gpus;
                match c.state {
                    ClaimState::Ready => {
                        total += gpus;
                        available_now += room_on(c, Some(t)).map_or(0, |(_, left)| left.accelerators());
                    }
                    ClaimState::Launching | ClaimState::Launched | ClaimState::Registered => total += gpus,
                    _ => {}
                }
            }
            // Per pool, the admitted type of the model whose nodes add the most GPUs in the room
            // left; the pools' limits are independent, so their room adds up.
            let mut more = Some(0u64);
            for (p, of_pool) in &admitted {
                let usage = view.usage.get(p.name.as_str()).copied().unwrap_or_default();
                let mut pool_more = Some(0u64);
                for (t, _) in of_pool.iter().filter(|(_, m)| *m == model) {
                    instance_types.insert(t.name.as_str());
                    let gpus =
                        room_for(&p.limits, &usage, &t.capacity).map(|n| n.saturating_mul(t.capacity.accelerators()));
                    pool_more = pool_more.zip(gpus).map(|(a, b)| a.max(b));
                }
                more = more.zip(pool_more).map(|(a, b)| a.saturating_add(b));
            }
            GpuModelRow {
                model: model.to_string(),
                available_now,
                total,
                scalable_to: if limits_known { more.map(|m| live + m) } else { None },
                limits_known,
                instance_types: instance_types.into_iter().map(str::to_string).collect(),
            }
        })
        .collect()
}

pub fn compute(inputs: &Inputs) -> Availability {
    let view = inputs.view;
    let now = view.at;
    let by_name: BTreeMap<&str, &InstanceType> = inputs.types.iter().map(|t| (t.name.as_str(), t)).collect();
    let claim_by_id: BTreeMap<&str, &ClaimRecord> = view.claims.iter().map(|c| (c.id.as_str(), c)).collect();

    // Pending pods per claim (reserved onto a claim that is not Ready yet).
    let mut waiting_on: BTreeMap<&str, u64> = BTreeMap::new();
    let (mut deciding_pods, mut binding_pods) = (0, 0);
    for r in &view.reservations {
        match &r.holder {
            Holder::Invocation(_) => deciding_pods += 1,
            Holder::Node(_) => binding_pods += 1,
            Holder::Claim(id) => match claim_by_id.get(id.as_str()) {
                Some(c) if c.state == ClaimState::Ready => binding_pods += 1,
                Some(c) => *waiting_on.entry(c.id.as_str()).or_default() += 1,
                None => deciding_pods += 1,
            },
        }
    }

    let pools_config: BTreeMap<&str, &NodePool> = inputs
        .config
        .map(|c| c.node_pools.iter().map(|p| (p.name.as_str(), p)).collect())
        .unwrap_or_default();
    let mut pool_names: Vec<&str> = pools_config.keys().copied().collect();
    pool_names.extend(view.claims.iter().map(|c| c.pool.as_str()));
    pool_names.extend(view.usage.keys().map(String::as_str));
    pool_names.sort_unstable();
    pool_names.dedup();

    let cluster_latency = measure(view.claims.iter(), "cluster");
    let mut notes = Vec::new();
    if inputs.config.is_none() {
        notes.push("limits unknown: pass --nodepool with the deployed NodePools to show Max".to_string());
    }
    if cluster_latency.is_none() {
        notes.push(format!(
            "no node has become Ready yet: waits use the default {DEFAULT_READY_AFTER_SECS:.0} s launch-to-Ready"
        ));
    }

    let mut pools = Vec::new();
    for pool_name in pool_names {
        let pool = pools_config.get(pool_name).copied();
        let usage = view.usage.get(pool_name).copied().unwrap_or_default();
        let claims: Vec<&ClaimRecord> = view.claims.iter().filter(|c| c.pool == pool_name).collect();
        let pool_latency = measure(claims.iter().copied(), "pool");

        let mut type_names: Vec<&str> = claims.iter().map(|c| type_of(c)).collect();
        if let Some(p) = pool {
            let admitted = inputs.types.iter().filter(|t| p.admits_type(t));
            if inputs.all_types {
                type_names.extend(admitted.map(|t| t.name.as_str()));
            } else if claims.is_empty() {
                // What the next launch most likely picks: the cheapest admitted general type when
                // the pool admits any; and for a GPU pool (a GPU limit, or no general type), the
                // cheapest type with at least one whole GPU, which its limit is counted in.
                let admitted: Vec<&InstanceType> = admitted.collect();
                let general = cheapest(&admitted, |t| !t.accelerated);
                type_names.extend(general);
                if general.is_none() || p.limits.resources.accelerators() > 0 {
                    type_names.extend(
                        cheapest(&admitted, |t| t.capacity.accelerators() > 0)
                            .or_else(|| general.or_else(|| cheapest(&admitted, |_| true))),
                    );
                }
            }
        }
        type_names.sort_unstable();
        type_names.dedup();

        let mut rows = Vec::new();
        for name in type_names {
            let of_type: Vec<&ClaimRecord> = claims.iter().copied().filter(|c| type_of(c) == name).collect();
            let catalogue = by_name.get(name).copied();
            let count = |states: &[ClaimState]| of_type.iter().filter(|c| states.contains(&c.state)).count() as u64;
            let ready = count(&[ClaimState::Ready]);
            let launching = count(&[ClaimState::Launching, ClaimState::Launched, ClaimState::Registered]);
            let leaving = count(&[ClaimState::Cordoned, ClaimState::Draining, ClaimState::Terminating]);
            let current = ready + launching + leaving;
            let max = match (pool, catalogue) {
                (Some(p), Some(t)) => room_for(&p.limits, &usage, &t.capacity).map(|more| current + more),
                _ => None,
            };
            let latency = measure(of_type.iter().copied(), "type")
                .or_else(|| pool_latency.clone())
                .or_else(|| cluster_latency.clone())
                .unwrap_or(Latency {
                    launch_seconds: 45.0,
                    registration_seconds: DEFAULT_READY_AFTER_SECS - 45.0,
                    samples: 0,
                    scope: "default",
                });
            let pending_pods: u64 = of_type
                .iter()
                .map(|c| waiting_on.get(c.id.as_str()).copied().unwrap_or(0))
                .sum();
            let soonest_started = of_type
                .iter()
                .filter(|c| {
                    matches!(
                        c.state,
                        ClaimState::Launching | ClaimState::Launched | ClaimState::Registered
                    )
                })
                .filter_map(|c| c.entered(ClaimState::Launching))
                .min();
            let gpus_per_node = catalogue.map_or(0, |t| t.capacity.accelerators());
            // Ready nodes: allocatable, and what the planned pods leave of it.
            let ready_room: Vec<(Resources, Resources)> = of_type
                .iter()
                .filter(|c| c.state == ClaimState::Ready)
                .filter_map(|c| room_on(c, catalogue))
                .collect();
            let free_gpus =
                (gpus_per_node > 0).then(|| ready_room.iter().map(|(_, left)| left.accelerators()).sum::<u64>());
            let limited = pool.is_some() && max.is_some_and(|m| current >= m);
            // Pods already waiting on launches of this type mean the Ready nodes had no room for
            // them: a new pod queues behind the launch too.
            let queued = pending_pods > 0 && soonest_started.is_some();
            let wait = if !queued && ready_room.iter().any(|(alloc, left)| has_room(alloc, left)) {
                Wait::AvailableNow
            } else if let Some(started) = soonest_started {
                let elapsed = (now - started).max(0) as f64 / 1000.0;
                Wait::ScalingUp {
                    seconds: (latency.total() - elapsed).max(0.0),
                }
            } else if limited {
                Wait::AtLimit
            } else {
                Wait::NewNode {
                    seconds: latency.total(),
                }
            };
            let known_ct: Vec<CapacityType> = of_type.iter().filter_map(|c| c.capacity_type).collect();
            let spot_percent = (!known_ct.is_empty()).then(|| {
                let spot = known_ct.iter().filter(|ct| **ct == CapacityType::Spot).count();
                (spot as f64 * 1000.0 / known_ct.len() as f64).round() / 10.0
            });
            let price_per_hour = of_type
                .iter()
                .map(|c| {
                    c.price_per_hour
                        .or_else(|| catalogue.and_then(|t| t.cheapest(c.capacity_type.unwrap_or_default())))
                        .unwrap_or(0.0)
                })
                .sum();
            let unavailable_offerings = view
                .offerings
                .iter()
                .filter(|o| {
                    o.instance_type == name
                        || (o.zone == nodewright_core::ports::capacity::fleet::ANY
                            && nodewright_core::ports::capacity::fleet::covers(
                                (o.capacity_type, &o.instance_type, &o.zone),
                                (o.capacity_type, name, &o.zone),
                            ))
                })
                .map(|o| format!("{}/{}", o.capacity_type.as_str(), o.zone))
                .collect();
            rows.push(TypeRow {
                instance_type: name.to_string(),
                gpus_per_node,
                gpu_model: catalogue.and_then(gpu_model),
                free_gpus,
                ready,
                launching,
                leaving,
                current,
                max,
                pending_pods,
                wait_text: wait.text(),
                wait,
                latency,
                spot_percent,
                price_per_hour: round_cents(price_per_hour),
                node_price_spot: catalogue.and_then(|t| t.cheapest(CapacityType::Spot)),
                node_price_on_demand: catalogue.and_then(|t| t.cheapest(CapacityType::OnDemand)),
                unavailable_offerings,
            });
        }
        // GPU types first, then the busiest, then by name.
        rows.sort_by(|a, b| {
            (b.gpus_per_node > 0)
                .cmp(&(a.gpus_per_node > 0))
                .then(b.current.cmp(&a.current))
                .then(a.instance_type.cmp(&b.instance_type))
        });
        let sum = |f: fn(&TypeRow) -> u64| rows.iter().map(f).sum::<u64>();
        pools.push(PoolRow {
            pool: pool_name.to_string(),
            configured: pool.is_some(),
            node_limit: pool.and_then(|p| p.limits.nodes),
            limited: pool.is_some_and(|p| !p.limits.is_empty()),
            usage,
            ready: sum(|r| r.ready),
            launching: sum(|r| r.launching),
            current: sum(|r| r.current),
            pending_pods: sum(|r| r.pending_pods),
            free_gpus: rows.iter().filter_map(|r| r.free_gpus).reduce(|a, b| a + b),
            price_per_hour: round_cents(rows.iter().map(|r| r.price_per_hour).sum()),
            types: rows,
        });
    }
    let price_per_hour = round_cents(pools.iter().map(|p| p.price_per_hour).sum());
    let gpu_models = gpu_models(view, &pools, &pools_config, inputs.types, inputs.config.is_some());
    Availability {
        cluster: view.cluster.clone(),
        at: nodewright_core::time::format_rfc3339(view.at),
        pools,
        gpu_models,
        deciding_pods,
        binding_pods,
        price_per_hour,
        notes,
    }
}

/// Rounded to a hundredth of a cent; never "-0".
fn round_cents(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0 + 0.0
}

#[cfg(test)]
pub(super) mod tests {
    use nodewright_core::catalogue::OverheadConfig;
    use nodewright_core::ports::state::{PoolUsage, Reservation};
    use nodewright_core::{Catalogue, Config};

    use super::*;

    pub(in crate::avail) const T0: i64 = 1_790_000_000_000;

    /// A claim of `type_` in `pool` at `state`, launched at `start` and Ready after 20 s + 60 s.
    pub(in crate::avail) struct Claim(pub(in crate::avail) ClaimRecord);

    impl Claim {
        pub(in crate::avail) fn new(id: &str, pool: &str, type_: &str, start: i64) -> Claim {
            let mut c = ClaimRecord::launching(id, pool, Vec::new(), start);
            c.instance_type = Some(type_.into());
            c.capacity_type = Some(CapacityType::Spot);
            c.price_per_hour = Some(0.5);
            c.state = ClaimState::Launched;
            c.transitions.insert(ClaimState::Launched, start + 20_000);
            Claim(c)
        }
        pub(in crate::avail) fn ready(mut self) -> Claim {
            self.0.state = ClaimState::Ready;
            let launched = self.0.transitions[&ClaimState::Launched];
            self.0.transitions.insert(ClaimState::Ready, launched + 60_000);
            self
        }
        pub(in crate::avail) fn on_demand(mut self) -> Claim {
            self.0.capacity_type = Some(CapacityType::OnDemand);
            self
        }
        pub(in crate::avail) fn room(mut self, alloc_cpu: u64, requested_cpu: u64) -> Claim {
            let gib = 1 << 30;
            self.0.allocatable = Some(
                Resources::new()
                    .with(Resource::Cpu, alloc_cpu)
                    .with(Resource::Memory, 8 * gib),
            );
            self.0.requested = Some(
                Resources::new()
                    .with(Resource::Cpu, requested_cpu)
                    .with(Resource::Memory, gib),
            );
            self
        }
    }

    pub(in crate::avail) fn pools(yaml_limits: &str) -> Config {
        pool("gpu", "karpenter.k8s.aws/instance-family", "[g5, m5]", yaml_limits)
    }

    /// One NodePool `name` admitting `key In values`, with `limits` (YAML flow map).
    pub(in crate::avail) fn pool(name: &str, key: &str, values: &str, limits: &str) -> Config {
        let text = format!(
            "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {{name: {name}}}\nspec:\n  template:\n    spec:\n      \
             nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}}\n      requirements:\n        \
             - {{key: {key}, operator: In, values: {values}}}\n  limits: {limits}\n"
        );
        Config::parse_strict(&text, "test").expect("valid pool").0
    }

    pub(in crate::avail) fn catalogue_type(name: &str) -> InstanceType {
        types().into_iter().find(|t| t.name == name).expect("in the catalogue")
    }

    /// A Ready GPU node of `type_` with its catalogue allocatable, and `gpus`, `cpu_milli` and
    /// `memory` planned onto it.
    pub(in crate::avail) fn gpu_node(
        id: &str,
        pool: &str,
        type_: &str,
        gpus: u64,
        cpu_milli: u64,
        memory: u64,
    ) -> ClaimRecord {
        let mut c = Claim::new(id, pool, type_, T0).ready().0;
        c.allocatable = Some(catalogue_type(type_).allocatable);
        c.requested = Some(
            Resources::new()
                .with(Resource::NvidiaGpu, gpus)
                .with(Resource::Cpu, cpu_milli)
                .with(Resource::Memory, memory),
        );
        c
    }

    /// The pool's usage counters as the claims' capacities add up (every claim counted).
    pub(in crate::avail) fn usage_of(view: &mut StateView, pool: &str) {
        let mut u = PoolUsage::default();
        for c in view.claims.iter().filter(|c| c.pool == pool) {
            let t = catalogue_type(c.instance_type.as_deref().unwrap_or_default());
            u.cpu_milli += t.capacity.cpu_milli();
            u.memory_bytes += t.capacity.memory();
            u.gpus += t.capacity.accelerators();
            u.nodes += 1;
            u.nodes_in_flight += u64::from(c.state != ClaimState::Ready);
        }
        view.usage.insert(pool.into(), u);
    }

    pub(in crate::avail) const GIB: u64 = 1 << 30;

    fn types() -> Vec<InstanceType> {
        Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default())
    }

    pub(in crate::avail) fn run(view: &StateView, config: Option<&Config>) -> Availability {
        compute(&Inputs {
            view,
            config,
            types: &types(),
            all_types: false,
        })
    }

    #[test]
    fn counts_limits_and_waits_per_type_gpu_first() {
        let mut view = StateView::new("c", T0 + 300_000);
        view.claims = vec![
            Claim::new("a", "gpu", "m5.large", T0).ready().room(1900, 1800).0,
            Claim::new("b", "gpu", "g5.xlarge", T0)
                .ready()
                .on_demand()
                .room(3900, 3500)
                .0,
            // Launched 30 s before "now": 50 s of the measured 80 s are left.
            Claim::new("c", "gpu", "g5.xlarge", T0 + 270_000).0,
        ];
        view.reservations = vec![Reservation {
            pod_uid: "p1".into(),
            holder: Holder::Claim("c".into()),
            created_at: T0,
            expires_at: T0 / 1000 + 1200,
        }];
        // 2 g5.xlarge (4 vCPU each) + 1 m5.large (2 vCPU) = 10 vCPU used of 20.
        view.usage.insert(
            "gpu".into(),
            PoolUsage {
                cpu_milli: 10_000,
                memory_bytes: 0,
                gpus: 2,
                nodes: 3,
                nodes_in_flight: 1,
            },
        );
        let config = pools("{cpu: \"20\"}");
        let a = run(&view, Some(&config));
        let pool = &a.pools[0];
        let names: Vec<&str> = pool.types.iter().map(|t| t.instance_type.as_str()).collect();
        assert_eq!(names, ["g5.xlarge", "m5.large"], "GPU types first");
        let g5 = &pool.types[0];
        assert_eq!((g5.ready, g5.launching, g5.current, g5.pending_pods), (1, 1, 2, 1));
        // 10 vCPU of room / 4 vCPU per g5.xlarge = 2 more.
        assert_eq!(g5.max, Some(4));
        assert_eq!(g5.latency.scope, "type");
        assert_eq!(
            (g5.latency.launch_seconds, g5.latency.registration_seconds),
            (20.0, 60.0)
        );
        assert_eq!(g5.wait, Wait::ScalingUp { seconds: 50.0 });
        assert_eq!(g5.wait_text, "~1min (scaling up)");
        assert_eq!(g5.spot_percent, Some(50.0));
        assert_eq!(g5.price_per_hour, 1.0);
        let m5 = &pool.types[1];
        // 10 vCPU / 2 = 5 more.
        assert_eq!(m5.max, Some(6));
        // 100m of 1900m left: no room, nothing launching, limits allow: a new node.
        assert_eq!(m5.wait, Wait::NewNode { seconds: 80.0 });
        assert_eq!((pool.current, pool.pending_pods), (3, 1));
    }

    #[test]
    fn room_on_a_ready_node_is_available_now_and_limits_stop_growth() {
        let mut view = StateView::new("c", T0 + 300_000);
        view.claims = vec![Claim::new("a", "gpu", "m5.large", T0).ready().room(1900, 500).0];
        view.usage.insert(
            "gpu".into(),
            PoolUsage {
                cpu_milli: 2_000,
                nodes: 1,
                ..PoolUsage::default()
            },
        );
        let config = pools("{cpu: \"2\"}");
        let a = run(&view, Some(&config));
        let m5 = &a.pools[0].types[0];
        assert_eq!(m5.wait, Wait::AvailableNow);
        assert_eq!(m5.max, Some(1));
        view.claims = vec![Claim::new("a", "gpu", "m5.large", T0).ready().room(1900, 1900).0];
        let a = run(&view, Some(&config));
        assert_eq!(a.pools[0].types[0].wait, Wait::AtLimit);
        assert_eq!(a.pools[0].types[0].wait_text, "at limit");
    }

    #[test]
    fn empty_pool_shows_its_cheapest_type_and_default_latency() {
        let view = StateView::new("c", T0);
        let config = pools("{cpu: \"100\"}");
        let a = run(&view, Some(&config));
        let row = &a.pools[0].types[0];
        assert_eq!((row.current, row.max), (0, Some(50)), "{row:?}");
        assert!(row.instance_type.starts_with("m5."), "{}", row.instance_type);
        assert_eq!(row.latency.scope, "default");
        assert!(a.notes.iter().any(|n| n.contains("no node has become Ready")));
        // Without the NodePools there is nothing to show.
        assert!(run(&view, None).is_empty());
    }

    #[test]
    fn a_node_with_every_gpu_requested_is_not_available_however_idle_its_cpu() {
        let g5 = catalogue_type("g5.12xlarge");
        assert_eq!(g5.allocatable.get(Resource::NvidiaGpu), 4);
        let config = pool(
            "gpu",
            "karpenter.k8s.aws/instance-family",
            "[g5]",
            "{nvidia.com/gpu: \"16\"}",
        );
        let mut view = StateView::new("c", T0 + 300_000);
        // All 4 GPUs requested, with 8 of 47 vCPU and 16 GiB: 75 %+ of CPU and memory unplanned,
        // which the CPU-only rule would call "Available now".
        view.claims = vec![gpu_node("full", "gpu", "g5.12xlarge", 4, 8_000, 16 * GIB)];
        usage_of(&mut view, "gpu");
        let a = run(&view, Some(&config));
        let row = &a.pools[0].types[0];
        assert_eq!(row.instance_type, "g5.12xlarge");
        assert_eq!(row.gpu_model.as_deref(), Some("A10G"));
        assert_eq!(row.free_gpus, Some(0));
        assert_eq!(row.wait, Wait::NewNode { seconds: 80.0 }, "{row:?}");
        // 16 GPUs allowed, 4 used: 3 more 4-GPU nodes.
        assert_eq!(row.max, Some(4));
        assert_eq!(a.pools[0].free_gpus, Some(0));

        // A second node, one GPU of four requested: 3 GPUs free, and a 1-GPU pod fits.
        view.claims
            .push(gpu_node("partly", "gpu", "g5.12xlarge", 1, 12_000, 48 * GIB));
        usage_of(&mut view, "gpu");
        let a = run(&view, Some(&config));
        let row = &a.pools[0].types[0];
        assert_eq!(row.free_gpus, Some(3));
        assert_eq!(row.wait, Wait::AvailableNow);
        assert_eq!(row.max, Some(4), "8 of 16 GPUs used: 2 more");
        assert_eq!(
            a.gpu_models,
            [GpuModelRow {
                model: "A10G".into(),
                available_now: 3,
                total: 8,
                scalable_to: Some(16),
                limits_known: true,
                instance_types: [
                    "g5.12xlarge",
                    "g5.16xlarge",
                    "g5.24xlarge",
                    "g5.2xlarge",
                    "g5.48xlarge",
                    "g5.4xlarge",
                    "g5.8xlarge",
                    "g5.xlarge"
                ]
                .map(String::from)
                .to_vec(),
            }]
        );
    }

    #[test]
    fn a_free_gpu_whose_host_is_planned_away_is_counted_free_but_not_available() {
        let g5 = catalogue_type("g5.12xlarge");
        let config = pool("gpu", "karpenter.k8s.aws/instance-family", "[g5]", "{}");
        let mut view = StateView::new("c", T0 + 300_000);
        // 3 GPUs requested with all but 1 vCPU: the fourth GPU is stranded (a GPU pod needs a
        // quarter of the 47 / 4 vCPU per GPU).
        let cpu = g5.allocatable.cpu_milli() - 1_000;
        view.claims = vec![gpu_node("stranded", "gpu", "g5.12xlarge", 3, cpu, 16 * GIB)];
        let a = run(&view, Some(&config));
        let row = &a.pools[0].types[0];
        assert_eq!(row.free_gpus, Some(1));
        assert_ne!(row.wait, Wait::AvailableNow);
        assert_eq!(row.max, None, "no limit");
        let model = &a.gpu_models[0];
        assert_eq!((model.available_now, model.total, model.scalable_to), (1, 4, None));
        assert!(model.limits_known, "unlimited, not unknown");
        // With a quarter of a GPU's share of CPU free, it fits.
        let cpu = g5.allocatable.cpu_milli() * 3 / 4;
        view.claims = vec![gpu_node("room", "gpu", "g5.12xlarge", 3, cpu, 16 * GIB)];
        assert_eq!(run(&view, Some(&config)).pools[0].types[0].wait, Wait::AvailableNow);
    }

    #[test]
    fn an_empty_gpu_pool_shows_its_cheapest_gpu_type_and_a_max_from_the_gpu_limit() {
        let view = StateView::new("c", T0);
        // Only 4-GPU types admitted: 16 GPUs are 4 nodes.
        let config = pool(
            "train",
            "node.kubernetes.io/instance-type",
            "[g5.12xlarge, g5.24xlarge]",
            "{nvidia.com/gpu: \"16\"}",
        );
        let a = run(&view, Some(&config));
        let rows = &a.pools[0].types;
        assert_eq!(rows.len(), 1);
        assert_eq!(
            (rows[0].instance_type.as_str(), rows[0].gpus_per_node),
            ("g5.12xlarge", 4)
        );
        assert_eq!((rows[0].current, rows[0].max), (0, Some(4)));
        assert_eq!(rows[0].free_gpus, Some(0));
        assert_eq!(
            (
                a.gpu_models[0].model.as_str(),
                a.gpu_models[0].available_now,
                a.gpu_models[0].total
            ),
            ("A10G", 0, 0)
        );
        assert_eq!(a.gpu_models[0].scalable_to, Some(16));

        // A pool admitting general and GPU types with a GPU limit: its cheapest general type
        // (unbounded by the GPU limit) and its cheapest type with a whole GPU (bounded by it).
        let config = pool(
            "mixed",
            "karpenter.k8s.aws/instance-family",
            "[g5, m5]",
            "{nvidia.com/gpu: \"16\"}",
        );
        let a = run(&view, Some(&config));
        let rows: Vec<(&str, u64, Option<u64>)> = a.pools[0]
            .types
            .iter()
            .map(|r| (r.instance_type.as_str(), r.gpus_per_node, r.max))
            .collect();
        assert_eq!(rows[0], ("g5.xlarge", 1, Some(16)), "{rows:?}");
        assert!(
            rows[1].0.starts_with("m5.") && rows[1].1 == 0 && rows[1].2.is_none(),
            "{rows:?}"
        );
        // Without a GPU limit, a pool that admits general types shows one general row.
        let config = pool(
            "mixed",
            "karpenter.k8s.aws/instance-family",
            "[g5, m5]",
            "{cpu: \"100\"}",
        );
        let a = run(&view, Some(&config));
        assert_eq!(a.pools[0].types.len(), 1);
        assert!(a.gpu_models.is_empty(), "no GPU row, no GPU limit: {:?}", a.gpu_models);
    }

    #[test]
    fn the_gpu_summary_adds_pools_and_counts_launching_nodes() {
        let mut config = pool(
            "a",
            "karpenter.k8s.aws/instance-family",
            "[g5]",
            "{nvidia.com/gpu: \"8\"}",
        );
        config.merge(pool(
            "b",
            "karpenter.k8s.aws/instance-family",
            "[g5, p5]",
            "{nvidia.com/gpu: \"10\"}",
        ));
        let mut view = StateView::new("c", T0 + 300_000);
        let launching = Claim::new("l", "b", "g5.xlarge", T0 + 290_000).0;
        view.claims = vec![
            gpu_node("a1", "a", "g5.2xlarge", 0, 500, GIB),
            gpu_node("b1", "b", "p5.4xlarge", 1, 4_000, 64 * GIB),
            launching,
        ];
        usage_of(&mut view, "a");
        usage_of(&mut view, "b");
        let a = run(&view, Some(&config));
        let by_model: Vec<(&str, u64, u64, Option<u64>)> = a
            .gpu_models
            .iter()
            .map(|m| (m.model.as_str(), m.available_now, m.total, m.scalable_to))
            .collect();
        // A10G: pool a 1 of 8 used (7 more), pool b 2 of 10 used (8 more in 1-GPU nodes, or
        // 8 in two 4-GPU nodes); the launching g5.xlarge is in the total, not free.
        // H100: pool b's room (8 GPUs) holds eight p5.4xlarge or one p5.48xlarge: 8 more.
        assert_eq!(by_model, [("A10G", 1, 2, Some(2 + 7 + 8)), ("H100", 0, 1, Some(1 + 8))]);
        // Without the NodePools the limits are unknown, not unlimited.
        let a = run(&view, None);
        assert!(a.gpu_models.iter().all(|m| !m.limits_known && m.scalable_to.is_none()));
        assert_eq!(a.gpu_models[0].total, 2);
    }

    #[test]
    fn waits_round_to_minutes() {
        assert_eq!(Wait::ScalingUp { seconds: 0.0 }.text(), "~1min (scaling up)");
        assert_eq!(Wait::NewNode { seconds: 150.0 }.text(), "~3min (new node)");
        assert_eq!(Wait::AvailableNow.text(), "Available now");
    }
}
