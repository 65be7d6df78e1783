//! The hostname as a topology key: each node is its own domain, so hostname spread
//! (DoNotSchedule), required pod anti-affinity on the hostname and host ports become per-node
//! counts with limits, checked on every join while packing.

use std::collections::HashMap;

use crate::model::{HostPort, Pod};

use super::super::prepare::Bucket;

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
    pub(in crate::scheduler) fn selects(&self, p: &Pod) -> bool {
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
    pub(in crate::scheduler) fn count(&self, c: u16) -> u32 {
        self.counts.iter().find(|(k, _)| *k == c).map_or(0, |(_, v)| *v)
    }
    pub(in crate::scheduler) fn limit(&self, c: u16) -> Option<u32> {
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
    pub(in crate::scheduler) fn max_add_counting(&self, count: impl Fn(u16) -> u32, b: &Bucket, want: u64) -> u64 {
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

    pub(in crate::scheduler) fn add_pod(&mut self, members: &[u16], carries: &[(u16, u32)]) {
        let b = Bucket {
            members: members.to_vec(),
            carries: carries.to_vec(),
            ..Bucket::default()
        };
        self.add(&b, 1);
    }
}

/// Pods on node `n` in namespace `ns` that `sel` selects (topology spread counting).
pub fn matching_on(n: &crate::model::Node, ns: &str, sel: &crate::model::LabelSelector) -> u64 {
    n.pods
        .iter()
        .filter(|q| q.namespace == ns && sel.matches(&q.labels))
        .count() as u64
}

pub(in crate::scheduler) fn host_id(
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

pub(in crate::scheduler) fn host_port_id(
    index: &mut HashMap<HostPort, u16>,
    host: &mut Vec<HostConstraint>,
    port: &HostPort,
) -> u16 {
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
pub(in crate::scheduler) type HostMembership = (Vec<u16>, Vec<(u16, u32)>);
