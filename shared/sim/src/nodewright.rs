//! Nodewright under simulation: the four functions' real handlers, fed the events EventBridge would
//! deliver (built as JSON and parsed by the functions' own parser), acting through the in-process
//! DynamoDB, EC2 and cluster stand-ins. What they do to EC2 and the cluster is applied back to the
//! simulated world: launches become instances that turn running and Ready after the configured
//! delays, drains evict pods, terminations stop the bill.

use std::collections::{HashMap, HashSet};

use nodewright_core::model::cluster_event::{self, NodeReady, PendingPod, PodPending};
use nodewright_core::ports::cluster::ClusterNode;
use nodewright_core::ports::state::StateView;
use nodewright_core::{CapacityType, InstanceType};
use nodewright_handlers::adapters::handle_in_memory;
use nodewright_handlers::adapters::memory::{ClusterWrite, MemoryCapacity, MemoryCluster, MemoryState};
use nodewright_handlers::ports::Capacity;
use nodewright_handlers::{Action, Deps, Function, Settings, event};
use serde_json::{Value, json};

use crate::engine::{Autoscaler, Ev, Queue};
use crate::rng::Rng;
use crate::world::{PodPhase, SimInstance, World};
use crate::{Error, Result, SimConfig};

/// The watcher stand-in's batch window (Karpenter's): closes 1 s after the last pod, 10 s at most.
const BATCH_IDLE_MS: i64 = 1_000;
const BATCH_MAX_MS: i64 = 10_000;
/// Pods per `Pod Pending` entry (the watcher splits on the 256 KB entry limit; this stays under it).
const PODS_PER_ENTRY: usize = 250;
/// The consolidation function's schedule.
const CONSOLIDATION_EVERY_MS: i64 = 60_000;
/// EventBridge delivery delay for AWS service events.
const DELIVERY_MS: i64 = 1_000;
/// Spot reclaims this long after the warning.
const SPOT_NOTICE_MS: i64 = 120_000;

/// Counters only the Nodewright run has.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub invocations: HashMap<&'static str, u32>,
    pub interruptions: u32,
    pub rebalances_ignored: u32,
    pub disruption_actions: u32,
    pub disrupted_nodes: u32,
    pub disruption_saving_per_hour: f64,
    /// Dollars consolidation of busy nodes saved over the run, estimated per action: its $/h
    /// saving until the last pod on the removed nodes would have left (when the node would have
    /// emptied and gone anyway), or the end of the run.
    pub consolidation_saved_usd: f64,
    /// Node-hours those actions saved (the same span, per removed node).
    pub consolidation_node_hours_saved: f64,
    /// Running pods those actions evicted.
    pub consolidation_evictions: u32,
    pub on_demand_fallbacks: u32,
    pub unschedulable_reports: u32,
    /// Every pod-pending plan's (price, lower bound, gap) per hour, as the handler reported it.
    pub plans: Vec<(f64, f64, f64)>,
    /// Handler errors (a retry would follow in Lambda); the first few are kept.
    pub handler_errors: u32,
    pub first_errors: Vec<String>,
}

pub struct NodewrightSim {
    deps: Deps<MemoryState, MemoryCapacity, MemoryCluster>,
    capacity: MemoryCapacity,
    cluster: MemoryCluster,
    config: SimConfig,
    prices: HashMap<(String, CapacityType, String), f64>,
    rng: Rng,
    batch: Vec<(usize, String)>,
    batch_first: i64,
    batch_last: i64,
    /// When the queued Flush fires (one at a time).
    flush_at: Option<i64>,
    known: HashSet<String>,
    event_seq: u64,
    pub stats: Stats,
}

impl NodewrightSim {
    pub fn new(config: &SimConfig, settings: Settings) -> NodewrightSim {
        let state = MemoryState::new();
        let capacity = MemoryCapacity::new(&settings.cluster);
        let cluster = MemoryCluster::new();
        let prices = price_index(&settings.pools().instance_types);
        NodewrightSim {
            deps: Deps {
                settings,
                state,
                capacity: capacity.clone(),
                cluster: Some(cluster.clone()),
                daemonsets: nodewright_handlers::DaemonSets::default(),
                consolidated: Default::default(),
            },
            capacity,
            cluster,
            config: config.clone(),
            prices,
            rng: Rng::new(config.seed),
            batch: Vec::new(),
            batch_first: 0,
            batch_last: 0,
            flush_at: None,
            known: HashSet::new(),
            event_seq: 0,
            stats: Stats::default(),
        }
    }

