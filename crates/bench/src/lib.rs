//! LLMPack benchmarks: link emulator, workloads, `llmpack bench` reports and plots.
//!
//! [`link`] emulates a slow, lossy, delayed network path in user space (no root,
//! no netem): a UDP relay for the QUIC tunnel and a TCP relay for plain-TCP
//! baselines, both with a rate-limited drop-tail bottleneck per direction.
//! [`http`] runs real nginx and curl as a run's server and clients.
//! [`relay`] holds the bare relays of the `relay` and `quic` modes. [`units`] parses the
//! rates and percentages that users type.
//! [`scenario`] names links, [`workload`] builds traffic classes, [`run`](mod@run)
//! measures one scenario × mode × workload ([`interactive`]: on persistent
//! connections; [`latency`]: its percentiles), and [`report`] prints tables,
//! JSON and an SVG plot. [`run()`] runs the whole matrix for `llmpack bench`.
//! [`emulate`] is `llmpack emulate`: the UDP link emulator on its own.
//!
//! This crate sits at the top of the dependency graph: it may use the tunnel
//! crates, but no tunnel crate may depend on it.
#![warn(missing_docs)]

pub mod emulate;
pub mod http;
pub mod interactive;
pub mod latency;
pub mod link;
pub mod relay;
pub mod report;
pub mod run;
pub mod scenario;
mod tunnel;
pub mod units;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

pub use run::{App, LinkChoice, Mode, RunResult, RunSpec, run_one};
pub use scenario::Scenario;
pub use tunnel::ModelOpts;
pub use workload::Workload;

/// Measure goodput, compression and latency of plain TCP and of the LLMPack
/// tunnel (per codec) over emulated links, and plot goodput against link
/// rate.
///
/// Round-trip latency on a real machine with nothing in between:
/// `--scenario loopback --traffic interactive --modes direct,relay,zstd`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Links to emulate: geo-sat (64 kbit/s, 600 ms RTT), cellular (1 Mbit/s,
    /// 100 ms, 1% loss), wan (10 Mbit/s, 20 ms), lan (1 Gbit/s, 1 ms); a
    /// comma-separated list or `all` (those four). `loopback` runs with no
    /// emulator at all: clients straight to the server (direct), to the
    /// relay, or to the sender, whose link to the receiver is plain loopback
    /// UDP; link bytes are then not counted. Ignored when --rate is given.
    #[arg(long, default_value = "all")]
    pub scenario: String,
    /// A custom link instead of the named ones: its rate (e.g. 256kbit).
    #[arg(long, value_parser = units::parse_rate)]
    pub rate: Option<u64>,
    /// Round-trip time of the custom link (e.g. 300ms).
    #[arg(long, default_value = "0ms", value_parser = llmpack_proxy::units::parse_duration)]
    pub rtt: Duration,
    /// Loss of the custom link per UDP datagram and direction (e.g. 0.5%).
    #[arg(long, default_value = "0%", value_parser = units::parse_percent)]
    pub loss: f64,
    /// Paths to measure: direct (plain TCP), relay (plain TCP through a bare
    /// user-space relay, TCP_NODELAY both sides), quic (TCP copied into one
    /// QUIC connection with the tunnel's settings and out again: no framing,
    /// no codec), raw, zstd, lm, auto (tunnel codecs, with the proxies'
    /// default settings).
    #[arg(long, value_delimiter = ',', default_value = "direct,raw,zstd,lm,auto", value_parser = Mode::parse)]
    pub modes: Vec<Mode>,
    /// Link modes of the tunnel runs: stream (CUBIC), stream-bbr,
    /// datagram-fec (BBR); comma-separated for several. Direct, relay and
    /// quic run once.
    #[arg(long, value_delimiter = ',', default_value = "stream", value_parser = LinkChoice::parse)]
    pub link_mode: Vec<LinkChoice>,
    /// Traffic: prose, code, html, json, logs, binary, mix, or a file or
    /// directory; comma-separated for several.
    #[arg(long, value_delimiter = ',', default_value = "mix")]
    pub workload: Vec<String>,
    /// Directory of the text samples (default: .cache/samples found from the
    /// working directory up).
    #[arg(long)]
    pub samples: Option<PathBuf>,
    /// How long clients keep starting requests in each run (e.g. 8s).
    #[arg(long, default_value = "8s", value_parser = llmpack_proxy::units::parse_duration)]
    pub duration: Duration,
    /// How long requests in flight at the end may still take.
    #[arg(long, default_value = "60s", value_parser = llmpack_proxy::units::parse_duration)]
    pub grace: Duration,
    /// Traffic shape: `exchange` (default: 4 clients, 16 KiB responses, a
    /// new TCP connection per request), `bulk` (1 client downloading
    /// large responses: link rate x duration / 16, between 256 KiB and 16
    /// MiB, per scenario, and no longer than the workload; pass a large file
    /// or directory as --workload) or `interactive` (1 client holding one TCP
    /// connection, one exchange at a time: a 100 B request, a 1 KiB
    /// response, checked byte for byte; reports exchanges/s and round-trip
    /// p50/p99/max in microseconds; builtin app only). --clients and
    /// --response override any of them.
    #[arg(long, default_value = "exchange", value_parser = Traffic::parse)]
    pub traffic: Traffic,
    /// Programs at the ends: `builtin` (this process's server and clients)
    /// or `nginx-curl` (real nginx serving the responses as files, one curl
    /// per request over HTTP/1.1; needs both installed).
    #[arg(long, default_value = "builtin", value_parser = App::parse)]
    pub app: App,
    /// Concurrent clients (default: from --traffic).
    #[arg(long)]
    pub clients: Option<usize>,
    /// Bytes per response, e.g. 16KiB (default: from --traffic).
    #[arg(long, value_parser = llmpack_proxy::units::parse_u64)]
    pub response: Option<u64>,
    /// Model directory for lm and auto (default: models/default).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The proxies' `[model] max_delay`: frames the model cannot finish within
    /// it go zstd (default: the proxy's, 2s).
    #[arg(long, value_parser = llmpack_proxy::units::parse_duration)]
    pub max_delay: Option<Duration>,
    /// Seed of the link's loss draws and of the binary workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the results as JSON to this file (`-`: standard output, and no
    /// table).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where to write the SVG plot of goodput against link rate.
    #[arg(long, default_value = "bench.svg")]
    pub plot: PathBuf,
}

