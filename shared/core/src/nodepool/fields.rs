//! The fields a NodePool template shares with Kubernetes: names, label keys and values (with the
//! domains Karpenter reserves), requirements and taints, each checked as the API server and
//! Karpenter's CRD check them.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::catalogue::CapacityType;
use crate::labels;
use crate::model::{Effect, Taint};
use crate::requirements::{Operator, Requirement};

use super::diagnostics::{Ctx, join};

pub(super) fn metadata_name(ctx: &mut Ctx, m: &Map<String, Value>) -> Option<String> {
    let md = ctx.child(m, "metadata", "")?;
    let name = ctx.string(md, "name", "metadata");
    match name {
        Some(n) if is_dns_label(&n) => Some(n),
        Some(n) => {
            ctx.err(
                "metadata.name",
                format!("{n:?} is not a valid name (lowercase letters, digits, '-', at most 63)"),
            );
            None
        }
        None => {
            ctx.err("metadata.name", "missing");
            None
        }
    }
}

pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A Kubernetes qualified label key (`prefix/name`).
pub(super) fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    });
    name_ok && prefix_ok
}

pub(super) fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric()))
}

/// Label domains Karpenter reserves (`karpenter.sh`, and the AWS provider's `karpenter.k8s.aws`):
/// keys there must be well-known. The Kubernetes domains are open, as in Karpenter since v1:
/// a label the kubelet may not set on itself is written at registration instead
/// (`registration::kubelet_may_set`).
pub(super) fn restricted_domain(key: &str) -> bool {
    let Some((prefix, _)) = key.rsplit_once('/') else {
        return false;
    };
    ["karpenter.sh", "karpenter.k8s.aws"]
        .iter()
        .any(|d| prefix == *d || prefix.ends_with(&format!(".{d}")))
}

pub(super) fn parse_requirements(ctx: &mut Ctx, items: &[Value], path: &str) -> Vec<Requirement> {
    if items.len() > 100 {
        ctx.err(path, format!("{} requirements; at most 100 are allowed", items.len()));
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(m) = ctx.object(item, &p) else {
            continue;
        };
        ctx.known(m, &p, &["key", "operator", "values", "minValues"]);
        let key = ctx.string(m, "key", &p);
        let op_s = ctx.string(m, "operator", &p);
        let mut ok = true;
        // Deprecated keys read as their stable keys, as Karpenter normalizes them.
        let key = key.map(|k| labels::normalized(&k).to_string());
        let key = match key {
            Some(k) if is_label_key(&k) => k,
            Some(k) => {
                ctx.err(&format!("{p}.key"), format!("{k:?} is not a valid label key"));
                ok = false;
                k
            }
            None => {
                ctx.err(&format!("{p}.key"), "missing");
                continue;
            }
        };
        if labels::is_restricted(&key) {
            ctx.err(
                &format!("{p}.key"),
                format!("{key:?} is restricted (set by Nodewright)"),
            );
            ok = false;
        } else if restricted_domain(&key) && !labels::is_well_known(&key) {
            ctx.err(
                &format!("{p}.key"),
                format!("{key:?} is in a restricted label domain and is not a well-known key"),
            );
            ok = false;
        }
        let operator = match op_s.as_deref().map(|o| (o, Operator::parse(o))) {
            Some((_, Some(o))) => o,
            Some((o, None)) => {
                ctx.err(
                    &format!("{p}.operator"),
                    format!("unknown operator {o:?} (expected In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte or Lte)"),
                );
                continue;
            }
            None => {
                ctx.err(&format!("{p}.operator"), "missing");
                continue;
            }
        };
        let mut values = Vec::new();
        for (j, v) in ctx.array(m, "values", &p).iter().enumerate() {
            match v {
                Value::String(s) => values.push(s.clone()),
                Value::Number(n) => values.push(n.to_string()),
                _ => {
                    ctx.err(&format!("{p}.values[{j}]"), "expected a string");
                    ok = false;
                }
            }
        }
        let min_values = match m.get("minValues") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=50).contains(&n) => Some(n as u32),
                _ => {
                    ctx.err(
                        &format!("{p}.minValues"),
                        format!("{v} must be an integer from 1 to 50"),
                    );
                    ok = false;
                    None
                }
            },
        };
        let r = Requirement {
            key: key.clone(),
            operator,
            values,
            min_values,
        };
        if let Err(e) = r.validate(&p) {
            ctx.err(&p, e.to_string().trim_start_matches(&format!("{p}: ")));
            ok = false;
        }
        if let (Some(mv), Operator::In) = (min_values, operator)
            && (mv as usize) > r.values.len()
        {
            ctx.err(
                &format!("{p}.minValues"),
                format!("{mv} is more than the {} values listed", r.values.len()),
            );
            ok = false;
        }
        if key == labels::INSTANCE_TENANCY && matches!(operator, Operator::In | Operator::NotIn) {
            for v in &r.values {
                if !labels::TENANCIES.contains(&v.as_str()) {
                    ctx.err(
                        &format!("{p}.values"),
                        format!("unknown tenancy {v:?} (expected default or dedicated)"),
                    );
                    ok = false;
                }
            }
        }
        if key == labels::CAPACITY_TYPE && matches!(operator, Operator::In | Operator::NotIn) {
            for v in &r.values {
                if CapacityType::parse(v).is_none() {
                    ctx.err(
                        &format!("{p}.values"),
                        format!("unknown capacity type {v:?} (expected spot, on-demand or reserved)"),
                    );
                    ok = false;
                }
            }
        }
        if key == labels::ARCH {
            for v in &r.values {
                if v != "amd64" && v != "arm64" {
                    ctx.warn(
                        &format!("{p}.values"),
                        format!("architecture {v:?} matches no instance type (amd64, arm64)"),
                    );
                }
            }
        }
        if ok {
            out.push(r);
        }
    }
    out
}

pub(super) fn parse_taints(ctx: &mut Ctx, items: &[Value], path: &str) -> Vec<Taint> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(m) = ctx.object(item, &p) else {
            continue;
        };
        ctx.known(m, &p, &["key", "value", "effect", "timeAdded"]);
        let key = ctx.string(m, "key", &p);
        let value = ctx.string(m, "value", &p);
        let effect = ctx.string(m, "effect", &p);
        let Some(key) = key else {
            ctx.err(&format!("{p}.key"), "missing");
            continue;
        };
        if !is_label_key(&key) {
            ctx.err(&format!("{p}.key"), format!("{key:?} is not a valid taint key"));
            continue;
        }
        match effect.as_deref().map(|e| (e, Effect::parse(e))) {
            Some((_, Some(effect))) => out.push(Taint { key, value, effect }),
            Some((e, None)) => ctx.err(
                &format!("{p}.effect"),
                format!("unknown effect {e:?} (expected NoSchedule, PreferNoSchedule or NoExecute)"),
            ),
            None => ctx.err(&format!("{p}.effect"), "missing"),
        }
    }
    out
}

pub(super) fn parse_labels(ctx: &mut Ctx, m: &Map<String, Value>, key: &str, path: &str) -> BTreeMap<String, String> {
    let l = ctx.string_map(m, key, path);
    for (k, v) in &l {
        let p = format!("{}.{k}", join(path, key));
        if !is_label_key(k) {
            ctx.err(&p, "not a valid label key");
        } else if labels::is_restricted(k) || (restricted_domain(k) && !labels::is_well_known(k)) {
            ctx.err(&p, format!("label {k:?} is restricted"));
        }
        if !is_label_value(v) {
            ctx.err(&p, format!("{v:?} is not a valid label value"));
        }
    }
    l
}
