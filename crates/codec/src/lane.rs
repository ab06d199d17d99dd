//! One lane's model context: which tokens the model has seen, the reset rule,
//! and the distribution for the next token.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::freq::FreqTable;
use crate::matcher::MatchModel;
use crate::predict::{LaneId, Request};

/// The context rule of `lm` coding; part of the format, both ends must agree.
///
/// A lane's context starts as `[start token] + primer`. Every coded token is
/// appended with a one-token step. A step that would make the context longer
/// than `window` tokens instead re-primes it with
/// `[start token] + primer + the last keep tokens` (the new token included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LmParams {
    /// Most tokens the model context may hold.
    pub window: u32,
    /// Tokens carried over when the context is re-primed.
    pub keep: u32,
}

impl Default for LmParams {
    fn default() -> Self {
        // Measured on SmolLM2-135M (see README): past ~1k tokens the gain in
        // bits/byte is small while each step's cost grows with the context.
        LmParams {
            window: 1024,
            keep: 256,
        }
    }
}

impl LmParams {
    /// The default rule fitted to a model trained on `context` tokens: the
    /// window never goes past the trained positions, and keeps at most a
    /// quarter of it.
    pub fn within(context: u32) -> LmParams {
        let d = LmParams::default();
        let window = d.window.min(context);
        LmParams {
            window,
            keep: d.keep.min(window / 4),
        }
    }

