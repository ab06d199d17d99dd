//! Which coder takes the next frame: the goodput rule of `codec = "auto"`.
//!
//! A pure function of measured inputs ([`Inputs`] → [`Choice`]); the
//! connection gathers the inputs (link rate and queue, the model's speed
//! with its backlog, the ratios this connection's frames got) and moves
//! bytes; this module only decides.
//!
//! # The rule
//! Let the link carry `L` bytes/s and have `q` bytes queued ahead of this
//! frame: it stays busy for `T0 = q / L` whatever this connection does. The
//! model takes `s` seconds per input byte (its backlog included) and makes
//! `c_lm` wire bytes per input byte; the model-free coder (zstd or raw)
//! makes `c_free`. Giving the model `n` bytes
//! - saves `n · (c_free − c_lm)` wire bytes, and
//! - leaves the link idle for `max(0, n·s − T0)` seconds, which costs
//!   `L · max(0, n·s − T0)` bytes the link could have carried.
//!
//! The model gets the largest `n` (up to the frame cap) whose saving is at
//! least its cost, and whose added delay `n·s − T0` stays within
//! `max_delay`. Within `T0` the model is free: the link is busy anyway, so
//! on a queued slow link the model codes as large a share as it keeps up
//! with, and the rest goes model-free (goodput `c_free⁻¹·L + M·(1 −
//! c_lm/c_free)` for a model speed `M`, up to `L / c_lm`). On a fast or idle
//! link the idle time costs more than the model saves, and frames go
//! model-free: an interactive request never waits for the model there. So
//! do frames before the link's rate is measured.
//!
//! A model frame shorter than the bytes waiting is cut at `n`; the rest goes
//! in the next frame (model-free, or the model again once it is free),
//! in order: frames carry sequence numbers and contexts as before.

/// Smallest model frame worth cutting from a longer run of waiting bytes:
/// below it the frame header and the model's cold start eat the saving.
pub const MIN_MODEL_CUT: usize = 512;

/// Wire bytes per input byte assumed for the model before this connection
/// or its link has measured any model frame, as a share of the model-free
/// coder's: optimistic, so that the model gets tried and measured.
pub const LM_PRIOR: f64 = 0.75;

/// What the rule decides from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inputs {
    /// Bytes waiting to be framed.
    pub pending: usize,
    /// Frame size cap.
    pub frame: usize,
    /// `codec = "lm"`: the model takes every frame it can finish within
    /// `max_delay`, whatever the link (no goodput test).
    pub forced: bool,
    /// Seconds per input byte the model would take on a one-lane frame that
    /// joined now, its backlog included; `None`: no model for this frame.
    pub model_secs_per_byte: Option<f64>,
    /// Lanes a model frame may be coded on at once (at least 1): a frame
    /// of `k` × [`SEGMENT_BYTES`] or more steps `k` segments together, at
    /// [`segment_speedup`]`(k)` times the one-lane speed.
    pub lanes: usize,
    /// Most seconds the model may add to a frame's delivery.
    pub max_delay: f64,
    /// The link's delivery rate estimate, bytes/s (0: not known yet).
    pub link_rate: f64,
    /// Bytes queued for the link ahead of this frame (every connection's).
    pub link_queue: f64,
    /// Measured wire bytes per input byte of the model's frames (`None`:
    /// none yet; [`LM_PRIOR`] of `free_cost` is assumed).
    pub lm_cost: Option<f64>,
    /// Measured wire bytes per input byte of model-free frames (1.0 before
    /// any: raw).
    pub free_cost: f64,
}

/// The decision for the next frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The model codes the next `bytes` bytes.
    Model {
        /// Frame length.
        bytes: usize,
    },
    /// zstd or raw codes the next `bytes` bytes.
    Free {
        /// Frame length.
        bytes: usize,
    },
}

impl Choice {
    /// The frame length.
    pub fn bytes(self) -> usize {
        match self {
            Choice::Model { bytes } | Choice::Free { bytes } => bytes,
        }
    }

    /// Whether the model codes it.
    pub fn model(self) -> bool {
        matches!(self, Choice::Model { .. })
    }
}

/// What each row of a model call beyond the first adds, as a share of a
/// one-row call (`llmpack speed`, default model, 2 CPU cores: 2.1 ms at 1
/// row per call, 4.0 ms at 3.6 rows, 7.9 ms at 12).
pub const ROW_COST: f64 = 0.3;

/// Input bytes a segment of a model frame gets at least: 512 tokens
/// (`llmpack_codec::segments::MIN_SEGMENT_TOKENS`) at about 3 bytes each.
pub const SEGMENT_BYTES: usize = 1536;

