//! `nodewright avail` as a user runs it: the real binary reading DynamoDB state in moto that the
//! real adapters wrote (or a simulator state file), checked row by row, against the published JSON
//! schema, for the empty and unreachable cases, and under a pseudo-terminal for `--watch`.
#![allow(clippy::unwrap_used)]

#[path = "../../shared/aws/tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nodewright_aws::now_millis;
use nodewright_aws::state::{ClaimRecord, ClaimUpdate, Holder, StateStore, TableNames, UsageDelta, create_tables};
use nodewright_core::catalogue::OverheadConfig;
use nodewright_core::model::ClaimState;
use nodewright_core::nodepool::Limits;
use nodewright_core::{CapacityType, Catalogue, InstanceType, Resource, Resources};
use serde_json::Value;

const POOLS: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: general}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.k8s.aws/instance-family, operator: In, values: [m5]}
  limits: {cpu: "32"}
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: gpu}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.k8s.aws/instance-family, operator: In, values: [g5]}
      taints: [{key: nvidia.com/gpu, effect: NoSchedule}]
  limits: {cpu: "64", nvidia.com/gpu: "1"}
---
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  amiSelectorTerms: [{alias: al2023@latest}]
  role: NodeRole
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: test}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: test}}]
"#;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nodewright")
}

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(support::unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn catalogue_type(name: &str) -> InstanceType {
    Catalogue::embedded()
        .instance_types("us-east-1", &OverheadConfig::default())
        .into_iter()
        .find(|t| t.name == name)
        .unwrap()
}

/// Tables under a fresh prefix, and a store for one cluster on them.
struct Fixture {
    prefix: String,
    cluster: String,
    store: StateStore,
    nodepools: PathBuf,
}

impl Fixture {
    async fn new(test: &str) -> Fixture {
        let clients = support::clients().await;
        let prefix = support::unique(test);
        let names = TableNames::new(&prefix).unwrap();
        create_tables(&clients.dynamodb, &names).await.unwrap();
        let cluster = format!("cluster-{prefix}");
        let store = StateStore::new(clients.dynamodb.clone(), names, cluster.clone()).unwrap();
        let nodepools = tmp_dir(test).join("nodepools.yaml");
        std::fs::write(&nodepools, POOLS).unwrap();
        Fixture {
            prefix,
            cluster,
            store,
            nodepools,
        }
    }

    /// A claim the way the handlers write one: decided at `decided`, launched 10 s later, Ready
    /// 60 s after that when `ready`; usage taken under the pool's limits; `pods` reserved onto it.
    #[allow(clippy::too_many_arguments)]
    async fn claim(
        &self,
        id: &str,
        pool: &str,
        type_name: &str,
        decided: i64,
        ready: bool,
        requested_cpu: u64,
        pods: u32,
    ) {
        let t = catalogue_type(type_name);
        let mut record = ClaimRecord::launching(id, pool, Vec::new(), decided);
        record.requested = Some(
            Resources::new()
                .with(Resource::Cpu, requested_cpu)
                .with(Resource::Memory, 1 << 30),
        );
        assert!(self.store.create_claim(&record).await.unwrap());
        let granted = self
            .store
            .try_add_usage(pool, &UsageDelta::of(&t.capacity, 1), &Limits::default())
            .await
            .unwrap();
        assert_eq!(granted, nodewright_aws::state::UsageDecision::Granted);
        let update = ClaimUpdate {
            instance_id: Some(format!("i-{id}")),
            instance_type: Some(type_name.into()),
            capacity_type: Some(CapacityType::Spot),
            zone: Some("us-east-1a".into()),
            price_per_hour: Some(0.25),
            allocatable: Some(t.allocatable.clone()),
        };
        self.store
            .transition_claim(id, ClaimState::Launched, decided + 10_000, &update)
            .await
            .unwrap();
        if ready {
            self.store
                .transition_claim(id, ClaimState::Ready, decided + 70_000, &ClaimUpdate::default())
                .await
                .unwrap();
            self.store.mark_usage_running(pool, 1).await.unwrap();
        }
        for p in 0..pods {
            let uid = format!("{id}-pod-{p}");
            let holder = Holder::Claim(id.into());
            assert!(self.store.reserve_pod(&uid, &holder, decided, 1200).await.unwrap());
        }
    }

    /// The populated cluster the table and JSON tests read.
    async fn populated(test: &str) -> Fixture {
        let f = Fixture::new(test).await;
        let now = now_millis();
        // general: two m5.large Ready (one with room, one full), one launching for 3 waiting pods.
        f.claim("gen-a", "general", "m5.large", now - 600_000, true, 200, 0)
            .await;
        f.claim("gen-b", "general", "m5.large", now - 600_000, true, 1_900, 0)
            .await;
        f.claim("gen-c", "general", "m5.large", now - 20_000, false, 1_500, 3)
            .await;
        // gpu: one g5.xlarge Ready and full; the GPU limit (1) is reached.
        f.claim("gpu-a", "gpu", "g5.xlarge", now - 900_000, true, 3_800, 0)
            .await;
        f.store
            .mark_offering_unavailable(
                CapacityType::Spot,
                "g5.xlarge",
                "us-east-1b",
                "InsufficientInstanceCapacity",
                now,
            )
            .await
            .unwrap();
        f
    }

    fn avail(&self, extra: &[&str]) -> Output {
        let mut cmd = self.command(extra);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.output().unwrap()
    }

    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("avail")
            .args(["--cluster", &self.cluster, "--table-prefix", &self.prefix])
            .args(["--region", "us-east-1", "--endpoint-url", &support::moto_endpoint()])
            .arg("--nodepool")
            .arg(&self.nodepools)
            .args(extra);
        aws_env(&mut cmd);
        cmd
    }
}

