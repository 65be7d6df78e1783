//! What the cluster port (the Kubernetes API) deals in: nodes as the functions see them, lists with
//! the objects the core model could not take, and how a drain is asked for and what it did.

use std::time::Duration;

use k8s_openapi::api::core::v1 as k8s;

use crate::model;
use crate::registration::UNREGISTERED_TAINT;

/// The taint on a node Nodewright is disrupting (consolidation, expiry, drift).
pub const DISRUPTED_TAINT: &str = "nodewright.io/disrupted";
/// The taint on a node whose instance is being interrupted (spot, rebalance, scheduled change).
pub const INTERRUPTED_TAINT: &str = "nodewright.io/interrupted";

/// A list converted into the core model, with the objects that could not be converted kept aside
/// (one bad pod must not stop provisioning for the others).
#[derive(Debug, Clone)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub rejected: Vec<Rejected>,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Listed {
            items: Vec::new(),
            rejected: Vec::new(),
        }
    }
}

impl<T> Listed<T> {
    /// Adds another page or list (another node's pods) after what is here.
    pub fn append(&mut self, part: Listed<T>) {
        self.items.extend(part.items);
        self.rejected.extend(part.rejected);
    }
}

/// An object the core model could not take, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub name: String,
    pub reason: String,
}

/// A node as the functions need it: the core model plus what links it to EC2 and to a claim.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub node: model::Node,
    /// From `spec.providerID` (`aws:///zone/i-...`): what links a Node to its claim.
    pub instance_id: Option<String>,
    pub ready: bool,
    /// Still carries the unregistered taint (its claim has not labelled it yet).
    pub unregistered: bool,
}

/// A Kubernetes Node as the functions see it: the core model, its instance (from providerID),
/// readiness and registration.
pub fn cluster_node(n: &k8s::Node, path: &str) -> crate::Result<ClusterNode> {
    Ok(ClusterNode {
        node: model::node_from_k8s(n, path)?,
        instance_id: n
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .and_then(model::instance_id_from_provider_id)
            .map(str::to_string),
        ready: model::node_is_ready(n),
        unregistered: n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == UNREGISTERED_TAINT)),
    })
}

/// Why the node is being drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainMode {
    /// Nodewright chose to disrupt (consolidation, drift, expiry): do-not-disrupt pods veto it.
    Voluntary,
    /// The instance is going away (spot interruption, scheduled maintenance): evict what can be
    /// evicted, leave do-not-disrupt pods alone.
    Forced,
}

/// How long and how patiently to drain.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    pub mode: DrainMode,
    /// Give up retrying PDB-blocked evictions after this long.
    pub deadline: Duration,
    /// First wait after a 429; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// The pool's terminationGracePeriod has run out for this node: delete instead of evict.
    pub grace_expired: bool,
}

impl DrainOptions {
    pub fn new(mode: DrainMode, deadline: Duration) -> Self {
        DrainOptions {
            mode,
            deadline,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            grace_expired: false,
        }
    }
}

/// What a drain did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// `namespace/name` of pods evicted (or already gone).
    pub evicted: Vec<String>,
    /// Pods deleted directly because the termination grace period ran out.
    pub deleted: Vec<String>,
    /// Pods not touched: DaemonSet, mirror, finished, already terminating, or do-not-disrupt in a
    /// forced drain.
    pub skipped: Vec<String>,
    /// Eviction attempts refused by a PDB (429) before the drain finished.
    pub pdb_retries: u32,
    /// Pods whose eviction (or deletion) failed for another reason, with the last error: logged
    /// and left for the next drain, never fatal to the rest.
    pub failed: Vec<(String, String)>,
}

/// The kinds of configuration object the functions read from the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigKind {
    /// `karpenter.sh/v1` `NodePool`.
    NodePool,
    /// `karpenter.k8s.aws/v1` `EC2NodeClass`.
    Ec2NodeClass,
}

impl ConfigKind {
    pub fn kind(self) -> &'static str {
        match self {
            ConfigKind::NodePool => "NodePool",
            ConfigKind::Ec2NodeClass => "EC2NodeClass",
        }
    }
    pub fn api_version(self) -> &'static str {
        match self {
            ConfigKind::NodePool => "karpenter.sh/v1",
            ConfigKind::Ec2NodeClass => "karpenter.k8s.aws/v1",
        }
    }
}

/// A NodePool or EC2NodeClass as the API server holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigObject {
    pub kind: ConfigKind,
    pub name: String,
    /// `metadata.generation`: bumped by the API server on every spec change (conditions carry it
    /// as `observedGeneration`).
    pub generation: i64,
    /// The whole object (`apiVersion`, `kind`, `metadata`, `spec`, `status`).
    pub object: serde_json::Value,
}

