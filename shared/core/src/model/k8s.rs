//! Conversion from Kubernetes objects (k8s-openapi types) into the core model.
//!
//! Requests follow the kubelet's rules: the sum over app containers and restartable (sidecar) init
//! containers, or the largest single init container plus the sidecars started before it, whichever is
//! larger; plus the pod overhead; a resource with a limit but no request counts its limit, as the API
//! server defaults it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::policy::v1 as policy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use crate::catalogue::CapacityType;
use crate::disruption::Pdb;
use crate::labels;
use crate::model::Node;
use crate::model::pod::{
    Effect, HostPort, LabelSelector, NodeInclusionPolicy, OwnerRef, Pod, PodAffinityTerm, PreferredTerm,
    SpreadConstraint, Taint, Toleration, TolerationOperator, WeightedPodAffinityTerm, WhenUnsatisfiable,
    add_host_ports,
};
use crate::requirements::{Operator, Requirement};
use crate::resources::{Resource, Resources};
use crate::{Error, Result};

/// Converts a Kubernetes Pod. `path` names the object in errors.
pub fn pod_from_k8s(pod: &core::Pod, path: &str) -> Result<Pod> {
    let meta = &pod.metadata;
    let spec = pod
        .spec
        .as_ref()
        .ok_or_else(|| Error::invalid(format!("{path}.spec"), "missing"))?;
    let mut out = pod_from_spec(meta, spec, path)?;
    out.uid = meta.uid.clone().unwrap_or_default();
    out.node_name = spec.node_name.clone();
    out.normalize();
    Ok(out)
}

fn pod_from_spec(meta: &meta::ObjectMeta, spec: &core::PodSpec, path: &str) -> Result<Pod> {
    let annotations = meta.annotations.clone().unwrap_or_default();
    let mut pod = Pod {
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: meta.name.clone().unwrap_or_default(),
        labels: meta.labels.clone().unwrap_or_default(),
        requests: effective_requests(spec, &format!("{path}.spec"))?,
        node_selector: spec.node_selector.clone().unwrap_or_default(),
        priority: spec.priority.unwrap_or(0),
        do_not_disrupt: annotations.get(labels::DO_NOT_DISRUPT).is_some_and(|v| v == "true"),
        mirror: annotations.contains_key("kubernetes.io/config.mirror"),
        deletion_cost: annotations
            .get(labels::POD_DELETION_COST)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        owner: meta.owner_references.as_ref().and_then(|refs| {
            refs.iter()
                .find(|r| r.controller == Some(true))
                .or(refs.first())
                .map(|r| OwnerRef {
                    kind: r.kind.clone(),
                    name: r.name.clone(),
                })
        }),
        ..Default::default()
    };
    pod.resource_claims = spec.resource_claims.as_ref().is_some_and(|c| !c.is_empty())
        || spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| {
                c.resources
                    .as_ref()
                    .and_then(|r| r.claims.as_ref())
                    .is_some_and(|c| !c.is_empty())
            });
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        pod.tolerations
            .push(toleration(t, &format!("{path}.spec.tolerations[{i}]"))?);
    }
    // Host ports of the containers. On a hostNetwork pod every container port is a host port:
    // the API server fills hostPort in on Pods, but not (since Kubernetes 1.28) in the templates of
    // DaemonSets and Deployments, so an unset one is the containerPort.
    let host_network = spec.host_network == Some(true);
    for (i, c) in spec.containers.iter().enumerate() {
        for (j, port) in c.ports.iter().flatten().enumerate() {
            let bound = port
                .host_port
                .filter(|p| *p != 0)
                .or(host_network.then_some(port.container_port));
            if let Some(hp) = bound {
                let field = format!("{path}.spec.containers[{i}].ports[{j}]");
                let hp = HostPort::new(hp, port.protocol.as_deref(), &field)?;
                add_host_ports(&mut pod.host_ports, [&hp]);
            }
        }
    }
    if let Some(aff) = &spec.affinity {
        if let Some(na) = &aff.node_affinity {
            if let Some(req) = &na.required_during_scheduling_ignored_during_execution {
                for (i, term) in req.node_selector_terms.iter().enumerate() {
                    let p = format!("{path}.spec.affinity.nodeAffinity.required.nodeSelectorTerms[{i}]");
                    pod.node_affinity.push(node_selector_term(term, &p)?);
                }
            }
            for (i, pref) in na
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
                .enumerate()
            {
                let p = format!("{path}.spec.affinity.nodeAffinity.preferred[{i}]");
                pod.preferred_node_affinity.push(PreferredTerm {
                    weight: pref.weight,
                    requirements: node_selector_term(&pref.preference, &p)?,
                });
            }
        }
        if let Some(pa) = &aff.pod_affinity {
            for (i, t) in pa
                .required_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
                .enumerate()
            {
                let p = format!("{path}.spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[{i}]");
                pod.pod_affinity.push(affinity_term(t, &p)?);
            }
            for (i, t) in pa
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
                .enumerate()
            {
                let p =
                    format!("{path}.spec.affinity.podAffinity.preferredDuringSchedulingIgnoredDuringExecution[{i}]");
                pod.preferred_pod_affinity.push(WeightedPodAffinityTerm {
                    weight: t.weight,
                    pod_affinity_term: affinity_term(&t.pod_affinity_term, &format!("{p}.podAffinityTerm"))?,
                });
            }
        }
        if let Some(pa) = &aff.pod_anti_affinity {
            for (i, t) in pa
                .required_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
                .enumerate()
            {
                let p =
                    format!("{path}.spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[{i}]");
                pod.pod_anti_affinity.push(affinity_term(t, &p)?);
            }
            for (i, t) in pa
                .preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
                .enumerate()
            {
                let p = format!(
                    "{path}.spec.affinity.podAntiAffinity.preferredDuringSchedulingIgnoredDuringExecution[{i}]"
                );
                pod.preferred_pod_anti_affinity.push(WeightedPodAffinityTerm {
                    weight: t.weight,
                    pod_affinity_term: affinity_term(&t.pod_affinity_term, &format!("{p}.podAffinityTerm"))?,
                });
            }
        }
    }
    for (i, c) in spec.topology_spread_constraints.iter().flatten().enumerate() {
        let p = format!("{path}.spec.topologySpreadConstraints[{i}]");
        let mut selector = selector_or_nothing(c.label_selector.as_ref());
        // matchLabelKeys: the pod's own values for these keys join the selector.
        for k in c.match_label_keys.iter().flatten() {
            if let Some(v) = pod.labels.get(k) {
                selector.match_labels.insert(k.clone(), v.clone());
            }
        }
        let when = match c.when_unsatisfiable.as_str() {
            "DoNotSchedule" => WhenUnsatisfiable::DoNotSchedule,
            "ScheduleAnyway" => WhenUnsatisfiable::ScheduleAnyway,
            other => {
                return Err(Error::invalid(
                    format!("{p}.whenUnsatisfiable"),
                    format!("unknown value {other:?}"),
                ));
            }
        };
        if c.max_skew < 1 {
            return Err(Error::invalid(format!("{p}.maxSkew"), "must be at least 1"));
        }
        // The API server's own rules: at least 1, and only with DoNotSchedule.
        let min_domains = match c.min_domains {
            None => None,
            Some(m) if m < 1 => return Err(Error::invalid(format!("{p}.minDomains"), "must be at least 1")),
            Some(_) if when != WhenUnsatisfiable::DoNotSchedule => {
                return Err(Error::invalid(
                    format!("{p}.minDomains"),
                    "can only be set with whenUnsatisfiable: DoNotSchedule",
                ));
            }
            Some(m) => Some(m as u32),
        };
        pod.topology_spread.push(SpreadConstraint {
            topology_key: c.topology_key.clone(),
            max_skew: c.max_skew as u32,
            when_unsatisfiable: when,
            selector,
            min_domains,
            node_affinity_policy: inclusion(c.node_affinity_policy.as_deref(), &p, "nodeAffinityPolicy")?
                .unwrap_or(NodeInclusionPolicy::Honor),
            node_taints_policy: inclusion(c.node_taints_policy.as_deref(), &p, "nodeTaintsPolicy")?
                .unwrap_or(NodeInclusionPolicy::Ignore),
        });
    }
    Ok(pod)
}

