//! [`TcpRelay`]: the emulated link as a TCP proxy, for plain-TCP baselines.

use std::{
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpListener, TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    task::{JoinHandle, JoinSet},
    time::{Instant, sleep_until},
};
use tracing::debug;

use super::{Bottleneck, Counters, LinkSpec, LinkStats, TCP_CHUNK, TCP_OVERHEAD};

/// Bytes a connection may hold in one direction when the rate is unlimited.
const UNLIMITED_WINDOW: usize = 16 << 20;
/// Bytes a connection may hold in one direction beyond what the link itself
/// holds (queue + bandwidth-delay product): the receiver's socket buffer.
const EXTRA_WINDOW: usize = 64 << 10;
/// Cap of the window, so it fits the semaphore's `u32` permit counts.
const MAX_WINDOW: usize = 1 << 30;

/// One direction of the link, shared by every connection of the relay: all
/// connections compete for the one bottleneck, like on a real link.
#[derive(Debug)]
struct Path {
    core: Mutex<Bottleneck>,
    counters: Counters,
    /// Bytes one connection may have read but not yet written, so a reader
    /// that stops reading stops its sender instead of filling our memory.
    window: usize,
}

impl Path {
    fn new(core: Bottleneck) -> Self {
        let window = if core.direction().rate_bps.is_some() {
            // Queue, bandwidth-delay product and one chunk in serialization,
            // in payload bytes (an overestimate, as headers are included).
            let transit = core.max_transit();
            let rate = core.direction().rate_bps.unwrap_or(0);
            let bdp = u128::from(rate) * transit.as_nanos() / 8_000_000_000;
            usize::try_from(bdp).unwrap_or(UNLIMITED_WINDOW)
        } else {
            UNLIMITED_WINDOW
        };
        Path {
            core: Mutex::new(core),
            counters: Counters::default(),
            window: window.saturating_add(EXTRA_WINDOW).min(MAX_WINDOW),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bottleneck> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn delay(&self) -> Duration {
        self.lock().direction().delay
    }
}

/// A TCP proxy on loopback: each accepted connection is proxied to the
/// server, its bytes passing through the up and down
/// [`Direction`](super::Direction)s. All connections share one bottleneck per
/// direction. Bytes are never dropped or reordered: when the queue is full
/// the relay stops reading and TCP flow control slows the sender.
///
/// The relay also emulates the handshake the client did not see: the
/// client's `connect` completes at once on loopback, so no client byte enters
/// the link before one RTT has passed (the client's first byte reaches the
/// server after 1.5 RTT) and no server byte before 1.5 RTT (the server's
/// first byte reaches the client after 2 RTT), as on a real path.
///
/// Dropping the relay (or [`TcpRelay::shutdown`]) closes every connection.
#[derive(Debug)]
pub struct TcpRelay {
    local: SocketAddr,
    up: Arc<Path>,
    down: Arc<Path>,
    accept: JoinHandle<()>,
}

impl TcpRelay {
    /// Listens on `listen` (use `127.0.0.1:0`) and proxies each connection
    /// to `server`.
    ///
    /// Fails if the listener cannot be bound or if `spec` has a rate of zero
    /// or a loss outside `0..=1` (loss itself does not apply to TCP).
    pub async fn start(listen: SocketAddr, server: SocketAddr, spec: LinkSpec) -> io::Result<Self> {
        spec.validate()?;
        let listener = TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let up = Arc::new(Path::new(Bottleneck::new(spec.up, TCP_OVERHEAD, spec.seed)));
        let down = Arc::new(Path::new(Bottleneck::new(
            spec.down,
            TCP_OVERHEAD,
            spec.seed.wrapping_add(1),
        )));
        let accept = tokio::spawn(accept_loop(listener, server, up.clone(), down.clone()));
        debug!(%local, %server, "tcp relay started");
        Ok(TcpRelay {
            local,
            up,
            down,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Counters so far, all connections together.
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            up: self.up.counters.snapshot(),
            down: self.down.counters.snapshot(),
        }
    }

    /// Stops accepting and closes every proxied connection.
    pub fn shutdown(self) {}
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        // The accept task owns the connections' JoinSet, which aborts them
        // when dropped.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, server: SocketAddr, up: Arc<Path>, down: Arc<Path>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    connections.spawn(connection(client, peer, server, up.clone(), down.clone()));
                }
                Err(e) => {
                    debug!(error = %e, "tcp relay accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next() => {}
        }
    }
}

async fn connection(
    client: TcpStream,
    peer: SocketAddr,
    server: SocketAddr,
    up: Arc<Path>,
    down: Arc<Path>,
) {
    let accepted = Instant::now();
    let server_stream = match TcpStream::connect(server).await {
        Ok(s) => s,
        Err(e) => {
            debug!(%peer, %server, error = %e, "tcp relay cannot reach the server");
            return;
        }
    };
    for s in [&client, &server_stream] {
        if let Err(e) = s.set_nodelay(true) {
            debug!(error = %e, "tcp relay set_nodelay failed");
        }
    }
    let rtt = up.delay() + down.delay();
    let (client_rx, client_tx) = client.into_split();
    let (server_rx, server_tx) = server_stream.into_split();
    tokio::join!(
        pipe(client_rx, server_tx, &up, accepted + rtt),
        pipe(server_rx, client_tx, &down, accepted + rtt + up.delay()),
    );
    debug!(%peer, "tcp relay connection closed");
}

/// What the reader half of a pipe hands the writer half.
enum Item {
    /// Write these bytes at this time; the permit returns their window space.
    Data(Instant, Bytes, OwnedSemaphorePermit),
    /// Shut the write side down at this time (the FIN).
    Eof(Instant),
}

/// Moves bytes from `src` to `dst` through `path`, starting no earlier than
/// `open_at`.
async fn pipe(mut src: OwnedReadHalf, mut dst: OwnedWriteHalf, path: &Path, open_at: Instant) {
    let window = Arc::new(Semaphore::new(path.window));
    let (tx, mut rx) = mpsc::unbounded_channel();

    let reader = async move {
        sleep_until(open_at).await;
        let mut buf = vec![0u8; TCP_CHUNK];
        // Delivery times only grow: jitter must not reorder a byte stream.
        let mut last = open_at;
        loop {
            let n = match src.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    debug!(error = %e, "tcp relay read failed");
                    break;
                }
            };
            path.counters.arrived(n);
            let Ok(permit) = window
                .clone()
                .acquire_many_owned(u32::try_from(n).unwrap_or(u32::MAX))
                .await
            else {
                return;
            };
            let at = loop {
                let now = Instant::now();
                let admitted = path.lock().admit(now, n);
                match admitted {
                    Ok(at) => break at,
                    Err(retry) => sleep_until(retry).await,
                }
            };
            last = last.max(at);
            let chunk = Bytes::copy_from_slice(&buf[..n]);
            if tx.send(Item::Data(last, chunk, permit)).is_err() {
                return;
            }
        }
        let fin = last.max(Instant::now() + path.delay());
        let _ = tx.send(Item::Eof(fin));
    };

    let writer = async move {
        while let Some(item) = rx.recv().await {
            match item {
                Item::Data(at, chunk, permit) => {
                    sleep_until(at).await;
                    if let Err(e) = dst.write_all(&chunk).await {
                        debug!(error = %e, "tcp relay write failed");
                        return;
                    }
                    path.counters.delivered(chunk.len());
                    drop(permit);
                }
                Item::Eof(at) => {
                    sleep_until(at).await;
                    let _ = dst.shutdown().await;
                    return;
                }
            }
        }
    };

    tokio::join!(reader, writer);
}
