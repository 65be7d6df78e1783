//! The pricing of anchored patterns: one bounded knapsack over every filler shape at once, whose
//! table answers "the most value of fillers within this much CPU and memory" for every room up
//! to the largest, so each anchor class and node size costs one lookup.
//!
//! Requests are rounded up and rooms down to the grid's steps, so every answer fits. Copies of a
//! shape are split in powers of two (a 0/1 knapsack over a few items per shape); each item keeps
//! a bit per cell saying whether it was taken there, from which a cell's counts are read back.

/// Cells along the memory axis at most (the CPU axis has the shapes' common step).
const MEMORY_CELLS: u64 = 4096;
/// Cells along the CPU axis at most.
const CPU_CELLS: u64 = 400;
/// Items times cells at most per table: its work, and its bits of memory (8 MiB).
const WORK_MAX: u64 = 1 << 26;

/// One filler shape as the knapsack sees it.
pub(super) struct Item {
    pub cpu: u64,
    pub memory: u64,
    pub value: f64,
    /// At most this many of it in one pattern.
    pub copies: u64,
}

pub(super) struct Grid {
    cpu_step: u64,
    memory_step: u64,
    cpu_cells: usize,
    memory_cells: usize,
    best: Vec<f64>,
    /// (shape, multiplicity, CPU cells, memory cells) per 0/1 item, and its taken bits.
    items: Vec<(usize, u64, usize, usize)>,
    taken: Vec<Vec<u64>>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Grid {
    /// The table for rooms up to (`max_cpu` milli-CPU, `max_memory` bytes).
    pub fn build(shapes: &[Item], max_cpu: u64, max_memory: u64) -> Grid {
        let live = || shapes.iter().filter(|s| s.value > 1e-12 && s.copies > 0);
        let cpu_gcd = live().fold(0, |g, s| gcd(g, s.cpu)).max(1);
        let memory_gcd = live().fold(0, |g, s| gcd(g, s.memory)).max(1);
        let cpu_step = cpu_gcd.max(max_cpu.div_ceil(CPU_CELLS)).max(1);
        let cpu_cells = (max_cpu / cpu_step) as usize + 1;
        // The 0/1 items (copies split in powers of two, at most what fits by CPU) times the
        // cells is both the work and the bits kept: past `WORK_MAX`, memory steps coarsen.
        let pieces: u64 = live()
            .map(|s| {
                let fit = s
                    .copies
                    .min((cpu_cells as u64 - 1) / s.cpu.div_ceil(cpu_step).max(1))
                    .max(1);
                u64::from(64 - fit.leading_zeros())
            })
            .sum::<u64>()
            .max(1);
        let by_work = WORK_MAX / (pieces * cpu_cells as u64);
        let memory_step = memory_gcd
            .max(max_memory.div_ceil(MEMORY_CELLS))
            .max(max_memory.div_ceil(by_work.max(2) - 1))
            .max(1);
        let memory_cells = (max_memory / memory_step) as usize + 1;
        let cells = cpu_cells * memory_cells;
        let mut best = vec![0.0f64; cells];
        let mut items = Vec::new();
        let mut taken = Vec::new();
        for (s, shape) in shapes.iter().enumerate() {
            if shape.value <= 1e-12 || shape.copies == 0 {
                continue;
            }
            let dc = shape.cpu.div_ceil(cpu_step) as usize;
            let dm = shape.memory.div_ceil(memory_step) as usize;
            let fit = if dc == 0 && dm == 0 {
                shape.copies
            } else {
                let by_cpu = if dc == 0 {
                    u64::MAX
                } else {
                    (cpu_cells - 1) as u64 / dc as u64
                };
                let by_memory = if dm == 0 {
                    u64::MAX
                } else {
                    (memory_cells - 1) as u64 / dm as u64
                };
                shape.copies.min(by_cpu).min(by_memory)
            };
            let mut left = fit;
            let mut mult = 1;
            while left > 0 {
                let k = mult.min(left);
                left -= k;
                mult *= 2;
                let (kc, km) = (dc * k as usize, dm * k as usize);
                if kc == 0 && km == 0 {
                    continue;
                }
                let v = shape.value * k as f64;
                // Bits per row, from the item's memory offset: bit j of word w of row c says
                // whether cell (c, km + 64 w + j) took the item.
                let words = (memory_cells - km).div_ceil(64);
                let mut bits = vec![0u64; cpu_cells * words];
                for c in (kc..cpu_cells).rev() {
                    let row = c * memory_cells;
                    let from = (c - kc) * memory_cells;
                    if kc == 0 {
                        // Same row: descending, so each cell reads the row before this item.
                        for m in (km..memory_cells).rev() {
                            let cand = best[from + m - km] + v;
                            if cand > best[row + m] + 1e-12 {
                                best[row + m] = cand;
                                bits[c * words + (m - km) / 64] |= 1 << ((m - km) % 64);
                            }
                        }
                        continue;
                    }
                    // Another row, not yet updated for this item: branch-free, in words.
                    let (low, high) = best.split_at_mut(row);
                    let src = &low[from..from + memory_cells - km];
                    let dst = &mut high[km..memory_cells];
                    for (w, (d, s)) in dst.chunks_mut(64).zip(src.chunks(64)).enumerate() {
                        let mut word = 0u64;
                        for (j, (d, s)) in d.iter_mut().zip(s).enumerate() {
                            let cand = s + v;
                            let take = cand > *d + 1e-12;
                            *d = if take { cand } else { *d };
                            word |= u64::from(take) << j;
                        }
                        bits[c * words + w] = word;
                    }
                }
                items.push((s, k, kc, km));
                taken.push(bits);
            }
        }
        Grid {
            cpu_step,
            memory_step,
            cpu_cells,
            memory_cells,
            best,
            items,
            taken,
        }
    }

    fn cell(&self, cpu: u64, memory: u64) -> (usize, usize) {
        (
            ((cpu / self.cpu_step) as usize).min(self.cpu_cells - 1),
            ((memory / self.memory_step) as usize).min(self.memory_cells - 1),
        )
    }

    /// The most value that fits in the room.
    pub fn best(&self, cpu: u64, memory: u64) -> f64 {
        let (c, m) = self.cell(cpu, memory);
        self.best[c * self.memory_cells + m]
    }

    /// How many of each shape make [`Grid::best`] for the room.
    pub fn counts(&self, cpu: u64, memory: u64, shapes: usize) -> Vec<u64> {
        let (mut c, mut m) = self.cell(cpu, memory);
        let mut counts = vec![0u64; shapes];
        for (i, (s, k, kc, km)) in self.items.iter().enumerate().rev() {
            if c < *kc || m < *km {
                continue;
            }
            let words = (self.memory_cells - km).div_ceil(64);
            if self.taken[i][c * words + (m - km) / 64] & (1 << ((m - km) % 64)) != 0 {
                counts[*s] += k;
                c -= kc;
                m -= km;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every combination of four shapes, enumerated apart from the table.
    fn check(shapes: &[Item], exact: bool) {
        let (max_cpu, max_memory) = (4000, 8u64 << 30);
        let grid = Grid::build(shapes, max_cpu, max_memory);
        let rooms = [
            (4000, 8u64 << 30),
            (1850, 4u64 << 30),
            (600, 300 << 20),
            (3100, 1 << 30),
            (0, 0),
        ];
        for (cpu, memory) in rooms {
            let mut best = 0.0f64;
            let top: Vec<u64> = shapes.iter().map(|s| s.copies).collect();
            for a in 0..=top[0] {
                for b in 0..=top[1] {
                    for c in 0..=top[2] {
                        for d in 0..=top[3] {
                            let n = [a, b, c, d];
                            let used_c: u64 = n.iter().zip(shapes).map(|(k, s)| k * s.cpu).sum();
                            let used_m: u64 = n.iter().zip(shapes).map(|(k, s)| k * s.memory).sum();
                            if used_c <= cpu && used_m <= memory {
                                best = best.max(n.iter().zip(shapes).map(|(k, s)| *k as f64 * s.value).sum());
                            }
                        }
                    }
                }
            }
            let got = grid.best(cpu, memory);
            // Rounding to the grid may only lose value, never invent it.
            assert!(got <= best + 1e-9, "room ({cpu}, {memory}): {got} > {best}");
            if exact {
                assert!((got - best).abs() < 1e-9, "room ({cpu}, {memory}): {got} < {best}");
            }
            let counts = grid.counts(cpu, memory, shapes.len());
            let used_c: u64 = counts.iter().zip(shapes).map(|(k, s)| k * s.cpu).sum();
            let used_m: u64 = counts.iter().zip(shapes).map(|(k, s)| k * s.memory).sum();
            assert!(
                used_c <= cpu && used_m <= memory,
                "counts {counts:?} overflow ({cpu}, {memory})"
            );
            let value: f64 = counts.iter().zip(shapes).map(|(k, s)| *k as f64 * s.value).sum();
            assert!(
                (value - got).abs() < 1e-9,
                "counts {counts:?} worth {value}, table {got}"
            );
            assert!(counts.iter().zip(shapes).all(|(k, s)| *k <= s.copies));
        }
    }

    fn item(cpu: u64, memory_mib: u64, value: f64, copies: u64) -> Item {
        Item {
            cpu,
            memory: memory_mib << 20,
            value,
            copies,
        }
    }

    #[test]
    fn best_is_the_enumerated_optimum_on_the_grids_steps() {
        let shapes = [
            item(250, 256, 0.2, 3),
            item(250, 4096, 0.9, 2),
            item(1500, 256, 1.45, 2),
            item(500, 1024, 0.48, 5),
        ];
        check(&shapes, true);
    }

    #[test]
    fn off_the_steps_answers_still_fit() {
        let shapes = [
            item(100, 100, 0.11, 3),
            item(250, 4096, 0.9, 2),
            item(1500, 250, 1.45, 2),
            item(500, 1000, 0.48, 5),
        ];
        check(&shapes, false);
    }

    #[test]
    fn many_shapes_and_large_rooms_stay_within_the_work_limit() {
        let shapes: Vec<Item> = (1..=96u64)
            .map(|i| Item {
                cpu: 50 * i,
                memory: (64 + 7 * i) << 20,
                value: i as f64,
                copies: 1000,
            })
            .collect();
        let grid = Grid::build(&shapes, 64_000, 256 << 30);
        let cells = (grid.cpu_cells * grid.memory_cells) as u64;
        assert!(
            grid.items.len() as u64 * cells <= WORK_MAX,
            "{} items x {cells} cells",
            grid.items.len()
        );
        let counts = grid.counts(64_000, 256 << 30, shapes.len());
        let used: u64 = counts.iter().zip(&shapes).map(|(k, s)| k * s.cpu).sum();
        assert!(used <= 64_000 && used > 60_000, "{used}m of 64 vCPU used");
    }
}
