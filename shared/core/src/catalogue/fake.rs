//! The synthetic instance types of Karpenter's scheduling benchmark, for side-by-side figures.
//!
//! Type `i` (from 0) has i+1 vCPU, 2(i+1) GiB, 10(i+1) pods and costs 0.1 x vCPU + 0.1 x GB per hour
//! (facts transcribed in `data/workloads/PROVENANCE.md`). They are offered on-demand in three zones
//! and, like Karpenter's fake provider, carry no kubelet overhead: allocatable equals capacity.

use std::collections::BTreeMap;

use crate::catalogue::{CapacityType, InstanceType, Offering};
use crate::labels;
use crate::resources::{Resource, Resources};

pub const ZONES: [&str; 3] = ["test-zone-1", "test-zone-2", "test-zone-3"];

pub fn benchmark_types(count: usize) -> Vec<InstanceType> {
    (0..count)
        .map(|i| {
            let cpu = (i + 1) as u64;
            let mem = (2 * cpu) << 30;
            let price = 0.1 * cpu as f64 + 0.1 * mem as f64 / 1e9;
            let name = format!("fake-it-{i}");
            let capacity = Resources::new()
                .with(Resource::Cpu, cpu * 1000)
                .with(Resource::Memory, mem)
                .with(Resource::Pods, 10 * cpu)
                .with(Resource::EphemeralStorage, 100 << 30);
            let mut l = BTreeMap::new();
            l.insert(labels::INSTANCE_TYPE.to_string(), name.clone());
            l.insert(labels::ARCH.to_string(), "amd64".into());
            l.insert(labels::OS.to_string(), "linux".into());
            l.insert(labels::INSTANCE_CPU.to_string(), cpu.to_string());
            l.insert(labels::INSTANCE_MEMORY.to_string(), (mem >> 20).to_string());
            l.insert(labels::INSTANCE_FAMILY.to_string(), "fake".into());
            l.insert(labels::INSTANCE_CATEGORY.to_string(), "fake".into());
            InstanceType {
                name,
                labels: l,
                allocatable: capacity.clone(),
                capacity,
                offerings: ZONES
                    .iter()
                    .map(|z| Offering {
                        zone: z.to_string(),
                        capacity_type: CapacityType::OnDemand,
                        price,
                        available: true,
                        zone_id: None,
                    })
                    .collect(),
                accelerated: false,
                bare_metal: false,
                interruption_band: None,
                hardware: super::Hardware {
                    vcpu: cpu as u32,
                    eni_max_pods: Some(10 * cpu as u32),
                    local_nvme_gb: 0,
                },
            }
        })
        .collect()
}
