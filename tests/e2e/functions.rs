//! The four functions end to end: real binaries under `cargo lambda watch`, AWS in moto, the
//! cluster in kube_double.py, events from events/ (edited only to name the instances moto created).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aws_sdk_ec2::types::{Filter, Instance, ResourceType, Tag, TagSpecification};
use futures::future::join_all;
use nodewright_aws::now_millis;
use nodewright_aws::state::{ClaimRecord, ClaimUpdate, Holder, StateStore, TableNames, create_tables};
use nodewright_core::model::ClaimState;
use nodewright_e2e::{
    CLUSTER, KubeDouble, Watch, boot_nodes, discovery, event_file, function_env, node_ready_file, nodepools, rfc3339,
    scratch, support, unique,
};
use serde_json::{Value, json};

struct Env {
    dir: std::path::PathBuf,
    ec2: aws_sdk_ec2::Client,
    store: StateStore,
    double: KubeDouble,
    watch: Watch,
}

async fn env(test: &str, cpu_limit: u32, concurrency: u32) -> Env {
    let dir = scratch(test);
    let clients = support::clients().await;
    let prefix = unique(test);
    let names = TableNames::new(&prefix).unwrap();
    create_tables(&clients.dynamodb, &names).await.unwrap();
    let store = StateStore::new(clients.dynamodb.clone(), names, CLUSTER).unwrap();
    let tag = discovery(&clients.ec2).await;
    let double = KubeDouble::start(&dir);
    let kubeconfig = double.kubeconfig(&dir);
    let env = function_env(&dir, &prefix, &nodepools(&tag, cpu_limit), &kubeconfig);
    let watch = Watch::start(&dir, &env, concurrency);
    Env {
        dir,
        ec2: clients.ec2.clone(),
        store,
        double,
        watch,
    }
}

fn tag_of(i: &Instance, key: &str) -> Option<String> {
    i.tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .map(str::to_string)
}

/// Instances tagged as this cluster's that are not terminated, by id.
async fn our_instances(ec2: &aws_sdk_ec2::Client, claims: &[ClaimRecord]) -> BTreeMap<String, Instance> {
    let ids: BTreeSet<&str> = claims.iter().filter_map(|c| c.instance_id.as_deref()).collect();
    let out = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:nodewright.io/cluster")
                .values(CLUSTER)
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| ids.contains(i.instance_id().unwrap_or_default()))
        .filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
        .map(|i| (i.instance_id().unwrap().to_string(), i.clone()))
        .collect()
}

fn actions<'a>(outcome: &'a Value, kind: &str) -> Vec<&'a Value> {
    outcome["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("no actions in {outcome}"))
        .iter()
        .filter(|a| a["action"] == kind)
        .collect()
}

/// The pods of `claim` from the sample batch, bound to `node` as the scheduler would bind them.
fn bound_pods(claim: &ClaimRecord, pods: &[Value], node: &str) -> Vec<Value> {
    pods.iter()
        .filter(|p| claim.pods.iter().any(|u| p["uid"] == u.as_str()))
        .map(|p| {
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": p["name"], "namespace": p["namespace"], "uid": p["uid"],
                             "labels": p.get("labels").cloned().unwrap_or(json!({})),
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                                  "name": p["owner"]["name"], "uid": "rs-1", "controller": true}]},
                "spec": {"nodeName": node, "nodeSelector": p.get("nodeSelector").cloned().unwrap_or(json!({})),
                         "containers": [{"name": "app", "image": "app",
                         "resources": {"requests": p["requests"]}}]},
                "status": {"phase": "Running"}
            })
        })
        .collect()
}

/// The registered node of `instance_id` in the double.
fn node_of(double: &KubeDouble, instance_id: &str) -> Value {
    double.objects()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["spec"]["providerID"].as_str().unwrap_or("").ends_with(instance_id))
        .cloned()
        .unwrap_or_else(|| panic!("no node for {instance_id}"))
}

