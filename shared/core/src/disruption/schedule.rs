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

fn field(spec: &str, lo: u32, hi: u32) -> Option<(u64, bool)> {
    let mut bits = 0u64;
    let restricted = spec != "*";
    for part in spec.split(',') {
        let (range, step) = part.split_once('/').unwrap_or((part, "1"));
        let step: u32 = step.parse().ok().filter(|s| *s > 0)?;
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (a.parse().ok()?, b.parse().ok()?)
        } else {
            let v: u32 = range.parse().ok()?;
            (v, if part.contains('/') { hi } else { v })
        };
        if a < lo || b > hi || a > b {
            return None;
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Some((bits, restricted))
}

fn parse(spec: &str) -> Option<Cron> {
    let spec = match spec {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        s => s,
    };
    let f: Vec<&str> = spec.split_whitespace().collect();
    if f.len() != 5 {
        return None;
    }
    let (minute, _) = field(f[0], 0, 59)?;
    let (hour, _) = field(f[1], 0, 23)?;
    let (day, day_restricted) = field(f[2], 1, 31)?;
    let (month, _) = field(f[3], 1, 12)?;
    let (mut weekday, weekday_restricted) = field(f[4], 0, 7)?;
    if weekday & (1 << 7) != 0 {
        weekday |= 1; // 7 is Sunday too
    }
    Some(Cron {
        minute,
        hour,
        day,
        month,
        weekday,
        day_restricted,
        weekday_restricted,
    })
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
/// without a schedule is always active. An unparsable schedule is treated as always active (the
/// most restrictive reading; configuration validation reports it).
pub fn window_active(schedule: Option<&str>, duration_secs: Option<u64>, now: i64) -> bool {
    let Some(schedule) = schedule else {
        return true;
    };
    let Some(cron) = parse(schedule) else {
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
}
