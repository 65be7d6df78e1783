//! A pod as the scheduler sees it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::requirements::{LabelSource, Requirement};
use crate::resources::{Resource, Resources};
use crate::{Error, Result};

/// Taint effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Effect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::NoSchedule => "NoSchedule",
            Effect::PreferNoSchedule => "PreferNoSchedule",
            Effect::NoExecute => "NoExecute",
        }
    }

    pub fn parse(s: &str) -> Option<Effect> {
        match s {
            "NoSchedule" => Some(Effect::NoSchedule),
            "PreferNoSchedule" => Some(Effect::PreferNoSchedule),
            "NoExecute" => Some(Effect::NoExecute),
            _ => None,
        }
    }
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Taint {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub effect: Effect,
}

impl std::fmt::Display for Taint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}:{:?}", self.key, v, self.effect),
            None => write!(f, "{}:{:?}", self.key, self.effect),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub enum TolerationOperator {
    #[default]
    Equal,
    Exists,
}

/// A port a container binds on its node (`ports[].hostPort`). The kubelet admits one pod per node
/// for a port and protocol, so two pods that ask for one never share a node (Kubernetes' NodePorts
/// filter; Karpenter's host port usage). Pods bound to different host IPs of one port are kept
/// apart too: Nodewright does not know a node's addresses in advance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostPort {
    pub port: u16,
    /// TCP (default), UDP or SCTP.
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "TCP".into()
}

impl HostPort {
    /// A host port as a pod spec gives it: `field` names it in errors.
    pub fn new(port: i32, protocol: Option<&str>, field: &str) -> crate::Result<Self> {
        let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
            crate::Error::invalid(format!("{field}.hostPort"), format!("{port} is not a port (1-65535)"))
        })?;
        let protocol = protocol.unwrap_or("TCP").to_string();
        if !["TCP", "UDP", "SCTP"].contains(&protocol.as_str()) {
            return Err(crate::Error::invalid(
                format!("{field}.protocol"),
                format!("{protocol:?} is not TCP, UDP or SCTP"),
            ));
        }
        Ok(HostPort { port, protocol })
    }
}

/// Adds `ports` to `into`, each once (a claim's or a pod's set of bound ports).
pub fn add_host_ports<'a>(into: &mut Vec<HostPort>, ports: impl IntoIterator<Item = &'a HostPort>) {
    for port in ports {
        if !into.contains(port) {
            into.push(port.clone());
        }
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.protocol, self.port)
    }
}

/// A pod toleration, with Kubernetes' matching rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Toleration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub operator: TolerationOperator,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<Effect>,
}

impl Toleration {
    pub fn tolerates(&self, t: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != t.effect) {
            return false;
        }
        match (&self.key, self.operator) {
            (None, TolerationOperator::Exists) => true,
            (Some(k), _) if *k != t.key => false,
            (_, TolerationOperator::Exists) => true,
            (_, TolerationOperator::Equal) => self.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or(""),
        }
    }
}

/// Whether `tolerations` tolerate every scheduling-relevant taint (`PreferNoSchedule` is soft).
pub fn first_untolerated<'t>(tolerations: &[Toleration], taints: &'t [Taint]) -> Option<&'t Taint> {
    taints
        .iter()
        .filter(|t| t.effect != Effect::PreferNoSchedule)
        .find(|t| !tolerations.iter().any(|tol| tol.tolerates(t)))
}

/// A label selector (matchLabels ANDed with matchExpressions).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    /// The selector of a term that has none: Kubernetes reads a missing `labelSelector` (pod
    /// affinity and anti-affinity terms, topology spread constraints, PodDisruptionBudgets) as
    /// selecting no pods, unlike an empty one (`{}`), which selects every pod. An `In` with no
    /// values never holds.
    pub fn nothing() -> Self {
        LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![Requirement {
                key: "nodewright.io/no-selector".into(),
                operator: crate::requirements::Operator::In,
                values: Vec::new(),
                min_values: None,
            }],
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|x| x == v))
            && self.match_expressions.iter().all(|r| r.matches(labels.label(&r.key)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub enum WhenUnsatisfiable {
    #[default]
    DoNotSchedule,
    ScheduleAnyway,
}

/// A topology spread constraint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpreadConstraint {
    pub topology_key: String,
    #[serde(default = "one")]
    pub max_skew: u32,
    #[serde(default)]
    pub when_unsatisfiable: WhenUnsatisfiable,
    /// Written `selector` or, as in a Pod spec, `labelSelector`; missing selects no pods.
    #[serde(default = "LabelSelector::nothing", alias = "labelSelector")]
    pub selector: LabelSelector,
    /// `minDomains` (DoNotSchedule only): with fewer eligible domains than this, the global
    /// minimum counts as 0, so each domain takes at most `maxSkew` matching pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_domains: Option<u32>,
    /// `nodeAffinityPolicy`: whether nodes and pools the pod's node selector and required node
    /// affinity exclude still count as domains. Honor (the default) leaves them out.
    #[serde(default, skip_serializing_if = "NodeInclusionPolicy::is_honor")]
    pub node_affinity_policy: NodeInclusionPolicy,
    /// `nodeTaintsPolicy`: whether nodes and pools whose taints the pod does not tolerate still
    /// count as domains. Ignore (the default) counts them.
    #[serde(
        default = "NodeInclusionPolicy::ignore",
        skip_serializing_if = "NodeInclusionPolicy::is_ignore"
    )]
    pub node_taints_policy: NodeInclusionPolicy,
}

