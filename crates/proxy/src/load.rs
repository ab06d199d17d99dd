//! What an end knows about its link for the codec choice
//! ([`llmpack_frame::policy`]): the delivery rate, the bytes queued for the
//! link, and the wire cost per input byte that frames of each kind got.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Per-datagram bytes that are not stream data: QUIC short header
/// (flags, 8-byte connection id, packet number), AEAD tag and a STREAM
/// frame header. Only used to turn datagram bytes into payload bytes.
const DATAGRAM_OVERHEAD: u64 = 40;

/// One link end's load, shared by the link's connections and the task that
/// samples the QUIC connection.
#[derive(Debug)]
pub struct LinkLoad {
    /// Delivery rate estimate (congestion window per RTT), bytes/s.
    rate: AtomicU64,
    /// Wire bytes this end's connections handed to the link.
    written: AtomicU64,
    /// Of those, bytes the peer acknowledged (or whose connection ended).
    acked: AtomicU64,
    /// Payload bytes the link had sent at the last sample.
    sent: AtomicU64,
    /// When that sample was taken, nanoseconds since `epoch`.
    sampled: AtomicU64,
    /// Queueing delay in the network at the last sample (smoothed RTT
    /// minus the smallest RTT seen), microseconds.
    standing_us: AtomicU64,

    epoch: Instant,
    /// Wire bytes per input byte: model frames and model-free frames, as
    /// moving averages over the link's connections (f64 bits; 0: none yet).
    lm_cost: AtomicU64,
    free_cost: AtomicU64,
    /// Output bytes per input byte of the frames zstd was tried on (f64
    /// bits; 0: none yet).
    zstd_cost: AtomicU64,
    /// When a frame was last granted a zstd probe, nanoseconds since
    /// `epoch` (0: never).
    zstd_probed: AtomicU64,
}

impl Default for LinkLoad {
    fn default() -> Self {
        LinkLoad {
            rate: AtomicU64::new(0),
            written: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            sampled: AtomicU64::new(0),
            standing_us: AtomicU64::new(0),

            epoch: Instant::now(),
            lm_cost: AtomicU64::new(0),
            free_cost: AtomicU64::new(0),
            zstd_cost: AtomicU64::new(0),
            zstd_probed: AtomicU64::new(0),
        }
    }
}

impl LinkLoad {
    /// The delivery rate estimate, bytes/s (0: not known yet).
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Sets the rate (tests, and links whose rate is known).
    pub fn set_rate(&self, r: u64) {
        self.rate.store(r, Ordering::Relaxed);
    }

