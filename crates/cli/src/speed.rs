//! `llmpack speed`: how fast the model codes real text at several lane
//! counts, where a token's time goes, and how much of the machine a model
//! step uses, measured in one run, every round trip checked.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use llmpack_codec::{
    LmParams, Policy, Predictor, Profile, StreamConfig, StreamDecoder, StreamEncoder, drive,
};
use llmpack_frame::MAX_FRAME_LEN;
use llmpack_model::PredictorStats;
use serde::Serialize;

use crate::{model, size};

/// Arguments of `llmpack speed`.
#[derive(Debug, Args)]
pub struct SpeedArgs {
    #[command(flatten)]
    model: model::ModelArgs,
    /// Lane counts to measure, comma-separated: each run codes that many
    /// independent streams at once, their model steps batched together.
    /// Default: 1,4,16,64 on the CPU; 1,4,16,64,256,1024 on a GPU.
    #[arg(long, value_delimiter = ',')]
    lanes: Vec<usize>,
    /// Bytes each lane codes (a different part of the text per lane).
    #[arg(long, default_value = "4KiB", value_parser = size::parse_u64)]
    bytes: u64,
    /// Lanes one stream's frame is coded on at once (its segments step
    /// together; the tunnel's per-tunnel `lanes`): with `--lanes 1`, one
    /// connection split into this many lanes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=16))]
    split: u8,
    /// Frame size each stream is cut into (the tunnel's `limits.frame`;
    /// default: each lane's bytes as one frame, at most 1 MiB).
    #[arg(long, value_parser = size::parse_u64)]
    frame: Option<u64>,
    /// Text to code: these files, concatenated (default: the evaluation
    /// samples in .cache/samples, which scripts/setup.sh fetches).
    #[arg(long)]
    input: Vec<PathBuf>,
    /// Model context window, tokens (default: the model's trained context,
    /// at most 1024).
    #[arg(long)]
    window: Option<u32>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Shares of decode time, as fractions.
#[derive(Debug, Serialize, Default, Clone, Copy)]
struct Split {
    runtime: f64,
    table: f64,
    matcher: f64,
    coder: f64,
    other: f64,
}

#[derive(Debug, Serialize)]
struct Run {
    lanes: usize,
    /// Lanes each stream's frames were coded on (`--split`).
    lanes_per_stream: u8,
    bytes: u64,
    encode_kbps: f64,
    decode_kbps: f64,
    /// Runtime time of one batched step call (decode), milliseconds.
    ms_per_step: f64,
    /// Rows per step call (decode).
    rows_per_step: f64,
    /// Mean context of a step, tokens.
    mean_context: f64,
    /// The step's FLOP rate over the measured peak.
    peak_share: f64,
    bits_per_byte: f64,
    split: Split,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    contract: String,
    /// Where the model ran: cpu or cuda.
    device: String,
    /// The numeric probe there (hex): two runs that agree on it decode each
    /// other's model-coded bytes.
    probe: String,
    threads: usize,
    window: u32,
    keep: u32,
    peak_gflops: f64,
    flops_per_token: f64,
    flops_exact: bool,
    state_bytes_per_lane: Option<usize>,
    runs: Vec<Run>,
}

const SAMPLES: [&str; 4] = ["prose.txt", "code.py", "page.html", "data.json"];

fn text(args: &SpeedArgs) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if args.input.is_empty() {
        for s in SAMPLES {
            let rel = format!(".cache/samples/{s}");
            let path = llmpack_model::find_in_project(&rel).with_context(|| {
                format!("{rel} not found: run scripts/setup.sh (it fetches the evaluation samples), or pass --input FILE")
            })?;
            out.extend(
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            );
        }
    } else {
        for p in &args.input {
            out.extend(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?);
        }
    }
    Ok(out)
}

/// Lane `i`'s part: `len` bytes, the starts spread over the whole text (so
/// the lanes mix prose, code, HTML and JSON).
fn part(text: &[u8], i: usize, lanes: usize, len: usize) -> &[u8] {
    let room = text.len().saturating_sub(len);
    let at = if lanes <= 1 { 0 } else { room * i / lanes };
    &text[at..(at + len).min(text.len())]
}

/// Lane counts measured when `--lanes` is not given: a GPU's model call
/// costs about the same for 1 row as for hundreds, so it is measured up to
/// the proxy's largest batch.
fn default_lanes(backend: llmpack_model::Backend) -> Vec<usize> {
    match backend {
        llmpack_model::Backend::Cpu => vec![1, 4, 16, 64],
        llmpack_model::Backend::Cuda => vec![1, 4, 16, 64, 256, 1024],
    }
}

