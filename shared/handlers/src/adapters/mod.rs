//! In-process adapters behind the core's ports, and fault injection around any adapter. The real
//! ones live beside their SDKs (`nodewright_aws::AwsCapacity` and the DynamoDB `StateStore`,
//! `nodewright_kube::KubeCluster`).

pub mod billing;
pub mod faults;
pub mod memory;

use nodewright_core::ports::EpochMillis;

use crate::{Deps, Function, Outcome, Parsed, Result};
use faults::{FaultyCapacity, FaultyCluster, FaultyState};
use memory::{MemoryCapacity, MemoryCluster, MemoryState};

/// Handlers over the in-process adapters (the simulator, `invoke`, `bench-handler`).
pub type MemoryDeps = Deps<MemoryState, MemoryCapacity, MemoryCluster>;
/// Handlers over the in-process adapters with faults injected (`nodewright chaos`).
pub type FaultyDeps = Deps<FaultyState<MemoryState>, FaultyCapacity<MemoryCapacity>, FaultyCluster<MemoryCluster>>;

/// [`crate::handle`] over [`MemoryDeps`], compiled once here. Without it every crate that runs the
/// handlers in memory compiles its own optimized copy of all of them (release builds do not share
/// generic instances between crates), which was most of the simulator's and the CLI's build time.
pub async fn handle_in_memory(
    function: Function,
    deps: &MemoryDeps,
    parsed: Parsed,
    now: EpochMillis,
) -> Result<Outcome> {
    crate::handle(function, deps, parsed, now).await
}

/// [`crate::handle`] over [`FaultyDeps`], compiled once here (see [`handle_in_memory`]).
pub async fn handle_with_faults(
    function: Function,
    deps: &FaultyDeps,
    parsed: Parsed,
    now: EpochMillis,
) -> Result<Outcome> {
    crate::handle(function, deps, parsed, now).await
}
