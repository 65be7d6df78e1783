//! An EC2NodeClass's `spec.kubelet`: read and checked as Karpenter's CRD checks it, every field
//! kept (each reaches the node's kubelet; those that change allocatable also reach the scheduler).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::KubeletConfig;
use super::diagnostics::Ctx;
use crate::catalogue::Threshold;
use crate::quantity::{Scale, parse_quantity};

const FIELDS: &[&str] = &[
    "maxPods",
    "podsPerCore",
    "systemReserved",
    "kubeReserved",
    "evictionHard",
    "evictionSoft",
    "evictionSoftGracePeriod",
    "evictionMaxPodGracePeriod",
    "imageGCHighThresholdPercent",
    "imageGCLowThresholdPercent",
    "cpuCFSQuota",
    "clusterDNS",
];

/// The resources `kubeReserved` and `systemReserved` may name (Karpenter's CRD).
const RESERVED: &[&str] = &["cpu", "memory", "ephemeral-storage", "pid"];

/// The signals eviction thresholds may name (Karpenter's CRD).
const SIGNALS: &[&str] = &[
    "memory.available",
    "nodefs.available",
    "nodefs.inodesFree",
    "imagefs.available",
    "imagefs.inodesFree",
    "pid.available",
];

/// At most this many DNS addresses (the kubelet's own limit on `clusterDNS` is 3).
const MAX_CLUSTER_DNS: usize = 3;

pub(super) fn parse(ctx: &mut Ctx, k: &Map<String, Value>) -> KubeletConfig {
    const P: &str = "spec.kubelet";
    ctx.known(k, P, FIELDS);
    let mut kc = KubeletConfig::default();
    // podsPerCore 0 is the kubelet's "no per-core limit" (Karpenter's CRD allows it).
    for (field, slot, min, max) in [
        ("maxPods", &mut kc.max_pods, 1, 10_000),
        ("podsPerCore", &mut kc.pods_per_core, 0, 10_000),
        (
            "evictionMaxPodGracePeriod",
            &mut kc.eviction_max_pod_grace_period,
            1,
            86_400,
        ),
    ] {
        if let Some(v) = k.get(field) {
            match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => *slot = Some(n as u32),
                _ => ctx.err(
                    &format!("{P}.{field}"),
                    format!("{v} must be an integer from {min} to {max}"),
                ),
            }
        }
    }
    for (field, slot) in [
        ("imageGCHighThresholdPercent", &mut kc.image_gc_high_threshold_percent),
        ("imageGCLowThresholdPercent", &mut kc.image_gc_low_threshold_percent),
    ] {
        if let Some(v) = k.get(field) {
            match v.as_u64() {
                Some(n) if n <= 100 => *slot = Some(n as u32),
                _ => ctx.err(
                    &format!("{P}.{field}"),
                    format!("{v} must be a percentage from 0 to 100"),
                ),
            }
        }
    }
    if let (Some(high), Some(low)) = (kc.image_gc_high_threshold_percent, kc.image_gc_low_threshold_percent)
        && high <= low
    {
        ctx.err(
            &format!("{P}.imageGCHighThresholdPercent"),
            format!("{high} must be greater than imageGCLowThresholdPercent ({low})"),
        );
    }
    if let Some(v) = k.get("cpuCFSQuota") {
        match v.as_bool() {
            Some(b) => kc.cpu_cfs_quota = Some(b),
            None => ctx.err(&format!("{P}.cpuCFSQuota"), format!("{v} must be true or false")),
        }
    }
    if let Some(v) = k.get("clusterDNS") {
        match v.as_array() {
            Some(a) if a.len() <= MAX_CLUSTER_DNS => {
                for (i, ip) in a.iter().enumerate() {
                    match ip.as_str().filter(|s| s.parse::<std::net::IpAddr>().is_ok()) {
                        Some(s) => kc.cluster_dns.push(s.to_string()),
                        None => ctx.err(&format!("{P}.clusterDNS[{i}]"), format!("{ip} is not an IP address")),
                    }
                }
            }
            _ => ctx.err(
                &format!("{P}.clusterDNS"),
                format!("expected a list of at most {MAX_CLUSTER_DNS} IP addresses"),
            ),
        }
    }
    for (field, slot) in [
        ("kubeReserved", &mut kc.kube_reserved),
        ("systemReserved", &mut kc.system_reserved),
    ] {
        *slot = quantities(ctx, k, field, RESERVED, |name, v| {
            let scale = if name == "cpu" { Scale::Milli } else { Scale::Unit };
            parse_quantity(v, scale).map(drop).map_err(|e| e.to_string())
        });
    }
    for (field, slot) in [
        ("evictionHard", &mut kc.eviction_hard),
        ("evictionSoft", &mut kc.eviction_soft),
    ] {
        *slot = quantities(ctx, k, field, SIGNALS, |_, v| Threshold::parse(v).map(drop));
    }
    kc.eviction_soft_grace_period = quantities(ctx, k, "evictionSoftGracePeriod", SIGNALS, |_, v| {
        super::parse_duration(v)
            .map(drop)
            .map_err(|e| format!("{e}; expected a duration like 1m30s"))
    });
    // The kubelet refuses a soft threshold without a grace period, and so does Karpenter's CRD.
    for signal in kc.eviction_soft.keys() {
        if !kc.eviction_soft_grace_period.contains_key(signal) {
            ctx.err(
                &format!("{P}.evictionSoft.{signal}"),
                "has no matching evictionSoftGracePeriod",
            );
        }
    }
    for signal in kc.eviction_soft_grace_period.keys() {
        if !kc.eviction_soft.contains_key(signal) {
            ctx.err(
                &format!("{P}.evictionSoftGracePeriod.{signal}"),
                "has no matching evictionSoft threshold",
            );
        }
    }
    kc
}

/// A map of names to string values, each name one of `names` and each value accepted by `check`.
fn quantities(
    ctx: &mut Ctx,
    k: &Map<String, Value>,
    field: &str,
    names: &[&str],
    check: impl Fn(&str, &str) -> Result<(), String>,
) -> BTreeMap<String, String> {
    let path = format!("spec.kubelet.{field}");
    let mut out = BTreeMap::new();
    let Some(m) = ctx.child(k, field, "spec.kubelet") else {
        return out;
    };
    for (name, v) in m {
        let p = format!("{path}.{name}");
        if !names.contains(&name.as_str()) {
            ctx.err(&p, format!("unknown; expected one of {}", names.join(", ")));
            continue;
        }
        let value = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                ctx.err(&p, "expected a string");
                continue;
            }
        };
        match check(name, &value) {
            Ok(()) => {
                out.insert(name.clone(), value);
            }
            Err(e) => ctx.err(&p, e),
        }
    }
    out
}
