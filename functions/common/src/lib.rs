//! The Lambda glue the four functions share: settings validated from the environment at start-up
//! (an error names the variable and stops the init), AWS and Kubernetes clients built once per
//! execution environment, JSON logs, and the service that parses each event (an EventBridge event,
//! or an SQS batch of them with partial batch failures) and runs the function's handler.
//!
//! Bad input is not retried: it is logged at error level and answered with `{"error": ...}`.
//! Transient failures (AWS, Kubernetes, a concurrent run of the same event) return an error so the
//! invocation is retried and, after the retries, lands in the function's dead-letter queue.

use std::time::Instant;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use lambda_runtime::{LambdaEvent, service_fn};
use nodewright_aws::AwsCapacity;
use nodewright_aws::capacity::{AsgPool, ClusterEndpoint, Fleet, InstanceProfiles};
use nodewright_aws::state::{StateStore, TableNames};
use nodewright_aws::{AwsClients, ClientOptions, now_millis};
use nodewright_handlers::event::{is_sqs_batch, parse_sqs_batch, parse_value};
use nodewright_handlers::{Deps, Error, Function, Settings, handle};
use nodewright_kube::KubeCluster;
use nodewright_kube::{Access, Connection};
use serde_json::{Value, json};

type LambdaDeps = Deps<StateStore, AwsCapacity, KubeCluster>;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// JSON logs; level from `RUST_LOG` or Lambda's `AWS_LAMBDA_LOG_LEVEL`, default info.
pub fn init_logging() {
    let filter = env("RUST_LOG")
        .or_else(|| env("AWS_LAMBDA_LOG_LEVEL").map(|l| l.to_lowercase()))
        .unwrap_or_else(|| "info".into());
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_current_span(false)
        .without_time()
        .init();
}

/// Builds everything once: settings, clients, adapters.
pub async fn deps() -> Result<LambdaDeps, Error> {
    let settings = Settings::from_env(env)?;
    let clients = AwsClients::load(&ClientOptions {
        region: Some(settings.region.clone()),
        endpoint_url: env("AWS_ENDPOINT_URL"),
        ..Default::default()
    })
    .await;
    let mut clients = clients;
    if let Some(url) = env("AWS_ENDPOINT_URL_PRICING") {
        // The Pricing API's own endpoint (local runs: moto has none).
        clients.pricing = aws_sdk_pricing::Client::from_conf(
            aws_sdk_pricing::config::Builder::from(&clients.sdk)
                .region(aws_sdk_pricing::config::Region::new("us-east-1"))
                .endpoint_url(url)
                .build(),
        );
    }
    let prefix = env("NODEWRIGHT_TABLE_PREFIX").unwrap_or_else(|| "nodewright".into());
    let tables = TableNames::new(prefix).map_err(|e| Error::config("NODEWRIGHT_TABLE_PREFIX", e.to_string()))?;
    let store = StateStore::new(clients.dynamodb.clone(), tables, settings.cluster.clone())?;
    let eks = aws_sdk_eks::Client::new(&clients.sdk);
    let endpoint = cluster_endpoint(&settings, &eks).await?;
    let kubeconfig = env("NODEWRIGHT_KUBECONFIG").map(std::path::PathBuf::from);
    let access = match env("NODEWRIGHT_CLUSTER_ACCESS").as_deref() {
        // A kubeconfig path alone means kubeconfig access (local runs).
        None if kubeconfig.is_some() => Some(Access::Kubeconfig {
            path: kubeconfig,
            context: None,
        }),
        None | Some("eks") => Some(Access::Eks {
            cluster: settings.cluster.clone(),
            region: settings.region.clone(),
            endpoint: env("NODEWRIGHT_CLUSTER_ENDPOINT"),
            ca: env("NODEWRIGHT_CLUSTER_CA"),
        }),
        Some("kubeconfig") => Some(Access::Kubeconfig {
            path: kubeconfig,
            context: None,
        }),
        Some("none") => None,
        Some(other) => {
            return Err(Error::config(
                "NODEWRIGHT_CLUSTER_ACCESS",
                format!("{other:?} is not one of eks, kubeconfig, none"),
            ));
        }
    };
    let cluster = access.map(|a| KubeCluster {
        connection: Connection::new(a, clients.sdk.credentials_provider(), Some(eks.clone())),
    });
    let capacity = AwsCapacity::new(
        Fleet::new(clients.ec2.clone(), settings.cluster.clone()),
        AsgPool::new(clients.autoscaling.clone()),
        store.clone(),
        Some(clients.ssm.clone()),
        Some(InstanceProfiles::new(
            clients.iam.clone(),
            settings.cluster.clone(),
            settings.region.clone(),
        )),
        endpoint,
        env("NODEWRIGHT_KUBERNETES_VERSION"),
        settings.configured_pools().config.node_classes.clone(),
        // Every type in the region: the cluster's pools may admit any of them.
        &nodewright_core::Catalogue::embedded()
            .instance_types(&settings.region, &nodewright_core::catalogue::OverheadConfig::default()),
    );
    let mut capacity = capacity;
    capacity.pricing = Some(clients.pricing.clone());
    capacity.region = settings.region.clone();
    // pod-pending hands each claim's launch to state-change through the bus (infra/template.yaml).
    capacity.launch_bus = env("NODEWRIGHT_LAUNCH_BUS")
        .map(|bus| nodewright_aws::capacity::LaunchBus::new(aws_sdk_eventbridge::Client::new(&clients.sdk), bus));
    Ok(Deps {
        settings,
        state: store,
        capacity,
        cluster,
        daemonsets: nodewright_handlers::DaemonSets::default(),
        consolidated: Default::default(),
    })
}

