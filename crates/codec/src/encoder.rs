//! The sending half of a stream: frames in, coded frames out.

use std::sync::Arc;

use constriction::stream::Encode;
use constriction::stream::queue::DefaultRangeEncoder;
use llmpack_frame::{Codec, FRAME_HEADER_LEN, FrameHeader, MAX_FRAME_LEN};

use crate::history::History;
use crate::lane::LmLane;
use crate::predict::{LaneId, Request};
use crate::tokens::Vocabulary;
use crate::{Policy, Stats, StreamConfig, checksum};

/// Whether `data` (at least 4 KiB of it) has an order-0 entropy above 7.9
/// bits per byte: random-looking, so zstd would not shrink it. Text is
/// around 4.5-5.5, binaries and tables well below 7.5.
fn looks_random(data: &[u8]) -> bool {
    if data.len() < 4096 {
        return false;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[usize::from(b)] += 1;
    }
    let n = data.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    bits > 7.9
}

/// Frames up to this many bytes are tried with the model under
/// [`Policy::Auto`] whatever zstd makes of them.
const SMALL_FRAME: usize = 512;

/// A coded frame: header and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The frame header.
    pub header: FrameHeader,
    /// The payload (`header.payload_len` bytes).
    pub payload: Vec<u8>,
}

impl EncodedFrame {
    /// Header plus payload length on the wire.
    pub fn wire_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.len()
    }

    /// Appends header and payload to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.header.encode(out);
        out.extend_from_slice(&self.payload);
    }
}

/// One frame being coded with the model.
#[derive(Debug)]
struct LmJob {
    data: Vec<u8>,
    sum: u64,
    tokens: Vec<u32>,
    /// Tokens coded so far (and fed to the lane).
    pos: usize,
    /// Bytes those tokens cover.
    covered: usize,
    rc: DefaultRangeEncoder,
    /// The best model-free coding: codec and payload.
    fallback: (Codec, Option<Vec<u8>>),
    /// Under `auto`: (prefix length, bits of the model-free coding of that
    /// prefix), ascending; the model gives up at the first it clearly loses.
    checkpoints: Vec<(usize, f64)>,
}

/// Prefix lengths at which `auto` compares the model with zstd on the same
/// bytes, and gives up on the model when it is [`ABORT_RATIO`] times worse.
const CHECKPOINTS: [usize; 3] = [2048, 4096, 8192];
/// How much worse than zstd on the same prefix the model may be and still
/// finish the frame (it usually gains on zstd as its context fills).
const ABORT_RATIO: f64 = 1.2;

/// Encodes one direction of a stream, frame by frame.
///
/// ```text
/// push(frame) → while let Some(req) = poll_request() { handle_prediction(model(req)) }
///             → take_frame()
/// ```
/// Requests of many encoders are best answered together (see [`crate::drive`]).
#[derive(Debug)]
pub struct StreamEncoder {
    cfg: StreamConfig,
    vocab: Arc<dyn Vocabulary>,
    lane: Option<LmLane>,
    history: History,
    job: Option<LmJob>,
    ready: Option<EncodedFrame>,
    stats: Stats,
    /// Whether frames may try zstd (see [`Self::set_zstd`]).
    zstd_on: bool,
    /// Bytes given to zstd so far, and the time it took on them.
    zstd_work: (u64, std::time::Duration),
}

impl std::fmt::Debug for dyn Vocabulary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vocabulary({} tokens)", self.vocab_size())
    }
}

impl StreamEncoder {
    /// A new encoder for lane `id`. `primer` is text both ends share as the
    /// start of the model context (may be empty). The model is used only if
    /// `cfg.policy` allows it and `cfg.lm` is set.
    pub fn new(id: LaneId, cfg: StreamConfig, vocab: Arc<dyn Vocabulary>, primer: &[u8]) -> Self {
        let lm = if cfg.policy.uses_model() {
            cfg.lm
        } else {
            None
        };
        let lane = crate::lane::new_lane(id, lm, &*vocab, primer);
        StreamEncoder {
            history: History::new(cfg.zstd_history),
            cfg,
            vocab,
            lane,
            job: None,
            ready: None,
            stats: Stats::default(),
            zstd_on: true,
            zstd_work: (0, std::time::Duration::ZERO),
        }
    }

    /// Whether a frame is being coded or waits to be taken.
    pub fn busy(&self) -> bool {
        self.job.is_some() || self.ready.is_some()
    }