/// A spread constraint's `nodeAffinityPolicy` or `nodeTaintsPolicy`, as the API server admits it.
fn inclusion(value: Option<&str>, path: &str, field: &str) -> Result<Option<NodeInclusionPolicy>> {
    match value {
        None => Ok(None),
        Some("Honor") => Ok(Some(NodeInclusionPolicy::Honor)),
        Some("Ignore") => Ok(Some(NodeInclusionPolicy::Ignore)),
        Some(other) => Err(Error::invalid(
            format!("{path}.{field}"),
            format!("unknown value {other:?} (Honor or Ignore)"),
        )),
    }
}

fn quantity_map(list: Option<&BTreeMap<String, Quantity>>, path: &str) -> Result<Resources> {
    let mut r = Resources::new();
    for (k, q) in list.into_iter().flatten() {
        r.set_quantity(k, &q.0)
            .map_err(|e| Error::invalid(format!("{path}.{k}"), e.to_string()))?;
    }
    Ok(r)
}

/// A container's requests, with limits standing in for missing requests.
fn container_requests(c: &core::Container, path: &str) -> Result<Resources> {
    let Some(res) = &c.resources else {
        return Ok(Resources::new());
    };
    let mut r = quantity_map(res.limits.as_ref(), &format!("{path}.resources.limits"))?;
    let req = quantity_map(res.requests.as_ref(), &format!("{path}.resources.requests"))?;
    for (k, v) in req.entries() {
        r.set_named(&k, v);
    }
    Ok(r)
}

fn effective_requests(spec: &core::PodSpec, path: &str) -> Result<Resources> {
    let mut app = Resources::new();
    for (i, c) in spec.containers.iter().enumerate() {
        app.add(&container_requests(c, &format!("{path}.containers[{i}]"))?);
    }
    let mut sidecars = Resources::new();
    let mut init_peak = Resources::new();
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        let r = container_requests(c, &format!("{path}.initContainers[{i}]"))?;
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars.add(&r);
        } else {
            let mut at_start = sidecars.clone();
            at_start.add(&r);
            init_peak.max_with(&at_start);
        }
    }
    app.add(&sidecars);
    app.max_with(&init_peak);
    app.add(&quantity_map(spec.overhead.as_ref(), &format!("{path}.overhead"))?);
    app.set(Resource::Pods, 1);
    Ok(app)
}

