//! What the commands share for reports: best-of-N timing and the table style.

use std::time::Instant;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

/// Runs `f` `repeat` times (at least once); returns the last result and the best time in ms.
pub fn best_of<T>(repeat: usize, f: impl Fn() -> T) -> (T, f64) {
    let once = || {
        let start = Instant::now();
        let out = f();
        (out, start.elapsed().as_secs_f64() * 1000.0)
    };
    let (mut out, mut best) = once();
    for _ in 1..repeat {
        let (next, ms) = once();
        out = next;
        best = best.min(ms);
    }
    (out, best)
}

/// A table in the CLI's style with this header.
pub fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_FULL_CONDENSED);
    t.set_header(header);
    t
}
