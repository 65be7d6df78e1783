//! NodePools and EC2NodeClasses read from the Kubernetes API, and the status written back on them.
//!
//! Each object is validated on its own, as Karpenter does: an invalid one is left out of the
//! configuration (its `ValidationSucceeded` condition says why, naming the field) and the others
//! keep working. A NodePool whose EC2NodeClass is missing or invalid is left out too
//! (`NodeClassReady` False). The status carries Karpenter's condition types, so `kubectl get
//! nodepools` reads the same as under Karpenter.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Config, parse};
use crate::ports::cluster::{ConfigKind, ConfigObject, ConfigObjects};
use crate::ports::state::PoolUsage;

/// The configuration the API's objects make, and what was found about each object.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// The valid pools (with a ready class) and the valid classes.
    pub config: Config,
    pub verdicts: Vec<Verdict>,
}

/// What validation found about one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub kind: ConfigKind,
    pub name: String,
    pub generation: i64,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// For a NodePool: why its class is not ready (None when it is, and for classes).
    pub node_class_problem: Option<String>,
}

impl Verdict {
    pub fn ready(&self) -> bool {
        self.errors.is_empty() && self.node_class_problem.is_none()
    }
}

/// The object as the parser takes it: no `status`, no server-set metadata (managedFields,
/// resourceVersion...), so only what the user wrote is validated.
fn user_fields(object: &Value) -> Value {
    let mut out = Map::new();
    for key in ["apiVersion", "kind", "spec"] {
        if let Some(v) = object.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    let mut meta = Map::new();
    if let Some(m) = object.get("metadata").and_then(Value::as_object) {
        for key in ["name", "labels", "annotations"] {
            if let Some(v) = m.get(key) {
                meta.insert(key.into(), v.clone());
            }
        }
    }
    out.insert("metadata".into(), Value::Object(meta));
    Value::Object(out)
}

fn parse_one(object: &ConfigObject, classes: &[String]) -> (Option<Config>, Vec<String>, Vec<String>) {
    let source = format!("{}/{}", object.kind.kind(), object.name);
    let text = user_fields(&object.object).to_string();
    let (config, diagnostics) = parse::parse_config_with(&text, &source, classes, super::UnknownFields::Error);
    (config, diagnostics.errors, diagnostics.warnings)
}

impl ClusterConfig {
    /// Validates every object; classes first, so a pool can be checked against the valid ones.
    pub fn from_objects(objects: &ConfigObjects) -> ClusterConfig {
        let mut out = ClusterConfig::default();
        for object in &objects.node_classes {
            let (parsed, errors, warnings) = parse_one(object, &[]);
            if errors.is_empty()
                && let Some(c) = parsed
            {
                out.config.node_classes.extend(c.node_classes);
            }
            out.verdicts.push(Verdict {
                kind: ConfigKind::Ec2NodeClass,
                name: object.name.clone(),
                generation: object.generation,
                errors,
                warnings,
                node_class_problem: None,
            });
        }
        let valid: Vec<String> = out.config.node_classes.iter().map(|c| c.name.clone()).collect();
        let invalid: Vec<String> = out
            .verdicts
            .iter()
            .filter(|v| !v.errors.is_empty())
            .map(|v| v.name.clone())
            .collect();
        for object in &objects.node_pools {
            let (parsed, errors, warnings) = parse_one(object, &valid);
            let mut node_class_problem = None;
            let mut pools = parsed.map(|c| c.node_pools).unwrap_or_default();
            for pool in &pools {
                let class = pool.node_class.clone().unwrap_or_else(|| "default".into());
                if invalid.contains(&class) {
                    node_class_problem = Some(format!("EC2NodeClass {class:?} is not valid (see its status)"));
                } else if !valid.contains(&class) {
                    node_class_problem = Some(format!("EC2NodeClass {class:?} not found"));
                }
            }
            // A "not defined in these files" warning is the NodeClassReady condition here.
            let warnings: Vec<String> = warnings.into_iter().filter(|w| !w.contains("nodeClassRef")).collect();
            if errors.is_empty() && node_class_problem.is_none() {
                out.config.node_pools.append(&mut pools);
            }
            out.verdicts.push(Verdict {
                kind: ConfigKind::NodePool,
                name: object.name.clone(),
                generation: object.generation,
                errors,
                warnings,
                node_class_problem,
            });
        }
        out.config.link_node_classes();
        out
    }
}

/// A condition as Karpenter writes it.
fn condition(kind: &str, ok: bool, reason_false: &str, message: &str, generation: i64) -> Value {
    json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "reason": if ok { kind } else { reason_false },
        "message": if ok { "" } else { message },
        "observedGeneration": generation,
    })
}

/// Condition messages stay short (the API server takes 32 KiB; a user reads the first error).
fn message(errors: &[String]) -> String {
    const MAX: usize = 1024;
    let mut m = errors.join("; ");
    if m.len() > MAX {
        let mut cut = MAX - 3;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push_str("...");
    }
    m
}

