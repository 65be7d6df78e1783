//! The four functions end to end: real binaries under `cargo lambda watch`, AWS in moto, the
//! cluster in kube_double.py, events from events/ (edited only to name the instances moto created).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aws_sdk_ec2::types::{Filter, Instance, ResourceType, Tag, TagSpecification};
use base64::Engine as _;
use futures::future::join_all;
use nodewright_aws::now_millis;
use nodewright_aws::state::{ClaimRecord, ClaimUpdate, Holder, StateStore, TableNames, create_tables};
use nodewright_core::model::ClaimState;
use nodewright_e2e::{
    BusTap, KubeDouble, Watch, boot_nodes, cluster_name, discovery, event_file, function_env, node_ready_file,
    nodepools, rfc3339, scratch, support, unique,
};
use serde_json::{Value, json};

struct Env {
    dir: std::path::PathBuf,
    /// This test's own cluster name (the samples' "demo" replaced).
    cluster: String,
    ec2: aws_sdk_ec2::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    store: StateStore,
    double: KubeDouble,
    watch: Watch,
}

async fn env(test: &str, cpu_limit: u32, concurrency: u32) -> Env {
    env_with(test, concurrency, |tag| nodepools(tag, cpu_limit)).await
}

/// An environment whose functions read the pools `pools(discovery tag)` returns.
async fn env_with(test: &str, concurrency: u32, pools: impl FnOnce(&str) -> String) -> Env {
    env_with_extra(test, concurrency, pools, Vec::new()).await
}

