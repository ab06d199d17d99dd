//! What coders ask of a model, and the trait that answers it.

/// Names one coding lane (one direction of one stream) to the predictor,
/// which keeps that lane's model context (its KV cache).
pub type LaneId = u64;

/// A lane's request for its next distribution.
///
/// The sequence of requests of a lane is the same on both ends, by
/// construction; the predictor must answer each request as a function of the
/// lane's own request sequence only (not of which other lanes share a batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Forget the lane's context, run `tokens` (the first is the start token)
    /// as a fresh context, and answer with the logits after the last one.
    Prime {
        /// The new context, at least one token.
        tokens: Vec<u32>,
    },
    /// Append one token to the lane's context and answer with the logits
    /// after it.
    Step {
        /// The token to append.
        token: u32,
    },
}

/// Something that answers lanes' requests with next-token logits: the ONNX
/// model in `llmpack-model`, or the small deterministic [`crate::toy`] model
/// in tests.
pub trait Predictor {
    /// Number of logits per answer.
    fn vocab_size(&self) -> usize;

    /// Answers a batch of requests, at most one per lane. For request `i`,
    /// calls `answer(i, logits)` once. An error leaves every lane of the
    /// batch in an unspecified state.
    fn predict(
        &mut self,
        batch: &[(LaneId, Request)],
        answer: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), PredictError>;

    /// Frees whatever the predictor keeps for `lane`.
    fn release(&mut self, lane: LaneId);
}

/// A predictor failed (the model runtime returned an error).
#[derive(Debug, thiserror::Error)]
#[error("model inference failed: {0}")]
pub struct PredictError(pub String);

/// A predictor for coders that must never ask one: every request fails
/// with "no model is loaded". Model-free runs pass it where a predictor is
/// required; a request that reaches it is a bug or a hostile frame, and
/// comes back as an error, never a panic.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoModel;

impl Predictor for NoModel {
    fn vocab_size(&self) -> usize {
        257
    }
    fn predict(
        &mut self,
        _: &[(LaneId, Request)],
        _: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), PredictError> {
        Err(PredictError("no model is loaded".into()))
    }
    fn release(&mut self, _: LaneId) {}
}
