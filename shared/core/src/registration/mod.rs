//! What a node launched for a NodePool carries, and when each part gets there.
//!
//! A real node learns nothing from us but its user data: the kubelet registers with the labels and
//! taints passed on its command line (`--node-labels`, `registerWithTaints`) plus the labels it and
//! the cloud controller set themselves (hostname, arch, os, instance type, zone, region). One launch
//! template serves every instance type, zone and capacity type a claim may get, so the labels that
//! depend on the chosen offering (`karpenter.sh/capacity-type`, `karpenter.k8s.aws/instance-*`) can
//! only be written once the instance exists. As Karpenter does, the node therefore boots with the
//! NoExecute taint [`UNREGISTERED_TAINT`]; registration (the `Node Ready` handler, or the
//! consolidation run's reconcile) matches the Node to its claim by `spec.providerID`, writes
//! [`node_labels`] and removes the taint in one patch. Until then no workload pod can land on a node
//! whose labels are incomplete.
//!
//! The kubelet refuses to start with labels under `kubernetes.io` / `k8s.io` other than the few the
//! NodeRestriction admission plugin allows ([`kubelet_may_set`]): those go on at registration only.

pub mod user_data;

use std::collections::BTreeMap;

use crate::catalogue::{CapacityType, InstanceType};
use crate::labels;
use crate::model::{Effect, Taint};
use crate::nodepool::NodePool;
use crate::requirements::{Operator, Requirement};

/// The taint a node registers with until its claim has labelled it (Karpenter's key, so clusters
/// migrating from Karpenter already tolerate it where they should, e.g. in DaemonSets).
pub const UNREGISTERED_TAINT: &str = "karpenter.sh/unregistered";

/// Labels every node of `pool` carries whatever offering it gets: the template labels,
/// `karpenter.sh/nodepool`, and one value for each custom requirement key that admits values (the
/// single `In` value; for `Exists`, `NotIn`, `Gt`, `Lt`, `Gte`, `Lte` the smallest non-negative
/// integer that satisfies every requirement on the key, as Karpenter picks a value). Well-known
/// keys come from the instance type and offering instead.
pub fn pool_labels(pool: &NodePool) -> BTreeMap<String, String> {
    let mut out = pool.labels.clone();
    let mut by_key: BTreeMap<&str, Vec<&Requirement>> = BTreeMap::new();
    for r in &pool.requirements {
        if !labels::is_well_known(&r.key) && !labels::is_restricted(&r.key) {
            by_key.entry(r.key.as_str()).or_default().push(r);
        }
    }
    for (key, reqs) in by_key {
        if out.contains_key(key) {
            continue;
        }
        if let Some(v) = pick_value(&reqs) {
            out.insert(key.to_string(), v);
        }
    }
    out.insert(labels::NODEPOOL.into(), pool.name.clone());
    out
}

/// The values of the first `In` requirement on a key that every requirement on it admits,
/// sorted; None when no requirement lists values.
pub fn admitted_values<'r>(reqs: &[&'r Requirement]) -> Option<Vec<&'r String>> {
    let first = reqs.iter().find(|r| r.operator == Operator::In)?;
    let mut admitted: Vec<&String> = first
        .values
        .iter()
        .filter(|v| reqs.iter().all(|r| r.matches(Some(v))))
        .collect();
    admitted.sort();
    admitted.dedup();
    Some(admitted)
}

/// One value satisfying every requirement on a key, if the requirements pin or admit one.
fn pick_value(reqs: &[&Requirement]) -> Option<String> {
    if reqs.iter().any(|r| r.operator == Operator::DoesNotExist) {
        return None;
    }
    let ok = |v: &str| reqs.iter().all(|r| r.matches(Some(v)));
    if let Some(admitted) = admitted_values(reqs) {
        // Only a key that resolves to one value is a label: a pod may need any one of several
        // (the scheduler gives each value a pool view of its own).
        return (admitted.len() == 1).then(|| admitted[0].clone());
    }
    let lower = reqs
        .iter()
        .filter_map(|r| {
            let b: i64 = r.values.first()?.parse().ok()?;
            match r.operator {
                Operator::Gt => Some(b.saturating_add(1)),
                Operator::Gte => Some(b),
                _ => None,
            }
        })
        .max()
        .unwrap_or(0)
        .max(0);
    // NotIn excludes at most as many values as it lists: the search is bounded by that count.
    let excluded: usize = reqs.iter().map(|r| r.values.len()).sum();
    (0..=excluded as i64)
        .map(|i| lower.saturating_add(i))
        .map(|n| n.to_string())
        .find(|v| ok(v))
}

