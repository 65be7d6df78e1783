//! Required pod affinity on the hostname: pods that must share one node.
//!
//! Pods linked by such terms (a carrier and every pending pod its terms select, transitively)
//! form a [`Gang`]. A gang whose terms select pods already running is anchored to the nodes
//! that run them: its pods go there or nowhere, as Kubernetes allows no other node. A gang with
//! no running match goes onto one new claim sized for all of it ([`place`]), whose spare room the
//! packer then fills with other pods.

use std::collections::{BTreeMap, HashMap};

use crate::labels;
use crate::model::{Pod, PodAffinityTerm};
use crate::resources::Resources;

use super::super::claim::{Claim, apply_limits, best_price, headroom, join, new_claim};
use super::super::prepare::Prepared;

/// Pods that must share a node.
#[derive(Debug, Clone, Default)]
pub struct Gang {
    /// Existing nodes (indices into `Prepared::nodes`) running a pod every anchored term
    /// selects; empty when no term selects a running pod.
    pub anchors: Vec<usize>,
    /// Whether some term selects a running pod (then only `anchors` may take the gang).
    pub anchored: bool,
}

fn hostname_terms(p: &Pod) -> impl Iterator<Item = &PodAffinityTerm> {
    p.pod_affinity.iter().filter(|t| t.topology_key == labels::HOSTNAME)
}

/// The gangs of a batch.
pub struct Gangs {
    /// Each pending pod's gang (None: not linked by hostname affinity).
    pub of: Vec<Option<usize>>,
    pub gangs: Vec<Gang>,
    /// Pods whose hostname affinity no pod, pending or running, can meet, with the reason.
    pub failed: Vec<(usize, String)>,
}

/// Groups the pending pods linked by hostname affinity; marks in `skip` those that cannot be met.
pub fn gangs(prep: &Prepared, skip: &mut [bool]) -> Gangs {
    let pods = prep.input.pods;
    let mut failed = Vec::new();
    if !pods.iter().any(|p| hostname_terms(p).next().is_some()) {
        return Gangs {
            of: vec![None; pods.len()],
            gangs: Vec::new(),
            failed,
        };
    }
    // Classes of pods with identical namespace and labels (a term selects a whole class), each
    // with its pending pods in order.
    let mut class_of: HashMap<(&str, &BTreeMap<String, String>), usize> = HashMap::new();
    let mut class_pods: Vec<Vec<usize>> = Vec::new();
    for (i, p) in pods.iter().enumerate() {
        if skip[i] {
            continue;
        }
        let c = *class_of.entry((p.namespace.as_str(), &p.labels)).or_insert_with(|| {
            class_pods.push(Vec::new());
            class_pods.len() - 1
        });
        class_pods[c].push(i);
    }
    // Union-find over pods: a carrier joins the first other pending pod its term selects (it
    // needs one such pod on its node, not all of them; carriers of a self-affine group all pick
    // the same first pod, and so share one node).
    let mut parent: Vec<usize> = (0..pods.len()).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let mut involved = vec![false; pods.len()];
    // Per carrier: the existing nodes its terms allow (None: no term selects a running pod).
    let mut anchors: Vec<Option<Vec<usize>>> = vec![None; pods.len()];
    for (i, p) in pods.iter().enumerate() {
        if skip[i] {
            continue;
        }
        for t in hostname_terms(p) {
            let first = class_pods
                .iter()
                .filter(|members| {
                    let q = &pods[members[0]];
                    t.selects(&p.namespace, &q.namespace, &q.labels)
                })
                .flat_map(|members| members.iter().copied())
                .find(|&j| j != i);
            let running: Vec<usize> = prep
                .input
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.pods.iter().any(|q| t.selects(&p.namespace, &q.namespace, &q.labels)))
                .map(|(n, _)| n)
                .collect();
            let selects_itself = t.selects(&p.namespace, &p.namespace, &p.labels);
            if !running.is_empty() {
                involved[i] = true;
                anchors[i] = Some(match anchors[i].take() {
                    None => running,
                    Some(have) => have.into_iter().filter(|n| running.contains(n)).collect(),
                });
            } else if let Some(j) = first {
                involved[i] = true;
                involved[j] = true;
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                parent[a] = b;
            } else if selects_itself {
                // The first pod of a self-affine group may go anywhere (Kubernetes admits it).
                involved[i] = true;
            } else {
                skip[i] = true;
                failed.push((
                    i,
                    "required pod affinity on the hostname cannot be met: no pod, pending or running, matches its selector"
                        .to_string(),
                ));
            }
        }
    }
    let mut gang_of_root: HashMap<usize, usize> = HashMap::new();
    let mut out: Vec<Gang> = Vec::new();
    let mut gang_of = vec![None; pods.len()];
    for i in 0..pods.len() {
        if !involved[i] || skip[i] {
            continue;
        }
        let root = find(&mut parent, i);
        let g = *gang_of_root.entry(root).or_insert_with(|| {
            out.push(Gang::default());
            out.len() - 1
        });
        gang_of[i] = Some(g);
        if let Some(a) = &anchors[i] {
            let gang = &mut out[g];
            gang.anchors = if gang.anchored {
                gang.anchors.iter().copied().filter(|n| a.contains(n)).collect()
            } else {
                a.clone()
            };
            gang.anchored = true;
        }
    }
    Gangs {
        of: gang_of,
        gangs: out,
        failed,
    }
}

