//! The recurrent engine (`contract = "state"`): a fixed-size state per lane
//! (one or more tensors), one token per row per call, the next state out.
//!
//! Any set of lanes steps in one call, and nothing grows with the context:
//! this is the shape of every fast published LM compressor (RWKV, gated
//! linear recurrences). States live in one buffer per state tensor, a row
//! per lane; a call reads rows `a..a+n` in place and writes the next states
//! into a scratch buffer, copied back after the call (a few KB per lane,
//! never the model's input and output at once). A prime starts from the
//! zero state and feeds its tokens one call each, at batch 1.

use std::ffi::CString;

use llmpack_codec::{LaneId, PredictError, Request};
use ort::session::Session;

use super::raw::{self, Cpu, In, Out};
use super::slots::Slots;
use super::{Answer, Engine, check_inputs, fail, manifest_error};
use crate::{ModelDir, PredictorStats};

#[derive(Debug)]
pub(crate) struct StateEngine {
    input_ids: CString,
    logits: CString,
    /// `(in, out)` names per state tensor.
    names: Vec<(CString, CString)>,
    /// Per-row dims of each state tensor, from the graph.
    dims: Vec<Vec<i64>>,
    /// Elements per row of each state tensor.
    row: Vec<usize>,
    vocab: usize,
    /// `[rows, ..dims]` per state tensor.
    bufs: Vec<Vec<f32>>,
    scratch: Vec<Vec<f32>>,
    slots: Slots,
    logits_buf: Vec<f32>,
    cpu: Cpu,
}

impl StateEngine {
    pub(crate) fn new(dir: &ModelDir, session: &Session) -> crate::Result<StateEngine> {
        let o = &dir.manifest.onnx;
        let bad = manifest_error(dir);
        let c = |s: &str| raw::cname(s).map_err(&bad);
        let mut names = Vec::new();
        let mut dims = Vec::new();
        let mut row = Vec::new();
        for i in 0..o.states.unwrap_or(0) {
            let at = |pat: &Option<String>| {
                pat.as_deref()
                    .unwrap_or_default()
                    .replace("{i}", &i.to_string())
            };
            let (sin, sout) = (at(&o.state_in), at(&o.state_out));
            let input = session
                .inputs()
                .iter()
                .find(|x| x.name() == sin)
                .ok_or_else(|| bad(format!("the graph has no input `{sin}`")))?;
            let shape = input
                .dtype()
                .tensor_shape()
                .ok_or_else(|| bad(format!("`{sin}` is not a tensor")))?;
            let d: Vec<i64> = shape.iter().skip(1).copied().collect();
            if shape.is_empty() || d.iter().any(|&x| x <= 0) {
                return Err(bad(format!(
                    "`{sin}` must be [batch, fixed dims...], the graph says {:?}",
                    &shape[..]
                )));
            }
            let n = usize::try_from(d.iter().product::<i64>())
                .map_err(|_| bad(format!("`{sin}` is too large")))?;
            row.push(n);
            dims.push(d);
            names.push((c(&sin)?, c(&sout)?));
        }
        check_inputs(session, dir, [o.input_ids.as_str()])?;
        let n = names.len();
        Ok(StateEngine {
            input_ids: c(&o.input_ids)?,
            logits: c(&o.logits)?,
            names,
            dims,
            row,
            vocab: dir.manifest.model.vocab_size,
            bufs: vec![Vec::new(); n],
            scratch: vec![Vec::new(); n],
            slots: Slots::default(),
            logits_buf: Vec::new(),
            cpu: Cpu::new().map_err(crate::Error::Runtime)?,
        })
    }

    fn fit_rows(&mut self) {
        let rows = self.slots.rows();
        for (b, &r) in self.bufs.iter_mut().zip(&self.row) {
            b.resize(rows * r, 0.0);
        }
    }

    fn swap_rows(&mut self, x: usize, y: usize) {
        let (lo, hi) = (x.min(y), x.max(y));
        for (b, &r) in self.bufs.iter_mut().zip(&self.row) {
            let (a, rest) = b.split_at_mut(hi * r);
            a[lo * r..(lo + 1) * r].swap_with_slice(&mut rest[..r]);
        }
    }

    /// One call on rows `first..first + n`, one token each; the states of
    /// those rows advance.
    fn run(
        &mut self,
        session: &mut Session,
        first: usize,
        tokens: &[i64],
        stats: &mut PredictorStats,
    ) -> Result<(), PredictError> {
        let n = tokens.len();
        let ids_shape = [n as i64, 1];
        let logits_shape = [n as i64, 1, self.vocab as i64];
        self.logits_buf.resize(n * self.vocab, 0.0);
        let shapes: Vec<Vec<i64>> = self
            .dims
            .iter()
            .map(|d| std::iter::once(n as i64).chain(d.iter().copied()).collect())
            .collect();
        for (s, &r) in self.scratch.iter_mut().zip(&self.row) {
            s.resize(n * r, 0.0);
        }
        let mut inputs = vec![(self.input_ids.as_c_str(), &ids_shape[..], In::I64(tokens))];
        for (((name, _), b), (&r, shape)) in self
            .names
            .iter()
            .zip(&self.bufs)
            .zip(self.row.iter().zip(&shapes))
        {
            inputs.push((
                name.as_c_str(),
                shape,
                In::F32(&b[first * r..(first + n) * r]),
            ));
        }
        let mut outputs = vec![Out {
            name: &self.logits,
            shape: &logits_shape,
            data: &mut self.logits_buf,
        }];
        for (((_, name), s), shape) in self.names.iter().zip(self.scratch.iter_mut()).zip(&shapes) {
            outputs.push(Out {
                name,
                shape,
                data: s,
            });
        }
        let t0 = std::time::Instant::now();
        let r = raw::run(session, &self.cpu, &inputs, &mut [], &mut outputs);
        stats.model_seconds += t0.elapsed().as_secs_f64();
        stats.calls += 1;
        r.map_err(fail)?;
        for ((b, s), &r) in self.bufs.iter_mut().zip(&self.scratch).zip(&self.row) {
            b[first * r..(first + n) * r].copy_from_slice(s);
        }
        Ok(())
    }
}

impl Engine for StateEngine {
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
                    if tokens.is_empty() {
                        return Err(fail("prime with no tokens"));
                    }
                    let r = self.slots.assign(*lane);
                    self.fit_rows();
                    for (b, &n) in self.bufs.iter_mut().zip(&self.row) {
                        b[r * n..(r + 1) * n].fill(0.0);
                    }
                    for &t in tokens {
                        self.run(session, r, &[i64::from(t)], stats)?;
                    }
                    stats.primes += 1;
                    stats.prime_tokens += tokens.len() as u64;
                    answer(i, &self.logits_buf[..v]);
                }
                Request::Step { token } => {
                    if self.slots.get(*lane).is_none() {
                        return Err(fail(format!("step on lane {lane} that was never primed")));
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
        let before = stats.model_seconds;
        self.run(session, rows.first, &rows.tokens, stats)?;
        stats.step_calls += 1;
        stats.step_seconds += stats.model_seconds - before;
        stats.step_rows += steps.len() as u64;
        rows.answer(&self.logits_buf, v, answer);
        Ok(())
    }

    fn release(&mut self, lane: LaneId) {
        if self.slots.get(lane).is_some() {
            self.slots.release(lane);
            self.fit_rows();
        }
    }

    fn live_lanes(&self) -> usize {
        self.slots.lanes()
    }

    fn bytes_per_lane(&self) -> Option<usize> {
        Some(self.row.iter().sum::<usize>() * 4)
    }
}
