//! The batch as both packing strategies see it, computed once: the pools (`pools`), each pod's
//! signature and its compatibility with them (`signature`), the existing and in-flight nodes,
//! the hostname counts (`topology::hostname`), the topology pins (`topology`), and the buckets
//! of interchangeable pods the packers place.

use std::collections::HashMap;
use std::sync::Arc;

use crate::catalogue::CapacityType;
use crate::labels;
use crate::model::{HostPort, Pod, Taint, WhenUnsatisfiable, first_untolerated};
use crate::requirements::{LabelSource, Operator, Requirement, all_match};
use crate::resources::{FIXED, Resources};

use super::Input;
use super::typeset::TypeSet;

pub use super::pools::{PoolView, Templates, TypeIndex, ct_bit, cts_of};
pub(in crate::scheduler) use super::pools::{ct_from_bit, index_by_name, offers_of, pool_views, zone_names};
pub use super::signature::{Compat, Signature};
pub(in crate::scheduler) use super::signature::{SigKey, compat, selector_reqs, type_values};
pub use super::topology::hostname::{HostConstraint, HostCounts, matching_on};
pub(in crate::scheduler) use super::topology::hostname::{HostMembership, host_id, host_port_id};

/// Interchangeable pending pods: same signature, requests, pins and topology membership.
#[derive(Default, Clone, Debug)]
pub struct Bucket {
    pub pods: Vec<usize>,
    /// Pods before this index are placed.
    pub next: usize,
    pub req: Resources,
    pub sig: usize,
    /// Allowed zones (all bits when not pinned) and capacity types.
    pub zones: u64,
    pub cts: u8,
    pub members: Vec<u16>,
    pub carries: Vec<(u16, u32)>,
    /// At most this many of the bucket's pods fit on one node because of its own constraints.
    pub per_node: u64,
    /// The gang (pods that must share a node: hostname pod affinity) its pods belong to.
    pub gang: Option<usize>,
}

impl Bucket {
    pub fn remaining(&self) -> usize {
        self.pods.len() - self.next
    }

    /// Reports every pod still waiting in the bucket as unschedulable for `reason`.
    pub fn fail_rest(&mut self, reason: &str, failed: &mut Vec<(usize, String)>) {
        failed.extend(self.pods[self.next..].iter().map(|p| (*p, reason.to_string())));
        self.next = self.pods.len();
    }
}

/// An existing node or in-flight claim as the packers see it.
pub struct NodeState<'a> {
    pub name: String,
    pub labels: crate::model::NodeLabels<'a>,
    pub taints: Vec<Taint>,
    pub free: Resources,
    pub zone: usize,
    pub ct: CapacityType,
    pub in_flight: bool,
    pub host: HostCounts,
    pub usable: bool,
}

pub struct Prepared<'a> {
    pub input: &'a Input<'a>,
    pub zones: Vec<String>,
    pub pools: Vec<PoolView<'a>>,
    pub sigs: Vec<Signature>,
    pub host: Vec<HostConstraint>,
    pub buckets: Vec<Bucket>,
    pub nodes: Vec<NodeState<'a>>,
    /// Pods that cannot be placed anywhere, decided during preparation.
    pub unschedulable: Vec<(usize, String)>,
    /// The signature of each pod, its topology pins included.
    pub pod_sig: Vec<usize>,
    /// The signature of each pod before topology pins: what it asked for itself.
    pub base_sig: Vec<usize>,
    /// Zones where each pod could run (some fitting, compatible type is offered there).
    pub eligible: Vec<u64>,
    /// Available offerings per instance type: (price, capacity-type bit, zone index). Shared with
    /// the templates it came from.
    pub offers: Arc<super::pools::TypeOffers>,
    /// Groups of pods that must share a node (required pod affinity on the hostname).
    pub gangs: Vec<super::topology::colocation::Gang>,
}

impl<'a> Prepared<'a> {
    pub fn new(input: &'a Input<'a>) -> Self {
        Self::new_with(input, None)
    }

