//! `llmpack emulate`: the benchmark's UDP link emulator ([`UdpRelay`]) on
//! its own, for a user to put between their own sender and receiver before
//! the real link exists.
//!
//! The sender dials `--listen` instead of the receiver; every datagram goes
//! on to `--to` through the "up" direction, and the replies come back to
//! the sender through the "down" direction. One sender at a time: replies go
//! to the address that sent last (a QUIC link uses one address pair).
//!
//! With `--tcp` it relays TCP connections through the same emulated path
//! instead (the bench's [`TcpRelay`]): plain TCP over the link a tunnel is
//! tried on, for a side-by-side run. Loss does not apply to TCP there.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use tokio::time::Instant;

use crate::link::{DirStats, Direction, LinkSpec, LinkStats, MIN_QUEUE_BYTES, TcpRelay, UdpRelay};
use crate::report::{bytes, rate};
use crate::units;

/// The flags of `llmpack emulate` (their doc comments are its help).
#[derive(Debug, Clone, Args)]
pub struct EmulateArgs {
    /// Address to receive the sender's datagrams on (`127.0.0.1:0`: any free
    /// port; the one taken is printed).
    #[arg(long)]
    pub listen: SocketAddr,
    /// The receiver's address (host:port).
    #[arg(long)]
    pub to: String,
    /// Bottleneck rate of both directions, IP and UDP headers included
    /// (e.g. 64kbit, 10Mbit/s; default: unlimited).
    #[arg(long, value_parser = units::parse_rate)]
    pub rate: Option<u64>,
    /// Rate sender → receiver, instead of --rate.
    #[arg(long, value_parser = units::parse_rate)]
    pub rate_up: Option<u64>,
    /// Rate receiver → sender, instead of --rate.
    #[arg(long, value_parser = units::parse_rate)]
    pub rate_down: Option<u64>,
    /// Round-trip time the link adds, half each way (e.g. 600ms).
    #[arg(long, default_value = "0ms", value_parser = llmpack_proxy::units::parse_duration)]
    pub rtt: Duration,
    /// Each datagram's one-way delay varies by up to this much either way
    /// (uniformly; datagrams may be reordered).
    #[arg(long, default_value = "0ms", value_parser = llmpack_proxy::units::parse_duration)]
    pub jitter: Duration,
    /// Random loss per datagram in each direction (e.g. 1%, 0.5%).
    #[arg(long, default_value = "0%", value_parser = units::parse_percent)]
    pub loss: f64,
    /// Loss sender → receiver, instead of --loss.
    #[arg(long, value_parser = units::parse_percent)]
    pub loss_up: Option<f64>,
    /// Loss receiver → sender, instead of --loss.
    #[arg(long, value_parser = units::parse_percent)]
    pub loss_down: Option<f64>,
    /// Bottleneck queue per direction, as time at that direction's rate;
    /// datagrams that do not fit are dropped (default: 100ms, and at least
    /// 64 KiB).
    #[arg(long, value_parser = llmpack_proxy::units::parse_duration)]
    pub queue: Option<Duration>,
    /// Seed of the loss and jitter draws (the same seed, the same pattern).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Relay TCP connections instead of UDP datagrams (plain TCP through the
    /// same rate, delay and queue; loss and jitter do not apply).
    #[arg(long)]
    pub tcp: bool,
    /// Print the counters this often (0s: only at exit).
    #[arg(long, default_value = "5s", value_parser = llmpack_proxy::units::parse_duration)]
    pub report: Duration,
}

impl EmulateArgs {
    /// The link these flags describe.
    pub fn spec(&self) -> LinkSpec {
        let dir = |rate: Option<u64>, loss: Option<f64>| {
            let rate_bps = rate.or(self.rate);
            Direction {
                jitter: self.jitter,
                loss: loss.unwrap_or(self.loss),
                queue_bytes: match self.queue {
                    Some(q) => queue_bytes(rate_bps, q),
                    None => Direction::default_queue_bytes(rate_bps),
                },
                ..Direction::new(rate_bps, self.rtt / 2)
            }
        };
        LinkSpec {
            up: dir(self.rate_up, self.loss_up),
            down: dir(self.rate_down, self.loss_down),
            seed: self.seed,
        }
    }
}

/// Bytes a queue of `time` holds at `rate_bps` (unlimited: never fills, so
/// [`MIN_QUEUE_BYTES`]).
fn queue_bytes(rate_bps: Option<u64>, time: Duration) -> usize {
    let Some(rate) = rate_bps else {
        return MIN_QUEUE_BYTES;
    };
    let bytes = u128::from(rate) * time.as_nanos() / 8_000_000_000;
    usize::try_from(bytes).unwrap_or(usize::MAX)
}

