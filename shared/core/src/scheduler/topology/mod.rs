//! Topology: the domains of a topology key, and where each pod may go among them.
//!
//! One model serves every key but the hostname (whose domains are single nodes, counted per node
//! by `prepare::HostCounts` while packing):
//! - the zone and the capacity type, which a new node takes from its offering;
//! - labels an instance type carries (`kubernetes.io/arch`, the instance family, ...);
//! - labels a pool's nodes carry (template labels, single-valued custom requirements).
//!
//! Domains come from the pools a pod may use and from the existing nodes, each filtered by the
//! constraint's `nodeAffinityPolicy` and `nodeTaintsPolicy`. Required pod affinity
//! ([`affinity::pin_affinity`]), required pod anti-affinity ([`affinity::pin_anti_affinity`]) and
//! topology spread ([`spread::deal`]) are decided before packing by pinning each pod to one domain;
//! [`spread::enforce`] checks the skew again on what was actually placed, since limits and
//! capacity can leave part of a group out. Karpenter's `topology.go` / `topologygroup.go` split is
//! the model for the shape: a group per (key, selector, namespace), domains counted from pending,
//! in-flight and existing pods.

pub mod affinity;
pub mod colocation;
pub mod hostname;
pub mod spread;

use std::borrow::Cow;
use std::collections::HashMap;

use crate::catalogue::CapacityType;
use crate::labels;
use crate::model::{NodeInclusionPolicy, Pod, first_untolerated};
use crate::requirements::{LabelSource, Operator, Requirement, all_match};

use super::prepare::Prepared;
use super::signature::{Compat, compat};

/// What a topology key's domains are read from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A node's own name: each node is a domain (handled while packing, not here).
    Hostname,
    /// A label of the instance type or of the pool's nodes.
    Label(String),
    Zone,
    CapacityType,
}

