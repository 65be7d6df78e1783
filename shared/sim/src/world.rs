//! The simulated cluster both autoscalers act on: pods arriving and leaving, instances launching,
//! nodes joining, a kube-scheduler stand-in binding pending pods, and the meters (cost, node time,
//! requested resource time, pending time) the report is made from.

use std::collections::{BTreeMap, HashMap};

use nodewright_core::model::{Effect, Taint, Toleration, TolerationOperator};
use nodewright_core::scheduler::{Input, Options, schedule};
use nodewright_core::{CapacityType, InstanceType, Node, Pod, Resource, Resources};

use crate::workload::Workload;

/// Where one workload pod is.
#[derive(Debug, Clone, PartialEq)]
pub enum PodPhase {
    NotArrived,
    /// Waiting for a node since `since` (ms).
    Pending {
        uid: String,
        since: i64,
    },
    Bound {
        uid: String,
        node: String,
        since: i64,
    },
    /// Deleted by its owner.
    Gone,
}

#[derive(Debug, Clone)]
pub struct PodSlot {
    pub template: Pod,
    pub phase: PodPhase,
    /// Incarnations so far (an evicted pod comes back as a new pod with a new uid, as a
    /// ReplicaSet would recreate it).
    pub incarnations: u32,
    pub ever_ran: bool,
}

/// A launched instance, until it terminates.
#[derive(Debug, Clone)]
pub struct SimInstance {
    pub instance_id: String,
    pub node_name: String,
    pub claim: Option<String>,
    pub pool: Option<String>,
    pub instance_type: String,
    pub zone: String,
    pub capacity_type: CapacityType,
    pub price: f64,
    pub allocatable: Resources,
    pub node_labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub launched_at: i64,
    pub ready: bool,
    pub cordoned: bool,
    /// Workload pod indices bound here.
    pub pods: Vec<usize>,
}

/// One point of the timeline.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    pub at_hours: f64,
    pub nodes_by_type: BTreeMap<String, u32>,
    pub dollars_per_hour: f64,
    pub pending_pods: u32,
    /// Dollars spent since the start (billed instances plus the running ones so far).
    pub cumulative_cost_usd: f64,
    /// GPUs on the instances, and GPUs the bound pods request.
    pub gpus: u64,
    pub gpus_requested: u64,
}

/// Integrated meters.
#[derive(Debug, Clone, Default)]
pub struct Meters {
    pub cost_usd: f64,
    pub node_ms: f64,
    pub node_ms_by_type: BTreeMap<String, f64>,
    /// Allocatable x time (milli-CPU ms, byte ms, GPU ms) of billed instances.
    pub capacity: [f64; 3],
    /// Requests x time of bound pods.
    pub used: [f64; 3],
    pub pod_ms: f64,
    pub pending_ms: Vec<i64>,
    pub launches: u32,
    pub spot_launches: u32,
    pub terminations: u32,
    /// What the billed instances would have cost at their type's on-demand price (the spot share
    /// of a saving is this minus `cost_usd`).
    pub on_demand_cost_usd: f64,
    /// Cost, and cost at on-demand prices, of instances while no pod was bound to them (booting,
    /// or empty and not yet removed).
    pub idle_cost_usd: f64,
    pub idle_on_demand_cost_usd: f64,
    /// Pending episodes that ended without a bind: the pod was deleted while pending, or was still
    /// pending at the end (time so far).
    pub unbound_pending_ms: Vec<i64>,
    /// Of those, the ones still open at the end.
    pub pending_at_end: usize,
    /// Bound pods evicted (drain or instance loss); each comes back as a new pod.
    pub evictions: u32,
}

fn triple(r: &Resources) -> [f64; 3] {
    [r.cpu_milli() as f64, r.memory() as f64, r.accelerators() as f64]
}

pub struct World {
    pub pods: Vec<PodSlot>,
    pub instances: BTreeMap<String, SimInstance>,
    pub meters: Meters,
    pub timeline: Vec<Sample>,
    /// Pods that turned pending since the autoscaler last looked (what a watcher would see).
    pub fresh_pending: Vec<usize>,
    /// Capacity or pending pods changed since the last bind.
    dirty: bool,
    types: HashMap<String, InstanceType>,
    /// Instances with no pod bound, since when (for the idle meters).
    idle_since: HashMap<String, i64>,
    /// Each workload pod's departure (ms), None when it runs to the end.
    pub ends: Vec<Option<i64>>,
    pub duration_ms: i64,
}