    /// Checks the rule leaves room for at least one step after a re-prime
    /// with a primer of `primer_len` tokens.
    pub fn validate(&self, primer_len: usize) -> Result<(), String> {
        let need = u64::from(self.keep) + primer_len as u64 + 2;
        if u64::from(self.window) < need {
            return Err(format!(
                "context window {} too small for keep {} + primer {} tokens",
                self.window, self.keep, primer_len
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing asked yet: the first request primes.
    Fresh,
    /// A request is out; its answer has not come back.
    Waiting,
    /// `table` is the distribution after every token sent so far.
    Answered,
}

#[derive(Debug)]
pub(crate) struct LmLane {
    id: LaneId,
    params: LmParams,
    bos: u32,
    primer: Arc<[u32]>,
    /// Tokens sent to the model, most recent last (trimmed, see `send`).
    history: Vec<u32>,
    /// Tokens fed but not yet sent to the model.
    queue: VecDeque<u32>,
    /// Length of the model's context once the outstanding request is done.
    ctx_len: u32,
    state: State,
    /// Distribution for the next token: the model's, with the match model's
    /// prediction mixed in.
    pub(crate) table: FreqTable,
    matcher: MatchModel,
    pub(crate) requests: u64,
    /// Where the work around the model goes, when asked for.
    pub(crate) profile: Option<Profile>,
}

/// Time spent on the per-token work around the model, kept only when a
/// caller turns it on (`set_profiling`): `llmpack speed` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Profile {
    /// Building frequency tables from logits.
    pub table: std::time::Duration,
    /// The match model: its prediction mixed into the table, and its
    /// bookkeeping of each token.
    pub matcher: std::time::Duration,
    /// The range coder (one symbol per token).
    pub coder: std::time::Duration,
}

impl Profile {
    /// Adds another coder's times.
    pub fn merge(&mut self, o: &Profile) {
        self.table += o.table;
        self.matcher += o.matcher;
        self.coder += o.coder;
    }
}

/// Runs `f`, adding its time to the slot `pick` chooses when profiling.
pub(crate) fn timed<T>(
    profile: &mut Option<Profile>,
    pick: fn(&mut Profile) -> &mut std::time::Duration,
    f: impl FnOnce() -> T,
) -> T {
    match profile {
        None => f(),
        Some(p) => {
            let t0 = std::time::Instant::now();
            let r = f();
            *pick(p) += t0.elapsed();
            r
        }
    }
}

impl LmLane {
    pub(crate) fn new(id: LaneId, params: LmParams, bos: u32, primer: Arc<[u32]>) -> Self {
        LmLane {
            id,
            params,
            bos,
            primer,
            history: Vec::new(),
            queue: VecDeque::new(),
            ctx_len: 0,
            state: State::Fresh,
            // A placeholder until the model's first answer fills it (every
            // use waits for one: `ready`); a whole table per lane here cost
            // a short connection more than its coding (4 lanes, both ends).
            table: FreqTable::uniform(1),
            matcher: MatchModel::default(),
            requests: 0,
            profile: None,
        }
    }

    pub(crate) fn id(&self) -> LaneId {
        self.id
    }

    /// Whether `table` is the distribution for the next token.
    pub(crate) fn ready(&self) -> bool {
        self.state == State::Answered && self.queue.is_empty()
    }

    /// Appends a token to the context (sent to the model when the next
    /// distribution is needed).
    pub(crate) fn feed(&mut self, token: u32) {
        self.queue.push_back(token);
    }

    /// The next request this lane needs answered, if any is due.
    pub(crate) fn next_request(&mut self) -> Option<Request> {
        let req = match self.state {
            State::Waiting => return None,
            State::Fresh => Request::Prime {
                tokens: self.context(0),
            },
            State::Answered => {
                let token = self.queue.pop_front()?;
                self.history.push(token);
                // Here, not in `feed`: both ends take tokens into the context
                // one per request, in the same order relative to answers.
                let matcher = &mut self.matcher;
                timed(
                    &mut self.profile,
                    |p| &mut p.matcher,
                    || matcher.push(token),
                );
                if self.ctx_len + 1 > self.params.window {
                    Request::Prime {
                        tokens: self.context(self.params.keep as usize),
                    }
                } else {
                    Request::Step { token }
                }
            }
        };
        self.ctx_len = match &req {
            Request::Prime { tokens } => u32::try_from(tokens.len()).expect("bounded by window"),
            Request::Step { .. } => self.ctx_len + 1,
        };
        self.trim_history();
        self.state = State::Waiting;
        self.requests += 1;
        Some(req)
    }

    /// Takes the answer to the outstanding request.
    pub(crate) fn answer(&mut self, logits: &[f32]) {
        debug_assert_eq!(self.state, State::Waiting);
        let table = &mut self.table;
        timed(
            &mut self.profile,
            |p| &mut p.table,
            || {
                table.fill_from_logits(logits);
            },
        );
        let matcher = &mut self.matcher;
        timed(
            &mut self.profile,
            |p| &mut p.matcher,
            || matcher.adjust(table),
        );
        self.state = State::Answered;
    }

    fn context(&self, keep: usize) -> Vec<u32> {
        let tail = &self.history[self.history.len().saturating_sub(keep)..];
        let mut v = Vec::with_capacity(1 + self.primer.len() + tail.len());
        v.push(self.bos);
        v.extend_from_slice(&self.primer);
        v.extend_from_slice(tail);
        v
    }

    fn trim_history(&mut self) {
        let keep = self.params.keep as usize;
        if self.history.len() > 4 * keep.max(1024) {
            self.history.drain(..self.history.len() - keep);
        }
    }
}

/// The lanes a coder with `cfg` needs: none without a model, else `lanes`
/// (at least one), segment `j`'s with id [`crate::segments::lane_id`]. A
/// primer longer than the context rule allows keeps only its last tokens
/// that fit (`window - keep - 2`), so any primer bytes give valid lanes.
pub(crate) fn new_lanes(
    id: LaneId,
    lm: Option<LmParams>,
    lanes: u8,
    vocab: &dyn crate::Vocabulary,
    primer: &[u8],
) -> Vec<LmLane> {
    let Some(params) = lm else {
        return Vec::new();
    };
    let mut tokens = Vec::new();
    vocab.tokenize(primer, &mut tokens);
    let room = (params.window as usize).saturating_sub(params.keep as usize + 2);
    if tokens.len() > room {
        tokens.drain(..tokens.len() - room);
    }
    let primer: Arc<[u32]> = tokens.into();
    (0..usize::from(lanes.max(1)))
        .map(|j| {
            LmLane::new(
                crate::segments::lane_id(id, j),
                params,
                vocab.bos(),
                primer.clone(),
            )
        })
        .collect()
}

/// The ids of the lanes that ever asked the model for anything.
pub(crate) fn used(lanes: &[LmLane]) -> Vec<LaneId> {
    lanes
        .iter()
        .filter(|l| l.requests > 0)
        .map(LmLane::id)
        .collect()
}

/// The lanes' profiles together, if profiling is on.
pub(crate) fn merged_profile(lanes: &[LmLane]) -> Option<Profile> {
    let mut out: Option<Profile> = None;
    for p in lanes.iter().filter_map(|l| l.profile) {
        out.get_or_insert_with(Profile::default).merge(&p);
    }
    out
}
