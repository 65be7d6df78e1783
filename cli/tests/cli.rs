//! The `nodewright` binary as a user runs it: exit codes, messages, and output shape.

use std::path::PathBuf;
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn nodewright(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodewright"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run nodewright")
}

/// `nodewright ARGS` with stdout piped and `COLUMNS=width`.
fn nodewright_at(width: u16, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nodewright"))
        .args(args)
        .current_dir(root())
        .env("COLUMNS", width.to_string())
        .output()
        .expect("run nodewright")
}

/// `nodewright plan --nodepool NODEPOOL --pods PODS EXTRA...`
fn plan(nodepool: &str, pods: &str, extra: &[&str]) -> Output {
    let mut args = vec!["plan", "--nodepool", nodepool, "--pods", pods];
    args.extend_from_slice(extra);
    nodewright(&args)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn temp_file(name: &str, body: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nodewright-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write");
    p
}

#[test]
fn validate_accepts_every_seed_and_the_example() {
    let o = nodewright(&[
        "validate",
        "examples/nodepools.yaml",
        "examples/seeds/gpu-workloads-nodepool.yaml",
        "examples/seeds/default-provisioner.yaml",
        "examples/seeds/migration-provisioner.yaml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // The seeds are separate users' files: their class "default" and the example's are one name,
    // so the later is used, with a warning.
    assert!(text(&o).contains("ok: 6 pool(s), 1 node class(es)"), "{}", text(&o));
    assert!(
        text(&o).contains("EC2NodeClass default: also defined in examples/nodepools.yaml"),
        "{}",
        text(&o)
    );
}

#[test]
fn validate_lists_every_error_and_fails() {
    let o = nodewright(&["validate", "examples/broken-nodepool.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let out = text(&o);
    for needle in [
        "spec.weight: 500 must be an integer from 1 to 100",
        "spec.limits.cpu: invalid quantity \"lots\"",
        "spec.template.spec.requirements[0].values: unknown capacity type \"cheap\"",
        "spec.template.spec.requirements[1].operator: unknown operator \"Inn\"",
        "spec.template.spec.requirements[2]: operator Gt needs an integer value, got \"four\"",
        "spec.template.spec.expireAfter: \"30d\": unknown unit \"d\"",
        "6 error(s)",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
}

#[test]
fn validate_missing_file_is_a_usage_error() {
    let o = nodewright(&["validate", "no/such/file.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("no/such/file.yaml"), "{}", text(&o));
}

#[test]
fn plan_prints_a_table_for_the_example() {
    let o = plan("examples/nodepools.yaml", "examples/pods.yaml", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("claim-1"), "{out}");
    assert!(out.contains("34 pod(s): 0 on existing capacity, 34 on"), "{out}");
    assert!(out.contains("0 unschedulable"), "{out}");
    assert!(out.contains("(lower bound): at most"), "the gap line is printed: {out}");
}

#[test]
fn plan_json_follows_the_documented_schema() {
    let o = plan("examples/nodepools.yaml", "examples/pods.yaml", &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON on stdout");
    assert_eq!(doc["schemaVersion"], 1);
    assert_eq!(doc["region"], "us-east-1");
    let claims = doc["claims"].as_array().expect("claims");
    assert!(!claims.is_empty());
    for c in claims {
        for k in [
            "id",
            "pool",
            "instanceTypes",
            "capacityTypes",
            "zones",
            "pods",
            "requests",
            "price",
        ] {
            assert!(c.get(k).is_some(), "claim lacks {k}: {c}");
        }
        let first = &c["instanceTypes"][0];
        for k in ["name", "capacityType", "zone", "price"] {
            assert!(first.get(k).is_some(), "instance option lacks {k}");
        }
    }
    let total: f64 = claims.iter().map(|c| c["price"].as_f64().unwrap_or(0.0)).sum();
    assert!((doc["totalPricePerHour"].as_f64().unwrap_or(0.0) - total).abs() < 1e-9);
    assert!(doc["unschedulable"].as_array().is_some_and(|u| u.is_empty()));
    // The plan's cost against its lower bound: the bound never above the price, the gap between.
    let cost = &doc["cost"];
    let (price, bound, gap) = (
        cost["price"].as_f64().expect("cost.price"),
        cost["lowerBound"].as_f64().expect("cost.lowerBound"),
        cost["gap"].as_f64().expect("cost.gap"),
    );
    assert!((price - total).abs() < 1e-6, "{cost}");
    assert!(bound > 0.0 && bound <= price + 1e-9, "{cost}");
    assert!((gap - (price / bound - 1.0)).abs() < 1e-9, "{cost}");
}

#[test]
fn plan_reports_unschedulable_pods_with_reasons() {
    let pods = temp_file(
        "gpu16.yaml",
        "- {name: huge, requests: {cpu: 8, memory: 32Gi, nvidia.com/gpu: 16}, tolerations: [{operator: Exists}]}\n",
    );
    let o = plan("examples/nodepools.yaml", pods.to_str().unwrap_or_default(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("1 pod(s) unschedulable for 1 reason(s)"), "{out}");
    assert!(out.contains("default/huge"), "{out}");
    assert!(out.contains("no instance type offers nvidia.com/gpu >= 16"), "{out}");
    // Nothing planned: no negative zero.
    assert!(out.contains("on 0 new node(s) at $0.0000/h"), "{out}");
    let o = plan(
        "examples/nodepools.yaml",
        pods.to_str().unwrap_or_default(),
        &["--json"],
    );
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(doc["unschedulable"][0]["name"], "default/huge");
    assert!(
        doc["unschedulable"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("pool gpu: no instance type offers nvidia.com/gpu >= 16")),
        "{doc}"
    );
    assert_eq!(doc["totalPricePerHour"].to_string(), "0.0");
}

#[test]
fn plan_groups_thousands_of_unschedulable_pods_by_reason() {
    let trace = "data/workloads/openb_pod_list_default.csv";
    let o = plan("examples/nodepools.yaml", trace, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.contains("8110 pod(s) unschedulable for 5 reason(s)"), "{out}");
    // One row per reason, most pods first, not one line per pod.
    let counts: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("│ "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .filter(|&n: &u64| n > 3)
        .collect();
    assert_eq!(counts, [6989, 1046, 44, 16, 15], "{out}");
    assert!(out.lines().count() < 200, "{} lines", out.lines().count());
    // --json keeps every pod.
    let o = plan("examples/nodepools.yaml", trace, &["--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(doc["unschedulable"].as_array().map(Vec::len), Some(8110));
}

#[test]
fn bad_pod_files_give_clear_errors_without_panics() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "bad.csv",
            "name,cpu_milli,memory_mib\nweb,12x,5\n",
            "bad.csv:2: column cpu_milli: \"12x\" is not a non-negative integer",
        ),
        (
            "bad.yaml",
            "- name: a\n  requests: {cpu: \"two\"}\n",
            "invalid quantity \"two\"",
        ),
        ("trunc.yaml", "- name: a\n  requests: {cpu: 1\n", "document 0"),
        (
            "kind.yaml",
            "kind: Service\nmetadata: {name: x}\n",
            "\"Service\" is not a workload",
        ),
        ("dup.yaml", "- {name: a}\n- {name: a}\n", "appears twice"),
        (
            "port.yaml",
            "- {name: a, hostPorts: [{port: 80, protocol: tcp}]}\n",
            "hostPorts[0].protocol: \"tcp\" is not TCP, UDP or SCTP",
        ),
        (
            "port0.yaml",
            "- {name: a, hostPorts: [{port: 0}]}\n",
            "hostPorts[0].hostPort",
        ),
    ];
    for (name, body, needle) in cases {
        let p = temp_file(name, body);
        let o = plan("examples/nodepools.yaml", p.to_str().unwrap_or_default(), &[]);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o));
        assert!(text(&o).contains(needle), "{name}: missing {needle:?} in {}", text(&o));
        assert!(!text(&o).contains("panicked"), "{name}");
    }
}

/// A spot-only pool plans spot capacity in a region the Spot Instance Advisor data does not cover
/// (before, only 5 regions had spot offerings and this planned nothing, with a wrong reason).
#[test]
fn plan_offers_spot_for_a_spot_only_pool_in_eu_west_2() {
    spot_only_pool_plans_spot_in("eu-west-2");
}

/// And so in every region of the embedded catalogue, through `plan` itself.
#[test]
fn plan_offers_spot_for_a_spot_only_pool_in_every_region() {
    let regions = nodewright_core::Catalogue::embedded().regions();
    assert!(regions.len() > 20, "{regions:?}");
    for region in &regions {
        spot_only_pool_plans_spot_in(region);
    }
}

fn spot_only_pool_plans_spot_in(region: &str) {
    // A file per test thread: two tests writing one path could read it half-written.
    let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_digit(), "");
    let pools = temp_file(
        &format!("spot-only-{thread}.yaml"),
        r#"apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: spot}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [spot]}
        - {key: karpenter.k8s.aws/instance-category, operator: In, values: [c, m, r]}
"#,
    );
    let o = plan(
        pools.to_str().unwrap_or_default(),
        "examples/pods.yaml",
        &["--region", region, "--json"],
    );
    assert_eq!(o.status.code(), Some(0), "{region}: {}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let claims = doc["claims"].as_array().cloned().unwrap_or_default();
    assert!(!claims.is_empty(), "{region}: {doc}");
    for c in &claims {
        let options = c["instanceTypes"].as_array().cloned().unwrap_or_default();
        assert!(!options.is_empty(), "{region}: {c}");
        assert!(options.iter().all(|o| o["capacityType"] == "spot"), "{region}: {c}");
        assert!(
            options
                .iter()
                .all(|o| o["zone"].as_str().is_some_and(|z| z.starts_with(region))),
            "{region}: {c}"
        );
    }
    // Only the GPU pods stay pending (the pool allows c, m and r types), not for want of spot.
    let reasons: Vec<String> = doc["unschedulable"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|u| u["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        reasons.iter().all(|r| r.contains("nvidia.com/gpu")),
        "{region}: {reasons:?}"
    );
}

#[test]
fn plan_rejects_unknown_region_and_invalid_pools() {
    let o = plan("examples/nodepools.yaml", "examples/pods.yaml", &["--region", "mars-1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("unknown region \"mars-1\""));
    let o = plan("examples/broken-nodepool.yaml", "examples/pods.yaml", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("unknown operator \"Inn\""));
}

#[test]
fn plan_uses_existing_nodes() {
    let existing = temp_file(
        "nodes.yaml",
        "- {name: node-a, instanceType: m5.8xlarge, zone: us-east-1a, pool: general, pods: []}\n",
    );
    let pods = temp_file(
        "few.yaml",
        "- {name: a, requests: {cpu: 1, memory: 1Gi}}\n- {name: b, requests: {cpu: 1, memory: 1Gi}}\n",
    );
    let o = plan(
        "examples/nodepools.yaml",
        pods.to_str().unwrap_or_default(),
        &["--existing", existing.to_str().unwrap_or_default()],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("2 pod(s): 2 on existing capacity, 0 on 0 new node(s)"),
        "{}",
        text(&o)
    );
}

#[test]
fn bench_runs_and_compares_side_by_side() {
    let o = nodewright(&["bench", "--sizes", "200", "--repeat", "1", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let costs = doc["cost"].as_array().expect("cost rows");
    assert_eq!(costs.len(), 4);
    for c in costs {
        let (nw, ffd, lb) = (
            c["nodewright_cost"].as_f64().unwrap_or(f64::NAN),
            c["ffd_cost"].as_f64().unwrap_or(f64::NAN),
            c["lower_bound"].as_f64().unwrap_or(f64::NAN),
        );
        assert!(
            lb <= nw + 1e-9 && lb <= ffd + 1e-9,
            "the bound is below both packings: {c}"
        );
        assert!(nw > 0.0 && ffd > 0.0);
    }
    assert_eq!(doc["throughput"].as_array().map(Vec::len), Some(2));
}

#[test]
fn invoke_with_a_state_directory_carries_claims_and_replays_across_runs() {
    let dir = std::env::temp_dir().join(format!("nodewright-invoke-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.to_str().expect("utf-8 temp dir");
    let invoke = |event: &str| nodewright(&["invoke", "pod-pending", "--event", event, "--json", "--state", state]);

    let first = invoke("events/pod-pending.json");
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let outcome: serde_json::Value = serde_json::from_slice(&first.stdout).expect("json outcome");
    let launched: Vec<&serde_json::Value> = outcome["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["action"] == "launched")
        .collect();
    assert!(!launched.is_empty(), "{outcome}");

    // The same event again, in a new process: recognised from the saved state, nothing launched.
    let again = invoke("events/pod-pending.json");
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let outcome: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json outcome");
    let actions = outcome["actions"].as_array().expect("actions");
    assert!(actions.iter().all(|a| a["action"] != "launched"), "{outcome}");
    assert!(actions.iter().any(|a| a["action"] == "replayed"), "{outcome}");

    // `avail` reads the same directory: the launched claims, on their way.
    let avail = nodewright(&["avail", "--json", "--state", state]);
    assert_eq!(avail.status.code(), Some(0), "{}", text(&avail));
    let doc: serde_json::Value = serde_json::from_slice(&avail.stdout).expect("avail json");
    let launching: u64 = doc["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .map(|p| p["launching"].as_u64().expect("count"))
        .sum();
    assert_eq!(launching, launched.len() as u64);

    // A state directory of another cluster is refused, naming both.
    let other = nodewright(&[
        "invoke",
        "pod-pending",
        "--event",
        "events/pod-pending.json",
        "--cluster",
        "other",
        "--state",
        state,
    ]);
    assert_eq!(other.status.code(), Some(2));
    assert!(text(&other).contains("not --cluster \"other\""), "{}", text(&other));
}

#[test]
fn invoke_takes_an_sqs_batch_record_by_record() {
    let out = nodewright(&[
        "invoke",
        "pod-pending",
        "--event",
        "events/pod-pending-sqs.json",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one report for the batch");
    let records = doc["records"].as_array().expect("records");
    assert_eq!(records.len(), 1, "{doc}");
    assert_eq!(records[0]["messageId"], "9f8e7d6c-5b4a-3928-1716-050403020100");
    assert_eq!(records[0]["result"], "handled");
    assert!(
        records[0]["outcome"]["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .any(|a| a["action"] == "launched"),
        "{doc}"
    );
    assert_eq!(doc["batchItemFailures"], serde_json::json!([]));

    // A record the function cannot parse is dropped (not retried), the others handled.
    let sample: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(root().join("events/pod-pending-sqs.json")).expect("sample"))
            .expect("json");
    let mut bad = sample["Records"][0].clone();
    bad["messageId"] = "broken-1".into();
    bad["body"] = "{\"detail-type\": \"Pod Pending\"".into();
    let mut batch = sample.clone();
    batch["Records"].as_array_mut().expect("records").push(bad);
    let file = temp_file("sqs-two.json", &batch.to_string());
    let path = file.to_str().expect("utf-8");
    let out = nodewright(&["invoke", "pod-pending", "--event", path, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let results: Vec<&str> = doc["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["result"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(results, ["handled", "dropped"], "{doc}");
    assert!(
        doc["records"][1]["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{doc}"
    );
    assert_eq!(doc["batchItemFailures"], serde_json::json!([]));

    // The text: per record, readable details, the batch response last.
    let out = nodewright(&["invoke", "pod-pending", "--event", path]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        said.contains("record 9f8e7d6c-5b4a-3928-1716-050403020100: pod-pending handled event"),
        "{said}"
    );
    assert!(said.contains("record broken-1: dropped"), "{said}");
    assert!(said.contains("instanceId=i-"), "{said}");
    assert!(!said.contains("{\""), "no JSON in the details: {said}");
    assert!(said.trim_end().ends_with("batchItemFailures: none"), "{said}");
}

#[test]
fn restamp_moves_a_sample_to_the_present() {
    let out = nodewright(&["restamp", "events/pod-pending.json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let event: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let sent = event["detail"]["sentAt"].as_i64().expect("sentAt");
    assert!((now - sent).abs() < 60_000, "sentAt {sent} vs now {now}");
    let created = event["detail"]["pods"][0]["createdAt"].as_i64().expect("createdAt");
    assert_eq!(sent - created, 10_000, "spacing kept");
    let bad = nodewright(&["restamp", "Cargo.toml"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(text(&bad).contains("not JSON"), "{}", text(&bad));
}

/// The binary with AWS settings that reach nothing: dummy or no credentials, no profile, no
/// instance metadata, one attempt.
#[cfg(feature = "aws")]
fn offline_aws(args: &[&str], credentials: bool) -> Output {
    let home = std::env::temp_dir().join(format!("nodewright-cli-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).expect("temp home");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nodewright"));
    cmd.args(args)
        .current_dir(root())
        .env("HOME", &home)
        .env("AWS_CONFIG_FILE", home.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("no-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env_remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .env_remove("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        .env_remove("NODEWRIGHT_TABLE_PREFIX");
    if credentials {
        cmd.env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
    } else {
        cmd.env_remove("AWS_ACCESS_KEY_ID").env_remove("AWS_SECRET_ACCESS_KEY");
    }
    cmd.output().expect("run nodewright")
}

#[cfg(feature = "aws")]
fn unreachable_endpoint() -> String {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("http://127.0.0.1:{port}")
}

#[cfg(feature = "aws")]
#[test]
fn aws_errors_show_the_cause_and_one_hint_not_the_sdk_debug_dump() {
    let endpoint = unreachable_endpoint();
    let args = ["create-tables", "--region", "us-east-1", "--endpoint-url", &endpoint];
    let out = offline_aws(&args, true);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    for dump in ["DispatchFailure(", "ConnectorError", "ConnectError(", "Os {", "kind: "] {
        assert!(!stderr.contains(dump), "SDK Debug dump ({dump}) in:\n{stderr}");
    }
    assert!(
        stderr.starts_with(&format!(
            "error: cannot create the tables at {endpoint}: ListTables failed: "
        )),
        "{stderr}"
    );
    // The cause, level by level, as the SDK and the OS say it.
    assert!(stderr.contains("dispatch failure: io error"), "{stderr}");
    assert!(stderr.contains("tcp connect error"), "{stderr}");
    let hints: Vec<&str> = stderr.lines().filter(|l| l.starts_with("hint: ")).collect();
    assert_eq!(
        hints,
        ["hint: is the endpoint reachable? check --endpoint-url / AWS_ENDPOINT_URL, --region and the network"],
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 2, "{stderr}");

    // No credentials anywhere: said so, with what to set.
    let out = offline_aws(&args, false);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(!stderr.contains("DispatchFailure("), "{stderr}");
    assert!(stderr.contains("no credentials found in chain"), "{stderr}");
    assert!(
        stderr.contains("hint: no AWS credentials found: set AWS_PROFILE"),
        "{stderr}"
    );

    // avail's read fails the same readable way (its own hint is avail's).
    let out = offline_aws(
        &[
            "avail",
            "--cluster",
            "x",
            "--region",
            "us-east-1",
            "--endpoint-url",
            &endpoint,
        ],
        true,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(!stderr.contains("DispatchFailure("), "{stderr}");
    assert!(stderr.contains("tcp connect error"), "{stderr}");
}

#[test]
fn every_table_fits_80_and_100_columns() {
    use unicode_width::UnicodeWidthStr;
    let commands: &[&[&str]] = &[
        &[
            "plan",
            "--nodepool",
            "examples/nodepools.yaml",
            "--pods",
            "examples/pods.yaml",
        ],
        &[
            "plan",
            "--nodepool",
            "examples/nodepools.yaml",
            "--pods",
            "data/workloads/openb_pod_list_default.csv",
        ],
        &["invoke", "pod-pending", "--event", "events/pod-pending.json"],
        &["invoke", "pod-pending", "--event", "events/pod-pending-sqs.json"],
        &[
            "invoke",
            "spot-interruption",
            "--event",
            "events/spot-interruption.json",
        ],
        &["bench-handler", "--sizes", "10,100", "--runs", "1"],
        &["chaos", "--seeds", "1", "--steps", "5"],
        &["bench-disruption", "--nodes", "100,500", "--repeat", "1"],
        &["bench", "--sizes", "200", "--repeat", "1"],
    ];
    for args in commands {
        for width in [80, 100] {
            let o = nodewright_at(width, args);
            let out = String::from_utf8_lossy(&o.stdout).to_string();
            assert!(o.status.code().is_some_and(|c| c <= 1), "{args:?}: {}", text(&o));
            assert!(out.contains('┌'), "{args:?} printed a table:\n{out}");
            // The tables' lines (plain lines are left to the terminal to wrap).
            for line in out.lines().filter(|l| l.starts_with(['┌', '│', '╞', '├', '└'])) {
                assert!(
                    line.width() <= usize::from(width),
                    "{args:?} at {width}: a line of {} columns:\n{line}\n\n{out}",
                    line.width()
                );
            }
        }
    }
}

#[test]
fn invoke_on_a_simulator_state_runs_at_the_state_s_time() {
    let dir = std::env::temp_dir().join(format!("nodewright-invoke-sim-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let state = dir.join("state");
    let state = state.to_str().expect("utf-8");
    let plot = dir.join("plot.svg");
    // 30 s into DataMigrate's second daily scale-up: claims launched, not registered yet.
    let sim = nodewright(&[
        "simulate",
        "--until",
        "33h0m30s",
        "--state-out",
        state,
        "--plot",
        plot.to_str().expect("utf-8"),
    ]);
    assert_eq!(sim.status.code(), Some(0), "{}", text(&sim));
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state/state.json")).expect("state")).expect("json");
    let at = saved["at"].as_i64().expect("at");
    let claims = saved["claims"].as_array().map_or(0, Vec::len);
    let in_flight = saved["claims"]
        .as_array()
        .expect("claims")
        .iter()
        .filter(|c| c["state"] == "launched")
        .count();
    assert!(in_flight > 0, "{saved}");

    let copy = |name: &str| {
        let to = dir.join(name);
        std::fs::create_dir_all(&to).expect("dir");
        std::fs::copy(dir.join("state/state.json"), to.join("state.json")).expect("copy");
        to.to_str().expect("utf-8").to_string()
    };
    let consolidate = |state: &str, extra: &[&str]| {
        let mut args = vec![
            "invoke",
            "consolidation",
            "--event",
            "events/scheduled.json",
            "--cluster",
            "sim",
            "--nodepool",
            "examples/sim/nodepools.yaml",
            "--state",
            state,
            "--json",
        ];
        args.extend_from_slice(extra);
        let o = nodewright(&args);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let doc: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        doc["actions"]
            .as_array()
            .expect("actions")
            .iter()
            .filter(|a| a["action"] == "terminated")
            .count()
    };

    // At the state's time (the default) the claims are 30 s old: none terminated, and the state is
    // saved at that time again.
    let here = copy("at-state");
    assert_eq!(consolidate(&here, &[]), 0);
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("at-state/state.json")).expect("state")).expect("json");
    assert_eq!(after["at"].as_i64(), Some(at));
    assert_eq!(after["claims"].as_array().map_or(0, Vec::len), claims);

    // Told to run at the event's own time (weeks later), every launched claim is past its
    // registration timeout (the Ready ones stay).
    let there = copy("at-event");
    assert_eq!(consolidate(&there, &["--now", "event"]), in_flight);

    // An explicit time 20 minutes on: past the 15-minute registration timeout too.
    let later = nodewright_core::time::format_rfc3339(at + 20 * 60_000);
    let then = copy("later");
    assert_eq!(consolidate(&then, &["--now", &later]), in_flight);

    let bad = nodewright(&[
        "invoke",
        "consolidation",
        "--event",
        "events/scheduled.json",
        "--now",
        "soon",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(text(&bad).contains("--now: \"soon\" is not"), "{}", text(&bad));
}

#[test]
fn a_node_class_in_another_file_of_the_call_is_no_warning() {
    let pools = temp_file(
        "split-pools.yaml",
        "apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: general}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.k8s.aws/instance-family, operator: In, values: [m5]}
",
    );
    let classes = temp_file(
        "split-classes.yaml",
        "apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  amiSelectorTerms: [{alias: al2023@latest}]
  role: NodeRole
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: demo}}]
",
    );
    let (pools, classes) = (pools.to_str().expect("utf-8"), classes.to_str().expect("utf-8"));
    let pods = temp_file("split-pods.yaml", "- {name: a, requests: {cpu: 1, memory: 1Gi}}\n");
    let pods = pods.to_str().expect("utf-8");

    // Alone, the pool's file warns (the class must exist at deploy time).
    let o = nodewright(&["validate", pools]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("nodeClassRef \"default\" is not defined"),
        "{}",
        text(&o)
    );
    // Given with the class's file: no warning, from validate or plan.
    let o = nodewright(&["validate", pools, classes]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains("warning"), "{}", text(&o));
    assert!(text(&o).contains("ok: 1 pool(s), 1 node class(es)"), "{}", text(&o));
    let o = nodewright(&["plan", "--nodepool", pools, "--nodepool", classes, "--pods", pods]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!text(&o).contains("warning"), "{}", text(&o));
    let o = nodewright(&["plan", "--nodepool", pools, "--pods", pods]);
    assert!(text(&o).contains("warning: "), "{}", text(&o));
}

#[test]
fn default_files_are_found_outside_the_repository_or_named_with_their_flag() {
    let elsewhere = std::env::temp_dir();
    let event = root().join("events/pod-pending.json");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_nodewright"))
            .args(args)
            .current_dir(&elsewhere)
            .output()
            .expect("run nodewright")
    };
    // The default --nodepool (examples/nodepools.yaml) is the repository's.
    let o = run(&[
        "invoke",
        "pod-pending",
        "--event",
        event.to_str().expect("utf-8"),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run(&["bench-handler", "--sizes", "10", "--runs", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A file the user names is theirs: not looked up elsewhere.
    let o = run(&[
        "invoke",
        "pod-pending",
        "--event",
        event.to_str().expect("utf-8"),
        "--nodepool",
        "examples/none.yaml",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("examples/none.yaml: No such file"), "{}", text(&o));
}

/// `bench-scale` runs every function on a built cluster and reports what each read: the
/// interruption lists its node's pods only, the planners read the live claims, consolidation lists
/// every bound pod; DynamoDB units are counted.
#[test]
fn bench_scale_reports_reads_that_follow_the_work() {
    use serde_json::Value;
    let out = nodewright(&["bench-scale", "--nodes", "30,60", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    let rows = doc["invocations"].as_array().expect("rows");
    assert_eq!(rows.len(), 14, "seven invocations per size");
    // The month's bill per size, from these invocations: more nodes cost more; Karpenter's
    // controllers are the same at every size.
    let costs = doc["monthlyCost"].as_array().expect("costs");
    assert_eq!(costs.len(), 2);
    let total = |i: usize| costs[i]["totalUsd"].as_f64().unwrap();
    assert!(total(0) > 0.0 && total(1) > total(0), "{costs:?}");
    assert_eq!(costs[0]["karpenterEc2Usd"], costs[1]["karpenterEc2Usd"]);
    let row = |nodes: u64, prefix: &str| -> &Value {
        rows.iter()
            .find(|r| r["nodes"] == nodes && r["function"].as_str().unwrap_or("").starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} at {nodes}"))
    };
    for nodes in [30u64, 60] {
        let pods = row(nodes, "consolidation (first")
            .get("pods")
            .and_then(Value::as_u64)
            .unwrap();
        // 20 pods a node, a quarter of that on every tenth.
        assert_eq!(pods, nodes * 20 - nodes / 10 * 15);
        // Consolidation plans from every bound pod and node (nodes listed twice: reconcile and
        // plan); beyond that it reads only the pods of the nodes it disrupts (re-validation).
        let consolidation = row(nodes, "consolidation (first");
        let listed = consolidation["kubeObjects"].as_u64().unwrap();
        assert!(listed >= pods + 2 * nodes && listed < 2 * pods + 2 * nodes, "{listed}");
        assert!(
            consolidation["writeUnits"].as_f64().unwrap() >= nodes as f64,
            "a digest per node"
        );
        // The interruption reads its own node (by the name its claim recorded) and that node's 20
        // pods, nothing else: the same at 30 nodes as at 60.
        let interruption = row(nodes, "spot-interruption");
        assert_eq!(interruption["kubeObjects"].as_u64(), Some(20));
        assert_eq!(interruption["calls"]["ClusterApi.node_named"].as_u64(), Some(1));
        assert!(
            interruption["calls"].get("ClusterApi.nodes").is_none(),
            "{interruption}"
        );
        assert!(interruption["readUnits"].as_f64().unwrap() > 0.0);
        for r in rows.iter().filter(|r| r["nodes"] == nodes) {
            assert!(r["wallMs"].as_f64().unwrap() >= r["computeMs"].as_f64().unwrap());
            assert!(r["dynamodbRequests"].as_u64().unwrap() > 0, "{r}");
        }
    }
    // A pod-pending batch reads the claims in flight, not every live claim: twice the nodes, the
    // same read.
    let (small, large) = (
        row(30, "pod-pending")["readUnits"].as_f64().unwrap(),
        row(60, "pod-pending")["readUnits"].as_f64().unwrap(),
    );
    assert!(small > 0.0);
    assert_eq!(large, small);
    // It launches, and says how long it took to decide.
    assert!(row(60, "pod-pending")["toLaunchMs"].as_f64().unwrap() > 0.0);
    // Handed off, the same batch puts its launches on the bus and calls EC2 not at all; one of
    // those launches is state-change's, with its CreateFleet.
    let handed = row(60, "pod-pending (100 pods, launches handed off)");
    assert!(handed["launchesRequested"].as_u64().unwrap() >= 1, "{handed}");
    assert_eq!(handed["ec2Calls"].as_u64(), Some(0), "{handed}");
    assert_eq!(
        handed["calls"]["Capacity.hand_off_launches"],
        handed["launchesRequested"]
    );
    let launch = row(60, "state-change (1 claim launch");
    assert_eq!(launch["calls"]["Capacity.launch"].as_u64(), Some(1), "{launch}");
}