fn toleration(t: &core::Toleration, path: &str) -> Result<Toleration> {
    let operator = match t.operator.as_deref() {
        None | Some("Equal") => TolerationOperator::Equal,
        Some("Exists") => TolerationOperator::Exists,
        Some(other) => {
            return Err(Error::invalid(
                format!("{path}.operator"),
                format!("unknown operator {other:?}"),
            ));
        }
    };
    let effect = match t.effect.as_deref() {
        None | Some("") => None,
        Some(e) => Some(
            Effect::parse(e)
                .ok_or_else(|| Error::invalid(format!("{path}.effect"), format!("unknown effect {e:?}")))?,
        ),
    };
    Ok(Toleration {
        key: t.key.clone().filter(|k| !k.is_empty()),
        operator,
        value: t.value.clone(),
        effect,
    })
}

/// Converts a taint (used by the node adapters too).
pub fn taint_from_k8s(t: &core::Taint) -> Option<Taint> {
    Some(Taint {
        key: t.key.clone(),
        value: t.value.clone(),
        effect: Effect::parse(&t.effect)?,
    })
}

fn node_selector_term(term: &core::NodeSelectorTerm, path: &str) -> Result<Vec<Requirement>> {
    let mut out = Vec::new();
    for (i, e) in term.match_expressions.iter().flatten().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let operator = Operator::parse(&e.operator)
            .ok_or_else(|| Error::invalid(format!("{p}.operator"), format!("unknown operator {:?}", e.operator)))?;
        let r = Requirement {
            key: e.key.clone(),
            operator,
            values: e.values.clone().unwrap_or_default(),
            min_values: None,
        };
        r.validate(&p)?;
        out.push(r);
    }
    // matchFields only supports metadata.name, which pins a pod to an existing node.
    for (i, f) in term.match_fields.iter().flatten().enumerate() {
        if f.key == "metadata.name" {
            let operator = Operator::parse(&f.operator).ok_or_else(|| {
                Error::invalid(
                    format!("{path}.matchFields[{i}].operator"),
                    format!("unknown operator {:?}", f.operator),
                )
            })?;
            out.push(Requirement {
                key: labels::HOSTNAME.into(),
                operator,
                values: f.values.clone().unwrap_or_default(),
                min_values: None,
            });
        }
    }
    Ok(out)
}

/// A term's selector; a missing one selects no pods ([`LabelSelector::nothing`]).
fn selector_or_nothing(s: Option<&meta::LabelSelector>) -> LabelSelector {
    s.map_or_else(LabelSelector::nothing, label_selector)
}

fn label_selector(s: &meta::LabelSelector) -> LabelSelector {
    LabelSelector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: s
            .match_expressions
            .iter()
            .flatten()
            .map(|e| Requirement {
                key: e.key.clone(),
                // Label selectors only know In, NotIn, Exists, DoesNotExist; anything else never
                // matches (an In with no values).
                operator: label_operator(&e.operator).unwrap_or(Operator::In),
                values: label_operator(&e.operator).and(e.values.clone()).unwrap_or_default(),
                min_values: None,
            })
            .collect(),
    }
}

fn label_operator(op: &str) -> Option<Operator> {
    Operator::parse(op).filter(|o| {
        matches!(
            o,
            Operator::In | Operator::NotIn | Operator::Exists | Operator::DoesNotExist
        )
    })
}

/// A pod (anti-)affinity term. An empty `namespaceSelector` selects every namespace; one that
/// selects by labels is refused, naming the field: Nodewright does not read Namespace objects,
/// so it cannot tell which namespaces carry the labels.
fn affinity_term(t: &core::PodAffinityTerm, path: &str) -> Result<PodAffinityTerm> {
    let all_namespaces = match &t.namespace_selector {
        None => false,
        Some(sel)
            if sel.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                && sel.match_expressions.as_ref().is_none_or(Vec::is_empty) =>
        {
            true
        }
        Some(_) => {
            return Err(Error::invalid(
                format!("{path}.namespaceSelector"),
                "a selector on namespace labels is not supported (Nodewright does not read Namespaces); list them in namespaces, or use {} for all",
            ));
        }
    };
    Ok(PodAffinityTerm {
        topology_key: t.topology_key.clone(),
        selector: selector_or_nothing(t.label_selector.as_ref()),
        namespaces: t.namespaces.clone().unwrap_or_default(),
        all_namespaces,
    })
}

/// Whether the scheduler has given up on the pod for now: condition PodScheduled=False with reason
/// Unschedulable, not yet bound, not being deleted. (Pods merely waiting in the scheduler queue are not.)
pub fn is_unschedulable(pod: &core::Pod) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    if pod
        .spec
        .as_ref()
        .is_some_and(|s| s.node_name.as_deref().is_some_and(|n| !n.is_empty()))
    {
        return false;
    }
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
}

/// Whether the pod is a DaemonSet pod (owned by a DaemonSet): drains skip it, overhead counts it.
pub fn is_daemonset_pod(pod: &core::Pod) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.kind == "DaemonSet")
}

/// Whether the pod is a static (mirror) pod the kubelet manages; it cannot be evicted.
pub fn is_mirror_pod(pod: &core::Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"))
}

