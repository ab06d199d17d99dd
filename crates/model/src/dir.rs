//! A model directory: `model.onnx`, `tokenizer.json` and `manifest.toml`.

use std::path::{Path, PathBuf};

use llmpack_frame::ModelId;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{Error, MODEL_HINT, Result};

/// `manifest.toml`: what the model is and how its ONNX graph is laid out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Identity and provenance.
    pub model: ModelSection,
    /// The ONNX graph's contract.
    pub onnx: OnnxSection,
    /// The tokenizer file.
    pub tokenizer: TokenizerSection,
    /// SHA-256 (hex) of each file, by file name.
    pub files: std::collections::BTreeMap<String, String>,
    /// Measured numbers, free-form (bits per byte per traffic class, speed).
    #[serde(default)]
    pub measured: Option<toml::Table>,
}

/// `[model]` of the manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Short name.
    pub name: String,
    /// One line on what it is and where it came from.
    pub description: String,
    /// Licence of the weights.
    pub license: String,
    /// What the model was trained on.
    pub training_data: String,
    /// Rows of the logits.
    pub vocab_size: usize,
    /// Longest context the model was trained for, in tokens.
    pub context_length: u32,
    /// The token every context starts with.
    pub bos_token_id: u32,
}

/// `[onnx]` of the manifest: the decoder-with-past contract.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxSection {
    /// Graph file name.
    pub file: String,
    /// Transformer layers (pairs of past/present tensors).
    pub layers: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Size of each head.
    pub head_dim: usize,
    /// Input `i64[B,S]`.
    pub input_ids: String,
    /// Input `i64[B,S]`.
    pub position_ids: String,
    /// Input `i64[B,P+S]`.
    pub attention_mask: String,
    /// Inputs `f32[B,kv_heads,P,head_dim]`, `{i}` is the layer.
    pub past_key: String,
    /// Inputs `f32[B,kv_heads,P,head_dim]`.
    pub past_value: String,
    /// Output `f32[B,S,V]`.
    pub logits: String,
    /// Outputs `f32[B,kv_heads,P+S,head_dim]`.
    pub present_key: String,
    /// Outputs `f32[B,kv_heads,P+S,head_dim]`.
    pub present_value: String,
}

/// `[tokenizer]` of the manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizerSection {
    /// Tokenizer file name (Hugging Face `tokenizer.json`).
    pub file: String,
}

/// A located, validated model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The directory.
    pub path: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// The model id: SHA-256 of the graph's hash followed by the tokenizer's.
    pub id: ModelId,
}

impl ModelDir {
    /// Reads the manifest and checks every file against its recorded hash.
    pub fn open(path: &Path) -> Result<Self> {
        let mpath = path.join("manifest.toml");
        let text = std::fs::read_to_string(&mpath).map_err(|source| Error::Io {
            path: mpath.clone(),
            source,
            hint: MODEL_HINT,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| Error::Manifest {
            path: mpath.clone(),
            why: e.to_string(),
        })?;
        let bad = |why: String| Error::Manifest {
            path: mpath.clone(),
            why,
        };
        if manifest.model.vocab_size == 0 || manifest.model.vocab_size > llmpack_codec::MAX_VOCAB {
            return Err(bad(format!(
                "vocab_size {} out of range",
                manifest.model.vocab_size
            )));
        }
        let mut id = Sha256::new();
        for file in [&manifest.onnx.file, &manifest.tokenizer.file] {
            let want = manifest
                .files
                .get(file.as_str())
                .ok_or_else(|| bad(format!("[files] has no hash for {file}")))?;
            let got = sha256_file(&path.join(file))?;
            if !got.eq_ignore_ascii_case(want) {
                return Err(bad(format!(
                    "{file} has SHA-256 {got}, the manifest says {want}; the directory is damaged or mixed up (rebuild it with scripts/setup.sh)"
                )));
            }
            id.update(hex::decode(&got).expect("we formatted it"));
        }
        Ok(ModelDir {
            path: path.to_path_buf(),
            id: ModelId(id.finalize().into()),
            manifest,
        })
    }

    /// Path of the ONNX graph.
    pub fn onnx_path(&self) -> PathBuf {
        self.path.join(&self.manifest.onnx.file)
    }

    /// Path of the tokenizer.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.path.join(&self.manifest.tokenizer.file)
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
        hint: MODEL_HINT,
    })?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
            hint: "",
        })?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Finds `rel` (a path inside the project, like `models/smollm2-135m`) in the
/// current directory or its ancestors, then beside the running executable or
/// its ancestors (so an installed `target/release/llmpack` finds the
/// project's caches).
pub fn find_in_project(rel: &str) -> Option<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    roots.into_iter().map(|r| r.join(rel)).find(|p| p.exists())
}
