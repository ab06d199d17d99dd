//! The ONNX Runtime predictor: KV caches per lane, batched one-token steps.
//!
//! Bit-exactness rests on two facts, measured on this runtime and checked by
//! tests in `integration-tests`: a row of a batched step computes the same
//! bits as the same context stepped alone, provided every row has the same
//! past length (no padding); and the same call with the same shapes gives
//! the same bits every time. So lanes are batched only with lanes of equal
//! past length, never padded, and primes always run one lane at a time.
//!
//! Lanes that step together share one set of KV tensors (a *group*), which
//! the next step takes as its past without copying. When the set of lanes
//! stepping at a past length changes, their rows are gathered into a new
//! group (one copy of their caches).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use llmpack_codec::{LaneId, PredictError, Predictor, Request};
use ort::session::Session;
use ort::value::{DynValue, Tensor};

use crate::{ModelDir, Result};

/// Counters of the predictor's work.
#[derive(Debug, Clone, Copy, Default)]
pub struct PredictorStats {
    /// Model calls.
    pub calls: u64,
    /// Step rows computed (sum of batch sizes of step calls).
    pub step_rows: u64,
    /// Prime calls.
    pub primes: u64,
    /// Tokens run in primes.
    pub prime_tokens: u64,
    /// Groups built by gathering rows.
    pub gathers: u64,
    /// Seconds spent inside the runtime.
    pub model_seconds: f64,
}

#[derive(Debug)]
struct Names {
    input_ids: String,
    position_ids: String,
    attention_mask: String,
    past: Vec<String>,
    present: Vec<String>,
    logits: String,
}

/// KV caches of lanes that step together, rows in `rows` order.
#[derive(Debug)]
struct Group {
    rows: Vec<Option<LaneId>>,
    past_len: usize,
    /// `2 * layers` tensors `[rows, kv_heads, past_len, head_dim]`: key and value per layer.
    kv: Vec<DynValue>,
}

/// Answers coding lanes' requests with an ONNX decoder-with-past model.
#[derive(Debug)]
pub struct OnnxPredictor {
    session: Session,
    names: Names,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    groups: Vec<Option<Group>>,
    lanes: HashMap<LaneId, (usize, usize)>,
    stats: PredictorStats,
}

fn fail(e: impl std::fmt::Display) -> PredictError {
    PredictError(e.to_string())
}

impl OnnxPredictor {
    /// Loads the model's graph with `threads` intra-op threads. Call
    /// [`crate::init_runtime`] first.
    pub fn load(dir: &ModelDir, threads: usize) -> Result<Self> {
        let env = crate::runtime::environment()?;
        let o = &dir.manifest.onnx;
        let session = Session::builder(&env)?
            .with_intra_threads(threads)
            .map_err(ort::Error::from)?
            .with_inter_threads(1)
            .map_err(ort::Error::from)?
            .commit_from_file(dir.onnx_path())?;
        let layer = |pat: &str, i: usize| pat.replace("{i}", &i.to_string());
        let mut past = Vec::new();
        let mut present = Vec::new();
        for i in 0..o.layers {
            past.push(layer(&o.past_key, i));
            past.push(layer(&o.past_value, i));
            present.push(layer(&o.present_key, i));
            present.push(layer(&o.present_value, i));
        }
        let names = Names {
            input_ids: o.input_ids.clone(),
            position_ids: o.position_ids.clone(),
            attention_mask: o.attention_mask.clone(),
            past,
            present,
            logits: o.logits.clone(),
        };
        for n in [&names.input_ids, &names.position_ids, &names.attention_mask]
            .into_iter()
            .chain(&names.past)
        {
            if !session.inputs().iter().any(|i| i.name() == n) {
                return Err(crate::Error::Manifest {
                    path: dir.path.join("manifest.toml"),
                    why: format!("the graph has no input `{n}`"),
                });
            }
        }
        Ok(OnnxPredictor {
            session,
            names,
            kv_heads: o.kv_heads,
            head_dim: o.head_dim,
            vocab: dir.manifest.model.vocab_size,
            groups: Vec::new(),
            lanes: HashMap::new(),
            stats: PredictorStats::default(),
        })
    }

