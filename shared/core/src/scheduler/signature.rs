//! A pod's node requirements (its signature, shared by every pod that asks the same) and their
//! compatibility with each pool: taints, requirements, Karpenter's relaxation order of preferred
//! node affinity, and the types, zones and capacity types that remain.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::catalogue::{CapacityType, InstanceType};
use crate::labels;
use crate::model::{HostPort, Pod, Toleration, first_untolerated};
use crate::requirements::{LabelSource, Operator, Requirement};

use super::pools::{PoolView, ct_bit};
use super::typeset::TypeSet;

/// A pod's node requirements, shared by every pod with the same selectors and tolerations.
pub struct Signature {
    pub node_selector: Vec<Requirement>,
    pub terms: Vec<Vec<Requirement>>,
    pub preferred: Vec<(i32, Vec<Requirement>)>,
    /// Every preferred term given up (the pod's topology spread could not be kept in the domains
    /// its preferences allow): compat starts at the state without them, and reports it relaxed.
    pub preferred_dropped: bool,
    pub tolerations: Vec<Toleration>,
    pub host_ports: Vec<HostPort>,
    /// Per pool (in `Prepared::pools` order): the compatible offerings, or why there are none.
    /// Shared with the templates' cache.
    pub compat: PoolCompat,
}

impl Signature {
    /// The same requirements, compatibility not yet computed.
    pub(in crate::scheduler) fn unresolved_copy(&self) -> Signature {
        Signature {
            node_selector: self.node_selector.clone(),
            terms: self.terms.clone(),
            preferred: self.preferred.clone(),
            preferred_dropped: self.preferred_dropped,
            tolerations: self.tolerations.clone(),
            host_ports: self.host_ports.clone(),
            compat: Arc::default(),
        }
    }
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

pub(in crate::scheduler) fn selector_reqs(sel: &BTreeMap<String, String>) -> Vec<Requirement> {
    sel.iter()
        .map(|(k, v)| Requirement::new(k, Operator::In, &[v.as_str()]))
        .collect()
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub(in crate::scheduler) struct SigKey {
    node_selector: BTreeMap<String, String>,
    terms: Vec<Vec<Requirement>>,
    preferred: Vec<crate::model::PreferredTerm>,
    tolerations: Vec<Toleration>,
    host_ports: Vec<HostPort>,
}

impl SigKey {
    pub(in crate::scheduler) fn of(p: &Pod) -> Self {
        SigKey {
            node_selector: p.node_selector.clone(),
            terms: p.node_affinity.clone(),
            preferred: p.preferred_node_affinity.clone(),
            tolerations: p.tolerations.clone(),
            host_ports: p.host_ports.clone(),
        }
    }
}

/// Compatibility of a signature with a pool: taints, then requirements (the first satisfiable
/// affinity term, with the heaviest preferred term that can be met), and how far the pod's
/// preferences had to be relaxed for it (0: not at all).
pub(in crate::scheduler) fn compat(
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
    // Types whose nodes run a DaemonSet binding a host port the pod asks for.
    let mut blocked: Option<TypeSet> = None;
    for (port, ds, on) in pv.ds_host_ports.iter().filter(|(p, _, _)| s.host_ports.contains(p)) {
        let b = blocked.get_or_insert_with(|| TypeSet::empty(types.len()));
        b.union_with(on);
        if pv.types.iter().all(|t| b.contains(t)) {
            return Err(format!(
                "pool {name}: host port {port} is bound by daemonset {ds} on the pool's nodes"
            ));
        }
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
    let tiers = terms.len() + none;
    let states: Vec<(usize, (usize, usize))> = if s.preferred_dropped {
        // Every required term without any preference, each reported at the last level.
        (0..terms.len()).map(|r| (tiers - 1, (r, none))).collect()
    } else {
        (0..terms.len())
            .map(|r| (r, 0))
            .chain((1..=none).map(|q| (terms.len() - 1, q)))
            .enumerate()
            .collect()
    };
    let mut first_err = None;
    for (level, (r, q)) in states {
        let mut reqs: Vec<Requirement> = s.node_selector.clone();
        reqs.extend_from_slice(terms[r]);
        if let Some((_, p)) = s.preferred.get(q) {
            reqs.extend(p.iter().cloned());
        }
        // A view that differs from the primary on a key where the pod would take the primary's
        // value is not for this pod: per key, the first value serves whoever admits it.
        if let Some(primary) = &pv.primary
            && let Some((k, v)) = primary.iter().find(|(k, v)| {
                pv.labels.get(k) != Some(v) && reqs.iter().filter(|r| &r.key == k).all(|r| r.matches(Some(v)))
            })
        {
            if q == none {
                first_err.get_or_insert(format!("pool {name}: the pod runs on the pool's {k}={v} nodes"));
            }
            continue;
        }
        match evaluate(&reqs, pv, blocked.as_ref(), types, zones, offers) {
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

/// `blocked`: types the pod cannot use in this pool whatever it requires (a DaemonSet there
/// binds one of its host ports).
pub(in crate::scheduler) fn evaluate(
    reqs: &[Requirement],
    pv: &PoolView,
    blocked: Option<&TypeSet>,
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
    if let Some(b) = blocked {
        set.subtract(b);
    }
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

pub(in crate::scheduler) fn first_mismatch_refs<'r>(
    reqs: &[&'r Requirement],
    labels: &BTreeMap<String, String>,
) -> Option<&'r Requirement> {
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
