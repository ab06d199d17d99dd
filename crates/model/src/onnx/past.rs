//! The decoder-with-past engine (`contract = "past"`, what `optimum`
//! exports): KV caches per group of lanes, batched one-token steps.
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

use llmpack_codec::{LaneId, PredictError, Request};
use ort::session::Session;
use ort::value::{DynValue, Tensor};

use super::{Answer, Engine, check_inputs, fail};
use crate::{ModelDir, PredictorStats, Result};

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

#[derive(Debug)]
pub(crate) struct PastEngine {
    names: Names,
    kv_heads: usize,
    head_dim: usize,
    vocab: usize,
    groups: Vec<Option<Group>>,
    lanes: HashMap<LaneId, (usize, usize)>,
}

impl PastEngine {
    pub(crate) fn new(dir: &ModelDir, session: &Session) -> Result<Self> {
        let o = &dir.manifest.onnx;
        let field = |f: &Option<String>| f.clone().unwrap_or_default();
        let layer = |pat: &Option<String>, i: usize| field(pat).replace("{i}", &i.to_string());
        let mut past = Vec::new();
        let mut present = Vec::new();
        for i in 0..o.layers.unwrap_or(0) {
            past.push(layer(&o.past_key, i));
            past.push(layer(&o.past_value, i));
            present.push(layer(&o.present_key, i));
            present.push(layer(&o.present_value, i));
        }
        let names = Names {
            input_ids: o.input_ids.clone(),
            position_ids: field(&o.position_ids),
            attention_mask: field(&o.attention_mask),
            past,
            present,
            logits: o.logits.clone(),
        };
        check_inputs(
            session,
            dir,
            [&names.input_ids, &names.position_ids, &names.attention_mask]
                .into_iter()
                .chain(&names.past)
                .map(String::as_str),
        )?;
        Ok(PastEngine {
            names,
            kv_heads: o.kv_heads.unwrap_or(1),
            head_dim: o.head_dim.unwrap_or(1),
            vocab: dir.manifest.model.vocab_size,
            groups: Vec::new(),
            lanes: HashMap::new(),
        })
    }

    /// Removes `lane` from its group, dropping the group when it empties.
    fn detach(&mut self, lane: LaneId) {
        if let Some((g, r)) = self.lanes.remove(&lane)
            && let Some(group) = self.groups.get_mut(g).and_then(Option::as_mut)
        {
            group.rows[r] = None;
            if group.rows.iter().all(Option::is_none) {
                self.groups[g] = None;
            }
        }
    }

    /// Forgets every lane of group `g` (its caches were lost to a failed call).
    fn drop_group(&mut self, g: usize) {
        if let Some(group) = self.groups.get_mut(g).and_then(Option::take) {
            for lane in group.rows.into_iter().flatten() {
                self.lanes.remove(&lane);
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
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        session: &mut Session,
        stats: &mut PredictorStats,
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
        let mut outputs = session.run(inputs).map_err(fail)?;
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
        stats.calls += 1;
        stats.model_seconds += t0.elapsed().as_secs_f64();
        Ok(present)
    }

    /// Builds a group of `lanes` (all with past length `past_len`) by copying
    /// their rows out of the groups that hold them.
    fn gather(
        &mut self,
        stats: &mut PredictorStats,
        lanes: &[LaneId],
        past_len: usize,
    ) -> Result<usize, PredictError> {
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
        stats.gathers += 1;
        Ok(self.insert_group(Group {
            rows: lanes.iter().map(|l| Some(*l)).collect(),
            past_len,
            kv,
        }))
    }
}

impl Engine for PastEngine {
    fn predict(
        &mut self,
        session: &mut Session,
        batch: &[(LaneId, Request)],
        answer: Answer<'_>,
        stats: &mut PredictorStats,
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
                    let present =
                        self.run(session, stats, 1, &ids, 0, Vec::new(), &mut |_, l| {
                            answer(i, l)
                        })?;
                    stats.primes += 1;
                    stats.prime_tokens += tokens.len() as u64;
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
                self.gather(stats, &lanes, past_len)?
            };
            let group = self.groups[g].as_ref().expect("live group");
            // Tokens in row order; remember which request each row answers.
            let mut tokens = vec![0i64; group.rows.len()];
            let mut request_of_row = vec![0usize; group.rows.len()];
            for &(i, lane, token) in &items {
                let r = self.lanes[&lane].1;
                tokens[r] = i64::from(token);
                request_of_row[r] = i;
            }
            let rows = group.rows.len();
            // The call takes the caches; a failed call loses them, and the
            // group's lanes are forgotten (their next request must prime).
            let kv = std::mem::take(&mut self.groups[g].as_mut().expect("live group").kv);
            let before = stats.model_seconds;
            let present =
                match self.run(session, stats, rows, &tokens, past_len, kv, &mut |r, l| {
                    answer(request_of_row[r], l)
                }) {
                    Ok(p) => p,
                    Err(e) => {
                        self.drop_group(g);
                        return Err(e);
                    }
                };
            stats.step_calls += 1;
            stats.step_seconds += stats.model_seconds - before;
            stats.step_rows += rows as u64;
            stats.step_context += (rows * (past_len + 1)) as u64;
            let group = self.groups[g].as_mut().expect("live group");
            group.past_len = past_len + 1;
            group.kv = present;
        }
        Ok(())
    }

    fn release(&mut self, lane: LaneId) {
        self.detach(lane);
    }

    fn live_lanes(&self) -> usize {
        self.lanes.len()
    }

    fn bytes_per_lane(&self) -> Option<usize> {
        None
    }
}
