//! Configuration from environment variables, validated once at start-up; every error names the
//! variable. [`ENV_VARS`] is the one list of what the functions read (docs/configuration.md and the
//! SAM template are checked against it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use nodewright_core::nodepool::Verdict;
use nodewright_core::ports::EpochMillis;
use nodewright_core::ports::cluster::ConfigKind;
use nodewright_core::ports::state::PriceSheet;

use nodewright_core::catalogue::OverheadConfig;
use nodewright_core::ports::state::RESERVATION_TTL_SECS;
use nodewright_core::scheduler::TypeIndex;
use nodewright_core::{Catalogue, Config, InstanceType};

use crate::{Error, Result};

/// Every environment variable the functions read: (name, required, meaning).
pub const ENV_VARS: &[(&str, bool, &str)] = &[
    (
        "NODEWRIGHT_CLUSTER_NAME",
        true,
        "EKS cluster name; every record and instance tag is scoped by it",
    ),
    ("AWS_REGION", true, "region of the cluster (Lambda sets it)"),
    (
        "NODEWRIGHT_NODEPOOLS",
        false,
        "NodePool / EC2NodeClass YAML, inline (or NODEWRIGHT_NODEPOOLS_FILE)",
    ),
    (
        "NODEWRIGHT_NODEPOOL_SOURCE",
        false,
        "cluster: NodePools and EC2NodeClasses from the Kubernetes API (the YAML as fallback where the kinds are not served); config: the YAML only; auto (default): config when YAML is set, else cluster",
    ),
    (
        "NODEWRIGHT_NODEPOOLS_FILE",
        false,
        "path of the NodePool / EC2NodeClass YAML bundled with the function",
    ),
    (
        "NODEWRIGHT_TABLE_PREFIX",
        false,
        "DynamoDB table name prefix (default nodewright)",
    ),
    (
        "NODEWRIGHT_CLUSTER_ENDPOINT",
        false,
        "API server URL; looked up with eks:DescribeCluster when unset",
    ),
    (
        "NODEWRIGHT_CLUSTER_CA",
        false,
        "base64 PEM CA bundle of the API server (with NODEWRIGHT_CLUSTER_ENDPOINT)",
    ),
    (
        "NODEWRIGHT_CLUSTER_ACCESS",
        false,
        "how the functions reach the API server: eks (default), kubeconfig or none",
    ),
    (
        "NODEWRIGHT_KUBECONFIG",
        false,
        "use this kubeconfig instead of EKS authentication (local runs)",
    ),
    (
        "NODEWRIGHT_KUBERNETES_VERSION",
        false,
        "cluster version for EC2NodeClass AMI aliases (e.g. 1.33)",
    ),
    (
        "NODEWRIGHT_LAUNCH_BUS",
        false,
        "EventBridge bus that hands each claim's launch to state-change (pod-pending; unset: launch inline)",
    ),
    (
        "NODEWRIGHT_REBALANCE",
        false,
        "rebalance recommendations: replace (default), cordon or ignore",
    ),
    (
        "NODEWRIGHT_REGISTRATION_TIMEOUT_SECS",
        false,
        "terminate claims not registered within this (default 900)",
    ),
    ("AWS_ENDPOINT_URL", false, "AWS endpoint override (local emulator)"),
    (
        "AWS_ENDPOINT_URL_PRICING",
        false,
        "Pricing API endpoint override (local runs; moto serves no Pricing API)",
    ),
];

/// What to do with an EC2 rebalance recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalancePolicy {
    /// Launch a replacement, cordon now, drain once the replacement is Ready.
    Replace,
    /// Cordon only.
    Cordon,
    /// Do nothing (Karpenter's behaviour).
    Ignore,
}

/// Where the NodePools come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolSource {
    /// The configured YAML only (`NODEWRIGHT_NODEPOOLS`, local runs, tests).
    Configured,
    /// NodePools and EC2NodeClasses listed from the Kubernetes API ([`crate::node_pools`]), the
    /// configured YAML when the cluster has none.
    Cluster,
}

