//! An independent check of plan quality on small batches (issue #23): the exact optimum of each
//! small random batch is found by enumeration, written apart from the packer (every way to split
//! the pods into nodes, each node the cheapest type that holds its pods, by dynamic programming
//! over subsets), and then
//! - the plan never costs less than that optimum (else one of the two places pods where they do
//!   not fit),
//! - the lower bound (`scheduler::lower_bound`) never exceeds it (else the gap every plan reports
//!   would be a lie),
//! - the plan is that optimum: batches this small go through the exact search (`scheduler`'s
//!   `exact` module, a different algorithm over pod-count vectors), and the bound each plan
//!   reports is checked too. The printed worst and mean ratios are the figures.

use nodewright_core::Config;
use nodewright_core::catalogue::{CapacityType, Catalogue, InstanceType, OverheadConfig};
use nodewright_core::model::Pod;
use nodewright_core::resources::Resources;
use nodewright_core::scheduler::lower_bound::lower_bound;
use nodewright_core::scheduler::{Input, Options, schedule};

const ZONE: &str = "us-east-1a";

/// One on-demand pool, one zone, nine common types: the brute force's world and the plan's alike.
const POOL: &str = "apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: default}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
        - {key: topology.kubernetes.io/zone, operator: In, values: [us-east-1a]}
        - key: node.kubernetes.io/instance-type
          operator: In
          values: [c5.large, c5.xlarge, c5.2xlarge, m5.large, m5.xlarge, m5.2xlarge, r5.large, r5.xlarge, r5.2xlarge]
";

/// Pod shapes as Deployments commonly ask: (CPU millicores, memory MiB).
const SHAPES: &[(u64, u64)] = &[
    (100, 128),
    (250, 256),
    (250, 1024),
    (500, 512),
    (500, 2048),
    (1000, 1024),
    (1000, 4096),
    (1500, 3072),
    (2000, 2048),
    (2000, 8192),
    (3000, 6144),
    (4000, 16384),
];

/// SplitMix64: seeded, so a failing batch can be named by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The cheapest price of one node holding `need`, over `types` (None: no type holds it).
fn cheapest_holding(need: &Resources, types: &[(Resources, f64)]) -> Option<f64> {
    types
        .iter()
        .filter(|(alloc, _)| need.fits_in(alloc))
        .map(|(_, price)| *price)
        .min_by(f64::total_cmp)
}

/// The exact optimum: the cheapest split of the pods into nodes (subset dynamic programming).
fn optimum(pods: &[Pod], types: &[(Resources, f64)]) -> Option<f64> {
    let n = pods.len();
    let full = (1usize << n) - 1;
    let mut node_cost = vec![None; full + 1];
    for (mask, cost) in node_cost.iter_mut().enumerate().skip(1) {
        let mut need = Resources::new();
        for (i, p) in pods.iter().enumerate() {
            if mask & (1 << i) != 0 {
                need.add(&p.requests);
            }
        }
        *cost = cheapest_holding(&need, types);
    }
    let mut best = vec![f64::INFINITY; full + 1];
    best[0] = 0.0;
    for mask in 1..=full {
        let low = mask & mask.wrapping_neg();
        // Every node holding the lowest pod of `mask`, and the best for the rest.
        let mut sub = mask;
        while sub > 0 {
            if sub & low != 0
                && let Some(c) = node_cost[sub]
            {
                best[mask] = best[mask].min(c + best[mask ^ sub]);
            }
            sub = (sub - 1) & mask;
        }
    }
    best[full].is_finite().then_some(best[full])
}

