//! The link emulator on real loopback sockets and real time: rates, delays,
//! loss and byte-exact delivery.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use llmpack_bench::link::{Direction, LinkSpec, TCP_CHUNK, TCP_OVERHEAD, TcpRelay, UdpRelay};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
};

const LOCAL: &str = "127.0.0.1:0";
const MS: Duration = Duration::from_millis(1);

fn local() -> SocketAddr {
    LOCAL.parse().expect("valid address")
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    SmallRng::seed_from_u64(seed).fill(&mut data[..]);
    data
}

/// What a sink saw of one connection.
struct Received {
    bytes: usize,
    first_read: usize,
    first_at: Instant,
    last_at: Instant,
}

/// Accepts `connections` connections and reads each to the end.
async fn sink(connections: usize) -> Result<(SocketAddr, JoinHandle<Result<Vec<Received>>>)> {
    let listener = TcpListener::bind(local()).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let mut readers = Vec::new();
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().await?;
            readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let n = stream.read(&mut buf).await?;
                let first_at = Instant::now();
                let (mut bytes, mut last_at) = (n, first_at);
                loop {
                    let n = stream.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    bytes += n;
                    last_at = Instant::now();
                }
                anyhow::Ok(Received {
                    bytes,
                    first_read: n,
                    first_at,
                    last_at,
                })
            }));
        }
        let mut out = Vec::new();
        for r in readers {
            out.push(r.await??);
        }
        Ok(out)
    });
    Ok((addr, task))
}

/// Sends `bytes_each` random bytes over each of `connections` connections
/// through a relay at `rate_bps`; returns measured payload goodput over the
/// expected one (rate less header overhead), counted from the first byte
/// any sink saw to the last.
async fn goodput_ratio(rate_bps: u64, bytes_each: usize, connections: usize) -> Result<f64> {
    let (server, sink) = sink(connections).await?;
    let spec = LinkSpec::symmetric(Some(rate_bps), 20 * MS, 0.0, 1);
    let relay = TcpRelay::start(local(), server, spec).await?;
    let mut senders = Vec::new();
    for i in 0..connections {
        let to = relay.local_addr();
        senders.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(to).await?;
            stream
                .write_all(&random_bytes(bytes_each, i as u64))
                .await?;
            stream.shutdown().await?;
            anyhow::Ok(())
        }));
    }
    for s in senders {
        s.await??;
    }
    let received = sink.await??;
    let total: usize = received.iter().map(|r| r.bytes).sum();
    ensure!(total == bytes_each * connections, "received {total} bytes");
    let first = received
        .iter()
        .min_by_key(|r| r.first_at)
        .context("no data")?;
    let last = received
        .iter()
        .map(|r| r.last_at)
        .max()
        .context("no data")?;
    let secs = (last - first.first_at).as_secs_f64();
    let measured = (total - first.first_read) as f64 * 8.0 / secs;
    let expected = rate_bps as f64 * TCP_CHUNK as f64 / (TCP_CHUNK + TCP_OVERHEAD) as f64;
    let ratio = measured / expected;
    println!(
        "rate {rate_bps} bit/s, {connections} connection(s): {measured:.0} bit/s payload \
         over {secs:.2} s, {:.2}% of the {expected:.0} expected",
        ratio * 100.0
    );
    let stats = relay.stats();
    ensure!(stats.up.bytes_delivered == total as u64);
    ensure!(stats.up.packets_overflowed == 0 && stats.up.packets_lost == 0);
    Ok(ratio)
}

