//! The numeric probe: a fingerprint of the arithmetic a model performs on
//! this machine.
//!
//! Two ends with the same model files can still compute different logits
//! (other SIMD paths, another ONNX Runtime build). Range decoding needs them
//! bit-identical, so both ends run the model on a fixed input and compare a
//! hash of the frequency tables it produces: equal hashes, and the tables of
//! real traffic are very likely equal too; different hashes, and `lm` coding
//! between them must not be used.

use crate::freq::FreqTable;
use crate::predict::{LaneId, PredictError, Predictor, Request};
use crate::tokens::Vocabulary;

/// The probe's fixed input.
const PROBE_TEXT: &[u8] = b"LLMPack numeric probe: 0123456789, the quick brown fox jumps over the lazy dog.\n{\"k\": [1, 2.5, null]}";

/// Runs the probe on `predictor` (as lane `lane`, released afterwards) and
/// returns the hash of the tables after a prime and a few steps.
pub fn numeric_probe(
    predictor: &mut dyn Predictor,
    vocab: &dyn Vocabulary,
    lane: LaneId,
) -> Result<u64, PredictError> {
    let mut tokens = vec![vocab.bos()];
    vocab.tokenize(PROBE_TEXT, &mut tokens);
    let split = tokens.len() - 4;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut table = FreqTable::uniform(1);
    let mut absorb = |logits: &[f32]| {
        table.fill_from_logits(logits);
        for c in table.cdf() {
            hasher.update(&c.to_le_bytes());
        }
    };
    let mut requests = vec![Request::Prime {
        tokens: tokens[..split].to_vec(),
    }];
    requests.extend(tokens[split..].iter().map(|&token| Request::Step { token }));
    let mut result = Ok(());
    for req in requests {
        result = predictor.predict(&[(lane, req)], &mut |_, l| absorb(l));
        if result.is_err() {
            break;
        }
    }
    predictor.release(lane);
    result.map(|()| hasher.digest())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ByteVocab;
    use crate::toy::ToyPredictor;

    #[test]
    fn probe_is_stable_and_sees_perturbation() {
        let v = ByteVocab::default();
        let mut a = ToyPredictor::new(v.vocab_size());
        let h1 = numeric_probe(&mut a, &v, 9).unwrap();
        let h2 = numeric_probe(&mut a, &v, 9).unwrap();
        assert_eq!(h1, h2);
        assert!(a.context_len(9).is_none(), "probe lane released");
        let mut b = ToyPredictor::new(v.vocab_size());
        b.perturb = 0.5;
        assert_ne!(numeric_probe(&mut b, &v, 9).unwrap(), h1);
    }
}
