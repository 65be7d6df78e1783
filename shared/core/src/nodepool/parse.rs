//! Parsing and validation of configuration documents. Every problem is collected with its path
//! (`spec.template.spec.requirements[2].operator: unknown operator "Inn"`); unknown fields warn.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::{
    Budget, BudgetNodes, Config, ConsolidationPolicy, Diagnostics, Disruption, DisruptionReason, Ec2NodeClass, Limits,
    NodePool, PoolBacking, SelectorTerm, UnknownFields, legacy, parse_duration,
};
use crate::catalogue::CapacityType;
use crate::labels;
use crate::model::{Effect, Taint};
use crate::requirements::{Operator, Requirement};
use crate::resources::Resources;

/// Diagnostic collector with path-qualified messages.
pub(super) struct Ctx {
    prefix: String,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    unknown: UnknownFields,
}

impl Ctx {
    fn new(unknown: UnknownFields) -> Self {
        Ctx {
            prefix: String::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            unknown,
        }
    }
    /// A field the format does not have: an error (as the API server's strict field validation
    /// refuses it), or a warning when unknown fields are allowed. `near` is the field most likely
    /// meant.
    pub(super) fn unknown_field(&mut self, path: &str, near: Option<&str>) {
        let meant = near.map(|n| format!("; did you mean {n:?}?")).unwrap_or_default();
        match self.unknown {
            UnknownFields::Error => self.err(
                path,
                format!("unknown field{meant} (--allow-unknown-fields reads it as a warning and ignores it)"),
            ),
            UnknownFields::Warn => self.warn(path, format!("unknown field (ignored){meant}")),
        }
    }
    pub fn err(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.errors.push(format!("{}{path}: {msg}", self.prefix));
    }
    pub fn warn(&mut self, path: &str, msg: impl std::fmt::Display) {
        self.warnings.push(format!("{}{path}: {msg}", self.prefix));
    }
    pub(super) fn object<'a>(&mut self, v: &'a Value, path: &str) -> Option<&'a Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            Value::Null => None,
            _ => {
                self.err(path, "expected a mapping");
                None
            }
        }
    }
    pub(super) fn child<'a>(
        &mut self,
        m: &'a Map<String, Value>,
        key: &str,
        path: &str,
    ) -> Option<&'a Map<String, Value>> {
        m.get(key).and_then(|v| self.object(v, &join(path, key)))
    }
    pub(super) fn known(&mut self, m: &Map<String, Value>, path: &str, known: &[&str]) {
        for k in m.keys() {
            if !known.contains(&k.as_str()) {
                let near = nearest(k, known);
                self.unknown_field(&join(path, k), near);
            }
        }
    }
    pub(super) fn string(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<String> {
        match m.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => {
                self.err(&join(path, key), "expected a string");
                None
            }
        }
    }
    fn array<'a>(&mut self, m: &'a Map<String, Value>, key: &str, path: &str) -> &'a [Value] {
        match m.get(key) {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => &[],
            Some(_) => {
                self.err(&join(path, key), "expected a list");
                &[]
            }
        }
    }
    fn string_map(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(obj) = self.child(m, key, path) {
            for (k, v) in obj {
                match v {
                    Value::String(s) => {
                        out.insert(k.clone(), s.clone());
                    }
                    Value::Number(_) | Value::Bool(_) => {
                        out.insert(k.clone(), v.to_string());
                    }
                    _ => self.err(&format!("{}.{k}", join(path, key)), "expected a string value"),
                }
            }
        }
        out
    }
    fn duration_or_never(&mut self, m: &Map<String, Value>, key: &str, path: &str) -> Option<Option<u64>> {
        let s = self.string(m, key, path)?;
        if s == "Never" {
            return Some(None);
        }
        match parse_duration(&s) {
            Ok(v) => Some(Some(v)),
            Err(e) => {
                self.err(
                    &join(path, key),
                    format!("{e}; expected a duration like 720h or \"Never\""),
                );
                None
            }
        }
    }
}

