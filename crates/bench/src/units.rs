//! Parsing of the rates and percentages users type: `64kbit`, `10Mbit/s`,
//! `0.5%`.

/// Parses a rate into bits per second.
///
/// Accepts a number (decimals allowed) followed by an optional unit: `bit`,
/// `kbit`, `Mbit`, `Gbit` (decimal multiples, case-insensitive, `/s` or `ps`
/// optional). A plain number is bits per second. Examples: `64kbit`,
/// `1Mbit`, `10mbit/s`, `1.5Gbit`, `256kbps`, `9600`.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let lower = text.to_ascii_lowercase();
    let unit_start = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(unit_start);
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("/s")
        .or_else(|| unit.strip_suffix("ps"))
        .unwrap_or(unit);
    let multiplier: u64 = match unit {
        "" | "bit" | "b" => 1,
        "kbit" | "kb" | "k" => 1_000,
        "mbit" | "mb" | "m" => 1_000_000,
        "gbit" | "gb" | "g" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{text:?}: unknown rate unit {unit:?}; write e.g. 64kbit, 10Mbit/s or 1Gbit"
            ));
        }
    };
    let bits = scale(number, multiplier)
        .ok_or_else(|| format!("{text:?}: not a rate; write e.g. 64kbit, 10Mbit/s or 1Gbit"))?;
    if bits == 0 {
        return Err(format!("{text:?}: a rate must be above zero"));
    }
    Ok(bits)
}

/// `number * multiplier` for a decimal `number` like `1.5`, exactly, or
/// `None` if it is not a number, has more decimals than the multiplier
/// resolves, or overflows.
fn scale(number: &str, multiplier: u64) -> Option<u64> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty() {
        return None;
    }
    let digits_ok = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if !digits_ok(whole) || !digits_ok(frac) {
        return None;
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut value = whole.checked_mul(multiplier)?;
    let mut place = multiplier;
    for digit in frac.bytes() {
        place /= 10;
        let d = u64::from(digit - b'0');
        if place == 0 {
            // Below one bit per second: only zeros may follow.
            if d != 0 {
                return None;
            }
            continue;
        }
        value = value.checked_add(d.checked_mul(place)?)?;
    }
    Some(value)
}

/// Parses a probability: `1%` is 0.01, `0.5%` is 0.005, and a bare number
/// like `0.01` is taken as a fraction. The result is in `0..=1`.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let text = s.trim();
    let (number, divisor) = match text.strip_suffix('%') {
        Some(n) => (n.trim(), 100.0),
        None => (text, 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: not a percentage; write e.g. 1%, 0.5% or 0.01"))?;
    let fraction = value / divisor;
    if !(0.0..=1.0).contains(&fraction) {
        return Err(format!("{text:?}: must be between 0% and 100%"));
    }
    Ok(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        for (text, bits) in [
            ("64kbit", 64_000),
            ("1Mbit", 1_000_000),
            ("10mbit/s", 10_000_000),
            ("1Gbit", 1_000_000_000),
            ("256kbit/s", 256_000),
            ("9600", 9_600),
            ("1.5Mbit", 1_500_000),
            ("0.5kbit", 500),
            (" 2 Mbit/s ", 2_000_000),
            ("100mbps", 100_000_000),
            ("8bit/s", 8),
            ("1.0bit", 1),
        ] {
            assert_eq!(parse_rate(text), Ok(bits), "{text}");
        }
    }

    #[test]
    fn bad_rates() {
        for text in [
            "",
            "fast",
            "Mbit",
            "1Tbit",
            "-1Mbit",
            "0",
            "0kbit",
            "1.5bit",
            "1.2.3Mbit",
            "1e6",
            "99999999999Gbit",
        ] {
            let err = parse_rate(text).expect_err(text);
            assert!(err.contains(&format!("{:?}", text.trim())), "{err}");
        }
    }

    #[test]
    fn percents() {
        for (text, value) in [
            ("1%", 0.01),
            ("0.5%", 0.005),
            ("0.01", 0.01),
            ("100%", 1.0),
            ("0", 0.0),
            (" 10 % ", 0.1),
        ] {
            let got = parse_percent(text).expect(text);
            assert!((got - value).abs() < 1e-12, "{text}: {got}");
        }
    }

    #[test]
    fn bad_percents() {
        for text in ["", "%", "x%", "101%", "-1%", "2", "NaN", "inf"] {
            assert!(parse_percent(text).is_err(), "{text}");
        }
    }
}
