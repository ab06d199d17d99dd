//! Named link scenarios (`geo-sat`, `cellular`, `wan`, `lan`, and `loopback`
//! with no emulator at all) and custom ones.

use std::time::Duration;

use serde::Serialize;

use crate::link::LinkSpec;

/// One emulated link: the same rate, half the RTT and the loss each way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// Name shown in reports.
    pub name: String,
    /// Bottleneck rate in bits per second (headers included); `None` is
    /// unlimited.
    pub rate_bps: Option<u64>,
    /// Round-trip time added by the link.
    #[serde(serialize_with = "ser_ms")]
    pub rtt: Duration,
    /// Loss probability per UDP datagram and direction. The TCP relay of the
    /// `direct` baseline cannot drop TCP bytes, so it sees no loss.
    pub loss: f64,
    /// Whether a link emulator sits in the path. `false` only for
    /// `loopback`: clients reach the server (or the relay, or the sender)
    /// straight, and the sender reaches the receiver over plain loopback
    /// UDP, so link bytes are not counted.
    pub emulated: bool,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}

/// The emulated presets of [`Scenario::named`] that `all` names, in report
/// order.
pub const SCENARIOS: &[&str] = &["geo-sat", "cellular", "wan", "lan"];

/// The scenario without an emulator ([`Scenario::loopback`]); not part of
/// `all`.
pub const LOOPBACK: &str = "loopback";

impl Scenario {
    /// A scenario with these numbers.
    pub fn new(name: &str, rate_bps: Option<u64>, rtt: Duration, loss: f64) -> Self {
        Scenario {
            name: name.to_string(),
            rate_bps,
            rtt,
            loss,
            emulated: true,
        }
    }

    /// `loopback`: no emulator, no rate limit, delay or loss; what the
    /// programs themselves add to a round trip.
    pub fn loopback() -> Self {
        Scenario {
            emulated: false,
            ..Scenario::new(LOOPBACK, None, Duration::ZERO, 0.0)
        }
    }

    /// A preset by name: `geo-sat` (64 kbit/s, 600 ms RTT), `cellular`
    /// (1 Mbit/s, 100 ms, 1% loss), `wan` (10 Mbit/s, 20 ms), `lan`
    /// (1 Gbit/s, 1 ms), or `loopback` (no emulator).
    pub fn named(name: &str) -> Option<Self> {
        let ms = Duration::from_millis;
        Some(match name {
            "geo-sat" => Scenario::new(name, Some(64_000), ms(600), 0.0),
            "cellular" => Scenario::new(name, Some(1_000_000), ms(100), 0.01),
            "wan" => Scenario::new(name, Some(10_000_000), ms(20), 0.0),
            "lan" => Scenario::new(name, Some(1_000_000_000), ms(1), 0.0),
            LOOPBACK => Scenario::loopback(),
            _ => return None,
        })
    }

    /// Parses a comma-separated list of names, or `all`.
    pub fn parse_list(list: &str) -> Result<Vec<Self>, String> {
        let mut out = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if name == "all" {
                out.extend(SCENARIOS.iter().filter_map(|n| Scenario::named(n)));
            } else {
                out.push(Scenario::named(name).ok_or_else(|| {
                    format!(
                        "unknown scenario `{name}`; use {}, {LOOPBACK} or all, or --rate/--rtt/--loss",
                        SCENARIOS.join(", ")
                    )
                })?);
            }
        }
        if out.is_empty() {
            return Err("no scenario given".into());
        }
        Ok(out)
    }

    /// The emulated link of this scenario; `None` for `loopback`, which
    /// has none.
    pub fn link(&self, seed: u64) -> Option<LinkSpec> {
        self.emulated
            .then(|| LinkSpec::symmetric(self.rate_bps, self.rtt, self.loss, seed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets() {
        let all = Scenario::parse_list("all").unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(all[1].name, "cellular");
        assert_eq!(all[1].loss, 0.01);
        assert!(Scenario::parse_list("moon").unwrap_err().contains("moon"));
        assert_eq!(Scenario::parse_list("wan,lan").unwrap().len(), 2);
        assert!(all.iter().all(|s| s.emulated && s.link(1).is_some()));
        let lo = Scenario::parse_list("loopback").unwrap();
        assert_eq!(lo, vec![Scenario::loopback()]);
        assert!(!lo[0].emulated && lo[0].link(1).is_none());
        assert_eq!(lo[0].rate_bps, None);
    }
}
