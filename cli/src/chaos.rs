//! `nodewright chaos`: seeded stories of the four functions' handlers with faults injected at the
//! ports and in delivery, invariants checked at every step (nodewright_sim::chaos). Prints the
//! violations per invariant, the faults injected per port method and kind, and the first
//! counterexample as a replayable trace; exits 1 on any violation.

use nodewright_handlers::adapters::faults::FaultKind;
use nodewright_sim::chaos::{self, ChaosOptions, ChaosReport};

use crate::exit;

#[derive(clap::Args)]
pub struct Args {
    /// How many seeds (stories) to run.
    #[arg(long, default_value_t = 30)]
    seeds: u64,
    /// The first seed (a counterexample replays with `--seed S --seeds 1`).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fault kinds to inject at the ports, comma-separated: crash, error, lost-response, throttle.
    #[arg(long, value_delimiter = ',', default_value = "crash,error,lost-response,throttle")]
    faults: Vec<String>,
    /// Probability that a port call faults (0-1).
    #[arg(long, default_value_t = 0.04)]
    rate: f64,
    /// Steps per story before it settles (each 15-75 s of virtual time).
    #[arg(long, default_value_t = 40)]
    steps: usize,
    /// No duplicated, delayed or concurrent deliveries.
    #[arg(long)]
    no_delivery_faults: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> u8 {
    let mut kinds = Vec::new();
    for f in &args.faults {
        match FaultKind::parse(f.trim()) {
            Some(k) => kinds.push(k),
            None => {
                eprintln!("error: --faults: {f:?} is not one of crash, error, lost-response, throttle");
                return exit::USAGE;
            }
        }
    }
    if !(0.0..=1.0).contains(&args.rate) {
        eprintln!("error: --rate: {} is not between 0 and 1", args.rate);
        return exit::USAGE;
    }
    if args.seeds == 0 || args.seeds > 100_000 {
        eprintln!("error: --seeds: {} is not between 1 and 100000", args.seeds);
        return exit::USAGE;
    }
    if args.steps > 10_000 {
        eprintln!("error: --steps: {} is over 10000", args.steps);
        return exit::USAGE;
    }
    let options = ChaosOptions {
        first_seed: args.seed,
        seeds: args.seeds,
        kinds,
        rate: args.rate,
        steps: args.steps,
        delivery_faults: !args.no_delivery_faults,
    };
    let runtime = match crate::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let started = std::time::Instant::now();
    let report = runtime.block_on(chaos::run(&options));
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::FAILED;
            }
        }
    } else {
        print_report(&report, &options, secs);
    }
    if report.total_violations() > 0 { 1 } else { exit::OK }
}

fn print_report(report: &ChaosReport, options: &ChaosOptions, secs: f64) {
    println!(
        "{} seeds ({}..{}), {} steps, {} invocations, fault rate {} per port call, {:.1} s",
        report.seeds,
        options.first_seed,
        options.first_seed + options.seeds - 1,
        report.steps,
        report.invocations,
        options.rate,
        secs
    );
    let mut t = crate::report::table(["invariant", "violations"]);
    for (name, n) in &report.violations {
        t.add_row(vec![name.to_string(), n.to_string()]);
    }
    println!("{t}");

    let kinds: Vec<&str> = options.kinds.iter().map(|k| k.name()).collect();
    let mut header = vec!["port method"];
    header.extend(&kinds);
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header(header);
    let mut total = 0;
    for (method, by_kind) in &report.injected {
        let mut row = vec![method.clone()];
        for k in &kinds {
            let n = by_kind.get(k).copied().unwrap_or(0);
            total += n;
            row.push(n.to_string());
        }
        t.add_row(row);
    }
    println!("faults injected: {total}");
    println!("{t}");
    if !report.not_reached.is_empty() {
        println!(
            "not called in this run (no fault injected): {}",
            report.not_reached.join(", ")
        );
    }
    if !report.kinds_missing.is_empty() {
        println!("called but missing a fault kind: {}", report.kinds_missing.join("; "));
    }
    let deliveries: Vec<String> = report.deliveries.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("deliveries: {}", deliveries.join(", "));
    match &report.first_counterexample {
        None => println!("0 violations"),
        Some(c) => {
            println!(
                "\nfirst counterexample: seed {} step {}: {}: {}",
                c.seed, c.step, c.invariant, c.detail
            );
            println!("replay: nodewright chaos --seed {} --seeds 1", c.seed);
            let skip = c.trace.len().saturating_sub(60);
            if skip > 0 {
                println!("  ... {skip} earlier lines");
            }
            for line in &c.trace[skip..] {
                println!("  {line}");
            }
        }
    }
}
