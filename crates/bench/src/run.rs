//! One benchmark run: scenario × mode × workload.
//!
//! A response server sits behind the path under test; `clients` concurrent
//! clients make request/response exchanges for `duration` and check every
//! response byte for byte against the slice they asked for. The programs at
//! the two ends are an [`App`]: this process's own (one request line, one
//! response, close) or real nginx and curl (HTTP/1.1, one curl process and
//! one TCP connection per request). With [`Traffic::Interactive`] each of
//! this process's clients keeps one connection and makes its exchanges on it
//! one after another ([`crate::interactive`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::Traffic;
use crate::http::{Nginx, Tools, curl_get};
use crate::latency::Summary;
use crate::link::{LinkStats, TcpRelay};
use crate::relay::{PlainRelay, QuicRelay};
use crate::scenario::Scenario;
use crate::tunnel::{ModelOpts, Pair, TUNNEL};
use crate::workload::Workload;

/// Longest request line the server reads.
const MAX_REQUEST: u64 = 256;

/// The path a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Plain TCP through the emulated link (a [`TcpRelay`]), no tunnel; on
    /// `loopback`, clients connect to the server itself.
    Direct,
    /// Plain TCP through a bare user-space relay ([`PlainRelay`], in front
    /// of the emulated link if there is one): what a proxy process costs
    /// without compression, framing or QUIC.
    Relay,
    /// TCP copied into a stream of one QUIC connection and out again
    /// ([`QuicRelay`], the tunnel's TLS and transport settings, across the
    /// emulated link if there is one): the tunnel's shape without framing
    /// or codecs, so what QUIC and a second proxy cost.
    Quic,
    /// The LLMPack tunnel with `codec = "raw"`.
    Raw,
    /// The tunnel with `codec = "zstd"`.
    Zstd,
    /// The tunnel with `codec = "lm"`.
    Lm,
    /// The tunnel with `codec = "auto"`.
    Auto,
}

impl Mode {
    /// All modes, in report order.
    pub const ALL: [Mode; 7] = [
        Mode::Direct,
        Mode::Relay,
        Mode::Quic,
        Mode::Raw,
        Mode::Zstd,
        Mode::Lm,
        Mode::Auto,
    ];

    /// The mode's name (the tunnel codec, or `direct`, `relay` or `quic`).
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Relay => "relay",
            Mode::Quic => "quic",
            Mode::Raw => "raw",
            Mode::Zstd => "zstd",
            Mode::Lm => "lm",
            Mode::Auto => "auto",
        }
    }

    /// Parses a mode name.
    pub fn parse(s: &str) -> Result<Self, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s.trim())
            .ok_or_else(|| {
                format!("unknown mode `{s}`: use direct, relay, quic, raw, zstd, lm or auto")
            })
    }

    /// Whether the mode runs through the LLMPack tunnel (and so has a link
    /// mode).
    pub fn is_tunnel(self) -> bool {
        !matches!(self, Mode::Direct | Mode::Relay | Mode::Quic)
    }

    /// Whether the mode crosses the emulated link as TCP (through a
    /// [`TcpRelay`]), not as the QUIC link's UDP.
    pub fn is_tcp_link(self) -> bool {
        matches!(self, Mode::Direct | Mode::Relay)
    }
}

/// How a tunnel run's link carries frames (`--link-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkChoice {
    /// `link.mode = "stream"` with its default congestion control (CUBIC).
    Stream,
    /// Stream mode with `link.congestion = "bbr"`.
    StreamBbr,
    /// `link.mode = "datagram-fec"` (BBR by default).
    DatagramFec,
}

impl LinkChoice {
    /// All choices, in report order.
    pub const ALL: [LinkChoice; 3] = [
        LinkChoice::Stream,
        LinkChoice::StreamBbr,
        LinkChoice::DatagramFec,
    ];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            LinkChoice::Stream => "stream",
            LinkChoice::StreamBbr => "stream-bbr",
            LinkChoice::DatagramFec => "datagram-fec",
        }
    }

    /// Suffix of the path name in reports.
    pub fn suffix(self) -> &'static str {
        match self {
            LinkChoice::Stream => "",
            LinkChoice::StreamBbr => "+bbr",
            LinkChoice::DatagramFec => "+fec",
        }
    }

    /// The `[link]` lines of both proxies' configs.
    pub fn toml(self) -> &'static str {
        match self {
            LinkChoice::Stream => "",
            LinkChoice::StreamBbr => "congestion = \"bbr\"\n",
            LinkChoice::DatagramFec => "mode = \"datagram-fec\"\n",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Result<Self, String> {
        LinkChoice::ALL
            .into_iter()
            .find(|c| c.name() == s.trim())
            .ok_or_else(|| {
                format!("unknown link mode `{s}`: use stream, stream-bbr or datagram-fec")
            })
    }
}

