//! Sizes (`16KiB`, `1MiB`, `4096`) and durations (`5ms`, `2s`) as written in
//! configs and on the command line.

/// Parses a byte size with an optional B, KiB, MiB, GiB, kB, MB or GB suffix.
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected a size like 16KiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}` (use B, KiB, MiB, GiB, kB, MB, GB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{s}`: too large"))
}

/// [`parse_u64`] for values that must fit 32 bits.
pub fn parse_u32(s: &str) -> Result<u32, String> {
    u32::try_from(parse_u64(s)?).map_err(|_| format!("`{s}`: too large"))
}

/// Parses a duration: a number with `us`, `ms`, `s` or `min` (`5ms`, `1.5s`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}`: expected a duration like 5ms or 2s"))?;
    let secs = match unit.trim() {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "min" => n * 60.0,
        u => return Err(format!("`{s}`: unknown unit `{u}` (use us, ms, s, min)")),
    };
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}`: out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_u64("16KiB"), Ok(16384));
        assert_eq!(parse_u64("4096"), Ok(4096));
        assert_eq!(parse_u64("1 MiB"), Ok(1 << 20));
        assert_eq!(parse_u64("2kB"), Ok(2000));
        assert!(parse_u64("12 parsecs").is_err());
        assert!(parse_u64("KiB").is_err());
        assert!(parse_u32("8GiB").is_err());
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("5ms"), Ok(Duration::from_millis(5)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
