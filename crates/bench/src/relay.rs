//! The bare relays the tunnel is measured against.
//!
//! - [`PlainRelay`]: the `relay` mode's path, a bare user-space TCP relay
//!   (one `copy_bidirectional` per connection, `TCP_NODELAY` on both
//!   sockets). It shows what any proxy process costs a round trip, without
//!   compression, framing or QUIC: the yardstick for the tunnel's own
//!   latency.
//! - [`QuicRelay`]: the `quic` mode's path, the tunnel's shape with nothing
//!   of the tunnel in it: each TCP connection copied into a stream of one
//!   QUIC connection (the tunnel's TLS and transport settings, over the
//!   emulated link if there is one) and out to the target. What QUIC and a
//!   second proxy cost, so what remains is the tunnel's own (framing,
//!   codecs, acknowledgements).

use std::io;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tracing::debug;

use llmpack_transport::quinn::Endpoint;

use crate::link::{LinkSpec, UdpRelay};

/// A TCP relay: each accepted connection is connected to `target` and bytes
/// are copied both ways as they come. Dropping it (or
/// [`PlainRelay::shutdown`]) closes every connection.
#[derive(Debug)]
pub struct PlainRelay {
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl PlainRelay {
    /// Listens on `listen` (use `127.0.0.1:0`) and relays each connection
    /// to `target`.
    pub async fn start(listen: SocketAddr, target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Owned here, so aborting this task ends every connection.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => {
                            conns.spawn(relay_one(client, target));
                        }
                        Err(e) => debug!(error = %e, "relay accept failed"),
                    },
                    Some(done) = conns.join_next(), if !conns.is_empty() => {
                        if let Ok(Err(e)) = done {
                            debug!(error = %e, "relay connection ended");
                        }
                    }
                }
            }
        });
        Ok(PlainRelay { local, task })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Stops the relay and closes its connections.
    pub fn shutdown(self) {}
}

impl Drop for PlainRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay_one(mut client: TcpStream, target: SocketAddr) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut server = TcpStream::connect(target).await?;
    server.set_nodelay(true)?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// Bytes the QUIC relay reads at a time, each way (64 KiB: TCP reads as
/// large as the tunnel's).
const COPY_BUF: usize = 64 << 10;

/// Copies `tcp` and a QUIC stream into each other until both are done
/// (`TCP_NODELAY` on the socket), as each end of the [`QuicRelay`] does.
async fn pipe(
    mut tcp: TcpStream,
    send: llmpack_transport::quinn::SendStream,
    recv: llmpack_transport::quinn::RecvStream,
) -> io::Result<(u64, u64)> {
    tcp.set_nodelay(true)?;
    let mut quic = tokio::io::join(recv, send);
    tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut quic, COPY_BUF, COPY_BUF).await
}

/// A QUIC server and client endpoint on 127.0.0.1 with the tunnel's TLS
/// (each pinning the other's fresh certificate) and default transport
/// settings: the client connects to the server's `local_addr` (or to a
/// relay in front of it) with [`llmpack_transport::SERVER_NAME`].
pub fn endpoint_pair() -> anyhow::Result<(Endpoint, Endpoint)> {
    use llmpack_transport::{Identity, ServerAuth, Tuning, generate};
    let pem = |(c, k): (String, String)| Identity::from_pem(&c, &k);
    let server_id = pem(generate("llmpack")?)?;
    let client_id = pem(generate("llmpack")?)?;
    let pin = server_id.certificate().clone();
    let auth = ServerAuth {
        client_pin: Some(client_id.certificate().clone()),
        identity: server_id,
    };
    let tuning = Tuning::default();
    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let server = llmpack_transport::server_endpoint(any, &auth, &tuning)?;
    let client = llmpack_transport::client_endpoint(any, pin, Some(client_id), &tuning)?;
    Ok((server, client))
}

/// A TCP-QUIC-TCP relay with no framing: the two ends of a QUIC connection
/// in this process, a [`UdpRelay`] between them where a link is emulated.
/// Dropping it closes every connection.
#[derive(Debug)]
pub struct QuicRelay {
    local: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    client: Endpoint,
    /// The emulated link between the two QUIC ends, if any.
    pub link: Option<UdpRelay>,
}

impl QuicRelay {
    /// Listens on `listen` (use `127.0.0.1:0`) and relays each connection
    /// through one QUIC connection to `target`, across `link` if given.
    pub async fn start(
        listen: SocketAddr,
        target: SocketAddr,
        link: Option<LinkSpec>,
    ) -> anyhow::Result<Self> {
        let (server, client) = endpoint_pair()?;
        let server_addr = server.local_addr()?;
        let link = match link {
            Some(l) => Some(UdpRelay::start("127.0.0.1:0".parse()?, server_addr, l).await?),
            None => None,
        };
        let connect = link.as_ref().map_or(server_addr, UdpRelay::local_addr);
        let far = tokio::spawn(async move {
            let Some(incoming) = server.accept().await else {
                return;
            };
            let Ok(conn) = incoming.await else { return };
            let mut conns = JoinSet::new();
            while let Ok((send, recv)) = conn.accept_bi().await {
                conns.spawn(async move {
                    let tcp = TcpStream::connect(target).await?;
                    pipe(tcp, send, recv).await
                });
            }
        });
        let conn = client
            .connect(connect, llmpack_transport::SERVER_NAME)?
            .await
            .context("the QUIC relay's connection")?;
        let listener = TcpListener::bind(listen).await?;
        let local = listener.local_addr()?;
        let near = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((tcp, _)) = listener.accept().await {
                let conn = conn.clone();
                conns.spawn(async move {
                    let (send, recv) = conn.open_bi().await.map_err(io::Error::other)?;
                    pipe(tcp, send, recv).await
                });
            }
        });
        Ok(QuicRelay {
            local,
            tasks: vec![far, near],
            client,
            link,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for QuicRelay {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.client.close(0u32.into(), b"done");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server for every connection; its address.
    async fn echo() -> SocketAddr {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                });
            }
        });
        target
    }

    /// Sends 100 000 bytes (pattern `seed`) to `addr`, half-closes, and
    /// checks that the same bytes come back before the close.
    async fn echo_through(addr: SocketAddr, seed: u32) {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * seed % 251) as u8).collect();
        let (mut r, mut w) = c.split();
        let send = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut back = Vec::new();
        let recv = r.read_to_end(&mut back);
        let ((), got) = tokio::join!(send, recv);
        got.unwrap();
        assert_eq!(back, data, "connection {seed}");
    }

    #[tokio::test]
    async fn relays_both_ways_and_closes() {
        let relay = PlainRelay::start("127.0.0.1:0".parse().unwrap(), echo().await)
            .await
            .unwrap();
        echo_through(relay.local_addr(), 1).await;
    }

    /// Bytes cross the QUIC relay both ways, several connections at once,
    /// and each end's close reaches the other.
    #[tokio::test]
    async fn quic_relay_carries_bytes_both_ways() {
        let relay = QuicRelay::start("127.0.0.1:0".parse().unwrap(), echo().await, None)
            .await
            .unwrap();
        let at = relay.local_addr();
        tokio::join!(
            echo_through(at, 3),
            echo_through(at, 7),
            echo_through(at, 11)
        );
    }
}