impl SpreadConstraint {
    /// A constraint with Kubernetes' defaults for everything but the key, skew and selector.
    pub fn new(topology_key: &str, max_skew: u32, selector: LabelSelector) -> Self {
        SpreadConstraint {
            topology_key: topology_key.to_string(),
            max_skew,
            when_unsatisfiable: WhenUnsatisfiable::DoNotSchedule,
            selector,
            min_domains: None,
            node_affinity_policy: NodeInclusionPolicy::Honor,
            node_taints_policy: NodeInclusionPolicy::Ignore,
        }
    }
}

/// Kubernetes' `NodeInclusionPolicy` of a topology spread constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub enum NodeInclusionPolicy {
    #[default]
    Honor,
    Ignore,
}

impl NodeInclusionPolicy {
    fn ignore() -> Self {
        NodeInclusionPolicy::Ignore
    }
    fn is_honor(&self) -> bool {
        *self == NodeInclusionPolicy::Honor
    }
    fn is_ignore(&self) -> bool {
        *self == NodeInclusionPolicy::Ignore
    }
}

fn one() -> u32 {
    1
}

/// A required pod (anti-)affinity term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodAffinityTerm {
    pub topology_key: String,
    /// Written `selector` or, as in a Pod spec, `labelSelector`; missing selects no pods.
    #[serde(default = "LabelSelector::nothing", alias = "labelSelector")]
    pub selector: LabelSelector,
    /// Namespaces the selector applies to; empty means the pod's own namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// An empty `namespaceSelector` (`{}`): the selector applies in every namespace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all_namespaces: bool,
}

impl PodAffinityTerm {
    /// Whether `other` (in `other_ns`) is selected by this term of a pod in `own_ns`.
    pub fn selects(&self, own_ns: &str, other_ns: &str, other_labels: &BTreeMap<String, String>) -> bool {
        let ns_ok = if self.all_namespaces {
            true
        } else if self.namespaces.is_empty() {
            own_ns == other_ns
        } else {
            self.namespaces.iter().any(|n| n == other_ns)
        };
        ns_ok && self.selector.matches(other_labels)
    }
}

/// A weighted preferred pod (anti-)affinity term, in the shape of a Pod spec's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedPodAffinityTerm {
    pub weight: i32,
    pub pod_affinity_term: PodAffinityTerm,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OwnerRef {
    pub kind: String,
    pub name: String,
}

/// A weighted preferred node-affinity term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PreferredTerm {
    pub weight: i32,
    pub requirements: Vec<Requirement>,
}

/// A pod as the scheduler sees it. Serialized, this is the compact form the watcher sends and the
/// CLI reads (see docs/configuration.md).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Pod {
    /// Unique id; defaults to `namespace/name`.
    pub uid: String,
    pub namespace: String,
    pub name: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Effective requests: containers, init containers, overhead, and one `pods` slot.
    pub requests: Resources,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Required node affinity: the terms are ORed, the requirements inside a term ANDed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub node_affinity: Vec<Vec<Requirement>>,
    /// Preferred node affinity, tried as required first and relaxed when it cannot be met.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferred_node_affinity: Vec<PreferredTerm>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub topology_spread: Vec<SpreadConstraint>,
    /// Required pod affinity terms.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pod_affinity: Vec<PodAffinityTerm>,
    /// Required pod anti-affinity terms.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pod_anti_affinity: Vec<PodAffinityTerm>,
    /// Preferred pod affinity terms: held as required until they cannot be met, then given up
    /// heaviest first (Karpenter's relaxation).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferred_pod_affinity: Vec<WeightedPodAffinityTerm>,
    /// Preferred pod anti-affinity terms, relaxed likewise after the affinity ones.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub preferred_pod_anti_affinity: Vec<WeightedPodAffinityTerm>,
    /// Ports its containers bind on the node: one pod per node for each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_ports: Vec<HostPort>,
    pub priority: i32,
    /// `controller.kubernetes.io/pod-deletion-cost`.
    pub deletion_cost: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerRef>,
    /// `karpenter.sh/do-not-disrupt: "true"`.
    pub do_not_disrupt: bool,
    /// A static pod's mirror (`kubernetes.io/config.mirror`): the kubelet runs it from a file on
    /// the node; it cannot be evicted or moved and never keeps a node busy.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mirror: bool,
    /// Set when the pod is bound to a node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// The pod uses Dynamic Resource Allocation (`spec.resourceClaims`, or a container's
    /// `resources.claims`). Like Karpenter at its default (`IGNORE_DRA_REQUESTS`), Nodewright
    /// cannot tell which devices a claim needs, so it provisions nothing for such a pod and leaves
    /// such a DaemonSet out of node overhead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resource_claims: bool,
}

