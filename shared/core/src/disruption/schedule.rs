//! Budget windows: standard 5-field cron schedules (UTC) with a duration, as Karpenter's disruption
//! budgets use them. A budget is active at `now` when a schedule hit falls in `(now - duration, now]`.

/// Minutes searched backwards at most (a week), bounding the cost of very long durations.
const MAX_WINDOW_MINUTES: i64 = 7 * 24 * 60;

struct Cron {
    minute: u64,
    hour: u64,
    day: u64,
    month: u64,
    weekday: u64,
    day_restricted: bool,
    weekday_restricted: bool,
}

/// Names a field accepts besides numbers (robfig/cron's, which Karpenter parses budgets with):
/// months `jan`-`dec`, weekdays `sun`-`sat`, any case.
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field: `*` (or `?` in the day fields), values, names, ranges `a-b` (never wrapping: `17-9`
/// is an error, as in cron), lists and steps (`*/15`, `5/15` = `5-max/15`, `9-17/2`).
fn field(spec: &str, name: &str, lo: u32, hi: u32, names: &[&str], name_base: u32) -> Result<(u64, bool), String> {
    let value = |v: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(name_base + i as u32);
        }
        v.parse::<u32>().map_err(|_| {
            format!(
                "{name} {v:?} is not a number{}",
                if names.is_empty() { "" } else { " or a name" }
            )
        })
    };
    let any = spec == "*" || (spec == "?" && matches!(name, "day of month" | "day of week"));
    let mut bits = 0u64;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{name}: step {s:?} in {part:?} is not a positive number"))?,
            ),
            None => (part, 1),
        };
        let (a, b) = if range == "*" || (any && range == "?") {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { hi } else { v })
        };
        for v in [a, b] {
            if v < lo || v > hi {
                return Err(format!("{name} {v} is outside {lo}-{hi}"));
            }
        }
        if a > b {
            return Err(format!("{name} range {range:?} ends before it starts"));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, !any))
}

/// Parses a schedule as Karpenter does (standard 5-field cron or a macro such as `@daily`), with
/// the reason it is refused. The one parser for validation and run time.
fn parse(spec: &str) -> Result<Cron, String> {
    let expanded = match spec.trim() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        s if s.starts_with('@') => {
            return Err(format!(
                "unknown schedule macro {s:?} (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
            ));
        }
        s => s,
    };
    let f: Vec<&str> = expanded.split_whitespace().collect();
    if f.len() != 5 {
        return Err(format!(
            "{spec:?} has {} fields; a cron schedule has 5 (minute hour day-of-month month day-of-week)",
            f.len()
        ));
    }
    let err = |e: String| format!("{spec:?}: {e}");
    let (minute, _) = field(f[0], "minute", 0, 59, &[], 0).map_err(err)?;
    let (hour, _) = field(f[1], "hour", 0, 23, &[], 0).map_err(err)?;
    let (day, day_restricted) = field(f[2], "day of month", 1, 31, &[], 0).map_err(err)?;
    let (month, _) = field(f[3], "month", 1, 12, &MONTHS, 1).map_err(err)?;
    let (mut weekday, weekday_restricted) = field(f[4], "day of week", 0, 7, &WEEKDAYS, 0).map_err(err)?;
    if weekday & (1 << 7) != 0 {
        weekday |= 1; // 7 is Sunday too
    }
    Ok(Cron {
        minute,
        hour,
        day,
        month,
        weekday,
        day_restricted,
        weekday_restricted,
    })
}

/// Checks a budget schedule; the error names what is wrong. Validation calls this, and run time
/// reads schedules with the same parser, so a schedule that validates is the schedule that runs.
pub fn validate_schedule(spec: &str) -> Result<(), String> {
    parse(spec).map(|_| ())
}

impl Cron {
    fn matches_minute(&self, epoch_minute: i64) -> bool {
        let minute = epoch_minute.rem_euclid(60) as u32;
        let hour = epoch_minute.div_euclid(60).rem_euclid(24) as u32;
        let days = epoch_minute.div_euclid(24 * 60);
        let (_, month, day) = crate::time::civil_from_days(days);
        let weekday = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
        let day_ok = self.day & (1 << day) != 0;
        let weekday_ok = self.weekday & (1 << weekday) != 0;
        // Standard cron: when both day fields are restricted, either may match.
        let date_ok = match (self.day_restricted, self.weekday_restricted) {
            (true, true) => day_ok || weekday_ok,
            _ => day_ok && weekday_ok,
        };
        self.minute & (1 << minute) != 0 && self.hour & (1 << hour) != 0 && self.month & (1 << month) != 0 && date_ok
    }
}