    /// [`Prepared::new`], starting from `templates` when they were built for `input`'s pools,
    /// types and daemonsets (otherwise computed afresh; the result is the same either way).
    pub fn new_with(input: &'a Input<'a>, templates: Option<&Templates<'a>>) -> Self {
        let types = input.instance_types;
        let templates = templates.filter(|t| t.fits(input));
        let (zones, offers, mut pools) = match templates {
            Some(t) => (t.index.zones.clone(), Arc::clone(&t.index.offers), t.views.clone()),
            None => {
                let zones: Vec<String> = zone_names(types, input.nodes)
                    .iter()
                    .map(|z| (*z).to_string())
                    .collect();
                let offers = offers_of(types, &zones);
                let dedicated = super::pools::wants_dedicated(input.pods);
                let pools = pool_views(input.pools, types, &zones, &offers, input.daemonsets, dedicated);
                (zones, Arc::new(offers), pools)
            }
        };
        let zone_idx = |z: &str| zones.iter().position(|x| x == z);
        // Types by name: the templates' index, or one built here when nodes need it.
        let own_index: HashMap<&str, usize> = match templates {
            None if !input.nodes.is_empty() => index_by_name(types),
            _ => HashMap::new(),
        };
        let type_of = |name: &str| {
            match templates {
                Some(t) => t.index.by_name.get(name),
                None => own_index.get(name),
            }
            .map(|&i| &types[i])
        };
        // (Every view of a split pool carries the pool's usage.)
        for n in input.nodes {
            for pv in pools.iter_mut().filter(|pv| Some(&pv.pool.name) == n.pool.as_ref()) {
                pv.used_nodes += 1;
                if let Some(t) = type_of(&n.instance_type) {
                    pv.used.add(&t.capacity);
                } else if let Some(a) = &n.allocatable {
                    pv.used.add(a);
                }
            }
        }
        for u in input.pool_usage {
            for pv in pools.iter_mut().filter(|pv| pv.pool.name == u.pool) {
                pv.used.max_with(&u.resources);
                pv.used_nodes = pv.used_nodes.max(u.nodes);
            }
        }

        // Signatures. A requirement on the zone ID is read as one on the zones with those IDs.
        let zone_ids = mentions_zone_id(input.pods).then(|| crate::catalogue::zone_ids::of(types));
        let by_zone = |reqs: Vec<Requirement>| match &zone_ids {
            Some(ids) => crate::catalogue::zone_ids::to_zones(&reqs, ids),
            None => reqs,
        };
        let mut sig_index: HashMap<SigKey, usize> = HashMap::new();
        let mut sigs: Vec<Signature> = Vec::new();
        let mut pod_sig = Vec::with_capacity(input.pods.len());
        for p in input.pods {
            let key = SigKey::of(p);
            let id = *sig_index.entry(key).or_insert_with_key(|key| {
                let mut s = Signature {
                    node_selector: by_zone(selector_reqs(&p.node_selector)),
                    terms: p.node_affinity.iter().map(|t| by_zone(t.clone())).collect(),
                    preferred: {
                        let mut v: Vec<(i32, Vec<Requirement>)> = p
                            .preferred_node_affinity
                            .iter()
                            .map(|t| (t.weight, by_zone(t.requirements.clone())))
                            .collect();
                        v.sort_by_key(|t| std::cmp::Reverse(t.0));
                        v
                    },
                    preferred_dropped: false,
                    tolerations: p.tolerations.clone(),
                    host_ports: p.host_ports.clone(),
                    compat: Arc::default(),
                };
                let cached = templates.and_then(|t| t.compat.borrow().get(key).cloned());
                s.compat = match cached {
                    Some(c) => c,
                    None => {
                        let c: Arc<Vec<_>> =
                            Arc::new(pools.iter().map(|pv| compat(&s, pv, types, &zones, &offers)).collect());
                        if let Some(t) = templates {
                            t.compat.borrow_mut().insert(key.clone(), Arc::clone(&c));
                        }
                        c
                    }
                };
                sigs.push(s);
                sigs.len() - 1
            });
            pod_sig.push(id);
        }

        let mut prep = Prepared {
            eligible: Vec::new(),
            offers,
            input,
            zones: zones.clone(),
            pools,
            sigs,
            host: Vec::new(),
            buckets: Vec::new(),
            nodes: Vec::new(),
            unschedulable: Vec::new(),
            base_sig: pod_sig.clone(),
            pod_sig,
            gangs: Vec::new(),
        };

        let mut skip = vec![false; input.pods.len()];
        // Karpenter's default (IGNORE_DRA_REQUESTS): a pod whose devices come from DRA claims
        // is not provisioned for, since what a claim needs is not known here.
        for (i, p) in input.pods.iter().enumerate() {
            if p.resource_claims {
                skip[i] = true;
                prep.unschedulable.push((
                    i,
                    "pod has Dynamic Resource Allocation requirements (resourceClaims), which are not provisioned for"
                        .into(),
                ));
            }
        }

        // Eligible zones of each pod: where some type that fits it is offered, over every pool it is
        // compatible with.
        let mut eligible_cache: HashMap<(usize, &Resources), u64> = HashMap::new();
        let eligible_zones: Vec<u64> = (0..input.pods.len())
            .map(|i| {
                let sig = prep.pod_sig[i];
                *eligible_cache
                    .entry((sig, &input.pods[i].requests))
                    .or_insert_with(|| prep.eligible_zones(sig, &input.pods[i].requests))
            })
            .collect();
        prep.eligible = eligible_zones;

        // Hostname constraints and per-pod membership.
        let mut host_index: HashMap<(Option<Vec<String>>, String), u16> = HashMap::new();
        let mut host_port_index: HashMap<HostPort, u16> = HashMap::new();
        let mut carries_of: Vec<Vec<(u16, Option<u32>)>> = vec![Vec::new(); input.pods.len()];
        let all_pods: Vec<&Pod> = input
            .pods
            .iter()
            .chain(input.nodes.iter().flat_map(|n| n.pods.iter()))
            .collect();
        for (i, p) in all_pods.iter().enumerate() {
            let mut list = Vec::new();
            for s in &p.topology_spread {
                if s.topology_key == labels::HOSTNAME && s.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule {
                    let c = host_id(
                        &mut host_index,
                        &mut prep.host,
                        Some(vec![p.namespace.clone()]),
                        &s.selector,
                    );
                    list.push((c, Some(s.max_skew)));
                }
            }
            for t in &p.pod_anti_affinity {
                if t.topology_key == labels::HOSTNAME {
                    let ns = if t.all_namespaces {
                        None
                    } else if t.namespaces.is_empty() {
                        Some(vec![p.namespace.clone()])
                    } else {
                        Some(t.namespaces.clone())
                    };
                    let c = host_id(&mut host_index, &mut prep.host, ns, &t.selector);
                    // An anti-affinity carrier allows no other matching pod; itself counts when it matches.
                    list.push((c, None));
                }
            }
            for port in &p.host_ports {
                // Like anti-affinity: no other pod binding the port; the carrier itself binds it.
                let c = host_port_id(&mut host_port_index, &mut prep.host, port);
                list.push((c, None));
            }
            if i < input.pods.len() {
                carries_of[i] = list;
            } else {
                // One entry per bound pod, in order, empty or not: read back node by node below.
                carries_of.push(list);
            }
        }
        let host = &prep.host;
        let membership = |p: &Pod| -> Vec<u16> {
            (0..host.len() as u16)
                .filter(|c| host[*c as usize].selects(p))
                .collect()
        };
        let resolve_carries = |p: &Pod, members: &[u16], raw: &[(u16, Option<u32>)]| -> Vec<(u16, u32)> {
            let mut out: Vec<(u16, u32)> = Vec::new();
            for (c, lim) in raw {
                let l = lim.unwrap_or(u32::from(members.contains(c)));
                match out.iter_mut().find(|(x, _)| x == c) {
                    Some((_, v)) => *v = (*v).min(l),
                    None => out.push((*c, l)),
                }
            }
            let _ = p;
            out
        };

        // Existing nodes.
        let mut extra_carries = input.pods.len();
        for n in input.nodes {
            let t = type_of(&n.instance_type);
            // The node's own labels win over its pool's template labels.
            let pool = n
                .pool
                .as_ref()
                .and_then(|p| prep.pools.iter().find(|pv| &pv.pool.name == p));
            let labels = n.label_view(t.map(|t| &t.labels), pool.map(|pv| Arc::clone(&pv.labels)));
            // A node that has not said (a claim in flight): what its pool's nodes register with.
            let alloc = n
                .allocatable
                .clone()
                .or_else(|| t.map(|t| pool.map_or_else(|| t.allocatable.clone(), |pv| pv.pool.allocatable_of(t))));
            let usable = alloc.is_some() && !n.unschedulable;
            let mut free = alloc.unwrap_or_default();
            free.saturating_sub(&n.requested());
            let mut host_counts = HostCounts::default();
            for p in &n.pods {
                let members = membership(p);
                let raw = carries_of.get(extra_carries).cloned().unwrap_or_default();
                extra_carries += 1;
                let carries = resolve_carries(p, &members, &raw);
                host_counts.add_pod(&members, &carries);
            }
            // A node still on its way carries taints that go when it is ready: the kubelet's and
            // cloud provider's ephemeral ones, and its pool's startup taints (Karpenter reads
            // such a node's taints without them). Once ready, every listed taint counts.
            let taints = if n.in_flight {
                n.taints
                    .iter()
                    .filter(|t| {
                        !labels::EPHEMERAL_TAINTS.contains(&t.key.as_str())
                            && !pool.is_some_and(|pv| pv.pool.startup_taints.contains(t))
                    })
                    .cloned()
                    .collect()
            } else {
                n.taints.clone()
            };
            prep.nodes.push(NodeState {
                name: n.name.clone(),
                labels,
                taints,
                free,
                zone: zone_idx(&n.zone).unwrap_or(0),
                ct: n.capacity_type,
                in_flight: n.in_flight,
                host: host_counts,
                usable,
            });
        }

        // Hostname constraints each pending pod counts for and carries.
        let host_of: Vec<HostMembership> = input
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if skip[i] {
                    return Default::default();
                }
                let members = membership(p);
                let carries = resolve_carries(p, &members, &carries_of[i]);
                (members, carries)
            })
            .collect();

        // Topology: pods pinned to domains of every key they spread or (anti-)affine on.
        let (pin_zone, pin_ct) = super::topology::pin(&mut prep, &mut skip);
        let gangs = super::topology::colocation::gangs(&prep, &mut skip);
        let gang_of = gangs.of;
        prep.gangs = gangs.gangs;
        prep.unschedulable.extend(gangs.failed);

        // Buckets.
        let all_zones = if zones.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << zones.len()) - 1
        };
        let mut bucket_index: HashMap<BucketKey, usize> = HashMap::new();
        for (i, p) in input.pods.iter().enumerate() {
            if skip[i] {
                continue;
            }
            let (members, carries) = host_of[i].clone();
            let key = BucketKey {
                sig: prep.pod_sig[i],
                req: p.requests.clone(),
                zone: pin_zone[i],
                ct: pin_ct[i],
                gang: gang_of[i],
                members: members.clone(),
                carries: carries.clone(),
            };
            let next_id = prep.buckets.len();
            let b = *bucket_index.entry(key).or_insert(next_id);
            if b == next_id {
                let per_node = carries
                    .iter()
                    .filter(|(c, _)| members.contains(c))
                    .map(|(_, l)| u64::from(*l))
                    .min()
                    .unwrap_or(u64::MAX);
                prep.buckets.push(Bucket {
                    pods: Vec::new(),
                    next: 0,
                    req: p.requests.clone(),
                    sig: prep.pod_sig[i],
                    zones: pin_zone[i].map_or(all_zones, |z| 1u64 << z),
                    cts: pin_ct[i].map_or(0b111, ct_bit),
                    members,
                    carries,
                    per_node,
                    gang: gang_of[i],
                });
            }
            prep.buckets[b].pods.push(i);
        }
        // Largest first: accelerators, then CPU, then memory (Karpenter's order, GPUs leading).
        prep.buckets.sort_by(|a, b| {
            b.req
                .accelerators()
                .cmp(&a.req.accelerators())
                .then(b.req.cpu_milli().cmp(&a.req.cpu_milli()))
                .then(b.req.memory().cmp(&a.req.memory()))
                .then(a.pods[0].cmp(&b.pods[0]))
        });
        prep
    }

    /// Zones where a pod of signature `sig` and requests `req` could run: some type that fits it
    /// is offered there, in a pool the signature is compatible with.
    pub fn eligible_zones(&self, sig: usize, req: &Resources) -> u64 {
        let types = self.input.instance_types;
        let mut mask = 0u64;
        for (pi, c) in self.sigs[sig].compat.iter().enumerate() {
            let Ok(c) = c else { continue };
            for t in c.types.iter() {
                if req.fits_in_with(&self.pools[pi].ds_overhead[t], self.pools[pi].allocatable(types, t)) {
                    for (_, ct, z) in &self.offers[t] {
                        if c.cts & ct != 0 && c.zones & (1 << z) != 0 {
                            mask |= 1 << z;
                        }
                    }
                }
            }
        }
        mask
    }

    /// Signature `sig` with every preferred node-affinity term given up (itself when it has none
    /// or has given them up already). `cache` shares the relaxed signatures between pods.
    pub fn without_preferences(&mut self, sig: usize, cache: &mut HashMap<usize, usize>) -> usize {
        let b = &self.sigs[sig];
        if b.preferred.is_empty() || b.preferred_dropped {
            return sig;
        }
        if let Some(&s) = cache.get(&sig) {
            return s;
        }
        let derived = self.derive_sig(sig, |s| s.preferred_dropped = true);
        cache.insert(sig, derived);
        derived
    }

    /// Pod `i` gives up its preferred node affinity (see [`Self::without_preferences`]).
    pub fn drop_preferences(&mut self, i: usize, cache: &mut HashMap<usize, usize>) {
        let sig = self.without_preferences(self.pod_sig[i], cache);
        self.pod_sig[i] = sig;
        self.eligible[i] = self.eligible_zones(sig, &self.input.pods[i].requests);
    }

    /// Pins pod `i` to `key = value` (a topology domain of a label key): its signature gains the
    /// requirement, so only pools and types in that domain take it, new nodes and existing ones
    /// alike. `cache` shares the pinned signatures between pods.
    pub fn pin_label(&mut self, i: usize, key: &str, value: &str, cache: &mut HashMap<(usize, String, String), usize>) {
        let base = self.pod_sig[i];
        let cache_key = (base, key.to_string(), value.to_string());
        let sig = match cache.get(&cache_key) {
            Some(&s) => s,
            None => {
                let derived = self.derive_sig(base, |s| {
                    s.node_selector.push(Requirement::new(key, Operator::In, &[value]))
                });
                cache.insert(cache_key, derived);
                derived
            }
        };
        self.pod_sig[i] = sig;
        self.eligible[i] = self.eligible_zones(sig, &self.input.pods[i].requests);
    }

    /// A new signature: `base` changed by `change`, its compatibility with every pool computed.
    fn derive_sig(&mut self, base: usize, change: impl FnOnce(&mut Signature)) -> usize {
        let mut s = self.sigs[base].unresolved_copy();
        change(&mut s);
        let types = self.input.instance_types;
        s.compat = Arc::new(
            self.pools
                .iter()
                .map(|pv| compat(&s, pv, types, &self.zones, &self.offers))
                .collect(),
        );
        self.sigs.push(s);
        self.sigs.len() - 1
    }

    /// Why `pod` (index) cannot be placed in any pool, for its first bucket-independent failure.
    /// What pod `p`'s preferences gave up to land on pool `pool` (index into `pools`), in
    /// Karpenter's relaxation order; empty when nothing was (see `compat`).
    pub fn relaxations(&self, p: usize, pool: usize) -> Vec<String> {
        let s = &self.sigs[self.pod_sig[p]];
        let Some(Ok(c)) = s.compat.get(pool) else {
            return Vec::new();
        };
        let required = s.terms.len().max(1);
        let preferred = s.preferred.len();
        let tiers = required + preferred;
        let (level, soft_taint) = if c.relaxed >= tiers {
            (c.relaxed - tiers, true)
        } else {
            (c.relaxed, false)
        };
        let mut out = Vec::new();
        if level >= required {
            // States past the required terms each drop one more preferred term, heaviest first.
            let dropped = (level + 1 - required).min(preferred);
            for (weight, _) in &s.preferred[..dropped] {
                out.push(format!("preferred node affinity term of weight {weight} dropped"));
            }
        }
        if soft_taint {
            let pv = &self.pools[pool];
            for t in pv.pool.taints.iter().filter(|t| {
                t.effect == crate::model::Effect::PreferNoSchedule && !s.tolerations.iter().any(|tol| tol.tolerates(t))
            }) {
                out.push(format!(
                    "taint {t} of NodePool {} tolerated (no pool without it could take the pod)",
                    pv.pool.name
                ));
            }
        }
        out
    }

    pub fn sig_reason(&self, sig: usize) -> Option<String> {
        let s = &self.sigs[sig];
        if s.compat.iter().any(|c| c.is_ok()) {
            return None;
        }
        if self.pools.is_empty() {
            return Some("no NodePool is configured".into());
        }
        Some(
            s.compat
                .iter()
                .filter_map(|c| c.as_ref().err().cloned())
                .collect::<Vec<_>>()
                .join("; "),
        )
    }

    /// Candidate types for seeding a new claim with a pod of `bucket` in pool `pi`: compatible,
    /// fitting one pod plus daemonset overhead, offered in the bucket's zones and capacity types;
    /// accelerated and metal types only when the pod needs them or nothing else fits.
    pub fn seed_types(&self, bucket: &Bucket, pi: usize) -> Result<(TypeSet, u64, u8), String> {
        let pv = &self.pools[pi];
        let compat = self.sigs[bucket.sig].compat[pi].as_ref().map_err(Clone::clone)?;
        let zones = compat.zones & bucket.zones;
        let cts = compat.cts & bucket.cts;
        if zones == 0 {
            return Err(format!(
                "pool {}: no compatible offering in the pod's zone",
                pv.pool.name
            ));
        }
        if cts == 0 {
            return Err(format!("pool {}: the pod's capacity type is not allowed", pv.pool.name));
        }
        let types = self.input.instance_types;
        let mut fit = TypeSet::empty(types.len());
        let mut plain = TypeSet::empty(types.len());
        let mut any_offer = false;
        for t in compat.types.iter() {
            if !self.offered(t, zones, cts) {
                continue;
            }
            any_offer = true;
            let mut need = bucket.req.clone();
            need.add(&pv.ds_overhead[t]);
            if need.fits_in(pv.allocatable(types, t)) {
                fit.insert(t);
                let ty = &types[t];
                if !(ty.accelerated || ty.bare_metal) || bucket.req.accelerators() > 0 {
                    plain.insert(t);
                }
            }
        }
        if !any_offer {
            return Err(format!("pool {}: no compatible offering is available", pv.pool.name));
        }
        if fit.is_empty() {
            return Err(self.fit_reason(bucket, pi, &compat.types));
        }
        if let Some(why) = self.min_values_shortfall(pi, &fit) {
            return Err(why);
        }
        // GPU and metal types only when the pod needs them, or the pool's minValues does (metal
        // first: a CPU pod's claim lists GPU types only when nothing less makes the count).
        let mut chosen = fit.clone();
        if !plain.is_empty() {
            let mut no_gpu = plain.clone();
            for t in fit.iter().filter(|t| types[*t].bare_metal && !types[*t].accelerated) {
                no_gpu.insert(t);
            }
            if self.min_values_shortfall(pi, &plain).is_none() {
                chosen = plain;
            } else if self.min_values_shortfall(pi, &no_gpu).is_none() {
                chosen = no_gpu;
            }
        }
        Ok((chosen, zones, cts))
    }

    /// Why `set` cannot keep pool `pi`'s minValues (a requirement with fewer distinct values among
    /// the types than it asks for), if it cannot. Karpenter leaves such a pod unschedulable.
    pub fn min_values_shortfall(&self, pi: usize, set: &TypeSet) -> Option<String> {
        let pool = self.pools[pi].pool;
        let types = self.input.instance_types;
        pool.requirements.iter().find_map(|r| {
            let need = r.min_values? as usize;
            let mut values: Vec<&str> = set.iter().flat_map(|t| type_values(&types[t], r)).collect();
            values.sort_unstable();
            values.dedup();
            (values.len() < need).then(|| {
                format!(
                    "pool {}: {} needs at least {need} values (minValues) and the types that fit the pod offer {}",
                    pool.name,
                    r.key,
                    values.len()
                )
            })
        })
    }

    fn fit_reason(&self, bucket: &Bucket, pi: usize, set: &TypeSet) -> String {
        let pv = &self.pools[pi];
        let types = self.input.instance_types;
        for (name, want) in bucket.req.entries() {
            let best = set
                .iter()
                .map(|t| {
                    let mut a = pv.allocatable(types, t).clone();
                    a.saturating_sub(&pv.ds_overhead[t]);
                    a.get_named(&name)
                })
                .max()
                .unwrap_or(0);
            if best < want {
                return format!(
                    "pool {}: no instance type offers {name} >= {}",
                    pv.pool.name,
                    Resources::format_amount(&name, want)
                );
            }
        }
        format!(
            "pool {}: no single instance type fits all of {} (plus daemonsets)",
            pv.pool.name, bucket.req
        )
    }

    /// Whether type `t` has an available offering in the zones and capacity types.
    #[inline]
    pub fn offered(&self, t: usize, zones: u64, cts: u8) -> bool {
        self.offers[t]
            .iter()
            .any(|(_, c, z)| cts & c != 0 && zones & (1 << z) != 0)
    }

    /// Cheapest available offering of type `t` in the zones and capacity types.
    pub fn best_offer(&self, t: usize, zones: u64, cts: u8) -> Option<(f64, CapacityType, usize)> {
        self.offers[t]
            .iter()
            .find(|(_, c, z)| cts & c != 0 && zones & (1 << z) != 0)
            .map(|(p, c, z)| (*p, ct_from_bit(*c), *z))
    }

    /// Allocatable of type `t` in pool `pi` after daemonsets.
    pub fn capacity(&self, pi: usize, t: usize) -> Resources {
        let pv = &self.pools[pi];
        let mut a = pv.allocatable(self.input.instance_types, t).clone();
        a.saturating_sub(&pv.ds_overhead[t]);
        a
    }

    /// The fixed resources of `capacity(pi, t)`, without building it (hot in the packer).
    #[inline]
    pub fn capacity_fixed(&self, pi: usize, t: usize) -> [u64; FIXED] {
        let (alloc, ds) = (
            self.pools[pi].allocatable(self.input.instance_types, t).fixed(),
            self.pools[pi].ds_overhead[t].fixed(),
        );
        std::array::from_fn(|r| alloc[r].saturating_sub(ds[r]))
    }

    /// `capacity(pi, t).times_fits(req)`, without building the capacity.
    pub fn times_fits_on(&self, pi: usize, t: usize, req: &Resources) -> u64 {
        let cap = self.capacity_fixed(pi, t);
        let mut n = u64::MAX;
        for (c, q) in cap.iter().zip(req.fixed()) {
            if let Some(k) = c.checked_div(*q) {
                n = n.min(k);
            }
        }
        if !req.extended().is_empty() {
            n = n.min(self.capacity(pi, t).times_fits(req));
        }
        n
    }

    /// Whether a bucket's pods may be placed on an existing node.
    pub fn fits_node(&self, b: &Bucket, n: &NodeState<'_>) -> bool {
        if !n.usable || b.zones & (1 << n.zone) == 0 || b.cts & ct_bit(n.ct) == 0 {
            return false;
        }
        let s = &self.sigs[b.sig];
        // A node still on its way holds none of its daemonsets' pods yet: the ports they will
        // bind there are its pool's.
        if n.in_flight
            && !s.host_ports.is_empty()
            && let Some(pool) = n.labels.label(labels::NODEPOOL)
            && let Some(pv) = self.pools.iter().find(|pv| pv.pool.name == pool)
            && pv.ds_host_ports.iter().any(|(p, _, on)| {
                s.host_ports.contains(p)
                    && n.labels.label(labels::INSTANCE_TYPE).is_none_or(|name| {
                        // Types outside the catalogue are taken to run it.
                        let types = self.input.instance_types;
                        types.iter().position(|t| t.name == name).is_none_or(|t| on.contains(t))
                    })
            })
        {
            return false;
        }
        first_untolerated(&s.tolerations, &n.taints).is_none()
            && all_match(&s.node_selector, &n.labels)
            && (s.terms.is_empty() || s.terms.iter().any(|t| all_match(t, &n.labels)))
    }
}

#[derive(PartialEq, Eq, Hash)]
struct BucketKey {
    sig: usize,
    req: Resources,
    zone: Option<usize>,
    ct: Option<CapacityType>,
    gang: Option<usize>,
    members: Vec<u16>,
    carries: Vec<(u16, u32)>,
}

/// Whether a pod of the batch asks for a zone ID (which is then read against the zones).
fn mentions_zone_id(pods: &[Pod]) -> bool {
    pods.iter().any(|p| {
        p.node_selector.contains_key(crate::labels::ZONE_ID)
            || p.node_affinity
                .iter()
                .flatten()
                .any(|r| r.key == crate::labels::ZONE_ID)
            || p.preferred_node_affinity
                .iter()
                .flat_map(|t| &t.requirements)
                .any(|r| r.key == crate::labels::ZONE_ID)
    })
}
