//! The `interactive` traffic shape: each client holds one TCP connection and
//! makes request/response exchanges on it one at a time, like a shell, an
//! RPC client or a database session. A round trip is timed from the
//! request's first write to the response's last byte; connecting is not part
//! of it.
//!
//! A request is one line of [`REQUEST_LEN`] bytes, `GET <n> ` padded with
//! header-like filler; the server answers with response `n` of the workload
//! and keeps the connection open (the server of [`run`](mod@crate::run), with
//! `persistent`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::run::Tally;
use crate::workload::Workload;

/// Bytes of one request line, newline included.
pub const REQUEST_LEN: usize = 100;

/// Filler after `GET <n> `: the shape of a small request header.
const FILLER: &[u8] = b"HTTP/1.1 Host: bench.llmpack Accept: */* User-Agent: llmpack-bench-interactive Connection: keep-alive ";

/// How long a client waits before reconnecting after an error, so a dead
/// path is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Request `n`: `GET <n> ` and filler, cut to [`REQUEST_LEN`] bytes with a
/// newline at the end.
pub fn request(n: u64) -> Vec<u8> {
    let mut line = format!("GET {n} ").into_bytes();
    line.extend(
        FILLER
            .iter()
            .cycle()
            .take(REQUEST_LEN.saturating_sub(line.len() + 1)),
    );
    line.push(b'\n');
    line
}

/// One interactive client: connects once, then makes one exchange at a time
/// until `end`, each checked byte for byte; returns its round trips. An I/O
/// error counts as failed and the client reconnects; an exchange still
/// unfinished at `hard` counts as unfinished and ends the client.
pub(crate) async fn client(
    addr: SocketAddr,
    tally: Arc<Tally>,
    workload: Arc<Workload>,
    size: usize,
    end: Instant,
    hard: Instant,
) -> Vec<Duration> {
    let mut rtts = Vec::new();
    let mut body = vec![0u8; size];
    let mut conn: Option<TcpStream> = None;
    while Instant::now() < end {
        let mut stream = match conn.take() {
            Some(s) => s,
            None => match tokio::time::timeout_at(hard, connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "interactive connect failed");
                    Tally::add(&tally.errors, 1);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
                Err(_) => {
                    Tally::add(&tally.unfinished, 1);
                    break;
                }
            },
        };
        let n = tally
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = request(n);
        let t0 = Instant::now();
        let exchange = async {
            stream.write_all(&req).await?;
            stream.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(())
        };
        match tokio::time::timeout_at(hard, exchange).await {
            Err(_) => {
                Tally::add(&tally.unfinished, 1);
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, n, "interactive exchange failed");
                Tally::add(&tally.errors, 1);
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Ok(Ok(())) => {
                rtts.push(t0.elapsed());
                if body == workload.response(n, size) {
                    Tally::add(&tally.complete, 1);
                    Tally::add(&tally.app_bytes, req.len() + size);
                    Tally::add(&tally.response_bytes, size);
                } else {
                    Tally::add(&tally.corrupt, 1);
                }
                conn = Some(stream);
            }
        }
    }
    rtts
}

async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_line_of_fixed_length() {
        for n in [0, 7, 123_456, u64::MAX] {
            let r = request(n);
            assert_eq!(r.len(), REQUEST_LEN, "{n}");
            assert_eq!(r.iter().filter(|b| **b == b'\n').count(), 1);
            assert_eq!(r.last(), Some(&b'\n'));
            let line = std::str::from_utf8(&r).unwrap();
            assert_eq!(crate::run::parse_request(line), Some(n));
        }
    }
}
