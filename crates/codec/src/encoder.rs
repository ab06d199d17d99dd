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
    // Four tables, summed after: consecutive equal bytes then increment
    // different counters, so the loop does not wait on its own stores.
    let mut counts = [[0u32; 256]; 4];
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        for (table, &b) in counts.iter_mut().zip(q) {
            table[usize::from(b)] += 1;
        }
    }
    for &b in quads.remainder() {
        counts[0][usize::from(b)] += 1;
    }
    let n = data.len() as f64;
    let bits: f64 = (0..256)
        .map(|i| counts.iter().map(|t| t[i]).sum::<u32>())
        .filter(|&c| c > 0)
        .map(|c| {
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

/// One run of a frame's tokens, coded on one lane (see [`crate::segments`]).
#[derive(Debug)]
struct Segment {
    /// Its tokens: a range of the frame's.
    tokens: std::ops::Range<usize>,
    /// Tokens coded so far (and fed to the lane).
    pos: usize,
    rc: DefaultRangeEncoder,
}

/// One frame being coded with the model.
#[derive(Debug)]
struct LmJob {
    data: Vec<u8>,
    sum: u64,
    tokens: Vec<u32>,
    /// One per lane the frame is coded on; segment `j` on lane `j`.
    segments: Vec<Segment>,
    /// Tokens coded so far, all segments together.
    fed: usize,
    /// Bytes those tokens cover.
    covered: usize,
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

/// An `lm` frame's payload: the range coder's words, after a segment
/// table on streams of several lanes (see [`crate::segments`]).
fn lm_payload(segments: Vec<Segment>, table: bool) -> Vec<u8> {
    let words: Vec<(u32, Vec<u32>)> = segments
        .into_iter()
        .map(|s| {
            let n = u32::try_from(s.tokens.len()).expect("tokens <= frame length");
            (n, s.rc.into_compressed().unwrap_or_default())
        })
        .collect();
    let mut payload = Vec::new();
    if table {
        crate::segments::Table { segments: words }.encode(&mut payload);
    } else {
        for w in words.into_iter().flat_map(|(_, w)| w) {
            payload.extend_from_slice(&w.to_le_bytes());
        }
    }
    payload
}

/// Encodes one direction of a stream, frame by frame.
///
/// ```text
/// push(frame) → while poll_requests() hands out requests { handle_prediction(lane, model(req)) }
///             → take_frame()
/// ```
/// Requests of many encoders are best answered together (see [`crate::drive`]).
#[derive(Debug)]
pub struct StreamEncoder {
    cfg: StreamConfig,
    vocab: Arc<dyn Vocabulary>,
    /// The model lanes: none without a model, else `cfg.lanes` of them.
    lanes: Vec<LmLane>,
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
        let lanes = crate::lane::new_lanes(id, lm, cfg.lanes, &*vocab, primer);
        StreamEncoder {
            history: History::new(cfg.zstd_history),
            cfg,
            vocab,
            lanes,
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

    /// Whether [`Self::push_with`] with `allow_model` will send the frame
    /// `raw`, its payload the pushed bytes themselves (a caller can then
    /// keep one buffer for both).
    pub fn sends_raw(&self, allow_model: bool) -> bool {
        let no_model = !allow_model
            || self.lanes.is_empty()
            || matches!(self.cfg.policy, Policy::Zstd | Policy::Raw);
        no_model && (self.cfg.policy == Policy::Raw || !self.zstd_on)
    }

    /// Bytes zstd has compressed so far and the wall time it took on them,
    /// for callers that weigh zstd's speed against the link's.
    pub fn zstd_work(&self) -> (u64, std::time::Duration) {
        self.zstd_work
    }

    /// Counts so far.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.model_requests = self.lanes.iter().map(|l| l.requests).sum();
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
        let zstd = match self.cfg.policy {
            Policy::Raw => None,
            _ if !self.zstd_on || looks_random(&data) => None,
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
            && !self.lanes.is_empty()
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
            let segments =
                crate::segments::split(&tokens, self.cfg.lanes, self.vocab.escape_token())
                    .into_iter()
                    .map(|r| Segment {
                        pos: r.start,
                        tokens: r,
                        rc: DefaultRangeEncoder::new(),
                    })
                    .collect();
            self.job = Some(LmJob {
                data,
                sum,
                tokens,
                segments,
                fed: 0,
                covered: 0,
                fallback,
                checkpoints,
            });
        } else {
            let frame = self.fallback_frame(data, sum, fallback, 0);
            self.ready = Some(frame);
        }
    }

    /// Codes as far as possible and hands every request now due to `out`
    /// (at most one per lane). Nothing is handed out once the frame is
    /// finished (see [`Self::take_frame`]) or while the requests out are
    /// unanswered.
    ///
    /// The frame's segments advance in lockstep rounds, one token each per
    /// round (see [`crate::segments`]), so a frame that stops early has fed
    /// a prefix of that order, whatever answered the requests when.
    pub fn poll_requests(&mut self, out: &mut dyn FnMut(LaneId, Request)) {
        let Some(job) = self.job.as_mut() else { return };
        let mut stop = false;
        'rounds: loop {
            let mut waiting = false;
            let mut active = false;
            for (seg, lane) in job.segments.iter().zip(&mut self.lanes) {
                if seg.pos == seg.tokens.end {
                    continue;
                }
                active = true;
                if !lane.ready() {
                    waiting = true;
                    if let Some(r) = lane.next_request() {
                        out(lane.id(), r);
                    }
                }
            }
            if !active {
                break;
            }
            if waiting {
                return;
            }
            for (seg, lane) in job.segments.iter_mut().zip(&mut self.lanes) {
                if seg.pos == seg.tokens.end {
                    continue;
                }
                let t = job.tokens[seg.pos];
                let (rc, table) = (&mut seg.rc, &lane.table);
                let coded = crate::lane::timed(
                    &mut lane.profile,
                    |p| &mut p.coder,
                    || rc.encode_symbol(t as usize, table),
                );
                if coded.is_err() {
                    // Only a token id outside the model's vocabulary gets
                    // here; never let it corrupt the stream: send the frame
                    // model-free (what was fed is a prefix of the lockstep
                    // order, as the decoder will assume).
                    stop = true;
                    break 'rounds;
                }
                lane.feed(t);
                seg.pos += 1;
                job.fed += 1;
                job.covered += self.vocab.token_bytes(t).map_or(0, <[u8]>::len);
            }
            // Give up early when the model clearly loses to zstd/raw on
            // the same prefix (on several segments: on the same share).
            if let Some(&(n, fallback_bits)) = job.checkpoints.first()
                && job.covered >= n
            {
                job.checkpoints.remove(0);
                let bits: f64 = job.segments.iter().map(|s| s.rc.num_bits() as f64).sum();
                if bits * n as f64 / job.covered as f64 > ABORT_RATIO * fallback_bits {
                    stop = true;
                    break;
                }
            }
        }
        let job = self.job.take().expect("checked above");
        let fed = u32::try_from(job.fed).expect("tokens <= frame length");
        let fallback_len = job.fallback.1.as_ref().map_or(job.data.len(), Vec::len);
        let payload = (!stop).then(|| lm_payload(job.segments, self.cfg.lanes > 1));
        let frame = match payload {
            Some(p) if p.len() < fallback_len => {
                self.frame(Codec::Lm, job.data.len(), job.sum, p, fed)
            }
            _ => self.fallback_frame(job.data, job.sum, job.fallback, fed),
        };
        self.ready = Some(frame);
    }

    /// Turns on (or off, discarding it) the timing of the work around the
    /// model: table builds, the match model and the range coder.
    pub fn set_profiling(&mut self, on: bool) {
        for lane in &mut self.lanes {
            lane.profile = on.then(crate::Profile::default);
        }
    }

    /// The times so far, if profiling is on.
    pub fn profile(&self) -> Option<crate::Profile> {
        crate::lane::merged_profile(&self.lanes)
    }

    /// Takes the answer to the request of `lane` that
    /// [`Self::poll_requests`] handed out.
    pub fn handle_prediction(&mut self, lane: LaneId, logits: &[f32]) {
        if let Some(l) = self.lanes.iter_mut().find(|l| l.id() == lane) {
            l.answer(logits);
        }
    }

    /// The finished frame, once [`Self::poll_requests`] handed out nothing.
    pub fn take_frame(&mut self) -> Option<EncodedFrame> {
        self.ready.take()
    }

    /// The lane ids the model knows this encoder by (none without a model).
    pub fn lanes(&self) -> impl Iterator<Item = LaneId> + '_ {
        self.lanes.iter().map(LmLane::id)
    }

    /// The lanes that ever asked the model for anything: the only lanes a
    /// predictor holds state for, and so the only ones worth releasing.
    pub fn used_lanes(&self) -> Vec<LaneId> {
        crate::lane::used(&self.lanes)
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
