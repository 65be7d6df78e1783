//! A kubelet emulator that shares none of Nodewright's assumptions. Given only what EC2 holds for an
//! instance (its id, private IP, zone, type, architecture, and its user data), it produces the Node
//! a real EKS node would register:
//!
//! - name `ip-a-b-c-d.ec2.internal` (us-east-1) or `ip-a-b-c-d.<region>.compute.internal`;
//! - `spec.providerID` `aws:///<zone>/<instance-id>`;
//! - the labels the kubelet and the cloud controller set themselves (`kubernetes.io/hostname`,
//!   `kubernetes.io/arch`, `kubernetes.io/os`, `node.kubernetes.io/instance-type`,
//!   `topology.kubernetes.io/zone`, `topology.kubernetes.io/region`);
//! - the labels, taints and max pods it reads from the user data the way nodeadm (AL2023: a MIME
//!   archive of `application/node.eks.aws` NodeConfig parts merged in order, `--node-labels` and
//!   `--register-with-taints` flags, `registerWithTaints` and `maxPods` in the kubelet config) or
//!   Bottlerocket (`settings.kubernetes.node-labels`, `node-taints`, `max-pods`) or AL2's
//!   `/etc/eks/bootstrap.sh` (the last call in the archive's shell scripts: its options, and the
//!   kubelet flags in `--kubelet-extra-args`) would. Which agent reads it is told by the content, as
//!   the AMI would tell it: TOML is Bottlerocket's, a `NodeConfig` part nodeadm's, a bootstrap.sh
//!   call without one AL2's.
//!
//! A kubelet refuses to start with a `kubernetes.io` / `k8s.io` label outside the NodeRestriction
//! allow-list: such user data is an error here too. This crate depends on nothing of Nodewright's,
//! so a test that registers nodes through it fails when the product writes user data a real node
//! would not understand, or relies on labels no real node carries.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("user data: {0}")]
    UserData(String),
    #[error("kubelet refuses to start: {0}")]
    Kubelet(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A taint as the kubelet registers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

/// What the node's agent read from its user data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootConfig {
    pub cluster_name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub max_pods: Option<u32>,
    /// `podsPerCore` (nodeadm only: Bottlerocket has no such setting).
    pub pods_per_core: Option<u32>,
    /// `kubeReserved`, `systemReserved` and `evictionHard` as written (resource or signal to value).
    pub kube_reserved: BTreeMap<String, String>,
    pub system_reserved: BTreeMap<String, String>,
    pub eviction_hard: BTreeMap<String, String>,
}

