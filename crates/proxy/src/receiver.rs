//! The receiver role: accepts the QUIC link from authenticated senders and,
//! for each stream, dials the one target its own config names for that
//! tunnel: never an open proxy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use llmpack_frame::Msg;
use llmpack_frame::fec_items::{ItemKind, decode_opening, encode_opening};
use llmpack_frame::opening::{Opening, OpeningStep, Path};
use llmpack_transport::{Identity, ServerAuth, ServerPolicy, server_endpoint, server_handshake};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::{Config, TunnelConfig};
use crate::conn::{Carrier, carry, reset_socket, reset_stream};
use crate::error::ConnError;
use crate::fec_conn::{Pair, StreamSlot};
use crate::fec_link::{Attached, FecLink, stream_key};
use crate::running::Running;
use crate::shared::{Shared, stream_limit, transport_tuning};

/// How long a new stream may take to name its tunnel.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dialling a target may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

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
    let ctx = Arc::new(Ctx {
        lm: agreed.lm,
        load,
        shared,
        tunnels,
        fec,
    });
    let mut opens = ctx.fec.as_ref().and_then(|f| f.take_opens());
    // Stream ids the sender may have opened beyond those QUIC handed over.
    let window = 4 * u64::from(stream_limit(ctx.shared.max_connections));
    // Connections opened from their first item, waiting for their stream.
    let mut joins: HashMap<u64, oneshot::Sender<Pair>> = HashMap::new();
    // The lowest stream id QUIC has not handed over yet (it hands them over
    // in order).
    let mut next_stream = 0u64;
    loop {
        tokio::select! {
            r = conn.accept_bi() => match r {
                Ok(pair) => {
                    let id = stream_key(pair.1.id());
                    next_stream = next_stream.max(id.saturating_add(4));
                    match joins.remove(&id) {
                        Some(join) => {
                            if let Err((mut send, mut recv)) = join.send(pair) {
                                // The connection gave up waiting for it.
                                reset_stream(&mut send, &mut recv);
                            }
                        }
                        None => {
                            tokio::spawn(connection(id, StreamSlot::now(pair), ctx.clone()));
                        }
                    }
                }
                Err(e) => {
                    info!(%remote, reason = %e, "link closed");
                    return;
                }
            },
            Some(id) = async {
                match opens.as_mut() {
                    Some(o) => o.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                // Only a sender's stream QUIC would still hand over, once:
                // the table stays within the link's stream limit.
                if id % 4 != 0 || id < next_stream || id - next_stream >= window || joins.contains_key(&id) {
                    debug!(stream = id, "FEC Open for no stream to come; ignored");
                    continue;
                }
                let (join, late) = oneshot::channel();
                joins.insert(id, join);
                tokio::spawn(connection(id, StreamSlot::later(late), ctx.clone()));
            }
        }
    }
}

/// What every connection of one link needs.
struct Ctx {
    lm: bool,
    load: Arc<crate::load::LinkLoad>,
    shared: Arc<Shared>,
    tunnels: Tunnels,
    fec: Option<Arc<FecLink>>,
}

/// The sender's `Open`, from whichever path brought it first: the stream,
/// or (datagram-fec) the connection's first item.
async fn first_open(
    slot: &mut StreamSlot,
    fec: Option<&mut Attached>,
    opening: &mut Opening,
) -> Result<Msg, ConnError> {
    let (path, m) = match fec {
        None => (Path::Stream, slot.read_opening().await?),
        Some(a) => tokio::select! {
            m = slot.arrive_and_read_opening() => (Path::Stream, m?),
            it = a.rx.recv() => {
                let it = it.ok_or_else(|| ConnError::Stream("the FEC link dropped the connection".into()))?;
                if it.kind() != ItemKind::Open {
                    return Err(ConnError::Protocol("the first FEC item is not an Open".into()));
                }
                let m = decode_opening(&mut it.payload())
                    .map_err(|e| ConnError::Protocol(e.to_string()))?;
                (Path::Item, m)
            }
        },
    };
    match opening.handle(path, m)? {
        OpeningStep::First(m) => Ok(m),
        OpeningStep::Agreed => Err(ConnError::Protocol("no first opening".into())),
    }
}

/// Sends this end's opening (`Opened` or `Refused`) as the connection's
/// first item, and sets it to go on the stream.
async fn answer(
    slot: &mut StreamSlot,
    fec: Option<&mut Attached>,
    m: Msg,
) -> Result<(), ConnError> {
    if let Some(a) = fec {
        let mut b = Vec::new();
        encode_opening(&m, &mut b).map_err(|e| ConnError::Protocol(e.to_string()))?;
        a.tx.send(ItemKind::Open, &b).await?;
    }
    slot.set_ours(m);
    slot.write_ours().await
}

