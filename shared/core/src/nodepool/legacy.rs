//! Conversion of Karpenter's older objects into their v1 equivalents: the `v1alpha5` Provisioner
//! and `v1alpha1` AWSNodeTemplate, and the `v1beta1` NodePool and EC2NodeClass (as Karpenter's own
//! v1 migration maps them). The converted document is then validated by the v1 parser, so every
//! format gets the same checks; every mapping that changes meaning is reported as a warning, and
//! what cannot be carried over without changing what nodes get is an error naming what to do.

use serde_json::{Map, Value, json};

use super::diagnostics::Ctx;

pub(super) fn provisioner_to_nodepool(ctx: &mut Ctx, m: &Map<String, Value>) -> Option<Value> {
    ctx.warn(
        "apiVersion",
        "karpenter.sh/v1alpha5 Provisioner converted to a karpenter.sh/v1 NodePool",
    );
    let spec = match m.get("spec") {
        Some(Value::Object(s)) => s,
        _ => {
            ctx.err("spec", "missing");
            return None;
        }
    };
    let known = [
        "requirements",
        "labels",
        "taints",
        "startupTaints",
        "limits",
        "providerRef",
        "provider",
        "ttlSecondsAfterEmpty",
        "ttlSecondsUntilExpired",
        "consolidation",
        "weight",
        "kubeletConfiguration",
        "annotations",
    ];
    for k in spec.keys() {
        if !known.contains(&k.as_str()) {
            ctx.unknown_field(&format!("spec.{k}"), None);
        }
    }
    let mut template_spec = Map::new();
    let mut requirements: Vec<Value> = spec
        .get("requirements")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    provisioner_defaults(ctx, &mut requirements);
    template_spec.insert("requirements".into(), Value::Array(requirements));
    for k in ["taints", "startupTaints"] {
        if let Some(v) = spec.get(k) {
            template_spec.insert(k.into(), v.clone());
        }
    }
    let class = spec
        .get("providerRef")
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    if spec.contains_key("provider") {
        ctx.warn(
            "spec.provider",
            "inline provider settings are not converted; define an EC2NodeClass",
        );
    }
    template_spec.insert(
        "nodeClassRef".into(),
        json!({"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": class}),
    );
    match spec.get("ttlSecondsUntilExpired").and_then(Value::as_u64) {
        Some(s) => {
            template_spec.insert("expireAfter".into(), json!(format!("{s}s")));
        }
        None => {
            template_spec.insert("expireAfter".into(), json!("Never"));
        }
    }
    if spec.contains_key("kubeletConfiguration") {
        ctx.warn(
            "spec.kubeletConfiguration",
            "kubelet settings move to the EC2NodeClass in v1 (not converted)",
        );
    }
    let consolidation = spec
        .get("consolidation")
        .and_then(|c| c.get("enabled"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let empty_ttl = spec.get("ttlSecondsAfterEmpty").and_then(Value::as_u64);
    let disruption = match (consolidation, empty_ttl) {
        (true, ttl) => {
            if ttl.is_some() {
                ctx.warn(
                    "spec.ttlSecondsAfterEmpty",
                    "set together with consolidation.enabled; v1 uses WhenEmptyOrUnderutilized with consolidateAfter from the TTL",
                );
            }
            json!({"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": format!("{}s", ttl.unwrap_or(0))})
        }
        (false, Some(ttl)) => {
            json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": format!("{ttl}s")})
        }
        (false, None) => json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "Never"}),
    };
    let mut metadata = Map::new();
    if let Some(l) = spec.get("labels") {
        metadata.insert("labels".into(), l.clone());
    }
    if let Some(a) = spec.get("annotations") {
        metadata.insert("annotations".into(), a.clone());
    }
    let mut out_spec = json!({
        "template": {"metadata": metadata, "spec": template_spec},
        "disruption": disruption,
    });
    if let Some(l) = spec.get("limits").and_then(|l| l.get("resources")) {
        out_spec["limits"] = l.clone();
    }
    if let Some(w) = spec.get("weight") {
        out_spec["weight"] = w.clone();
    }
    Some(json!({
        "apiVersion": "karpenter.sh/v1",
        "kind": "NodePool",
        "metadata": {"name": m.get("metadata").and_then(|md| md.get("name")).cloned().unwrap_or(Value::Null)},
        "spec": out_spec,
    }))
}