/// What EC2 holds for an instance.
#[derive(Debug, Clone)]
pub struct InstanceFacts {
    pub instance_id: String,
    pub private_ip: String,
    pub zone: String,
    pub region: String,
    pub instance_type: String,
    /// `x86_64` or `arm64`, as DescribeInstanceTypes says.
    pub architecture: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Max pods when the user data does not say (the AMI's ENI table).
    pub default_max_pods: u32,
}

/// Reads user data (plain or base64, as DescribeInstanceAttribute returns it) the way the AMI's
/// agent would. Bottlerocket's is TOML; an archive with a `NodeConfig` part is nodeadm's; scripts
/// that call bootstrap.sh are AL2's; anything else is read as nodeadm would (and refused by it).
pub fn read_user_data(raw: &str) -> Result<BootConfig> {
    let text = decode(raw)?;
    if text.trim_start().starts_with('[') || text.trim_start().starts_with("settings") {
        return bottlerocket(&text);
    }
    let parts = mime_parts(&text)?;
    let node_config = parts.iter().any(|(t, _)| t.starts_with("application/node.eks.aws"));
    let bootstrap_sh = parts
        .iter()
        .any(|(t, body)| t.starts_with("text/x-shellscript") && body.contains(BOOTSTRAP_SH));
    if !node_config && bootstrap_sh {
        return al2(&parts);
    }
    nodeadm(&text)
}

const BOOTSTRAP_SH: &str = "/etc/eks/bootstrap.sh";

/// AL2: the last `/etc/eks/bootstrap.sh` call in the shell scripts (backslash continuations
/// joined, words split as bash splits them) configures the kubelet. Options take a value after a
/// space (`--opt=value` is a positional word to bootstrap.sh, so it is ignored, as there); the
/// first positional word is the cluster. Without `--apiserver-endpoint` and `--b64-cluster-ca`
/// bootstrap.sh calls DescribeCluster, which a node's role may not: refused here.
fn al2(parts: &[(String, String)]) -> Result<BootConfig> {
    let mut call = None;
    for (content_type, body) in parts {
        if !content_type.starts_with("text/x-shellscript") {
            continue;
        }
        let joined = body.replace("\\\n", " ");
        for line in joined.lines() {
            if line.trim_start().starts_with(BOOTSTRAP_SH) {
                call = Some(line.trim().to_string());
            }
        }
    }
    let call = call.ok_or_else(|| Error::UserData("no bootstrap.sh call".into()))?;
    let words = shlex::split(&call).ok_or_else(|| Error::UserData(format!("unbalanced quotes in {call:?}")))?;
    let mut positional = Vec::new();
    let mut options = BTreeMap::new();
    let mut words = words.into_iter().skip(1);
    while let Some(w) = words.next() {
        if w.starts_with("--") && !w.contains('=') {
            let v = words
                .next()
                .ok_or_else(|| Error::UserData(format!("bootstrap.sh {w} needs a value")))?;
            options.insert(w, v);
        } else {
            positional.push(w);
        }
    }
    let cluster = positional
        .first()
        .ok_or_else(|| Error::UserData("bootstrap.sh needs the cluster name".into()))?;
    for k in ["--apiserver-endpoint", "--b64-cluster-ca"] {
        if options.get(k).is_none_or(|v| v.is_empty()) {
            return Err(Error::UserData(format!(
                "bootstrap.sh without {k} calls DescribeCluster, which the node's role may not"
            )));
        }
    }
    let mut boot = BootConfig {
        cluster_name: Some(cluster.clone()),
        ..BootConfig::default()
    };
    // `--use-max-pods false` leaves the kubelet's own default unless a flag sets it.
    if options.get("--use-max-pods").map(String::as_str) == Some("false") {
        boot.max_pods = Some(110);
    }
    if let Some(extra) = options.get("--kubelet-extra-args") {
        let flags = shlex::split(extra)
            .ok_or_else(|| Error::UserData(format!("unbalanced quotes in --kubelet-extra-args {extra:?}")))?;
        kubelet_flags(&mut boot, flags.iter().map(String::as_str))?;
    }
    check_labels(&boot.labels)?;
    Ok(boot)
}

/// The kubelet's command-line flags that shape the Node: labels, taints, max pods, pods per core,
/// reservations and the hard eviction thresholds (a flag wins over the config file).
fn kubelet_flags<'a>(boot: &mut BootConfig, flags: impl Iterator<Item = &'a str>) -> Result<()> {
    let pairs = |v: &str, sep: char| -> BTreeMap<String, String> {
        v.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once(sep).unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    };
    let number = |flag: &str, v: &str| {
        v.parse::<u32>()
            .map_err(|_| Error::Kubelet(format!("{flag}: {v:?} is not a number")))
    };
    for flag in flags {
        let Some((name, v)) = flag.split_once('=') else {
            continue;
        };
        match name {
            "--node-labels" => boot.labels.extend(pairs(v, '=')),
            "--register-with-taints" => {
                for t in v.split(',').filter(|p| !p.is_empty()) {
                    boot.taints.push(parse_taint(t)?);
                }
            }
            "--max-pods" => boot.max_pods = Some(number(name, v)?),
            "--pods-per-core" => boot.pods_per_core = Some(number(name, v)?),
            "--kube-reserved" => boot.kube_reserved = pairs(v, '='),
            "--system-reserved" => boot.system_reserved = pairs(v, '='),
            "--eviction-hard" => boot.eviction_hard = pairs(v, '<'),
            _ => {}
        }
    }
    Ok(())
}

fn decode(raw: &str) -> Result<String> {
    let trimmed = raw.trim();
    if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(trimmed)
        && let Ok(text) = String::from_utf8(bytes)
        && (text.contains("MIME-Version") || text.contains("apiVersion") || text.contains("[settings"))
    {
        return Ok(text);
    }
    Ok(raw.to_string())
}

