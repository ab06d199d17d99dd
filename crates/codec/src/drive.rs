//! Running many coders against one predictor, batching their requests.

use crate::predict::{LaneId, PredictError, Predictor, Request};
use crate::{StreamDecoder, StreamEncoder};

/// A coder that may need model predictions: [`StreamEncoder`] or [`StreamDecoder`].
pub trait Coder {
    /// Codes as far as possible and hands every request now due to `out`
    /// (at most one per lane; a frame on several lanes asks for several).
    fn poll_requests(&mut self, out: &mut dyn FnMut(LaneId, Request));
    /// Takes the answer to `lane`'s last request.
    fn handle_prediction(&mut self, lane: LaneId, logits: &[f32]);
    /// Whether a frame is in progress or waits to be taken.
    fn busy(&self) -> bool;
}

impl Coder for StreamEncoder {
    fn poll_requests(&mut self, out: &mut dyn FnMut(LaneId, Request)) {
        StreamEncoder::poll_requests(self, out);
    }
    fn handle_prediction(&mut self, lane: LaneId, logits: &[f32]) {
        StreamEncoder::handle_prediction(self, lane, logits);
    }
    fn busy(&self) -> bool {
        StreamEncoder::busy(self)
    }
}

impl Coder for StreamDecoder {
    fn poll_requests(&mut self, out: &mut dyn FnMut(LaneId, Request)) {
        StreamDecoder::poll_requests(self, out);
    }
    fn handle_prediction(&mut self, lane: LaneId, logits: &[f32]) {
        StreamDecoder::handle_prediction(self, lane, logits);
    }
    fn busy(&self) -> bool {
        StreamDecoder::busy(self)
    }
}

/// What one [`drive`] round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    /// Model calls (batches) made.
    pub batches: u64,
    /// Requests answered.
    pub requests: u64,
}

/// Runs `coders` until none needs a prediction: each round collects every
/// request due (one per lane) and answers them in one batch.
/// `progress` is called after each batch with the totals so far.
pub fn drive<C: Coder + ?Sized>(
    predictor: &mut dyn Predictor,
    coders: &mut [&mut C],
    progress: &mut dyn FnMut(Step),
) -> Result<Step, PredictError> {
    let mut step = Step::default();
    let mut batch: Vec<(LaneId, Request)> = Vec::new();
    let mut owner: Vec<usize> = Vec::new();
    loop {
        batch.clear();
        owner.clear();
        for (i, c) in coders.iter_mut().enumerate() {
            c.poll_requests(&mut |lane, req| {
                batch.push((lane, req));
                owner.push(i);
            });
        }
        if batch.is_empty() {
            return Ok(step);
        }
        predictor.predict(&batch, &mut |i, logits| {
            coders[owner[i]].handle_prediction(batch[i].0, logits);
        })?;
        step.batches += 1;
        step.requests += batch.len() as u64;
        progress(step);
    }
}
