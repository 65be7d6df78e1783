//! Allocatable capacity by Karpenter's documented formulas: VM memory overhead, kube-reserved CPU
//! and memory (from max pods), the eviction threshold, and ENI-limited max pods.

use serde::{Deserialize, Serialize};

use crate::resources::{Resource, Resources};

/// Tunables for turning hardware into allocatable capacity. Defaults match Karpenter on EKS; an
/// EC2NodeClass's kubelet settings and volumes change them per pool ([`OverheadConfig::of_class`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OverheadConfig {
    /// Fraction of memory the hypervisor and OS keep (Karpenter's VM_MEMORY_OVERHEAD_PERCENT).
    pub vm_memory_overhead_percent: f64,
    /// Fixed max pods per node (EC2NodeClass `kubelet.maxPods`); None uses the ENI formula.
    pub max_pods: Option<u32>,
    /// Upper bound on the ENI formula; None (the default) as Karpenter: on AL2023 and
    /// Bottlerocket nodeadm and the Bottlerocket agent give the kubelet the ENI-limited max pods
    /// (737 on an m5.24xlarge), so that is what a node registers with.
    pub max_pods_cap: Option<u32>,
    /// `kubelet.podsPerCore`: max pods at most this many per vCPU (the kubelet takes the smaller).
    pub pods_per_core: Option<u32>,
    /// `kubelet.kubeReserved`: each resource it names replaces the computed reservation.
    pub kube_reserved: Reserved,
    /// `kubelet.systemReserved`: kept back on top of kube-reserved.
    pub system_reserved: Reserved,
    /// `evictionHard` `memory.available` (default 100Mi).
    pub eviction_memory: Threshold,
    /// `evictionHard` `nodefs.available` (default 10%).
    pub eviction_nodefs: Threshold,
    /// Size of the volume the kubelet's ephemeral storage lives on, GiB.
    pub root_volume_gib: u64,
    /// `instanceStorePolicy: RAID0`: ephemeral storage is the instance store (where the type has one).
    pub instance_store_raid0: bool,
}

impl Default for OverheadConfig {
    fn default() -> Self {
        OverheadConfig {
            vm_memory_overhead_percent: 0.075,
            max_pods: None,
            max_pods_cap: None,
            pods_per_core: None,
            kube_reserved: Reserved::default(),
            system_reserved: Reserved::default(),
            eviction_memory: Threshold::Bytes(100 << 20),
            eviction_nodefs: Threshold::Percent(10.0),
            root_volume_gib: 20,
            instance_store_raid0: false,
        }
    }
}

/// Reserved resources a kubelet setting names (None: not named).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Reserved {
    pub cpu_milli: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub ephemeral_bytes: Option<u64>,
}

/// An eviction threshold: a quantity, or a share of the node's capacity of that resource.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Threshold {
    Bytes(u64),
    Percent(f64),
}

impl Threshold {
    /// `"100Mi"` or `"10%"`, as `evictionHard` values are written.
    pub fn parse(v: &str) -> std::result::Result<Threshold, String> {
        match v.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(Threshold::Percent(p)),
                _ => Err(format!("{v:?} is not a percentage from 0% to 100%")),
            },
            None => crate::quantity::parse_quantity(v, crate::quantity::Scale::Unit)
                .map(Threshold::Bytes)
                .map_err(|e| e.to_string()),
        }
    }

    /// The bytes kept back on a node with `capacity` of the resource. 100% disables the threshold,
    /// as the kubelet reads it.
    pub fn of(&self, capacity: u64) -> u64 {
        match *self {
            Threshold::Bytes(b) => b,
            Threshold::Percent(p) if p >= 100.0 => 0,
            Threshold::Percent(p) => (capacity as f64 / 100.0 * p).ceil() as u64,
        }
    }
}

/// The hardware facts allocatable is computed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hardware {
    pub vcpu: u32,
    /// Max pods by the ENI formula, where the catalogue has ENI data.
    pub eni_max_pods: Option<u32>,
    /// Instance store, decimal GB (0: none).
    pub local_nvme_gb: u64,
}

impl OverheadConfig {
    /// `kubelet.maxPods` when set; else the ENI formula (110, the kubelet's own default, for a
    /// type without ENI data), within the cap if one is set; then at most `podsPerCore` per vCPU.
    pub fn max_pods(&self, eni_formula: Option<u32>, vcpu: u32) -> u32 {
        let pods = self.max_pods.unwrap_or_else(|| {
            let eni = eni_formula.unwrap_or(110);
            self.max_pods_cap.map_or(eni, |cap| eni.min(cap))
        });
        match self.pods_per_core {
            Some(per) if per > 0 => pods.min(per.saturating_mul(vcpu)),
            _ => pods,
        }
    }

    /// Memory the node reports as capacity: hardware minus the VM overhead, rounded as Karpenter does.
    pub fn memory_capacity_bytes(&self, memory_mib: u64) -> u64 {
        let overhead = (memory_mib as f64 * self.vm_memory_overhead_percent).ceil() as u64;
        (memory_mib - overhead.min(memory_mib)) << 20
    }