/// nodeadm: every `application/node.eks.aws` part is a NodeConfig, merged in order (maps merged,
/// later scalars win, lists appended); then the kubelet's flags and config are read.
fn nodeadm(text: &str) -> Result<BootConfig> {
    let mut merged = Value::Null;
    for (content_type, body) in mime_parts(text)? {
        if !content_type.starts_with("application/node.eks.aws") {
            continue;
        }
        let doc: Value = serde_norway::from_str(&body).map_err(|e| Error::UserData(format!("NodeConfig: {e}")))?;
        if doc.get("kind").and_then(Value::as_str) != Some("NodeConfig") {
            return Err(Error::UserData("a node.eks.aws part is not a NodeConfig".into()));
        }
        merge(&mut merged, doc);
    }
    if merged.is_null() {
        return Err(Error::UserData(
            "no NodeConfig part: nodeadm cannot join the cluster".into(),
        ));
    }
    let spec = &merged["spec"];
    let mut boot = BootConfig {
        cluster_name: spec["cluster"]["name"].as_str().map(str::to_string),
        ..BootConfig::default()
    };
    for k in ["apiServerEndpoint", "certificateAuthority"] {
        if spec["cluster"][k].as_str().is_none_or(str::is_empty) {
            return Err(Error::UserData(format!("NodeConfig spec.cluster.{k} is missing")));
        }
    }
    let config = &spec["kubelet"]["config"];
    boot.max_pods = config["maxPods"].as_u64().map(|m| m as u32);
    boot.pods_per_core = config["podsPerCore"].as_u64().map(|m| m as u32);
    boot.kube_reserved = string_map(&config["kubeReserved"]);
    boot.system_reserved = string_map(&config["systemReserved"]);
    boot.eviction_hard = string_map(&config["evictionHard"]);
    for t in config["registerWithTaints"].as_array().into_iter().flatten() {
        boot.taints.push(Taint {
            key: t["key"].as_str().unwrap_or_default().to_string(),
            value: t["value"].as_str().map(str::to_string),
            effect: t["effect"].as_str().unwrap_or_default().to_string(),
        });
    }
    let flags: Vec<&str> = spec["kubelet"]["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    kubelet_flags(&mut boot, flags.into_iter())?;
    check_labels(&boot.labels)?;
    Ok(boot)
}

/// A JSON object of strings (numbers written as they are), empty when absent.
fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
        .collect()
}

/// A TOML table of strings, empty when absent.
fn toml_map(v: Option<&toml::Value>) -> BTreeMap<String, String> {
    v.and_then(|v| v.as_table())
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string)))
        .collect()
}

/// `key=value:Effect` or `key:Effect`.
fn parse_taint(t: &str) -> Result<Taint> {
    let (kv, effect) = t
        .rsplit_once(':')
        .ok_or_else(|| Error::Kubelet(format!("taint {t:?} has no effect")))?;
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string()).filter(|v| !v.is_empty())),
        None => (kv, None),
    };
    Ok(Taint {
        key: key.into(),
        value,
        effect: effect.into(),
    })
}

fn bottlerocket(text: &str) -> Result<BootConfig> {
    let doc: toml::Table = text
        .parse()
        .map_err(|e| Error::UserData(format!("Bottlerocket settings: {e}")))?;
    let k = doc
        .get("settings")
        .and_then(|s| s.get("kubernetes"))
        .ok_or_else(|| Error::UserData("no [settings.kubernetes]".into()))?;
    let mut boot = BootConfig {
        cluster_name: k.get("cluster-name").and_then(|v| v.as_str()).map(str::to_string),
        max_pods: k.get("max-pods").and_then(|v| v.as_integer()).map(|m| m as u32),
        kube_reserved: toml_map(k.get("kube-reserved")),
        system_reserved: toml_map(k.get("system-reserved")),
        eviction_hard: toml_map(k.get("eviction-hard")),
        ..BootConfig::default()
    };
    if let Some(labels) = k.get("node-labels").and_then(|v| v.as_table()) {
        for (key, v) in labels {
            boot.labels
                .insert(key.clone(), v.as_str().unwrap_or_default().to_string());
        }
    }
    if let Some(taints) = k.get("node-taints").and_then(|v| v.as_table()) {
        for (key, values) in taints {
            for v in values.as_array().into_iter().flatten() {
                let (value, effect) = v.as_str().unwrap_or_default().rsplit_once(':').unwrap_or(("", ""));
                boot.taints.push(Taint {
                    key: key.clone(),
                    value: Some(value.to_string()).filter(|v| !v.is_empty()),
                    effect: effect.to_string(),
                });
            }
        }
    }
    check_labels(&boot.labels)?;
    Ok(boot)
}

