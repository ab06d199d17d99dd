//! Shared pieces of the tunnel tests: keys, configs, real servers and
//! clients on 127.0.0.1:0, and hashing.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[allow(unused_imports)]
pub use llmpack_codec::toy::markov;
use llmpack_codec::{LmParams, Predictor, toy::ToyPredictor};
use llmpack_proxy::config::Config;
use llmpack_proxy::{ModelParts, Running};
use llmpack_transport::{ModelId, ModelInfo};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A fresh directory for one test's keys and configs.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("llmpack-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `{name}.crt` / `{name}.key` into `dir`.
pub fn keypair(dir: &Path, name: &str) {
    let (c, k) = llmpack_transport::generate("llmpack").unwrap();
    std::fs::write(dir.join(format!("{name}.crt")), c).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), k).unwrap();
}

/// Keys for a sender/receiver pair (plus an `intruder` pair).
pub fn keys(dir: &Path) {
    for n in ["sender", "receiver", "intruder"] {
        keypair(dir, n);
    }
}

/// One tunnel of a test pair.
#[derive(Clone, Debug)]
pub struct T {
    pub name: &'static str,
    pub codec: &'static str,
    /// Receiver's target.
    pub target: String,
}

pub fn tunnel(name: &'static str, codec: &'static str, target: SocketAddr) -> T {
    T {
        name,
        codec,
        target: target.to_string(),
    }
}

/// Extra TOML lines for the [limits] and [model] tables.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    pub limits: String,
    pub model: String,
    /// Sender's link auth lines (default: its certificate and key).
    pub sender_auth: Option<String>,
    /// Receiver's link auth lines (default: pin the sender's certificate).
    pub receiver_auth: Option<String>,
    /// More `[link]` lines for the sender (such as `mode = ...`).
    pub sender_link: String,
    /// More `[link]` lines for the receiver.
    pub receiver_link: String,
}

pub fn receiver_config(dir: &Path, listen: &str, tunnels: &[T], o: &Opts) -> Config {
    let auth = o
        .receiver_auth
        .clone()
        .unwrap_or_else(|| "peer_certificate = \"sender.crt\"".into());
    let mut s = format!(
        "role = \"receiver\"\n[link]\nlisten = \"{listen}\"\ncertificate = \"receiver.crt\"\nkey = \"receiver.key\"\n{auth}\n{}\n[model]\n{}\n[limits]\n{}\n",
        o.receiver_link, o.model, o.limits
    );
    for t in tunnels {
        s += &format!(
            "[[tunnel]]\nname = \"{}\"\ntarget = \"{}\"\ncodec = \"{}\"\n",
            t.name, t.target, t.codec
        );
    }
    let p = dir.join("receiver.toml");
    std::fs::write(&p, s).unwrap();
    Config::load(&p).unwrap()
}

pub fn sender_config(dir: &Path, connect: SocketAddr, tunnels: &[T], o: &Opts) -> Config {
    let auth = o
        .sender_auth
        .clone()
        .unwrap_or_else(|| "certificate = \"sender.crt\"\nkey = \"sender.key\"".into());
    let mut s = format!(
        "role = \"sender\"\n[link]\nconnect = \"{connect}\"\npeer_certificate = \"receiver.crt\"\nreconnect_min = \"50ms\"\nreconnect_max = \"500ms\"\n{auth}\n{}\n[model]\n{}\n[limits]\n{}\n",
        o.sender_link, o.model, o.limits
    );
    for t in tunnels {
        s += &format!(
            "[[tunnel]]\nname = \"{}\"\nlisten = \"127.0.0.1:0\"\ncodec = \"{}\"\n",
            t.name, t.codec
        );
    }
    let p = dir.join("sender.toml");
    std::fs::write(&p, s).unwrap();
    Config::load(&p).unwrap()
}

/// A sender and receiver on loopback.
pub struct Pair {
    pub receiver: Running,
    pub sender: Running,
}

impl Pair {
    pub fn addr(&self, tunnel: &str) -> SocketAddr {
        self.sender.tunnels[tunnel]
    }

    pub async fn shutdown(self) {
        self.sender.shutdown().await;
        self.receiver.shutdown().await;
    }
}

/// Starts a receiver and a sender with these tunnels and waits for the link.
pub async fn pair(dir: &Path, tunnels: &[T], o: &Opts) -> Pair {
    pair_with(dir, tunnels, o, None, None).await
}

pub async fn pair_with(
    dir: &Path,
    tunnels: &[T],
    o: &Opts,
    sender_model: Option<ModelParts>,
    receiver_model: Option<ModelParts>,
) -> Pair {
    let rc = receiver_config(dir, "127.0.0.1:0", tunnels, o);
    let receiver = llmpack_proxy::start_with(rc, receiver_model).await.unwrap();
    let sc = sender_config(dir, receiver.link.unwrap(), tunnels, o);
    let sender = llmpack_proxy::start_with(sc, sender_model).await.unwrap();
    Pair { receiver, sender }
}

