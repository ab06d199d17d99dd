//! One frame coded on several lanes at once.
//!
//! A stream with `lanes > 1` ([`crate::StreamConfig::lanes`]) cuts a long
//! frame's tokens into up to `lanes` runs (segments). Segment `j` is coded
//! with the model context of lane `j`, which holds that lane's earlier
//! segments, so the segments of one frame step in one batch: one connection
//! fills a batch on its own. Both ends must agree on the rule here; it is part
//! of the format.
//!
//! - **The split**: `S = clamp(n / MIN_SEGMENT_TOKENS, 1, lanes)`
//!   segments of as equal token counts as possible, each boundary moved one
//!   token later where it would separate an escape token from its byte.
//! - **Lockstep**: the encoder codes in rounds, one
//!   token of every unfinished segment per round, in segment order. A frame
//!   that stops early (the model loses to zstd) has fed its first `fed`
//!   tokens in that order, which the decoder repeats from `fed` alone.
//! - **The payload** of an `lm` frame on such a stream: the segment count
//!   (u8), then for each segment but the last its token count and its number
//!   of 32-bit range-coder words (u32 LE each), then every segment's words in
//!   order. The last segment has the rest of the frame's tokens and words.

use std::ops::Range;

use crate::predict::LaneId;

/// Fewest tokens a segment is given: below this a frame stays on one lane
/// (a segment's first tokens see a context from further back in the stream,
/// which costs bits; short segments would pay it often).
pub const MIN_SEGMENT_TOKENS: usize = 512;

/// Most lanes a stream may code one frame on.
pub const MAX_LANES: u8 = 16;

/// The id of segment `j`'s lane for a coder whose first lane is `base`
/// (segment 0 keeps `base`; ids handed out by callers stay below 2^56).
pub(crate) fn lane_id(base: LaneId, j: usize) -> LaneId {
    base ^ ((j as u64) << 56)
}

/// The segments of a frame of `tokens` on a stream of `lanes` lanes.
pub(crate) fn split(tokens: &[u32], lanes: u8, escape: Option<u32>) -> Vec<Range<usize>> {
    let n = tokens.len();
    let s = (n / MIN_SEGMENT_TOKENS).clamp(1, usize::from(lanes.max(1)));
    // Where a boundary may not go: between an escape and its byte.
    let inside_escape = |at: usize| -> bool {
        let Some(e) = escape else { return false };
        // Escapes come in pairs, so whether token `at - 1` opens one
        // depends on the run of escape tokens that ends there.
        let run = tokens[..at].iter().rev().take_while(|&&t| t == e).count();
        run % 2 == 1
    };
    let mut out = Vec::with_capacity(s);
    let mut start = 0;
    for i in 1..=s {
        let mut end = if i == s { n } else { i * n / s };
        end = end.max(start);
        if end < n && end > 0 && inside_escape(end) {
            end += 1;
        }
        if end > start || (n == 0 && i == 1) {
            out.push(start..end);
        }
        start = end;
    }
    out
}

