//! Resource vectors: what a pod requests and what a node offers.
//!
//! The common resources live in a fixed array so that fit checks in the scheduler's hot loop are a
//! handful of integer compares; any other extended resource (e.g. `vpc.amazonaws.com/efa`) is kept
//! by name.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::quantity::{format_bytes, format_cpu_milli, parse_cpu_milli, parse_units};
use crate::{Error, Result};

/// AWS Neuron cores (Inferentia, Trainium), advertised by the Neuron device plugin.
pub const NEURON_CORE: &str = "aws.amazon.com/neuroncore";
/// Elastic Fabric Adapter interfaces, advertised by the EFA device plugin.
pub const EFA: &str = "vpc.amazonaws.com/efa";
/// Trunk branch interfaces for security groups for pods, advertised by the VPC resource
/// controller on types that can trunk.
pub const POD_ENI: &str = "vpc.amazonaws.com/pod-eni";

/// A well-known resource with a fixed slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Cpu = 0,
    Memory = 1,
    Pods = 2,
    EphemeralStorage = 3,
    NvidiaGpu = 4,
    AmdGpu = 5,
    Neuron = 6,
    /// `vpc.amazonaws.com/pod-eni`: most types advertise it, so it has a slot (an extended entry
    /// would put a map allocation in every clone of a type's capacity).
    PodEni = 7,
}

pub const FIXED: usize = 8;

impl Resource {
    pub const ALL: [Resource; FIXED] = [
        Resource::Cpu,
        Resource::Memory,
        Resource::Pods,
        Resource::EphemeralStorage,
        Resource::NvidiaGpu,
        Resource::AmdGpu,
        Resource::Neuron,
        Resource::PodEni,
    ];

    /// The Kubernetes resource name.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Pods => "pods",
            Resource::EphemeralStorage => "ephemeral-storage",
            Resource::NvidiaGpu => "nvidia.com/gpu",
            Resource::AmdGpu => "amd.com/gpu",
            Resource::Neuron => "aws.amazon.com/neuron",
            Resource::PodEni => POD_ENI,
        }
    }

    pub fn from_name(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// An amount of every resource. CPU is in millicores, memory and storage in bytes, the rest in
/// whole units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resources {
    fixed: [u64; FIXED],
    extended: BTreeMap<String, u64>,
}

