//! One tiny benchmark over a real emulated link: every response arrives
//! complete and byte-exact, and plain TCP's goodput stays under the link rate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use llmpack_bench::{LinkChoice, Mode, ModelOpts, RunSpec, Scenario, Workload, run_one};
use sha2::{Digest, Sha256};

/// Text that is always there: this crate's own sources.
fn text() -> Result<Workload> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    Workload::from_paths("text", &[src])
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
        let spec = RunSpec {
            scenario: scenario.clone(),
            mode,
            workload: workload.clone(),
            duration: Duration::from_secs(1),
            grace: Duration::from_secs(30),
            clients: 2,
            response_size: 16 * 1024,
            seed: 1,
            model: ModelOpts::default(),
            link,
        };
        let r = run_one(&spec).await?;
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