#[test]
fn plans_on_small_batches_are_checked_against_the_exact_optimum() {
    let (config, _) = Config::parse_strict(POOL, "pool").expect("the pool parses");
    let pool = &config.node_pools[0];
    let all = Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default());
    let allowed: Vec<&InstanceType> = all.iter().filter(|t| pool.admits_type(t)).collect();
    assert_eq!(allowed.len(), 9, "the pool's nine types are in the catalogue");
    let zone = [ZONE.to_string()];
    let types: Vec<(Resources, f64)> = allowed
        .iter()
        .filter_map(|t| Some((pool.allocatable_of(t), t.cheapest_in(&[CapacityType::OnDemand], &zone)?)))
        .collect();
    assert_eq!(types.len(), 9, "every type is offered on demand in {ZONE}");

    let (mut worst, mut sum, mut batches) = (1.0f64, 0.0f64, 0u32);
    let mut worst_seed = 0;
    // How tight the bound each plan reports is: reported bound / exact optimum (1 = exact).
    let (mut loosest, mut tight_sum) = (1.0f64, 0.0f64);
    for seed in 0..300u64 {
        let mut rng = Rng(seed);
        let n = 2 + rng.below(9) as usize; // 2..=10 pods
        let pods: Vec<Pod> = (0..n)
            .map(|i| {
                let (cpu, mib) = SHAPES[rng.below(SHAPES.len() as u64) as usize];
                Pod::new(&format!("p{i}"), cpu, mib << 20)
            })
            .collect();
        let input = Input::new_nodes_only(&pods, &config.node_pools, &all);
        let plan = schedule(&input, &Options::default());
        assert!(plan.unschedulable.is_empty(), "seed {seed}: {:?}", plan.unschedulable);
        let opt = optimum(&pods, &types).expect("every shape fits some type");
        let cost = plan.total_price();
        assert!(
            cost >= opt - 1e-9,
            "seed {seed}: the plan ({cost}) costs less than the exact optimum ({opt})"
        );
        let bound = lower_bound(&input).expect("a bound").cost;
        assert!(
            bound <= opt + 1e-9,
            "seed {seed}: the lower bound ({bound}) exceeds the exact optimum ({opt})"
        );
        // The gap the plan reports is measured from a bound that may not pass the optimum either.
        let reported = plan.cost.expect("a plan with claims reports its cost");
        assert!(
            (reported.price - cost).abs() < 1e-9 && reported.lower_bound <= opt + 1e-9,
            "seed {seed}: the plan reports {reported:?}, the exact optimum is {opt}"
        );
        let tightness = reported.lower_bound / opt;
        loosest = loosest.min(tightness);
        tight_sum += tightness;
        let ratio = cost / opt;
        // SHOW_SEED=<seed> prints one batch, its plan and the optimum (to study a bad draw).
        if std::env::var("SHOW_SEED").ok().as_deref() == Some(&seed.to_string()) {
            for p in &pods {
                println!("{} {}", p.name, p.requests);
            }
            for c in &plan.claims {
                println!(
                    "{} {} {:.4} {:?} {}",
                    c.id, c.instance_types[0].name, c.price, c.pods, c.requests
                );
            }
            println!("opt {opt} plan {cost}");
        }
        if ratio > worst {
            (worst, worst_seed) = (ratio, seed);
        }
        sum += ratio;
        batches += 1;
    }
    let mean = sum / f64::from(batches);
    println!(
        "{batches} batches of 2-10 pods: plan / exact optimum mean {mean:.4}, worst {worst:.4} (seed {worst_seed})"
    );
    println!(
        "the bound each plan reports / exact optimum: mean {:.4}, loosest {loosest:.4}",
        tight_sum / f64::from(batches)
    );
    // Batches this small are solved exactly (the `exact` search), so every plan is the optimum
    // (before it: mean 1.0075, worst 1.22 at seed 45, a three-way split greedy packing missed).
    assert!(
        worst <= 1.0 + 1e-9,
        "plan / optimum reached {worst:.4} at seed {worst_seed}"
    );
}

