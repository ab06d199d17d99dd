//! Locating and loading the model for a command.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use llmpack_model::{Backend, Device, OnnxPredictor};

use crate::engine::{ModelHandle, ModelSpec};

/// The model directory used when `--model` is not given.
pub const DEFAULT_MODEL: &str = "models/default";

/// Which model to load, and how.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model directory (model.onnx, tokenizer.json, manifest.toml).
    /// Default: models/default of this project (committed; needs no setup).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Threads for inference.
    #[arg(long, default_value_t = default_threads())]
    pub threads: usize,
    /// The ONNX Runtime library (default: $ORT_DYLIB_PATH, then the project
    /// cache: its CPU build, or for --device cuda/auto its CUDA build).
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// Where the model runs: cpu; cuda (an NVIDIA GPU through ONNX Runtime's
    /// CUDA execution provider, which `scripts/setup.sh --gpu` installs; an
    /// error if it cannot work here); or auto (the GPU where it works, else
    /// the CPU, with a warning). Files packed on one device may not unpack on
    /// another: the numeric probe in the file says so.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
}

fn parse_device(s: &str) -> Result<Device, String> {
    s.parse()
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}

/// A loaded model.
pub struct Loaded {
    /// Its identity, vocabulary and numeric probe.
    pub spec: ModelSpec,
    /// Its predictor.
    pub predictor: OnnxPredictor,
    /// Tokens of context it was trained on (manifest `context_length`).
    pub context: u32,
    /// Its directory and manifest.
    pub dir: llmpack_model::ModelDir,
    /// Where it runs.
    pub backend: Backend,
}

impl Loaded {
    /// Finds, verifies and loads the model.
    pub fn load(args: &ModelArgs) -> Result<Self> {
        let path = match &args.model {
            Some(p) => p.clone(),
            None => llmpack_model::find_in_project(DEFAULT_MODEL).with_context(|| {
                format!("model directory {DEFAULT_MODEL} not found (it is part of the repository: run llmpack inside a checkout), or pass --model DIR")
            })?,
        };
        let m = llmpack_model::load_model(&path, args.threads, args.ort_lib.clone(), args.device)
            .with_context(|| format!("loading model {}", path.display()))?;
        let spec = ModelSpec {
            vocab: m.vocab,
            id: m.dir.id,
            probe: m.probe,
        };
        let context = m.dir.manifest.model.context_length;
        Ok(Loaded {
            spec,
            predictor: m.predictor,
            context,
            dir: m.dir,
            backend: m.backend,
        })
    }

    /// Refuses a context window the model cannot hold.
    pub fn check_window(&self, window: u32) -> Result<()> {
        if let Some(max) = self.dir.max_window()
            && window > max
        {
            anyhow::bail!(
                "--window {window} is longer than model {}'s KV buffer of {max} tokens; use --window {max} or less",
                self.dir.path.display()
            );
        }
        Ok(())
    }

    /// The handle the engine uses.
    pub fn handle(&mut self) -> ModelHandle<'_> {
        ModelHandle {
            predictor: &mut self.predictor,
            spec: self.spec.clone(),
        }
    }
}
