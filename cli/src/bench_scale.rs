//! `nodewright bench-scale`: each function's handler on clusters of 500 to 5,000 nodes (20 pods
//! per node by default: up to 100,000 pods), against the memory adapters with typical service
//! latencies on a paused clock, reporting per invocation what a Lambda pays for: time (computed
//! here, plus the modelled wait on AWS and Kubernetes), the allocator's peak, Kubernetes objects and
//! bytes listed, DynamoDB requests and capacity units (billed as DynamoDB bills them), EC2 calls.
//!
//! The cluster is built directly in the stand-ins (Ready claims with their instances, Nodes and
//! bound pods, one in ten nodes a quarter full so consolidation has work); the invocations are the
//! real handlers on the sample events (events/).

use std::sync::Arc;
use std::time::Instant;

use nodewright_core::model::ClaimState;
use nodewright_core::model::cluster_event::{PodPending, SCHEMA_VERSION};
use nodewright_core::nodepool::Limits;
use nodewright_core::ports::cluster::ClusterNode;
use nodewright_core::ports::state::{ClaimRecord, ClaimUpdate, UsageDelta};
use nodewright_core::{CapacityType, Node, Pod, Resource, labels};
use nodewright_handlers::adapters::faults::{Faults, FaultyCapacity, FaultyCluster, FaultyState, Latency};
use nodewright_handlers::adapters::handle_with_faults;
use nodewright_handlers::adapters::memory::{MemoryCapacity, MemoryCluster, MemoryState};
use nodewright_handlers::event::{Envelope, Event, Parsed, parse_bytes};
use nodewright_handlers::ports::State;
use nodewright_handlers::{Deps, Function, Settings};
use peak_alloc::PeakAlloc;

use crate::exit;
use crate::report::{self, rows_or_transposed};

#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// The sample events' clock (2026-11-21T10:00:00Z).
const NOW: i64 = 1_795_255_200_000;

/// One pool without limits (5,000 nodes of 8 vCPUs exceed the example's), consolidating.
const POOLS: &str = r#"
apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: general}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
        - {key: kubernetes.io/arch, operator: In, values: [amd64]}
        - {key: karpenter.k8s.aws/instance-category, operator: In, values: [c, m, r]}
        - {key: karpenter.k8s.aws/instance-generation, operator: Gt, values: ["4"]}
  disruption:
    consolidationPolicy: WhenEmptyOrUnderutilized
    consolidateAfter: 1m
    budgets: [{nodes: "10%"}]
---
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata: {name: default}
spec:
  amiSelectorTerms: [{alias: al2023@latest}]
  role: KarpenterNodeRole-bench
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: bench}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: bench}}]
"#;

/// The node type of the built cluster: 8 vCPUs, 32 GiB.
const NODE_TYPE: &str = "m5.2xlarge";
/// What one object weighs as the API server sends it (JSON, with managedFields): a pod about
/// 5 KB, a node about 10 KB. Used for the bytes column only.
const POD_BYTES: u64 = 5_000;
const NODE_BYTES: u64 = 10_000;

#[derive(clap::Args)]
pub struct Args {
    /// Cluster sizes (nodes).
    #[arg(long, value_delimiter = ',', default_value = "500,2000,5000")]
    nodes: Vec<usize>,
    /// Bound pods per node.
    #[arg(long, default_value_t = 20)]
    pods_per_node: usize,
    /// Pending pods in the pod-pending batch.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// One invocation's figures.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Measured {
    pub function: String,
    pub nodes: usize,
    pub pods: usize,
    /// Compute plus modelled service time.
    pub wall_ms: f64,
    pub compute_ms: f64,
    pub service_ms: f64,
    /// The allocator's peak during the invocation, above what was in use before it.
    pub peak_mb: f64,
    pub kube_calls: u64,
    pub kube_objects: u64,
    pub kube_mb: f64,
    pub dynamodb_requests: u64,
    pub read_units: f64,
    pub write_units: f64,
    pub ec2_calls: u64,
    /// Until the first launch request left (modelled service time to it, plus all the compute:
    /// an upper bound): the decision time of an invocation that launches.
    pub to_launch_ms: Option<f64>,
    pub actions: usize,
    /// `Claim Launch` events the invocation put on the bus (each a state-change invocation).
    pub launches_requested: usize,
    /// Calls per port method (`State.live_claims`, `ClusterApi.nodes` ...): where the time went.
    pub calls: std::collections::BTreeMap<String, usize>,
}

