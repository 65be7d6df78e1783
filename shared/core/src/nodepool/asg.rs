//! Nodewright's `AutoScalingPool`: a pool whose nodes come from an existing Auto Scaling group.

use serde_json::{Map, Value};

use super::{NodePool, PoolBacking};
use crate::labels;
use crate::requirements::{Operator, Requirement};

use super::diagnostics::Ctx;
use super::disruption_spec::parse_disruption;
use super::fields::{metadata_name, parse_labels, parse_taints};

/// Nodewright's `AutoScalingPool`: a pool whose nodes come from an existing Auto Scaling group.
pub(super) fn parse_asg_pool(ctx: &mut Ctx, m: &Map<String, Value>) -> Option<NodePool> {
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