/// What a configuration makes, derived once: the pools and classes, the region's instance types
/// some pool admits, their index and the classes' drift hashes. Handlers take one snapshot per
/// step ([`Settings::pools`]) so a refresh never changes the pools under a decision.
#[derive(Debug)]
pub struct Pools {
    pub config: Config,
    /// The region's catalogue, restricted to the types some pool's requirements admit.
    pub instance_types: Arc<[InstanceType]>,
    /// Index of `instance_types`, built once: every consolidation plan reuses it.
    pub type_index: TypeIndex,
    /// Every type the region offers, at the same prices: what an existing claim's type is looked
    /// up in (its usage, labels and price), since a pool changed at run time may no longer admit
    /// the type it was launched with.
    pub all_types: Arc<[InstanceType]>,
    all_index: TypeIndex,
    /// Drift hash of each EC2NodeClass by name: stamped on claims at launch, compared by the
    /// disruption planner.
    pub node_class_hashes: BTreeMap<String, String>,
    /// Read from the cluster: each object's verdict (empty for configured pools).
    pub objects: Vec<Verdict>,
    /// Each object's status as last listed or written, by kind and name: what a status write is
    /// compared with (status changes do not change the fingerprint).
    pub statuses: Mutex<BTreeMap<(ConfigKind, String), serde_json::Value>>,
    /// The names and generations the pools were built from: a listing with the same is not
    /// parsed again.
    pub fingerprint: String,
}

impl Pools {
    /// Derives everything from `config` for `region`, at the live `prices` when there are some
    /// (else the catalogue's).
    pub fn build(region: &str, mut config: Config, prices: Option<&PriceSheet>) -> Result<Pools> {
        config.link_node_classes();
        let mut instance_types = Catalogue::embedded().instance_types(region, &OverheadConfig::default());
        if instance_types.is_empty() {
            return Err(Error::config(
                "AWS_REGION",
                format!("{region:?} has no instance types in the catalogue"),
            ));
        }
        if let Some(p) = prices.filter(|p| p.region == region) {
            p.apply(&mut instance_types);
        }
        let all_types: Arc<[InstanceType]> = instance_types.clone().into();
        let all_index = TypeIndex::new(&all_types);
        // Only what some pool may launch: every plan prepares over this list.
        instance_types.retain(|t| config.node_pools.iter().any(|p| p.admits_type(t)));
        let instance_types: Arc<[InstanceType]> = instance_types.into();
        let type_index = TypeIndex::new(&instance_types);
        let node_class_hashes = config.node_class_hashes();
        Ok(Pools {
            config,
            instance_types,
            type_index,
            all_types,
            all_index,
            node_class_hashes,
            objects: Vec::new(),
            statuses: Mutex::new(BTreeMap::new()),
            fingerprint: String::new(),
        })
    }

    /// The instance type named `name`, if the region offers it (whether or not a pool admits it
    /// now: existing claims are looked up here).
    pub fn type_by_name(&self, name: &str) -> Option<&InstanceType> {
        self.all_index.position(name).and_then(|i| self.all_types.get(i))
    }
}

/// Validated settings shared by all handlers. Clones share the current pools (one execution
/// environment).
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster: String,
    pub region: String,
    pub pool_source: PoolSource,
    /// The pools from the configured YAML: used alone, or when the cluster has no NodePools.
    configured: Arc<RwLock<Arc<Pools>>>,
    current: Arc<RwLock<Arc<Pools>>>,
    /// The live prices the pools are built at (None: the catalogue's), and when the store was
    /// last read for newer ones ([`crate::prices`]).
    prices: Arc<RwLock<Option<Arc<PriceSheet>>>>,
    pub(crate) prices_checked_at: Arc<Mutex<Option<EpochMillis>>>,
    /// When a price refresh last failed (retried after [`crate::prices::PRICES_RETRY_MS`]).
    pub(crate) prices_failed_at: Arc<Mutex<Option<EpochMillis>>>,
    /// When the cluster's pools were last listed (for [`crate::node_pools::POOLS_TTL_MS`]).
    pub(crate) listed_at: Arc<Mutex<Option<EpochMillis>>>,
    pub rebalance: RebalancePolicy,
    pub registration_timeout_ms: i64,
    pub reservation_ttl_secs: i64,
    /// How long a forced (interruption) drain retries PDB-blocked evictions: inside the 2-minute notice.
    pub interruption_drain_deadline: Duration,
    /// The pause between tries at a busy Auto Scaling group lease (20 tries). Real time: the
    /// simulator's stories, on a virtual clock, shorten it.
    pub group_lease_pause: Duration,
    /// The consolidation planner's options (Nodewright's search; Karpenter's for comparisons).
    pub disruption: nodewright_core::disruption::Options,
}