/// The kubelet exits on a self-set label in the `kubernetes.io` / `k8s.io` domains outside the
/// allow-list (kubelet's `--node-labels` validation).
fn check_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    const ALLOWED_KEYS: &[&str] = &[
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
    ];
    for key in labels.keys() {
        let Some((domain, _)) = key.split_once('/') else {
            continue;
        };
        let k8s = domain == "kubernetes.io"
            || domain.ends_with(".kubernetes.io")
            || domain == "k8s.io"
            || domain.ends_with(".k8s.io");
        let allowed =
            ALLOWED_KEYS.contains(&key.as_str()) || domain == "kubelet.kubernetes.io" || domain == "node.kubernetes.io";
        if k8s && !allowed {
            return Err(Error::Kubelet(format!(
                "unknown 'kubernetes.io' or 'k8s.io' labels specified with --node-labels: [{key}]"
            )));
        }
    }
    Ok(())
}

/// A MIME multi-part archive's parts as (content type, body); text that is not an archive is one
/// part: a bare `NodeConfig` (which nodeadm reads as it is), else `text/x-shellscript` (what
/// cloud-init would run).
fn mime_parts(text: &str) -> Result<Vec<(String, String)>> {
    let header_end = text.find("\n\n").unwrap_or(text.len());
    let header = &text[..header_end];
    let boundary = header
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-type:") && l.contains("multipart"))
        .and_then(|l| l.split("boundary=").nth(1))
        .map(|b| b.trim().trim_matches('"').to_string());
    let Some(boundary) = boundary else {
        // nodeadm also takes a bare NodeConfig document as the whole user data.
        let bare_node_config = serde_norway::from_str::<Value>(text)
            .ok()
            .and_then(|v| v.get("apiVersion").and_then(Value::as_str).map(str::to_string))
            .is_some_and(|a| a.starts_with("node.eks.aws/"));
        let content_type = if bare_node_config {
            "application/node.eks.aws"
        } else {
            "text/x-shellscript"
        };
        return Ok(vec![(content_type.into(), text.to_string())]);
    };
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut closed = false;
    for chunk in text[header_end..].split(&delimiter).skip(1) {
        if chunk.starts_with("--") {
            closed = true;
            break;
        }
        let chunk = chunk.trim_start_matches(['\r', '\n']);
        let (headers, body) = chunk.split_once("\n\n").unwrap_or((chunk, ""));
        let content_type = headers
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-type")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "text/plain".into());
        parts.push((content_type, body.to_string()));
    }
    if !closed {
        return Err(Error::UserData(format!("MIME archive not closed with {delimiter}--")));
    }
    Ok(parts)
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (Value::Array(a), Value::Array(b)) => a.extend(b),
        (slot, v) => *slot = v,
    }
}

/// The node name EC2's private DNS gives the instance.
pub fn node_name(private_ip: &str, region: &str) -> String {
    let dashed = private_ip.replace('.', "-");
    if region == "us-east-1" {
        format!("ip-{dashed}.ec2.internal")
    } else {
        format!("ip-{dashed}.{region}.compute.internal")
    }
}

