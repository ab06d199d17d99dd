//! `llmpack`: lossless compression of byte streams with a language model.
//!
//! Subcommands: `sender` / `receiver` (the tunnel's two proxies, from config
//! files), `check-config`, `keygen`, `pack` / `unpack` (files), `eval` (bits
//! per byte against zstd, xz and brotli, with round-trip checks and
//! throughput), `speed` (the model's coding speed and where its time goes),
//! `bench` (the tunnel over emulated links), `emulate` (that link emulator as
//! a UDP relay between a user's own sender and receiver).

mod engine;
mod eval;
mod model;
mod size;
mod speed;
mod tunnel;

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use llmpack_codec::{LmParams, Policy};
use llmpack_model::Backend;

use crate::engine::{PackJob, PackOptions, UnpackJob, read_header, run_pack, run_unpack};

/// Lossless compression with a language model: arithmetic coding driven by a
/// causal LM's next-token probabilities, run with ONNX Runtime.
#[derive(Debug, Parser)]
#[command(name = "llmpack", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Compress a file.
    Pack {
        /// The file to compress.
        input: PathBuf,
        /// Where to write the pack file.
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        model: model::ModelArgs,
        #[command(flatten)]
        coding: CodingArgs,
    },
    /// Restore a file made by `pack`.
    Unpack {
        /// The pack file.
        input: PathBuf,
        /// Where to write the restored file.
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        model: model::ModelArgs,
    },
    /// Measure bits per byte of the model against zstd -19, xz -9e and
    /// brotli -11 on files, with byte-exact round trips.
    Eval(eval::EvalArgs),
    /// Measure how fast the model codes real text at several lane counts:
    /// KB/s, ms per step, where a token's time goes, and the step's share of
    /// the machine's measured fp32 matmul peak.
    Speed(speed::SpeedArgs),
    /// Measure goodput, compression and latency of plain TCP and of the
    /// tunnel per codec over emulated links; plot goodput vs link rate.
    Bench(llmpack_bench::BenchArgs),
    /// Relay UDP between a sender and a receiver through an emulated link
    /// (rate, RTT, jitter, loss, queue) and count what it delivers and drops:
    /// try a deployment before the real link exists.
    ///
    /// "up" is sender to receiver (datagrams arriving at --listen, sent on to
    /// --to); "down" is the replies, sent back to the address that sent last
    /// (one sender at a time, as a QUIC link is). Every --report and at exit
    /// (Ctrl-C or SIGTERM) it prints, per direction, datagrams in, delivered,
    /// lost (random loss) and queue-dropped (full bottleneck queue).
    ///
    /// Example, with a receiver listening on 127.0.0.1:4433 and the sender's
    /// `link.connect` set to 127.0.0.1:4434: `llmpack emulate --listen
    /// 127.0.0.1:4434 --to 127.0.0.1:4433 --rate 64kbit --rtt 600ms`.
    Emulate(llmpack_bench::emulate::EmulateArgs),
    /// Run the sending proxy: accept local TCP clients on each tunnel's
    /// address and carry them over the QUIC link to the receiver.
    Sender {
        /// The config file (see config/sender.example.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the receiving proxy: accept the link and dial each tunnel's target.
    Receiver {
        /// The config file (see config/receiver.example.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Check a config file and print what it sets up.
    CheckConfig {
        /// The config file.
        config: PathBuf,
    },
    /// Make a self-signed certificate and key for each end of a link
    /// (NAME.crt, NAME.key).
    Keygen {
        /// Directory to write into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// File name stem; repeat for several. Default: both `sender` and
        /// `receiver` (a pair to try on one machine; in a real deployment each
        /// site makes its own and sends only the .crt to the other).
        #[arg(long)]
        name: Vec<String>,
        /// Name the certificate carries; a receiver's must equal the
        /// sender's link.server_name.
        #[arg(long, default_value = "llmpack")]
        server_name: String,
    },
}

/// How inputs are cut and coded.
#[derive(Debug, Clone, Args)]
pub(crate) struct CodingArgs {
    /// Codecs to use: auto (smallest per frame), lm, zstd or raw.
    #[arg(long, default_value = "auto", value_parser = parse_policy)]
    pub(crate) codec: Policy,
    /// Largest frame (e.g. 16KiB).
    #[arg(long, default_value = "16KiB", value_parser = size::parse_u32)]
    frame: u32,
    /// Most lanes (independently coded parts of a file, decoded in one batch).
    /// Default: 16 on the CPU, 256 on a GPU (`--device`), where a model call
    /// of many lanes costs little more than one of a few.
    #[arg(long)]
    lanes: Option<u16>,
    /// Smallest part of a file that gets a lane of its own (e.g. 4KiB).
    /// Each lane starts with an empty context, so fewer, longer lanes
    /// compress better; more lanes code faster, their model steps batched
    /// together. On three 64 KiB evaluation samples (HTML, prose, Python)
    /// coded together: 16KiB lanes 0.616 / 1.475 / 1.000 bits/byte at
    /// ~4.1 KB/s, 4KiB lanes 0.704 / 1.530 / 1.082 at ~6 KB/s
    /// (models/default/MODEL.md, "Inference").
    #[arg(long, default_value = "16KiB", value_parser = size::parse_u64)]
    min_lane: u64,
    /// Model context window, tokens (default: 1024, or the model's trained
    /// context where that is shorter).
    #[arg(long)]
    window: Option<u32>,
    /// Tokens kept when the context window is full (default: 256, at most a
    /// quarter of the window).
    #[arg(long)]
    keep: Option<u32>,
    /// zstd level for zstd frames.
    #[arg(long, default_value_t = 19)]
    zstd_level: i32,
}

impl CodingArgs {
    /// The options for a model trained on `context` tokens (`None`: no model)
    /// running on `backend`.
    pub(crate) fn options(&self, context: Option<u32>, backend: Backend) -> PackOptions {
        let fitted = context.map_or_else(LmParams::default, LmParams::within);
        let window = self.window.unwrap_or(fitted.window);
        PackOptions {
            policy: self.codec,
            frame_len: self.frame,
            max_lanes: self.lanes.unwrap_or(default_lanes(backend)),
            min_lane: self.min_lane,
            lm: LmParams {
                window,
                keep: self.keep.unwrap_or(fitted.keep.min(window / 4)),
            },
            zstd_level: self.zstd_level,
            zstd_history: llmpack_codec::DEFAULT_ZSTD_HISTORY,
        }
    }
}

/// Lanes per file when `--lanes` is not given: a CPU's model call costs
/// about its rows, a GPU's about the same for 1 row or a few hundred.
fn default_lanes(backend: Backend) -> u16 {
    match backend {
        Backend::Cpu => 16,
        Backend::Cuda => 256,
    }
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    Policy::parse(s).ok_or_else(|| format!("`{s}`: expected auto, lm, zstd or raw"))
}

fn main() {
    let cli = Cli::parse();
    let default_level = match cli.cmd {
        Cmd::Sender { .. } | Cmd::Receiver { .. } => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.cmd {
        Cmd::Pack {
            input,
            output,
            model,
            coding,
        } => pack(&input, &output, &model, &coding),
        Cmd::Unpack {
            input,
            output,
            model,
        } => unpack(&input, &output, &model),
        Cmd::Eval(args) => eval::run(&args),
        Cmd::Speed(args) => speed::run(&args),
        Cmd::Bench(args) => llmpack_bench::run(&args),
        Cmd::Emulate(args) => tunnel::emulate(&args),
        Cmd::Sender { config } => tunnel::serve(&config, llmpack_proxy::config::Role::Sender),
        Cmd::Receiver { config } => tunnel::serve(&config, llmpack_proxy::config::Role::Receiver),
        Cmd::CheckConfig { config } => tunnel::check(&config),
        Cmd::Keygen {
            out,
            name,
            server_name,
        } => {
            let names = if name.is_empty() {
                vec!["sender".to_string(), "receiver".to_string()]
            } else {
                name
            };
            names
                .iter()
                .try_for_each(|n| tunnel::keygen(&out, n, &server_name))
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn pack(input: &Path, output: &Path, margs: &model::ModelArgs, coding: &CodingArgs) -> Result<()> {
    let src = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let total = src.metadata()?.len();
    let mut loaded = if coding.codec.uses_model() {
        Some(model::Loaded::load(margs)?)
    } else {
        None
    };
    let opts = coding.options(
        loaded.as_ref().map(|l| l.context),
        loaded.as_ref().map_or(Backend::Cpu, |l| l.backend),
    );
    if let Some(l) = &loaded {
        l.check_window(opts.lm.window)?;
    }
    let tmp = partial_path(output);
    let out =
        BufWriter::new(File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
    let t0 = Instant::now();
    let bar = size::bar(total, "pack");
    let mut handle = loaded.as_mut().map(model::Loaded::handle);
    let spec = handle.as_ref().map(|h| h.spec.clone());
    let spec = spec.as_ref();
    let mut jobs = vec![PackJob::new(
        0,
        &opts,
        spec,
        total,
        Box::new(src),
        Box::new(out),
    )?];
    let res = run_pack(handle.as_mut(), &mut jobs, &mut |done| {
        bar.set_position(done)
    });
    bar.finish_and_clear();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let job = &jobs[0];
    let (written, stats, lanes) = (job.written, job.stats(), job.header().lanes);
    drop(jobs);
    std::fs::rename(&tmp, output).with_context(|| format!("renaming to {}", output.display()))?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "{}: {} -> {} bytes ({:.3} bits/byte) in {:.1} s ({:.0} B/s), {} lanes, frames lm/zstd/raw {}/{}/{}",
        input.display(),
        total,
        written,
        8.0 * written as f64 / total.max(1) as f64,
        secs,
        total as f64 / secs,
        lanes,
        stats.frames[2],
        stats.frames[1],
        stats.frames[0],
    );
    Ok(())
}

fn unpack(input: &Path, output: &Path, margs: &model::ModelArgs) -> Result<()> {
    let mut src =
        BufReader::new(File::open(input).with_context(|| format!("opening {}", input.display()))?);
    let header = read_header(&mut src).with_context(|| format!("reading {}", input.display()))?;
    let mut loaded = if header.model.is_none() {
        None
    } else {
        Some(model::Loaded::load(margs)?)
    };
    let tmp = partial_path(output);
    let out = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let t0 = Instant::now();
    let bar = size::bar(header.total_len, "unpack");
    let mut handle = loaded.as_mut().map(model::Loaded::handle);
    let spec = handle.as_ref().map(|h| h.spec.clone());
    let spec = spec.as_ref();
    let res = UnpackJob::new(0, header, spec, Box::new(src), Box::new(out)).and_then(|job| {
        let mut jobs = vec![job];
        run_unpack(handle.as_mut(), &mut jobs, &mut |d| bar.set_position(d))
    });
    bar.finish_and_clear();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("unpacking {}", input.display())));
    }
    if std::fs::metadata(&tmp)?.len() != header.total_len {
        let _ = std::fs::remove_file(&tmp);
        bail!("corrupt pack: restored length differs from the header");
    }
    std::fs::rename(&tmp, output).with_context(|| format!("renaming to {}", output.display()))?;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "{}: restored {} bytes in {:.1} s ({:.0} B/s), SHA-256 verified",
        output.display(),
        header.total_len,
        secs,
        header.total_len as f64 / secs
    );
    Ok(())
}

/// Output is written next to its destination and renamed when verified, so
/// a failed run never leaves a wrong file under the requested name.
fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    output.with_file_name(name)
}
