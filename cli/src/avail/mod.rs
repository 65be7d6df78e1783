//! `nodewright avail`: what capacity exists per pool and instance type and how long a new pod would
//! wait, read from Nodewright's DynamoDB tables (any endpoint) or from a state file the simulator or
//! `invoke --state` wrote. docs/cli.md documents the flags, the JSON schema, the read cost and the
//! exit codes.

mod availability;
mod render;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(feature = "aws")]
use nodewright_aws::state::{StateStore, TableNames};
use nodewright_core::catalogue::OverheadConfig;
use nodewright_core::ports::state::{ReadCost, StateView};
use nodewright_core::{Catalogue, Config};

pub use availability::{Availability, Inputs, compute};

use crate::exit;

/// The file `--state DIR` reads (and the simulator and `invoke --state` write).
pub const STATE_FILE: &str = "state.json";

#[derive(clap::Args)]
pub struct Args {
    /// The EKS cluster whose state to read (the functions' NODEWRIGHT_CLUSTER_NAME).
    #[arg(long, env = "NODEWRIGHT_CLUSTER_NAME")]
    cluster: Option<String>,
    /// AWS region of the tables and of the catalogue's prices.
    #[arg(long, env = "AWS_REGION")]
    region: Option<String>,
    /// DynamoDB endpoint, e.g. a local emulator (default: AWS).
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// The tables' name prefix (the functions' NODEWRIGHT_TABLE_PREFIX; the stack's output TablePrefix).
    #[arg(long, env = "NODEWRIGHT_TABLE_PREFIX", default_value = "nodewright")]
    table_prefix: String,
    /// Read a state directory (DIR/state.json from `simulate --state-out` or `invoke --state`)
    /// instead of DynamoDB.
    #[arg(long, value_name = "DIR", conflicts_with = "endpoint_url")]
    state: Option<PathBuf>,
    /// The deployed NodePool YAML: enables Max (limits) and rows for pools with no nodes.
    #[arg(long = "nodepool", env = "NODEWRIGHT_NODEPOOLS_FILE")]
    nodepools: Vec<PathBuf>,
    /// List every instance type the given NodePools admit, not only those with nodes.
    #[arg(long)]
    all_types: bool,
    /// Print JSON (schema in docs/cli.md); with --watch, one document per line per refresh.
    #[arg(long)]
    json: bool,
    /// Refresh every SECONDS (default 5) until interrupted.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "5")]
    watch: Option<f64>,
    /// No colours (also when NO_COLOR is set or the output is not a terminal).
    #[arg(long)]
    no_color: bool,
}

/// Why a read failed, and the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: exit::USAGE,
            message: message.into(),
        }
    }
}

enum Source {
    #[cfg(feature = "aws")]
    Dynamo {
        store: StateStore,
        endpoint: String,
    },
    File(PathBuf),
}

impl Source {
    async fn read(&self) -> Result<(StateView, Option<ReadCost>), Failure> {
        match self {
            Source::File(dir) => read_state_dir(dir).map(|v| (v, None)),
            #[cfg(feature = "aws")]
            Source::Dynamo { store, endpoint } => {
                let before = store.read_cost();
                let view = store
                    .read_view(nodewright_core::ports::now_millis())
                    .await
                    .map_err(|e| unreachable(&e, endpoint, store))?;
                let after = store.read_cost();
                Ok((
                    view,
                    Some(ReadCost {
                        requests: after.requests - before.requests,
                        read_units: after.read_units - before.read_units,
                    }),
                ))
            }
        }
    }
}

fn read_state_dir(dir: &Path) -> Result<StateView, Failure> {
    let path = dir.join(STATE_FILE);
    let text = crate::read_file(&path).map_err(Failure::usage)?;
    StateView::from_json(&text).map_err(|e| Failure::usage(format!("{}: {e}", path.display())))
}

/// Writes `view` to DIR/state.json (creating DIR), atomically: a watcher never reads half a file.
pub fn write_state_dir(dir: &Path, view: &StateView) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(STATE_FILE);
    let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
    std::fs::write(&tmp, view.to_json()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(feature = "aws")]
/// A short, actionable message for a failed read: no SDK dump, no stack trace.
fn unreachable(e: &nodewright_aws::Error, endpoint: &str, store: &StateStore) -> Failure {
    let hint = match e {
        nodewright_aws::Error::Aws { code, .. } if code == "ResourceNotFoundException" => format!(
            "the table {} does not exist there: check --table-prefix (the stack's output TablePrefix) and --region",
            store.table_name(nodewright_aws::state::Table::Claims)
        ),
        nodewright_aws::Error::Aws { code, .. }
            if code.contains("AccessDenied") || code.contains("UnrecognizedClient") || code.contains("Token") =>
        {
            "the credentials were refused: check AWS_PROFILE and that the role may dynamodb:Query the tables".into()
        }
        _ => "is the endpoint reachable and are credentials configured?".into(),
    };
    Failure {
        code: exit::UNREACHABLE,
        message: format!("cannot read Nodewright state from DynamoDB at {endpoint}: {e}\nhint: {hint}"),
    }
}

fn load_config(files: &[PathBuf]) -> Result<Option<Config>, Failure> {
    if files.is_empty() {
        return Ok(None);
    }
    crate::load_config(files)
        .map(|(c, _)| Some(c))
        .map_err(|(code, message)| Failure { code, message })
}

