//! A NodePool's `disruption` block: consolidation policy and timing, and budgets with their
//! schedules.

use serde_json::{Map, Value};

use super::{Budget, BudgetNodes, ConsolidationPolicy, Disruption, DisruptionReason, parse_duration};

use super::diagnostics::{Ctx, join};

pub(super) fn parse_disruption(ctx: &mut Ctx, d: &Map<String, Value>, path: &str) -> Disruption {
    ctx.known(d, path, &["consolidationPolicy", "consolidateAfter", "budgets"]);
    let mut out = Disruption::default();
    match ctx.string(d, "consolidationPolicy", path).as_deref() {
        None => {}
        Some("WhenEmpty") => out.consolidation_policy = ConsolidationPolicy::WhenEmpty,
        Some("WhenEmptyOrUnderutilized") => out.consolidation_policy = ConsolidationPolicy::WhenEmptyOrUnderutilized,
        Some(o) => ctx.err(
            &join(path, "consolidationPolicy"),
            format!("unknown policy {o:?} (expected WhenEmpty or WhenEmptyOrUnderutilized)"),
        ),
    }
    if let Some(c) = ctx.duration_or_never(d, "consolidateAfter", path) {
        out.consolidate_after_secs = c;
    }
    if d.contains_key("budgets") {
        out.budgets.clear();
        let items = ctx.array(d, "budgets", path);
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}.budgets[{i}]");
            let Some(b) = ctx.object(item, &p) else {
                continue;
            };
            ctx.known(b, &p, &["nodes", "schedule", "duration", "reasons"]);
            let nodes = match ctx.string(b, "nodes", &p) {
                Some(n) => match parse_budget_nodes(&n) {
                    Some(v) => v,
                    None => {
                        ctx.err(
                            &format!("{p}.nodes"),
                            format!("{n:?} must be a count (\"5\") or a percentage (\"10%\")"),
                        );
                        continue;
                    }
                },
                None => BudgetNodes::Percent(10),
            };
            let schedule = ctx.string(b, "schedule", &p);
            if let Some(s) = &schedule
                && let Err(e) = crate::disruption::validate_schedule(s)
            {
                ctx.err(&format!("{p}.schedule"), e);
            }
            let duration_secs = match ctx.string(b, "duration", &p) {
                Some(s) => match parse_duration(&s) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        ctx.err(&format!("{p}.duration"), e);
                        None
                    }
                },
                None => None,
            };
            if schedule.is_some() != b.contains_key("duration") {
                ctx.err(&p, "schedule and duration must be set together");
            }
            let mut reasons = Vec::new();
            for (j, r) in ctx.array(b, "reasons", &p).iter().enumerate() {
                match r.as_str().and_then(DisruptionReason::parse) {
                    Some(r) => reasons.push(r),
                    None => ctx.err(
                        &format!("{p}.reasons[{j}]"),
                        format!("unknown reason {r} (expected Underutilized, Empty or Drifted)"),
                    ),
                }
            }
            out.budgets.push(Budget {
                nodes,
                schedule,
                duration_secs,
                reasons,
            });
        }
    }
    out
}

pub(super) fn parse_budget_nodes(s: &str) -> Option<BudgetNodes> {
    if let Some(p) = s.strip_suffix('%') {
        let v: u8 = p.parse().ok()?;
        (v <= 100).then_some(BudgetNodes::Percent(v))
    } else {
        s.parse().ok().map(BudgetNodes::Count)
    }
}