impl World {
    pub fn new(workload: &Workload, instance_types: &[InstanceType]) -> World {
        let pods = workload
            .pods
            .iter()
            .map(|w| {
                let mut p = Pod {
                    namespace: "sim".into(),
                    name: w.name.clone(),
                    requests: w.requests.clone(),
                    ..Default::default()
                };
                p.owner = Some(nodewright_core::model::OwnerRef {
                    kind: "ReplicaSet".into(),
                    name: "workload".into(),
                });
                p.labels.insert("app".into(), "workload".into());
                // What the ExtendedResourceToleration admission plugin adds: pods asking for
                // GPUs tolerate the GPU taint GPU pools carry.
                if w.requests.get(Resource::NvidiaGpu) > 0 {
                    p.tolerations.push(Toleration {
                        key: Some(Resource::NvidiaGpu.name().into()),
                        operator: TolerationOperator::Exists,
                        value: None,
                        effect: Some(Effect::NoSchedule),
                    });
                }
                p.normalize();
                PodSlot {
                    template: p,
                    phase: PodPhase::NotArrived,
                    incarnations: 0,
                    ever_ran: false,
                }
            })
            .collect();
        World {
            pods,
            instances: BTreeMap::new(),
            meters: Meters::default(),
            timeline: Vec::new(),
            fresh_pending: Vec::new(),
            dirty: false,
            types: instance_types.iter().map(|t| (t.name.clone(), t.clone())).collect(),
            idle_since: HashMap::new(),
            ends: workload.pods.iter().map(|w| w.end_ms).collect(),
            duration_ms: workload.duration_ms,
        }
    }

    /// The on-demand price of `inst`'s type (in its zone when listed there), or what it paid.
    fn on_demand_price(&self, inst: &SimInstance) -> f64 {
        let Some(t) = self.types.get(&inst.instance_type) else {
            return inst.price;
        };
        let od = |o: &&nodewright_core::Offering| o.capacity_type == CapacityType::OnDemand;
        t.offerings
            .iter()
            .filter(od)
            .find(|o| o.zone == inst.zone)
            .or_else(|| t.offerings.iter().find(od))
            .map_or(inst.price, |o| o.price)
    }

    /// Closes `instance_id`'s idle stretch at `now`, if it has one.
    fn end_idle(&mut self, instance_id: &str, now: i64) {
        let Some(since) = self.idle_since.remove(instance_id) else {
            return;
        };
        let Some(inst) = self.instances.get(instance_id) else {
            return;
        };
        let hours = (now - since).max(0) as f64 / 3_600_000.0;
        let od = self.on_demand_price(inst);
        self.meters.idle_cost_usd += inst.price * hours;
        self.meters.idle_on_demand_cost_usd += od * hours;
    }

    pub fn instance_type(&self, name: &str) -> Option<&InstanceType> {
        self.types.get(name)
    }

    /// A pod arrives (or is recreated after an eviction): pending under a new uid.
    pub fn make_pending(&mut self, i: usize, now: i64) {
        let slot = &mut self.pods[i];
        slot.incarnations += 1;
        slot.phase = PodPhase::Pending {
            uid: format!("{}-{}", slot.template.name, slot.incarnations),
            since: now,
        };
        self.fresh_pending.push(i);
        self.dirty = true;
    }

    /// The pod's owner deletes it.
    pub fn delete_pod(&mut self, i: usize, now: i64) {
        if let PodPhase::Pending { since, .. } = self.pods[i].phase {
            self.meters.unbound_pending_ms.push(now - since);
        }
        self.unbind(i, now);
        self.pods[i].phase = PodPhase::Gone;
    }

    /// Ends a bound pod's stay on its node (metering it); leaves the phase to the caller.
    fn unbind(&mut self, i: usize, now: i64) {
        if let PodPhase::Bound { node, since, .. } = &self.pods[i].phase {
            let dur = (now - since) as f64;
            let req = triple(&self.pods[i].template.requests);
            for (u, r) in self.meters.used.iter_mut().zip(req) {
                *u += r * dur;
            }
            self.meters.pod_ms += dur;
            let node = node.clone();
            if let Some(inst) = self.instance_by_node_mut(&node) {
                inst.pods.retain(|p| *p != i);
                if inst.pods.is_empty() {
                    let id = inst.instance_id.clone();
                    self.idle_since.insert(id, now);
                }
            }
            self.dirty = true;
        }
    }

