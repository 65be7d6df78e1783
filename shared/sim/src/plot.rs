//! The report's plot as a self-contained SVG: Nodewright's nodes by instance type (stacked), the
//! cost rate, the cumulative cost, the pending pods and (when GPUs were bought) GPUs over time,
//! with the baseline drawn dashed for comparison; optionally zoomed to a window of the run.

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

/// A line panel: title, unit, the sampled value, whether a bucket keeps its maximum, and whether
/// the value is a count (whole ticks, an axis of at least 1) rather than dollars.
type LinePanel = (&'static str, &'static str, fn(&Sample) -> f64, bool, bool);

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
    /// Counts: ticks on whole numbers.
    whole: bool,
    /// The x range shown, in display units (hours or days).
    x_min: f64,
    x_max: f64,
    x_scale: f64,
}

impl Panel {
    fn x(&self, hours: f64) -> f64 {
        LEFT + (hours / self.x_scale - self.x_min) / (self.x_max - self.x_min).max(1e-9) * (WIDTH - LEFT - RIGHT)
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
    let step = if p.whole {
        nice_step(p.max).max(1.0)
    } else {
        nice_step(p.max)
    };
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
    let x_step = nice_step(p.x_max - p.x_min);
    let mut t = (p.x_min / x_step).ceil() * x_step;
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

/// The part of the run to plot, in simulated hours (None: from the start, to the end).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Window {
    pub from_hours: Option<f64>,
    pub to_hours: Option<f64>,
}

/// Renders the report's plot over the whole run.
pub fn svg(report: &Report) -> String {
    svg_window(report, Window::default())
}

fn within(samples: &[Sample], from: f64, to: f64) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| s.at_hours >= from && s.at_hours <= to)
        .cloned()
        .collect()
}

