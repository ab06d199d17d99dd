//! Integer frequency tables from logits, by one fixed procedure.
//!
//! Both ends must turn the same logits into the same table, bit for bit, on
//! any machine. The procedure uses only correctly rounded IEEE-754 operations
//! (`+ - * /`, comparisons, `floor`, `round`) in a fixed order, and its own
//! exponential, so it does not depend on the platform's libm:
//!
//! 1. `m` = the largest finite logit (NaN and infinities count as "never").
//!    If there is none, the table is uniform.
//! 2. `w[i] = exp(max(l[i] - m, -88))` in f64, with [`exp_det`]; a non-finite
//!    logit gets `w[i] = 0`.
//! 3. `s` = the sum of `w` in index order; `scale = (TOTAL - V) / s`.
//! 4. `f[i] = 1 + floor(w[i] * scale)`: every token is codable.
//! 5. The first index holding the largest `f` absorbs `TOTAL - sum(f)`, so the
//!    table sums to exactly [`TOTAL`] = 2^[`PRECISION`].

use std::borrow::Borrow;
use std::num::NonZeroU32;

use constriction::stream::model::{DecoderModel, EncoderModel, EntropyModel};

/// Fixed-point precision of the tables, in bits. Range coding uses 32-bit
/// words and a 64-bit state, which allows up to 32; 24 leaves every one of
/// up to ~4M tokens at least one unit.
pub const PRECISION: usize = 24;
/// The sum of every table: `1 << PRECISION`.
pub const TOTAL: u32 = 1 << PRECISION;
/// Largest vocabulary a table can hold (each token needs one unit, and the
/// model's favourites need room to be cheap).
pub const MAX_VOCAB: usize = 1 << 22;

/// A cumulative frequency table over token ids `0..V`.
#[derive(Debug, Clone)]
pub struct FreqTable {
    /// `cdf[i]` = sum of frequencies of tokens `< i`; `cdf[V] == TOTAL`.
    cdf: Vec<u32>,
    /// Scratch for the weights, kept to avoid a per-token allocation.
    weights: Vec<f64>,
}

impl FreqTable {
    /// A uniform table over `vocab` tokens.
    pub fn uniform(vocab: usize) -> Self {
        let mut t = FreqTable {
            cdf: Vec::with_capacity(vocab + 1),
            weights: Vec::new(),
        };
        t.fill_uniform(vocab);
        t
    }

    /// The cumulative frequencies: `cdf()[i]` is the sum of the frequencies
    /// of tokens below `i`; the last entry is [`TOTAL`].
    pub fn cdf(&self) -> &[u32] {
        &self.cdf
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.cdf.len() - 1
    }

    /// Frequency of `token` (out of [`TOTAL`]).
    pub fn freq(&self, token: usize) -> u32 {
        self.cdf[token + 1] - self.cdf[token]
    }

    /// Ideal cost of coding `token` with this table, in bits.
    pub fn cost_bits(&self, token: usize) -> f64 {
        f64::from(u32::try_from(PRECISION).expect("small")) - f64::from(self.freq(token)).log2()
    }

    fn fill_uniform(&mut self, vocab: usize) {
        assert!((1..=MAX_VOCAB).contains(&vocab), "vocabulary size {vocab}");
        let vocab32 = u32::try_from(vocab).expect("checked above");
        let base = TOTAL / vocab32;
        let extra = TOTAL - base * vocab32; // the first `extra` tokens get one more
        self.cdf.clear();
        let mut acc = 0u32;
        self.cdf.push(0);
        for i in 0..vocab32 {
            acc += base + u32::from(i < extra);
            self.cdf.push(acc);
        }
        debug_assert_eq!(acc, TOTAL);
    }

