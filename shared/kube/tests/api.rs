//! The adapter against kube's tower-test mock API server: every request the adapter makes is
//! asserted exactly (method, path, query, body) and answered from a script.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use nodewright_core::model::{Effect, Taint};
use nodewright_core::registration::NodeRegistration;
use nodewright_kube::{Cluster, DrainMode, DrainOptions, Error};
use serde_json::{Value, json};

/// One expected request and the scripted answer.
struct Exchange {
    method: &'static str,
    uri: String,
    body: Option<Value>,
    status: u16,
    response: Value,
}

fn expect(method: &'static str, uri: impl Into<String>) -> Exchange {
    Exchange {
        method,
        uri: uri.into(),
        body: None,
        status: 200,
        response: json!({}),
    }
}

impl Exchange {
    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
    fn respond(mut self, status: u16, response: Value) -> Self {
        self.status = status;
        self.response = response;
        self
    }
    /// The scripted answer, as the API server sends it.
    fn response(&self) -> Response<Body> {
        Response::builder()
            .status(StatusCode::from_u16(self.status).unwrap())
            .body(Body::from(serde_json::to_vec(&self.response).unwrap()))
            .unwrap()
    }
}

/// Starts the mock API server with `script`; the returned handle fails the test if a request
/// differs from the script or the script is not used up.
fn mock(script: Vec<Exchange>) -> (Cluster, tokio::task::JoinHandle<()>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        for (i, ex) in script.into_iter().enumerate() {
            let (request, send) = handle
                .next_request()
                .await
                .unwrap_or_else(|| panic!("request {i} ({} {}) never came", ex.method, ex.uri));
            assert_eq!(request.method().as_str(), ex.method, "request {i} method");
            assert_eq!(request.uri().to_string(), ex.uri, "request {i} uri");
            let bytes = request.into_body().collect_bytes().await.unwrap();
            match &ex.body {
                Some(expected) => {
                    let got: Value = serde_json::from_slice(&bytes).unwrap();
                    assert_eq!(&got, expected, "request {i} body");
                }
                None => assert!(
                    bytes.is_empty(),
                    "request {i} has an unexpected body: {}",
                    String::from_utf8_lossy(&bytes)
                ),
            }
            send.send_response(ex.response());
        }
    });
    let client = kube::Client::new(service, "default");
    (Cluster::new(client).with_page_size(2), server)
}

/// As [`mock`], for requests sent concurrently: each request is answered by the unused exchange
/// with its method and URI, whatever the order they arrive in; every exchange must be used.
fn mock_any_order(script: Vec<Exchange>) -> (Cluster, tokio::task::JoinHandle<()>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut left = script;
        while !left.is_empty() {
            let (request, send) = handle.next_request().await.unwrap_or_else(|| {
                panic!(
                    "{} requests never came: {:?}",
                    left.len(),
                    left.iter().map(|e| &e.uri).collect::<Vec<_>>()
                )
            });
            let uri = request.uri().to_string();
            let i = left
                .iter()
                .position(|e| e.method == request.method().as_str() && e.uri == uri)
                .unwrap_or_else(|| panic!("unexpected {} {uri}", request.method()));
            send.send_response(left.remove(i).response());
        }
    });
    let client = kube::Client::new(service, "default");
    (Cluster::new(client).with_page_size(2), server)
}

fn pod(name: &str, node: Option<&str>, extra: Value) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "resourceVersion": "7",
                     "creationTimestamp": "2026-11-21T09:00:00Z"},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}]},
        "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available"}
        ]}
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = json!(n);
        p["status"] = json!({"phase": "Running"});
    }
    merge(&mut p, extra);
    p
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn list(kind: &str, items: Vec<Value>, continue_: Option<&str>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "100", "continue": continue_.unwrap_or("")}, "items": items})
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message})
}

const PENDING_QUERY: &str = "fieldSelector=spec.nodeName%3D%2Cstatus.phase%3DPending";

