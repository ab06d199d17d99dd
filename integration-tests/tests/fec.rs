//! The datagram-fec link mode: the real tunnel over real QUIC through the
//! link emulator (llmpack_bench::link::UdpRelay) with random loss, in front
//! of a real TCP echo server; every byte checked with SHA-256.

mod common;

use std::time::Duration;

use common::*;
use llmpack_bench::link::{LinkSpec, UdpRelay};
use llmpack_proxy::Running;

const FEC: &str = "mode = \"datagram-fec\"";

/// Receiver, emulated link in front of it, sender dialling the emulator.
async fn lossy_pair(
    dir: &std::path::Path,
    o: &Opts,
    spec: LinkSpec,
) -> (Running, UdpRelay, Running) {
    // RUST_LOG=llmpack_proxy=debug shows what the FEC link does.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    keys(dir);
    let echo = echo_server().await;
    let tunnels = [tunnel("e", "zstd", echo)];
    let rc = receiver_config(dir, "127.0.0.1:0", &tunnels, o);
    let receiver = llmpack_proxy::start(rc).await.unwrap();
    let relay = UdpRelay::start("127.0.0.1:0".parse().unwrap(), receiver.link.unwrap(), spec)
        .await
        .unwrap();
    let sc = sender_config(dir, relay.local_addr(), &tunnels, o);
    let sender = llmpack_proxy::start(sc).await.unwrap();
    assert!(link_up(&sender, Duration::from_secs(20)).await, "link up");
    (receiver, relay, sender)
}

/// `n` connections at once, each echoing text and random bytes; all exact.
async fn echo_all(sender: &Running, n: usize, bytes: usize) {
    let addr = sender.tunnels["e"];
    let mut jobs = Vec::new();
    for i in 0..n {
        let mut data = real_text(bytes / 2)[..bytes / 2].to_vec();
        data.extend_from_slice(&random(bytes - bytes / 2, i as u64 + 7));
        jobs.push(tokio::spawn(async move {
            let back = exchange(addr, &data).await.unwrap();
            assert_eq!(
                sha(&back),
                sha(&data),
                "connection {i}: {} bytes",
                data.len()
            );
        }));
    }
    for j in jobs {
        j.await.unwrap();
    }
}

fn fec_opts(extra: &str) -> Opts {
    let link = format!("{FEC}\n{extra}");
    Opts {
        sender_link: link.clone(),
        receiver_link: link,
        ..Opts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_loss_is_repaired_and_byte_exact() {
    let dir = scratch("fec10");
    let spec = LinkSpec::symmetric(Some(20_000_000), Duration::from_millis(40), 0.10, 11);
    let (receiver, relay, sender) = lossy_pair(&dir, &fec_opts(""), spec).await;
    let recovered = metric("llmpack_fec_blocks_recovered_total");
    let sent = metric("llmpack_fec_symbols_sent_total");
    echo_all(&sender, 4, 128 << 10).await;
    let stats = relay.stats();
    assert!(
        stats.up.packets_lost > 0 && stats.down.packets_lost > 0,
        "the emulator dropped datagrams both ways: {stats:?}"
    );
    assert!(metric("llmpack_fec_symbols_sent_total") > sent);
    assert!(
        metric("llmpack_fec_blocks_recovered_total") > recovered,
        "lost symbols were rebuilt from repair symbols"
    );
    sender.shutdown().await;
    receiver.shutdown().await;
}

/// With no top-ups allowed, blocks that repair cannot finish go on the
/// reliable fallback stream; at 20 % loss nothing is lost either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_percent_loss_with_fallbacks_loses_nothing() {
    let dir = scratch("fec20");
    let spec = LinkSpec::symmetric(Some(20_000_000), Duration::from_millis(40), 0.20, 12);
    let o = fec_opts("[link.fec]\nmax_topups = 0\nrepair_ratio = 0.02\nmin_ratio = 0.02");
    let (receiver, _relay, sender) = lossy_pair(&dir, &o, spec).await;
    let fallbacks = metric("llmpack_fec_fallbacks_total");
    echo_all(&sender, 3, 96 << 10).await;
    assert!(
        metric("llmpack_fec_fallbacks_total") > fallbacks,
        "some blocks went on the fallback stream"
    );
    // The link still carries new connections afterwards.
    echo_all(&sender, 1, 8 << 10).await;
    sender.shutdown().await;
    receiver.shutdown().await;
}

/// One end in datagram-fec mode, the other in stream mode: both see that
/// the other does not take datagrams, and the link runs in stream mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_mismatch_falls_back_to_streams() {
    for (s, r) in [(FEC, ""), ("", FEC)] {
        let dir = scratch(if s.is_empty() { "fecmix-r" } else { "fecmix-s" });
        let o = Opts {
            sender_link: s.into(),
            receiver_link: r.into(),
            ..Opts::default()
        };
        let spec = LinkSpec::symmetric(None, Duration::from_millis(2), 0.0, 1);
        let (receiver, _relay, sender) = lossy_pair(&dir, &o, spec).await;
        echo_all(&sender, 2, 64 << 10).await;
        sender.shutdown().await;
        receiver.shutdown().await;
    }
}

/// In datagram-fec mode the client's data overtakes `Open` on the link; a
/// refused connection drops it, closes the client, and leaves the link
/// carrying the next connections byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_target_closes_the_client_and_the_link_goes_on() {
    let dir = scratch("fec-refused");
    keys(&dir);
    let closed = closed_port();
    let echo = echo_server().await;
    let tunnels = [tunnel("gone", "zstd", closed), tunnel("e", "zstd", echo)];
    let Pair { receiver, sender } = pair(&dir, &tunnels, &fec_opts("")).await;
    assert!(link_up(&sender, Duration::from_secs(10)).await);
    for _ in 0..3 {
        assert!(closed_soon(sender.tunnels["gone"], Duration::from_secs(5)).await);
    }
    assert!(*sender.link_up.borrow());
    echo_all(&sender, 2, 32 << 10).await;
    sender.shutdown().await;
    receiver.shutdown().await;
}

/// The sender's `Open` is held off its QUIC stream, as if every packet that
/// carries it were lost: the receiver opens each connection from its first
/// FEC item, and the bytes go through exact. Released, the late streams
/// close cleanly and the link goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_open_from_their_first_item_without_the_stream() {
    let dir = scratch("fec-held-open");
    keys(&dir);
    let echo = echo_server().await;
    let tunnels = [tunnel("held", "zstd", echo)];
    let Pair { receiver, sender } = pair(&dir, &tunnels, &fec_opts("")).await;
    assert!(link_up(&sender, Duration::from_secs(10)).await);
    let addr = sender.tunnels["held"];
    let exact = |i: u64| async move {
        let mut data = real_text(20_000)[..20_000].to_vec();
        data.extend_from_slice(&random(30_000, i));
        let back = tokio::time::timeout(Duration::from_secs(30), exchange(addr, &data))
            .await
            .expect("the connection did not wait for its stream")
            .unwrap();
        assert_eq!(sha(&back), sha(&data), "connection {i}");
    };
    let hold = llmpack_proxy::testing::hold_stream_open("held");
    for i in 0..3 {
        exact(i).await;
    }
    drop(hold);
    exact(9).await;
    // The late streams found their connections: the link is still up and
    // nothing was refused.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(*sender.link_up.borrow());
    exact(10).await;
    sender.shutdown().await;
    receiver.shutdown().await;
}