fn aws_env(cmd: &mut Command) {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("NODEWRIGHT_CLUSTER_NAME")
        .env_remove("NODEWRIGHT_TABLE_PREFIX")
        .env_remove("NODEWRIGHT_NODEPOOLS_FILE")
        .env_remove("NO_COLOR");
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The table row of `pool` x `type_name`, as its cells.
fn row(out: &str, pool: &str, type_label: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split(['│', '┆']).map(|c| c.trim().to_string()).collect::<Vec<_>>())
        .find(|cells| cells.len() > 3 && cells[1] == pool && cells[2] == type_label)
        .unwrap_or_else(|| panic!("no row {pool} / {type_label} in:\n{out}"))
}

#[tokio::test]
async fn table_shows_counts_limits_pending_pods_and_measured_waits() {
    let f = Fixture::populated("avail-table").await;
    let out = f.avail(&[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(!stdout.contains("\x1b["), "no colours when piped:\n{stdout}");
    // Pool, type, Ready, Launching, Total / Max, Pending pods, Est. wait, Spot %, $/h now.
    // GPU pool: 1 GPU of a 1-GPU limit used: at limit.
    assert_eq!(
        row(&stdout, "gpu", "g5.xlarge (1 GPU)")[3..],
        ["1", "0", "1 / 1", "0", "at limit", "100%", "$0.25", ""]
    );
    // general: 3 m5.large (2 vCPU each) of 32 vCPU: 13 more fit. Pods wait on the launch, which
    // started 20 s ago of a measured 70 s (10 s launch + 60 s registration).
    assert_eq!(
        row(&stdout, "general", "m5.large")[3..],
        ["2", "1", "3 / 16", "3", "~1min (scaling up)", "100%", "$0.75", ""]
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let gpu_line = lines.iter().position(|l| l.contains("g5.xlarge")).unwrap();
    let general_line = lines.iter().position(|l| l.contains("m5.large")).unwrap();
    assert!(general_line < gpu_line, "pools are sorted by name:\n{stdout}");
    assert!(stdout.starts_with(&format!("Cluster {} at ", f.cluster)), "{stdout}");
    assert!(stdout.contains("4 nodes, $1.00/h"), "{stdout}");
    assert!(stdout.contains("read 10 DynamoDB requests"), "{stdout}");
}

#[tokio::test]
async fn json_matches_the_published_schema_and_the_table() {
    let f = Fixture::populated("avail-json").await;
    let out = f.avail(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();

    // Validate with a real JSON Schema validator (jsonschema, pinned in scripts/requirements-test.txt).
    let root = support::workspace_root();
    let json_file = tmp_dir("avail-json").join("avail.json");
    std::fs::write(&json_file, &out.stdout).unwrap();
    let check = Command::new(root.join(".venv/bin/python"))
        .arg("-c")
        .arg(
            "import json,sys,jsonschema; \
             jsonschema.validate(json.load(open(sys.argv[2])), json.load(open(sys.argv[1]))); print('valid')",
        )
        .arg(root.join("docs/schemas/avail.schema.json"))
        .arg(&json_file)
        .output()
        .unwrap();
    assert_eq!(text(&check.stdout).trim(), "valid", "{}", text(&check.stderr));

    assert_eq!(doc["schema"], "nodewright-avail/v1");
    assert_eq!(doc["cluster"], f.cluster.as_str());
    let pools = doc["pools"].as_array().unwrap();
    let names: Vec<&str> = pools.iter().map(|p| p["pool"].as_str().unwrap()).collect();
    assert_eq!(names, ["general", "gpu"]);
    let m5 = &pools[0]["types"][0];
    assert_eq!(m5["instanceType"], "m5.large");
    assert_eq!((m5["current"].as_u64(), m5["max"].as_u64()), (Some(3), Some(16)));
    assert_eq!(m5["wait"]["kind"], "scalingUp");
    let left = m5["wait"]["seconds"].as_f64().unwrap();
    assert!((20.0..=50.0).contains(&left), "70 s expected, 20 s elapsed: {left}");
    assert_eq!(m5["latency"]["scope"], "type");
    assert_eq!(m5["latency"]["launchSeconds"], 10.0);
    assert_eq!(m5["latency"]["registrationSeconds"], 60.0);
    assert_eq!(m5["latency"]["samples"], 2);
    let g5 = &pools[1]["types"][0];
    assert_eq!(g5["gpusPerNode"], 1);
    assert_eq!(g5["wait"]["kind"], "atLimit");
    assert_eq!(g5["unavailableOfferings"], serde_json::json!(["spot/us-east-1b"]));
    assert_eq!(pools[1]["usage"]["gpus"], 1);
    // The reads: seven claim states on the by-state index, reservations, usage, offerings.
    assert_eq!(doc["reads"]["requests"], 10);
}

#[tokio::test]
async fn empty_state_says_so_with_its_exit_code() {
    let f = Fixture::new("avail-empty").await;
    let mut cmd = Command::new(bin());
    cmd.arg("avail")
        .args(["--cluster", &f.cluster, "--table-prefix", &f.prefix])
        .args(["--region", "us-east-1", "--endpoint-url", &support::moto_endpoint()]);
    aws_env(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(5), "exit::EMPTY");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("no Nodewright state for cluster \"{}\"", f.cluster)),
        "{stderr}"
    );
    assert!(stderr.contains("--table-prefix"), "{stderr}");
    assert!(out.stdout.is_empty());

    // With the NodePools, the idle pools are shown (what a first launch would pick and allow).
    let out = f.avail(&[]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let general = row(&stdout, "general", "m5.large");
    assert_eq!(general[3..8], ["0", "0", "0 / 16", "0", "~1min (new node)"]);
    assert!(stdout.contains("no node has become Ready yet"), "{stdout}");
}

#[tokio::test]
async fn unreachable_endpoint_and_missing_tables_are_clear_errors() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(bin());
    cmd.args(["avail", "--cluster", "prod", "--region", "us-east-1"])
        .args(["--endpoint-url", &format!("http://127.0.0.1:{port}")]);
    aws_env(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(4), "exit::UNREACHABLE");
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: cannot read Nodewright state from DynamoDB at http://127.0.0.1:{port}"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("hint: is the endpoint reachable"), "{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    assert!(stderr.lines().count() <= 3, "short, not an SDK dump:\n{stderr}");

    // Reachable, but no such tables.
    let mut cmd = Command::new(bin());
    cmd.args([
        "avail",
        "--cluster",
        "prod",
        "--region",
        "us-east-1",
        "--table-prefix",
        "nosuch",
    ])
    .args(["--endpoint-url", &support::moto_endpoint()]);
    aws_env(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("the table nosuch-claims does not exist"), "{stderr}");

    // No cluster: a usage error naming the flag.
    let mut cmd = Command::new(bin());
    cmd.args(["avail", "--region", "us-east-1"]);
    aws_env(&mut cmd);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--cluster is required"));
}

#[tokio::test]
async fn watch_redraws_in_place_on_a_terminal_and_shows_changes() {
    let f = Fixture::new("avail-watch").await;
    let now = now_millis();
    f.claim("w-a", "general", "m5.large", now - 600_000, true, 1_900, 0)
        .await;
    let mut cmd = Command::new(support::workspace_root().join(".venv/bin/python"));
    cmd.arg(support::workspace_root().join("scripts/pty-capture.py"))
        .arg("8")
        .arg(bin())
        .args(f.command(&["--watch", "1"]).get_args());
    aws_env(&mut cmd);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Let a few frames show the first state, then launch a second node.
    tokio::time::sleep(Duration::from_secs(4)).await;
    f.claim("w-b", "general", "m5.large", now_millis(), false, 1_000, 2)
        .await;
    let out = child.wait_with_output().unwrap();
    let screen = text(&out.stdout);

    let frames: Vec<&str> = screen.split("\x1b[H\x1b[2J").skip(1).collect();
    assert!(
        frames.len() >= 4,
        "a frame per second for 8 s, got {}:\n{screen}",
        frames.len()
    );
    assert!(frames.iter().all(|f| f.contains("refreshing every 1 s")), "{screen}");
    let first = frames.first().unwrap();
    let last = frames.last().unwrap();
    assert!(first.contains("1 / 16"), "first frame: {first}");
    assert!(last.contains("2 / 16"), "last frame after the launch: {last}");
    // Colours on a terminal: the crossterm SGR sequence for the wait column.
    assert!(screen.contains("\x1b[38;5;"), "coloured on a terminal:\n{screen}");
}

#[test]
fn state_directory_from_the_simulator_is_read_the_same_way() {
    let root = support::workspace_root();
    let dir = tmp_dir("avail-sim");
    // DataMigrate 30 s after the daily scale-up to 10 workers: 8 nodes launching for 8 pods.
    let out = Command::new(bin())
        .current_dir(&root)
        .args(["simulate", "--until", "33h0m30s", "--no-interruptions", "--state-out"])
        .arg(&dir)
        .arg("--plot")
        .arg(dir.join("plot.svg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nodewright avail --state"));
    let out = Command::new(bin())
        .current_dir(&root)
        .args([
            "avail",
            "--json",
            "--nodepool",
            "examples/sim/nodepools.yaml",
            "--state",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["at"], "2026-11-03T09:00:30Z");
    assert_eq!(doc["reads"], Value::Null);
    let pool = &doc["pools"][0];
    assert_eq!(pool["pool"], "default");
    assert_eq!(
        (pool["current"].as_u64(), pool["launching"].as_u64()),
        (Some(10), Some(8))
    );
    assert_eq!(pool["pendingPods"], 8);
    let row = &pool["types"][0];
    assert_eq!(row["wait"]["kind"], "scalingUp");
    // The simulator's 45 s launch + 35 s registration, measured back from the claims.
    let latency =
        row["latency"]["launchSeconds"].as_f64().unwrap() + row["latency"]["registrationSeconds"].as_f64().unwrap();
    assert_eq!(latency, 80.0, "{row}");

    // A broken state file is a usage error naming the file.
    std::fs::write(dir.join("state.json"), "{\"format\": \"other\"}").unwrap();
    let out = Command::new(bin())
        .args(["avail", "--state"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("state.json"), "{}", text(&out.stderr));
}