/// The Node object the kubelet registers (not Ready yet: a kubelet reports Ready once its runtime
/// and network are up; see [`mark_ready`]). Capacity from the instance, allocatable with the EKS
/// AMI's reservations (kube-reserved memory 11 MiB x max pods + 255 MiB, CPU 6 % / 1 % / 0.5 % /
/// 0.25 % by core, eviction threshold 100 MiB).
pub fn register(facts: &InstanceFacts, boot: &BootConfig) -> Value {
    let name = node_name(&facts.private_ip, &facts.region);
    let arch = match facts.architecture.as_str() {
        "x86_64" => "amd64",
        other => other,
    };
    let mut labels: BTreeMap<String, String> = boot.labels.clone();
    labels.insert("kubernetes.io/hostname".into(), name.clone());
    labels.insert("kubernetes.io/arch".into(), arch.into());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert("node.kubernetes.io/instance-type".into(), facts.instance_type.clone());
    labels.insert("topology.kubernetes.io/zone".into(), facts.zone.clone());
    labels.insert("topology.kubernetes.io/region".into(), facts.region.clone());
    // The kubelet takes the smaller of maxPods and podsPerCore x cores.
    let max_pods = boot.max_pods.unwrap_or(facts.default_max_pods);
    let max_pods = match boot.pods_per_core {
        Some(per) if per > 0 => max_pods.min(per.saturating_mul(facts.vcpus)),
        _ => max_pods,
    };
    let cpu_milli = u64::from(facts.vcpus) * 1000;
    let memory_bytes = facts.memory_mib << 20;
    // The AMI's defaults (nodeadm's kube-reserved: CPU by core, 11 MiB a pod + 255 MiB), each one
    // replaced where the user data names it; system-reserved on top; the hard memory eviction
    // threshold (100Mi, or a share of memory) last.
    let default_cpu: u64 = (0..u64::from(facts.vcpus))
        .map(|core| match core {
            0 => 60,
            1 => 10,
            2 | 3 => 5,
            _ => 2,
        })
        .sum::<u64>()
        + u64::from(facts.vcpus.saturating_sub(4)) / 2;
    let cpu = |m: &BTreeMap<String, String>| m.get("cpu").and_then(|v| millis(v));
    let memory = |m: &BTreeMap<String, String>| m.get("memory").and_then(|v| bytes(v));
    let reserved_cpu = cpu(&boot.kube_reserved).unwrap_or(default_cpu) + cpu(&boot.system_reserved).unwrap_or(0);
    let eviction = match boot.eviction_hard.get("memory.available").map(String::as_str) {
        Some(v) if v.ends_with('%') => {
            let pct: f64 = v.trim_end_matches('%').parse().unwrap_or(0.0);
            if pct >= 100.0 {
                0
            } else {
                (memory_bytes as f64 * pct / 100.0).ceil() as u64
            }
        }
        Some(v) => bytes(v).unwrap_or(100 << 20),
        None => 100 << 20,
    };
    let reserved_bytes = memory(&boot.kube_reserved).unwrap_or((11 * u64::from(max_pods) + 255) << 20)
        + memory(&boot.system_reserved).unwrap_or(0)
        + eviction;
    let taints: Vec<Value> = boot
        .taints
        .iter()
        .map(|t| match &t.value {
            Some(v) => json!({"key": t.key, "value": v, "effect": t.effect}),
            None => json!({"key": t.key, "effect": t.effect}),
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "resourceVersion": "1"},
        "spec": {
            "providerID": format!("aws:///{}/{}", facts.zone, facts.instance_id),
            "taints": taints,
        },
        "status": {
            "capacity": {
                "cpu": facts.vcpus.to_string(),
                "memory": format!("{}Mi", facts.memory_mib),
                "pods": max_pods.to_string(),
            },
            "allocatable": {
                "cpu": format!("{}m", cpu_milli.saturating_sub(reserved_cpu)),
                "memory": memory_bytes.saturating_sub(reserved_bytes).to_string(),
                "pods": max_pods.to_string(),
            },
            "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}],
            "addresses": [{"type": "InternalIP", "address": facts.private_ip}],
        }
    })
}

/// A CPU quantity in millicores: `250m`, `1`, `1.5`.
fn millis(v: &str) -> Option<u64> {
    match v.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => v.parse::<f64>().ok().map(|c| (c * 1000.0).round() as u64),
    }
}

/// A byte quantity: a plain number, or with a binary (`Ki` .. `Ti`) or decimal (`k`, `M` .. `T`)
/// suffix.
fn bytes(v: &str) -> Option<u64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, scale) in SUFFIXES {
        if let Some(n) = v.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| (n * scale).round() as u64);
        }
    }
    v.parse::<f64>().ok().map(|n| n.round() as u64)
}