    /// Evicts a bound pod: it comes back pending as a new pod.
    pub fn evict(&mut self, i: usize, now: i64) {
        if matches!(self.pods[i].phase, PodPhase::Bound { .. }) {
            self.meters.evictions += 1;
            self.unbind(i, now);
            self.make_pending(i, now);
        }
    }

    pub fn add_instance(&mut self, inst: SimInstance) {
        self.meters.launches += 1;
        if inst.capacity_type == CapacityType::Spot {
            self.meters.spot_launches += 1;
        }
        if inst.pods.is_empty() {
            self.idle_since.insert(inst.instance_id.clone(), inst.launched_at);
        }
        self.instances.insert(inst.instance_id.clone(), inst);
    }

    pub fn node_ready(&mut self, instance_id: &str) -> bool {
        match self.instances.get_mut(instance_id) {
            Some(i) if !i.ready => {
                i.ready = true;
                self.dirty = true;
                true
            }
            _ => false,
        }
    }

    pub fn instance_by_node(&self, node: &str) -> Option<&SimInstance> {
        self.instances.values().find(|i| i.node_name == node)
    }

    fn instance_by_node_mut(&mut self, node: &str) -> Option<&mut SimInstance> {
        self.instances.values_mut().find(|i| i.node_name == node)
    }

    pub fn cordon(&mut self, node: &str) {
        if let Some(i) = self.instance_by_node_mut(node) {
            i.cordoned = true;
        }
    }

