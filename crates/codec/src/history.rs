//! A stream's recent bytes, and zstd frames that use them as their prefix.
//!
//! Each zstd frame is a complete zstd frame compressed with the last
//! `zstd_history` bytes of the stream (whatever codec carried them) as a
//! prefix, so the receiver decodes it from its own verified copy of the
//! history and the codec choice of earlier frames does not matter.

use zstd::zstd_safe::{CCtx, CParameter, DCtx, DParameter};

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

    /// Compresses `data` with the history as prefix. `None` when the result
    /// would not be smaller than `data`.
    pub fn compress(&self, level: i32, data: &[u8]) -> Option<Vec<u8>> {
        if data.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(data.len() - 1);
        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::CompressionLevel(level))
            .ok()?;
        cctx.set_parameter(CParameter::ChecksumFlag(false)).ok()?;
        cctx.set_parameter(CParameter::ContentSizeFlag(true)).ok()?;
        let prefix = self.bytes();
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