/// Batches of 13-14 pods of distinct random shapes: past the exact search's states (2^13 > 4,096),
/// so the plan and the bound it reports
/// come from column generation (`scheduler`'s `patterns` module) and the packer. The same
/// enumeration checks both: the plan never beats the optimum, the bound never passes it.
#[test]
fn column_generation_plans_and_bounds_are_checked_against_the_exact_optimum() {
    let (config, _) = Config::parse_strict(POOL, "pool").expect("the pool parses");
    let pool = &config.node_pools[0];
    let all = Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default());
    let zone = [ZONE.to_string()];
    let types: Vec<(Resources, f64)> = all
        .iter()
        .filter(|t| pool.admits_type(t))
        .filter_map(|t| Some((pool.allocatable_of(t), t.cheapest_in(&[CapacityType::OnDemand], &zone)?)))
        .collect();
    let (mut worst, mut sum, mut loosest, mut searched) = (1.0f64, 0.0f64, 1.0f64, 0u32);
    let (mut packer_worst, mut packer_sum) = (1.0f64, 0.0f64);
    let batches = 24u32;
    for seed in 1000..1000 + u64::from(batches) {
        let mut rng = Rng(seed);
        let n = 13 + rng.below(2) as usize; // 13..=14 pods
        let pods: Vec<Pod> = (0..n)
            .map(|i| {
                let cpu = 100 + 50 * rng.below(60);
                let mib = 128 * (1 + rng.below(64));
                Pod::new(&format!("p{i}"), cpu, mib << 20)
            })
            .collect();
        let input = Input::new_nodes_only(&pods, &config.node_pools, &all);
        let plan = schedule(&input, &Options::default());
        assert!(plan.unschedulable.is_empty(), "seed {seed}: {:?}", plan.unschedulable);
        let opt = optimum(&pods, &types).expect("every shape fits some type");
        let cost = plan.total_price();
        assert!(
            cost >= opt - 1e-9,
            "seed {seed}: the plan ({cost}) costs less than the exact optimum ({opt})"
        );
        let reported = plan.cost.expect("a plan with claims reports its cost");
        assert!(
            reported.lower_bound <= opt + 1e-9,
            "seed {seed}: the reported bound ({}) exceeds the exact optimum ({opt})",
            reported.lower_bound
        );
        // Column generation's bound is never looser than the relaxation's.
        let relaxed = lower_bound(&input).expect("a bound").cost;
        assert!(
            reported.lower_bound >= relaxed.min(opt) - 1e-6 || reported.exact,
            "seed {seed}: the reported bound ({}) is looser than the relaxation's ({relaxed})",
            reported.lower_bound
        );
        searched += u32::from(!reported.exact);
        // The packer alone (no exact search, no column generation), for comparison.
        let packer = schedule(
            &input,
            &Options {
                exact: false,
                ..Options::default()
            },
        )
        .total_price();
        assert!(cost <= packer + 1e-9, "seed {seed}: the search made the plan dearer");
        packer_worst = packer_worst.max(packer / opt);
        packer_sum += packer / opt;
        worst = worst.max(cost / opt);
        // Draws over 1 % above the optimum are printed, to study.
        if cost / opt > 1.01 {
            println!(
                "seed {seed}: plan {cost:.4} opt {opt:.4} bound {:.4} packer {packer:.4}",
                reported.lower_bound
            );
        }
        sum += cost / opt;
        loosest = loosest.min(reported.lower_bound / opt);
    }
    println!(
        "{batches} batches of 13-14 pods ({searched} past the exact search): plan / exact optimum mean {:.4}, worst {worst:.4}; reported bound / optimum loosest {loosest:.4}; the packer alone: mean {:.4}, worst {packer_worst:.4}",
        sum / f64::from(batches),
        packer_sum / f64::from(batches)
    );
    assert!(
        searched > batches / 2,
        "most batches reach column generation ({searched})"
    );
}

