//! The baseline: a Cluster Autoscaler-style single node group of one instance type (on-demand).
//! Every 10 s scan: scale up by the nodes a first-fit-decreasing packing of the unschedulable pods
//! needs (with one group, least-waste picks that group); scale down a node whose larger of CPU and
//! memory request utilization stayed under 0.5 for 10 minutes and whose pods fit elsewhere, no sooner
//! than 10 minutes after a scale-up (CA's defaults, notes in docs/simulator.md).

use std::collections::BTreeMap;

use nodewright_core::{CapacityType, InstanceType, Resources};

use crate::engine::{Autoscaler, Ev, Queue};
use crate::world::{SimInstance, World};
use crate::{Error, Result, SimConfig};

const SCAN_EVERY_MS: i64 = 10_000;
const SCALE_DOWN_UNNEEDED_MS: i64 = 10 * 60 * 1000;
const SCALE_DOWN_DELAY_AFTER_ADD_MS: i64 = 10 * 60 * 1000;
const SCALE_DOWN_UTILIZATION: f64 = 0.5;

/// `fixed:TYPE[:MIN[:MAX]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct FixedGroupSpec {
    pub instance_type: String,
    pub min: u32,
    pub max: u32,
}

impl FixedGroupSpec {
    pub fn parse(s: &str) -> Result<FixedGroupSpec> {
        let bad = |why: &str| Error::input("--baseline", format!("{s:?}: {why} (expected fixed:TYPE[:MIN[:MAX]])"));
        let rest = s.strip_prefix("fixed:").ok_or_else(|| bad("unknown baseline"))?;
        let mut parts = rest.split(':');
        let instance_type = parts
            .next()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("missing TYPE"))?;
        let num = |p: Option<&str>, default: u32, what: &str| match p {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .map_err(|_| bad(&format!("{what} {v:?} is not a whole number"))),
        };
        let min = num(parts.next(), 0, "MIN")?;
        let max = num(parts.next(), 1000, "MAX")?;
        if parts.next().is_some() {
            return Err(bad("too many fields"));
        }
        if max == 0 || min > max {
            return Err(bad("need 0 <= MIN <= MAX and MAX > 0"));
        }
        Ok(FixedGroupSpec {
            instance_type: instance_type.into(),
            min,
            max,
        })
    }

    pub fn name(&self) -> String {
        format!("fixed:{}:{}", self.instance_type, self.min)
    }
}

pub struct FixedGroup {
    spec: FixedGroupSpec,
    instance_type: InstanceType,
    zone: String,
    price: f64,
    config: SimConfig,
    next_id: u64,
    last_scale_up: Option<i64>,
    unneeded_since: BTreeMap<String, i64>,
}

impl FixedGroup {
    pub fn new(spec: FixedGroupSpec, types: &[InstanceType], config: &SimConfig) -> Result<FixedGroup> {
        let t = types
            .iter()
            .find(|t| t.name == spec.instance_type)
            .ok_or_else(|| {
                Error::input(
                    "--baseline",
                    format!(
                        "instance type {:?} is not in the {} catalogue",
                        spec.instance_type, config.region
                    ),
                )
            })?
            .clone();
        let (zone, price) = t
            .offerings
            .iter()
            .filter(|o| o.capacity_type == CapacityType::OnDemand)
            .min_by(|a, b| a.price.total_cmp(&b.price).then_with(|| a.zone.cmp(&b.zone)))
            .map(|o| (o.zone.clone(), o.price))
            .ok_or_else(|| Error::input("--baseline", format!("{} has no on-demand offering", t.name)))?;
        Ok(FixedGroup {
            spec,
            instance_type: t,
            zone,
            price,
            config: config.clone(),
            next_id: 0,
            last_scale_up: None,
            unneeded_since: BTreeMap::new(),
        })
    }

    fn launch(&mut self, world: &mut World, now: i64) -> String {
        self.next_id += 1;
        let id = format!("i-fixed{:010}", self.next_id);
        world.add_instance(SimInstance {
            instance_id: id.clone(),
            node_name: id.replacen("i-", "ip-", 1),
            claim: None,
            pool: None,
            instance_type: self.instance_type.name.clone(),
            zone: self.zone.clone(),
            capacity_type: CapacityType::OnDemand,
            price: self.price,
            allocatable: self.instance_type.allocatable.clone(),
            node_labels: BTreeMap::new(),
            taints: Vec::new(),
            launched_at: now,
            ready: false,
            cordoned: false,
            pods: Vec::new(),
        });
        id
    }

