//! Shared pieces of the real-model tests: loading a model directory into a
//! predictor, and the evaluation samples.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use llmpack_model::{HfVocab, ModelDir, OnnxPredictor};

/// Opens, verifies and loads the model at `path` (2 threads).
pub fn load(path: &Path) -> (ModelDir, Arc<HfVocab>, OnnxPredictor) {
    let dir = ModelDir::open(path).expect("model directory is valid");
    llmpack_model::init_runtime(None).expect("ONNX Runtime loads (run scripts/setup.sh)");
    let m = &dir.manifest.model;
    let vocab = HfVocab::load(&dir.tokenizer_path(), m.vocab_size, m.bos_token_id).unwrap();
    let pred = OnnxPredictor::load(&dir, 2).unwrap();
    (dir, Arc::new(vocab), pred)
}

/// The first `len` bytes of the evaluation sample `name` (`.cache/samples`).
pub fn sample(name: &str, len: usize) -> Vec<u8> {
    let path = llmpack_model::find_in_project(&format!(".cache/samples/{name}"))
        .unwrap_or_else(|| panic!(".cache/samples/{name} not found: run scripts/setup.sh first"));
    let mut v = std::fs::read(path).unwrap();
    v.truncate(len);
    v
}