/// Renders the report's plot over `window` (clamped to the run; an empty window shows the whole).
pub fn svg_window(report: &Report, window: Window) -> String {
    let end = report.simulated_hours.max(1e-6);
    let from = window.from_hours.unwrap_or(0.0).clamp(0.0, end);
    let to = window.to_hours.unwrap_or(end).clamp(0.0, end);
    let (from, to) = if to > from { (from, to) } else { (0.0, end) };
    let nw_all = within(&report.nodewright.timeline, from, to);
    let base_all = report.baseline.as_ref().map(|b| within(&b.timeline, from, to));
    let nw = &nw_all;
    let base = base_all.as_ref();
    let hours = to - from;
    let (x_scale, x_label) = if hours > 72.0 {
        (24.0, "simulated time (days)")
    } else {
        (1.0, "simulated time (hours)")
    };
    let x_min = from / x_scale;
    let x_max = to / x_scale;
    let gpus = nw.iter().chain(base.into_iter().flatten()).any(|s| s.gpus > 0);
    let panels_below = if gpus { 4.0 } else { 3.0 };

    // Stacked node counts: the types with the most node-hours, the rest summed.
    // Node time per type inside the window (samples are evenly spaced): the legend names what is drawn.
    let mut in_window: BTreeMap<String, f64> = BTreeMap::new();
    for s in nw {
        for (t, n) in &s.nodes_by_type {
            *in_window.entry(t.clone()).or_default() += f64::from(*n);
        }
    }
    let mut by_hours: Vec<(&String, &f64)> = in_window.iter().collect();
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

    let height = TOP + (panels_below + 1.0) * (PANEL_HEIGHT + GAP) + 10.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, 'DejaVu Sans', 'Liberation Sans', sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let shown = if from > 0.0 || to < end {
        format!("showing {from:.1} h to {to:.1} h; ")
    } else {
        String::new()
    };
    // The file name, not its path: a long path would run off the page.
    let workload = std::path::Path::new(&report.workload)
        .file_name()
        .map_or(report.workload.as_str(), |n| n.to_str().unwrap_or(&report.workload));
    let title = format!(
        "Nodewright simulation: {workload} ({} pods, {:.0} h simulated)",
        report.pods, report.simulated_hours
    );
    let subtitle = match (&report.baseline, report.saving_percent) {
        (Some(b), Some(s)) => format!(
            "{shown}total ${:.2} vs ${:.2} for {}: {s:.1}% saved",
            report.nodewright.total_cost_usd, b.total_cost_usd, b.autoscaler
        ),
        _ => format!("{shown}total ${:.2}", report.nodewright.total_cost_usd),
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
        whole: true,
        x_min,
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

    // Line panels: cost rate, cumulative cost, pending pods, GPUs.
    let mut panels: Vec<LinePanel> = vec![
        ("Cost rate", "USD per hour", |s| s.dollars_per_hour, false, false),
        (
            "Cumulative cost",
            "USD since the start",
            |s| s.cumulative_cost_usd,
            false,
            false,
        ),
        (
            "Pending pods",
            "pods (max per interval)",
            |s| f64::from(s.pending_pods),
            true,
            true,
        ),
    ];
    if gpus {
        panels.push(("GPUs bought", "GPUs (max per interval)", |s| s.gpus as f64, true, true));
    }
    for (i, (title, unit, f, reduce_max, whole)) in panels.into_iter().enumerate() {
        let ours = series(nw, f, reduce_max);
        let theirs = base.map(|b| series(b, f, reduce_max));
        let max = ours
            .iter()
            .chain(theirs.iter().flatten())
            .map(|p| p.1)
            .fold(0.0, f64::max)
            // Counts get an axis of at least 1; dollars fit their values (a cent at least).
            .max(if whole { 1.0 } else { 0.01 })
            * 1.05;
        let p = Panel {
            y0: TOP + (i as f64 + 1.0) * (PANEL_HEIGHT + GAP),
            max,
            whole,
            x_min,
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
        if title == "GPUs bought" {
            // What the pods asked for, under what was bought.
            let asked = series(nw, |s| s.gpus_requested as f64, true);
            polyline(&mut svg, &p, &asked, PALETTE[1], false);
            items.push(("nodewright: requested".into(), PALETTE[1].into(), false));
        }
        legend(&mut svg, &p, &items);
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_hours: f64, gpus: u64, spent: f64) -> Sample {
        Sample {
            at_hours,
            nodes_by_type: BTreeMap::from([("g5.xlarge".to_string(), 1)]),
            dollars_per_hour: 1.0,
            pending_pods: 0,
            cumulative_cost_usd: spent,
            gpus,
            gpus_requested: gpus / 2,
        }
    }

    fn report(gpus: u64) -> Report {
        // A path, as the CLI passes it: the title shows the file name only.
        let timeline: Vec<Sample> = (0..=48).map(|h| sample(f64::from(h), gpus, f64::from(h))).collect();
        let run = crate::report::RunReport {
            autoscaler: "nodewright".into(),
            total_cost_usd: 48.0,
            cost_per_month_usd: 720.0,
            on_demand_equivalent_usd: 48.0,
            idle_cost_usd: 0.0,
            idle_on_demand_cost_usd: 0.0,
            node_hours: 48.0,
            cost_per_pod_hour: None,
            utilization: crate::report::Utilization {
                cpu: 0.5,
                memory: 0.5,
                gpu: None,
            },
            pending: crate::report::PendingTimes {
                episodes: 0,
                unbound_episodes: 0,
                open_at_end: 0,
                p50_seconds: 0.0,
                p95_seconds: 0.0,
                p99_seconds: 0.0,
                max_seconds: 0.0,
            },
            pods: crate::report::PodCounts {
                arrived: 0,
                ran: 0,
                pending_at_end: 0,
                left_before_running: 0,
                never_ran: 0,
            },
            launches: crate::report::Launches {
                total: 1,
                spot: 0,
                on_demand: 1,
                on_demand_fallbacks: 0,
                terminations: 0,
            },
            interruptions_handled: 0,
            consolidation: crate::report::Consolidation {
                actions: 0,
                nodes: 0,
                saved_usd: 0.0,
                node_hours_saved: 0.0,
            },
            churn: crate::report::Churn {
                evictions: 0,
                consolidation_evictions: 0,
                evictions_per_node_hour_saved: None,
            },
            node_hours_by_type: BTreeMap::from([("g5.xlarge".to_string(), 48.0)]),
            handlers: None,
            timeline,
        };
        Report {
            workload: "/a/long/path/to/the/workload.csv".into(),
            pods: 0,
            simulated_hours: 48.0,
            seed: 1,
            launch_delay_seconds: 45.0,
            registration_delay_seconds: 35.0,
            baseline: Some(crate::report::RunReport {
                autoscaler: "fixed:g5.xlarge".into(),
                ..run.clone()
            }),
            nodewright: run,
            saving_percent: Some(0.0),
            saving_per_month_usd: Some(0.0),
            saving_breakdown: None,
            notes: Vec::new(),
        }
    }

    /// The x tick labels of the first panel (text anchored in the middle under the axis).
    fn x_ticks(svg: &str) -> Vec<f64> {
        let panel_bottom = TOP + PANEL_HEIGHT + 18.0;
        svg.lines()
            .filter(|l| l.contains(&format!(r#"y="{panel_bottom}" font-size="11" text-anchor="middle""#)))
            .filter_map(|l| l.rsplit_once("\">")?.1.strip_suffix("</text>")?.parse().ok())
            .collect()
    }

    #[test]
    fn cumulative_cost_and_gpu_panels_and_a_zoom_window() {
        let full = svg(&report(4));
        assert!(full.contains(">Cumulative cost<"), "cumulative cost panel");
        assert!(full.contains(">GPUs bought<"), "GPU panel when GPUs were bought");
        assert!(full.contains("nodewright: requested"));
        let ticks = x_ticks(&full);
        assert_eq!(ticks.first(), Some(&0.0), "{ticks:?}");
        assert!(
            ticks.iter().all(|t| (0.0..=48.0).contains(t)) && ticks.len() >= 4,
            "{ticks:?}"
        );

        let zoomed = svg_window(
            &report(4),
            Window {
                from_hours: Some(10.0),
                to_hours: Some(20.0),
            },
        );
        assert!(zoomed.contains("showing 10.0 h to 20.0 h"));
        assert!(zoomed.contains("simulation: workload.csv (") && !zoomed.contains("/a/long/path"));
        let ticks = x_ticks(&zoomed);
        assert_eq!(ticks.first(), Some(&10.0), "{ticks:?}");
        assert_eq!(ticks.last(), Some(&20.0), "{ticks:?}");
        // The cumulative cost axis fits the window's values (10..20 $), not the run's (48 $).
        assert!(!zoomed.contains(">40<"), "y axis limited to the window");

        // The legend names the types drawn in the window only.
        let mut late = report(4);
        for s in late.nodewright.timeline.iter_mut().filter(|s| s.at_hours > 30.0) {
            s.nodes_by_type.insert("m5.large".into(), 1);
        }
        assert!(svg(&late).contains(">m5.large<"));
        let early = svg_window(
            &late,
            Window {
                from_hours: Some(0.0),
                to_hours: Some(20.0),
            },
        );
        assert!(
            !early.contains(">m5.large<"),
            "a type outside the window is not in the legend"
        );
        // Counts tick on whole numbers; dollars fit their values (the cost rate is 1 $/h here).
        // The node panel (one node: a fractional step unless counts tick on whole numbers).
        let node_labels: Vec<&str> = full
            .lines()
            .filter(|l| l.contains(r#"text-anchor="end""#))
            .filter(|l| {
                l.split(r#"y1=""#)
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .and_then(|y| y.parse::<f64>().ok())
                    .is_some_and(|y| (TOP..=TOP + PANEL_HEIGHT).contains(&y))
            })
            .filter_map(|l| l.rsplit_once("\">")?.1.strip_suffix("</text>"))
            .collect();
        assert_eq!(node_labels, ["0", "1"], "whole nodes only");
        assert!(full.contains(">1.0<"), "the dollar axis reaches its values");

        let cpu_only = svg(&report(0));
        assert!(!cpu_only.contains(">GPUs bought<"), "no GPU panel without GPUs");
        // A window outside the run falls back to the whole run.
        let outside = svg_window(
            &report(0),
            Window {
                from_hours: Some(100.0),
                to_hours: Some(200.0),
            },
        );
        assert_eq!(x_ticks(&outside), x_ticks(&svg(&report(0))));
    }

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(3.0), 1.0);
        assert_eq!(nice_step(430.0), 100.0);
        assert_eq!(nice_step(0.0), 1.0);
    }
}
