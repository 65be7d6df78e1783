//! `nodewright chaos` in the test suite: a handful of seeded stories, including the seeds whose
//! counterexamples found real defects (a pod planned onto two in-flight claims after a crash
//! between growing a claim and moving the pod's reservation, seed 8; usage leaks never corrected
//! in a busy pool, seeds 10-12; with the Auto Scaling pool: a group member whose launch event was
//! dead-lettered left unowned, seed 153; an adopted claim's end taking a counter below zero, seed
//! 119; an instance reaching a long-waiting claim timed out at once, seed 173), must run without a violation, with faults of every kind injected
//! at all three ports. `scripts/test` also runs the CLI over 30 seeds.
#![allow(clippy::unwrap_used)]

use nodewright_handlers::adapters::faults::FaultKind;
use nodewright_sim::chaos::{ChaosOptions, run};

fn options(first_seed: u64, seeds: u64) -> ChaosOptions {
    ChaosOptions {
        first_seed,
        seeds,
        ..ChaosOptions::default()
    }
}

#[tokio::test]
async fn seeded_stories_break_no_invariant() {
    let report = run(&options(1, 12)).await;
    assert_eq!(report.total_violations(), 0, "{:#?}", report.first_counterexample);
    assert_eq!(report.seeds, 12);
    // The run did inject faults, of every kind, at each port.
    for kind in FaultKind::ALL {
        let n: u64 = report.injected.values().filter_map(|m| m.get(kind.name())).sum();
        assert!(n > 0, "no {} injected: {:#?}", kind.name(), report.injected);
    }
    for port in ["State.", "Capacity.", "ClusterApi."] {
        assert!(
            report.injected.keys().any(|m| m.starts_with(port)),
            "no fault at {port}: {:#?}",
            report.injected
        );
    }
    for what in ["duplicated", "delayed", "concurrent", "retried"] {
        assert!(
            report.deliveries.get(what).copied().unwrap_or(0) > 0,
            "{:#?}",
            report.deliveries
        );
    }
}

#[tokio::test]
async fn the_seeds_that_found_defects_stay_fixed() {
    for seed in [2, 4, 5, 6, 8, 9, 10, 11, 12, 119, 153, 173] {
        let report = run(&options(seed, 1)).await;
        assert_eq!(
            report.total_violations(),
            0,
            "seed {seed}: {:#?}",
            report.first_counterexample
        );
    }
}

/// Seed 153 once ended differently from run to run (tokio's select! polled the crash and the
/// handler in a random order); every run of a seed must be the same story.
#[tokio::test]
async fn the_same_seed_gives_the_same_story() {
    let a = run(&options(153, 1)).await;
    for _ in 0..4 {
        let b = run(&options(153, 1)).await;
        assert_eq!((a.steps, a.invocations), (b.steps, b.invocations));
        assert_eq!(a.injected, b.injected);
    }
    let a = run(&options(3, 1)).await;
    let b = run(&options(3, 1)).await;
    assert_eq!(a.steps, b.steps);
    assert_eq!(a.invocations, b.invocations);
    assert_eq!(a.injected, b.injected);
    assert_eq!(a.deliveries, b.deliveries);
}