impl Resources {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, r: Resource, v: u64) -> Self {
        self.fixed[r as usize] = v;
        self
    }

    pub fn cpu_milli(&self) -> u64 {
        self.fixed[Resource::Cpu as usize]
    }
    pub fn memory(&self) -> u64 {
        self.fixed[Resource::Memory as usize]
    }
    pub fn get(&self, r: Resource) -> u64 {
        self.fixed[r as usize]
    }
    pub fn set(&mut self, r: Resource, v: u64) {
        self.fixed[r as usize] = v;
    }
    pub fn fixed(&self) -> &[u64; FIXED] {
        &self.fixed
    }
    pub fn extended(&self) -> &BTreeMap<String, u64> {
        &self.extended
    }

    /// GPUs of any vendor, for reports and "GPU types only when needed".
    pub fn accelerators(&self) -> u64 {
        self.get(Resource::NvidiaGpu) + self.get(Resource::AmdGpu) + self.get(Resource::Neuron)
    }

    /// Amount of a resource by its Kubernetes name.
    pub fn get_named(&self, name: &str) -> u64 {
        match Resource::from_name(name) {
            Some(r) => self.get(r),
            None => self.extended.get(name).copied().unwrap_or(0),
        }
    }

    pub fn set_named(&mut self, name: &str, v: u64) {
        match Resource::from_name(name) {
            Some(r) => self.set(r, v),
            None if v == 0 => {
                self.extended.remove(name);
            }
            None => {
                self.extended.insert(name.to_string(), v);
            }
        }
    }

    /// Parses one `name: quantity` entry (CPU in cores, everything else in units).
    pub fn set_quantity(&mut self, name: &str, quantity: &str) -> Result<()> {
        validate_resource_name(name)?;
        let v = if name == "cpu" {
            parse_cpu_milli(quantity)?
        } else {
            parse_units(quantity)?
        };
        self.set_named(name, v);
        Ok(())
    }

    /// Builds from a Kubernetes resource list (`{cpu: "1", memory: "2Gi"}`).
    pub fn from_quantities<'a>(items: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self> {
        let mut r = Resources::new();
        for (k, v) in items {
            r.set_quantity(k, v)?;
        }
        Ok(r)
    }

    pub fn is_zero(&self) -> bool {
        self.fixed.iter().all(|v| *v == 0) && self.extended.values().all(|v| *v == 0)
    }

    pub fn add(&mut self, o: &Resources) {
        for i in 0..FIXED {
            self.fixed[i] = self.fixed[i].saturating_add(o.fixed[i]);
        }
        for (k, v) in &o.extended {
            let e = self.extended.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(*v);
        }
    }

    /// Adds `o` `n` times.
    pub fn add_times(&mut self, o: &Resources, n: u64) {
        for i in 0..FIXED {
            self.fixed[i] = self.fixed[i].saturating_add(o.fixed[i].saturating_mul(n));
        }
        for (k, v) in &o.extended {
            let e = self.extended.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(v.saturating_mul(n));
        }
    }

    /// Subtracts, flooring at zero (capacity never goes negative).
    pub fn saturating_sub(&mut self, o: &Resources) {
        for i in 0..FIXED {
            self.fixed[i] = self.fixed[i].saturating_sub(o.fixed[i]);
        }
        for (k, v) in &o.extended {
            if let Some(e) = self.extended.get_mut(k) {
                *e = e.saturating_sub(*v);
            }
        }
    }

    /// Element-wise maximum (init containers, the largest type a claim may become).
    pub fn max_with(&mut self, o: &Resources) {
        for i in 0..FIXED {
            self.fixed[i] = self.fixed[i].max(o.fixed[i]);
        }
        for (k, v) in &o.extended {
            let e = self.extended.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    /// Element-wise minimum (the room two capacities both have); a resource missing from either
    /// is zero.
    pub fn min_with(&mut self, o: &Resources) {
        for i in 0..FIXED {
            self.fixed[i] = self.fixed[i].min(o.fixed[i]);
        }
        for (k, v) in self.extended.iter_mut() {
            *v = (*v).min(o.extended.get(k).copied().unwrap_or(0));
        }
    }

    /// True when every resource in `self` is available in `capacity`.
    #[inline]
    pub fn fits_in(&self, capacity: &Resources) -> bool {
        for i in 0..FIXED {
            if self.fixed[i] > capacity.fixed[i] {
                return false;
            }
        }
        self.extended
            .iter()
            .all(|(k, v)| *v == 0 || capacity.extended.get(k).is_some_and(|c| c >= v))
    }

    /// True when `self` plus `extra` fits in `capacity` (no sum is built: hot in the scheduler).
    #[inline]
    pub fn fits_in_with(&self, extra: &Resources, capacity: &Resources) -> bool {
        for i in 0..FIXED {
            if self.fixed[i].saturating_add(extra.fixed[i]) > capacity.fixed[i] {
                return false;
            }
        }
        let cap = |k: &String| capacity.extended.get(k).copied().unwrap_or(0);
        self.extended
            .iter()
            .all(|(k, v)| v.saturating_add(extra.extended.get(k).copied().unwrap_or(0)) <= cap(k))
            && extra
                .extended
                .iter()
                .all(|(k, v)| self.extended.contains_key(k) || *v <= cap(k))
    }

    /// The first resource that does not fit, for explanations.
    pub fn first_shortfall(&self, capacity: &Resources) -> Option<(String, u64, u64)> {
        for r in Resource::ALL {
            if self.get(r) > capacity.get(r) {
                return Some((r.name().to_string(), self.get(r), capacity.get(r)));
            }
        }
        self.extended.iter().find_map(|(k, v)| {
            let c = capacity.extended.get(k).copied().unwrap_or(0);
            (*v > c).then(|| (k.clone(), *v, c))
        })
    }

    /// How many copies of `item` fit into `self` (u64::MAX when `item` is zero).
    #[inline]
    pub fn times_fits(&self, item: &Resources) -> u64 {
        let mut n = u64::MAX;
        for i in 0..FIXED {
            if let Some(q) = self.fixed[i].checked_div(item.fixed[i]) {
                n = n.min(q);
            }
        }
        for (k, v) in &item.extended {
            if *v > 0 {
                n = n.min(self.extended.get(k).copied().unwrap_or(0) / v);
            }
        }
        n
    }

    /// How many copies of `item` fit into `self` minus `used` (capacity never negative), without
    /// building the difference: the packer asks this of every open claim for every bucket.
    #[inline]
    pub fn times_fits_after(&self, used: &Resources, item: &Resources) -> u64 {
        // Comparisons first: most answers are 0, and divisions cost far more.
        for i in 0..FIXED {
            if item.fixed[i] > 0 && used.fixed[i].saturating_add(item.fixed[i]) > self.fixed[i] {
                return 0;
            }
        }
        let mut n = u64::MAX;
        for i in 0..FIXED {
            if let Some(q) = self.fixed[i].saturating_sub(used.fixed[i]).checked_div(item.fixed[i]) {
                n = n.min(q);
                if n == 0 {
                    return 0;
                }
            }
        }
        for (k, v) in &item.extended {
            if *v > 0 {
                let free = self
                    .extended
                    .get(k)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(used.extended.get(k).copied().unwrap_or(0));
                n = n.min(free / v);
            }
        }
        n
    }

    /// Formats one resource amount for humans.
    pub fn format_amount(name: &str, v: u64) -> String {
        match name {
            "cpu" => format_cpu_milli(v),
            "memory" | "ephemeral-storage" => format_bytes(v),
            _ => v.to_string(),
        }
    }

    /// Non-zero entries by Kubernetes name, in a fixed order.
    pub fn entries(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = Resource::ALL
            .iter()
            .filter(|r| self.get(**r) > 0)
            .map(|r| (r.name().to_string(), self.get(*r)))
            .collect();
        out.extend(
            self.extended
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| (k.clone(), *v)),
        );
        out
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .entries()
            .into_iter()
            .map(|(k, v)| format!("{k}={}", Resources::format_amount(&k, v)))
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// Resources as a map of quantity strings, the way Kubernetes writes them.
impl Serialize for Resources {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let entries = self.entries();
        let mut m = s.serialize_map(Some(entries.len()))?;
        for (k, v) in entries {
            m.serialize_entry(&k, &Resources::format_amount(&k, v))?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Resources {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let raw: BTreeMap<String, QuantityValue> = BTreeMap::deserialize(d)?;
        let mut r = Resources::new();
        for (k, v) in raw {
            r.set_quantity(&k, &v.0).map_err(serde::de::Error::custom)?;
        }
        Ok(r)
    }
}

/// A quantity written as a YAML string or number (`cpu: 2` and `cpu: "2"` are both common).
#[derive(Debug, Clone)]
pub struct QuantityValue(pub String);

impl<'de> Deserialize<'de> for QuantityValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(QuantityValue(s)),
            serde_json::Value::Number(n) => Ok(QuantityValue(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a quantity (string or number), got {other}"
            ))),
        }
    }
}

