//! The receiver role: accepts the QUIC link from authenticated senders and,
//! for each stream, dials the one target its own config names for that
//! tunnel: never an open proxy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{Buf, BytesMut};
use llmpack_frame::Msg;
use llmpack_transport::{Identity, ServerAuth, ServerPolicy, server_endpoint, server_handshake};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::{Config, TunnelConfig};
use crate::conn::{abort, carry};
use crate::fec_link::{FecLink, stream_key};
use crate::running::Running;
use crate::shared::{Shared, transport_tuning};

/// How long a new stream may take to name its tunnel.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dialling a target may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `Open` message (tag, name length, name, check, window, keep, lanes).
const MAX_OPEN_LEN: usize = 2 + llmpack_frame::MAX_TUNNEL_NAME + 17;

type Tunnels = Arc<HashMap<String, TunnelConfig>>;

pub(crate) async fn start(
    config: Config,
    shared: Arc<Shared>,
    mut tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
    _stop_rx: watch::Receiver<bool>,
    metrics: Option<SocketAddr>,
) -> Result<Running> {
    let lc = &config.link;
    let listen = lc
        .listen
        .context("link.listen: a receiver needs an address")?;
    let id = lc
        .identity
        .as_ref()
        .context("link.certificate: a receiver needs a certificate and key")?;
    let identity =
        Identity::load(&id.certificate, &id.key).context("link.certificate / link.key")?;
    let client_pin = match &lc.peer_certificate {
        Some(p) => Some(llmpack_transport::load_certificate(p).context("link.peer_certificate")?),
        None => None,
    };
    let endpoint = server_endpoint(
        listen,
        &ServerAuth {
            identity,
            client_pin,
        },
        &transport_tuning(lc, config.limits.max_connections),
    )
    .with_context(|| format!("link.listen {listen}"))?;
    let at = endpoint.local_addr()?;
    info!(listen = %at, "receiver listening");
    let token = match &lc.token {
        Some(t) => Some(
            llmpack_transport::Secret::new(t.expose().to_vec())
                .map_err(|e| anyhow::anyhow!("link.token: {e}"))?,
        ),
        None => None,
    };
    let policy = Arc::new(ServerPolicy {
        token,
        model: shared.model.as_ref().map(|m| m.info.clone()),
    });
    let tunnels: Tunnels = Arc::new(
        config
            .tunnels
            .iter()
            .map(|t| (t.name.clone(), t.clone()))
            .collect(),
    );
    let ep = endpoint.clone();
    tasks.spawn(async move {
        while let Some(incoming) = ep.accept().await {
            tokio::spawn(link(
                incoming,
                policy.clone(),
                shared.clone(),
                tunnels.clone(),
            ));
        }
    });
    let (_up_tx, up_rx) = watch::channel(true);
    std::mem::forget(_up_tx);
    Ok(Running::new(
        HashMap::new(),
        Some(at),
        metrics,
        up_rx,
        tasks,
        stop,
        endpoint,
    ))
}

/// Failed link attempts, logged at a bounded rate.
static FAILED_ATTEMPTS: Throttle = Throttle::new(Duration::from_secs(10));

/// Lets an event through at most once per `every`; counts the others.
#[derive(Debug)]
struct Throttle {
    every: Duration,
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl Throttle {
    const fn new(every: Duration) -> Self {
        Throttle {
            every,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    /// `Some(n)`: log now, for `n` events (this one and those held back
    /// since the last line); `None`: hold this one back.
    fn allow(&self, now: std::time::Instant) -> Option<u64> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.1 += 1;
        match s.0 {
            Some(last) if now.duration_since(last) < self.every => None,
            _ => {
                s.0 = Some(now);
                Some(std::mem::take(&mut s.1))
            }
        }
    }
}

async fn link(
    incoming: quinn::Incoming,
    policy: Arc<ServerPolicy>,
    shared: Arc<Shared>,
    tunnels: Tunnels,
) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            metrics::counter!("llmpack_handshake_failures_total", "role" => "receiver")
                .increment(1);
            // Anyone can send UDP here: one line per 10 s at most, with the
            // count of the attempts it stands for.
            if let Some(attempts) = FAILED_ATTEMPTS.allow(std::time::Instant::now()) {
                warn!(%remote, error = %e, attempts, "link attempt failed (TLS: wrong or unpinned certificate?); at most one such line per 10 s");
            }
            return;
        }
    };
    let agreed = match server_handshake(&conn, &policy).await {
        Ok(a) => a,
        Err(e) => {
            metrics::counter!("llmpack_handshake_failures_total", "role" => "receiver")
                .increment(1);
            warn!(%remote, error = %e, "link handshake failed");
            return;
        }
    };
    info!(%remote, model_coding = agreed.lm, "link up");
    let load = Arc::new(crate::load::LinkLoad::default());
    tokio::spawn(crate::load::track(conn.clone(), load.clone()));
    metrics::gauge!("llmpack_probe_match").set(if agreed.lm { 1.0 } else { 0.0 });
    let fec = shared.fec_link(&conn);
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(stream(
                    send,
                    recv,
                    agreed.lm,
                    load.clone(),
                    shared.clone(),
                    tunnels.clone(),
                    fec.clone(),
                ));
            }
            Err(e) => {
                info!(%remote, reason = %e, "link closed");
                return;
            }
        }
    }
}

