//! A small deterministic predictor for tests and examples: per-lane bigram
//! counts over the lane's own context. It needs no model file and follows
//! the [`Predictor`] contract exactly, so codec tests exercise the same
//! request sequence as the real model.

use std::collections::HashMap;

use crate::predict::{LaneId, PredictError, Predictor, Request};

#[derive(Debug, Default)]
struct Ctx {
    tokens: Vec<u32>,
    counts: HashMap<(u32, u32), u32>,
}

impl Ctx {
    fn push(&mut self, t: u32) {
        if let Some(&prev) = self.tokens.last() {
            *self.counts.entry((prev, t)).or_default() += 1;
        }
        self.tokens.push(t);
    }
}

/// Bigram-count predictor over a vocabulary of `vocab` tokens.
#[derive(Debug)]
pub struct ToyPredictor {
    vocab: usize,
    lanes: HashMap<LaneId, Ctx>,
    /// When set, every answer is nudged by this much on a token chosen from
    /// the context: a stand-in for a peer whose model computes slightly
    /// different numbers.
    pub perturb: f32,
    /// Requests answered, per kind: (primes, steps).
    pub answered: (u64, u64),
    /// Largest batch seen.
    pub max_batch: usize,
}

impl ToyPredictor {
    /// A predictor over `vocab` tokens.
    pub fn new(vocab: usize) -> Self {
        ToyPredictor {
            vocab,
            lanes: HashMap::new(),
            perturb: 0.0,
            answered: (0, 0),
            max_batch: 0,
        }
    }

    /// Length of a lane's current context (for tests of the reset rule).
    pub fn context_len(&self, lane: LaneId) -> Option<usize> {
        self.lanes.get(&lane).map(|c| c.tokens.len())
    }

    fn logits(&self, ctx: &Ctx, out: &mut Vec<f32>) {
        out.clear();
        out.resize(self.vocab, 0.0);
        let prev = ctx.tokens.last().copied().unwrap_or(0);
        for (&(a, b), &n) in &ctx.counts {
            if a == prev && (b as usize) < self.vocab {
                out[b as usize] = 3.0 * (1.0 + n as f32).ln();
            }
        }
        // A weak preference for printable ASCII, like text.
        for (i, l) in out.iter_mut().enumerate().take(127).skip(32) {
            *l += 0.5 + 0.001 * i as f32;
        }
        if self.perturb != 0.0 {
            let i = (ctx.tokens.len() * 31 + prev as usize) % self.vocab;
            out[i] += self.perturb;
        }
    }
}

impl Predictor for ToyPredictor {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn predict(
        &mut self,
        batch: &[(LaneId, Request)],
        answer: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), PredictError> {
        self.max_batch = self.max_batch.max(batch.len());
        let mut logits = Vec::new();
        for (i, (lane, req)) in batch.iter().enumerate() {
            match req {
                Request::Prime { tokens } => {
                    if tokens.is_empty() {
                        return Err(PredictError("prime with no tokens".into()));
                    }
                    let ctx = self.lanes.entry(*lane).or_default();
                    *ctx = Ctx::default();
                    for &t in tokens {
                        ctx.push(t);
                    }
                    self.answered.0 += 1;
                }
                Request::Step { token } => {
                    let ctx = self
                        .lanes
                        .get_mut(lane)
                        .ok_or_else(|| PredictError(format!("step on unprimed lane {lane}")))?;
                    ctx.push(*token);
                    self.answered.1 += 1;
                }
            }
            self.logits(&self.lanes[lane], &mut logits);
            answer(i, &logits);
        }
        Ok(())
    }

    fn release(&mut self, lane: LaneId) {
        self.lanes.remove(&lane);
    }
}

/// Text from a first-order Markov chain with one bit of entropy per byte:
/// what [`ToyPredictor`] learns and zstd's matches do not, so its frames go
/// `lm` (for tests of the model path without a model file).
pub fn markov(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut prev = 0u8;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            prev = (prev * 3 + u8::from(x & 1 == 1)) % 16;
            b'a' + prev
        })
        .collect()
}

/// Seeded pseudo-random bytes (xorshift64, 8 bytes per step): incompressible
/// test data, the same on every machine.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let next = |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x.to_le_bytes()
    };
    (0..n.div_ceil(8)).flat_map(next).take(n).collect()
}
