//! The end-to-end harness: the four functions run as real binaries under `cargo lambda watch`
//! (cargo-lambda from PyPI, pinned in scripts/requirements-test.txt), their AWS calls go to moto,
//! their Kubernetes calls to `kube_double.py` (a plain-HTTP API server double that records every
//! request), and the tests invoke them with `cargo lambda invoke --data-file` over the Lambda
//! runtime API, as a developer would. Every process started here is stopped when its guard drops.

#![allow(clippy::unwrap_used)]

#[path = "../../shared/aws/tests/support/mod.rs"]
pub mod support;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::Tag;
use serde_json::Value;

pub use support::{moto_endpoint, unique, workspace_root};

/// The cluster name the samples in events/ carry.
/// The cluster name the samples in events/ carry; each test runs as its own cluster
/// ([`cluster_name`]), as two clusters in one account do: one moto serves every test, and a
/// cluster's functions act on every instance tagged with its name (adoption, the sweep).
pub const SAMPLE_CLUSTER: &str = "demo";

/// A cluster name of this test's own (EKS allows 100 characters: letters, digits, hyphens).
pub fn cluster_name(test: &str) -> String {
    unique(test)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn wait_for_port(port: u16, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scratch directory for one test's files (events, config, logs), kept under target/ so a failed
/// run can be inspected.
pub fn scratch(name: &str) -> PathBuf {
    let dir = workspace_root().join("target/e2e").join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn venv_bin() -> PathBuf {
    workspace_root().join(".venv/bin")
}

fn path_with_venv() -> String {
    format!("{}:{}", venv_bin().display(), std::env::var("PATH").unwrap_or_default())
}

/// A process and everything it starts (cargo, the function binaries), in its own session, killed
/// when the guard drops or when this test process dies: a shell holds the other end of a pipe and
/// kills the session when it closes, so nothing outlives the tests.
struct Group(Child);

impl Group {
    fn spawn(cmd: &Command, stdout: Stdio, stderr: Stdio) -> Group {
        let mut wrapper = Command::new("sh");
        wrapper
            .arg("-c")
            // dash's kill takes no `--`; a negative pid is the session's process group.
            .arg(r#"setsid "$@" & pid=$!; trap 'kill -9 -$pid 2>/dev/null' EXIT HUP INT TERM; read _; kill -9 -$pid 2>/dev/null; wait"#)
            .arg("sh")
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapper.env(k, v),
                None => wrapper.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapper.current_dir(dir);
        }
        Group(wrapper.spawn().unwrap())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// Starts `tests/e2e/<script>` (a Python double taking PORT DATA LOG) and waits until it accepts
/// connections.
fn start_double(script: &str, port: u16, data: &Path, log: &Path) -> Group {
    let mut cmd = Command::new(venv_bin().join("python"));
    cmd.arg(workspace_root().join("tests/e2e").join(script))
        .arg(port.to_string())
        .arg(data)
        .arg(log);
    let mut process = Group::spawn(&cmd, Stdio::piped(), Stdio::null());
    let mut line = String::new();
    BufReader::new(process.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "listening");
    wait_for_port(port, Duration::from_secs(10), script);
    process
}

/// A double's JSON-lines request log.
fn read_log(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The Kubernetes API double.
pub struct KubeDouble {
    pub port: u16,
    objects: PathBuf,
    log: PathBuf,
    _process: Group,
}

impl KubeDouble {
    pub fn start(dir: &Path) -> KubeDouble {
        let port = free_port();
        let objects = dir.join("kube-objects.json");
        let log = dir.join("kube-requests.jsonl");
        std::fs::write(&objects, r#"{"nodes": [], "pods": []}"#).unwrap();
        std::fs::write(&log, "").unwrap();
        let process = start_double("kube_double.py", port, &objects, &log);
        KubeDouble {
            port,
            objects,
            log,
            _process: process,
        }
    }

    /// What the API server holds from now on: `{"nodes": [...], "pods": [...]}`.
    pub fn set_objects(&self, objects: &Value) {
        let tmp = self.objects.with_extension("tmp");
        std::fs::write(&tmp, objects.to_string()).unwrap();
        std::fs::rename(&tmp, &self.objects).unwrap();
    }

    /// What the API server holds now (the functions' writes included).
    pub fn objects(&self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(&self.objects).unwrap()).unwrap()
    }

    /// Every request so far: `{"method", "path", "query", "body"}`.
    pub fn requests(&self) -> Vec<Value> {
        read_log(&self.log)
    }

    /// A kubeconfig pointing at the double (no authentication).
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster: {{server: \"http://127.0.0.1:{}\"}}\n\
                 users:\n- name: anonymous\n  user: {{}}\ncontexts:\n- name: double\n  context: {{cluster: double, user: anonymous}}\n\
                 current-context: double\n",
                self.port
            ),
        )
        .unwrap();
        path
    }
}

/// The Pricing API double (price_double.py): GetProducts answered from `prices`
/// (`{"region": {"instance-type": usd}}`).
pub struct PriceDouble {
    pub port: u16,
    log: PathBuf,
    _process: Group,
}

impl PriceDouble {
    pub fn start(dir: &Path, prices: &Value) -> PriceDouble {
        let port = free_port();
        let file = dir.join("prices.json");
        let log = dir.join("price-requests.jsonl");
        std::fs::write(&file, prices.to_string()).unwrap();
        std::fs::write(&log, "").unwrap();
        let process = start_double("price_double.py", port, &file, &log);
        PriceDouble {
            port,
            log,
            _process: process,
        }
    }

    /// The endpoint the functions' Pricing client uses (`AWS_ENDPOINT_URL_PRICING`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request so far: `{"target", "body"}`.
    pub fn requests(&self) -> Vec<Value> {
        read_log(&self.log)
    }
}

/// Where the functions are built for `cargo lambda watch`: not the tests' target directory, whose
/// dependency features differ (dev-dependencies enable SDK test utilities), so neither build keeps
/// overwriting the other's artifacts.
pub fn functions_target_dir() -> PathBuf {
    workspace_root().join("target/e2e-functions")
}

/// Builds the four functions once per test process, the way `cargo lambda watch` runs them
/// (`cargo run --bin NAME`, same features), so the first invocation does not wait for a compile.
pub fn build_functions() {
    static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--locked", "--manifest-path", "Cargo.toml"])
            .args([
                "--bin",
                "pod-pending",
                "--bin",
                "spot-interruption",
                "--bin",
                "state-change",
                "--bin",
                "consolidation",
            ])
            .arg("--target-dir")
            .arg(functions_target_dir())
            .current_dir(workspace_root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building the functions: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// `cargo lambda watch` serving the four functions.
pub struct Watch {
    pub port: u16,
    pub log: PathBuf,
    _process: Group,
}

impl Watch {
    /// Starts the runtime emulator with the functions' environment in `env` (written to an env
    /// file), allowing `concurrency` concurrent instances per function.
    pub fn start(dir: &Path, env: &[(&str, String)], concurrency: u32) -> Watch {
        let port = free_port();
        let env_file = dir.join("functions.env");
        let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(&env_file, text).unwrap();
        let log = dir.join("cargo-lambda-watch.log");
        let out = std::fs::File::create(&log).unwrap();
        build_functions();
        let mut cmd = Command::new(venv_bin().join("cargo-lambda"));
        cmd.args(["lambda", "watch", "--ignore-changes", "--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &port.to_string()])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--timeout", "600"])
            .arg("--env-file")
            .arg(&env_file)
            // Not --target-dir: cargo-lambda also passes that to `cargo metadata`, which refuses it.
            .env("CARGO_TARGET_DIR", functions_target_dir())
            .current_dir(workspace_root())
            .env("PATH", path_with_venv());
        let process = Group::spawn(&cmd, Stdio::from(out.try_clone().unwrap()), Stdio::from(out));
        wait_for_port(port, Duration::from_secs(120), "cargo lambda watch");
        Watch {
            port,
            log,
            _process: process,
        }
    }

    /// Invokes `function` with the event in `data_file` through `cargo lambda invoke`; the
    /// function's JSON response.
    pub fn invoke(&self, function: &str, data_file: &Path) -> Value {
        let out = self.invoke_command(function, data_file).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "cargo lambda invoke {function} {}: {}{}\n(watch log: {})",
            data_file.display(),
            stdout,
            String::from_utf8_lossy(&out.stderr),
            self.log.display()
        );
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{function} answered non-JSON ({e}): {stdout}"))
    }

    pub fn invoke_command(&self, function: &str, data_file: &Path) -> Command {
        let mut cmd = Command::new(venv_bin().join("cargo-lambda"));
        cmd.args(["lambda", "invoke", function, "--invoke-address", "127.0.0.1"])
            .args(["--invoke-port", &self.port.to_string(), "--output-format", "json"])
            .arg("--data-file")
            .arg(data_file)
            .env("PATH", path_with_venv());
        cmd
    }
}

/// Tags two default subnets, a new security group and moto's first AMI for discovery, as users tag
/// for Karpenter; returns the tag key. Each test has its own key (value "1"): the default subnets
/// are shared by the tests running at once, and a shared key's value would be overwritten.
pub async fn discovery(ec2: &aws_sdk_ec2::Client) -> String {
    let key = format!("nodewright-e2e/{}", unique("discovery"));
    let tag = |_: &str| Tag::builder().key(&key).value("1").build();
    let ami = ec2.describe_images().owners("amazon").send().await.unwrap().images()[0]
        .image_id()
        .unwrap()
        .to_string();
    let subnets = ec2.describe_subnets().send().await.unwrap();
    let mut resources: Vec<String> = subnets
        .subnets()
        .iter()
        .take(2)
        .map(|s| s.subnet_id().unwrap().to_string())
        .collect();
    let vpc = ec2.describe_vpcs().send().await.unwrap().vpcs()[0]
        .vpc_id()
        .unwrap()
        .to_string();
    let sg = ec2
        .create_security_group()
        .group_name(unique("nodes"))
        .description("nodes")
        .vpc_id(vpc)
        .send()
        .await
        .unwrap()
        .group_id()
        .unwrap()
        .to_string();
    resources.push(sg);
    ec2.create_tags()
        .set_resources(Some(resources))
        .tags(tag("subnets and security group"))
        .send()
        .await
        .unwrap();
    ec2.create_tags().resources(ami).tags(tag("ami")).send().await.unwrap();
    key
}

/// One NodePool (`general`: m5/c5/r5, amd64, spot and on-demand, `limits.cpu`) and its
/// EC2NodeClass selecting what [`discovery`] tagged.
pub fn nodepools(discovery: &str, cpu_limit: u32) -> String {
    format!(
        r#"apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {{name: general}}
spec:
  template:
    spec:
      nodeClassRef: {{group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}}
      requirements:
        - {{key: karpenter.sh/capacity-type, operator: In, values: [spot, on-demand]}}
        - {{key: kubernetes.io/arch, operator: In, values: [amd64]}}
        - {{key: karpenter.k8s.aws/instance-family, operator: In, values: [m5, c5, r5]}}
  limits: {{cpu: "{cpu_limit}"}}
  disruption: {{consolidationPolicy: WhenEmpty, consolidateAfter: 10m}}
---
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {{name: default}}
spec:
  amiFamily: AL2023
  amiSelectorTerms: [{{tags: {{"{discovery}": "1"}}}}]
  instanceProfile: NodewrightE2eNodeProfile
  subnetSelectorTerms: [{{tags: {{"{discovery}": "1"}}}}]
  securityGroupSelectorTerms: [{{tags: {{"{discovery}": "1"}}}}]
"#
    )
}

/// The functions' environment for one test: its own tables, moto, and the double's kubeconfig.
pub fn function_env(
    dir: &Path,
    prefix: &str,
    cluster: &str,
    nodepools: &str,
    kubeconfig: &Path,
) -> Vec<(&'static str, String)> {
    let pools = dir.join("nodepools.yaml");
    std::fs::write(&pools, nodepools).unwrap();
    vec![
        ("AWS_ENDPOINT_URL", moto_endpoint()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("NODEWRIGHT_CLUSTER_NAME", cluster.into()),
        ("NODEWRIGHT_NODEPOOLS_FILE", pools.display().to_string()),
        ("NODEWRIGHT_TABLE_PREFIX", prefix.into()),
        (
            "NODEWRIGHT_CLUSTER_ENDPOINT",
            "https://demo.gr7.us-east-1.eks.amazonaws.com".into(),
        ),
        ("NODEWRIGHT_CLUSTER_CA", "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t".into()),
        ("NODEWRIGHT_KUBECONFIG", kubeconfig.display().to_string()),
        ("RUST_LOG", "info".into()),
    ]
}

/// A sample from events/, moved to the present ([`nodewright_core::time::restamp_event`]), sent by
/// `cluster` (the samples' own cluster name replaced), with JSON pointer edits applied, written to
/// `dir/name`.
pub fn event_file(dir: &Path, cluster: &str, sample: &str, name: &str, edits: &[(&str, Value)]) -> PathBuf {
    let text = std::fs::read_to_string(workspace_root().join("events").join(sample)).unwrap();
    let mut event: Value = serde_json::from_str(&text).unwrap();
    nodewright_core::time::restamp_event(&mut event, nodewright_aws::now_millis());
    if let Some(c) = event.pointer_mut("/detail/cluster") {
        assert_eq!(c, SAMPLE_CLUSTER, "{sample}");
        *c = Value::from(cluster);
    }
    for (pointer, value) in edits {
        *event
            .pointer_mut(pointer)
            .unwrap_or_else(|| panic!("{sample} has no {pointer}")) = value.clone();
    }
    let path = dir.join(name);
    std::fs::write(&path, event.to_string()).unwrap();
    path
}

/// The stack's launch bus in moto with a tap on it (tests/e2e/bus_tap.py): the bus, the rule the
/// template gives state-change, and an SQS queue as its target, from which a test reads the events
/// EventBridge delivered.
pub struct BusTap {
    pub bus: String,
    queue: String,
}

impl BusTap {
    fn tap(args: &[&str]) -> String {
        let out = Command::new(venv_bin().join("python"))
            .arg(workspace_root().join("tests/e2e/bus_tap.py"))
            .args(args)
            .env("AWS_ENDPOINT_URL", moto_endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bus_tap.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn create(bus: &str, cluster: &str) -> BusTap {
        let queue = BusTap::tap(&["create", bus, cluster]);
        BusTap {
            bus: bus.to_string(),
            queue,
        }
    }

    /// The events delivered since the last call, as EventBridge hands them to a target.
    pub fn delivered(&self) -> Vec<Value> {
        serde_json::from_str(&BusTap::tap(&["receive", &self.queue])).unwrap()
    }
}

/// The kubelet emulator over moto: registers a Node in the double for each of `instance_ids` that is
/// running and has none, from what EC2 holds alone (DescribeInstances, DescribeInstanceTypes, the
/// instance's user data from DescribeInstanceAttribute), and reports it Ready at `ready_at`
/// (RFC 3339). Returns the nodes added.
pub async fn boot_nodes(
    ec2: &aws_sdk_ec2::Client,
    double: &KubeDouble,
    instance_ids: &[String],
    ready_at: &str,
) -> Vec<Value> {
    use aws_sdk_ec2::types::InstanceAttributeName;
    let mut objects = double.objects();
    let out = ec2
        .describe_instances()
        .set_instance_ids(Some(instance_ids.to_vec()))
        .send()
        .await
        .unwrap();
    let mut added = Vec::new();
    for i in out.reservations().iter().flat_map(|r| r.instances()) {
        let id = i.instance_id().unwrap().to_string();
        let provider = |n: &Value| n["spec"]["providerID"].as_str().unwrap_or("").ends_with(&id);
        if i.state().and_then(|s| s.name()).map(|s| s.as_str()) != Some("running")
            || objects["nodes"].as_array().unwrap().iter().any(provider)
        {
            continue;
        }
        let itype = i.instance_type().unwrap().as_str().to_string();
        let described = ec2
            .describe_instance_types()
            .instance_types(i.instance_type().unwrap().clone())
            .send()
            .await
            .unwrap();
        let t = &described.instance_types()[0];
        let net = t.network_info().unwrap();
        // The AMI's eni-max-pods counts the default network card's ENIs only.
        let default_card = net.default_network_card_index().unwrap_or(0);
        let enis = net
            .network_cards()
            .iter()
            .find(|c| c.network_card_index().unwrap_or(0) == default_card)
            .and_then(|c| c.maximum_network_interfaces())
            .or(net.maximum_network_interfaces())
            .unwrap_or(3) as u32;
        let per_eni = net.ipv4_addresses_per_interface().unwrap_or(10) as u32;
        let user_data = ec2
            .describe_instance_attribute()
            .instance_id(&id)
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap()
            .user_data()
            .and_then(|u| u.value())
            .unwrap_or_default()
            .to_string();
        let boot = nodewright_kubelet::read_user_data(&user_data)
            .unwrap_or_else(|e| panic!("instance {id} cannot join: {e}\n{user_data}"));
        let facts = nodewright_kubelet::InstanceFacts {
            instance_id: id.clone(),
            private_ip: i.private_ip_address().unwrap().to_string(),
            zone: i.placement().and_then(|p| p.availability_zone()).unwrap().to_string(),
            region: "us-east-1".into(),
            instance_type: itype,
            architecture: t
                .processor_info()
                .map(|p| p.supported_architectures()[0].as_str().to_string())
                .unwrap(),
            vcpus: t.v_cpu_info().and_then(|v| v.default_v_cpus()).unwrap() as u32,
            memory_mib: t.memory_info().and_then(|m| m.size_in_mib()).unwrap() as u64,
            default_max_pods: enis * (per_eni - 1) + 2,
        };
        let mut node = nodewright_kubelet::register(&facts, &boot);
        nodewright_kubelet::mark_ready(&mut node, ready_at);
        objects["nodes"].as_array_mut().unwrap().push(node.clone());
        added.push(node);
    }
    double.set_objects(&objects);
    added
}

/// The watcher's `Node Ready` for a node object, built by the watcher's own code, as an
/// EventBridge event file in `dir`.
pub fn node_ready_file(dir: &Path, cluster: &str, node: &Value, now: i64) -> PathBuf {
    let node: k8s_openapi::api::core::v1::Node = serde_json::from_value(node.clone()).unwrap();
    let ready = nodewright_watcher::ready::node_ready_event(cluster, &node, now).unwrap();
    let name = format!("node-ready-{}.json", ready.node);
    event_file(
        dir,
        cluster,
        "node-ready.json",
        &name,
        &[("/detail", serde_json::to_value(&ready).unwrap())],
    )
}

/// RFC 3339 of Unix milliseconds (UTC).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = nodewright_core::time::civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t % 3600 / 60,
        t % 60
    )
}

/// The Kubernetes RBAC check of a request: (API group, resource[/subresource], verb), from its
/// method and path as the API server derives them.
pub fn rbac_attributes(method: &str, path: &str) -> (String, String, String) {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    // /api/v1/... is the core group; /apis/<group>/<version>/...
    let (group, rest) = match parts.first() {
        Some(&"api") => ("", &parts[2..]),
        _ => (parts[1], &parts[3..]),
    };
    let rest: Vec<&str> = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail.to_vec(),
        other => other.to_vec(),
    };
    let resource = match rest.as_slice() {
        [r] | [r, _] => (*r).to_string(),
        [r, _, sub] => format!("{r}/{sub}"),
        other => panic!("unexpected path {path}: {other:?}"),
    };
    let named = rest.len() >= 2;
    let verb = match (method, named) {
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        _ => panic!("unexpected method {method}"),
    };
    (group.to_string(), resource, verb.to_string())
}

/// Asserts infra/k8s/functions-rbac.yaml's ClusterRole allows every request the functions made:
/// the manifest a user applies is the one the functions are tested against.
pub fn assert_rbac_allows(requests: &[Value]) {
    let text = std::fs::read_to_string(workspace_root().join("infra/k8s/functions-rbac.yaml")).unwrap();
    let role: Value = text
        .split("\n---")
        .map(|doc| serde_norway::from_str::<Value>(doc).unwrap())
        .find(|d| d["kind"] == "ClusterRole")
        .unwrap();
    let rules = role["rules"].as_array().unwrap();
    let has = |list: &Value, item: &str| list.as_array().unwrap().iter().any(|v| v == item);
    for r in requests {
        let (group, resource, verb) = rbac_attributes(r["method"].as_str().unwrap(), r["path"].as_str().unwrap());
        let allowed = rules.iter().any(|rule| {
            has(&rule["apiGroups"], &group) && has(&rule["resources"], &resource) && has(&rule["verbs"], &verb)
        });
        assert!(
            allowed,
            "functions-rbac.yaml does not allow {verb} {group}/{resource} ({} {})",
            r["method"], r["path"]
        );
    }
}