    /// Registration wrote the claim's labels and left the node with `taints` (the unregistered
    /// taint removed, any the node lacked added).
    pub fn register(&mut self, node: &str, node_labels: &BTreeMap<String, String>, taints: Vec<Taint>) {
        if let Some(i) = self.instance_by_node_mut(node) {
            i.node_labels
                .extend(node_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            i.taints = taints;
            self.dirty = true;
        }
    }

    /// Evicts every pod on the node.
    pub fn drain(&mut self, node: &str, now: i64) {
        let pods = self.instance_by_node(node).map(|i| i.pods.clone()).unwrap_or_default();
        for p in pods {
            self.evict(p, now);
        }
    }

    /// The instance is gone: its pods come back pending, its bill stops.
    pub fn terminate(&mut self, instance_id: &str, now: i64) -> bool {
        let Some(inst) = self.instances.get(instance_id) else {
            return false;
        };
        for p in inst.pods.clone() {
            self.evict(p, now);
        }
        self.end_idle(instance_id, now);
        let Some(inst) = self.instances.remove(instance_id) else {
            return false;
        };
        self.bill(&inst, now);
        self.meters.terminations += 1;
        self.dirty = true;
        true
    }

    fn bill(&mut self, inst: &SimInstance, now: i64) {
        let dur = (now - inst.launched_at).max(0) as f64;
        self.meters.cost_usd += inst.price * dur / 3_600_000.0;
        self.meters.on_demand_cost_usd += self.on_demand_price(inst) * dur / 3_600_000.0;
        self.meters.node_ms += dur;
        *self
            .meters
            .node_ms_by_type
            .entry(inst.instance_type.clone())
            .or_default() += dur;
        for (c, a) in self.meters.capacity.iter_mut().zip(triple(&inst.allocatable)) {
            *c += a * dur;
        }
    }

    /// Closes every open meter at the end of the run.
    pub fn finish(&mut self, now: i64) {
        for i in 0..self.pods.len() {
            if let PodPhase::Pending { since, .. } = self.pods[i].phase {
                self.meters.unbound_pending_ms.push(now - since);
                self.meters.pending_at_end += 1;
            }
            self.unbind(i, now);
        }
        let ids: Vec<String> = self.instances.keys().cloned().collect();
        for id in &ids {
            self.end_idle(id, now);
        }
        let open: Vec<SimInstance> = self.instances.values().cloned().collect();
        for inst in &open {
            self.bill(inst, now);
        }
    }

    pub fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        self.pods
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.phase, PodPhase::Pending { .. }))
            .map(|(i, _)| i)
    }

    /// The pod as the cluster shows it (uid of its current incarnation, node when bound).
    pub fn pod(&self, i: usize) -> Pod {
        let slot = &self.pods[i];
        let mut p = slot.template.clone();
        match &slot.phase {
            PodPhase::Pending { uid, .. } => p.uid = uid.clone(),
            PodPhase::Bound { uid, node, .. } => {
                p.uid = uid.clone();
                p.node_name = Some(node.clone());
            }
            _ => {}
        }
        p
    }

    /// The node as the scheduler sees it.
    pub fn node(&self, inst: &SimInstance) -> Node {
        let mut n = Node::new(&inst.node_name, &inst.instance_type, &inst.zone);
        n.pool = inst.pool.clone();
        n.capacity_type = inst.capacity_type;
        n.labels = inst.node_labels.clone();
        n.taints = inst.taints.clone();
        n.allocatable = Some(inst.allocatable.clone());
        n.unschedulable = inst.cordoned;
        n.price = Some(inst.price);
        n.pods = inst.pods.iter().map(|&p| self.pod(p)).collect();
        n
    }

    /// The kube-scheduler stand-in: binds pending pods onto Ready, schedulable nodes, honouring
    /// requests, taints and affinity (the core scheduler with no pool to launch from). Returns
    /// whether anything was bound.
    pub fn bind(&mut self, now: i64) -> bool {
        if !self.dirty {
            return false;
        }
        self.dirty = false;
        let pending: Vec<usize> = self.pending().collect();
        if pending.is_empty() {
            return false;
        }
        let nodes: Vec<Node> = self
            .instances
            .values()
            .filter(|i| i.ready && !i.cordoned)
            .map(|i| self.node(i))
            .collect();
        if nodes.is_empty() {
            return false;
        }
        let types: Vec<InstanceType> = {
            let mut names: Vec<&str> = nodes.iter().map(|n| n.instance_type.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            names.iter().filter_map(|n| self.types.get(*n).cloned()).collect()
        };
        let pods: Vec<Pod> = pending.iter().map(|&i| self.pod(i)).collect();
        let plan = schedule(
            &Input {
                pods: &pods,
                nodes: &nodes,
                pools: &[],
                instance_types: &types,
                daemonsets: &[],
                pool_usage: &[],
            },
            &Options::default(),
        );
        let by_uid: HashMap<&str, usize> = pods.iter().zip(&pending).map(|(p, &i)| (p.uid.as_str(), i)).collect();
        let mut bound = false;
        for b in &plan.bindings {
            let Some(&i) = by_uid.get(b.pod.as_str()) else { continue };
            let PodPhase::Pending { uid, since, .. } = self.pods[i].phase.clone() else {
                continue;
            };
            let Some(inst) = self.instance_by_node_mut(&b.node) else {
                continue;
            };
            inst.pods.push(i);
            let id = inst.instance_id.clone();
            self.end_idle(&id, now);
            self.meters.pending_ms.push(now - since);
            self.pods[i].ever_ran = true;
            self.pods[i].phase = PodPhase::Bound {
                uid,
                node: b.node.clone(),
                since: now,
            };
            bound = true;
        }
        bound
    }

    pub fn sample(&mut self, now: i64) {
        let mut by_type = BTreeMap::new();
        let mut dollars = 0.0;
        let mut spent = self.meters.cost_usd;
        let (mut gpus, mut gpus_requested) = (0, 0);
        for i in self.instances.values() {
            *by_type.entry(i.instance_type.clone()).or_insert(0) += 1;
            dollars += i.price;
            spent += i.price * (now - i.launched_at).max(0) as f64 / 3_600_000.0;
            gpus += i.allocatable.accelerators();
            gpus_requested += i
                .pods
                .iter()
                .map(|&p| self.pods[p].template.requests.accelerators())
                .sum::<u64>();
        }
        let pending = self.pending().count() as u32;
        self.timeline.push(Sample {
            at_hours: now as f64 / 3_600_000.0,
            nodes_by_type: by_type,
            dollars_per_hour: dollars,
            pending_pods: pending,
            cumulative_cost_usd: spent,
            gpus,
            gpus_requested,
        });
    }

    /// Share of a node's allocatable its pods request: the larger of CPU and memory.
    pub fn utilization(&self, inst: &SimInstance) -> f64 {
        let mut req = Resources::new();
        for &p in &inst.pods {
            req.add(&self.pods[p].template.requests);
        }
        let frac = |r: Resource| {
            let a = inst.allocatable.get(r);
            if a == 0 { 0.0 } else { req.get(r) as f64 / a as f64 }
        };
        frac(Resource::Cpu).max(frac(Resource::Memory))
    }
}