/// Karpenter's lifecycle labels: set on a node when it registers, and when it is initialized
/// (ready, startup taints gone). DaemonSets may wait for them in their node affinity.
pub const REGISTERED_LABEL: &str = "karpenter.sh/registered";
pub const INITIALIZED_LABEL: &str = "karpenter.sh/initialized";

/// Every label a registered node of `pool` carries once its offering is known: [`pool_labels`],
/// the instance type's well-known labels, zone, region and capacity type, and
/// [`REGISTERED_LABEL`]. Registration runs when the node is Ready, so a node of a pool without
/// startup taints is initialized then too ([`INITIALIZED_LABEL`]); with startup taints, the
/// consolidation run's reconcile writes it once their agents lifted them ([`initialized`]).
pub fn node_labels(
    pool: &NodePool,
    instance_type: Option<&InstanceType>,
    zone: &str,
    capacity_type: CapacityType,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = instance_type.map(|t| t.labels.clone()).unwrap_or_default();
    out.extend(pool_labels(pool));
    if !zone.is_empty() {
        out.insert(labels::ZONE.into(), zone.to_string());
        // The zone's ID when the account's mapping is known (as Karpenter labels its nodes); a
        // node without it fails no requirement it was planned for (see `catalogue::zone_ids`).
        if let Some(id) = instance_type
            .and_then(|t| t.offerings.iter().find(|o| o.zone == zone))
            .and_then(|o| o.zone_id.clone())
        {
            out.insert(labels::ZONE_ID.into(), id);
        }
    }
    out.insert(labels::CAPACITY_TYPE.into(), capacity_type.as_str().into());
    out.insert(REGISTERED_LABEL.into(), "true".into());
    if pool.startup_taints.is_empty() {
        out.insert(INITIALIZED_LABEL.into(), "true".into());
    }
    out
}

/// Whether a Ready node of `pool` carrying `taints` is initialized, as Karpenter reads it: none of
/// the pool's startup taints (same key and effect) and no ephemeral taint left.
pub fn initialized(pool: &NodePool, taints: &[Taint]) -> bool {
    !taints.iter().any(|t| {
        labels::EPHEMERAL_TAINTS.contains(&t.key.as_str())
            || pool
                .startup_taints
                .iter()
                .any(|s| s.key == t.key && s.effect == t.effect)
    })
}

/// Whether the kubelet may set `key` on its own node (`--node-labels`): anything outside the
/// `kubernetes.io` and `k8s.io` domains, and inside them only what NodeRestriction allows.
pub fn kubelet_may_set(key: &str) -> bool {
    let domain = key.split_once('/').map(|(d, _)| d).unwrap_or("");
    let in_k8s =
        |d: &str| d == "kubernetes.io" || d.ends_with(".kubernetes.io") || d == "k8s.io" || d.ends_with(".k8s.io");
    if !in_k8s(domain) {
        return true;
    }
    const ALLOWED: &[&str] = &[
        labels::HOSTNAME,
        labels::ARCH,
        labels::OS,
        labels::INSTANCE_TYPE,
        labels::ZONE,
        labels::REGION,
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
    ];
    ALLOWED.contains(&key) || domain == "kubelet.kubernetes.io" || domain == "node.kubernetes.io"
}

/// The labels a node of `pool` boots with (user data): [`pool_labels`] the kubelet may set.
pub fn boot_labels(pool: &NodePool) -> BTreeMap<String, String> {
    pool_labels(pool)
        .into_iter()
        .filter(|(k, _)| kubelet_may_set(k))
        .collect()
}

/// The taints a node of `pool` boots with: the pool's taints, its startup taints, and
/// [`UNREGISTERED_TAINT`] (NoExecute) that registration removes.
pub fn boot_taints(pool: &NodePool) -> Vec<Taint> {
    let mut out: Vec<Taint> = pool.taints.iter().chain(&pool.startup_taints).cloned().collect();
    out.push(unregistered_taint());
    out
}

/// What registration writes on a claim's node, in one patch: the labels it lacks, the pool's
/// taints it lacks, the startup taints on the first registration only (while the node still
/// carries [`UNREGISTERED_TAINT`]: a startup taint its agent has since removed must not come
/// back), and the unregistered taint removed. A node booted from Nodewright's user data already
/// has the taints; one booted from `amiFamily: Custom` user data gets them here, as Karpenter's
/// registration syncs a NodeClaim's taints onto its Node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRegistration {
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub startup_taints: Vec<Taint>,
}