/// [`env_with`], the functions' environment extended with `extra`.
async fn env_with_extra(
    test: &str,
    concurrency: u32,
    pools: impl FnOnce(&str) -> String,
    extra: Vec<(&'static str, String)>,
) -> Env {
    let dir = scratch(test);
    let clients = support::clients().await;
    let prefix = unique(test);
    let names = TableNames::new(&prefix).unwrap();
    create_tables(&clients.dynamodb, &names).await.unwrap();
    let cluster = cluster_name(test);
    let store = StateStore::new(clients.dynamodb.clone(), names, &cluster).unwrap();
    let tag = discovery(&clients.ec2).await;
    let double = KubeDouble::start(&dir);
    let kubeconfig = double.kubeconfig(&dir);
    let mut env = function_env(&dir, &prefix, &cluster, &pools(&tag), &kubeconfig);
    env.extend(extra);
    let watch = Watch::start(&dir, &env, concurrency);
    Env {
        dir,
        cluster,
        ec2: clients.ec2.clone(),
        autoscaling: clients.autoscaling.clone(),
        store,
        double,
        watch,
    }
}

impl Env {
    /// A sample event sent by this test's cluster ([`event_file`]).
    fn event(&self, sample: &str, name: &str, edits: &[(&str, Value)]) -> std::path::PathBuf {
        event_file(&self.dir, &self.cluster, sample, name, edits)
    }

    /// The watcher's `Node Ready` for `node`, from this test's cluster ([`node_ready_file`]).
    fn node_ready(&self, node: &Value, now: i64) -> std::path::PathBuf {
        node_ready_file(&self.dir, &self.cluster, node, now)
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
async fn our_instances(ec2: &aws_sdk_ec2::Client, cluster: &str, claims: &[ClaimRecord]) -> BTreeMap<String, Instance> {
    let ids: BTreeSet<&str> = claims.iter().filter_map(|c| c.instance_id.as_deref()).collect();
    let out = ec2
        .describe_instances()
        .filters(
            Filter::builder()
                .name("tag:nodewright.io/cluster")
                .values(cluster)
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
        ("nodewright.io/cluster", e.cluster.as_str()),
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
    let pod_pending = e.event("pod-pending.json", "pod-pending.json", &[]);
    let sample: Value = serde_json::from_str(&std::fs::read_to_string(&pod_pending).unwrap()).unwrap();
    let pods = sample["detail"]["pods"].as_array().unwrap().clone();

    // 1. A Pod Pending batch: instances in EC2 with our tags, claims and reservations in DynamoDB.
    let outcome = e.watch.invoke("pod-pending", &pod_pending);
    let launched = actions(&outcome, "launched");
    assert!(!launched.is_empty(), "{outcome}");
    let claims = e.store.claims().await.unwrap();
    assert_eq!(claims.len(), launched.len());
    assert!(claims.iter().all(|c| c.state == ClaimState::Launched), "{claims:?}");
    let instances = our_instances(&e.ec2, &e.cluster, &claims).await;
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
    assert_eq!(our_instances(&e.ec2, &e.cluster, &claims).await.len(), claims.len());

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
    let ready = e.node_ready(&victim_node, now_millis());
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
    let warning = e.event(
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
        .find(|r| {
            r["method"] == "PATCH"
                && r["path"] == format!("/api/v1/nodes/{node_name}")
                && !r["body"]["spec"]["unschedulable"].is_null()
        })
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
    let terminated = e.event(
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

    // The replacement boots, and its Node Ready is lost (a restarted watcher).
    let others: Vec<ClaimRecord> = e
        .store
        .claims()
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c.state == ClaimState::Launched)
        .collect();
    // The replacement is the one new claim; beside it, the batch's other claims (booted in 3,
    // their Node Ready not sent) when the batch made more than one.
    let replacement: Vec<&ClaimRecord> = others.iter().filter(|c| !claims.iter().any(|o| o.id == c.id)).collect();
    assert_eq!(replacement.len(), 1, "the replacement is launched: {others:?}");
    let ids: Vec<String> = replacement.iter().map(|c| c.instance_id.clone().unwrap()).collect();
    assert_eq!(
        boot_nodes(&e.ec2, &e.double, &ids, &rfc3339(now_millis())).await.len(),
        1
    );

    // 5. The schedule: a claim launched 30 minutes ago that never registered is terminated.
    let (stale, stale_instance) = never_registered_claim(&e).await;
    let scheduled = e.event("scheduled.json", "scheduled.json", &[]);
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
    // The replacement's Node Ready never came: the schedule registered it by providerID, and it
    // is Ready, not reaped.
    for c in &others {
        let now = e.store.get_claim(&c.id).await.unwrap().unwrap();
        assert_eq!(now.state, ClaimState::Ready, "{now:?}\n{outcome}");
        let node = node_of(&e.double, c.instance_id.as_deref().unwrap());
        assert!(!node["spec"]["taints"].to_string().contains("unregistered"), "{node}");
    }

    // 6. Two hours of schedule ticks later, the nodes are still there: the claims are moved two
    // hours into the past (the functions read the wall clock), with pods on them so that only the
    // registration timeout could take them.
    let survivor = others[0].clone();
    let survivor_node = node_of(&e.double, survivor.instance_id.as_deref().unwrap());
    let survivor_name = survivor_node["metadata"]["name"].as_str().unwrap().to_string();
    let mut objects = e.double.objects();
    objects["pods"] = Value::Array(bound_pods(&survivor, &pods, &survivor_name));
    e.double.set_objects(&objects);
    age_claims(&e.store, &others, 2 * 60 * 60_000, false).await;
    for _ in 0..3 {
        let outcome = e.watch.invoke("consolidation", &scheduled);
        assert!(actions(&outcome, "stepFailed").is_empty(), "{outcome}");
    }
    let alive = our_instances(&e.ec2, &e.cluster, &others).await;
    assert_eq!(alive.len(), others.len(), "no node reaped after registering");
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
    // The disruption said so on the node.
    let events = e.double.objects()["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|ev| ev["reason"] == "DisruptionTerminating"
            && ev["regarding"]["name"] == survivor_name.as_str()
            && ev["regarding"]["kind"] == "Node"),
        "{events:?}"
    );
    // Everything the functions asked of the cluster is what the shipped ClusterRole grants.
    nodewright_e2e::assert_rbac_allows(&e.double.requests());
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
/// As deployed: pod-pending hands each claim's launch to the launch bus and returns with the
/// claims written; EventBridge (moto's, matching the template's rule) delivers one `Claim Launch`
/// per claim; state-change launches each, once, even when the event comes twice.
#[tokio::test(flavor = "multi_thread")]
async fn launches_handed_off_through_the_bus_end_to_end() {
    let bus = unique("launches");
    let e = env_with_extra(
        "e2e-hand-off",
        1,
        |tag| nodepools(tag, 64),
        vec![("NODEWRIGHT_LAUNCH_BUS", bus.clone())],
    )
    .await;
    // The functions put events at invocation time: the bus is there before the first.
    let cluster = e.cluster.clone();
    let tap = BusTap::create(&bus, &cluster);
    let batch = e.event("pod-pending.json", "pod-pending.json", &[]);
    let outcome = e.watch.invoke("pod-pending", &batch);
    let requested = actions(&outcome, "launchRequested");
    assert!(!requested.is_empty(), "{outcome}");
    assert!(actions(&outcome, "launched").is_empty(), "{outcome}");
    let claims = e.store.claims().await.unwrap();
    assert_eq!(claims.len(), requested.len());
    assert!(
        claims
            .iter()
            .all(|c| c.state == ClaimState::Launching && c.instance_id.is_none())
    );
    assert!(
        our_instances(&e.ec2, &e.cluster, &claims).await.is_empty(),
        "nothing launched yet"
    );

    let delivered = tap.delivered();
    assert_eq!(delivered.len(), claims.len(), "{delivered:?}");
    let mut launched = BTreeSet::new();
    for (i, event) in delivered.iter().enumerate() {
        assert_eq!(event["source"], "nodewright.functions");
        assert_eq!(event["detail-type"], "Claim Launch");
        assert_eq!(event["detail"]["cluster"], json!(cluster));
        let path = e.dir.join(format!("claim-launch-{i}.json"));
        std::fs::write(&path, event.to_string()).unwrap();
        let outcome = e.watch.invoke("state-change", &path);
        let l = actions(&outcome, "launched");
        assert_eq!(l.len(), 1, "{outcome}");
        launched.insert(l[0]["claim"].as_str().unwrap().to_string());
        // Delivered again (at least once): a replay, nothing new.
        let again = e.watch.invoke("state-change", &path);
        assert_eq!(actions(&again, "replayed").len(), 1, "{again}");
    }
    let want: BTreeSet<String> = claims.iter().map(|c| c.id.clone()).collect();
    assert_eq!(launched, want);
    let claims = e.store.claims().await.unwrap();
    assert!(claims.iter().all(|c| c.state == ClaimState::Launched), "{claims:?}");
    let instances = our_instances(&e.ec2, &e.cluster, &claims).await;
    assert_eq!(instances.len(), claims.len());
    for c in &claims {
        let i = &instances[c.instance_id.as_deref().unwrap()];
        assert_eq!(tag_of(i, "nodewright.io/claim").as_deref(), Some(c.id.as_str()));
    }
    assert!(tap.delivered().is_empty(), "one event per claim");
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_pod_pending_invocations() {
    let e = env("e2e-concurrent", 16, 20).await;
    let uid = |i: usize| format!("0c0c0000-0000-4000-8000-{i:012}");
    let created = now_millis() - 10_000;
    let files: Vec<std::path::PathBuf> = (0..20)
        .map(|n| {
            let pods: Vec<Value> = (0..10)
                .map(|k| (n + k * 3) % 30)
                .map(|i| {
                    json!({"uid": uid(i), "namespace": "batch", "name": format!("worker-{i}"),
                           "resourceVersion": "1", "createdAt": created,
                           "requests": {"cpu": "1", "memory": "1Gi", "pods": "1"},
                           "owner": {"kind": "ReplicaSet", "name": "worker"}})
                })
                .collect();
            e.event(
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
    let instances = our_instances(&e.ec2, &e.cluster, &claims).await;
    assert_eq!(instances.len(), live.len(), "one instance per claim, none twice");
    let ids: BTreeSet<_> = live.iter().map(|c| c.instance_id.clone().unwrap()).collect();
    assert_eq!(ids.len(), live.len());
    assert!(!live.is_empty());
    let _ = Path::new(&e.dir);
}

/// An SQS batch as the pod-pending queue delivers it: three batches of distinct pods, a redelivered
/// copy of the first, and a record that is not an event. The records run concurrently inside the
/// invocation; every pod lands on exactly one claim, the copy adds nothing, the bad record is
/// dropped (not retried forever), and only a copy that found its twin in progress goes back to SQS.
#[tokio::test(flavor = "multi_thread")]
async fn an_sqs_batch_of_pod_pending_records_is_handled_concurrently_once_each() {
    let e = env("e2e-sqs-batch", 64, 2).await;
    let created = now_millis() - 10_000;
    let uid = |b: usize, i: usize| format!("5a5a0000-0000-4000-8000-{b:04}{i:08}");
    let mut bodies = Vec::new();
    for b in 0..3 {
        let pods: Vec<Value> = (0..6)
            .map(|i| {
                json!({"uid": uid(b, i), "namespace": "web", "name": format!("web-{b}-{i}"),
                       "resourceVersion": "1", "createdAt": created,
                       "requests": {"cpu": "500m", "memory": "1Gi", "pods": "1"},
                       "owner": {"kind": "ReplicaSet", "name": format!("web-{b}")}})
            })
            .collect();
        let f = e.event(
            "pod-pending.json",
            &format!("sqs-{b}.json"),
            &[
                ("/id", json!(format!("sqs-batch-{b}"))),
                ("/detail/batchId", json!(format!("sqsbatch{b}"))),
                ("/detail/pods", Value::Array(pods)),
            ],
        );
        bodies.push(std::fs::read_to_string(f).unwrap());
    }
    bodies.push(bodies[0].clone());
    bodies.push("{\"not\": \"an event\"}".to_string());
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({"messageId": format!("m-{i}"), "receiptHandle": "AQEB-example", "body": body,
                   "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": now_millis().to_string(),
                                  "SenderId": "AIDAEXAMPLE", "ApproximateFirstReceiveTimestamp": now_millis().to_string()},
                   "messageAttributes": {}, "md5OfBody": "0", "eventSource": "aws:sqs",
                   "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:nodewright-pod-pending",
                   "awsRegion": "us-east-1"})
        })
        .collect();
    let batch = e.dir.join("sqs-batch.json");
    std::fs::write(&batch, json!({"Records": records}).to_string()).unwrap();

    let response = e.watch.invoke("pod-pending", &batch);
    let failed: Vec<String> = response["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_string())
        .collect();
    // The copy ran beside the first: one of the two may find the other in progress, and only that
    // one is handed back to SQS; the bad record is dropped, never retried.
    assert!(
        failed.len() <= 1 && failed.iter().all(|m| m == "m-0" || m == "m-3"),
        "{response}"
    );
    // Redelivered alone, it finds its event done and launches nothing more.
    if let Some(m) = failed.first() {
        let record = records.iter().find(|r| r["messageId"] == m.as_str()).unwrap();
        let again = e.dir.join("sqs-redelivery.json");
        std::fs::write(&again, json!({"Records": [record]}).to_string()).unwrap();
        let response = e.watch.invoke("pod-pending", &again);
        assert_eq!(
            response["batchItemFailures"].as_array().map(Vec::len),
            Some(0),
            "{response}"
        );
    }
    let claims = e.store.live_claims().await.unwrap();
    let mut placed = BTreeMap::new();
    for c in &claims {
        for p in &c.pods {
            assert!(
                placed.insert(p.clone(), c.id.clone()).is_none(),
                "pod {p} on two claims"
            );
        }
    }
    let wanted: BTreeSet<String> = (0..3).flat_map(|b| (0..6).map(move |i| uid(b, i))).collect();
    assert_eq!(
        placed.keys().cloned().collect::<BTreeSet<_>>(),
        wanted,
        "every pod once"
    );
    let instances = our_instances(&e.ec2, &e.cluster, &claims).await;
    assert_eq!(instances.len(), claims.len(), "one instance per claim");
}

/// The user's own launch template for an Auto Scaling pool, as a self-managed AL2023 node group
/// carries it: a nodeadm NodeConfig whose kubelet flags set the group's labels and taint.
const GROUP_USER_DATA: &str = "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"BOUNDARY\"\n\n--BOUNDARY\nContent-Type: application/node.eks.aws\n\napiVersion: node.eks.aws/v1alpha1\nkind: NodeConfig\nspec:\n  cluster:\n    name: demo\n    apiServerEndpoint: https://demo.gr7.us-east-1.eks.amazonaws.com\n    certificateAuthority: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t\n    cidr: 10.100.0.0/16\n  kubelet:\n    flags:\n    - --node-labels=workload=batch\n    - --register-with-taints=dedicated=batch:NoSchedule\n\n--BOUNDARY--\n";

/// The instances of `group` that moto has running, by id.
async fn group_instances(e: &Env, group: &str) -> BTreeSet<String> {
    let out = e
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .unwrap();
    out.auto_scaling_groups()[0]
        .instances()
        .iter()
        .map(|i| i.instance_id().unwrap().to_string())
        .collect()
}

/// The fleet flow for a pool backed by an existing Auto Scaling group: pending pods raise the
/// group's desired capacity, the group's launch event names the instance, the node boots from the
/// group's own launch template (not ours), registers, survives two hours of schedule ticks, and
/// once empty is drained and scaled in with a desired-capacity decrement.
#[tokio::test(flavor = "multi_thread")]
async fn auto_scaling_pool_node_end_to_end() {
    let group = unique("e2e-batch");
    let pools = |tag: &str| {
        format!(
            "{}---\napiVersion: nodewright.io/v1alpha1\nkind: AutoScalingPool\nmetadata: {{name: batch}}\nspec:\n  \
             autoScalingGroupName: {group}\n  instanceTypes: [m5.large]\n  capacityType: on-demand\n  minSize: 0\n  \
             maxSize: 3\n  template:\n    metadata:\n      labels: {{workload: batch}}\n    spec:\n      taints:\n        \
             - {{key: dedicated, value: batch, effect: NoSchedule}}\n  disruption: {{consolidationPolicy: WhenEmpty, consolidateAfter: 10m}}\n",
            nodepools(tag, 64)
        )
    };
    let e = env_with("e2e-asg", 1, pools).await;
    // The group as the user made it: their launch template, their user data, no Nodewright tags.
    let image = e.ec2.describe_images().owners("amazon").send().await.unwrap().images()[0]
        .image_id()
        .unwrap()
        .to_string();
    let template = e
        .ec2
        .create_launch_template()
        .launch_template_name(unique("batch-nodes"))
        .launch_template_data(
            aws_sdk_ec2::types::RequestLaunchTemplateData::builder()
                .image_id(image)
                .instance_type(aws_sdk_ec2::types::InstanceType::M5Large)
                .user_data(
                    base64::engine::general_purpose::STANDARD
                        .encode(GROUP_USER_DATA.replace("name: demo", &format!("name: {}", e.cluster))),
                )
                .build(),
        )
        .send()
        .await
        .unwrap()
        .launch_template()
        .unwrap()
        .launch_template_id()
        .unwrap()
        .to_string();
    let subnet = e.ec2.describe_subnets().send().await.unwrap().subnets()[0]
        .subnet_id()
        .unwrap()
        .to_string();
    e.autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(&group)
        .min_size(0)
        .max_size(3)
        .desired_capacity(0)
        .vpc_zone_identifier(subnet)
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_id(template)
                .version("$Latest")
                .build(),
        )
        .send()
        .await
        .unwrap();

    // 1. Two pending pods that select the group's label and tolerate its taint.
    let uid = |i: usize| format!("0a5c0000-0000-4000-8000-{i:012}");
    let created = now_millis() - 10_000;
    let pods: Vec<Value> = (0..2)
        .map(|i| {
            json!({"uid": uid(i), "namespace": "batch", "name": format!("trainer-{i}"),
                   "resourceVersion": "1", "createdAt": created,
                   "requests": {"cpu": "500m", "memory": "1Gi", "pods": "1"},
                   "nodeSelector": {"workload": "batch"},
                   "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"}],
                   "owner": {"kind": "ReplicaSet", "name": "trainer"}})
        })
        .collect();
    let pending = e.event(
        "pod-pending.json",
        "pending.json",
        &[("/detail/pods", Value::Array(pods.clone()))],
    );
    let outcome = e.watch.invoke("pod-pending", &pending);
    let scaled = actions(&outcome, "scaledUp");
    assert_eq!(scaled.len(), 1, "{outcome}");
    assert_eq!(scaled[0]["group"], json!(group));
    assert!(
        actions(&outcome, "launched").is_empty(),
        "no fleet launch for these pods: {outcome}"
    );
    let claims = e.store.claims().await.unwrap();
    assert_eq!(claims.len(), 1, "{claims:?}");
    let claim = claims[0].clone();
    assert_eq!(claim.backing, format!("asg:{group}"));
    assert_eq!(claim.state, ClaimState::Launching);
    let instances = group_instances(&e, &group).await;
    assert_eq!(instances.len(), 1, "desired capacity raised by one");
    let instance = instances.into_iter().next().unwrap();

    // 2. The group's launch event names the instance; EC2 says its type and zone. Twice: once.
    let launch = e.event(
        "asg-launch-successful.json",
        "asg-launch.json",
        &[
            ("/detail/AutoScalingGroupName", json!(group)),
            ("/detail/EC2InstanceId", json!(instance)),
            (
                "/resources/1",
                json!(format!("arn:aws:ec2:us-east-1:123456789012:instance/{instance}")),
            ),
        ],
    );
    let outcome = e.watch.invoke("state-change", &launch);
    let launched = e.store.get_claim(&claim.id).await.unwrap().unwrap();
    assert_eq!(launched.state, ClaimState::Launched, "{outcome}");
    assert_eq!(launched.instance_id.as_deref(), Some(instance.as_str()));
    assert_eq!(launched.instance_type.as_deref(), Some("m5.large"));
    let again = e.watch.invoke("state-change", &launch);
    assert_eq!(
        e.store.get_claim(&claim.id).await.unwrap().unwrap().version,
        launched.version,
        "{again}"
    );

    // 3. The node boots from the group's user data: its labels and taint, none of ours.
    let booted = boot_nodes(
        &e.ec2,
        &e.double,
        std::slice::from_ref(&instance),
        &rfc3339(now_millis()),
    )
    .await;
    assert_eq!(booted.len(), 1);
    let labels = &booted[0]["metadata"]["labels"];
    assert_eq!(labels["workload"], "batch", "{}", booted[0]);
    assert!(labels.get("karpenter.sh/nodepool").is_none(), "{}", booted[0]);
    assert!(
        booted[0]["spec"]["taints"].to_string().contains("dedicated"),
        "{}",
        booted[0]
    );
    let node_name = booted[0]["metadata"]["name"].as_str().unwrap().to_string();

    // 4. The schedule finds it Ready before any Node Ready arrives (a lost event) and registers it.
    let scheduled = e.event("scheduled.json", "scheduled.json", &[]);
    let outcome = e.watch.invoke("consolidation", &scheduled);
    assert_eq!(actions(&outcome, "registered").len(), 1, "{outcome}");
    let ready = e.store.get_claim(&claim.id).await.unwrap().unwrap();
    assert_eq!(ready.state, ClaimState::Ready, "{outcome}");
    let node = node_of(&e.double, &instance);
    let labels = &node["metadata"]["labels"];
    assert_eq!(labels["karpenter.sh/nodepool"], "batch", "{node}");
    assert_eq!(labels["karpenter.sh/capacity-type"], "on-demand", "{node}");
    assert_eq!(labels["node.kubernetes.io/instance-type"], "m5.large", "{node}");
    assert_eq!(labels["topology.kubernetes.io/zone"], json!(ready.zone), "{node}");
    for p in &pods {
        pod_fits_labels(p, &node);
    }
    // The watcher's Node Ready, late: nothing more to do.
    let ready_event = e.node_ready(&node, now_millis());
    let late = e.watch.invoke("state-change", &ready_event);
    assert!(actions(&late, "registered").is_empty(), "{late}");

    // 5. Two hours of ticks with its pods bound: alive, and protected from the group's scale-in.
    let mut objects = e.double.objects();
    objects["pods"] = Value::Array(bound_pods(&ready, &pods, &node_name));
    e.double.set_objects(&objects);
    age_claims(&e.store, std::slice::from_ref(&ready), 2 * 60 * 60_000, false).await;
    for _ in 0..3 {
        let outcome = e.watch.invoke("consolidation", &scheduled);
        assert!(actions(&outcome, "stepFailed").is_empty(), "{outcome}");
        let protected = actions(&outcome, "protected");
        assert!(
            protected.iter().any(|p| p["protected"].to_string().contains(&instance)),
            "{outcome}"
        );
    }
    assert_eq!(group_instances(&e, &group).await.len(), 1, "still there");
    assert_eq!(
        e.store.get_claim(&claim.id).await.unwrap().unwrap().state,
        ClaimState::Ready
    );

    // 6. Its pods finish; past consolidateAfter the node is cordoned and drained, then scaled in.
    let mut objects = e.double.objects();
    objects["pods"] = json!([]);
    e.double.set_objects(&objects);
    e.watch.invoke("consolidation", &scheduled);
    age_claims(&e.store, std::slice::from_ref(&ready), 11 * 60_000, true).await;
    let outcome = e.watch.invoke("consolidation", &scheduled);
    assert!(
        actions(&outcome, "disruption")
            .iter()
            .any(|d| d["nodes"].to_string().contains(&node_name)),
        "{outcome}"
    );
    assert_eq!(node_of(&e.double, &instance)["spec"]["unschedulable"], true);
    let outcome = e.watch.invoke("consolidation", &scheduled);
    assert!(
        actions(&outcome, "terminated")
            .iter()
            .any(|t| t["instanceIds"].to_string().contains(&instance)),
        "{outcome}"
    );
    let g = e
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&group)
        .send()
        .await
        .unwrap();
    assert_eq!(
        g.auto_scaling_groups()[0].desired_capacity(),
        Some(0),
        "scaled in with a decrement: the group launches no replacement"
    );
    assert!(group_instances(&e, &group).await.is_empty());
}

/// NodePools and EC2NodeClasses applied to the cluster (the double, as objects) are what the
/// functions launch from; the consolidation run writes their status; pods and nodes get Events.
#[tokio::test(flavor = "multi_thread")]
async fn nodepools_from_the_cluster_with_status_and_events_end_to_end() {
    // The configured YAML is a fallback pool the cluster's pools must win over.
    // The Pricing API (moto has none) says every m5/c5/r5 costs half the catalogue's price.
    let catalogue = nodewright_core::Catalogue::embedded()
        .instance_types("us-east-1", &nodewright_core::catalogue::OverheadConfig::default());
    let list_price = |name: &str, ct: &str, zone: &str| {
        catalogue
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| {
                t.offerings
                    .iter()
                    .find(|o| o.capacity_type.as_str() == ct && o.zone == zone)
            })
            .map(|o| o.price)
            .unwrap()
    };
    let mut live = serde_json::Map::new();
    for t in catalogue
        .iter()
        .filter(|t| ["m5.", "c5.", "r5."].iter().any(|f| t.name.starts_with(f)))
    {
        let od = t
            .offerings
            .iter()
            .find(|o| o.capacity_type.as_str() == "on-demand")
            .unwrap()
            .price;
        live.insert(t.name.clone(), json!(od / 2.0));
    }
    let dir = scratch("e2e-cluster-pools-prices");
    let price_api = nodewright_e2e::PriceDouble::start(&dir, &json!({"us-east-1": live}));
    let mut yaml = String::new();
    let e = env_with_extra(
        "e2e-cluster-pools",
        1,
        |tag| {
            yaml = nodepools(tag, 64);
            yaml.replace("name: general", "name: fallback")
        },
        vec![
            ("AWS_ENDPOINT_URL_PRICING", price_api.endpoint()),
            // The YAML file is set (a fallback pool): opt in to the cluster's pools.
            ("NODEWRIGHT_NODEPOOL_SOURCE", "cluster".into()),
        ],
    )
    .await;
    let mut docs: Vec<Value> = yaml
        .split("\n---\n")
        .map(|d| serde_norway::from_str::<Value>(d).unwrap())
        .collect();
    for d in &mut docs {
        d["metadata"]["generation"] = json!(1);
        d["metadata"]["resourceVersion"] = json!("1");
        d["metadata"]["uid"] = json!(format!("uid-{}", d["metadata"]["name"].as_str().unwrap()));
    }
    let class = docs.iter().find(|d| d["kind"] == "EC2NodeClass").unwrap().clone();
    let mut web = docs.iter().find(|d| d["kind"] == "NodePool").unwrap().clone();
    web["metadata"]["name"] = json!("web");
    let mut broken = web.clone();
    broken["metadata"]["name"] = json!("broken");
    broken["spec"]["limits"]["cpu"] = json!("lots");
    broken["spec"]["weight"] = json!(100);
    let mut objects = e.double.objects();
    objects["nodepools"] = json!([web, broken]);
    objects["ec2nodeclasses"] = json!([class]);
    e.double.set_objects(&objects);

    // The first scheduled run refreshes the region's prices into DynamoDB.
    let scheduled = e.event("scheduled.json", "scheduled.json", &[]);
    let outcome = e.watch.invoke("consolidation", &scheduled);
    assert!(actions(&outcome, "stepFailed").is_empty(), "{outcome}");
    let asked = price_api.requests();
    assert!(!asked.is_empty(), "the Pricing API was asked");
    assert!(
        asked[0]["body"]["Filters"].to_string().contains("us-east-1"),
        "{asked:?}"
    );
    let sheet = e.store.prices(now_millis()).await.unwrap().expect("prices stored");
    assert_eq!(
        sheet.on_demand.get("m5.large"),
        Some(&(list_price("m5.large", "on-demand", "us-east-1a") / 2.0))
    );

    let pod_pending = e.event("pod-pending.json", "pod-pending.json", &[]);
    let sample: Value = serde_json::from_str(&std::fs::read_to_string(&pod_pending).unwrap()).unwrap();
    let pods = sample["detail"]["pods"].as_array().unwrap().clone();
    let outcome = e.watch.invoke("pod-pending", &pod_pending);
    let launched = actions(&outcome, "launched");
    assert!(!launched.is_empty(), "{outcome}");
    assert!(
        launched.iter().all(|l| l["pool"] == "web"),
        "the cluster's valid pool: {outcome}"
    );
    // Decided at the live prices: each launch's price is half the catalogue's for its offering
    // (on-demand from the Pricing API; spot estimates scale with it, moto reports no spot history).
    for l in &launched {
        let catalogue_price = list_price(
            l["instanceType"].as_str().unwrap(),
            l["capacityType"].as_str().unwrap(),
            l["zone"].as_str().unwrap(),
        );
        let price = l["pricePerHour"].as_f64().unwrap();
        assert!(
            (price - catalogue_price / 2.0).abs() < 1e-6,
            "{l}: catalogue {catalogue_price}"
        );
    }
    let claims = e.store.claims().await.unwrap();
    let instances = our_instances(&e.ec2, &e.cluster, &claims).await;
    assert!(
        instances
            .values()
            .all(|i| tag_of(i, "karpenter.sh/nodepool").as_deref() == Some("web")),
        "pools by instance: {:?}",
        instances
            .iter()
            .map(|(id, i)| (id, tag_of(i, "karpenter.sh/nodepool")))
            .collect::<Vec<_>>()
    );

    // Every pod was told where it goes, once.
    let events = e.double.objects()["events"].as_array().cloned().unwrap_or_default();
    for p in &pods {
        let nominated: Vec<&Value> = events
            .iter()
            .filter(|ev| ev["reason"] == "Nominated" && ev["regarding"]["uid"] == p["uid"])
            .collect();
        assert_eq!(nominated.len(), 1, "{p}: {events:?}");
        assert_eq!(nominated[0]["metadata"]["namespace"], p["namespace"]);
        assert!(nominated[0]["note"].as_str().unwrap().contains("nodeclaim/"));
        assert_eq!(nominated[0]["reportingController"], "nodewright.io/nodewright");
    }

    // The next consolidation run writes each object's status with the new nodes.
    let outcome = e.watch.invoke("consolidation", &scheduled);
    assert!(actions(&outcome, "stepFailed").is_empty(), "{outcome}");
    let objects = e.double.objects();
    let pool = |name: &str| {
        objects["nodepools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["metadata"]["name"] == name)
            .cloned()
            .unwrap()
    };
    let condition = |o: &Value, kind: &str| {
        o["status"]["conditions"]
            .as_array()
            .unwrap_or_else(|| panic!("no conditions: {o}"))
            .iter()
            .find(|c| c["type"] == kind)
            .cloned()
            .unwrap()
    };
    let web = pool("web");
    assert_eq!(condition(&web, "Ready")["status"], "True", "{web}");
    assert_eq!(web["status"]["resources"]["nodes"], claims.len().to_string(), "{web}");
    let broken = pool("broken");
    assert_eq!(condition(&broken, "ValidationSucceeded")["status"], "False", "{broken}");
    assert!(
        condition(&broken, "ValidationSucceeded")["message"]
            .as_str()
            .unwrap()
            .contains("spec.limits.cpu"),
        "{broken}"
    );
    let class = &objects["ec2nodeclasses"][0];
    assert_eq!(condition(class, "Ready")["status"], "True", "{class}");

    nodewright_e2e::assert_rbac_allows(&e.double.requests());
}
