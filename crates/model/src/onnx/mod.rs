//! The ONNX Runtime predictor: one session, and the engine that keeps each
//! lane's context the way the graph's contract says (`[onnx] contract`):
//!
//! - `gqa` ([`kv`]): a preallocated KV buffer per lane, updated in place;
//!   any set of lanes steps in one call. The default model's contract.
//! - `state` ([`state`]): a recurrent model's fixed-size state per lane;
//!   any set of lanes steps in one call.
//! - `past` ([`past`]): a decoder-with-past export as `optimum` writes it
//!   (SmolLM2 as `scripts/setup.sh` builds it); lanes batch only with lanes
//!   of equal context length, and changing groups copies caches.
//!
//! Every engine answers each request as a function of its lane's own
//! request sequence only, which is what lossless coding needs; the
//! integration tests check it bit for bit on real models.

mod kv;
mod past;
mod raw;
mod slots;
mod state;

use llmpack_codec::{LaneId, PredictError, Predictor, Request};
use ort::session::Session;

use crate::dir::Contract;
use crate::{ModelDir, Result, ShapeMeta};

/// Counters of the predictor's work.
#[derive(Debug, Clone, Copy, Default)]
pub struct PredictorStats {
    /// Model calls.
    pub calls: u64,
    /// Step rows computed (sum of batch sizes of step calls).
    pub step_rows: u64,
    /// Prime requests.
    pub primes: u64,
    /// Tokens run in primes.
    pub prime_tokens: u64,
    /// Times lanes' caches were moved to batch them together (gathers of
    /// the `past` engine, row swaps of the others).
    pub gathers: u64,
    /// Context positions attended by step rows, summed (the mean context
    /// of a step is this over `step_rows`).
    pub step_context: u64,
    /// Calls that stepped lanes (no primes).
    pub step_calls: u64,
    /// Seconds of those calls inside the runtime.
    pub step_seconds: f64,
    /// Seconds spent inside the runtime, all calls.
    pub model_seconds: f64,
}

type Answer<'a> = &'a mut dyn FnMut(usize, &[f32]);

fn fail(e: impl std::fmt::Display) -> PredictError {
    PredictError(e.to_string())
}

/// Checks that `session`'s graph has every input in `names`.
fn check_inputs<'a>(
    session: &Session,
    dir: &ModelDir,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    for n in names {
        if !session.inputs().iter().any(|i| i.name() == n) {
            return Err(manifest_error(dir)(format!("the graph has no input `{n}`")));
        }
    }
    Ok(())
}

/// The part of a predictor that keeps lanes' contexts the way one contract
/// says; the session and the counters stay with [`OnnxPredictor`].
trait Engine: std::fmt::Debug + Send {
    /// Answers `batch` (at most one request per lane, checked by the caller).
    fn predict(
        &mut self,
        session: &mut Session,
        batch: &[(LaneId, Request)],
        answer: Answer<'_>,
        stats: &mut PredictorStats,
    ) -> Result<(), PredictError>;
    /// Frees `lane`'s context.
    fn release(&mut self, lane: LaneId);
    /// Lanes holding a context.
    fn live_lanes(&self) -> usize;
    /// Bytes of model state per lane, where that is fixed.
    fn bytes_per_lane(&self) -> Option<usize>;
}

/// `why` as an error about `dir`'s manifest.
fn manifest_error(dir: &ModelDir) -> impl Fn(String) -> crate::Error + '_ {
    |why| crate::Error::Manifest {
        path: dir.path.join("manifest.toml"),
        why,
    }
}

/// Answers coding lanes' requests with an ONNX model, batching any set of
/// lanes into one call where the contract allows.
#[derive(Debug)]
pub struct OnnxPredictor {
    session: Session,
    engine: Box<dyn Engine>,
    vocab: usize,
    threads: usize,
    shape: ShapeMeta,
    stats: PredictorStats,
}

impl OnnxPredictor {
    /// Loads the model's graph with `threads` intra-op threads, on the
    /// device the runtime was started for: call [`crate::start_runtime`]
    /// (or [`crate::init_runtime`] for the CPU) first.
    pub fn load(dir: &ModelDir, threads: usize) -> Result<Self> {
        let session = crate::runtime::session(&dir.onnx_path(), threads)?;
        let engine: Box<dyn Engine> = match dir.manifest.onnx.contract {
            Contract::Past => Box::new(past::PastEngine::new(dir, &session)?),
            Contract::Gqa => Box::new(kv::KvEngine::new(dir, &session)?),
            Contract::State => Box::new(state::StateEngine::new(dir, &session)?),
        };
        Ok(OnnxPredictor {
            shape: ShapeMeta::read(&session),
            session,
            engine,
            vocab: dir.manifest.model.vocab_size,
            threads,
            stats: PredictorStats::default(),
        })
    }

    /// Work counters so far.
    pub fn stats(&self) -> PredictorStats {
        self.stats
    }

    /// The model's shape from its graph's metadata, where recorded.
    pub fn shape(&self) -> ShapeMeta {
        self.shape
    }

    /// Intra-op threads of the session.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Lanes currently holding a context.
    pub fn live_lanes(&self) -> usize {
        self.engine.live_lanes()
    }

    /// Bytes of model state each lane holds at most (its KV buffer or its
    /// recurrent state); `None` under the `past` contract, where it grows
    /// with the context and the batch.
    pub fn bytes_per_lane(&self) -> Option<usize> {
        self.engine.bytes_per_lane()
    }

    /// Whether any set of lanes can step in one call (`gqa`, `state`).
    pub fn batches_any_lanes(&self) -> bool {
        self.engine.bytes_per_lane().is_some()
    }
}

impl Predictor for OnnxPredictor {
    fn vocab_size(&self) -> usize {
        self.vocab
    }

    fn predict(
        &mut self,
        batch: &[(LaneId, Request)],
        answer: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<(), PredictError> {
        let mut seen = std::collections::HashSet::with_capacity(batch.len());
        if let Some((lane, _)) = batch.iter().find(|(lane, _)| !seen.insert(*lane)) {
            return Err(fail(format!("two requests for lane {lane} in one batch")));
        }
        self.engine
            .predict(&mut self.session, batch, answer, &mut self.stats)
    }

    fn release(&mut self, lane: LaneId) {
        self.engine.release(lane);
    }
}
