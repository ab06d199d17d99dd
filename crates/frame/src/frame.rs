//! The frame header: which codec made the payload, how long the original and
//! the payload are, and a checksum of the original bytes.

use bytes::{Buf, BufMut};

use crate::{Error, Result, need};

/// Largest original (uncompressed) frame. Senders cut streams into frames no
/// longer than this; a header that claims more is invalid.
pub const MAX_FRAME_LEN: u32 = 1 << 20;

/// Largest payload a frame may carry. A coder never emits a payload larger
/// than the original (it falls back to `raw`), so this equals [`MAX_FRAME_LEN`].
pub const MAX_PAYLOAD_LEN: u32 = MAX_FRAME_LEN;

/// Encoded length of a [`FrameHeader`]: codec (1), flags (1), original length
/// (4), payload length (4), context tokens (4), checksum (8), all little-endian.
pub const FRAME_HEADER_LEN: usize = 22;

/// How a frame's payload was coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// The payload is the original bytes.
    Raw,
    /// A zstd frame compressed with the stream's recent history as its prefix.
    Zstd,
    /// Language-model range coding: the range coder's 32-bit words, little-endian.
    Lm,
}

impl Codec {
    /// Every codec, in wire order.
    pub const ALL: [Codec; 3] = [Codec::Raw, Codec::Zstd, Codec::Lm];

    /// The byte that names this codec on the wire.
    pub fn to_byte(self) -> u8 {
        match self {
            Codec::Raw => 0,
            Codec::Zstd => 1,
            Codec::Lm => 2,
        }
    }

    /// Parses the wire byte of a codec.
    pub fn from_byte(b: u8) -> Result<Self> {
        match b {
            0 => Ok(Codec::Raw),
            1 => Ok(Codec::Zstd),
            2 => Ok(Codec::Lm),
            _ => Err(Error::invalid("frame header", format!("unknown codec {b}"))),
        }
    }

    /// Short lowercase name, as used in configs, logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Raw => "raw",
            Codec::Zstd => "zstd",
            Codec::Lm => "lm",
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The fixed header in front of every frame's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// How the payload was coded.
    pub codec: Codec,
    /// Length of the original bytes, at most [`MAX_FRAME_LEN`].
    pub orig_len: u32,
    /// Length of the payload that follows, at most [`MAX_PAYLOAD_LEN`].
    pub payload_len: u32,
    /// Tokens of this frame that entered the model context. For `lm` frames,
    /// the number of coded tokens; for other codecs, how many leading tokens
    /// of the frame's tokenization the encoder fed to the model while it
    /// tried `lm` (usually 0). At most `orig_len`: every token is a byte or more.
    pub tokens: u32,
    /// xxh3-64 of the original bytes; the receiver checks it before it
    /// releases a single byte.
    pub checksum: u64,
}

impl FrameHeader {
    /// Writes the header.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(self.codec.to_byte());
        buf.put_u8(0); // flags: reserved, must be zero
        buf.put_u32_le(self.orig_len);
        buf.put_u32_le(self.payload_len);
        buf.put_u32_le(self.tokens);
        buf.put_u64_le(self.checksum);
    }

    /// Reads and validates a header. On [`Error::Incomplete`] nothing useful
    /// was consumed and the caller should retry with more bytes.
    pub fn decode(buf: &mut impl Buf) -> Result<Self> {
        need(buf, FRAME_HEADER_LEN)?;
        let codec = Codec::from_byte(buf.get_u8())?;
        let flags = buf.get_u8();
        if flags != 0 {
            return Err(Error::invalid(
                "frame header",
                format!("reserved flags {flags:#04x} set"),
            ));
        }
        let orig_len = buf.get_u32_le();
        let payload_len = buf.get_u32_le();
        let tokens = buf.get_u32_le();
        let checksum = buf.get_u64_le();
        if orig_len > MAX_FRAME_LEN {
            return Err(Error::invalid(
                "frame header",
                format!("original length {orig_len} exceeds the limit {MAX_FRAME_LEN}"),
            ));
        }
        if payload_len > MAX_PAYLOAD_LEN {
            return Err(Error::invalid(
                "frame header",
                format!("payload length {payload_len} exceeds the limit {MAX_PAYLOAD_LEN}"),
            ));
        }
        if codec == Codec::Raw && payload_len != orig_len {
            return Err(Error::invalid(
                "frame header",
                format!("raw frame with payload {payload_len} != original {orig_len}"),
            ));
        }
        if payload_len > orig_len {
            return Err(Error::invalid(
                "frame header",
                format!("payload {payload_len} larger than its original {orig_len}"),
            ));
        }
        if tokens > orig_len {
            return Err(Error::invalid(
                "frame header",
                format!("{tokens} tokens cannot come from {orig_len} bytes"),
            ));
        }
        Ok(FrameHeader {
            codec,
            orig_len,
            payload_len,
            tokens,
            checksum,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let h = FrameHeader {
            codec: Codec::Lm,
            orig_len: 16384,
            payload_len: 2000,
            tokens: 4000,
            checksum: 0x0123_4567_89ab_cdef,
        };
        let mut v = Vec::new();
        h.encode(&mut v);
        assert_eq!(v.len(), FRAME_HEADER_LEN);
        assert_eq!(FrameHeader::decode(&mut &v[..]).unwrap(), h);
    }

    #[test]
    fn short_input_is_incomplete() {
        let err = FrameHeader::decode(&mut &[2u8, 0, 1][..]).unwrap_err();
        assert_eq!(
            err,
            Error::Incomplete {
                needed: FRAME_HEADER_LEN - 3
            }
        );
    }

    #[test]
    fn oversized_lengths_are_invalid() {
        let mut v = Vec::new();
        FrameHeader {
            codec: Codec::Zstd,
            orig_len: MAX_FRAME_LEN + 1,
            payload_len: 10,
            tokens: 0,
            checksum: 0,
        }
        .encode(&mut v);
        assert!(matches!(
            FrameHeader::decode(&mut &v[..]),
            Err(Error::Invalid { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(h) = FrameHeader::decode(&mut &bytes[..]) {
                prop_assert!(h.orig_len <= MAX_FRAME_LEN);
                prop_assert!(h.payload_len <= h.orig_len);
                prop_assert!(h.tokens <= h.orig_len);
            }
        }
    }
}
