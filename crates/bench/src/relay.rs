//! [`PlainRelay`]: the `relay` mode's path, a bare user-space TCP relay (one
//! `copy_bidirectional` per connection, `TCP_NODELAY` on both sockets). It
//! shows what any proxy process costs a round trip, without compression,
//! framing or QUIC: the yardstick for the tunnel's own latency.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tracing::debug;

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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relays_both_ways_and_closes() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let (mut r, mut w) = s.split();
            tokio::io::copy(&mut r, &mut w).await.unwrap();
        });
        let relay = PlainRelay::start("127.0.0.1:0".parse().unwrap(), target)
            .await
            .unwrap();
        let mut c = TcpStream::connect(relay.local_addr()).await.unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let (mut r, mut w) = c.split();
        let send = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut back = Vec::new();
        let recv = r.read_to_end(&mut back);
        let ((), got) = tokio::join!(send, recv);
        got.unwrap();
        assert_eq!(back, data);
    }
}
