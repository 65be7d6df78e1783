//! Node user data, built with serde as the node's agent reads it: a nodeadm `NodeConfig` (YAML, in a
//! MIME multi-part archive) for AL2023, Bottlerocket settings (TOML), an `/etc/eks/bootstrap.sh`
//! call (a shell script part, as Karpenter writes it) for AL2. What goes in is decided in the
//! core ([`crate::registration`]): the labels the kubelet may set on itself, the pool's
//! taints, startup taints and the unregistered taint, and max pods.
//!
//! A user's own `spec.userData` is merged as Karpenter merges it: for AL2023 the user's parts (a
//! MIME archive's parts, a bare `NodeConfig`, or a shell script) come first and ours last, so
//! nodeadm's in-order merge keeps the user's settings except where Nodewright must decide (cluster,
//! labels, taints, max pods); for Bottlerocket the user's TOML is the base and our settings are
//! written over it; for AL2 the user's parts run first and our bootstrap.sh call last.

use std::collections::BTreeMap;

use crate::model::Taint;
use crate::nodepool::KubeletConfig;
use serde::Serialize;

use crate::ports::capacity::ClusterEndpoint;
use crate::{Error, Result};

/// The MIME boundary of the archives we write (Karpenter's).
const BOUNDARY: &str = "//";
/// The content type nodeadm reads a `NodeConfig` part from.
pub const NODEADM_CONTENT_TYPE: &str = "application/node.eks.aws";
/// Largest user data EC2 accepts (16 KiB before base64).
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;

/// What a node is told at boot.
#[derive(Debug, Clone)]
pub struct Bootstrap<'a> {
    pub cluster: &'a ClusterEndpoint,
    pub labels: &'a BTreeMap<String, String>,
    pub taints: &'a [Taint],
    /// The EC2NodeClass's kubelet settings, each given to the kubelet as its agent names it.
    pub kubelet: &'a KubeletConfig,
    /// `instanceStorePolicy: RAID0`: the instance store is striped and holds the kubelet's and the
    /// container runtime's data (nodeadm's `localStorage` strategy; Bottlerocket's
    /// `apiclient ephemeral-storage` bootstrap command, as Karpenter writes it).
    pub instance_store_raid0: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeConfig<'a> {
    api_version: &'static str,
    kind: &'static str,
    spec: NodeConfigSpec<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeConfigSpec<'a> {
    cluster: ClusterDetails<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<InstanceOptions>,
    kubelet: KubeletOptions<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InstanceOptions {
    local_storage: LocalStorage,
}

#[derive(Serialize)]
struct LocalStorage {
    strategy: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ClusterDetails<'a> {
    name: &'a str,
    api_server_endpoint: &'a str,
    certificate_authority: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cidr: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletOptions<'a> {
    config: KubeletConfiguration<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    flags: Vec<String>,
}

/// The subset of the kubelet's `KubeletConfiguration` we set (field names as the kubelet's).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KubeletConfiguration<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_pods: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pods_per_core: Option<u32>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    kube_reserved: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    system_reserved: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    eviction_hard: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    eviction_soft: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    eviction_soft_grace_period: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    eviction_max_pod_grace_period: Option<u32>,
    #[serde(rename = "imageGCHighThresholdPercent", skip_serializing_if = "Option::is_none")]
    image_gc_high_threshold_percent: Option<u32>,
    #[serde(rename = "imageGCLowThresholdPercent", skip_serializing_if = "Option::is_none")]
    image_gc_low_threshold_percent: Option<u32>,
    #[serde(rename = "cpuCFSQuota", skip_serializing_if = "Option::is_none")]
    cpu_cfs_quota: Option<bool>,
    #[serde(rename = "clusterDNS", skip_serializing_if = "<[String]>::is_empty")]
    cluster_dns: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    register_with_taints: Vec<KubeletTaint>,
}

#[derive(Serialize)]
struct KubeletTaint {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    effect: &'static str,
}