/// The known field `word` is most likely a misspelling of: the closest by edit distance, within a
/// third of its length (at least 1), so `requirments` finds `requirements` and `foo` finds nothing.
fn nearest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let distance = |a: &str, b: &str| -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut last = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let next = (row[j + 1] + 1).min(row[j] + 1).min(last + usize::from(ca != *cb));
                last = row[j + 1];
                row[j + 1] = next;
            }
        }
        row[b.len()]
    };
    // Bounded: field names are short; a long unknown key is not compared.
    if word.len() > 64 {
        return None;
    }
    known
        .iter()
        .map(|k| (distance(&word.to_ascii_lowercase(), &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min()
        .map(|(_, k)| k)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// An older object converted to its v1 document by `convert`, then read by the v1 parser `parse`.
fn converted<T>(
    ctx: &mut Ctx,
    m: &Map<String, Value>,
    convert: fn(&mut Ctx, &Map<String, Value>) -> Option<Value>,
    parse: fn(&mut Ctx, &Map<String, Value>) -> Option<T>,
) -> Option<T> {
    let v1 = convert(ctx, m)?;
    parse(ctx, v1.as_object()?)
}

/// One file: its declarations and diagnostics, a NodePool's nodeClassRef looked up in that file.
pub(super) fn parse_config(text: &str, source: &str) -> (Option<Config>, Diagnostics) {
    parse_config_with(text, source, &[], UnknownFields::Error)
}

/// One file of several: a NodePool's nodeClassRef is looked up in this file and in `other_classes`
/// (the names the other files of the same call declare), so a class in another file is no warning.
pub(super) fn parse_config_with(
    text: &str,
    source: &str,
    other_classes: &[String],
    unknown: UnknownFields,
) -> (Option<Config>, Diagnostics) {
    let mut ctx = Ctx::new(unknown);
    let mut config = Config::default();
    let docs = match crate::model::documents(text, source) {
        Ok(d) => d,
        Err(e) => {
            return (
                None,
                Diagnostics {
                    errors: vec![e.to_string()],
                    warnings: vec![],
                },
            );
        }
    };
    for (i, doc) in docs.iter().enumerate() {
        let Value::Object(m) = doc else {
            if !doc.is_null() {
                ctx.prefix = format!("{source}: document {i}: ");
                ctx.err("", "expected a Kubernetes object");
            }
            continue;
        };
        let api = m.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = m.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = m
            .get("metadata")
            .and_then(|md| md.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        ctx.prefix = format!("{source}: {kind} {name}: ");
        match (api, kind) {
            ("karpenter.sh/v1", "NodePool") => {
                if let Some(p) = parse_nodepool(&mut ctx, m) {
                    config.node_pools.push(p);
                }
            }
            ("karpenter.sh/v1beta1", "NodePool") => {
                config
                    .node_pools
                    .extend(converted(&mut ctx, m, legacy::v1beta1_nodepool, parse_nodepool));
            }
            ("karpenter.sh/v1alpha5", "Provisioner") => {
                config
                    .node_pools
                    .extend(converted(&mut ctx, m, legacy::provisioner_to_nodepool, parse_nodepool));
            }
            ("karpenter.k8s.aws/v1", "EC2NodeClass") => {
                if let Some(c) = parse_nodeclass(&mut ctx, m) {
                    config.node_classes.push(c);
                }
            }
            ("karpenter.k8s.aws/v1beta1", "EC2NodeClass") => {
                config
                    .node_classes
                    .extend(converted(&mut ctx, m, legacy::v1beta1_nodeclass, parse_nodeclass));
            }
            ("karpenter.k8s.aws/v1alpha1", "AWSNodeTemplate") => {
                config.node_classes.extend(converted(
                    &mut ctx,
                    m,
                    legacy::node_template_to_nodeclass,
                    parse_nodeclass,
                ));
            }
            ("nodewright.io/v1alpha1", "AutoScalingPool") => {
                if let Some(p) = parse_asg_pool(&mut ctx, m) {
                    config.node_pools.push(p);
                }
            }
            (_, "NodePool" | "EC2NodeClass" | "Provisioner" | "AutoScalingPool") => {
                ctx.err("apiVersion", format!("unsupported apiVersion {api:?} for {kind}"));
            }
            ("", _) | (_, "") => ctx.err("", "missing apiVersion or kind"),
            _ => ctx.warn("", format!("{api} {kind} is not Nodewright configuration (ignored)")),
        }
    }
    ctx.prefix = format!("{source}: ");
    let mut names = BTreeSet::new();
    for p in &config.node_pools {
        if !names.insert(p.name.clone()) {
            ctx.err(&format!("NodePool {}", p.name), "defined twice");
        }
    }
    for p in &config.node_pools {
        if let (Some(nc), PoolBacking::Fleet) = (&p.node_class, &p.backing)
            && !config.node_classes.iter().any(|c| &c.name == nc)
            && !other_classes.contains(nc)
        {
            ctx.warn(
                &format!("NodePool {}", p.name),
                format!("nodeClassRef {nc:?} is not defined in these files (it must exist at deploy time)"),
            );
        }
    }
    config.link_node_classes();
    let diags = Diagnostics {
        errors: ctx.errors,
        warnings: ctx.warnings,
    };
    let ok = diags.errors.is_empty();
    (ok.then_some(config), diags)
}

fn metadata_name(ctx: &mut Ctx, m: &Map<String, Value>) -> Option<String> {
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

fn is_dns_label(s: &str) -> bool {
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

fn is_label_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && v.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && v.chars().last().is_some_and(|c| c.is_ascii_alphanumeric()))
}

/// Label domains Karpenter reserves: keys there must be well-known.
fn restricted_domain(key: &str) -> bool {
    let Some((prefix, _)) = key.rsplit_once('/') else {
        return false;
    };
    // Karpenter's exceptions: sub-domains never passed to the kubelet as its own.
    let excepted = ["node.kubernetes.io", "node-restriction.kubernetes.io", "kops.k8s.io"]
        .iter()
        .any(|d| prefix == *d || prefix.ends_with(&format!(".{d}")));
    !excepted
        && ["kubernetes.io", "k8s.io", "karpenter.sh", "karpenter.k8s.aws"]
            .iter()
            .any(|d| prefix == *d || prefix.ends_with(&format!(".{d}")))
}

fn parse_requirements(ctx: &mut Ctx, items: &[Value], path: &str) -> Vec<Requirement> {
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

fn parse_taints(ctx: &mut Ctx, items: &[Value], path: &str) -> Vec<Taint> {
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

fn parse_labels(ctx: &mut Ctx, m: &Map<String, Value>, key: &str, path: &str) -> BTreeMap<String, String> {
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

fn parse_resources(ctx: &mut Ctx, m: &Map<String, Value>, path: &str) -> Limits {
    let mut limits = Limits::default();
    for (k, v) in m {
        let p = join(path, k);
        let q = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                ctx.err(&p, "expected a quantity");
                continue;
            }
        };
        if k == "nodes" {
            match q.parse::<u64>() {
                Ok(n) => limits.nodes = Some(n),
                Err(_) => ctx.err(&p, format!("{q:?} is not a whole number of nodes")),
            }
            continue;
        }
        let mut r = Resources::new();
        match r.set_quantity(k, &q) {
            Ok(()) => {
                limits.resources.add(&r);
                limits.named.insert(k.clone());
            }
            Err(e) => ctx.err(&p, e),
        }
    }
    limits
}

fn parse_nodepool(ctx: &mut Ctx, m: &Map<String, Value>) -> Option<NodePool> {
    ctx.known(m, "", &["apiVersion", "kind", "metadata", "spec", "status"]);
    let name = metadata_name(ctx, m);
    let Some(spec) = ctx.child(m, "spec", "") else {
        ctx.err("spec", "missing");
        return None;
    };
    ctx.known(
        spec,
        "spec",
        &["template", "disruption", "limits", "weight", "replicas"],
    );
    let mut pool = NodePool::new(name.as_deref().unwrap_or("?"));
    let errors_before = ctx.errors.len();
    if spec.contains_key("replicas") {
        ctx.err(
            "spec.replicas",
            "static NodePools are not supported; use an AutoScalingPool",
        );
    }
    match spec.get("weight") {
        None | Some(Value::Null) => {}
        Some(v) => match v.as_u64() {
            Some(w) if (1..=100).contains(&w) => pool.weight = w as u32,
            _ => ctx.err("spec.weight", format!("{v} must be an integer from 1 to 100")),
        },
    }
    if let Some(limits) = ctx.child(spec, "limits", "spec") {
        pool.limits = parse_resources(ctx, limits, "spec.limits");
    }
    let Some(template) = ctx.child(spec, "template", "spec") else {
        ctx.err("spec.template", "missing");
        return None;
    };
    ctx.known(template, "spec.template", &["metadata", "spec"]);
    if let Some(md) = ctx.child(template, "metadata", "spec.template") {
        ctx.known(md, "spec.template.metadata", &["labels", "annotations"]);
        pool.labels = parse_labels(ctx, md, "labels", "spec.template.metadata");
        pool.annotations = ctx.string_map(md, "annotations", "spec.template.metadata");
    }
    let Some(ts) = ctx.child(template, "spec", "spec.template") else {
        ctx.err("spec.template.spec", "missing");
        return None;
    };
    ctx.known(
        ts,
        "spec.template.spec",
        &[
            "requirements",
            "taints",
            "startupTaints",
            "nodeClassRef",
            "expireAfter",
            "terminationGracePeriod",
            "kubelet",
        ],
    );
    let reqs = ctx.array(ts, "requirements", "spec.template.spec");
    pool.requirements = parse_requirements(ctx, reqs, "spec.template.spec.requirements");
    let taints = ctx.array(ts, "taints", "spec.template.spec");
    pool.taints = parse_taints(ctx, taints, "spec.template.spec.taints");
    let st = ctx.array(ts, "startupTaints", "spec.template.spec");
    pool.startup_taints = parse_taints(ctx, st, "spec.template.spec.startupTaints");
    if ts.contains_key("kubelet") {
        ctx.warn(
            "spec.template.spec.kubelet",
            "kubelet settings belong in the EC2NodeClass in karpenter v1 (ignored here)",
        );
    }
    match ctx.child(ts, "nodeClassRef", "spec.template.spec") {
        Some(r) => {
            ctx.known(
                r,
                "spec.template.spec.nodeClassRef",
                &["group", "kind", "name", "apiVersion"],
            );
            if let Some(g) = ctx.string(r, "group", "spec.template.spec.nodeClassRef")
                && g != "karpenter.k8s.aws"
            {
                ctx.err(
                    "spec.template.spec.nodeClassRef.group",
                    format!("{g:?} is not karpenter.k8s.aws"),
                );
            }
            if let Some(k) = ctx.string(r, "kind", "spec.template.spec.nodeClassRef")
                && k != "EC2NodeClass"
            {
                ctx.err(
                    "spec.template.spec.nodeClassRef.kind",
                    format!("{k:?} is not EC2NodeClass"),
                );
            }
            pool.node_class = ctx.string(r, "name", "spec.template.spec.nodeClassRef");
            if pool.node_class.is_none() {
                ctx.err("spec.template.spec.nodeClassRef.name", "missing");
            }
        }
        None => ctx.warn(
            "spec.template.spec.nodeClassRef",
            "missing; Karpenter v1 requires it, Nodewright uses the EC2NodeClass named \"default\"",
        ),
    }
    if let Some(e) = ctx.duration_or_never(ts, "expireAfter", "spec.template.spec") {
        pool.expire_after_secs = e;
    }
    if let Some(e) = ctx.duration_or_never(ts, "terminationGracePeriod", "spec.template.spec") {
        pool.termination_grace_period_secs = e;
    }
    if let Some(d) = ctx.child(spec, "disruption", "spec") {
        pool.disruption = parse_disruption(ctx, d, "spec.disruption");
    }
    (ctx.errors.len() == errors_before && name.is_some()).then_some(pool)
}

fn parse_disruption(ctx: &mut Ctx, d: &Map<String, Value>, path: &str) -> Disruption {
    ctx.known(d, path, &["consolidationPolicy", "consolidateAfter", "budgets"]);
    let mut out = Disruption::default();
    match ctx.string(d, "consolidationPolicy", path).as_deref() {
        None => {}
        Some("WhenEmpty") => out.consolidation_policy = ConsolidationPolicy::WhenEmpty,
        Some("WhenEmptyOrUnderutilized") => out.consolidation_policy = ConsolidationPolicy::WhenEmptyOrUnderutilized,
        Some(o) => ctx.err(
            &join(path, "consolidationPolicy"),
            format!("unknown policy {o:?} (expected WhenEmpty or WhenEmptyOrUnderutilized)"),
        ),
    }
    if let Some(c) = ctx.duration_or_never(d, "consolidateAfter", path) {
        out.consolidate_after_secs = c;
    }
    if d.contains_key("budgets") {
        out.budgets.clear();
        let items = ctx.array(d, "budgets", path);
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}.budgets[{i}]");
            let Some(b) = ctx.object(item, &p) else {
                continue;
            };
            ctx.known(b, &p, &["nodes", "schedule", "duration", "reasons"]);
            let nodes = match ctx.string(b, "nodes", &p) {
                Some(n) => match parse_budget_nodes(&n) {
                    Some(v) => v,
                    None => {
                        ctx.err(
                            &format!("{p}.nodes"),
                            format!("{n:?} must be a count (\"5\") or a percentage (\"10%\")"),
                        );
                        continue;
                    }
                },
                None => BudgetNodes::Percent(10),
            };
            let schedule = ctx.string(b, "schedule", &p);
            if let Some(s) = &schedule
                && let Err(e) = crate::disruption::validate_schedule(s)
            {
                ctx.err(&format!("{p}.schedule"), e);
            }
            let duration_secs = match ctx.string(b, "duration", &p) {
                Some(s) => match parse_duration(&s) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        ctx.err(&format!("{p}.duration"), e);
                        None
                    }
                },
                None => None,
            };
            if schedule.is_some() != b.contains_key("duration") {
                ctx.err(&p, "schedule and duration must be set together");
            }
            let mut reasons = Vec::new();
            for (j, r) in ctx.array(b, "reasons", &p).iter().enumerate() {
                match r.as_str().and_then(DisruptionReason::parse) {
                    Some(r) => reasons.push(r),
                    None => ctx.err(
                        &format!("{p}.reasons[{j}]"),
                        format!("unknown reason {r} (expected Underutilized, Empty or Drifted)"),
                    ),
                }
            }
            out.budgets.push(Budget {
                nodes,
                schedule,
                duration_secs,
                reasons,
            });
        }
    }
    out
}

fn parse_budget_nodes(s: &str) -> Option<BudgetNodes> {
    if let Some(p) = s.strip_suffix('%') {
        let v: u8 = p.parse().ok()?;
        (v <= 100).then_some(BudgetNodes::Percent(v))
    } else {
        s.parse().ok().map(BudgetNodes::Count)
    }
}

fn selector_terms(ctx: &mut Ctx, items: &[Value], path: &str, allowed: &[&str]) -> Vec<SelectorTerm> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("{path}[{i}]");
        let Some(m) = ctx.object(item, &p) else {
            continue;
        };
        ctx.known(m, &p, allowed);
        let t = SelectorTerm {
            tags: ctx.string_map(m, "tags", &p),
            id: ctx.string(m, "id", &p),
            name: ctx.string(m, "name", &p),
            alias: ctx.string(m, "alias", &p),
            owner: ctx.string(m, "owner", &p),
            ssm_parameter: ctx.string(m, "ssmParameter", &p),
        };
        if t.tags.is_empty() && t.id.is_none() && t.name.is_none() && t.alias.is_none() && t.ssm_parameter.is_none() {
            ctx.err(&p, "a selector term needs tags, id, name, alias or ssmParameter");
        }
        if let Some(a) = &t.alias {
            let family = a.split('@').next().unwrap_or("");
            if !["al2023", "al2", "bottlerocket", "windows2019", "windows2022"].contains(&family) {
                ctx.err(
                    &format!("{p}.alias"),
                    format!("{a:?}: unknown AMI family (expected al2023@…, bottlerocket@…)"),
                );
            }
            if family == "al2" {
                ctx.warn(&format!("{p}.alias"), "AL2 is end of life for EKS; prefer al2023");
            }
        }
        out.push(t);
    }
    out
}

