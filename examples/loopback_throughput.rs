//! Loopback throughput of the tunnel against plain quinn, in one process.
//!
//! Each mode moves N bytes one way over 127.0.0.1:
//! - `quinn`: one QUIC connection made with `llmpack_transport`'s endpoints
//!   (the tunnel's TLS and transport settings), a new stream per run; the
//!   client writes N bytes, the clock stops when the server has read them;
//! - `quinn relay raw`: the tunnel's path with no framing, its lower bound:
//!   TCP into a relay that copies each connection into a stream of one
//!   QUIC connection (the same settings) and out to the same sink
//!   (`llmpack_bench::relay::QuicRelay`, the `quic` mode of `llmpack bench`);
//! - `tunnel raw`, `tunnel zstd random`, `tunnel zstd text`: a sender and a
//!   receiver (`llmpack_proxy::start`) in front of a TCP sink that reads to
//!   the end and answers with the count (u64 LE); the client connects to the
//!   sender's tunnel, writes N bytes and half-closes, the clock stops when
//!   the count (checked against N) comes back.
//!
//! "random" cycles an 8 MiB xorshift pattern, "text" the samples in
//! `.cache/samples` (else Rust sources from cargo's registry); both periods
//! exceed the tunnel's 128 KiB zstd history. Modes alternate within each
//! repeat so other load hits them alike; everything shares one tokio
//! runtime. `link/app`: the sender's link bytes per app byte (proxy
//! metrics). `CPU s/GB`: user + system CPU of the process per 10^9 bytes
//! (/proc/self/stat), steadier than wall time on a busy machine.
//!
//! ```text
//! cargo run --release -p llmpack-examples --example loopback_throughput -- \
//!     [--mib N] [--runs R] [--only TEXT] [--json]
//! ```
//! Defaults: N = 256 MiB (or `LLMPACK_BENCH_MIB`), R = 3, all modes;
//! `--only raw` runs the quinn baseline and the modes named "*raw*".

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use llmpack_bench::relay::{QuicRelay, endpoint_pair};
use llmpack_proxy::{Running, config::Config};
use llmpack_transport::generate;
use llmpack_transport::quinn::{Connection, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Size of each application write.
const CHUNK: usize = 64 << 10;
/// Period of the random pattern: far beyond the tunnel's zstd history.
const RANDOM_PATTERN: usize = 8 << 20;

/// `len` bytes of `pattern` repeated, as slices of at most [`CHUNK`].
fn chunks(pattern: &[u8], len: usize) -> impl Iterator<Item = &[u8]> {
    let mut sent = 0;
    std::iter::from_fn(move || {
        let at = sent % pattern.len();
        let n = CHUNK.min(pattern.len() - at).min(len - sent);
        sent += n;
        (n > 0).then(|| &pattern[at..at + n])
    })
}

/// One mode's runs: wall seconds and CPU seconds each.
#[derive(Debug)]
struct Mode {
    name: &'static str,
    runs: Vec<(f64, f64)>,
    /// Link bytes per app byte on the sender (tunnel modes).
    link_ratio: Option<f64>,
}

/// The median of `v` (not empty; the upper one of an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl Mode {
    /// Best MB/s, median MB/s, median CPU s/GB.
    fn stats(&self, bytes: usize) -> (f64, f64, f64) {
        let b = bytes as f64;
        let mbps: Vec<f64> = self.runs.iter().map(|r| b / r.0 / 1e6).collect();
        let best = mbps.iter().copied().fold(0.0, f64::max);
        let cpu = self.runs.iter().map(|r| r.1 / b * 1e9).collect();
        (best, median(mbps), median(cpu))
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let (mut mib, mut runs, mut json, mut only) = (256usize, 3usize, false, String::new());
    if let Ok(v) = std::env::var("LLMPACK_BENCH_MIB") {
        mib = v.parse().context("LLMPACK_BENCH_MIB: not a number")?;
    }
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--mib" => mib = value()?.parse().context("--mib: not a number")?,
            "--runs" => runs = value()?.parse().context("--runs: not a number")?,
            "--only" => only = value()?,
            "--json" => json = true,
            _ => bail!("unknown argument {a}; use [--mib N] [--runs R] [--only TEXT] [--json]"),
        }
    }
    ensure!(mib > 0 && runs > 0, "--mib and --runs must be at least 1");
    let bytes = mib << 20;
    let random = xorshift(RANDOM_PATTERN, 7);
    let (text, from) = text()?;

    let dir = std::env::temp_dir().join(format!("llmpack-loopback-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let target = sink().await?;
    let (receiver, sender) = tunnel_pair(&dir, target).await?;
    let (client, conn, mut done) = plain_quinn().await?;
    // The tunnel's lower bound: no framing (`llmpack bench --modes quic`).
    let relay = QuicRelay::start("127.0.0.1:0".parse()?, target, None).await?;

    let plan = [
        ("quinn", None, &random),
        ("quinn relay raw", Some(RELAY), &random),
        ("tunnel raw", Some("raw"), &random),
        ("tunnel zstd random", Some("zstd"), &random),
        ("tunnel zstd text", Some("zstd"), &text),
    ];
    let mut modes = Vec::from(plan.map(|(name, _, _)| Mode {
        name,
        runs: Vec::new(),
        link_ratio: None,
    }));
    for run in 0..runs {
        for (mode, (_, tunnel, src)) in modes.iter_mut().zip(plan) {
            if tunnel.is_some() && !mode.name.contains(only.as_str()) {
                continue;
            }
            let (t0, cpu0) = (Instant::now(), cpu_secs());
            match tunnel {
                None => {
                    let (mut send, _recv) = conn.open_bi().await?;
                    for c in chunks(src, bytes) {
                        send.write_all(c).await?;
                    }
                    send.finish()?;
                    let n = done.recv().await.context("the quinn server task ended")?;
                    ensure!(n == bytes, "the quinn server read {n} of {bytes} bytes");
                }
                Some(RELAY) => through(relay.local_addr(), src, bytes).await?,
                Some(t) => {
                    let before = link_bytes(t);
                    through(sender.tunnels[t], src, bytes).await?;
                    mode.link_ratio = Some((link_bytes(t) - before) / bytes as f64);
                }
            }
            let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_secs() - cpu0);
            if !json {
                let (name, run) = (mode.name, run + 1);
                eprintln!("run {run}/{runs} {name:<20} {secs:.3} s, CPU {cpu:.2} s");
            }
            mode.runs.push((secs, cpu));
        }
    }
    conn.close(0u32.into(), b"done");
    drop(relay);
    let _ = tokio::time::timeout(Duration::from_secs(2), client.wait_idle()).await;
    sender.shutdown().await;
    receiver.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);

    modes.retain(|m| !m.runs.is_empty());
    let (_, base, base_cpu) = modes[0].stats(bytes);
    let mut rows = Vec::new();
    if !json {
        println!("{mib} MiB x {runs} runs, text from {from}; MB = 10^6 bytes");
        let cols = "best MB/s  median MB/s  median/quinn  CPU s/GB  CPU/quinn  link/app";
        println!("{:<20} {cols}", "mode");
    }
    for m in &modes {
        let (best, med, cpu) = m.stats(bytes);
        let (ratio, cpu_ratio) = (med / base, cpu / base_cpu);
        let link = m.link_ratio.map_or("-".into(), |r| format!("{r:.3}"));
        if !json {
            let name = m.name;
            println!(
                "{name:<20} {best:>9.1}  {med:>11.1}  {ratio:>12.2}  {cpu:>8.2}  {cpu_ratio:>9.2}  {link:>8}"
            );
        }
        rows.push(serde_json::json!({
            "mode": m.name, "secs": m.runs.iter().map(|r| r.0).collect::<Vec<_>>(),
            "cpu_secs": m.runs.iter().map(|r| r.1).collect::<Vec<_>>(),
            "best_mb_s": best, "median_mb_s": med, "median_vs_quinn": ratio,
            "cpu_s_per_gb": cpu, "cpu_vs_quinn": cpu_ratio, "link_ratio": m.link_ratio,
        }));
    }
    if json {
        let doc = serde_json::json!({"bytes": bytes, "runs": runs, "text": from, "modes": rows});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    Ok(())
}