/// Resource names are Kubernetes qualified names; anything else is rejected early.
fn validate_resource_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            field: "resources".into(),
            reason: format!("invalid resource name {name:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_and_fit() {
        let cap = Resources::from_quantities([("cpu", "4"), ("memory", "8Gi"), ("pods", "10")]).unwrap();
        let pod = Resources::from_quantities([("cpu", "1500m"), ("memory", "1Gi"), ("pods", "1")]).unwrap();
        assert!(pod.fits_in(&cap));
        assert_eq!(cap.times_fits(&pod), 2);
        let mut used = Resources::new();
        used.add_times(&pod, 3);
        assert!(!used.fits_in(&cap));
        assert_eq!(used.first_shortfall(&cap).unwrap().0, "cpu");
        let efa = Resources::from_quantities([("vpc.amazonaws.com/efa", "1")]).unwrap();
        assert!(!efa.fits_in(&cap), "an extended resource the node lacks does not fit");
        assert_eq!(pod.to_string(), "cpu=1500m,memory=1Gi,pods=1");
    }

    #[test]
    fn min_with_keeps_the_room_both_have() {
        let mut a = Resources::from_quantities([("cpu", "4"), ("memory", "2Gi"), ("nvidia.com/gpu", "1")]).unwrap();
        let b = Resources::from_quantities([("cpu", "2"), ("memory", "8Gi")]).unwrap();
        a.min_with(&b);
        assert_eq!(a.cpu_milli(), 2000);
        assert_eq!(a.memory(), 2 << 30);
        assert_eq!(
            a.get_named("nvidia.com/gpu"),
            0,
            "missing from the other side means none"
        );
    }

    #[test]
    fn serde_round_trip() {
        let r: Resources = serde_json::from_str(r#"{"cpu": 2, "memory": "4Gi", "nvidia.com/gpu": "1"}"#).unwrap();
        assert_eq!(r.cpu_milli(), 2000);
        assert_eq!(r.get(Resource::NvidiaGpu), 1);
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"cpu":"2","memory":"4Gi","nvidia.com/gpu":"1"}"#);
        let bad = serde_json::from_str::<Resources>(r#"{"cpu": "two"}"#)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("\"two\""), "{bad}");
    }

    fn resources() -> impl proptest::strategy::Strategy<Value = Resources> {
        use proptest::prelude::*;
        (
            0u64..8,
            0u64..8,
            proptest::collection::btree_map(prop_oneof!["nvidia.com/gpu", "example.com/fpga"], 0u64..4, 0..3),
        )
            .prop_map(|(cpu, mem, ext)| {
                let mut r = Resources::new().with(Resource::Cpu, cpu).with(Resource::Memory, mem);
                for (k, v) in ext {
                    r.set_named(&k, v);
                }
                r
            })
    }

    proptest::proptest! {
        /// The allocation-free count agrees with subtracting and then counting.
        #[test]
        fn times_fits_after_is_sub_then_times_fits(cap in resources(), used in resources(), item in resources()) {
            let mut free = cap.clone();
            free.saturating_sub(&used);
            proptest::prop_assert_eq!(cap.times_fits_after(&used, &item), free.times_fits(&item));
        }

        /// The allocation-free check agrees with summing and then checking.
        #[test]
        fn fits_in_with_is_sum_then_fits(a in resources(), b in resources(), cap in resources()) {
            let mut sum = a.clone();
            sum.add(&b);
            proptest::prop_assert_eq!(a.fits_in_with(&b, &cap), sum.fits_in(&cap));
        }
    }
}