/// Traffic shapes of `--traffic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Traffic {
    /// Many small request/response exchanges, a new connection each.
    Exchange,
    /// One client downloading large responses back to back.
    Bulk,
    /// Request/response exchanges one at a time on one persistent
    /// connection per client ([`interactive`]).
    Interactive,
}

impl Traffic {
    /// Parses `exchange`, `bulk` or `interactive`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "exchange" => Ok(Traffic::Exchange),
            "bulk" => Ok(Traffic::Bulk),
            "interactive" => Ok(Traffic::Interactive),
            _ => Err(format!(
                "unknown traffic `{s}`: use exchange, bulk or interactive"
            )),
        }
    }

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Traffic::Exchange => "exchange",
            Traffic::Bulk => "bulk",
            Traffic::Interactive => "interactive",
        }
    }

    /// Default clients.
    pub fn clients(self) -> usize {
        match self {
            Traffic::Exchange => 4,
            Traffic::Bulk | Traffic::Interactive => 1,
        }
    }

    /// Default response size on a link of `rate` bits/s (`None`: no
    /// limit) for runs of `duration`: 16 KiB exchanges, 1 KiB interactive
    /// ones; bulk responses of what the link carries uncompressed in a
    /// sixteenth of the run, within 256 KiB..16 MiB (unlimited links: 16
    /// MiB).
    pub fn response(self, rate: Option<u64>, duration: Duration) -> u64 {
        match self {
            Traffic::Exchange => 16 << 10,
            Traffic::Interactive => 1 << 10,
            Traffic::Bulk => {
                let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
                let r = rate.map_or(u64::MAX, |r| r.saturating_mul(ms) / (8 * 16 * 1000));
                r.clamp(256 << 10, 16 << 20)
            }
        }
    }
}