/// Whether a budget with this schedule and duration is active at `now` (epoch seconds). A budget
/// without a schedule is always active. Validation refuses any schedule [`parse`] refuses, so an
/// unparsable one cannot reach here from a configuration; should one, it counts as always active
/// (a budget limits disruption, so the most restrictive reading).
pub fn window_active(schedule: Option<&str>, duration_secs: Option<u64>, now: i64) -> bool {
    let Some(schedule) = schedule else {
        return true;
    };
    let Ok(cron) = parse(schedule) else {
        return true;
    };
    let minutes = (duration_secs.unwrap_or(0) as i64 / 60).clamp(0, MAX_WINDOW_MINUTES);
    let now_minute = now.div_euclid(60);
    (0..minutes.max(1)).any(|back| {
        // The hit at `now_minute - back` keeps the window open for `minutes` minutes.
        back < minutes && cron.matches_minute(now_minute - back)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-21 is a Saturday.
    const SAT_1030: i64 = 1_795_257_000; // 2026-11-21T10:30:00Z

    #[test]
    fn dates_are_civil() {
        assert_eq!(crate::time::civil_from_days(0), (1970, 1, 1));
        assert_eq!(
            crate::time::civil_from_days(SAT_1030.div_euclid(86_400)),
            (2026, 11, 21)
        );
    }

    #[test]
    fn windows_open_after_each_hit_for_the_duration() {
        // Weekdays 09:00 for 8 h: closed on Saturday.
        assert!(!window_active(Some("0 9 * * 1-5"), Some(8 * 3600), SAT_1030));
        // Daily at 10:00 for 1 h: open at 10:30, closed at 11:30.
        assert!(window_active(Some("0 10 * * *"), Some(3600), SAT_1030));
        assert!(!window_active(Some("0 10 * * *"), Some(3600), SAT_1030 + 3600));
        // Saturday (6) all day.
        assert!(window_active(Some("0 0 * * 6"), Some(24 * 3600), SAT_1030));
        assert!(window_active(Some("@daily"), Some(11 * 3600), SAT_1030));
        assert!(!window_active(Some("@daily"), Some(10 * 3600), SAT_1030 + 1800));
        assert!(window_active(None, None, SAT_1030));
        // Zero duration never opens.
        assert!(!window_active(Some("* * * * *"), Some(0), SAT_1030));
        assert!(window_active(Some("*/15 * * * *"), Some(60), SAT_1030));
    }

    /// Karpenter's own budget examples write weekdays and months by name; cron ranges never wrap.
    #[test]
    fn names_ranges_and_errors_as_cron_reads_them() {
        const MON_0930: i64 = SAT_1030 + 2 * 86_400 - 3600; // 2026-11-23T09:30:00Z, a Monday
        assert!(window_active(Some("0 9 * * mon-fri"), Some(8 * 3600), MON_0930));
        assert!(!window_active(Some("0 9 * * mon-fri"), Some(8 * 3600), SAT_1030));
        assert!(window_active(Some("0 9 * * MON,sat"), Some(8 * 3600), SAT_1030));
        assert!(window_active(Some("0 0 * nov *"), Some(31 * 86_400), SAT_1030));
        assert!(!window_active(Some("0 0 * jan-oct,dec *"), Some(86_400), SAT_1030));
        assert!(window_active(Some("30 10 ? * sat"), Some(60), SAT_1030));
        for (bad, says) in [
            ("17-9 * * * *", "ends before it starts"),
            ("0 17-9 * * *", "ends before it starts"),
            ("0 9 * * fri-mon", "ends before it starts"),
            ("0 9 * * funday", "not a number or a name"),
            ("0 24 * * *", "outside 0-23"),
            ("*/0 * * * *", "not a positive number"),
            ("0 9 * *", "has 4 fields"),
            ("@every 5m", "unknown schedule macro"),
            ("? * * * *", "not a number"),
        ] {
            let err = validate_schedule(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        for good in [
            "0 9 * * mon-fri",
            "@daily",
            "*/15 9-17 * * 1-5",
            "0 0 1 jan,jul *",
            "0 9 * * 7",
        ] {
            assert!(validate_schedule(good).is_ok(), "{good}");
        }
    }
}
