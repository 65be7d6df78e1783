//! The report's plot as a self-contained SVG: Nodewright's nodes by instance type (stacked), the
//! cost rate and the pending pods over time, with the baseline drawn dashed for comparison.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::report::Report;
use crate::world::Sample;

const WIDTH: f64 = 1000.0;
const PANEL_HEIGHT: f64 = 190.0;
const TOP: f64 = 85.0;
const GAP: f64 = 70.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 230.0;
const MAX_POINTS: usize = 800;
const PALETTE: [&str; 8] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f",
];
const OTHER: &str = "other types";

/// A line panel: title, unit, the sampled value, and whether a bucket keeps its maximum.
type LinePanel = (&'static str, &'static str, fn(&Sample) -> f64, bool);

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A round axis step giving about five ticks up to `max`.
fn nice_step(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let n = raw / mag;
    let m = if n <= 1.0 {
        1.0
    } else if n <= 2.0 {
        2.0
    } else if n <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// A tick label with as many decimals as the step needs.
fn fmt_tick(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// Buckets of consecutive samples, at most MAX_POINTS of them.
fn buckets(samples: &[Sample]) -> Vec<&[Sample]> {
    let size = samples.len().div_ceil(MAX_POINTS).max(1);
    samples.chunks(size).collect()
}

struct Panel {
    y0: f64,
    max: f64,
    x_max: f64,
    x_scale: f64,
}

impl Panel {
    fn x(&self, hours: f64) -> f64 {
        LEFT + hours / self.x_scale / self.x_max.max(1e-9) * (WIDTH - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        self.y0 + PANEL_HEIGHT - v / self.max.max(1e-9) * PANEL_HEIGHT
    }
}

fn axes(svg: &mut String, p: &Panel, title: &str, y_label: &str, x_label: &str) {
    let right = WIDTH - RIGHT;
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        p.y0 - 12.0,
        esc(title)
    );
    let step = nice_step(p.max);
    let mut v = 0.0;
    while v <= p.max + 1e-9 {
        let y = p.y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            LEFT - 6.0,
            y + 4.0,
            fmt_tick(v, step)
        );
        v += step;
    }
    let x_step = nice_step(p.x_max);
    let mut t = 0.0;
    while t <= p.x_max + 1e-9 {
        let x = p.x(t * p.x_scale);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#999"/><text x="{x:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"##,
            p.y0 + PANEL_HEIGHT,
            p.y0 + PANEL_HEIGHT + 5.0,
            p.y0 + PANEL_HEIGHT + 18.0,
            fmt_tick(t, x_step)
        );
        t += x_step;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{}" width="{}" height="{PANEL_HEIGHT}" fill="none" stroke="#555"/>"##,
        p.y0,
        right - LEFT
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
        (LEFT + right) / 2.0,
        p.y0 + PANEL_HEIGHT + 34.0,
        esc(x_label)
    );
    let cy = p.y0 + PANEL_HEIGHT / 2.0;
    let _ = writeln!(
        svg,
        r#"<text x="22" y="{cy:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 22 {cy:.1})">{}</text>"#,
        esc(y_label)
    );
}

fn legend(svg: &mut String, p: &Panel, items: &[(String, String, bool)]) {
    let x = WIDTH - RIGHT + 16.0;
    for (i, (label, colour, dashed)) in items.iter().enumerate() {
        let y = p.y0 + 8.0 + i as f64 * 18.0;
        let dash = if *dashed { r#" stroke-dasharray="6 4""# } else { "" };
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{colour}" stroke-width="3"{dash}/><text x="{}" y="{}" font-size="12">{}</text>"#,
            x + 22.0,
            x + 28.0,
            y + 4.0,
            esc(label)
        );
    }
}

