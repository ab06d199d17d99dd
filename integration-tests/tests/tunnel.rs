//! The real tunnel: sender and receiver in-process on 127.0.0.1:0 over real
//! QUIC, in front of real TCP servers, with byte-exact (SHA-256) checks.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;

fn zstd_opts() -> Opts {
    Opts {
        limits: "max_connections = 512".into(),
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_through_raw_and_zstd_is_byte_exact() {
    let dir = scratch("echo");
    keys(&dir);
    let echo = echo_server().await;
    let p = pair(
        &dir,
        &[tunnel("z", "zstd", echo), tunnel("r", "raw", echo)],
        &zstd_opts(),
    )
    .await;
    assert!(link_up(&p.sender, Duration::from_secs(10)).await);
    let text = real_text(300_000);
    let mut mixed = text.clone();
    mixed.extend_from_slice(&random(200_000, 1));
    mixed.extend_from_slice(&text[..50_000]);
    for name in ["z", "r"] {
        for data in [&b""[..], b"x", &text[..1000], &mixed[..]] {
            let back = exchange(p.addr(name), data).await.unwrap();
            assert_eq!(sha(&back), sha(data), "tunnel {name}, {} bytes", data.len());
        }
    }
    p.shutdown().await;
}

/// >= 100 MB of mixed text and random bytes through the fast codecs,
/// 8 connections at a time, every byte checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_megabytes_mixed_is_byte_exact() {
    let dir = scratch("bulk");
    keys(&dir);
    let echo = echo_server().await;
    let p = pair(
        &dir,
        &[tunnel("z", "zstd", echo), tunnel("r", "raw", echo)],
        &zstd_opts(),
    )
    .await;
    assert!(link_up(&p.sender, Duration::from_secs(10)).await);
    let text = Arc::new(real_text(4 << 20));
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let text = text.clone();
        let addr = p.addr(if i % 2 == 0 { "z" } else { "r" });
        tasks.push(tokio::spawn(async move {
            // 12.5 MiB per connection: text and random in 1 MiB blocks.
            let mut data = Vec::with_capacity(13 << 20);
            for b in 0..25u64 {
                if (b + i) % 3 == 0 {
                    data.extend_from_slice(&random(512 << 10, i * 100 + b));
                } else {
                    let at = usize::try_from((b * 7 + i * 3) % 7).unwrap() * (512 << 10);
                    data.extend_from_slice(&text[at..at + (512 << 10)]);
                }
            }
            let back = exchange(addr, &data).await.unwrap();
            assert_eq!(sha(&back), sha(&data), "connection {i}");
            data.len()
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert!(total >= 100_000_000, "{total} bytes");
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections() {
    let dir = scratch("many");
    keys(&dir);
    let echo = echo_server().await;
    let p = pair(&dir, &[tunnel("z", "zstd", echo)], &zstd_opts()).await;
    assert!(link_up(&p.sender, Duration::from_secs(10)).await);
    let text = Arc::new(real_text(1 << 20));
    let addr = p.addr("z");
    let start = Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for i in 0..200usize {
        let text = text.clone();
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            // Every connection is open before any finishes.
            start.wait().await;
            let mut data = text[i * 4096..i * 4096 + 6000].to_vec();
            data.extend_from_slice(&random(2000, i as u64));
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut r, mut w) = s.split();
            let wr = async {
                w.write_all(&data).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut back = Vec::new();
            let (_, n) = tokio::join!(wr, r.read_to_end(&mut back));
            n.unwrap();
            assert_eq!(sha(&back), sha(&data), "connection {i}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_is_enforced() {
    let dir = scratch("limit");
    keys(&dir);
    let echo = echo_server().await;
    let o = Opts {
        limits: "max_connections = 2".into(),
        ..Opts::default()
    };
    let p = pair(&dir, &[tunnel("z", "zstd", echo)], &o).await;
    assert!(link_up(&p.sender, Duration::from_secs(10)).await);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(p.addr("z")).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        held.push(s);
    }
    assert!(
        closed_soon(p.addr("z"), Duration::from_secs(5)).await,
        "third connection must be closed"
    );
    drop(held);
    // Slots come back once the held connections end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(exchange(p.addr("z"), b"again").await.unwrap(), b"again");
    p.shutdown().await;
}

/// More concurrent connections than quinn's default stream limit (1024):
/// the link's limit follows `limits.max_connections`, and every one is
/// served while all are open at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_connections_than_1024_are_all_served() {
    let dir = scratch("many");
    keys(&dir);
    let echo = echo_server().await;
    let o = Opts {
        limits: "max_connections = 1500".into(),
        ..Opts::default()
    };
    let p = pair(&dir, &[tunnel("z", "raw", echo)], &o).await;
    assert!(link_up(&p.sender, Duration::from_secs(10)).await);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let n = 1200;
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = tokio::net::TcpStream::connect(p.addr("z")).await.unwrap();
        s.write_all(format!("{i:06}").as_bytes()).await.unwrap();
        held.push(s);
    }
    // All open; each answer checked while the others still hold their streams.
    let answers = held.into_iter().enumerate().map(|(i, mut s)| async move {
        let mut b = [0u8; 6];
        let got = tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut b)).await;
        (
            i,
            got.is_ok_and(|r| r.is_ok()) && b == *format!("{i:06}").as_bytes(),
            s,
        )
    });
    let results = futures::future::join_all(answers).await;
    let bad: Vec<usize> = results.iter().filter(|r| !r.1).map(|r| r.0).collect();
    assert!(
        bad.is_empty(),
        "{} of {n} connections not served: {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    drop(results);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_target_closes_the_client() {
    let dir = scratch("refused");
    keys(&dir);
    let closed = closed_port();
    let p = pair(&dir, &[tunnel("z", "zstd", closed)], &zstd_opts()).await;
    assert!(link_up(&p.sender, Duration::from_secs(10)).await);
    assert!(closed_soon(p.addr("z"), Duration::from_secs(5)).await);
    // The link survives a refused target.
    assert!(*p.sender.link_up.borrow());
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpinned_certificate_gets_no_link() {
    let dir = scratch("auth");
    keys(&dir);
    let echo = echo_server().await;
    let o = Opts {
        sender_auth: Some("certificate = \"intruder.crt\"\nkey = \"intruder.key\"".into()),
        ..zstd_opts()
    };
    let p = pair(&dir, &[tunnel("z", "zstd", echo)], &o).await;
    assert!(
        !link_up(&p.sender, Duration::from_secs(3)).await,
        "an unpinned client certificate must not get a link"
    );
    assert!(closed_soon(p.addr("z"), Duration::from_secs(15)).await);
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_accepts_the_right_token_only() {
    let dir = scratch("token");
    keys(&dir);
    let echo = echo_server().await;
    let good = Opts {
        sender_auth: Some("token = \"correct horse battery staple\"".into()),
        receiver_auth: Some("token = \"correct horse battery staple\"".into()),
        ..zstd_opts()
    };
    let p = pair(&dir, &[tunnel("z", "zstd", echo)], &good).await;
    assert!(link_up(&p.sender, Duration::from_secs(10)).await);
    assert_eq!(
        exchange(p.addr("z"), b"with token").await.unwrap(),
        b"with token"
    );
    p.shutdown().await;

    let bad = Opts {
        sender_auth: Some("token = \"incorrect horse battery staple\"".into()),
        receiver_auth: Some("token = \"correct horse battery staple\"".into()),
        ..zstd_opts()
    };
    let p = pair(&dir, &[tunnel("z", "zstd", echo)], &bad).await;
    assert!(
        !link_up(&p.sender, Duration::from_secs(3)).await,
        "a wrong token must not get a link"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_model_is_refused() {
    let dir = scratch("model");
    keys(&dir);
    let echo = echo_server().await;
    let p = pair_with(
        &dir,
        &[tunnel("m", "lm", echo)],
        &zstd_opts(),
        Some(toy_model(1, 7, 0.0)),
        Some(toy_model(2, 7, 0.0)),
    )
    .await;
    assert!(
        !link_up(&p.sender, Duration::from_secs(3)).await,
        "different models must not link"
    );
    p.shutdown().await;
}

/// Same model id, different numeric probe: the link comes up without model
/// coding, and traffic still arrives byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_mismatch_turns_model_coding_off() {
    let dir = scratch("probe");
    keys(&dir);
    let echo = echo_server().await;
    let o = Opts {
        model: "max_delay = \"3600s\"".into(),
        ..zstd_opts()
    };
    let p = pair_with(
        &dir,
        &[tunnel("m", "lm", echo)],
        &o,
        Some(toy_model(1, 7, 0.0)),
        Some(toy_model(1, 8, 0.5)),
    )
    .await;
    assert!(link_up(&p.sender, Duration::from_secs(10)).await);
    let data = real_text(100_000);
    assert_eq!(
        sha(&exchange(p.addr("m"), &data).await.unwrap()),
        sha(&data)
    );
    p.shutdown().await;
}

/// The receiver's model computes slightly different numbers but passed the
/// probe (the case the probe cannot catch): frames fail their checksum, are
/// resent model-free, contexts are rebuilt, and no byte differs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perturbed_predictor_is_recovered_by_resends() {
    let dir = scratch("perturb");
    keys(&dir);
    let echo = echo_server().await;
    let o = Opts {
        model: "max_delay = \"3600s\"".into(),
        limits: "frame = \"4KiB\"\nflush_idle = \"20ms\"".into(),
        ..Opts::default()
    };
    let before = resends();
    let p = pair_with(
        &dir,
        &[tunnel("m", "lm", echo)],
        &o,
        Some(toy_model(3, 9, 0.0)),
        Some(toy_model(3, 9, 2.0)),
    )
    .await;
    assert!(link_up(&p.sender, Duration::from_secs(10)).await);
    let mut data = markov(40_000, 1);
    data.extend_from_slice(&real_text(20_000));
    for _ in 0..2 {
        assert_eq!(
            sha(&exchange(p.addr("m"), &data).await.unwrap()),
            sha(&data)
        );
    }
    assert!(
        resends() > before,
        "the perturbed side must have caused resends"
    );
    p.shutdown().await;
}

/// The model runtime fails now and then on both ends: the failed frames are
/// resent model-free, the inference thread goes on serving, and no byte
/// differs or is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_model_calls_fail_only_their_frames() {
    let dir = scratch("modelfail");
    keys(&dir);
    let echo = echo_server().await;
    let o = Opts {
        model: "max_delay = \"3600s\"".into(),
        limits: "frame = \"4KiB\"".into(),
        ..Opts::default()
    };
    let (resends_before, failures_before) = (resends(), model_failures());
    let decode_failures_before = decode_failures();
    let p = pair_with(
        &dir,
        &[tunnel("m", "lm", echo)],
        &o,
        Some(failing_toy_model(4, 9, 3000, 9000)),
        Some(failing_toy_model(4, 9, 6000, 11000)),
    )
    .await;
    assert!(link_up(&p.sender, Duration::from_secs(10)).await);
    // Text the toy model codes better than zstd, so frames go lm and both
    // the encoders and the decoders make model calls.
    let data = markov(40_000, 2);
    for _ in 0..2 {
        assert_eq!(
            sha(&exchange(p.addr("m"), &data).await.unwrap()),
            sha(&data)
        );
    }
    assert!(
        model_failures() > failures_before,
        "the injected failures must have hit frames"
    );
    assert!(
        decode_failures() > decode_failures_before,
        "some injected failures must have hit a decoder"
    );
    assert!(
        resends() > resends_before,
        "failed frames are resent: {} model failures, {} resends\n{}",
        model_failures() - failures_before,
        resends() - resends_before,
        llmpack_proxy::metrics_http::render()
            .lines()
            .filter(|l| l.contains("failures")
                || l.contains("resends")
                || l.starts_with("llmpack_frames_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    p.shutdown().await;
}

fn decode_failures() -> f64 {
    metric("llmpack_decode_failures_total")
}

fn model_failures() -> f64 {
    metric("llmpack_model_failures_total")
}

fn resends() -> f64 {
    metric("llmpack_resends_total")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_survives_a_receiver_restart() {
    let dir = scratch("restart");
    keys(&dir);
    let echo = echo_server().await;
    let t = [tunnel("z", "zstd", echo)];
    let o = zstd_opts();
    let p = pair(&dir, &t, &o).await;
    assert!(link_up(&p.sender, Duration::from_secs(10)).await);
    let link = p.receiver.link.unwrap();
    // A transfer in flight when the receiver goes away fails, visibly.
    let big = random(50 << 20, 5);
    let client = p.addr("z");
    let inflight = tokio::spawn(async move { exchange(client, &big).await.map(|b| b.len()) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let Pair { receiver, sender } = p;
    receiver.shutdown().await;
    let r = inflight.await.unwrap();
    assert!(
        r.map_or(true, |n| n < 50 << 20),
        "a cut transfer must not look complete"
    );
    // A new receiver on the same address: the sender reconnects by itself.
    // (The old endpoint's UDP socket is released once its connections
    // have drained; a restarted process would start with a fresh one.)
    let mut tries = 0;
    let receiver = loop {
        let rc = receiver_config(&dir, &link.to_string(), &t, &o);
        match llmpack_proxy::start(rc).await {
            Ok(r) => break r,
            Err(e) if tries < 100 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("restarting the receiver: {e:#}"),
        }
    };
    assert!(
        link_up(&sender, Duration::from_secs(20)).await,
        "sender must reconnect"
    );
    let data = real_text(200_000);
    assert_eq!(
        sha(&exchange(sender.tunnels["z"], &data).await.unwrap()),
        sha(&data)
    );
    sender.shutdown().await;
    receiver.shutdown().await;
}

/// With equal models the frames go `lm` (and decode byte-exact).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_models_code_with_the_model() {
    let dir = scratch("lm");
    keys(&dir);
    let echo = echo_server().await;
    let o = Opts {
        model: "max_delay = \"3600s\"".into(),
        limits: "frame = \"4KiB\"".into(),
        ..Opts::default()
    };
    let before = lm_frames();
    let p = pair_with(
        &dir,
        &[tunnel("m", "lm", echo)],
        &o,
        Some(toy_model(4, 1, 0.0)),
        Some(toy_model(4, 1, 0.0)),
    )
    .await;
    assert!(link_up(&p.sender, Duration::from_secs(10)).await);
    let data = markov(50_000, 2);
    assert_eq!(
        sha(&exchange(p.addr("m"), &data).await.unwrap()),
        sha(&data)
    );
    assert!(lm_frames() >= before + 20.0, "frames must go lm");
    p.shutdown().await;
}

fn lm_frames() -> f64 {
    llmpack_proxy::metrics_http::render()
        .lines()
        .filter(|l| l.starts_with("llmpack_frames_total") && l.contains("codec=\"lm\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The real default model over the real link: responses of a few hundred
/// KB of real text coded `lm` both ways, byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_round_trips_real_text() {
    let dir = scratch("real");
    keys(&dir);
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default");
    let body = Arc::new(real_text(usize_env("LLMPACK_TEST_LM_BYTES", 16 << 10)));
    let server = file_server(body.clone()).await;
    let o = Opts {
        model: format!(
            "dir = \"{}\"\nthreads = 2\nmax_delay = \"3600s\"",
            model.display()
        ),
        limits: "frame = \"8KiB\"".into(),
        ..Opts::default()
    };
    let before = lm_frames();
    let p = pair(&dir, &[tunnel("web", "lm", server)], &o).await;
    assert!(link_up(&p.sender, Duration::from_secs(30)).await);
    let t = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let addr = p.addr("web");
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let req = format!("GET /file/{i} HTTP/1.0\r\nHost: test\r\n\r\n");
            let back = exchange(addr, req.as_bytes()).await.unwrap();
            assert_eq!(sha(&back), sha(&body), "response {i}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!(
        "4 x {} bytes through lm in {:.1} s",
        body.len(),
        t.elapsed().as_secs_f64()
    );
    assert!(lm_frames() > before, "frames must go lm");
    p.shutdown().await;
}

fn usize_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A target that does not read: the client's writes stall once the bounded
/// buffers along the way are full (memory does not grow with what the
/// client sends), and every byte arrives once the target reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_target_gets_backpressure_not_memory() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = scratch("slow");
    keys(&dir);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        // Do not read until told to.
        let _ = go_rx.await;
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    let p = pair(&dir, &[tunnel("z", "raw", target)], &zstd_opts()).await;
    assert!(link_up(&p.sender, Duration::from_secs(10)).await);
    let data = Arc::new(random(64 << 20, 9));
    let c = tokio::net::TcpStream::connect(p.addr("z")).await.unwrap();
    let progress = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (mut r, mut w) = c.into_split();
    let writer = {
        let (data, progress) = (data.clone(), progress.clone());
        tokio::spawn(async move {
            let mut at = 0;
            while at < data.len() {
                let n = w.write(&data[at..]).await.unwrap();
                at += n;
                progress.store(at, std::sync::atomic::Ordering::Relaxed);
            }
            w.shutdown().await.unwrap();
            let mut sink = Vec::new();
            let _ = r.read_to_end(&mut sink).await;
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let written = progress.load(std::sync::atomic::Ordering::Relaxed);
    // Socket buffers on both sides, 1 MiB of unacknowledged frames, the QUIC
    // stream window (8 MiB) and small channels: far less than 64 MiB.
    assert!(
        written < 32 << 20,
        "{written} bytes accepted while the target reads nothing"
    );
    eprintln!("target not reading: the client got {written} bytes in before its writes stalled");
    let _ = go_tx.send(());
    let got = server.await.unwrap();
    writer.await.unwrap();
    assert_eq!(sha(&got), sha(&data[..]));
    p.shutdown().await;
}

/// A client that resets its connection: the target sees a reset too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reset_reaches_the_target() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = scratch("reset");
    keys(&dir);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut b = [0u8; 3];
        s.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"abc");
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
            .await
            .expect("the target hears about the reset")
    });
    let p = pair(&dir, &[tunnel("z", "zstd", target)], &zstd_opts()).await;
    assert!(link_up(&p.sender, Duration::from_secs(10)).await);
    let mut c = tokio::net::TcpStream::connect(p.addr("z")).await.unwrap();
    c.write_all(b"abc").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    #[allow(deprecated)]
    c.set_linger(Some(Duration::ZERO)).unwrap();
    drop(c);
    let r = server.await.unwrap();
    assert!(
        r.is_err(),
        "the target saw a clean end instead of a reset: {r:?}"
    );
    p.shutdown().await;
}