fn parse_nodeclass(ctx: &mut Ctx, m: &Map<String, Value>) -> Option<Ec2NodeClass> {
    ctx.known(m, "", &["apiVersion", "kind", "metadata", "spec", "status"]);
    let name = metadata_name(ctx, m);
    let Some(spec) = ctx.child(m, "spec", "") else {
        ctx.err("spec", "missing");
        return None;
    };
    let errors_before = ctx.errors.len();
    ctx.known(
        spec,
        "spec",
        &[
            "amiFamily",
            "amiSelectorTerms",
            "subnetSelectorTerms",
            "securityGroupSelectorTerms",
            "capacityReservationSelectorTerms",
            "role",
            "instanceProfile",
            "tags",
            "userData",
            "kubelet",
            "blockDeviceMappings",
            "metadataOptions",
            "associatePublicIPAddress",
            "detailedMonitoring",
            "instanceStorePolicy",
            "context",
        ],
    );
    let mut c = Ec2NodeClass {
        name: name.clone().unwrap_or_default(),
        ami_family: ctx.string(spec, "amiFamily", "spec"),
        http_tokens_required: true,
        ..Default::default()
    };
    let ami = ctx.array(spec, "amiSelectorTerms", "spec");
    c.ami_selector_terms = selector_terms(
        ctx,
        ami,
        "spec.amiSelectorTerms",
        &["alias", "id", "name", "owner", "tags", "ssmParameter"],
    );
    if c.ami_selector_terms.is_empty() {
        ctx.err("spec.amiSelectorTerms", "missing (e.g. [{alias: al2023@latest}])");
    }
    let subnets = ctx.array(spec, "subnetSelectorTerms", "spec");
    c.subnet_selector_terms = selector_terms(ctx, subnets, "spec.subnetSelectorTerms", &["id", "tags"]);
    if c.subnet_selector_terms.is_empty() {
        ctx.err("spec.subnetSelectorTerms", "missing");
    }
    let sgs = ctx.array(spec, "securityGroupSelectorTerms", "spec");
    c.security_group_selector_terms =
        selector_terms(ctx, sgs, "spec.securityGroupSelectorTerms", &["id", "name", "tags"]);
    if c.security_group_selector_terms.is_empty() {
        ctx.err("spec.securityGroupSelectorTerms", "missing");
    }
    c.role = ctx.string(spec, "role", "spec");
    c.instance_profile = ctx.string(spec, "instanceProfile", "spec");
    match (&c.role, &c.instance_profile) {
        (None, None) => ctx.err("spec", "one of role or instanceProfile is required"),
        (Some(_), Some(_)) => ctx.err("spec", "role and instanceProfile are mutually exclusive"),
        _ => {}
    }
    c.tags = ctx.string_map(spec, "tags", "spec");
    for k in c.tags.keys() {
        if k.starts_with("kubernetes.io/cluster/") || k == "karpenter.sh/nodepool" || k.starts_with("nodewright.io/") {
            ctx.err(&format!("spec.tags.{k}"), "tag is restricted (set by Nodewright)");
        }
    }
    c.user_data = ctx.string(spec, "userData", "spec");
    if let Some(k) = ctx.child(spec, "kubelet", "spec") {
        c.kubelet = super::kubelet::parse(ctx, k);
    }
    if let Some(policy) = ctx.string(spec, "instanceStorePolicy", "spec") {
        match policy.as_str() {
            "RAID0" => c.instance_store_raid0 = true,
            other => ctx.err(
                "spec.instanceStorePolicy",
                format!("{other:?} is not a policy; the one policy is RAID0"),
            ),
        }
    }
    let bdms = ctx.array(spec, "blockDeviceMappings", "spec");
    c.block_device_mappings = super::block_devices::parse(ctx, bdms);
    if let Some(mo) = ctx.child(spec, "metadataOptions", "spec")
        && let Some(t) = ctx.string(mo, "httpTokens", "spec.metadataOptions")
    {
        c.http_tokens_required = t != "optional";
        if t == "optional" {
            ctx.warn(
                "spec.metadataOptions.httpTokens",
                "IMDSv1 allowed; IMDSv2 (required) is safer",
            );
        }
    }
    (ctx.errors.len() == errors_before && name.is_some()).then_some(c)
}

