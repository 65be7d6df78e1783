//! `nodewright invoke FUNCTION --event FILE`: one handler, one event, in-process, against the
//! in-memory stand-ins (docs/cli.md). For debugging an event without AWS.

use std::path::PathBuf;

use nodewright_core::Config;
use nodewright_handlers::adapters::memory::{MemoryCapacity, MemoryCluster, MemoryState};
use nodewright_handlers::event::parse_bytes;
use nodewright_handlers::{Deps, Function, Settings, handle};

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
    let parsed = match parse_bytes(&bytes) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}: {e}", args.event.display());
            return exit::INVALID;
        }
    };
    let settings = match Settings::new(&args.cluster, &args.region, config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let state = MemoryState::new();
    let deps = Deps {
        settings,
        capacity: MemoryCapacity::new(&args.cluster, state.clone()),
        state,
        cluster: Some(MemoryCluster::new()),
        daemonsets: Vec::new(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::USAGE;
        }
    };
    let now = nodewright_aws::now_millis();
    match runtime.block_on(handle(function, &deps, parsed, now)) {
        Ok(outcome) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&outcome).unwrap_or_default());
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
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::INVALID
        }
    }
}
