//! Starting a proxy from its config: model, scheduler, metrics endpoint,
//! then the sender or receiver role.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use llmpack_codec::{LmParams, Vocabulary};
use llmpack_frame::outgoing::FrameLimits;
use llmpack_transport::ModelInfo;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::{Config, Role};
use crate::running::Running;
use crate::sched::Scheduler;
use crate::shared::{ModelRt, Shared};

/// The model directory used when the config names none.
pub const DEFAULT_MODEL: &str = "models/default";

/// Loads the model named by the config (or the default model when a tunnel
/// needs one), starts the scheduler.
fn load_model(config: &Config) -> Result<Option<ModelRt>> {
    let needed = config.model.dir.is_some() || config.tunnels.iter().any(|t| t.policy.uses_model());
    if !needed {
        return Ok(None);
    }
    let path: PathBuf = match &config.model.dir {
        Some(p) => p.clone(),
        None => llmpack_model::find_in_project(DEFAULT_MODEL).with_context(|| {
            format!("model directory {DEFAULT_MODEL} not found; set model.dir in the config, or use codec = \"zstd\" on every tunnel")
        })?,
    };
    let m = llmpack_model::load_model(
        &path,
        config.model.threads,
        config.model.ort_lib.clone(),
        config.model.device,
    )
    .with_context(|| format!("loading model {} (model.dir, model.device)", path.display()))?;
    let rule = LmParams::within(m.dir.manifest.model.context_length);
    let info = ModelInfo {
        id: m.dir.id,
        // The peer logs this next to a probe mismatch: a CPU end and a GPU
        // end usually compute different probes, and then model coding is off.
        runtime: format!("onnxruntime {} {}", llmpack_model::ORT_VERSION, m.backend),
        probe: m.probe,
    };
    tracing::info!(
        model = %path.display(), id = %m.dir.id, probe = format_args!("{:016x}", m.probe),
        window = rule.window, keep = rule.keep, device = %m.backend,
        max_batch = config.model.max_batch_on(m.backend), "model loaded"
    );
    let sched = Scheduler::start(Box::new(m.predictor), config.model.max_batch_on(m.backend));
    // Serve once the model's first calls are done: clients that arrive
    // meanwhile would share the CPU with them (and `auto` would judge the
    // model by a guess).
    if !sched.wait_warm(Duration::from_secs(30)) {
        tracing::warn!("model warm-up still running after 30 s; serving anyway");
    }
    Ok(Some(ModelRt {
        vocab: m.vocab,
        sched,
        info,
        rule,
    }))
}

/// A model handed to [`start_with`] instead of the one the config names:
/// for embedding the proxy, and for tests with a small deterministic model.
pub struct ModelParts {
    /// Answers the coders' requests.
    pub predictor: Box<dyn llmpack_codec::Predictor + Send>,
    /// Its vocabulary.
    pub vocab: Arc<dyn Vocabulary>,
    /// What the handshake tells the peer (id, runtime, probe).
    pub info: ModelInfo,
    /// The model context rule.
    pub rule: LmParams,
}

impl std::fmt::Debug for ModelParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelParts")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Starts the proxy described by `config`: binds every listener, loads the
/// model and begins serving. Returns once it is listening.
pub async fn start(config: Config) -> Result<Running> {
    start_with(config, None).await
}

/// [`start`], with `model` (if given) used instead of loading the config's.
pub async fn start_with(config: Config, model: Option<ModelParts>) -> Result<Running> {
    let model = if let Some(p) = model {
        Some(ModelRt {
            vocab: p.vocab,
            sched: Scheduler::start(p.predictor, config.model.max_batch),
            info: p.info,
            rule: p.rule,
        })
    } else {
        let c = config.clone();
        tokio::task::spawn_blocking(move || load_model(&c))
            .await
            .context("model loading task")??
    };
    let limits = FrameLimits {
        frame: config.limits.frame as usize,
        buffer: config.limits.buffer,
        flush_idle: config.limits.flush_idle,
        flush_max: config.limits.flush_max,
    };
    let shared = Arc::new(Shared {
        role: config.role,
        model,
        limits,
        max_delay: config.model.max_delay,
        slots: Arc::new(Semaphore::new(config.limits.max_connections)),
        max_connections: config.limits.max_connections,
        link_mode: config.link.mode,
        fec: config.link.fec.clone(),
    });
    let mut tasks = JoinSet::new();
    let metrics = match config.metrics {
        Some(addr) => {
            let (bound, listener) = crate::metrics_http::bind(addr)
                .await
                .with_context(|| format!("metrics.listen {addr}"))?;
            tasks.spawn(crate::metrics_http::serve(listener));
            Some(bound)
        }
        None => {
            crate::metrics_http::recorder();
            None
        }
    };
    let (stop, stop_rx) = watch::channel(false);
    match config.role {
        Role::Sender => crate::sender::start(config, shared, tasks, stop, stop_rx, metrics).await,
        Role::Receiver => {
            crate::receiver::start(config, shared, tasks, stop, stop_rx, metrics).await
        }
    }
}

/// Runs the proxy until `shutdown` completes, then closes it cleanly.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<()> {
    let running = start(config).await?;
    shutdown.await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(())
}
