//! The text form of [`Availability`]: a summary per GPU model when there are GPUs, then one
//! table grouped by pool, GPU types first, a total row per pool; colour only when asked (the caller
//! decides: a terminal and no NO_COLOR), a width only when given (else the shared table style's).

use comfy_table::{
    Attribute, Cell, CellAlignment, Color, ColumnConstraint, ContentArrangement, Table, Width as ComfyWidth,
};

use super::availability::{Availability, GpuModelRow, PoolRow, TypeRow, Wait};
use crate::report::table;

fn total_max(current: u64, max: Option<u64>, configured: bool) -> String {
    match (max, configured) {
        (Some(m), _) => format!("{current} / {m}"),
        (None, true) => format!("{current} / ∞"),
        (None, false) => format!("{current} / ?"),
    }
}

fn money(v: f64) -> String {
    // Sums of no prices can be -0.0, which would print as "$-0.00".
    format!("${:.2}", v.max(0.0))
}

fn type_label(r: &TypeRow) -> String {
    match r.gpus_per_node {
        0 => r.instance_type.clone(),
        1 => format!("{} (1 GPU)", r.instance_type),
        n => format!("{} ({n} GPUs)", r.instance_type),
    }
}

fn wait_cell(r: &TypeRow) -> Cell {
    let colour = match r.wait {
        Wait::AvailableNow => Color::Green,
        Wait::ScalingUp { .. } | Wait::NewNode { .. } => Color::Yellow,
        Wait::AtLimit => Color::Red,
    };
    Cell::new(&r.wait_text).fg(colour)
}

fn right(s: impl ToString) -> Cell {
    Cell::new(s.to_string()).set_alignment(CellAlignment::Right)
}

/// How the per-type table is arranged, widest first; [`render`] takes the first that fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A Pool column, one row per pool and type, a bold total row for pools with several types.
    Wide,
    /// No Pool column: a bold row per pool with its totals, its types indented under it.
    Grouped,
    /// Grouped without the Spot % and $/h now columns (a note says so).
    Lean,
}

const LAYOUTS: [Layout; 3] = [Layout::Wide, Layout::Grouped, Layout::Lean];

fn styled(mut t: Table, colour: bool) -> Table {
    if colour {
        t.enforce_styling();
    } else {
        t.force_no_tty();
    }
    t
}

/// Fits `t` in `width`: as it is when its natural width fits; otherwise wrapped at spaces with
/// every column at least as wide as its longest word, so no word is split (comfy-table's dynamic
/// arrangement alone splits "Available now" into "Availab" / "le now"). The room left over goes,
/// cheapest first, to widening a column just enough to put one more of its cells on one line. A
/// body cell that starts with a digit or `$` (a count, `3 / 16`, `$1.50`) is kept whole. False
/// when even the longest words do not fit: the table is then arranged dynamically anyway (words
/// split) and the caller may try a narrower layout.
fn fit(t: &mut Table, width: u16) -> bool {
    let natural = t.column_max_content_widths();
    let columns = natural.len();
    let chars = |s: &str| s.chars().count();
    // Per column: the longest word (the least width), and every cell line's width (the widths at
    // which one more line stops wrapping).
    let mut least = vec![1usize; columns];
    let mut lines: Vec<Vec<usize>> = vec![Vec::new(); columns];
    let header = t.header().into_iter().map(|r| (true, r));
    for (is_header, row) in header.chain(t.row_iter().map(|r| (false, r))) {
        for (i, cell) in row.cell_iter().enumerate().take(columns) {
            let content = cell.content();
            let whole = !is_header && content.starts_with(|c: char| c.is_ascii_digit() || c == '$');
            for line in content.lines() {
                let word = if whole {
                    chars(line)
                } else {
                    line.split(' ').map(chars).max().unwrap_or(1)
                };
                least[i] = least[i].max(word);
                lines[i].push(chars(line));
            }
        }
    }
    // UTF8_FULL_CONDENSED: a border left, then per column one space each side and a border.
    let budget = usize::from(width).saturating_sub(3 * columns + 1);
    t.set_width(width);
    t.set_content_arrangement(ContentArrangement::Dynamic);
    if natural.iter().map(|w| usize::from(*w)).sum::<usize>() <= budget {
        return true;
    }
    if least.iter().sum::<usize>() > budget {
        return false;
    }
    let mut widths = least;
    let mut spare = budget - widths.iter().sum::<usize>();
    loop {
        let cheapest = (0..columns)
            .filter_map(|i| {
                let next = lines[i].iter().copied().filter(|w| *w > widths[i]).min()?;
                Some((next - widths[i], i, next))
            })
            .filter(|(cost, _, _)| *cost <= spare)
            .min();
        let Some((cost, i, next)) = cheapest else { break };
        widths[i] = next;
        spare -= cost;
    }
    // An absolute width counts the column's padding (one space each side).
    t.set_constraints(
        widths
            .into_iter()
            .map(|w| ColumnConstraint::Absolute(ComfyWidth::Fixed(u16::try_from(w + 2).unwrap_or(u16::MAX))))
            .collect::<Vec<_>>(),
    );
    true
}

