//! Everything both packing strategies need, computed once per batch: pool views, pod requirement
//! signatures and their compatibility with each pool, daemonset overhead per pool and type, topology
//! pinning (zone spread and zone affinity are decided up front), hostname constraints, and buckets of
//! interchangeable pods.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::catalogue::{CapacityType, InstanceType};
use crate::labels;
use crate::model::{HostPort, Pod, Taint, Toleration, WhenUnsatisfiable, first_untolerated};
use crate::nodepool::NodePool;
use crate::requirements::{LabelSource, Layered, Operator, Requirement, all_match};
use crate::resources::{FIXED, Resource, Resources};

use super::Input;
use super::typeset::TypeSet;

/// Capacity-type bit masks.
pub fn ct_bit(ct: CapacityType) -> u8 {
    match ct {
        CapacityType::Reserved => 1,
        CapacityType::Spot => 2,
        CapacityType::OnDemand => 4,
    }
}

fn ct_rank(bit: u8) -> u8 {
    bit
}

fn ct_from_bit(bit: u8) -> CapacityType {
    match bit {
        1 => CapacityType::Reserved,
        2 => CapacityType::Spot,
        _ => CapacityType::OnDemand,
    }
}

pub fn cts_of(mask: u8) -> Vec<CapacityType> {
    CapacityType::ALL
        .into_iter()
        .filter(|c| mask & ct_bit(*c) != 0)
        .collect()
}

/// A pool, resolved against the instance types.
#[derive(Clone)]
pub struct PoolView<'a> {
    pub pool: &'a NodePool,
    /// Types matching the pool's requirements with at least one allowed offering.
    pub types: TypeSet,
    pub zones: u64,
    pub cts: u8,
    /// Labels nodes of this pool carry beyond their type's (pool labels, single-valued custom
    /// requirements, the nodepool name).
    /// Shared (not copied) by every preparation made from the same templates.
    pub labels: Arc<BTreeMap<String, String>>,
    /// Daemonset overhead per instance type index (types outside the pool: zero); shared likewise.
    pub ds_overhead: Arc<Vec<Resources>>,
    /// Allocatable per instance type index on this pool's nodes, where its EC2NodeClass makes it
    /// differ from the catalogue's (`NodePool::node_overhead`); read through [`PoolView::allocatable`].
    pub allocatable: Option<Arc<Vec<Resources>>>,
    /// Host ports the daemonsets that run on the pool's nodes bind, with the daemonset's name: a
    /// pod asking for one cannot run on a new node of the pool.
    pub ds_host_ports: Arc<Vec<(HostPort, String)>>,
    /// Capacity already used by the pool's nodes (for limits).
    pub used: Resources,
    pub used_nodes: u64,
}

impl PoolView<'_> {
    /// Allocatable of type `t` on this pool's nodes: the class's kubelet settings and volumes
    /// applied, before daemonsets.
    #[inline]
    pub fn allocatable<'t>(&'t self, types: &'t [InstanceType], t: usize) -> &'t Resources {
        match &self.allocatable {
            Some(a) => &a[t],
            None => &types[t].allocatable,
        }
    }
}

/// A pod's node requirements, shared by every pod with the same selectors and tolerations.
pub struct Signature {
    pub node_selector: Vec<Requirement>,
    pub terms: Vec<Vec<Requirement>>,
    pub preferred: Vec<(i32, Vec<Requirement>)>,
    pub tolerations: Vec<Toleration>,
    pub host_ports: Vec<HostPort>,
    /// Per pool (in `Prepared::pools` order): the compatible offerings, or why there are none.
    /// Shared with the templates' cache.
    pub compat: PoolCompat,
}

/// A signature's compatibility with each pool (in `Prepared::pools` order), shared.
pub type PoolCompat = Arc<Vec<Result<Compat, String>>>;

#[derive(Clone)]
pub struct Compat {
    pub types: TypeSet,
    pub zones: u64,
    pub cts: u8,
    /// How far the pod's preferences were relaxed for this pool (0: not at all). A new claim
    /// goes to the least relaxed pool that can take it, before weight (Karpenter relaxes across
    /// all pools at once).
    pub relaxed: usize,
}

