//! NodePool configuration: Karpenter v1 `NodePool` and `EC2NodeClass` (our config format, so a
//! migration from Karpenter is a copy), the older `v1alpha5` `Provisioner` / `AWSNodeTemplate`
//! (converted with warnings), and Nodewright's `AutoScalingPool` extension for pools backed by an
//! existing Auto Scaling group.

mod asg;
mod block_devices;
mod diagnostics;
mod disruption_spec;
mod duration;
mod fields;
mod kubelet;
mod legacy;
mod nodeclass;
pub mod objects;
mod parse;

use std::collections::BTreeMap;

use serde::Serialize;

pub use duration::{format_duration, parse_duration};
pub use objects::{ClusterConfig, Verdict};

use crate::catalogue::{OverheadConfig, Reserved, Threshold};
use crate::model::Taint;
use crate::requirements::Requirement;
use crate::resources::Resources;

/// Karpenter's default `expireAfter` (720h).
pub const DEFAULT_EXPIRE_AFTER_SECS: u64 = 720 * 3600;

/// Everything a configuration file declares.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub node_pools: Vec<NodePool>,
    pub node_classes: Vec<Ec2NodeClass>,
}

/// The result of parsing: the config when valid, and every diagnostic either way.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

/// What a field the format does not have is: Kubernetes' strict field validation (kubectl's default)
/// refuses it, and so do we; allowed, it is a warning and ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnknownFields {
    #[default]
    Error,
    Warn,
}

impl Config {
    /// Parses one or more YAML/JSON files' worth of documents. Errors are collected, not
    /// short-circuited, so that a user sees every problem at once.
    pub fn parse(text: &str, source: &str) -> (Option<Config>, Diagnostics) {
        parse::parse_config(text, source)
    }

    /// Parses several files (text, source name) as one configuration, each with its own errors
    /// and warnings; a NodePool's nodeClassRef may name an EC2NodeClass in any of them. `None` when
    /// any file has an error.
    pub fn parse_all(files: &[(String, String)]) -> (Option<Config>, Diagnostics) {
        Config::parse_all_with(files, UnknownFields::Error)
    }

    /// [`Config::parse_all`], with unknown fields as `unknown` says.
    pub fn parse_all_with(files: &[(String, String)], unknown: UnknownFields) -> (Option<Config>, Diagnostics) {
        // The class names every file declares, read first (a file that does not parse declares none).
        let classes: Vec<Vec<String>> = files
            .iter()
            .map(|(text, source)| {
                parse::parse_config_with(text, source, &[], unknown)
                    .0
                    .map(|c| c.node_classes.into_iter().map(|n| n.name).collect())
                    .unwrap_or_default()
            })
            .collect();
        let mut config = Config::default();
        let mut all = Diagnostics::default();
        let mut pool_sources: BTreeMap<String, String> = BTreeMap::new();
        let mut class_sources: BTreeMap<String, String> = BTreeMap::new();
        for (i, (text, source)) in files.iter().enumerate() {
            let others: Vec<String> = classes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, names)| names.iter().cloned())
                .collect();
            let (c, d) = parse::parse_config_with(text, source, &others, unknown);
            all.errors.extend(d.errors);
            all.warnings.extend(d.warnings);
            if let Some(c) = c {
                // A name defined in two files: the later definition is used (see `merge`), said.
                for p in &c.node_pools {
                    if let Some(first) = pool_sources.insert(p.name.clone(), source.clone()) {
                        all.warnings.push(format!(
                            "{source}: NodePool {}: also defined in {first}; this later definition is used",
                            p.name
                        ));
                    }
                }
                for k in &c.node_classes {
                    if let Some(first) = class_sources.insert(k.name.clone(), source.clone()) {
                        all.warnings.push(format!(
                            "{source}: EC2NodeClass {}: also defined in {first}; this later definition is used",
                            k.name
                        ));
                    }
                }
                config.merge(c);
            }
        }
        (all.errors.is_empty().then_some(config), all)
    }

    /// Parses and turns any error into [`crate::Error::Config`]; warnings are returned.
    pub fn parse_strict(text: &str, source: &str) -> crate::Result<(Config, Vec<String>)> {
        match Config::parse(text, source) {
            (Some(c), d) if d.errors.is_empty() => Ok((c, d.warnings)),
            (_, d) => Err(crate::Error::Config(d.errors)),
        }
    }

    /// Gives each pool what its EC2NodeClass makes its nodes keep back (None where that is the
    /// default, or the class is not here): called wherever a configuration is complete, so the
    /// scheduler plans each pool with the allocatable its nodes will register.
    pub fn link_node_classes(&mut self) {
        let default = OverheadConfig::default();
        for p in &mut self.node_pools {
            let class = match (&p.backing, &p.node_class) {
                (PoolBacking::Fleet, Some(name)) => self.node_classes.iter().find(|c| &c.name == name),
                _ => None,
            };
            p.node_overhead = class.map(Ec2NodeClass::overhead).filter(|o| *o != default);
        }
    }

    pub fn pool(&self, name: &str) -> Option<&NodePool> {
        self.node_pools.iter().find(|p| p.name == name)
    }

    /// The drift hash of every EC2NodeClass, by name ([`Ec2NodeClass::drift_hash`]).
    pub fn node_class_hashes(&self) -> BTreeMap<String, String> {
        self.node_classes
            .iter()
            .map(|c| (c.name.clone(), c.drift_hash()))
            .collect()
    }

    /// Merges another file's declarations (the CLI accepts several files).
    /// Adds `other`'s pools and classes; one with a name already here replaces it (the later
    /// definition wins, as `kubectl apply` of the files in order would leave it), so every lookup by
    /// name agrees.
    pub fn merge(&mut self, other: Config) {
        for p in other.node_pools {
            self.node_pools.retain(|q| q.name != p.name);
            self.node_pools.push(p);
        }
        for c in other.node_classes {
            self.node_classes.retain(|k| k.name != c.name);
            self.node_classes.push(c);
        }
        self.link_node_classes();
    }
}

