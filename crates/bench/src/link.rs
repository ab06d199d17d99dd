//! A user-space link emulator: a relay that sits between a client and a
//! server on loopback and gives each direction a rate, a one-way delay,
//! jitter, random loss and a drop-tail bottleneck queue.
//!
//! Model of one [`Direction`]: a packet (a UDP datagram, or for TCP a chunk of
//! at most [`TCP_CHUNK`] bytes read from the socket) enters the bottleneck
//! queue if the bytes still waiting there plus its own size fit in
//! [`Direction::queue_bytes`]. Otherwise a UDP packet is dropped, while the TCP
//! relay stops reading from its source until there is room (it never drops TCP
//! bytes, the sender's own flow control takes over). Packets leave the queue
//! one after another at the link rate, each taking `wire_size * 8 / rate`
//! seconds, where the wire size adds [`UDP_OVERHEAD`] or [`TCP_OVERHEAD`]
//! bytes of headers. Departure times come from a virtual clock
//! (`next_free = max(now, next_free) + serialization`), so timer slack never
//! accumulates into rate error. A packet is delivered `delay ± jitter` after
//! it leaves the queue; the TCP relay never reorders, the UDP relay may.
//!
//! The scheduling core (`Bottleneck`) takes time as an argument and owns no
//! socket; [`UdpRelay`] and [`TcpRelay`] drive it with real sockets and tokio
//! timers.

mod tcp;
mod udp;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use rand::{Rng, SeedableRng, rngs::SmallRng};
use tokio::time::Instant;

pub use tcp::TcpRelay;
pub use udp::UdpRelay;

/// Bytes of IPv4 + UDP headers counted against the rate for every datagram.
pub const UDP_OVERHEAD: usize = 28;
/// Bytes of IPv4 + TCP headers counted against the rate for every TCP chunk.
pub const TCP_OVERHEAD: usize = 40;
/// Largest chunk the TCP relay reads from a socket at once: one segment.
pub const TCP_CHUNK: usize = 1400;
/// Smallest default bottleneck queue, in bytes.
pub const MIN_QUEUE_BYTES: usize = 64 * 1024;

/// Seed offset of the jitter generator, so jitter draws never shift the
/// loss pattern of a seed.
const JITTER_SEED: u64 = 0x6a69_7474_6572;

/// One direction of the emulated link.
#[derive(Debug, Clone, PartialEq)]
pub struct Direction {
    /// Bottleneck rate in bits per second, headers included; `None` is
    /// unlimited (no serialization delay, the queue never fills).
    pub rate_bps: Option<u64>,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Each packet's delay is `delay` plus a uniform draw from
    /// `-jitter..=jitter` (never below zero). The TCP relay keeps bytes in
    /// order; UDP datagrams may be reordered by it.
    pub jitter: Duration,
    /// Probability in `0..=1` that a UDP datagram is dropped at entry,
    /// independently per packet. The TCP relay ignores it.
    pub loss: f64,
    /// Drop-tail bottleneck queue size in bytes (headers included).
    pub queue_bytes: usize,
}

impl Direction {
    /// A direction with this rate and delay, no jitter, no loss and the
    /// default queue ([`Direction::default_queue_bytes`]).
    pub fn new(rate_bps: Option<u64>, delay: Duration) -> Self {
        Direction {
            rate_bps,
            delay,
            jitter: Duration::ZERO,
            loss: 0.0,
            queue_bytes: Self::default_queue_bytes(rate_bps),
        }
    }

    /// The default queue: 100 ms worth of the rate, at least
    /// [`MIN_QUEUE_BYTES`] (a common buffer size for access links).
    pub fn default_queue_bytes(rate_bps: Option<u64>) -> usize {
        let per_100ms = rate_bps.map_or(0, |r| usize::try_from(r / 80).unwrap_or(usize::MAX));
        per_100ms.max(MIN_QUEUE_BYTES)
    }

