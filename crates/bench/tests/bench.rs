//! Tiny benchmarks over a real emulated link: every response arrives
//! complete and byte-exact, and plain TCP's goodput stays under the link rate;
//! with this process's own clients and with real nginx and curl.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use llmpack_bench::{
    App, LinkChoice, Mode, ModelOpts, RunSpec, Scenario, Traffic, Workload, run_one,
};
use sha2::{Digest, Sha256};

/// Text that is always there: this crate's own sources.
fn text() -> Result<Workload> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    Workload::from_paths("text", &[src])
}

/// A one-second run of 2 clients in stream link mode.
fn one_second(
    scenario: &Scenario,
    workload: &Arc<Workload>,
    mode: Mode,
    response_size: usize,
    app: App,
) -> RunSpec {
    RunSpec {
        scenario: scenario.clone(),
        mode,
        workload: workload.clone(),
        traffic: Traffic::Exchange,
        duration: Duration::from_secs(1),
        grace: Duration::from_secs(30),
        clients: 2,
        response_size,
        seed: 1,
        model: ModelOpts::default(),
        link: LinkChoice::Stream,
        app,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_scenario_is_byte_exact() -> Result<()> {
    let rate = 2_000_000;
    let scenario = Scenario::new("tiny", Some(rate), Duration::from_millis(20), 0.0);
    let workload = Arc::new(text()?);
    // Responses of one index are the same bytes however often they are cut.
    let a = Sha256::digest(workload.response(3, 16 * 1024));
    let b = Sha256::digest(workload.response(3, 16 * 1024));
    ensure!(a == b);
    for (mode, link) in [
        (Mode::Direct, LinkChoice::Stream),
        (Mode::Raw, LinkChoice::Stream),
        (Mode::Zstd, LinkChoice::Stream),
        (Mode::Zstd, LinkChoice::DatagramFec),
    ] {
        let spec = one_second(&scenario, &workload, mode, 16 * 1024, App::Builtin);
        let r = run_one(&RunSpec { link, ..spec }).await?;
        let name = &r.path;
        ensure!(r.requests > 0, "{name}: no requests");
        ensure!(
            r.complete == r.requests && r.corrupt == 0 && r.errors == 0 && r.unfinished == 0,
            "{name}: {} of {} complete, {} corrupt, {} failed, {} unfinished",
            r.complete,
            r.requests,
            r.corrupt,
            r.errors,
            r.unfinished
        );
        ensure!(r.link_bytes_down > 0, "{name}: nothing crossed the link");
        if mode == Mode::Direct {
            ensure!(
                r.goodput_bps > 0.0 && r.goodput_bps < rate as f64,
                "{name}: goodput {} bit/s outside (0, {rate})",
                r.goodput_bps
            );
        } else {
            ensure!(
                r.frames.get(mode.name()).copied().unwrap_or(0) > 0,
                "{name}: no {} frames counted: {:?}",
                mode.name(),
                r.frames
            );
        }
    }
    Ok(())
}

/// Interactive exchanges on loopback, no emulator: every path answers every
/// exchange byte-exact on one connection per client, and the latency fields
/// are filled in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_on_loopback_is_byte_exact() -> Result<()> {
    let workload = Arc::new(text()?);
    let size = 1024;
    for mode in [Mode::Direct, Mode::Relay, Mode::Zstd] {
        let spec = RunSpec {
            traffic: Traffic::Interactive,
            ..one_second(&Scenario::loopback(), &workload, mode, size, App::Builtin)
        };
        let r = run_one(&spec).await?;
        let name = &r.path;
        ensure!(
            r.requests > 0 && r.complete == r.requests && r.corrupt == 0 && r.errors == 0,
            "{name}: {} of {} complete, {} corrupt, {} failed",
            r.complete,
            r.requests,
            r.corrupt,
            r.errors
        );
        ensure!(r.bytes_verified == r.complete * size as u64, "{name}");
        ensure!(
            r.latency_p50_us > 0.0
                && r.latency_p50_us <= r.latency_p99_us
                && r.latency_p99_us <= r.latency_max_us,
            "{name}: p50 {} p99 {} max {}",
            r.latency_p50_us,
            r.latency_p99_us,
            r.latency_max_us
        );
        ensure!(r.exchanges_per_s > 0.0, "{name}");
        ensure!(
            (r.link_bytes_up, r.link_bytes_down) == (0, 0),
            "{name}: link bytes counted without an emulator"
        );
        ensure!(
            r.flush_idle_ms.is_some() == mode.is_tunnel(),
            "{name}: flush settings {:?}",
            r.flush_idle_ms
        );
    }
    Ok(())
}

/// Real nginx and curl at the ends (scripts/test.sh installs them): HTTP/1.1
/// responses byte-exact, direct and through the tunnel, headers counted as
/// application bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_and_curl_are_byte_exact() -> Result<()> {
    if llmpack_bench::http::Tools::find().is_err()
        && std::env::var("LLMPACK_SKIP_NGINX").is_ok_and(|v| v == "1")
    {
        eprintln!("SKIPPED: nginx or curl missing and LLMPACK_SKIP_NGINX=1");
        return Ok(());
    }
    let scenario = Scenario::new("tiny", Some(4_000_000), Duration::from_millis(10), 0.0);
    let workload = Arc::new(text()?);
    let size = 40 * 1024;
    for mode in [Mode::Direct, Mode::Zstd] {
        let r = run_one(&one_second(
            &scenario,
            &workload,
            mode,
            size,
            App::NginxCurl,
        ))
        .await?;
        let name = &r.path;
        ensure!(
            r.requests > 0 && r.complete == r.requests && r.corrupt == 0 && r.errors == 0,
            "{name}: {} of {} complete, {} corrupt, {} failed",
            r.complete,
            r.requests,
            r.corrupt,
            r.errors
        );
        // Each response carries HTTP headers on top of its body.
        let bodies = r.complete * size as u64;
        ensure!(
            r.app_bytes > bodies + r.complete * 100,
            "{name}: {} application bytes for {bodies} body bytes: headers not counted",
            r.app_bytes
        );
        if mode == Mode::Zstd {
            ensure!(
                r.ratio > 1.5,
                "{name}: text not compressed: ratio {}",
                r.ratio
            );
        }
    }
    Ok(())
}
