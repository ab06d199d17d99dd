//! The `pack` file container.
//!
//! ```text
//! header   magic "LLMPACK\0" | version u16 | lanes u16 | frame_len u32
//!          | window u32 | keep u32 | zstd_history u32 | model id [32]
//!          | total_len u64 | check u32 (low half of xxh3-64 of the
//!          preceding header bytes)                          (little-endian)
//! frames   round r = frame r of every lane that still has bytes, in lane order
//!          (frame lengths: see [`next_frame_len`]);
//!          lane i covers bytes [total*i/lanes, total*(i+1)/lanes) of the input
//! trailer  SHA-256 of the whole original [32], then end of file
//! ```
//! The coding parameters (lanes, window, keep, zstd history) are part of the
//! format: the decoder must use exactly the encoder's values.

use bytes::{Buf, BufMut};

use crate::{Error, MAX_FRAME_LEN, Result, need};

/// First bytes of every pack file.
pub const MAGIC: [u8; 8] = *b"LLMPACK\0";
/// Container version this build writes and reads (3: `lm` tables mix in the
/// codec's match model).
pub const VERSION: u16 = 3;
/// Most lanes (independently coded parts of one input) a file may declare.
pub const MAX_LANES: u16 = 64;
/// Longest model context window a file may declare, in tokens.
pub const MAX_WINDOW: u32 = 1 << 16;
/// Longest zstd history a file may declare, in bytes.
pub const MAX_ZSTD_HISTORY: u32 = 8 << 20;

/// Identity of a model: SHA-256 over the hashes of its ONNX graph and its
/// tokenizer. All zeros means "no model was used".
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ModelId(pub [u8; 32]);

impl ModelId {
    /// The id written when a file was coded without a model.
    pub const NONE: ModelId = ModelId([0; 32]);

    /// Whether this is [`ModelId::NONE`].
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }
}

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelId({self})")
    }
}

/// The header of a pack file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerHeader {
    /// Number of lanes, 1..=[`MAX_LANES`].
    pub lanes: u16,
    /// Largest frame in bytes, 1..=[`MAX_FRAME_LEN`].
    pub frame_len: u32,
    /// Model context window in tokens (see the codec's reset rule).
    pub window: u32,
    /// Tokens kept when the window is full and the context is re-primed.
    pub keep: u32,
    /// Bytes of a lane's history that zstd frames use as their prefix.
    pub zstd_history: u32,
    /// The model that coded `lm` frames, or [`ModelId::NONE`].
    pub model: ModelId,
    /// Hash of the frequency tables the model gave for a fixed probe input on
    /// the packing machine (0 without a model). Same model id but another
    /// probe means the two machines' arithmetic differs.
    pub probe: u64,
    /// Length of the original input.
    pub total_len: u64,
}

impl ContainerHeader {
    /// Encoded length of the header.
    pub const LEN: usize = 8 + 2 + 2 + 4 + 4 + 4 + 4 + 32 + 8 + 8 + 4;

    /// Writes the header.
    pub fn encode(&self, buf: &mut impl BufMut) {
        let mut b = Vec::with_capacity(Self::LEN);
        self.encode_fields(&mut b);
        let check = header_check(&b);
        buf.put_slice(&b);
        buf.put_u32_le(check);
    }

    fn encode_fields(&self, buf: &mut Vec<u8>) {
        buf.put_slice(&MAGIC);
        buf.put_u16_le(VERSION);
        buf.put_u16_le(self.lanes);
        buf.put_u32_le(self.frame_len);
        buf.put_u32_le(self.window);
        buf.put_u32_le(self.keep);
        buf.put_u32_le(self.zstd_history);
        buf.put_slice(&self.model.0);
        buf.put_u64_le(self.probe);
        buf.put_u64_le(self.total_len);
    }

    /// Reads and validates a header.
    pub fn decode(buf: &mut impl Buf) -> Result<Self> {
        need(buf, MAGIC.len())?;
        let mut magic = [0u8; 8];
        buf.copy_to_slice(&mut magic);
        if magic != MAGIC {
            return Err(Error::invalid(
                "pack header",
                "not an llmpack file (bad magic)",
            ));
        }
        need(buf, Self::LEN - MAGIC.len())?;
        let version = buf.get_u16_le();
        if version != VERSION {
            return Err(Error::invalid(
                "pack header",
                format!("format version {version}; this build reads version {VERSION}"),
            ));
        }
        let lanes = buf.get_u16_le();
        let frame_len = buf.get_u32_le();
        let window = buf.get_u32_le();
        let keep = buf.get_u32_le();
        let zstd_history = buf.get_u32_le();
        let mut model = [0u8; 32];
        buf.copy_to_slice(&mut model);
        let probe = buf.get_u64_le();
        let total_len = buf.get_u64_le();
        let check = buf.get_u32_le();
        let h = ContainerHeader {
            lanes,
            frame_len,
            window,
            keep,
            zstd_history,
            model: ModelId(model),
            probe,
            total_len,
        };
        let mut b = Vec::with_capacity(Self::LEN);
        h.encode_fields(&mut b);
        if header_check(&b) != check {
            return Err(Error::invalid(
                "pack header",
                "header checksum mismatch (the file is damaged)",
            ));
        }
        h.validate()?;
        Ok(h)
    }