/// The conditions a verdict gives, without transition times.
fn conditions(verdict: &Verdict) -> Vec<Value> {
    let g = verdict.generation;
    let valid = verdict.errors.is_empty();
    let mut out = vec![condition(
        "ValidationSucceeded",
        valid,
        "ValidationFailed",
        &message(&verdict.errors),
        g,
    )];
    if verdict.kind == ConfigKind::NodePool {
        let class = verdict.node_class_problem.as_deref();
        out.push(condition(
            "NodeClassReady",
            class.is_none(),
            if class.is_some_and(|c| c.ends_with("not found")) {
                "NodeClassNotFound"
            } else {
                "NodeClassNotReady"
            },
            class.unwrap_or(""),
            g,
        ));
    }
    let mut unready = Vec::new();
    if !valid {
        unready.push("ValidationSucceeded=False");
    }
    if verdict.node_class_problem.is_some() {
        unready.push("NodeClassReady=False");
    }
    out.push(condition(
        "Ready",
        unready.is_empty(),
        "UnhealthyDependents",
        &unready.join(", "),
        g,
    ));
    out
}

/// `status.resources` as Karpenter shows it: quantities as strings.
fn resources(usage: &PoolUsage) -> Value {
    let cpu = if usage.cpu_milli.is_multiple_of(1000) {
        (usage.cpu_milli / 1000).to_string()
    } else {
        format!("{}m", usage.cpu_milli)
    };
    let memory = if usage.memory_bytes.is_multiple_of(1024) {
        format!("{}Ki", usage.memory_bytes / 1024)
    } else {
        usage.memory_bytes.to_string()
    };
    let mut r = BTreeMap::from([("cpu", cpu), ("memory", memory), ("nodes", usage.nodes.to_string())]);
    if usage.gpus > 0 {
        r.insert("nvidia.com/gpu", usage.gpus.to_string());
    }
    json!(r)
}

