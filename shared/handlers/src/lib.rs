//! The Lambda functions' handlers, shared by the function binaries (functions/), `nodewright invoke`
//! and the tests. A handler takes a parsed [`event::Event`] and acts through three ports
//! ([`ports::State`], [`ports::Capacity`], [`ports::ClusterApi`], owned by the core); the adapters
//! behind them are the real services (`nodewright-aws`, `nodewright-kube`) or in-process stand-ins
//! ([`adapters::memory`]). Nothing here links an SDK.
//!
//! - [`pod_pending`]: a watcher batch -> reservations -> plan -> claims -> launches.
//! - [`interruption`]: spot interruption, rebalance, capacity-reservation interruption, AWS Health
//!   scheduled change -> replacement first, then cordon and drain.
//! - [`state_change`]: EC2 / Auto Scaling lifecycle and `Node Ready` -> claim lifecycle, latency,
//!   clean-up of instances that died; `Claim Launch` -> the launch `pod-pending` handed off.
//! - [`consolidation`]: the schedule -> reconciliation (sweep, adopt, registration timeout, gone
//!   instances), then disruption.

pub mod adapters;
pub mod consolidation;
pub mod daemonsets;
mod error;
pub mod event;
pub mod events;
pub mod interruption;
pub mod metrics;
pub mod node_pools;
pub mod outcome;
pub mod pod_pending;
pub mod prices;
pub mod provision;
mod registration;
pub mod settings;
pub mod state_change;

pub use nodewright_core::ports;
use nodewright_core::ports::EpochMillis;

pub use daemonsets::DaemonSets;
pub use error::{Error, Result};
pub use event::{Event, Parsed};
pub use outcome::{Action, Outcome};
pub use settings::Settings;

use crate::ports::{Capacity, ClusterApi, State};

/// Runs `work` at most `at_once` at a time and returns the results in `work`'s order, so an
/// outcome reads the same whatever finished first. Build the futures eagerly (not in a stream
/// closure), so the handler's future stays Send.
pub async fn in_order<F: std::future::Future>(work: Vec<F>, at_once: usize) -> Vec<F::Output> {
    use futures::StreamExt;
    futures::stream::iter(work).buffered(at_once).collect().await
}

/// Everything a handler acts through, built once per execution environment.
pub struct Deps<S, C, K> {
    pub settings: Settings,
    pub state: S,
    pub capacity: C,
    /// None when the function runs without cluster access (then cluster steps are skipped and said so).
    pub cluster: Option<K>,
    /// The DaemonSets every new node makes room for: listed from the cluster (cached briefly),
    /// or configured templates without cluster access.
    pub daemonsets: DaemonSets,
    /// The cluster a disruption plan last found nothing to do in (skips re-planning it).
    pub consolidated: consolidation::Consolidated,
}

/// The four functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Function {
    PodPending,
    SpotInterruption,
    StateChange,
    Consolidation,
}

impl Function {
    pub const ALL: [Function; 4] = [
        Function::PodPending,
        Function::SpotInterruption,
        Function::StateChange,
        Function::Consolidation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Function::PodPending => "pod-pending",
            Function::SpotInterruption => "spot-interruption",
            Function::StateChange => "state-change",
            Function::Consolidation => "consolidation",
        }
    }

    pub fn parse(s: &str) -> Option<Function> {
        Function::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Whether this function handles the event (EventBridge rules route by the same split).
    pub fn accepts(self, event: &Event) -> bool {
        matches!(
            (self, event),
            (Function::PodPending, Event::PodPending(..))
                | (
                    Function::SpotInterruption,
                    Event::SpotInterruption { .. }
                        | Event::Rebalance { .. }
                        | Event::ReservationInterruption { .. }
                        | Event::ScheduledChange { .. }
                )
                | (
                    Function::StateChange,
                    Event::InstanceState { .. }
                        | Event::AsgLaunch { .. }
                        | Event::AsgTerminate { .. }
                        | Event::NodeReady(..)
                        | Event::ClaimLaunch(..)
                )
                | (Function::Consolidation, Event::Schedule(..))
        )
    }
}

/// Runs `function`'s handler for one parsed event at `now`.
pub async fn handle<S: State, C: Capacity, K: ClusterApi>(
    function: Function,
    deps: &Deps<S, C, K>,
    parsed: Parsed,
    now: EpochMillis,
) -> Result<Outcome> {
    let event = match parsed {
        Parsed::Ignore(reason) => {
            tracing::debug!(function = function.name(), %reason, "ignored event");
            return Ok(Outcome::ignored(function.name(), "", reason));
        }
        Parsed::Event(e) => e,
    };
    let id = event.envelope().id.clone();
    if !function.accepts(&event) {
        let reason = format!(
            "{} events go to another function, not {}",
            event.envelope().detail_type,
            function.name()
        );
        tracing::debug!(function = function.name(), %reason, "ignored event");
        return Ok(Outcome::ignored(function.name(), &id, reason));
    }
    prices::load(&deps.settings, &deps.state, now).await;
    node_pools::refresh(&deps.settings, deps.cluster.as_ref(), now).await?;
    let mut outcome = match event {
        Event::PodPending(envelope, detail) => pod_pending::handle(deps, &envelope, *detail, now).await,
        Event::Schedule(envelope) => consolidation::handle(deps, &envelope, now).await,
        e @ (Event::SpotInterruption { .. }
        | Event::Rebalance { .. }
        | Event::ReservationInterruption { .. }
        | Event::ScheduledChange { .. }) => interruption::handle(deps, e, now).await,
        e => state_change::handle(deps, e, now).await,
    }?;
    events::post(deps.cluster.as_ref(), &mut outcome, now).await;
    Ok(outcome)
}

/// Runs `work` at most once per idempotency `key`: a replay returns [`Action::Replayed`], a
/// concurrent run of the same event fails with [`Error::Busy`] (so it is redelivered), and a failure
/// releases the key for the retry.
pub(crate) async fn once<S, C, K, F, Fut>(
    deps: &Deps<S, C, K>,
    function: Function,
    key: &str,
    event_id: &str,
    now: EpochMillis,
    work: F,
) -> Result<Outcome>
where
    S: State,
    C: Capacity,
    K: ClusterApi,
    F: FnOnce(Outcome) -> Fut,
    Fut: std::future::Future<Output = Result<Outcome>>,
{
    use nodewright_core::ports::state::EventStart;
    match deps.state.begin_event(key, now).await? {
        EventStart::Completed(summary) => {
            let mut o = Outcome::new(function.name(), event_id);
            o.push(Action::Replayed { event: summary });
            Ok(o)
        }
        EventStart::InProgress => Err(Error::Busy(event_id.to_string())),
        EventStart::New => match work(Outcome::new(function.name(), event_id)).await {
            Ok(o) => {
                deps.state.complete_event(key, &o.summary(), now).await?;
                Ok(o)
            }
            Err(e) => {
                if let Err(release) = deps.state.abandon_event(key).await {
                    tracing::warn!(error = %release, "could not release the event's idempotency key");
                }
                Err(e)
            }
        },
    }
}