/// How many of each segment's tokens the first `fed` tokens in lockstep
/// order cover (see the module docs).
pub(crate) fn fed_per_segment(lens: &[usize], fed: usize) -> Vec<usize> {
    let mut got = vec![0; lens.len()];
    let mut left = fed;
    while left > 0 {
        let mut moved = false;
        for (g, &len) in got.iter_mut().zip(lens) {
            if left == 0 {
                break;
            }
            if *g < len {
                *g += 1;
                left -= 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    got
}

/// A segmented `lm` payload: per segment, its token count and its words.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Table {
    pub(crate) segments: Vec<(u32, Vec<u32>)>,
}

impl Table {
    /// Writes the payload (see the module docs).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let s = u8::try_from(self.segments.len()).expect("at most MAX_LANES segments");
        out.push(s);
        for (tokens, words) in &self.segments[..self.segments.len() - 1] {
            out.extend_from_slice(&tokens.to_le_bytes());
            let w = u32::try_from(words.len()).expect("words <= frame length");
            out.extend_from_slice(&w.to_le_bytes());
        }
        for (_, words) in &self.segments {
            for w in words {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
    }

    /// Bytes [`Self::encode`] writes.
    #[cfg(test)]
    pub(crate) fn encoded_len(&self) -> usize {
        1 + 8 * (self.segments.len() - 1)
            + 4 * self.segments.iter().map(|(_, w)| w.len()).sum::<usize>()
    }

    /// Parses a payload that must hold `tokens` tokens in at most `lanes`
    /// segments, every segment at least one token and one word.
    pub(crate) fn decode(payload: &[u8], tokens: u32, lanes: u8) -> Result<Table, String> {
        let (&s, mut rest) = payload
            .split_first()
            .ok_or_else(|| "empty lm payload".to_string())?;
        if s == 0 || s > lanes {
            return Err(format!(
                "lm payload names {s} segments, this stream has {lanes} lanes"
            ));
        }
        let head = 8 * (usize::from(s) - 1);
        if rest.len() < head {
            return Err("lm payload shorter than its segment table".into());
        }
        let (table, mut words) = rest.split_at(head);
        if !words.len().is_multiple_of(4) {
            return Err(format!(
                "lm words of {} bytes are not whole 32-bit words",
                words.len()
            ));
        }
        let mut segments = Vec::with_capacity(usize::from(s));
        let mut tokens_left = tokens;
        rest = table;
        for j in 0..usize::from(s) {
            let (n, w) = if j + 1 < usize::from(s) {
                let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
                let w = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
                rest = &rest[8..];
                (n, w as usize)
            } else {
                (tokens_left, words.len() / 4)
            };
            if n == 0 || n > tokens_left {
                return Err(format!(
                    "segment {j} claims {n} tokens, {tokens_left} are left"
                ));
            }
            if w == 0 || w * 4 > words.len() {
                return Err(format!("segment {j} claims {w} words"));
            }
            tokens_left -= n;
            let (mine, others) = words.split_at(w * 4);
            let mine = mine
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            segments.push((n, mine));
            words = others;
        }
        Ok(Table { segments })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_even_and_leaves_short_frames_whole() {
        let t: Vec<u32> = (0..5000).collect();
        let s = split(&t, 4, None);
        assert_eq!(s, vec![0..1250, 1250..2500, 2500..3750, 3750..5000]);
        assert_eq!(split(&t[..1023], 4, None), vec![0..1023]);
        assert_eq!(split(&t[..1024], 4, None), vec![0..512, 512..1024]);
        assert_eq!(split(&t, 1, None), vec![0..5000]);
        assert_eq!(split(&[], 4, None), vec![0..0]);
    }

    #[test]
    fn split_never_separates_an_escape_from_its_byte() {
        // 9 = escape; pairs (9, x). Token 9 may also be an escaped byte.
        let mut t = vec![1u32; 1024];
        t[511] = 9; // opens a pair at the boundary 512
        let s = split(&t, 2, Some(9));
        assert_eq!(s, vec![0..513, 513..1024]);
        t[510] = 9; // (9, 9) is a whole pair: 512 is a fine boundary
        t[511] = 9;
        assert_eq!(split(&t, 2, Some(9)), vec![0..512, 512..1024]);
    }

    #[test]
    fn lockstep_feeds_round_by_round() {
        assert_eq!(fed_per_segment(&[3, 3, 2], 0), vec![0, 0, 0]);
        assert_eq!(fed_per_segment(&[3, 3, 2], 4), vec![2, 1, 1]);
        assert_eq!(fed_per_segment(&[3, 3, 2], 7), vec![3, 2, 2]);
        assert_eq!(fed_per_segment(&[3, 3, 2], 8), vec![3, 3, 2]);
        assert_eq!(fed_per_segment(&[3, 3, 2], 99), vec![3, 3, 2]);
    }

    #[test]
    fn table_round_trips_and_refuses_lies() {
        let t = Table {
            segments: vec![(5, vec![1, 2]), (3, vec![7]), (4, vec![8, 9, 10])],
        };
        let mut b = Vec::new();
        t.encode(&mut b);
        assert_eq!(b.len(), t.encoded_len());
        assert_eq!(Table::decode(&b, 12, 4).unwrap(), t);
        assert!(
            Table::decode(&b, 12, 2).is_err(),
            "more segments than lanes"
        );
        assert!(Table::decode(&b, 8, 4).is_err(), "last segment left empty");
        assert!(Table::decode(&b, 4, 4).is_err(), "first segment too long");
        assert!(Table::decode(&b[..b.len() - 1], 12, 4).is_err());
        assert!(Table::decode(&b[..10], 12, 4).is_err());
        assert!(Table::decode(&[], 12, 4).is_err());
        assert!(Table::decode(&[0], 12, 4).is_err());
        // A segment that claims more words than there are.
        let mut lie = b.clone();
        lie[5] = 200;
        assert!(Table::decode(&lie, 12, 4).is_err());
    }
}
