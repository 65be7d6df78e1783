//! `nodewright`: validate NodePool configuration, plan capacity for pods, and benchmark the
//! scheduler. See docs/cli.md for every command, flag and exit code.

mod avail;
mod bench;
mod bench_disruption;
mod bench_handler;
mod bench_scale;
mod bench_small;
mod chaos;
#[cfg(feature = "aws")]
mod create_tables;
mod invoke;
mod paths;
mod plan;
mod report;
mod restamp;
mod simulate;
mod validate;
mod workloads;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes (documented in docs/cli.md).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The input was read but is invalid (validation errors).
    pub const INVALID: u8 = 1;
    /// A file could not be read or parsed, or the arguments are wrong.
    pub const USAGE: u8 = 2;
    /// The run itself failed (a simulator bug, an output file that cannot be written).
    pub const FAILED: u8 = 3;
    /// `avail`: the state could not be read (endpoint unreachable, tables missing, credentials refused).
    pub const UNREACHABLE: u8 = 4;
    /// `avail`: there is nothing to show (no nodes, reservations or usage for the cluster).
    pub const EMPTY: u8 = 5;
}

#[derive(Parser)]
#[command(
    name = "nodewright",
    version,
    about = "Serverless node autoscaler for Kubernetes on AWS"
)]
struct Cli {
    /// Read a NodePool / EC2NodeClass field Nodewright does not know as a warning and ignore it
    /// (by default it is an error, as the API server's strict field validation makes it).
    #[arg(long, global = true)]
    allow_unknown_fields: bool,
    #[command(subcommand)]
    command: Command,
}

/// `--allow-unknown-fields`, set once from the command line.
static UNKNOWN_FIELDS: std::sync::OnceLock<nodewright_core::nodepool::UnknownFields> = std::sync::OnceLock::new();

/// How configuration files treat unknown fields in this run.
pub fn unknown_fields() -> nodewright_core::nodepool::UnknownFields {
    UNKNOWN_FIELDS.get().copied().unwrap_or_default()
}

#[derive(Subcommand)]
enum Command {
    /// Show capacity per pool and instance type (ready, launching, limits, pending pods, expected
    /// wait, spot share, cost) from Nodewright's DynamoDB state or a state directory.
    Avail(avail::Args),
    /// Create Nodewright's DynamoDB tables (local runs against an emulator; idempotent).
    #[cfg(feature = "aws")]
    CreateTables(create_tables::Args),
    /// Replay a workload against NodePools with the real handlers on a virtual clock (no AWS), next
    /// to an optional fixed node group; print cost, utilization and pending times; write a plot.
    Simulate(simulate::Args),
    /// Check NodePool / EC2NodeClass / Provisioner / AutoScalingPool files; list every error and warning.
    Validate(validate::Args),
    /// Plan capacity for pending pods: which pods go where, which instance types to launch.
    Plan(plan::Args),
    /// Benchmark the scheduler: throughput and cost against Karpenter-style FFD and the LP bound.
    Bench(bench::Args),
    /// Benchmark the disruption planner against a Karpenter-style baseline on generated clusters.
    BenchDisruption(bench_disruption::Args),
    /// Run one function's handler on an event file, in-process against the embedded stand-ins
    /// for EC2, DynamoDB and the cluster (no AWS), and print what it did.
    Invoke(invoke::Args),
    /// Benchmark the pod-pending handler's decision time (event in -> launch requests out) for
    /// batches of pending pods, with in-process stand-ins (no emulator calls timed).
    BenchHandler(bench_handler::Args),
    /// Run every function's handler on clusters of 500 to 5,000 nodes (memory stand-ins with
    /// modelled service latencies): time, peak memory, Kubernetes objects read, DynamoDB units.
    BenchScale(bench_scale::Args),
    /// Seeded stories of the functions with faults at every port and in delivery; invariants
    /// checked at every step; exits 1 on any violation.
    Chaos(chaos::Args),
    /// Print a sample event moved to the present (every time in it shifted by one offset), for
    /// `cargo lambda invoke`: the functions refuse events more than a day from their clock.
    Restamp(restamp::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.allow_unknown_fields {
        let _ = UNKNOWN_FIELDS.set(nodewright_core::nodepool::UnknownFields::Warn);
    }
    let code = match cli.command {
        Command::Avail(a) => avail::run(&a),
        #[cfg(feature = "aws")]
        Command::CreateTables(a) => create_tables::run(&a),
        Command::Simulate(a) => simulate::run(&a),
        Command::Validate(a) => validate::run(&a),
        Command::Plan(a) => plan::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::BenchDisruption(a) => bench_disruption::run(&a),
        Command::Invoke(a) => invoke::run(&a),
        Command::BenchHandler(a) => bench_handler::run(&a),
        Command::BenchScale(a) => bench_scale::run(&a),
        Command::Chaos(a) => chaos::run(&a),
        Command::Restamp(a) => restamp::run(&a),
    };
    ExitCode::from(code)
}

/// The single-threaded async runtime the AWS and handler commands run on; on failure the message is
/// printed and the exit code ([`exit::FAILED`]) returned.
pub fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            exit::FAILED
        })
}