/// The programs at the ends of the measured path (`--app`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum App {
    /// This process's response server and clients: `GET <n>` and the bytes
    /// of response `n`, nothing else on the wire.
    Builtin,
    /// nginx serves the responses as files, curl fetches them over HTTP/1.1.
    NginxCurl,
}

impl App {
    /// All apps.
    pub const ALL: [App; 2] = [App::Builtin, App::NginxCurl];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            App::Builtin => "builtin",
            App::NginxCurl => "nginx-curl",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Result<Self, String> {
        App::ALL
            .into_iter()
            .find(|a| a.name() == s.trim())
            .ok_or_else(|| format!("unknown app `{s}`: use builtin or nginx-curl"))
    }
}

/// Most response files nginx serves per run (responses `n` and `n + FILES`
/// are then the same file).
const MAX_FILES: usize = 256;

/// Most bytes of response files per run.
const MAX_DOCROOT: usize = 256 << 20;

/// Everything one run needs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The emulated link.
    pub scenario: Scenario,
    /// The path under test.
    pub mode: Mode,
    /// What the server answers with.
    pub workload: Arc<Workload>,
    /// How clients use their connections.
    pub traffic: Traffic,
    /// How long clients keep starting new requests.
    pub duration: Duration,
    /// How long requests still in flight at the end may take to finish.
    pub grace: Duration,
    /// Concurrent clients.
    pub clients: usize,
    /// Bytes per response.
    pub response_size: usize,
    /// Seed of the link's loss draws.
    pub seed: u64,
    /// Model settings of the tunnel proxies.
    pub model: ModelOpts,
    /// Tunnel runs: how the link carries frames (ignored by direct runs).
    pub link: LinkChoice,
    /// The server and client programs.
    pub app: App,
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// The emulated link.
    pub scenario: Scenario,
    /// The path under test.
    pub mode: Mode,
    /// The tunnel's link mode (a [`LinkChoice`] name; `-` for direct and
    /// relay).
    pub link_mode: &'static str,
    /// The path's name in reports: the mode, with `+bbr` or `+fec` for
    /// tunnel runs in those link modes.
    pub path: String,
    /// The workload's name.
    pub workload: String,
    /// The traffic shape.
    pub traffic: Traffic,
    /// The server and client programs.
    pub app: App,
    /// Bytes per response.
    pub response_bytes: u64,
    /// Bytes of the workload the responses are cut from (responses longer
    /// than this repeat it, which flatters compression).
    pub workload_bytes: u64,
    /// Concurrent clients.
    pub clients: u64,
    /// Seconds from the first request to the last response.
    pub elapsed_s: f64,
    /// Requests (exchanges) started.
    pub requests: u64,
    /// Responses that arrived complete and byte-exact.
    pub complete: u64,
    /// Responses that arrived but differed from the expected bytes.
    pub corrupt: u64,
    /// Requests that failed with an I/O error.
    pub errors: u64,
    /// Requests still unfinished when the grace period ran out.
    pub unfinished: u64,
    /// Application bytes both ways: requests plus complete responses (with
    /// `nginx-curl`: HTTP request and response headers included).
    pub app_bytes: u64,
    /// Payload bytes the link delivered client → server (TCP payload or UDP
    /// datagrams, without IP/UDP/TCP headers); 0 where no emulator counts
    /// them (`loopback`).
    pub link_bytes_up: u64,
    /// Payload bytes the link delivered server → client.
    pub link_bytes_down: u64,
    /// UDP datagrams dropped by random loss or a full queue.
    pub link_packets_dropped: u64,
    /// `app_bytes / (link_bytes_up + link_bytes_down)`; 0 where link bytes
    /// are not counted.
    pub ratio: f64,
    /// Response bytes per second, in bits per second.
    pub goodput_bps: f64,
    /// Complete, byte-exact exchanges per second.
    pub exchanges_per_s: f64,
    /// Response bytes compared byte for byte with what the server sent and
    /// found equal.
    pub bytes_verified: u64,
    /// Median request latency, milliseconds: connect to last byte, or for
    /// `interactive` request to last byte on the open connection.
    pub latency_p50_ms: f64,
    /// 99th percentile request latency, milliseconds.
    pub latency_p99_ms: f64,
    /// Median request latency, microseconds.
    pub latency_p50_us: f64,
    /// 99th percentile request latency, microseconds.
    pub latency_p99_us: f64,
    /// Slowest request, microseconds.
    pub latency_max_us: f64,
    /// Tunnel runs: both proxies' `limits.flush_idle` (their defaults; the
    /// bench sets none), milliseconds.
    pub flush_idle_ms: Option<f64>,
    /// Tunnel runs: both proxies' `limits.flush_max`, milliseconds.
    pub flush_max_ms: Option<f64>,
    /// CPU seconds of this whole process during the run (clients, server,
    /// relay and both proxies, model included).
    pub cpu_s: f64,
    /// Frames sent by either proxy, by codec.
    pub frames: BTreeMap<String, u64>,
}

