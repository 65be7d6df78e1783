//! Workloads the simulator replays: a pod trace (CSV) or deployments with replica changes over time
//! (YAML). Both become a list of [`WorkloadPod`]s with arrival and departure times.

use std::collections::BTreeMap;

use nodewright_core::nodepool::parse_duration;
use nodewright_core::quantity::{parse_cpu_milli, parse_units};
use nodewright_core::{Resource, Resources};
use serde::Deserialize;

use crate::{Error, Result};

/// Traces larger than this are refused (the simulator holds every pod in memory).
pub const MAX_PODS: usize = 1_000_000;

/// One pod of the workload.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadPod {
    pub name: String,
    pub requests: Resources,
    /// Arrival, ms from the start of the simulation.
    pub start_ms: i64,
    /// Departure (deleted by its owner), ms from the start; None: runs to the end.
    pub end_ms: Option<i64>,
}

/// A workload: pods and how long to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub pods: Vec<WorkloadPod>,
    pub duration_ms: i64,
    /// Where it came from, for the report.
    pub source: String,
}

impl Workload {
    /// Stops the workload at `until_ms`: later arrivals are dropped, departures after it never
    /// happen. The state at that moment is what a run ends with (`simulate --until`).
    pub fn truncate(&mut self, until_ms: i64) {
        if until_ms >= self.duration_ms {
            return;
        }
        self.pods.retain(|p| p.start_ms < until_ms);
        for p in &mut self.pods {
            if p.end_ms.is_some_and(|e| e >= until_ms) {
                p.end_ms = None;
            }
        }
        self.duration_ms = until_ms.max(0);
    }
}

/// How a CSV trace is read.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// Take the first N pods (file order).
    pub limit: Option<usize>,
    /// Divide every time by this (compresses a months-long trace into days).
    pub time_scale: f64,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            limit: None,
            time_scale: 1.0,
        }
    }
}

fn requests(cpu_milli: u64, memory_mib: u64, gpus: u64) -> Resources {
    let mut r = Resources::new()
        .with(Resource::Cpu, cpu_milli)
        .with(Resource::Memory, memory_mib * 1024 * 1024)
        .with(Resource::Pods, 1);
    if gpus > 0 {
        r.set(Resource::NvidiaGpu, gpus);
    }
    r
}

/// Reads `name,cpu_milli,memory_mib,num_gpu,creation_time,deletion_time` (seconds; extra columns
/// ignored, as in the Alibaba GPU trace). An empty or zero deletion time, or one before creation,
/// means the pod runs to the end. The simulation lasts until the last deletion (or an hour after the
/// last arrival when nothing leaves later).
pub fn load_csv(text: &str, source: &str, options: &CsvOptions) -> Result<Workload> {
    if !(options.time_scale.is_finite() && options.time_scale > 0.0) {
        return Err(Error::input("time-scale", "must be a positive number"));
    }
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| Error::input(source, format!("header: {e}")))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| Error::input(source, format!("missing column {name:?}")))
    };
    let (c_name, c_cpu, c_mem, c_gpu, c_start, c_end) = (
        column("name")?,
        column("cpu_milli")?,
        column("memory_mib")?,
        column("num_gpu")?,
        column("creation_time")?,
        column("deletion_time")?,
    );
    let mut pods = Vec::new();
    for (i, record) in reader.records().enumerate() {
        if options.limit.is_some_and(|l| pods.len() >= l) {
            break;
        }
        if pods.len() >= MAX_PODS {
            return Err(Error::input(source, format!("more than {MAX_PODS} pods")));
        }
        let row = i + 2;
        let record = record.map_err(|e| Error::input(&format!("{source}:{row}"), e.to_string()))?;
        let field = |c: usize, name: &str| -> Result<u64> {
            let v = record.get(c).unwrap_or("");
            if v.is_empty() {
                return Ok(0);
            }
            v.parse::<u64>().map_err(|_| {
                Error::input(
                    &format!("{source}:{row}: {name}"),
                    format!("{v:?} is not a whole number"),
                )
            })
        };
        let name = record.get(c_name).unwrap_or("").to_string();
        if name.is_empty() {
            return Err(Error::input(&format!("{source}:{row}: name"), "empty"));
        }
        let (cpu, mem, gpu) = (
            field(c_cpu, "cpu_milli")?,
            field(c_mem, "memory_mib")?,
            field(c_gpu, "num_gpu")?,
        );
        if cpu == 0 && mem == 0 {
            return Err(Error::input(
                &format!("{source}:{row}: cpu_milli"),
                "a pod must request cpu or memory",
            ));
        }
        let start = field(c_start, "creation_time")?;
        let end = field(c_end, "deletion_time")?;
        let scale = |s: u64| (s as f64 * 1000.0 / options.time_scale).round() as i64;
        pods.push(WorkloadPod {
            name,
            requests: requests(cpu, mem, gpu),
            start_ms: scale(start),
            end_ms: (end > start).then(|| scale(end)),
        });
    }
    if pods.is_empty() {
        return Err(Error::input(source, "no pods"));
    }
    let last_start = pods.iter().map(|p| p.start_ms).max().unwrap_or(0);
    let last_end = pods.iter().filter_map(|p| p.end_ms).max().unwrap_or(0);
    Ok(Workload {
        pods,
        duration_ms: last_end.max(last_start + 3_600_000),
        source: source.into(),
    })
}