/// One part of a MIME multi-part archive.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    content_type: String,
    body: String,
}

/// AL2023 user data: the user's parts, then our `NodeConfig`.
pub fn nodeadm(b: &Bootstrap<'_>, user: Option<&str>, field: &str) -> Result<String> {
    let mut flags = Vec::new();
    if !b.labels.is_empty() {
        let pairs: Vec<String> = b.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        flags.push(format!("--node-labels={}", pairs.join(",")));
    }
    let config = NodeConfig {
        api_version: "node.eks.aws/v1alpha1",
        kind: "NodeConfig",
        spec: NodeConfigSpec {
            cluster: ClusterDetails {
                name: &b.cluster.name,
                api_server_endpoint: &b.cluster.endpoint,
                certificate_authority: &b.cluster.certificate_authority,
                cidr: b.cluster.service_cidr.as_deref(),
            },
            instance: b.instance_store_raid0.then_some(InstanceOptions {
                local_storage: LocalStorage { strategy: "RAID0" },
            }),
            kubelet: KubeletOptions {
                config: KubeletConfiguration {
                    max_pods: b.kubelet.max_pods,
                    pods_per_core: b.kubelet.pods_per_core,
                    kube_reserved: &b.kubelet.kube_reserved,
                    system_reserved: &b.kubelet.system_reserved,
                    eviction_hard: &b.kubelet.eviction_hard,
                    eviction_soft: &b.kubelet.eviction_soft,
                    eviction_soft_grace_period: &b.kubelet.eviction_soft_grace_period,
                    eviction_max_pod_grace_period: b.kubelet.eviction_max_pod_grace_period,
                    image_gc_high_threshold_percent: b.kubelet.image_gc_high_threshold_percent,
                    image_gc_low_threshold_percent: b.kubelet.image_gc_low_threshold_percent,
                    cpu_cfs_quota: b.kubelet.cpu_cfs_quota,
                    cluster_dns: &b.kubelet.cluster_dns,
                    register_with_taints: b
                        .taints
                        .iter()
                        .map(|t| KubeletTaint {
                            key: t.key.clone(),
                            value: t.value.clone(),
                            effect: t.effect.as_str(),
                        })
                        .collect(),
                },
                flags,
            },
        },
    };
    let yaml = serde_norway::to_string(&config).map_err(|e| Error::invalid(field, format!("NodeConfig: {e}")))?;
    let mut parts = match user {
        Some(u) if !u.trim().is_empty() => user_parts(u, field)?,
        _ => Vec::new(),
    };
    parts.push(Part {
        content_type: NODEADM_CONTENT_TYPE.into(),
        body: yaml,
    });
    let out = write_mime(&parts);
    check_size(&out, field)?;
    Ok(out)
}

/// AL2 user data: the user's parts (a MIME archive's parts, or a script), then one shell script
/// that calls `/etc/eks/bootstrap.sh` with the cluster and the kubelet's flags, as Karpenter writes
/// it (options with a space, not `=`: bootstrap.sh reads them that way).
pub fn al2(b: &Bootstrap<'_>, user: Option<&str>, field: &str) -> Result<String> {
    let mut script = String::from(
        "#!/bin/bash -xe\nexec > >(tee /var/log/user-data.log|logger -t user-data -s 2>/dev/console) 2>&1\n",
    );
    script.push_str(&format!(
        "/etc/eks/bootstrap.sh {} --apiserver-endpoint {} --b64-cluster-ca {}",
        quote(&b.cluster.name),
        quote(&b.cluster.endpoint),
        quote(&b.cluster.certificate_authority)
    ));
    let k = b.kubelet;
    if let Some(dns) = k.cluster_dns.first() {
        if dns.contains(':') {
            script.push_str(" \\\n--ip-family ipv6");
        }
        script.push_str(&format!(" \\\n--dns-cluster-ip {}", quote(dns)));
    } else if let Some(cidr) = &b.cluster.service_cidr {
        script.push_str(&format!(" \\\n--service-ipv4-cidr {}", quote(cidr)));
    }
    if k.max_pods.is_some() {
        script.push_str(" \\\n--use-max-pods false");
    }
    script.push_str(&format!(
        " \\\n--kubelet-extra-args {}",
        quote(&kubelet_flags(b).join(" "))
    ));
    if b.instance_store_raid0 {
        script.push_str(" \\\n--local-disks raid0");
    }
    let mut parts = match user {
        Some(u) if !u.trim().is_empty() => user_parts(u, field)?,
        _ => Vec::new(),
    };
    parts.push(Part {
        content_type: "text/x-shellscript; charset=\"us-ascii\"".into(),
        body: script,
    });
    let out = write_mime(&parts);
    check_size(&out, field)?;
    Ok(out)
}