    /// Nodewright's state (claims, reservations, usage, ICE cache) at simulated time `now`, as
    /// `nodewright avail --state` reads it.
    pub fn state_view(&self, now: i64) -> StateView {
        self.deps.state.view(&self.deps.settings.cluster, self.epoch(now))
    }

    fn epoch(&self, now: i64) -> i64 {
        self.config.start_epoch_ms + now
    }

    fn envelope(&mut self, now: i64, source: &str, detail_type: &str, resources: Vec<String>, detail: Value) -> Value {
        self.event_seq += 1;
        json!({
            "version": "0",
            "id": format!("sim-{:012}", self.event_seq),
            "detail-type": detail_type,
            "source": source,
            "account": "123456789012",
            "time": nodewright_core::time::format_rfc3339(self.epoch(now)),
            "region": self.deps.settings.region,
            "resources": resources,
            "detail": detail,
        })
    }

    fn ec2_event(&mut self, now: i64, detail_type: &str, instance_id: &str, detail: Value) -> Value {
        let arn = format!(
            "arn:aws:ec2:{}:123456789012:instance/{instance_id}",
            self.deps.settings.region
        );
        self.envelope(now, "aws.ec2", detail_type, vec![arn], detail)
    }

    /// Mirrors the world into the cluster stand-in, runs the handler, applies what it did.
    async fn invoke(
        &mut self,
        function: Function,
        event: Value,
        now: i64,
        world: &mut World,
        queue: &mut Queue,
    ) -> Result<()> {
        *self.stats.invocations.entry(function.name()).or_default() += 1;
        if function != Function::PodPending {
            self.mirror(world);
        }
        let parsed = event::parse_value(&event)
            .map_err(|e| Error::Sim(format!("the simulator built an event the parser refused: {e}")))?;
        match handle_in_memory(function, &self.deps, parsed, self.epoch(now)).await {
            Ok(outcome) => {
                for a in &outcome.actions {
                    match a {
                        Action::Launched {
                            fell_back_to_on_demand: true,
                            ..
                        } => self.stats.on_demand_fallbacks += 1,
                        Action::Disruption {
                            reason,
                            nodes,
                            saving_per_hour,
                            replacements,
                        } => {
                            self.stats.disruption_actions += 1;
                            self.stats.disrupted_nodes += nodes.len() as u32;
                            self.stats.disruption_saving_per_hour += saving_per_hour;
                            // Expiry and drift replace nodes for their own reasons, at any cost.
                            if reason == "Underutilized" {
                                self.count_consolidation(world, nodes, *replacements, *saving_per_hour, now);
                            }
                        }
                        Action::Unschedulable { .. } => self.stats.unschedulable_reports += 1,
                        Action::Planned {
                            price_per_hour,
                            lower_bound_per_hour,
                            gap,
                            ..
                        } => self.stats.plans.push((*price_per_hour, *lower_bound_per_hour, *gap)),
                        _ => {}
                    }
                }
            }
            Err(e) => {
                self.stats.handler_errors += 1;
                if self.stats.first_errors.len() < 5 {
                    self.stats.first_errors.push(format!("{}: {e}", function.name()));
                }
            }
        }
        self.observe(now, world, queue).await
    }

    /// What a disruption of busy nodes saves and costs in churn (the world still shows the pods on
    /// them: the drain comes after). Emptiness (no pods) is not counted: the node was idle.
    fn count_consolidation(&mut self, world: &World, nodes: &[String], replacements: usize, saving: f64, now: i64) {
        let pods: Vec<usize> = nodes
            .iter()
            .filter_map(|n| world.instance_by_node(n))
            .flat_map(|i| i.pods.iter().copied())
            .collect();
        if pods.is_empty() {
            return;
        }
        let emptied_at = pods
            .iter()
            .map(|&p| world.ends[p].unwrap_or(world.duration_ms).min(world.duration_ms))
            .max()
            .unwrap_or(now);
        let hours = (emptied_at - now).max(0) as f64 / 3_600_000.0;
        self.stats.consolidation_saved_usd += saving * hours;
        self.stats.consolidation_node_hours_saved += nodes.len().saturating_sub(replacements) as f64 * hours;
        self.stats.consolidation_evictions += pods.len() as u32;
    }

