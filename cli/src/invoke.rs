//! `nodewright invoke FUNCTION --event FILE`: one handler, one event (or an SQS batch of them),
//! in-process, against the in-memory stand-ins (docs/cli.md). For debugging an event without AWS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use comfy_table::Table;
use nodewright_core::ports::state::StateView;
use nodewright_core::time::{format_rfc3339, parse_rfc3339_millis, restamp_event};
use nodewright_handlers::adapters::handle_in_memory;
use nodewright_handlers::adapters::memory::{MemoryCapacity, MemoryCluster, MemoryState};
use nodewright_handlers::event::{is_sqs_batch, parse_sqs_batch, parse_value};
use nodewright_handlers::{Deps, Function, Outcome, Parsed, Settings};
use serde::Serialize;
use serde_json::Value;

use crate::exit;
use crate::report::{self, keep_words, table_with_width};

#[derive(clap::Args)]
pub struct Args {
    /// pod-pending, spot-interruption, state-change or consolidation.
    function: String,
    /// The event: one EventBridge event, or an SQS batch of them (`{"Records": [...]}`), e.g. one
    /// of events/*.json.
    #[arg(long)]
    event: PathBuf,
    /// NodePool / EC2NodeClass configuration.
    #[arg(long = "nodepool", default_value = DEFAULT_NODEPOOLS)]
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
    /// The handlers' clock: `state` (the time DIR/state.json was saved at; the default with a
    /// saved state), `event` (the event's own time; the default otherwise), `wall`, or an RFC 3339
    /// time. Run at another time than its own, the event is moved to it (every time in it shifted
    /// by one offset, as `nodewright restamp` does).
    #[arg(long, value_name = "state|event|wall|RFC3339")]
    now: Option<String>,
}

const DEFAULT_NODEPOOLS: &str = "examples/nodepools.yaml";

/// Completed events, kept next to the state so a replayed event is recognised in a later run.
const EVENTS_FILE: &str = "events.json";

/// The state read from `--state DIR`: the stand-in, its claims, and when it was saved.
struct Loaded {
    state: MemoryState,
    claims: Vec<nodewright_core::ports::state::ClaimRecord>,
    at: Option<i64>,
}

fn load_state(dir: &Path, cluster: &str) -> Result<Loaded, String> {
    let path = dir.join(crate::avail::STATE_FILE);
    if !path.exists() {
        return Ok(Loaded {
            state: MemoryState::new(),
            claims: Vec::new(),
            at: None,
        });
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
    Ok(Loaded {
        state,
        claims: view.claims,
        at: Some(view.at),
    })
}

fn save_state(dir: &Path, cluster: &str, state: &MemoryState, now: i64) -> Result<(), String> {
    crate::avail::write_state_dir(dir, &state.view(cluster, now))?;
    let events = serde_json::to_string_pretty(&state.completed_events()).unwrap_or_default();
    let path = dir.join(EVENTS_FILE);
    std::fs::write(&path, events).map_err(|e| format!("{}: {e}", path.display()))
}

/// The handlers' clock for this run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Clock {
    /// Each event at its own time (the wall clock for one without).
    Event,
    /// Every event moved to this time.
    At(i64),
}

/// `--now` against what the state says; `state_at` is when the loaded state was saved.
fn clock(now: Option<&str>, state_at: Option<i64>, wall: i64) -> Result<Clock, String> {
    match now {
        None => Ok(state_at.map_or(Clock::Event, Clock::At)),
        Some("event") => Ok(Clock::Event),
        Some("wall") => Ok(Clock::At(wall)),
        Some("state") => state_at
            .map(Clock::At)
            .ok_or_else(|| "--now state: there is no saved state (pass --state DIR holding a state.json)".into()),
        Some(t) => parse_rfc3339_millis(t)
            .map(Clock::At)
            .ok_or_else(|| format!("--now: {t:?} is not state, event, wall or an RFC 3339 time")),
    }
}

/// Moves one EventBridge event (JSON) to `at`; an event without an RFC 3339 `time` is left as it is.
fn move_event(event: &mut Value, at: i64) {
    restamp_event(event, at);
}

