//! `nodewright bench-handler`: the pod-pending handler's decision time, event in -> launch
//! requests out, for batches of 10, 100 and 1,000 pending pods with the real catalogue and the
//! in-memory stand-ins (so no emulator or network time is counted). Prints p50/p99 per size.

use std::time::Instant;

use nodewright_core::model::cluster_event::{PendingPod, PodPending, SCHEMA_VERSION};
use nodewright_handlers::adapters::handle_in_memory;
use nodewright_handlers::adapters::memory::{MemoryCapacity, MemoryCluster, MemoryState};
use nodewright_handlers::event::{Envelope, Event, Parsed};
use nodewright_handlers::{Deps, Function, Settings};

use crate::exit;
use crate::report::{self, rows_or_transposed};
use crate::workloads::Rng;

const DEFAULT_NODEPOOLS: &str = "examples/nodepools.yaml";

/// The handler's clock; the batches are sent at it (the handler refuses events a day away).
const NOW: i64 = 1_795_255_200_000;

#[derive(clap::Args)]
pub struct Args {
    /// Batch sizes (pending pods per event).
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    sizes: Vec<usize>,
    /// Invocations per size (each on fresh state).
    #[arg(long, default_value_t = 50)]
    runs: usize,
    #[arg(long = "nodepool", default_value = DEFAULT_NODEPOOLS)]
    nodepools: std::path::PathBuf,
}

/// `n` pending pods of four CPU and memory sizes, seeded.
pub(crate) fn batch(n: usize, seed: u64) -> Vec<PendingPod> {
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
                created_at: NOW - 10_000,
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
    let config = match crate::paths::default_file(&args.nodepools, DEFAULT_NODEPOOLS, "--nodepool")
        .map_err(|e| (exit::USAGE, format!("error: {e}")))
        .and_then(|f| crate::load_config(&[f]))
    {
        Ok((config, _)) => config,
        Err((code, message)) => {
            eprintln!("{message}");
            return code;
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
    let mut rows = Vec::new();
    for &size in &args.sizes {
        let mut times = Vec::with_capacity(args.runs);
        let mut launches = 0;
        for r in 0..args.runs.max(1) {
            let state = MemoryState::new();
            let deps = Deps {
                settings: settings.clone(),
                capacity: MemoryCapacity::new("bench"),
                state,
                cluster: Some(MemoryCluster::new()),
                daemonsets: nodewright_handlers::DaemonSets::default(),
                consolidated: Default::default(),
            };
            let detail = PodPending {
                schema_version: SCHEMA_VERSION,
                cluster: "bench".into(),
                batch_id: format!("b{r}"),
                part: 1,
                parts: 1,
                sent_at: NOW,
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
            let outcome = runtime.block_on(handle_in_memory(Function::PodPending, &deps, event, NOW));
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
        rows.push(vec![
            size.to_string(),
            times.len().to_string(),
            format!("{:.2}", percentile(&times, 0.5)),
            format!("{:.2}", percentile(&times, 0.99)),
            format!("{:.2}", times.last().copied().unwrap_or(0.0)),
            format!("{:.1}", launches as f64 / times.len() as f64),
        ]);
    }
    println!("pod-pending decision time (in-memory adapters; event in -> launch requests out)");
    println!("{}", times_table(&rows, report::width()));
    exit::OK
}

/// One row per batch size.
fn times_table(rows: &[Vec<String>], width: u16) -> comfy_table::Table {
    rows_or_transposed(
        &["pods", "runs", "p50 ms", "p99 ms", "max ms", "launches/run"],
        rows,
        width,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testing::assert_fits;

    #[test]
    fn times_table_fits_80_and_100_columns() {
        let rows: Vec<Vec<String>> = [10, 1000, 100_000]
            .iter()
            .map(|n| {
                [
                    n.to_string(),
                    "50".into(),
                    "12345.67".into(),
                    "23456.78".into(),
                    "34567.89".into(),
                    "1234.5".into(),
                ]
                .to_vec()
            })
            .collect();
        for width in [80, 100] {
            let out = assert_fits(&times_table(&rows, width), width, "bench-handler");
            assert!(out.contains("100000") && out.contains("34567.89"), "{out}");
        }
    }
}