fn free_gpus(v: Option<u64>) -> Cell {
    right(v.map_or("-".into(), |n| n.to_string()))
}

fn pool_total_max(pool: &PoolRow) -> String {
    match (pool.node_limit, pool.limited) {
        // Resource limits bound each type differently: no single pool maximum.
        (None, true) => pool.current.to_string(),
        _ => total_max(pool.current, pool.node_limit, pool.configured),
    }
}

/// The per-type table in `layout` (without the heading and notes); a "Free GPUs" column when any
/// row has GPUs.
pub fn table_of(a: &Availability, colour: bool, layout: Layout) -> Table {
    let gpus = a.pools.iter().flat_map(|p| &p.types).any(|r| r.gpus_per_node > 0);
    let wide = layout == Layout::Wide;
    let costs = layout != Layout::Lean;
    let mut header = if wide {
        vec!["Pool", "Instance type"]
    } else {
        vec!["Pool / instance type"]
    };
    header.extend(["Ready", "Launching", "Total / Max"]);
    if gpus {
        header.push("Free GPUs");
    }
    header.extend(["Pending pods", "Est. wait"]);
    if costs {
        header.extend(["Spot %", "$/h now"]);
    }
    let mut t = table([]);
    t.set_header(header);
    let mut t = styled(t, colour);
    let bold = |c: Cell| c.add_attribute(Attribute::Bold);
    for pool in &a.pools {
        let pool_row = !wide || pool.types.len() > 1;
        let mut total = Vec::new();
        if pool_row {
            total = if wide {
                vec![bold(Cell::new(&pool.pool)), bold(Cell::new("total"))]
            } else {
                vec![bold(Cell::new(&pool.pool))]
            };
            total.extend([
                bold(right(pool.ready)),
                bold(right(pool.launching)),
                bold(right(pool_total_max(pool))),
            ]);
            if gpus {
                total.push(bold(free_gpus(pool.free_gpus)));
            }
            total.extend([bold(right(pool.pending_pods)), Cell::new("")]);
            if costs {
                total.extend([
                    Cell::new(""),
                    bold(right(if pool.current == 0 {
                        "-".into()
                    } else {
                        money(pool.price_per_hour)
                    })),
                ]);
            }
        }
        if !wide {
            t.add_row(std::mem::take(&mut total));
        }
        for r in &pool.types {
            let mut cells = if wide {
                vec![Cell::new(&pool.pool), Cell::new(type_label(r))]
            } else {
                // Indented under the pool's row; no-break spaces, which wrapping keeps.
                vec![Cell::new(format!("\u{a0}\u{a0}{}", type_label(r)))]
            };
            cells.extend([
                right(r.ready),
                right(r.launching),
                right(total_max(r.current, r.max, pool.configured)),
            ]);
            if gpus {
                cells.push(free_gpus(r.free_gpus));
            }
            cells.extend([right(r.pending_pods), wait_cell(r)]);
            if costs {
                cells.extend([
                    right(r.spot_percent.map_or("-".into(), |p| format!("{p:.0}%"))),
                    right(if r.current == 0 {
                        "-".into()
                    } else {
                        money(r.price_per_hour)
                    }),
                ]);
            }
            t.add_row(cells);
        }
        if !total.is_empty() {
            t.add_row(total);
        }
    }
    t
}

fn scalable_to(m: &GpuModelRow) -> String {
    match (m.scalable_to, m.limits_known) {
        (Some(n), _) => n.to_string(),
        (None, true) => "∞".into(),
        (None, false) => "?".into(),
    }
}

/// GPUs per model, gpu-dev style: free now / on nodes / what the limits allow; `None` without GPUs.
pub fn gpu_table_of(a: &Availability, colour: bool) -> Option<Table> {
    if a.gpu_models.is_empty() {
        return None;
    }
    let mut t = styled(table(["GPU model", "Available now", "Total", "Scalable to"]), colour);
    for m in &a.gpu_models {
        // Green: a GPU is free; yellow: none, but the limits allow more; red: none and no room.
        let colour = if m.available_now > 0 {
            Color::Green
        } else if m.scalable_to.is_none_or(|s| s > m.total) {
            Color::Yellow
        } else {
            Color::Red
        };
        t.add_row(vec![
            Cell::new(&m.model),
            right(m.available_now).fg(colour),
            right(m.total),
            right(scalable_to(m)),
        ]);
    }
    Some(t)
}

