//! Pools resolved against the instance types: each pool's types, zones, capacity types, labels,
//! daemonset overhead and allocatable (`PoolView`), the offerings by zone index, and the
//! templates that keep all of it between batches with the same pools, types and daemonsets.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::catalogue::{CapacityType, InstanceType};
use crate::labels;
use crate::model::{HostPort, Pod, first_untolerated};
use crate::nodepool::NodePool;
use crate::requirements::{LabelSource, Layered, Operator, Requirement};
use crate::resources::{Resource, Resources};

use super::Input;
use super::signature::{PoolCompat, SigKey};
use super::typeset::TypeSet;

/// Capacity-type bit masks.
pub fn ct_bit(ct: CapacityType) -> u8 {
    match ct {
        CapacityType::Reserved => 1,
        CapacityType::Spot => 2,
        CapacityType::OnDemand => 4,
    }
}

pub(in crate::scheduler) fn ct_rank(bit: u8) -> u8 {
    bit
}

pub(in crate::scheduler) fn ct_from_bit(bit: u8) -> CapacityType {
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
    /// Host ports the daemonsets that run on the pool's nodes bind, with the (first) daemonset's
    /// name and the types whose nodes it runs on: a pod asking for one cannot run on a new node of
    /// those types.
    pub ds_host_ports: Arc<Vec<(HostPort, String, TypeSet)>>,
    /// Set on a view of a pool split by a multi-valued custom requirement (or tenancy) other than
    /// its first (primary) view: the primary's values. On each split key a pod that admits the
    /// primary's value takes it, so the other views serve only pods that need their values (and
    /// do not multiply the packer's work).
    pub primary: Option<Arc<Vec<(String, String)>>>,
    /// Capacity already used by the pool's nodes (for limits; the same in every view of a pool).
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

/// The sorted zone names of `types`' offerings and of `nodes` (at most 64: zones are bit masks).
pub(in crate::scheduler) fn zone_names<'n>(types: &'n [InstanceType], nodes: &'n [crate::model::Node]) -> Vec<&'n str> {
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

/// Each type's available offerings: (price, capacity-type bit, zone index), best first.
pub(in crate::scheduler) type TypeOffers = Vec<Vec<(f64, u8, usize)>>;

/// Offerings by zone index: every later check is integer masks.
pub(in crate::scheduler) fn offers_of(types: &[InstanceType], zones: &[String]) -> TypeOffers {
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
pub(in crate::scheduler) fn offer_order(a: &(f64, u8, usize), b: &(f64, u8, usize)) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0)
        .then(ct_rank(a.1).cmp(&ct_rank(b.1)))
        .then(a.2.cmp(&b.2))
}

/// Whether any of `pods` says something about tenancy (its node selector, required or preferred
/// node affinity): only then do pools get a dedicated-tenancy view, which every other batch
/// would carry for nothing.
pub(in crate::scheduler) fn wants_dedicated(pods: &[Pod]) -> bool {
    let key = labels::INSTANCE_TENANCY;
    pods.iter().any(|p| {
        p.node_selector.contains_key(key)
            || p.node_affinity.iter().flatten().any(|r| r.key == key)
            || p.preferred_node_affinity
                .iter()
                .flat_map(|t| &t.requirements)
                .any(|r| r.key == key)
    })
}

/// Pool views, highest weight first, with nothing used yet. `dedicated`: whether pools that
/// allow both tenancies get a dedicated view ([`wants_dedicated`]).
pub(in crate::scheduler) fn pool_views<'a>(
    pools: &'a [NodePool],
    types: &[InstanceType],
    zones: &[String],
    offers: &[Vec<(f64, u8, usize)>],
    daemonsets: &[Pod],
    dedicated: bool,
) -> Vec<PoolView<'a>> {
    let mut pool_refs: Vec<&NodePool> = pools.iter().collect();
    pool_refs.sort_by(|a, b| b.weight.cmp(&a.weight).then(a.name.cmp(&b.name)));
    let mut out = Vec::with_capacity(pool_refs.len());
    for p in pool_refs {
        let combos = split_combinations(p, dedicated);
        let primary = combos.first().map(|c| Arc::new(c.clone()));
        for (i, combo) in combos.iter().enumerate() {
            let mut v = pool_view(p, types, zones, offers, daemonsets, combo);
            if i > 0 {
                v.primary = primary.clone();
            }
            out.push(v);
        }
    }
    out
}

/// The most views one pool is split into (the product of its multi-valued custom keys' value
/// counts); keys beyond it stay unsplit, and pods that require one of their values are refused.
pub const MAX_VIEWS_PER_POOL: usize = 16;

