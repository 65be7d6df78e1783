//! `nodewright chaos`: seeded stories of the four functions' handlers with faults injected at the
//! ports and in delivery, invariants checked at every step (nodewright_sim::chaos). Prints the
//! violations per invariant, the faults injected per port method and kind, and the first
//! counterexample as a replayable trace; exits 1 on any violation.

use nodewright_handlers::adapters::faults::FaultKind;
use nodewright_sim::chaos::{self, ChaosOptions, ChaosReport};

use comfy_table::Table;

use crate::exit;
use crate::report::{keep_words, rows_table, table_with_width};

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
    let width = crate::report::width();
    println!("{}", violations_table(report, width));
    let (t, total) = injected_table(report, options, width);
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

/// Violations per invariant (every invariant listed).
fn violations_table(report: &ChaosReport, width: u16) -> Table {
    let mut t = table_with_width(["invariant", "violations"], width);
    for (name, n) in &report.violations {
        t.add_row(vec![name.to_string(), n.to_string()]);
    }
    keep_words(&mut t);
    t
}

/// Faults injected per port method and kind, and their total.
fn injected_table(report: &ChaosReport, options: &ChaosOptions, width: u16) -> (Table, u64) {
    let kinds: Vec<&str> = options.kinds.iter().map(|k| k.name()).collect();
    let mut header = vec!["port method"];
    header.extend(&kinds);
    let mut total = 0;
    let rows: Vec<Vec<String>> = report
        .injected
        .iter()
        .map(|(method, by_kind)| {
            let mut row = vec![method.clone()];
            for k in &kinds {
                let n = by_kind.get(k).copied().unwrap_or(0);
                total += n;
                row.push(n.to_string());
            }
            row
        })
        .collect();
    let mut t = rows_table(&header, &rows, width);
    keep_words(&mut t);
    (t, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::testing::assert_fits;

    #[test]
    fn chaos_tables_fit_80_and_100_columns() {
        // A short real run with every fault kind, so every invariant and port method is listed.
        let options = ChaosOptions {
            seeds: 2,
            steps: 8,
            rate: 0.2,
            kinds: ["crash", "error", "lost-response", "throttle"]
                .iter()
                .filter_map(|k| FaultKind::parse(k))
                .collect(),
            ..ChaosOptions::default()
        };
        let runtime = crate::runtime().expect("runtime");
        let report = runtime.block_on(chaos::run(&options));
        assert!(!report.violations.is_empty() && !report.injected.is_empty());
        for width in [80, 100] {
            let out = assert_fits(&violations_table(&report, width), width, "chaos violations");
            for name in report.violations.keys() {
                assert!(out.contains(name), "{name} at {width}:\n{out}");
            }
            let (t, total) = injected_table(&report, &options, width);
            let out = assert_fits(&t, width, "chaos faults");
            assert!(out.contains("lost-response"), "{out}");
            let sum: u64 = report.injected.values().flat_map(|k| k.values()).sum();
            assert_eq!(total, sum);
        }
    }
}