impl NodeRegistration {
    /// Everything a registered node of `pool` carries: [`node_labels`], its taints and startup
    /// taints.
    pub fn for_pool(pool: &NodePool, labels: BTreeMap<String, String>) -> Self {
        NodeRegistration {
            labels,
            taints: pool.taints.clone(),
            startup_taints: pool.startup_taints.clone(),
        }
    }

    /// The taints to add to a node that carries `current` (key, effect) pairs: a taint matches
    /// one of the same key and effect, as Karpenter matches them.
    pub fn missing_taints<'a>(&'a self, current: &[(&str, &str)]) -> Vec<&'a Taint> {
        let first = current.iter().any(|(k, _)| *k == UNREGISTERED_TAINT);
        let startup: &[Taint] = if first { &self.startup_taints } else { &[] };
        let mut out: Vec<&Taint> = Vec::new();
        for t in self.taints.iter().chain(startup) {
            let has = |k: &str, e: &str| k == t.key && e == t.effect.as_str();
            if !current.iter().any(|(k, e)| has(k, e)) && !out.iter().any(|o| has(&o.key, o.effect.as_str())) {
                out.push(t);
            }
        }
        out
    }
}

pub fn unregistered_taint() -> Taint {
    Taint {
        key: UNREGISTERED_TAINT.into(),
        value: None,
        effect: Effect::NoExecute,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator: op,
            values: values.iter().map(|v| v.to_string()).collect(),
            min_values: None,
        }
    }

    #[test]
    fn requirement_keys_resolve_to_one_value_as_karpenter_picks_it() {
        let mut pool = NodePool::new("general");
        pool.labels.insert("team".into(), "web".into());
        pool.requirements = vec![
            req("tier", Operator::In, &["gold"]),
            req("ring", Operator::In, &["a", "b"]),
            req("exists", Operator::Exists, &[]),
            req("not-in", Operator::NotIn, &["0", "1"]),
            req("gt", Operator::Gt, &["7"]),
            req("range", Operator::Gte, &["3"]),
            req("range", Operator::Lt, &["5"]),
            req("range", Operator::NotIn, &["3"]),
            req("absent", Operator::DoesNotExist, &[]),
            req(labels::CAPACITY_TYPE, Operator::In, &["spot"]),
        ];
        let l = pool_labels(&pool);
        assert_eq!(l.get("team").map(String::as_str), Some("web"));
        assert_eq!(l.get("tier").map(String::as_str), Some("gold"));
        assert_eq!(l.get("ring"), None, "two values: a pod may need either");
        assert_eq!(l.get("exists").map(String::as_str), Some("0"));
        assert_eq!(l.get("not-in").map(String::as_str), Some("2"));
        assert_eq!(l.get("gt").map(String::as_str), Some("8"));
        assert_eq!(l.get("range").map(String::as_str), Some("4"));
        assert_eq!(l.get("absent"), None);
        assert_eq!(l.get(labels::CAPACITY_TYPE), None, "well-known: from the offering");
        assert_eq!(l.get(labels::NODEPOOL).map(String::as_str), Some("general"));
        for (k, v) in &l {
            let on_key: Vec<&Requirement> = pool.requirements.iter().filter(|r| &r.key == k).collect();
            assert!(on_key.iter().all(|r| r.matches(Some(v))), "{k}={v} breaks {on_key:?}");
        }
    }

    #[test]
    fn kubelet_flags_carry_only_what_node_restriction_allows() {
        assert!(kubelet_may_set("karpenter.sh/nodepool"));
        assert!(kubelet_may_set("karpenter.k8s.aws/instance-family"));
        assert!(kubelet_may_set("team"));
        assert!(kubelet_may_set(labels::ZONE));
        assert!(kubelet_may_set("node.kubernetes.io/lifecycle"));
        assert!(!kubelet_may_set("node-role.kubernetes.io/worker"));
        assert!(!kubelet_may_set("kubernetes.io/test"));
        assert!(!kubelet_may_set("example.k8s.io/x"));
        let mut pool = NodePool::new("p");
        pool.labels.insert("node-role.kubernetes.io/worker".into(), "".into());
        assert!(!boot_labels(&pool).contains_key("node-role.kubernetes.io/worker"));
        assert!(pool_labels(&pool).contains_key("node-role.kubernetes.io/worker"));
    }

    /// A registered node carries Karpenter's lifecycle labels (DaemonSets may wait for them);
    /// `initialized` only when no startup taint is still to be removed.
    #[test]
    fn registered_nodes_carry_the_lifecycle_labels() {
        let mut pool = NodePool::new("p");
        let l = node_labels(&pool, None, "us-east-1a", CapacityType::Spot);
        assert_eq!(l.get(REGISTERED_LABEL).map(String::as_str), Some("true"));
        assert_eq!(l.get(INITIALIZED_LABEL).map(String::as_str), Some("true"));
        pool.startup_taints.push(Taint {
            key: "cni-ready".into(),
            value: None,
            effect: Effect::NoSchedule,
        });
        let l = node_labels(&pool, None, "us-east-1a", CapacityType::Spot);
        assert_eq!(l.get(REGISTERED_LABEL).map(String::as_str), Some("true"));
        assert!(!l.contains_key(INITIALIZED_LABEL));
    }

    /// The zone ID comes from the offering's mapping (the account's, read with the prices); with
    /// none known the node has no such label rather than a guessed one.
    #[test]
    fn registered_nodes_carry_their_zones_id_when_it_is_known() {
        let pool = NodePool::new("p");
        let mut types = crate::catalogue::fake::benchmark_types(1);
        let zone = crate::catalogue::fake::ZONES[1];
        let l = node_labels(&pool, Some(&types[0]), zone, CapacityType::OnDemand);
        assert!(!l.contains_key(labels::ZONE_ID), "no mapping known yet: {l:?}");
        let ids = std::collections::BTreeMap::from([
            (crate::catalogue::fake::ZONES[0].to_string(), "use1-az6".to_string()),
            (zone.to_string(), "use1-az1".to_string()),
        ]);
        crate::catalogue::zone_ids::assign(&mut types, &ids);
        let l = node_labels(&pool, Some(&types[0]), zone, CapacityType::OnDemand);
        assert_eq!(l.get(labels::ZONE_ID).map(String::as_str), Some("use1-az1"));
        assert_eq!(l.get(labels::ZONE).map(String::as_str), Some(zone));
    }

    #[test]
    fn nodes_boot_with_the_unregistered_taint_after_the_pools_own() {
        let mut pool = NodePool::new("p");
        pool.taints.push(Taint {
            key: "gpu".into(),
            value: Some("true".into()),
            effect: Effect::NoSchedule,
        });
        pool.startup_taints.push(Taint {
            key: "cilium".into(),
            value: None,
            effect: Effect::NoExecute,
        });
        let keys: Vec<String> = boot_taints(&pool).into_iter().map(|t| t.key).collect();
        assert_eq!(keys, ["gpu", "cilium", UNREGISTERED_TAINT]);
    }

    #[test]
    fn registration_adds_missing_taints_and_startup_taints_only_the_first_time() {
        let taint = |key: &str, effect: Effect| Taint {
            key: key.into(),
            value: Some("x".into()),
            effect,
        };
        let reg = NodeRegistration {
            labels: BTreeMap::new(),
            taints: vec![taint("gpu", Effect::NoSchedule), taint("dedicated", Effect::NoExecute)],
            startup_taints: vec![taint("cilium.io/agent-not-ready", Effect::NoSchedule)],
        };
        // A Custom node booted with only the unregistered taint gets the pool's and startup taints.
        let keys = |ts: Vec<&Taint>| ts.iter().map(|t| t.key.clone()).collect::<Vec<_>>();
        assert_eq!(
            keys(reg.missing_taints(&[(UNREGISTERED_TAINT, "NoExecute")])),
            ["gpu", "dedicated", "cilium.io/agent-not-ready"]
        );
        // Matched by key and effect: the same key with another effect is another taint.
        assert_eq!(
            keys(reg.missing_taints(&[
                (UNREGISTERED_TAINT, "NoExecute"),
                ("gpu", "NoExecute"),
                ("dedicated", "NoExecute")
            ])),
            ["gpu", "cilium.io/agent-not-ready"]
        );
        // Registered already (no unregistered taint): the startup taint its agent removed stays gone.
        assert!(
            reg.missing_taints(&[("gpu", "NoSchedule"), ("dedicated", "NoExecute")])
                .is_empty()
        );
    }
}
