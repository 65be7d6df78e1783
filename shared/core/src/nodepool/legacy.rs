//! Conversion of Karpenter's `v1alpha5` Provisioner and `v1alpha1` AWSNodeTemplate into their v1
//! equivalents. The converted document is then validated by the v1 parser, so both formats get the
//! same checks; every mapping that changes meaning is reported as a warning.

use serde_json::{Map, Value, json};

use super::parse::Ctx;

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
            ctx.warn(&format!("spec.{k}"), "unknown field (ignored)");
        }
    }
    let mut template_spec = Map::new();
    if let Some(r) = spec.get("requirements") {
        template_spec.insert("requirements".into(), r.clone());
    }
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
    let family = spec.get("amiFamily").and_then(Value::as_str).unwrap_or("AL2");
    let alias = match family {
        "AL2023" => "al2023@latest",
        "Bottlerocket" => "bottlerocket@latest",
        _ => "al2@latest",
    };
    let ami_terms = match spec.get("amiSelector") {
        Some(sel) => terms(Some(sel)),
        None => {
            ctx.warn(
                "spec.amiFamily",
                format!("amiFamily {family} converted to amiSelectorTerms alias {alias}"),
            );
            json!([{"alias": alias}])
        }
    };
    if spec.get("userData").is_some() && family != "AL2023" {
        ctx.warn(
            "spec.userData",
            "bootstrap.sh user data is for AL2; AL2023 nodes use nodeadm (review before use)",
        );
    }
    let mut out = json!({
        "amiSelectorTerms": ami_terms,
        "subnetSelectorTerms": terms(spec.get("subnetSelector")),
        "securityGroupSelectorTerms": terms(spec.get("securityGroupSelector")),
    });
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
            ctx.warn(&format!("spec.{k}"), "unknown field (ignored)");
        }
    }
    Some(json!({
        "apiVersion": "karpenter.k8s.aws/v1",
        "kind": "EC2NodeClass",
        "metadata": {"name": m.get("metadata").and_then(|md| md.get("name")).cloned().unwrap_or(Value::Null)},
        "spec": out,
    }))
}