/// How a pool's nodes are bought.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum PoolBacking {
    /// Groupless: EC2 CreateFleet over the pool's compatible instance types (Karpenter's model).
    Fleet,
    /// An existing Auto Scaling group of fixed instance types, scaled by desired capacity.
    AutoScalingGroup {
        group_name: String,
        min_size: u32,
        max_size: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum ConsolidationPolicy {
    WhenEmpty,
    WhenEmptyOrUnderutilized,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum DisruptionReason {
    Underutilized,
    Empty,
    Drifted,
}

impl DisruptionReason {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Underutilized" => Some(Self::Underutilized),
            "Empty" => Some(Self::Empty),
            "Drifted" => Some(Self::Drifted),
            _ => None,
        }
    }
}

/// How many nodes a budget lets be disrupted at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BudgetNodes {
    Count(u64),
    Percent(u8),
}

impl BudgetNodes {
    /// Allowed disruptions for a pool of `total` nodes; percentages round up, as Karpenter does.
    pub fn allowed(self, total: u64) -> u64 {
        match self {
            BudgetNodes::Count(n) => n,
            BudgetNodes::Percent(p) => (total * u64::from(p)).div_ceil(100),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    pub nodes: BudgetNodes,
    /// Cron schedule (UTC) when the budget starts being active; None means always.
    pub schedule: Option<String>,
    /// How long the budget stays active after each schedule hit, seconds.
    pub duration_secs: Option<u64>,
    /// Reasons the budget applies to; empty means all.
    pub reasons: Vec<DisruptionReason>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Disruption {
    pub consolidation_policy: ConsolidationPolicy,
    /// None means "Never".
    pub consolidate_after_secs: Option<u64>,
    pub budgets: Vec<Budget>,
}

impl Default for Disruption {
    fn default() -> Self {
        Disruption {
            consolidation_policy: ConsolidationPolicy::WhenEmptyOrUnderutilized,
            consolidate_after_secs: Some(0),
            budgets: vec![Budget {
                nodes: BudgetNodes::Percent(10),
                schedule: None,
                duration_secs: None,
                reasons: Vec::new(),
            }],
        }
    }
}

/// Pool limits: resources (counted pessimistically, by the largest type a claim may become) and
/// an optional node count.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    pub resources: Resources,
    /// The resources the pool names, zero included: `cpu: "0"` launches nothing (as in Karpenter),
    /// which `resources` alone cannot tell from no limit at all.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub named: std::collections::BTreeSet<String>,
    pub nodes: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.resources.is_zero() && self.named.is_empty() && self.nodes.is_none()
    }

    /// The limit on resource `name` (its Kubernetes name), if the pool sets one, zero included.
    pub fn get(&self, name: &str) -> Option<u64> {
        let v = self.resources.get_named(name);
        (v > 0 || self.named.contains(name)).then_some(v)
    }

    /// The limit on `r`, if the pool sets one.
    pub fn of(&self, r: crate::Resource) -> Option<u64> {
        self.get(r.name())
    }

    /// The limit on all accelerators together (NVIDIA, AMD, Neuron) for the usage counters, which
    /// keep one GPU count: the sum of the pool's accelerator limits when above zero. A zero limit
    /// on one kind (`nvidia.com/gpu: 0`) is the scheduler's to enforce, per kind: summed, it would
    /// refuse the other kinds too.
    pub fn gpus(&self) -> Option<u64> {
        let v = self.resources.accelerators();
        (v > 0).then_some(v)
    }

    /// Every limited resource and its limit, zero limits included.
    pub fn entries(&self) -> Vec<(String, u64)> {
        let mut out = self.resources.entries();
        for n in &self.named {
            if !out.iter().any(|(k, _)| k == n) {
                out.push((n.clone(), 0));
            }
        }
        out
    }
}

/// A pool of nodes: requirements, template labels/taints, limits, disruption settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePool {
    pub name: String,
    /// Higher weights are tried first (0 when unset).
    pub weight: u32,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub requirements: Vec<Requirement>,
    pub taints: Vec<Taint>,
    /// Taints the node starts with and sheds once ready; ignored for scheduling decisions.
    pub startup_taints: Vec<Taint>,
    pub node_class: Option<String>,
    /// None means "Never".
    pub expire_after_secs: Option<u64>,
    pub termination_grace_period_secs: Option<u64>,
    pub limits: Limits,
    pub disruption: Disruption,
    pub backing: PoolBacking,
    /// What the pool's nodes keep back from pods, from its EC2NodeClass ([`Config::link_node_classes`]);
    /// None: Karpenter's defaults, as the catalogue's allocatable already holds.
    #[serde(skip)]
    pub node_overhead: Option<OverheadConfig>,
}