    /// Changes the zstd level of the frames pushed from now on (the decoder
    /// does not need to know it).
    pub fn set_zstd_level(&mut self, level: i32) {
        self.cfg.zstd_level = level;
    }

    /// Whether the frames pushed from now on may try zstd (default: yes).
    /// Without it they go `raw` unless the model codes them: what a caller
    /// does when the link carries bytes faster than zstd makes them (the
    /// decoder does not need to know; the zstd history is kept either way).
    pub fn set_zstd(&mut self, on: bool) {
        self.zstd_on = on;
    }

    /// Bytes zstd has compressed so far and the wall time it took on them,
    /// for callers that weigh zstd's speed against the link's.
    pub fn zstd_work(&self) -> (u64, std::time::Duration) {
        self.zstd_work
    }

    /// Counts so far.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.model_requests = self.lane.as_ref().map_or(0, |l| l.requests);
        s
    }

    /// Starts coding one frame. Panics if the previous frame was not taken
    /// or `data` is longer than [`MAX_FRAME_LEN`] (caller bugs).
    pub fn push(&mut self, data: Vec<u8>) {
        self.push_with(data, true);
    }

    /// [`Self::push`], with `allow_model = false` to code this one frame
    /// without the model (zstd or raw) even where the policy would try it:
    /// what a caller does when the model cannot finish the frame in time.
    /// The frame's tokens then stay out of the model context, on both ends.
    pub fn push_with(&mut self, data: Vec<u8>, allow_model: bool) {
        assert!(!self.busy(), "push while a frame is in progress");
        assert!(data.len() <= MAX_FRAME_LEN as usize, "frame too long");
        let sum = checksum(&data);
        // Bytes that look uniformly random (encrypted or already compressed
        // data) skip zstd: a failed zstd attempt costs as much as a
        // successful one, and this check costs a byte histogram.
        let skip_zstd = looks_random(&data);
        let zstd = match self.cfg.policy {
            Policy::Raw => None,
            _ if skip_zstd || !self.zstd_on => None,
            _ => {
                let t0 = std::time::Instant::now();
                let z = self.history.compress(self.cfg.zstd_level, &data);
                self.zstd_work.0 += data.len() as u64;
                self.zstd_work.1 += t0.elapsed();
                z
            }
        };
        let fallback = match zstd {
            Some(z) => (Codec::Zstd, Some(z)),
            None => (Codec::Raw, None),
        };
        let fallback_len = fallback.1.as_ref().map_or(data.len(), Vec::len);

        let try_lm = allow_model
            && self.lane.is_some()
            && !data.is_empty()
            && match self.cfg.policy {
                Policy::Lm => true,
                // Small frames (requests, interactive lines) are tried even
                // where zstd cannot shrink them: it has too little to see.
                Policy::Auto => {
                    data.len() <= SMALL_FRAME
                        || (fallback_len as f64) < self.cfg.lm_skip_ratio * data.len() as f64
                }
                _ => false,
            };
        // What the model-free coding makes of the frame's prefixes (with the
        // history before this frame, as the whole frame's zstd had).
        let checkpoints = if try_lm && self.cfg.policy == Policy::Auto {
            CHECKPOINTS
                .iter()
                .filter(|&&n| n + n / 2 <= data.len())
                .map(|&n| {
                    let bytes = match &fallback.1 {
                        Some(_) => self
                            .history
                            .compress_part(self.cfg.zstd_level, &data[..n], data.len())
                            .map_or(n, |z| z.len()),
                        None => n,
                    };
                    (n, 8.0 * bytes as f64)
                })
                .collect()
        } else {
            Vec::new()
        };
        if self.cfg.policy != Policy::Raw {
            self.history.push(&data);
        }
        if try_lm {
            let mut tokens = Vec::with_capacity(data.len() / 3 + 1);
            self.vocab.tokenize(&data, &mut tokens);
            self.job = Some(LmJob {
                data,
                sum,
                tokens,
                pos: 0,
                covered: 0,
                rc: DefaultRangeEncoder::new(),
                fallback,
                checkpoints,
            });
        } else {
            let frame = self.fallback_frame(data, sum, fallback, 0);
            self.ready = Some(frame);
        }
    }

    /// Codes as far as possible; returns the request the lane needs answered
    /// next, or `None` when the frame is finished (see [`Self::take_frame`])
    /// or a request is already outstanding.
    pub fn poll_request(&mut self) -> Option<Request> {
        let job = self.job.as_mut()?;
        let lane = self.lane.as_mut().expect("lm jobs exist only with a lane");
        while job.pos < job.tokens.len() {
            if !lane.ready() {
                return lane.next_request();
            }
            let t = job.tokens[job.pos];
            let (rc, table) = (&mut job.rc, &lane.table);
            let coded = crate::lane::timed(
                &mut lane.profile,
                |p| &mut p.coder,
                || rc.encode_symbol(t as usize, table),
            );
            if coded.is_err() {
                // Only a token id outside the model's vocabulary gets here;
                // never let it corrupt the stream: send the frame model-free.
                break;
            }
            lane.feed(t);
            job.pos += 1;
            job.covered += self.vocab.token_bytes(t).map_or(0, <[u8]>::len);
            // Give up early when the model clearly loses to zstd/raw on
            // the same prefix.
            if let Some(&(n, fallback_bits)) = job.checkpoints.first()
                && job.covered >= n
            {
                job.checkpoints.remove(0);
                let bits = job.rc.num_bits() as f64 * n as f64 / job.covered as f64;
                if bits > ABORT_RATIO * fallback_bits {
                    break;
                }
            }
        }
        let job = self.job.take().expect("checked above");
        let fed = u32::try_from(job.pos).expect("tokens <= frame length");
        let frame = if job.pos == job.tokens.len() {
            let words = job.rc.into_compressed().unwrap_or_default();
            let lm_len = words.len() * 4;
            let fallback_len = job.fallback.1.as_ref().map_or(job.data.len(), Vec::len);
            if lm_len < fallback_len {
                let mut payload = Vec::with_capacity(lm_len);
                for w in words {
                    payload.extend_from_slice(&w.to_le_bytes());
                }
                self.frame(Codec::Lm, job.data.len(), job.sum, payload, fed)
            } else {
                self.fallback_frame(job.data, job.sum, job.fallback, fed)
            }
        } else {
            self.fallback_frame(job.data, job.sum, job.fallback, fed)
        };
        self.ready = Some(frame);
        None
    }

    /// Turns on (or off, discarding it) the timing of the work around the
    /// model: table builds, the match model and the range coder.
    pub fn set_profiling(&mut self, on: bool) {
        if let Some(lane) = self.lane.as_mut() {
            lane.profile = on.then(crate::Profile::default);
        }
    }

    /// The times so far, if profiling is on.
    pub fn profile(&self) -> Option<crate::Profile> {
        self.lane.as_ref().and_then(|l| l.profile)
    }

    /// Takes the answer to the request [`Self::poll_request`] returned.
    pub fn handle_prediction(&mut self, logits: &[f32]) {
        if let Some(lane) = self.lane.as_mut() {
            lane.answer(logits);
        }
    }

    /// The finished frame, once [`Self::poll_request`] returned `None`.
    pub fn take_frame(&mut self) -> Option<EncodedFrame> {
        self.ready.take()
    }

    /// The lane id the model knows this encoder by (if it uses a model).
    pub fn lane(&self) -> Option<LaneId> {
        self.lane.as_ref().map(LmLane::id)
    }

    /// The lane, if it ever asked the model for anything: the only lanes a
    /// predictor holds state for, and so the only ones worth releasing.
    pub fn used_lane(&self) -> Option<LaneId> {
        self.lane
            .as_ref()
            .filter(|l| l.requests > 0)
            .map(LmLane::id)
    }

    /// The frame of the best model-free coding; a `raw` frame's payload is
    /// `data` itself, moved, not copied.
    fn fallback_frame(
        &mut self,
        data: Vec<u8>,
        sum: u64,
        fallback: (Codec, Option<Vec<u8>>),
        fed: u32,
    ) -> EncodedFrame {
        match fallback {
            (codec, Some(p)) => self.frame(codec, data.len(), sum, p, fed),
            (_, None) => self.frame(Codec::Raw, data.len(), sum, data, fed),
        }
    }

    fn frame(
        &mut self,
        codec: Codec,
        orig_len: usize,
        sum: u64,
        payload: Vec<u8>,
        tokens: u32,
    ) -> EncodedFrame {
        let frame = EncodedFrame {
            header: FrameHeader {
                codec,
                orig_len: u32::try_from(orig_len).expect("checked in push"),
                payload_len: u32::try_from(payload.len()).expect("payload <= original"),
                tokens,
                checksum: sum,
            },
            payload,
        };
        self.stats.count(codec, orig_len, frame.wire_len());
        frame
    }
}