/// Runs the benchmark matrix of `args` on a runtime of its own and prints
/// or writes the reports.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.traffic == Traffic::Interactive && args.app != App::Builtin {
        anyhow::bail!(
            "--traffic interactive needs --app builtin: curl makes a new connection per request"
        );
    }
    let scenarios = match args.rate {
        Some(rate) => vec![Scenario::new("custom", Some(rate), args.rtt, args.loss)],
        None => Scenario::parse_list(&args.scenario).map_err(anyhow::Error::msg)?,
    };
    let samples = match &args.samples {
        Some(s) => s.clone(),
        None => workload::find_samples().unwrap_or_else(|| PathBuf::from(".cache/samples")),
    };
    let workloads = args
        .workload
        .iter()
        .map(|w| Workload::resolve(w, &samples, args.seed).map(Arc::new))
        .collect::<Result<Vec<_>>>()?;
    let clients = args.clients.unwrap_or(args.traffic.clients());
    let mut specs = Vec::new();
    for scenario in &scenarios {
        for workload in &workloads {
            let response = args.response.unwrap_or_else(|| {
                let r = args.traffic.response(scenario.rate_bps, args.duration);
                // By default a response never repeats its workload's bytes.
                r.min(u64::try_from(workload.len()).unwrap_or(u64::MAX))
            });
            let response_size = usize::try_from(response).context("--response too large")?;
            for (&mode, &link) in args
                .modes
                .iter()
                .flat_map(|m| args.link_mode.iter().map(move |f| (m, f)))
            {
                if !mode.is_tunnel() && Some(&link) != args.link_mode.first() {
                    continue; // direct and relay have no link mode: run once
                }
                specs.push(RunSpec {
                    scenario: scenario.clone(),
                    mode,
                    workload: workload.clone(),
                    traffic: args.traffic,
                    duration: args.duration,
                    grace: args.grace,
                    clients,
                    response_size,
                    seed: args.seed,
                    model: ModelOpts {
                        dir: args.model.clone(),
                        max_delay: args.max_delay,
                    },
                    link,
                    app: args.app,
                });
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let bar = ProgressBar::new(u64::try_from(specs.len()).unwrap_or(u64::MAX));
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut results = Vec::new();
    for spec in &specs {
        let label = format!(
            "{} {} {}",
            spec.scenario.name,
            spec.path(),
            spec.workload.name
        );
        bar.set_message(label.clone());
        let r = rt
            .block_on(run_one(spec))
            .with_context(|| format!("run {label}"));
        match r {
            Ok(r) => results.push(r),
            Err(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    report::plot(&results, &args.plot)?;
    match args.json.as_deref() {
        Some(p) if p.as_os_str() == "-" => println!("{}", report::json(&results)?),
        Some(p) => {
            std::fs::write(p, report::json(&results)?)
                .with_context(|| format!("writing {}", p.display()))?;
            print!("{}", report::table(&results));
        }
        None => print!("{}", report::table(&results)),
    }
    eprintln!("plot: {}", args.plot.display());
    Ok(())
}

/// A fresh scratch directory of this process (`what`: its use, in the name).
pub(crate) fn scratch(what: &str) -> Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("llmpack-bench-{}-{what}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_defaults() {
        let d = Duration::from_secs(8);
        assert_eq!(Traffic::parse("bulk"), Ok(Traffic::Bulk));
        assert!(Traffic::parse("stream").is_err());
        assert_eq!(Traffic::parse("interactive"), Ok(Traffic::Interactive));
        assert_eq!(Traffic::Interactive.clients(), 1);
        assert_eq!(Traffic::Interactive.response(None, d), 1024);
        assert_eq!(Traffic::Exchange.response(Some(64_000), d), 16 << 10);
        assert_eq!(Traffic::Exchange.clients(), 4);
        assert_eq!(Traffic::Bulk.clients(), 1);
        // 64 kbit/s for 8 s is 64 kB; a sixteenth is under the floor.
        assert_eq!(Traffic::Bulk.response(Some(64_000), d), 256 << 10);
        // 100 Mbit/s for 8 s: 100 MB / 16 = 6.25 MB.
        assert_eq!(Traffic::Bulk.response(Some(100_000_000), d), 6_250_000);
        assert_eq!(Traffic::Bulk.response(None, d), 16 << 20);
    }
}
