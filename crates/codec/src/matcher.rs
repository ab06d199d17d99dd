//! A token-level match model, mixed into the model's tables; part of the
//! `lm` format.
//!
//! The language model sees a window of a few hundred tokens; logs, JSON and
//! HTTP headers repeat whole lines over longer distances. The match model
//! remembers a lane's last [`HISTORY_CAP`] tokens, finds the latest earlier
//! place where the last [`MIN_LEN`] tokens occurred, and predicts the token
//! that followed there; one differing token (a number, an address) does not
//! end a match, the old copy is followed on after it. How far to trust that
//! prediction is learned as it goes: a small table of hit counts, indexed by the match length and by the
//! probability the model itself gives the predicted token, estimates the
//! chance the prediction is right, and the table's frequency for that token
//! is set to it (the other tokens scaled to make room).
//!
//! Everything is integer arithmetic in a fixed order, and it is updated with
//! every token the lane's context takes (in the order both ends see them),
//! so encoder and decoder build identical tables on any machine.

use crate::freq::{FreqTable, TOTAL};

/// Tokens remembered; when full, the model starts over (empty).
pub(crate) const HISTORY_CAP: usize = 1 << 16;
/// Shortest match predicted from, tokens.
pub(crate) const MIN_LEN: usize = 4;
const HASH_BITS: u32 = 16;
const LEN_BUCKETS: usize = 16;
/// `floor(log2(freq)) + 1` of a 24-bit frequency: 1..=25.
const P_BUCKETS: usize = 26;
/// Counts are halved past this, so old evidence fades.
const COUNT_LIMIT: u16 = 1023;
/// Weight of the model's own probability in a cell's estimate, in counts.
const PRIOR: u64 = 2;

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    hits: u16,
    total: u16,
}

/// One lane's match model.
#[derive(Debug, Default)]
pub(crate) struct MatchModel {
    hist: Vec<u32>,
    /// Hash of `MIN_LEN` tokens -> index in `hist` of the token that followed
    /// their latest occurrence (0: none). Allocated on first use.
    heads: Vec<u32>,
    /// Index in `hist` of the predicted next token, valid while `len > 0`.
    ptr: usize,
    /// Current match length in tokens (0: no match).
    len: usize,
    cells: Vec<Cell>,
    /// The cell and token of the prediction made for the next token.
    pending: Option<(usize, u32)>,
}