/// A constraint that limits how many matching pods one node may hold: hostname topology spread
/// (DoNotSchedule), required pod anti-affinity on the hostname, and a host port (every pod that
/// binds it, in any namespace, at most one per node).
pub struct HostConstraint {
    /// The namespaces it counts pods in; None: every namespace.
    pub namespaces: Option<Vec<String>>,
    pub selector: crate::model::LabelSelector,
    pub host_port: Option<HostPort>,
}

impl HostConstraint {
    fn selects(&self, p: &Pod) -> bool {
        match &self.host_port {
            Some(port) => p.host_ports.contains(port),
            None => {
                self.namespaces.as_ref().is_none_or(|ns| ns.contains(&p.namespace)) && self.selector.matches(&p.labels)
            }
        }
    }
}

/// Per-node counts of pods matching each hostname constraint, and the tightest limit any pod on the
/// node imposes.
#[derive(Clone, Default, Debug)]
pub struct HostCounts {
    pub counts: Vec<(u16, u32)>,
    pub limits: Vec<(u16, u32)>,
}

impl HostCounts {
    fn count(&self, c: u16) -> u32 {
        self.counts.iter().find(|(k, _)| *k == c).map_or(0, |(_, v)| *v)
    }
    fn limit(&self, c: u16) -> Option<u32> {
        self.limits.iter().find(|(k, _)| *k == c).map(|(_, v)| *v)
    }

    /// How many pods of `b` (up to `want`) may join without breaking any constraint.
    pub fn max_add(&self, b: &Bucket, want: u64) -> u64 {
        self.max_add_counting(|c| self.count(c), b, want)
    }

    /// `max_add` once one pod of `leaving` has left the node (its limits stay, see `remove`).
    pub fn max_add_after(&self, leaving: Option<&Bucket>, b: &Bucket, want: u64) -> u64 {
        self.max_add_counting(
            |c| {
                let n = self.count(c);
                if leaving.is_some_and(|l| l.members.contains(&c)) {
                    n.saturating_sub(1)
                } else {
                    n
                }
            },
            b,
            want,
        )
    }

    /// `max_add` with the node's count of each constraint's pods given by `count`.
    #[inline(always)]
    fn max_add_counting(&self, count: impl Fn(u16) -> u32, b: &Bucket, want: u64) -> u64 {
        let mut k = want;
        for (c, own_limit) in &b.carries {
            let limit = self.limit(*c).map_or(*own_limit, |l| l.min(*own_limit));
            let count = count(*c);
            if b.members.contains(c) {
                k = k.min(u64::from(limit.saturating_sub(count)));
            } else if count > limit {
                return 0;
            }
        }
        for c in &b.members {
            if b.carries.iter().any(|(x, _)| x == c) {
                continue;
            }
            if let Some(limit) = self.limit(*c) {
                k = k.min(u64::from(limit.saturating_sub(count(*c))));
            }
        }
        k
    }

    pub fn add(&mut self, b: &Bucket, k: u32) {
        if k == 0 {
            return;
        }
        for c in &b.members {
            match self.counts.iter_mut().find(|(x, _)| x == c) {
                Some((_, v)) => *v += k,
                None => self.counts.push((*c, k)),
            }
        }
        for (c, l) in &b.carries {
            match self.limits.iter_mut().find(|(x, _)| x == c) {
                Some((_, v)) => *v = (*v).min(*l),
                None => self.limits.push((*c, *l)),
            }
        }
    }

    /// Takes `k` pods of `b` off the counts. Limits stay as they were: another pod on the node may
    /// carry the same one, and a limit kept too long only refuses a pod.
    pub fn remove(&mut self, b: &Bucket, k: u32) {
        for c in &b.members {
            if let Some((_, v)) = self.counts.iter_mut().find(|(x, _)| x == c) {
                *v = v.saturating_sub(k);
            }
        }
    }

