//! What a tunnel's connections are coded with ([`Coding`]): the policy,
//! the model's scheduler, the limits, the link's load, and the metrics
//! every frame counts into; and this process's zstd speed per level.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use llmpack_codec::{
    EncodedFrame, LaneId, LmParams, Policy, StreamConfig, StreamDecoder, StreamEncoder, Vocabulary,
};
use llmpack_frame::FrameHeader;
use llmpack_frame::outgoing::{CodecRule, FrameLimits, Measured, OutgoingConfig};
use llmpack_frame::policy::{ZSTD_LEVELS, ZSTD_MIN_TIMED};

use crate::load::{ConnCosts, LinkLoad};
use crate::sched::Scheduler;

/// What one tunnel's connections are coded with; fixed per link.
#[derive(Debug)]
pub struct Coding {
    /// The tunnel's name (metrics label, logs).
    pub tunnel: String,
    /// `proxy` role label for metrics: "sender" or "receiver".
    pub role: &'static str,
    /// Codecs this end sends with.
    pub policy: Policy,
    /// Text both ends start the model context from.
    pub primer: Vec<u8>,
    /// The model context rule; `None` when the link has no model coding.
    pub lm: Option<LmParams>,
    /// Lanes one frame may be coded on (the tunnel's `lanes`).
    pub lanes: u8,
    /// zstd level for zstd frames; `None`: by the link's rate (see
    /// [`llmpack_frame::policy::zstd_level_for`]).
    pub zstd_level: Option<i32>,
    /// The model's vocabulary, or bytes when there is no model.
    pub vocab: Arc<dyn Vocabulary>,
    /// The scheduler of the model instance, if model coding is on.
    pub sched: Option<Scheduler>,
    /// Frames go model-free when the model would take longer than this.
    pub max_delay: Duration,
    /// Buffering and framing limits.
    pub limits: FrameLimits,
    /// Metric handles, looked up once per connection.
    pub metrics: ConnMetrics,
    /// The link's rate, queue and measured frame costs.
    pub link: Arc<LinkLoad>,
}

/// How fast zstd compresses frames on this machine, per level: moving
/// averages over every frame this process compressed, input bytes/s, kept
/// apart for frames of at least [`ZSTD_MIN_TIMED`] bytes and for shorter
/// ones (see [`llmpack_frame::policy::zstd_speed_for`]).
#[derive(Debug)]
pub struct ZstdSpeed {
    long: [AtomicU64; ZSTD_LEVELS],
    short: [AtomicU64; ZSTD_LEVELS],
}

/// This process's zstd speeds.
pub static ZSTD_SPEED: ZstdSpeed = ZstdSpeed::new();

impl ZstdSpeed {
    /// No measurements yet.
    const fn new() -> Self {
        ZstdSpeed {
            long: [const { AtomicU64::new(0) }; ZSTD_LEVELS],
            short: [const { AtomicU64::new(0) }; ZSTD_LEVELS],
        }
    }

    fn index(level: i32) -> usize {
        usize::try_from(level.max(0))
            .unwrap_or(0)
            .min(ZSTD_LEVELS - 1)
    }

    /// Every level's speed now, on long frames and on short ones (input
    /// bytes/s; 0 before the first measurement).
    pub fn snapshot(&self) -> ([u64; ZSTD_LEVELS], [u64; ZSTD_LEVELS]) {
        let load =
            |a: &[AtomicU64; ZSTD_LEVELS]| std::array::from_fn(|i| a[i].load(Ordering::Relaxed));
        (load(&self.long), load(&self.short))
    }

    /// Input bytes/s at `level` on frames of at least [`ZSTD_MIN_TIMED`]
    /// bytes (`short`: on shorter ones); 0 before the first measurement.
    #[cfg(test)]
    fn get(&self, level: i32, short: bool) -> u64 {
        let arr = if short { &self.short } else { &self.long };
        arr[Self::index(level)].load(Ordering::Relaxed)
    }

    /// Adds one measurement at `level`: `bytes` compressed in `took`. A
    /// frame of under [`ZSTD_MIN_TIMED`] bytes counts as that many, in the
    /// short frames' average: its time is mostly its prefix's, which is
    /// what an interactive connection's frames pay.
    pub fn record(&self, level: i32, bytes: u64, took: Duration) {
        if bytes == 0 {
            return;
        }
        let min = ZSTD_MIN_TIMED as u64;
        let (slot, bytes) = if bytes < min {
            (&self.short[Self::index(level)], min)
        } else {
            (&self.long[Self::index(level)], bytes)
        };
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let now = u64::try_from(u128::from(bytes) * 1_000_000_000 / u128::from(nanos))
            .unwrap_or(u64::MAX / 2)
            .min(u64::MAX / 2);
        let old = slot.load(Ordering::Relaxed);
        // A quarter of the new value: smooth, but a machine that gets busy
        // shows within a few frames. (Racing updates lose one sample.)
        let avg = if old == 0 {
            now
        } else {
            old - old / 4 + now / 4
        };
        slot.store(avg, Ordering::Relaxed);
    }
}