#[cfg(feature = "aws")]
/// AWS clients for the CLI's reads and set-up: the default credential chain, an optional region
/// and endpoint (a local emulator), and few retries so an unreachable endpoint fails fast.
pub async fn aws_clients(region: Option<String>, endpoint_url: Option<String>) -> nodewright_aws::AwsClients {
    nodewright_aws::AwsClients::load(&nodewright_aws::ClientOptions {
        region,
        endpoint_url,
        static_credentials: false,
        max_attempts: Some(2),
    })
    .await
}

#[cfg(feature = "aws")]
/// One line of advice for a failed AWS call, printed after the error as `hint: ...`: what to check
/// for an endpoint that does not answer, missing or refused credentials, a missing region or table.
pub fn aws_hint(e: &nodewright_aws::Error) -> &'static str {
    let nodewright_aws::Error::Aws { code, message, .. } = e else {
        return "see the message above; AWS_PROFILE, AWS_REGION and --endpoint-url select what is called";
    };
    let code = code.as_str();
    if message.contains("no credentials") || message.contains("credential provider") {
        "no AWS credentials found: set AWS_PROFILE (after `aws sso login` if it uses SSO) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    } else if message.contains("Missing Region") {
        "no AWS region: pass --region or set AWS_REGION"
    } else if code.contains("AccessDenied")
        || code.contains("UnrecognizedClient")
        || code.contains("InvalidClientTokenId")
        || code.contains("SignatureDoesNotMatch")
        || code.contains("Token")
    {
        "the credentials were refused: check AWS_PROFILE (or the AWS_ACCESS_KEY_ID in use) and the role's permissions"
    } else if code == "ResourceNotFoundException" {
        "the table does not exist there: check --table-prefix and --region (or run `nodewright create-tables`)"
    } else if code == "DispatchFailure" || code == "Timeout" {
        "is the endpoint reachable? check --endpoint-url / AWS_ENDPOINT_URL, --region and the network"
    } else {
        "see the AWS error code above; AWS_PROFILE, AWS_REGION and --endpoint-url select what is called"
    }
}

/// Reads NodePool / EC2NodeClass files as one configuration (a nodeClassRef may name a class in
/// any of them). Returns it with its warnings, or the exit code and message: [`exit::USAGE`] when a
/// file cannot be read, [`exit::INVALID`] with every file's errors.
pub fn load_config(files: &[std::path::PathBuf]) -> Result<(nodewright_core::Config, Vec<String>), (u8, String)> {
    let mut texts = Vec::with_capacity(files.len());
    for f in files {
        let text = read_file(f).map_err(|e| (exit::USAGE, format!("error: {e}")))?;
        texts.push((text, f.display().to_string()));
    }
    match nodewright_core::Config::parse_all_with(&texts, unknown_fields()) {
        (Some(config), diags) => Ok((config, diags.warnings)),
        (None, diags) => Err((
            exit::INVALID,
            format!("invalid configuration:\n{}", diags.errors.join("\n")),
        )),
    }
}

/// Reads a file or says clearly why not.
pub fn read_file(path: &std::path::Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > nodewright_core::model::MAX_INPUT_BYTES as u64 {
        return Err(format!(
            "{}: {} bytes is over the {} byte limit",
            path.display(),
            meta.len(),
            nodewright_core::model::MAX_INPUT_BYTES
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}
