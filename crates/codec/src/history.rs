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
//! `prefix_len` bytes, scaled to the frame and kept within zstd's
//! small-input tables. The decoder always refers to
//! the whole history: a zstd offset counts back from the byte being
//! decoded, so a longer prefix that ends at the same byte resolves every
//! offset the same way, and frames from encoders that used any suffix of
//! the history decode alike.
//!
//! The zstd contexts themselves are kept per thread and reused: a fresh
//! context allocates and clears its tables, which costs about as much as
//! compressing a small frame. One per thread, not per connection, so idle
//! connections hold none.

use std::cell::RefCell;

use zstd::zstd_safe::{CCtx, CParameter, DCtx, DParameter, ResetDirective};

thread_local! {
    static CCTX: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's compression context, which may reference
/// `prefix` (or any buffer of its lifetime) during `f`. The context's
/// parameters and prefix are reset afterwards.
fn with_cctx<'p, R>(_prefix: &'p [u8], f: impl FnOnce(&mut CCtx<'p>) -> R) -> R {
    CCTX.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            // Never reentered in practice; a fresh context is always right.
            return f(&mut CCtx::create());
        };
        let kept: &mut CCtx<'static> = slot.get_or_insert_with(CCtx::create);
        // SAFETY: `CCtx<'a>` differs from `CCtx<'static>` only in a
        // `PhantomData<&'a ()>`: the lifetime of the buffers zstd may point
        // to (the prefix). Seen as `CCtx<'p>`, the context may reference
        // `prefix` while `f` runs. The reset below (session and parameters:
        // it clears every dictionary and prefix) removes that reference
        // before `prefix`'s borrow ends, and a context that failed to reset
        // is dropped instead of kept.
        #[allow(unsafe_code)]
        let ctx: &mut CCtx<'p> = unsafe { &mut *std::ptr::from_mut(kept).cast::<CCtx<'p>>() };
        let r = f(ctx);
        if ctx.reset(ResetDirective::SessionAndParameters).is_err() {
            *slot = None;
        }
        r
    })
}

/// [`with_cctx`] for this thread's decompression context.
fn with_dctx<'p, R>(_prefix: &'p [u8], f: impl FnOnce(&mut DCtx<'p>) -> R) -> R {
    DCTX.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else {
            return f(&mut DCtx::create());
        };
        let kept: &mut DCtx<'static> = slot.get_or_insert_with(DCtx::create);
        // SAFETY: as in `with_cctx`: the reset clears the referenced prefix
        // before its borrow ends, or the context is dropped.
        #[allow(unsafe_code)]
        let ctx: &mut DCtx<'p> = unsafe { &mut *std::ptr::from_mut(kept).cast::<DCtx<'p>>() };
        let r = f(ctx);
        if ctx.reset(ResetDirective::SessionAndParameters).is_err() {
            *slot = None;
        }
        r
    })
}

/// Bytes of history the encoder gives a frame of `frame_len` bytes as its
/// prefix: eight times the frame, at least 4 KiB, and no more than keeps
/// prefix and frame within `SMALL_INPUT` (then at most the history's
/// limit). A 1 KiB exchange gets the 8 KiB before it, a 16 KiB frame 112 KiB.
pub fn prefix_len(frame_len: usize) -> usize {
    frame_len
        .saturating_mul(8)
        .min(SMALL_INPUT.saturating_sub(frame_len))
        .max(4 << 10)
}

/// Prefix plus frame up to which zstd picks the parameters of its
/// small-input class. Past it, zstd sizes its window and tables for the
/// next class, which it clears and fills for every frame: a 16 KiB frame
/// with a 128 KiB prefix compressed at half the speed of one with a 112
/// KiB prefix, and slightly worse (level 3, text from Debian packages in
/// 16 KiB frames: 51-54 MB/s against 80 MB/s, ratio 5.96 against 5.99).
const SMALL_INPUT: usize = 128 << 10;

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
        let all = self.bytes();
        let prefix = &all[all.len() - prefix_len(frame_len).min(all.len())..];
        with_cctx(prefix, |cctx| {
            cctx.set_parameter(CParameter::CompressionLevel(level))
                .ok()?;
            cctx.set_parameter(CParameter::ChecksumFlag(false)).ok()?;
            cctx.set_parameter(CParameter::ContentSizeFlag(true)).ok()?;
            if !prefix.is_empty() {
                cctx.ref_prefix(prefix).ok()?;
            }
            // Fails with "destination too small" when zstd does not shrink it.
            cctx.compress2(&mut out, data).ok()
        })?;
        Some(out)
    }

    /// Decompresses a zstd frame that must yield exactly `orig_len` bytes.
    pub fn decompress(&self, payload: &[u8], orig_len: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(orig_len);
        let prefix = self.bytes();
        let n = with_dctx(prefix, |dctx| {
            // Bound the window a hostile frame can make us allocate.
            dctx.set_parameter(DParameter::WindowLogMax(27))
                .map_err(|c| zstd::zstd_safe::get_error_name(c).to_string())?;
            if !prefix.is_empty() {
                dctx.ref_prefix(prefix)
                    .map_err(|c| zstd::zstd_safe::get_error_name(c).to_string())?;
            }
            dctx.decompress(&mut out, payload)
                .map_err(|c| format!("zstd: {}", zstd::zstd_safe::get_error_name(c)))
        })?;
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
        assert_eq!(prefix_len(1 << 10), 8 << 10);
        assert_eq!(prefix_len(16 << 10), 112 << 10);
        assert_eq!(prefix_len(128 << 10), 4 << 10);
    }

    /// The thread's kept contexts carry nothing from one frame to the next:
    /// a frame compressed after one with a prefix (and a failed one)
    /// decodes without it, and a decode after a failed decode works.
    #[test]
    fn kept_contexts_forget_prefix_and_level() {
        let text: Vec<u8> = (0..3000)
            .flat_map(|i| format!("entry {} value {}\n", i % 50, i % 7).into_bytes())
            .collect();
        let mut warm = History::new(1 << 17);
        warm.push(&text[..20_000]);
        let cold = History::new(1 << 17);
        let data = &text[20_000..24_000];
        let with_prefix = warm.compress(19, data).unwrap();
        assert!(warm.decompress(&with_prefix[..3], data.len()).is_err());
        let without = cold.compress(1, data).unwrap();
        assert_eq!(cold.decompress(&without, data.len()).unwrap(), data);
        assert_eq!(warm.decompress(&with_prefix, data.len()).unwrap(), data);
        assert!(
            cold.decompress(&with_prefix, data.len()).is_err(),
            "a frame that needs the prefix fails without it"
        );
        assert_eq!(cold.decompress(&without, data.len()).unwrap(), data);
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