impl NodePool {
    /// A pool with Karpenter's defaults and no requirements (test and benchmark builder).
    pub fn new(name: &str) -> Self {
        NodePool {
            name: name.to_string(),
            weight: 0,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            requirements: Vec::new(),
            taints: Vec::new(),
            startup_taints: Vec::new(),
            node_class: Some("default".into()),
            expire_after_secs: Some(DEFAULT_EXPIRE_AFTER_SECS),
            termination_grace_period_secs: None,
            limits: Limits::default(),
            disruption: Disruption::default(),
            backing: PoolBacking::Fleet,
            node_overhead: None,
        }
    }

    /// Allocatable of this pool's nodes of type `t`: its EC2NodeClass's kubelet settings and
    /// volumes applied ([`NodePool::node_overhead`]), before daemonsets.
    pub fn allocatable_of(&self, t: &crate::InstanceType) -> Resources {
        match &self.node_overhead {
            Some(cfg) => t.resources_under(cfg).1,
            None => t.allocatable.clone(),
        }
    }

    /// Whether the pool's instance-type requirements admit `t` (offerings, zones and capacity
    /// types are the scheduler's to check).
    pub fn admits_type(&self, t: &crate::InstanceType) -> bool {
        admits(&self.type_requirements().collect::<Vec<_>>(), t)
    }

    /// The requirements on instance-type labels (what [`NodePool::admits_type`] checks): collect
    /// them once to test many types.
    pub fn type_requirements(&self) -> impl Iterator<Item = &Requirement> {
        self.requirements
            .iter()
            .filter(|r| crate::labels::INSTANCE_TYPE_KEYS.contains(&r.key.as_str()))
    }

    pub fn with_requirement(mut self, r: Requirement) -> Self {
        self.requirements.push(r);
        self
    }
}

/// A selector term for subnets, security groups or AMIs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectorTerm {
    pub tags: BTreeMap<String, String>,
    pub id: Option<String>,
    pub name: Option<String>,
    pub alias: Option<String>,
    pub owner: Option<String>,
    pub ssm_parameter: Option<String>,
}

/// An EC2NodeClass's `kubelet`: given to the node's kubelet (nodeadm's `NodeConfig` or
/// Bottlerocket's settings) and, where it changes what pods can use (max pods, pods per core,
/// reserved resources, hard eviction thresholds), to the scheduler ([`OverheadConfig::of_class`]).
/// Maps hold the values as written (validated); fields added after the first release are left out
/// of the class's digest when unset, so an upgrade drifts no node.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletConfig {
    pub max_pods: Option<u32>,
    pub pods_per_core: Option<u32>,
    pub kube_reserved: BTreeMap<String, String>,
    pub system_reserved: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_hard: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_soft: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_max_pod_grace_period: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_gc_high_threshold_percent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_gc_low_threshold_percent: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_cfs_quota: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cluster_dns: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockDevice {
    pub device_name: String,
    pub volume_size_gib: Option<u64>,
    pub volume_type: Option<String>,
    pub encrypted: Option<bool>,
    pub root_volume: bool,
    // Read since the block-device release: left out of the class's digest when unset, so an
    // upgrade drifts no node.
    #[serde(rename = "kmsKeyID", skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iops: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<u32>,
    #[serde(rename = "snapshotID", skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_initialization_rate: Option<u32>,
}

