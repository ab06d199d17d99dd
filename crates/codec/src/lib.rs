//! LLMPack payload coding, sans-IO: byte-faithful tokens, integer frequency
//! tables built from a model's logits, range coding, per-frame codec choice
//! (`lm`, `zstd`, `raw`) and checksums.
//!
//! This crate owns no socket, thread, clock or model runtime; it must not
//! depend on tokio, quinn or ort. A coder that needs a next-token distribution
//! says so through `poll()` with a [`Request`]; the caller answers it (usually
//! batched with other lanes' requests, see [`drive`]) through
//! `handle_prediction`. That is where throughput comes from.
//!
//! Losslessness rests on one rule: the encoder obtains every distribution by
//! exactly the request sequence the decoder will issue (one-token steps after
//! a prime), and distributions become integer tables by one fixed procedure
//! ([`FreqTable::fill_from_logits`]) that uses only correctly rounded IEEE-754
//! operations.
#![warn(missing_docs)]

mod decoder;
mod drive;
mod encoder;
mod freq;
mod history;
mod lane;
mod matcher;
mod predict;
mod probe;
pub mod segments;
mod tokens;
pub mod toy;

pub use decoder::{DecodeError, StreamDecoder};
pub use drive::{Coder, Step, drive};
pub use encoder::{EncodedFrame, StreamEncoder};
pub use freq::{FreqTable, MAX_VOCAB, PRECISION, TOTAL};
pub use history::History;
pub use lane::{LmParams, Profile};
pub use predict::{LaneId, NoModel, PredictError, Predictor, Request};
pub use probe::numeric_probe;
pub use tokens::{ByteVocab, Vocabulary};

use llmpack_frame::Codec;

/// Which codecs a stream may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Pick the smallest of `lm`, `zstd` and `raw` per frame (skipping `lm`
    /// where zstd shows a frame of more than 512 bytes does not compress).
    #[default]
    Auto,
    /// Always try `lm`; fall back to the smaller of `zstd`/`raw` only where
    /// `lm` came out larger.
    Lm,
    /// `zstd` or `raw`, no model.
    Zstd,
    /// `raw` only.
    Raw,
}

impl Policy {
    /// Parses `auto`, `lm`, `zstd` or `raw`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Policy::Auto),
            "lm" => Some(Policy::Lm),
            "zstd" => Some(Policy::Zstd),
            "raw" => Some(Policy::Raw),
            _ => None,
        }
    }

    /// Whether this policy may use the model.
    pub fn uses_model(self) -> bool {
        matches!(self, Policy::Auto | Policy::Lm)
    }
}

/// Settings of one stream's coder. Both ends must agree on `lm` and
/// `zstd_history`; the encoder alone chooses `policy` and `zstd_level`.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Which codecs to use.
    pub policy: Policy,
    /// zstd compression level for `zstd` frames.
    pub zstd_level: i32,
    /// Bytes of the stream's history that zstd frames use as their prefix.
    pub zstd_history: u32,
    /// Model context rule; `None` disables `lm`.
    pub lm: Option<LmParams>,
    /// Under [`Policy::Auto`], skip `lm` for a frame whose zstd output is at
    /// least this fraction of its input (binary or already compressed data).
    pub lm_skip_ratio: f64,
    /// Lanes one frame may be coded on at once (1..=[`segments::MAX_LANES`];
    /// see [`segments`]). Both ends must agree: with more than one, `lm`
    /// payloads carry a segment table.
    pub lanes: u8,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            policy: Policy::Auto,
            zstd_level: 19,
            zstd_history: DEFAULT_ZSTD_HISTORY,
            lm: Some(LmParams::default()),
            lm_skip_ratio: 0.9,
            lanes: 1,
        }
    }
}

/// Default zstd history: 128 KiB is where prefix gains flatten on text.
pub const DEFAULT_ZSTD_HISTORY: u32 = 128 << 10;

/// The checksum every frame carries: xxh3-64 of the original bytes.
pub fn checksum(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

/// Counts of frames and bytes per codec, kept by coders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames per codec, indexed by [`Codec::to_byte`].
    pub frames: [u64; 3],
    /// Original bytes per codec.
    pub bytes_in: [u64; 3],
    /// Payload plus header bytes per codec.
    pub bytes_out: [u64; 3],
    /// Model requests issued (steps and primes).
    pub model_requests: u64,
}

impl Stats {
    pub(crate) fn count(&mut self, codec: Codec, orig: usize, coded: usize) {
        let i = usize::from(codec.to_byte());
        self.frames[i] += 1;
        self.bytes_in[i] += orig as u64;
        self.bytes_out[i] += coded as u64;
    }

    /// Adds another stream's counts.
    pub fn merge(&mut self, o: &Stats) {
        for i in 0..3 {
            self.frames[i] += o.frames[i];
            self.bytes_in[i] += o.bytes_in[i];
            self.bytes_out[i] += o.bytes_out[i];
        }
        self.model_requests += o.model_requests;
    }
}

#[cfg(test)]
mod tests;