#[tokio::test]
async fn lists_unschedulable_pods_across_pages() {
    let waiting_in_queue = pod("queued", None, json!({"status": {"conditions": []}}));
    let terminating = pod(
        "leaving",
        None,
        json!({"metadata": {"deletionTimestamp": "2026-11-21T10:00:00Z"}}),
    );
    let (cluster, server) = mock(vec![
        expect("GET", format!("/api/v1/pods?&{PENDING_QUERY}&limit=2")).respond(
            200,
            list(
                "PodList",
                vec![pod("a", None, json!({})), waiting_in_queue],
                Some("page-2"),
            ),
        ),
        expect("GET", format!("/api/v1/pods?&{PENDING_QUERY}&limit=2&continue=page-2"))
            .respond(200, list("PodList", vec![pod("b", None, json!({})), terminating], None)),
    ]);
    let pending = cluster.unschedulable_pods().await.unwrap();
    server.await.unwrap();
    let names: Vec<_> = pending.items.iter().map(|p| p.pod.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(pending.items[0].pod.uid, "uid-a");
    assert_eq!(pending.items[0].pod.requests.get(nodewright_core::Resource::Cpu), 500);
    // What the pending alarm's age is measured from, and the version the watcher would send.
    assert_eq!(pending.items[0].created_at, 1_795_251_600_000, "2026-11-21T09:00:00Z");
    assert_eq!(pending.items[0].resource_version, "7");
    assert!(pending.rejected.is_empty());
}

/// An interruption reads the pods of its node only: one field-selected List per node (sent
/// concurrently), finished pods left out by the server, pages followed, the pods in node order.
#[tokio::test]
async fn pods_on_nodes_list_each_node_by_field_selector() {
    let on = |node: &str| {
        format!("fieldSelector=spec.nodeName%3D{node}%2Cstatus.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed")
    };
    let (cluster, server) = mock_any_order(vec![
        expect("GET", format!("/api/v1/pods?&{}&limit=2", on("ip-a"))).respond(
            200,
            list("PodList", vec![pod("a1", Some("ip-a"), json!({}))], Some("p2")),
        ),
        expect("GET", format!("/api/v1/pods?&{}&limit=2&continue=p2", on("ip-a")))
            .respond(200, list("PodList", vec![pod("a2", Some("ip-a"), json!({}))], None)),
        expect("GET", format!("/api/v1/pods?&{}&limit=2", on("ip-b")))
            .respond(200, list("PodList", vec![pod("b1", Some("ip-b"), json!({}))], None)),
    ]);
    let pods = cluster
        .pods_bound_to(&["ip-a".to_string(), "ip-b".to_string()])
        .await
        .unwrap();
    server.await.unwrap();
    let names: Vec<_> = pods
        .items
        .iter()
        .map(|p| (p.name.as_str(), p.node_name.as_deref()))
        .collect();
    assert_eq!(
        names,
        [("a1", Some("ip-a")), ("a2", Some("ip-a")), ("b1", Some("ip-b"))]
    );
}

/// Consolidation lists the pods of every node it manages: at most NODE_LISTS_IN_FLIGHT lists are
/// open at once, however many nodes there are.
#[tokio::test]
async fn pods_on_nodes_holds_a_bounded_number_of_lists_open() {
    let in_flight = nodewright_core::ports::NODE_LISTS_IN_FLIGHT;
    let nodes: Vec<String> = (0..in_flight + 4).map(|i| format!("ip-{i}")).collect();
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let cluster = Cluster::new(kube::Client::new(service, "default")).with_page_size(2);
    let listing = tokio::spawn(async move { cluster.pods_bound_to(&nodes).await });
    let mut held = Vec::new();
    for _ in 0..in_flight {
        held.push(handle.next_request().await.expect("a list request"));
    }
    // Nothing answered yet: no further list may start.
    let extra = tokio::time::timeout(std::time::Duration::from_millis(300), handle.next_request()).await;
    assert!(extra.is_err(), "more than {in_flight} lists were open at once");
    let answer = |send: tower_test::mock::SendResponse<Response<Body>>| {
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&list("PodList", vec![], None)).unwrap()))
                .unwrap(),
        )
    };
    for (_, send) in held {
        answer(send);
    }
    for _ in 0..4 {
        let (_, send) = handle.next_request().await.expect("the remaining lists");
        answer(send);
    }
    let pods = listing.await.unwrap().unwrap();
    assert!(pods.items.is_empty() && pods.rejected.is_empty());
}