fn assert_within_10_percent(ratio: f64) {
    assert!(
        (0.9..=1.1).contains(&ratio),
        "goodput is {ratio:.3} of the rate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_goodput_matches_1mbit() -> Result<()> {
    // About 3 s of payload.
    assert_within_10_percent(goodput_ratio(1_000_000, 364_000, 1).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_goodput_matches_64kbit() -> Result<()> {
    // About 3 s of payload: 17 chunks of 175 ms each.
    assert_within_10_percent(goodput_ratio(64_000, 23_800, 1).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_goodput_matches_10mbit() -> Result<()> {
    // About 2 s of payload.
    assert_within_10_percent(goodput_ratio(10_000_000, 2_430_000, 1).await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_share_one_bottleneck() -> Result<()> {
    // Two connections of about 1 s each at 1 Mbit/s: about 2 s together.
    assert_within_10_percent(goodput_ratio(1_000_000, 121_000, 2).await?);
    Ok(())
}

/// An echo server that returns everything it reads on every connection.
async fn tcp_echo() -> Result<SocketAddr> {
    let listener = TcpListener::bind(local()).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut rx, mut tx) = stream.into_split();
                let _ = tokio::io::copy(&mut rx, &mut tx).await;
                let _ = tx.shutdown().await;
            });
        }
    });
    Ok(addr)
}

fn assert_near(what: &str, got: Duration, want: Duration) {
    println!("{what}: {got:?} (want {want:?})");
    assert!(
        got >= want && got <= want + 25 * MS,
        "{what}: {got:?}, want {want:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_delay_gives_the_rtt() -> Result<()> {
    let spec = LinkSpec::symmetric(None, 80 * MS, 0.0, 1);
    let relay = TcpRelay::start(local(), tcp_echo().await?, spec).await?;
    let start = Instant::now();
    let mut stream = TcpStream::connect(relay.local_addr()).await?;
    stream.set_nodelay(true)?;
    let mut byte = [0u8; 1];
    stream.write_all(b"x").await?;
    stream.read_exact(&mut byte).await?;
    // One RTT of emulated handshake, then the round trip.
    assert_near("first echo", start.elapsed(), 160 * MS);
    for _ in 0..4 {
        let t = Instant::now();
        stream.write_all(b"x").await?;
        stream.read_exact(&mut byte).await?;
        assert_near("tcp ping", t.elapsed(), 80 * MS);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_delay_gives_the_rtt() -> Result<()> {
    let server = UdpSocket::bind(local()).await?;
    let server_addr = server.local_addr()?;
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = server.recv_from(&mut buf).await {
            let _ = server.send_to(&buf[..n], from).await;
        }
    });
    let spec = LinkSpec::symmetric(Some(10_000_000), 60 * MS, 0.0, 1);
    let relay = UdpRelay::start(local(), server_addr, spec).await?;
    let client = UdpSocket::bind(local()).await?;
    client.connect(relay.local_addr()).await?;
    let mut buf = [0u8; 2048];
    for _ in 0..4 {
        let t = Instant::now();
        client.send(&[7u8; 100]).await?;
        let n = client.recv(&mut buf).await?;
        ensure!(n == 100);
        assert_near("udp ping", t.elapsed(), 60 * MS);
    }
    let stats = relay.stats();
    ensure!(stats.up.packets_delivered == 4 && stats.down.packets_delivered == 4);
    Ok(())
}

/// Sends 5000 numbered datagrams through a relay with 10% loss and returns
/// the numbers that reached the server.
async fn udp_survivors(seed: u64) -> Result<BTreeSet<u32>> {
    const COUNT: u32 = 5000;
    let server = UdpSocket::bind(local()).await?;
    let mut up = Direction::new(None, 5 * MS);
    up.loss = 0.1;
    let spec = LinkSpec {
        up,
        down: Direction::default(),
        seed,
    };
    let relay = UdpRelay::start(local(), server.local_addr()?, spec).await?;
    // Receive while sending, so that the server's socket buffer never fills.
    let receiver = tokio::spawn(async move {
        let mut survivors = BTreeSet::new();
        let mut buf = [0u8; 64];
        while let Ok(received) = tokio::time::timeout(200 * MS, server.recv(&mut buf)).await {
            let n = received?;
            ensure!(n == 4);
            survivors.insert(u32::from_be_bytes(buf[..4].try_into()?));
        }
        anyhow::Ok(survivors)
    });
    let client = UdpSocket::bind(local()).await?;
    client.connect(relay.local_addr()).await?;
    for i in 0..COUNT {
        client.send(&i.to_be_bytes()).await?;
        if i % 20 == 19 {
            // Pace, so that no socket buffer on the way overflows.
            tokio::time::sleep(MS).await;
        }
    }
    let survivors = receiver.await??;
    let stats = relay.stats().up;
    ensure!(stats.packets_in == u64::from(COUNT), "relay saw {stats:?}");
    ensure!(
        stats.packets_delivered == survivors.len() as u64,
        "{stats:?}"
    );
    ensure!(stats.packets_lost + stats.packets_delivered == u64::from(COUNT));
    println!(
        "seed {seed}: lost {} of {COUNT} ({:.2}%)",
        stats.packets_lost,
        stats.packets_lost as f64 * 100.0 / f64::from(COUNT)
    );
    Ok(survivors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_loss_is_near_its_rate_and_seeded() -> Result<()> {
    let a = udp_survivors(7).await?;
    let lost = 5000 - a.len();
    assert!((350..=650).contains(&lost), "lost {lost} of 5000 at 10%");
    assert_eq!(a, udp_survivors(7).await?, "same seed, same drops");
    assert_ne!(a, udp_survivors(8).await?, "another seed, other drops");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_full_queue_drops_the_tail() -> Result<()> {
    let server = UdpSocket::bind(local()).await?;
    let mut up = Direction::new(Some(64_000), Duration::ZERO);
    // 972 + 28 = 1000 bytes = 125 ms at 64 kbit/s; the queue holds 4 of them.
    up.queue_bytes = 4000;
    let spec = LinkSpec {
        up,
        down: Direction::default(),
        seed: 1,
    };
    let relay = UdpRelay::start(local(), server.local_addr()?, spec).await?;
    let client = UdpSocket::bind(local()).await?;
    client.connect(relay.local_addr()).await?;
    for _ in 0..50 {
        client.send(&[1u8; 972]).await?;
    }
    let mut buf = [0u8; 2048];
    let mut got = 0;
    while tokio::time::timeout(300 * MS, server.recv(&mut buf))
        .await
        .is_ok()
    {
        got += 1;
    }
    let stats = relay.stats().up;
    println!("burst of 50 into a 4-packet queue: {stats:?}");
    ensure!((4..=5).contains(&got), "delivered {got}");
    ensure!(stats.packets_overflowed == 50 - got);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_with_jitter_delivers_bytes_exactly() -> Result<()> {
    let mut dir = Direction::new(Some(20_000_000), 10 * MS);
    dir.jitter = 8 * MS;
    let spec = LinkSpec {
        up: dir.clone(),
        down: dir,
        seed: 42,
    };
    let relay = TcpRelay::start(local(), tcp_echo().await?, spec).await?;
    let data = random_bytes(1 << 20, 5);
    let stream = TcpStream::connect(relay.local_addr()).await?;
    let (mut rx, mut tx) = stream.into_split();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        tx.write_all(&sent).await?;
        tx.shutdown().await?;
        anyhow::Ok(())
    });
    let mut echoed = Vec::new();
    rx.read_to_end(&mut echoed).await?;
    writer.await??;
    assert!(echoed == data, "echo differs from what was sent");
    let stats = relay.stats();
    assert_eq!(stats.up.bytes_delivered, 1 << 20);
    assert_eq!(stats.down.bytes_delivered, 1 << 20);
    Ok(())
}