/// The kubelet reports Ready at `at` (RFC 3339).
pub fn mark_ready(node: &mut Value, at: &str) {
    node["status"]["conditions"] = json!([{
        "type": "Ready", "status": "True", "reason": "KubeletReady",
        "lastTransitionTime": at, "lastHeartbeatTime": at
    }]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const AL2023: &str = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"//\"\n\n--//\nContent-Type: application/node.eks.aws\n\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: prod\n    apiServerEndpoint: https://x.eks.amazonaws.com\n    certificateAuthority: Y2E=\n  kubelet:\n    config:\n      maxPods: 29\n      registerWithTaints:\n      - key: karpenter.sh/unregistered\n        effect: NoExecute\n    flags:\n    - --node-labels=karpenter.sh/nodepool=general,team=web\n--//--\n";

    fn facts() -> InstanceFacts {
        InstanceFacts {
            instance_id: "i-0123456789abcdef0".into(),
            private_ip: "10.0.1.7".into(),
            zone: "us-east-1a".into(),
            region: "us-east-1".into(),
            instance_type: "m5.large".into(),
            architecture: "x86_64".into(),
            vcpus: 2,
            memory_mib: 8192,
            default_max_pods: 29,
        }
    }

    #[test]
    fn a_node_registers_from_nodeadm_user_data_alone() {
        let boot = read_user_data(&base64::engine::general_purpose::STANDARD.encode(AL2023)).expect("boot");
        assert_eq!(boot.cluster_name.as_deref(), Some("prod"));
        assert_eq!(boot.max_pods, Some(29));
        assert_eq!(boot.labels["karpenter.sh/nodepool"], "general");
        assert_eq!(boot.taints[0].key, "karpenter.sh/unregistered");
        let node = register(&facts(), &boot);
        assert_eq!(node["metadata"]["name"], "ip-10-0-1-7.ec2.internal");
        assert_eq!(node["spec"]["providerID"], "aws:///us-east-1a/i-0123456789abcdef0");
        assert_eq!(node["metadata"]["labels"]["kubernetes.io/arch"], "amd64");
        assert_eq!(node["metadata"]["labels"]["team"], "web");
        assert!(node["metadata"]["labels"].get("karpenter.sh/capacity-type").is_none());
        assert_eq!(node["status"]["conditions"][0]["status"], "False");
    }

    /// AL2 user data in the form Karpenter's AL2 family writes (aws/karpenter-provider-aws
    /// `eksbootstrap.go`): a user's script part, then a bootstrap.sh call whose options take a
    /// value after a space and whose kubelet flags sit in one single-quoted `--kubelet-extra-args`.
    const AL2: &str = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"//\"\n\n--//\nContent-Type: text/x-shellscript; charset=\"us-ascii\"\n\n#!/bin/bash\necho 'mine'\n\n--//\nContent-Type: text/x-shellscript; charset=\"us-ascii\"\n\n#!/bin/bash -xe\nexec > >(tee /var/log/user-data.log|logger -t user-data -s 2>/dev/console) 2>&1\n/etc/eks/bootstrap.sh 'prod' --apiserver-endpoint 'https://x.eks.amazonaws.com' --b64-cluster-ca 'Y2E=' \\\n--dns-cluster-ip '10.100.0.10' \\\n--use-max-pods false \\\n--kubelet-extra-args '--node-labels=\"karpenter.sh/nodepool=general,team=web\" --register-with-taints=\"gpu=true:NoSchedule,karpenter.sh/unregistered:NoExecute\" --max-pods=40 --kube-reserved=\"cpu=250m,memory=1Gi\" --eviction-hard=\"memory.available<5%\"'\n--//--\n";

    #[test]
    fn a_node_registers_from_al2_bootstrap_sh_alone() {
        let boot = read_user_data(&base64::engine::general_purpose::STANDARD.encode(AL2)).expect("boot");
        assert_eq!(boot.cluster_name.as_deref(), Some("prod"));
        assert_eq!(boot.max_pods, Some(40));
        assert_eq!(boot.labels["karpenter.sh/nodepool"], "general");
        assert_eq!(boot.labels["team"], "web");
        assert_eq!(boot.taints.len(), 2);
        assert_eq!(boot.taints[0].value.as_deref(), Some("true"));
        assert_eq!(boot.taints[1].key, "karpenter.sh/unregistered");
        assert_eq!(boot.kube_reserved["memory"], "1Gi");
        assert_eq!(boot.eviction_hard["memory.available"], "5%");
        let node = register(&facts(), &boot);
        assert_eq!(node["status"]["allocatable"]["pods"], "40");
        // `--use-max-pods false` with no --max-pods flag: the kubelet's own default.
        let no_flag = AL2.replace(" --max-pods=40", "");
        assert_eq!(read_user_data(&no_flag).expect("boot").max_pods, Some(110));
        // Without the endpoint and CA bootstrap.sh would call DescribeCluster.
        let describe = AL2.replace("--apiserver-endpoint 'https://x.eks.amazonaws.com' ", "");
        assert!(matches!(read_user_data(&describe), Err(Error::UserData(_))));
        // bootstrap.sh reads `--opt=value` as a positional word: the flags are not applied.
        let equals = AL2.replace("--kubelet-extra-args '", "--kubelet-extra-args='");
        assert!(read_user_data(&equals).expect("boot").labels.is_empty());
        let restricted = AL2.replace("team=web", "node-role.kubernetes.io/worker=true");
        assert!(matches!(read_user_data(&restricted), Err(Error::Kubelet(_))));
        let unbalanced = AL2.replace("'Y2E='", "'Y2E=");
        assert!(matches!(read_user_data(&unbalanced), Err(Error::UserData(_))));
    }

    /// nodeadm reads a bare NodeConfig as the whole user data (a Custom class's user data often is).
    #[test]
    fn a_bare_node_config_is_read_as_nodeadm_reads_it() {
        let bare = AL2023
            .split("Content-Type: application/node.eks.aws\n\n")
            .nth(1)
            .and_then(|rest| rest.split("--//--").next())
            .expect("the NodeConfig part");
        let boot = read_user_data(bare).expect("boot");
        assert_eq!(boot.cluster_name.as_deref(), Some("prod"));
        assert_eq!(boot.labels["team"], "web");
        assert_eq!(boot.taints[0].key, "karpenter.sh/unregistered");
    }

    #[test]
    fn the_kubelet_refuses_restricted_labels_and_broken_archives() {
        let bad = AL2023.replace("team=web", "node-role.kubernetes.io/worker=true");
        assert!(matches!(read_user_data(&bad), Err(Error::Kubelet(_))));
        assert!(matches!(
            read_user_data("#!/bin/bash\necho hi\n"),
            Err(Error::UserData(_))
        ));
        let unclosed = AL2023.replace("--//--", "");
        assert!(read_user_data(&unclosed).is_err());
    }

    #[test]
    fn bottlerocket_settings() {
        let boot = read_user_data(
            "[settings.kubernetes]\ncluster-name = \"prod\"\nmax-pods = 58\n[settings.kubernetes.node-labels]\n\"karpenter.sh/nodepool\" = \"br\"\n[settings.kubernetes.node-taints]\n\"karpenter.sh/unregistered\" = [\":NoExecute\"]\n",
        )
        .expect("boot");
        assert_eq!(boot.max_pods, Some(58));
        assert_eq!(boot.labels["karpenter.sh/nodepool"], "br");
        assert_eq!(boot.taints[0].effect, "NoExecute");
        assert_eq!(
            node_name("10.1.2.3", "eu-west-2"),
            "ip-10-1-2-3.eu-west-2.compute.internal"
        );
    }

    /// The kubelet's reservations as the user data sets them: maxPods and podsPerCore (the smaller
    /// wins), kube-reserved CPU replaced and its memory still by pods, system-reserved on top, and a
    /// hard memory threshold as a share of memory. Written from the kubelet's documented rules.
    #[test]
    fn reservations_follow_the_kubelet_config_in_the_user_data() {
        let text = AL2023.replace(
            "      maxPods: 29\n",
            "      maxPods: 29\n      podsPerCore: 5\n      kubeReserved: {cpu: 300m}\n      systemReserved: {cpu: \"0.2\", memory: 512Mi}\n      evictionHard: {memory.available: 10%}\n",
        );
        let boot = read_user_data(&text).expect("boot");
        assert_eq!(boot.pods_per_core, Some(5));
        let node = register(&facts(), &boot);
        let a = &node["status"]["allocatable"];
        assert_eq!(a["pods"], "10", "podsPerCore 5 x 2 cores < maxPods 29");
        assert_eq!(a["cpu"], "1500m", "2000m - 300m kube - 200m system");
        let memory: u64 = a["memory"].as_str().unwrap().parse().unwrap();
        let total = 8192u64 << 20;
        let reserved = ((11 * 10 + 255) << 20) + (512 << 20) + total.div_ceil(10);
        assert_eq!(memory, total - reserved);

        let bottlerocket = "[settings.kubernetes]\ncluster-name = \"prod\"\nmax-pods = 20\n[settings.kubernetes.kube-reserved]\nmemory = \"1Gi\"\n[settings.kubernetes.eviction-hard]\n\"memory.available\" = \"200Mi\"\n";
        let boot = read_user_data(bottlerocket).expect("boot");
        let node = register(&facts(), &boot);
        let memory: u64 = node["status"]["allocatable"]["memory"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(memory, total - (1 << 30) - (200 << 20));
        assert_eq!(
            node["status"]["allocatable"]["cpu"], "1930m",
            "the default kube-reserved CPU"
        );
    }
}
