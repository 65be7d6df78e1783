//! `nodewright simulate`: replay a workload against NodePools with the real handlers on a virtual
//! clock, optionally next to a fixed node group, and print the report (docs/simulator.md).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use nodewright_sim::{CsvOptions, FixedGroupSpec, Report, RunReport, SimConfig, workload};

use crate::report::{money, table_with_width, width};
use crate::{exit, read_file};

#[derive(clap::Args)]
pub struct Args {
    /// NodePool / EC2NodeClass YAML (Karpenter v1).
    #[arg(long = "nodepool", default_value = DEFAULT_NODEPOOLS)]
    nodepools: Vec<PathBuf>,
    /// The workload: a CSV trace (name,cpu_milli,memory_mib,num_gpu,creation_time,deletion_time)
    /// or a YAML list of deployments with replica changes (docs/simulator.md).
    #[arg(long, default_value = DEFAULT_WORKLOAD)]
    workload: PathBuf,
    /// CSV only: replay the first N pods.
    #[arg(long)]
    limit: Option<usize>,
    /// CSV only: divide every trace time by this (compress a months-long trace).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Also run a Cluster Autoscaler-style group of one instance type: fixed:TYPE[:MIN[:MAX]].
    #[arg(long)]
    baseline: Option<String>,
    /// Seed for spot interruptions (same seed, same report).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds from RunInstances to `running`.
    #[arg(long, default_value_t = 45.0)]
    launch_delay: f64,
    /// Seconds from `running` to the node Ready.
    #[arg(long, default_value_t = 35.0)]
    registration_delay: f64,
    /// Do not draw spot interruptions.
    #[arg(long)]
    no_interruptions: bool,
    /// Multiply every interruption band's rate (stress runs).
    #[arg(long, default_value_t = 1.0)]
    interruption_scale: f64,
    /// Where to write the plot (SVG).
    #[arg(long, default_value = "nodewright-simulation.svg")]
    plot: PathBuf,
    /// AWS region whose catalogue and prices to use.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Stop the run at this simulated time (e.g. 4h10m, 90s, 2d): later arrivals are dropped and
    /// the state at that moment is what --state-out saves.
    #[arg(long, value_name = "SPAN")]
    until: Option<String>,
    /// Plot from this simulated time on (e.g. 9h, 1d12h); the report still covers the whole run.
    #[arg(long, value_name = "SPAN")]
    from: Option<String>,
    /// Plot up to this simulated time.
    #[arg(long, value_name = "SPAN")]
    to: Option<String>,
    /// The consolidation search: nodewright (default) or karpenter (Karpenter's documented search,
    /// for comparisons).
    #[arg(long, default_value = "nodewright", value_parser = ["nodewright", "karpenter"])]
    consolidation: String,
    /// Save Nodewright's state at the end of the run to DIR/state.json, for `nodewright avail
    /// --state DIR`.
    #[arg(long, value_name = "DIR")]
    state_out: Option<PathBuf>,
    /// Print the report as JSON (schema in docs/simulator.md).
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> u8 {
    match simulate(args) {
        Ok(code) => code,
        Err((code, e)) => {
            eprintln!("error: {e}");
            code
        }
    }
}

const DEFAULT_NODEPOOLS: &str = "examples/sim/nodepools.yaml";
const DEFAULT_WORKLOAD: &str = "examples/sim/datamigrate.yaml";

fn load_workload(args: &Args) -> Result<nodewright_sim::Workload, String> {
    let path = crate::paths::default_file(&args.workload, DEFAULT_WORKLOAD, "--workload")?;
    let text = read_file(&path)?;
    let source = args.workload.display().to_string();
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let w = if is_csv {
        workload::load_csv(
            &text,
            &source,
            &CsvOptions {
                limit: args.limit,
                time_scale: args.time_scale,
            },
        )
    } else {
        if args.limit.is_some() || args.time_scale != 1.0 {
            return Err("--limit and --time-scale apply to CSV traces only".into());
        }
        workload::load_deployments(&text, &source)
    };
    w.map_err(|e| e.to_string())
}

fn simulate(args: &Args) -> Result<u8, (u8, String)> {
    let usage = |e: String| (exit::USAGE, e);
    let files = args
        .nodepools
        .iter()
        .map(|f| crate::paths::default_file(f, DEFAULT_NODEPOOLS, "--nodepool"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(usage)?;
    let (config, warnings) = crate::load_config(&files)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    let mut workload = load_workload(args).map_err(|e| (exit::INVALID, e))?;
    if let Some(span) = &args.until {
        let until = workload::parse_span(span).map_err(|e| usage(format!("--until: {e}")))?;
        if until <= 0 {
            return Err(usage(format!("--until: {span:?} must be after the start")));
        }
        workload.truncate(until);
    }
    let baseline = args
        .baseline
        .as_deref()
        .map(FixedGroupSpec::parse)
        .transpose()
        .map_err(|e| usage(e.to_string()))?;
    let delay = |s: f64, flag: &str| {
        if s.is_finite() && (0.0..=3600.0).contains(&s) {
            Ok((s * 1000.0) as i64)
        } else {
            Err(usage(format!("{flag}: {s} is not a number of seconds in 0..=3600")))
        }
    };
    let sim = SimConfig {
        region: args.region.clone(),
        launch_delay_ms: delay(args.launch_delay, "--launch-delay")?,
        registration_delay_ms: delay(args.registration_delay, "--registration-delay")?,
        seed: args.seed,
        interruptions: !args.no_interruptions,
        interruption_scale: args.interruption_scale,
        disruption: match args.consolidation.as_str() {
            "karpenter" => nodewright_core::disruption::Options::karpenter(),
            _ => nodewright_core::disruption::Options::default(),
        },
        ..SimConfig::default()
    };
    let hours = |flag: &str, span: &Option<String>| -> Result<Option<f64>, (u8, String)> {
        span.as_deref()
            .map(|s| {
                workload::parse_span(s)
                    .map(|ms| ms as f64 / 3_600_000.0)
                    .map_err(|e| usage(format!("{flag}: {e}")))
            })
            .transpose()
    };
    let window = nodewright_sim::plot::Window {
        from_hours: hours("--from", &args.from)?,
        to_hours: hours("--to", &args.to)?,
    };
    if let (Some(f), Some(t)) = (window.from_hours, window.to_hours)
        && t <= f
    {
        return Err(usage(format!("--to ({t} h) must be after --from ({f} h)")));
    }

    let show_progress = std::io::stderr().is_terminal() && !args.json;
    let mut last_drawn = -1i64;
    let mut progress = |f: f64| {
        if !show_progress {
            return;
        }
        let pct = (f * 100.0).floor() as i64;
        if pct != last_drawn {
            last_drawn = pct;
            let filled = (pct / 4) as usize;
            eprint!(
                "\r  simulating [{}{}] {pct:>3}%",
                "#".repeat(filled),
                " ".repeat(25 - filled.min(25))
            );
            let _ = std::io::stderr().flush();
        }
    };
    let started = Instant::now();
    let (report, state) =
        nodewright_sim::simulate_with_state(&sim, config, &workload, baseline.as_ref(), &mut progress).map_err(
            |e| match e {
                nodewright_sim::Error::Input { .. } => (exit::INVALID, e.to_string()),
                other => (exit::FAILED, other.to_string()),
            },
        )?;
    let wall = started.elapsed().as_secs_f64();
    if show_progress {
        eprint!("\r{}\r", " ".repeat(50));
    }
    std::fs::write(&args.plot, nodewright_sim::plot::svg_window(&report, window))
        .map_err(|e| (exit::FAILED, format!("{}: {e}", args.plot.display())))?;

    if let Some(dir) = &args.state_out {
        crate::avail::write_state_dir(dir, &state).map_err(|e| (exit::FAILED, e))?;
    }
    if args.json {
        let mut doc = serde_json::to_value(&report).map_err(|e| (exit::FAILED, e.to_string()))?;
        doc["schemaVersion"] = 1.into();
        doc["wallSeconds"] = ((wall * 100.0).round() / 100.0).into();
        doc["plot"] = args.plot.display().to_string().into();
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print_report(&report);
        println!("Plot written to {}", args.plot.display());
        if let Some(dir) = &args.state_out {
            println!(
                "State at the end of the run written to {}; view it with: nodewright avail --state {}",
                dir.join(crate::avail::STATE_FILE).display(),
                dir.display()
            );
        }
        println!("Simulated {:.0} h in {wall:.1} s (wall clock).", report.simulated_hours);
    }
    Ok(exit::OK)
}

fn cells(r: &RunReport) -> Vec<String> {
    let secs = |s: f64| {
        if s >= 120.0 {
            format!("{:.1} min", s / 60.0)
        } else {
            format!("{s:.0} s")
        }
    };
    vec![
        format!(
            "${:.2} (${:.2} / 30 days)",
            money(r.total_cost_usd),
            money(r.cost_per_month_usd)
        ),
        format!("{:.1}", r.node_hours),
        r.cost_per_pod_hour.map_or("-".into(), |c| format!("${:.4}", money(c))),
        format!("{:.0}%", r.utilization.cpu * 100.0),
        format!("{:.0}%", r.utilization.memory * 100.0),
        r.utilization.gpu.map_or("-".into(), |g| format!("{:.0}%", g * 100.0)),
        format!(
            "{} / {} / {}",
            secs(r.pending.p50_seconds),
            secs(r.pending.p95_seconds),
            secs(r.pending.p99_seconds)
        ),
        format!("{} arrived, {} ran", r.pods.arrived, r.pods.ran),
        format!(
            "{} ({} pending at the end, {} deleted while pending)",
            r.pods.never_ran, r.pods.pending_at_end, r.pods.left_before_running
        ),
        format!(
            "{} ({} spot, {} on-demand)",
            r.launches.total, r.launches.spot, r.launches.on_demand
        ),
        r.interruptions_handled.to_string(),
        format!(
            "{} actions, {} nodes, ${:.2} saved",
            r.consolidation.actions,
            r.consolidation.nodes,
            money(r.consolidation.saved_usd)
        ),
        match r.churn.evictions_per_node_hour_saved {
            Some(rate) => format!(
                "{} ({} by consolidation: {rate:.2} per node-hour saved)",
                r.churn.evictions, r.churn.consolidation_evictions
            ),
            None => r.churn.evictions.to_string(),
        },
    ]
}

/// The saving, per month and by cause, and a warning when the two runs did not run the same pods.
fn print_saving(report: &Report) {
    let (Some(b), Some(pct), Some(split)) = (&report.baseline, report.saving_percent, &report.saving_breakdown) else {
        return;
    };
    println!(
        "Saving vs {}: {pct:.1}% (${:.2} over the run, ${:.2} per 30-day month)",
        b.autoscaler,
        money(split.total_usd),
        money(report.saving_per_month_usd.unwrap_or(0.0))
    );
    for (cause, usd) in [
        ("spot prices", split.spot_usd),
        ("faster scale-down", split.idle_capacity_usd),
        ("consolidation", split.consolidation_usd),
        ("instance choice and packing", split.instance_choice_usd),
    ] {
        println!("  {cause:<28} {:>10}", format!("${:.2}", money(usd)));
    }
    let nw = &report.nodewright;
    if nw.pods.never_ran > b.pods.never_ran {
        println!(
            "warning: {} pods never ran under Nodewright against {} under {}: the saving is not like for like",
            nw.pods.never_ran, b.pods.never_ran, b.autoscaler
        );
    }
}

const LABELS: [&str; 13] = [
    "Total cost",
    "Node-hours",
    "Cost per pod-hour",
    "CPU utilization",
    "Memory utilization",
    "GPU utilization",
    "Pending p50 / p95 / p99",
    "Pods",
    "Never ran",
    "Launches",
    "Spot interruptions handled",
    "Consolidation",
    "Evictions",
];

/// The side-by-side table, fitted to `width` columns with words kept whole when they fit.
fn report_table(report: &Report, width: u16) -> comfy_table::Table {
    let ours = cells(&report.nodewright);
    let mut t = match &report.baseline {
        Some(b) => {
            let mut t = table_with_width(["", "nodewright", b.autoscaler.as_str()], width);
            let theirs = cells(b);
            for ((l, o), th) in LABELS.iter().zip(&ours).zip(&theirs) {
                t.add_row([l.to_string(), o.clone(), th.clone()]);
            }
            t
        }
        None => {
            let mut t = table_with_width(["", "nodewright"], width);
            for (l, o) in LABELS.iter().zip(&ours) {
                t.add_row([l.to_string(), o.clone()]);
            }
            t
        }
    };
    crate::report::keep_words(&mut t);
    t
}

fn print_report(report: &Report) {
    println!(
        "Workload {}: {} pods over {:.1} simulated hours (seed {}; node ready {:.0} s after launch)",
        report.workload,
        report.pods,
        report.simulated_hours,
        report.seed,
        report.launch_delay_seconds + report.registration_delay_seconds
    );
    println!("{}", report_table(report, width()));
    print_saving(report);
    let mut types: Vec<_> = report.nodewright.node_hours_by_type.iter().collect();
    types.sort_by(|a, b| b.1.total_cmp(a.1));
    let top: Vec<String> = types.iter().take(6).map(|(t, h)| format!("{t} {h:.0} h")).collect();
    println!("Nodewright node-hours by type: {}", top.join(", "));
    if let Some(g) = report.nodewright.handlers.as_ref().and_then(|h| h.plans.as_ref()) {
        println!(
            "Nodewright plans: {} launching new nodes at ${:.4}/h in all, against lower bounds of ${:.4}/h: \
             at most {:.1} % above the optimum overall, {:.1} % in the worst plan",
            g.plans,
            g.price_per_hour,
            g.lower_bound_per_hour,
            g.gap * 100.0,
            g.worst_gap * 100.0
        );
    }
    if let Some(h) = &report.nodewright.handlers
        && h.errors > 0
    {
        println!(
            "Handler errors (retried in Lambda): {} e.g. {:?}",
            h.errors, h.first_errors
        );
    }
    for n in &report.notes {
        println!("note: {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testing::assert_fits;

    #[test]
    fn the_report_table_fits_80_and_100_columns() {
        let (pools, _) =
            nodewright_core::Config::parse_strict(include_str!("../../examples/sim/nodepools.yaml"), "nodepools.yaml")
                .expect("the example pools parse");
        let w = workload::load_deployments(
            "duration: 3h\ndeployments:\n  - {name: api, cpu: 1500m, memory: 2560Mi, replicas: [{at: 0s, count: 3}]}\n",
            "w.yaml",
        )
        .expect("workload");
        let spec = FixedGroupSpec::parse("fixed:t3.medium:2").expect("spec");
        let report = nodewright_sim::simulate(&SimConfig::default(), pools, &w, Some(&spec), &mut |_| {})
            .expect("simulation runs");
        for width in [80, 100] {
            let out = assert_fits(&report_table(&report, width), width, "simulate");
            assert!(out.contains("Never ran") && out.contains("fixed:t3.medium:2"), "{out}");
        }
    }
}