/// Whether the pod has finished (Succeeded or Failed) and so holds no capacity.
pub fn is_terminal(pod: &core::Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

/// The EC2 instance id in an AWS providerID (`aws:///us-east-1a/i-0abc...`).
pub fn instance_id_from_provider_id(provider_id: &str) -> Option<&str> {
    let rest = provider_id.strip_prefix("aws://")?;
    let id = rest.rsplit('/').next()?;
    is_instance_id(id).then_some(id)
}

/// `i-` followed by 8 or 17 lowercase hex digits.
pub fn is_instance_id(s: &str) -> bool {
    s.strip_prefix("i-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17) && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Converts a Kubernetes Node. Instance type, zone, pool and capacity type come from the well-known
/// labels; allocatable from status. Pods are filled in separately.
pub fn node_from_k8s(node: &core::Node, path: &str) -> Result<Node> {
    let name = node
        .metadata
        .name
        .clone()
        .ok_or_else(|| Error::invalid(format!("{path}.metadata.name"), "missing"))?;
    let node_labels = node.metadata.labels.clone().unwrap_or_default();
    let label = |k: &str| node_labels.get(k).cloned();
    let instance_type = label(labels::INSTANCE_TYPE)
        .or_else(|| label("beta.kubernetes.io/instance-type"))
        .ok_or_else(|| Error::invalid(format!("{path}.metadata.labels[{}]", labels::INSTANCE_TYPE), "missing"))?;
    let zone = label(labels::ZONE)
        .or_else(|| label("failure-domain.beta.kubernetes.io/zone"))
        .unwrap_or_default();
    let capacity_type = match label(labels::CAPACITY_TYPE).or_else(|| label("eks.amazonaws.com/capacityType")) {
        None => CapacityType::OnDemand,
        Some(v) => CapacityType::parse(&v.to_ascii_lowercase().replace('_', "-")).ok_or_else(|| {
            Error::invalid(
                format!("{path}.metadata.labels[{}]", labels::CAPACITY_TYPE),
                format!("unknown capacity type {v:?}"),
            )
        })?,
    };
    let spec = node.spec.clone().unwrap_or_default();
    let allocatable = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .map(|a| quantity_map(Some(a), &format!("{path}.status.allocatable")))
        .transpose()?;
    Ok(Node {
        name,
        instance_type,
        pool: label(labels::NODEPOOL),
        zone,
        capacity_type,
        labels: node_labels,
        taints: spec.taints.iter().flatten().filter_map(taint_from_k8s).collect(),
        allocatable,
        pods: Vec::new(),
        in_flight: false,
        unschedulable: spec.unschedulable.unwrap_or(false),
        price: None,
    })
}

/// Whether the node's Ready condition is True.
pub fn node_is_ready(node: &core::Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The per-node overhead pod of a DaemonSet (its template), owned by the DaemonSet.
pub fn daemonset_pod_from_k8s(ds: &apps::DaemonSet, path: &str) -> Result<Pod> {
    let name = ds.metadata.name.clone().unwrap_or_default();
    let template = ds
        .spec
        .as_ref()
        .map(|s| &s.template)
        .ok_or_else(|| Error::invalid(format!("{path}.spec"), "missing"))?;
    let spec = template
        .spec
        .as_ref()
        .ok_or_else(|| Error::invalid(format!("{path}.spec.template.spec"), "missing"))?;
    let mut meta = template.metadata.clone().unwrap_or_default();
    meta.namespace = ds.metadata.namespace.clone();
    let mut pod = pod_from_spec(&meta, spec, &format!("{path}.spec.template"))?;
    pod.name = name.clone();
    pod.owner = Some(OwnerRef {
        kind: "DaemonSet".into(),
        name,
    });
    pod.normalize();
    Ok(pod)
}

/// Converts a PodDisruptionBudget (its selector and `status.disruptionsAllowed`).
pub fn pdb_from_k8s(pdb: &policy::PodDisruptionBudget) -> Pdb {
    Pdb {
        name: pdb.metadata.name.clone().unwrap_or_default(),
        namespace: pdb.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
        // policy/v1: a missing selector selects no pods, an empty one every pod of the namespace.
        selector: selector_or_nothing(pdb.spec.as_ref().and_then(|s| s.selector.as_ref())),
        disruptions_allowed: pdb
            .status
            .as_ref()
            .map(|s| s.disruptions_allowed.max(0) as u32)
            .unwrap_or(0),
    }
}

/// The most replicas one workload object may expand to; bounds memory on hostile input.
pub const MAX_REPLICAS: i64 = 100_000;

/// Expands one Kubernetes object (Pod, Deployment, ReplicaSet, StatefulSet, Job, DaemonSet, List)
/// given as a JSON value into pods. DaemonSets yield one template pod owned by the DaemonSet, which
/// callers use as per-node overhead.
pub fn pods_from_workload_value(v: &serde_json::Value, path: &str) -> Result<Vec<Pod>> {
    let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let de = |reason: serde_json::Error| Error::invalid(path, reason.to_string());
    match kind {
        "Pod" => {
            let p: core::Pod = serde_json::from_value(v.clone()).map_err(de)?;
            Ok(vec![pod_from_k8s(&p, path)?])
        }
        "List" | "PodList" => {
            let mut out = Vec::new();
            for (i, item) in v
                .get("items")
                .and_then(|x| x.as_array())
                .into_iter()
                .flatten()
                .enumerate()
            {
                out.extend(pods_from_workload_value(item, &format!("{path}.items[{i}]"))?);
            }
            Ok(out)
        }
        "Deployment" | "ReplicaSet" | "StatefulSet" | "Job" | "DaemonSet" => {
            let name = v
                .pointer("/metadata/name")
                .and_then(|n| n.as_str())
                .ok_or_else(|| Error::invalid(format!("{path}.metadata.name"), "missing"))?;
            let namespace = v
                .pointer("/metadata/namespace")
                .and_then(|n| n.as_str())
                .unwrap_or("default");
            let template: core::PodTemplateSpec = serde_json::from_value(
                v.pointer("/spec/template")
                    .cloned()
                    .ok_or_else(|| Error::invalid(format!("{path}.spec.template"), "missing"))?,
            )
            .map_err(|e| Error::invalid(format!("{path}.spec.template"), e.to_string()))?;
            let count_field = if kind == "Job" {
                "/spec/parallelism"
            } else {
                "/spec/replicas"
            };
            let replicas = match v.pointer(count_field) {
                None | Some(serde_json::Value::Null) => 1,
                Some(x) => x.as_i64().ok_or_else(|| {
                    Error::invalid(format!("{path}{}", count_field.replace('/', ".")), "must be an integer")
                })?,
            };
            if !(0..=MAX_REPLICAS).contains(&replicas) {
                return Err(Error::invalid(
                    format!("{path}{}", count_field.replace('/', ".")),
                    format!("{replicas} is outside 0..={MAX_REPLICAS}"),
                ));
            }
            let replicas = if kind == "DaemonSet" { 1 } else { replicas };
            let mut meta = template.metadata.clone().unwrap_or_default();
            meta.namespace = Some(namespace.to_string());
            let spec = template
                .spec
                .as_ref()
                .ok_or_else(|| Error::invalid(format!("{path}.spec.template.spec"), "missing"))?;
            let base = pod_from_spec(&meta, spec, &format!("{path}.spec.template"))?;
            Ok((0..replicas)
                .map(|i| {
                    let mut p = base.clone();
                    p.name = format!("{name}-{i}");
                    p.owner = Some(OwnerRef {
                        kind: kind.to_string(),
                        name: name.to_string(),
                    });
                    p.uid = String::new();
                    p.normalize();
                    p
                })
                .collect())
        }
        "" => Err(Error::invalid(format!("{path}.kind"), "missing")),
        other => Err(Error::invalid(
            format!("{path}.kind"),
            format!(
                "{other:?} is not a workload (expected Pod, Deployment, ReplicaSet, StatefulSet, Job, DaemonSet or List)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: trainer
  namespace: ml
  uid: "1234"
  labels: {app: trainer}
  annotations:
    karpenter.sh/do-not-disrupt: "true"
    controller.kubernetes.io/pod-deletion-cost: "-5"
  ownerReferences:
    - {apiVersion: batch/v1, kind: Job, name: train, uid: j1, controller: true}
spec:
  priority: 1000
  overhead: {cpu: 100m, memory: 64Mi}
  nodeSelector: {kubernetes.io/arch: amd64}
  initContainers:
    - name: fetch
      image: x
      resources: {requests: {cpu: "4", memory: 1Gi}}
    - name: proxy
      image: x
      restartPolicy: Always
      resources: {requests: {cpu: 250m, memory: 128Mi}}
  containers:
    - name: main
      image: x
      resources:
        requests: {cpu: "2", memory: 8Gi}
        limits: {nvidia.com/gpu: 1}
    - name: side
      image: x
      resources: {requests: {cpu: 500m, memory: 512Mi}}
  tolerations:
    - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions:
              - {key: karpenter.k8s.aws/instance-gpu-count, operator: Gt, values: ["0"]}
          - matchExpressions:
              - {key: karpenter.k8s.aws/instance-family, operator: In, values: [p4d]}
      preferredDuringSchedulingIgnoredDuringExecution:
        - weight: 10
          preference:
            matchExpressions: [{key: karpenter.sh/capacity-type, operator: In, values: [spot]}]
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        - topologyKey: kubernetes.io/hostname
          labelSelector: {matchLabels: {app: trainer}}
  topologySpreadConstraints:
    - maxSkew: 1
      topologyKey: topology.kubernetes.io/zone
      whenUnsatisfiable: DoNotSchedule
      labelSelector: {matchLabels: {app: trainer}}
"#;

    #[test]
    fn real_pod_yaml_converts_completely() {
        let v: serde_json::Value = serde_norway::from_str(POD).unwrap();
        let pods = pods_from_workload_value(&v, "pod").unwrap();
        let p = &pods[0];
        assert_eq!(p.uid, "1234");
        assert_eq!(p.namespace, "ml");
        // app: 2 + 0.5 + sidecar 0.25 = 2.75 cpu; init peak: 4 (the sidecar starts after it); +0.1 overhead
        assert_eq!(p.requests.cpu_milli(), 4100);
        // memory: app 8Gi+512Mi+128Mi = 8832Mi vs init 1Gi+128Mi; +64Mi overhead
        assert_eq!(p.requests.memory(), (8832 + 64) << 20);
        assert_eq!(
            p.requests.get(Resource::NvidiaGpu),
            1,
            "limit stands in for a missing request"
        );
        assert_eq!(p.requests.get(Resource::Pods), 1);
        assert_eq!(p.node_affinity.len(), 2);
        assert_eq!(p.node_affinity[0][0].operator, Operator::Gt);
        assert_eq!(p.preferred_node_affinity[0].weight, 10);
        assert_eq!(p.pod_anti_affinity[0].topology_key, labels::HOSTNAME);
        assert_eq!(p.topology_spread[0].max_skew, 1);
        assert_eq!(p.tolerations[0].operator, TolerationOperator::Exists);
        assert!(p.do_not_disrupt);
        assert_eq!(p.deletion_cost, -5);
        assert_eq!(p.priority, 1000);
        assert_eq!(p.owner.as_ref().unwrap().kind, "Job");
    }

    /// DRA claims as Karpenter finds them (`HasDRARequirements`): a pod-level `resourceClaims`
    /// entry, or `resources.claims` on an app or init container; a pod without either has none.
    #[test]
    fn resource_claims_are_found_on_the_pod_and_its_containers() {
        let pod = |spec: serde_json::Value| {
            let v = serde_json::json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": spec});
            pods_from_workload_value(&v, "doc[0]").unwrap().remove(0)
        };
        let plain = pod(serde_json::json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}));
        assert!(!plain.resource_claims);
        let pod_level = pod(serde_json::json!({
            "resourceClaims": [{"name": "gpu", "resourceClaimName": "gpu"}],
            "containers": [{"name": "c"}]
        }));
        assert!(pod_level.resource_claims);
        let app = pod(serde_json::json!({"containers": [{"name": "c", "resources": {"claims": [{"name": "gpu"}]}}]}));
        assert!(app.resource_claims);
        let init = pod(serde_json::json!({
            "initContainers": [{"name": "i", "resources": {"claims": [{"name": "gpu"}]}}],
            "containers": [{"name": "c"}]
        }));
        assert!(init.resource_claims);
        // An empty list claims nothing.
        let empty =
            pod(serde_json::json!({"resourceClaims": [], "containers": [{"name": "c", "resources": {"claims": []}}]}));
        assert!(!empty.resource_claims);
    }

    /// Host ports as a Pod spec writes them: containerPort plus hostPort (protocol TCP when
    /// unsaid); a plain containerPort binds nothing on the node; a hostNetwork pod's ports come
    /// with hostPort filled in by the API server, so they count too.
    #[test]
    fn host_ports_are_read_from_the_containers() {
        let v = serde_json::json!({"kind": "Pod", "metadata": {"name": "ingress"}, "spec": {"hostNetwork": true, "containers": [
            {"name": "nginx", "ports": [
                {"containerPort": 80, "hostPort": 80},
                {"containerPort": 443, "hostPort": 443, "protocol": "TCP"},
                {"containerPort": 8080}
            ]},
            {"name": "dns", "ports": [{"containerPort": 53, "hostPort": 53, "protocol": "UDP"}, {"containerPort": 80, "hostPort": 80}]}
        ]}});
        let p = &pods_from_workload_value(&v, "doc[0]").unwrap()[0];
        let ports: Vec<String> = p.host_ports.iter().map(ToString::to_string).collect();
        // hostNetwork: the plain containerPort 8080 binds the node's port too.
        assert_eq!(ports, ["TCP/80", "TCP/443", "TCP/8080", "UDP/53"]);
        // A DaemonSet template with hostNetwork and no hostPort (node-exporter), as the API
        // server stores it since Kubernetes 1.28.
        let ds = serde_json::json!({"kind": "DaemonSet", "metadata": {"name": "node-exporter", "namespace": "monitoring"}, "spec": {"template": {"spec": {"hostNetwork": true, "containers": [
            {"name": "exporter", "ports": [{"containerPort": 9100, "name": "metrics"}]}
        ]}}}});
        let ds: apps::DaemonSet = serde_json::from_value(ds).unwrap();
        let ds = daemonset_pod_from_k8s(&ds, "ds").unwrap();
        assert_eq!(
            ds.host_ports.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["TCP/9100"]
        );
        // Without hostNetwork a containerPort binds nothing on the node.
        let plain = serde_json::json!({"kind": "Pod", "metadata": {"name": "web"}, "spec": {"containers": [
            {"name": "c", "ports": [{"containerPort": 8080}]}
        ]}});
        assert!(
            pods_from_workload_value(&plain, "doc[0]").unwrap()[0]
                .host_ports
                .is_empty()
        );
        let bad = serde_json::json!({"kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [
            {"name": "c", "ports": [{"containerPort": 1, "hostPort": 1, "protocol": "ICMP"}]}
        ]}});
        let e = pods_from_workload_value(&bad, "doc[0]").unwrap_err().to_string();
        assert!(
            e.contains("doc[0].spec.containers[0].ports[0].protocol") && e.contains("ICMP"),
            "{e}"
        );
        let bad = serde_json::json!({"kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [
            {"name": "c", "ports": [{"containerPort": 1, "hostPort": 70000}]}
        ]}});
        let e = pods_from_workload_value(&bad, "doc[0]").unwrap_err().to_string();
        assert!(e.contains("doc[0].spec.containers[0].ports[0].hostPort"), "{e}");
    }

    #[test]
    fn deployment_expands_replicas() {
        let v: serde_json::Value = serde_norway::from_str(
            "kind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: c, image: x, resources: {requests: {cpu: 1}}}]\n",
        )
        .unwrap();
        let pods = pods_from_workload_value(&v, "doc[0]").unwrap();
        assert_eq!(pods.len(), 3);
        assert_eq!(pods[2].uid, "default/web-2");
        assert_eq!(pods[0].requests.cpu_milli(), 1000);
    }

    #[test]
    fn bad_objects_name_the_field() {
        let v: serde_json::Value = serde_json::json!({"kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": 10_000_000, "template": {"spec": {"containers": []}}}});
        let e = pods_from_workload_value(&v, "doc[1]").unwrap_err().to_string();
        assert!(e.starts_with("doc[1].spec.replicas"), "{e}");
        let v = serde_json::json!({"kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "lots"}}}]}});
        let e = pods_from_workload_value(&v, "doc[0]").unwrap_err().to_string();
        assert!(
            e.contains("doc[0].spec.containers[0].resources.requests.cpu") && e.contains("\"lots\""),
            "{e}"
        );
        let e = pods_from_workload_value(&serde_json::json!({"kind": "Service"}), "d")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"Service\" is not a workload"), "{e}");
    }

    #[test]
    fn provider_ids_yield_instance_ids() {
        assert_eq!(
            instance_id_from_provider_id("aws:///eu-west-1a/i-0123456789abcdef0"),
            Some("i-0123456789abcdef0")
        );
        assert_eq!(
            instance_id_from_provider_id("aws:///eu-west-1a/fargate-ip-10-0-0-1"),
            None
        );
        assert_eq!(instance_id_from_provider_id("gce://p/z/n"), None);
        assert_eq!(instance_id_from_provider_id("aws:///eu-west-1a/i-"), None);
    }

    #[test]
    fn node_converts_labels_taints_allocatable() {
        let v: core::Node = serde_norway::from_str(
            r#"
metadata:
  name: ip-10-0-0-1
  labels:
    node.kubernetes.io/instance-type: g5.xlarge
    topology.kubernetes.io/zone: us-east-1b
    karpenter.sh/nodepool: gpu
    eks.amazonaws.com/capacityType: SPOT
spec:
  unschedulable: true
  providerID: aws:///us-east-1b/i-0abc
  taints: [{key: nvidia.com/gpu, effect: NoSchedule}]
status:
  allocatable: {cpu: 3920m, memory: 15Gi, nvidia.com/gpu: "1", pods: "58"}
  conditions: [{type: Ready, status: "True"}]
"#,
        )
        .unwrap();
        let n = node_from_k8s(&v, "node").unwrap();
        assert_eq!(n.instance_type, "g5.xlarge");
        assert_eq!(n.zone, "us-east-1b");
        assert_eq!(n.pool.as_deref(), Some("gpu"));
        assert_eq!(n.capacity_type, CapacityType::Spot);
        assert!(n.unschedulable);
        assert_eq!(n.taints[0].key, "nvidia.com/gpu");
        let a = n.allocatable.unwrap();
        assert_eq!(a.cpu_milli(), 3920);
        assert_eq!(a.get(Resource::NvidiaGpu), 1);
        assert!(node_is_ready(&v));

        let mut unlabelled = v.clone();
        unlabelled.metadata.labels = None;
        let e = node_from_k8s(&unlabelled, "nodes[3]").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("nodes[3].metadata.labels[node.kubernetes.io/instance-type]"),
            "{e}"
        );
    }

    #[test]
    fn unschedulable_means_the_scheduler_gave_up() {
        let pod = |yaml: &str| -> core::Pod { serde_norway::from_str(yaml).unwrap() };
        assert!(is_unschedulable(&pod(
            "metadata: {name: a}\nstatus: {phase: Pending, conditions: [{type: PodScheduled, status: \"False\", reason: Unschedulable}]}"
        )));
        assert!(!is_unschedulable(&pod(
            "metadata: {name: a}\nstatus: {phase: Pending, conditions: [{type: PodScheduled, status: \"False\", reason: SchedulingGated}]}"
        )));
        assert!(!is_unschedulable(&pod("metadata: {name: a}\nstatus: {phase: Pending}")));
        assert!(!is_unschedulable(&pod(
            "metadata: {name: a}\nspec: {nodeName: n1, containers: []}\nstatus: {phase: Pending, conditions: [{type: PodScheduled, status: \"False\", reason: Unschedulable}]}"
        )));
    }

    /// nodeAffinityPolicy and nodeTaintsPolicy keep Kubernetes' defaults (Honor, Ignore) when
    /// unset, are read when set, in a Pod spec and in the compact form alike, and a value the API
    /// server would refuse is an error naming the field.
    #[test]
    fn spread_node_inclusion_policies_are_read_with_kubernetes_defaults() {
        let pod = |constraint: &str| {
            let v: serde_json::Value = serde_norway::from_str(&format!(
                "kind: Pod\nmetadata: {{name: web}}\nspec:\n  containers: [{{name: c, image: x}}]\n  topologySpreadConstraints: [{constraint}]\n"
            ))
            .unwrap();
            pods_from_workload_value(&v, "pod").map(|p| p[0].topology_spread[0].clone())
        };
        let plain = pod("{maxSkew: 1, topologyKey: fake-label, whenUnsatisfiable: DoNotSchedule}").unwrap();
        assert_eq!(plain.node_affinity_policy, NodeInclusionPolicy::Honor);
        assert_eq!(plain.node_taints_policy, NodeInclusionPolicy::Ignore);
        let set = pod(
            "{maxSkew: 1, topologyKey: fake-label, whenUnsatisfiable: DoNotSchedule, nodeAffinityPolicy: Ignore, nodeTaintsPolicy: Honor}",
        )
        .unwrap();
        assert_eq!(set.node_affinity_policy, NodeInclusionPolicy::Ignore);
        assert_eq!(set.node_taints_policy, NodeInclusionPolicy::Honor);
        let err = pod("{maxSkew: 1, topologyKey: k, whenUnsatisfiable: DoNotSchedule, nodeTaintsPolicy: honor}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("topologySpreadConstraints[0].nodeTaintsPolicy") && err.contains("Honor or Ignore"),
            "{err}"
        );
        let compact: Pod = serde_json::from_str(
            r#"{"name": "a", "topologySpread": [{"topologyKey": "fake-label", "nodeTaintsPolicy": "Honor"}]}"#,
        )
        .unwrap();
        assert_eq!(
            compact.topology_spread[0].node_taints_policy,
            NodeInclusionPolicy::Honor
        );
        assert_eq!(
            compact.topology_spread[0].node_affinity_policy,
            NodeInclusionPolicy::Honor
        );
    }

    /// An empty namespaceSelector selects every namespace; one on namespace labels is refused,
    /// naming the field (Namespaces are not read, so which carry the labels is unknown).
    #[test]
    fn namespace_selectors_select_every_namespace_or_are_refused() {
        let pod = |term: &str| {
            let v: serde_json::Value = serde_norway::from_str(&format!(
                "kind: Pod\nmetadata: {{name: web, namespace: shop}}\nspec:\n  containers: [{{name: c, image: x}}]\n  affinity:\n    podAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution: [{term}]\n"
            ))
            .unwrap();
            pods_from_workload_value(&v, "pod").map(|p| p[0].pod_affinity[0].clone())
        };
        let s2 = BTreeMap::from([("security".to_string(), "s2".to_string())]);
        let all = pod("{topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {security: s2}}, namespaceSelector: {}}")
            .unwrap();
        assert!(all.selects("shop", "elsewhere", &s2));
        let own = pod("{topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {security: s2}}}").unwrap();
        assert!(own.selects("shop", "shop", &s2) && !own.selects("shop", "elsewhere", &s2));
        let err = pod(
            "{topologyKey: kubernetes.io/hostname, labelSelector: {}, namespaceSelector: {matchLabels: {team: a}}}",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("podAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].namespaceSelector"),
            "{err}"
        );
    }

    /// Kubernetes reads a missing labelSelector as selecting no pods (affinity terms, spread
    /// constraints, policy/v1 PDBs) and an empty one as selecting every pod (PDBs); the compact
    /// form reads the same and refuses fields it does not know, naming them.
    #[test]
    fn a_missing_selector_selects_nothing_and_an_empty_one_everything() {
        let v: serde_json::Value = serde_norway::from_str(
            r#"
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: c, image: x}]
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution: [{topologyKey: kubernetes.io/hostname}]
  topologySpreadConstraints:
    - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule}