/// Pools with `limits` (as most production pools have) get the search too. With room to spare the
/// plan is the exact optimum, as without limits; with a limit the optimum's nodes would pass, the
/// plan keeps every claim's reservation (the largest type it may become) within the limit and
/// leaves the rest unschedulable, as Karpenter does.
#[test]
fn pools_with_limits_get_the_exact_search_within_their_limits() {
    let with_limit = |cpu: &str| {
        POOL.replace(
            "spec:\n  template:",
            &format!("spec:\n  limits: {{cpu: \"{cpu}\"}}\n  template:"),
        )
    };
    let all = Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default());
    let zone = [ZONE.to_string()];
    let capacity = |name: &str| {
        all.iter()
            .find(|t| t.name == name)
            .map(|t| t.capacity.cpu_milli())
            .expect("a planned type is in the catalogue")
    };
    let (roomy, _) = Config::parse_strict(&with_limit("1000"), "pool").expect("the pool parses");
    let (tight, _) = Config::parse_strict(&with_limit("8"), "pool").expect("the pool parses");
    assert_eq!(roomy.node_pools[0].limits.entries().len(), 1, "the limit is read");
    let pool = &roomy.node_pools[0];
    let types: Vec<(Resources, f64)> = all
        .iter()
        .filter(|t| pool.admits_type(t))
        .filter_map(|t| Some((pool.allocatable_of(t), t.cheapest_in(&[CapacityType::OnDemand], &zone)?)))
        .collect();
    let mut held_back = 0;
    for seed in 0..100u64 {
        let mut rng = Rng(seed);
        let n = 2 + rng.below(9) as usize;
        let pods: Vec<Pod> = (0..n)
            .map(|i| {
                let (cpu, mib) = SHAPES[rng.below(SHAPES.len() as u64) as usize];
                Pod::new(&format!("p{i}"), cpu, mib << 20)
            })
            .collect();
        let input = |pools| Input {
            pods: &pods,
            nodes: &[],
            pools,
            instance_types: &all,
            daemonsets: &[],
            pool_usage: &[],
        };
        let plan = schedule(&input(&roomy.node_pools), &Options::default());
        let opt = optimum(&pods, &types).expect("every shape fits some type");
        assert!(plan.unschedulable.is_empty(), "seed {seed}: {:?}", plan.unschedulable);
        assert!(
            (plan.total_price() - opt).abs() < 1e-9,
            "seed {seed}: with room under the limit the plan ({}) is the optimum ({opt})",
            plan.total_price()
        );

        let plan = schedule(&input(&tight.node_pools), &Options::default());
        let reserved: u64 = plan
            .claims
            .iter()
            .map(|c| c.instance_types.iter().map(|o| capacity(&o.name)).max().unwrap_or(0))
            .sum();
        assert!(
            reserved <= 8000,
            "seed {seed}: claims may become {reserved}m of CPU, the limit is 8"
        );
        assert_eq!(
            plan.placed_pods() + plan.unschedulable.len(),
            pods.len(),
            "seed {seed}: every pod placed or reported"
        );
        held_back += plan.unschedulable.len();
    }
    assert!(held_back > 0, "the tight limit held some pods back");
}

/// `nodewright bench`'s small-batch pool: on-demand c5/m5/r5, amd64.
const SMALL_BATCH_POOL: &str = "apiVersion: karpenter.sh/v1
kind: NodePool
metadata: {name: default}
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: default}
      requirements:
        - {key: karpenter.sh/capacity-type, operator: In, values: [on-demand]}
        - {key: karpenter.k8s.aws/instance-family, operator: In, values: [c5, m5, r5]}
        - {key: kubernetes.io/arch, operator: In, values: [amd64]}
";

/// A batch as (CPU millicores, memory MiB, pods) per shape.
type Shapes = &'static [(u64, u64, usize)];