    /// Rebuilds the table from `logits` by the procedure in the module docs.
    /// Panics only if `logits` is empty or longer than [`MAX_VOCAB`] (a
    /// programming error: logits come from our own model, checked at load).
    pub fn fill_from_logits(&mut self, logits: &[f32]) {
        let vocab = logits.len();
        assert!((1..=MAX_VOCAB).contains(&vocab), "vocabulary size {vocab}");
        let mut m = f32::NEG_INFINITY;
        for &l in logits {
            if l.is_finite() && l > m {
                m = l;
            }
        }
        if !m.is_finite() {
            self.fill_uniform(vocab);
            return;
        }
        let m = f64::from(m);
        // The weights (vectorized, the same operations per element as one at
        // a time: same bits), then their sum in index order.
        self.weights.resize(vocab, 0.0);
        weights(logits, m, &mut self.weights);
        let mut sum = 0.0f64;
        for &w in &self.weights {
            sum += w;
        }
        // sum >= 1: the maximum contributes exp(0) = 1.
        let budget = TOTAL - u32::try_from(vocab).expect("checked above");
        let scale = f64::from(budget) / sum;
        // Frequencies, the first largest, then the running sum: three
        // passes, the first two vectorized.
        self.cdf.resize(vocab + 1, 0);
        self.cdf[0] = 0;
        frequencies(&self.weights, scale, budget, &mut self.cdf[1..]);
        let bf = self.cdf[1..].iter().copied().max().unwrap_or(1);
        let bi = self.cdf[1..].iter().position(|&f| f == bf).unwrap_or(0);
        let mut acc = 0u32;
        for c in &mut self.cdf[1..] {
            // At most budget + vocab = TOTAL in all: the floors sum to at
            // most budget.
            acc = acc.saturating_add(*c);
            *c = acc;
        }
        // Give the rounding remainder (or take the rounding excess) to the
        // first most likely token.
        let adjusted = i64::from(bf) + i64::from(TOTAL) - i64::from(acc);
        if adjusted < 1 {
            // Cannot happen with finite weights; stay codable regardless.
            self.fill_uniform(vocab);
            return;
        }
        let adjusted = u32::try_from(adjusted).expect("bounded by TOTAL");
        for c in &mut self.cdf[bi + 1..] {
            *c = (*c - bf) + adjusted;
        }
        debug_assert_eq!(self.cdf[vocab], TOTAL);
    }

    /// Sets `token`'s frequency to about `want` and scales every other
    /// token's into the rest (`max(1, floor(f * rest_new / rest_old))`, the
    /// token taking what is left), integers only. `want` is clamped so the
    /// table stays valid: at most `TOTAL - (V - 1)`, and not below the
    /// vocabulary size unless the token already was.
    pub(crate) fn set_freq(&mut self, token: usize, want: u32) {
        let v = self.vocab_size();
        if v < 2 || token >= v {
            return;
        }
        let v32 = u32::try_from(v).expect("at most MAX_VOCAB");
        let f = self.freq(token);
        let want = want.clamp(f.min(v32), TOTAL - (v32 - 1));
        if want == f {
            return;
        }
        let rest_old = u64::from(TOTAL - f);
        let rest_new = u64::from(TOTAL - want);
        let mut prev_old = 0u32;
        let mut acc = 0u32;
        for i in 0..v {
            let next_old = self.cdf[i + 1];
            let fi = next_old - prev_old;
            prev_old = next_old;
            if i != token {
                let g = u64::from(fi) * rest_new / rest_old;
                acc += u32::try_from(g).expect("below TOTAL").max(1);
            }
            self.cdf[i + 1] = acc;
        }
        // acc <= rest_new + (V - 1) = TOTAL - want + V - 1 < TOTAL, as want >= V here.
        let own = TOTAL - acc;
        for c in &mut self.cdf[token + 1..] {
            *c += own;
        }
        debug_assert_eq!(self.cdf[v], TOTAL);
    }

    /// The token whose interval holds `quantile` (< [`TOTAL`]).
    fn lookup(&self, quantile: u32) -> usize {
        // The last i with cdf[i] <= quantile; frequencies are >= 1 so it is unique.
        self.cdf.partition_point(|&c| c <= quantile) - 1
    }
}

/// Step 2 of the procedure: `out[i] = exp_det(max(l[i] - m, -88))`, or 0
/// for a non-finite logit. Compiled for AVX2 too and picked at run time:
/// the same IEEE operations (no fused multiply-add), so the same bits.
#[multiversion::multiversion(targets("x86_64+avx2", "aarch64+neon"))]
fn weights(logits: &[f32], m: f64, out: &mut [f64]) {
    for (o, &l) in out.iter_mut().zip(logits) {
        let finite = l.is_finite();
        let x = if finite { f64::from(l) - m } else { -88.0 };
        let w = exp_det(x.max(-88.0));
        *o = if finite { w } else { 0.0 };
    }
}