/// What running Nodewright costs a month at one cluster size, from that size's invocations (the
/// model in docs/operations.md; us-east-1 prices).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MonthlyCost {
    pub nodes: usize,
    pub lambda_gb_seconds: f64,
    pub lambda_usd: f64,
    pub dynamodb_usd: f64,
    pub events_and_queues_usd: f64,
    pub cloudwatch_usd: f64,
    pub watcher_usd: f64,
    pub total_usd: f64,
    /// Karpenter's controllers as its getting-started install sizes them (2 replicas of 1 vCPU and
    /// 1 GiB): as a share of m5 on-demand capacity, and on Fargate.
    pub karpenter_ec2_usd: f64,
    pub karpenter_fargate_usd: f64,
}

mod price {
    pub const LAMBDA_GB_SECOND: f64 = 0.000_013_333_4;
    pub const LAMBDA_REQUEST: f64 = 0.20 / 1e6;
    pub const READ_UNIT: f64 = 0.125 / 1e6;
    pub const WRITE_UNIT: f64 = 0.625 / 1e6;
    pub const CUSTOM_EVENT: f64 = 1.0 / 1e6;
    pub const SQS_REQUEST: f64 = 0.40 / 1e6;
    pub const LOG_GB: f64 = 0.50;
    /// 9 custom metrics at $0.30, 6 alarms at $0.10, one dashboard at $3.
    pub const CLOUDWATCH_FIXED: f64 = 9.0 * 0.30 + 6.0 * 0.10 + 3.0;
    /// m5 on-demand per vCPU-hour and GiB-hour (m5.large $0.096: 2 vCPU, 8 GiB, split 80/20).
    pub const VCPU_HOUR: f64 = 0.048;
    pub const GIB_HOUR: f64 = 0.006;
    pub const FARGATE_VCPU_HOUR: f64 = 0.040_48;
    pub const FARGATE_GB_HOUR: f64 = 0.004_445;
    pub const HOURS: f64 = 730.0;
}

/// The month modelled: one consolidation run a minute (1 GB; the run with disruption work); one
/// pod-pending batch a minute per 1,000 nodes, at least six an hour (0.5 GB), its launches handed
/// off (a `Claim Launch` event and a state-change invocation per claim); each node replaced
/// ten times a month (three state-change events each); half the nodes interrupted once.
fn monthly_cost(nodes: usize, rows: &[Measured]) -> Option<MonthlyCost> {
    let of = |prefix: &str| rows.iter().find(|m| m.nodes == nodes && m.function.starts_with(prefix));
    let (c, p, l, s, t) = (
        of("consolidation (next")?,
        of("pod-pending").and_then(|_| {
            rows.iter()
                .find(|m| m.nodes == nodes && m.function.contains("handed off"))
        })?,
        of("state-change (1 claim launch")?,
        of("spot-interruption")?,
        of("state-change (1 instance")?,
    );
    let n = nodes as f64;
    let runs = 43_200.0;
    let batches = 43_200.0 * (n / 1000.0).max(0.1);
    let interruptions = n * 0.5;
    let state_changes = n * 10.0 * 3.0;
    let counts = [
        (c, runs, 1.0),
        (p, batches, 0.5),
        (l, batches * p.launches_requested as f64, 0.5),
        (s, interruptions, 0.5),
        (t, state_changes, 0.5),
    ];
    let gb_seconds: f64 = counts.iter().map(|(m, k, gb)| k * m.wall_ms / 1000.0 * gb).sum();
    let invocations: f64 = counts.iter().map(|(_, k, _)| k).sum();
    let lambda_usd = gb_seconds * price::LAMBDA_GB_SECOND + invocations * price::LAMBDA_REQUEST;
    let dynamodb_usd: f64 = counts
        .iter()
        .map(|(m, k, _)| k * (m.read_units * price::READ_UNIT + m.write_units * price::WRITE_UNIT))
        .sum();
    let events_and_queues_usd = batches * (1.0 + p.launches_requested as f64) * price::CUSTOM_EVENT
        + (batches + interruptions + state_changes) * 3.0 * price::SQS_REQUEST;
    // About 2 KB of JSON log lines an invocation.
    let cloudwatch_usd = invocations * 2e-6 * price::LOG_GB + price::CLOUDWATCH_FIXED;
    let watcher_usd = (0.05 * price::VCPU_HOUR + 0.0625 * price::GIB_HOUR) * price::HOURS;
    let total_usd = lambda_usd + dynamodb_usd + events_and_queues_usd + cloudwatch_usd + watcher_usd;
    Some(MonthlyCost {
        nodes,
        lambda_gb_seconds: gb_seconds,
        lambda_usd,
        dynamodb_usd,
        events_and_queues_usd,
        cloudwatch_usd,
        watcher_usd,
        total_usd,
        karpenter_ec2_usd: 2.0 * (price::VCPU_HOUR + price::GIB_HOUR) * price::HOURS,
        karpenter_fargate_usd: 2.0 * (price::FARGATE_VCPU_HOUR + 2.0 * price::FARGATE_GB_HOUR) * price::HOURS,
    })
}

