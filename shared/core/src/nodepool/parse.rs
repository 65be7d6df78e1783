//! Parsing and validation of configuration documents. Every problem is collected with its path
//! (`spec.template.spec.requirements[2].operator: unknown operator "Inn"`); an unknown field is an
//! error naming the field most likely meant (a warning where the caller allows unknown fields).
//! The documents are read here; their parts by concept in `fields`, `disruption_spec`,
//! `nodeclass` and `asg`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::{Config, Diagnostics, Limits, NodePool, PoolBacking, UnknownFields, legacy};
use crate::resources::Resources;

use super::asg::parse_asg_pool;
use super::diagnostics::{Ctx, join};
use super::disruption_spec::parse_disruption;
use super::fields::{metadata_name, parse_labels, parse_requirements, parse_taints};
use super::nodeclass::parse_nodeclass;

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