    fn validate(&self, name: &str) -> std::io::Result<()> {
        let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
        if self.rate_bps == Some(0) {
            return Err(bad(format!(
                "link {name}.rate_bps: must be above 0 (None = unlimited)"
            )));
        }
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(bad(format!(
                "link {name}.loss: {} is not in 0..=1",
                self.loss
            )));
        }
        Ok(())
    }
}

impl Default for Direction {
    /// Unlimited rate, no delay, no loss.
    fn default() -> Self {
        Direction::new(None, Duration::ZERO)
    }
}

/// Both directions of an emulated link and the seed of its random draws.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkSpec {
    /// Client to server.
    pub up: Direction,
    /// Server to client.
    pub down: Direction,
    /// Seed of the loss and jitter generators: the up direction uses `seed`,
    /// the down direction `seed + 1`.
    pub seed: u64,
}

impl LinkSpec {
    /// The same rate and loss both ways, and half of `rtt` as each
    /// direction's delay. `loss` applies to each direction separately.
    pub fn symmetric(rate_bps: Option<u64>, rtt: Duration, loss: f64, seed: u64) -> Self {
        let mut dir = Direction::new(rate_bps, rtt / 2);
        dir.loss = loss;
        LinkSpec {
            up: dir.clone(),
            down: dir,
            seed,
        }
    }

    /// Checks that rates are above zero and loss is a probability.
    pub(crate) fn validate(&self) -> std::io::Result<()> {
        self.up.validate("up")?;
        self.down.validate("down")
    }

    /// One-way delay up plus down.
    pub fn rtt(&self) -> Duration {
        self.up.delay + self.down.delay
    }
}

/// Counters of one direction. Byte counts are payload bytes, without the
/// header overhead used for rate accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirStats {
    /// Packets (datagrams or TCP chunks) that arrived at the relay.
    pub packets_in: u64,
    /// Bytes that arrived at the relay.
    pub bytes_in: u64,
    /// Packets written to the far side.
    pub packets_delivered: u64,
    /// Bytes written to the far side.
    pub bytes_delivered: u64,
    /// Packets dropped by random loss (UDP only).
    pub packets_lost: u64,
    /// Packets dropped because the bottleneck queue was full (UDP only; the
    /// TCP relay waits instead).
    pub packets_overflowed: u64,
}

/// Counters of both directions of a relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LinkStats {
    /// Client to server.
    pub up: DirStats,
    /// Server to client.
    pub down: DirStats,
}

/// Live counters of one direction, shared by a relay's tasks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    packets_in: AtomicU64,
    bytes_in: AtomicU64,
    packets_delivered: AtomicU64,
    bytes_delivered: AtomicU64,
    packets_lost: AtomicU64,
    packets_overflowed: AtomicU64,
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn arrived(&self, len: usize) {
        add(&self.packets_in, 1);
        add(&self.bytes_in, len);
    }

    pub(crate) fn delivered(&self, len: usize) {
        add(&self.packets_delivered, 1);
        add(&self.bytes_delivered, len);
    }

    pub(crate) fn dropped(&self, verdict: Verdict) {
        match verdict {
            Verdict::Lost => add(&self.packets_lost, 1),
            Verdict::Overflow => add(&self.packets_overflowed, 1),
            Verdict::Deliver(_) => {}
        }
    }

    pub(crate) fn snapshot(&self) -> DirStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirStats {
            packets_in: get(&self.packets_in),
            bytes_in: get(&self.bytes_in),
            packets_delivered: get(&self.packets_delivered),
            bytes_delivered: get(&self.bytes_delivered),
            packets_lost: get(&self.packets_lost),
            packets_overflowed: get(&self.packets_overflowed),
        }
    }
}

/// What happens to a packet offered to a [`Bottleneck`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Deliver it to the far side at this time.
    Deliver(Instant),
    /// Dropped by random loss.
    Lost,
    /// Dropped because the queue is full.
    Overflow,
}

