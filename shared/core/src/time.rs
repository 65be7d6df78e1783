//! Calendar arithmetic on Unix time (UTC only), without a date library: EventBridge timestamps,
//! budget cron windows and the simulator's virtual clock all need just this much.

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_from_days`]).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (mo, d) = (i64::from(month), i64::from(day));
    let y = if mo <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (EventBridge's form) into Unix milliseconds.
pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut millis = 0;
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            return None;
        }
        let padded = format!("{digits:0<3}");
        millis = padded[..3].parse().ok()?;
        rest = &frac[digits.len()..];
    }
    if rest != "Z" && rest != "+00:00" {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + millis)
}

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SSZ` (whole seconds, as EventBridge sends).
pub fn format_rfc3339(millis: i64) -> String {
    let secs = millis.div_euclid(1000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// Moves a sample event to `now`: every time it carries shifts by the one offset that makes its
/// envelope `time` equal `now`, so order and spacing hold. Samples are dated when captured, and the
/// functions refuse events more than a day from their clock, as they would a real event that old.
/// Returns the offset in ms, or `None` when the event has no RFC 3339 `time` (nothing is changed).
pub fn restamp_event(event: &mut serde_json::Value, now: i64) -> Option<i64> {
    let then = event.get("time")?.as_str().and_then(parse_rfc3339_millis)?;
    shift_times(event, now - then);
    Some(now - then)
}

/// Millisecond numbers and RFC 3339 strings under the time keys our events and AWS's use.
fn shift_times(v: &mut serde_json::Value, by: i64) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                let is_time = matches!(
                    key.as_str(),
                    "time" | "sentAt" | "createdAt" | "readyAt" | "startTime" | "endTime" | "StartTime" | "EndTime"
                );
                match value {
                    Value::Number(n) if is_time => {
                        if let Some(ms) = n.as_i64() {
                            *value = Value::from(ms.saturating_add(by));
                        }
                    }
                    Value::String(t) if is_time => {
                        if let Some(ms) = parse_rfc3339_millis(t) {
                            *value = Value::from(format_rfc3339(ms.saturating_add(by)));
                        }
                    }
                    _ => shift_times(value, by),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| shift_times(i, by)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restamps_every_time_by_one_offset() {
        let mut e = serde_json::json!({
            "time": "2026-11-21T10:00:00Z",
            "detail": {"sentAt": 1_795_255_200_000_i64,
                       "pods": [{"createdAt": 1_795_255_190_000_i64, "name": "time"}],
                       "EndTime": "2026-11-21T10:00:40Z", "startTime": "Wed, 25 Nov 2026 10:00:00 GMT"}
        });
        let now = 1_796_031_270_000; // 2026-11-30T09:34:30Z
        assert_eq!(restamp_event(&mut e, now), Some(now - 1_795_255_200_000));
        assert_eq!(e["time"], "2026-11-30T09:34:30Z");
        assert_eq!(e["detail"]["sentAt"], now);
        assert_eq!(e["detail"]["pods"][0]["createdAt"], now - 10_000);
        assert_eq!(
            e["detail"]["pods"][0]["name"], "time",
            "only values under time keys move"
        );
        assert_eq!(e["detail"]["EndTime"], "2026-11-30T09:35:10Z");
        assert_eq!(
            e["detail"]["startTime"], "Wed, 25 Nov 2026 10:00:00 GMT",
            "not RFC 3339: kept"
        );
        let mut no_time = serde_json::json!({"detail": {"sentAt": 1}});
        assert_eq!(restamp_event(&mut no_time, now), None);
        assert_eq!(no_time["detail"]["sentAt"], 1);
    }

    #[test]
    fn round_trips() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        let t = 1_795_257_000_000; // 2026-11-21T10:30:00Z
        assert_eq!(format_rfc3339(t), "2026-11-21T10:30:00Z");
        assert_eq!(parse_rfc3339_millis("2026-11-21T10:30:00Z"), Some(t));
        assert_eq!(parse_rfc3339_millis("2024-02-29T00:00:00.5Z"), Some(1_709_164_800_500));
        for days in [-1000, 0, 59, 60, 11_016, 20_000, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(parse_rfc3339_millis("yyyy-mm-ddThh:mm:ssZ"), None);
    }
}
