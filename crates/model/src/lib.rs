//! LLMPack's model side: the model directory and its manifest, the
//! byte-faithful tokenizer over a Hugging Face `tokenizer.json`, and the ONNX
//! Runtime predictor that answers many lanes' requests in batched calls.
//!
//! Must not depend on tokio or quinn: the tunnel drives it from a blocking
//! thread.
#![warn(missing_docs)]

mod device;
mod dir;
mod load;
mod onnx;
mod peak;
mod runtime;
mod vocab;

pub use device::{Backend, Device};
pub use dir::{Contract, Manifest, ModelDir, find_in_project};
pub use load::{LoadedModel, load_model};
pub use onnx::{OnnxPredictor, PredictorStats};
pub use peak::{FlopsPerToken, ShapeMeta, flops_per_token, matmul_peak};
pub use runtime::{
    ORT_VERSION, cuda_library_path, init_runtime, ort_library_path, runtime_backend, start_runtime,
};
pub use vocab::HfVocab;

use std::path::PathBuf;

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of the model directory is missing or unreadable.
    #[error("{path}: {source}{hint}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The manifest is malformed or does not match the files.
    #[error("{path}: {why}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The tokenizer cannot be used for byte-faithful coding.
    #[error("tokenizer {path}: {why}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The ONNX Runtime library could not be found or loaded.
    #[error("{0}")]
    Runtime(String),
    /// ONNX Runtime failed while loading or running the model.
    #[error("onnx runtime: {0}")]
    Ort(#[from] ort::Error),
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Hint shown when a model file is missing.
pub(crate) const MODEL_HINT: &str =
    "; run `scripts/setup.sh` to build the default models, or pass --model DIR";
