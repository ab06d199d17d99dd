//! [`UdpRelay`]: the emulated link as a UDP middlebox, for the QUIC tunnel.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use tokio::{
    net::UdpSocket,
    sync::mpsc,
    task::JoinHandle,
    time::{Instant, sleep_until},
};
use tracing::debug;

use super::{Bottleneck, Counters, LinkSpec, LinkStats, UDP_OVERHEAD, Verdict};

/// Largest datagram the relay receives.
const MAX_DATAGRAM: usize = 65_535;

/// A UDP middlebox on loopback: datagrams from the client go to the server
/// through the up [`Direction`](super::Direction), replies go back through
/// the down one to the client address that last sent. One client at a time
/// (QUIC uses one 4-tuple).
///
/// Dropping the relay (or [`UdpRelay::shutdown`]) stops its tasks and closes
/// its sockets.
#[derive(Debug)]
pub struct UdpRelay {
    local: SocketAddr,
    up: Arc<Counters>,
    down: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
}

impl UdpRelay {
    /// Listens on `listen` (use `127.0.0.1:0`) and forwards datagrams to
    /// `server` through a socket of its own.
    ///
    /// Fails if a socket cannot be bound or connected, or if `spec` has a
    /// rate of zero or a loss outside `0..=1`.
    pub async fn start(listen: SocketAddr, server: SocketAddr, spec: LinkSpec) -> io::Result<Self> {
        spec.validate()?;
        let client_side = Arc::new(UdpSocket::bind(listen).await?);
        let server_side = Arc::new(UdpSocket::bind(unspecified_like(server)).await?);
        server_side.connect(server).await?;
        let local = client_side.local_addr()?;
        let client = Arc::new(Mutex::new(None::<SocketAddr>));
        let up = Arc::new(Counters::default());
        let down = Arc::new(Counters::default());

        let (up_tx, up_rx) = mpsc::unbounded_channel();
        let (down_tx, down_rx) = mpsc::unbounded_channel();
        let up_core = Bottleneck::new(spec.up, UDP_OVERHEAD, spec.seed);
        let down_core = Bottleneck::new(spec.down, UDP_OVERHEAD, spec.seed.wrapping_add(1));
        let tasks = vec![
            tokio::spawn(ingress(
                Side::Client(client.clone()),
                client_side.clone(),
                up_core,
                up.clone(),
                up_tx,
            )),
            tokio::spawn(egress(Side::Server, server_side.clone(), up.clone(), up_rx)),
            tokio::spawn(ingress(
                Side::Server,
                server_side,
                down_core,
                down.clone(),
                down_tx,
            )),
            tokio::spawn(egress(
                Side::Client(client),
                client_side,
                down.clone(),
                down_rx,
            )),
        ];
        debug!(%local, %server, "udp relay started");
        Ok(UdpRelay {
            local,
            up,
            down,
            tasks,
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            up: self.up.snapshot(),
            down: self.down.snapshot(),
        }
    }

    /// Stops the relay; datagrams still in flight are lost.
    pub fn shutdown(self) {}
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A wildcard address of the same family as `peer`, loopback when `peer` is.
fn unspecified_like(peer: SocketAddr) -> SocketAddr {
    match (peer, peer.ip().is_loopback()) {
        (SocketAddr::V4(_), true) => (Ipv4Addr::LOCALHOST, 0).into(),
        (SocketAddr::V4(_), false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        (SocketAddr::V6(_), true) => (Ipv6Addr::LOCALHOST, 0).into(),
        (SocketAddr::V6(_), false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// Which end of the relay a socket faces.
#[derive(Debug, Clone)]
enum Side {
    /// The listening socket; holds the client that last sent.
    Client(Arc<Mutex<Option<SocketAddr>>>),
    /// The socket connected to the server.
    Server,
}

/// Errors a UDP socket reports for an earlier datagram (ICMP unreachable);
/// the socket stays usable.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

/// Receives datagrams, passes them through the bottleneck and hands the
/// survivors with their delivery time to [`egress`].
async fn ingress(
    side: Side,
    socket: Arc<UdpSocket>,
    mut core: Bottleneck,
    counters: Arc<Counters>,
    tx: mpsc::UnboundedSender<(Instant, Bytes)>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let received = match &side {
            Side::Client(client) => socket.recv_from(&mut buf).await.map(|(n, from)| {
                *client.lock().unwrap_or_else(|e| e.into_inner()) = Some(from);
                n
            }),
            Side::Server => socket.recv(&mut buf).await,
        };
        let n = match received {
            Ok(n) => n,
            Err(e) if transient(&e) => continue,
            Err(e) => {
                debug!(error = %e, "udp relay receive failed");
                return;
            }
        };
        counters.arrived(n);
        match core.offer(Instant::now(), n) {
            Verdict::Deliver(at) => {
                if tx.send((at, Bytes::copy_from_slice(&buf[..n]))).is_err() {
                    return;
                }
            }
            dropped => counters.dropped(dropped),
        }
    }
}

/// Sends each datagram at its delivery time, earliest first (jitter may
/// reorder them).
async fn egress(
    side: Side,
    socket: Arc<UdpSocket>,
    counters: Arc<Counters>,
    mut rx: mpsc::UnboundedReceiver<(Instant, Bytes)>,
) {
    let mut pending = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let next = pending
            .peek()
            .map(|Reverse((at, _, _)): &Reverse<(Instant, u64, Bytes)>| *at);
        tokio::select! {
            item = rx.recv() => match item {
                Some((at, bytes)) => {
                    // `seq` keeps equal times in arrival order.
                    pending.push(Reverse((at, seq, bytes)));
                    seq += 1;
                }
                None => return,
            },
            () = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                while pending.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
                    let Some(Reverse((_, _, bytes))) = pending.pop() else { break };
                    send(&side, &socket, &counters, &bytes).await;
                }
            }
        }
    }
}

async fn send(side: &Side, socket: &UdpSocket, counters: &Counters, bytes: &[u8]) {
    let sent = match side {
        Side::Server => socket.send(bytes).await,
        Side::Client(client) => {
            let to = *client.lock().unwrap_or_else(|e| e.into_inner());
            match to {
                Some(to) => socket.send_to(bytes, to).await,
                None => return,
            }
        }
    };
    match sent {
        Ok(_) => counters.delivered(bytes.len()),
        Err(e) => debug!(error = %e, len = bytes.len(), "udp relay send failed"),
    }
}