/// The requirements Karpenter's v1alpha5 defaulting added to a Provisioner that did not say (amd64,
/// linux, on-demand; c, m and r types newer than generation 2 when nothing names the types): a v1
/// NodePool has no such defaults, so they are written out, or the converted pool would launch
/// arm64, spot or any family.
fn provisioner_defaults(ctx: &mut Ctx, requirements: &mut Vec<Value>) {
    let keys: Vec<String> = requirements
        .iter()
        .filter_map(|r| r.get("key").and_then(Value::as_str))
        .map(str::to_string)
        .collect();
    let has = |k: &str| keys.iter().any(|x| x == k);
    let mut added = Vec::new();
    for (key, value) in [
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/os", "linux"),
        ("karpenter.sh/capacity-type", "on-demand"),
    ] {
        if !has(key) {
            requirements.push(json!({"key": key, "operator": "In", "values": [value]}));
            added.push(format!("{key} In [{value}]"));
        }
    }
    let names_types = [
        "node.kubernetes.io/instance-type",
        "karpenter.k8s.aws/instance-family",
        "karpenter.k8s.aws/instance-category",
        "karpenter.k8s.aws/instance-generation",
    ]
    .iter()
    .any(|k| has(k));
    if !names_types {
        requirements
            .push(json!({"key": "karpenter.k8s.aws/instance-category", "operator": "In", "values": ["c", "m", "r"]}));
        requirements.push(json!({"key": "karpenter.k8s.aws/instance-generation", "operator": "Gt", "values": ["2"]}));
        added.push("instance-category In [c, m, r], instance-generation Gt 2".into());
    }
    if !added.is_empty() {
        ctx.warn(
            "spec.requirements",
            format!("v1alpha5 defaults written out as v1 requirements: {}", added.join("; ")),
        );
    }
}

/// The v1 alias for a v1beta1 / v1alpha1 `amiFamily`, or why there is none. `None` is the old
/// APIs' default, AL2, mapped as Karpenter's migration maps it, with a word on AL2's end of life.
fn family_alias(ctx: &mut Ctx, family: Option<&str>) -> Result<&'static str, String> {
    let Some(family) = family else {
        ctx.warn(
            "spec.amiFamily",
            "not set: the old default, AL2, converted to alias al2@latest; AL2 is end of life for EKS (no images for Kubernetes 1.33 and later): prefer amiFamily AL2023",
        );
        return Ok("al2@latest");
    };
    match family {
        "AL2023" => Ok("al2023@latest"),
        "Bottlerocket" => Ok("bottlerocket@latest"),
        "AL2" => Ok("al2@latest"),
        "Windows2019" | "Windows2022" => Err(format!(
            "{family}: Windows nodes are not supported (Nodewright boots AL2023, Bottlerocket and AL2 nodes); use AL2023 or Bottlerocket"
        )),
        "Ubuntu" => Err(
            "Ubuntu has no v1 alias (Karpenter v1 dropped it) and Nodewright boots AL2023, Bottlerocket and AL2 nodes only"
                .into(),
        ),
        "Custom" => Err("a Custom family needs amiSelector (it has no alias)".into()),
        other => Err(format!(
            "{other:?} is not an AMI family (AL2023, Bottlerocket, AL2, Windows2019, Windows2022, Custom)"
        )),
    }
}

