//! Exact parsing of Kubernetes resource quantities ("100m", "1.5", "4Gi", "1e3", "0.5Ki").
//!
//! Quantities are parsed into an exact rational and then scaled to an integer unit: milli-units for
//! CPU, whole units (bytes, devices) for everything else. Rounding is always up, as Kubernetes does,
//! so a request is never under-counted.

use crate::{Error, Result};

/// The integer unit a quantity is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Thousandths of a unit (CPU cores -> millicores).
    Milli,
    /// Whole units (bytes, GPUs, pods).
    Unit,
}

/// Parses `s` and converts it to an integer in `scale`, rounding up.
///
/// Negative quantities are rejected: a request or capacity below zero is always a mistake.
pub fn parse_quantity(s: &str, scale: Scale) -> Result<u64> {
    let err = |why: &str| Error::Quantity {
        value: s.to_string(),
        reason: why.to_string(),
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(err("empty quantity"));
    }
    if t.len() > 64 {
        return Err(err("longer than 64 characters"));
    }
    let (sign_neg, body) = match t.as_bytes()[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    // Split the number from its suffix.
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(num_end);
    if number.is_empty() || number == "." {
        return Err(err("no digits"));
    }
    if number.matches('.').count() > 1 {
        return Err(err("more than one decimal point"));
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    // digits as an integer mantissa, with a decimal exponent
    let mut mantissa: u128 = 0;
    let mut dec_exp: i32 = -(frac_part.len() as i32);
    for c in int_part.chars().chain(frac_part.chars()) {
        let d = c as u128 - '0' as u128;
        mantissa = match mantissa.checked_mul(10).and_then(|m| m.checked_add(d)) {
            Some(m) => m,
            None => {
                // Too many significant digits: drop trailing ones that cannot matter for u64 output.
                dec_exp += 1;
                mantissa
            }
        };
    }
    let mut bin_exp: u32 = 0;
    match suffix {
        "" => {}
        "n" => dec_exp -= 9,
        "u" => dec_exp -= 6,
        "m" => dec_exp -= 3,
        "k" => dec_exp += 3,
        "M" => dec_exp += 6,
        "G" => dec_exp += 9,
        "T" => dec_exp += 12,
        "P" => dec_exp += 15,
        "E" => dec_exp += 18,
        "Ki" => bin_exp = 10,
        "Mi" => bin_exp = 20,
        "Gi" => bin_exp = 30,
        "Ti" => bin_exp = 40,
        "Pi" => bin_exp = 50,
        "Ei" => bin_exp = 60,
        other => {
            let exp = other
                .strip_prefix('e')
                .or_else(|| other.strip_prefix('E'))
                .ok_or_else(|| err(&format!("unknown suffix {other:?}")))?;
            let e: i32 = exp.parse().map_err(|_| err(&format!("bad exponent {exp:?}")))?;
            if !(-30..=30).contains(&e) {
                return Err(err("exponent out of range"));
            }
            dec_exp += e;
        }
    }
    if sign_neg && mantissa != 0 {
        return Err(err("negative quantity"));
    }
    if scale == Scale::Milli {
        dec_exp += 3;
    }
    // value = mantissa * 10^dec_exp * 2^bin_exp, rounded up to an integer.
    let too_large = || err("too large");
    let mut num = mantissa.checked_mul(1u128 << bin_exp).ok_or_else(too_large)?;
    let value = if dec_exp >= 0 {
        num = num
            .checked_mul(10u128.checked_pow(dec_exp as u32).ok_or_else(too_large)?)
            .ok_or_else(too_large)?;
        num
    } else {
        let div = match 10u128.checked_pow((-dec_exp) as u32) {
            Some(d) => d,
            // Divisor larger than any u128 numerator: the value is in (0, 1) or 0.
            None => return Ok(u64::from(num != 0)),
        };
        num.div_ceil(div)
    };
    u64::try_from(value).map_err(|_| too_large())
}

/// Parses a CPU quantity into millicores.
pub fn parse_cpu_milli(s: &str) -> Result<u64> {
    parse_quantity(s, Scale::Milli)
}

/// Parses a quantity of whole units (bytes, devices, pods).
pub fn parse_units(s: &str) -> Result<u64> {
    parse_quantity(s, Scale::Unit)
}

/// Formats millicores the way Kubernetes prints them ("250m", "2").
pub fn format_cpu_milli(m: u64) -> String {
    if m.is_multiple_of(1000) {
        format!("{}", m / 1000)
    } else {
        format!("{m}m")
    }
}

/// Formats bytes with the largest exact binary suffix ("512Mi", "4Gi"), or plain bytes.
pub fn format_bytes(b: u64) -> String {
    for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if b != 0 && b.is_multiple_of(1u64 << shift) {
            return format!("{}{}", b >> shift, suffix);
        }
    }
    format!("{b}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_forms() {
        assert_eq!(parse_cpu_milli("100m").unwrap(), 100);
        assert_eq!(parse_cpu_milli("1.5").unwrap(), 1500);
        assert_eq!(parse_cpu_milli("2").unwrap(), 2000);
        assert_eq!(parse_cpu_milli("0.1").unwrap(), 100);
        assert_eq!(parse_cpu_milli("1e3").unwrap(), 1_000_000);
        assert_eq!(parse_cpu_milli("1k").unwrap(), 1_000_000);
        assert_eq!(parse_cpu_milli("500u").unwrap(), 1, "rounds up");
        assert_eq!(parse_cpu_milli("0").unwrap(), 0);
        assert_eq!(parse_cpu_milli("+3").unwrap(), 3000);
    }

    #[test]
    fn memory_forms() {
        assert_eq!(parse_units("4Gi").unwrap(), 4 << 30);
        assert_eq!(parse_units("512Mi").unwrap(), 512 << 20);
        assert_eq!(parse_units("1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_units("0.5Ki").unwrap(), 512);
        assert_eq!(parse_units("1e3").unwrap(), 1000);
        assert_eq!(parse_units("1.5Gi").unwrap(), 3 << 29);
        assert_eq!(parse_units("129e6").unwrap(), 129_000_000);
        assert_eq!(parse_units("1E2").unwrap(), 100);
        assert_eq!(parse_units("100m").unwrap(), 1, "fractions of a byte round up");
    }

    #[test]
    fn malformed_quantities_name_the_value() {
        for bad in [
            "",
            "abc",
            "1.2.3",
            "4GB",
            "-1",
            "1e",
            "1e99",
            "Gi",
            ".",
            "99999999999999999999Ei",
        ] {
            let e = parse_units(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(format_cpu_milli(2500), "2500m");
        assert_eq!(format_cpu_milli(2000), "2");
        assert_eq!(format_bytes(4 << 30), "4Gi");
        assert_eq!(format_bytes(100), "100");
    }
}