impl Settings {
    /// Settings for tests and local runs.
    pub fn new(cluster: &str, region: &str, config: Config) -> Result<Settings> {
        let any_pool = !config.node_pools.is_empty();
        let pools = Pools::build(region, config, None)?;
        if pools.instance_types.is_empty() && any_pool {
            return Err(Error::config(
                "NODEWRIGHT_NODEPOOLS",
                format!("no instance type in {region:?} meets any NodePool's requirements"),
            ));
        }
        let pools = Arc::new(pools);
        Ok(Settings {
            cluster: cluster.into(),
            region: region.into(),
            pool_source: PoolSource::Configured,
            configured: Arc::new(RwLock::new(Arc::clone(&pools))),
            current: Arc::new(RwLock::new(pools)),
            prices: Arc::new(RwLock::new(None)),
            prices_checked_at: Arc::new(Mutex::new(None)),
            prices_failed_at: Arc::new(Mutex::new(None)),
            listed_at: Arc::new(Mutex::new(None)),
            rebalance: RebalancePolicy::Replace,
            registration_timeout_ms: 15 * 60 * 1000,
            reservation_ttl_secs: RESERVATION_TTL_SECS,
            interruption_drain_deadline: Duration::from_secs(90),
            group_lease_pause: Duration::from_millis(250),
            disruption: nodewright_core::disruption::Options::default(),
        })
    }

    /// A copy that shares nothing with `self` (clones share the pools, prices and caches, as
    /// invocations in one execution environment do): another environment's settings.
    pub fn detached(&self) -> Settings {
        Settings {
            configured: Arc::new(RwLock::new(self.configured_pools())),
            current: Arc::new(RwLock::new(self.pools())),
            prices: Arc::new(RwLock::new(self.prices())),
            prices_checked_at: Arc::new(Mutex::new(None)),
            prices_failed_at: Arc::new(Mutex::new(None)),
            listed_at: Arc::new(Mutex::new(None)),
            ..self.clone()
        }
    }