    fn add_pod(&mut self, members: &[u16], carries: &[(u16, u32)]) {
        let b = Bucket {
            members: members.to_vec(),
            carries: carries.to_vec(),
            ..Bucket::default()
        };
        self.add(&b, 1);
    }
}

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

/// Pods on node `n` in namespace `ns` that `sel` selects (topology spread counting).
pub fn matching_on(n: &crate::model::Node, ns: &str, sel: &crate::model::LabelSelector) -> u64 {
    n.pods
        .iter()
        .filter(|q| q.namespace == ns && sel.matches(&q.labels))
        .count() as u64
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
    pub offers: Arc<Vec<Vec<(f64, u8, usize)>>>,
    /// Groups of pods that must share a node (required pod affinity on the hostname).
    pub gangs: Vec<super::topology::colocation::Gang>,
}

fn selector_reqs(sel: &BTreeMap<String, String>) -> Vec<Requirement> {
    sel.iter()
        .map(|(k, v)| Requirement::new(k, Operator::In, &[v.as_str()]))
        .collect()
}

/// The sorted zone names of `types`' offerings and of `nodes` (at most 64: zones are bit masks).
fn zone_names<'n>(types: &'n [InstanceType], nodes: &'n [crate::model::Node]) -> Vec<&'n str> {
    // A region has a handful of zones: a linear set of borrowed names beats sorting thousands of
    // cloned strings (this runs for every scheduling call).
    let mut zone_names: Vec<&str> = Vec::new();
    for z in types
        .iter()
        .flat_map(|t| t.offerings.iter().map(|o| o.zone.as_str()))
        .chain(nodes.iter().map(|n| n.zone.as_str()))
    {
        if !zone_names.contains(&z) {
            zone_names.push(z);
        }
    }
    zone_names.sort_unstable();
    zone_names.truncate(64);
    zone_names
}

/// Offerings by zone index: every later check is integer masks.
fn offers_of(types: &[InstanceType], zones: &[String]) -> Vec<Vec<(f64, u8, usize)>> {
    let zone_idx = |z: &str| zones.iter().position(|x| x == z);
    types
        .iter()
        .map(|t| {
            t.offerings
                .iter()
                .filter(|o| o.available)
                .filter_map(|o| zone_idx(&o.zone).map(|z| (o.price, ct_bit(o.capacity_type), z)))
                .collect::<Vec<_>>()
        })
        .map(|mut offers| {
            // Best first, so `best_offer` is the first that matches.
            offers.sort_by(offer_order);
            offers
        })
        .collect()
}

/// Offers cheapest first; ties by capacity type (reserved, spot, on-demand), then zone.
fn offer_order(a: &(f64, u8, usize), b: &(f64, u8, usize)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0)
        .then(ct_rank(a.1).cmp(&ct_rank(b.1)))
        .then(a.2.cmp(&b.2))
}

/// Pool views, highest weight first, with nothing used yet.
fn pool_views<'a>(
    pools: &'a [NodePool],
    types: &[InstanceType],
    zones: &[String],
    offers: &[Vec<(f64, u8, usize)>],
    daemonsets: &[Pod],
) -> Vec<PoolView<'a>> {
    let mut pool_refs: Vec<&NodePool> = pools.iter().collect();
    pool_refs.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.name.cmp(&b.name)));
    pool_refs
        .into_iter()
        .map(|p| pool_view(p, types, zones, offers, daemonsets))
        .collect()
}

/// What preparation derives from the instance types alone: zone names, offerings by zone index
/// and types by name. Build it once per catalogue and hand it to every plan (the consolidation
/// function plans every minute over the same catalogue).
#[derive(Clone)]
pub struct TypeIndex {
    /// Address and length of the slice it was built from: an index is only used for that slice.
    source: (usize, usize),
    zones: Vec<String>,
    offers: Arc<Vec<Vec<(f64, u8, usize)>>>,
    by_name: HashMap<String, usize>,
}

