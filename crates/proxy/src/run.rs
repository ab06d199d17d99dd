//! Starting a proxy from its config: model, scheduler, metrics endpoint,
//! then the sender or receiver role.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use llmpack_codec::{ByteVocab, LmParams, Vocabulary};
use llmpack_transport::{ModelInfo, Tuning};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::{Config, FecSettings, LinkConfig, LinkMode, Role, TunnelConfig};
use crate::conn::{Coding, Limits};
use crate::fec_link::FecLink;
use crate::sched::Scheduler;

/// The model directory used when the config names none.
pub const DEFAULT_MODEL: &str = "models/default";

/// The loaded model of a proxy, shared by all its connections.
#[derive(Debug, Clone)]
pub(crate) struct ModelRt {
    pub vocab: Arc<dyn Vocabulary>,
    pub sched: Scheduler,
    pub info: ModelInfo,
    /// The model's context rule (its manifest's context length).
    pub rule: LmParams,
}

/// What every connection of this proxy needs.
#[derive(Debug)]
pub(crate) struct Shared {
    pub role: Role,
    pub model: Option<ModelRt>,
    pub limits: Limits,
    pub max_delay: Duration,
    pub slots: Arc<Semaphore>,
    pub max_connections: usize,
    pub link_mode: LinkMode,
    pub fec: FecSettings,
}

impl Shared {
    /// Starts the FEC side of a new link if this end is configured for
    /// `datagram-fec` and the peer accepts datagrams (which it does only in
    /// that mode too); `None`: the link runs in stream mode.
    pub fn fec_link(&self, conn: &quinn::Connection) -> Option<Arc<FecLink>> {
        if self.link_mode != LinkMode::DatagramFec {
            return None;
        }
        if conn.max_datagram_size().is_none() {
            tracing::warn!(
                "link.mode is datagram-fec but the peer does not accept datagrams \
                 (set link.mode = \"datagram-fec\" on both ends); using stream mode"
            );
            return None;
        }
        // One connection's unread data: what the peer may send unacknowledged
        // (its limits.buffer, a resend of as much, and acks), or at least
        // what a QUIC stream's window would allow.
        let cap = (2 * self.limits.buffer + (1 << 20)).max(16 << 20);
        match FecLink::start(conn.clone(), &self.fec, cap, self.role_label()) {
            Ok(l) => {
                tracing::info!("link in datagram-fec mode");
                Some(l)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the FEC link; using stream mode");
                None
            }
        }
    }

    fn role_label(&self) -> &'static str {
        match self.role {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }

    /// The context rule a tunnel uses with this model (clamped to the
    /// model's context length), or `None` without a model.
    pub fn rule(&self, t: &TunnelConfig) -> Option<LmParams> {
        let m = self.model.as_ref()?;
        let r = t.context_rule(m.rule);
        let window = r.window.min(m.rule.window);
        let keep = r.keep.min(window / 2);
        Some(LmParams { window, keep })
    }

    /// The coding of one connection of tunnel `t` on a link where model
    /// coding is `lm`.
    pub fn coding(&self, t: &TunnelConfig, lm: bool, link: Arc<crate::load::LinkLoad>) -> Coding {
        let model = self.model.as_ref().filter(|_| lm);
        Coding {
            tunnel: t.name.clone(),
            role: self.role_label(),
            policy: t.policy,
            primer: t.primer.clone(),
            lm: model.and_then(|_| self.rule(t)),
            lanes: t.lanes,
            zstd_level: t.zstd_level,
            vocab: match model {
                Some(m) => m.vocab.clone(),
                None => Arc::new(ByteVocab::default()),
            },
            sched: model.map(|m| m.sched.clone()),
            max_delay: self.max_delay,
            limits: self.limits,
            metrics: crate::conn::ConnMetrics::new(&t.name, self.role_label()),
            link,
        }
    }
}

