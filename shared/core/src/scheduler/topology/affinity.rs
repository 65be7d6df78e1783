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

/// Required pod affinity: a carrier lands in a domain holding a pod its term selects. Running
/// pods the term selects, in domains the carrier may use, fix the domain; otherwise the carrier
/// is linked (union-find) with the first pending pod its term selects that shares an eligible
/// domain with it, and each linked group is pinned to one domain they all may use. A pod whose
/// term selects itself may start a group of its own where none of the others can follow
/// (Kubernetes admits the first pod of such a group anywhere). A term no pod matches, pending or
/// running, cannot be met (a term without a selector matches none).
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
    // Classes of pods with identical namespace and labels (a term selects a whole class).
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
    let mut parent: Vec<usize> = (0..pods.len()).collect();
    fn find(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let mut involved = vec![false; pods.len()];
    // Per carrier: the domains running pods its terms select leave it (None: no such pod).
    let mut anchored: Vec<Option<Mask>> = vec![None; pods.len()];
    for (i, p) in pods.iter().enumerate() {
        if skip[i] {
            continue;
        }
        for t in terms(p, dom, false) {
            let mut running = Mask::default();
            for (n, node) in prep.input.nodes.iter().enumerate() {
                if node
                    .pods
                    .iter()
                    .any(|q| t.selects(&p.namespace, &q.namespace, &q.labels))
                    && let Some(d) = dom.of_node(prep, n)
                {
                    running.set(d);
                }
            }
            let running = running.and(&eligible[i]);
            let selected = || {
                class_pods
                    .iter()
                    .filter(|members| {
                        let q = &pods[members[0]];
                        t.selects(&p.namespace, &q.namespace, &q.labels)
                    })
                    .flat_map(|members| members.iter().copied())
                    .filter(|&j| j != i)
            };
            let partner = selected().find(|&j| !eligible[i].and(&eligible[j]).is_empty());
            if !running.is_empty() {
                involved[i] = true;
                anchored[i] = Some(match anchored[i].take() {
                    None => running,
                    Some(m) => m.and(&running),
                });
            } else if let Some(j) = partner {
                involved[i] = true;
                involved[j] = true;
                let (a, b) = (find(&mut parent, i), find(&mut parent, j));
                parent[a] = b;
            } else if t.selects(&p.namespace, &p.namespace, &p.labels) {
                involved[i] = true;
            } else {
                skip[i] = true;
                let reason = if selected().next().is_none() {
                    "no pod, pending or running, matches its selector"
                } else {
                    "no pod it selects can run in a domain it may use"
                };
                failed.push((i, format!("required pod affinity on {what} cannot be met: {reason}")));
            }
        }
    }
    // Each linked group's domains: what every member may use (and its anchors allow).
    let mut group: HashMap<usize, Mask> = HashMap::new();
    for i in 0..pods.len() {
        if !involved[i] || skip[i] {
            continue;
        }
        let root = find(&mut parent, i);
        let mine = match &anchored[i] {
            Some(a) => a.and(&eligible[i]),
            None => eligible[i].clone(),
        };
        group.entry(root).and_modify(|m| *m = m.and(&mine)).or_insert(mine);
    }
    for i in 0..pods.len() {
        if !involved[i] || skip[i] {
            continue;
        }
        let root = find(&mut parent, i);
        match group.get(&root).and_then(Mask::first) {
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