/// A direction of a connection, as seen from this end.
#[derive(Debug, Clone, Copy)]
pub enum Dir {
    /// What this end receives (from the link, or from its socket for `app`).
    In = 0,
    /// What this end sends.
    Out = 1,
}

/// Metric handles of one frame codec in one direction.
#[derive(Debug, Clone)]
pub struct FrameMetrics {
    frames: metrics::Counter,
    bytes_in: metrics::Counter,
    bytes_out: metrics::Counter,
    bits_per_byte: metrics::Histogram,
}

/// A connection's metric handles: bytes at the socket (`app`) and on the
/// link per direction, and frames per direction and codec.
#[derive(Debug, Clone)]
pub struct ConnMetrics {
    pub(crate) app: [metrics::Counter; 2],
    pub(crate) link: [metrics::Counter; 2],
    frames: [[FrameMetrics; 3]; 2],
    /// Input bytes the model coded (what it carried of this end's traffic).
    model_bytes: metrics::Counter,
    /// Wire bytes the model saved against the model-free cost, estimated.
    model_saved: metrics::Counter,
}

impl ConnMetrics {
    /// The handles of tunnel `tunnel` at an end of role `role`.
    pub fn new(tunnel: &str, role: &'static str) -> Self {
        let dirs = ["in", "out"];
        let bytes = |name: &'static str, d: &'static str| metrics::counter!(name, "tunnel" => tunnel.to_string(), "role" => role, "direction" => d);
        let frame = |d: &'static str, codec: llmpack_frame::Codec| {
            let labels = [
                ("tunnel", tunnel.to_string()),
                ("role", role.to_string()),
                ("direction", d.to_string()),
                ("codec", codec.name().to_string()),
            ];
            FrameMetrics {
                frames: metrics::counter!("llmpack_frames_total", &labels),
                bytes_in: metrics::counter!("llmpack_frame_bytes_in_total", &labels),
                bytes_out: metrics::counter!("llmpack_frame_bytes_out_total", &labels),
                bits_per_byte: metrics::histogram!("llmpack_frame_bits_per_byte", &labels),
            }
        };
        ConnMetrics {
            app: dirs.map(|d| bytes("llmpack_app_bytes_total", d)),
            link: dirs.map(|d| bytes("llmpack_link_bytes_total", d)),
            frames: dirs.map(|d| llmpack_frame::Codec::ALL.map(|c| frame(d, c))),
            model_bytes: metrics::counter!("llmpack_model_coded_bytes_total", "tunnel" => tunnel.to_string(), "role" => role),
            model_saved: metrics::counter!("llmpack_model_saved_bytes_total", "tunnel" => tunnel.to_string(), "role" => role),
        }
    }
}

impl Coding {
    fn stream_config(&self, policy: Policy, lm: bool) -> StreamConfig {
        StreamConfig {
            policy,
            zstd_level: self.zstd_level.unwrap_or(3),
            lm: if lm { self.lm } else { None },
            lanes: self.lanes,
            ..StreamConfig::default()
        }
    }

    fn lane(&self) -> LaneId {
        self.sched.as_ref().map_or(0, Scheduler::new_lane)
    }

    pub(crate) fn release(&self, lanes: Vec<LaneId>) {
        if let Some(s) = &self.sched {
            for l in lanes {
                s.release(l);
            }
        }
    }

    pub(crate) fn encoder(&self, primer: &[u8]) -> Box<StreamEncoder> {
        let cfg = self.stream_config(self.policy, self.lm.is_some());
        Box::new(StreamEncoder::new(
            self.lane(),
            cfg,
            self.vocab.clone(),
            primer,
        ))
    }

    pub(crate) fn decoder(&self, primer: &[u8]) -> Box<StreamDecoder> {
        let cfg = self.stream_config(Policy::Auto, self.lm.is_some());
        Box::new(StreamDecoder::new(
            self.lane(),
            &cfg,
            self.vocab.clone(),
            primer,
        ))
    }

    /// The coders of a model-free resend (no lane, fresh zstd history).
    pub(crate) fn resend_config(&self) -> StreamConfig {
        self.stream_config(Policy::Zstd, false)
    }

