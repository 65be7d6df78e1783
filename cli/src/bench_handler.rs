//! `nodewright bench-handler`: the pod-pending handler's decision time, event in -> launch
//! requests out, for batches of 10, 100 and 1,000 pending pods with the real catalogue and the
//! in-memory stand-ins (so no emulator or network time is counted). Prints p50/p99 per size.

use std::time::Instant;

use nodewright_core::Config;
use nodewright_core::model::cluster_event::{PendingPod, PodPending, SCHEMA_VERSION};
use nodewright_handlers::adapters::memory::{MemoryCapacity, MemoryCluster, MemoryState};
use nodewright_handlers::event::{Envelope, Event, Parsed};
use nodewright_handlers::{Deps, Function, Settings, handle};

use crate::exit;
use crate::report::table;
use crate::workloads::Rng;

#[derive(clap::Args)]
pub struct Args {
    /// Batch sizes (pending pods per event).
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    sizes: Vec<usize>,
    /// Invocations per size (each on fresh state).
    #[arg(long, default_value_t = 50)]
    runs: usize,
    #[arg(long = "nodepool", default_value = "examples/nodepools.yaml")]
    nodepools: std::path::PathBuf,
}

fn batch(n: usize, seed: u64) -> Vec<PendingPod> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let mut pod = nodewright_core::Pod {
                uid: format!("uid-{seed}-{i}"),
                name: format!("web-{i}"),
                namespace: "bench".into(),
                ..Default::default()
            };
            let cpu = [250, 500, 1000, 2000][rng.below(4) as usize];
            let mem = [512, 1024, 2048, 4096][rng.below(4) as usize];
            let _ = pod.requests.set_quantity("cpu", &format!("{cpu}m"));
            let _ = pod.requests.set_quantity("memory", &format!("{mem}Mi"));
            let _ = pod.requests.set_quantity("pods", "1");
            PendingPod {
                resource_version: "1".into(),
                created_at: 0,
                pod,
            }
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(args: &Args) -> u8 {
    let text = match crate::read_file(&args.nodepools) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let config = match Config::parse_strict(&text, &args.nodepools.display().to_string()) {
        Ok((c, _)) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit::INVALID;
        }
    };
    let Ok(settings) = Settings::new("bench", "us-east-1", config) else {
        eprintln!("error: no catalogue for us-east-1");
        return exit::USAGE;
    };
    let runtime = match crate::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let mut t = table(["pods", "runs", "p50 ms", "p99 ms", "max ms", "launches/run"]);
    for &size in &args.sizes {
        let mut times = Vec::with_capacity(args.runs);
        let mut launches = 0;
        for r in 0..args.runs.max(1) {
            let state = MemoryState::new();
            let deps = Deps {
                settings: settings.clone(),
                capacity: MemoryCapacity::new("bench", state.clone()),
                state,
                cluster: Some(MemoryCluster::new()),
                daemonsets: nodewright_handlers::DaemonSets::default(),
            };
            let detail = PodPending {
                schema_version: SCHEMA_VERSION,
                cluster: "bench".into(),
                batch_id: format!("b{r}"),
                part: 1,
                parts: 1,
                sent_at: 0,
                pods: batch(size, r as u64 + 1),
            };
            let envelope = Envelope {
                id: format!("bench-{size}-{r}"),
                source: "nodewright.cluster".into(),
                detail_type: "Pod Pending".into(),
                time: None,
                region: None,
            };
            let event = Parsed::Event(Event::PodPending(envelope, Box::new(detail)));
            let start = Instant::now();
            let outcome = runtime.block_on(handle(Function::PodPending, &deps, event, 1_795_255_200_000));
            times.push(start.elapsed().as_secs_f64() * 1000.0);
            match outcome {
                Ok(o) => launches += o.launched(),
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::INVALID;
                }
            }
        }
        times.sort_by(f64::total_cmp);
        t.add_row(vec![
            size.to_string(),
            times.len().to_string(),
            format!("{:.2}", percentile(&times, 0.5)),
            format!("{:.2}", percentile(&times, 0.99)),
            format!("{:.2}", times.last().copied().unwrap_or(0.0)),
            format!("{:.1}", launches as f64 / times.len() as f64),
        ]);
    }
    println!("pod-pending decision time (in-memory adapters; event in -> launch requests out)");
    println!("{t}");
    exit::OK
}