/// Waits until the sender's link is up (or `limit` passes); returns whether it came up.
pub async fn link_up(r: &Running, limit: Duration) -> bool {
    let mut rx = r.link_up.clone();
    tokio::time::timeout(limit, async {
        loop {
            if *rx.borrow_and_update() {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    })
    .await
    .is_ok()
}

/// An echo server: each connection's bytes come back; its half-close too.
pub async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                if tokio::io::copy(&mut r, &mut w).await.is_ok() {
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    at
}

/// A server that answers each connection's request (read until the client
/// half-closes) with `body`, then closes.
pub async fn file_server(body: Arc<Vec<u8>>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let _ = s.read_to_end(&mut req).await;
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            });
        }
    });
    at
}

/// Sends `data` through `addr`, half-closes, and returns everything read back.
pub async fn exchange(addr: SocketAddr, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    let (mut r, mut w) = s.split();
    let write = async {
        w.write_all(data).await?;
        w.shutdown().await
    };
    let mut back = Vec::new();
    let read = r.read_to_end(&mut back);
    let (a, b) = tokio::join!(write, read);
    a?;
    b?;
    Ok(back)
}

pub fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[allow(unused_imports)]
pub use llmpack_codec::toy::random_bytes as random;

/// Real text the project did not write: Rust sources of the dependencies
/// in cargo's registry, then the system's licence texts; at least `n` bytes.
pub fn real_text(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(Ok(rd)) = home.map(|h| std::fs::read_dir(h.join("registry/src"))) {
        roots.extend(rd.flatten().map(|e| e.path()));
    }
    roots.push(PathBuf::from("/usr/share/common-licenses"));
    let mut stack = roots;
    stack.sort();
    while let Some(p) = stack.pop() {
        if out.len() >= n {
            break;
        }
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                v.sort();
                stack.extend(v.into_iter().rev());
            }
        } else if (p
            .extension()
            .is_some_and(|e| e == "rs" || e == "md" || e == "toml")
            || p.starts_with("/usr/share/common-licenses"))
            && let Ok(b) = std::fs::read(&p)
        {
            out.extend_from_slice(&b);
        }
    }
    assert!(
        out.len() >= n.min(1 << 20),
        "found only {} bytes of text",
        out.len()
    );
    while out.len() < n {
        let again = out.clone();
        out.extend_from_slice(&again);
    }
    out.truncate(n);
    out
}

/// A toy model for tunnel tests: a bigram predictor over bytes, with
/// `perturb` nudging its numbers (a peer whose arithmetic differs).
pub fn toy_model(id: u8, probe: u64, perturb: f32) -> ModelParts {
    let vocab = Arc::new(llmpack_codec::ByteVocab::default());
    let mut p = ToyPredictor::new(257);
    p.perturb = perturb;
    let predictor: Box<dyn Predictor + Send> = Box::new(p);
    ModelParts {
        predictor,
        vocab,
        info: ModelInfo {
            id: ModelId([id; 32]),
            runtime: "toy".into(),
            probe,
        },
        rule: LmParams {
            window: 512,
            keep: 128,
        },
    }
}

/// Sum of this process's metric samples whose line starts with `prefix`.
pub fn metric(prefix: &str) -> f64 {
    llmpack_proxy::metrics_http::render()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// [`toy_model`] whose predictor fails every `every`-th model call, from
/// call `first` on (a runtime error injected where the real model could
/// fail: out of memory, a bad kernel).
pub fn failing_toy_model(id: u8, probe: u64, first: u64, every: u64) -> ModelParts {
    let mut m = toy_model(id, probe, 0.0);
    m.predictor = Box::new(Failing {
        inner: ToyPredictor::new(257),
        calls: 0,
        first,
        every,
    });
    m
}

struct Failing {
    inner: ToyPredictor,
    calls: u64,
    first: u64,
    every: u64,
}

impl Predictor for Failing {
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    fn predict(
        &mut self,
        batch: &[(llmpack_codec::LaneId, llmpack_codec::Request)],
        answer: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), llmpack_codec::PredictError> {
        self.calls += 1;
        if self.calls >= self.first && (self.calls - self.first).is_multiple_of(self.every) {
            return Err(llmpack_codec::PredictError(format!(
                "injected failure at call {}",
                self.calls
            )));
        }
        self.inner.predict(batch, answer)
    }

    fn release(&mut self, lane: llmpack_codec::LaneId) {
        self.inner.release(lane);
    }
}

/// Whether a client's connection is closed by the tunnel within `limit`
/// (read returns end of stream or an error).
/// A local address nothing listens on (bound, noted, closed).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub async fn closed_soon(addr: SocketAddr, limit: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return true;
    };
    let _ = s.write_all(b"hello").await;
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}