/// How much faster a frame codes on `k` lanes than on one: `k` tokens a
/// call, for a call `1 + ROW_COST·(k − 1)` times as long.
pub fn segment_speedup(k: usize) -> f64 {
    let k = k.max(1) as f64;
    k / (1.0 + ROW_COST * (k - 1.0))
}

/// The rule (see the module docs).
pub fn choose(i: &Inputs) -> Choice {
    let full = i.pending.min(i.frame);
    let free = Choice::Free { bytes: full };
    let Some(s) = i.model_secs_per_byte.filter(|s| s.is_finite() && *s >= 0.0) else {
        return free;
    };
    if full == 0 {
        return free;
    }
    let max_delay = i.max_delay.max(0.0);
    // How many bytes the model may take at `s` seconds per byte.
    let rate_known = i.link_rate > 0.0 && i.link_rate.is_finite();
    let n_max_at: Box<dyn Fn(f64) -> f64> = if i.forced {
        // `lm`: only the delay bound.
        Box::new(move |s| budget(max_delay, s))
    } else if !rate_known {
        // A link not measured yet (its first moments): nothing says the
        // model would not keep an idle link waiting.
        return free;
    } else {
        let rate = i.link_rate;
        let t0 = (i.link_queue.max(0.0) / rate).max(0.0);
        let free_cost = i.free_cost.clamp(0.0, 2.0);
        let lm_cost = i.lm_cost.unwrap_or(LM_PRIOR * free_cost).max(0.0);
        let d = free_cost - lm_cost;
        if d <= 0.0 {
            return free;
        }
        Box::new(move |s| {
            // saving n·d ≥ cost L·(n·s − T0)  ⇔  n·(s − d/L) ≤ T0.
            let slope = s - d / rate;
            let by_cost = if slope <= 0.0 {
                f64::INFINITY
            } else {
                t0 / slope
            };
            budget(t0 + max_delay, s).min(by_cost)
        })
    };
    // On `k` lanes a frame codes faster, but only a frame long enough to
    // be cut into `k` segments gets them: the largest length any `k` allows.
    let n_max = (1..=i.lanes.max(1))
        .map(|k| {
            let n = n_max_at(s / segment_speedup(k)).min(full as f64);
            if k == 1 || n >= (k * SEGMENT_BYTES) as f64 {
                n
            } else {
                0.0
            }
        })
        .fold(0.0, f64::max);
    let n = if n_max >= full as f64 {
        full
    } else {
        // 0 <= n_max < full: the cast keeps the whole bytes.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = n_max.max(0.0) as usize;
        n
    };
    if n == full || n >= MIN_MODEL_CUT {
        if n == 0 {
            return free;
        }
        Choice::Model { bytes: n }
    } else {
        free
    }
}

/// Bytes the model codes in `secs` at `s` seconds per byte.
fn budget(secs: f64, s: f64) -> f64 {
    if s <= 0.0 { f64::INFINITY } else { secs / s }
}

/// zstd levels there are (0 to 22), for per-level measurements.
pub const ZSTD_LEVELS: usize = 23;

/// How often a link tries zstd on a frame that [`zstd_pays`] would send
/// raw, to keep zstd's speed and ratio measured: one such frame per link
/// in this time, whichever connection cuts it (a count of frames per
/// connection would try zstd more often the more connections there are,
/// and each try costs that exchange zstd's time).
pub const ZSTD_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Whether zstd should try the next frame of `n` bytes under `auto`, or the
/// frame should go raw, from the link's rate (`rate`, bytes/s), the seconds
/// this end's own bytes already handed to the link take to leave
/// (`unsent_secs`), zstd's speed at the frame's level on this machine
/// (`speed`, input bytes/s) and the output bytes per input byte zstd got on
/// this connection's frames (`cost`). Unknown rate, speed or cost (0 or
/// `None`): try zstd, which measures them.
///
/// - The link outruns zstd (`rate > speed`): the link would wait for zstd,
///   and a stream of frames gets there sooner raw.
/// - Otherwise zstd delays the frame by its compression time, less what
///   the bytes queued ahead of it take to leave anyway, and saves
///   `n · (1 − cost) / rate` seconds of link time; it pays when the saving
///   is at least the delay. On a slow link the saving always wins; on a
///   fast idle one (loopback, a LAN) compressing takes longer than sending
///   the bytes raw, and the frame goes raw.
/// - The compression time is `max(n, ZSTD_MIN_TIMED) / speed`: a short
///   frame still pays for its prefix (at least 4 KiB of history), which the
///   speed, timed on longer frames, spreads over their bytes (see
///   [`zstd_speed_for`] for short frames' own speed). The peer's
///   decompression, several times faster, is not counted.
/// - Only this end's unsent bytes hide the compression, not the network's
///   queueing delay: zstd runs on the threads that drive the sockets, and
///   where the CPU is what limits (a loopback or LAN tunnel under load) a
///   longer RTT is that CPU's queue, which compressing would only lengthen.
pub fn zstd_pays(n: usize, rate: u64, unsent_secs: f64, speed: u64, cost: Option<f64>) -> bool {
    if rate == 0 || speed == 0 {
        return true;
    }
    if rate > speed {
        return false;
    }
    let Some(cost) = cost.filter(|c| c.is_finite()) else {
        return true;
    };
    let unsent = if unsent_secs.is_finite() {
        unsent_secs.max(0.0)
    } else {
        0.0
    };
    let delay = (n.max(ZSTD_MIN_TIMED) as f64 / speed as f64 - unsent).max(0.0);
    let saving = n as f64 * (1.0 - cost).max(0.0) / rate as f64;
    delay <= saving
}