/// The status to write on the object, or None when what it carries already says the same (no
/// write, so a minute's consolidation run does not churn every object). A condition keeps its
/// `lastTransitionTime` while its status holds.
pub fn desired_status(
    verdict: &Verdict,
    current: &Value,
    usage: Option<&PoolUsage>,
    now_rfc3339: &str,
) -> Option<Value> {
    let previous: Vec<&Value> = current
        .get("conditions")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut changed = false;
    let mut conds = Vec::new();
    for mut c in conditions(verdict) {
        let kind = c["type"].clone();
        let before = previous.iter().find(|p| p.get("type") == Some(&kind));
        let same = |key: &str| before.and_then(|b| b.get(key)) == c.get(key);
        let transition = match before {
            Some(b) if same("status") => b
                .get("lastTransitionTime")
                .cloned()
                .unwrap_or_else(|| Value::from(now_rfc3339)),
            _ => Value::from(now_rfc3339),
        };
        if !(same("status") && same("reason") && same("message") && same("observedGeneration")) {
            changed = true;
        }
        c["lastTransitionTime"] = transition;
        conds.push(c);
    }
    // A condition of another type (written by someone else) is dropped from our list: say so by
    // writing.
    if previous.len() != conds.len() {
        changed = true;
    }
    let mut status = Map::new();
    status.insert("conditions".into(), Value::Array(conds));
    if verdict.kind == ConfigKind::NodePool {
        let usage = usage.copied().unwrap_or_default();
        let mut r = resources(&usage);
        // Karpenter 1.8+'s printer column reads `status.nodes`; older ones `resources.nodes`.
        let nodes = Value::from(usage.nodes);
        if current.get("resources") != Some(&r) {
            changed = true;
        }
        // A merge patch keeps keys it does not carry: a key we no longer report (a GPU count gone
        // to zero, Karpenter's own `pods`) is removed with null, or it would differ every run.
        if let (Some(old), Some(new)) = (current.get("resources").and_then(Value::as_object), r.as_object_mut()) {
            for key in old.keys() {
                if !new.contains_key(key) {
                    new.insert(key.clone(), Value::Null);
                }
            }
        }
        // Compared only when the object keeps it: a CRD without the field (Karpenter before 1.8)
        // prunes it, and comparing would write every run.
        if current.get("nodes").is_some_and(|n| n != &nodes) {
            changed = true;
        }
        status.insert("resources".into(), r);
        status.insert("nodes".into(), nodes);
    }
    changed.then_some(Value::Object(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: ConfigKind, yaml: &str) -> ConfigObject {
        let docs = crate::model::documents(yaml, "test").unwrap();
        let object = docs.into_iter().next().unwrap();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        ConfigObject {
            kind,
            name,
            generation: object["metadata"]["generation"].as_i64().unwrap_or(1),
            object,
        }
    }

    const CLASS: &str = "apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default, generation: 2, resourceVersion: '77', uid: abc, managedFields: [{manager: kubectl}]}
spec:
  role: KarpenterNodeRole
  amiSelectorTerms: [{alias: al2023@latest}]
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
status: {conditions: []}
";

    fn pool(name: &str, class: &str, extra: &str) -> String {
        format!(
            "apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {{name: {name}, generation: 3}}
spec:
  template:
    spec:
      nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: {class}}}
      requirements:
        - {{key: karpenter.sh/capacity-type, operator: In, values: [spot]}}
{extra}"
        )
    }

    fn objects(pools: &[String]) -> ConfigObjects {
        ConfigObjects {
            served: true,
            node_pools: pools.iter().map(|p| object(ConfigKind::NodePool, p)).collect(),
            node_classes: vec![object(ConfigKind::Ec2NodeClass, CLASS)],
        }
    }

    #[test]
    fn server_fields_are_not_validated_and_valid_objects_make_the_config() {
        let c = ClusterConfig::from_objects(&objects(&[pool("spot", "default", "")]));
        assert_eq!(c.config.node_pools.len(), 1);
        assert_eq!(c.config.node_classes.len(), 1);
        for v in &c.verdicts {
            assert!(v.ready(), "{v:?}");
            assert!(
                v.warnings.is_empty(),
                "managedFields, uid and status are the server's: {v:?}"
            );
        }
    }

    #[test]
    fn an_invalid_pool_is_left_out_and_named_while_the_others_work() {
        let bad = pool("bad", "default", "  limits: {cpu: lots}\n");
        let c = ClusterConfig::from_objects(&objects(&[pool("spot", "default", ""), bad]));
        assert_eq!(
            c.config.node_pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["spot"]
        );
        let v = c.verdicts.iter().find(|v| v.name == "bad").unwrap();
        assert!(!v.ready());
        assert!(v.errors.iter().any(|e| e.contains("spec.limits.cpu")), "{:?}", v.errors);
        let status = desired_status(v, &Value::Null, None, "2026-12-01T00:00:00Z").unwrap();
        let valid = &status["conditions"][0];
        assert_eq!(valid["type"], "ValidationSucceeded");
        assert_eq!(valid["status"], "False");
        assert!(valid["message"].as_str().unwrap().contains("spec.limits.cpu"));
        assert_eq!(valid["observedGeneration"], 3);
        let ready = status["conditions"].as_array().unwrap().last().unwrap();
        assert_eq!(
            (ready["type"].as_str(), ready["status"].as_str()),
            (Some("Ready"), Some("False"))
        );
    }

    #[test]
    fn a_pool_without_its_class_is_not_ready() {
        let c = ClusterConfig::from_objects(&objects(&[pool("gpu", "missing", "")]));
        assert!(c.config.node_pools.is_empty());
        let v = &c.verdicts[1];
        assert_eq!(
            v.node_class_problem.as_deref(),
            Some("EC2NodeClass \"missing\" not found")
        );
        let status = desired_status(v, &Value::Null, None, "t").unwrap();
        assert_eq!(status["conditions"][1]["reason"], "NodeClassNotFound");
        assert_eq!(status["conditions"][0]["status"], "True");
    }

    #[test]
    fn status_is_written_only_when_it_changes_and_keeps_transition_times() {
        let c = ClusterConfig::from_objects(&objects(&[pool("spot", "default", "")]));
        let v = c.verdicts.iter().find(|v| v.name == "spot").unwrap();
        let usage = PoolUsage {
            cpu_milli: 4500,
            memory_bytes: 8 << 30,
            gpus: 0,
            nodes: 2,
            nodes_in_flight: 1,
        };
        let first = desired_status(v, &Value::Null, Some(&usage), "2026-12-01T00:00:00Z").unwrap();
        assert_eq!(
            first["resources"],
            json!({"cpu": "4500m", "memory": "8388608Ki", "nodes": "2"})
        );
        assert_eq!(desired_status(v, &first, Some(&usage), "2026-12-01T00:05:00Z"), None);
        let more = PoolUsage { nodes: 3, ..usage };
        let second = desired_status(v, &first, Some(&more), "2026-12-01T00:05:00Z").unwrap();
        assert_eq!(second["resources"]["nodes"], "3");
        assert_eq!(
            second["conditions"][2]["lastTransitionTime"], "2026-12-01T00:00:00Z",
            "Ready held: its transition time stays"
        );

        // As the API server keeps it after the merge patch: Karpenter's `pods` left from before
        // the migration, a GPU count, and no `nodes` (a CRD that prunes it).
        let mut kept = first.clone();
        kept["resources"]["pods"] = json!("12");
        kept["resources"]["nvidia.com/gpu"] = json!("4");
        kept.as_object_mut().unwrap().remove("nodes");
        let patch = desired_status(v, &kept, Some(&usage), "t").unwrap();
        assert_eq!(patch["resources"]["pods"], Value::Null, "removed, not left to differ");
        assert_eq!(patch["resources"]["nvidia.com/gpu"], Value::Null);
        let mut after = first.clone();
        after.as_object_mut().unwrap().remove("nodes");
        assert_eq!(
            desired_status(v, &after, Some(&usage), "t"),
            None,
            "a pruned `nodes` is no change"
        );
    }
}