    /// Checks every field against its limits.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::invalid("pack header", why));
        if self.lanes == 0 || self.lanes > MAX_LANES {
            return bad(format!("lanes {} not in 1..={MAX_LANES}", self.lanes));
        }
        if self.frame_len == 0 || self.frame_len > MAX_FRAME_LEN {
            return bad(format!(
                "frame length {} not in 1..={MAX_FRAME_LEN}",
                self.frame_len
            ));
        }
        if self.window < 2 || self.window > MAX_WINDOW || self.keep >= self.window {
            return bad(format!(
                "context window {} / keep {} out of range",
                self.window, self.keep
            ));
        }
        if self.zstd_history > MAX_ZSTD_HISTORY {
            return bad(format!("zstd history {} too large", self.zstd_history));
        }
        Ok(())
    }

    /// The byte range `[start, end)` of the input that lane `i` covers.
    pub fn lane_range(&self, i: u16) -> (u64, u64) {
        lane_range(self.total_len, self.lanes, i)
    }
}

/// Length of the next frame of a lane with `remaining` bytes left, in a
/// container with frames of `frame_len` bytes: `frame_len`, except that a
/// lane's last frame absorbs a remainder of up to a quarter frame (never past
/// [`MAX_FRAME_LEN`]) instead of leaving a tiny tail frame whose header would
/// cost more than its bytes.
pub fn next_frame_len(remaining: u64, frame_len: u32) -> u32 {
    let absorb = u64::from(frame_len) + u64::from(frame_len / 4);
    let n = if remaining <= absorb {
        remaining
    } else {
        u64::from(frame_len)
    };
    u32::try_from(n.min(u64::from(MAX_FRAME_LEN))).unwrap_or(MAX_FRAME_LEN)
}

fn header_check(fields: &[u8]) -> u32 {
    let h = xxhash_rust::xxh3::xxh3_64(fields);
    u32::try_from(h & 0xffff_ffff).expect("masked to 32 bits")
}

/// The byte range `[start, end)` of an input of `total` bytes that lane `i` of
/// `lanes` covers: the input is cut into `lanes` nearly equal contiguous parts.
pub fn lane_range(total: u64, lanes: u16, i: u16) -> (u64, u64) {
    let at = |k: u16| -> u64 {
        let v = u128::from(total) * u128::from(k) / u128::from(lanes.max(1));
        // v <= total, so it fits.
        u64::try_from(v).unwrap_or(total)
    };
    (at(i), at(i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_frame_absorbs_a_small_tail() {
        assert_eq!(next_frame_len(16386, 16384), 16386);
        assert_eq!(next_frame_len(20480, 16384), 20480);
        assert_eq!(next_frame_len(20481, 16384), 16384);
        assert_eq!(next_frame_len(100, 16384), 100);
        assert_eq!(next_frame_len(u64::MAX, MAX_FRAME_LEN), MAX_FRAME_LEN);
        assert_eq!(
            next_frame_len(u64::from(MAX_FRAME_LEN) + 5, MAX_FRAME_LEN),
            MAX_FRAME_LEN
        );
    }

    fn header() -> ContainerHeader {
        ContainerHeader {
            lanes: 4,
            frame_len: 16384,
            window: 1024,
            keep: 256,
            zstd_history: 1 << 17,
            model: ModelId([7; 32]),
            probe: 42,
            total_len: 1_000_003,
        }
    }

    #[test]
    fn round_trip() {
        let mut v = Vec::new();
        header().encode(&mut v);
        assert_eq!(v.len(), ContainerHeader::LEN);
        assert_eq!(ContainerHeader::decode(&mut &v[..]).unwrap(), header());
    }

    #[test]
    fn lanes_cover_input_exactly() {
        let h = header();
        let mut next = 0;
        for i in 0..h.lanes {
            let (s, e) = h.lane_range(i);
            assert_eq!(s, next);
            assert!(e >= s);
            next = e;
        }
        assert_eq!(next, h.total_len);
    }

    #[test]
    fn rejects_bad_magic_version_and_limits() {
        let mut v = Vec::new();
        header().encode(&mut v);
        let mut bad = v.clone();
        bad[0] = b'X';
        assert!(ContainerHeader::decode(&mut &bad[..]).is_err());
        let mut bad = v.clone();
        bad[8] = 9;
        let err = ContainerHeader::decode(&mut &bad[..]).unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
        let mut bad = v.clone();
        bad[20] ^= 1;
        let err = ContainerHeader::decode(&mut &bad[..]).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        let mut h = header();
        h.lanes = 0;
        assert!(h.validate().is_err());
        h = header();
        h.keep = h.window;
        assert!(h.validate().is_err());
        assert!(matches!(
            ContainerHeader::decode(&mut &v[..20]),
            Err(Error::Incomplete { .. })
        ));
    }
}