impl RunSpec {
    /// The path's name in reports.
    pub fn path(&self) -> String {
        if self.mode.is_tunnel() {
            format!("{}{}", self.mode.name(), self.link.suffix())
        } else {
            self.mode.name().to_string()
        }
    }
}

/// Counters the clients share.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Requests started; also the index of the next response asked for.
    pub(crate) next: AtomicU64,
    pub(crate) complete: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) unfinished: AtomicU64,
    pub(crate) app_bytes: AtomicU64,
    pub(crate) response_bytes: AtomicU64,
}

impl Tally {
    /// Adds `n` to counter `c`.
    pub(crate) fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// The measured path: what clients connect to and how its link is counted.
/// The TCP link relays are `None` where no link is emulated.
enum Path {
    Direct(Option<TcpRelay>),
    Relay(PlainRelay, Option<TcpRelay>),
    Quic(QuicRelay),
    Tunnel(Box<Pair>),
}

impl Path {
    /// Starts the path of `spec` in front of `server`; returns it and where
    /// clients connect.
    async fn start(spec: &RunSpec, server: SocketAddr) -> Result<(Path, SocketAddr)> {
        let link = spec.scenario.link(spec.seed);
        let emulator = || async {
            match link.clone() {
                Some(link) => TcpRelay::start(local(), server, link)
                    .await
                    .map(Some)
                    .context("starting the TCP link relay"),
                None => Ok(None),
            }
        };
        Ok(match spec.mode {
            Mode::Direct => {
                let relay = emulator().await?;
                let addr = relay.as_ref().map_or(server, TcpRelay::local_addr);
                (Path::Direct(relay), addr)
            }
            Mode::Relay => {
                let link = emulator().await?;
                let to = link.as_ref().map_or(server, TcpRelay::local_addr);
                let relay = PlainRelay::start(local(), to)
                    .await
                    .context("starting the plain TCP relay")?;
                let addr = relay.local_addr();
                (Path::Relay(relay, link), addr)
            }
            Mode::Quic => {
                let relay = QuicRelay::start(local(), server, link)
                    .await
                    .context("starting the QUIC relay")?;
                let addr = relay.local_addr();
                (Path::Quic(relay), addr)
            }
            m => {
                let pair =
                    Pair::start(m.name(), server, link, &spec.model, spec.link.toml()).await?;
                let addr = pair.addr;
                (Path::Tunnel(Box::new(pair)), addr)
            }
        })
    }

    fn stats(&self) -> LinkStats {
        let relay = match self {
            Path::Direct(r) | Path::Relay(_, r) => r.as_ref().map(TcpRelay::stats),
            Path::Quic(q) => q.link.as_ref().map(crate::link::UdpRelay::stats),
            Path::Tunnel(p) => p.relay.as_ref().map(crate::link::UdpRelay::stats),
        };
        relay.unwrap_or_default()
    }

