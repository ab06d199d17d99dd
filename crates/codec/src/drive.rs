//! Running many coders against one predictor, batching their requests.

use crate::predict::{LaneId, PredictError, Predictor, Request};
use crate::{StreamDecoder, StreamEncoder};

/// A coder that may need model predictions: [`StreamEncoder`] or [`StreamDecoder`].
pub trait Coder {
    /// The lane the predictor knows this coder by; `None` without a model.
    fn lane(&self) -> Option<LaneId>;
    /// Codes as far as possible and returns the next request, if one is due.
    fn poll_request(&mut self) -> Option<Request>;
    /// Takes the answer to the last request.
    fn handle_prediction(&mut self, logits: &[f32]);
    /// Whether a frame is in progress or waits to be taken.
    fn busy(&self) -> bool;
}

impl Coder for StreamEncoder {
    fn lane(&self) -> Option<LaneId> {
        StreamEncoder::lane(self)
    }
    fn poll_request(&mut self) -> Option<Request> {
        StreamEncoder::poll_request(self)
    }
    fn handle_prediction(&mut self, logits: &[f32]) {
        StreamEncoder::handle_prediction(self, logits)
    }
    fn busy(&self) -> bool {
        StreamEncoder::busy(self)
    }
}

impl Coder for StreamDecoder {
    fn lane(&self) -> Option<LaneId> {
        StreamDecoder::lane(self)
    }
    fn poll_request(&mut self) -> Option<Request> {
        StreamDecoder::poll_request(self)
    }
    fn handle_prediction(&mut self, logits: &[f32]) {
        StreamDecoder::handle_prediction(self, logits)
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

/// Runs `coders` until none needs a prediction: each round collects one
/// request from every coder that has one and answers them in one batch.
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
            if let Some(req) = c.poll_request() {
                let lane = c.lane().expect("a coder that asks has a lane");
                batch.push((lane, req));
                owner.push(i);
            }
        }
        if batch.is_empty() {
            return Ok(step);
        }
        predictor.predict(&batch, &mut |i, logits| {
            coders[owner[i]].handle_prediction(logits)
        })?;
        step.batches += 1;
        step.requests += batch.len() as u64;
        progress(step);
    }
}