/// `line` broken at spaces into lines of at most `width` characters (a longer word stays whole).
fn wrap(line: &str, width: usize) -> String {
    let mut out = String::new();
    let mut len = 0;
    for word in line.split(' ') {
        let n = word.chars().count();
        if len > 0 && len + 1 + n > width {
            out.push('\n');
            len = 0;
        } else if len > 0 {
            out.push(' ');
            len += 1;
        }
        out.push_str(word);
        len += n;
    }
    out.push('\n');
    out
}

/// Heading, GPU summary, table and notes, as printed. Every line fits in `width` columns, else in
/// the shared table style's width (the terminal's), else nothing bounds them: the per-type table
/// takes the widest [`Layout`] that fits without splitting words.
pub fn render(a: &Availability, colour: bool, width: Option<u16>) -> String {
    let width = width.or_else(|| table([]).width()).filter(|w| *w > 0);
    let line = |text: String| match width {
        Some(w) => wrap(&text, usize::from(w)),
        None => text + "\n",
    };
    let mut out = line(format!(
        "Cluster {} at {}: {} nodes, {}/h",
        a.cluster,
        a.at,
        a.pools.iter().map(|p| p.current).sum::<u64>(),
        money(a.price_per_hour)
    ));
    if let Some(mut gpus) = gpu_table_of(a, colour) {
        if let Some(w) = width {
            fit(&mut gpus, w);
        }
        out.push_str(&gpus.to_string());
        out.push('\n');
    }
    let mut layout = Layout::Wide;
    let mut types = table_of(a, colour, layout);
    if let Some(w) = width {
        for l in LAYOUTS {
            layout = l;
            types = table_of(a, colour, l);
            if fit(&mut types, w) {
                break;
            }
        }
    }
    out.push_str(&types.to_string());
    out.push('\n');
    if a.deciding_pods > 0 {
        out.push_str(&line(format!(
            "{} pods are being scheduled (no pool chosen yet)",
            a.deciding_pods
        )));
    }
    if layout == Layout::Lean {
        out.push_str(&line(
            "note: Spot % and $/h now are left out to fit the width; --json has them".to_string(),
        ));
    }
    for n in &a.notes {
        out.push_str(&line(format!("note: {n}")));
    }
    out
}

#[cfg(test)]
mod tests {
    use nodewright_core::Config;
    use nodewright_core::ports::state::StateView;

    use super::super::availability::tests::{Claim, GIB, T0, gpu_node, pool, run, usage_of};
    use super::*;

    /// A cluster with a CPU pool, a GPU pool with nodes fully and partly used and one launching,
    /// and an empty GPU pool with a GPU limit.
    fn cluster() -> Availability {
        let family = "karpenter.k8s.aws/instance-family";
        let mut config: Config = pool("general", family, "[m5]", "{cpu: \"32\"}");
        config.merge(pool("gpu-inference", family, "[g5]", "{nvidia.com/gpu: \"16\"}"));
        config.merge(pool("gpu-training", family, "[p5]", "{nvidia.com/gpu: \"32\"}"));
        let mut view = StateView::new("prod", T0 + 300_000);
        view.claims = vec![
            Claim::new("m-a", "general", "m5.large", T0).ready().room(1_900, 200).0,
            Claim::new("m-b", "general", "m5.large", T0)
                .ready()
                .room(1_900, 1_900)
                .0,
            Claim::new("m-c", "general", "m5.large", T0 + 280_000).0,
            gpu_node("g-full", "gpu-inference", "g5.12xlarge", 4, 8_000, 16 * GIB),
            gpu_node("g-part", "gpu-inference", "g5.12xlarge", 1, 8_000, 16 * GIB),
            Claim::new("g-new", "gpu-inference", "g5.xlarge", T0 + 270_000).0,
        ];
        usage_of(&mut view, "general");
        usage_of(&mut view, "gpu-inference");
        run(&view, Some(&config))
    }

    fn widest(text: &str) -> usize {
        text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
    }

    /// The cells of the first line that contains `first` as a whole cell.
    fn cells(text: &str, first: &str) -> Vec<String> {
        text.lines()
            .map(|l| {
                l.split(['│', '┆'])
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect::<Vec<_>>()
            })
            .find(|cells| cells.first().is_some_and(|c| c == first))
            .unwrap_or_else(|| panic!("no row {first:?} in:\n{text}"))
    }

