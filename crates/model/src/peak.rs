//! What the machine can do and what a model asks of it: the fp32 matmul
//! peak measured through ONNX Runtime, and a model's FLOPs per token.

use std::time::{Duration, Instant};

use ort::session::Session;
use ort::value::Tensor;

use crate::{ModelDir, Result};

/// A graph with one `MatMul` of two inputs (`a` `[m,k]`, `b` `[k,n]`, out
/// `c`), written by `tools/make_fixtures.py`.
const MATMUL_ONNX: &[u8] = include_bytes!("../assets/matmul.onnx");

/// The best fp32 matmul rate, in GFLOP/s, that ONNX Runtime reaches on this
/// machine (on the process's device, see [`crate::start_runtime`]) with
/// `threads` intra-op threads: square products of 256, 512 and
/// 1024, each run for about `per_size`, the best of them. The model's steps
/// go through the same runtime and kernels, so a step's share of this is
/// how much of the machine the model uses.
pub fn matmul_peak(threads: usize, per_size: Duration) -> Result<f64> {
    let mut session: Session = crate::runtime::builder(threads)?.commit_from_memory(MATMUL_ONNX)?;
    let mut best = 0.0f64;
    for n in [256usize, 512, 1024] {
        let data: Vec<f32> = (0..n * n)
            .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
            .collect();
        let a = Tensor::from_array(([n, n], data.clone()))?;
        let b = Tensor::from_array(([n, n], data))?;
        // One untimed run: allocations and kernel selection.
        session.run(ort::inputs!["a" => &a, "b" => &b])?;
        let (mut runs, t0) = (0u32, Instant::now());
        while runs < 3 || t0.elapsed() < per_size {
            session.run(ort::inputs!["a" => &a, "b" => &b])?;
            runs += 1;
        }
        let flops = 2.0 * (n as f64).powi(3) * f64::from(runs);
        best = best.max(flops / t0.elapsed().as_secs_f64() / 1e9);
    }
    Ok(best)
}

/// Runs a 2x2 product on the GPU through the CUDA execution provider of
/// `env`'s library and checks its result: whether that provider works here.
pub(crate) fn check_cuda(env: &ort::environment::Environment) -> Result<()> {
    let mut session = Session::builder(env)?
        .with_execution_providers([crate::runtime::cuda_provider()])
        .map_err(ort::Error::from)?
        .commit_from_memory(MATMUL_ONNX)?;
    let a = Tensor::from_array(([2usize, 2], vec![1.0f32, 2.0, 3.0, 4.0]))?;
    let out = session.run(ort::inputs!["a" => &a, "b" => &a])?;
    let (_, c) = out["c"].try_extract_tensor::<f32>()?;
    if c != [7.0, 10.0, 15.0, 22.0] {
        return Err(crate::Error::Runtime(format!(
            "a 2x2 product on the GPU gave {c:?}, not [7, 10, 15, 22]"
        )));
    }
    Ok(())
}

/// FLOPs one token costs the model at a context of `context` tokens: the
/// weight matmuls (`2` per multiply-add) plus attention over the context
/// (scores and the weighted sum: `4 * layers * heads * head_dim * context`).
///
/// The shape comes from the graph's metadata where the project's tools
/// wrote it (`layers`, `dim`, `heads`, `kv_heads`, `head_dim`, `ffn`,
/// `vocab`); for other graphs, the weights are estimated from the file size
/// (fp32: 4 bytes a weight) and attention from the manifest's layers and
/// heads. [`FlopsPerToken::exact`] says which.
pub fn flops_per_token(dir: &ModelDir, session_meta: &ShapeMeta, context: f64) -> FlopsPerToken {
    let o = &dir.manifest.onnx;
    if let Some(s) = session_meta.0 {
        let [layers, dim, heads, kv_heads, head_dim, ffn, vocab] = s.map(|x| x as f64);
        let per_layer = dim * (heads + 2.0 * kv_heads) * head_dim // q, k, v
            + heads * head_dim * dim // o
            + 3.0 * dim * ffn; // gate, up, down
        let weights = 2.0 * (layers * per_layer + dim * vocab);
        let attention = 4.0 * layers * heads * head_dim * context;
        return FlopsPerToken {
            weights,
            attention,
            exact: true,
        };
    }
    let bytes = std::fs::metadata(dir.onnx_path()).map_or(0, |m| m.len()) as f64;
    let (layers, heads, head_dim) = (
        o.layers.unwrap_or(0) as f64,
        o.kv_heads.unwrap_or(0) as f64,
        o.head_dim.unwrap_or(0) as f64,
    );
    FlopsPerToken {
        weights: 2.0 * bytes / 4.0,
        attention: 4.0 * layers * heads * head_dim * context,
        exact: false,
    }
}

/// A model's cost per token, in FLOPs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlopsPerToken {
    /// The weight matmuls.
    pub weights: f64,
    /// Attention over the context.
    pub attention: f64,
    /// Whether the shape came from the graph's metadata (else estimated).
    pub exact: bool,
}

impl FlopsPerToken {
    /// Both parts.
    pub fn total(&self) -> f64 {
        self.weights + self.attention
    }
}

/// The shape fields of a graph's metadata, if all are there:
/// `[layers, dim, heads, kv_heads, head_dim, ffn, vocab]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShapeMeta(pub Option<[u64; 7]>);

impl ShapeMeta {
    pub(crate) fn read(session: &Session) -> ShapeMeta {
        let Ok(meta) = session.metadata() else {
            return ShapeMeta(None);
        };
        let mut out = [0u64; 7];
        for (slot, key) in out.iter_mut().zip([
            "layers", "dim", "heads", "kv_heads", "head_dim", "ffn", "vocab",
        ]) {
            match meta.custom(key).and_then(|v| v.parse().ok()) {
                Some(v) => *slot = v,
                None => return ShapeMeta(None),
            }
        }
        ShapeMeta(Some(out))
    }
}