fn hash(tokens: &[u32]) -> usize {
    let mut h: u32 = 0x9E37_79B9;
    for &t in tokens {
        h = (h ^ t).wrapping_mul(0x0100_0193).rotate_left(5);
    }
    (h.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
}

impl MatchModel {
    /// The token the current match predicts, if any.
    pub(crate) fn predicted(&self) -> Option<u32> {
        (self.len > 0).then(|| self.hist[self.ptr])
    }

    /// Takes the next token of the lane's context.
    pub(crate) fn push(&mut self, token: u32) {
        if let Some((cell, predicted)) = self.pending.take() {
            let c = &mut self.cells[cell];
            c.hits += u16::from(token == predicted);
            c.total += 1;
            if c.total > COUNT_LIMIT {
                c.hits /= 2;
                c.total /= 2;
            }
        }
        if self.hist.len() == HISTORY_CAP {
            self.hist.clear();
            self.heads.fill(0);
            self.len = 0;
        }
        if self.len > 0 {
            if self.hist[self.ptr] == token {
                self.len += 1;
                self.ptr += 1;
            } else if self.len >= MIN_LEN {
                // One token differs (a number, an address): go on with the
                // old copy after it, at length 1, which only such recovering
                // matches use, so their reliability is learned apart.
                self.len = 1;
                self.ptr += 1;
            } else {
                self.len = 0;
            }
        }
        self.hist.push(token);
        let n = self.hist.len();
        if n < MIN_LEN {
            return;
        }
        if self.heads.is_empty() {
            self.heads = vec![0; 1 << HASH_BITS];
        }
        let h = hash(&self.hist[n - MIN_LEN..]);
        if self.len < MIN_LEN {
            let cand = self.heads[h] as usize;
            if cand > 0 {
                // Verify (hashes collide) and measure the match backwards.
                let mut k = 0;
                while k < 32 && k < cand && self.hist[cand - 1 - k] == self.hist[n - 1 - k] {
                    k += 1;
                }
                if k >= MIN_LEN {
                    self.len = k;
                    self.ptr = cand;
                }
            }
        }
        self.heads[h] = u32::try_from(n).expect("n <= HISTORY_CAP");
    }

    /// Mixes the current prediction into `table` (the model's distribution
    /// for the next token).
    pub(crate) fn adjust(&mut self, table: &mut FreqTable) {
        self.pending = None;
        let Some(token) = self.predicted() else {
            return;
        };
        let t = token as usize;
        if t >= table.vocab_size() {
            return;
        }
        if self.cells.is_empty() {
            self.cells = vec![Cell::default(); LEN_BUCKETS * P_BUCKETS];
        }
        let f = table.freq(t);
        let cell =
            (self.len.min(2 * LEN_BUCKETS - 1) / 2) * P_BUCKETS + (32 - f.leading_zeros()) as usize;
        let c = self.cells[cell];
        let want = (u64::from(c.hits) * u64::from(TOTAL) + PRIOR * u64::from(f))
            / (u64::from(c.total) + PRIOR);
        table.set_freq(t, u32::try_from(want).expect("at most TOTAL"));
        self.pending = Some((cell, token));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tokens: &[u32], vocab: usize) -> (Vec<u32>, f64) {
        // Costs under a uniform model, with and without the match model.
        let mut m = MatchModel::default();
        let mut bits = 0.0;
        let mut predictions = Vec::new();
        for &t in tokens {
            let mut table = FreqTable::uniform(vocab);
            m.adjust(&mut table);
            predictions.push(m.predicted().unwrap_or(u32::MAX));
            assert_eq!(*table.cdf().last().unwrap(), TOTAL);
            assert!((0..vocab).all(|i| table.freq(i) >= 1));
            bits += table.cost_bits(t as usize);
            m.push(t);
        }
        (predictions, bits)
    }

    #[test]
    fn repeats_get_cheap_and_noise_costs_little() {
        let line: Vec<u32> = (0..40).map(|i| (i * 7 + 3) % 500).collect();
        let mut tokens = Vec::new();
        for k in 0..50u32 {
            tokens.extend_from_slice(&line);
            tokens.push(1000 + k); // a field that changes every line
        }
        let (pred, bits) = run(&tokens, 4096);
        let uniform = 12.0 * tokens.len() as f64;
        assert!(bits < 0.2 * uniform, "{bits:.0} vs {uniform:.0} bits");
        // The second line is predicted from its 5th token on.
        assert_eq!(pred[41 + 4], line[4]);

        let mut x = 1u32;
        let noise: Vec<u32> = (0..5000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x % 4096
            })
            .collect();
        let (_, bits) = run(&noise, 4096);
        let uniform = 12.0 * noise.len() as f64;
        assert!(bits < 1.01 * uniform, "{bits:.0} vs {uniform:.0} bits");
    }

    #[test]
    fn a_changed_token_does_not_end_the_match() {
        let mut m = MatchModel::default();
        let line = [10u32, 11, 12, 13, 14, 15, 16, 17];
        for &t in &line {
            m.push(t);
        }
        // The same line again with token 14 replaced by 99.
        for &t in &[10u32, 11, 12, 13, 99] {
            m.push(t);
        }
        assert_eq!(m.predicted(), Some(15), "goes on after the changed token");
        m.push(15);
        assert_eq!(m.predicted(), Some(16));
        // A second mismatch while recovering ends the match.
        m.push(42);
        m.push(43);
        assert_eq!(m.predicted(), None);
    }

    #[test]
    fn history_cap_starts_over() {
        let mut m = MatchModel::default();
        let pattern = [5u32, 6, 7, 8, 9];
        for i in 0..HISTORY_CAP + 10 {
            m.push(pattern[i % pattern.len()]);
        }
        assert!(m.hist.len() <= 10 + 1);
        assert!(m.predicted().is_some());
    }

    #[test]
    fn out_of_vocabulary_predictions_leave_the_table() {
        let mut m = MatchModel::default();
        for _ in 0..3 {
            for t in [9000u32, 9001, 9002, 9003, 9004] {
                m.push(t);
            }
        }
        assert!(m.predicted().is_some());
        let mut table = FreqTable::uniform(16);
        m.adjust(&mut table);
        assert_eq!(table, FreqTable::uniform(16));
    }
}