/// Refuses the connection with `reason`, on both paths. Its items are
/// dropped from here on, while its stream may still be to come.
async fn refuse(mut slot: StreamSlot, mut fec: Option<Attached>, reason: String) {
    let ok = answer(&mut slot, fec.as_mut(), Msg::Refused { reason })
        .await
        .is_ok();
    drop(fec);
    slot.close(ok).await;
}

/// Ends a connection that never opened: its items are dropped at once, its
/// stream (here or to come) is reset.
async fn give_up(slot: StreamSlot, fec: Option<Attached>) {
    drop(fec);
    slot.close(false).await;
}

/// One connection: its `Open` checked, its target dialled, its data carried.
async fn connection(id: u64, mut slot: StreamSlot, ctx: Arc<Ctx>) {
    // Claim the connection's FEC items at once (they may overtake `Open`);
    // every return drops the claim, and with it those items.
    let mut attached = match ctx.fec.as_ref().map(|f| f.attach(id)) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            warn!(stream = id, error = %e, "cannot carry the stream; resetting it");
            slot.close(false).await;
            return;
        }
    };
    let mut opening = Opening::receiver();
    let open = match tokio::time::timeout(
        OPEN_TIMEOUT,
        first_open(&mut slot, attached.as_mut(), &mut opening),
    )
    .await
    {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => {
            warn!(stream = id, error = %e, "stream did not open a tunnel");
            give_up(slot, attached).await;
            return;
        }
        Err(_) => {
            warn!(stream = id, "stream did not name a tunnel in time");
            give_up(slot, attached).await;
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
        // `Opening::receiver` lets only `Open` through.
        give_up(slot, attached).await;
        return;
    };
    let Some(t) = ctx.tunnels.get(&name) else {
        warn!(tunnel = %name, "sender asked for a tunnel this receiver does not have");
        let reason = format!("the receiver has no tunnel named {name:?}");
        refuse(slot, attached, reason).await;
        return;
    };
    let shared = &ctx.shared;
    let coding = shared.coding(t, ctx.lm, ctx.load.clone());
    let (w, k) = coding.lm.map_or((0, 0), |r| (r.window, r.keep));
    if primer_check != llmpack_codec::checksum(&t.primer)
        || (w, k, coding.lanes) != (window, keep, lanes)
    {
        warn!(tunnel = %name, "primer, context window or lanes differ between the two configs");
        let reason = format!(
            "tunnel {name}: primer, window/keep or lanes differ between sender and receiver configs"
        );
        refuse(slot, attached, reason).await;
        return;
    }
    let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
        warn!(tunnel = %name, max = shared.max_connections, "refusing stream: limits.max_connections reached");
        metrics::counter!("llmpack_connections_refused_total", "tunnel" => name.clone(), "reason" => "max_connections")
            .increment(1);
        let reason = "the receiver is at limits.max_connections".into();
        refuse(slot, attached, reason).await;
        return;
    };
    let target = t.target.clone().unwrap_or_default();
    let mut tcp = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&target)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(tunnel = %name, %target, error = %e, "target unreachable; refusing the connection");
            metrics::counter!("llmpack_connections_refused_total", "tunnel" => name.clone(), "reason" => "target")
                .increment(1);
            refuse(slot, attached, format!("target {target}: {e}")).await;
            return;
        }
        Err(_) => {
            warn!(tunnel = %name, %target, "target did not answer in time; refusing the connection");
            refuse(slot, attached, format!("target {target}: timed out")).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    if answer(&mut slot, attached.as_mut(), Msg::Opened)
        .await
        .is_err()
    {
        give_up(slot, attached).await;
        return;
    }
    let gauge = metrics::gauge!("llmpack_active_connections", "tunnel" => name.clone(), "role" => "receiver");
    gauge.increment(1.0);
    let initial = slot.take_rest();
    let result = match (attached, slot.pair()) {
        (Some(fec), _) => {
            let carrier = Carrier::Fec {
                fec,
                stream: &mut slot,
                opening,
            };
            carry(&mut tcp, &coding, carrier).await
        }
        (None, Some((send, recv))) => {
            let carrier = Carrier::Stream {
                send,
                recv,
                expect_opened: false,
                initial,
            };
            carry(&mut tcp, &coding, carrier).await
        }
        (None, None) => Err(ConnError::Stream("no stream".into())),
    };
    gauge.decrement(1.0);
    drop(permit);
    if let Err(e) = &result {
        warn!(tunnel = %name, %target, error = %e, "connection failed; resetting it");
        reset_socket(&tcp);
    }
    drop(tcp);
    slot.close(result.is_ok()).await;
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
