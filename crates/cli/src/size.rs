//! Sizes on the command line (`16KiB`, `1MiB`, `4096`) and progress bars.

use indicatif::{ProgressBar, ProgressStyle};

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

/// A byte progress bar on stderr; draws nothing when stderr is not a terminal.
pub fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar
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
}