/// The scheduling core of one direction: drop-tail queue, serializer on a
/// virtual clock, delay, jitter and loss. Time comes in as `now`.
#[derive(Debug)]
pub(crate) struct Bottleneck {
    dir: Direction,
    overhead: usize,
    /// When the serializer finishes the last admitted packet.
    next_free: Option<Instant>,
    loss_rng: SmallRng,
    jitter_rng: SmallRng,
}

impl Bottleneck {
    /// `overhead` is the per-packet header size counted against the rate.
    pub(crate) fn new(dir: Direction, overhead: usize, seed: u64) -> Self {
        Bottleneck {
            dir,
            overhead,
            next_free: None,
            loss_rng: SmallRng::seed_from_u64(seed),
            jitter_rng: SmallRng::seed_from_u64(seed ^ JITTER_SEED),
        }
    }

    /// Time the serializer needs for `wire` bytes.
    fn serialization(&self, wire: usize) -> Duration {
        let Some(rate) = self.dir.rate_bps else {
            return Duration::ZERO;
        };
        // usize -> u128 only widens.
        let nanos = (wire as u128) * 8 * 1_000_000_000 / u128::from(rate);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Serializes a `len`-byte packet if the queue has room for it: returns
    /// the time it leaves the queue, or else the earliest time there will be
    /// room (as long as nothing else is admitted meanwhile). An empty queue
    /// always takes one packet, however large.
    fn enqueue(&mut self, now: Instant, len: usize) -> Result<Instant, Instant> {
        let wire = len.saturating_add(self.overhead);
        let start = self.next_free.map_or(now, |free| free.max(now));
        let backlog = start - now;
        let own = self.serialization(wire);
        let room = self.serialization(self.dir.queue_bytes);
        if backlog > Duration::ZERO && backlog + own > room {
            // Room once the backlog has shrunk to `room - own`.
            return Err(start - room.saturating_sub(own));
        }
        let departure = start + own;
        self.next_free = Some(departure);
        Ok(departure)
    }

    /// When a packet leaving the queue at `departure` reaches the far side.
    fn arrival(&mut self, departure: Instant) -> Instant {
        let jitter = self.dir.jitter;
        if jitter.is_zero() {
            return departure + self.dir.delay;
        }
        let span = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX / 2);
        let draw = self.jitter_rng.random_range(0..=span.saturating_mul(2));
        let shifted = (self.dir.delay + Duration::from_nanos(draw)).saturating_sub(jitter);
        departure + shifted
    }

    /// A UDP datagram: loss at entry, then drop-tail or schedule.
    pub(crate) fn offer(&mut self, now: Instant, len: usize) -> Verdict {
        // Always draw, so the loss pattern depends on the seed alone.
        let lost = self.loss_rng.random::<f64>() < self.dir.loss;
        if lost {
            return Verdict::Lost;
        }
        match self.enqueue(now, len) {
            Ok(departure) => Verdict::Deliver(self.arrival(departure)),
            Err(_) => Verdict::Overflow,
        }
    }

    /// A TCP chunk: no loss; `Err(retry_at)` when the queue is full.
    pub(crate) fn admit(&mut self, now: Instant, len: usize) -> Result<Instant, Instant> {
        self.enqueue(now, len)
            .map(|departure| self.arrival(departure))
    }

    /// The longest time a packet can take from admission to delivery once
    /// the queue is full: queue + one packet + delay + jitter.
    pub(crate) fn max_transit(&self) -> Duration {
        self.serialization(
            self.dir
                .queue_bytes
                .saturating_add(TCP_CHUNK + self.overhead),
        ) + self.dir.delay
            + self.dir.jitter
    }

    /// The direction this core emulates.
    pub(crate) fn direction(&self) -> &Direction {
        &self.dir
    }
}

#[cfg(test)]
mod tests;