    /// Counts `n` wire bytes handed to the link.
    pub fn wrote(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` written bytes as acknowledged by the peer (or dropped
    /// with their connection).
    pub fn acked(&self, n: u64) {
        self.acked.fetch_add(n, Ordering::Relaxed);
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Seconds the link stays busy with what is already queued for it:
    /// the bytes not sent yet at its rate, plus, for bytes sent and not
    /// acknowledged yet, the queueing delay the network shows (smoothed RTT
    /// over the smallest RTT), at most what those bytes take at the rate
    /// (bytes in a bottleneck queue past the sender count as sent; the
    /// delay is what they still take, and a stale RTT after the link went
    /// quiet counts nothing).
    pub fn busy_secs(&self) -> f64 {
        let rate = self.rate();
        if rate == 0 {
            return 0.0;
        }
        let unsent = self.queued();
        let unacked = self
            .written
            .load(Ordering::Relaxed)
            .saturating_sub(self.acked.load(Ordering::Relaxed));
        let in_network = unacked.saturating_sub(unsent) as f64 / rate as f64;
        let standing = self.standing_us.load(Ordering::Relaxed) as f64 * 1e-6;
        unsent as f64 / rate as f64 + standing.min(in_network)
    }

    /// Seconds this end's bytes handed to the link and not sent yet take
    /// to leave at its rate (the first term of [`Self::busy_secs`]).
    pub fn unsent_secs(&self) -> f64 {
        let rate = self.rate();
        if rate == 0 {
            return 0.0;
        }
        self.queued() as f64 / rate as f64
    }

    /// Bytes handed to the link and not sent yet: what was written minus
    /// what the link had sent at the last sample, and what it has sent
    /// since at its rate. Retransmissions and FEC repair count as sent, so
    /// on a lossy link this errs low (toward model-free frames).
    pub fn queued(&self) -> u64 {
        let written = self.written.load(Ordering::Relaxed);
        let sent = self.sent.load(Ordering::Relaxed);
        let since = Duration::from_nanos(self.now_ns())
            .saturating_sub(Duration::from_nanos(self.sampled.load(Ordering::Relaxed)));
        // Non-negative; saturates at u64::MAX on a float that large.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let more = (self.rate() as f64 * since.as_secs_f64()) as u64;
        written.saturating_sub(sent.saturating_add(more))
    }

    /// Records a sample of the connection: `payload` bytes sent so far,
    /// and its smoothed and smallest RTT.
    fn sample(&self, rate: u64, payload: u64, rtt: Duration, min_rtt: Duration) {
        self.rate.store(rate, Ordering::Relaxed);
        self.sent.store(payload, Ordering::Relaxed);
        self.sampled.store(self.now_ns(), Ordering::Relaxed);
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.standing_us
            .store(us(rtt.saturating_sub(min_rtt)), Ordering::Relaxed);
    }

    /// The link's wire cost per input byte of model frames, if measured.
    pub fn lm_cost(&self) -> Option<f64> {
        load_cost(&self.lm_cost)
    }

    /// The link's wire cost per input byte of model-free frames, if measured.
    pub fn free_cost(&self) -> Option<f64> {
        load_cost(&self.free_cost)
    }

    /// Adds a frame's cost to the link's averages.
    pub fn record(&self, model: bool, cost: f64) {
        let slot = if model {
            &self.lm_cost
        } else {
            &self.free_cost
        };
        let avg = match load_cost(slot) {
            None => cost,
            Some(old) => old + (cost - old) / 8.0,
        };
        slot.store(avg.max(f64::MIN_POSITIVE).to_bits(), Ordering::Relaxed);
    }

    /// Whether the frame being cut now may try zstd as the link's probe
    /// (see [`llmpack_frame::policy::ZSTD_PROBE_INTERVAL`]): true for the
    /// first caller in each interval.
    pub fn claim_zstd_probe(&self) -> bool {
        let interval = u64::try_from(llmpack_frame::policy::ZSTD_PROBE_INTERVAL.as_nanos())
            .unwrap_or(u64::MAX);
        // At least 1: 0 means never.
        let now = self.now_ns().max(1);
        let last = self.zstd_probed.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .zstd_probed
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The link's zstd cost (output per input byte of the frames zstd was
    /// tried on), if measured.
    pub fn zstd_cost(&self) -> Option<f64> {
        load_cost(&self.zstd_cost)
    }

    /// Adds a frame zstd was tried on: `input` bytes became `output`. A
    /// frame moves the average by an eighth, less if it is under 4 KiB (a
    /// short frame's ratio says little about the traffic's).
    pub fn record_zstd(&self, input: usize, output: usize) {
        if input == 0 {
            return;
        }
        let cost = output as f64 / input as f64;
        let weight = (input as f64 / 4096.0).min(1.0) / 8.0;
        let avg = match load_cost(&self.zstd_cost) {
            None => cost,
            Some(old) => old + (cost - old) * weight,
        };
        self.zstd_cost
            .store(avg.max(f64::MIN_POSITIVE).to_bits(), Ordering::Relaxed);
    }
}

fn load_cost(slot: &AtomicU64) -> Option<f64> {
    let c = f64::from_bits(slot.load(Ordering::Relaxed));
    (c > 0.0 && c.is_finite()).then_some(c)
}

/// A connection's frames on the link that the peer has not acknowledged
/// (`seq`, wire bytes); what is left when the connection ends counts as
/// acknowledged, so the link's count never keeps a dead connection's bytes.
#[derive(Debug)]
pub struct InFlight {
    link: std::sync::Arc<LinkLoad>,
    frames: std::collections::VecDeque<(u64, u64)>,
}

impl InFlight {
    /// None yet, on `link`.
    pub fn new(link: std::sync::Arc<LinkLoad>) -> Self {
        InFlight {
            link,
            frames: std::collections::VecDeque::new(),
        }
    }

    /// Frame `seq` of `wire` bytes went to the link.
    pub fn sent(&mut self, seq: u64, wire: u64) {
        self.frames.push_back((seq, wire));
    }

    /// The peer acknowledged every frame up to `seq`.
    pub fn acked(&mut self, seq: u64) {
        let mut n = 0;
        while let Some(&(s, w)) = self.frames.front() {
            if s > seq {
                break;
            }
            n += w;
            self.frames.pop_front();
        }
        self.link.acked(n);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.link.acked(self.frames.iter().map(|&(_, w)| w).sum());
    }
}

/// A connection's own wire costs per input byte (moving averages over its
/// frames), falling back to its link's until it has measured one.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnCosts {
    lm: Option<f64>,
    free: Option<f64>,
    /// Input and output bytes of the frames zstd was tried on, each
    /// decayed by a quarter per frame: their ratio weighs frames by size.
    zstd: Option<(f64, f64)>,
}

impl ConnCosts {
    /// Adds a frame: `wire` bytes on the link for `input` bytes; `model`:
    /// the model coded it, or tried and lost (then the model's cost on it
    /// was no better than the frame that went).
    pub fn record(&mut self, link: &LinkLoad, model: bool, input: usize, wire: usize) {
        if input == 0 {
            return;
        }
        let cost = wire as f64 / input as f64;
        let slot = if model { &mut self.lm } else { &mut self.free };
        *slot = Some(match *slot {
            None => cost,
            Some(old) => old + (cost - old) / 4.0,
        });
        link.record(model, cost);
    }

    /// The model's cost: this connection's, else the link's, else unknown.
    pub fn lm(&self, link: &LinkLoad) -> Option<f64> {
        self.lm.or_else(|| link.lm_cost())
    }

    /// The model-free cost: this connection's, else the link's, else raw.
    pub fn free(&self, link: &LinkLoad) -> f64 {
        self.free.or_else(|| link.free_cost()).unwrap_or(1.0)
    }

    /// Adds a frame zstd was tried on: `input` bytes became `output`
    /// (payload bytes, headers aside: they are the same raw or zstd).
    pub fn record_zstd(&mut self, link: &LinkLoad, input: usize, output: usize) {
        if input == 0 {
            return;
        }
        let (i, o) = self.zstd.unwrap_or((0.0, 0.0));
        self.zstd = Some((0.75 * i + input as f64, 0.75 * o + output as f64));
        link.record_zstd(input, output);
    }

    /// zstd's cost: this connection's, else the link's, else unknown.
    pub fn zstd(&self, link: &LinkLoad) -> Option<f64> {
        match self.zstd {
            Some((i, o)) if i > 0.0 => Some(o / i),
            _ => link.zstd_cost(),
        }
    }
}

/// Keeps `load` current (rate, bytes sent) from `conn`'s statistics while
/// the connection lives.
pub async fn track(conn: quinn::Connection, load: std::sync::Arc<LinkLoad>) {
    let payload = |s: &quinn::ConnectionStats| {
        s.udp_tx
            .bytes
            .saturating_sub(s.path.lost_bytes)
            .saturating_sub(s.udp_tx.datagrams.saturating_mul(DATAGRAM_OVERHEAD))
    };
    // What the handshake sent before any connection wrote.
    let base = payload(&conn.stats());
    loop {
        let s = conn.stats();
        let rtt_us = u64::try_from(s.path.rtt.as_micros())
            .unwrap_or(u64::MAX)
            .max(100);
        let rate = s.path.cwnd.saturating_mul(1_000_000) / rtt_us;
        tracing::trace!(
            cwnd = s.path.cwnd,
            rtt_us = s.path.rtt.as_micros(),
            min_rtt_us = s.path.min_rtt.as_micros(),
            rate,
            "link sample"
        );
        load.sample(
            rate,
            payload(&s).saturating_sub(base),
            s.path.rtt,
            s.path.min_rtt,
        );
        tokio::select! {
            _ = conn.closed() => return,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_is_written_minus_sent_and_drains_at_the_rate() {
        let l = LinkLoad::default();
        assert_eq!(l.queued(), 0);
        let ms = Duration::from_millis;
        l.wrote(10_000);
        l.sample(0, 4_000, ms(100), ms(100));
        assert_eq!(l.queued(), 6_000);
        assert_eq!(l.busy_secs(), 0.0, "rate unknown");
        // At a rate the queue drains between samples, never below zero.
        l.sample(1_000_000_000, 4_000, ms(100), ms(100));
        std::thread::sleep(ms(5));
        assert_eq!(l.queued(), 0);
        assert_eq!(l.busy_secs(), 0.0);
    }

    #[test]
    fn busy_counts_the_network_queue_only_while_bytes_are_unacknowledged() {
        let l = std::sync::Arc::new(LinkLoad::default());
        let ms = Duration::from_millis;
        let mut f = InFlight::new(l.clone());
        // 8 KB/s, 3 s of queueing delay on a 600 ms path, 8 KB unsent and
        // 32 KB sent but not acknowledged.
        l.wrote(40_000);
        f.sent(0, 32_000);
        f.sent(1, 8_000);
        l.sample(8_000, 32_000, ms(3600), ms(600));
        let busy = l.busy_secs();
        assert!((busy - 4.0).abs() < 0.01, "{busy}");
        // Few bytes left in the network: they bound the queueing delay.
        f.acked(0);
        l.sample(8_000, 40_000, ms(3600), ms(600));
        let busy = l.busy_secs();
        assert!((busy - 1.0).abs() < 0.01, "{busy}");
        // All acknowledged: a stale RTT counts nothing.
        f.acked(1);
        assert_eq!(l.busy_secs(), 0.0);
        // A connection that ends takes its bytes off the link.
        let mut g = InFlight::new(l.clone());
        l.wrote(5_000);
        g.sent(0, 5_000);
        l.sample(8_000, 45_000, ms(3600), ms(600));
        assert!(l.busy_secs() > 0.6);
        drop(g);
        assert_eq!(l.busy_secs(), 0.0);
    }

    #[test]
    fn costs_fall_back_from_connection_to_link_to_raw() {
        let l = LinkLoad::default();
        let mut a = ConnCosts::default();
        let b = ConnCosts::default();
        assert_eq!(a.free(&l), 1.0);
        assert_eq!(a.lm(&l), None);
        a.record(&l, true, 1000, 200);
        a.record(&l, false, 1000, 400);
        assert_eq!(a.lm(&l), Some(0.2));
        assert_eq!(a.free(&l), 0.4);
        // Another connection of the link sees the link's averages.
        assert_eq!(b.lm(&l), Some(0.2));
        assert_eq!(b.free(&l), 0.4);
        a.record(&l, true, 1000, 600);
        assert!((a.lm(&l).unwrap() - 0.3).abs() < 1e-12);
        a.record(&l, true, 0, 10);
        assert!((a.lm(&l).unwrap() - 0.3).abs() < 1e-12);
    }

    #[test]
    fn one_zstd_probe_per_interval_per_link() {
        let l = LinkLoad::default();
        assert!(l.claim_zstd_probe(), "the first frame probes");
        assert!(!l.claim_zstd_probe(), "no second probe in the interval");
        assert!(!l.claim_zstd_probe());
        std::thread::sleep(llmpack_frame::policy::ZSTD_PROBE_INTERVAL);
        assert!(l.claim_zstd_probe(), "the next interval probes again");
        assert!(!l.claim_zstd_probe());
        assert!(LinkLoad::default().claim_zstd_probe(), "links are apart");
    }

    #[test]
    fn zstd_costs_weigh_frames_by_size() {
        let l = LinkLoad::default();
        let mut a = ConnCosts::default();
        let b = ConnCosts::default();
        assert_eq!(a.zstd(&l), None);
        a.record_zstd(&l, 16_000, 4_000);
        assert_eq!(a.zstd(&l), Some(0.25));
        assert_eq!(b.zstd(&l), Some(0.25), "the link's, for a new connection");
        // A 100-byte frame that did not shrink barely moves either.
        a.record_zstd(&l, 100, 100);
        let c = a.zstd(&l).unwrap();
        assert!(c > 0.25 && c < 0.26, "{c}");
        let c = b.zstd(&l).unwrap();
        assert!(c > 0.25 && c < 0.253, "{c}");
        // Frames that do not shrink take over within a few frames.
        for _ in 0..8 {
            a.record_zstd(&l, 16_000, 16_000);
        }
        assert!(a.zstd(&l).unwrap() > 0.9);
        a.record_zstd(&l, 0, 5);
        assert!(a.zstd(&l).unwrap() > 0.9);
    }
}
