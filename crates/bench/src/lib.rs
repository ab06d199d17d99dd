//! LLMPack benchmarks: link emulator, workloads, `llmpack bench` reports and plots.
//!
//! [`link`] emulates a slow, lossy, delayed network path in user space (no root,
//! no netem): a UDP relay for the QUIC tunnel and a TCP relay for plain-TCP
//! baselines, both with a rate-limited drop-tail bottleneck per direction.
//! [`units`] parses the rates and percentages that users type.
//! [`scenario`] names links, [`workload`] builds traffic classes, [`run`](mod@run)
//! measures one scenario × mode × workload, and [`report`] prints tables,
//! JSON and an SVG plot. [`run()`] runs the whole matrix for `llmpack bench`.
//!
//! This crate sits at the top of the dependency graph: it may use the tunnel
//! crates, but no tunnel crate may depend on it.
#![warn(missing_docs)]

pub mod link;
pub mod report;
pub mod run;
pub mod scenario;
mod tunnel;
pub mod units;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

pub use run::{LinkChoice, Mode, RunResult, RunSpec, run_one};
pub use scenario::Scenario;
pub use tunnel::ModelOpts;
pub use workload::Workload;

/// Measure goodput, compression and latency of plain TCP and of the LLMPack
/// tunnel (per codec) over emulated links, and plot goodput against link
/// rate.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Links to emulate: geo-sat (64 kbit/s, 600 ms RTT), cellular (1 Mbit/s,
    /// 100 ms, 1% loss), wan (10 Mbit/s, 20 ms), lan (1 Gbit/s, 1 ms); a
    /// comma-separated list or `all`. Ignored when --rate is given.
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
    /// Paths to measure: direct (plain TCP), raw, zstd, lm, auto (tunnel codecs).
    #[arg(long, value_delimiter = ',', default_value = "direct,raw,zstd,lm,auto", value_parser = Mode::parse)]
    pub modes: Vec<Mode>,
    /// Link modes of the tunnel runs: stream (CUBIC), stream-bbr,
    /// datagram-fec (BBR); comma-separated for several. Direct runs once.
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
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Bytes per response (e.g. 16KiB).
    #[arg(long, default_value = "16KiB", value_parser = llmpack_proxy::units::parse_u64)]
    pub response: u64,
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

/// Runs the benchmark matrix of `args` on a runtime of its own and prints
/// or writes the reports.
pub fn run(args: &BenchArgs) -> Result<()> {
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
    let response_size = usize::try_from(args.response).context("--response too large")?;
    let mut specs = Vec::new();
    for scenario in &scenarios {
        for workload in &workloads {
            for (&mode, &link) in args
                .modes
                .iter()
                .flat_map(|m| args.link_mode.iter().map(move |f| (m, f)))
            {
                if mode == Mode::Direct && Some(&link) != args.link_mode.first() {
                    continue; // direct has no link mode: run it once
                }
                specs.push(RunSpec {
                    scenario: scenario.clone(),
                    mode,
                    workload: workload.clone(),
                    duration: args.duration,
                    grace: args.grace,
                    clients: args.clients,
                    response_size,
                    seed: args.seed,
                    model: ModelOpts {
                        dir: args.model.clone(),
                        max_delay: args.max_delay,
                    },
                    link,
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