impl Pod {
    /// A pod with the given requests (test and benchmark builder).
    pub fn new(name: &str, cpu_milli: u64, memory_bytes: u64) -> Self {
        let mut p = Pod {
            namespace: "default".into(),
            name: name.into(),
            requests: Resources::new()
                .with(Resource::Cpu, cpu_milli)
                .with(Resource::Memory, memory_bytes),
            ..Default::default()
        };
        p.normalize();
        p
    }

    pub fn with_label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    pub fn with_gpu(mut self, n: u64) -> Self {
        self.requests.set(Resource::NvidiaGpu, n);
        self
    }

    /// Fills defaults after deserialization: namespace, uid, one pod slot.
    pub fn normalize(&mut self) {
        if self.namespace.is_empty() {
            self.namespace = "default".into();
        }
        if self.uid.is_empty() {
            self.uid = format!("{}/{}", self.namespace, self.name);
        }
        if self.requests.get(Resource::Pods) == 0 {
            self.requests.set(Resource::Pods, 1);
        }
        // Deprecated label keys read as their stable keys (labels::NORMALIZED).
        let stable = |k: &mut String| {
            let n = crate::labels::normalized(k);
            if n != k.as_str() {
                *k = n.to_string();
            }
        };
        if self.node_selector.keys().any(|k| crate::labels::normalized(k) != k) {
            self.node_selector = std::mem::take(&mut self.node_selector)
                .into_iter()
                .map(|(k, v)| (crate::labels::normalized(&k).to_string(), v))
                .collect();
        }
        for r in self.node_affinity.iter_mut().flatten() {
            stable(&mut r.key);
        }
        for t in &mut self.preferred_node_affinity {
            for r in &mut t.requirements {
                stable(&mut r.key);
            }
        }
        for s in &mut self.topology_spread {
            stable(&mut s.topology_key);
        }
        for t in self.pod_affinity.iter_mut().chain(self.pod_anti_affinity.iter_mut()) {
            stable(&mut t.topology_key);
        }
    }

    /// Checks what deserialization cannot: names, requirement operators, spread skew.
    pub fn validate(&self, path: &str) -> Result<()> {
        if self.name.is_empty() {
            return Err(Error::invalid(format!("{path}.name"), "must not be empty"));
        }
        for (i, term) in self.node_affinity.iter().enumerate() {
            for (j, r) in term.iter().enumerate() {
                r.validate(&format!("{path}.nodeAffinity[{i}][{j}]"))?;
            }
        }
        for (i, s) in self.topology_spread.iter().enumerate() {
            if s.max_skew == 0 {
                return Err(Error::invalid(
                    format!("{path}.topologySpread[{i}].maxSkew"),
                    "must be at least 1",
                ));
            }
        }
        for (i, hp) in self.host_ports.iter().enumerate() {
            // As a Pod spec is checked: port 1-65535, protocol TCP, UDP or SCTP (case matters:
            // "tcp" would never conflict with "TCP").
            HostPort::new(
                i32::from(hp.port),
                Some(&hp.protocol),
                &format!("{path}.hostPorts[{i}]"),
            )?;
        }
        Ok(())
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// A daemonset pod (never evicted, counted as node overhead).
    pub fn is_daemonset(&self) -> bool {
        self.owner.as_ref().is_some_and(|o| o.kind == "DaemonSet")
    }

    /// A pod that lives and dies with its node (a DaemonSet's or a mirror pod): never moved,
    /// never counted as work that keeps a node busy.
    pub fn goes_with_node(&self) -> bool {
        self.is_daemonset() || self.mirror
    }
}