    /// The pools now: one snapshot, to be used for a whole step.
    pub fn pools(&self) -> Arc<Pools> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The pools from the configured YAML.
    pub fn configured_pools(&self) -> Arc<Pools> {
        Arc::clone(&self.configured.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The live prices the pools are built at, if any.
    pub fn prices(&self) -> Option<Arc<PriceSheet>> {
        self.prices.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Rebuilds the pools at `sheet`'s prices (the configured ones, and the cluster's if in use).
    pub fn set_prices(&self, sheet: Arc<PriceSheet>) -> Result<()> {
        let configured = self.configured_pools();
        let current = self.pools();
        let rebuilt = Arc::new(Pools::build(&self.region, configured.config.clone(), Some(&sheet))?);
        let new_current = if Arc::ptr_eq(&current, &configured) {
            Arc::clone(&rebuilt)
        } else {
            let mut p = Pools::build(&self.region, current.config.clone(), Some(&sheet))?;
            p.objects = current.objects.clone();
            p.fingerprint = current.fingerprint.clone();
            *p.statuses.lock().unwrap_or_else(|e| e.into_inner()) =
                current.statuses.lock().unwrap_or_else(|e| e.into_inner()).clone();
            Arc::new(p)
        };
        *self.prices.write().unwrap_or_else(|p| p.into_inner()) = Some(sheet);
        *self.configured.write().unwrap_or_else(|p| p.into_inner()) = rebuilt;
        self.set_pools(new_current);
        Ok(())
    }

    /// Makes `pools` the current pools (a refresh from the cluster).
    pub fn set_pools(&self, pools: Arc<Pools>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = pools;
    }

    /// The instance type named `name`, if the region offers it.
    pub fn type_by_name(&self, name: &str) -> Option<InstanceType> {
        self.pools().type_by_name(name).cloned()
    }

    /// Reads and validates the environment through `var` (std::env::var in the functions).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Settings> {
        let required = |name: &str| {
            var(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| Error::config(name, "required but not set"))
        };
        let cluster = required("NODEWRIGHT_CLUSTER_NAME")?;
        if cluster.len() > 100
            || !cluster
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::config(
                "NODEWRIGHT_CLUSTER_NAME",
                format!("{cluster:?} is not an EKS cluster name (letters, digits, - and _, at most 100)"),
            ));
        }
        let region = required("AWS_REGION")?;
        // Unset (or `auto`): the cluster's unless YAML is configured, so a stack upgraded with its
        // pools in the parameter keeps them until it opts in.
        let explicit = match var("NODEWRIGHT_NODEPOOL_SOURCE").as_deref().map(str::trim) {
            None | Some("") | Some("auto") => None,
            Some("cluster") => Some(PoolSource::Cluster),
            Some("config") => Some(PoolSource::Configured),
            Some(other) => {
                return Err(Error::config(
                    "NODEWRIGHT_NODEPOOL_SOURCE",
                    format!("{other:?} is not one of auto, cluster, config"),
                ));
            }
        };
        let text = match (var("NODEWRIGHT_NODEPOOLS"), var("NODEWRIGHT_NODEPOOLS_FILE")) {
            (Some(inline), _) if !inline.trim().is_empty() => Some((inline, "NODEWRIGHT_NODEPOOLS".to_string())),
            (_, Some(path)) => Some((
                std::fs::read_to_string(&path)
                    .map_err(|e| Error::config("NODEWRIGHT_NODEPOOLS_FILE", format!("cannot read {path:?}: {e}")))?,
                path,
            )),
            _ => None,
        };
        let pool_source = explicit.unwrap_or(if text.is_some() {
            PoolSource::Configured
        } else {
            PoolSource::Cluster
        });
        let config = match text {
            Some((text, source)) => {
                let (config, warnings) = Config::parse_strict(&text, &source)
                    .map_err(|e| Error::config("NODEWRIGHT_NODEPOOLS", e.to_string()))?;
                for w in warnings {
                    tracing::warn!(warning = %w, "NodePool configuration");
                }
                if config.node_pools.is_empty() && pool_source == PoolSource::Configured {
                    return Err(Error::config(
                        "NODEWRIGHT_NODEPOOLS",
                        "no NodePool in the configuration",
                    ));
                }
                config
            }
            // The cluster's NodePools alone (none configured as a fallback).
            None if pool_source == PoolSource::Cluster => Config::default(),
            None => {
                return Err(Error::config(
                    "NODEWRIGHT_NODEPOOLS",
                    "set NODEWRIGHT_NODEPOOLS (YAML) or NODEWRIGHT_NODEPOOLS_FILE (path), \
                     or NODEWRIGHT_NODEPOOL_SOURCE=cluster",
                ));
            }
        };
        let mut s = Settings::new(&cluster, &region, config).map_err(|e| match e {
            Error::Config { reason, .. } => Error::config("AWS_REGION", reason),
            other => other,
        })?;
        s.pool_source = pool_source;
        if let Some(v) = var("NODEWRIGHT_REBALANCE") {
            s.rebalance = match v.trim() {
                "replace" => RebalancePolicy::Replace,
                "cordon" => RebalancePolicy::Cordon,
                "ignore" => RebalancePolicy::Ignore,
                other => {
                    return Err(Error::config(
                        "NODEWRIGHT_REBALANCE",
                        format!("{other:?} is not one of replace, cordon, ignore"),
                    ));
                }
            };
        }
        if let Some(v) = var("NODEWRIGHT_REGISTRATION_TIMEOUT_SECS") {
            let secs: i64 = v
                .trim()
                .parse()
                .ok()
                .filter(|s| (60..=86_400).contains(s))
                .ok_or_else(|| {
                    Error::config(
                        "NODEWRIGHT_REGISTRATION_TIMEOUT_SECS",
                        format!("{v:?} is not a number of seconds in 60..=86400"),
                    )
                })?;
            s.registration_timeout_ms = secs * 1000;
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const POOL: &str = "apiVersion: karpenter.sh/v1\nkind: NodePool\nmetadata: {name: default}\nspec:\n  template:\n    spec:\n      requirements: []\n";

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn every_error_names_its_variable() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![], "NODEWRIGHT_CLUSTER_NAME"),
            (vec![("NODEWRIGHT_CLUSTER_NAME", "prod")], "AWS_REGION"),
            (
                vec![
                    ("NODEWRIGHT_CLUSTER_NAME", "prod"),
                    ("AWS_REGION", "us-east-1"),
                    ("NODEWRIGHT_NODEPOOL_SOURCE", "config"),
                ],
                "NODEWRIGHT_NODEPOOLS",
            ),
            (
                vec![
                    ("NODEWRIGHT_CLUSTER_NAME", "prod"),
                    ("AWS_REGION", "us-east-1"),
                    ("NODEWRIGHT_NODEPOOL_SOURCE", "crd"),
                ],
                "NODEWRIGHT_NODEPOOL_SOURCE",
            ),
            (
                vec![("NODEWRIGHT_CLUSTER_NAME", "bad name!"), ("AWS_REGION", "us-east-1")],
                "NODEWRIGHT_CLUSTER_NAME",
            ),
            (
                vec![
                    ("NODEWRIGHT_CLUSTER_NAME", "p"),
                    ("AWS_REGION", "us-east-1"),
                    ("NODEWRIGHT_NODEPOOLS", POOL),
                    ("NODEWRIGHT_REBALANCE", "maybe"),
                ],
                "NODEWRIGHT_REBALANCE",
            ),
            (
                vec![
                    ("NODEWRIGHT_CLUSTER_NAME", "p"),
                    ("AWS_REGION", "us-east-1"),
                    ("NODEWRIGHT_NODEPOOLS", "kind: NodePool\nspec: 3"),
                ],
                "NODEWRIGHT_NODEPOOLS",
            ),
            (
                vec![
                    ("NODEWRIGHT_CLUSTER_NAME", "p"),
                    ("AWS_REGION", "xx-nowhere-1"),
                    ("NODEWRIGHT_NODEPOOLS", POOL),
                ],
                "AWS_REGION",
            ),
        ];
        for (pairs, variable) in cases {
            let e = Settings::from_env(env(&pairs)).expect_err(variable);
            assert!(e.to_string().starts_with(variable), "{variable}: {e}");
        }
        let ok = Settings::from_env(env(&[
            ("NODEWRIGHT_CLUSTER_NAME", "prod"),
            ("AWS_REGION", "us-east-1"),
            ("NODEWRIGHT_NODEPOOLS", POOL),
            ("NODEWRIGHT_REBALANCE", "cordon"),
        ]))
        .expect("valid");
        assert_eq!(ok.rebalance, RebalancePolicy::Cordon);
        assert_eq!(
            ok.pool_source,
            PoolSource::Configured,
            "YAML given, no source: the YAML"
        );
        assert!(!ok.pools().instance_types.is_empty());
        let from_cluster_only =
            Settings::from_env(env(&[("NODEWRIGHT_CLUSTER_NAME", "prod"), ("AWS_REGION", "us-east-1")]))
                .expect("the cluster's NodePools alone");
        assert!(from_cluster_only.pools().config.node_pools.is_empty());
        assert_eq!(from_cluster_only.pool_source, PoolSource::Cluster);
        let opted_in = Settings::from_env(env(&[
            ("NODEWRIGHT_CLUSTER_NAME", "prod"),
            ("AWS_REGION", "us-east-1"),
            ("NODEWRIGHT_NODEPOOLS", POOL),
            ("NODEWRIGHT_NODEPOOL_SOURCE", "cluster"),
        ]))
        .expect("the cluster's, the YAML as fallback");
        assert_eq!(opted_in.pool_source, PoolSource::Cluster);
    }
}
