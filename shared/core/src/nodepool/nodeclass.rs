//! An `EC2NodeClass`: AMI family and selectors, subnets and security groups, role, kubelet,
//! block devices and the rest, checked as Karpenter's CRD checks them.

use serde_json::{Map, Value};

use super::{Ec2NodeClass, SelectorTerm};

use super::diagnostics::Ctx;
use super::fields::metadata_name;

pub(super) fn selector_terms(ctx: &mut Ctx, items: &[Value], path: &str, allowed: &[&str]) -> Vec<SelectorTerm> {
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
            match unlaunchable_family(family) {
                Some(why) => ctx.err(&format!("{p}.alias"), format!("{a:?}: {why}")),
                None if !LAUNCHABLE.contains(&family) => ctx.err(
                    &format!("{p}.alias"),
                    format!("{a:?}: unknown AMI family (expected al2023@…, bottlerocket@…, al2@…)"),
                ),
                None if family == "al2" => ctx.warn(&format!("{p}.alias"), AL2_END_OF_LIFE),
                None => {}
            }
            if a.split_once('@').is_none_or(|(_, v)| v.is_empty()) {
                ctx.err(
                    &format!("{p}.alias"),
                    format!("{a:?} must be family@version (e.g. al2023@latest)"),
                );
            }
            if t.id.is_some() || !t.tags.is_empty() || t.name.is_some() || t.owner.is_some() {
                ctx.err(
                    &p,
                    "'alias' is mutually exclusive, cannot be set with id, tags, name or owner",
                );
            }
        }
        out.push(t);
    }
    out
}

/// Alias families Nodewright boots: nodeadm, Bottlerocket settings, bootstrap.sh.
const LAUNCHABLE: &[&str] = &["al2023", "bottlerocket", "al2"];

const AL2_END_OF_LIFE: &str =
    "AL2 is end of life for EKS: no AL2 images are published for Kubernetes 1.33 and later; prefer al2023@latest";

/// Why nodes of an AMI family Karpenter knows cannot be launched here (None: they can, or the
/// family is unknown). Refused at validation, so a copied Karpenter class fails where the user
/// reads it, not at the first launch.
fn unlaunchable_family(family: &str) -> Option<&'static str> {
    match family.to_ascii_lowercase().as_str() {
        f if f.starts_with("windows") => Some(
            "Windows nodes are not supported: Nodewright boots AL2023 (nodeadm), Bottlerocket and AL2 (bootstrap.sh) nodes; use al2023@latest or bottlerocket@latest",
        ),
        _ => None,
    }
}

pub(super) fn parse_nodeclass(ctx: &mut Ctx, m: &Map<String, Value>) -> Option<Ec2NodeClass> {
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
    if let Some(f) = &c.ami_family {
        match unlaunchable_family(f) {
            Some(why) => ctx.err("spec.amiFamily", format!("{f}: {why}")),
            None if f.eq_ignore_ascii_case("custom") => {}
            None if !LAUNCHABLE.contains(&f.to_ascii_lowercase().as_str()) => ctx.err(
                "spec.amiFamily",
                format!("{f:?}: unknown AMI family (AL2023, Bottlerocket, AL2 or Custom)"),
            ),
            None if f.eq_ignore_ascii_case("al2") => ctx.warn("spec.amiFamily", AL2_END_OF_LIFE),
            None => {}
        }
    }
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
    // Karpenter's CRD rules on the family: an alias stands alone and fixes the family; without
    // one, amiFamily says how the node boots.
    let aliases: Vec<&str> = c.ami_selector_terms.iter().filter_map(|t| t.alias.as_deref()).collect();
    if let Some(alias) = aliases.first() {
        if c.ami_selector_terms.len() != 1 {
            ctx.err(
                "spec.amiSelectorTerms",
                "'alias' is mutually exclusive, cannot be set with other amiSelectorTerms",
            );
        }
        let family = alias.split('@').next().unwrap_or("");
        if let Some(f) = &c.ami_family
            && !f.eq_ignore_ascii_case(family)
            && !f.eq_ignore_ascii_case("custom")
        {
            ctx.err(
                "spec.amiFamily",
                format!("{f:?} does not match the alias {alias:?}: leave it out or set the alias's family"),
            );
        }
    } else if !c.ami_selector_terms.is_empty() && c.ami_family.is_none() {
        ctx.err(
            "spec.amiFamily",
            "required when amiSelectorTerms has no alias (it says how the node boots: AL2023, Bottlerocket or AL2)",
        );
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
    if c.ami_family
        .as_deref()
        .is_some_and(|f| f.eq_ignore_ascii_case("custom"))
    {
        if c.user_data.as_deref().is_none_or(|u| u.trim().is_empty()) {
            ctx.err(
                "spec.userData",
                "amiFamily Custom launches with this user data as given and nothing else: without it the node cannot join",
            );
        } else {
            ctx.warn(
                "spec.amiFamily",
                "Custom: the user data is used as given; it must join the cluster with the taint karpenter.sh/unregistered:NoExecute (Nodewright then writes the pool's labels and taints and lifts it) and apply spec.kubelet itself (Nodewright plans with spec.kubelet but cannot write it)",
            );
        }
    }
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