/// A `karpenter.sh/v1beta1` NodePool as Karpenter's v1 migration maps it: `nodeClassRef`'s
/// `apiVersion` becomes `group`, `WhenUnderutilized` becomes `WhenEmptyOrUnderutilized`,
/// `disruption.expireAfter` moves to the template. Kubelet settings moved to the EC2NodeClass in
/// v1; carried over silently they would be dropped, so they are an error saying where they go.
pub(super) fn v1beta1_nodepool(ctx: &mut Ctx, m: &Map<String, Value>) -> Option<Value> {
    ctx.warn(
        "apiVersion",
        "karpenter.sh/v1beta1 NodePool converted to karpenter.sh/v1",
    );
    let mut out = Value::Object(m.clone());
    out["apiVersion"] = json!("karpenter.sh/v1");
    let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) else {
        ctx.err("spec", "missing");
        return None;
    };
    let expire = spec.get_mut("disruption").and_then(Value::as_object_mut).and_then(|d| {
        if d.get("consolidationPolicy").and_then(Value::as_str) == Some("WhenUnderutilized") {
            d.insert("consolidationPolicy".into(), json!("WhenEmptyOrUnderutilized"));
        }
        d.remove("expireAfter")
    });
    let template_spec = spec
        .entry("template")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .and_then(|t| t.entry("spec").or_insert_with(|| json!({})).as_object_mut());
    let Some(ts) = template_spec else {
        ctx.err("spec.template", "expected an object");
        return None;
    };
    if let Some(e) = expire
        && !ts.contains_key("expireAfter")
    {
        ts.insert("expireAfter".into(), e);
    }
    if let Some(r) = ts.get_mut("nodeClassRef").and_then(Value::as_object_mut)
        && let Some(api) = r.remove("apiVersion")
    {
        let group = api
            .as_str()
            .and_then(|a| a.split('/').next())
            .unwrap_or("karpenter.k8s.aws");
        r.insert("group".into(), json!(group));
        r.entry("kind").or_insert_with(|| json!("EC2NodeClass"));
    }
    if ts.remove("kubelet").is_some() {
        ctx.err(
            "spec.template.spec.kubelet",
            "v1 keeps kubelet settings in the EC2NodeClass: move them to its spec.kubelet (a v1beta1 NodePool's kubelet would otherwise be dropped)",
        );
    }
    Some(out)
}

/// A `karpenter.k8s.aws/v1beta1` EC2NodeClass as Karpenter's v1 migration maps it: an `amiFamily`
/// without `amiSelectorTerms` becomes the family's alias (a family with none is an error).
pub(super) fn v1beta1_nodeclass(ctx: &mut Ctx, m: &Map<String, Value>) -> Option<Value> {
    ctx.warn(
        "apiVersion",
        "karpenter.k8s.aws/v1beta1 EC2NodeClass converted to karpenter.k8s.aws/v1",
    );
    let mut out = Value::Object(m.clone());
    out["apiVersion"] = json!("karpenter.k8s.aws/v1");
    let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut) else {
        ctx.err("spec", "missing");
        return None;
    };
    let has_terms = spec
        .get("amiSelectorTerms")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if !has_terms {
        let family = spec.get("amiFamily").and_then(Value::as_str).map(str::to_string);
        match family_alias(ctx, family.as_deref()) {
            Ok(alias) => {
                spec.remove("amiFamily");
                spec.insert("amiSelectorTerms".into(), json!([{"alias": alias}]));
                if let Some(family) = family {
                    ctx.warn(
                        "spec.amiFamily",
                        format!("amiFamily {family} converted to amiSelectorTerms alias {alias}"),
                    );
                }
            }
            Err(e) => {
                ctx.err("spec.amiFamily", e);
                return None;
            }
        }
    }
    Some(out)
}