    fn mirror(&self, world: &World) {
        let mut nodes = Vec::new();
        let mut bound = Vec::new();
        for inst in world.instances.values().filter(|i| i.ready) {
            let mut node = world.node(inst);
            bound.append(&mut node.pods);
            let unregistered = node
                .taints
                .iter()
                .any(|t| t.key == nodewright_core::registration::UNREGISTERED_TAINT);
            nodes.push(ClusterNode {
                node,
                instance_id: Some(inst.instance_id.clone()),
                ready: true,
                unregistered,
            });
        }
        self.cluster.set_nodes(nodes);
        self.cluster.set_bound(bound);
        let pending = world
            .pending()
            .map(|i| PendingPod {
                resource_version: "1".into(),
                created_at: match world.pods[i].phase {
                    PodPhase::Pending { since, .. } => self.epoch(since),
                    _ => 0,
                },
                pod: world.pod(i),
            })
            .collect();
        self.cluster.set_pending_since(pending);
    }

    /// Applies EC2 launches and terminations and cluster writes to the world.
    async fn observe(&mut self, now: i64, world: &mut World, queue: &mut Queue) -> Result<()> {
        let instances = self.capacity.instances().await.map_err(|e| Error::Sim(e.to_string()))?;
        for i in instances {
            if !self.known.insert(i.instance_id.clone()) {
                continue;
            }
            let ct = if i.spot {
                CapacityType::Spot
            } else {
                CapacityType::OnDemand
            };
            let price = self
                .prices
                .get(&(i.instance_type.clone(), ct, i.zone.clone()))
                .copied()
                .unwrap_or(0.0);
            // The node registers from its user data alone, as a real kubelet would.
            let boot = booted(self.capacity.user_data(&i.instance_id).as_deref());
            let allocatable = world
                .instance_type(&i.instance_type)
                .map(|t| t.allocatable.clone())
                .unwrap_or_default();
            let band = world.instance_type(&i.instance_type).and_then(|t| t.interruption_band);
            world.add_instance(SimInstance {
                instance_id: i.instance_id.clone(),
                node_name: i.instance_id.replacen("i-", "ip-", 1),
                claim: i.claim_id.clone(),
                pool: boot.pool,
                instance_type: i.instance_type.clone(),
                zone: i.zone.clone(),
                capacity_type: ct,
                price,
                allocatable,
                node_labels: boot.labels,
                taints: boot.taints,
                launched_at: now,
                ready: false,
                cordoned: false,
                pods: Vec::new(),
            });
            queue.push(now + self.config.launch_delay_ms, Ev::Running(i.instance_id.clone()));
            queue.push(
                now + self.config.launch_delay_ms + self.config.registration_delay_ms,
                Ev::Ready(i.instance_id.clone()),
            );
            if ct == CapacityType::Spot && self.config.interruptions {
                let at = now + interruption_wait_ms(&mut self.rng, band, self.config.interruption_scale);
                queue.push(at, Ev::SpotWarning(i.instance_id.clone()));
            }
        }
        for id in self.capacity.take_terminated() {
            if world.terminate(&id, now) {
                queue.push(now + DELIVERY_MS, Ev::Terminated(id));
            }
        }
        for w in self.cluster.take_writes() {
            match w {
                ClusterWrite::CordonAndTaint { node, .. } => world.cordon(&node),
                ClusterWrite::Drain { node, .. } => world.drain(&node, now),
                ClusterWrite::Register { node, labels, taints } => world.register(&node, &labels, taints),
                ClusterWrite::DeleteNode(_) => {}
            }
        }
        Ok(())
    }