fn polyline(svg: &mut String, p: &Panel, points: &[(f64, f64)], colour: &str, dashed: bool) {
    let pts: Vec<String> = points
        .iter()
        .map(|(h, v)| format!("{:.1},{:.1}", p.x(*h), p.y(*v)))
        .collect();
    let dash = if dashed { r#" stroke-dasharray="6 4""# } else { "" };
    let _ = writeln!(
        svg,
        r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="1.6"{dash}/>"#,
        pts.join(" ")
    );
}

fn series(samples: &[Sample], f: impl Fn(&Sample) -> f64, reduce_max: bool) -> Vec<(f64, f64)> {
    buckets(samples)
        .into_iter()
        .map(|b| {
            let v = if reduce_max {
                b.iter().map(&f).fold(0.0, f64::max)
            } else {
                b.iter().map(&f).sum::<f64>() / b.len() as f64
            };
            (b[0].at_hours, v)
        })
        .collect()
}

/// Renders the report's plot.
pub fn svg(report: &Report) -> String {
    let nw = &report.nodewright.timeline;
    let base = report.baseline.as_ref().map(|b| &b.timeline);
    let hours = report.simulated_hours.max(1e-6);
    let (x_scale, x_label) = if hours > 72.0 {
        (24.0, "simulated time (days)")
    } else {
        (1.0, "simulated time (hours)")
    };
    let x_max = hours / x_scale;

    // Stacked node counts: the types with the most node-hours, the rest summed.
    let mut by_hours: Vec<(&String, &f64)> = report.nodewright.node_hours_by_type.iter().collect();
    by_hours.sort_by(|a, b| b.1.total_cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let shown: Vec<String> = by_hours
        .iter()
        .take(PALETTE.len() - 1)
        .map(|(t, _)| (*t).clone())
        .collect();
    let mut layers: Vec<String> = shown.clone();
    if by_hours.len() > shown.len() {
        layers.push(OTHER.into());
    }
    let layer_of = |t: &str| {
        if shown.iter().any(|s| s == t) {
            t.to_string()
        } else {
            OTHER.to_string()
        }
    };
    let stacked: Vec<(f64, BTreeMap<String, f64>)> = buckets(nw)
        .into_iter()
        .map(|b| {
            // The bucket's busiest sample, so short peaks stay visible.
            let s = b
                .iter()
                .max_by_key(|s| s.nodes_by_type.values().sum::<u32>())
                .unwrap_or(&b[0]);
            let mut m = BTreeMap::new();
            for (t, n) in &s.nodes_by_type {
                *m.entry(layer_of(t)).or_insert(0.0) += f64::from(*n);
            }
            (b[0].at_hours, m)
        })
        .collect();
    let base_nodes = base.map(|b| series(b, |s| f64::from(s.nodes_by_type.values().sum::<u32>()), true));
    let max_nodes = stacked
        .iter()
        .map(|(_, m)| m.values().sum::<f64>())
        .chain(base_nodes.iter().flatten().map(|p| p.1))
        .fold(1.0, f64::max);

    let height = TOP + 3.0 * (PANEL_HEIGHT + GAP) + 10.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, 'DejaVu Sans', 'Liberation Sans', sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "Nodewright simulation: {} ({} pods, {:.0} h simulated)",
        report.workload, report.pods, report.simulated_hours
    );
    let subtitle = match (&report.baseline, report.saving_percent) {
        (Some(b), Some(s)) => format!(
            "total ${:.2} vs ${:.2} for {}: {s:.1}% saved",
            report.nodewright.total_cost_usd, b.total_cost_usd, b.autoscaler
        ),
        _ => format!("total ${:.2}", report.nodewright.total_cost_usd),
    };
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="26" font-size="17" font-weight="bold" text-anchor="middle">{}</text><text x="{}" y="46" font-size="13" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        esc(&title),
        WIDTH / 2.0,
        esc(&subtitle)
    );

    // Panel 1: nodes by type.
    let p1 = Panel {
        y0: TOP,
        max: max_nodes * 1.05,
        x_max,
        x_scale,
    };
    axes(
        &mut svg,
        &p1,
        "Nodes by instance type (Nodewright, stacked)",
        "nodes",
        x_label,
    );
    let mut lower: Vec<f64> = vec![0.0; stacked.len()];
    let mut items = Vec::new();
    for (li, layer) in layers.iter().enumerate() {
        let colour = PALETTE[li % PALETTE.len()];
        let upper: Vec<f64> = stacked
            .iter()
            .zip(&lower)
            .map(|((_, m), lo)| lo + m.get(layer).copied().unwrap_or(0.0))
            .collect();
        let mut pts: Vec<String> = stacked
            .iter()
            .zip(&upper)
            .map(|((h, _), v)| format!("{:.1},{:.1}", p1.x(*h), p1.y(*v)))
            .collect();
        pts.extend(
            stacked
                .iter()
                .zip(&lower)
                .rev()
                .map(|((h, _), v)| format!("{:.1},{:.1}", p1.x(*h), p1.y(*v))),
        );
        let _ = writeln!(
            svg,
            r#"<polygon points="{}" fill="{colour}" fill-opacity="0.85" stroke="none"/>"#,
            pts.join(" ")
        );
        items.push((layer.clone(), colour.to_string(), false));
        lower = upper;
    }
    if let (Some(points), Some(b)) = (&base_nodes, &report.baseline) {
        polyline(&mut svg, &p1, points, "#222", true);
        items.push((format!("{} (all nodes)", b.autoscaler), "#222".into(), true));
    }
    legend(&mut svg, &p1, &items);

    // Panels 2 and 3: cost rate and pending pods.
    let panels: [LinePanel; 2] = [
        ("Cost rate", "USD per hour", |s| s.dollars_per_hour, false),
        (
            "Pending pods",
            "pods (max per interval)",
            |s| f64::from(s.pending_pods),
            true,
        ),
    ];
    for (i, (title, unit, f, reduce_max)) in panels.into_iter().enumerate() {
        let ours = series(nw, f, reduce_max);
        let theirs = base.map(|b| series(b, f, reduce_max));
        let max = ours
            .iter()
            .chain(theirs.iter().flatten())
            .map(|p| p.1)
            .fold(0.0, f64::max)
            .max(1.0)
            * 1.05;
        let p = Panel {
            y0: TOP + (i as f64 + 1.0) * (PANEL_HEIGHT + GAP),
            max,
            x_max,
            x_scale,
        };
        axes(&mut svg, &p, title, unit, x_label);
        polyline(&mut svg, &p, &ours, PALETTE[0], false);
        let mut items = vec![("nodewright".to_string(), PALETTE[0].to_string(), false)];
        if let (Some(points), Some(b)) = (&theirs, &report.baseline) {
            polyline(&mut svg, &p, points, "#222", true);
            items.push((b.autoscaler.clone(), "#222".into(), true));
        }
        legend(&mut svg, &p, &items);
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(3.0), 1.0);
        assert_eq!(nice_step(430.0), 100.0);
        assert_eq!(nice_step(0.0), 1.0);
    }
}