/// Runs the emulator until `shutdown` completes, printing counters every
/// `args.report` and at the end.
pub async fn run(args: &EmulateArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    let to = tokio::net::lookup_host(&args.to)
        .await
        .with_context(|| format!("--to {}: not a host:port", args.to))?
        .next()
        .with_context(|| format!("--to {}: no address", args.to))?;
    let spec = args.spec();
    let relay = if args.tcp {
        anyhow::ensure!(
            spec.up.loss == 0.0 && spec.down.loss == 0.0 && args.jitter.is_zero(),
            "--tcp relays a byte stream: --loss and --jitter apply only to datagrams"
        );
        TcpRelay::start(args.listen, to, spec.clone())
            .await
            .map(Relay::Tcp)
    } else {
        UdpRelay::start(args.listen, to, spec.clone())
            .await
            .map(Relay::Udp)
    }
    .with_context(|| format!("starting the relay on {} to {to}", args.listen))?;
    println!(
        "emulate: listening on {}, forwarding to {to} ({})",
        relay.local_addr(),
        if args.tcp { "TCP" } else { "UDP" }
    );
    println!("  up   (sender -> receiver): {}", describe(&spec.up));
    println!("  down (receiver -> sender): {}", describe(&spec.down));
    let start = Instant::now();
    let mut tick = (!args.report.is_zero()).then(|| {
        let mut t = tokio::time::interval_at(start + args.report, args.report);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = next_tick(&mut tick) => {
                let when = format!("{:.1}s", start.elapsed().as_secs_f64());
                println!("{}", counters(&when, &relay.stats()));
            }
        }
    }
    let stats = relay.stats();
    relay.shutdown();
    println!(
        "{}",
        counters(
            &format!("final after {:.1}s", start.elapsed().as_secs_f64()),
            &stats
        )
    );
    Ok(())
}

/// The relay of either kind.
enum Relay {
    Udp(UdpRelay),
    Tcp(TcpRelay),
}

impl Relay {
    fn local_addr(&self) -> SocketAddr {
        match self {
            Relay::Udp(r) => r.local_addr(),
            Relay::Tcp(r) => r.local_addr(),
        }
    }
    fn stats(&self) -> LinkStats {
        match self {
            Relay::Udp(r) => r.stats(),
            Relay::Tcp(r) => r.stats(),
        }
    }
    fn shutdown(self) {}
}

/// The next report time; never, without reports.
async fn next_tick(tick: &mut Option<tokio::time::Interval>) {
    match tick {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn describe(d: &Direction) -> String {
    let rate = d
        .rate_bps
        .map_or_else(|| "unlimited".into(), |r| rate(r as f64));
    let jitter = if d.jitter.is_zero() {
        String::new()
    } else {
        format!(" ± {} ms", d.jitter.as_secs_f64() * 1e3)
    };
    format!(
        "rate {rate}, delay {} ms{jitter}, loss {}%, queue {}",
        d.delay.as_secs_f64() * 1e3,
        d.loss * 100.0,
        bytes(u64::try_from(d.queue_bytes).unwrap_or(u64::MAX))
    )
}

/// One report line: `<when> up: ... | down: ...`.
fn counters(when: &str, s: &LinkStats) -> String {
    let dir = |d: &DirStats| {
        format!(
            "in {}, delivered {} ({}), lost {}, queue-dropped {}",
            d.packets_in,
            d.packets_delivered,
            bytes(d.bytes_delivered),
            d.packets_lost,
            d.packets_overflowed
        )
    };
    format!("{when} up: {} | down: {}", dir(&s.up), dir(&s.down))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: EmulateArgs,
    }

    fn parse(extra: &[&str]) -> EmulateArgs {
        let mut argv = vec!["x", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).expect("flags parse").args
    }

    #[test]
    fn flags_make_the_link() {
        let a = parse(&[
            "--rate", "64kbit", "--rtt", "600ms", "--jitter", "10ms", "--loss", "1%", "--seed", "7",
        ]);
        let s = a.spec();
        assert_eq!(s.up, s.down);
        assert_eq!(s.up.rate_bps, Some(64_000));
        assert_eq!(s.up.delay, Duration::from_millis(300));
        assert_eq!(s.up.jitter, Duration::from_millis(10));
        assert_eq!(s.up.loss, 0.01);
        assert_eq!(s.up.queue_bytes, MIN_QUEUE_BYTES);
        assert_eq!(s.seed, 7);
        assert_eq!(a.report, Duration::from_secs(5));
    }

    #[test]
    fn per_direction_flags_override() {
        let s = parse(&[
            "--rate",
            "1mbit",
            "--rate-down",
            "10mbit",
            "--loss-up",
            "5%",
            "--queue",
            "200ms",
        ])
        .spec();
        assert_eq!(s.up.rate_bps, Some(1_000_000));
        assert_eq!(s.down.rate_bps, Some(10_000_000));
        assert_eq!((s.up.loss, s.down.loss), (0.05, 0.0));
        // 200 ms at 1 Mbit/s is 25 000 bytes, at 10 Mbit/s 250 000.
        assert_eq!((s.up.queue_bytes, s.down.queue_bytes), (25_000, 250_000));
        let unlimited = parse(&[]).spec();
        assert_eq!(unlimited.up.rate_bps, None);
        assert_eq!(unlimited.up.delay, Duration::ZERO);
    }

    #[test]
    fn report_lines_name_every_counter() {
        let line = counters("final after 1.0s", &LinkStats::default());
        for word in [
            "final",
            "up:",
            "down:",
            "delivered 0",
            "lost 0",
            "queue-dropped 0",
        ] {
            assert!(line.contains(word), "{line}");
        }
    }
}
