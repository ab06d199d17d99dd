//! The receiving half of a stream: coded frames in, verified bytes out.

use std::sync::Arc;

use bytes::Bytes;

use constriction::stream::Decode;
use constriction::stream::queue::DefaultRangeDecoder;
use llmpack_frame::{Codec, FrameHeader};

use crate::history::History;
use crate::lane::LmLane;
use crate::predict::{LaneId, Request};
use crate::tokens::Vocabulary;
use crate::{Stats, StreamConfig, checksum};

/// Why a frame could not be decoded. After any of these the decoder's model
/// context no longer matches the sender's; the stream must be rebuilt.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is malformed (wrong length, bad zstd data, impossible tokens).
    #[error("corrupt frame: {0}")]
    Corrupt(String),
    /// The decoded bytes do not match the frame's checksum: the data is
    /// damaged, or the two ends' models computed different distributions.
    #[error("checksum mismatch: frame says {expected:016x}, decoded bytes give {actual:016x}")]
    Checksum {
        /// Checksum in the frame header.
        expected: u64,
        /// Checksum of what was decoded.
        actual: u64,
    },
    /// The frame needs a model and this decoder has none.
    #[error("frame was coded with the language model, but no model is loaded")]
    NeedsModel,
    /// The model runtime failed while this frame was decoded.
    #[error("the model failed while decoding: {0}")]
    Model(String),
}

/// One segment of a frame being decoded, on one lane (see [`crate::segments`]).
#[derive(Debug)]
struct Segment {
    rc: DefaultRangeDecoder,
    /// Its tokens, and how many are decoded.
    tokens: u32,
    done: u32,
    out: Vec<u8>,
    /// The previous token was the escape token.
    escaped: bool,
}

#[derive(Debug)]
struct LmJob {
    header: FrameHeader,
    /// Segment `j` decodes on lane `j`.
    segments: Vec<Segment>,
    /// Bytes decoded, all segments together.
    out_len: usize,
}

/// Decodes a segment's next token with its lane's table, feeds it to the
/// lane and returns its bytes (none for an escape token).
fn decode_token<'v>(
    vocab: &'v dyn Vocabulary,
    seg: &mut Segment,
    lane: &mut LmLane,
) -> Result<TokenBytes<'v>, DecodeError> {
    let (rc, table) = (&mut seg.rc, &lane.table);
    let t = crate::lane::timed(
        &mut lane.profile,
        |p| &mut p.coder,
        || rc.decode_symbol(table),
    )
    .map_err(|_| DecodeError::Corrupt("range decoder ran off its data".into()))?;
    let id = u32::try_from(t).unwrap_or(u32::MAX);
    let bytes = if seg.escaped {
        seg.escaped = false;
        vocab.escaped_byte(id).map(TokenBytes::Byte)
    } else if vocab.escape_token() == Some(id) {
        seg.escaped = true;
        Some(TokenBytes::Slice(&[]))
    } else {
        vocab.token_bytes(id).map(TokenBytes::Slice)
    };
    let bytes =
        bytes.ok_or_else(|| DecodeError::Corrupt(format!("decoded token {t} has no bytes")))?;
    lane.feed(id);
    seg.done += 1;
    Ok(bytes)
}

/// What one decoded token stands for.
enum TokenBytes<'v> {
    Slice(&'v [u8]),
    Byte(u8),
}

impl TokenBytes<'_> {
    fn len(&self) -> usize {
        match self {
            TokenBytes::Slice(s) => s.len(),
            TokenBytes::Byte(_) => 1,
        }
    }
}

impl AsRef<[u8]> for TokenBytes<'_> {
    fn as_ref(&self) -> &[u8] {
        match self {
            TokenBytes::Slice(s) => s,
            TokenBytes::Byte(b) => std::slice::from_ref(b),
        }
    }
}

/// Decodes one direction of a stream, frame by frame; the mirror of
/// [`crate::StreamEncoder`].
#[derive(Debug)]
pub struct StreamDecoder {
    vocab: Arc<dyn Vocabulary>,
    /// The model lanes: none without a model, else `cfg.lanes` of them.
    lanes: Vec<LmLane>,
    /// Whether `lm` payloads carry a segment table (`cfg.lanes > 1`).
    segmented: bool,
    history: History,
    job: Option<LmJob>,
    ready: Option<Result<Bytes, DecodeError>>,
    stats: Stats,
}