    pub(crate) fn rebuilt_primer(&self, tail: &[u8]) -> Vec<u8> {
        let mut p = self.primer.clone();
        p.extend_from_slice(tail);
        p
    }

    /// The sending direction's setup for this tunnel.
    pub(crate) fn outgoing(&self) -> OutgoingConfig {
        OutgoingConfig {
            limits: self.limits,
            rule: match self.policy {
                Policy::Auto => CodecRule::Auto,
                Policy::Lm => CodecRule::Lm,
                // zstd, raw, and any policy without the model.
                _ => CodecRule::ModelFree,
            },
            zstd_level: self.zstd_level,
            max_delay: self.max_delay,
            lanes: usize::from(self.lanes),
        }
    }

    /// What the codec choice decides from now, for a connection whose
    /// frames got `costs`.
    pub(crate) fn measured(&self, costs: &ConnCosts) -> Measured {
        let (zstd_speed, zstd_speed_short) = ZSTD_SPEED.snapshot();
        Measured {
            model_secs_per_byte: self.sched.as_ref().map(Scheduler::secs_per_byte),
            link_rate: self.link.rate(),
            link_busy_secs: self.link.busy_secs(),
            link_unsent_secs: self.link.unsent_secs(),
            lm_cost: costs.lm(&self.link),
            free_cost: costs.free(&self.link),
            zstd_cost: costs.zstd(&self.link),
            zstd_speed,
            zstd_speed_short,
            zstd_probe: self.link.claim_zstd_probe(),
        }
    }

    /// Counts a sent frame toward the link's queue, the measured costs and
    /// the model's metrics; returns its wire bytes. `tried_zstd`: zstd had
    /// the frame (and coded it, or it went raw).
    pub(crate) fn account(
        &self,
        costs: &mut ConnCosts,
        f: &EncodedFrame,
        tried_model: bool,
        tried_zstd: bool,
    ) -> u64 {
        let wire = f.wire_len() + 1;
        let input = f.header.orig_len as usize;
        self.link.wrote(wire as u64);
        let codec = f.header.codec;
        if codec == llmpack_frame::Codec::Zstd || (tried_zstd && codec == llmpack_frame::Codec::Raw)
        {
            costs.record_zstd(&self.link, input, f.header.payload_len as usize);
        }
        if self.sched.is_none() {
            return wire as u64;
        }
        let lm = f.header.codec == llmpack_frame::Codec::Lm;
        if lm {
            // What the model saved against the model-free cost measured
            // on this connection (or its link): the goodput it added.
            let saved = costs.free(&self.link) * input as f64 - wire as f64;
            if saved >= 1.0 {
                // Positive and at most a frame's bytes: whole bytes survive.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                self.metrics.model_saved.increment(saved as u64);
            }
            self.metrics.model_bytes.increment(input as u64);
        }
        costs.record(&self.link, tried_model, input, wire);
        wire as u64
    }

    pub(crate) fn count_frame(&self, dir: Dir, f: &FrameHeader) {
        let m = &self.metrics.frames[dir as usize][usize::from(f.codec.to_byte()).min(2)];
        m.frames.increment(1);
        m.bytes_in.increment(u64::from(f.orig_len));
        m.bytes_out
            .increment(u64::from(f.payload_len) + llmpack_frame::FRAME_HEADER_LEN as u64);
        if f.orig_len > 0 {
            m.bits_per_byte
                .record(8.0 * f64::from(f.payload_len) / f64::from(f.orig_len));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_speed_averages_per_level() {
        let s = ZstdSpeed::new();
        s.record(5, 100, Duration::from_millis(1));
        assert_eq!(s.get(5, false), 0, "short frames are kept apart");
        assert_eq!(s.get(5, true), 512_000, "and count as 512 bytes");
        s.record(5, 1 << 20, Duration::from_millis(100));
        let first = s.get(5, false);
        assert!((10_000_000..11_000_000).contains(&first), "{first}");
        assert_eq!(s.get(5, true), 512_000, "long frames leave short ones");
        // A 4x slower frame moves the average a quarter of the way.
        s.record(5, 1 << 20, Duration::from_millis(400));
        let second = s.get(5, false);
        assert!(second < first && second > first / 2, "{first} -> {second}");
        assert_eq!(s.get(19, false), 0, "levels are kept apart");
        assert_eq!(
            s.get(99, false),
            s.get(22, false),
            "levels beyond 22 share its slot"
        );
        s.record(5, 0, Duration::from_millis(1));
        assert_eq!(
            s.get(5, true),
            512_000,
            "a frame zstd did not see is no sample"
        );
    }
}