/// Nodewright's `AutoScalingPool`: a pool whose nodes come from an existing Auto Scaling group.
fn parse_asg_pool(ctx: &mut Ctx, m: &Map<String, Value>) -> Option<NodePool> {
    ctx.known(m, "", &["apiVersion", "kind", "metadata", "spec"]);
    let name = metadata_name(ctx, m);
    let Some(spec) = ctx.child(m, "spec", "") else {
        ctx.err("spec", "missing");
        return None;
    };
    let errors_before = ctx.errors.len();
    ctx.known(
        spec,
        "spec",
        &[
            "autoScalingGroupName",
            "instanceTypes",
            "capacityType",
            "minSize",
            "maxSize",
            "zones",
            "weight",
            "template",
            "disruption",
        ],
    );
    let mut pool = NodePool::new(name.as_deref().unwrap_or("?"));
    pool.node_class = None;
    let group = ctx.string(spec, "autoScalingGroupName", "spec");
    if group.is_none() {
        ctx.err("spec.autoScalingGroupName", "missing");
    }
    let types: Vec<String> = ctx
        .array(spec, "instanceTypes", "spec")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    if types.is_empty() {
        ctx.err("spec.instanceTypes", "missing: list the group's instance types");
    }
    for (i, t) in types.iter().enumerate() {
        if crate::Catalogue::embedded().get(t).is_err() {
            ctx.err(
                &format!("spec.instanceTypes[{i}]"),
                format!("unknown instance type {t:?}"),
            );
        }
    }
    let ct = ctx
        .string(spec, "capacityType", "spec")
        .unwrap_or_else(|| "on-demand".into());
    if !matches!(ct.as_str(), "on-demand" | "spot") {
        ctx.err("spec.capacityType", format!("{ct:?} must be on-demand or spot"));
    }
    let size = |ctx: &mut Ctx, k: &str| -> Option<u32> {
        match spec.get(k) {
            None => None,
            Some(v) => match v.as_u64() {
                Some(n) if n <= 10_000 => Some(n as u32),
                _ => {
                    ctx.err(&format!("spec.{k}"), format!("{v} must be an integer from 0 to 10000"));
                    None
                }
            },
        }
    };
    let min_size = size(ctx, "minSize").unwrap_or(0);
    let max_size = size(ctx, "maxSize");
    match max_size {
        None => ctx.err("spec.maxSize", "missing"),
        Some(mx) if mx < min_size => ctx.err("spec.maxSize", format!("{mx} is below minSize {min_size}")),
        _ => {}
    }
    if let Some(v) = spec.get("weight") {
        match v.as_u64() {
            Some(w) if (1..=100).contains(&w) => pool.weight = w as u32,
            _ => ctx.err("spec.weight", format!("{v} must be an integer from 1 to 100")),
        }
    }
    let zones: Vec<String> = ctx
        .array(spec, "zones", "spec")
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    pool.requirements.push(Requirement {
        key: labels::INSTANCE_TYPE.into(),
        operator: Operator::In,
        values: types,
        min_values: None,
    });
    pool.requirements
        .push(Requirement::new(labels::CAPACITY_TYPE, Operator::In, &[ct.as_str()]));
    if !zones.is_empty() {
        pool.requirements.push(Requirement {
            key: labels::ZONE.into(),
            operator: Operator::In,
            values: zones,
            min_values: None,
        });
    }
    if let Some(t) = ctx.child(spec, "template", "spec") {
        ctx.known(t, "spec.template", &["metadata", "spec"]);
        if let Some(md) = ctx.child(t, "metadata", "spec.template") {
            pool.labels = parse_labels(ctx, md, "labels", "spec.template.metadata");
        }
        if let Some(ts) = ctx.child(t, "spec", "spec.template") {
            ctx.known(ts, "spec.template.spec", &["taints", "startupTaints"]);
            let taints = ctx.array(ts, "taints", "spec.template.spec");
            pool.taints = parse_taints(ctx, taints, "spec.template.spec.taints");
            let st = ctx.array(ts, "startupTaints", "spec.template.spec");
            pool.startup_taints = parse_taints(ctx, st, "spec.template.spec.startupTaints");
        }
    }
    if let Some(d) = ctx.child(spec, "disruption", "spec") {
        pool.disruption = parse_disruption(ctx, d, "spec.disruption");
    }
    pool.expire_after_secs = None;
    pool.limits.nodes = max_size.map(u64::from);
    pool.backing = PoolBacking::AutoScalingGroup {
        group_name: group.unwrap_or_default(),
        min_size,
        max_size: max_size.unwrap_or(0),
    };
    (ctx.errors.len() == errors_before && name.is_some()).then_some(pool)
}
