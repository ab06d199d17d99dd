//! The in-place KV engine (`contract = "gqa"`): one preallocated buffer per
//! layer and key/value, a row of `kv_len` positions per lane, written in
//! place by the graph's `GroupQueryAttention` nodes.
//!
//! Any set of lanes steps in one call, whatever their context lengths: each
//! row passes its own length (`seqlens_k`), attends over its own positions
//! only, and computes the same bits whichever rows share the call (checked
//! by the tests in `integration-tests/tests/engine.rs`). Nothing is copied
//! per step; rows move only when a call's lanes are not yet contiguous
//! ([`Slots::arrange`]), and then only their filled positions.
//!
//! Primes run one lane at a time (batch 1), on both ends alike.

use std::ffi::CString;

use llmpack_codec::{LaneId, PredictError, Request};
use ort::session::Session;

use super::raw::{self, Cpu, In, InOut, Out};
use super::slots::Slots;
use super::{Answer, Engine, check_inputs, fail, manifest_error};
use crate::{ModelDir, PredictorStats};

#[derive(Debug)]
pub(crate) struct KvEngine {
    input_ids: CString,
    seqlens_k: CString,
    total: CString,
    logits: CString,
    /// `(past, present)` names, key then value per layer.
    kv_names: Vec<(CString, CString)>,
    kv_heads: usize,
    head_dim: usize,
    /// Positions per row.
    kv_len: usize,
    vocab: usize,
    /// One buffer per `kv_names` entry: `[rows, kv_heads, kv_len, head_dim]`.
    bufs: Vec<Vec<f32>>,
    /// Filled positions per row.
    len: Vec<usize>,
    slots: Slots,
    logits_buf: Vec<f32>,
    cpu: Cpu,
}

impl KvEngine {
    pub(crate) fn new(dir: &ModelDir, session: &Session) -> crate::Result<KvEngine> {
        let o = &dir.manifest.onnx;
        let bad = manifest_error(dir);
        let c = |s: &str| raw::cname(s).map_err(&bad);
        let layer = |pat: &Option<String>, i: usize| {
            c(&pat
                .as_deref()
                .unwrap_or_default()
                .replace("{i}", &i.to_string()))
        };
        let mut kv_names = Vec::new();
        for i in 0..o.layers.unwrap_or(0) {
            kv_names.push((layer(&o.past_key, i)?, layer(&o.present_key, i)?));
            kv_names.push((layer(&o.past_value, i)?, layer(&o.present_value, i)?));
        }
        let names = |s: &Option<String>| s.clone().unwrap_or_default();
        let n_kv = kv_names.len();
        let e = KvEngine {
            input_ids: c(&o.input_ids)?,
            seqlens_k: c(&names(&o.seqlens_k))?,
            total: c(&names(&o.total_sequence_length))?,
            logits: c(&o.logits)?,
            kv_names,
            kv_heads: o.kv_heads.unwrap_or(1),
            head_dim: o.head_dim.unwrap_or(1),
            kv_len: o.kv_len.unwrap_or(0) as usize,
            vocab: dir.manifest.model.vocab_size,
            bufs: vec![Vec::new(); n_kv],
            len: Vec::new(),
            slots: Slots::default(),
            logits_buf: Vec::new(),
            cpu: Cpu::new().map_err(crate::Error::Runtime)?,
        };
        let wanted = [&e.input_ids, &e.seqlens_k, &e.total]
            .into_iter()
            .chain(e.kv_names.iter().map(|(p, _)| p))
            .map(|n| n.to_str().unwrap_or_default());
        check_inputs(session, dir, wanted)?;
        Ok(e)
    }

    fn row_len(&self) -> usize {
        self.kv_heads * self.kv_len * self.head_dim
    }

    /// Grows or shrinks the buffers to the slots' row count.
    fn fit_rows(&mut self) {
        let rows = self.slots.rows();
        let row = self.row_len();
        let n = rows * row;
        for b in &mut self.bufs {
            b.resize(n, 0.0);
            if b.capacity() > 2 * n.max(row) {
                b.shrink_to_fit();
            }
        }
        self.len.resize(rows, 0);
    }

    /// Swaps rows `x` and `y` of every buffer (their filled positions only).
    fn swap_rows(&mut self, x: usize, y: usize) {
        let (lo, hi) = (x.min(y), x.max(y));
        let filled = self.len[x].max(self.len[y]) * self.head_dim;
        let row = self.row_len();
        let head = self.kv_len * self.head_dim;
        for b in &mut self.bufs {
            let (a, rest) = b.split_at_mut(hi * row);
            let a = &mut a[lo * row..(lo + 1) * row];
            let c = &mut rest[..row];
            for h in 0..self.kv_heads {
                a[h * head..h * head + filled].swap_with_slice(&mut c[h * head..h * head + filled]);
            }
        }
        self.len.swap(x, y);
    }