impl StreamDecoder {
    /// A decoder for lane `id`; `cfg.lm` and `cfg.zstd_history` and `primer`
    /// must equal the encoder's.
    pub fn new(id: LaneId, cfg: &StreamConfig, vocab: Arc<dyn Vocabulary>, primer: &[u8]) -> Self {
        let lanes = crate::lane::new_lanes(id, cfg.lm, cfg.lanes, &*vocab, primer);
        StreamDecoder {
            vocab,
            lanes,
            segmented: cfg.lanes > 1,
            history: History::new(cfg.zstd_history),
            job: None,
            ready: None,
            stats: Stats::default(),
        }
    }

    /// Whether a frame is being decoded or waits to be taken.
    pub fn busy(&self) -> bool {
        self.job.is_some() || self.ready.is_some()
    }

    /// Counts so far.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.model_requests = self.lanes.iter().map(|l| l.requests).sum();
        s
    }

    /// The lane ids the model knows this decoder by (none without a model).
    pub fn lanes(&self) -> impl Iterator<Item = LaneId> + '_ {
        self.lanes.iter().map(LmLane::id)
    }

    /// The lanes that ever asked the model for anything: the only lanes a
    /// predictor holds state for, and so the only ones worth releasing.
    pub fn used_lanes(&self) -> Vec<LaneId> {
        crate::lane::used(&self.lanes)
    }

    /// Starts decoding one frame whose header was already validated by
    /// [`FrameHeader::decode`]. Panics if the previous output was not taken.
    /// A `raw` frame's output is its payload itself (no copy).
    pub fn push(&mut self, header: FrameHeader, payload: impl Into<Bytes>) {
        assert!(!self.busy(), "push while a frame is in progress");
        let result = self.start(header, payload.into());
        if let Err(e) = result {
            self.ready = Some(Err(e));
        }
    }

    fn start(&mut self, header: FrameHeader, payload: Bytes) -> Result<(), DecodeError> {
        if payload.len() != header.payload_len as usize {
            return Err(DecodeError::Corrupt(format!(
                "payload is {} bytes, header says {}",
                payload.len(),
                header.payload_len
            )));
        }
        // An `lm` frame needs the model even when it claims no tokens (a
        // peer's header can say anything).
        if (header.tokens > 0 || header.codec == Codec::Lm) && self.lanes.is_empty() {
            return Err(DecodeError::NeedsModel);
        }
        let orig_len = header.orig_len as usize;
        match header.codec {
            Codec::Raw | Codec::Zstd => {
                let data = if header.codec == Codec::Raw {
                    payload
                } else {
                    self.history
                        .decompress(&payload, orig_len)
                        .map_err(DecodeError::Corrupt)?
                        .into()
                };
                self.finish(header, data)
            }
            Codec::Lm => {
                let parts = if self.segmented {
                    let lanes = u8::try_from(self.lanes.len()).unwrap_or(u8::MAX);
                    crate::segments::Table::decode(&payload, header.tokens, lanes)
                        .map_err(DecodeError::Corrupt)?
                        .segments
                } else {
                    if !payload.len().is_multiple_of(4) {
                        return Err(DecodeError::Corrupt(format!(
                            "lm payload of {} bytes is not whole 32-bit words",
                            payload.len()
                        )));
                    }
                    let words = payload
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    vec![(header.tokens, words)]
                };
                let mut segments = Vec::with_capacity(parts.len());
                for (tokens, words) in parts {
                    let rc = DefaultRangeDecoder::from_compressed(words)
                        .map_err(|_| DecodeError::Corrupt("empty lm payload".into()))?;
                    segments.push(Segment {
                        rc,
                        tokens,
                        done: 0,
                        out: Vec::new(),
                        escaped: false,
                    });
                }
                if let Some(first) = segments.first_mut() {
                    first.out.reserve(orig_len);
                }
                self.job = Some(LmJob {
                    header,
                    segments,
                    out_len: 0,
                });
                Ok(())
            }
            _ => Err(DecodeError::Corrupt(format!(
                "codec {} not supported",
                header.codec
            ))),
        }
    }

    /// Verifies a decoded frame, feeds its context tokens and releases it.
    fn finish(&mut self, header: FrameHeader, data: Bytes) -> Result<(), DecodeError> {
        let actual = checksum(&data);
        if actual != header.checksum {
            return Err(DecodeError::Checksum {
                expected: header.checksum,
                actual,
            });
        }
        if header.codec != Codec::Lm && header.tokens > 0 {
            // The encoder fed this frame's first tokens to its model while it
            // tried `lm`; feed the same ones.
            if self.lanes.is_empty() {
                return Err(DecodeError::NeedsModel);
            }
            let mut tokens = Vec::new();
            self.vocab.tokenize(&data, &mut tokens);
            if tokens.len() < header.tokens as usize {
                return Err(DecodeError::Corrupt(format!(
                    "frame claims {} context tokens, its bytes make {}",
                    header.tokens,
                    tokens.len()
                )));
            }
            let lanes = u8::try_from(self.lanes.len()).unwrap_or(u8::MAX);
            let segments = crate::segments::split(&tokens, lanes, self.vocab.escape_token());
            let lens: Vec<usize> = segments.iter().map(std::ops::Range::len).collect();
            let fed = crate::segments::fed_per_segment(&lens, header.tokens as usize);
            for ((seg, n), lane) in segments.iter().zip(fed).zip(&mut self.lanes) {
                for &t in &tokens[seg.start..seg.start + n] {
                    lane.feed(t);
                }
            }
        }
        self.history.push(&data);
        self.stats.count(
            header.codec,
            data.len(),
            header.payload_len as usize + llmpack_frame::FRAME_HEADER_LEN,
        );
        self.ready = Some(Ok(data));
        Ok(())
    }

    /// Decodes as far as possible and hands every request now due to `out`
    /// (at most one per lane). Nothing is handed out once the frame is
    /// finished (see [`Self::take_output`]) or while the requests out are
    /// unanswered.
    pub fn poll_requests(&mut self, out: &mut dyn FnMut(LaneId, Request)) {
        let Some(job) = self.job.as_mut() else { return };
        if job.segments.len() > self.lanes.len() {
            // `start` refuses lm frames without lanes; stay safe regardless.
            self.job = None;
            self.ready = Some(Err(DecodeError::NeedsModel));
            return;
        }
        let orig_len = job.header.orig_len as usize;
        let mut failure = None;
        let mut pending = false;
        'segments: for (seg, lane) in job.segments.iter_mut().zip(&mut self.lanes) {
            while seg.done < seg.tokens {
                if !lane.ready() {
                    if let Some(r) = lane.next_request() {
                        out(lane.id(), r);
                    }
                    pending = true;
                    continue 'segments;
                }
                match decode_token(&*self.vocab, seg, lane) {
                    Ok(bytes) if job.out_len + bytes.len() > orig_len => {
                        failure = Some(DecodeError::Corrupt(
                            "decoded more bytes than the frame holds".into(),
                        ));
                    }
                    Ok(bytes) => {
                        job.out_len += bytes.len();
                        seg.out.extend_from_slice(bytes.as_ref());
                        continue;
                    }
                    Err(e) => failure = Some(e),
                }
                break 'segments;
            }
        }
        if pending && failure.is_none() {
            return;
        }
        let job = self.job.take().expect("checked above");
        let result = match failure {
            Some(e) => Err(e),
            None if job.segments.iter().any(|s| s.escaped) => {
                Err(DecodeError::Corrupt("frame ends in an escape".into()))
            }
            None if job.out_len != orig_len => Err(DecodeError::Corrupt(format!(
                "decoded {} bytes, header says {}",
                job.out_len, job.header.orig_len
            ))),
            None => {
                let mut segments = job.segments.into_iter();
                let mut data = segments.next().map(|s| s.out).unwrap_or_default();
                for s in segments {
                    data.extend_from_slice(&s.out);
                }
                self.finish(job.header, data.into())
            }
        };
        if let Err(e) = result {
            self.ready = Some(Err(e));
        }
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

    /// The decoded, verified bytes of the frame (or why it failed), once
    /// [`Self::poll_requests`] handed out nothing.
    pub fn take_output(&mut self) -> Option<Result<Bytes, DecodeError>> {
        self.ready.take()
    }
}