#[tokio::test]
async fn a_pod_the_core_cannot_take_is_rejected_not_fatal() {
    let bad = pod(
        "bad",
        None,
        json!({"spec": {"tolerations": [{"key": "k", "operator": "Sometimes"}]}}),
    );
    let (cluster, server) = mock(vec![
        expect("GET", format!("/api/v1/pods?&{PENDING_QUERY}&limit=2"))
            .respond(200, list("PodList", vec![bad, pod("good", None, json!({}))], None)),
    ]);
    let pending = cluster.unschedulable_pods().await.unwrap();
    server.await.unwrap();
    assert_eq!(pending.items.len(), 1);
    assert_eq!(pending.rejected[0].name, "default/bad");
    assert!(
        pending.rejected[0].reason.contains("tolerations[0].operator"),
        "{}",
        pending.rejected[0].reason
    );
}

fn node_json(taints: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "ip-10-0-0-1", "resourceVersion": "41", "labels": {
            "node.kubernetes.io/instance-type": "m7g.large", "topology.kubernetes.io/zone": "eu-west-1a",
            "karpenter.sh/nodepool": "default", "karpenter.sh/capacity-type": "spot"}},
        "spec": {"providerID": "aws:///eu-west-1a/i-0123456789abcdef0", "taints": taints},
        "status": {"allocatable": {"cpu": "1930m", "memory": "7Gi", "pods": "29"},
                   "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

#[tokio::test]
async fn lists_nodes_with_instance_ids_from_the_provider_id() {
    let (cluster, server) = mock(vec![
        expect("GET", "/api/v1/nodes?&limit=2").respond(200, list("NodeList", vec![node_json(json!([]))], None)),
    ]);
    let nodes = cluster.nodes().await.unwrap();
    server.await.unwrap();
    let n = &nodes.items[0];
    assert_eq!(n.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    assert!(n.ready);
    assert!(!n.unregistered);
    assert_eq!(n.node.instance_type, "m7g.large");
    assert_eq!(n.node.pool.as_deref(), Some("default"));
    assert_eq!(n.node.capacity_type, nodewright_core::CapacityType::Spot);
    assert_eq!(
        n.node.allocatable.as_ref().unwrap().get(nodewright_core::Resource::Cpu),
        1930
    );
}

#[tokio::test]
async fn cordon_and_taint_patches_once_conditional_on_resource_version() {
    let existing = json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
    let (cluster, server) = mock(vec![
        expect("GET", "/api/v1/nodes/ip-10-0-0-1").respond(200, node_json(existing.clone())),
        expect("PATCH", "/api/v1/nodes/ip-10-0-0-1?")
            .body(json!({
                "metadata": {"resourceVersion": "41"},
                "spec": {"unschedulable": true, "taints": [
                    {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
                    {"key": "nodewright.io/disrupted", "effect": "NoSchedule"}
                ]}
            }))
            .respond(200, node_json(existing)),
    ]);
    cluster
        .cordon_and_taint("ip-10-0-0-1", nodewright_kube::DISRUPTED_TAINT)
        .await
        .unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn cordon_retries_after_a_conflict_and_skips_when_already_done() {
    let mut done = node_json(json!([{"key": "nodewright.io/interrupted", "effect": "NoSchedule"}]));
    done["spec"]["unschedulable"] = json!(true);
    let (cluster, server) = mock(vec![
        expect("GET", "/api/v1/nodes/ip-10-0-0-1").respond(200, node_json(json!([]))),
        expect("PATCH", "/api/v1/nodes/ip-10-0-0-1?")
            .body(
                json!({"metadata": {"resourceVersion": "41"}, "spec": {"unschedulable": true, "taints": [
                {"key": "nodewright.io/interrupted", "effect": "NoSchedule"}]}}),
            )
            .respond(409, status(409, "Conflict", "the object has been modified")),
        // Someone else (another invocation) cordoned and tainted it meanwhile: nothing to write.
        expect("GET", "/api/v1/nodes/ip-10-0-0-1").respond(200, done),
    ]);
    cluster
        .cordon_and_taint("ip-10-0-0-1", nodewright_kube::INTERRUPTED_TAINT)
        .await
        .unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn register_node_writes_missing_labels_and_lifts_the_unregistered_taint_in_one_patch() {
    let booting = json!([
        {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
        {"key": "karpenter.sh/unregistered", "effect": "NoExecute"}
    ]);
    let mut registered = node_json(json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]));
    registered["metadata"]["labels"]["karpenter.k8s.aws/instance-family"] = json!("m7g");
    let labels: std::collections::BTreeMap<String, String> = [
        ("karpenter.sh/nodepool", "default"),
        ("karpenter.k8s.aws/instance-family", "m7g"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (cluster, server) = mock(vec![
        expect("GET", "/api/v1/nodes/ip-10-0-0-1").respond(200, node_json(booting.clone())),
        expect("PATCH", "/api/v1/nodes/ip-10-0-0-1?")
            .body(json!({
                "metadata": {"resourceVersion": "41", "labels": {"karpenter.k8s.aws/instance-family": "m7g"}},
                "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}
            }))
            .respond(409, status(409, "Conflict", "the object has been modified")),
        // The kubelet updated its status meanwhile: re-read, patch again.
        expect("GET", "/api/v1/nodes/ip-10-0-0-1").respond(200, node_json(booting)),
        expect("PATCH", "/api/v1/nodes/ip-10-0-0-1?")
            .body(json!({
                "metadata": {"resourceVersion": "41", "labels": {"karpenter.k8s.aws/instance-family": "m7g"}},
                "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}
            }))
            .respond(200, registered.clone()),
        // A replay finds it registered: no write.
        expect("GET", "/api/v1/nodes/ip-10-0-0-1").respond(200, registered),
    ]);
    let registration = NodeRegistration {
        labels,
        taints: vec![Taint {
            key: "dedicated".into(),
            value: Some("gpu".into()),
            effect: Effect::NoSchedule,
        }],
        startup_taints: Vec::new(),
    };
    assert!(cluster.register_node("ip-10-0-0-1", &registration).await.unwrap());
    assert!(!cluster.register_node("ip-10-0-0-1", &registration).await.unwrap());
    server.await.unwrap();
}

/// A node booted from `amiFamily: Custom` user data carries only what its own user data gave it
/// (here the unregistered taint, as Karpenter requires of Custom nodes): registration adds the
/// pool's taint and the startup taint in the same patch. Once registered, a startup taint its
/// agent removed is not put back.
#[tokio::test]
async fn register_node_adds_the_taints_a_custom_node_lacks_and_startup_taints_once() {
    let booting = json!([{"key": "karpenter.sh/unregistered", "effect": "NoExecute"}]);
    let pool_taint = json!({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"});
    let startup = json!({"key": "node.cilium.io/agent-not-ready", "value": "true", "effect": "NoSchedule"});
    let mut registered = node_json(json!([pool_taint.clone()]));
    registered["metadata"]["labels"]["karpenter.sh/nodepool"] = json!("gpu");
    let (cluster, server) = mock(vec![
        expect("GET", "/api/v1/nodes/ip-10-0-0-1").respond(200, node_json(booting)),
        expect("PATCH", "/api/v1/nodes/ip-10-0-0-1?")
            .body(json!({
                "metadata": {"resourceVersion": "41", "labels": {"karpenter.sh/nodepool": "gpu"}},
                "spec": {"taints": [pool_taint, startup]}
            }))
            .respond(200, registered.clone()),
        // The CNI removed its startup taint; a replayed Node Ready finds nothing to write.
        expect("GET", "/api/v1/nodes/ip-10-0-0-1").respond(200, registered),
    ]);
    let taint = |key: &str, value: &str| Taint {
        key: key.into(),
        value: Some(value.into()),
        effect: Effect::NoSchedule,
    };
    let registration = NodeRegistration {
        labels: [("karpenter.sh/nodepool".to_string(), "gpu".to_string())].into(),
        taints: vec![taint("dedicated", "gpu")],
        startup_taints: vec![taint("node.cilium.io/agent-not-ready", "true")],
    };
    assert!(cluster.register_node("ip-10-0-0-1", &registration).await.unwrap());
    assert!(!cluster.register_node("ip-10-0-0-1", &registration).await.unwrap());
    server.await.unwrap();
}

#[tokio::test]
async fn delete_node_is_idempotent() {
    let (cluster, server) = mock(vec![
        expect("DELETE", "/api/v1/nodes/ip-10-0-0-1?")
            .body(json!({}))
            .respond(200, node_json(json!([]))),
        expect("DELETE", "/api/v1/nodes/ip-10-0-0-1?")
            .body(json!({}))
            .respond(404, status(404, "NotFound", "nodes \"ip-10-0-0-1\" not found")),
    ]);
    assert!(cluster.delete_node("ip-10-0-0-1").await.unwrap());
    assert!(!cluster.delete_node("ip-10-0-0-1").await.unwrap());
    server.await.unwrap();
}

/// A claim's recorded node is read with one GET; the instance id comes from its providerID, and a
/// node that is gone is None, not an error.
#[tokio::test]
async fn node_named_gets_one_node_and_none_when_it_is_gone() {
    let (cluster, server) = mock(vec![
        expect("GET", "/api/v1/nodes/ip-10-0-0-1").respond(200, node_json(json!([]))),
        expect("GET", "/api/v1/nodes/ip-10-0-0-1")
            .respond(404, status(404, "NotFound", "nodes \"ip-10-0-0-1\" not found")),
    ]);
    let node = cluster.node_named("ip-10-0-0-1").await.unwrap().expect("the node");
    assert_eq!(node.node.name, "ip-10-0-0-1");
    assert_eq!(node.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    assert!(cluster.node_named("ip-10-0-0-1").await.unwrap().is_none());
    server.await.unwrap();
}

#[tokio::test]
async fn unauthorized_is_typed() {
    let (cluster, server) = mock(vec![
        expect("GET", "/api/v1/nodes?&limit=2").respond(401, status(401, "Unauthorized", "Unauthorized")),
    ]);
    let err = cluster.nodes().await.unwrap_err();
    server.await.unwrap();
    assert!(matches!(err, Error::Unauthorized { code: 401, .. }), "{err:?}");
}

const ON_NODE: &str = "/api/v1/pods?&fieldSelector=spec.nodeName%3Dip-10-0-0-1&limit=2";

fn eviction(name: &str) -> Value {
    json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": "default"}})
}

fn node_pods() -> Vec<Value> {
    let n = Some("ip-10-0-0-1");
    vec![
        pod("web-1", n, json!({"spec": {"priority": 100}})),
        pod("db-0", n, json!({})),
        pod(
            "agent-x",
            n,
            json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "d", "controller": true}]}}),
        ),
        pod(
            "static",
            n,
            json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "abc"}}}),
        ),
        pod("done", n, json!({"status": {"phase": "Succeeded"}})),
    ]
}