impl ConfigObject {
    /// The object's `status`, or null.
    pub fn status(&self) -> &serde_json::Value {
        self.object.get("status").unwrap_or(&serde_json::Value::Null)
    }
}

/// Every NodePool and EC2NodeClass in the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigObjects {
    /// False when the API server does not serve the kinds (no Karpenter CRDs and none of ours).
    pub served: bool,
    pub node_pools: Vec<ConfigObject>,
    pub node_classes: Vec<ConfigObject>,
}

/// Whether an Event reports normal operation or a problem (`kubectl describe` shows both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventObject {
    /// `Pod` or `Node`.
    pub kind: &'static str,
    /// Empty for cluster-scoped objects (nodes); the Event is then written to `default`.
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl EventObject {
    pub fn pod(namespace: &str, name: &str, uid: Option<&str>) -> Self {
        EventObject {
            kind: "Pod",
            namespace: namespace.into(),
            name: name.into(),
            uid: uid.map(str::to_string),
        }
    }
    pub fn node(name: &str) -> Self {
        EventObject {
            kind: "Node",
            namespace: String::new(),
            name: name.into(),
            uid: None,
        }
    }
}

/// A Kubernetes Event to record (events.k8s.io/v1), as Karpenter records them: what happened to a
/// pod or node and why, so `kubectl describe` shows Nodewright's decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub regarding: EventObject,
    pub event_type: EventType,
    /// CamelCase, e.g. `Nominated`, `FailedScheduling`, `DisruptionTerminating`.
    pub reason: String,
    /// What Nodewright did (`Provision`, `Disrupt`, `Interrupt`).
    pub action: &'static str,
    /// Human-readable, at most [`EVENT_NOTE_MAX`] bytes (the API server's limit is 1 KiB).
    pub note: String,
    /// When it happened (epoch ms); not part of [`ObjectEvent::name`].
    pub time: super::EpochMillis,
}

/// The API server refuses longer Event notes.
pub const EVENT_NOTE_MAX: usize = 1024;
/// At most this many Events are posted per invocation; the rest are dropped and counted (a burst
/// of 10,000 pending pods must not become 10,000 API calls).
pub const MAX_EVENTS_PER_INVOCATION: usize = 100;

impl ObjectEvent {
    pub fn new(
        regarding: EventObject,
        event_type: EventType,
        reason: &str,
        action: &'static str,
        note: impl Into<String>,
    ) -> Self {
        let mut note: String = note.into();
        if note.len() > EVENT_NOTE_MAX {
            let mut cut = EVENT_NOTE_MAX - 3;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
            note.push_str("...");
        }
        ObjectEvent {
            regarding,
            event_type,
            reason: reason.into(),
            action,
            note,
            time: 0,
        }
    }

    /// A name that is the same for the same object, reason and note: a retried or duplicated
    /// invocation creates the same name, and the API server refuses the second (409), which is how
    /// Events are deduplicated without reading them back.
    pub fn name(&self) -> String {
        let digest = crate::digest::fnv1a_hex(
            format!(
                "{}/{}/{}/{}/{}/{}",
                self.regarding.kind,
                self.regarding.namespace,
                self.regarding.name,
                self.regarding.uid.as_deref().unwrap_or(""),
                self.reason,
                self.note
            )
            .bytes(),
        );
        // A DNS subdomain of at most 253 characters: the regarding name kept readable, cut to 200
        // and never ending in `-` or `.` (the API server refuses `web-.abc`).
        let mut base: String = self
            .regarding
            .name
            .chars()
            .take(200)
            .map(|c| c.to_ascii_lowercase())
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        while base.ends_with(['-', '.']) {
            base.pop();
        }
        if base.is_empty() {
            return digest;
        }
        format!("{base}.{digest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_dns_subdomains_the_same_for_the_same_event() {
        let long = format!("{}-{}", "a".repeat(199), "b".repeat(60));
        let e = ObjectEvent::new(
            EventObject::pod("ns", &long, None),
            EventType::Normal,
            "Nominated",
            "Provision",
            "x",
        );
        let name = e.name();
        assert!(name.len() <= 253, "{}", name.len());
        assert!(!name.contains("-."), "the cut does not end in '-': {name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'),
            "{name}"
        );
        let mut later = e.clone();
        later.time = 99;
        assert_eq!(later.name(), name);
        let other = ObjectEvent::new(
            EventObject::pod("ns", &long, None),
            EventType::Normal,
            "Nominated",
            "Provision",
            "y",
        );
        assert_ne!(other.name(), name, "another note is another Event");
    }
}