/// Karpenter's `EC2NodeClass`: how nodes are launched (AMI, subnets, security groups, role).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ec2NodeClass {
    pub name: String,
    pub ami_family: Option<String>,
    pub ami_selector_terms: Vec<SelectorTerm>,
    pub subnet_selector_terms: Vec<SelectorTerm>,
    pub security_group_selector_terms: Vec<SelectorTerm>,
    pub role: Option<String>,
    pub instance_profile: Option<String>,
    pub tags: BTreeMap<String, String>,
    pub user_data: Option<String>,
    pub kubelet: KubeletConfig,
    pub block_device_mappings: Vec<BlockDevice>,
    /// IMDSv2 is required unless the class says otherwise.
    pub http_tokens_required: bool,
    /// `instanceStorePolicy: RAID0`: the instance store, striped, holds the kubelet's ephemeral
    /// storage.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub instance_store_raid0: bool,
}

impl Ec2NodeClass {
    /// Whether nodes boot Bottlerocket (which keeps the kubelet's data on `/dev/xvdb` and does not
    /// honour `podsPerCore`).
    pub fn is_bottlerocket(&self) -> bool {
        let family = self.ami_family.as_deref().map(str::to_ascii_lowercase);
        let alias = self.ami_selector_terms.iter().find_map(|t| t.alias.as_deref());
        family.as_deref() == Some("bottlerocket")
            || alias.is_some_and(|a| a.to_ascii_lowercase().starts_with("bottlerocket@"))
    }

    /// What this class's nodes keep back from pods, as Karpenter computes it: the kubelet's max
    /// pods, pods per core (not on Bottlerocket), kube- and system-reserved, the hard memory and
    /// nodefs eviction thresholds (soft ones do not change allocatable), and ephemeral storage from
    /// the instance store under RAID0, else the root volume (the one marked `rootVolume`, else the
    /// AMI family's data device: `/dev/xvda`, Bottlerocket's `/dev/xvdb`), else 20 GiB.
    pub fn overhead(&self) -> OverheadConfig {
        let k = &self.kubelet;
        let reserved = |m: &BTreeMap<String, String>| {
            let q = |name: &str, scale| m.get(name).and_then(|v| crate::quantity::parse_quantity(v, scale).ok());
            Reserved {
                cpu_milli: q("cpu", crate::quantity::Scale::Milli),
                memory_bytes: q("memory", crate::quantity::Scale::Unit),
                ephemeral_bytes: q("ephemeral-storage", crate::quantity::Scale::Unit),
            }
        };
        let mut cfg = OverheadConfig {
            max_pods: k.max_pods,
            pods_per_core: k.pods_per_core.filter(|_| !self.is_bottlerocket()),
            kube_reserved: reserved(&k.kube_reserved),
            system_reserved: reserved(&k.system_reserved),
            instance_store_raid0: self.instance_store_raid0,
            ..OverheadConfig::default()
        };
        if let Some(t) = k
            .eviction_hard
            .get("memory.available")
            .and_then(|v| Threshold::parse(v).ok())
        {
            cfg.eviction_memory = t;
        }
        if let Some(t) = k
            .eviction_hard
            .get("nodefs.available")
            .and_then(|v| Threshold::parse(v).ok())
        {
            cfg.eviction_nodefs = t;
        }
        let data_device = if self.is_bottlerocket() {
            "/dev/xvdb"
        } else {
            "/dev/xvda"
        };
        let root = self
            .block_device_mappings
            .iter()
            .find(|b| b.root_volume)
            .or_else(|| self.block_device_mappings.iter().find(|b| b.device_name == data_device));
        if let Some(gib) = root.and_then(|b| b.volume_size_gib) {
            cfg.root_volume_gib = gib;
        }
        cfg
    }

    /// A stable digest of everything in the class that shapes a launched node (AMI, subnet and
    /// security-group selectors, role, tags, user data, kubelet, block devices, IMDS): a node
    /// launched under another digest has drifted. Nodewright does not resolve selectors to AMI,
    /// subnet or group ids, so a change of the selectors (not of what they select) is what drifts.
    /// A stable digest of the class's canonical JSON.
    pub fn drift_hash(&self) -> String {
        crate::digest::fnv1a_hex(serde_json::to_vec(self).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests;

/// Whether `t` meets every one of a pool's instance-type requirements ([`NodePool::type_requirements`]).
pub fn admits(type_requirements: &[&Requirement], t: &crate::InstanceType) -> bool {
    type_requirements
        .iter()
        .all(|r| r.matches(t.labels.get(&r.key).map(String::as_str)))
}