#[tokio::test(start_paused = true)]
async fn drain_evicts_only_workload_pods_and_retries_a_pdb_429() {
    let pdb_says_no = status(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    );
    let (cluster, server) = mock(vec![
        expect("GET", ON_NODE).respond(200, list("PodList", node_pods()[..2].to_vec(), Some("more"))),
        expect("GET", format!("{ON_NODE}&continue=more"))
            .respond(200, list("PodList", node_pods()[2..].to_vec(), None)),
        // Lowest priority first: db-0 (0), then web-1 (100).
        expect("POST", "/api/v1/namespaces/default/pods/db-0/eviction?")
            .body(eviction("db-0"))
            .respond(429, pdb_says_no),
        expect("POST", "/api/v1/namespaces/default/pods/web-1/eviction?")
            .body(eviction("web-1"))
            .respond(201, status(201, "", "")),
        // After the backoff, the PDB allows it.
        expect("POST", "/api/v1/namespaces/default/pods/db-0/eviction?")
            .body(eviction("db-0"))
            .respond(201, status(201, "", "")),
    ]);
    let report = cluster
        .drain(
            "ip-10-0-0-1",
            &DrainOptions::new(DrainMode::Voluntary, Duration::from_secs(60)),
        )
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(report.evicted, ["default/web-1", "default/db-0"]);
    assert_eq!(report.skipped, ["default/agent-x", "default/static", "default/done"]);
    assert_eq!(report.pdb_retries, 1);
}