async fn refuse(send: &mut quinn::SendStream, reason: String) {
    let mut buf = Vec::new();
    Msg::Refused { reason }.encode(&mut buf);
    let _ = send.write_all(&buf).await;
    let _ = send.finish();
    // Let the refusal reach the sender before the stream is dropped.
    let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
}

async fn read_open(recv: &mut quinn::RecvStream, buf: &mut BytesMut) -> Result<Msg, String> {
    loop {
        let mut cur = &buf[..];
        match Msg::decode(&mut cur) {
            Ok(m @ Msg::Open { .. }) => {
                let used = buf.len() - cur.len();
                buf.advance(used);
                return Ok(m);
            }
            Ok(m) => return Err(format!("expected Open, got {m:?}")),
            Err(llmpack_frame::Error::Incomplete { .. }) if buf.len() <= MAX_OPEN_LEN => {}
            Err(e) => return Err(format!("bad Open: {e}")),
        }
        match recv.read_chunk(MAX_OPEN_LEN, true).await {
            Ok(Some(c)) => buf.extend_from_slice(&c.bytes),
            Ok(None) => return Err("stream ended before Open".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    lm: bool,
    load: Arc<crate::load::LinkLoad>,
    shared: Arc<Shared>,
    tunnels: Tunnels,
    fec: Option<Arc<FecLink>>,
) {
    // Claim the connection's FEC items at once (they may overtake `Open`);
    // every return before `carry` drops the claim, and with it those items.
    let attached = match fec.as_ref().map(|f| f.attach(stream_key(recv.id()))) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            warn!(error = %e, "cannot carry the stream; resetting it");
            let _ = send.reset(quinn::VarInt::from_u32(crate::conn::RESET_CODE));
            return;
        }
    };
    let mut buf = BytesMut::new();
    let open = match tokio::time::timeout(OPEN_TIMEOUT, read_open(&mut recv, &mut buf)).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            warn!(error = %e, "stream did not open a tunnel");
            let _ = send.reset(quinn::VarInt::from_u32(crate::conn::RESET_CODE));
            return;
        }
        Err(_) => {
            warn!("stream did not name a tunnel in time");
            let _ = send.reset(quinn::VarInt::from_u32(crate::conn::RESET_CODE));
            return;
        }
    };
    let Msg::Open {
        name,
        primer_check,
        window,
        keep,
        lanes,
    } = open
    else {
        unreachable!("read_open returns Open")
    };
    let Some(t) = tunnels.get(&name) else {
        warn!(tunnel = %name, "sender asked for a tunnel this receiver does not have");
        refuse(
            &mut send,
            format!("the receiver has no tunnel named {name:?}"),
        )
        .await;
        return;
    };
    let coding = shared.coding(t, lm, load);
    let (w, k) = coding.lm.map_or((0, 0), |r| (r.window, r.keep));
    if primer_check != llmpack_codec::checksum(&t.primer)
        || (w, k, coding.lanes) != (window, keep, lanes)
    {
        warn!(tunnel = %name, "primer, context window or lanes differ between the two configs");
        refuse(
            &mut send,
            format!(
                "tunnel {name}: primer, window/keep or lanes differ between sender and receiver configs"
            ),
        )
        .await;
        return;
    }
    let Ok(_permit) = shared.slots.clone().try_acquire_owned() else {
        warn!(tunnel = %name, max = shared.max_connections, "refusing stream: limits.max_connections reached");
        metrics::counter!("llmpack_connections_refused_total", "tunnel" => name.clone(), "reason" => "max_connections")
            .increment(1);
        refuse(
            &mut send,
            "the receiver is at limits.max_connections".into(),
        )
        .await;
        return;
    };
    let target = t.target.clone().unwrap_or_default();
    let mut tcp = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(tunnel = %name, %target, error = %e, "target unreachable; refusing the connection");
            metrics::counter!("llmpack_connections_refused_total", "tunnel" => name.clone(), "reason" => "target")
                .increment(1);
            refuse(&mut send, format!("target {target}: {e}")).await;
            return;
        }
        Err(_) => {
            warn!(tunnel = %name, %target, "target did not answer in time; refusing the connection");
            refuse(&mut send, format!("target {target}: timed out")).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let mut opened = Vec::new();
    Msg::Opened.encode(&mut opened);
    if send.write_all(&opened).await.is_err() {
        return;
    }
    let gauge = metrics::gauge!("llmpack_active_connections", "tunnel" => name.clone(), "role" => "receiver");
    gauge.increment(1.0);
    let result = carry(
        &mut tcp, &mut send, &mut recv, &coding, false, buf, attached,
    )
    .await;
    gauge.decrement(1.0);
    if let Err(e) = result {
        warn!(tunnel = %name, %target, error = %e, "connection failed; resetting it");
        abort(&tcp, &mut send, &mut recv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_event_through_per_period_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_secs(10));
        let t0 = std::time::Instant::now();
        assert_eq!(t.allow(t0), Some(1));
        for i in 1..1000 {
            assert_eq!(t.allow(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(t.allow(t0 + Duration::from_secs(11)), Some(1000));
        assert_eq!(t.allow(t0 + Duration::from_secs(12)), None);
    }
}