impl Key {
    pub fn of(key: &str) -> Key {
        match key {
            // A zone's ID names the same domain as its name (one ID per zone in an account).
            labels::ZONE | labels::ZONE_ID => Key::Zone,
            labels::CAPACITY_TYPE => Key::CapacityType,
            labels::HOSTNAME => Key::Hostname,
            other => Key::Label(other.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Key::Zone => labels::ZONE,
            Key::CapacityType => labels::CAPACITY_TYPE,
            Key::Hostname => labels::HOSTNAME,
            Key::Label(k) => k,
        }
    }

    /// How a reason names the key: "the zone", else the key itself.
    pub fn describe(&self) -> String {
        match self {
            Key::Zone => "the zone".to_string(),
            other => other.name().to_string(),
        }
    }

    /// Whether an instance type's labels say the value (else a pool's nodes do).
    fn of_type(&self) -> bool {
        match self {
            Key::Label(k) => labels::INSTANCE_TYPE_KEYS.contains(&k.as_str()) || k == labels::REGION,
            _ => false,
        }
    }
}

/// The non-hostname keys a batch's pods constrain (and running pods' anti-affinity, which binds
/// pending pods too), labels first (their pins narrow a pod's signature, and so the zones and
/// capacity types it is eligible for), then zone, then capacity type.
pub fn keys_of(pods: &[Pod], nodes: &[crate::model::Node]) -> Vec<Key> {
    let running = nodes
        .iter()
        .flat_map(|n| n.pods.iter())
        .flat_map(|p| p.pod_anti_affinity.iter().map(|t| t.topology_key.as_str()));
    let mut keys: Vec<Key> = pods
        .iter()
        .flat_map(|p| {
            p.topology_spread
                .iter()
                .map(|s| s.topology_key.as_str())
                .chain(p.pod_affinity.iter().map(|t| t.topology_key.as_str()))
                .chain(p.pod_anti_affinity.iter().map(|t| t.topology_key.as_str()))
        })
        .chain(running)
        .map(Key::of)
        .filter(|k| *k != Key::Hostname)
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Pins every pod that spreads or is (anti-)affine on a key but the hostname to one domain of
/// it, key by key (labels first: their pins narrow the pod's signature, so the zones and
/// capacity types that follow see it). Label pins go into the pods' signatures; zone and
/// capacity-type pins are returned (per pod) for the buckets. Pods whose constraints cannot be
/// met are marked in `skip` and reported in `prep.unschedulable`.
pub fn pin(prep: &mut Prepared, skip: &mut [bool]) -> (Vec<Option<usize>>, Vec<Option<CapacityType>>) {
    let n = prep.input.pods.len();
    let mut zones = vec![None; n];
    let mut cts = vec![None; n];
    let mut label_sigs = HashMap::new();
    let mut unpreferred = HashMap::new();
    for key in keys_of(prep.input.pods, prep.input.nodes) {
        let dom = Domains::of(prep, key);
        let mut cache: HashMap<(usize, &crate::Resources), Mask> = HashMap::new();
        let eligible: Vec<Mask> = (0..n)
            .map(|i| {
                if skip[i] {
                    return Mask::default();
                }
                cache
                    .entry((prep.pod_sig[i], &prep.input.pods[i].requests))
                    .or_insert_with(|| dom.launchable(prep, i))
                    .clone()
            })
            .collect();
        // What each pod could launch into with its preferred node affinity given up: the domains
        // its spread is measured over (Karpenter counts every domain the pod's requirements
        // allow, and relaxes a preference that keeps the skew from being met).
        let required: Vec<Mask> = (0..n)
            .map(|i| {
                let sig = prep.pod_sig[i];
                if skip[i] || prep.sigs[sig].preferred.is_empty() || prep.sigs[sig].preferred_dropped {
                    return eligible[i].clone();
                }
                let relaxed = prep.without_preferences(sig, &mut unpreferred);
                dom.launchable_as(prep, relaxed, &prep.input.pods[i].requests)
            })
            .collect();
        let mut pin = vec![None; n];
        let failed = affinity::pin_affinity(prep, &dom, &eligible, &mut pin, skip);
        prep.unschedulable.extend(failed);
        let failed = affinity::pin_anti_affinity(prep, &dom, &eligible, &mut pin, skip);
        prep.unschedulable.extend(failed);
        let (failed, relaxed) = spread::deal(prep, &dom, &eligible, &required, &mut pin, skip);
        prep.unschedulable.extend(failed);
        for i in relaxed {
            prep.drop_preferences(i, &mut unpreferred);
        }
        match &dom.key {
            Key::Zone => zones = pin,
            Key::CapacityType => {
                cts = pin.iter().map(|d| d.map(|d| CapacityType::ALL[d])).collect();
            }
            Key::Hostname => {}
            Key::Label(k) => {
                for (i, d) in pin.iter().enumerate() {
                    if let Some(d) = d
                        && !skip[i]
                    {
                        prep.pin_label(i, k, &dom.values[*d], &mut label_sigs);
                    }
                }
            }
        }
    }
    (zones, cts)
}

/// A set of a key's domains, by index into [`Domains::values`].
#[derive(Clone, Default, Debug, PartialEq, Eq, Hash)]
pub struct Mask(Vec<u64>);

impl Mask {
    pub fn from_bits(bits: u64) -> Mask {
        Mask(vec![bits])
    }

    pub fn set(&mut self, i: usize) {
        let w = i / 64;
        if self.0.len() <= w {
            self.0.resize(w + 1, 0);
        }
        self.0[w] |= 1 << (i % 64);
    }

    pub fn has(&self, i: usize) -> bool {
        self.0.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub fn or(&mut self, other: &Mask) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    pub fn and(&self, other: &Mask) -> Mask {
        Mask(self.0.iter().zip(&other.0).map(|(a, b)| a & b).collect())
    }

    pub fn without(&self, other: &Mask) -> Mask {
        Mask(
            self.0
                .iter()
                .enumerate()
                .map(|(i, a)| a & !other.0.get(i).copied().unwrap_or(0))
                .collect(),
        )
    }

    pub fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0
            .iter()
            .enumerate()
            .flat_map(|(w, bits)| (0..64).filter(move |b| bits & (1 << b) != 0).map(move |b| w * 64 + b))
    }

    pub fn first(&self) -> Option<usize> {
        self.iter().next()
    }
}

/// A topology key's domains: the values it takes on the types and labels of the pools and on the
/// existing nodes. For the zone they are `Prepared::zones`, in that order; for the capacity type,
/// `CapacityType::ALL` (so a capacity-type mask is the `ct_bit` mask).
pub struct Domains {
    pub key: Key,
    pub values: Vec<String>,
}

impl Domains {
    pub fn of(prep: &Prepared, key: Key) -> Domains {
        let values = match &key {
            Key::Zone => prep.zones.clone(),
            Key::CapacityType => CapacityType::ALL.iter().map(|c| c.as_str().to_string()).collect(),
            Key::Hostname => Vec::new(),
            Key::Label(k) => {
                let mut v: Vec<String> = Vec::new();
                let types = prep.input.instance_types;
                for pv in &prep.pools {
                    if key.of_type() {
                        v.extend(
                            pv.types
                                .iter()
                                .filter_map(|t| types[t].labels.label(k).map(str::to_string)),
                        );
                    } else if let Some(x) = pv.labels.label(k) {
                        v.push(x.to_string());
                    }
                }
                v.extend(prep.nodes.iter().filter_map(|n| n.labels.label(k).map(str::to_string)));
                v.sort();
                v.dedup();
                v
            }
        };
        Domains { key, values }
    }

    pub fn index(&self, value: &str) -> Option<usize> {
        match self.key {
            Key::Label(_) => self.values.binary_search_by(|v| v.as_str().cmp(value)).ok(),
            _ => self.values.iter().position(|v| v == value),
        }
    }

    /// The domain of existing node `n` (index into `Prepared::nodes`); none when it lacks the key.
    pub fn of_node(&self, prep: &Prepared, n: usize) -> Option<usize> {
        let node = &prep.nodes[n];
        match &self.key {
            Key::Zone => Some(node.zone),
            Key::CapacityType => CapacityType::ALL.iter().position(|c| *c == node.ct),
            Key::Hostname => None,
            Key::Label(k) => node.labels.label(k).and_then(|v| self.index(v)),
        }
    }

    /// The domain a new node of pool `pi` and type `t` is in (label keys only).
    fn of_launch(&self, prep: &Prepared, pi: usize, t: usize) -> Option<usize> {
        let Key::Label(k) = &self.key else { return None };
        let v = if self.key.of_type() {
            prep.input.instance_types[t].labels.label(k)
        } else {
            prep.pools[pi].labels.label(k)
        };
        v.and_then(|v| self.index(v))
    }

    /// The domains new nodes could be in for signature `sig`, whatever their size: the pools it
    /// is compatible with (a domain is a domain whether or not a type that fits is offered there,
    /// as in Kubernetes).
    pub fn of_pools(&self, prep: &Prepared, sig: usize) -> Mask {
        let mut m = Mask::default();
        for pi in 0..prep.pools.len() {
            let Some(c) = self.compat_for(prep, sig, pi) else {
                continue;
            };
            let c = c.as_ref();
            match &self.key {
                Key::Zone => m.or(&Mask::from_bits(c.zones)),
                Key::CapacityType => m.or(&Mask::from_bits(u64::from(c.cts))),
                Key::Hostname => {}
                Key::Label(_) if self.key.of_type() => {
                    for t in c.types.iter() {
                        if let Some(d) = self.of_launch(prep, pi, t) {
                            m.set(d);
                        }
                    }
                }
                Key::Label(_) => {
                    if let Some(d) = c.types.iter().next().and_then(|t| self.of_launch(prep, pi, t)) {
                        m.set(d);
                    }
                }
            }
        }
        m
    }

    /// The domains pod `i` could launch into: a compatible type that fits it is offered there.
    pub fn launchable(&self, prep: &Prepared, i: usize) -> Mask {
        if self.key == Key::Zone {
            return Mask::from_bits(prep.eligible[i]);
        }
        self.launchable_as(prep, prep.pod_sig[i], &prep.input.pods[i].requests)
    }

    /// Signature `sig`'s compatibility with pool view `pi` as a source of this key's domains: its
    /// own, or, for a view of a pool split on this key that serves only pods needing its value,
    /// the compatibility the pod would have once pinned to that value (as Karpenter counts every
    /// value a pool's requirement offers as a domain).
    fn compat_for<'p>(&self, prep: &'p Prepared, sig: usize, pi: usize) -> Option<Cow<'p, Compat>> {
        if let Ok(c) = &prep.sigs[sig].compat[pi] {
            return Some(Cow::Borrowed(c));
        }
        let Key::Label(k) = &self.key else { return None };
        let pv = &prep.pools[pi];
        let value = pv.labels.get(k)?;
        let split_here = pv
            .primary
            .as_ref()
            .is_some_and(|p| p.iter().any(|(pk, pvalue)| pk == k && pvalue != value));
        if !split_here {
            return None;
        }
        // (Pinning only adds a requirement: a view the pod fails for another reason stays failed.)
        let mut s = prep.sigs[sig].unresolved_copy();
        s.node_selector
            .push(Requirement::new(k, Operator::In, &[value.as_str()]));
        compat(&s, pv, prep.input.instance_types, &prep.zones, &prep.offers)
            .ok()
            .map(Cow::Owned)
    }

