//! `nodewright chaos`: seeded simulations of the four functions' real handlers with faults at the
//! ports and in delivery, and invariants checked after every step.
//!
//! Each seed builds a small cluster story (pods arriving and leaving, the consolidation schedule,
//! instances booting from their user data through the kubelet emulator, spot interruptions and
//! reclaims) and delivers every event as EventBridge and Lambda would, unkindly: any port call may
//! kill the invocation, fail, be throttled or apply with its response lost
//! ([`nodewright_handlers::adapters::faults`]); events are duplicated, delayed (so reordered) and
//! delivered to two concurrent invocations; failed invocations are retried as Lambda's
//! asynchronous retries are (+1 min, +3 min, then the dead-letter queue). The invariants
//! ([`invariants`]) are checked after every step, and strictly once the story has settled (faults
//! off, ten minutes of schedule). Same seed, same run: the first counterexample replays with
//! `--seed N`.

mod invariants;
mod story;

use std::collections::{BTreeMap, BTreeSet};

use nodewright_handlers::adapters::faults::FaultKind;
use serde::Serialize;

pub use invariants::Invariant;

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    pub first_seed: u64,
    pub seeds: u64,
    /// Fault kinds the ports may inject.
    pub kinds: Vec<FaultKind>,
    /// Probability that a port call faults (at most two faults per invocation).
    pub rate: f64,
    /// Steps per story (each 15-75 s of virtual time) before it settles.
    pub steps: usize,
    /// Delivery faults (duplicates, delays, concurrent deliveries).
    pub delivery_faults: bool,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        ChaosOptions {
            first_seed: 1,
            seeds: 30,
            kinds: FaultKind::ALL.to_vec(),
            rate: 0.04,
            steps: 40,
            delivery_faults: true,
        }
    }
}

/// One invariant broken: where and how, with the story up to that step.
#[derive(Debug, Clone, Serialize)]
pub struct Counterexample {
    pub seed: u64,
    pub step: usize,
    pub invariant: &'static str,
    pub detail: String,
    /// The story's steps and deliveries up to the violation.
    pub trace: Vec<String>,
}

/// What a chaos run found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosReport {
    pub seeds: u64,
    pub steps: u64,
    pub invocations: u64,
    /// Violations per invariant (every invariant listed, zeros included).
    pub violations: BTreeMap<&'static str, u64>,
    /// Faults injected per port method (`State.claims`) and kind.
    pub injected: BTreeMap<String, BTreeMap<&'static str, u64>>,
    /// Port methods the handlers never called in the run (no fault could be injected there).
    pub not_reached: Vec<String>,
    /// Port methods called but missing a fault kind: `State.claims: crash, throttle`.
    pub kinds_missing: Vec<String>,
    #[serde(skip)]
    called: BTreeSet<String>,
    /// Delivery faults and retries: duplicated, delayed, concurrent, retried, dead-lettered.
    pub deliveries: BTreeMap<&'static str, u64>,
    pub first_counterexample: Option<Counterexample>,
}

impl ChaosReport {
    pub fn total_violations(&self) -> u64 {
        self.violations.values().sum()
    }

    fn absorb(&mut self, story: story::StoryResult) {
        self.seeds += 1;
        self.steps += story.steps as u64;
        self.invocations += story.invocations;
        for (k, v) in story.deliveries {
            *self.deliveries.entry(k).or_default() += v;
        }
        self.called.extend(story.called);
        for ((method, kind), n) in story.injected {
            *self.injected.entry(method).or_default().entry(kind.name()).or_default() += n as u64;
        }
        for v in &story.violations {
            *self.violations.entry(v.invariant).or_default() += 1;
        }
        if self.first_counterexample.is_none() {
            self.first_counterexample = story.violations.into_iter().next();
        }
    }
}

/// Runs the seeds one after another (each on its own virtual clock).
pub async fn run(options: &ChaosOptions) -> ChaosReport {
    let mut report = ChaosReport::default();
    for i in Invariant::ALL {
        report.violations.insert(i.name(), 0);
    }
    for seed in options.first_seed..options.first_seed + options.seeds {
        let story = story::run_story(seed, options).await;
        report.absorb(story);
    }
    for method in story::all_methods() {
        if !report.called.contains(&method) {
            report.not_reached.push(method);
            continue;
        }
        let injected = report.injected.get(&method);
        let missing: Vec<&str> = options
            .kinds
            .iter()
            .map(|k| k.name())
            .filter(|k| injected.is_none_or(|m| !m.contains_key(k)))
            .collect();
        if !missing.is_empty() {
            report.kinds_missing.push(format!("{method}: {}", missing.join(", ")));
        }
    }
    report
}