/// CPU seconds (user + system, all threads) the process has used so far;
/// 0 where /proc/self/stat is missing. Assumes 100 clock ticks a second.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields 3, 4, ... follow the ")" that ends the name; utime is 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |p| p.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

use llmpack_codec::toy::random_bytes as xorshift;

/// Real text not written by this project, and where it came from: the
/// text samples in `.cache/samples`, or else up to 4 MiB of Rust sources
/// from cargo's registry.
fn text() -> Result<(Vec<u8>, String)> {
    let mut out = Vec::new();
    if let Some(d) = llmpack_model::find_in_project(".cache/samples") {
        for name in ["prose.txt", "code.py", "page.html", "data.json"] {
            if let Ok(b) = std::fs::read(d.join(name)) {
                out.extend(b);
            }
        }
        if out.len() >= 128 << 10 {
            return Ok((out, d.display().to_string()));
        }
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let root = Path::new(&home).join(".cargo/registry/src");
    let mut stack = vec![root.clone()];
    while let Some(p) = stack.pop().filter(|_| out.len() < 4 << 20) {
        if let Ok(rd) = std::fs::read_dir(&p) {
            let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            v.sort_by(|a, b| b.cmp(a));
            stack.extend(v);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.extend(std::fs::read(&p).unwrap_or_default());
        }
    }
    let from = root.display().to_string();
    ensure!(out.len() >= 256 << 10, "too little text under {from}");
    Ok((out, from))
}

/// A TCP server that reads each connection to its end, then writes the
/// byte count (u64 LE) and closes.
async fn sink() -> Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let at = l.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.split();
                let mut r = tokio::io::BufReader::with_capacity(256 << 10, r);
                if let Ok(n) = tokio::io::copy_buf(&mut r, &mut tokio::io::sink()).await {
                    let _ = w.write_all(&n.to_le_bytes()).await;
                    let _ = w.shutdown().await;
                }
            });
        }
    });
    Ok(at)
}