/// Places every gang before the packer runs: onto its anchor nodes, or onto one new claim of the
/// cheapest type (highest-weight pool first) that holds all of it. Pods that cannot be placed so
/// are unschedulable with the reason; the new claims are returned for the packer to fill.
pub(in crate::scheduler) fn place(
    prep: &mut Prepared,
    claims: &[Claim],
    bindings: &mut Vec<(usize, usize)>,
    failed: &mut Vec<(usize, String)>,
) -> Vec<Claim> {
    let mut opened: Vec<Claim> = Vec::new();
    for g in 0..prep.gangs.len() {
        let members: Vec<usize> = (0..prep.buckets.len())
            .filter(|&b| prep.buckets[b].gang == Some(g) && prep.buckets[b].remaining() > 0)
            .collect();
        if members.is_empty() {
            continue;
        }
        if prep.gangs[g].anchored {
            place_on_anchors(prep, g, &members, bindings);
            for &b in &members {
                prep.buckets[b].fail_rest(
                    "required pod affinity on the hostname cannot be met: the node running the pods it selects does not admit it or has no room",
                    failed,
                );
            }
            continue;
        }
        let all = claims.iter().chain(opened.iter());
        match choose(prep, &members, all) {
            Ok((pi, t, zones, cts)) => {
                let Ok(mut claim) = new_claim(prep, members[0], pi, t, zones, cts) else {
                    continue;
                };
                for &b in &members {
                    join(prep, &mut claim, b, u64::MAX);
                }
                for &b in &members {
                    prep.buckets[b].fail_rest(
                        "required pod affinity on the hostname cannot be met: its node cannot hold the whole group (hostname spread, anti-affinity or ports keep some apart)",
                        failed,
                    );
                }
                if !claim.pods.is_empty() {
                    opened.push(claim);
                }
            }
            Err(reason) => {
                for &b in &members {
                    prep.buckets[b].fail_rest(&reason, failed);
                }
            }
        }
    }
    opened
}

fn place_on_anchors(prep: &mut Prepared, g: usize, members: &[usize], bindings: &mut Vec<(usize, usize)>) {
    let anchors = prep.gangs[g].anchors.clone();
    for &b in members {
        for &n in &anchors {
            if !prep.fits_node(&prep.buckets[b], &prep.nodes[n]) {
                continue;
            }
            let bucket = &prep.buckets[b];
            let node = &prep.nodes[n];
            let k = node.free.times_fits(&bucket.req).min(bucket.remaining() as u64);
            let k = node.host.max_add(bucket, k);
            if k == 0 {
                continue;
            }
            let pods: Vec<usize> = bucket.pods[bucket.next..bucket.next + k as usize].to_vec();
            let mut add = Resources::new();
            add.add_times(&bucket.req, k);
            let node = &mut prep.nodes[n];
            node.free.saturating_sub(&add);
            node.host.add(&prep.buckets[b], k as u32);
            prep.buckets[b].next += k as usize;
            bindings.extend(pods.into_iter().map(|p| (p, n)));
        }
    }
}

/// The pool, type, zones and capacity types of the cheapest new node that holds every pod of
/// the gang's buckets: the first pool (by weight) that has one.
fn choose<'c>(
    prep: &Prepared,
    members: &[usize],
    claims: impl Iterator<Item = &'c Claim> + Clone,
) -> Result<(usize, usize, u64, u8), String> {
    let mut total = Resources::new();
    for &b in members {
        let bucket = &prep.buckets[b];
        total.add_times(&bucket.req, bucket.remaining() as u64);
    }
    let mut reasons: Vec<String> = Vec::new();
    let mut pools: Vec<usize> = (0..prep.pools.len()).collect();
    pools.sort_by_key(|&pi| (std::cmp::Reverse(prep.pools[pi].pool.weight), pi));
    for pi in pools {
        let mut set = prep.pools[pi].types.clone();
        let (mut zones, mut cts) = (u64::MAX, u8::MAX);
        let mut ok = true;
        for &b in members {
            let bucket = &prep.buckets[b];
            match &prep.sigs[bucket.sig].compat[pi] {
                Ok(c) => {
                    set.intersect_with(&c.types);
                    zones &= c.zones & bucket.zones;
                    cts &= c.cts & bucket.cts;
                }
                Err(e) => {
                    reasons.push(e.clone());
                    ok = false;
                    break;
                }
            }
        }
        if !ok || zones == 0 || cts == 0 {
            continue;
        }
        let room = headroom(prep, claims.clone(), pi);
        if let Err(reason) = apply_limits(prep, pi, room.as_ref(), &mut set) {
            reasons.push(reason);
            continue;
        }
        let best = set
            .iter()
            .filter(|&t| total.fits_in(&prep.capacity(pi, t)))
            .filter_map(|t| best_price(prep, t, zones, cts).map(|(price, _, _)| (price, t)))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        if let Some((_, t)) = best {
            return Ok((pi, t, zones, cts));
        }
        reasons.push(format!(
            "pool {}: no instance type holds the {} pods that must share a node ({total})",
            prep.pools[pi].pool.name,
            members.iter().map(|&b| prep.buckets[b].remaining()).sum::<usize>()
        ));
    }
    Err(format!(
        "required pod affinity on the hostname cannot be met: {}",
        if reasons.is_empty() {
            "no NodePool is configured".to_string()
        } else {
            reasons.join("; ")
        }
    ))
}