#[tokio::test(start_paused = true)]
async fn drain_gives_up_at_the_deadline_with_a_typed_error() {
    let no = || {
        status(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
        )
    };
    let n = Some("ip-10-0-0-1");
    let evict_db = || {
        expect("POST", "/api/v1/namespaces/default/pods/db-0/eviction?")
            .body(eviction("db-0"))
            .respond(429, no())
    };
    // Deadline 5 s, backoff 1 s doubling: attempts at 0 s, 1 s, 3 s; the next wait (4 s) would pass it.
    let (cluster, server) = mock(vec![
        expect("GET", ON_NODE).respond(200, list("PodList", vec![pod("db-0", n, json!({}))], None)),
        evict_db(),
        evict_db(),
        evict_db(),
    ]);
    let err = cluster
        .drain(
            "ip-10-0-0-1",
            &DrainOptions::new(DrainMode::Voluntary, Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    server.await.unwrap();
    match err {
        Error::PdbBlocked { node, pods } => {
            assert_eq!(node, "ip-10-0-0-1");
            assert_eq!(pods, ["default/db-0"]);
        }
        other => panic!("expected PdbBlocked, got {other:?}"),
    }
}

#[tokio::test]
async fn do_not_disrupt_vetoes_a_voluntary_drain_before_any_eviction() {
    let n = Some("ip-10-0-0-1");
    let pods = vec![
        pod("web-1", n, json!({})),
        pod(
            "train",
            n,
            json!({"metadata": {"annotations": {"karpenter.sh/do-not-disrupt": "true"}}}),
        ),
    ];
    let (cluster, server) = mock(vec![expect("GET", ON_NODE).respond(200, list("PodList", pods, None))]);
    let err = cluster
        .drain(
            "ip-10-0-0-1",
            &DrainOptions::new(DrainMode::Voluntary, Duration::from_secs(60)),
        )
        .await
        .unwrap_err();
    server.await.unwrap();
    assert!(
        matches!(&err, Error::DoNotDisrupt { pods, .. } if pods == &["default/train"]),
        "{err:?}"
    );
}

#[tokio::test]
async fn forced_drain_leaves_do_not_disrupt_pods_alone() {
    let n = Some("ip-10-0-0-1");
    let pods = vec![
        pod("web-1", n, json!({})),
        pod(
            "train",
            n,
            json!({"metadata": {"annotations": {"karpenter.sh/do-not-disrupt": "true"}}}),
        ),
    ];
    let (cluster, server) = mock(vec![
        expect("GET", ON_NODE).respond(200, list("PodList", pods, None)),
        expect("POST", "/api/v1/namespaces/default/pods/web-1/eviction?")
            .body(eviction("web-1"))
            .respond(201, status(201, "", "")),
    ]);
    let report = cluster
        .drain(
            "ip-10-0-0-1",
            &DrainOptions::new(DrainMode::Forced, Duration::from_secs(90)),
        )
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(report.evicted, ["default/web-1"]);
    assert_eq!(report.skipped, ["default/train"]);
}

#[tokio::test]
async fn expired_grace_period_deletes_instead_of_evicting() {
    let n = Some("ip-10-0-0-1");
    let pods = vec![pod(
        "train",
        n,
        json!({"metadata": {"annotations": {"karpenter.sh/do-not-disrupt": "true"}}}),
    )];
    let (cluster, server) = mock(vec![
        expect("GET", ON_NODE).respond(200, list("PodList", pods, None)),
        expect("DELETE", "/api/v1/namespaces/default/pods/train?")
            .body(json!({}))
            .respond(200, pod("train", n, json!({}))),
    ]);
    let mut options = DrainOptions::new(DrainMode::Voluntary, Duration::from_secs(60));
    options.grace_expired = true;
    let report = cluster.drain("ip-10-0-0-1", &options).await.unwrap();
    server.await.unwrap();
    assert_eq!(report.deleted, ["default/train"]);
}

#[tokio::test(start_paused = true)]
async fn a_call_that_hangs_times_out_with_a_typed_error() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        // Take the request and never answer it.
        let held = handle.next_request().await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(held);
    });
    let cluster = Cluster::new(kube::Client::new(service, "default")).with_timeout(Duration::from_secs(3));
    let err = cluster.nodes().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { seconds: 3, .. }), "{err:?}");
    server.abort();
}