/// Every label a pod's nodeSelector and required node affinity ask for holds on `node`.
fn pod_fits_labels(pod: &Value, node: &Value) {
    let labels = &node["metadata"]["labels"];
    for (k, v) in pod["nodeSelector"].as_object().into_iter().flatten() {
        assert_eq!(&labels[k], v, "pod {} selects {k}={v}; node has {labels}", pod["name"]);
    }
    for term in pod["nodeAffinity"].as_array().into_iter().flatten() {
        for r in term.as_array().into_iter().flatten() {
            let have = labels[r["key"].as_str().unwrap()].as_str();
            let values: Vec<&str> = r["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match r["operator"].as_str().unwrap() {
                "In" => assert!(have.is_some_and(|h| values.contains(&h)), "{r} vs {labels}"),
                "NotIn" => assert!(have.is_none_or(|h| !values.contains(&h)), "{r} vs {labels}"),
                "Exists" => assert!(have.is_some(), "{r} vs {labels}"),
                _ => {}
            }
        }
    }
}

/// A claim launched 30 minutes ago whose instance never registered, set up as a crashed
/// registration leaves it: the claim in DynamoDB, the tagged instance in EC2, no Node.
async fn never_registered_claim(e: &Env) -> (String, String) {
    let now = now_millis();
    let long_ago = now - 30 * 60_000;
    let id = unique("nc-stale");
    let claim = ClaimRecord::launching(&id, "general", Vec::new(), long_ago);
    assert!(e.store.create_claim(&claim).await.unwrap());
    let tags = [
        ("nodewright.io/cluster", CLUSTER),
        ("nodewright.io/claim", id.as_str()),
        ("karpenter.sh/nodepool", "general"),
        ("nodewright.io/managed-by", "nodewright"),
    ];
    let image = e.ec2.describe_images().owners("amazon").send().await.unwrap().images()[0]
        .image_id()
        .unwrap()
        .to_string();
    let run = e
        .ec2
        .run_instances()
        .image_id(image)
        .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
        .min_count(1)
        .max_count(1)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(
                    tags.iter()
                        .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                        .collect(),
                ))
                .build(),
        )
        .send()
        .await
        .unwrap();
    let instance = run.instances()[0].instance_id().unwrap().to_string();
    let update = ClaimUpdate {
        instance_id: Some(instance.clone()),
        instance_type: Some("m5.large".into()),
        zone: Some("us-east-1a".into()),
        ..ClaimUpdate::default()
    };
    e.store
        .transition_claim(&id, ClaimState::Launched, long_ago + 2_000, &update)
        .await
        .unwrap();
    (id, instance)
}