/// Runs the measurement.
pub fn run(args: &SpeedArgs) -> Result<()> {
    let text = text(args)?;
    let len = usize::try_from(args.bytes).context("--bytes too large")?;
    if len == 0 || args.lanes.contains(&0) {
        bail!("--bytes and every --lanes value must be at least 1");
    }
    if len > text.len() {
        bail!(
            "--bytes {len} is more than the {} bytes of text",
            text.len()
        );
    }
    let mut loaded = model::Loaded::load(&args.model)?;
    let fitted = LmParams::within(loaded.context);
    let window = args.window.unwrap_or(fitted.window);
    let lm = LmParams {
        window,
        keep: fitted.keep.min(window / 4),
    };
    loaded.check_window(lm.window)?;
    let threads = loaded.predictor.threads();
    let backend = loaded.backend;
    let lane_counts = if args.lanes.is_empty() {
        default_lanes(backend)
    } else {
        args.lanes.clone()
    };
    eprintln!(
        "measuring the fp32 matmul peak through ONNX Runtime ({backend}, {threads} threads)..."
    );
    let peak = llmpack_model::matmul_peak(threads, Duration::from_millis(700))
        .context("measuring the matmul peak")?;
    let vocab = loaded.spec.vocab.clone();
    let mut runs = Vec::new();
    let mut next_lane = 1u64;
    let flops_nominal = llmpack_model::flops_per_token(
        &loaded.dir,
        &loaded.predictor.shape(),
        f64::from(window) * 5.0 / 8.0,
    );
    for &lanes in &lane_counts {
        let parts: Vec<&[u8]> = (0..lanes).map(|i| part(&text, i, lanes, len)).collect();
        let mut tokens = 0u64;
        for p in &parts {
            let mut t = Vec::new();
            vocab.tokenize(p, &mut t);
            tokens += t.len() as u64;
        }
        let cfg = StreamConfig {
            policy: Policy::Lm,
            lm: Some(lm),
            lanes: args.split,
            ..StreamConfig::default()
        };
        // Encode.
        let ids: Vec<u64> = (0..lanes as u64).map(|i| next_lane + i).collect();
        next_lane += 2 * lanes as u64;
        let mut encs: Vec<StreamEncoder> = ids
            .iter()
            .map(|&id| {
                let mut e = StreamEncoder::new(id, cfg.clone(), vocab.clone(), b"");
                e.set_profiling(true);
                e
            })
            .collect();
        let bar = indicatif::ProgressBar::new(2 * tokens);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} tokens (encode, then decode) eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{lanes:>3} lanes"));
        let p = &mut loaded.predictor;
        let t0 = Instant::now();
        let mut frames: Vec<Vec<llmpack_codec::EncodedFrame>> = vec![Vec::new(); lanes];
        let frame = args.frame.map_or(MAX_FRAME_LEN as usize, |f| {
            usize::try_from(f.clamp(1, u64::from(MAX_FRAME_LEN))).expect("at most 1 MiB")
        });
        let mut done = 0u64;
        for at in (0..len).step_by(frame) {
            for (e, part) in encs.iter_mut().zip(&parts) {
                if at < part.len() {
                    e.push(part[at..(at + frame).min(part.len())].to_vec());
                }
            }
            let mut refs: Vec<&mut StreamEncoder> = encs.iter_mut().collect();
            let s = drive(p, &mut refs, &mut |s| bar.set_position(done + s.requests))?;
            done += s.requests;
            for (f, e) in frames.iter_mut().zip(encs.iter_mut()) {
                f.extend(e.take_frame());
            }
        }
        let enc_secs = t0.elapsed().as_secs_f64();
        for e in &encs {
            for id in e.used_lanes() {
                p.release(id);
            }
        }
        let packed: usize = frames.iter().flatten().map(|f| f.wire_len()).sum();
        // Decode.
        let dec_ids: Vec<u64> = ids.iter().map(|i| i + lanes as u64).collect();
        let mut decs: Vec<StreamDecoder> = dec_ids
            .iter()
            .map(|&id| {
                let mut d = StreamDecoder::new(id, &cfg, vocab.clone(), b"");
                d.set_profiling(true);
                d
            })
            .collect();
        let before: PredictorStats = p.stats();
        let t0 = Instant::now();
        let mut outs: Vec<Vec<u8>> = vec![Vec::new(); lanes];
        let rounds = frames.iter().map(Vec::len).max().unwrap_or(0);
        for k in 0..rounds {
            for (d, f) in decs.iter_mut().zip(&frames) {
                if let Some(f) = f.get(k) {
                    d.push(f.header, f.payload.clone());
                }
            }
            let mut refs: Vec<&mut StreamDecoder> = decs.iter_mut().collect();
            let s = drive(p, &mut refs, &mut |s| bar.set_position(done + s.requests))?;
            done += s.requests;
            for (o, d) in outs.iter_mut().zip(decs.iter_mut()) {
                if let Some(r) = d.take_output() {
                    o.extend(r.context("decoding a frame")?);
                }
            }
        }
        let dec_secs = t0.elapsed().as_secs_f64();
        bar.finish_and_clear();
        let after = p.stats();
        for d in &decs {
            for id in d.used_lanes() {
                p.release(id);
            }
        }
        for (i, (o, want)) in outs.iter().zip(&parts).enumerate() {
            if o.as_slice() != *want {
                bail!(
                    "lane {i} of the {lanes}-lane run did not round-trip: the coder or the model is not deterministic"
                );
            }
        }
        // Where decode time went.
        let mut prof = Profile::default();
        for d in &decs {
            prof.merge(&d.profile().unwrap_or_default());
        }
        let runtime = after.model_seconds - before.model_seconds;
        let share = |d: Duration| d.as_secs_f64() / dec_secs;
        let mut split = Split {
            runtime: runtime / dec_secs,
            table: share(prof.table),
            matcher: share(prof.matcher),
            coder: share(prof.coder),
            other: 0.0,
        };
        split.other = (1.0 - split.runtime - split.table - split.matcher - split.coder).max(0.0);
        let step_calls = (after.step_calls - before.step_calls).max(1);
        let step_rows = after.step_rows - before.step_rows;
        let step_secs = after.step_seconds - before.step_seconds;
        let mean_context =
            (after.step_context - before.step_context) as f64 / step_rows.max(1) as f64;
        let flops = llmpack_model::flops_per_token(&loaded.dir, &p.shape(), mean_context);
        let total = (lanes * len) as u64;
        let total_bytes = total as f64;
        runs.push(Run {
            lanes,
            lanes_per_stream: args.split,
            bytes: total,
            encode_kbps: total_bytes / 1024.0 / enc_secs,
            decode_kbps: total_bytes / 1024.0 / dec_secs,
            ms_per_step: 1e3 * step_secs / step_calls as f64,
            rows_per_step: step_rows as f64 / step_calls as f64,
            mean_context,
            peak_share: flops.total() * step_rows as f64 / step_secs.max(1e-9) / 1e9 / peak,
            bits_per_byte: 8.0 * packed as f64 / total_bytes,
            split,
        });
    }
    let report = Report {
        model: loaded.dir.manifest.model.name.clone(),
        contract: format!("{:?}", loaded.dir.manifest.onnx.contract).to_lowercase(),
        device: backend.to_string(),
        probe: format!("{:016x}", loaded.spec.probe),
        threads,
        window: lm.window,
        keep: lm.keep,
        peak_gflops: peak,
        flops_per_token: flops_nominal.total(),
        flops_exact: flops_nominal.exact,
        state_bytes_per_lane: loaded.predictor.bytes_per_lane(),
        runs,
    };
    print_report(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn print_report(r: &Report) {
    println!(
        "model {} ({} contract) on the {}, {} threads, window {} keep {}; every round trip byte-exact",
        r.model, r.contract, r.device, r.threads, r.window, r.keep
    );
    println!(
        "fp32 matmul peak through ONNX Runtime, same device and threads: {:.1} GFLOP/s",
        r.peak_gflops
    );
    println!(
        "FLOPs per token at 5/8 of the window: {:.2} M ({}){}",
        r.flops_per_token / 1e6,
        if r.flops_exact {
            "from the graph's shape"
        } else {
            "estimated from the file size"
        },
        r.state_bytes_per_lane
            .map(|b| format!(
                "; model state per lane {:.2} MiB",
                b as f64 / f64::from(1 << 20)
            ))
            .unwrap_or_default()
    );
    println!(
        "{:>5} {:>9} {:>9} {:>8} {:>5} {:>5} {:>6} {:>6} | decode time: {:>7} {:>6} {:>7} {:>6} {:>6}",
        "lanes",
        "enc KB/s",
        "dec KB/s",
        "ms/step",
        "rows",
        "ctx",
        "peak",
        "bpb",
        "runtime",
        "table",
        "matcher",
        "coder",
        "other"
    );
    for x in &r.runs {
        let pc = |f: f64| format!("{:.1}%", 100.0 * f);
        println!(
            "{:>5} {:>9.2} {:>9.2} {:>8.2} {:>5.1} {:>5.0} {:>6} {:>6.3} |              {:>7} {:>6} {:>7} {:>6} {:>6}",
            if x.lanes_per_stream > 1 {
                format!("{}x{}", x.lanes, x.lanes_per_stream)
            } else {
                x.lanes.to_string()
            },
            x.encode_kbps,
            x.decode_kbps,
            x.ms_per_step,
            x.rows_per_step,
            x.mean_context,
            pc(x.peak_share),
            x.bits_per_byte,
            pc(x.split.runtime),
            pc(x.split.table),
            pc(x.split.matcher),
            pc(x.split.coder),
            pc(x.split.other),
        );
    }
}