    async fn flush(&mut self, now: i64, world: &mut World, queue: &mut Queue) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        let pods: Vec<PendingPod> = batch
            .iter()
            .filter(|(i, uid)| matches!(&world.pods[*i].phase, PodPhase::Pending { uid: u, .. } if u == uid))
            .map(|(i, _)| {
                let since = match world.pods[*i].phase {
                    PodPhase::Pending { since, .. } => since,
                    _ => now,
                };
                PendingPod {
                    resource_version: "1".into(),
                    created_at: self.epoch(since),
                    pod: world.pod(*i),
                }
            })
            .collect();
        if pods.is_empty() {
            return Ok(());
        }
        self.event_seq += 1;
        let batch_id = format!("batch-{:012}", self.event_seq);
        let chunks: Vec<Vec<PendingPod>> = pods.chunks(PODS_PER_ENTRY).map(<[PendingPod]>::to_vec).collect();
        let parts = chunks.len() as u32;
        for (n, chunk) in chunks.into_iter().enumerate() {
            let detail = PodPending {
                schema_version: cluster_event::SCHEMA_VERSION,
                cluster: self.deps.settings.cluster.clone(),
                batch_id: batch_id.clone(),
                part: n as u32 + 1,
                parts,
                sent_at: self.epoch(now),
                pods: chunk,
            };
            let detail = serde_json::to_value(&detail).map_err(|e| Error::Sim(e.to_string()))?;
            let event = self.envelope(
                now,
                cluster_event::SOURCE,
                cluster_event::POD_PENDING,
                Vec::new(),
                detail,
            );
            self.invoke(Function::PodPending, event, now, world, queue).await?;
        }
        Ok(())
    }
}

/// (type, capacity type, zone) -> $/h.
fn price_index(types: &[InstanceType]) -> HashMap<(String, CapacityType, String), f64> {
    types
        .iter()
        .flat_map(|t| {
            t.offerings
                .iter()
                .map(move |o| ((t.name.clone(), o.capacity_type, o.zone.clone()), o.price))
        })
        .collect()
}

/// Monthly interruption frequency of a Spot Instance Advisor band (the band's midpoint; >20% is
/// taken as 25%; unknown types as band 2).
pub fn band_monthly_rate(band: Option<u8>) -> f64 {
    match band.unwrap_or(2) {
        0 => 0.025,
        1 => 0.075,
        2 => 0.125,
        3 => 0.175,
        _ => 0.25,
    }
}

/// Time until EC2 interrupts a spot instance: exponential with the band's monthly rate.
fn interruption_wait_ms(rng: &mut Rng, band: Option<u8>, scale: f64) -> i64 {
    let mean_hours = 730.0 / (band_monthly_rate(band) * scale);
    (rng.exponential(mean_hours) * 3_600_000.0) as i64
}

impl Autoscaler for NodewrightSim {
    async fn start(&mut self, _world: &mut World, queue: &mut Queue) -> Result<()> {
        queue.push(CONSOLIDATION_EVERY_MS, Ev::Tick);
        Ok(())
    }

