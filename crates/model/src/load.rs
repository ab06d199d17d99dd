//! Loading a model directory into a ready predictor, with its numeric probe.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use llmpack_codec::Vocabulary;

use crate::{Backend, Device, Error, HfVocab, ModelDir, OnnxPredictor, Result};

/// A verified, loaded model.
#[derive(Debug)]
pub struct LoadedModel {
    /// The directory and its manifest (the model id is `dir.id`).
    pub dir: ModelDir,
    /// Its byte-faithful vocabulary.
    pub vocab: Arc<dyn Vocabulary>,
    /// Its predictor.
    pub predictor: OnnxPredictor,
    /// The numeric probe on this machine and device (see
    /// `llmpack_codec::numeric_probe`), computed by `predictor` itself.
    pub probe: u64,
    /// Where the predictor runs.
    pub backend: Backend,
}

/// Opens and verifies the model directory at `path`, loads ONNX Runtime for
/// `device` (`ort_lib`, else the default places; see [`Device`]), the
/// tokenizer and the model with `threads` threads, and runs the numeric
/// probe on the device the model will run on.
pub fn load_model(
    path: &Path,
    threads: usize,
    ort_lib: Option<PathBuf>,
    device: Device,
) -> Result<LoadedModel> {
    let dir = ModelDir::open(path)?;
    let backend = crate::start_runtime(ort_lib, device)?;
    let m = &dir.manifest.model;
    let vocab = HfVocab::load(&dir.tokenizer_path(), m.vocab_size, m.bos_token_id)?;
    let mut predictor = OnnxPredictor::load(&dir, threads)?;
    let vocab: Arc<dyn Vocabulary> = Arc::new(vocab);
    let probe = llmpack_codec::numeric_probe(&mut predictor, &*vocab, u64::MAX)
        .map_err(|e| Error::Runtime(format!("running the numeric probe: {e}")))?;
    Ok(LoadedModel {
        dir,
        vocab,
        predictor,
        probe,
        backend,
    })
}