fn nodepool(name: &str, generation: i64) -> Value {
    json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
        "metadata": {"name": name, "generation": generation, "resourceVersion": "5"},
        "spec": {"template": {"spec": {"requirements": []}}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    })
}

#[tokio::test]
async fn lists_nodepools_and_classes_across_pages_and_says_when_the_kinds_are_not_served() {
    let (cluster, server) = mock(vec![
        expect("GET", "/apis/karpenter.sh/v1/nodepools?&limit=2").respond(
            200,
            // A list's items carry no apiVersion and kind; the adapter sets them.
            json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePoolList", "metadata": {"continue": "p2"},
                   "items": [{"metadata": {"name": "a", "generation": 3}, "spec": {}}, nodepool("b", 1)]}),
        ),
        expect("GET", "/apis/karpenter.sh/v1/nodepools?&limit=2&continue=p2").respond(
            200,
            json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePoolList", "metadata": {}, "items": [nodepool("c", 2)]}),
        ),
        expect("GET", "/apis/karpenter.k8s.aws/v1/ec2nodeclasses?&limit=2").respond(
            200,
            json!({"apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClassList", "metadata": {}, "items": []}),
        ),
        // No CRDs: both kinds answer 404.
        expect("GET", "/apis/karpenter.sh/v1/nodepools?&limit=2").respond(
            404,
            status(404, "NotFound", "the server could not find the requested resource"),
        ),
        expect("GET", "/apis/karpenter.k8s.aws/v1/ec2nodeclasses?&limit=2").respond(
            404,
            status(404, "NotFound", "the server could not find the requested resource"),
        ),
    ]);
    let listed = cluster.config_objects().await.unwrap();
    assert!(listed.served);
    let names: Vec<(&str, i64)> = listed
        .node_pools
        .iter()
        .map(|o| (o.name.as_str(), o.generation))
        .collect();
    assert_eq!(names, [("a", 3), ("b", 1), ("c", 2)]);
    assert_eq!(listed.node_pools[0].object["kind"], "NodePool");
    assert_eq!(listed.node_pools[0].object["apiVersion"], "karpenter.sh/v1");
    assert_eq!(listed.node_pools[1].status()["conditions"][0]["type"], "Ready");
    let none = cluster.config_objects().await.unwrap();
    assert!(!none.served && none.node_pools.is_empty());
    server.await.unwrap();
}

