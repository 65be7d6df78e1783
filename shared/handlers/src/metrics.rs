//! CloudWatch metrics as Embedded Metric Format: one JSON line per handled event, which CloudWatch
//! Logs turns into metrics in the `Nodewright` namespace with no API call and no extra permission.
//! docs/operations.md lists the metrics.

use serde_json::{Value, json};

use crate::outcome::{Action, Outcome};

pub const NAMESPACE: &str = "Nodewright";

/// (metric name, unit) of every metric an invocation reports.
pub const METRICS: &[(&str, &str)] = &[
    ("DecisionLatency", "Milliseconds"),
    ("PodsProvisioned", "Count"),
    ("SpotLaunches", "Count"),
    ("OnDemandLaunches", "Count"),
    ("IceFallbacks", "Count"),
    ("InterruptionsHandled", "Count"),
    ("ConsolidationActions", "Count"),
    ("ConsolidationSavingsPerHour", "None"),
    ("OldestPendingSeconds", "Seconds"),
];

/// Reported only by invocations that planned new claims (a metric with no value is left out).
pub const PLAN_GAP: (&str, &str) = ("PlanGapPercent", "Percent");

/// The EMF document for one handled event.
pub fn emf(outcome: &Outcome, latency_ms: f64, timestamp_ms: i64) -> Value {
    let mut pods = 0usize;
    let (mut spot, mut on_demand, mut ice) = (0u64, 0u64, 0u64);
    let mut actions = 0u64;
    let mut savings = 0.0;
    let mut gap: Option<f64> = None;
    for a in &outcome.actions {
        match a {
            Action::Launched {
                adopted: false,
                capacity_type,
                pods: n,
                fell_back_to_on_demand,
                ..
            } => {
                // A launch pod-pending handed off counted its pods when it was requested.
                if outcome.function != "state-change" {
                    pods += n;
                }
                if *capacity_type == nodewright_core::CapacityType::Spot {
                    spot += 1;
                } else {
                    on_demand += 1;
                }
                if *fell_back_to_on_demand {
                    ice += 1;
                }
            }
            Action::PackedOntoClaim { pods: n, .. }
            | Action::ScaledUp { pods: n, .. }
            | Action::LaunchRequested { pods: n, .. } => pods += n,
            Action::Disruption { saving_per_hour, .. } => {
                actions += 1;
                savings += saving_per_hour;
            }
            Action::Planned { gap: g, .. } => gap = Some(gap.unwrap_or(0.0).max(*g)),
            _ => {}
        }
    }
    let interruptions = u64::from(outcome.function == "spot-interruption" && !is_ignored(outcome));
    let metrics: Vec<Value> = METRICS
        .iter()
        .chain(gap.is_some().then_some(&PLAN_GAP))
        .map(|(n, u)| json!({"Name": n, "Unit": u}))
        .collect();
    let mut doc = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": metrics,
            }],
        },
        "Function": outcome.function,
        "DecisionLatency": (latency_ms * 1000.0).round() / 1000.0,
        "PodsProvisioned": pods,
        "SpotLaunches": spot,
        "OnDemandLaunches": on_demand,
        "IceFallbacks": ice,
        "InterruptionsHandled": interruptions,
        "ConsolidationActions": actions,
        "ConsolidationSavingsPerHour": savings,
        "OldestPendingSeconds": outcome.oldest_pending_secs.unwrap_or(0),
    });
    if let Some(g) = gap {
        doc[PLAN_GAP.0] = json!((g * 100_000.0).round() / 1000.0);
    }
    doc
}