/// The API endpoint and CA nodes join with: configured, else `eks:DescribeCluster`.
async fn cluster_endpoint(settings: &Settings, eks: &aws_sdk_eks::Client) -> Result<ClusterEndpoint, Error> {
    if let (Some(endpoint), Some(ca)) = (env("NODEWRIGHT_CLUSTER_ENDPOINT"), env("NODEWRIGHT_CLUSTER_CA")) {
        return Ok(ClusterEndpoint {
            name: settings.cluster.clone(),
            endpoint,
            certificate_authority: ca,
            service_cidr: None,
        });
    }
    let out = eks
        .describe_cluster()
        .name(&settings.cluster)
        .send()
        .await
        .map_err(|e| {
            Error::config(
                "NODEWRIGHT_CLUSTER_ENDPOINT",
                format!(
                    "not set, and eks:DescribeCluster failed: {}",
                    aws_sdk_eks::error::DisplayErrorContext(&e)
                ),
            )
        })?;
    let c = out
        .cluster
        .ok_or_else(|| Error::config("NODEWRIGHT_CLUSTER_NAME", "DescribeCluster returned no cluster"))?;
    Ok(ClusterEndpoint {
        name: settings.cluster.clone(),
        endpoint: c.endpoint.unwrap_or_default(),
        certificate_authority: c.certificate_authority.and_then(|a| a.data).unwrap_or_default(),
        service_cidr: c.kubernetes_network_config.and_then(|n| n.service_ipv4_cidr),
    })
}

/// Writes the invocation's metrics to stdout as one Embedded Metric Format line (CloudWatch Logs
/// extracts them; docs/operations.md).
fn emit_metrics(outcome: &nodewright_handlers::Outcome, started: Instant) {
    let doc = nodewright_handlers::metrics::emf(outcome, started.elapsed().as_secs_f64() * 1000.0, now_millis());
    println!("{doc}");
}

/// Records of one SQS batch handled at once: four one-node interruptions at 5,000 nodes take
/// about 4 x 94 MB (docs/operations.md), inside the functions' 512 MB.
const SQS_RECORD_CONCURRENCY: usize = 4;

/// Handles one payload: an EventBridge event or an SQS batch.
pub async fn invoke(function: Function, deps: &LambdaDeps, payload: Value) -> Result<Value, Error> {
    let started = Instant::now();
    if is_sqs_batch(&payload) {
        // The records of a batch are handled SQS_RECORD_CONCURRENCY at a time (each is an event
        // that could have come in its own invocation: the handlers are built for concurrent
        // invocations); their failures are reported in the batch's order.
        let mut records = Vec::new();
        for (message_id, parsed) in parse_sqs_batch(&payload)? {
            records.push(async move {
                let record_started = Instant::now();
                let result = match parsed {
                    Ok(p) => handle(function, deps, p, now_millis())
                        .await
                        .map(|outcome| emit_metrics(&outcome, record_started)),
                    Err(e) => Err(e),
                };
                (message_id, result)
            });
        }
        let results = nodewright_handlers::in_order(records, SQS_RECORD_CONCURRENCY).await;
        let mut failures = Vec::new();
        for (message_id, result) in results {
            match result {
                Ok(()) => {}
                Err(e) if !e.is_retryable() => {
                    tracing::error!(message_id = %message_id, error = %e, "dropping a record that cannot be handled");
                }
                Err(e) => {
                    tracing::warn!(message_id = %message_id, error = %e, "record failed; SQS will redeliver it");
                    let mut f = BatchItemFailure::default();
                    f.item_identifier = message_id;
                    failures.push(f);
                }
            }
        }
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failures;
        return serde_json::to_value(response).map_err(|e| Error::event("response", e.to_string()));
    }
    let parsed = match parse_value(&payload) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(function = function.name(), error = %e, "event rejected");
            return Ok(json!({"error": e.to_string()}));
        }
    };
    match handle(function, deps, parsed, now_millis()).await {
        Ok(outcome) => {
            emit_metrics(&outcome, started);
            tracing::info!(
                function = function.name(),
                event = %outcome.event_id,
                decision_ms = started.elapsed().as_secs_f64() * 1000.0,
                actions = outcome.actions.len(),
                summary = %outcome.summary(),
                "handled"
            );
            serde_json::to_value(&outcome).map_err(|e| Error::event("response", e.to_string()))
        }
        Err(e) if !e.is_retryable() => {
            tracing::error!(function = function.name(), error = %e, "event rejected");
            Ok(json!({"error": e.to_string()}))
        }
        Err(e) => {
            tracing::error!(function = function.name(), error = %e, "handler failed; the invocation will be retried");
            Err(e)
        }
    }
}

/// The whole life of a function: init once, then serve invocations.
pub async fn run(function: Function) -> Result<(), lambda_runtime::Error> {
    init_logging();
    let deps = match deps().await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(function = function.name(), error = %e, "configuration error");
            return Err(e.to_string().into());
        }
    };
    let deps = &deps;
    tracing::info!(function = function.name(), cluster = %deps.settings.cluster, "ready");
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        invoke(function, deps, event.payload)
            .await
            .map_err(|e| lambda_runtime::Error::from(e.to_string()))
    }))
    .await
}
