//! `llmpack emulate` as a process between a UDP client and an echo server:
//! datagrams pass both ways with the added round trip, random loss is
//! counted, periodic and exit reports print, and SIGTERM ends it cleanly.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A UDP echo server on loopback, on a thread of its own.
fn echo() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
    addr
}

/// Starts `llmpack emulate` with `flags`; returns it, its stdout lines and
/// the address it listens on (from its first line).
fn emulate(to: SocketAddr, flags: &[&str]) -> (Child, mpsc::Receiver<String>, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llmpack"))
        .args([
            "emulate",
            "--listen",
            "127.0.0.1:0",
            "--to",
            &to.to_string(),
        ])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let addr = first
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    (child, rx, addr)
}

/// Sends SIGTERM and returns the exit status and the lines printed after.
fn terminate(mut child: Child, rx: &mpsc::Receiver<String>) -> (bool, Vec<String>) {
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "emulate ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut lines = Vec::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
        lines.push(l);
    }
    (status.success(), lines)
}

#[cfg(unix)]
#[test]
fn emulate_relays_delays_counts_and_reports() {
    let server = echo();
    let (child, rx, addr) = emulate(
        server,
        &["--rate", "10mbit", "--rtt", "40ms", "--report", "300ms"],
    );
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..20u32 {
        let msg = format!("datagram {i}");
        let t0 = Instant::now();
        client.send_to(msg.as_bytes(), addr).unwrap();
        let (n, _) = client.recv_from(&mut buf).expect("echo through emulate");
        let rtt = t0.elapsed();
        assert_eq!(&buf[..n], msg.as_bytes());
        assert!(
            rtt >= Duration::from_millis(40),
            "round trip {rtt:?} under 40 ms"
        );
    }
    // A periodic report line comes while it runs.
    let t = Instant::now();
    let periodic = loop {
        let l = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        if l.contains("up:") && l.contains("delivered 20") {
            break l;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no report with 20 delivered"
        );
    };
    assert!(!periodic.starts_with("final"), "{periodic}");
    let (ok, lines) = terminate(child, &rx);
    assert!(ok, "exit status: {lines:?}");
    let last = lines.last().cloned().unwrap_or_default();
    assert!(last.starts_with("final after"), "{lines:?}");
    assert!(
        last.contains("up: in 20, delivered 20")
            && last.contains("down: in 20, delivered 20")
            && last.contains("lost 0, queue-dropped 0"),
        "{last}"
    );
}

#[cfg(unix)]
#[test]
fn emulate_counts_loss_per_direction() {
    let server = echo();
    let (child, rx, addr) = emulate(server, &["--loss-up", "100%", "--report", "0s"]);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..10 {
        client.send_to(b"lost", addr).unwrap();
    }
    client
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        client.recv_from(&mut buf).is_err(),
        "a datagram got through 100% loss"
    );
    let (ok, lines) = terminate(child, &rx);
    assert!(ok, "exit status: {lines:?}");
    let last = lines.last().cloned().unwrap_or_default();
    assert!(
        last.contains("up: in 10, delivered 0 (0 B), lost 10")
            && last.contains("down: in 0, delivered 0"),
        "{lines:?}"
    );
    // --report 0s: the exit report is the only one.
    assert_eq!(
        lines.iter().filter(|l| l.contains("up: in")).count(),
        1,
        "{lines:?}"
    );
}

/// A TCP echo server on loopback.
fn tcp_echo() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    addr
}

#[cfg(unix)]
#[test]
fn emulate_tcp_relays_a_byte_stream_at_the_rate() {
    use std::io::{Read, Write};
    let server = tcp_echo();
    let (child, rx, addr) = emulate(
        server,
        &[
            "--tcp", "--rate", "2mbit", "--rtt", "40ms", "--report", "0s",
        ],
    );
    // 64 KiB each way at 2 Mbit/s: at least 0.25 s, plus the round trips.
    let data: Vec<u8> = (0..64u32 << 10)
        .map(|i| ((i * 7 + i / 251) % 256).to_le_bytes()[0])
        .collect();
    let t0 = Instant::now();
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = c.try_clone().unwrap();
    let sent = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent));
    let mut got = vec![0u8; data.len()];
    c.read_exact(&mut got)
        .expect("the bytes come back through emulate");
    writer.join().unwrap().unwrap();
    let took = t0.elapsed();
    assert!(got == data, "the echo differs");
    assert!(
        took >= Duration::from_millis(250),
        "64 KiB at 2 Mbit/s took only {took:?}"
    );
    drop(c);
    let (ok, lines) = terminate(child, &rx);
    assert!(ok, "emulate --tcp exited with an error: {lines:?}");
    let last = lines.last().cloned().unwrap_or_default();
    assert!(last.contains("final") && last.contains("up:"), "{lines:?}");
}

#[test]
fn emulate_tcp_refuses_loss() {
    let out = Command::new(env!("CARGO_BIN_EXE_llmpack"))
        .args([
            "emulate",
            "--tcp",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "--loss",
            "1%",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--loss"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
