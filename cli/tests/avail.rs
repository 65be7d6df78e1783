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

/// What the pods planned onto a claim request: `cpu` millicores, 1 GiB, `gpus` NVIDIA GPUs.
fn req(cpu: u64, gpus: u64) -> Resources {
    Resources::new()
        .with(Resource::Cpu, cpu)
        .with(Resource::Memory, 1 << 30)
        .with(Resource::NvidiaGpu, gpus)
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
        requested: Resources,
        pods: u32,
    ) {
        let t = catalogue_type(type_name);
        let mut record = ClaimRecord::launching(id, pool, Vec::new(), decided);
        record.requested = Some(requested);
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
            node_name: None,
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
        f.claim("gen-a", "general", "m5.large", now - 600_000, true, req(200, 0), 0)
            .await;
        f.claim("gen-b", "general", "m5.large", now - 600_000, true, req(1_900, 0), 0)
            .await;
        f.claim("gen-c", "general", "m5.large", now - 20_000, false, req(1_500, 0), 3)
            .await;
        // gpu: one g5.xlarge Ready, its GPU requested; the GPU limit (1) is reached.
        f.claim("gpu-a", "gpu", "g5.xlarge", now - 900_000, true, req(3_800, 1), 0)
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
        .env_remove("NO_COLOR")
        // Wide enough for one line per row (piped tables are fitted to COLUMNS, else 100).
        .env("COLUMNS", "250");
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

/// The GPU summary's row of `model`, as its cells.
fn summary_row(out: &str, model: &str) -> Vec<String> {
    out.lines()
        .map(|l| l.split(['│', '┆']).map(|c| c.trim().to_string()).collect::<Vec<_>>())
        .find(|cells| cells.len() == 6 && cells[1] == model)
        .map(|cells| cells[1..5].to_vec())
        .unwrap_or_else(|| panic!("no GPU summary row {model} in:\n{out}"))
}

/// Validates `json` against docs/schemas/avail.schema.json with a real JSON Schema validator
/// (jsonschema, pinned in scripts/requirements-test.txt).
fn assert_schema_valid(json: &[u8], test: &str) {
    let root = support::workspace_root();
    let json_file = tmp_dir(test).join("avail.json");
    std::fs::write(&json_file, json).unwrap();
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
}

#[tokio::test]
async fn table_shows_counts_limits_pending_pods_and_measured_waits() {
    let f = Fixture::populated("avail-table").await;
    let out = f.avail(&[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(!stdout.contains("\x1b["), "no colours when piped:\n{stdout}");
    // Pool, type, Ready, Launching, Total / Max, Free GPUs, Pending pods, Est. wait, Spot %, $/h now.
    // GPU pool: 1 GPU of a 1-GPU limit used, and requested: at limit, none free.
    assert_eq!(
        row(&stdout, "gpu", "g5.xlarge (1 GPU)")[3..],
        ["1", "0", "1 / 1", "0", "0", "at limit", "100%", "$0.25", ""]
    );
    // general: 3 m5.large (2 vCPU each) of 32 vCPU: 13 more fit. Pods wait on the launch, which
    // started 20 s ago of a measured 70 s (10 s launch + 60 s registration).
    assert_eq!(
        row(&stdout, "general", "m5.large")[3..],
        ["2", "1", "3 / 16", "-", "3", "~1min (scaling up)", "100%", "$0.75", ""]
    );
    // The GPU summary, above the table: A10G, none free, 1 on nodes, the limit allows 1.
    assert_eq!(summary_row(&stdout, "A10G"), ["A10G", "0", "1", "1"]);
    assert!(stdout.find("GPU model") < stdout.find("Instance type"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let gpu_line = lines.iter().position(|l| l.contains("g5.xlarge")).unwrap();
    let general_line = lines.iter().position(|l| l.contains("m5.large")).unwrap();
    assert!(general_line < gpu_line, "pools are sorted by name:\n{stdout}");
    assert!(stdout.starts_with(&format!("Cluster {} at ", f.cluster)), "{stdout}");
    assert!(stdout.contains("4 nodes, $1.00/h"), "{stdout}");
    assert!(stdout.contains("read 25 DynamoDB requests"), "{stdout}");
}

#[tokio::test]
async fn json_matches_the_published_schema_and_the_table() {
    let f = Fixture::populated("avail-json").await;
    let out = f.avail(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();

    assert_schema_valid(&out.stdout, "avail-json");

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
    assert_eq!(m5["freeGpus"], Value::Null);
    assert_eq!(m5["gpuModel"], Value::Null);
    let g5 = &pools[1]["types"][0];
    assert_eq!(g5["gpusPerNode"], 1);
    assert_eq!(g5["gpuModel"], "A10G");
    assert_eq!(g5["freeGpus"], 0);
    assert_eq!(pools[1]["freeGpus"], 0);
    let models = doc["gpuModels"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{models:?}");
    assert_eq!(models[0]["model"], "A10G");
    assert_eq!(
        (
            &models[0]["availableNow"],
            &models[0]["total"],
            &models[0]["scalableTo"]
        ),
        (&Value::from(0), &Value::from(1), &Value::from(1))
    );
    assert_eq!(models[0]["limitsKnown"], true);
    assert!(
        models[0]["instanceTypes"]
            .as_array()
            .unwrap()
            .contains(&Value::from("g5.xlarge")),
        "{models:?}"
    );
    assert_eq!(g5["wait"]["kind"], "atLimit");
    assert_eq!(g5["unavailableOfferings"], serde_json::json!(["spot/us-east-1b"]));
    assert_eq!(pools[1]["usage"]["gpus"], 1);
    // The reads: seven claim states on the by-state index, the 16 reservation shards, usage,
    // offerings.
    assert_eq!(doc["reads"]["requests"], 25);
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
    assert_eq!(general[3..9], ["0", "0", "0 / 16", "-", "0", "~1min (new node)"]);
    // The GPU pool: its cheapest type with a GPU, as many as its 1-GPU limit allows, none free.
    let gpu = row(&stdout, "gpu", "g5.xlarge (1 GPU)");
    assert_eq!(gpu[3..9], ["0", "0", "0 / 1", "0", "0", "~1min (new node)"]);
    assert_eq!(summary_row(&stdout, "A10G"), ["A10G", "0", "0", "1"]);
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
    f.claim("w-a", "general", "m5.large", now - 600_000, true, req(1_900, 0), 0)
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
    f.claim("w-b", "general", "m5.large", now_millis(), false, req(1_000, 0), 2)
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

const GPU_POOLS: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: inference}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.k8s.aws/instance-family, operator: In, values: [g5]}
      taints: [{key: nvidia.com/gpu, effect: NoSchedule}]
  limits: {nvidia.com/gpu: "16"}
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: training}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: node.kubernetes.io/instance-type, operator: In, values: [p5.48xlarge]}
      taints: [{key: nvidia.com/gpu, effect: NoSchedule}]
  limits: {nvidia.com/gpu: "16"}
"#;

/// A GPU cluster's state file, as the simulator or `invoke --state` writes one: in `inference`,
/// g5.12xlarge nodes with all 4 GPUs requested (`full`) and with 1 of 4 (`partly`), when asked,
/// and a g5.xlarge launching for a pod; `training` has no nodes.
fn gpu_state(dir: &std::path::Path, partly: bool) {
    use nodewright_core::ports::state::{PoolUsage, Reservation, StateView};
    const T0: i64 = 1_790_000_000_000;
    let now = T0 + 600_000;
    let node = |id: &str, type_name: &str, start: i64, ready: bool, requested: Resources| {
        let mut c = ClaimRecord::launching(id, "inference", Vec::new(), start);
        c.instance_type = Some(type_name.into());
        c.capacity_type = Some(CapacityType::OnDemand);
        c.price_per_hour = catalogue_type(type_name).cheapest(CapacityType::OnDemand);
        c.allocatable = Some(catalogue_type(type_name).allocatable);
        c.requested = Some(requested);
        c.state = ClaimState::Launched;
        c.transitions.insert(ClaimState::Launched, start + 10_000);
        if ready {
            c.state = ClaimState::Ready;
            c.transitions.insert(ClaimState::Ready, start + 70_000);
        }
        c
    };
    let mut view = StateView::new("gpu-cluster", now);
    view.claims.push(node("full", "g5.12xlarge", T0, true, req(8_000, 4)));
    if partly {
        view.claims
            .push(node("partly", "g5.12xlarge", T0, true, req(12_000, 1)));
    }
    // Launched 30 s ago; the type's pool measured 70 s to Ready.
    view.claims
        .push(node("new", "g5.xlarge", now - 30_000, false, req(3_000, 1)));
    view.reservations.push(Reservation {
        pod_uid: "waiting".into(),
        holder: Holder::Claim("new".into()),
        created_at: now - 30_000,
        expires_at: now / 1000 + 1200,
    });
    let mut usage = PoolUsage::default();
    for c in &view.claims {
        let t = catalogue_type(c.instance_type.as_deref().unwrap());
        usage.cpu_milli += t.capacity.cpu_milli();
        usage.memory_bytes += t.capacity.memory();
        usage.gpus += t.capacity.accelerators();
        usage.nodes += 1;
        usage.nodes_in_flight += u64::from(c.state != ClaimState::Ready);
    }
    view.usage.insert("inference".into(), usage);
    std::fs::write(dir.join("state.json"), view.to_json()).unwrap();
}

fn avail_state(dir: &std::path::Path, columns: &str, extra: &[&str]) -> Output {
    let pools = dir.join("gpu-pools.yaml");
    std::fs::write(&pools, GPU_POOLS).unwrap();
    Command::new(bin())
        .args(["avail", "--region", "us-east-1", "--state"])
        .arg(dir)
        .arg("--nodepool")
        .arg(&pools)
        .args(extra)
        .env("COLUMNS", columns)
        .env_remove("NO_COLOR")
        .env_remove("NODEWRIGHT_NODEPOOLS_FILE")
        .output()
        .unwrap()
}

#[test]
fn gpu_users_see_free_gpus_per_type_and_a_summary_per_model() {
    let dir = tmp_dir("avail-gpu");
    gpu_state(&dir, true);
    let out = avail_state(&dir, "250", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // Free now / on Ready and launching nodes / what the limits allow.
    assert_eq!(summary_row(&stdout, "A10G"), ["A10G", "3", "9", "16"]);
    assert_eq!(summary_row(&stdout, "H100"), ["H100", "0", "0", "16"]);
    // Ready, Launching, Total / Max, Free GPUs, Pending pods, Est. wait: 9 of 16 GPUs used, so one
    // more 4-GPU node or seven 1-GPU nodes.
    assert_eq!(
        row(&stdout, "inference", "g5.12xlarge (4 GPUs)")[3..9],
        ["2", "0", "2 / 3", "3", "0", "Available now"]
    );
    assert_eq!(
        row(&stdout, "inference", "g5.xlarge (1 GPU)")[3..9],
        ["0", "1", "1 / 8", "0", "1", "~1min (scaling up)"]
    );
    // The empty GPU pool: its cheapest type with GPUs, its max from the GPU limit (16 / 8).
    assert_eq!(
        row(&stdout, "training", "p5.48xlarge (8 GPUs)")[3..9],
        ["0", "0", "0 / 2", "0", "0", "~1min (new node)"]
    );

    // Only the node with every GPU requested: its CPU is mostly idle, but no GPU pod fits.
    gpu_state(&dir, false);
    let stdout = text(&avail_state(&dir, "250", &[]).stdout);
    assert_eq!(summary_row(&stdout, "A10G"), ["A10G", "0", "5", "16"]);
    let full = row(&stdout, "inference", "g5.12xlarge (4 GPUs)");
    assert_eq!(full[3..9], ["1", "0", "1 / 3", "0", "0", "~1min (new node)"]);
}

#[test]
fn gpu_json_has_free_gpus_and_the_model_summary_and_matches_the_schema() {
    let dir = tmp_dir("avail-gpu-json");
    gpu_state(&dir, true);
    let out = avail_state(&dir, "250", &["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_schema_valid(&out.stdout, "avail-gpu-json");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let models: Vec<(String, u64, u64, Value)> = doc["gpuModels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["model"].as_str().unwrap().to_string(),
                m["availableNow"].as_u64().unwrap(),
                m["total"].as_u64().unwrap(),
                m["scalableTo"].clone(),
            )
        })
        .collect();
    assert_eq!(
        models,
        [
            ("A10G".into(), 3, 9, Value::from(16)),
            ("H100".into(), 0, 0, Value::from(16))
        ]
    );
    let inference = &doc["pools"][0];
    assert_eq!(inference["pool"], "inference");
    assert_eq!(inference["freeGpus"], 3);
    let g5 = &inference["types"][0];
    assert_eq!(
        (&g5["instanceType"], &g5["gpuModel"]),
        (&"g5.12xlarge".into(), &"A10G".into())
    );
    assert_eq!(
        (&g5["freeGpus"], &g5["wait"]["kind"]),
        (&3.into(), &"availableNow".into())
    );
    let p5 = &doc["pools"][1]["types"][0];
    assert_eq!((&p5["instanceType"], &p5["max"]), (&"p5.48xlarge".into(), &2.into()));

    // Without the NodePools: limits unknown, which the schema allows as null, not as unlimited.
    let out = Command::new(bin())
        .args(["avail", "--json", "--region", "us-east-1", "--state"])
        .arg(&dir)
        .env_remove("NODEWRIGHT_NODEPOOLS_FILE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_schema_valid(&out.stdout, "avail-gpu-json-nolimits");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["gpuModels"][0]["scalableTo"], Value::Null);
    assert_eq!(doc["gpuModels"][0]["limitsKnown"], false);
}

#[test]
fn avail_tables_fit_80_and_100_columns() {
    let dir = tmp_dir("avail-width");
    gpu_state(&dir, true);
    for width in [80usize, 100] {
        let out = avail_state(&dir, &width.to_string(), &[]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        for line in stdout.lines() {
            assert!(
                line.chars().count() <= width,
                "a line of {} columns at COLUMNS={width}:\n{stdout}",
                line.chars().count()
            );
        }
        // Both tables, no word split.
        for word in [
            "GPU model",
            "A10G",
            "H100",
            "inference",
            "g5.12xlarge",
            "p5.48xlarge",
            "Available",
            "(scaling",
        ] {
            assert!(stdout.contains(word), "{word:?} at COLUMNS={width}:\n{stdout}");
        }
    }
}
