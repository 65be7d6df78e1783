//! Benchmark workloads: Karpenter's "diverse" benchmark pods, the Alibaba GPU trace, and a mixed
//! CPU/GPU burst. Deterministic for a seed.

use std::collections::BTreeMap;

use nodewright_core::labels;
use nodewright_core::model::{LabelSelector, Pod, PodAffinityTerm, SpreadConstraint, WhenUnsatisfiable};

/// The simulator's seeded generator (SplitMix64): same seed, same workload.
pub use nodewright_sim::Rng;

const CPU: [u64; 5] = [100, 250, 500, 1000, 1500];
const MEM_MIB: [u64; 6] = [100, 256, 512, 1024, 2048, 4096];
const LABEL_VALUES: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];

fn label_value(rng: &mut Rng) -> &'static str {
    LABEL_VALUES[rng.below(LABEL_VALUES.len() as u64) as usize]
}

fn selector(k: &str, v: &str) -> LabelSelector {
    LabelSelector {
        match_labels: BTreeMap::from([(k.to_string(), v.to_string())]),
        match_expressions: Vec::new(),
    }
}

/// Karpenter's diverse benchmark mix, in fifths: generic; zone spread; hostname spread; zone
/// self-affinity; hostname anti-affinity. Each pod draws CPU then memory from the benchmark lists.
pub fn diverse(n: usize, seed: u64) -> Vec<Pod> {
    let mut rng = Rng::new(seed);
    let fifth = n / 5;
    (0..n)
        .map(|i| {
            let cpu = *rng.pick(&CPU);
            let mem = *rng.pick(&MEM_MIB) << 20;
            let kind = if i < 5 * fifth { i / fifth.max(1) } else { 0 };
            let mut p = Pod::new(&format!("pod-{i}"), cpu, mem);
            match kind {
                1 | 2 => {
                    p = p.with_label("my-label", label_value(&mut rng));
                    let key = if kind == 1 { labels::ZONE } else { labels::HOSTNAME };
                    p.topology_spread.push(SpreadConstraint {
                        topology_key: key.into(),
                        max_skew: 1,
                        when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
                        selector: selector("my-label", label_value(&mut rng)),
                        min_domains: None,
                        node_affinity_policy: Default::default(),
                        node_taints_policy: nodewright_core::model::NodeInclusionPolicy::Ignore,
                    });
                }
                3 => {
                    p = p.with_label("my-affininity", label_value(&mut rng));
                    p.pod_affinity.push(PodAffinityTerm {
                        topology_key: labels::ZONE.into(),
                        selector: selector("my-affininity", label_value(&mut rng)),
                        namespaces: Vec::new(),
                        all_namespaces: false,
                    });
                }
                4 => {
                    p = p.with_label("app", "nginx");
                    p.pod_anti_affinity.push(PodAffinityTerm {
                        topology_key: labels::HOSTNAME.into(),
                        selector: selector("app", "nginx"),
                        namespaces: Vec::new(),
                        all_namespaces: false,
                    });
                }
                _ => p = p.with_label("my-label", label_value(&mut rng)),
            }
            p
        })
        .collect()
}

/// Generic pods only (no topology constraints), the benchmark's request distribution.
pub fn generic(n: usize, seed: u64) -> Vec<Pod> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| Pod::new(&format!("pod-{i}"), *rng.pick(&CPU), *rng.pick(&MEM_MIB) << 20))
        .collect()
}

/// A mixed burst: 90% benchmark-shaped CPU pods, 10% GPU pods (1, 4 or 8 GPUs with CPU and memory
/// in proportion, like training and inference jobs).
pub fn mixed_burst(n: usize, seed: u64) -> Vec<Pod> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            if rng.below(10) == 0 {
                let gpus = *rng.pick(&[1u64, 1, 1, 1, 1, 1, 1, 4, 4, 8]);
                let cpu = gpus * *rng.pick(&[2000u64, 4000, 6000]);
                let mem = (gpus * *rng.pick(&[8u64, 16, 24])) << 30;
                Pod::new(&format!("gpu-{i}"), cpu, mem).with_gpu(gpus)
            } else {
                Pod::new(&format!("cpu-{i}"), *rng.pick(&CPU), *rng.pick(&MEM_MIB) << 20)
            }
        })
        .collect()
}