/// The plan for a batch on the small-batch pool and the real catalogue: its price and the bound it
/// reports, after checking every pod was placed.
fn small_batch_plan(shapes: Shapes) -> (usize, f64, f64) {
    let (config, _) = Config::parse_strict(SMALL_BATCH_POOL, "pool").expect("the pool parses");
    let all = Catalogue::embedded().instance_types("us-east-1", &OverheadConfig::default());
    let pods: Vec<Pod> = shapes
        .iter()
        .flat_map(|(cpu, mib, n)| std::iter::repeat_n((*cpu, *mib), *n))
        .enumerate()
        .map(|(i, (cpu, mib))| Pod::new(&format!("p{i}"), cpu, mib << 20))
        .collect();
    let input = Input::new_nodes_only(&pods, &config.node_pools, &all);
    let plan = schedule(&input, &Options::default());
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    let reported = plan.cost.expect("a plan with claims reports its cost");
    (pods.len(), plan.total_price(), reported.lower_bound)
}

/// Plans `shapes` (of `pods` pods in all) and checks the plan within 1 % of the batch's proven
/// optimum, never below it, and the reported bound never above it.
fn assert_within_one_percent_of_proven(shapes: Shapes, pods: usize, optimum: f64) {
    let (n, cost, bound) = small_batch_plan(shapes);
    assert_eq!(n, pods);
    assert!(cost >= optimum - 1e-9, "the plan {cost:.4} beats a proven optimum");
    assert!(
        cost <= optimum * 1.01,
        "the plan costs {cost:.4}, {:.2} % over the proven optimum {optimum:.4}",
        (cost / optimum - 1.0) * 100.0
    );
    assert!(bound <= optimum + 1e-9, "the bound {bound:.4} passes the optimum");
}

/// Batches where the restricted integer master and the sequential fill both missed the optimum
/// and the dives find it. The optima were proven by the independent solver
/// (`scripts/exact-optimum.py`, CP-SAT on a model of its own) for these batches of `nodewright
/// bench`'s small-batch table (40 pods, seed 6; 60 pods, seed 9): the plan was $3.066 and $4.092
/// before the dives (c5.9xlarge + m5.8xlarge where 2 c5.2xlarge + m5.12xlarge hold the same pods
/// for less).
#[test]
fn dives_reach_the_proven_optimum_the_integer_master_misses() {
    // The batch and its proven optimum, $/h.
    let batches: [(Shapes, f64); 2] = [
        (
            &[
                (100, 128, 6),
                (250, 512, 3),
                (500, 2048, 1),
                (1000, 1024, 4),
                (1000, 2048, 5),
                (1000, 4096, 2),
                (1500, 3072, 3),
                (2000, 4096, 6),
                (2000, 8192, 3),
                (4000, 8192, 4),
                (4000, 16384, 3),
            ],
            2.984,
        ),
        (
            &[
                (100, 128, 5),
                (250, 512, 6),
                (500, 1024, 3),
                (500, 2048, 3),
                (1000, 1024, 7),
                (1000, 2048, 9),
                (1000, 4096, 6),
                (1500, 3072, 2),
                (2000, 4096, 6),
                (2000, 8192, 4),
                (4000, 8192, 6),
                (4000, 16384, 3),
            ],
            3.96,
        ),
    ];
    for (shapes, optimum) in batches {
        let (pods, cost, bound) = small_batch_plan(shapes);
        assert!(
            (cost - optimum).abs() < 1e-6,
            "{pods} pods: the plan costs {cost:.4}, the proven optimum {optimum:.4}"
        );
        assert!(bound <= optimum + 1e-9, "the bound passes the optimum");
    }
}

/// Once its plan is chosen, the search keeps the plan's dearest node and searches the pods left
/// again from nothing: their own relaxation holds the split between c5 and m5 that the whole
/// batch's missed. On this batch of the small-batch table (60 pods, seed 2; optimum $4.092, 3
/// c5.2xlarge + m5.12xlarge + m5.4xlarge, proven by the independent solver) the plan was $4.158
/// (1.6 % over) without that step.
#[test]
fn a_search_around_the_dearest_node_brings_a_batch_within_one_percent_of_its_proven_optimum() {
    let batch: Shapes = &[
        (100, 128, 6),
        (250, 512, 5),
        (500, 1024, 8),
        (500, 2048, 5),
        (1000, 1024, 2),
        (1000, 2048, 7),
        (1000, 4096, 4),
        (1500, 3072, 4),
        (2000, 4096, 2),
        (2000, 8192, 7),
        (4000, 8192, 4),
        (4000, 16384, 6),
    ];
    assert_within_one_percent_of_proven(batch, 60, 4.092);
}