/// The label combinations a pool's nodes may carry for its custom keys that admit several `In`
/// values (`team In [a, b]`): Karpenter narrows such a requirement to what the pod asks and
/// labels the node with the value, so each value is a view of its own. One empty combination
/// when there is nothing to split.
fn split_combinations(p: &NodePool, dedicated: bool) -> Vec<Vec<(String, String)>> {
    let mut by_key: BTreeMap<&str, Vec<&Requirement>> = BTreeMap::new();
    for r in &p.requirements {
        if !labels::is_well_known(&r.key) && !labels::is_restricted(&r.key) && !p.labels.contains_key(&r.key) {
            by_key.entry(r.key.as_str()).or_default().push(r);
        }
    }
    // Tenancy is chosen per claim like such a value, the default first (the primary view), and
    // dedicated only for pods that require it.
    let mut tenancies: Vec<&str> = match p.labels.get(labels::INSTANCE_TENANCY) {
        Some(v) => vec![v.as_str()],
        None => labels::TENANCIES
            .iter()
            .copied()
            .filter(|v| {
                p.requirements
                    .iter()
                    .filter(|r| r.key == labels::INSTANCE_TENANCY)
                    .all(|r| r.matches(Some(v)))
            })
            .collect(),
    };
    if !dedicated && tenancies.len() > 1 {
        // No pod of the batch asks for it: the default serves them all.
        tenancies.truncate(1);
    }
    let mut combos: Vec<Vec<(String, String)>> = if tenancies.is_empty() {
        vec![Vec::new()]
    } else {
        tenancies
            .iter()
            .map(|v| vec![(labels::INSTANCE_TENANCY.to_string(), (*v).to_string())])
            .collect()
    };
    for (key, reqs) in by_key {
        let Some(values) = crate::registration::admitted_values(&reqs) else {
            continue;
        };
        if values.len() < 2 || combos.len() * values.len() > MAX_VIEWS_PER_POOL {
            continue;
        }
        combos = combos
            .iter()
            .flat_map(|c| {
                values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push((key.to_string(), (*v).clone()));
                    c
                })
            })
            .collect();
    }
    combos
}

/// What preparation derives from the instance types alone: zone names, offerings by zone index
/// and types by name. Build it once per catalogue and hand it to every plan (the consolidation
/// function plans every minute over the same catalogue).
#[derive(Clone)]
pub struct TypeIndex {
    /// Address and length of the slice it was built from: an index is only used for that slice.
    source: (usize, usize),
    pub(in crate::scheduler) zones: Vec<String>,
    pub(in crate::scheduler) offers: Arc<TypeOffers>,
    pub(in crate::scheduler) by_name: HashMap<String, usize>,
}

/// Instance types by name; the first of a name wins, as a linear search would find it.
pub(in crate::scheduler) fn index_by_name(types: &[InstanceType]) -> HashMap<&str, usize> {
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
    pub(in crate::scheduler) index: Cow<'a, TypeIndex>,
    pub(in crate::scheduler) views: Vec<PoolView<'a>>,
    /// Each signature's compatibility with the pools, as first computed: it depends on nothing
    /// but the signature and the templates, and a cluster has few signatures.
    pub(in crate::scheduler) compat: RefCell<HashMap<SigKey, PoolCompat>>,
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
        let views = pool_views(pools, types, &index.zones, &index.offers, daemonsets, false);
        Templates {
            types,
            pools,
            daemonsets,
            index,
            views,
            compat: RefCell::default(),
        }
    }

    /// The templates a preparation of `input` already derived (its zones, offerings and pool
    /// views, before any usage was counted on them), so that preparing the same batch again
    /// (the small-batch search and its replays prepare it up to three more times) skips
    /// matching every pool against the catalogue. The views carry no usage: each preparation
    /// counts its own input's.
    pub(in crate::scheduler) fn of_batch(
        input: &Input<'a>,
        zones: &[String],
        offers: &Arc<TypeOffers>,
        views: &[PoolView<'a>],
    ) -> Self {
        let types = input.instance_types;
        let by_name = if input.nodes.is_empty() {
            // Only existing nodes are looked up by type name.
            HashMap::new()
        } else {
            index_by_name(types)
                .into_iter()
                .map(|(name, i)| (name.to_string(), i))
                .collect()
        };
        let views = views
            .iter()
            .map(|pv| PoolView {
                used: Resources::default(),
                used_nodes: 0,
                ..pv.clone()
            })
            .collect();
        Templates {
            types,
            pools: input.pools,
            daemonsets: input.daemonsets,
            index: Cow::Owned(TypeIndex {
                source: (types.as_ptr() as usize, types.len()),
                zones: zones.to_vec(),
                offers: Arc::clone(offers),
                by_name,
            }),
            views,
            compat: RefCell::default(),
        }
    }

    /// Whether these templates were built from exactly `input`'s pools, types and daemonsets
    /// (the same slices: borrowed for 'a, so they cannot have changed), and `input`'s nodes add no
    /// zone the offerings lack (then the zones are the same too).
    pub(in crate::scheduler) fn fits(&self, input: &Input<'_>) -> bool {
        std::ptr::eq(self.types, input.instance_types)
            && std::ptr::eq(self.pools, input.pools)
            && std::ptr::eq(self.daemonsets, input.daemonsets)
            && !wants_dedicated(input.pods)
            && self.index.zones.len() < 64
            && input.nodes.iter().all(|n| self.index.zones.contains(&n.zone))
    }
}

