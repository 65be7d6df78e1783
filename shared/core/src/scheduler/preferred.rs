//! Preferred pod affinity and anti-affinity, held as required until they cannot be met, as
//! Karpenter's scheduler holds them.
//!
//! The batch is planned with every preferred term promoted to a required one. Each pod the plan
//! leaves unschedulable gives up one term, the heaviest preferred pod affinity term first, then
//! the anti-affinity ones (Karpenter's `Preferences.Relax` order), and the batch is planned
//! again. A pod kept out only by another pod's promoted anti-affinity makes that pod give up the
//! term instead: a preference never blocks another pod. Work is bounded: from round
//! [`MAX_ROUNDS`] on, every pod still holding terms gives up all of them, so at most
//! `MAX_ROUNDS + 1` plans are made. What each placed pod gave up is listed in the plan's
//! `relaxed`, ahead of its node-affinity relaxations.

use std::collections::HashMap;

use crate::model::{Pod, WeightedPodAffinityTerm};

use super::{Input, Plan, Relaxed};

/// Plans after which every remaining preferred pod term is dropped at once.
pub const MAX_ROUNDS: usize = 4;

/// Whether any pod has a preferred pod (anti-)affinity term.
pub fn any(pods: &[Pod]) -> bool {
    pods.iter()
        .any(|p| !p.preferred_pod_affinity.is_empty() || !p.preferred_pod_anti_affinity.is_empty())
}

/// A preferred term still held as required.
#[derive(Clone)]
struct Held {
    anti: bool,
    term: WeightedPodAffinityTerm,
}

impl Held {
    fn describe(&self) -> String {
        format!(
            "preferred pod {}affinity term on {} of weight {} dropped",
            if self.anti { "anti-" } else { "" },
            self.term.pod_affinity_term.topology_key,
            self.term.weight
        )
    }
}

/// Plans `input` with `run`, relaxing preferred pod terms as the module says.
pub fn plan(input: &Input<'_>, run: impl Fn(&Input<'_>) -> Plan) -> Plan {
    let n = input.pods.len();
    // Each pod's preferred terms, affinity before anti-affinity, heaviest first within each.
    let mut held: Vec<Vec<Held>> = input
        .pods
        .iter()
        .map(|p| {
            let mut a: Vec<Held> = p
                .preferred_pod_affinity
                .iter()
                .map(|t| Held {
                    anti: false,
                    term: t.clone(),
                })
                .collect();
            a.sort_by_key(|h| std::cmp::Reverse(h.term.weight));
            let mut b: Vec<Held> = p
                .preferred_pod_anti_affinity
                .iter()
                .map(|t| Held {
                    anti: true,
                    term: t.clone(),
                })
                .collect();
            b.sort_by_key(|h| std::cmp::Reverse(h.term.weight));
            a.extend(b);
            a
        })
        .collect();
    let mut dropped: Vec<Vec<String>> = vec![Vec::new(); n];
    let index: HashMap<&str, usize> = input
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| (p.uid.as_str(), i))
        .collect();
    let mut round = 0;
    loop {
        let pods: Vec<Pod> = input
            .pods
            .iter()
            .zip(&held)
            .map(|(p, h)| {
                let mut p = p.clone();
                for t in h {
                    let list = if t.anti {
                        &mut p.pod_anti_affinity
                    } else {
                        &mut p.pod_affinity
                    };
                    list.push(t.term.pod_affinity_term.clone());
                }
                p.preferred_pod_affinity.clear();
                p.preferred_pod_anti_affinity.clear();
                p
            })
            .collect();
        let mut plan = run(&Input { pods: &pods, ..*input });
        let failing: Vec<usize> = plan
            .unschedulable
            .iter()
            .filter_map(|u| index.get(u.pod.as_str()).copied())
            .collect();
        let mut changed = false;
        round += 1;
        for &i in &failing {
            if held[i].is_empty() {
                // Kept out by another pod's preference? That pod gives it up.
                for c in 0..n {
                    let p = &input.pods[i];
                    if let Some(pos) = held[c].iter().position(|h| {
                        h.anti
                            && h.term
                                .pod_affinity_term
                                .selects(&input.pods[c].namespace, &p.namespace, &p.labels)
                    }) {
                        let h = held[c].remove(pos);
                        dropped[c].push(h.describe());
                        changed = true;
                    }
                }
                continue;
            }
            let take = if round >= MAX_ROUNDS { held[i].len() } else { 1 };
            for h in held[i].drain(..take) {
                dropped[i].push(h.describe());
            }
            changed = true;
        }
        if round >= MAX_ROUNDS && changed {
            // The next plan is the last: every pod gives up what it still holds.
            for (h, d) in held.iter_mut().zip(dropped.iter_mut()) {
                d.extend(h.drain(..).map(|h| h.describe()));
            }
        }
        if !changed {
            annotate(&mut plan, input.pods, &dropped);
            return plan;
        }
    }
}