pub(super) fn node_template_to_nodeclass(ctx: &mut Ctx, m: &Map<String, Value>) -> Option<Value> {
    ctx.warn(
        "apiVersion",
        "karpenter.k8s.aws/v1alpha1 AWSNodeTemplate converted to a karpenter.k8s.aws/v1 EC2NodeClass",
    );
    let spec = match m.get("spec") {
        Some(Value::Object(s)) => s,
        _ => {
            ctx.err("spec", "missing");
            return None;
        }
    };
    let terms = |v: Option<&Value>| -> Value {
        match v {
            Some(Value::Object(tags)) => {
                // aws-ids / aws::ids selectors become id terms; everything else is a tag term.
                if let Some(ids) = tags
                    .get("aws-ids")
                    .or_else(|| tags.get("aws::ids"))
                    .and_then(Value::as_str)
                {
                    Value::Array(ids.split(',').map(|id| json!({"id": id.trim()})).collect())
                } else {
                    json!([{"tags": tags}])
                }
            }
            _ => json!([]),
        }
    };
    let family = spec.get("amiFamily").and_then(Value::as_str);
    // A Custom family keeps its selector and boots from the user data as given.
    let alias = match family {
        Some("Custom") if spec.get("amiSelector").is_some() => "custom",
        Some("Custom") => {
            ctx.err("spec.amiFamily", "a Custom family needs amiSelector (it has no alias)");
            return None;
        }
        _ => match family_alias(ctx, family) {
            Ok(alias) => alias,
            Err(e) => {
                ctx.err("spec.amiFamily", e);
                return None;
            }
        },
    };
    // With an amiSelector the family still says how the node boots, so v1 keeps it as amiFamily.
    let (ami_terms, ami_family) = match spec.get("amiSelector") {
        Some(sel) => {
            let v1_family = match alias.split('@').next() {
                Some("bottlerocket") => "Bottlerocket",
                Some("al2") => "AL2",
                Some("custom") => "Custom",
                _ => "AL2023",
            };
            (terms(Some(sel)), Some(v1_family))
        }
        None => {
            if let Some(family) = family {
                ctx.warn(
                    "spec.amiFamily",
                    format!("amiFamily {family} converted to amiSelectorTerms alias {alias}"),
                );
            }
            (json!([{"alias": alias}]), None)
        }
    };
    let bootstrap_sh = !alias.starts_with("al2@")
        && alias != "custom"
        && spec
            .get("userData")
            .and_then(Value::as_str)
            .is_some_and(|u| u.contains("bootstrap.sh"));
    if bootstrap_sh {
        ctx.warn(
            "spec.userData",
            "calls bootstrap.sh, which exists only on AL2: on AL2023 and Bottlerocket nodes the script fails and the node joins through nodeadm / Bottlerocket settings without it; drop it or move its settings to the EC2NodeClass's kubelet",
        );
    }
    let mut out = json!({
        "amiSelectorTerms": ami_terms,
        "subnetSelectorTerms": terms(spec.get("subnetSelector")),
        "securityGroupSelectorTerms": terms(spec.get("securityGroupSelector")),
    });
    if let Some(f) = ami_family {
        out["amiFamily"] = json!(f);
    }
    for (from, to) in [
        ("instanceProfile", "instanceProfile"),
        ("userData", "userData"),
        ("blockDeviceMappings", "blockDeviceMappings"),
        ("tags", "tags"),
        ("metadataOptions", "metadataOptions"),
        ("detailedMonitoring", "detailedMonitoring"),
    ] {
        if let Some(v) = spec.get(from) {
            out[to] = v.clone();
        }
    }
    for k in spec.keys() {
        if ![
            "subnetSelector",
            "securityGroupSelector",
            "amiSelector",
            "amiFamily",
            "instanceProfile",
            "userData",
            "blockDeviceMappings",
            "tags",
            "metadataOptions",
            "detailedMonitoring",
        ]
        .contains(&k.as_str())
        {
            ctx.unknown_field(&format!("spec.{k}"), None);
        }
    }
    Some(json!({
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": m.get("metadata").and_then(|md| md.get("name")).cloned().unwrap_or(Value::Null)},
        "spec": out,
    }))
}
