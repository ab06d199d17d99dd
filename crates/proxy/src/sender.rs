//! The sender role: accepts local TCP clients on each tunnel's address and
//! carries each over its own stream of the QUIC link, which it keeps dialled
//! (with backoff) to the receiver.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::BytesMut;
use llmpack_frame::Msg;
use llmpack_frame::fec_items::{ItemKind, encode_opening};
use llmpack_frame::opening::Opening;
use llmpack_transport::{Hello, Identity, client_endpoint, client_handshake};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::{Config, LinkConfig, TunnelConfig};
use crate::conn::{Carrier, abort, carry, reset_socket};
use crate::error::ConnError;
use crate::fec_conn::StreamSlot;
use crate::fec_link::{Attached, FecLink, stream_key};
use crate::running::Running;
use crate::shared::{Shared, transport_tuning};

/// How long a new client waits for the link to come up before it is closed.
const LINK_WAIT: Duration = Duration::from_secs(10);
/// How long a client waits for the link to grant its connection a stream.
const STREAM_WAIT: Duration = Duration::from_secs(10);

/// The link as it stands: the QUIC connection and whether the handshake
/// turned model coding on.
#[derive(Debug, Clone)]
struct Link {
    conn: quinn::Connection,
    lm: bool,
    load: Arc<crate::load::LinkLoad>,
    /// The link's FEC side in datagram-fec mode.
    fec: Option<Arc<FecLink>>,
}

pub(crate) async fn start(
    config: Config,
    shared: Arc<Shared>,
    mut tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    metrics: Option<SocketAddr>,
) -> Result<Running> {
    let lc = &config.link;
    let pin_path = lc
        .peer_certificate
        .as_ref()
        .context("link.peer_certificate: a sender must pin the receiver's certificate")?;
    let pin = llmpack_transport::load_certificate(pin_path).context("link.peer_certificate")?;
    let identity = match &lc.identity {
        Some(i) => {
            Some(Identity::load(&i.certificate, &i.key).context("link.certificate / link.key")?)
        }
        None => None,
    };
    let endpoint = client_endpoint(
        lc.bind,
        pin,
        identity,
        &transport_tuning(lc, config.limits.max_connections),
    )
    .with_context(|| format!("link.bind {}", lc.bind))?;
    let token = match &lc.token {
        Some(t) => Some(
            llmpack_transport::Secret::new(t.expose().to_vec())
                .map_err(|e| anyhow::anyhow!("link.token: {e}"))?,
        ),
        None => None,
    };
    let hello = Hello::new(token, shared.model.as_ref().map(|m| m.info.clone()));
    let (link_tx, link_rx) = watch::channel::<Option<Link>>(None);
    let (up_tx, up_rx) = watch::channel(false);
    tasks.spawn(link_loop(
        endpoint.clone(),
        lc.clone(),
        hello,
        shared.clone(),
        link_tx,
        up_tx,
        stop_rx,
    ));
    let mut addrs = HashMap::new();
    for t in &config.tunnels {
        let want = t.listen.context("tunnel listen address")?;
        let l = TcpListener::bind(want)
            .await
            .with_context(|| format!("tunnel {}: listen {want}", t.name))?;
        let at = l.local_addr()?;
        info!(tunnel = %t.name, listen = %at, policy = ?t.policy, "tunnel listening");
        addrs.insert(t.name.clone(), at);
        tasks.spawn(accept_loop(l, t.clone(), shared.clone(), link_rx.clone()));
    }
    Ok(Running::new(
        addrs, None, metrics, up_rx, tasks, stop, endpoint,
    ))
}

