//! The virtual clock: a time-ordered queue of what happens next, and the loop that replays the
//! workload and hands everything else to the autoscaler under test.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::Result;
use crate::workload::Workload;
use crate::world::{PodPhase, World};

/// Something that happens at a simulated time (ms from the start).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ev {
    Arrive(usize),
    Depart(usize),
    Sample,
    /// The autoscaler's periodic work (consolidation schedule, scan interval).
    Tick,
    /// The watcher stand-in's batch window may close.
    Flush,
    /// EC2 reports the instance running.
    Running(String),
    /// The instance's node registers and turns Ready.
    Ready(String),
    /// EC2 sends a spot interruption warning (two minutes before reclaiming).
    SpotWarning(String),
    /// EC2 reclaims the spot instance.
    Reclaim(String),
    /// EC2 reports the instance terminated.
    Terminated(String),
}

#[derive(Debug, Default)]
pub struct Queue {
    heap: BinaryHeap<Reverse<(i64, u64, Ev)>>,
    seq: u64,
}

impl Queue {
    /// Events at the same time keep their insertion order (the run is deterministic).
    pub fn push(&mut self, at: i64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, ev)));
    }

    fn pop(&mut self) -> Option<(i64, Ev)> {
        self.heap.pop().map(|Reverse((t, _, ev))| (t, ev))
    }

    fn next_time(&self) -> Option<i64> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }
}

/// An autoscaler under simulation.
pub trait Autoscaler {
    /// Schedules its first periodic work, creates pre-existing capacity.
    fn start(&mut self, world: &mut World, queue: &mut Queue) -> impl std::future::Future<Output = Result<()>>;
    /// Handles the events that are not the workload's own.
    fn on_event(
        &mut self,
        ev: Ev,
        now: i64,
        world: &mut World,
        queue: &mut Queue,
    ) -> impl std::future::Future<Output = Result<()>>;
    /// Called once the cluster settled at `now` (pods bound where they fit).
    fn settled(
        &mut self,
        now: i64,
        world: &mut World,
        queue: &mut Queue,
    ) -> impl std::future::Future<Output = Result<()>>;
}

/// How often the timeline is sampled.
pub const SAMPLE_EVERY_MS: i64 = 5 * 60 * 1000;

/// Replays `workload` to its end; `progress` hears the share of simulated time done.
pub async fn run<A: Autoscaler>(
    autoscaler: &mut A,
    world: &mut World,
    workload: &Workload,
    progress: &mut dyn FnMut(f64),
) -> Result<()> {
    let mut queue = Queue::default();
    for (i, p) in workload.pods.iter().enumerate() {
        queue.push(p.start_ms, Ev::Arrive(i));
        if let Some(end) = p.end_ms {
            queue.push(end, Ev::Depart(i));
        }
    }
    queue.push(0, Ev::Sample);
    autoscaler.start(world, &mut queue).await?;
    let end = workload.duration_ms;
    let step = (end / 200).max(1);
    let mut next_progress = 0;
    while let Some((now, ev)) = queue.pop() {
        if now > end {
            break;
        }
        if now >= next_progress {
            progress(now as f64 / end as f64);
            next_progress = now + step;
        }
        match ev {
            Ev::Arrive(i) => world.make_pending(i, now),
            Ev::Depart(i) => {
                if world.pods[i].phase != PodPhase::Gone {
                    world.delete_pod(i, now);
                }
            }
            Ev::Sample => {
                world.sample(now);
                queue.push(now + SAMPLE_EVERY_MS, Ev::Sample);
            }
            other => autoscaler.on_event(other, now, world, &mut queue).await?,
        }
        if queue.next_time() != Some(now) {
            world.bind(now);
            autoscaler.settled(now, world, &mut queue).await?;
        }
    }
    world.sample(end);
    world.finish(end);
    progress(1.0);
    Ok(())
}