"#,
        )
        .unwrap();
        let p = &pods_from_workload_value(&v, "pod").unwrap()[0];
        let web = BTreeMap::from([("app".to_string(), "web".to_string())]);
        assert!(!p.pod_anti_affinity[0].selector.matches(&web));
        assert!(!p.topology_spread[0].selector.matches(&web));
        assert!(!p.topology_spread[0].selector.matches(&BTreeMap::new()));

        let pdb = |spec: &str| {
            let pdb: policy::PodDisruptionBudget =
                serde_norway::from_str(&format!("metadata: {{name: p, namespace: shop}}\nspec: {spec}\n")).unwrap();
            pdb_from_k8s(&pdb).selector
        };
        assert!(!pdb("{maxUnavailable: 1}").matches(&web));
        assert!(pdb("{maxUnavailable: 1, selector: {}}").matches(&web));

        let compact: Pod = serde_json::from_str(
            r#"{"name": "a", "topologySpread": [{"topologyKey": "topology.kubernetes.io/zone", "labelSelector": {"matchLabels": {"app": "web"}}}]}"#,
        )
        .unwrap();
        assert!(
            compact.topology_spread[0].selector.matches(&web),
            "labelSelector is read as in a Pod spec"
        );
        for (bad, field) in [
            (
                r#"{"name": "a", "podAntiAffinity": [{"topologyKey": "k", "labelSelectr": {}}]}"#,
                "labelSelectr",
            ),
            (r#"{"name": "a", "topologySpred": []}"#, "topologySpred"),
            (
                r#"{"name": "a", "podAffinity": [{"topologyKey": "k", "selector": {"matchLabel": {}}}]}"#,
                "matchLabel",
            ),
        ] {
            let e = serde_json::from_str::<Pod>(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("unknown field `{field}`")), "{e}");
        }
    }

    #[test]
    fn daemonset_and_pdb_convert() {
        let ds: apps::DaemonSet = serde_norway::from_str(
            r#"
metadata: {name: node-agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers: [{name: a, image: x, resources: {requests: {cpu: 100m, memory: 128Mi}}}]
"#,
        )
        .unwrap();
        let p = daemonset_pod_from_k8s(&ds, "ds").unwrap();
        assert_eq!(p.requests.cpu_milli(), 100);
        assert_eq!(p.namespace, "kube-system");
        assert_eq!(p.owner.unwrap().kind, "DaemonSet");

        let pdb: policy::PodDisruptionBudget = serde_norway::from_str(
            r#"
metadata: {name: web, namespace: shop}
spec: {maxUnavailable: 1, selector: {matchLabels: {app: web}}}
status: {disruptionsAllowed: 0, currentHealthy: 3, desiredHealthy: 3, expectedPods: 3}
"#,
        )
        .unwrap();
        let p = pdb_from_k8s(&pdb);
        assert_eq!(
            (p.name.as_str(), p.namespace.as_str(), p.disruptions_allowed),
            ("web", "shop", 0)
        );
        assert_eq!(p.selector.match_labels["app"], "web");
    }
}
