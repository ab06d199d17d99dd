//! The receiving half of a stream: coded frames in, verified bytes out.

use std::sync::Arc;

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

#[derive(Debug)]
struct LmJob {
    header: FrameHeader,
    rc: DefaultRangeDecoder,
    out: Vec<u8>,
    done: u32,
    /// The previous token was the escape token.
    escaped: bool,
}

/// Decodes one direction of a stream, frame by frame; the mirror of
/// [`crate::StreamEncoder`].
#[derive(Debug)]
pub struct StreamDecoder {
    vocab: Arc<dyn Vocabulary>,
    lane: Option<LmLane>,
    history: History,
    job: Option<LmJob>,
    ready: Option<Result<Vec<u8>, DecodeError>>,
    stats: Stats,
}

impl StreamDecoder {
    /// A decoder for lane `id`; `cfg.lm` and `cfg.zstd_history` and `primer`
    /// must equal the encoder's.
    pub fn new(id: LaneId, cfg: &StreamConfig, vocab: Arc<dyn Vocabulary>, primer: &[u8]) -> Self {
        let lane = crate::lane::new_lane(id, cfg.lm, &*vocab, primer);
        StreamDecoder {
            vocab,
            lane,
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
        s.model_requests = self.lane.as_ref().map_or(0, |l| l.requests);
        s
    }

    /// The lane id the model knows this decoder by (if it has a model).
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

    /// Starts decoding one frame whose header was already validated by
    /// [`FrameHeader::decode`]. Panics if the previous output was not taken.
    pub fn push(&mut self, header: FrameHeader, payload: Vec<u8>) {
        assert!(!self.busy(), "push while a frame is in progress");
        let result = self.start(header, payload);
        if let Err(e) = result {
            self.ready = Some(Err(e));
        }
    }

    fn start(&mut self, header: FrameHeader, payload: Vec<u8>) -> Result<(), DecodeError> {
        if payload.len() != header.payload_len as usize {
            return Err(DecodeError::Corrupt(format!(
                "payload is {} bytes, header says {}",
                payload.len(),
                header.payload_len
            )));
        }
        // An `lm` frame needs the model even when it claims no tokens (a
        // peer's header can say anything).
        if (header.tokens > 0 || header.codec == Codec::Lm) && self.lane.is_none() {
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
                };
                self.finish(header, data)
            }
            Codec::Lm => {
                if !payload.len().is_multiple_of(4) {
                    return Err(DecodeError::Corrupt(format!(
                        "lm payload of {} bytes is not whole 32-bit words",
                        payload.len()
                    )));
                }
                let words: Vec<u32> = payload
                    .chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                let rc = DefaultRangeDecoder::from_compressed(words)
                    .map_err(|_| DecodeError::Corrupt("empty lm payload".into()))?;
                self.job = Some(LmJob {
                    header,
                    rc,
                    out: Vec::with_capacity(orig_len),
                    done: 0,
                    escaped: false,
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
    fn finish(&mut self, header: FrameHeader, data: Vec<u8>) -> Result<(), DecodeError> {
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
            let lane = self.lane.as_mut().ok_or(DecodeError::NeedsModel)?;
            let mut tokens = Vec::new();
            self.vocab.tokenize(&data, &mut tokens);
            let fed = tokens.get(..header.tokens as usize).ok_or_else(|| {
                DecodeError::Corrupt(format!(
                    "frame claims {} context tokens, its bytes make {}",
                    header.tokens,
                    tokens.len()
                ))
            })?;
            for &t in fed {
                lane.feed(t);
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

    /// Decodes as far as possible; returns the request the lane needs
    /// answered next, or `None` when the frame is finished (see
    /// [`Self::take_output`]) or a request is already outstanding.
    pub fn poll_request(&mut self) -> Option<Request> {
        let job = self.job.as_mut()?;
        let Some(lane) = self.lane.as_mut() else {
            // `start` refuses lm frames without a lane; stay safe regardless.
            self.job = None;
            self.ready = Some(Err(DecodeError::NeedsModel));
            return None;
        };
        let mut failure = None;
        while job.done < job.header.tokens {
            if !lane.ready() {
                return lane.next_request();
            }
            let (rc, table) = (&mut job.rc, &lane.table);
            let t = match crate::lane::timed(
                &mut lane.profile,
                |p| &mut p.coder,
                || rc.decode_symbol(table),
            ) {
                Ok(t) => t,
                Err(_) => {
                    failure = Some(DecodeError::Corrupt(
                        "range decoder ran off its data".into(),
                    ));
                    break;
                }
            };
            let id = u32::try_from(t).unwrap_or(u32::MAX);
            let escape = self.vocab.escape_token();
            let mut one = [0u8; 1];
            let bytes = if job.escaped {
                job.escaped = false;
                self.vocab.escaped_byte(id).map(|b| {
                    one[0] = b;
                    &one[..]
                })
            } else if escape == Some(id) {
                job.escaped = true;
                Some(&[][..])
            } else {
                self.vocab.token_bytes(id)
            };
            let Some(bytes) = bytes else {
                failure = Some(DecodeError::Corrupt(format!(
                    "decoded token {t} has no bytes"
                )));
                break;
            };
            if job.out.len() + bytes.len() > job.header.orig_len as usize {
                failure = Some(DecodeError::Corrupt(
                    "decoded more bytes than the frame holds".into(),
                ));
                break;
            }
            job.out.extend_from_slice(bytes);
            lane.feed(id);
            job.done += 1;
        }
        let job = self.job.take().expect("checked above");
        let result = match failure {
            Some(e) => Err(e),
            None if job.escaped => Err(DecodeError::Corrupt("frame ends in an escape".into())),
            None if job.out.len() != job.header.orig_len as usize => {
                Err(DecodeError::Corrupt(format!(
                    "decoded {} bytes, header says {}",
                    job.out.len(),
                    job.header.orig_len
                )))
            }
            None => self.finish(job.header, job.out),
        };
        if let Err(e) = result {
            self.ready = Some(Err(e));
        }
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

    /// The decoded, verified bytes of the frame (or why it failed), once
    /// [`Self::poll_request`] returned `None`.
    pub fn take_output(&mut self) -> Option<Result<Vec<u8>, DecodeError>> {
        self.ready.take()
    }
}
