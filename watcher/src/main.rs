//! `nodewright-watcher`: runs in the cluster (infra/k8s/watcher.yaml), watches pods and nodes, and
//! sends `Pod Pending` / `Node Ready` events to EventBridge.
//!
//! Configuration (environment): `NODEWRIGHT_CLUSTER_NAME` (required), `NODEWRIGHT_EVENT_BUS`
//! (default `default`), `NODEWRIGHT_BATCH_IDLE_MS` (1000), `NODEWRIGHT_BATCH_MAX_MS` (10000).

use std::pin::pin;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use nodewright_core::model::cluster_event::PendingPod;
use nodewright_core::model::{self};
use nodewright_watcher::batch::{Batcher, Windows};
use nodewright_watcher::entry::{ENTRY_BUDGET, node_ready_entry, pod_pending_entries};
use nodewright_watcher::ready::{ReadyTracker, node_ready_event, ready_since};
use nodewright_watcher::send::Sender;
use nodewright_watcher::{Error, Result};

struct Settings {
    cluster: String,
    bus: String,
    windows: Windows,
}

fn env_ms(name: &str, default: u64) -> Result<Duration> {
    match std::env::var(name) {
        Err(_) => Ok(Duration::from_millis(default)),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|ms| (1..=600_000).contains(ms))
            .map(Duration::from_millis)
            .ok_or_else(|| Error::Config {
                field: name.into(),
                reason: format!("{v:?} is not a whole number of milliseconds in 1..=600000"),
            }),
    }
}

fn settings() -> Result<Settings> {
    let cluster = std::env::var("NODEWRIGHT_CLUSTER_NAME")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| Error::Config {
            field: "NODEWRIGHT_CLUSTER_NAME".into(),
            reason: "required: the EKS cluster name".into(),
        })?;
    let windows = Windows {
        idle: env_ms("NODEWRIGHT_BATCH_IDLE_MS", 1_000)?,
        max: env_ms("NODEWRIGHT_BATCH_MAX_MS", 10_000)?,
        ..Windows::default()
    };
    Ok(Settings {
        cluster,
        bus: std::env::var("NODEWRIGHT_EVENT_BUS").unwrap_or_else(|_| "default".into()),
        windows,
    })
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let settings = match settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("nodewright-watcher: {e}");
            return ExitCode::from(2);
        }
    };
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nodewright-watcher: cannot reach the Kubernetes API: {e}");
            return ExitCode::from(1);
        }
    };
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sender = Sender::new(aws_sdk_eventbridge::Client::new(&aws), settings.bus.clone());
    run(client, sender, settings).await;
    ExitCode::SUCCESS
}

async fn run(client: kube::Client, sender: Sender, settings: Settings) {
    let pods = watcher::watcher(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default().fields("spec.nodeName="),
    )
    .default_backoff();
    // Every node: what links a node to its claim is its providerID (crate docs of `ready`).
    let nodes = watcher::watcher(Api::<Node>::all(client), watcher::Config::default()).default_backoff();
    let mut pods = pin!(pods);
    let mut nodes = pin!(nodes);
    let mut batcher = Batcher::new(settings.windows);
    let mut tracker = ReadyTracker::default();
    tracing::info!(cluster = %settings.cluster, bus = %settings.bus, "watching unschedulable pods and Nodewright nodes");
    loop {
        let deadline = batcher.deadline();
        tokio::select! {
            Some(event) = pods.next() => match event {
                Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => offer(&mut batcher, &p),
                Ok(Event::Delete(p)) => batcher.retract(p.metadata.uid.as_deref().unwrap_or("")),
                Ok(Event::Init) | Ok(Event::InitDone) => {}
                Err(e) => tracing::warn!(error = %e, "pod watch error; backing off"),
            },
            Some(event) = nodes.next() => match event {
                Ok(Event::Apply(n)) | Ok(Event::InitApply(n)) => node_changed(&mut tracker, &sender, &settings.cluster, &n).await,
                Ok(Event::Delete(n)) => tracker.forget(n.metadata.name.as_deref().unwrap_or("")),
                // A (re-)list: everything Ready is reported again.
                Ok(Event::Init) => tracker.reset(),
                Ok(Event::InitDone) => {}
                Err(e) => tracing::warn!(error = %e, "node watch error; backing off"),
            },
            _ = sleep_until(deadline) => {
                if let Some(batch) = batcher.take_due(Instant::now()) {
                    flush(&mut batcher, &sender, &settings.cluster, batch).await;
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

fn offer(batcher: &mut Batcher, pod: &Pod) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if !model::is_unschedulable(pod) {
        batcher.retract(&uid);
        return;
    }
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    );
    match model::pod_from_k8s(pod, &name) {
        Ok(p) => {
            let pending = PendingPod {
                resource_version: pod.metadata.resource_version.clone().unwrap_or_default(),
                created_at: pod
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_millisecond())
                    .unwrap_or(0),
                pod: p,
            };
            let outcome = batcher.offer(pending, Instant::now());
            tracing::debug!(pod = %name, ?outcome, "unschedulable pod");
        }
        Err(e) => tracing::warn!(pod = %name, error = %e, "unschedulable pod the core model cannot take; not sent"),
    }
}

async fn flush(batcher: &mut Batcher, sender: &Sender, cluster: &str, batch: Vec<PendingPod>) {
    let count = batch.len();
    let entries = match pod_pending_entries(cluster, batch.clone(), unix_ms(SystemTime::now()), ENTRY_BUDGET) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot encode batch");
            return;
        }
    };
    match sender.send(&entries).await {
        Ok(ids) => tracing::info!(pods = count, entries = entries.len(), event_ids = ?ids, "sent Pod Pending"),
        Err(e) => {
            tracing::error!(error = %e, pods = count, "Pod Pending not sent; pods stay eligible");
            batcher.unsend(&batch);
        }
    }
}

async fn node_changed(tracker: &mut ReadyTracker, sender: &Sender, cluster: &str, node: &Node) {
    let Some(name) = node.metadata.name.clone() else { return };
    if !tracker.observe(&name, ready_since(node).is_some()) {
        return;
    }
    let Some(event) = node_ready_event(cluster, node, unix_ms(SystemTime::now())) else {
        return;
    };
    match node_ready_entry(&event) {
        Ok(entry) => match sender.send(&[entry]).await {
            Ok(_) => tracing::info!(node = %name, instance = %event.instance_id, "sent Node Ready"),
            Err(e) => {
                tracing::error!(node = %name, error = %e, "Node Ready not sent");
                tracker.forget(&name);
            }
        },
        Err(e) => tracing::error!(node = %name, error = %e, "cannot encode Node Ready"),
    }
}