#[tokio::test(flavor = "multi_thread")]
async fn pending_pods_interruption_termination_and_sweep_end_to_end() {
    let e = env("e2e-flow", 64, 1).await;
    let sample: Value = serde_json::from_str(
        &std::fs::read_to_string(support::workspace_root().join("events/pod-pending.json")).unwrap(),
    )
    .unwrap();
    let pods = sample["detail"]["pods"].as_array().unwrap().clone();
    let pod_pending = support::workspace_root().join("events/pod-pending.json");

    // 1. A Pod Pending batch: instances in EC2 with our tags, claims and reservations in DynamoDB.
    let outcome = e.watch.invoke("pod-pending", &pod_pending);
    let launched = actions(&outcome, "launched");
    assert!(!launched.is_empty(), "{outcome}");
    let claims = e.store.claims().await.unwrap();
    assert_eq!(claims.len(), launched.len());
    assert!(claims.iter().all(|c| c.state == ClaimState::Launched), "{claims:?}");
    let instances = our_instances(&e.ec2, &claims).await;
    assert_eq!(instances.len(), claims.len());
    for c in &claims {
        let i = &instances[c.instance_id.as_deref().unwrap()];
        assert_eq!(tag_of(i, "nodewright.io/claim").as_deref(), Some(c.id.as_str()));
        assert_eq!(tag_of(i, "karpenter.sh/nodepool").as_deref(), Some("general"));
        assert_eq!(i.instance_type().map(|t| t.as_str()), c.instance_type.as_deref());
    }
    let reservations = e.store.reservations(now_millis()).await.unwrap();
    assert_eq!(reservations.len(), pods.len(), "every pod reserved once");
    for r in &reservations {
        let Holder::Claim(id) = &r.holder else {
            panic!("{r:?} is not held by a claim")
        };
        assert!(claims.iter().any(|c| &c.id == id && c.pods.contains(&r.pod_uid)));
    }

    // 2. The same event again: recognised, nothing new.
    let again = e.watch.invoke("pod-pending", &pod_pending);
    assert!(actions(&again, "launched").is_empty(), "{again}");
    assert_eq!(actions(&again, "replayed").len(), 1, "{again}");
    assert_eq!(e.store.claims().await.unwrap().len(), claims.len());
    assert_eq!(our_instances(&e.ec2, &claims).await.len(), claims.len());

    // 3. The instances boot: the kubelet emulator registers each Node from what EC2 holds (its
    // user data as nodeadm reads it). Nothing of ours is on them yet but the boot labels and the
    // unregistered taint.
    let ids: Vec<String> = claims.iter().map(|c| c.instance_id.clone().unwrap()).collect();
    let booted = boot_nodes(&e.ec2, &e.double, &ids, &rfc3339(now_millis())).await;
    assert_eq!(booted.len(), claims.len());
    for n in &booted {
        let labels = &n["metadata"]["labels"];
        assert_eq!(labels["karpenter.sh/nodepool"], "general", "{n}");
        assert!(
            labels.get("karpenter.sh/capacity-type").is_none(),
            "only registration knows it: {n}"
        );
        assert!(labels.get("nodewright.io/claim").is_none(), "{n}");
        assert!(
            n["spec"]["taints"].to_string().contains("karpenter.sh/unregistered"),
            "{n}"
        );
    }
    // The first node's pods bind to it; the watcher's Node Ready (its own code) names the instance.
    let victim = claims[0].clone();
    let victim_instance = victim.instance_id.clone().unwrap();
    let victim_node = node_of(&e.double, &victim_instance);
    let node_name = victim_node["metadata"]["name"].as_str().unwrap().to_string();
    let mut objects = e.double.objects();
    objects["pods"] = Value::Array(bound_pods(&victim, &pods, &node_name));
    e.double.set_objects(&objects);
    let ready = node_ready_file(&e.dir, &victim_node, now_millis());
    let outcome = e.watch.invoke("state-change", &ready);
    assert_eq!(actions(&outcome, "ready").len(), 1, "{outcome}");
    assert_eq!(actions(&outcome, "registered").len(), 1, "{outcome}");
    let registered = e.store.get_claim(&victim.id).await.unwrap().unwrap();
    assert_eq!(registered.state, ClaimState::Ready);
    // Registration wrote Karpenter's labels for the launched offering and lifted the taint.
    let node = node_of(&e.double, &victim_instance);
    let labels = &node["metadata"]["labels"];
    assert_eq!(
        labels["karpenter.sh/capacity-type"],
        json!(registered.capacity_type.unwrap().as_str())
    );
    assert_eq!(
        labels["node.kubernetes.io/instance-type"],
        json!(registered.instance_type)
    );
    assert_eq!(labels["topology.kubernetes.io/zone"], json!(registered.zone));
    let family = registered.instance_type.as_deref().unwrap().split('.').next().unwrap();
    assert_eq!(labels["karpenter.k8s.aws/instance-family"], family);
    assert!(!node["spec"]["taints"].to_string().contains("unregistered"), "{node}");
    for p in pods
        .iter()
        .filter(|p| victim.pods.iter().any(|u| p["uid"] == u.as_str()))
    {
        pod_fits_labels(p, &node);
    }
    // The same Node Ready again: nothing to write.
    let again = e.watch.invoke("state-change", &ready);
    assert!(actions(&again, "registered").is_empty(), "{again}");

    // ...then a spot interruption warning for its instance.
    let warning = event_file(
        &e.dir,
        "spot-interruption.json",
        "spot-interruption.json",
        &[
            ("/detail/instance-id", json!(victim_instance)),
            (
                "/resources/0",
                json!(format!("arn:aws:ec2:us-east-1:123456789012:instance/{victim_instance}")),
            ),
        ],
    );
    let outcome = e.watch.invoke("spot-interruption", &warning);
    let unavailable = actions(&outcome, "offeringUnavailable");
    assert_eq!(unavailable.len(), 1, "{outcome}");
    assert_eq!(unavailable[0]["instanceType"], json!(victim.instance_type));
    let replacements = actions(&outcome, "launched");
    assert_eq!(replacements.len(), 1, "a replacement for the node's pods: {outcome}");
    let r = replacements[0];
    assert!(
        !(r["capacityType"] == "spot"
            && r["instanceType"] == json!(victim.instance_type)
            && r["zone"] == json!(victim.zone)),
        "the interrupted offering is excluded: {r}"
    );
    assert_eq!(r["pods"], json!(victim.pods.len()));
    let marked = e.store.get_claim(&victim.id).await.unwrap().unwrap();
    assert!(
        matches!(marked.state, ClaimState::Cordoned | ClaimState::Draining),
        "{marked:?}"
    );
    let cached = e.store.unavailable_offerings(now_millis()).await.unwrap();
    assert!(
        cached
            .iter()
            .any(|o| Some(&o.instance_type) == victim.instance_type.as_ref()
                && Some(&o.zone) == victim.zone.as_ref()
                && o.reason == "SpotInterruption"),
        "{cached:?}"
    );
    // The exact cluster writes: the node tainted and cordoned, each of its pods evicted.
    let requests = e.double.requests();
    let writes: Vec<&Value> = requests.iter().filter(|r| r["method"] != "GET").collect();
    let patch = writes
        .iter()
        .find(|r| r["method"] == "PATCH" && r["path"] == format!("/api/v1/nodes/{node_name}"))
        .unwrap_or_else(|| panic!("no cordon patch in {writes:?}"));
    assert_eq!(patch["body"]["spec"]["unschedulable"], true, "{patch}");
    assert!(
        patch["body"]["spec"]["taints"]
            .to_string()
            .contains("nodewright.io/interrupted"),
        "{patch}"
    );
    let evicted: BTreeSet<String> = writes
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"].as_str().unwrap().ends_with("/eviction"))
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = pods
        .iter()
        .filter(|p| victim.pods.iter().any(|u| p["uid"] == u.as_str()))
        .map(|p| {
            format!(
                "/api/v1/namespaces/{}/pods/{}/eviction",
                p["namespace"].as_str().unwrap(),
                p["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(evicted, expected);

    // 4. The interrupted instance terminates: its claim ends and its reservations are released.
    let terminated = event_file(
        &e.dir,
        "instance-state-change-terminated.json",
        "terminated.json",
        &[
            ("/detail/instance-id", json!(victim_instance)),
            (
                "/resources/0",
                json!(format!("arn:aws:ec2:us-east-1:123456789012:instance/{victim_instance}")),
            ),
        ],
    );
    let outcome = e.watch.invoke("state-change", &terminated);
    let ended = e.store.get_claim(&victim.id).await.unwrap().unwrap();
    assert_eq!(ended.state, ClaimState::Terminated, "{outcome}");
    let held: Vec<_> = e
        .store
        .reservations(now_millis())
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.holder == Holder::Claim(victim.id.clone()))
        .collect();
    assert!(held.is_empty(), "released: {held:?}");

    // 5. The schedule: a claim launched 30 minutes ago that never registered is terminated.
    let (stale, stale_instance) = never_registered_claim(&e).await;
    let scheduled = support::workspace_root().join("events/scheduled.json");
    let outcome = e.watch.invoke("consolidation", &scheduled);
    let swept = actions(&outcome, "terminated");
    assert!(
        swept
            .iter()
            .any(|a| a["instanceIds"].to_string().contains(&stale_instance)),
        "{outcome}"
    );
    let stale_claim = e.store.get_claim(&stale).await.unwrap().unwrap();
    assert!(
        matches!(
            stale_claim.state,
            ClaimState::Terminating | ClaimState::Terminated | ClaimState::Failed
        ),
        "{stale_claim:?}"
    );
    let state = e
        .ec2
        .describe_instances()
        .instance_ids(&stale_instance)
        .send()
        .await
        .unwrap()
        .reservations()[0]
        .instances()[0]
        .state()
        .and_then(|s| s.name())
        .map(|n| n.as_str().to_string());
    assert!(
        matches!(state.as_deref(), Some("shutting-down" | "terminated")),
        "{state:?}"
    );
    // The other nodes never had their Node Ready delivered (a restarted watcher): the schedule
    // registered them by providerID, and they are Ready, not reaped.
    for c in &claims[1..] {
        let now = e.store.get_claim(&c.id).await.unwrap().unwrap();
        assert_eq!(now.state, ClaimState::Ready, "{now:?}\n{outcome}");
        let node = node_of(&e.double, c.instance_id.as_deref().unwrap());
        assert!(!node["spec"]["taints"].to_string().contains("unregistered"), "{node}");
    }

    // 6. Two hours of schedule ticks later, the nodes are still there: the claims are moved two
    // hours into the past (the functions read the wall clock), with pods on them so that only the
    // registration timeout could take them.
    let survivor = claims[1].clone();
    let survivor_node = node_of(&e.double, survivor.instance_id.as_deref().unwrap());
    let survivor_name = survivor_node["metadata"]["name"].as_str().unwrap().to_string();
    let mut objects = e.double.objects();
    objects["pods"] = Value::Array(bound_pods(&survivor, &pods, &survivor_name));
    e.double.set_objects(&objects);
    age_claims(&e.store, &claims[1..], 2 * 60 * 60_000, false).await;
    for _ in 0..3 {
        let outcome = e.watch.invoke("consolidation", &scheduled);
        assert!(actions(&outcome, "stepFailed").is_empty(), "{outcome}");
    }
    let alive = our_instances(&e.ec2, &claims[1..]).await;
    assert_eq!(alive.len(), claims.len() - 1, "no node reaped after registering");
    assert_eq!(
        e.store.get_claim(&survivor.id).await.unwrap().unwrap().state,
        ClaimState::Ready
    );

    // 7. Its pods go away; past consolidateAfter the empty node is cordoned and drained, then its
    // instance terminated.
    let mut objects = e.double.objects();
    objects["pods"] = json!([]);
    e.double.set_objects(&objects);
    e.watch.invoke("consolidation", &scheduled);
    age_claims(&e.store, std::slice::from_ref(&survivor), 11 * 60_000, true).await;
    let outcome = e.watch.invoke("consolidation", &scheduled);
    let disrupted = actions(&outcome, "disruption");
    assert!(
        disrupted
            .iter()
            .any(|d| d["nodes"].to_string().contains(&survivor_name)),
        "{outcome}"
    );
    let node = node_of(&e.double, survivor.instance_id.as_deref().unwrap());
    assert_eq!(node["spec"]["unschedulable"], true, "{node}");
    let outcome = e.watch.invoke("consolidation", &scheduled);
    let gone = actions(&outcome, "terminated");
    assert!(
        gone.iter().any(|t| t["instanceIds"]
            .to_string()
            .contains(survivor.instance_id.as_deref().unwrap())),
        "{outcome}"
    );
    let state = e.store.get_claim(&survivor.id).await.unwrap().unwrap().state;
    assert!(
        matches!(state, ClaimState::Terminating | ClaimState::Terminated),
        "{state:?}"
    );
}

/// Moves claims `by` ms into the past (every transition and, with `pods_clock`, the last pod
/// change), as if that much time had passed since they happened.
async fn age_claims(store: &StateStore, claims: &[ClaimRecord], by: i64, pods_clock: bool) {
    for c in claims {
        let mut current = store.get_claim(&c.id).await.unwrap().unwrap();
        let version = current.version;
        for at in current.transitions.values_mut() {
            *at -= by;
        }
        if pods_clock && let Some(at) = current.pods_changed_at.as_mut() {
            *at -= by;
        }
        current.version += 1;
        assert!(store.replace_claim(&current, version).await.unwrap());
    }
}

/// 20 pod-pending invocations at once, each with 10 of 30 pods (every pod in several): each pod is
/// reserved once, the pool's 16-vCPU limit holds, no instance is launched twice.
#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_pod_pending_invocations() {
    let e = env("e2e-concurrent", 16, 20).await;
    let uid = |i: usize| format!("0c0c0000-0000-4000-8000-{i:012}");
    let files: Vec<std::path::PathBuf> = (0..20)
        .map(|n| {
            let pods: Vec<Value> = (0..10)
                .map(|k| (n + k * 3) % 30)
                .map(|i| {
                    json!({"uid": uid(i), "namespace": "batch", "name": format!("worker-{i}"),
                           "resourceVersion": "1", "createdAt": 1_795_255_190_000_i64,
                           "requests": {"cpu": "1", "memory": "1Gi", "pods": "1"},
                           "owner": {"kind": "ReplicaSet", "name": "worker"}})
                })
                .collect();
            event_file(
                &e.dir,
                "pod-pending.json",
                &format!("pending-{n}.json"),
                &[
                    ("/id", json!(format!("concurrent-{n}"))),
                    ("/detail/pods", Value::Array(pods)),
                ],
            )
        })
        .collect();
    let runs = files.iter().map(|f| {
        let mut cmd = e.watch.invoke_command("pod-pending", f);
        async move {
            tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap()
        }
    });
    let outputs = join_all(runs).await;
    let mut launched_total = 0;
    for (f, out) in files.iter().zip(&outputs) {
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(outcome.get("error").is_none(), "{outcome}");
        launched_total += actions(&outcome, "launched").len();
    }

    let claims = e.store.claims().await.unwrap();
    let live: Vec<&ClaimRecord> = claims.iter().filter(|c| c.state == ClaimState::Launched).collect();
    assert_eq!(live.len(), launched_total, "one claim per launch");
    // No pod on two claims; every reservation held by the claim that lists the pod.
    let mut seen = BTreeSet::new();
    for c in &live {
        for p in &c.pods {
            assert!(seen.insert(p.clone()), "pod {p} on two claims");
        }
    }
    let reservations = e.store.reservations(now_millis()).await.unwrap();
    for r in &reservations {
        match &r.holder {
            Holder::Claim(id) => assert!(live.iter().any(|c| &c.id == id && c.pods.contains(&r.pod_uid)), "{r:?}"),
            other => panic!("a reservation left with {other:?}"),
        }
    }
    assert_eq!(reservations.len(), seen.len());
    // The limit: the pool's usage counter and the instances' vCPUs both within 16.
    let usage = e.store.pool_usage("general").await.unwrap();
    assert!(usage.cpu_milli <= 16_000, "{usage:?}");
    let instances = our_instances(&e.ec2, &claims).await;
    assert_eq!(instances.len(), live.len(), "one instance per claim, none twice");
    let ids: BTreeSet<_> = live.iter().map(|c| c.instance_id.clone().unwrap()).collect();
    assert_eq!(ids.len(), live.len());
    assert!(!live.is_empty());
    let _ = Path::new(&e.dir);
}