    /// The tunnel's flush settings, in milliseconds.
    fn flush_ms(&self) -> (Option<f64>, Option<f64>) {
        match self {
            Path::Tunnel(p) => (
                Some(p.flush.0.as_secs_f64() * 1e3),
                Some(p.flush.1.as_secs_f64() * 1e3),
            ),
            _ => (None, None),
        }
    }

    async fn shutdown(self) {
        match self {
            Path::Direct(r) => drop(r),
            Path::Relay(p, r) => {
                p.shutdown();
                drop(r);
            }
            Path::Quic(q) => drop(q),
            Path::Tunnel(p) => p.shutdown().await,
        }
    }
}

/// Runs one scenario × mode × workload and measures it.
pub async fn run_one(spec: &RunSpec) -> Result<RunResult> {
    anyhow::ensure!(
        !(spec.traffic == Traffic::Interactive && spec.app == App::NginxCurl),
        "interactive traffic needs --app builtin: curl makes one connection per request"
    );
    let server = Server::start(spec).await?;
    let client_app = server.client_app();
    let (path, addr) = Path::start(spec, server.addr()).await?;
    let link0 = path.stats();
    let frames0 = frame_counts();
    let cpu0 = cpu_seconds();
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let end = start + spec.duration;
    let hard = end + spec.grace;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..spec.clients.max(1) {
        let (tally, workload, size) = (tally.clone(), spec.workload.clone(), spec.response_size);
        if spec.traffic == Traffic::Interactive {
            clients.spawn(crate::interactive::client(
                addr, tally, workload, size, end, hard,
            ));
        } else {
            let app = client_app.clone();
            clients.spawn(client(addr, app, tally, workload, size, end, hard));
        }
    }
    let mut latencies = Vec::new();
    while let Some(r) = clients.join_next().await {
        latencies.extend(r.context("client task")?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu0;
    let link1 = path.stats();
    let frames1 = frame_counts();
    let (flush_idle_ms, flush_max_ms) = path.flush_ms();
    // Let the clients' closes cross the link before the proxies stop, so
    // shutdown does not cut streams that are still closing.
    tokio::time::sleep(spec.scenario.rtt * 2 + Duration::from_millis(200)).await;
    path.shutdown().await;
    server.stop();

    let up = link1.up.bytes_delivered - link0.up.bytes_delivered;
    let down = link1.down.bytes_delivered - link0.down.bytes_delivered;
    let dropped = |s: &LinkStats| {
        s.up.packets_lost
            + s.up.packets_overflowed
            + s.down.packets_lost
            + s.down.packets_overflowed
    };
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let app_bytes = get(&tally.app_bytes);
    let frames = frames1
        .into_iter()
        .map(|(k, v)| {
            let before = frames0.get(&k).copied().unwrap_or(0);
            (k, v.saturating_sub(before))
        })
        .filter(|(_, v)| *v > 0)
        .collect();
    let latency = Summary::of(&mut latencies);
    let complete = get(&tally.complete);
    Ok(RunResult {
        scenario: spec.scenario.clone(),
        mode: spec.mode,
        link_mode: if spec.mode.is_tunnel() {
            spec.link.name()
        } else {
            "-"
        },
        path: spec.path(),
        workload: spec.workload.name.clone(),
        traffic: spec.traffic,
        app: spec.app,
        response_bytes: u64::try_from(spec.response_size).unwrap_or(u64::MAX),
        workload_bytes: u64::try_from(spec.workload.len()).unwrap_or(u64::MAX),
        clients: u64::try_from(spec.clients.max(1)).unwrap_or(u64::MAX),
        elapsed_s: elapsed,
        requests: get(&tally.next),
        complete,
        corrupt: get(&tally.corrupt),
        errors: get(&tally.errors),
        unfinished: get(&tally.unfinished),
        app_bytes,
        link_bytes_up: up,
        link_bytes_down: down,
        link_packets_dropped: dropped(&link1) - dropped(&link0),
        ratio: if up + down == 0 {
            0.0
        } else {
            app_bytes as f64 / (up + down) as f64
        },
        goodput_bps: get(&tally.response_bytes) as f64 * 8.0 / elapsed.max(1e-9),
        exchanges_per_s: complete as f64 / elapsed.max(1e-9),
        bytes_verified: get(&tally.response_bytes),
        latency_p50_ms: latency.p50_us / 1e3,
        latency_p99_ms: latency.p99_us / 1e3,
        latency_p50_us: latency.p50_us,
        latency_p99_us: latency.p99_us,
        latency_max_us: latency.max_us,
        flush_idle_ms,
        flush_max_ms,
        cpu_s,
        frames,
    })
}

/// The server behind the measured path.
enum Server {
    /// [`serve`]'s task.
    Builtin(SocketAddr, tokio::task::JoinHandle<()>),
    /// nginx over a docroot of response files in `dir` (removed at stop).
    Nginx {
        nginx: Nginx,
        dir: std::path::PathBuf,
        curl: std::path::PathBuf,
        files: u64,
    },
}

/// How clients ask for response `n`.
#[derive(Clone)]
enum ClientApp {
    /// `GET <n>` on a plain TCP connection.
    Builtin,
    /// curl fetching `/r/<n mod files>`.
    Curl {
        curl: std::path::PathBuf,
        files: u64,
    },
}

impl Server {
    async fn start(spec: &RunSpec) -> Result<Server> {
        match spec.app {
            App::Builtin => {
                let persistent = spec.traffic == Traffic::Interactive;
                let (addr, task) =
                    serve(spec.workload.clone(), spec.response_size, persistent).await?;
                Ok(Server::Builtin(addr, task))
            }
            App::NginxCurl => {
                let tools = Tools::find().context("--app nginx-curl")?;
                let dir = crate::scratch("nginx")?;
                let www = dir.join("www");
                let files = write_docroot(&www, &spec.workload, spec.response_size)?;
                let nginx = Nginx::start(&tools.nginx, &dir, &www).await?;
                Ok(Server::Nginx {
                    nginx,
                    dir,
                    curl: tools.curl,
                    files,
                })
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Server::Builtin(addr, _) => *addr,
            Server::Nginx { nginx, .. } => nginx.addr,
        }
    }

    fn client_app(&self) -> ClientApp {
        match self {
            Server::Builtin(..) => ClientApp::Builtin,
            Server::Nginx { curl, files, .. } => ClientApp::Curl {
                curl: curl.clone(),
                files: *files,
            },
        }
    }

    fn stop(self) {
        match self {
            Server::Builtin(_, task) => task.abort(),
            Server::Nginx { nginx, dir, .. } => {
                drop(nginx);
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// Writes responses `0..files` as `www/r/<n>`; returns `files`: as many
/// distinct responses as the workload has (at most [`MAX_FILES`] and
/// [`MAX_DOCROOT`] bytes, at least one).
fn write_docroot(www: &std::path::Path, workload: &Workload, size: usize) -> Result<u64> {
    let dir = www.join("r");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = workload
        .len()
        .div_ceil(size.max(1))
        .min(MAX_FILES)
        .min(MAX_DOCROOT / size.max(1))
        .max(1);
    let files = u64::try_from(files).unwrap_or(1);
    for n in 0..files {
        let path = dir.join(n.to_string());
        std::fs::write(&path, workload.response(n, size))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files)
}

/// The response server: reads `GET <n>` and answers with response `n`, then
/// closes the connection, or with `persistent` waits for the next request on
/// it.
async fn serve(
    workload: Arc<Workload>,
    size: usize,
    persistent: bool,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(local())
        .await
        .context("binding the response server")?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let workload = workload.clone();
            tokio::spawn(async move {
                if sock.set_nodelay(true).is_err() {
                    return;
                }
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                loop {
                    let mut line = String::new();
                    match (&mut r).take(MAX_REQUEST).read_line(&mut line).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let Some(n) = parse_request(&line) else {
                        return;
                    };
                    if w.write_all(&workload.response(n, size)).await.is_err() {
                        return;
                    }
                    if !persistent {
                        let _ = w.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, task))
}

/// The response index of a request line: `GET <n>`, then anything after a
/// space.
pub(crate) fn parse_request(line: &str) -> Option<u64> {
    let rest = line.trim_end_matches(['\r', '\n']).strip_prefix("GET ")?;
    rest.split(' ').next()?.parse().ok()
}

/// One client: exchanges until `end`, a connection each; returns its
/// latencies.
async fn client(
    addr: SocketAddr,
    app: ClientApp,
    tally: Arc<Tally>,
    workload: Arc<Workload>,
    size: usize,
    end: Instant,
    hard: Instant,
) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let add = Tally::add;
    while Instant::now() < end {
        let mut n = tally.next.fetch_add(1, Ordering::Relaxed);
        let t0 = Instant::now();
        let fetch = async {
            match &app {
                ClientApp::Builtin => {
                    let request = format!("GET {n}\n");
                    let body = exchange(addr, request.as_bytes()).await?;
                    Ok::<_, anyhow::Error>((body, request.len()))
                }
                ClientApp::Curl { curl, files } => {
                    n %= files;
                    let url = format!("http://{addr}/r/{n}");
                    let left = hard.saturating_duration_since(Instant::now());
                    let f = curl_get(curl, &url, left).await?;
                    anyhow::ensure!(f.status == 200, "HTTP status {}", f.status);
                    Ok((f.body, usize::try_from(f.overhead).unwrap_or(usize::MAX)))
                }
            }
        };
        match tokio::time::timeout_at(hard, fetch).await {
            Err(_) => {
                add(&tally.unfinished, 1);
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, n, "request failed");
                add(&tally.errors, 1);
                // Don't spin on a dead path.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Ok((body, overhead))) => {
                latencies.push(t0.elapsed());
                tracing::debug!(n, ms = t0.elapsed().as_millis(), "exchange done");
                if body == workload.response(n, size) {
                    add(&tally.complete, 1);
                    add(&tally.app_bytes, overhead + body.len());
                    add(&tally.response_bytes, body.len());
                } else {
                    add(&tally.corrupt, 1);
                }
            }
        }
    }
    latencies
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(request).await?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).await?;
    Ok(body)
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// User plus system CPU time of this process, from `/proc/self/stat`
/// (clock ticks of 1/100 s, the Linux `USER_HZ`); 0 where unavailable.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at field 3.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after `)`.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (tick(11) + tick(12)) as f64 / 100.0
}

/// `llmpack_frames_total` of the bench tunnel's sent frames (`direction="out"`,
/// both roles), by codec, from this process's metrics.
fn frame_counts() -> BTreeMap<String, u64> {
    parse_frames(&llmpack_proxy::metrics_http::render())
}

fn parse_frames(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("llmpack_frames_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once('}') else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(key, _)| key.trim() == k)
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
        };
        if label("tunnel").as_deref() != Some(TUNNEL)
            || label("direction").as_deref() != Some("out")
        {
            continue;
        }
        let (Some(codec), Ok(v)) = (label("codec"), value.trim().parse::<u64>()) else {
            continue;
        };
        *out.entry(codec).or_insert(0) += v;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_from_metrics_text() {
        let text = "# TYPE llmpack_frames_total counter\n\
            llmpack_frames_total{tunnel=\"bench\",role=\"sender\",direction=\"out\",codec=\"zstd\"} 3\n\
            llmpack_frames_total{tunnel=\"bench\",role=\"receiver\",direction=\"out\",codec=\"zstd\"} 4\n\
            llmpack_frames_total{tunnel=\"bench\",role=\"receiver\",direction=\"in\",codec=\"zstd\"} 3\n\
            llmpack_frames_total{tunnel=\"other\",role=\"sender\",direction=\"out\",codec=\"lm\"} 9\n";
        let f = parse_frames(text);
        assert_eq!(f.len(), 1);
        assert_eq!(f["zstd"], 7);
    }

    #[test]
    fn requests_and_modes() {
        assert_eq!(parse_request("GET 42\n"), Some(42));
        assert_eq!(parse_request("GET 42 HTTP/1.1 Host: x\n"), Some(42));
        assert_eq!(parse_request("GET 42x\n"), None);
        assert_eq!(parse_request("PUT 1\n"), None);
        assert_eq!(Mode::parse("relay"), Ok(Mode::Relay));
        assert!(!Mode::Relay.is_tunnel() && !Mode::Direct.is_tunnel());
        assert_eq!(Mode::parse("quic"), Ok(Mode::Quic));
        assert!(!Mode::Quic.is_tunnel());
        assert!(Mode::Zstd.is_tunnel());
        assert!(cpu_seconds() >= 0.0);
    }
}
