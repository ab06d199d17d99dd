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

/// How a graph keeps a lane's context between calls (`[onnx] contract`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Contract {
    /// Decoder with past, as `optimum` exports causal LMs: the past keys and
    /// values go in and come back one position longer (`present`), with an
    /// attention mask and position ids. Rows of one call must share a past
    /// length, so lanes batch only with lanes of equal context length.
    #[default]
    Past,
    /// A preallocated KV buffer of `kv_len` positions per lane, updated in
    /// place by `com.microsoft.GroupQueryAttention`, with each row's own
    /// length in `seqlens_k`: any set of lanes steps in one call
    /// (`tools/onnx2gqa.py` writes such graphs).
    Gqa,
    /// A recurrent model: one token per row and a fixed-size state per lane
    /// (`states` tensors, `state_in` in, `state_out` out).
    State,
}

/// `[onnx]` of the manifest: the graph's file, contract and tensor names.
/// Which fields are needed depends on `contract`; [`ModelDir::open`] checks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxSection {
    /// Graph file name.
    pub file: String,
    /// How the graph keeps context; `past` when absent.
    #[serde(default)]
    pub contract: Contract,
    /// Input `i64[B,S]` (`S` = 1 under the `state` contract).
    pub input_ids: String,
    /// Output `f32[B,S,V]` (`past`) or `f32[B,1,V]` (`gqa`, `state`: after
    /// each row's last token).
    pub logits: String,
    /// Transformer layers (pairs of past/present tensors); `past`, `gqa`.
    #[serde(default)]
    pub layers: Option<usize>,
    /// Key/value heads; `past`, `gqa`.
    #[serde(default)]
    pub kv_heads: Option<usize>,
    /// Size of each head; `past`, `gqa`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Input `i64[B,S]`; `past`.
    #[serde(default)]
    pub position_ids: Option<String>,
    /// Input `i64[B,P+S]`; `past`.
    #[serde(default)]
    pub attention_mask: Option<String>,
    /// Inputs `f32[B,kv_heads,P,head_dim]` (`past`) or
    /// `f32[B,kv_heads,kv_len,head_dim]` (`gqa`); `{i}` is the layer.
    #[serde(default)]
    pub past_key: Option<String>,
    /// Like `past_key`, for values.
    #[serde(default)]
    pub past_value: Option<String>,
    /// Outputs matching `past_key` (`gqa`: the same buffer, written in place).
    #[serde(default)]
    pub present_key: Option<String>,
    /// Outputs matching `past_value`.
    #[serde(default)]
    pub present_value: Option<String>,
    /// Input `i32[B]`: each row's past length plus its new tokens, minus one; `gqa`.
    #[serde(default)]
    pub seqlens_k: Option<String>,
    /// Input `i32[]`: the longest row's total length; `gqa`.
    #[serde(default)]
    pub total_sequence_length: Option<String>,
    /// Positions in each lane's KV buffer (the longest context); `gqa`.
    #[serde(default)]
    pub kv_len: Option<u32>,
    /// Inputs: each lane's state, `{i}` is the state tensor; `state`.
    #[serde(default)]
    pub state_in: Option<String>,
    /// Outputs: the state after the row's token; `state`.
    #[serde(default)]
    pub state_out: Option<String>,
    /// Number of state tensors; `state`.
    #[serde(default)]
    pub states: Option<usize>,
}

impl OnnxSection {
    /// Checks that the fields `contract` needs are there and sane.
    fn check(&self, context_length: u32) -> Result<(), String> {
        let need = |name: &str, present: bool| {
            if present {
                Ok(())
            } else {
                Err(format!(
                    "[onnx] contract = \"{}\" needs `{name}`",
                    match self.contract {
                        Contract::Past => "past",
                        Contract::Gqa => "gqa",
                        Contract::State => "state",
                    }
                ))
            }
        };
        match self.contract {
            Contract::Past | Contract::Gqa => {
                need("layers", self.layers.is_some_and(|n| n > 0))?;
                need("kv_heads", self.kv_heads.is_some_and(|n| n > 0))?;
                need("head_dim", self.head_dim.is_some_and(|n| n > 0))?;
                need("past_key", self.past_key.is_some())?;
                need("past_value", self.past_value.is_some())?;
                need("present_key", self.present_key.is_some())?;
                need("present_value", self.present_value.is_some())?;
                if self.contract == Contract::Past {
                    need("position_ids", self.position_ids.is_some())?;
                    need("attention_mask", self.attention_mask.is_some())?;
                } else {
                    need("seqlens_k", self.seqlens_k.is_some())?;
                    need(
                        "total_sequence_length",
                        self.total_sequence_length.is_some(),
                    )?;
                    need("kv_len", self.kv_len.is_some())?;
                    let kv_len = self.kv_len.unwrap_or(0);
                    if kv_len < context_length {
                        return Err(format!(
                            "[onnx] kv_len {kv_len} is shorter than [model] context_length {context_length}"
                        ));
                    }
                }
            }
            Contract::State => {
                need("state_in", self.state_in.is_some())?;
                need("state_out", self.state_out.is_some())?;
                need("states", self.states.is_some_and(|n| n > 0))?;
            }
        }
        Ok(())
    }
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
        manifest
            .onnx
            .check(manifest.model.context_length)
            .map_err(&bad)?;
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

    /// The longest context window the graph can hold (`gqa`: its KV
    /// buffer), if it has such a limit.
    pub fn max_window(&self) -> Option<u32> {
        match self.manifest.onnx.contract {
            Contract::Gqa => self.manifest.onnx.kv_len,
            Contract::Past | Contract::State => None,
        }
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
