//! Allocatable capacity by Karpenter's documented formulas: VM memory overhead, kube-reserved CPU
//! and memory (from max pods), the eviction threshold, and ENI-limited max pods.

use serde::{Deserialize, Serialize};

use crate::resources::{Resource, Resources};

/// Tunables for turning hardware into allocatable capacity. Defaults match Karpenter on EKS.
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
    /// Memory eviction threshold (`evictionHard memory.available`), MiB.
    pub eviction_memory_mib: u64,
    /// Root volume size, GiB, for ephemeral-storage.
    pub root_volume_gib: u64,
}

impl Default for OverheadConfig {
    fn default() -> Self {
        OverheadConfig {
            vm_memory_overhead_percent: 0.075,
            max_pods: None,
            max_pods_cap: None,
            eviction_memory_mib: 100,
            root_volume_gib: 20,
        }
    }
}

impl OverheadConfig {
    /// `kubelet.maxPods` when set; else the ENI formula (110, the kubelet's own default, for a
    /// type without ENI data), within the cap if one is set.
    pub fn max_pods(&self, eni_formula: Option<u32>) -> u32 {
        self.max_pods.unwrap_or_else(|| {
            let eni = eni_formula.unwrap_or(110);
            self.max_pods_cap.map_or(eni, |cap| eni.min(cap))
        })
    }

    /// Memory the node reports as capacity: hardware minus the VM overhead, rounded as Karpenter does.
    pub fn memory_capacity_bytes(&self, memory_mib: u64) -> u64 {
        let overhead = (memory_mib as f64 * self.vm_memory_overhead_percent).ceil() as u64;
        (memory_mib - overhead.min(memory_mib)) << 20
    }

    pub fn ephemeral_bytes(&self) -> u64 {
        self.root_volume_gib << 30
    }

    /// The reservation for a node with `vcpu` cores and `max_pods` pods.
    pub fn overhead(&self, vcpu: u32, max_pods: u32) -> Overhead {
        Overhead {
            cpu_milli: kube_reserved_cpu_milli(vcpu),
            memory_bytes: (11 * u64::from(max_pods) + 255 + self.eviction_memory_mib) << 20,
            // kube-reserved 1Gi plus the 10% nodefs eviction threshold.
            ephemeral_bytes: (1 << 30) + self.ephemeral_bytes() / 10,
        }
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
        let o = cfg.overhead(2, 29);
        let cap = Resources::new()
            .with(Resource::Cpu, 2000)
            .with(Resource::Memory, 7577 << 20)
            .with(Resource::EphemeralStorage, 20 << 30);
        let a = o.allocatable(&cap);
        assert_eq!(a.cpu_milli(), 1930);
        assert_eq!(a.memory(), (7577 - 574 - 100) << 20);
        assert_eq!(cfg.max_pods(Some(737)), 737, "ENI-limited, as the node's agent sets it");
        assert_eq!(cfg.max_pods(None), 110, "no ENI data: the kubelet's default");
        let capped = OverheadConfig {
            max_pods_cap: Some(110),
            ..Default::default()
        };
        assert_eq!(capped.max_pods(Some(737)), 110);
        assert_eq!(capped.max_pods(Some(29)), 29);
        let fixed = OverheadConfig {
            max_pods: Some(58),
            ..Default::default()
        };
        assert_eq!(fixed.max_pods(Some(737)), 58);
    }
}