/// A started proxy.
#[derive(Debug)]
pub struct Running {
    /// Sender: where each tunnel accepts local clients, by tunnel name.
    pub tunnels: HashMap<String, SocketAddr>,
    /// Receiver: the UDP address the link is accepted on.
    pub link: Option<SocketAddr>,
    /// The Prometheus endpoint, if configured.
    pub metrics: Option<SocketAddr>,
    /// Whether the sender's link is up and its handshake done (always
    /// `true` on a receiver).
    pub link_up: watch::Receiver<bool>,
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
    endpoint: quinn::Endpoint,
}

impl Running {
    /// Stops accepting, closes the link and waits briefly for it to close.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.endpoint
            .close(llmpack_transport::CLOSE_SHUTDOWN, b"shutdown");
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}

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

/// The QUIC transport settings of a link end.
/// Streams the link allows beyond `limits.max_connections`: a closed
/// connection's stream lingers until both ends have seen its end.
const STREAM_MARGIN: usize = 64;

/// The link's concurrent-stream limit for `max_connections` connections.
///
/// quinn announces freed stream credit (`MAX_STREAMS`) only once more than
/// an eighth of the limit has been freed since the last announcement, so the
/// sender may see up to `limit / 8` fewer streams than are really free. The
/// limit therefore exceeds `max_connections` by more than that lag: with a
/// margin `m` and `limit = c + m`, `m > limit / 8` needs `m > c / 7`.
/// Without it, rounds of 2,000 connections that open and close together
/// found no stream after 12,000-16,000 connections, whenever the unannounced
/// remainder exceeded the fixed margin.
pub(crate) fn stream_limit(max_connections: usize) -> u32 {
    let margin = max_connections / 7 + STREAM_MARGIN;
    u32::try_from(max_connections.saturating_add(margin))
        .unwrap_or(u32::MAX)
        .max(Tuning::DEFAULT_MAX_STREAMS)
}

pub(crate) fn transport_tuning(link: &LinkConfig, max_connections: usize) -> Tuning {
    let fec = link.mode == LinkMode::DatagramFec;
    Tuning {
        // One stream per tunnelled connection: the link's limit follows
        // limits.max_connections (never below quinn's usual 1024).
        max_streams: stream_limit(max_connections),
        datagrams: fec,
        // A few datagrams: the FEC task keeps quinn fed, and feedback never
        // queues behind seconds of symbols on a slow link.
        datagram_send_buffer: if fec { 3 << 10 } else { 1 << 20 },
        congestion: link.congestion,
        // FEC symbols are sized to the datagram limit when their block is
        // encoded; a limit that later shrinks (MTU discovery backing off
        // after delay or loss) strands them, so FEC mode keeps it fixed.
        mtu_discovery: !fec,
        idle_timeout: link.idle_timeout,
        keep_alive: (link.idle_timeout / 3).min(Tuning::DEFAULT_KEEP_ALIVE),
        ..Tuning::default()
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
    let limits = Limits {
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

pub(crate) fn running(
    tunnels: HashMap<String, SocketAddr>,
    link: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    link_up: watch::Receiver<bool>,
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
    endpoint: quinn::Endpoint,
) -> Running {
    Running {
        tunnels,
        link,
        metrics,
        link_up,
        tasks,
        stop,
        endpoint,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The margin over max_connections always exceeds the credit quinn may
    /// hold back (an eighth of the limit), and the limit never drops below
    /// quinn's default.
    #[test]
    fn stream_limit_covers_quinns_unannounced_credit() {
        for c in [0, 1, 100, 256, 1000, 2000, 2100, 10_000, 100_000, 1 << 24] {
            let limit = usize::try_from(stream_limit(c)).unwrap();
            assert!(limit >= c + STREAM_MARGIN, "{c}");
            assert!(limit - c > limit / 8, "{c}: limit {limit}");
            assert!(limit >= Tuning::DEFAULT_MAX_STREAMS as usize);
        }
    }
}
