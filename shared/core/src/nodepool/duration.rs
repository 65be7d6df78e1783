//! Go-style durations ("720h", "1h30m", "30s", "0s") as Karpenter writes them.

/// Parses a Go duration into whole seconds (rounding up sub-second parts). Negative durations and
/// unknown units are errors.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t == "0" {
        return Ok(0);
    }
    let mut total_ns: u128 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{s:?}: missing unit (ns, us, ms, s, m, h)"))?;
        if num_end == 0 {
            return Err(format!("{s:?}: expected a number at {rest:?}"));
        }
        let (num, after) = rest.split_at(num_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let ns_per: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => {
                return Err(format!("{s:?}: unknown unit {other:?} (use ns, us, ms, s, m, h)"));
            }
        };
        let value: f64 = num.parse().map_err(|_| format!("{s:?}: bad number {num:?}"))?;
        if !value.is_finite() || value > 1e12 {
            return Err(format!("{s:?}: out of range"));
        }
        total_ns += (value * ns_per as f64).round() as u128;
        rest = next;
    }
    Ok(total_ns.div_ceil(1_000_000_000) as u64)
}

/// Formats seconds compactly ("720h", "1h30m", "45s").
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("720h"), Ok(720 * 3600));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("0s"), Ok(0));
        assert_eq!(parse_duration("1.5h"), Ok(5400));
        assert_eq!(parse_duration("500ms"), Ok(1));
        assert!(parse_duration("10d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("-5m").is_err());
        assert!(parse_duration("5").is_err());
        assert_eq!(format_duration(5400), "1h30m");
    }
}