    /// The domains a pod of signature `sig` and requests `req` could launch into.
    pub fn launchable_as(&self, prep: &Prepared, sig: usize, req: &crate::Resources) -> Mask {
        if self.key == Key::Zone {
            return Mask::from_bits(prep.eligible_zones(sig, req));
        }
        let types = prep.input.instance_types;
        let mut m = Mask::default();
        for pi in 0..prep.pools.len() {
            let Some(c) = self.compat_for(prep, sig, pi) else {
                continue;
            };
            let c = c.as_ref();
            let pv = &prep.pools[pi];
            for t in c.types.iter() {
                if !req.fits_in_with(&pv.ds_overhead[t], pv.allocatable(types, t)) {
                    continue;
                }
                match &self.key {
                    Key::CapacityType => {
                        for (_, ct, z) in prep.offers[t].iter() {
                            if c.cts & ct != 0 && c.zones & (1 << z) != 0 {
                                m.set(ct.trailing_zeros() as usize);
                            }
                        }
                    }
                    _ => {
                        if let Some(d) = self.of_launch(prep, pi, t) {
                            m.set(d);
                        }
                    }
                }
            }
        }
        m
    }

    /// The domains of the existing nodes a constraint of signature `sig` counts under its
    /// policies: with `nodeAffinityPolicy: Honor`, only nodes its node selector and required
    /// node affinity admit; with `nodeTaintsPolicy: Honor`, only nodes whose taints it tolerates.
    pub fn of_nodes(
        &self,
        prep: &Prepared,
        sig: usize,
        affinity: NodeInclusionPolicy,
        taints: NodeInclusionPolicy,
    ) -> Mask {
        let mut m = Mask::default();
        for n in 0..prep.nodes.len() {
            if self.counts_node(prep, sig, n, affinity, taints)
                && let Some(d) = self.of_node(prep, n)
            {
                m.set(d);
            }
        }
        m
    }

    /// Whether existing node `n` is among the nodes such a constraint counts.
    pub fn counts_node(
        &self,
        prep: &Prepared,
        sig: usize,
        n: usize,
        affinity: NodeInclusionPolicy,
        taints: NodeInclusionPolicy,
    ) -> bool {
        let s = &prep.sigs[sig];
        let node = &prep.nodes[n];
        let admitted = affinity == NodeInclusionPolicy::Ignore
            || (all_match(&s.node_selector, &node.labels)
                && (s.terms.is_empty() || s.terms.iter().any(|t| all_match(t, &node.labels))));
        let tolerated =
            taints == NodeInclusionPolicy::Ignore || first_untolerated(&s.tolerations, &node.taints).is_none();
        admitted && tolerated
    }
}
