//! `llmpack eval`: what the model buys on real files, next to the classic
//! compressors, measured in one run, with byte-exact round trips.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::engine::{PackJob, UnpackJob, read_header, run_pack, run_unpack};
use crate::{CodingArgs, model, size};

/// Arguments of `llmpack eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Files to measure.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    model: model::ModelArgs,
    #[command(flatten)]
    coding: CodingArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Code all files at once, batching their lanes together (faster; the
    /// throughput is then reported for the whole set).
    #[arg(long)]
    together: bool,
}

/// One file's results.
#[derive(Debug, Serialize)]
struct FileReport {
    file: String,
    bytes: u64,
    packed_bytes: u64,
    lanes: u16,
    frames_lm: u64,
    frames_zstd: u64,
    frames_raw: u64,
    lm_bpb: f64,
    zstd19_bpb: f64,
    xz9e_bpb: f64,
    brotli11_bpb: f64,
    encode_bytes_per_s: f64,
    decode_bytes_per_s: f64,
    roundtrip_ok: bool,
}

fn bpb(coded: usize, orig: usize) -> f64 {
    8.0 * coded as f64 / orig.max(1) as f64
}

fn baselines(data: &[u8]) -> Result<(f64, f64, f64)> {
    let z = zstd::bulk::compress(data, 19)?.len();
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 9 | (1 << 31)); // -9e
    xz.write_all(data)?;
    let x = xz.finish()?.len();
    let mut br = brotli::CompressorWriter::new(Vec::new(), 1 << 16, 11, 24);
    br.write_all(data)?;
    br.flush()?;
    let b = br.into_inner().len();
    Ok((bpb(z, data.len()), bpb(x, data.len()), bpb(b, data.len())))
}

/// Runs the evaluation.
pub fn run(args: &EvalArgs) -> Result<()> {
    let mut inputs = Vec::new();
    for f in &args.files {
        let data = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        inputs.push((f.display().to_string(), data));
    }
    let mut loaded = if args.coding.codec.uses_model() {
        Some(model::Loaded::load(&args.model)?)
    } else {
        None
    };
    let opts = args.coding.options(
        loaded.as_ref().map(|l| l.context),
        loaded
            .as_ref()
            .map_or(llmpack_model::Backend::Cpu, |l| l.backend),
    );
    if let Some(l) = &loaded {
        l.check_window(opts.lm.window)?;
    }
    let groups: Vec<Vec<usize>> = if args.together {
        vec![(0..inputs.len()).collect()]
    } else {
        (0..inputs.len()).map(|i| vec![i]).collect()
    };
    let mut reports = Vec::new();
    for group in groups {
        let total: u64 = group.iter().map(|&i| inputs[i].1.len() as u64).sum();
        let mut handle = loaded.as_mut().map(model::Loaded::handle);
        let spec = handle.as_ref().map(|h| h.spec.clone());
        let spec = spec.as_ref();
        // Encode.
        let mut packed: Vec<Vec<u8>> = vec![Vec::new(); group.len()];
        let bar = size::bar(total, "encode");
        let t0 = Instant::now();
        let stats;
        {
            let mut jobs = Vec::new();
            for (n, (&i, out)) in group.iter().zip(packed.iter_mut()).enumerate() {
                let data: &[u8] = &inputs[i].1;
                jobs.push(PackJob::new(
                    n as u64,
                    &opts,
                    spec,
                    data.len() as u64,
                    Box::new(data),
                    Box::new(out),
                )?);
            }
            run_pack(handle.as_mut(), &mut jobs, &mut |d| bar.set_position(d))?;
            stats = jobs
                .iter()
                .map(|j| (j.stats(), j.header().lanes))
                .collect::<Vec<_>>();
        }
        let enc_secs = t0.elapsed().as_secs_f64();
        bar.finish_and_clear();
        // Decode.
        let bar = size::bar(total, "decode");
        let t0 = Instant::now();
        let mut restored: Vec<Vec<u8>> = vec![Vec::new(); group.len()];
        {
            let mut jobs = Vec::new();
            for (n, (p, out)) in packed.iter().zip(restored.iter_mut()).enumerate() {
                let mut src: &[u8] = p;
                let header = read_header(&mut src)?;
                jobs.push(UnpackJob::new(
                    n as u64,
                    header,
                    spec,
                    Box::new(src),
                    Box::new(out),
                )?);
            }
            run_unpack(handle.as_mut(), &mut jobs, &mut |d| bar.set_position(d))?;
        }
        let dec_secs = t0.elapsed().as_secs_f64();
        bar.finish_and_clear();
        for (n, &i) in group.iter().enumerate() {
            let (name, data) = &inputs[i];
            let ok = Sha256::digest(data) == Sha256::digest(&restored[n]);
            let (z, x, b) = baselines(data)?;
            let (s, lanes) = stats[n];
            let (enc, dec) = if args.together {
                (total as f64 / enc_secs, total as f64 / dec_secs)
            } else {
                (data.len() as f64 / enc_secs, data.len() as f64 / dec_secs)
            };
            reports.push(FileReport {
                file: name.clone(),
                bytes: data.len() as u64,
                packed_bytes: packed[n].len() as u64,
                lanes,
                frames_lm: s.frames[2],
                frames_zstd: s.frames[1],
                frames_raw: s.frames[0],
                lm_bpb: bpb(packed[n].len(), data.len()),
                zstd19_bpb: z,
                xz9e_bpb: x,
                brotli11_bpb: b,
                encode_bytes_per_s: enc,
                decode_bytes_per_s: dec,
                roundtrip_ok: ok,
            });
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        print_table(&reports, args.together);
    }
    if reports.iter().any(|r| !r.roundtrip_ok) {
        bail!("a round trip was not byte-exact");
    }
    Ok(())
}

fn print_table(reports: &[FileReport], together: bool) {
    println!(
        "{:<28} {:>9} {:>8} {:>8} {:>8} {:>9} {:>7} {:>9} {:>9} {:>6}",
        "file",
        "bytes",
        "lm",
        "zstd-19",
        "xz-9e",
        "brotli-11",
        "xz/lm",
        "enc B/s",
        "dec B/s",
        "exact"
    );
    for r in reports {
        let name = std::path::Path::new(&r.file)
            .file_name()
            .map_or(r.file.clone(), |n| n.to_string_lossy().into_owned());
        println!(
            "{:<28} {:>9} {:>8.3} {:>8.3} {:>8.3} {:>9.3} {:>6.2}x {:>9.0} {:>9.0} {:>6}",
            name,
            r.bytes,
            r.lm_bpb,
            r.zstd19_bpb,
            r.xz9e_bpb,
            r.brotli11_bpb,
            r.xz9e_bpb / r.lm_bpb,
            r.encode_bytes_per_s,
            r.decode_bytes_per_s,
            if r.roundtrip_ok { "yes" } else { "NO" }
        );
    }
    println!(
        "(bits per byte; lm = the whole pack file incl. headers; frames lm/zstd/raw: {})",
        reports
            .iter()
            .map(|r| format!("{}/{}/{}", r.frames_lm, r.frames_zstd, r.frames_raw))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if together {
        println!("(throughput is for all files coded together in one batch)");
    }
}