/// Instance types by name; the first of a name wins, as a linear search would find it.
fn index_by_name(types: &[InstanceType]) -> HashMap<&str, usize> {
    let mut index = HashMap::with_capacity(types.len());
    for (i, t) in types.iter().enumerate() {
        index.entry(t.name.as_str()).or_insert(i);
    }
    index
}

impl std::fmt::Debug for TypeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypeIndex")
            .field("types", &self.source.1)
            .field("zones", &self.zones)
            .finish_non_exhaustive()
    }
}

impl TypeIndex {
    pub fn new(types: &[InstanceType]) -> Self {
        let zones: Vec<String> = zone_names(types, &[]).iter().map(|z| (*z).to_string()).collect();
        let offers = Arc::new(offers_of(types, &zones));
        let by_name = index_by_name(types)
            .into_iter()
            .map(|(name, i)| (name.to_string(), i))
            .collect();
        TypeIndex {
            source: (types.as_ptr() as usize, types.len()),
            zones,
            offers,
            by_name,
        }
    }

    /// The position of the type named `name` in the slice the index was built from.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Whether this index was built from `types` (the same slice, still borrowed by the caller, so
    /// unchanged).
    pub fn built_from(&self, types: &[InstanceType]) -> bool {
        self.source == (types.as_ptr() as usize, types.len())
    }
}

/// What preparation derives from the pools, instance types and daemonsets alone, for reuse by
/// many scheduling calls over the same ones (the disruption planner asks the scheduler dozens of
/// times per plan with only the pods and nodes changed). Matching every pool's requirements against
/// the catalogue is most of a preparation's cost.
pub struct Templates<'a> {
    types: &'a [InstanceType],
    pools: &'a [NodePool],
    daemonsets: &'a [Pod],
    index: Cow<'a, TypeIndex>,
    views: Vec<PoolView<'a>>,
    /// Each signature's compatibility with the pools, as first computed: it depends on nothing
    /// but the signature and the templates, and a cluster has few signatures.
    compat: RefCell<HashMap<SigKey, PoolCompat>>,
}

impl<'a> Templates<'a> {
    pub fn new(types: &'a [InstanceType], pools: &'a [NodePool], daemonsets: &'a [Pod]) -> Self {
        Self::with_index(types, None, pools, daemonsets)
    }

    /// [`Templates::new`], reusing `index` when it was built from `types`.
    pub fn with_index(
        types: &'a [InstanceType],
        index: Option<&'a TypeIndex>,
        pools: &'a [NodePool],
        daemonsets: &'a [Pod],
    ) -> Self {
        let index = match index.filter(|i| i.built_from(types)) {
            Some(i) => Cow::Borrowed(i),
            None => Cow::Owned(TypeIndex::new(types)),
        };
        let views = pool_views(pools, types, &index.zones, &index.offers, daemonsets);
        Templates {
            types,
            pools,
            daemonsets,
            index,
            views,
            compat: RefCell::default(),
        }
    }

    /// Whether these templates were built from exactly `input`'s pools, types and daemonsets
    /// (the same slices: borrowed for 'a, so they cannot have changed), and `input`'s nodes add no
    /// zone the offerings lack (then the zones are the same too).
    fn fits(&self, input: &Input<'_>) -> bool {
        std::ptr::eq(self.types, input.instance_types)
            && std::ptr::eq(self.pools, input.pools)
            && std::ptr::eq(self.daemonsets, input.daemonsets)
            && self.index.zones.len() < 64
            && input.nodes.iter().all(|n| self.index.zones.contains(&n.zone))
    }
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
                let pools = pool_views(input.pools, types, &zones, &offers, input.daemonsets);
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
        for n in input.nodes {
            if let Some(pv) = pools.iter_mut().find(|pv| Some(&pv.pool.name) == n.pool.as_ref()) {
                pv.used_nodes += 1;
                if let Some(t) = type_of(&n.instance_type) {
                    pv.used.add(&t.capacity);
                } else if let Some(a) = &n.allocatable {
                    pv.used.add(a);
                }
            }
        }
        for u in input.pool_usage {
            if let Some(pv) = pools.iter_mut().find(|pv| pv.pool.name == u.pool) {
                pv.used.max_with(&u.resources);
                pv.used_nodes = pv.used_nodes.max(u.nodes);
            }
        }