/// The kubelet's command-line flags for AL2's `--kubelet-extra-args`, under the kubelet's own
/// names; map values comma-joined and double-quoted, as Karpenter writes them.
fn kubelet_flags(b: &Bootstrap<'_>) -> Vec<String> {
    let joined = |m: &BTreeMap<String, String>, sep: &str| {
        m.iter()
            .map(|(k, v)| format!("{k}{sep}{v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut flags = Vec::new();
    if !b.labels.is_empty() {
        flags.push(format!("--node-labels=\"{}\"", joined(b.labels, "=")));
    }
    let taints: Vec<String> = b
        .taints
        .iter()
        .map(|t| match &t.value {
            Some(v) => format!("{}={v}:{}", t.key, t.effect.as_str()),
            None => format!("{}:{}", t.key, t.effect.as_str()),
        })
        .collect();
    flags.push(format!("--register-with-taints=\"{}\"", taints.join(",")));
    let k = b.kubelet;
    if let Some(n) = k.max_pods {
        flags.push(format!("--max-pods={n}"));
    }
    if let Some(n) = k.pods_per_core {
        flags.push(format!("--pods-per-core={n}"));
    }
    for (name, m, sep) in [
        ("--system-reserved", &k.system_reserved, "="),
        ("--kube-reserved", &k.kube_reserved, "="),
        ("--eviction-hard", &k.eviction_hard, "<"),
        ("--eviction-soft", &k.eviction_soft, "<"),
        ("--eviction-soft-grace-period", &k.eviction_soft_grace_period, "="),
    ] {
        if !m.is_empty() {
            flags.push(format!("{name}=\"{}\"", joined(m, sep)));
        }
    }
    for (name, v) in [
        ("--eviction-max-pod-grace-period", k.eviction_max_pod_grace_period),
        ("--image-gc-high-threshold", k.image_gc_high_threshold_percent),
        ("--image-gc-low-threshold", k.image_gc_low_threshold_percent),
    ] {
        if let Some(v) = v {
            flags.push(format!("{name}={v}"));
        }
    }
    if let Some(q) = k.cpu_cfs_quota {
        flags.push(format!("--cpu-cfs-quota={q}"));
    }
    flags
}

/// One shell word: single-quoted, a quote inside written as `'\''`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Bottlerocket user data: the user's settings with ours written over them.
pub fn bottlerocket(b: &Bootstrap<'_>, user: Option<&str>, field: &str) -> Result<String> {
    let mut root: toml::Table = match user {
        Some(u) if !u.trim().is_empty() => u
            .parse()
            .map_err(|e| Error::invalid(field, format!("not Bottlerocket TOML: {e}")))?,
        _ => toml::Table::new(),
    };
    let settings = table_at(&mut root, "settings", field)?;
    let kubernetes = table_at(settings, "kubernetes", field)?;
    kubernetes.insert("cluster-name".into(), b.cluster.name.clone().into());
    kubernetes.insert("api-server".into(), b.cluster.endpoint.clone().into());
    kubernetes.insert(
        "cluster-certificate".into(),
        b.cluster.certificate_authority.clone().into(),
    );
    bottlerocket_kubelet(kubernetes, b.kubelet);
    let labels = table_at(kubernetes, "node-labels", field)?;
    for (k, v) in b.labels {
        labels.insert(k.clone(), v.clone().into());
    }
    let taints = table_at(kubernetes, "node-taints", field)?;
    let mut by_key: BTreeMap<&str, Vec<toml::Value>> = BTreeMap::new();
    for t in b.taints {
        let v = format!("{}:{}", t.value.as_deref().unwrap_or(""), t.effect.as_str());
        by_key.entry(&t.key).or_default().push(v.into());
    }
    for (k, v) in by_key {
        taints.insert(k.to_string(), toml::Value::Array(v));
    }
    if b.instance_store_raid0 {
        let settings = table_at(&mut root, "settings", field)?;
        let commands = table_at(settings, "bootstrap-commands", field)?;
        let mut mount = toml::Table::new();
        let words = |w: &[&str]| toml::Value::Array(w.iter().map(|s| toml::Value::from(*s)).collect());
        mount.insert(
            "commands".into(),
            toml::Value::Array(vec![
                words(&["apiclient", "ephemeral-storage", "init"]),
                words(&[
                    "apiclient",
                    "ephemeral-storage",
                    "bind",
                    "--dirs",
                    "/var/lib/containerd",
                    "/var/lib/kubelet",
                    "/var/log/pods",
                ]),
            ]),
        );
        mount.insert("essential".into(), true.into());
        mount.insert("mode".into(), "always".into());
        commands.insert("000-mount-instance-storage".into(), toml::Value::Table(mount));
    }
    let out = toml::to_string(&root).map_err(|e| Error::invalid(field, format!("settings: {e}")))?;
    check_size(&out, field)?;
    Ok(out)
}

/// The class's kubelet settings under Bottlerocket's names (`settings.kubernetes.*`), as Karpenter
/// writes them. `podsPerCore` has no Bottlerocket setting (Karpenter leaves it out too).
fn bottlerocket_kubelet(kubernetes: &mut toml::Table, k: &KubeletConfig) {
    let map = |m: &BTreeMap<String, String>| {
        toml::Value::Table(
            m.iter()
                .map(|(k, v)| (k.clone(), toml::Value::from(v.clone())))
                .collect(),
        )
    };
    if let Some(max) = k.max_pods {
        kubernetes.insert("max-pods".into(), i64::from(max).into());
    }
    for (name, m) in [
        ("kube-reserved", &k.kube_reserved),
        ("system-reserved", &k.system_reserved),
        ("eviction-hard", &k.eviction_hard),
        ("eviction-soft", &k.eviction_soft),
        ("eviction-soft-grace-period", &k.eviction_soft_grace_period),
    ] {
        if !m.is_empty() {
            kubernetes.insert(name.into(), map(m));
        }
    }
    for (name, v) in [
        ("eviction-max-pod-grace-period", k.eviction_max_pod_grace_period),
        ("image-gc-high-threshold-percent", k.image_gc_high_threshold_percent),
        ("image-gc-low-threshold-percent", k.image_gc_low_threshold_percent),
    ] {
        if let Some(v) = v {
            kubernetes.insert(name.into(), i64::from(v).into());
        }
    }
    if let Some(q) = k.cpu_cfs_quota {
        kubernetes.insert("cpu-cfs-quota-enforced".into(), q.into());
    }
    if !k.cluster_dns.is_empty() {
        let ips: Vec<toml::Value> = k.cluster_dns.iter().map(|s| s.clone().into()).collect();
        kubernetes.insert("cluster-dns-ip".into(), toml::Value::Array(ips));
    }
}

fn table_at<'t>(t: &'t mut toml::Table, key: &str, field: &str) -> Result<&'t mut toml::Table> {
    let entry = t
        .entry(key.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    entry
        .as_table_mut()
        .ok_or_else(|| Error::invalid(field, format!("{key} must be a table in the Bottlerocket settings")))
}

fn check_size(out: &str, field: &str) -> Result<()> {
    if out.len() > MAX_USER_DATA_BYTES {
        return Err(Error::invalid(
            field,
            format!(
                "the merged user data is {} bytes, over EC2's {MAX_USER_DATA_BYTES} byte limit",
                out.len()
            ),
        ));
    }
    Ok(())
}

/// A user's AL2023 user data as parts: a MIME archive's own parts, else one part whose type says
/// what it is (a `NodeConfig` document or a shell script).
fn user_parts(text: &str, field: &str) -> Result<Vec<Part>> {
    let (headers, body) = split_headers(text);
    if let Some(boundary) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .and_then(|(_, v)| boundary_of(v))
    {
        return mime_parts(body, &boundary, field);
    }
    let is_node_config = serde_norway::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("apiVersion").and_then(|a| a.as_str()).map(str::to_string))
        .is_some_and(|a| a.starts_with("node.eks.aws/"));
    Ok(vec![Part {
        content_type: if is_node_config {
            NODEADM_CONTENT_TYPE.into()
        } else {
            "text/x-shellscript; charset=\"us-ascii\"".into()
        },
        body: text.to_string(),
    }])
}

/// Leading `Name: value` header lines (only when the text starts with them), and the rest.
fn split_headers(text: &str) -> (Vec<(String, String)>, &str) {
    let mut headers = Vec::new();
    let mut rest = text;
    loop {
        let (line, after) = match rest.find('\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            let body = if headers.is_empty() { text } else { after };
            return (headers, body);
        }
        match line.split_once(':') {
            Some((k, v)) if !k.contains(' ') && !k.is_empty() => {
                headers.push((k.trim().to_string(), v.trim().to_string()));
                rest = after;
            }
            _ => return (Vec::new(), text),
        }
        if after.is_empty() {
            return (headers, "");
        }
    }
}

fn boundary_of(content_type: &str) -> Option<String> {
    if !content_type.to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    content_type.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn mime_parts(body: &str, boundary: &str, field: &str) -> Result<Vec<Part>> {
    let open = format!("--{boundary}");
    let close = format!("--{boundary}--");
    let mut parts = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    let mut closed = false;
    for line in body.lines() {
        let l = line.trim_end_matches('\r');
        if l == close {
            if let Some(lines) = current.take() {
                parts.push(part_of(&lines.join("\n")));
            }
            closed = true;
            break;
        }
        if l == open {
            if let Some(lines) = current.take() {
                parts.push(part_of(&lines.join("\n")));
            }
            current = Some(Vec::new());
        } else if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    if !closed {
        return Err(Error::invalid(
            field,
            format!("MIME archive has no closing boundary {close:?}"),
        ));
    }
    Ok(parts)
}

fn part_of(text: &str) -> Part {
    let (headers, body) = split_headers(text);
    let content_type = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| "text/plain".into());
    Part {
        content_type,
        body: body.trim_end_matches('\n').to_string(),
    }
}

fn write_mime(parts: &[Part]) -> String {
    let mut out = format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\n\n");
    for p in parts {
        out.push_str(&format!("--{BOUNDARY}\nContent-Type: {}\n\n", p.content_type));
        out.push_str(p.body.trim_end_matches('\n'));
        out.push('\n');
    }
    out.push_str(&format!("--{BOUNDARY}--\n"));
    out
}

#[cfg(test)]
mod tests {
    use crate::model::Effect;

    use super::*;

    fn endpoint() -> ClusterEndpoint {
        ClusterEndpoint {
            name: "prod".into(),
            endpoint: "https://ABC.gr7.us-east-1.eks.amazonaws.com".into(),
            certificate_authority: "LS0tLS1CRUdJTg==".into(),
            service_cidr: Some("10.100.0.0/16".into()),
        }
    }

    fn taints() -> Vec<Taint> {
        vec![
            Taint {
                key: "gpu".into(),
                value: Some("true".into()),
                effect: Effect::NoSchedule,
            },
            Taint {
                key: "karpenter.sh/unregistered".into(),
                value: None,
                effect: Effect::NoExecute,
            },
        ]
    }

    fn labels() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("karpenter.sh/nodepool".to_string(), "gpu".to_string()),
            ("team".to_string(), "ml".to_string()),
        ])
    }

    #[test]
    fn nodeadm_config_reads_back_as_yaml_with_our_settings_last() {
        let (l, t) = (labels(), taints());
        let ep = endpoint();
        let b = Bootstrap {
            cluster: &ep,
            labels: &l,
            taints: &t,
            kubelet: &KubeletConfig {
                max_pods: Some(58),
                ..Default::default()
            },
            instance_store_raid0: false,
        };
        let user = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\n\n--BOUNDARY\nContent-Type: text/x-shellscript\n\n#!/bin/bash\necho hi\n--BOUNDARY\nContent-Type: application/node.eks.aws\n\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  kubelet:\n    config:\n      shutdownGracePeriod: 30s\n--BOUNDARY--\n";
        let out = nodeadm(&b, Some(user), "userData").expect("user data");
        let (headers, body) = split_headers(&out);
        let boundary = boundary_of(&headers[1].1).expect("boundary");
        let parts = mime_parts(body, &boundary, "x").expect("parts");
        assert_eq!(parts.len(), 3, "{out}");
        assert!(parts[0].body.contains("echo hi"));
        assert!(parts[1].body.contains("shutdownGracePeriod"));
        assert_eq!(parts[2].content_type, NODEADM_CONTENT_TYPE);
        let ours: serde_json::Value = serde_norway::from_str(&parts[2].body).expect("yaml");
        assert_eq!(ours["spec"]["cluster"]["name"], "prod");
        assert_eq!(ours["spec"]["cluster"]["cidr"], "10.100.0.0/16");
        assert_eq!(ours["spec"]["kubelet"]["config"]["maxPods"], 58);
        assert_eq!(
            ours["spec"]["kubelet"]["flags"][0],
            "--node-labels=karpenter.sh/nodepool=gpu,team=ml"
        );
        let taints = &ours["spec"]["kubelet"]["config"]["registerWithTaints"];
        assert_eq!(taints[0]["key"], "gpu");
        assert_eq!(taints[0]["value"], "true");
        assert_eq!(taints[1]["effect"], "NoExecute");
        assert!(taints[1].get("value").is_none());
    }

    #[test]
    fn a_bare_node_config_or_script_becomes_a_part_before_ours() {
        let (l, t) = (labels(), taints());
        let ep = endpoint();
        let b = Bootstrap {
            cluster: &ep,
            labels: &l,
            taints: &t,
            kubelet: &KubeletConfig::default(),
            instance_store_raid0: false,
        };
        let bare = "apiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  instance:\n    localStorage:\n      strategy: RAID0\n";
        let out = nodeadm(&b, Some(bare), "userData").expect("bare");
        let parts = mime_parts(split_headers(&out).1, BOUNDARY, "x").expect("parts");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].content_type, NODEADM_CONTENT_TYPE);
        let script = nodeadm(&b, Some("#!/bin/bash\nsysctl -w vm.max_map_count=262144\n"), "u").expect("script");
        let parts = mime_parts(split_headers(&script).1, BOUNDARY, "x").expect("parts");
        assert!(parts[0].content_type.starts_with("text/x-shellscript"));
        let broken = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"B\"\n\n--B\n\necho\n";
        let err = nodeadm(&b, Some(broken), "EC2NodeClass gpu: spec.userData").expect_err("unclosed");
        assert!(err.to_string().contains("spec.userData"), "{err}");
    }

    #[test]
    fn bottlerocket_settings_merge_over_the_users() {
        let (l, t) = (labels(), taints());
        let ep = endpoint();
        let b = Bootstrap {
            cluster: &ep,
            labels: &l,
            taints: &t,
            kubelet: &KubeletConfig {
                max_pods: Some(110),
                ..Default::default()
            },
            instance_store_raid0: false,
        };
        let user = "[settings.kubernetes]\ncluster-name = \"wrong\"\nimage-gc-high-threshold-percent = 85\n[settings.kubernetes.node-labels]\n\"user\" = \"kept\"\n[settings.host-containers.admin]\nenabled = true\n";
        let out = bottlerocket(&b, Some(user), "userData").expect("toml");
        let v: toml::Table = out.parse().expect("reads back");
        let k = &v["settings"]["kubernetes"];
        assert_eq!(k["cluster-name"].as_str(), Some("prod"));
        assert_eq!(k["image-gc-high-threshold-percent"].as_integer(), Some(85));
        assert_eq!(k["max-pods"].as_integer(), Some(110));
        assert_eq!(k["node-labels"]["user"].as_str(), Some("kept"));
        assert_eq!(k["node-labels"]["team"].as_str(), Some("ml"));
        assert_eq!(k["node-taints"]["gpu"][0].as_str(), Some("true:NoSchedule"));
        assert_eq!(
            k["node-taints"]["karpenter.sh/unregistered"][0].as_str(),
            Some(":NoExecute")
        );
        assert_eq!(
            v["settings"]["host-containers"]["admin"]["enabled"].as_bool(),
            Some(true)
        );
        let err = bottlerocket(&b, Some("settings = 3"), "userData").expect_err("not a table");
        assert!(err.to_string().contains("settings must be a table"), "{err}");
    }

    fn every_kubelet_setting() -> KubeletConfig {
        let m = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        KubeletConfig {
            max_pods: Some(40),
            pods_per_core: Some(4),
            kube_reserved: m(&[("cpu", "250m"), ("memory", "1Gi")]),
            system_reserved: m(&[("memory", "512Mi")]),
            eviction_hard: m(&[("memory.available", "5%")]),
            eviction_soft: m(&[("memory.available", "10%")]),
            eviction_soft_grace_period: m(&[("memory.available", "1m")]),
            eviction_max_pod_grace_period: Some(60),
            image_gc_high_threshold_percent: Some(85),
            image_gc_low_threshold_percent: Some(80),
            cpu_cfs_quota: Some(false),
            cluster_dns: vec!["10.100.0.10".into()],
        }
    }

    /// Every kubelet field of the class reaches the node, under the names nodeadm's
    /// `KubeletConfiguration` and Bottlerocket's `settings.kubernetes` read (Karpenter's bootstrap
    /// writes the same); Bottlerocket has no pods-per-core setting.
    #[test]
    fn the_classes_kubelet_settings_reach_both_agents() {
        let (l, t, ep) = (labels(), taints(), endpoint());
        let kubelet = every_kubelet_setting();
        let b = Bootstrap {
            cluster: &ep,
            labels: &l,
            taints: &t,
            kubelet: &kubelet,
            instance_store_raid0: true,
        };
        let out = nodeadm(&b, None, "userData").expect("user data");
        let parts = user_parts(&out, "userData").expect("archive");
        let ours: serde_json::Value = serde_norway::from_str(&parts[0].body).expect("yaml");
        let config = &ours["spec"]["kubelet"]["config"];
        assert_eq!(config["maxPods"], 40);
        assert_eq!(config["podsPerCore"], 4);
        assert_eq!(config["kubeReserved"]["cpu"], "250m");
        assert_eq!(config["systemReserved"]["memory"], "512Mi");
        assert_eq!(config["evictionHard"]["memory.available"], "5%");
        assert_eq!(config["evictionSoft"]["memory.available"], "10%");
        assert_eq!(config["evictionSoftGracePeriod"]["memory.available"], "1m");
        assert_eq!(config["evictionMaxPodGracePeriod"], 60);
        assert_eq!(config["imageGCHighThresholdPercent"], 85);
        assert_eq!(config["imageGCLowThresholdPercent"], 80);
        assert_eq!(config["cpuCFSQuota"], false);
        assert_eq!(config["clusterDNS"][0], "10.100.0.10");
        assert_eq!(ours["spec"]["instance"]["localStorage"]["strategy"], "RAID0");

        let out = bottlerocket(&b, None, "userData").expect("settings");
        let doc: toml::Table = out.parse().expect("toml");
        let k = &doc["settings"]["kubernetes"];
        assert_eq!(k["max-pods"].as_integer(), Some(40));
        assert!(k.get("pods-per-core").is_none());
        assert_eq!(k["kube-reserved"]["cpu"].as_str(), Some("250m"));
        assert_eq!(k["system-reserved"]["memory"].as_str(), Some("512Mi"));
        assert_eq!(k["eviction-hard"]["memory.available"].as_str(), Some("5%"));
        assert_eq!(k["eviction-soft-grace-period"]["memory.available"].as_str(), Some("1m"));
        assert_eq!(k["eviction-max-pod-grace-period"].as_integer(), Some(60));
        assert_eq!(k["image-gc-high-threshold-percent"].as_integer(), Some(85));
        assert_eq!(k["cpu-cfs-quota-enforced"].as_bool(), Some(false));
        assert_eq!(k["cluster-dns-ip"][0].as_str(), Some("10.100.0.10"));
        let mount = &doc["settings"]["bootstrap-commands"]["000-mount-instance-storage"];
        assert_eq!(mount["commands"][0][1].as_str(), Some("ephemeral-storage"));
        assert_eq!(mount["mode"].as_str(), Some("always"));
    }

    /// AL2: the user's script first, then one bootstrap.sh call with every kubelet setting as a
    /// kubelet flag, in the form Karpenter writes (space-separated options, one quoted extra-args).
    #[test]
    fn al2_calls_bootstrap_sh_after_the_users_script() {
        let (l, t, ep) = (labels(), taints(), endpoint());
        let kubelet = every_kubelet_setting();
        let b = Bootstrap {
            cluster: &ep,
            labels: &l,
            taints: &t,
            kubelet: &kubelet,
            instance_store_raid0: true,
        };
        let out = al2(&b, Some("#!/bin/bash\necho mine\n"), "userData").expect("user data");
        let parts = user_parts(&out, "userData").expect("archive");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].body, "#!/bin/bash\necho mine");
        let script = &parts[1].body;
        assert!(parts[1].content_type.starts_with("text/x-shellscript"));
        assert!(script.starts_with("#!/bin/bash -xe\n"), "{script}");
        let call = script.lines().skip(2).collect::<Vec<_>>().join("\n");
        assert!(
            call.starts_with(&format!(
                "/etc/eks/bootstrap.sh '{}' --apiserver-endpoint '{}' --b64-cluster-ca '{}'",
                ep.name, ep.endpoint, ep.certificate_authority
            )),
            "{call}"
        );
        for piece in [
            "--dns-cluster-ip '10.100.0.10'",
            "--use-max-pods false",
            "--local-disks raid0",
            "--max-pods=40 --pods-per-core=4",
            "--kube-reserved=\"cpu=250m,memory=1Gi\"",
            "--system-reserved=\"memory=512Mi\"",
            "--eviction-hard=\"memory.available<5%\"",
            "--eviction-soft-grace-period=\"memory.available=1m\"",
            "--eviction-max-pod-grace-period=60 --image-gc-high-threshold=85 --image-gc-low-threshold=80 --cpu-cfs-quota=false",
        ] {
            assert!(call.contains(piece), "{piece} not in {call}");
        }
        let extra = call.split("--kubelet-extra-args '").nth(1).expect("extra args");
        let extra = extra.split('\'').next().expect("closing quote");
        assert!(extra.starts_with("--node-labels=\""), "{extra}");
        assert!(extra.contains("--register-with-taints=\""), "{extra}");
        // Every continuation ends a line with a backslash; nothing else does.
        assert!(call.lines().rev().skip(1).all(|l| l.ends_with(" \\")), "{call}");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }
}