async fn link_loop(
    endpoint: quinn::Endpoint,
    lc: LinkConfig,
    hello: Hello,
    shared: Arc<Shared>,
    link_tx: watch::Sender<Option<Link>>,
    up_tx: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let connect = lc.connect.clone().unwrap_or_default();
    let mut backoff = lc.reconnect_min;
    loop {
        if *stop.borrow() {
            return;
        }
        match connect_once(&endpoint, &connect, &lc.server_name, &hello, &shared).await {
            Ok(link) => {
                backoff = lc.reconnect_min;
                info!(receiver = %link.conn.remote_address(), model_coding = link.lm, "link up");
                metrics::gauge!("llmpack_link_up").set(1.0);
                metrics::gauge!("llmpack_probe_match").set(if link.lm { 1.0 } else { 0.0 });
                let conn = link.conn.clone();
                let _ = link_tx.send(Some(link));
                let _ = up_tx.send(true);
                tokio::select! {
                    e = conn.closed() => warn!(error = %e, "link lost; reconnecting"),
                    _ = stop.changed() => return,
                }
                let _ = link_tx.send(None);
                let _ = up_tx.send(false);
                metrics::gauge!("llmpack_link_up").set(0.0);
            }
            Err(e) => {
                metrics::counter!("llmpack_handshake_failures_total", "role" => "sender")
                    .increment(1);
                warn!(receiver = %connect, error = format!("{e:#}"), retry_in = ?backoff, "link: cannot connect");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(lc.reconnect_max);
    }
}

async fn connect_once(
    endpoint: &quinn::Endpoint,
    connect: &str,
    server_name: &str,
    hello: &Hello,
    shared: &Shared,
) -> Result<Link> {
    let addr = tokio::net::lookup_host(connect)
        .await
        .with_context(|| format!("resolving {connect}"))?
        .next()
        .with_context(|| format!("{connect} resolves to no address"))?;
    let conn = endpoint
        .connect(addr, server_name)
        .context("starting the QUIC connection")?
        .await
        .context("QUIC/TLS handshake (check certificates and that the receiver runs)")?;
    let agreed = client_handshake(&conn, hello).await?;
    let load = Arc::new(crate::load::LinkLoad::default());
    tokio::spawn(crate::load::track(conn.clone(), load.clone()));
    let fec = shared.fec_link(&conn);
    Ok(Link {
        conn,
        lm: agreed.lm,
        load,
        fec,
    })
}

async fn accept_loop(
    l: TcpListener,
    t: TunnelConfig,
    shared: Arc<Shared>,
    link: watch::Receiver<Option<Link>>,
) {
    let t = Arc::new(t);
    loop {
        let (tcp, peer) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(tunnel = %t.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = shared.slots.clone().try_acquire_owned() else {
            warn!(
                tunnel = %t.name, %peer, max = shared.max_connections,
                "refusing client: limits.max_connections reached"
            );
            metrics::counter!("llmpack_connections_refused_total", "tunnel" => t.name.clone(), "reason" => "max_connections")
                .increment(1);
            drop(tcp);
            continue;
        };
        tokio::spawn(client(
            tcp,
            peer,
            t.clone(),
            shared.clone(),
            link.clone(),
            permit,
        ));
    }
}

async fn client(
    mut tcp: TcpStream,
    peer: SocketAddr,
    t: Arc<TunnelConfig>,
    shared: Arc<Shared>,
    mut link_rx: watch::Receiver<Option<Link>>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = tcp.set_nodelay(true);
    let link = tokio::time::timeout(LINK_WAIT, async {
        loop {
            if let Some(l) = link_rx.borrow_and_update().clone() {
                return Some(l);
            }
            if link_rx.changed().await.is_err() {
                return None;
            }
        }
    })
    .await
    .ok()
    .flatten();
    let Some(link) = link else {
        warn!(tunnel = %t.name, %peer, "no link to the receiver; closing the client");
        return;
    };
    // The receiver grants streams as earlier ones end; a client waits for
    // one a bounded time, then is refused, never silently held.
    let (mut send, mut recv) = match tokio::time::timeout(STREAM_WAIT, link.conn.open_bi()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(tunnel = %t.name, %peer, error = %e, "cannot open a stream on the link");
            return;
        }
        Err(_) => {
            warn!(
                tunnel = %t.name, %peer, wait = ?STREAM_WAIT,
                "refusing client: the link granted no stream in time (the receiver's limits.max_connections?)"
            );
            metrics::counter!("llmpack_connections_refused_total", "tunnel" => t.name.clone(), "reason" => "no_stream")
                .increment(1);
            return;
        }
    };
    let fec = match link.fec.as_ref().map(|f| f.attach(stream_key(send.id()))) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            warn!(tunnel = %t.name, %peer, error = %e, "cannot carry the connection");
            return;
        }
    };
    let coding = shared.coding(&t, link.lm, link.load.clone());
    let open = Msg::Open {
        name: t.name.clone(),
        primer_check: llmpack_codec::checksum(&t.primer),
        window: coding.lm.map_or(0, |r| r.window),
        keep: coding.lm.map_or(0, |r| r.keep),
        lanes: coding.lanes,
    };
    let gauge = metrics::gauge!("llmpack_active_connections", "tunnel" => t.name.clone(), "role" => "sender");
    gauge.increment(1.0);
    let result = match fec {
        None => carry_stream(&mut tcp, &mut send, &mut recv, &coding, open).await,
        Some(mut fec) => {
            // The Open goes as the first item too: a lost stream packet
            // then delays nothing.
            let mut slot = StreamSlot::now((send, recv));
            let r = match open_item(&mut fec, &open).await {
                Ok(()) => {
                    slot.set_ours(open);
                    let carrier = Carrier::Fec {
                        fec,
                        stream: &mut slot,
                        opening: Opening::sender(),
                    };
                    carry(&mut tcp, &coding, carrier).await
                }
                Err(e) => Err(e),
            };
            if r.is_err() {
                reset_socket(&tcp);
            }
            let ok = r.is_ok();
            drop(tcp);
            report(&t, peer, r);
            slot.close(ok).await;
            gauge.decrement(1.0);
            return;
        }
    };
    gauge.decrement(1.0);
    if result.is_err() {
        abort(&tcp, &mut send, &mut recv);
    }
    report(&t, peer, result);
}

/// Sends `open` as the connection's first FEC item.
async fn open_item(fec: &mut Attached, open: &Msg) -> Result<(), ConnError> {
    let mut b = Vec::new();
    encode_opening(open, &mut b).map_err(|e| ConnError::Protocol(e.to_string()))?;
    fec.tx.send(ItemKind::Open, &b).await
}

/// Stream mode: `open` on the stream, then the connection.
async fn carry_stream(
    tcp: &mut TcpStream,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    coding: &crate::coding::Coding,
    open: Msg,
) -> Result<(), ConnError> {
    let mut buf = Vec::new();
    open.encode(&mut buf);
    send.write_all(&buf)
        .await
        .map_err(|e| ConnError::Stream(e.to_string()))?;
    let carrier = Carrier::Stream {
        send,
        recv,
        expect_opened: true,
        initial: BytesMut::new(),
    };
    carry(tcp, coding, carrier).await
}

/// Logs how a connection ended.
fn report(t: &TunnelConfig, peer: SocketAddr, result: Result<(), ConnError>) {
    match result {
        Ok(()) => tracing::debug!(tunnel = %t.name, %peer, "connection done"),
        Err(ConnError::Refused(reason)) => {
            warn!(tunnel = %t.name, %peer, %reason, "receiver refused the connection; closing the client");
        }
        Err(e) => {
            warn!(tunnel = %t.name, %peer, error = %e, "connection failed; resetting it");
        }
    }
}