    /// Runs rows `first..first + rows` on `tokens` (`seq` per row) with the
    /// given per-row past lengths.
    fn run(
        &mut self,
        session: &mut Session,
        first: usize,
        seq: usize,
        tokens: &[i64],
        past: &[usize],
        stats: &mut PredictorStats,
    ) -> Result<(), PredictError> {
        let rows = past.len();
        let to_i32 = |x: usize| i32::try_from(x).map_err(|_| fail("context length overflows i32"));
        let seqlens: Vec<i32> = past
            .iter()
            .map(|&p| to_i32(p + seq - 1))
            .collect::<Result<_, _>>()?;
        let total = [to_i32(past.iter().max().copied().unwrap_or(0) + seq)?];
        let ids_shape = [rows as i64, seq as i64];
        let kv_shape = [
            rows as i64,
            self.kv_heads as i64,
            self.kv_len as i64,
            self.head_dim as i64,
        ];
        let logits_shape = [rows as i64, 1, self.vocab as i64];
        self.logits_buf.resize(rows * self.vocab, 0.0);
        let row = self.row_len();
        let span = first * row..(first + rows) * row;
        let mut inouts: Vec<InOut<'_>> = self
            .kv_names
            .iter()
            .zip(self.bufs.iter_mut())
            .map(|((p, q), b)| InOut {
                input: p,
                output: q,
                shape: &kv_shape,
                data: &mut b[span.clone()],
            })
            .collect();
        let inputs = [
            (self.input_ids.as_c_str(), &ids_shape[..], In::I64(tokens)),
            (
                self.seqlens_k.as_c_str(),
                &ids_shape[..1],
                In::I32(&seqlens),
            ),
            (self.total.as_c_str(), &[][..], In::I32(&total)),
        ];
        let mut outputs = [Out {
            name: &self.logits,
            shape: &logits_shape,
            data: &mut self.logits_buf,
        }];
        let t0 = std::time::Instant::now();
        let r = raw::run(session, &self.cpu, &inputs, &mut inouts, &mut outputs);
        stats.model_seconds += t0.elapsed().as_secs_f64();
        stats.calls += 1;
        r.map_err(fail)
    }
}

impl Engine for KvEngine {
    fn predict(
        &mut self,
        session: &mut Session,
        batch: &[(LaneId, Request)],
        answer: Answer<'_>,
        stats: &mut PredictorStats,
    ) -> Result<(), PredictError> {
        let v = self.vocab;
        let mut steps: Vec<(usize, LaneId, u32)> = Vec::new();
        for (i, (lane, req)) in batch.iter().enumerate() {
            match req {
                Request::Prime { tokens } => {
                    if tokens.is_empty() || tokens.len() > self.kv_len {
                        return Err(fail(format!(
                            "prime of {} tokens; the model's KV buffer holds 1 to {}",
                            tokens.len(),
                            self.kv_len
                        )));
                    }
                    let r = self.slots.assign(*lane);
                    self.fit_rows();
                    self.len[r] = 0;
                    let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
                    self.run(session, r, ids.len(), &ids, &[0], stats)?;
                    self.len[r] = ids.len();
                    stats.primes += 1;
                    stats.prime_tokens += ids.len() as u64;
                    answer(i, &self.logits_buf[..v]);
                }
                Request::Step { token } => {
                    let r = self.slots.get(*lane).ok_or_else(|| {
                        fail(format!("step on lane {lane} that was never primed"))
                    })?;
                    if self.len[r] >= self.kv_len {
                        return Err(fail(format!(
                            "step on lane {lane} past the model's KV buffer of {} positions",
                            self.kv_len
                        )));
                    }
                    steps.push((i, *lane, *token));
                }
            }
        }
        if steps.is_empty() {
            return Ok(());
        }
        let mut swaps = Vec::new();
        let rows = self.slots.lay_out(&steps, |x, y| swaps.push((x, y)));
        for (x, y) in swaps {
            self.swap_rows(x, y);
            stats.gathers += 1;
        }
        let (first, n) = (rows.first, steps.len());
        let past: Vec<usize> = self.len[first..first + n].to_vec();
        let before = stats.model_seconds;
        self.run(session, first, 1, &rows.tokens, &past, stats)?;
        stats.step_calls += 1;
        stats.step_seconds += stats.model_seconds - before;
        for l in &mut self.len[first..first + n] {
            *l += 1;
        }
        stats.step_rows += n as u64;
        stats.step_context += past.iter().sum::<usize>() as u64 + n as u64;
        rows.answer(&self.logits_buf, v, answer);
        Ok(())
    }

    fn release(&mut self, lane: LaneId) {
        if let Some(r) = self.slots.get(lane) {
            self.len[r] = 0;
            self.slots.release(lane);
            self.fit_rows();
        }
    }

    fn live_lanes(&self) -> usize {
        self.slots.lanes()
    }

    fn bytes_per_lane(&self) -> Option<usize> {
        Some(self.row_len() * self.kv_names.len() * 4)
    }
}