/// Step 4 without the running sum: `f[i] = 1 + floor(w[i] * scale)`, at
/// most `1 + budget`.
#[multiversion::multiversion(targets("x86_64+avx2", "aarch64+neon"))]
fn frequencies(weights: &[f64], scale: f64, budget: u32, out: &mut [u32]) {
    let cap = f64::from(budget);
    for (o, &w) in out.iter_mut().zip(weights) {
        // w * scale is in [0, budget] up to rounding, below 2^31: truncating
        // to an integer is floor.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let f = (w * scale).min(cap) as i32 as u32;
        *o = 1 + f;
    }
}

/// `exp(x)` for `x` in `[-88, 0]`, using only correctly rounded f64
/// operations so every IEEE-754 machine computes the same bits.
/// Relative error below 1e-15, far below what 24-bit tables can see.
pub fn exp_det(x: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    const INV_LN2: f64 = std::f64::consts::LOG2_E;
    // Round to nearest by the 1.5 * 2^52 trick: plain IEEE additions, no
    // libm call, and the integer lands in the low bits of the sum.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    let kf = x * INV_LN2 + SHIFT;
    let k = kf - SHIFT;
    let r = (x - k * LN2_HI) - k * LN2_LO; // |r| <= ln2/2
    // Taylor series of exp(r) to r^11 / 11!, Horner form.
    let p = 1.0 / 39_916_800.0;
    let p = p * r + 1.0 / 3_628_800.0;
    let p = p * r + 1.0 / 362_880.0;
    let p = p * r + 1.0 / 40_320.0;
    let p = p * r + 1.0 / 5_040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // Scale by 2^k: k is in [-128, 0] for our inputs, a normal f64 exponent.
    // kf's representation is SHIFT's plus k (two's complement, wrapping), so
    // (that difference + 1023) << 52 is 2^k's: integer adds and a shift,
    // which vectorize, where a float-to-int conversion would not.
    let k_bits = kf.to_bits().wrapping_sub(SHIFT.to_bits());
    let bits = k_bits.wrapping_add(1023) << 52;
    p * f64::from_bits(bits)
}

impl PartialEq for FreqTable {
    fn eq(&self, other: &Self) -> bool {
        self.cdf == other.cdf
    }
}

impl Eq for FreqTable {}

impl EntropyModel<PRECISION> for FreqTable {
    type Symbol = usize;
    type Probability = u32;
}

impl EncoderModel<PRECISION> for FreqTable {
    fn left_cumulative_and_probability(
        &self,
        symbol: impl Borrow<usize>,
    ) -> Option<(u32, NonZeroU32)> {
        let s = *symbol.borrow();
        let lo = *self.cdf.get(s)?;
        let hi = *self.cdf.get(s + 1)?;
        Some((lo, NonZeroU32::new(hi - lo)?))
    }
}

