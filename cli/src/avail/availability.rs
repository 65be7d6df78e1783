//! What `nodewright avail` computes from a [`StateView`]: per pool and instance type, the nodes
//! ready and on their way, how far the pool's limits let the type grow, the pods waiting for it,
//! and how long a new pod would wait. Pure: no I/O, "now" is the view's time.
//!
//! Waits come from the claims' own transition times (decision -> EC2 instance -> node Ready), the
//! median over the live claims of the type, else of the pool, else of the cluster; only when no
//! claim has ever become Ready is the published default used, and the output says so.

use std::collections::BTreeMap;

use nodewright_core::model::ClaimState;
use nodewright_core::nodepool::{Limits, NodePool};
use nodewright_core::ports::state::{ClaimRecord, Holder, PoolUsage, StateView};
use nodewright_core::{CapacityType, Config, InstanceType, Resource, Resources};
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
    pub price_per_hour: f64,
}

/// The whole report (`--json` prints it; schema in docs/cli.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Availability {
    pub cluster: String,
    /// The view's time, RFC 3339.
    pub at: String,
    pub pools: Vec<PoolRow>,
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
    let mut limit_by = |limit: u64, used: u64, per_node: u64| {
        if limit == 0 || per_node == 0 {
            return;
        }
        let more = limit.saturating_sub(used) / per_node;
        room = Some(room.map_or(more, |r| r.min(more)));
    };
    limit_by(
        limits.resources.get(Resource::Cpu),
        usage.cpu_milli,
        capacity.cpu_milli(),
    );
    limit_by(
        limits.resources.get(Resource::Memory),
        usage.memory_bytes,
        capacity.memory(),
    );
    limit_by(limits.resources.accelerators(), usage.gpus, capacity.accelerators());
    room
}

/// Whether a Ready claim has room the scheduler did not plan away: at least a quarter of its
/// allocatable CPU and memory. (Planned requests, not live usage: pods that ended still count.)
fn has_room(c: &ClaimRecord) -> bool {
    let Some(alloc) = &c.allocatable else {
        return false;
    };
    let mut left = alloc.clone();
    if let Some(req) = &c.requested {
        left.saturating_sub(req);
    }
    left.cpu_milli() * 4 >= alloc.cpu_milli() && left.memory() * 4 >= alloc.memory() && alloc.cpu_milli() > 0
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
                // What the next launch most likely picks: the cheapest admitted type (a general
                // one when the pool admits any).
                let admitted: Vec<&InstanceType> = admitted.collect();
                let general = admitted.iter().any(|t| !t.accelerated);
                let cheapest = admitted
                    .into_iter()
                    .filter(|t| !(general && t.accelerated))
                    .filter_map(|t| {
                        Some((
                            t.cheapest(CapacityType::Spot).or(t.cheapest(CapacityType::OnDemand))?,
                            t.name.as_str(),
                        ))
                    })
                    .min_by(|a, b| a.0.total_cmp(&b.0));
                type_names.extend(cheapest.map(|(_, n)| n));
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
            let limited = pool.is_some() && max.is_some_and(|m| current >= m);
            // Pods already waiting on launches of this type mean the Ready nodes had no room for
            // them: a new pod queues behind the launch too.
            let queued = pending_pods > 0 && soonest_started.is_some();
            let wait = if !queued && of_type.iter().any(|c| c.state == ClaimState::Ready && has_room(c)) {
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
                .filter(|o| o.instance_type == name)
                .map(|o| format!("{}/{}", o.capacity_type.as_str(), o.zone))
                .collect();
            rows.push(TypeRow {
                instance_type: name.to_string(),
                gpus_per_node: catalogue.map_or(0, |t| t.capacity.accelerators()),
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
            price_per_hour: round_cents(rows.iter().map(|r| r.price_per_hour).sum()),
            types: rows,
        });
    }
    let price_per_hour = round_cents(pools.iter().map(|p| p.price_per_hour).sum());
    Availability {
        cluster: view.cluster.clone(),
        at: nodewright_core::time::format_rfc3339(view.at),
        pools,
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
mod tests {
    use nodewright_core::catalogue::OverheadConfig;
    use nodewright_core::ports::state::{PoolUsage, Reservation};
    use nodewright_core::{Catalogue, Config};

    use super::*;

    const T0: i64 = 1_790_000_000_000;

    /// A claim of `type_` in `pool` at `state`, launched at `start` and Ready after 20 s + 60 s.
    struct Claim(ClaimRecord);

    impl Claim {
        fn new(id: &str, pool: &str, type_: &str, start: i64) -> Claim {
            let mut c = ClaimRecord::launching(id, pool, Vec::new(), start);
            c.instance_type = Some(type_.into());
            c.capacity_type = Some(CapacityType::Spot);
            c.price_per_hour = Some(0.5);
            c.state = ClaimState::Launched;
            c.transitions.insert(ClaimState::Launched, start + 20_000);
            Claim(c)
        }
        fn ready(mut self) -> Claim {
            self.0.state = ClaimState::Ready;
            let launched = self.0.transitions[&ClaimState::Launched];
            self.0.transitions.insert(ClaimState::Ready, launched + 60_000);
            self
        }
        fn on_demand(mut self) -> Claim {
            self.0.capacity_type = Some(CapacityType::OnDemand);
            self
        }
        fn room(mut self, alloc_cpu: u64, requested_cpu: u64) -> Claim {
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

    fn pools(yaml_limits: &str) -> Config {
        let text = format!(
            "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {{name: gpu}}\nspec:\n  template:\n    spec:\n      \
             nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}}\n      requirements:\n        \
             - {{key: karpenter.k8s.aws/instance-family, operator: In, values: [g5, m5]}}\n  limits: {yaml_limits}\n"
        );
        Config::parse_strict(&text, "test").expect("valid pool").0
    }

    fn types() -> Vec<InstanceType> {
        Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default())
    }

    fn run(view: &StateView, config: Option<&Config>) -> Availability {
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
    fn waits_round_to_minutes() {
        assert_eq!(Wait::ScalingUp { seconds: 0.0 }.text(), "~1min (scaling up)");
        assert_eq!(Wait::NewNode { seconds: 150.0 }.text(), "~3min (new node)");
        assert_eq!(Wait::AvailableNow.text(), "Available now");
    }
}