    #[test]
    fn gpu_summary_then_the_types_with_free_gpus() {
        let a = cluster();
        let out = render(&a, false, Some(250));
        let summary = out.find("GPU model").expect("a GPU summary");
        assert!(
            summary < out.find("Instance type").expect("the table"),
            "summary first:\n{out}"
        );
        // Model, available now, total (Ready + launching), scalable to.
        assert_eq!(cells(&out, "A10G"), ["A10G", "3", "9", "16"]);
        assert_eq!(cells(&out, "H100"), ["H100", "0", "0", "32"]);
        // Pool, type, Ready, Launching, Total / Max, Free GPUs, Pending pods, Est. wait, ...
        let g5 = cells(&out, "gpu-inference");
        assert_eq!(
            g5[1..8],
            ["g5.12xlarge (4 GPUs)", "2", "0", "2 / 3", "3", "0", "Available now"]
        );
        let empty = cells(&out, "gpu-training");
        assert_eq!(empty[1..6], ["p5.4xlarge (1 GPU)", "0", "0", "0 / 32", "0"]);
        assert_eq!(cells(&out, "general")[5], "-", "no GPUs: no free-GPU count");

        // Unlimited and unknown limits read differently.
        let mut unlimited = a.clone();
        unlimited.gpu_models[0].scalable_to = None;
        assert_eq!(cells(&render(&unlimited, false, Some(250)), "A10G")[3], "∞");
        unlimited.gpu_models[0].limits_known = false;
        assert_eq!(cells(&render(&unlimited, false, Some(250)), "A10G")[3], "?");
    }

    #[test]
    fn without_gpus_there_is_no_summary_nor_free_gpu_column() {
        let mut a = cluster();
        a.pools.retain(|p| p.pool == "general");
        a.gpu_models.clear();
        let out = render(&a, false, Some(250));
        assert!(!out.contains("GPU model") && !out.contains("Free GPUs"), "{out}");
        assert_eq!(cells(&out, "general")[1..5], ["m5.large", "2", "1", "3 / 16"]);
    }

    /// Every line within the width, and no word split: each of `words` still appears whole.
    fn assert_fits(out: &str, width: usize, words: &[&str]) {
        assert!(widest(out) <= width, "wider than {width}:\n{out}");
        for w in words {
            assert!(out.contains(w), "{w:?} split or missing at {width} columns:\n{out}");
        }
    }

    #[test]
    fn both_tables_fit_100_and_80_columns_without_splitting_words() {
        let a = cluster();
        let natural = render(&a, false, Some(250));
        assert!(
            widest(&natural) > 100,
            "the test needs a table wider than 100:\n{natural}"
        );
        let words = [
            "gpu-inference",
            "g5.12xlarge",
            "Available now",
            "(scaling up)",
            "3 / 16",
            "0 / 32",
            "Launching",
            "A10G",
            "Scalable to",
        ];
        // 100: grouped by pool, every column kept.
        let out = render(&a, false, Some(100));
        assert_fits(&out, 100, &words);
        assert!(
            out.contains("┆ Spot %") && out.contains("$/h now") && out.contains("$1.50"),
            "{out}"
        );
        assert_eq!(
            cells(&out, "gpu-inference")[1..6],
            ["2", "1", "3", "3", "0"],
            "the pool's totals row"
        );
        // 80: the costs go, and a note says so.
        let out = render(&a, false, Some(80));
        assert_fits(&out, 80, &words);
        assert!(!out.contains("┆ Spot %") && !out.contains("$1.50"), "{out}");
        assert!(
            out.contains("note: Spot % and $/h now are left out to fit the width"),
            "{out}"
        );
        // Short pool names keep the wide layout at 100 (wrapped at spaces).
        let mut short = a.clone();
        for (p, name) in short.pools.iter_mut().zip(["cpu", "inf", "trn"]) {
            p.pool = name.into();
        }
        let out = render(&short, false, Some(100));
        assert_fits(&out, 100, &["g5.12xlarge", "Available", "(scaling", "Launching"]);
        assert_eq!(cells(&out, "inf")[1], "g5.12xlarge", "a Pool column:\n{out}");
    }

    #[test]
    fn narrower_still_every_line_fits_and_the_heading_wraps() {
        let mut a = cluster();
        a.cluster = "ml-platform-production-us-east-1-blue".into();
        for width in [80, 60, 50] {
            let out = render(&a, false, Some(width));
            assert!(widest(&out) <= usize::from(width), "wider than {width}:\n{out}");
            assert!(
                out.starts_with("Cluster ml-platform-production-us-east-1-blue at"),
                "{out}"
            );
        }
    }
}