/// The plan's small end solved exactly: with its dearest nodes kept, the pods left are few
/// enough for the dynamic programme. On this batch of the small-batch table (40 pods, seed 14)
/// neither column generation nor the greedy does better than $3.626 (an m5.8xlarge, two
/// m5.4xlarge, an m5.2xlarge and two c5.large; 1.2 % over $3.582, the independent solver's best
/// plan); with the m5.8xlarge and both m5.4xlarge kept, the last 10 pods go on a c5.2xlarge and
/// an m5.xlarge instead of the m5.2xlarge and two c5.large: $3.604, 0.6 % over.
#[test]
fn the_small_end_of_a_plan_solved_exactly_brings_a_batch_within_one_percent_of_the_best_known_plan() {
    let batch: Shapes = &[
        (100, 128, 1),
        (250, 512, 1),
        (500, 1024, 3),
        (500, 2048, 5),
        (1000, 1024, 1),
        (1000, 2048, 3),
        (1000, 4096, 7),
        (2000, 4096, 5),
        (2000, 8192, 4),
        (4000, 8192, 6),
        (4000, 16384, 4),
    ];
    let best_known = 3.582;
    let (pods, cost, bound) = small_batch_plan(batch);
    assert_eq!(pods, 40);
    assert!(
        cost <= best_known * 1.01,
        "the plan costs {cost:.4}, {:.2} % over the best known plan {best_known:.4}",
        (cost / best_known - 1.0) * 100.0
    );
    assert!(bound <= cost + 1e-9, "the bound {bound:.4} passes the plan");
}

/// The search's nodes are replayed through the packer and then trade pods like the greedy's
/// claims, which drops sizes the search left: on this batch of the small-batch table (40 pods,
/// seed 13; optimum $2.748, 3 c5.2xlarge + m5.8xlarge + m5.xlarge, proven by the independent
/// solver) the search alone planned $2.792 (1.6 % over), and with the trades $2.770 (0.8 %).
#[test]
fn trades_after_the_search_bring_a_batch_within_one_percent_of_its_proven_optimum() {
    let batch: Shapes = &[
        (100, 128, 4),
        (250, 512, 1),
        (500, 1024, 2),
        (500, 2048, 2),
        (1000, 1024, 5),
        (1000, 2048, 4),
        (1000, 4096, 4),
        (1500, 3072, 4),
        (2000, 4096, 2),
        (2000, 8192, 8),
        (4000, 8192, 2),
        (4000, 16384, 2),
    ];
    assert_within_one_percent_of_proven(batch, 40, 2.748);
}

/// The batch of the small-batch table (40 pods, seed 15) that stayed 1.2-1.8 % over its proven
/// optimum through every change before the master's own simplex ($2.896 and $2.877 against
/// $2.844: 3 c5.2xlarge + m5.8xlarge + m5.xlarge + m5.large, proven by the independent solver).
/// Its optimum shares no node with those plans, so no neighbourhood of them reached it; the
/// prices column generation sees decide which patterns it finds, and with the master solved on
/// its own basis (pricing per unit length of a pattern's column) the dives find a plan 0.4 %
/// over.
#[test]
fn the_batch_whose_optimum_shared_no_node_with_the_plan_is_within_one_percent() {
    let batch: Shapes = &[
        (250, 512, 5),
        (500, 2048, 5),
        (1000, 1024, 6),
        (1000, 2048, 4),
        (1000, 4096, 4),
        (1500, 3072, 3),
        (2000, 4096, 4),
        (2000, 8192, 3),
        (4000, 8192, 3),
        (4000, 16384, 3),
    ];
    assert_within_one_percent_of_proven(batch, 40, 2.844);
}