    async fn on_event(&mut self, ev: Ev, now: i64, world: &mut World, queue: &mut Queue) -> Result<()> {
        match ev {
            Ev::Tick => {
                let event = self.envelope(
                    now,
                    "aws.events",
                    "Scheduled Event",
                    vec!["arn:aws:events:us-east-1:123456789012:rule/nodewright-consolidation".into()],
                    json!({}),
                );
                self.invoke(Function::Consolidation, event, now, world, queue).await?;
                queue.push(now + CONSOLIDATION_EVERY_MS, Ev::Tick);
            }
            Ev::Flush => {
                if self.flush_at != Some(now) {
                    return Ok(());
                }
                self.flush_at = None;
                let due = (self.batch_first + BATCH_MAX_MS).min(self.batch_last + BATCH_IDLE_MS);
                if !self.batch.is_empty() {
                    if now >= due {
                        self.flush(now, world, queue).await?;
                    } else {
                        self.flush_at = Some(due);
                        queue.push(due, Ev::Flush);
                    }
                }
            }
            Ev::Running(id) => {
                if world.instances.contains_key(&id) {
                    let event = self.ec2_event(
                        now,
                        "EC2 Instance State-change Notification",
                        &id,
                        json!({"instance-id": id, "state": "running"}),
                    );
                    self.invoke(Function::StateChange, event, now, world, queue).await?;
                }
            }
            Ev::Ready(id) => {
                if world.node_ready(&id) {
                    let inst = &world.instances[&id];
                    let detail = NodeReady {
                        schema_version: cluster_event::NODE_READY_SCHEMA_VERSION,
                        cluster: self.deps.settings.cluster.clone(),
                        node: inst.node_name.clone(),
                        instance_id: id.clone(),
                        ready_at: self.epoch(now),
                    };
                    let detail = serde_json::to_value(&detail).map_err(|e| Error::Sim(e.to_string()))?;
                    let event = self.envelope(
                        now,
                        cluster_event::SOURCE,
                        cluster_event::NODE_READY,
                        Vec::new(),
                        detail,
                    );
                    self.invoke(Function::StateChange, event, now, world, queue).await?;
                }
            }
            Ev::SpotWarning(id) => {
                if world.instances.contains_key(&id) {
                    self.stats.interruptions += 1;
                    let event = self.ec2_event(
                        now,
                        "EC2 Spot Instance Interruption Warning",
                        &id,
                        json!({"instance-id": id, "instance-action": "terminate"}),
                    );
                    self.invoke(Function::SpotInterruption, event, now, world, queue)
                        .await?;
                    queue.push(now + SPOT_NOTICE_MS, Ev::Reclaim(id));
                }
            }
            Ev::Reclaim(id) => {
                if world.instances.contains_key(&id) {
                    // EC2 itself takes the instance back.
                    self.capacity
                        .terminate(std::slice::from_ref(&id))
                        .await
                        .map_err(|e| Error::Sim(e.to_string()))?;
                    self.observe(now, world, queue).await?;
                }
            }
            Ev::Terminated(id) => {
                let event = self.ec2_event(
                    now,
                    "EC2 Instance State-change Notification",
                    &id,
                    json!({"instance-id": id, "state": "terminated"}),
                );
                self.invoke(Function::StateChange, event, now, world, queue).await?;
            }
            Ev::Arrive(_) | Ev::Depart(_) | Ev::Sample => {}
        }
        Ok(())
    }

    async fn settled(&mut self, now: i64, world: &mut World, queue: &mut Queue) -> Result<()> {
        let before = self.batch.len();
        for i in std::mem::take(&mut world.fresh_pending) {
            // Pods bound in the same instant never looked unschedulable to the watcher.
            if let PodPhase::Pending { uid, .. } = &world.pods[i].phase {
                self.batch.push((i, uid.clone()));
            }
        }
        if self.batch.len() == before {
            return Ok(());
        }
        if before == 0 {
            self.batch_first = now;
        }
        self.batch_last = now;
        let due = (self.batch_first + BATCH_MAX_MS).min(now + BATCH_IDLE_MS);
        if self.flush_at.is_none_or(|t| t > due) {
            self.flush_at = Some(due);
            queue.push(due, Ev::Flush);
        }
        Ok(())
    }
}

/// What a simulated node boots with: its user data read by the kubelet emulator (no claim label,
/// nothing the real kubelet would not set). An instance without readable user data boots bare.
struct Booted {
    labels: std::collections::BTreeMap<String, String>,
    taints: Vec<nodewright_core::model::Taint>,
    pool: Option<String>,
}

fn booted(user_data: Option<&str>) -> Booted {
    let boot = user_data.and_then(|u| match nodewright_kubelet::read_user_data(u) {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(error = %e, "simulated node cannot read its user data");
            None
        }
    });
    let boot = boot.unwrap_or_default();
    Booted {
        pool: boot.labels.get(nodewright_core::labels::NODEPOOL).cloned(),
        taints: boot
            .taints
            .iter()
            .filter_map(|t| {
                Some(nodewright_core::model::Taint {
                    key: t.key.clone(),
                    value: t.value.clone(),
                    effect: nodewright_core::model::Effect::parse(&t.effect)?,
                })
            })
            .collect(),
        labels: boot.labels,
    }
}