/// Moves every record's body of an SQS batch to `at` (bodies that are not JSON are left for the
/// parser to report).
fn move_batch(batch: &mut Value, at: i64) {
    let Some(records) = batch.get_mut("Records").and_then(Value::as_array_mut) else {
        return;
    };
    for r in records {
        let Some(body) = r.get_mut("body") else { continue };
        let Some(mut event) = body.as_str().and_then(|b| serde_json::from_str::<Value>(b).ok()) else {
            continue;
        };
        move_event(&mut event, at);
        *body = Value::String(event.to_string());
    }
}

/// What became of one record of an SQS batch, as the function treats it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordReport {
    message_id: String,
    /// `handled`; `dropped` (an error retrying cannot fix: logged and acknowledged); `retry` (a
    /// transient error: listed in batchItemFailures, so SQS delivers it again).
    result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The `--json` document for an SQS batch: per record, and the response the function returns.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchReport {
    records: Vec<RecordReport>,
    batch_item_failures: Vec<BatchItemFailure>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchItemFailure {
    item_identifier: String,
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
    let mut files = Vec::with_capacity(args.nodepools.len());
    for f in &args.nodepools {
        match crate::paths::default_file(f, DEFAULT_NODEPOOLS, "--nodepool") {
            Ok(f) => files.push(f),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        }
    }
    let config = match crate::load_config(&files) {
        Ok((config, _)) => config,
        Err((code, message)) => {
            eprintln!("{message}");
            return code;
        }
    };
    let text = match crate::read_file(&args.event) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {e}");
            return exit::USAGE;
        }
    };
    let mut payload: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {}: not JSON: {e}", args.event.display());
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
    let loaded = match &args.state {
        Some(dir) => match load_state(dir, &args.cluster) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return exit::USAGE;
            }
        },
        None => Loaded {
            state: MemoryState::new(),
            claims: Vec::new(),
            at: None,
        },
    };
    let clock = match clock(args.now.as_deref(), loaded.at, nodewright_core::ports::now_millis()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let batch = is_sqs_batch(&payload);
    if let Clock::At(at) = clock {
        if batch {
            move_batch(&mut payload, at);
        } else {
            move_event(&mut payload, at);
        }
        if !args.json {
            let why = match args.now.as_deref() {
                None => "the saved state's time; --now event|wall|TIME for another".to_string(),
                Some(n) => format!("--now {n}"),
            };
            println!("clock: {} ({why})", format_rfc3339(at));
        }
    }
    // One EventBridge event, or an SQS batch of them (EventBridge -> SQS -> Lambda), handled record
    // by record as the function does.
    let records: Vec<(String, nodewright_handlers::Result<Parsed>)> = if batch {
        match parse_sqs_batch(&payload) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {}: {e}", args.event.display());
                return exit::INVALID;
            }
        }
    } else {
        match parse_value(&payload) {
            Ok(p) => vec![(String::new(), Ok(p))],
            Err(e) => {
                eprintln!("error: {}: {e}", args.event.display());
                return exit::INVALID;
            }
        }
    };
    let state = loaded.state;
    let capacity = MemoryCapacity::new(&args.cluster);
    capacity.resume_from_claims(&loaded.claims);
    let deps = Deps {
        settings,
        capacity,
        state: state.clone(),
        cluster: Some(MemoryCluster::new()),
        daemonsets: nodewright_handlers::DaemonSets::default(),
        consolidated: Default::default(),
    };
    let runtime = match crate::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let width = report::width();
    let mut code = exit::OK;
    let mut last_now = loaded.at.unwrap_or_else(nodewright_core::ports::now_millis);
    let mut reports = Vec::new();
    for (message_id, parsed) in records {
        let result = parsed.and_then(|parsed| {
            let now = match (clock, &parsed) {
                (Clock::At(at), _) => at,
                (Clock::Event, Parsed::Event(e)) => {
                    e.envelope().time.unwrap_or_else(nodewright_core::ports::now_millis)
                }
                (Clock::Event, Parsed::Ignore(_)) => nodewright_core::ports::now_millis(),
            };
            last_now = now;
            runtime.block_on(handle_in_memory(function, &deps, parsed, now))
        });
        if !batch {
            match result {
                Ok(outcome) => print_outcome(&outcome, args.json, width),
                Err(e) => {
                    eprintln!("error: {e}");
                    code = exit::INVALID;
                }
            }
            continue;
        }
        let report = match result {
            Ok(outcome) => RecordReport {
                message_id,
                result: "handled",
                outcome: Some(outcome),
                error: None,
            },
            Err(e) => {
                code = exit::INVALID;
                RecordReport {
                    message_id,
                    result: if e.is_retryable() { "retry" } else { "dropped" },
                    outcome: None,
                    error: Some(e.to_string()),
                }
            }
        };
        if !args.json {
            print_record(&report, width);
        }
        reports.push(report);
    }
    if batch {
        let failures: Vec<BatchItemFailure> = reports
            .iter()
            .filter(|r| r.result == "retry")
            .map(|r| BatchItemFailure {
                item_identifier: r.message_id.clone(),
            })
            .collect();
        if args.json {
            let doc = BatchReport {
                records: reports,
                batch_item_failures: failures,
            };
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        } else {
            let ids: Vec<&str> = failures.iter().map(|f| f.item_identifier.as_str()).collect();
            println!(
                "batchItemFailures: {}",
                if ids.is_empty() {
                    "none".to_string()
                } else {
                    ids.join(", ")
                }
            );
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

/// One record of a batch: its outcome, or why the function drops it or has SQS deliver it again.
fn print_record(r: &RecordReport, width: u16) {
    match (&r.outcome, &r.error) {
        (Some(outcome), _) => {
            print!("record {}: ", r.message_id);
            print_outcome(outcome, false, width);
        }
        (None, Some(e)) if r.result == "retry" => println!(
            "record {}: failed, listed in batchItemFailures (SQS delivers it again): {e}",
            r.message_id
        ),
        (None, e) => println!(
            "record {}: dropped (an error retrying cannot fix; the function logs and acknowledges it): {}",
            r.message_id,
            e.as_deref().unwrap_or_default()
        ),
    }
}

/// One outcome, as a table (or JSON with `--json`).
fn print_outcome(outcome: &Outcome, json: bool, width: u16) {
    if json {
        println!("{}", serde_json::to_string_pretty(outcome).unwrap_or_default());
    } else {
        if outcome.actions.is_empty() {
            println!("{} handled event {}: nothing to do", outcome.function, outcome.event_id);
        } else {
            println!("{} handled event {}", outcome.function, outcome.event_id);
            println!("{}", outcome_table(outcome, width));
        }
    }
}

/// One row per action: its name and its fields as `key=value`.
fn outcome_table(outcome: &Outcome, width: u16) -> Table {
    let mut t = table_with_width(["#", "action", "details"], width);
    for (i, a) in outcome.actions.iter().enumerate() {
        let mut v = serde_json::to_value(a).unwrap_or_default();
        let name = v
            .as_object_mut()
            .and_then(|o| o.remove("action"))
            .and_then(|n| n.as_str().map(str::to_string))
            .unwrap_or_default();
        t.add_row(vec![(i + 1).to_string(), name, details(&v)]);
    }
    keep_words(&mut t);
    t
}

/// Fields said first, in this order (the rest follow by name).
const FIRST: [&str; 9] = [
    "claim",
    "pool",
    "node",
    "instanceType",
    "capacityType",
    "zone",
    "instanceId",
    "pods",
    "pricePerHour",
];
/// Fields whose values are sentences: said last, after the short ones.
const PROSE: [&str; 5] = ["reason", "error", "why", "outcome", "to"];
/// List items shown before "+N more".
const LIST_ITEMS: usize = 5;

/// An action's fields as `key=value` words: false flags and absent values left out, true flags by
/// their name alone, lists shortened, prices to four places, sentences last.
fn details(v: &Value) -> String {
    let Some(fields) = v.as_object() else {
        return scalar(v);
    };
    let mut short = Vec::new();
    let mut prose = Vec::new();
    let mut ordered: Vec<(&String, &Value)> = fields.iter().collect();
    ordered.sort_by_key(|(k, _)| FIRST.iter().position(|f| f == k).unwrap_or(FIRST.len()));
    for (k, v) in ordered {
        let said = match v {
            Value::Null | Value::Bool(false) => continue,
            Value::Bool(true) => k.clone(),
            Value::Array(items) => {
                let mut list: Vec<String> = items.iter().take(LIST_ITEMS).map(scalar).collect();
                if items.len() > LIST_ITEMS {
                    list.push(format!("+{} more", items.len() - LIST_ITEMS));
                }
                format!("{k}=[{}]", list.join(", "))
            }
            Value::Object(_) => format!("{k}=({})", details(v)),
            _ => format!("{k}={}", scalar(v)),
        };
        if PROSE.contains(&k.as_str()) {
            prose.push(said);
        } else {
            short.push(said);
        }
    }
    short.extend(prose);
    short.join(" ")
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            format!("{:.4}", report::money(x))
        }
        Value::Object(_) => details(v),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use nodewright_core::CapacityType;
    use nodewright_handlers::Action;

    use super::*;
    use crate::report::testing::assert_fits;

    fn outcome() -> Outcome {
        let mut o = Outcome::new("pod-pending", "6a7e8f9b-1c2d-4e3f-8a9b-0c1d2e3f4a5b");
        o.push(Action::Launched {
            claim: "claim-3f9a1c2b7d4e8f60a1b2c3d4-1".into(),
            pool: "inference-a10g".into(),
            instance_id: "i-0123456789abcdef0".into(),
            instance_type: "g5.12xlarge".into(),
            zone: "us-east-1a".into(),
            capacity_type: CapacityType::OnDemand,
            price_per_hour: Some(5.672),
            pods: 7,
            adopted: false,
            fell_back_to_on_demand: true,
        });
        o.push(Action::SkippedPods {
            pods: (0..9).map(|i| format!("shop/checkout-7d9f8b-0000{i}")).collect(),
            reason: "held by another invocation's reservation (it will launch them or release them)".into(),
        });
        o.push(Action::Terminated {
            instance_ids: vec!["i-0123456789abcdef0".into()],
            reason: "claim claim-1 was not registered within 15m0s of launch".into(),
        });
        o
    }

    #[test]
    fn details_are_key_value_words_not_json() {
        let o = outcome();
        let v = serde_json::to_value(&o.actions[0]).expect("json");
        let said = details(&v);
        assert!(!said.contains('{') && !said.contains('"'), "{said}");
        assert!(said.contains("instanceId=i-0123456789abcdef0"), "{said}");
        assert!(said.contains("pricePerHour=5.6720"), "{said}");
        assert!(
            said.contains("fellBackToOnDemand") && !said.contains("adopted"),
            "{said}"
        );
        let said = details(&serde_json::to_value(&o.actions[1]).expect("json"));
        assert!(said.contains("+4 more]"), "{said}");
        assert!(
            said.ends_with("(it will launch them or release them)"),
            "prose last: {said}"
        );
    }

    #[test]
    fn outcome_table_fits_80_and_100_columns() {
        for width in [80, 100] {
            let out = assert_fits(&outcome_table(&outcome(), width), width, "invoke");
            assert!(out.contains("launched") && out.contains("skippedPods"), "{out}");
        }
    }

    #[test]
    fn the_clock_is_the_state_s_unless_told() {
        let wall = 2_000_000_000_000;
        assert_eq!(clock(None, None, wall), Ok(Clock::Event));
        assert_eq!(clock(None, Some(42), wall), Ok(Clock::At(42)));
        assert_eq!(clock(Some("event"), Some(42), wall), Ok(Clock::Event));
        assert_eq!(clock(Some("wall"), Some(42), wall), Ok(Clock::At(wall)));
        assert_eq!(clock(Some("state"), Some(42), wall), Ok(Clock::At(42)));
        assert!(clock(Some("state"), None, wall).is_err());
        assert_eq!(
            clock(Some("2026-11-21T10:00:00Z"), None, wall),
            Ok(Clock::At(1_795_255_200_000))
        );
        assert!(clock(Some("yesterday"), None, wall).unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn batches_move_every_record_body() {
        let event =
            serde_json::json!({"id": "e", "time": "2026-11-21T10:00:00Z", "detail": {"sentAt": 1_795_255_200_000_i64}});
        let mut batch = serde_json::json!({"Records": [{"messageId": "m", "body": event.to_string()}, {"messageId": "bad", "body": "not json"}]});
        move_batch(&mut batch, 1_795_255_200_000 + 3_600_000);
        let body: Value = serde_json::from_str(batch["Records"][0]["body"].as_str().expect("body")).expect("json body");
        assert_eq!(body["time"], "2026-11-21T11:00:00Z");
        assert_eq!(body["detail"]["sentAt"], 1_795_255_200_000_i64 + 3_600_000);
        assert_eq!(batch["Records"][1]["body"], "not json");
    }
}
