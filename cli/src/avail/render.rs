//! The text form of [`Availability`]: one table, grouped by pool, GPU types first, a total row per
//! pool; colour only when asked (the caller decides: a terminal and no NO_COLOR).

use comfy_table::{Attribute, Cell, CellAlignment, Color, Table};

use super::availability::{Availability, TypeRow, Wait};
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

/// The table (without the heading and notes).
pub fn table_of(a: &Availability, colour: bool) -> Table {
    let mut t = table([
        "Pool",
        "Instance type",
        "Ready",
        "Launching",
        "Total / Max",
        "Pending pods",
        "Est. wait",
        "Spot %",
        "$/h now",
    ]);
    if colour {
        t.enforce_styling();
    } else {
        t.force_no_tty();
    }
    for pool in &a.pools {
        for r in &pool.types {
            t.add_row(vec![
                Cell::new(&pool.pool),
                Cell::new(type_label(r)),
                right(r.ready),
                right(r.launching),
                right(total_max(r.current, r.max, pool.configured)),
                right(r.pending_pods),
                wait_cell(r),
                right(r.spot_percent.map_or("-".into(), |p| format!("{p:.0}%"))),
                right(if r.current == 0 {
                    "-".into()
                } else {
                    money(r.price_per_hour)
                }),
            ]);
        }
        if pool.types.len() > 1 {
            let bold = |c: Cell| c.add_attribute(Attribute::Bold);
            t.add_row(vec![
                bold(Cell::new(&pool.pool)),
                bold(Cell::new("total")),
                bold(right(pool.ready)),
                bold(right(pool.launching)),
                bold(right(match (pool.node_limit, pool.limited) {
                    // Resource limits bound each type differently: no single pool maximum.
                    (None, true) => pool.current.to_string(),
                    _ => total_max(pool.current, pool.node_limit, pool.configured),
                })),
                bold(right(pool.pending_pods)),
                Cell::new(""),
                Cell::new(""),
                bold(right(money(pool.price_per_hour))),
            ]);
        }
    }
    t
}

/// Heading, table and notes, as printed.
pub fn render(a: &Availability, colour: bool) -> String {
    let mut out = format!(
        "Cluster {} at {}: {} nodes, {}/h\n",
        a.cluster,
        a.at,
        a.pools.iter().map(|p| p.current).sum::<u64>(),
        money(a.price_per_hour)
    );
    out.push_str(&table_of(a, colour).to_string());
    out.push('\n');
    if a.deciding_pods > 0 {
        out.push_str(&format!(
            "{} pods are being scheduled (no pool chosen yet)\n",
            a.deciding_pods
        ));
    }
    for n in &a.notes {
        out.push_str(&format!("note: {n}\n"));
    }
    out
}
