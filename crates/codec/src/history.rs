//! A stream's recent bytes, and zstd frames that use them as their prefix.
//!
//! Each zstd frame is a complete zstd frame compressed with the last
//! `zstd_history` bytes of the stream (whatever codec carried them) as a
//! prefix, so the receiver decodes it from its own verified copy of the
//! history and the codec choice of earlier frames does not matter.
//!
//! zstd indexes a prefix before it compresses, at a cost that grows with
//! the prefix (128 KiB at level 3: ~0.4 ms, sixty times the compression of a
//! 1 KiB frame alone). The encoder therefore gives a frame only the last
//! `prefix_len` bytes, scaled to the frame. The decoder always refers to
//! the whole history: a zstd offset counts back from the byte being
//! decoded, so a longer prefix that ends at the same byte resolves every
//! offset the same way, and frames from encoders that used any suffix of
//! the history decode alike.

use zstd::zstd_safe::{CCtx, CParameter, DCtx, DParameter};

/// Bytes of history the encoder gives a frame of `frame_len` bytes as its
/// prefix: eight times the frame, at least 4 KiB (then at most the
/// history's limit). A 16 KiB frame gets 128 KiB, the default history; a
/// 1 KiB exchange the 8 KiB before it.
pub fn prefix_len(frame_len: usize) -> usize {
    frame_len.saturating_mul(8).max(4 << 10)
}

/// The last bytes of a stream, at most a fixed number.
#[derive(Debug, Clone)]
pub struct History {
    buf: Vec<u8>,
    limit: usize,
}

impl History {
    /// An empty history that keeps at most `limit` bytes.
    pub fn new(limit: u32) -> Self {
        History {
            buf: Vec::new(),
            limit: limit as usize,
        }
    }

    /// The kept bytes, oldest first.
    pub fn bytes(&self) -> &[u8] {
        let start = self.buf.len().saturating_sub(self.limit);
        &self.buf[start..]
    }

    /// Appends bytes, forgetting the oldest beyond the limit.
    pub fn push(&mut self, data: &[u8]) {
        if self.limit == 0 {
            return;
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() > 2 * self.limit {
            let cut = self.buf.len() - self.limit;
            self.buf.drain(..cut);
        }
    }

    /// Compresses `data` with the history as prefix (its last
    /// `prefix_len` bytes). `None` when the result would not be smaller
    /// than `data`.
    pub fn compress(&self, level: i32, data: &[u8]) -> Option<Vec<u8>> {
        self.compress_part(level, data, data.len())
    }

    /// [`Self::compress`] for the first bytes of a frame of `frame_len`
    /// bytes, with that frame's prefix (so estimates on parts of a frame
    /// see what the whole frame sees).
    pub fn compress_part(&self, level: i32, data: &[u8], frame_len: usize) -> Option<Vec<u8>> {
        if data.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(data.len() - 1);
        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::CompressionLevel(level))
            .ok()?;
        cctx.set_parameter(CParameter::ChecksumFlag(false)).ok()?;
        cctx.set_parameter(CParameter::ContentSizeFlag(true)).ok()?;
        let all = self.bytes();
        let prefix = &all[all.len() - prefix_len(frame_len).min(all.len())..];
        if !prefix.is_empty() {
            cctx.ref_prefix(prefix).ok()?;
        }
        // Fails with "destination too small" when zstd does not shrink it.
        cctx.compress2(&mut out, data).ok()?;
        Some(out)
    }

    /// Decompresses a zstd frame that must yield exactly `orig_len` bytes.
    pub fn decompress(&self, payload: &[u8], orig_len: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(orig_len);
        let mut dctx = DCtx::create();
        // Bound the window a hostile frame can make us allocate.
        dctx.set_parameter(DParameter::WindowLogMax(27))
            .map_err(|c| zstd::zstd_safe::get_error_name(c).to_string())?;
        let prefix = self.bytes();
        if !prefix.is_empty() {
            dctx.ref_prefix(prefix)
                .map_err(|c| zstd::zstd_safe::get_error_name(c).to_string())?;
        }
        let n = dctx
            .decompress(&mut out, payload)
            .map_err(|c| format!("zstd: {}", zstd::zstd_safe::get_error_name(c)))?;
        if n != orig_len {
            return Err(format!("zstd frame gave {n} bytes, header says {orig_len}"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_helps_and_round_trips() {
        let text: Vec<u8> = (0..4000)
            .flat_map(|i| format!("line {} of the log\n", i % 97).into_bytes())
            .collect();
        let (a, b) = text.split_at(text.len() / 2);
        let mut h = History::new(1 << 17);
        let cold = h.compress(3, b).unwrap();
        h.push(a);
        let warm = h.compress(3, b).unwrap();
        assert!(warm.len() < cold.len());
        assert_eq!(h.decompress(&warm, b.len()).unwrap(), b);
        assert!(h.decompress(&warm, b.len() + 1).is_err());
        assert!(h.decompress(&warm[..warm.len() - 1], b.len()).is_err());
    }

    /// Frames compressed against a suffix of the history decode against the
    /// whole of it, at every level and size, and a small frame is given a
    /// short prefix.
    #[test]
    fn scaled_prefix_decodes_against_the_whole_history() {
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| {
                format!(
                    "GET /item/{} HTTP/1.1\r\nHost: h{}\r\n\r\n",
                    i * 7919 % 1000,
                    i % 13
                )
                .into_bytes()
            })
            .collect();
        let mut h = History::new(1 << 17);
        h.push(&text[..300_000]);
        assert_eq!(h.bytes().len(), 1 << 17);
        for level in [1, 3, 9, 19] {
            for n in [1usize, 100, 1024, 2047, 2048, 5000, 16 << 10, 40_000] {
                let data = &text[300_000..300_000 + n];
                let Some(z) = h.compress(level, data) else {
                    assert!(n < 64, "level {level}, {n} bytes did not shrink");
                    continue;
                };
                assert_eq!(
                    h.decompress(&z, n).unwrap(),
                    data,
                    "level {level}, {n} bytes"
                );
            }
        }
        assert_eq!(prefix_len(100), 4 << 10);
        assert_eq!(prefix_len(16 << 10), 128 << 10);
    }

    #[test]
    fn incompressible_gives_none() {
        let mut x = 0x1234_5678_u32;
        let data: Vec<u8> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x.to_le_bytes()[0]
            })
            .collect();
        assert!(History::new(0).compress(19, &data).is_none());
    }

    #[test]
    fn history_keeps_the_tail() {
        let mut h = History::new(10);
        for i in 0..100u8 {
            h.push(&[i]);
        }
        assert_eq!(h.bytes(), &(90..100).collect::<Vec<u8>>()[..]);
    }
}