/// Frames shorter than this are counted as taking this many bytes' time
/// (see [`zstd_pays`]), and their speed is kept apart (see
/// [`zstd_speed_for`]).
pub const ZSTD_MIN_TIMED: usize = 512;

/// zstd's speed for a frame of `n` bytes, from the speeds measured on frames
/// of at least [`ZSTD_MIN_TIMED`] bytes (`long`) and on shorter ones
/// (`short`, each counted as `ZSTD_MIN_TIMED` bytes); 0 where unknown.
///
/// A short frame takes its own class's speed, else the long frames' (a
/// connection of small exchanges only, such as a database client's, would
/// otherwise never have zstd's speed known, and every frame of it would go
/// to zstd to measure it). A long frame takes only the long frames' speed:
/// a short frame's time is mostly its prefix, which says little about
/// compressing 16 KiB, and with 0 the first long frame is timed.
pub fn zstd_speed_for(n: usize, long: u64, short: u64) -> u64 {
    if n < ZSTD_MIN_TIMED && short > 0 {
        short
    } else {
        long
    }
}

/// The zstd level for a link delivering `rate` bytes/s (0: unknown): the
/// smallest output zstd can make while it still outruns the link on one core
/// (16 KiB frames with a 128 KiB prefix: level 19 ~2 MB/s, 9 ~15 MB/s, 3 ~30
/// MB/s and more on this project's 2-core machine).
pub fn zstd_level_for(rate: u64) -> i32 {
    match rate {
        0 => 3,
        r if r < 256 << 10 => 19,
        r if r < 2 << 20 => 9,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A geo-sat-like link (64 kbit/s), a model at 1.6 KB/s that codes
    /// prose at 0.2 wire bytes per byte against zstd's 0.32.
    fn slow_link() -> Inputs {
        Inputs {
            pending: 16 << 10,
            frame: 16 << 10,
            forced: false,
            model_secs_per_byte: Some(1.0 / 1600.0),
            lanes: 1,
            max_delay: 2.0,
            link_rate: 8000.0,
            link_queue: 0.0,
            lm_cost: Some(0.2),
            free_cost: 0.32,
        }
    }

    /// On several lanes the model takes what its segments can code in
    /// time, but only lengths that are cut into that many segments.
    #[test]
    fn lanes_take_longer_frames() {
        let forced = Inputs {
            forced: true,
            ..slow_link()
        };
        // One lane: 2 s at 1600 B/s.
        assert_eq!(choose(&forced), Choice::Model { bytes: 3200 });
        // Four lanes: 4 / 1.9 times as fast.
        let four = Inputs { lanes: 4, ..forced };
        assert_eq!(choose(&four), Choice::Model { bytes: 6736 });
        // 5000 bytes waiting: too short for 4 segments (6144), long enough
        // for 3 (4608), which take all of it in time.
        assert_eq!(
            choose(&Inputs {
                pending: 5000,
                ..four
            }),
            Choice::Model { bytes: 5000 }
        );
        // A slower model: 2 lanes would allow 3076 bytes, under their 3072
        // minimum... just over it; 3 lanes 3750, under their 4608.
        let slow = Inputs {
            model_secs_per_byte: Some(1.0 / 1000.0),
            ..four
        };
        assert_eq!(choose(&slow), Choice::Model { bytes: 3076 });
        assert!(segment_speedup(1) == 1.0 && segment_speedup(0) == 1.0);
    }

    #[test]
    fn short_frames_take_their_own_zstd_speed() {
        let (long, short) = (80_000_000, 30_000_000);
        assert_eq!(zstd_speed_for(100, long, short), short);
        assert_eq!(zstd_speed_for(511, long, short), short);
        assert_eq!(zstd_speed_for(512, long, short), long);
        assert_eq!(zstd_speed_for(16 << 10, long, short), long);
        // Unknown for short frames: the long frames' speed.
        assert_eq!(zstd_speed_for(100, long, 0), long);
        // Unknown for long frames: 0, so the first long frame is timed.
        assert_eq!(zstd_speed_for(16 << 10, 0, short), 0);
        // A database client's 100-byte queries on an idle loopback link
        // (rate from cwnd/RTT ~40 MB/s): once a short frame was timed they
        // go raw, where an unknown speed sent every one to zstd.
        let rate = 40_000_000;
        assert!(zstd_pays(
            100,
            rate,
            0.0,
            zstd_speed_for(100, 0, 0),
            Some(0.3)
        ));
        assert!(!zstd_pays(
            100,
            rate,
            0.0,
            zstd_speed_for(100, 0, 30_000_000),
            Some(0.3)
        ));
    }

    #[test]
    fn zstd_pays_where_its_time_comes_back_on_the_link() {
        let n = 16 << 10;
        let text = Some(0.4);
        // Unknown rate, speed or cost: try zstd.
        assert!(zstd_pays(n, 0, 0.0, 100 << 20, text));
        assert!(zstd_pays(n, 1 << 20, 0.0, 0, text));
        assert!(zstd_pays(n, 1 << 20, 0.0, 100 << 20, None));
        assert!(zstd_pays(n, 1 << 20, 0.0, 100 << 20, Some(f64::NAN)));
        // A slow link: zstd at 100 MB/s saves far more than it takes.
        assert!(zstd_pays(n, 8000, 0.0, 100 << 20, text));
        // The link outruns zstd: raw, whatever the queue or the ratio.
        assert!(!zstd_pays(n, 200 << 20, 10.0, 100 << 20, Some(0.1)));
        // A fast idle link (loopback): 164 µs of zstd against 123 µs of
        // link time saved at 80 MB/s; raw.
        assert!(!zstd_pays(n, 80_000_000, 0.0, 100_000_000, text));
        // The same link with 1 ms of this end's bytes queued hides the
        // compression: zstd.
        assert!(zstd_pays(n, 80_000_000, 0.001, 100_000_000, text));
        // A 100-byte request on a 15 MB/s link: its 4 KiB prefix costs
        // ~10 µs at 50 MB/s (timed as 512 bytes), 80 bytes saved take 5 µs.
        assert!(!zstd_pays(100, 15_000_000, 0.0, 50_000_000, Some(0.2)));
        // The same request on a geo-sat link saves 10 ms: zstd.
        assert!(zstd_pays(100, 8000, 0.0, 50_000_000, Some(0.2)));
        // A 10 MB/s link saves 983 µs: zstd.
        assert!(zstd_pays(n, 10_000_000, 0.0, 100_000_000, text));
        // Bytes zstd does not shrink (random, compressed): raw once the
        // link is fast enough for the attempt to show.
        assert!(!zstd_pays(n, 10_000_000, 0.0, 100_000_000, Some(1.0)));
        assert!(!zstd_pays(n, 10_000_000, f64::NAN, 100_000_000, Some(1.2)));
        // An empty frame has nothing to save.
        assert!(!zstd_pays(0, 10_000_000, 0.0, 100_000_000, Some(0.1)));
    }

    #[test]
    fn table() {
        let base = slow_link();
        // (what, inputs, expected)
        let cases: Vec<(&str, Inputs, Choice)> = vec![
            (
                "no model",
                Inputs {
                    model_secs_per_byte: None,
                    ..base
                },
                Choice::Free { bytes: 16 << 10 },
            ),
            (
                "idle slow link: the model would leave it idle, zstd goes",
                base,
                Choice::Free { bytes: 16 << 10 },
            ),
            (
                "queue of 4 s: the model takes what it codes in 4 s (6400 B) and a bit more",
                Inputs {
                    link_queue: 32_000.0,
                    ..base
                },
                // n·(1/1600 − 0.12/8000) ≤ 4  ⇒  n ≤ 6557
                Choice::Model { bytes: 6557 },
            ),
            (
                "a deep queue: the whole frame",
                Inputs {
                    link_queue: 200_000.0,
                    ..base
                },
                Choice::Model { bytes: 16 << 10 },
            ),
            (
                "a short queue: under the smallest cut, zstd",
                Inputs {
                    link_queue: 500.0,
                    ..base
                },
                Choice::Free { bytes: 16 << 10 },
            ),
            (
                "a short queue and a small frame that fits: the model",
                Inputs {
                    link_queue: 2000.0,
                    pending: 300,
                    ..base
                },
                Choice::Model { bytes: 300 },
            ),
            (
                "fast link with a queue: the model costs more than it saves",
                Inputs {
                    link_rate: 125_000_000.0,
                    link_queue: 1_000_000.0,
                    ..base
                },
                // T0 = 8 ms: 12 bytes of model time, under the cut
                Choice::Free { bytes: 16 << 10 },
            ),
            (
                "the model loses to zstd on this traffic",
                Inputs {
                    link_queue: 200_000.0,
                    lm_cost: Some(0.4),
                    ..base
                },
                Choice::Free { bytes: 16 << 10 },
            ),
            (
                "no lm measurement yet: the prior lets it try",
                Inputs {
                    link_queue: 200_000.0,
                    lm_cost: None,
                    ..base
                },
                Choice::Model { bytes: 16 << 10 },
            ),
            (
                "a very slow link: the model's saving outruns the link, max_delay bounds it",
                Inputs {
                    link_rate: 100.0,
                    ..base
                },
                // slope < 0: n ≤ (0 + 2 s)·1600
                Choice::Model { bytes: 3200 },
            ),
            (
                "rate unknown (the link's first moments): model-free",
                Inputs {
                    link_rate: 0.0,
                    link_queue: 200_000.0,
                    ..base
                },
                Choice::Free { bytes: 16 << 10 },
            ),
            (
                "forced lm on a fast link: only max_delay",
                Inputs {
                    forced: true,
                    link_rate: 125_000_000.0,
                    pending: 1000,
                    ..base
                },
                Choice::Model { bytes: 1000 },
            ),
            (
                "behind a deep queue, max_delay = 0 still lets the model in: it adds no delay",
                Inputs {
                    link_queue: 8_000_000.0,
                    max_delay: 0.0,
                    ..base
                },
                Choice::Model { bytes: 16 << 10 },
            ),
            (
                "nothing pending",
                Inputs { pending: 0, ..base },
                Choice::Free { bytes: 0 },
            ),
            (
                "a broken speed measurement never picks the model",
                Inputs {
                    model_secs_per_byte: Some(f64::NAN),
                    link_queue: 200_000.0,
                    ..base
                },
                Choice::Free { bytes: 16 << 10 },
            ),
        ];
        for (what, inputs, want) in cases {
            assert_eq!(choose(&inputs), want, "{what}: {inputs:?}");
        }
    }

    #[test]
    fn share_grows_with_the_queue_and_shrinks_with_model_backlog() {
        let base = slow_link();
        let mut last = 0;
        for q in [0.0, 8e3, 16e3, 32e3, 64e3, 128e3] {
            let n = match choose(&Inputs {
                link_queue: q,
                ..base
            }) {
                Choice::Model { bytes } => bytes,
                Choice::Free { .. } => 0,
            };
            assert!(n >= last, "queue {q}: {n} < {last}");
            last = n;
        }
        assert_eq!(last, 16 << 10);
        let mut last = usize::MAX;
        for slow in [1.0, 2.0, 4.0, 8.0, 64.0] {
            let c = choose(&Inputs {
                link_queue: 32e3,
                model_secs_per_byte: Some(slow / 1600.0),
                ..base
            });
            let n = if c.model() { c.bytes() } else { 0 };
            assert!(n <= last, "backlog ×{slow}: {n} > {last}");
            last = n;
        }
        assert_eq!(last, 0);
    }

    #[test]
    fn never_more_than_pending_or_the_frame_cap() {
        let base = slow_link();
        for pending in [1, 100, 511, 512, 5000, 16 << 10, 1 << 20] {
            for q in [0.0, 1e3, 1e5, 1e9] {
                for rate in [0.0, 10.0, 8000.0, 1e9] {
                    let i = Inputs {
                        pending,
                        link_queue: q,
                        link_rate: rate,
                        ..base
                    };
                    let c = choose(&i);
                    assert!(c.bytes() <= pending.min(i.frame), "{i:?} -> {c:?}");
                    assert!(c.bytes() > 0, "{i:?} -> {c:?}");
                    if let Choice::Model { bytes } = c {
                        assert!(
                            bytes == pending.min(i.frame) || bytes >= MIN_MODEL_CUT,
                            "{i:?} -> {c:?}"
                        );
                    }
                }
            }
        }
    }
}