struct Cluster {
    settings: Settings,
    state: MemoryState,
    capacity: MemoryCapacity,
    cluster: MemoryCluster,
}

fn pod(uid: String, cpu_milli: u64, mem_mi: u64, node: Option<String>) -> Pod {
    let mut p = Pod {
        name: uid.clone(),
        uid,
        namespace: "bench".into(),
        owner: Some(nodewright_core::model::OwnerRef {
            kind: "ReplicaSet".into(),
            name: "web-5d9f".into(),
        }),
        node_name: node,
        ..Default::default()
    };
    let _ = p.requests.set_quantity("cpu", &format!("{cpu_milli}m"));
    let _ = p.requests.set_quantity("memory", &format!("{mem_mi}Mi"));
    let _ = p.requests.set_quantity("pods", "1");
    p
}

/// A cluster of `nodes` Ready nodes of [`NODE_TYPE`] across three zones, `pods_per_node` pods on
/// each (a quarter of that on every tenth), claims, instances and usage counters to match.
async fn build(nodes: usize, pods_per_node: usize) -> Result<Cluster, String> {
    let (config, _) =
        nodewright_core::nodepool::Config::parse_strict(POOLS, "bench-scale").map_err(|e| format!("{e:?}"))?;
    let settings = Settings::new("bench", "us-east-1", config).map_err(|e| e.to_string())?;
    let pools = settings.pools();
    let t = pools
        .instance_types
        .iter()
        .find(|t| t.name == NODE_TYPE)
        .ok_or_else(|| format!("{NODE_TYPE} is not in the catalogue"))?
        .clone();
    let state = MemoryState::new();
    let capacity = MemoryCapacity::new("bench");
    let cluster = MemoryCluster::new();
    let zones = ["us-east-1a", "us-east-1b", "us-east-1c"];
    let mut claims = Vec::with_capacity(nodes);
    let mut cluster_nodes = Vec::with_capacity(nodes);
    let mut bound = Vec::with_capacity(nodes * pods_per_node);
    let started = NOW - 6 * 3_600_000;
    for i in 0..nodes {
        let zone = zones[i % 3];
        let price = t
            .offerings
            .iter()
            .find(|o| o.zone == zone && o.capacity_type == CapacityType::OnDemand)
            .or_else(|| t.offerings.first())
            .map_or(0.384, |o| o.price);
        let iid = format!("i-{:017x}", 0x1000 + i);
        let name = format!("ip-10-{}-{}-{}.ec2.internal", i / 65_536, (i / 256) % 256, i % 256);
        let count = if i % 10 == 0 { pods_per_node / 4 } else { pods_per_node };
        let pods: Vec<Pod> = (0..count)
            .map(|k| pod(format!("p-{i}-{k}"), 300, 600, Some(name.clone())))
            .collect();
        let id = format!("bench-{i:05}");
        let mut claim = ClaimRecord::launching(&id, "general", pods.iter().map(|p| p.uid.clone()).collect(), started);
        claim.node_class_hash = pools.node_class_hashes.get("default").cloned();
        if !state.create_claim(&claim).await.map_err(|e| e.to_string())? {
            return Err(format!("claim {id} exists"));
        }
        let update = ClaimUpdate {
            instance_id: Some(iid.clone()),
            instance_type: Some(t.name.clone()),
            capacity_type: Some(CapacityType::OnDemand),
            zone: Some(zone.into()),
            price_per_hour: Some(price),
            allocatable: Some(t.allocatable.clone()),
            // Recorded when the node reported Ready, as registration does.
            node_name: Some(name.clone()),
        };
        for (s, at) in [
            (ClaimState::Launched, started + 1_000),
            (ClaimState::Registered, started + 40_000),
            (ClaimState::Ready, started + 50_000),
        ] {
            state
                .transition_claim(&id, s, at, &update)
                .await
                .map_err(|e| e.to_string())?;
        }
        claim = state
            .get_claim(&id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("claim lost")?;
        state
            .try_add_usage(
                "general",
                &UsageDelta {
                    cpu_milli: t.capacity.get(Resource::Cpu),
                    memory_bytes: t.capacity.get(Resource::Memory),
                    gpus: 0,
                    nodes: 1,
                },
                &Limits::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        state
            .mark_usage_running("general", 1)
            .await
            .map_err(|e| e.to_string())?;
        let mut node = Node::new(&name, &t.name, zone);
        node.pool = Some("general".into());
        node.capacity_type = CapacityType::OnDemand;
        node.labels = t.labels.clone();
        for (k, v) in [
            (labels::NODEPOOL, "general"),
            (labels::CAPACITY_TYPE, "on-demand"),
            (labels::ZONE, zone),
            (labels::INSTANCE_TYPE, t.name.as_str()),
            (labels::HOSTNAME, name.as_str()),
        ] {
            node.labels.insert(k.into(), v.into());
        }
        node.allocatable = Some(t.allocatable.clone());
        cluster_nodes.push(ClusterNode {
            node,
            instance_id: Some(iid),
            ready: true,
            unregistered: false,
        });
        bound.extend(pods);
        claims.push(claim);
    }
    capacity.resume_from_claims(&claims);
    cluster.set_nodes(cluster_nodes);
    cluster.set_bound(bound);
    Ok(Cluster {
        settings,
        state,
        capacity,
        cluster,
    })
}

fn pod_pending(batch: usize, seed: u64, id: &str) -> Parsed {
    let pods = crate::bench_handler::batch(batch, seed);
    let detail = PodPending {
        schema_version: SCHEMA_VERSION,
        cluster: "bench".into(),
        batch_id: "scale".into(),
        part: 1,
        parts: 1,
        sent_at: NOW,
        pods,
    };
    let envelope = Envelope {
        id: id.into(),
        source: "nodewright.cluster".into(),
        detail_type: "Pod Pending".into(),
        time: None,
        region: None,
    };
    Parsed::Event(Event::PodPending(envelope, Box::new(detail)))
}

/// A sample event with its instance and cluster replaced.
fn sample(text: &str, instance_id: &str) -> Result<Parsed, String> {
    let text = text.replace("i-0123456789abcdef0", instance_id);
    parse_bytes(text.as_bytes()).map_err(|e| e.to_string())
}

/// Runs one invocation through latency-modelled wrappers and measures it.
fn measure(
    runtime: &tokio::runtime::Runtime,
    c: &Cluster,
    function: Function,
    label: &str,
    parsed: Parsed,
    now: i64,
    size: (usize, usize),
) -> Result<Measured, String> {
    let faults = Faults::with_latency(Latency::TYPICAL);
    let deps = Deps {
        settings: c.settings.clone(),
        state: FaultyState {
            inner: c.state.clone(),
            faults: Arc::clone(&faults),
        },
        capacity: FaultyCapacity {
            inner: c.capacity.clone(),
            faults: Arc::clone(&faults),
        },
        cluster: Some(FaultyCluster {
            inner: c.cluster.clone(),
            faults: Arc::clone(&faults),
        }),
        daemonsets: Default::default(),
        consolidated: Default::default(),
    };
    c.state.reset_bill();
    ALLOCATOR.reset_peak_usage();
    let before = ALLOCATOR.current_usage();
    let (outcome, compute, service, to_launch) = runtime.block_on(async {
        let virtual_start = tokio::time::Instant::now();
        let start = Instant::now();
        let outcome = handle_with_faults(function, &deps, parsed, now).await;
        // The decision ends at its first launch, or at its first hand-off.
        let to_launch = ["launch", "hand_off_launches"]
            .iter()
            .filter_map(|m| faults.first_call_at(m))
            .min()
            .map(|at| at - virtual_start);
        (outcome, start.elapsed(), virtual_start.elapsed(), to_launch)
    });
    let peak = ALLOCATOR.peak_usage().saturating_sub(before);
    let outcome = outcome.map_err(|e| format!("{label}: {e}"))?;
    let called = faults.called();
    let listed = faults.listed();
    let calls_of = |port: &str| -> u64 {
        called
            .iter()
            .filter(|(m, _)| nodewright_handlers::adapters::faults::qualified(m).starts_with(port))
            .map(|(_, n)| *n as u64)
            .sum()
    };
    let kube_objects: u64 = ["unschedulable_pods", "pods_on_nodes", "nodes", "daemonsets", "pdbs"]
        .iter()
        .map(|m| listed.get(m).copied().unwrap_or(0))
        .sum();
    let kube_bytes = listed.get("nodes").copied().unwrap_or(0) * NODE_BYTES
        + ["unschedulable_pods", "pods_on_nodes", "daemonsets"]
            .iter()
            .map(|m| listed.get(m).copied().unwrap_or(0) * POD_BYTES)
            .sum::<u64>();
    let bill = c.state.bill();
    let compute_ms = compute.as_secs_f64() * 1000.0;
    let service_ms = service.as_secs_f64() * 1000.0;
    Ok(Measured {
        function: label.to_string(),
        nodes: size.0,
        pods: size.1,
        wall_ms: compute_ms + service_ms,
        compute_ms,
        service_ms,
        peak_mb: peak as f64 / 1_048_576.0,
        kube_calls: calls_of("ClusterApi."),
        kube_objects,
        kube_mb: kube_bytes as f64 / 1_000_000.0,
        dynamodb_requests: bill.requests,
        read_units: bill.read_units,
        write_units: bill.write_units,
        // PutEvents is EventBridge's, not EC2's.
        ec2_calls: calls_of("Capacity.") - called.get("hand_off_launches").map_or(0, |n| *n as u64),
        to_launch_ms: to_launch.map(|d| d.as_secs_f64() * 1000.0 + compute_ms),
        actions: outcome.actions.len(),
        launches_requested: outcome
            .actions
            .iter()
            .filter(|a| matches!(a, nodewright_handlers::Action::LaunchRequested { .. }))
            .count(),
        calls: called
            .iter()
            .map(|(m, n)| (nodewright_handlers::adapters::faults::qualified(m), *n))
            .collect(),
    })
}

/// Every function once on a cluster of `nodes`.
fn run_size(runtime: &tokio::runtime::Runtime, nodes: usize, args: &Args) -> Result<Vec<Measured>, String> {
    let c = runtime.block_on(build(nodes, args.pods_per_node))?;
    let pods = c.cluster.bound().len();
    let size = (nodes, pods);
    let victim = format!("i-{:017x}", 0x1000 + 1);
    let gone = format!("i-{:017x}", 0x1000 + 2);
    let mut out = Vec::new();
    let scheduled = include_str!("../../events/scheduled.json");
    out.push(measure(
        runtime,
        &c,
        Function::Consolidation,
        "consolidation (first run)",
        parse_bytes(scheduled.as_bytes()).map_err(|e| e.to_string())?,
        NOW,
        size,
    )?);
    out.push(measure(
        runtime,
        &c,
        Function::Consolidation,
        "consolidation (next run)",
        parse_bytes(scheduled.replace("\"id\": \"", "\"id\": \"2-").as_bytes()).map_err(|e| e.to_string())?,
        NOW + 60_000,
        size,
    )?);
    // Two batches of the same size and mix, side by side: launched in the invocation, and handed
    // off through the bus as deployed (infra/template.yaml), then one of those launches.
    out.push(measure(
        runtime,
        &c,
        Function::PodPending,
        &format!("pod-pending ({} pods, launched inline)", args.batch),
        pod_pending(args.batch, 7, "bench-scale-batch"),
        NOW + 70_000,
        size,
    )?);
    c.capacity.set_bus(true);
    let handed_off = measure(
        runtime,
        &c,
        Function::PodPending,
        &format!("pod-pending ({} pods, launches handed off)", args.batch),
        pod_pending(args.batch, 8, "bench-scale-batch-2"),
        NOW + 72_000,
        size,
    );
    let requests = c.capacity.take_bus_events();
    c.capacity.set_bus(false);
    out.push(handed_off?);
    let request = requests
        .first()
        .ok_or("the handed-off batch put no Claim Launch on the bus")?;
    out.push(measure(
        runtime,
        &c,
        Function::StateChange,
        &format!("state-change (1 claim launch of {})", requests.len()),
        parse_bytes(request.to_string().as_bytes()).map_err(|e| e.to_string())?,
        NOW + 73_000,
        size,
    )?);
    out.push(measure(
        runtime,
        &c,
        Function::SpotInterruption,
        "spot-interruption (1 node)",
        sample(include_str!("../../events/spot-interruption.json"), &victim)?,
        NOW + 80_000,
        size,
    )?);
    out.push(measure(
        runtime,
        &c,
        Function::StateChange,
        "state-change (1 instance)",
        sample(
            include_str!("../../events/instance-state-change-terminated.json"),
            &gone,
        )?,
        NOW + 90_000,
        size,
    )?);
    Ok(out)
}

pub fn run(args: &Args) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::FAILED;
        }
    };
    let mut all = Vec::new();
    for &nodes in &args.nodes {
        if nodes == 0 || nodes > 20_000 {
            eprintln!("error: --nodes: {nodes} is outside 1-20000");
            return exit::USAGE;
        }
        match run_size(&runtime, nodes, args) {
            Ok(m) => all.extend(m),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::FAILED;
            }
        }
    }
    let costs: Vec<MonthlyCost> = args.nodes.iter().filter_map(|&n| monthly_cost(n, &all)).collect();
    if args.json {
        let doc = serde_json::json!({"invocations": all, "monthlyCost": costs});
        match serde_json::to_string_pretty(&doc) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::FAILED;
            }
        }
        return exit::OK;
    }
    println!(
        "one invocation per function on clusters built in the memory adapters; time = compute here + modelled \
         service time (DynamoDB {} ms, EC2 {} ms, CreateFleet {} ms, Kubernetes {} ms per request + {} us per \
         object, pages of {}); DynamoDB units as billed; peak = allocator peak above the cluster's data",
        Latency::TYPICAL.dynamodb_ms,
        Latency::TYPICAL.ec2_ms,
        Latency::TYPICAL.launch_ms,
        Latency::TYPICAL.kube_ms,
        Latency::TYPICAL.kube_object_us,
        Latency::TYPICAL.kube_page_items,
    );
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|m| {
            vec![
                m.function.clone(),
                m.nodes.to_string(),
                m.pods.to_string(),
                format!("{:.0}", m.wall_ms),
                format!("{:.0}", m.compute_ms),
                format!("{:.1}", m.peak_mb),
                m.kube_calls.to_string(),
                m.kube_objects.to_string(),
                format!("{:.1}", m.kube_mb),
                m.dynamodb_requests.to_string(),
                format!("{:.1}", m.read_units),
                format!("{:.0}", m.write_units),
                m.ec2_calls.to_string(),
                m.to_launch_ms.map_or_else(|| "-".into(), |t| format!("{t:.0}")),
            ]
        })
        .collect();
    let table = rows_or_transposed(
        &[
            "invocation",
            "nodes",
            "pods",
            "time ms",
            "compute ms",
            "peak MB",
            "kube calls",
            "kube objects",
            "kube MB",
            "DynamoDB requests",
            "RCU",
            "WCU",
            "EC2 calls",
            "to launch ms",
        ],
        &rows,
        report::width(),
    );
    println!("{table}");
    println!();
    println!(
        "what running it costs a month (docs/operations.md: one consolidation run a minute, a 100-pod batch a \
         minute per 1,000 nodes, each node replaced ten times, half interrupted once; us-east-1 prices), \
         against Karpenter's two 1 vCPU / 1 GiB controllers"
    );
    let rows: Vec<Vec<String>> = costs
        .iter()
        .map(|c| {
            vec![
                c.nodes.to_string(),
                format!("{:.0}", c.lambda_gb_seconds),
                format!("{:.2}", c.lambda_usd),
                format!("{:.2}", c.dynamodb_usd),
                format!("{:.2}", c.events_and_queues_usd),
                format!("{:.2}", c.cloudwatch_usd),
                format!("{:.2}", c.watcher_usd),
                format!("{:.2}", c.total_usd),
                format!("{:.2} / {:.2}", c.karpenter_ec2_usd, c.karpenter_fargate_usd),
            ]
        })
        .collect();
    let table = rows_or_transposed(
        &[
            "nodes",
            "Lambda GB-s",
            "Lambda $",
            "DynamoDB $",
            "EventBridge + SQS $",
            "CloudWatch $",
            "watcher $",
            "Nodewright $/month",
            "Karpenter $/month (EC2 / Fargate)",
        ],
        &rows,
        report::width(),
    );
    println!("{table}");
    exit::OK
}
