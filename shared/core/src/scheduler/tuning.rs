//! The cost-aware packer's tuning constants, in one place, each with the measurement that set
//! it (the FFD baseline has none).

/// How much less value a copied choice may pack than the claim it copies.
pub(super) const REUSE_TOLERANCE: f64 = 1e-9;

/// Copies of one choice in a row before the candidates are simulated again. Measured with
/// `nodewright bench` (20k diverse pods): 3 made the packer 2x faster at the same cost; 10 was
/// faster still but cost about 1% more on the benchmark shapes.
pub(super) const MAX_REUSES: usize = 3;

pub(super) const FAIR_SLACK: f64 = 1.25;

/// How many candidate types are evaluated by simulation per new claim.
pub(super) const SIMULATED_TYPES: usize = 8;

/// How many more candidates are ranked by the seed bucket's own shape.
pub(super) const SEED_TYPES: usize = 8;

/// Passes over all claims; later passes find what earlier trades made possible.
pub(super) const MAX_PASSES: usize = 2;

/// Cheaper types tried per claim: the ones needing the least to be moved out.
pub(super) const TARGETS: usize = 3;

/// Partners a pod may go to, most room first: the scan stops there (it bounds the pass's time on
/// catalogues where most claims have some room).
pub(super) const PARTNERS: usize = 256;

/// A claim absorbs pods from others only when at least this share of its CPU or memory is idle.
pub(super) const ABSORB_IDLE: f64 = 0.35;

/// Claims a merging claim's pods may go to (the first of its group).
pub(super) const MERGE_PARTNERS: usize = 64;

/// Groups above this many claims are not merged: large batches take their node mix from the
/// relaxed optimum, where the merge found nothing on the benchmark workloads and cost 10-25 % of
/// the 20k-pod time; small ones, where the greedy's first choice decides the plan, are merged.
pub(super) const MERGE_MAX_GROUP: usize = 200;

/// Larger types tried for an absorbing claim (the cheapest ones above its own).
pub(super) const GROW_TARGETS: usize = 2;

/// Cheaper types a scattering claim tries after emptying (those needing least moved out).
pub(super) const SCATTER_TARGETS: usize = 3;

/// Partners checked by all scatters of one plan.
pub(super) const SCATTER_WORK: u64 = 400_000;

/// Partners a scattering claim's pods are packed again with, at most.
pub(super) const REPACK_PARTNERS: usize = 32;

/// Partners' room must exceed what leaves the claim by this factor before a repacking is tried
/// (2.0 as a second try found nothing more on the benchmark workloads).
pub(super) const REPACK_SLACK: f64 = 1.25;

/// The demand still to place (the mix a claim is filled towards) is summed again after one fill
/// per this many pods it counted.
pub(super) const MIX_REFRESH: usize = 1000;

/// The pods left once a plan's dearest nodes are kept are solved exactly when they make at most
/// this many pod-count vectors (the whole-batch search's limit). On the small-batch table at
/// 4,096 the step cost 8-10 ms of a 60-pod decision (p50) and found one more plan than at 1,024
/// (40 pods, seed 2: $2.378 -> $2.356, the independent solver's best plan; 0.9 % over it
/// without); at 256 it missed 40-pod seed 14, which it brings within 1 %. It was 1,024 until the
/// master's own simplex (`patterns::master`) freed the time.
pub(super) const REST_STATES_MAX: usize = 4096;