pub(in crate::scheduler) fn pool_view<'a>(
    p: &'a NodePool,
    types: &[InstanceType],
    zones: &[String],
    offers: &[Vec<(f64, u8, usize)>],
    daemonsets: &[Pod],
    split: &[(String, String)],
) -> PoolView<'a> {
    // What registration writes on every node of the pool (crate::registration), and the values
    // of this view's split keys.
    let mut labels_out = crate::registration::pool_labels(p);
    labels_out.extend(split.iter().cloned());
    // A template label on a well-known key constrains the pool as a requirement `In [value]`
    // would (Karpenter adds the template labels to the NodePool's requirements): a label
    // `topology.kubernetes.io/zone: us-east-1a` leaves the pool that one zone.
    let label_reqs: Vec<Requirement> = p
        .labels
        .iter()
        .filter(|(k, _)| labels::is_well_known(k))
        .map(|(k, v)| Requirement::new(k, Operator::In, &[v.as_str()]))
        .collect();
    // A zone-ID requirement is read as one on the zones with those IDs.
    let mentions_zone_id = p
        .requirements
        .iter()
        .chain(&label_reqs)
        .any(|r| r.key == labels::ZONE_ID);
    let zone_id_reqs: Vec<Requirement> = if mentions_zone_id {
        let ids = crate::catalogue::zone_ids::of(types);
        p.requirements
            .iter()
            .chain(&label_reqs)
            .filter_map(|r| crate::catalogue::zone_ids::as_zone_requirement(r, &ids))
            .collect()
    } else {
        Vec::new()
    };
    let reqs: Vec<&Requirement> = p
        .requirements
        .iter()
        .chain(&label_reqs)
        .filter(|r| r.key != labels::ZONE_ID)
        .chain(&zone_id_reqs)
        .collect();
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
    let mut ds_host_ports: Vec<(HostPort, String, TypeSet)> = Vec::new();
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
        let type_zones: Vec<&str> = offers[i]
            .iter()
            .filter(|&&(_, c, z)| cts & c != 0 && zone_mask & (1 << z) != 0)
            .map(|&(_, _, z)| zones[z].as_str())
            .collect();
        for ds in daemonsets {
            if ds.resource_claims || !daemonset_runs_on(ds, &p.taints, &node_labels, &type_zones, cts) {
                continue;
            }
            let mut r = ds.requests.clone();
            r.set(Resource::Pods, 1);
            ds_overhead[i].add(&r);
            for port in &ds.host_ports {
                let at = match ds_host_ports.iter().position(|(p, _, _)| p == port) {
                    Some(at) => at,
                    None => {
                        let name = format!("{}/{}", ds.namespace, ds.name);
                        ds_host_ports.push((port.clone(), name, TypeSet::empty(types.len())));
                        ds_host_ports.len() - 1
                    }
                };
                ds_host_ports[at].2.insert(i);
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
        primary: None,
        used: Resources::new(),
        used_nodes: 0,
    }
}

/// The labels a node carries once Karpenter's lifecycle has run on it (Karpenter's
/// `karpenter.sh/registered` and `karpenter.sh/initialized`): a DaemonSet may wait for them.
const LIFECYCLE_LABELS: &[&str] = &[
    crate::registration::REGISTERED_LABEL,
    crate::registration::INITIALIZED_LABEL,
];

/// Whether a DaemonSet's pods will run on a new node of a pool with these taints and labels,
/// offered in `zones` and capacity types `cts`, as Karpenter decides it (`isDaemonPodCompatible`):
/// the taints tolerated, the node selector and one required node-affinity term met. A zone or
/// capacity-type requirement is met when any of the node's possible values meets it (so a
/// DaemonSet pinned to one zone is counted on every node that may land there); the lifecycle
/// labels count as set; any other well-known label the node does not define yet is allowed.
fn daemonset_runs_on(
    ds: &Pod,
    taints: &[crate::model::Taint],
    node: &impl LabelSource,
    zones: &[&str],
    cts: u8,
) -> bool {
    // (PreferNoSchedule taints are not counted: a DaemonSet does not respect the preference.)
    if first_untolerated(&ds.tolerations, taints).is_some() {
        return false;
    }
    let met = |r: &Requirement| match r.key.as_str() {
        labels::ZONE => zones.iter().any(|z| r.matches(Some(z))),
        labels::CAPACITY_TYPE => CapacityType::ALL
            .into_iter()
            .any(|c| cts & ct_bit(c) != 0 && r.matches(Some(c.as_str()))),
        key => match node.label(key) {
            Some(v) => r.matches(Some(v)),
            None if LIFECYCLE_LABELS.contains(&key) => r.matches(Some("true")),
            None if labels::is_well_known(key) => true,
            None => r.matches(None),
        },
    };
    let selector_ok = ds
        .node_selector
        .iter()
        .all(|(k, v)| met(&Requirement::new(k, Operator::In, &[v.as_str()])));
    selector_ok && (ds.node_affinity.is_empty() || ds.node_affinity.iter().any(|term| term.iter().all(met)))
}