impl DecoderModel<PRECISION> for FreqTable {
    fn quantile_function(&self, quantile: u32) -> (usize, u32, NonZeroU32) {
        let s = self.lookup(quantile.min(TOTAL - 1));
        let lo = self.cdf[s];
        let f = self.cdf[s + 1] - lo;
        (s, lo, NonZeroU32::new(f).expect("every frequency is >= 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exp_matches_std_closely() {
        let mut x = -88.0;
        while x <= 0.0 {
            let a = exp_det(x);
            let b = x.exp();
            assert!(((a - b) / b).abs() < 1e-14, "x={x} {a} {b}");
            x += 0.0137;
        }
        assert_eq!(exp_det(0.0), 1.0);
    }

    /// The procedure as first written, one element at a time with
    /// branches; the vectorizable version must give the same bits.
    fn reference_cdf(logits: &[f32]) -> Vec<u32> {
        fn exp_ref(x: f64) -> f64 {
            const SHIFT: f64 = 6_755_399_441_055_744.0;
            let kf = x * std::f64::consts::LOG2_E + SHIFT;
            let k = kf - SHIFT;
            let r = (x - k * 6.931_471_803_691_238e-1) - k * 1.908_214_929_270_587_7e-10;
            let mut p = 1.0 / 39_916_800.0;
            for c in [
                3_628_800.0,
                362_880.0,
                40_320.0,
                5_040.0,
                720.0,
                120.0,
                24.0,
                6.0,
                2.0,
                1.0,
                1.0,
            ] {
                p = p * r + 1.0 / c;
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
            let k = kf.to_bits() as u32 as i32;
            p * f64::from_bits(((1023 + i64::from(k)) as u64) << 52)
        }
        let m = logits
            .iter()
            .copied()
            .filter(|l| l.is_finite())
            .fold(f32::NEG_INFINITY, f32::max);
        let m = f64::from(m);
        let mut w = Vec::new();
        let mut sum = 0.0;
        for &l in logits {
            let x = if l.is_finite() {
                exp_ref((f64::from(l) - m).max(-88.0))
            } else {
                0.0
            };
            sum += x;
            w.push(x);
        }
        let budget = TOTAL - u32::try_from(logits.len()).expect("test sizes");
        let scale = f64::from(budget) / sum;
        let mut cdf = vec![0u32];
        let (mut acc, mut best) = (0u32, (0usize, 0u32));
        for (i, &x) in w.iter().enumerate() {
            #[allow(clippy::cast_possible_truncation)]
            let f = 1 + ((x * scale) as u32).min(budget);
            if f > best.1 {
                best = (i, f);
            }
            acc += f;
            cdf.push(acc);
        }
        let adjusted = best.1 + TOTAL - acc;
        for c in &mut cdf[best.0 + 1..] {
            *c = *c - best.1 + adjusted;
        }
        cdf
    }

    #[test]
    fn vectorized_tables_equal_the_reference_bit_for_bit() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..200 {
            let n = [4096, 49152, 257, 3][round % 4];
            let spread = [1.0f32, 8.0, 30.0, 0.01][round % 3];
            let logits: Vec<f32> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * spread * 4.0
                })
                .collect();
            let mut t = FreqTable::uniform(1);
            t.fill_from_logits(&logits);
            assert_eq!(t.cdf, reference_cdf(&logits), "round {round}");
        }
    }

    #[test]
    fn uniform_sums_to_total() {
        for v in [1, 2, 3, 257, 49152] {
            let t = FreqTable::uniform(v);
            assert_eq!(t.cdf[v], TOTAL);
            assert!((0..v).all(|i| t.freq(i) >= 1));
        }
    }

    #[test]
    fn peaked_logits_make_cheap_favourite() {
        let mut logits = vec![0.0f32; 1000];
        logits[7] = 30.0;
        let mut t = FreqTable::uniform(1);
        t.fill_from_logits(&logits);
        assert!(t.cost_bits(7) < 0.001);
        assert_eq!(t.freq(3), 1);
        assert_eq!(t.cdf[1000], TOTAL);
    }

    #[test]
    fn non_finite_logits_stay_codable() {
        let mut t = FreqTable::uniform(1);
        t.fill_from_logits(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
        assert_eq!(t, FreqTable::uniform(3));
        t.fill_from_logits(&[f32::NAN, 1.0, f32::NEG_INFINITY, 2.0]);
        assert!((0..4).all(|i| t.freq(i) >= 1));
        assert!(t.freq(3) > t.freq(1));
    }

    proptest! {
        #[test]
        fn any_logits_give_a_valid_table(logits in proptest::collection::vec(-1e4f32..1e4, 1..600)) {
            let mut t = FreqTable::uniform(1);
            t.fill_from_logits(&logits);
            prop_assert_eq!(t.cdf[logits.len()], TOTAL);
            for i in 0..logits.len() {
                prop_assert!(t.freq(i) >= 1);
                let q = t.cdf[i];
                prop_assert_eq!(t.lookup(q), i);
                prop_assert_eq!(t.lookup(t.cdf[i + 1] - 1), i);
            }
        }
    }
}