#[tokio::test]
async fn status_is_a_merge_patch_of_the_status_subresource() {
    let status_doc = json!({"conditions": [{"type": "Ready", "status": "True"}], "resources": {"nodes": "2"}});
    let (cluster, server) = mock(vec![
        expect("PATCH", "/apis/karpenter.sh/v1/nodepools/web/status?")
            .body(json!({"status": status_doc}))
            .respond(200, nodepool("web", 1)),
        expect("PATCH", "/apis/karpenter.k8s.aws/v1/ec2nodeclasses/gone/status?")
            .body(json!({"status": status_doc}))
            .respond(404, status(404, "NotFound", "ec2nodeclasses \"gone\" not found")),
    ]);
    use nodewright_core::ports::cluster::ConfigKind;
    assert!(
        cluster
            .write_status(ConfigKind::NodePool, "web", &status_doc)
            .await
            .unwrap()
    );
    assert!(
        !cluster
            .write_status(ConfigKind::Ec2NodeClass, "gone", &status_doc)
            .await
            .unwrap()
    );
    server.await.unwrap();
}

#[tokio::test]
async fn events_are_created_under_their_deterministic_name_and_a_duplicate_is_skipped() {
    use nodewright_core::ports::cluster::{EventObject, EventType, ObjectEvent};
    let mut pod_event = ObjectEvent::new(
        EventObject::pod("shop", "web-1", Some("uid-1")),
        EventType::Normal,
        "Nominated",
        "Provision",
        "Pod should schedule on: nodeclaim/general-abc",
    );
    pod_event.time = 1_795_255_200_000;
    let mut node_event = ObjectEvent::new(
        EventObject::node("ip-10-0-0-1.ec2.internal"),
        EventType::Warning,
        "SpotInterrupted",
        "Interrupt",
        "x".repeat(5000),
    );
    node_event.time = 1_795_255_200_000;
    assert!(node_event.note.len() <= 1024, "notes are cut to the API server's limit");
    let pod_name = pod_event.name();
    let node_name = node_event.name();
    assert!(node_name.starts_with("ip-10-0-0-1.ec2.internal."), "{node_name}");
    assert_eq!(pod_name, pod_event.clone().name(), "the same event, the same name");
    let mut other = pod_event.clone();
    other.time += 60_000;
    assert_eq!(other.name(), pod_name, "time is not part of the name");
    let (cluster, server) = mock(vec![
        expect("POST", "/apis/events.k8s.io/v1/namespaces/shop/events?")
            .body(json!({
                "apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": pod_name, "namespace": "shop"},
                "eventTime": "2026-11-21T10:00:00.000000Z",
                "reportingController": "nodewright.io/nodewright",
                "reportingInstance": "nodewright.io/nodewright",
                "action": "Provision", "reason": "Nominated", "type": "Normal",
                "note": "Pod should schedule on: nodeclaim/general-abc",
                "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "web-1", "uid": "uid-1"},
            }))
            .respond(409, status(409, "AlreadyExists", "events \"x\" already exists")),
        // A node is cluster-scoped: its Event lives in `default`, regarding has no namespace.
        expect("POST", "/apis/events.k8s.io/v1/namespaces/default/events?")
            .body(json!({
                "apiVersion": "events.k8s.io/v1", "kind": "Event",
                "metadata": {"name": node_name, "namespace": "default"},
                "eventTime": "2026-11-21T10:00:00.000000Z",
                "reportingController": "nodewright.io/nodewright",
                "reportingInstance": "nodewright.io/nodewright",
                "action": "Interrupt", "reason": "SpotInterrupted", "type": "Warning",
                "note": format!("{}...", "x".repeat(1021)),
                "regarding": {"apiVersion": "v1", "kind": "Node", "name": "ip-10-0-0-1.ec2.internal"},
            }))
            .respond(201, json!({})),
    ]);
    let created = cluster.record_events(&[pod_event, node_event]).await;
    server.await.unwrap();
    assert_eq!(created.unwrap(), 1, "the duplicate (409) is skipped, not an error");
}