async fn source(args: &Args) -> Result<(Source, String), Failure> {
    if let Some(dir) = &args.state {
        let region = args.region.clone().unwrap_or_else(|| "us-east-1".into());
        return Ok((Source::File(dir.clone()), region));
    }
    let Some(cluster) = &args.cluster else {
        return Err(Failure::usage(
            "--cluster is required (or NODEWRIGHT_CLUSTER_NAME), or read a state file with --state DIR",
        ));
    };
    dynamo_source(args, cluster).await
}

#[cfg(not(feature = "aws"))]
async fn dynamo_source(_: &Args, _: &str) -> Result<(Source, String), Failure> {
    Err(Failure::usage(
        "this nodewright was built without AWS support (--no-default-features): read a state file with --state DIR, \
         or rebuild with the default features to read DynamoDB",
    ))
}

#[cfg(feature = "aws")]
async fn dynamo_source(args: &Args, cluster: &str) -> Result<(Source, String), Failure> {
    let clients = crate::aws_clients(args.region.clone(), args.endpoint_url.clone()).await;
    let Some(region) = clients.sdk.region().map(|r| r.to_string()) else {
        return Err(Failure::usage("no AWS region: pass --region or set AWS_REGION"));
    };
    let tables = TableNames::new(&args.table_prefix).map_err(|e| Failure::usage(e.to_string()))?;
    let store = StateStore::new(clients.dynamodb.clone(), tables, cluster.to_string())
        .map_err(|e| Failure::usage(e.to_string()))?;
    let endpoint = args
        .endpoint_url
        .clone()
        .unwrap_or_else(|| format!("dynamodb.{region}.amazonaws.com"));
    Ok((Source::Dynamo { store, endpoint }, region))
}

/// One refresh: read, compute, and the text or JSON to print.
struct Frame {
    availability: Availability,
    reads: Option<ReadCost>,
}

fn json_of(frame: &Frame, pretty: bool) -> String {
    let mut v = serde_json::to_value(&frame.availability).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("schema".into(), "nodewright-avail/v1".into());
        obj.insert(
            "reads".into(),
            serde_json::to_value(frame.reads).unwrap_or(serde_json::Value::Null),
        );
    }
    if pretty {
        serde_json::to_string_pretty(&v).unwrap_or_default()
    } else {
        v.to_string()
    }
}

fn text_of(frame: &Frame, colour: bool) -> String {
    let mut out = render::render(&frame.availability, colour, None);
    if let Some(r) = frame.reads {
        out.push_str(&format!(
            "read {} DynamoDB requests, {:.1} read capacity units\n",
            r.requests, r.read_units
        ));
    }
    out
}

pub fn run(args: &Args) -> u8 {
    if let Some(s) = args.watch
        && !(s.is_finite() && s >= 0.5)
    {
        eprintln!("error: --watch: {s} must be at least 0.5 seconds");
        return exit::USAGE;
    }
    let runtime = match crate::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    match runtime.block_on(avail(args)) {
        Ok(code) => code,
        Err(f) => {
            eprintln!("error: {}", f.message);
            f.code
        }
    }
}

async fn avail(args: &Args) -> Result<u8, Failure> {
    let config = load_config(&args.nodepools)?;
    let (source, region) = source(args).await?;
    let types = Catalogue::embedded().instance_types(&region, &OverheadConfig::default());
    if types.is_empty() {
        return Err(Failure::usage(format!("--region: {region:?} is not in the catalogue")));
    }
    let stdout = std::io::stdout();
    let tty = stdout.is_terminal();
    let colour = tty && !args.no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let frame = |view: &StateView, reads| Frame {
        availability: compute(&Inputs {
            view,
            config: config.as_ref(),
            types: &types,
            all_types: args.all_types,
        }),
        reads,
    };

    let Some(every) = args.watch else {
        let (view, reads) = source.read().await?;
        let f = frame(&view, reads);
        if args.json {
            println!("{}", json_of(&f, true));
        } else if f.availability.is_empty() {
            eprintln!("{}", empty_message(&view, args));
            return Ok(exit::EMPTY);
        } else {
            print!("{}", text_of(&f, colour));
        }
        return Ok(if f.availability.is_empty() {
            exit::EMPTY
        } else {
            exit::OK
        });
    };

    // Watch: redraw in place on a terminal, append frames otherwise; a failed read is shown and
    // retried at the next refresh (a watch outlives a blip).
    loop {
        let body = match source.read().await {
            Ok((view, reads)) => {
                let f = frame(&view, reads);
                if args.json {
                    json_of(&f, false) + "\n"
                } else if f.availability.is_empty() {
                    empty_message(&view, args) + "\n"
                } else {
                    text_of(&f, colour)
                }
            }
            Err(f) if f.code == exit::UNREACHABLE => format!("error: {}\n", f.message),
            Err(f) => return Err(f),
        };
        let mut out = stdout.lock();
        let written = if tty && !args.json {
            writeln!(out, "\x1b[H\x1b[2J{body}refreshing every {every} s; Ctrl-C to stop")
        } else {
            write!(out, "{body}{}", if args.json { "" } else { "\n" })
        };
        // A closed pipe (`| head`) ends the watch quietly.
        if written.and_then(|()| out.flush()).is_err() {
            return Ok(exit::OK);
        }
        drop(out);
        tokio::time::sleep(Duration::from_secs_f64(every)).await;
    }
}

fn empty_message(view: &StateView, args: &Args) -> String {
    match &args.state {
        Some(dir) => format!(
            "no nodes, reservations or pool usage in {} (cluster {})",
            dir.join(STATE_FILE).display(),
            view.cluster
        ),
        None => format!(
            "no Nodewright state for cluster {:?} in the {}-* tables: nothing launched yet, or a different \
             --cluster / --table-prefix / --region",
            view.cluster, args.table_prefix
        ),
    }
}
