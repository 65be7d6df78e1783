//! `nodewright invoke FUNCTION --event FILE`: one handler, one event, in-process, against the
//! in-memory stand-ins (docs/cli.md). For debugging an event without AWS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nodewright_core::Config;
use nodewright_core::ports::state::StateView;
use nodewright_handlers::adapters::memory::{MemoryCapacity, MemoryCluster, MemoryState};
use nodewright_handlers::event::parse_bytes;
use nodewright_handlers::{Deps, Function, Parsed, Settings, handle};

use crate::exit;
use crate::report::table;

#[derive(clap::Args)]
pub struct Args {
    /// pod-pending, spot-interruption, state-change or consolidation.
    function: String,
    /// The event (EventBridge JSON), e.g. one of events/*.json.
    #[arg(long)]
    event: PathBuf,
    /// NodePool / EC2NodeClass configuration.
    #[arg(long = "nodepool", default_value = "examples/nodepools.yaml")]
    nodepools: Vec<PathBuf>,
    /// Cluster name the stand-ins are scoped to (the sample events use "demo").
    #[arg(long, default_value = "demo")]
    cluster: String,
    #[arg(long, default_value = "us-east-1", env = "AWS_REGION")]
    region: String,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
    /// Keep the stand-ins' state in DIR between runs: read DIR/state.json (and DIR/events.json,
    /// the completed events) when present, write them back after the event. `nodewright avail
    /// --state DIR` shows the result.
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
}

/// Completed events, kept next to the state so a replayed event is recognised in a later run.
const EVENTS_FILE: &str = "events.json";

fn load_state(
    dir: &Path,
    cluster: &str,
) -> Result<(MemoryState, Vec<nodewright_core::ports::state::ClaimRecord>), String> {
    let path = dir.join(crate::avail::STATE_FILE);
    if !path.exists() {
        return Ok((MemoryState::new(), Vec::new()));
    }
    let view = StateView::from_json(&crate::read_file(&path)?).map_err(|e| format!("{}: {e}", path.display()))?;
    if view.cluster != cluster {
        return Err(format!(
            "{}: holds cluster {:?}, not --cluster {cluster:?}",
            path.display(),
            view.cluster
        ));
    }
    let state = MemoryState::from_view(&view);
    let events = dir.join(EVENTS_FILE);
    if events.exists() {
        let done: BTreeMap<String, String> = serde_json::from_str(&crate::read_file(&events)?)
            .map_err(|e| format!("{}: not a map of event id to outcome: {e}", events.display()))?;
        state.restore_completed_events(&done);
    }
    Ok((state, view.claims))
}

fn save_state(dir: &Path, cluster: &str, state: &MemoryState, now: i64) -> Result<(), String> {
    crate::avail::write_state_dir(dir, &state.view(cluster, now))?;
    let events = serde_json::to_string_pretty(&state.completed_events()).unwrap_or_default();
    let path = dir.join(EVENTS_FILE);
    std::fs::write(&path, events).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn run(args: &Args) -> u8 {
    let Some(function) = Function::parse(&args.function) else {
        eprintln!(
            "error: unknown function {:?} (expected one of: {})",
            args.function,
            Function::ALL.map(|f| f.name()).join(", ")
        );
        return exit::USAGE;
    };
    let mut config = Config::default();
    for f in &args.nodepools {
        let text = match crate::read_file(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        };
        match Config::parse_strict(&text, &f.display().to_string()) {
            Ok((c, _)) => config.merge(c),
            Err(e) => {
                eprintln!("{e}");
                return exit::INVALID;
            }
        }
    }
    let bytes = match std::fs::read(&args.event) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", args.event.display());
            return exit::USAGE;
        }
    };
    // One EventBridge event, or an SQS batch of them (EventBridge -> SQS -> Lambda), handled record
    // by record as the function does: a record that cannot be parsed is reported and dropped.
    let batch = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .filter(nodewright_handlers::event::is_sqs_batch);
    let records: Vec<(String, nodewright_handlers::Result<Parsed>)> = match &batch {
        Some(v) => match nodewright_handlers::event::parse_sqs_batch(v) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}: {e}", args.event.display());
                return exit::INVALID;
            }
        },
        None => match parse_bytes(&bytes) {
            Ok(p) => vec![(String::new(), Ok(p))],
            Err(e) => {
                eprintln!("error: {}: {e}", args.event.display());
                return exit::INVALID;
            }
        },
    };
    let settings = match Settings::new(&args.cluster, &args.region, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let (state, claims) = match &args.state {
        Some(dir) => match load_state(dir, &args.cluster) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        },
        None => (MemoryState::new(), Vec::new()),
    };
    let capacity = MemoryCapacity::new(&args.cluster, state.clone());
    capacity.resume_from_claims(&claims);
    let deps = Deps {
        settings,
        capacity,
        state: state.clone(),
        cluster: Some(MemoryCluster::new()),
        daemonsets: nodewright_handlers::DaemonSets::default(),
    };
    let runtime = match crate::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut code = exit::OK;
    let mut last_now = nodewright_core::ports::now_millis();
    for (record, parsed) in records {
        if !record.is_empty() && !args.json {
            println!("record {record}:");
        }
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: record {record}: {e} (dropped, as the function drops it)");
                code = exit::INVALID;
                continue;
            }
        };
        // A replayed event runs at its own time (sample files carry fixed dates; the handlers
        // refuse event times more than a day from their clock), else at the wall clock.
        let now = match &parsed {
            Parsed::Event(e) => e.envelope().time,
            Parsed::Ignore(_) => None,
        }
        .unwrap_or_else(nodewright_core::ports::now_millis);
        last_now = now;
        match runtime.block_on(handle(function, &deps, parsed, now)) {
            Ok(outcome) => print_outcome(&outcome, args.json),
            Err(e) => {
                eprintln!("error: {e}");
                code = exit::INVALID;
            }
        }
    }
    if let Some(dir) = &args.state
        && let Err(e) = save_state(dir, &args.cluster, &state, last_now)
    {
        eprintln!("error: cannot save the state: {e}");
        return exit::FAILED;
    }
    code
}

/// One outcome, as a table (or JSON with `--json`).
fn print_outcome(outcome: &nodewright_handlers::Outcome, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(outcome).unwrap_or_default());
    } else {
        println!("{} handled event {:?}", outcome.function, outcome.event_id);
        let mut t = table(["#", "action", "details"]);
        for (i, a) in outcome.actions.iter().enumerate() {
            let mut v = serde_json::to_value(a).unwrap_or_default();
            let name = v
                .as_object_mut()
                .and_then(|o| o.remove("action"))
                .and_then(|n| n.as_str().map(str::to_string))
                .unwrap_or_default();
            t.add_row(vec![(i + 1).to_string(), name, v.to_string()]);
        }
        println!("{t}");
    }
}