    /// The node's ephemeral-storage capacity: the instance store under RAID0 (decimal GB, as
    /// EC2 reports it), else the volume the kubelet's root is on.
    pub fn ephemeral_bytes(&self, local_nvme_gb: u64) -> u64 {
        if self.instance_store_raid0 && local_nvme_gb > 0 {
            local_nvme_gb * 1_000_000_000
        } else {
            self.root_volume_gib << 30
        }
    }

    /// The reservation for a node with `vcpu` cores, `max_pods` pods and `capacity` (memory and
    /// ephemeral storage, for percentage thresholds): kube-reserved (computed, or as the class
    /// names it), system-reserved, and the hard eviction thresholds.
    pub fn overhead(&self, vcpu: u32, max_pods: u32, capacity: &Resources) -> Overhead {
        let (kube, system) = (&self.kube_reserved, &self.system_reserved);
        let kube_memory = kube.memory_bytes.unwrap_or((11 * u64::from(max_pods) + 255) << 20);
        let ephemeral = capacity.get(Resource::EphemeralStorage);
        Overhead {
            cpu_milli: kube.cpu_milli.unwrap_or_else(|| kube_reserved_cpu_milli(vcpu)) + system.cpu_milli.unwrap_or(0),
            memory_bytes: kube_memory + system.memory_bytes.unwrap_or(0) + self.eviction_memory.of(capacity.memory()),
            ephemeral_bytes: kube.ephemeral_bytes.unwrap_or(1 << 30)
                + system.ephemeral_bytes.unwrap_or(0)
                + self.eviction_nodefs.of(ephemeral),
        }
    }

    /// A node's capacity and allocatable: `capacity` (CPU, memory after the VM overhead, devices)
    /// with this configuration's pods and ephemeral storage.
    pub fn node_resources(&self, hw: &Hardware, mut capacity: Resources) -> (Resources, Resources) {
        let pods = self.max_pods(hw.eni_max_pods, hw.vcpu);
        capacity.set(Resource::Pods, pods.into());
        capacity.set(Resource::EphemeralStorage, self.ephemeral_bytes(hw.local_nvme_gb));
        let allocatable = self.overhead(hw.vcpu, pods, &capacity).allocatable(&capacity);
        (capacity, allocatable)
    }
}

/// Kube-reserved CPU: 6% of the first core, 1% of the second, 0.5% of cores 3-4, 0.25% of the rest.
pub fn kube_reserved_cpu_milli(vcpu: u32) -> u64 {
    let cores = u64::from(vcpu);
    let mut m10 = 0u64; // tenths of a millicore, to stay exact
    m10 += 600 * cores.min(1);
    m10 += 100 * cores.saturating_sub(1).min(1);
    m10 += 50 * cores.saturating_sub(2).min(2);
    m10 += 25 * cores.saturating_sub(4);
    m10.div_ceil(10)
}

/// What the kubelet and system keep on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overhead {
    pub cpu_milli: u64,
    pub memory_bytes: u64,
    pub ephemeral_bytes: u64,
}

impl Overhead {
    pub fn allocatable(&self, capacity: &Resources) -> Resources {
        let mut a = capacity.clone();
        a.set(Resource::Cpu, capacity.cpu_milli().saturating_sub(self.cpu_milli));
        a.set(Resource::Memory, capacity.memory().saturating_sub(self.memory_bytes));
        a.set(
            Resource::EphemeralStorage,
            capacity
                .get(Resource::EphemeralStorage)
                .saturating_sub(self.ephemeral_bytes),
        );
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_reserved_cpu_matches_the_documented_table() {
        assert_eq!(kube_reserved_cpu_milli(1), 60);
        assert_eq!(kube_reserved_cpu_milli(2), 70);
        assert_eq!(kube_reserved_cpu_milli(4), 80);
        assert_eq!(kube_reserved_cpu_milli(8), 90);
        assert_eq!(kube_reserved_cpu_milli(96), 310);
    }

    #[test]
    fn m5_large_allocatable() {
        let cfg = OverheadConfig::default();
        // 8192 MiB - ceil(614.4) = 7577 MiB capacity; reserved 11*29+255 = 574 MiB, eviction 100 MiB.
        assert_eq!(cfg.memory_capacity_bytes(8192), 7577 << 20);
        let cap = Resources::new()
            .with(Resource::Cpu, 2000)
            .with(Resource::Memory, 7577 << 20)
            .with(Resource::EphemeralStorage, 20 << 30);
        let a = cfg.overhead(2, 29, &cap).allocatable(&cap);
        assert_eq!(a.cpu_milli(), 1930);
        assert_eq!(a.memory(), (7577 - 574 - 100) << 20);
        assert_eq!(
            cfg.max_pods(Some(737), 96),
            737,
            "ENI-limited, as the node's agent sets it"
        );
        assert_eq!(cfg.max_pods(None, 2), 110, "no ENI data: the kubelet's default");
        let capped = OverheadConfig {
            max_pods_cap: Some(110),
            ..Default::default()
        };
        assert_eq!(capped.max_pods(Some(737), 96), 110);
        assert_eq!(capped.max_pods(Some(29), 2), 29);
        let fixed = OverheadConfig {
            max_pods: Some(58),
            ..Default::default()
        };
        assert_eq!(fixed.max_pods(Some(737), 96), 58);
    }
}
