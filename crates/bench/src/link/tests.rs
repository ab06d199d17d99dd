//! The scheduling core on virtual time: no sockets, no sleeping.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn dir(rate_bps: Option<u64>, delay: Duration) -> Direction {
    Direction::new(rate_bps, delay)
}

#[test]
fn unlimited_rate_adds_only_the_delay() {
    let t0 = Instant::now();
    let mut b = Bottleneck::new(dir(None, 25 * MS), UDP_OVERHEAD, 1);
    for i in 0..1000 {
        assert_eq!(
            b.offer(t0, 1200),
            Verdict::Deliver(t0 + 25 * MS),
            "packet {i}"
        );
    }
}

#[test]
fn serialization_follows_a_virtual_clock() {
    let t0 = Instant::now();
    let mut d = dir(Some(1_000_000), 30 * MS);
    d.queue_bytes = usize::MAX;
    let mut b = Bottleneck::new(d, TCP_OVERHEAD, 1);
    // 1210 + 40 bytes = 10 000 bits = 10 ms at 1 Mbit/s.
    let mut last = t0;
    for _ in 0..1000 {
        last = b.admit(t0, 1210).expect("queue is unbounded");
    }
    assert_eq!(last, t0 + Duration::from_secs(10) + 30 * MS);
    // An idle link does not bank credit: a packet after a pause starts fresh.
    let later = t0 + Duration::from_secs(20);
    assert_eq!(b.admit(later, 1210), Ok(later + 10 * MS + 30 * MS));
}

#[test]
fn full_queue_drops_udp_and_tells_tcp_when_to_retry() {
    let t0 = Instant::now();
    let mut d = dir(Some(1_000_000), Duration::ZERO);
    d.queue_bytes = 10_000;
    let mut udp = Bottleneck::new(d.clone(), UDP_OVERHEAD, 1);
    // 972 + 28 = 1000 bytes = 8 ms; the queue holds 80 ms.
    let verdicts: Vec<_> = (0..100).map(|_| udp.offer(t0, 972)).collect();
    let delivered = verdicts
        .iter()
        .filter(|v| matches!(v, Verdict::Deliver(_)))
        .count();
    assert_eq!(delivered, 10);
    assert!(verdicts[10..].iter().all(|v| *v == Verdict::Overflow));
    // Once one packet has left there is room for exactly one more.
    assert!(matches!(udp.offer(t0 + 8 * MS, 972), Verdict::Deliver(_)));
    assert_eq!(udp.offer(t0 + 8 * MS, 972), Verdict::Overflow);

    let mut tcp = Bottleneck::new(d, UDP_OVERHEAD, 1);
    for _ in 0..10 {
        tcp.admit(t0, 972).expect("room");
    }
    assert_eq!(tcp.admit(t0, 972), Err(t0 + 8 * MS));
    assert_eq!(tcp.admit(t0 + 8 * MS, 972), Ok(t0 + 88 * MS));
}

#[test]
fn an_empty_queue_takes_a_packet_larger_than_itself() {
    let t0 = Instant::now();
    let mut d = dir(Some(8_000), Duration::ZERO);
    d.queue_bytes = 100;
    let mut b = Bottleneck::new(d, UDP_OVERHEAD, 1);
    assert_eq!(
        b.offer(t0, 972),
        Verdict::Deliver(t0 + Duration::from_secs(1))
    );
    assert_eq!(b.offer(t0, 1), Verdict::Overflow);
}

fn loss_pattern(seed: u64, n: usize) -> Vec<bool> {
    let t0 = Instant::now();
    let mut d = dir(None, Duration::ZERO);
    d.loss = 0.1;
    let mut b = Bottleneck::new(d, UDP_OVERHEAD, seed);
    (0..n).map(|_| b.offer(t0, 100) == Verdict::Lost).collect()
}

#[test]
fn loss_is_seeded_and_near_its_rate() {
    let a = loss_pattern(7, 10_000);
    let lost = a.iter().filter(|l| **l).count();
    assert!((850..=1150).contains(&lost), "lost {lost} of 10000 at 10%");
    assert_eq!(a, loss_pattern(7, 10_000));
    assert_ne!(a, loss_pattern(8, 10_000));
}

#[test]
fn loss_pattern_does_not_depend_on_jitter_or_queue() {
    let t0 = Instant::now();
    let mut d = dir(Some(64_000), 10 * MS);
    d.loss = 0.1;
    d.jitter = 5 * MS;
    d.queue_bytes = 3000;
    let mut b = Bottleneck::new(d, UDP_OVERHEAD, 7);
    let pattern: Vec<bool> = (0..10_000)
        .map(|_| b.offer(t0, 100) == Verdict::Lost)
        .collect();
    assert_eq!(pattern, loss_pattern(7, 10_000));
}

#[test]
fn jitter_spreads_delay_within_bounds() {
    let t0 = Instant::now();
    let mut d = dir(None, 20 * MS);
    d.jitter = 5 * MS;
    let mut b = Bottleneck::new(d, UDP_OVERHEAD, 3);
    let delays: Vec<Duration> = (0..1000)
        .map(|_| match b.offer(t0, 100) {
            Verdict::Deliver(at) => at - t0,
            v => panic!("unexpected {v:?}"),
        })
        .collect();
    assert!(delays.iter().all(|d| (15 * MS..=25 * MS).contains(d)));
    assert!(delays.iter().any(|d| *d < 17 * MS));
    assert!(delays.iter().any(|d| *d > 23 * MS));
}

#[test]
fn jitter_larger_than_delay_never_goes_negative() {
    let t0 = Instant::now();
    let mut d = dir(None, MS);
    d.jitter = 10 * MS;
    let mut b = Bottleneck::new(d, UDP_OVERHEAD, 3);
    for _ in 0..1000 {
        assert!(matches!(b.offer(t0, 100), Verdict::Deliver(at) if at >= t0));
    }
}

#[test]
fn default_queue_is_100ms_but_at_least_64k() {
    assert_eq!(Direction::default_queue_bytes(None), MIN_QUEUE_BYTES);
    assert_eq!(
        Direction::default_queue_bytes(Some(64_000)),
        MIN_QUEUE_BYTES
    );
    assert_eq!(Direction::default_queue_bytes(Some(100_000_000)), 1_250_000);
}

#[test]
fn symmetric_splits_the_rtt() {
    let spec = LinkSpec::symmetric(Some(1_000_000), 80 * MS, 0.01, 9);
    assert_eq!(spec.up.delay, 40 * MS);
    assert_eq!(spec.down, spec.up);
    assert_eq!(spec.up.loss, 0.01);
    assert_eq!(spec.rtt(), 80 * MS);
}

#[test]
fn validate_rejects_zero_rate_and_bad_loss() {
    let mut spec = LinkSpec::symmetric(Some(0), MS, 0.0, 1);
    assert!(spec.validate().is_err());
    spec = LinkSpec::symmetric(None, MS, 1.5, 1);
    assert!(spec.validate().is_err());
    spec.down.loss = f64::NAN;
    spec.up.loss = 0.0;
    assert!(spec.validate().is_err());
    assert!(LinkSpec::symmetric(None, MS, 1.0, 1).validate().is_ok());
}