    fn scale_up(&mut self, now: i64, world: &mut World, queue: &mut Queue) {
        let alloc = &self.instance_type.allocatable;
        let mut pending: Vec<Resources> = world
            .pending()
            .map(|i| world.pods[i].template.requests.clone())
            .filter(|r| r.fits_in(alloc))
            .collect();
        if pending.is_empty() {
            return;
        }
        pending.sort_by(|a, b| b.cpu_milli().cmp(&a.cpu_milli()).then(b.memory().cmp(&a.memory())));
        // Nodes still launching count as empty bins first.
        let upcoming = world.instances.values().filter(|i| !i.ready).count();
        let mut bins: Vec<Resources> = vec![alloc.clone(); upcoming];
        for r in &pending {
            if !first_fit(&mut bins, r) {
                let mut b = alloc.clone();
                b.saturating_sub(r);
                bins.push(b);
            }
        }
        let room = (self.spec.max as usize).saturating_sub(world.instances.len());
        let new = (bins.len() - upcoming).min(room);
        for _ in 0..new {
            let id = self.launch(world, now);
            queue.push(
                now + self.config.launch_delay_ms + self.config.registration_delay_ms,
                Ev::Ready(id),
            );
        }
        if new > 0 {
            self.last_scale_up = Some(now);
        }
    }

    fn scale_down(&mut self, now: i64, world: &mut World) {
        if self
            .last_scale_up
            .is_some_and(|t| now - t < SCALE_DOWN_DELAY_AFTER_ADD_MS)
        {
            return;
        }
        let ready: Vec<String> = world
            .instances
            .values()
            .filter(|i| i.ready)
            .map(|i| i.instance_id.clone())
            .collect();
        self.unneeded_since.retain(|id, _| ready.contains(id));
        for id in &ready {
            let u = world.utilization(&world.instances[id]);
            if u < SCALE_DOWN_UTILIZATION {
                self.unneeded_since.entry(id.clone()).or_insert(now);
            } else {
                self.unneeded_since.remove(id);
            }
        }
        let mut count = world.instances.len();
        let eligible: Vec<String> = self
            .unneeded_since
            .iter()
            .filter(|(_, since)| now - **since >= SCALE_DOWN_UNNEEDED_MS)
            .map(|(id, _)| id.clone())
            .collect();
        let mut removed_busy = false;
        for id in eligible {
            if count <= self.spec.min as usize {
                break;
            }
            let inst = &world.instances[&id];
            let empty = inst.pods.is_empty();
            if !empty && (removed_busy || !pods_fit_elsewhere(world, &id)) {
                continue;
            }
            let node = inst.node_name.clone();
            world.drain(&node, now);
            world.terminate(&id, now);
            self.unneeded_since.remove(&id);
            count -= 1;
            removed_busy |= !empty;
        }
    }
}

/// Whether the node's pods fit (first-fit decreasing, requests only) on the other Ready nodes.
fn pods_fit_elsewhere(world: &World, id: &str) -> bool {
    let mut free: Vec<Resources> = world
        .instances
        .values()
        .filter(|i| i.ready && !i.cordoned && i.instance_id != id)
        .map(|i| {
            let mut f = i.allocatable.clone();
            for &p in &i.pods {
                f.saturating_sub(&world.pods[p].template.requests);
            }
            f
        })
        .collect();
    let mut pods: Vec<&Resources> = world.instances[id]
        .pods
        .iter()
        .map(|&p| &world.pods[p].template.requests)
        .collect();
    pods.sort_by_key(|r| std::cmp::Reverse(r.cpu_milli()));
    pods.into_iter().all(|r| first_fit(&mut free, r))
}

/// Takes `r` from the first bin with room for it; false when none has.
fn first_fit(bins: &mut [Resources], r: &Resources) -> bool {
    match bins.iter_mut().find(|b| r.fits_in(b)) {
        Some(b) => {
            b.saturating_sub(r);
            true
        }
        None => false,
    }
}

impl Autoscaler for FixedGroup {
    async fn start(&mut self, world: &mut World, queue: &mut Queue) -> Result<()> {
        // The group's minimum exists before the workload starts.
        for _ in 0..self.spec.min {
            let id = self.launch(world, 0);
            world.node_ready(&id);
        }
        queue.push(SCAN_EVERY_MS, Ev::Tick);
        Ok(())
    }

    async fn on_event(&mut self, ev: Ev, now: i64, world: &mut World, queue: &mut Queue) -> Result<()> {
        match ev {
            Ev::Tick => {
                // The kube-scheduler places what fits first (nodes may have turned Ready this instant).
                world.bind(now);
                self.scale_up(now, world, queue);
                self.scale_down(now, world);
                queue.push(now + SCAN_EVERY_MS, Ev::Tick);
            }
            Ev::Ready(id) => {
                world.node_ready(&id);
            }
            _ => {}
        }
        Ok(())
    }

    async fn settled(&mut self, _now: i64, _world: &mut World, _queue: &mut Queue) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parses_and_names_errors() {
        assert_eq!(
            FixedGroupSpec::parse("fixed:t3.medium:2").unwrap(),
            FixedGroupSpec {
                instance_type: "t3.medium".into(),
                min: 2,
                max: 1000
            }
        );
        let e = FixedGroupSpec::parse("fixed:t3.medium:two").unwrap_err().to_string();
        assert!(e.contains("--baseline") && e.contains("MIN \"two\""), "{e}");
        assert!(FixedGroupSpec::parse("karpenter").is_err());
        assert!(FixedGroupSpec::parse("fixed:m5.large:5:2").is_err());
    }
}
