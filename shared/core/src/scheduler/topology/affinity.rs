//! Required pod affinity and anti-affinity on any key but the hostname, decided before packing
//! by pinning each pod involved to one domain of the key.

use std::collections::{BTreeMap, HashMap};

use crate::model::{Pod, PodAffinityTerm};

use super::super::prepare::Prepared;
use super::{Domains, Mask};

fn terms<'p>(p: &'p Pod, dom: &Domains, anti: bool) -> impl Iterator<Item = &'p PodAffinityTerm> {
    let list = if anti { &p.pod_anti_affinity } else { &p.pod_affinity };
    let key = dom.key.name().to_string();
    list.iter().filter(move |t| t.topology_key == key)
}

/// The domain of the first existing node running a pod that term `t` of pod `p` selects.
fn running_match(prep: &Prepared, dom: &Domains, t: &PodAffinityTerm, p: &Pod) -> Option<Option<usize>> {
    prep.input
        .nodes
        .iter()
        .position(|n| n.pods.iter().any(|q| t.selects(&p.namespace, &q.namespace, &q.labels)))
        .map(|n| dom.of_node(prep, n))
}

/// Required pod affinity: every pod linked by such a term (the carrier and the pods its term
/// selects, transitively) lands in one domain. A running pod the term selects fixes the domain;
/// a term no pod matches, pending or running, cannot be met (Kubernetes lets the first pod of a
/// group in only when it matches its own term; a term without a selector matches none).
pub fn pin_affinity(
    prep: &Prepared,
    dom: &Domains,
    eligible: &[Mask],
    pin: &mut [Option<usize>],
    skip: &mut [bool],
) -> Vec<(usize, String)> {
    let pods = prep.input.pods;
    let mut failed = Vec::new();
    if !pods.iter().any(|p| terms(p, dom, false).next().is_some()) {
        return failed;
    }
    let what = dom.key.describe();
    // Classes of pods with identical namespace and labels; union-find over classes.
    let mut class_of: HashMap<(&str, &BTreeMap<String, String>), usize> = HashMap::new();
    let mut class_rep: Vec<usize> = Vec::new();
    let pod_class: Vec<usize> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            *class_of.entry((p.namespace.as_str(), &p.labels)).or_insert_with(|| {
                class_rep.push(i);
                class_rep.len() - 1
            })
        })
        .collect();
    let mut parent: Vec<usize> = (0..class_rep.len()).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let mut involved = vec![false; class_rep.len()];
    let mut existing: Vec<Option<usize>> = vec![None; class_rep.len()];
    let mut unmatched = vec![false; pods.len()];
    for (i, p) in pods.iter().enumerate() {
        for t in terms(p, dom, false) {
            involved[pod_class[i]] = true;
            let mut matched = false;
            for (c, rep) in class_rep.iter().enumerate() {
                let q = &pods[*rep];
                if t.selects(&p.namespace, &q.namespace, &q.labels) {
                    matched = true;
                    involved[c] = true;
                    let (a, b) = (find(&mut parent, pod_class[i]), find(&mut parent, c));
                    parent[a] = b;
                }
            }
            let running = running_match(prep, dom, t, p);
            if let Some(Some(d)) = running {
                existing[pod_class[i]] = Some(d);
            }
            if !matched && running.is_none() {
                unmatched[i] = true;
            }
        }
    }
    for (i, none) in unmatched.iter().enumerate() {
        if *none && !skip[i] {
            skip[i] = true;
            failed.push((
                i,
                format!(
                    "required pod affinity on {what} cannot be met: no pod, pending or running, matches its selector"
                ),
            ));
        }
    }
    let mut comp_domain: BTreeMap<usize, Option<usize>> = BTreeMap::new();
    let mut comp_eligible: BTreeMap<usize, Option<Mask>> = BTreeMap::new();
    for i in 0..pods.len() {
        let c = pod_class[i];
        if !involved[c] || skip[i] {
            continue;
        }
        let root = find(&mut parent, c);
        let e = comp_eligible.entry(root).or_insert(None);
        *e = Some(match e.take() {
            None => eligible[i].clone(),
            Some(m) => m.and(&eligible[i]),
        });
        if let Some(d) = existing[c] {
            comp_domain.insert(root, Some(d));
        }
    }
    for (root, mask) in &comp_eligible {
        comp_domain
            .entry(*root)
            .or_insert_with(|| mask.as_ref().and_then(Mask::first));
    }
    for i in 0..pods.len() {
        let c = pod_class[i];
        if !involved[c] || skip[i] {
            continue;
        }
        let root = find(&mut parent, c);
        match comp_domain.get(&root).copied().flatten() {
            Some(d) if eligible[i].has(d) => pin[i] = Some(d),
            _ => {
                skip[i] = true;
                failed.push((
                    i,
                    format!("required pod affinity on {what} cannot be met: the linked pods share no eligible domain"),
                ));
            }
        }
    }
    failed
}