/// A span: a Go duration, optionally led by whole days with a `d` suffix ("20d", "1d12h",
/// "2h30m", "1d12h30m", "90s"), in ms. Sub-second parts round up to the second.
pub fn parse_span(s: &str) -> std::result::Result<i64, String> {
    const EXAMPLES: &str = "e.g. 2d, 1d12h, 2h30m or 90s";
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("empty span; {EXAMPLES}"));
    }
    let (days, rest) = match t.split_once('d') {
        Some((days, rest)) => {
            if days.is_empty() || !days.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{s:?}: expected whole days first, before \"d\" ({EXAMPLES})"));
            }
            let d: u64 = days.parse().map_err(|_| format!("{s:?}: at most 3650 days"))?;
            if d > 3650 {
                return Err(format!("{s:?}: at most 3650 days"));
            }
            if rest.contains('d') {
                return Err(format!("{s:?}: days are given once, first ({EXAMPLES})"));
            }
            (d, rest)
        }
        None => (0, t),
    };
    let secs = if rest.is_empty() {
        0
    } else {
        parse_duration(rest).map_err(|e| {
            if days > 0 {
                format!("{s:?}: after the days, {e}")
            } else {
                format!("{e}; spans also take days ({EXAMPLES})")
            }
        })?
    };
    Ok(days as i64 * 86_400_000 + secs as i64 * 1000)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentFile {
    duration: String,
    deployments: Vec<Deployment>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Deployment {
    name: String,
    cpu: String,
    memory: String,
    #[serde(default)]
    gpu: u64,
    /// The replica schedule repeats with this period ("24h"); without it, it runs once.
    #[serde(default)]
    every: Option<String>,
    replicas: Vec<ReplicaChange>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicaChange {
    at: String,
    count: u32,
}

/// Reads deployments with replica changes over time. A scale-down deletes the newest pods first, as
/// a ReplicaSet does for pods of equal standing.
///
/// ```yaml
/// duration: 20d
/// deployments:
///   - name: api
///     cpu: 1500m
///     memory: 2Gi
///     replicas: [{at: 0s, count: 2}]
///   - name: migration
///     cpu: 1500m
///     memory: 2Gi
///     every: 24h
///     replicas: [{at: 9h, count: 8}, {at: 13h, count: 0}]
/// ```
pub fn load_deployments(text: &str, source: &str) -> Result<Workload> {
    let file: DeploymentFile = serde_norway::from_str(text).map_err(|e| Error::input(source, e.to_string()))?;
    let duration_ms = parse_span(&file.duration).map_err(|e| Error::input(&format!("{source}: duration"), e))?;
    if duration_ms <= 0 {
        return Err(Error::input(&format!("{source}: duration"), "must be positive"));
    }
    let mut pods = Vec::new();
    for (d_index, d) in file.deployments.iter().enumerate() {
        let path = format!("{source}: deployments[{d_index}] ({})", d.name);
        let cpu = parse_cpu_milli(&d.cpu).map_err(|e| Error::input(&format!("{path}.cpu"), e.to_string()))?;
        let memory = parse_units(&d.memory).map_err(|e| Error::input(&format!("{path}.memory"), e.to_string()))?;
        let mut req = requests(cpu, 0, d.gpu);
        req.set(Resource::Memory, memory);
        let period = match &d.every {
            Some(p) => Some(parse_span(p).map_err(|e| Error::input(&format!("{path}.every"), e))?),
            None => None,
        };
        let mut changes = Vec::new();
        for (i, c) in d.replicas.iter().enumerate() {
            let at = parse_span(&c.at).map_err(|e| Error::input(&format!("{path}.replicas[{i}].at"), e))?;
            if period.is_some_and(|p| at >= p) {
                return Err(Error::input(
                    &format!("{path}.replicas[{i}].at"),
                    "must be inside the `every` period",
                ));
            }
            changes.push((at, c.count));
        }
        changes.sort_by_key(|c| c.0);
        let mut timeline: BTreeMap<i64, u32> = BTreeMap::new();
        match period {
            Some(p) if p > 0 => {
                let mut base = 0;
                while base < duration_ms {
                    for (at, count) in &changes {
                        timeline.insert(base + at, *count);
                    }
                    base += p;
                }
            }
            _ => timeline.extend(changes),
        }
        // Live replicas, oldest first; a scale-down ends the newest.
        let mut live: Vec<usize> = Vec::new();
        let mut serial = 0u64;
        for (at, count) in timeline {
            if at >= duration_ms {
                break;
            }
            let count = count as usize;
            while live.len() < count {
                if pods.len() >= MAX_PODS {
                    return Err(Error::input(&path, format!("more than {MAX_PODS} pods")));
                }
                live.push(pods.len());
                pods.push(WorkloadPod {
                    name: format!("{}-{serial}", d.name),
                    requests: req.clone(),
                    start_ms: at,
                    end_ms: None,
                });
                serial += 1;
            }
            while live.len() > count {
                if let Some(i) = live.pop() {
                    pods[i].end_ms = Some(at);
                }
            }
        }
    }
    if pods.is_empty() {
        return Err(Error::input(source, "the deployments never have a replica"));
    }
    pods.sort_by(|a, b| a.start_ms.cmp(&b.start_ms).then_with(|| a.name.cmp(&b.name)));
    Ok(Workload {
        pods,
        duration_ms,
        source: source.into(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn spans_take_days_with_a_remainder() {
        assert_eq!(parse_span("2d"), Ok(2 * 86_400_000));
        assert_eq!(parse_span("1d12h"), Ok(36 * 3_600_000));
        assert_eq!(parse_span("90m"), Ok(90 * 60_000));
        assert!(parse_span("xd").unwrap_err().contains("whole days"));
        assert!(parse_span("4000d").unwrap_err().contains("3650"));
        assert!(parse_span("1d12x").is_err());
    }

    #[test]
    fn compound_spans_add_up_and_bad_ones_say_why() {
        for (span, ms) in [
            ("2h30m", 150 * 60_000),
            ("90s", 90_000),
            ("1d12h30m", (36 * 60 + 30) * 60_000),
            ("33h0m30s", (33 * 3600 + 30) * 1000),
            (" 1d ", 86_400_000),
            ("0", 0),
            ("0d", 0),
            ("1500ms", 2000),
        ] {
            assert_eq!(parse_span(span), Ok(ms), "{span}");
        }
        for (span, says) in [
            ("", "empty span"),
            ("d", "whole days first"),
            ("1.5d", "whole days first"),
            ("-1d", "whole days first"),
            ("12h1d", "whole days first"),
            ("1d2d", "days are given once"),
            ("1d12x", "after the days, \"12x\": unknown unit \"x\""),
            ("12x", "spans also take days"),
            ("99999999999999999999d", "at most 3650 days"),
        ] {
            let err = parse_span(span).expect_err(span);
            assert!(err.contains(says), "{span}: {err}");
        }
    }

    use super::*;

    #[test]
    fn csv_reads_the_trace_shape() {
        let text = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,creation_time,deletion_time\n\
                    a,1000,2048,1,1000,0,3600\n\
                    b,500,512,0,0,60,\n";
        let w = load_csv(text, "t.csv", &CsvOptions::default()).unwrap();
        assert_eq!(w.pods.len(), 2);
        assert_eq!(w.pods[0].requests.get(Resource::NvidiaGpu), 1);
        assert_eq!(w.pods[0].end_ms, Some(3_600_000));
        assert_eq!(w.pods[1].end_ms, None);
        assert_eq!(w.duration_ms, 3_660_000);
        let scaled = load_csv(
            text,
            "t.csv",
            &CsvOptions {
                limit: Some(1),
                time_scale: 10.0,
            },
        )
        .unwrap();
        assert_eq!(scaled.pods.len(), 1);
        assert_eq!(scaled.pods[0].end_ms, Some(360_000));
    }

    #[test]
    fn csv_errors_name_row_and_field() {
        let e = load_csv(
            "name,cpu_milli,memory_mib,num_gpu,creation_time,deletion_time\na,x,1,0,0,1\n",
            "t.csv",
            &CsvOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("t.csv:2: cpu_milli") && e.contains("\"x\""), "{e}");
        let e = load_csv("name,cpu\n", "t.csv", &CsvOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing column \"cpu_milli\""), "{e}");
    }

    #[test]
    fn deployments_repeat_and_scale_down_newest_first() {
        let text = "duration: 2d\ndeployments:\n  - {name: base, cpu: 500m, memory: 1Gi, replicas: [{at: 0s, count: 2}]}\n  - name: burst\n    cpu: '1'\n    memory: 1Gi\n    every: 24h\n    replicas: [{at: 9h, count: 3}, {at: 13h, count: 1}]\n";
        let w = load_deployments(text, "d.yaml").unwrap();
        // 2 base + 3 on day 1; day 2 scales the surviving 1 back up to 3 (2 new pods).
        assert_eq!(w.pods.len(), 7);
        let burst: Vec<_> = w.pods.iter().filter(|p| p.name.starts_with("burst")).collect();
        let ends: Vec<_> = burst.iter().map(|p| p.end_ms).collect();
        // The oldest replica survives every scale-down; the newest two end at 13h each day.
        assert_eq!(burst[0].start_ms, 9 * 3_600_000);
        assert_eq!(burst[0].end_ms, None);
        assert_eq!(ends.iter().filter(|e| **e == Some(13 * 3_600_000)).count(), 2);
        assert_eq!(ends.iter().filter(|e| **e == Some(37 * 3_600_000)).count(), 2);
        assert_eq!(w.duration_ms, 2 * 86_400_000);
        let e = load_deployments(
            "duration: 1d\ndeployments:\n  - {name: x, cpu: lots, memory: 1Gi, replicas: []}\n",
            "d.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("deployments[0] (x).cpu"), "{e}");
    }
}