fn is_ignored(o: &Outcome) -> bool {
    o.actions
        .iter()
        .all(|a| matches!(a, Action::Ignored { .. } | Action::Replayed { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nodewright_core::CapacityType;

    #[test]
    fn counts_launches_by_capacity_type_and_fallbacks() {
        let mut o = Outcome::new("pod-pending", "e1");
        for (ct, fallback, pods) in [(CapacityType::Spot, false, 3), (CapacityType::OnDemand, true, 2)] {
            o.push(Action::Launched {
                claim: "c".into(),
                pool: "p".into(),
                instance_id: "i-1".into(),
                instance_type: "m5.large".into(),
                zone: "us-east-1a".into(),
                capacity_type: ct,
                price_per_hour: None,
                pods,
                adopted: false,
                fell_back_to_on_demand: fallback,
            });
        }
        o.push(Action::PackedOntoClaim {
            claim: "c".into(),
            pods: 4,
        });
        o.oldest_pending_secs = Some(600);
        let v = emf(&o, 12.5, 1_000);
        assert!(v.get("PlanGapPercent").is_none(), "no plan, no gap metric");
        o.push(Action::Planned {
            pods: 9,
            claims: 2,
            price_per_hour: 1.02,
            lower_bound_per_hour: 1.0,
            gap: 0.02,
        });
        let with_plan = emf(&o, 12.5, 1_000);
        assert_eq!(with_plan["PlanGapPercent"], 2.0);
        let declared = with_plan["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap();
        assert!(
            declared
                .iter()
                .any(|m| m["Name"] == "PlanGapPercent" && m["Unit"] == "Percent")
        );
        assert_eq!(v["OldestPendingSeconds"], 600);
        assert_eq!(v["PodsProvisioned"], 9);
        assert_eq!(v["SpotLaunches"], 1);
        assert_eq!(v["OnDemandLaunches"], 1);
        assert_eq!(v["IceFallbacks"], 1);
        assert_eq!(v["DecisionLatency"], 12.5);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Nodewright");
        let declared = v["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().map(Vec::len);
        assert_eq!(declared, Some(METRICS.len()));
        // Every declared metric has a value at the top level (EMF's rule).
        for (name, _) in METRICS {
            assert!(v.get(name).is_some_and(Value::is_number), "{name}");
        }
    }

    /// A handed-off batch counts its pods when pod-pending requests the launch; the launch in
    /// state-change counts the instance, not the pods again.
    #[test]
    fn handed_off_launches_count_pods_once() {
        let mut decided = Outcome::new("pod-pending", "e1");
        decided.push(Action::LaunchRequested {
            claim: "nc-0123456789abcdef".into(),
            pool: "p".into(),
            pods: 5,
        });
        let mut launched = Outcome::new("state-change", "e2");
        launched.push(Action::Launched {
            claim: "nc-0123456789abcdef".into(),
            pool: "p".into(),
            instance_id: "i-1".into(),
            instance_type: "m5.large".into(),
            zone: "us-east-1a".into(),
            capacity_type: CapacityType::Spot,
            price_per_hour: None,
            pods: 5,
            adopted: false,
            fell_back_to_on_demand: false,
        });
        let (d, l) = (emf(&decided, 10.0, 1_000), emf(&launched, 1500.0, 2_000));
        assert_eq!(d["PodsProvisioned"], 5);
        assert_eq!(d["SpotLaunches"], 0);
        assert_eq!(l["PodsProvisioned"], 0);
        assert_eq!(l["SpotLaunches"], 1);
    }

    #[test]
    fn interruptions_count_only_when_acted_on() {
        let acted = Outcome::new("spot-interruption", "e");
        assert_eq!(emf(&acted, 1.0, 0)["InterruptionsHandled"], 0, "nothing done");
        let mut o = Outcome::new("spot-interruption", "e");
        o.push(Action::Cordoned {
            node: "n".into(),
            taint: "t".into(),
        });
        assert_eq!(emf(&o, 1.0, 0)["InterruptionsHandled"], 1);
        let ignored = Outcome::ignored("spot-interruption", "e", "not ours");
        assert_eq!(emf(&ignored, 1.0, 0)["InterruptionsHandled"], 0);
    }
}