/// A receiver and a sender (in that order) with tunnels `raw` and `zstd`
/// to `target`, once the link is up.
async fn tunnel_pair(dir: &Path, target: SocketAddr) -> Result<(Running, Running)> {
    for name in ["sender", "receiver"] {
        let (c, k) = generate("llmpack")?;
        std::fs::write(dir.join(format!("{name}.crt")), c)?;
        std::fs::write(dir.join(format!("{name}.key")), k)?;
    }
    let tunnels = |end: &str| {
        ["raw", "zstd"].map(|c| format!("[[tunnel]]\nname = \"{c}\"\n{end}\ncodec = \"{c}\"\n"))
    };
    let rx = format!(
        "role = \"receiver\"\n[link]\nlisten = \"127.0.0.1:0\"\ncertificate = \"receiver.crt\"\n\
         key = \"receiver.key\"\npeer_certificate = \"sender.crt\"\n{}",
        tunnels(&format!("target = \"{target}\"")).concat()
    );
    let rc = Config::from_toml(&rx, &dir.join("receiver.toml")).context("receiver config")?;
    let receiver = llmpack_proxy::start(rc).await?;
    let link = receiver.link.context("the receiver has no link address")?;
    let tx = format!(
        "role = \"sender\"\n[link]\nconnect = \"{link}\"\npeer_certificate = \"receiver.crt\"\n\
         certificate = \"sender.crt\"\nkey = \"sender.key\"\n{}",
        tunnels("listen = \"127.0.0.1:0\"").concat()
    );
    let sc = Config::from_toml(&tx, &dir.join("sender.toml")).context("sender config")?;
    let sender = llmpack_proxy::start(sc).await?;
    let mut up = sender.link_up.clone();
    tokio::time::timeout(Duration::from_secs(10), up.wait_for(|u| *u))
        .await
        .context("the link did not come up within 10 s")??;
    Ok((receiver, sender))
}

/// Sends `len` bytes of `pattern` through the tunnel at `addr`, half-closes
/// and waits for the sink's count.
async fn through(addr: SocketAddr, pattern: &[u8], len: usize) -> Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    let (mut r, mut w) = s.split();
    for c in chunks(pattern, len) {
        w.write_all(c).await?;
    }
    w.shutdown().await?;
    let mut count = [0u8; 8];
    r.read_exact(&mut count).await?;
    let n = u64::from_le_bytes(count);
    ensure!(n == len as u64, "sink got {n} of {len} bytes");
    Ok(())
}

/// The sender's link bytes out of tunnel `t` so far.
fn link_bytes(t: &str) -> f64 {
    let key =
        format!("llmpack_link_bytes_total{{tunnel=\"{t}\",role=\"sender\",direction=\"out\"}} ");
    let text = llmpack_proxy::metrics_http::render();
    let line = text.lines().find_map(|l| l.strip_prefix(&key));
    line.and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

/// The `--only` name of the relay mode.
const RELAY: &str = "relay";

/// A QUIC connection with the tunnel's TLS and transport settings (client
/// endpoint, connection) and the count of each stream the server finished.
async fn plain_quinn() -> Result<(Endpoint, Connection, mpsc::Receiver<usize>)> {
    let (server, client) = endpoint_pair()?;
    let at = server.local_addr()?;
    let (tx, done) = mpsc::channel(1);
    tokio::spawn(async move {
        let conn = server.accept().await?.await.ok()?;
        while let Ok((_send, mut recv)) = conn.accept_bi().await {
            let mut n = 0;
            while let Ok(Some(c)) = recv.read_chunk(usize::MAX, false).await {
                n += c.bytes.len();
            }
            tx.send(n).await.ok()?;
        }
        None::<()>
    });
    let conn = client.connect(at, llmpack_transport::SERVER_NAME)?.await?;
    Ok((client, conn, done))
}