    /// Work counters so far.
    pub fn stats(&self) -> PredictorStats {
        self.stats
    }

    /// Lanes currently holding a cache.
    pub fn live_lanes(&self) -> usize {
        self.lanes.len()
    }

    /// Removes `lane` from its group, dropping the group when it empties.
    fn detach(&mut self, lane: LaneId) {
        if let Some((g, r)) = self.lanes.remove(&lane) {
            let group = self.groups[g]
                .as_mut()
                .expect("lane points at a live group");
            group.rows[r] = None;
            if group.rows.iter().all(Option::is_none) {
                self.groups[g] = None;
            }
        }
    }

    fn insert_group(&mut self, group: Group) -> usize {
        let slot = match self.groups.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.groups.push(None);
                self.groups.len() - 1
            }
        };
        for (r, lane) in group.rows.iter().enumerate() {
            if let Some(l) = lane {
                self.lanes.insert(*l, (slot, r));
            }
        }
        self.groups[slot] = Some(group);
        slot
    }

    /// Runs the graph on `tokens` (`rows` rows of equal length) after `past`.
    /// Returns the present tensors and calls `answer(row, logits)` with each
    /// row's logits after its last token.
    fn run(
        &mut self,
        rows: usize,
        tokens: &[i64],
        past_len: usize,
        past: Vec<DynValue>,
        answer: &mut dyn FnMut(usize, &[f32]),
    ) -> Result<Vec<DynValue>, PredictError> {
        let seq = tokens.len() / rows;
        let total = past_len + seq;
        let positions: Vec<i64> = (0..rows)
            .flat_map(|_| (past_len..total).map(|p| p as i64))
            .collect();
        let mut inputs: Vec<(String, ort::session::SessionInputValue<'_>)> = vec![
            (
                self.names.input_ids.clone(),
                Tensor::from_array(([rows, seq], tokens.to_vec()))
                    .map_err(fail)?
                    .into(),
            ),
            (
                self.names.position_ids.clone(),
                Tensor::from_array(([rows, seq], positions))
                    .map_err(fail)?
                    .into(),
            ),
            (
                self.names.attention_mask.clone(),
                Tensor::from_array(([rows, total], vec![1i64; rows * total]))
                    .map_err(fail)?
                    .into(),
            ),
        ];
        if past.is_empty() {
            for name in &self.names.past {
                let empty = Tensor::from_array((
                    [rows, self.kv_heads, 0, self.head_dim],
                    Vec::<f32>::new(),
                ))
                .map_err(fail)?;
                inputs.push((name.clone(), empty.into()));
            }
        } else {
            for (name, v) in self.names.past.iter().zip(past) {
                inputs.push((name.clone(), v.into()));
            }
        }
        let t0 = Instant::now();
        let mut outputs = self.session.run(inputs).map_err(fail)?;
        let mut present = Vec::with_capacity(self.names.present.len());
        for name in &self.names.present {
            present.push(
                outputs
                    .remove(name)
                    .ok_or_else(|| fail(format!("model gave no output `{name}`")))?,
            );
        }
        let logits = outputs
            .get(&self.names.logits)
            .ok_or_else(|| fail(format!("model gave no output `{}`", self.names.logits)))?;
        let (shape, data) = logits.try_extract_tensor::<f32>().map_err(fail)?;
        let v = self.vocab;
        if shape.len() != 3
            || usize::try_from(shape[2]).ok() != Some(v)
            || data.len() != rows * seq * v
        {
            return Err(fail(format!(
                "logits have shape {shape:?}, expected [{rows}, {seq}, {v}] (is vocab_size in the manifest right?)"
            )));
        }
        for r in 0..rows {
            let last = (r * seq + seq - 1) * v;
            answer(r, &data[last..last + v]);
        }
        drop(outputs);
        self.stats.calls += 1;
        self.stats.model_seconds += t0.elapsed().as_secs_f64();
        Ok(present)
    }

    /// Builds a group of `lanes` (all with past length `past_len`) by copying
    /// their rows out of the groups that hold them.
    fn gather(&mut self, lanes: &[LaneId], past_len: usize) -> Result<usize, PredictError> {
        let row_len = self.kv_heads * past_len * self.head_dim;
        let n = lanes.len();
        let mut kv = Vec::with_capacity(self.names.past.len());
        for j in 0..self.names.past.len() {
            let mut buf = Vec::with_capacity(n * row_len);
            for lane in lanes {
                let (g, r) = self.lanes[lane];
                let group = self.groups[g].as_ref().expect("live group");
                let (_, data) = group.kv[j].try_extract_tensor::<f32>().map_err(fail)?;
                buf.extend_from_slice(&data[r * row_len..(r + 1) * row_len]);
            }
            let t = Tensor::from_array(([n, self.kv_heads, past_len, self.head_dim], buf))
                .map_err(fail)?;
            kv.push(t.into_dyn());
        }
        for lane in lanes {
            self.detach(*lane);
        }
        self.stats.gathers += 1;
        Ok(self.insert_group(Group {
            rows: lanes.iter().map(|l| Some(*l)).collect(),
            past_len,
            kv,
        }))
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
        // Primes: one lane at a time, each into a group of its own.
        let mut steps: BTreeMap<usize, Vec<(usize, LaneId, u32)>> = BTreeMap::new();
        for (i, (lane, req)) in batch.iter().enumerate() {
            match req {
                Request::Prime { tokens } => {
                    if tokens.is_empty() {
                        return Err(fail("prime with no tokens"));
                    }
                    self.detach(*lane);
                    let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
                    let present = self.run(1, &ids, 0, Vec::new(), &mut |_, l| answer(i, l))?;
                    self.stats.primes += 1;
                    self.stats.prime_tokens += tokens.len() as u64;
                    self.insert_group(Group {
                        rows: vec![Some(*lane)],
                        past_len: tokens.len(),
                        kv: present,
                    });
                }
                Request::Step { token } => {
                    let &(g, _) = self.lanes.get(lane).ok_or_else(|| {
                        fail(format!("step on lane {lane} that was never primed"))
                    })?;
                    let p = self.groups[g].as_ref().expect("live group").past_len;
                    steps.entry(p).or_default().push((i, *lane, *token));
                }
            }
        }
        // Steps: one call per past length.
        for (past_len, items) in steps {
            let lanes: Vec<LaneId> = items.iter().map(|x| x.1).collect();
            let (g0, _) = self.lanes[&lanes[0]];
            let in_place = {
                let group = self.groups[g0].as_ref().expect("live group");
                group.rows.len() == lanes.len() && lanes.iter().all(|l| self.lanes[l].0 == g0)
            };
            let g = if in_place {
                g0
            } else {
                self.gather(&lanes, past_len)?
            };
            let group = self.groups[g].take().expect("live group");
            // Tokens in row order; remember which request each row answers.
            let mut tokens = vec![0i64; group.rows.len()];
            let mut request_of_row = vec![0usize; group.rows.len()];
            for &(i, lane, token) in &items {
                let r = self.lanes[&lane].1;
                tokens[r] = i64::from(token);
                request_of_row[r] = i;
            }
            let rows = group.rows.len();
            let present = self.run(rows, &tokens, past_len, group.kv, &mut |r, l| {
                answer(request_of_row[r], l)
            })?;
            self.stats.step_rows += rows as u64;
            self.groups[g] = Some(Group {
                rows: group.rows,
                past_len: past_len + 1,
                kv: present,
            });
        }
        Ok(())
    }

    fn release(&mut self, lane: LaneId) {
        self.detach(lane);
    }
}