/// Lists what each placed pod gave up, ahead of what its node affinity gave up.
fn annotate(plan: &mut Plan, pods: &[Pod], dropped: &[Vec<String>]) {
    for (i, d) in dropped.iter().enumerate() {
        if d.is_empty() {
            continue;
        }
        let uid = &pods[i].uid;
        let home = plan
            .claims
            .iter()
            .find(|c| c.pods.contains(uid))
            .map(|c| c.id.clone())
            .or_else(|| plan.bindings.iter().find(|b| &b.pod == uid).map(|b| b.node.clone()));
        let Some(home) = home else { continue };
        match plan.relaxed.iter_mut().find(|r| &r.pod == uid) {
            Some(r) => {
                let mut all = d.clone();
                all.append(&mut r.relaxations);
                r.relaxations = all;
            }
            None => plan.relaxed.push(Relaxed {
                pod: uid.clone(),
                name: pods[i].key(),
                claim: home,
                relaxations: d.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::model::{LabelSelector, PodAffinityTerm};
    use crate::scheduler::{Binding, Unschedulable};

    fn preferring(name: &str, terms: usize) -> Pod {
        let mut p = Pod::new(name, 100, 1 << 20);
        for w in 0..terms {
            p.preferred_pod_anti_affinity.push(WeightedPodAffinityTerm {
                weight: 10 * (w as i32 + 1),
                pod_affinity_term: PodAffinityTerm {
                    topology_key: crate::labels::ZONE.into(),
                    selector: LabelSelector::default(),
                    namespaces: Vec::new(),
                    all_namespaces: false,
                },
            });
        }
        p
    }

    fn input(pods: &[Pod]) -> Input<'_> {
        Input {
            pods,
            nodes: &[],
            pools: &[],
            instance_types: &[],
            daemonsets: &[],
            pool_usage: &[],
        }
    }

    /// A pod that can never be placed gives up its terms one per plan, then all at once: the
    /// batch is planned at most MAX_ROUNDS + 1 times whatever the pods hold.
    #[test]
    fn relaxing_is_bounded_whatever_the_pods_hold() {
        let pods: Vec<Pod> = (0..50).map(|i| preferring(&format!("p{i}"), 20)).collect();
        let runs = Cell::new(0);
        let plan = plan(&input(&pods), |round| {
            runs.set(runs.get() + 1);
            Plan {
                unschedulable: round
                    .pods
                    .iter()
                    .map(|p| Unschedulable {
                        pod: p.uid.clone(),
                        name: p.key(),
                        reason: "too big".into(),
                    })
                    .collect(),
                ..Plan::default()
            }
        });
        assert!(runs.get() <= MAX_ROUNDS + 1, "{} plans", runs.get());
        assert_eq!(plan.unschedulable.len(), 50);
        assert!(plan.relaxed.is_empty(), "unplaced pods list no relaxation");
    }

    /// Terms are held as required, heaviest first, and dropped one per plan while the pod fails;
    /// the placed pod lists exactly what it gave up.
    #[test]
    fn a_pod_gives_up_its_heaviest_term_first_and_the_plan_says_so() {
        let pods = vec![preferring("web", 3)];
        let seen = Cell::new(Vec::<usize>::new());
        let plan = plan(&input(&pods), |round| {
            let held = round.pods[0].pod_anti_affinity.len();
            let mut s = seen.take();
            s.push(held);
            seen.set(s);
            assert!(round.pods[0].preferred_pod_anti_affinity.is_empty());
            let uid = round.pods[0].uid.clone();
            if held > 1 {
                Plan {
                    unschedulable: vec![Unschedulable {
                        pod: uid,
                        name: "default/web".into(),
                        reason: "every zone holds a pod it excludes".into(),
                    }],
                    ..Plan::default()
                }
            } else {
                Plan {
                    bindings: vec![Binding {
                        pod: uid,
                        node: "node-a".into(),
                        in_flight: false,
                    }],
                    ..Plan::default()
                }
            }
        });
        assert_eq!(seen.take(), vec![3, 2, 1]);
        assert_eq!(
            plan.relaxed[0].relaxations,
            vec![
                "preferred pod anti-affinity term on topology.kubernetes.io/zone of weight 30 dropped",
                "preferred pod anti-affinity term on topology.kubernetes.io/zone of weight 20 dropped",
            ]
        );
        assert_eq!(plan.relaxed[0].claim, "node-a");
    }
}