/// Required pod anti-affinity: a pod goes to no domain that holds a pod its term selects,
/// running or pending, nor to one that holds a pod whose own term selects it (Kubernetes checks
/// both directions). Pending pods that exclude each other are dealt to different domains, the
/// most constrained first, the emptiest domain first; a pod left with none is unschedulable with
/// the reason.
pub fn pin_anti_affinity(
    prep: &Prepared,
    dom: &Domains,
    eligible: &[Mask],
    pin: &mut [Option<usize>],
    skip: &mut [bool],
) -> Vec<(usize, String)> {
    let pods = prep.input.pods;
    let nodes = prep.input.nodes;
    let node_domain: Vec<Option<usize>> = (0..nodes.len()).map(|n| dom.of_node(prep, n)).collect();
    let existing_carriers: Vec<(&PodAffinityTerm, &str, usize)> = nodes
        .iter()
        .enumerate()
        .flat_map(|(n, node)| node.pods.iter().map(move |q| (n, q)))
        .flat_map(|(n, q)| {
            let d = node_domain[n];
            terms(q, dom, true).filter_map(move |t| Some((t, q.namespace.as_str(), d?)))
        })
        .collect();
    if existing_carriers.is_empty() && !pods.iter().any(|p| terms(p, dom, true).next().is_some()) {
        return Vec::new();
    }
    let what = dom.key.describe();
    // Running pods by class (namespace, labels): the domains each class is in.
    let mut running_classes: HashMap<(&str, &BTreeMap<String, String>), Mask> = HashMap::new();
    for (n, node) in nodes.iter().enumerate() {
        if let Some(d) = node_domain[n] {
            for q in &node.pods {
                running_classes
                    .entry((q.namespace.as_str(), &q.labels))
                    .or_default()
                    .set(d);
            }
        }
    }
    let selects = |a: &Pod, b: &Pod| terms(a, dom, true).any(|t| t.selects(&a.namespace, &b.namespace, &b.labels));
    let carriers: Vec<usize> = (0..pods.len())
        .filter(|&i| !skip[i] && terms(&pods[i], dom, true).next().is_some())
        .collect();
    // Domains each pod may not use because of running pods, in both directions.
    let mut forbidden = vec![Mask::default(); pods.len()];
    for (i, p) in pods.iter().enumerate() {
        if skip[i] {
            continue;
        }
        for t in terms(p, dom, true) {
            for ((ns, l), ds) in &running_classes {
                if t.selects(&p.namespace, ns, l) {
                    forbidden[i].or(ds);
                }
            }
        }
        for (t, ns, d) in &existing_carriers {
            if t.selects(ns, &p.namespace, &p.labels) {
                forbidden[i].set(*d);
            }
        }
    }
    let involved: Vec<usize> = (0..pods.len())
        .filter(|&i| {
            !skip[i]
                && (!forbidden[i].is_empty()
                    || terms(&pods[i], dom, true).next().is_some()
                    || carriers.iter().any(|&c| c != i && selects(&pods[c], &pods[i])))
        })
        .collect();
    let open: Vec<Mask> = (0..pods.len()).map(|i| eligible[i].without(&forbidden[i])).collect();
    // Pods already pinned (by affinity) take their domain first; then the most constrained.
    let mut order = involved;
    order.sort_by_key(|&i| (pin[i].is_none(), open[i].count(), i));
    let mut placed: Vec<Vec<usize>> = vec![Vec::new(); dom.values.len()];
    let mut failed = Vec::new();
    for i in order {
        let p = &pods[i];
        let free = |d: usize| {
            open[i].has(d)
                && placed[d]
                    .iter()
                    .all(|&k| !selects(p, &pods[k]) && !selects(&pods[k], p))
        };
        let choice = match pin[i] {
            Some(d) => free(d).then_some(d),
            None => open[i]
                .iter()
                .filter(|&d| free(d))
                .min_by_key(|&d| (placed[d].len(), d)),
        };
        match choice {
            Some(d) => {
                pin[i] = Some(d);
                placed[d].push(i);
            }
            None => {
                skip[i] = true;
                failed.push((
                    i,
                    format!(
                        "required pod anti-affinity on {what} cannot be met: every {} it could use holds a pod it excludes or that excludes it",
                        if what == "the zone" { "zone" } else { "domain" }
                    ),
                ));
            }
        }
    }
    failed
}