        // Signatures.
        let mut sig_index: HashMap<SigKey, usize> = HashMap::new();
        let mut sigs: Vec<Signature> = Vec::new();
        let mut pod_sig = Vec::with_capacity(input.pods.len());
        for p in input.pods {
            let key = SigKey::of(p);
            let id = *sig_index.entry(key).or_insert_with_key(|key| {
                let mut s = Signature {
                    node_selector: selector_reqs(&p.node_selector),
                    terms: p.node_affinity.clone(),
                    preferred: {
                        let mut v: Vec<(i32, Vec<Requirement>)> = p
                            .preferred_node_affinity
                            .iter()
                            .map(|t| (t.weight, t.requirements.clone()))
                            .collect();
                        v.sort_by_key(|t| std::cmp::Reverse(t.0));
                        v
                    },
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

    /// Pins pod `i` to `key = value` (a topology domain of a label key): its signature gains the
    /// requirement, so only pools and types in that domain take it, new nodes and existing ones
    /// alike. `cache` shares the pinned signatures between pods.
    pub fn pin_label(&mut self, i: usize, key: &str, value: &str, cache: &mut HashMap<(usize, String, String), usize>) {
        let base = self.pod_sig[i];
        let cache_key = (base, key.to_string(), value.to_string());
        let sig = match cache.get(&cache_key) {
            Some(&s) => s,
            None => {
                let b = &self.sigs[base];
                let mut node_selector = b.node_selector.clone();
                node_selector.push(Requirement::new(key, Operator::In, &[value]));
                let mut s = Signature {
                    node_selector,
                    terms: b.terms.clone(),
                    preferred: b.preferred.clone(),
                    tolerations: b.tolerations.clone(),
                    host_ports: b.host_ports.clone(),
                    compat: Arc::default(),
                };
                let types = self.input.instance_types;
                s.compat = Arc::new(
                    self.pools
                        .iter()
                        .map(|pv| compat(&s, pv, types, &self.zones, &self.offers))
                        .collect(),
                );
                self.sigs.push(s);
                cache.insert(cache_key, self.sigs.len() - 1);
                self.sigs.len() - 1
            }
        };
        self.pod_sig[i] = sig;
        self.eligible[i] = self.eligible_zones(sig, &self.input.pods[i].requests);
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
            && pv.ds_host_ports.iter().any(|(p, _)| s.host_ports.contains(p))
        {
            return false;
        }
        first_untolerated(&s.tolerations, &n.taints).is_none()
            && all_match(&s.node_selector, &n.labels)
            && (s.terms.is_empty() || s.terms.iter().any(|t| all_match(t, &n.labels)))
    }
}

fn host_id(
    index: &mut HashMap<(Option<Vec<String>>, String), u16>,
    host: &mut Vec<HostConstraint>,
    namespaces: Option<Vec<String>>,
    selector: &crate::model::LabelSelector,
) -> u16 {
    let key = (namespaces.clone(), serde_json::to_string(selector).unwrap_or_default());
    *index.entry(key).or_insert_with(|| {
        host.push(HostConstraint {
            namespaces,
            selector: selector.clone(),
            host_port: None,
        });
        (host.len() - 1) as u16
    })
}

fn host_port_id(index: &mut HashMap<HostPort, u16>, host: &mut Vec<HostConstraint>, port: &HostPort) -> u16 {
    *index.entry(port.clone()).or_insert_with(|| {
        host.push(HostConstraint {
            namespaces: Some(Vec::new()),
            selector: crate::model::LabelSelector::default(),
            host_port: Some(port.clone()),
        });
        (host.len() - 1) as u16
    })
}

/// The hostname constraints a pod counts for, and those it carries with their per-node limits.
type HostMembership = (Vec<u16>, Vec<(u16, u32)>);

#[derive(Clone, PartialEq, Eq, Hash)]
struct SigKey {
    node_selector: BTreeMap<String, String>,
    terms: Vec<Vec<Requirement>>,
    preferred: Vec<crate::model::PreferredTerm>,
    tolerations: Vec<Toleration>,
    host_ports: Vec<HostPort>,
}

impl SigKey {
    fn of(p: &Pod) -> Self {
        SigKey {
            node_selector: p.node_selector.clone(),
            terms: p.node_affinity.clone(),
            preferred: p.preferred_node_affinity.clone(),
            tolerations: p.tolerations.clone(),
            host_ports: p.host_ports.clone(),
        }
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

fn pool_view<'a>(
    p: &'a NodePool,
    types: &[InstanceType],
    zones: &[String],
    offers: &[Vec<(f64, u8, usize)>],
    daemonsets: &[Pod],
) -> PoolView<'a> {
    // What registration writes on every node of the pool (crate::registration).
    let labels_out = crate::registration::pool_labels(p);
    // A template label on a well-known key constrains the pool as a requirement `In [value]`
    // would (Karpenter adds the template labels to the NodePool's requirements): a label
    // `topology.kubernetes.io/zone: us-east-1a` leaves the pool that one zone.
    let label_reqs: Vec<Requirement> = p
        .labels
        .iter()
        .filter(|(k, _)| labels::is_well_known(k))
        .map(|(k, v)| Requirement::new(k, Operator::In, &[v.as_str()]))
        .collect();
    let reqs: Vec<&Requirement> = p.requirements.iter().chain(&label_reqs).collect();
    // Capacity types: Karpenter's default is on-demand when the pool does not say.
    let ct_reqs: Vec<&Requirement> = reqs
        .iter()
        .copied()
        .filter(|r| r.key == labels::CAPACITY_TYPE)
        .collect();
    let cts = if ct_reqs.is_empty() {
        ct_bit(CapacityType::OnDemand)
    } else {
        CapacityType::ALL
            .into_iter()
            .filter(|c| ct_reqs.iter().all(|r| r.matches(Some(c.as_str()))))
            .fold(0, |a, c| a | ct_bit(c))
    };
    let zone_mask = zones
        .iter()
        .enumerate()
        .filter(|(_, z)| {
            reqs.iter()
                .filter(|r| r.key == labels::ZONE)
                .all(|r| r.matches(Some(z)))
        })
        .fold(0u64, |a, (i, _)| a | (1 << i));
    let type_reqs: Vec<&Requirement> = reqs
        .iter()
        .copied()
        .filter(|r| labels::INSTANCE_TYPE_KEYS.contains(&r.key.as_str()) || r.key == labels::REGION)
        .collect();
    let mut set = TypeSet::empty(types.len());
    let mut ds_overhead = vec![Resources::new(); types.len()];
    let mut allocatable = p.node_overhead.as_ref().map(|_| vec![Resources::new(); types.len()]);
    let mut ds_host_ports: Vec<(HostPort, String)> = Vec::new();
    let mut zones_used = 0u64;
    for (i, t) in types.iter().enumerate() {
        if !type_reqs.iter().all(|r| r.matches(t.labels.label(&r.key))) {
            continue;
        }
        if !offers[i]
            .iter()
            .any(|&(_, c, z)| cts & c != 0 && zone_mask & (1 << z) != 0)
        {
            continue;
        }
        set.insert(i);
        if let (Some(a), Some(cfg)) = (allocatable.as_mut(), &p.node_overhead) {
            a[i] = t.resources_under(cfg).1;
        }
        for &(_, c, z) in &offers[i] {
            if cts & c != 0 {
                zones_used |= 1 << z;
            }
        }
        let node_labels = Layered(&labels_out, &t.labels);
        for ds in daemonsets {
            if first_untolerated(&ds.tolerations, &p.taints).is_some() {
                continue;
            }
            let sel_ok = ds
                .node_selector
                .iter()
                .all(|(k, v)| node_labels.label(k) == Some(v.as_str()));
            let aff_ok =
                ds.node_affinity.is_empty() || ds.node_affinity.iter().any(|term| all_match(term, &node_labels));
            if sel_ok && aff_ok {
                let mut r = ds.requests.clone();
                r.set(Resource::Pods, 1);
                ds_overhead[i].add(&r);
                for port in &ds.host_ports {
                    if !ds_host_ports.iter().any(|(p, _)| p == port) {
                        ds_host_ports.push((port.clone(), format!("{}/{}", ds.namespace, ds.name)));
                    }
                }
            }
        }
    }
    PoolView {
        pool: p,
        types: set,
        zones: zone_mask & zones_used,
        cts,
        labels: Arc::new(labels_out),
        ds_overhead: Arc::new(ds_overhead),
        allocatable: allocatable.map(Arc::new),
        ds_host_ports: Arc::new(ds_host_ports),
        used: Resources::new(),
        used_nodes: 0,
    }
}

/// Compatibility of a signature with a pool: taints, then requirements (the first satisfiable
/// affinity term, with the heaviest preferred term that can be met), and how far the pod's
/// preferences had to be relaxed for it (0: not at all).
fn compat(
    s: &Signature,
    pv: &PoolView,
    types: &[InstanceType],
    zones: &[String],
    offers: &[Vec<(f64, u8, usize)>],
) -> Result<Compat, String> {
    let name = &pv.pool.name;
    if let Some(t) = first_untolerated(&s.tolerations, &pv.pool.taints) {
        return Err(format!("pool {name}: taint {t} is not tolerated"));
    }
    // A PreferNoSchedule taint the pod does not tolerate is avoided while any pool without one
    // fits: tolerating it is Karpenter's last relaxation.
    let soft_taint = pv.pool.taints.iter().any(|t| {
        t.effect == crate::model::Effect::PreferNoSchedule && !s.tolerations.iter().any(|tol| tol.tolerates(t))
    });
    if pv.types.is_empty() {
        return Err(format!("pool {name}: no instance type matches the pool's requirements"));
    }
    if let Some((port, ds)) = pv.ds_host_ports.iter().find(|(p, _)| s.host_ports.contains(p)) {
        return Err(format!(
            "pool {name}: host port {port} is bound by daemonset {ds} on the pool's nodes"
        ));
    }
    let terms: Vec<&[Requirement]> = if s.terms.is_empty() {
        vec![&[]]
    } else {
        s.terms.iter().map(|t| t.as_slice()).collect()
    };
    // Karpenter's relaxation order: the heaviest preferred term is held as a requirement while
    // the required terms are tried in turn (they are ORed); from the last required term, the
    // preferred terms are dropped heaviest first, so each lighter one is tried on its own,
    // then none.
    let none = s.preferred.len();
    let states = (0..terms.len())
        .map(|r| (r, 0))
        .chain((1..=none).map(|q| (terms.len() - 1, q)));
    let tiers = terms.len() + none;
    let mut first_err = None;
    for (level, (r, q)) in states.enumerate() {
        let mut reqs: Vec<Requirement> = s.node_selector.clone();
        reqs.extend_from_slice(terms[r]);
        if let Some((_, p)) = s.preferred.get(q) {
            reqs.extend(p.iter().cloned());
        }
        match evaluate(&reqs, pv, types, zones, offers) {
            Ok(c) => {
                return Ok(Compat {
                    relaxed: level + if soft_taint { tiers } else { 0 },
                    ..c
                });
            }
            Err(e) if q == none => {
                first_err.get_or_insert(e);
            }
            Err(_) => {}
        }
    }
    Err(first_err.unwrap_or_else(|| format!("pool {name}: incompatible")))
}

fn evaluate(
    reqs: &[Requirement],
    pv: &PoolView,
    types: &[InstanceType],
    zones: &[String],
    offers: &[Vec<(f64, u8, usize)>],
) -> Result<Compat, String> {
    let name = &pv.pool.name;
    let mut zone_mask = pv.zones;
    let mut cts = pv.cts;
    let mut type_reqs: Vec<&Requirement> = Vec::new();
    for r in reqs {
        match r.key.as_str() {
            k if k == labels::ZONE => {
                zone_mask &= zones
                    .iter()
                    .enumerate()
                    .filter(|(_, z)| r.matches(Some(z)))
                    .fold(0u64, |a, (i, _)| a | (1 << i));
                if zone_mask == 0 {
                    return Err(format!("pool {name}: no allowed zone satisfies {r}"));
                }
            }
            k if k == labels::CAPACITY_TYPE => {
                cts &= CapacityType::ALL
                    .into_iter()
                    .filter(|c| r.matches(Some(c.as_str())))
                    .fold(0, |a, c| a | ct_bit(c));
                if cts == 0 {
                    return Err(format!(
                        "pool {name}: capacity type requirement {r} conflicts with the pool"
                    ));
                }
            }
            k if k == labels::HOSTNAME => {
                if matches!(r.operator, Operator::In | Operator::DoesNotExist) {
                    return Err(format!("pool {name}: {r} can only be met by an existing node"));
                }
            }
            k if labels::INSTANCE_TYPE_KEYS.contains(&k) || k == labels::REGION => type_reqs.push(r),
            _ => {
                if !r.matches(pv.labels.label(&r.key)) {
                    return Err(format!(
                        "pool {name}: node label requirement {r} is not met by the pool"
                    ));
                }
            }
        }
    }
    let mut set = pv.types.clone();
    if !type_reqs.is_empty() {
        for t in pv.types.iter() {
            if first_mismatch_refs(&type_reqs, &types[t].labels).is_some() {
                set.remove(t);
            }
        }
    }
    if set.is_empty() {
        // Name the requirement that empties the set on its own, when one does.
        let culprit = type_reqs
            .iter()
            .find(|r| pv.types.iter().all(|t| !r.matches(types[t].labels.label(&r.key))))
            .map(|r| r.to_string())
            .unwrap_or_else(|| {
                type_reqs
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(" and ")
            });
        return Err(format!("pool {name}: no instance type satisfies {culprit}"));
    }
    // Zones and capacity types where some compatible type is actually offered: topology pinning
    // must never send a pod to a zone where nothing it can use exists.
    let (mut offered_zones, mut offered_cts) = (0u64, 0u8);
    for t in set.iter() {
        for &(_, c, z) in &offers[t] {
            if cts & c != 0 && zone_mask & (1 << z) != 0 {
                offered_zones |= 1 << z;
                offered_cts |= c;
            }
        }
    }
    if offered_zones == 0 {
        return Err(format!(
            "pool {name}: no compatible instance type is offered in the allowed zones and capacity types"
        ));
    }
    let (zone_mask, cts) = (offered_zones, offered_cts);
    Ok(Compat {
        types: set,
        zones: zone_mask,
        cts,
        relaxed: 0,
    })
}

fn first_mismatch_refs<'r>(reqs: &[&'r Requirement], labels: &BTreeMap<String, String>) -> Option<&'r Requirement> {
    reqs.iter().find(|r| !r.matches(labels.label(&r.key))).copied()
}

/// The values a type has for a requirement's key, as minValues counts them: its label, or for
/// zone and capacity type (which a type has per offering) those of its available offerings, each
/// only where the requirement admits it (an offering in a zone the pool does not allow counts for
/// nothing).
pub(super) fn type_values<'a>(t: &'a InstanceType, r: &Requirement) -> Vec<&'a str> {
    let values: Vec<&'a str> = match r.key.as_str() {
        labels::ZONE => t
            .offerings
            .iter()
            .filter(|o| o.available)
            .map(|o| o.zone.as_str())
            .collect(),
        labels::CAPACITY_TYPE => t
            .offerings
            .iter()
            .filter(|o| o.available)
            .map(|o| o.capacity_type.as_str())
            .collect(),
        key => t.labels.label(key).into_iter().collect(),
    };
    values.into_iter().filter(|v| r.matches(Some(v))).collect()
}
