//! The inference scheduler: one thread per model instance that owns the
//! predictor and answers the model requests of every connection's coders
//! in shared, batched model calls.
//!
//! A connection hands a coder with a frame pushed into it ([`Work`]) to the
//! scheduler and awaits it back; the scheduler runs rounds: one request from
//! every coder in progress, one batched model call, answers back. Coders
//! join and leave between rounds, so a new connection never waits for
//! another's frame to finish.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use llmpack_codec::{LaneId, PredictError, Predictor, Request, StreamDecoder, StreamEncoder};
use tokio::sync::oneshot;

/// A coder with a frame in progress.
#[derive(Debug)]
pub enum Work {
    /// An encoder with a frame pushed.
    Encode(Box<StreamEncoder>),
    /// A decoder with a frame pushed.
    Decode(Box<StreamDecoder>),
}

impl Work {
    /// Rows this coder may ask for in one call (one per lane, at least one).
    fn rows(&self) -> usize {
        match self {
            Work::Encode(e) => e.lanes().count(),
            Work::Decode(d) => d.lanes().count(),
        }
        .max(1)
    }
    fn lanes(&self) -> Vec<LaneId> {
        match self {
            Work::Encode(e) => e.lanes().collect(),
            Work::Decode(d) => d.lanes().collect(),
        }
    }
    fn poll_requests(&mut self, out: &mut dyn FnMut(LaneId, Request)) {
        match self {
            Work::Encode(e) => e.poll_requests(out),
            Work::Decode(d) => d.poll_requests(out),
        }
    }
    fn handle_prediction(&mut self, lane: LaneId, logits: &[f32]) {
        match self {
            Work::Encode(e) => e.handle_prediction(lane, logits),
            Work::Decode(d) => d.handle_prediction(lane, logits),
        }
    }
}

/// The scheduler could not finish a coder's frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchedError {
    /// The model runtime failed; the coder's context is lost.
    #[error(transparent)]
    Predict(#[from] PredictError),
    /// The scheduler thread is gone (shutting down).
    #[error("the inference scheduler has stopped")]
    Stopped,
}

enum Cmd {
    Run(Work, f64, oneshot::Sender<Result<Work, SchedError>>),
    Release(LaneId),
}

/// Handle to a scheduler thread; cheap to clone.
#[derive(Debug, Clone)]
pub struct Scheduler {
    tx: mpsc::Sender<Cmd>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    next_lane: AtomicU64,
    /// Coders in progress or queued.
    active: AtomicUsize,
    /// Exponential average of one round's duration, nanoseconds.
    round_ns: AtomicU64,
    max_batch: usize,
    /// The first warm-up is over (timed, or failed).
    warm: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Run(w, p, _) => write!(f, "Run({:?}, {p})", w.lanes()),
            Cmd::Release(l) => write!(f, "Release({l})"),
        }
    }
}

impl Scheduler {
    /// Starts the scheduler thread; it owns `predictor` until every handle
    /// is dropped. At most `max_batch` coders share one model call.
    pub fn start(predictor: Box<dyn Predictor + Send>, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            next_lane: AtomicU64::new(1),
            active: AtomicUsize::new(0),
            // A guess until the first round is measured: 20 ms.
            round_ns: AtomicU64::new(20_000_000),
            max_batch: max_batch.max(1),
            warm: std::sync::atomic::AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("llmpack-infer".into())
            .spawn(move || {
                let mut predictor = predictor;
                warm_up(&mut *predictor, &s, false);
                s.warm.store(true, Ordering::Release);
                run(predictor, rx, &s)
            })
            .expect("spawning the inference thread");
        Scheduler { tx, shared }
    }

    /// Blocks until the first warm-up is over (the model's first calls,
    /// which allocate and pack weights, and the timed steps), at most
    /// `limit`; whether it is. A proxy that waits for it before it serves
    /// does not spend its first second's CPU on both.
    pub fn wait_warm(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while !self.shared.warm.load(Ordering::Acquire) {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// A lane id no other coder of this scheduler uses.
    pub fn new_lane(&self) -> LaneId {
        self.shared.next_lane.fetch_add(1, Ordering::Relaxed)
    }

    /// Runs `work` until its frame is done and hands it back.
    pub async fn run(&self, work: Work) -> Result<Work, SchedError> {
        self.run_with(work, 0.0).await
    }

    /// [`Self::run`] with a priority: when more coders wait than one model
    /// call takes, the one with the largest `priority` (the seconds its
    /// link is busy anyway) plus seconds waited goes first, so the longest
    /// link queues get the model first and no coder waits forever.
    pub async fn run_with(&self, work: Work, priority: f64) -> Result<Work, SchedError> {
        let (tx, rx) = oneshot::channel();
        self.shared.active.fetch_add(1, Ordering::Relaxed);
        let priority = if priority.is_finite() { priority } else { 0.0 };
        let sent = self.tx.send(Cmd::Run(work, priority, tx));
        let out = match sent {
            Ok(()) => rx.await.unwrap_or(Err(SchedError::Stopped)),
            Err(_) => Err(SchedError::Stopped),
        };
        self.shared.active.fetch_sub(1, Ordering::Relaxed);
        out
    }

    /// Frees the model context of a lane that will not be used again.
    pub fn release(&self, lane: LaneId) {
        let _ = self.tx.send(Cmd::Release(lane));
    }

    /// Seconds per input byte a one-lane frame that joined now would take:
    /// its tokens (3 bytes each) times the measured time of a model call,
    /// which grows by about one coder's share with each coder joining
    /// (frames on several lanes: `llmpack_frame::policy` scales this).
    pub fn secs_per_byte(&self) -> f64 {
        let active = self.shared.active.load(Ordering::Relaxed) as f64;
        let round = self.shared.round_ns.load(Ordering::Relaxed) as f64 * 1e-9;
        // Alone it runs at the measured round; with others, a round grows
        // by about one coder's step.
        let grow = if active > 0.0 {
            1.0 + 1.0 / active
        } else {
            1.0
        };
        round * grow / BYTES_PER_TOKEN
    }

    /// Coders in progress or waiting for the model.
    pub fn backlog(&self) -> usize {
        self.shared.active.load(Ordering::Relaxed)
    }
}

/// How long the scheduler waits idle, after its start, before it times a
/// step again: the start's timing often competes with the other models and
/// programs starting on the machine.
const RETIME_FIRST: Duration = Duration::from_secs(10);

/// How long the scheduler waits idle before it times a step again (at
/// least; at most ~1 % of idle time goes to it).
const RETIME_IDLE: Duration = Duration::from_secs(60);

/// Input bytes per token assumed by the estimates (a byte-level BPE
/// vocabulary of a few thousand tokens makes ~3 on text).
const BYTES_PER_TOKEN: f64 = 3.0;

/// Times a few one-token steps on a scratch lane so the first estimates
/// are measured, not guessed; `only_lower`: keep the current estimate if it
/// is faster (an idle re-time).
fn warm_up(predictor: &mut dyn Predictor, shared: &Shared, only_lower: bool) {
    let lane = LaneId::MAX - 1;
    let vocab = u32::try_from(predictor.vocab_size())
        .unwrap_or(u32::MAX)
        .max(2);
    let prime = Request::Prime {
        tokens: (0..16).map(|i| i % vocab).collect(),
    };
    if predictor.predict(&[(lane, prime)], &mut |_, _| {}).is_err() {
        return;
    }
    // The first calls of a shape are slow (allocation, weight packing):
    // run a few untimed, then time the steady state.
    for i in 0..4 {
        let step = Request::Step { token: i % vocab };
        if predictor.predict(&[(lane, step)], &mut |_, _| {}).is_err() {
            predictor.release(lane);
            return;
        }
    }
    let mut times = Vec::with_capacity(16);
    for i in 0..16u32 {
        let step = Request::Step { token: i % vocab };
        let t = Instant::now();
        if predictor.predict(&[(lane, step)], &mut |_, _| {}).is_err() {
            predictor.release(lane);
            return;
        }
        times.push(t.elapsed());
    }
    // The median: a step that another process slowed says little.
    times.sort_unstable();
    let ns = u64::try_from(times[times.len() / 2].as_nanos()).unwrap_or(u64::MAX);
    tracing::debug!(step_us = ns / 1000, "model warm-up: one-lane step timed");
    // An idle re-time only corrects an estimate that is too slow (taken
    // while the machine was busy); real rounds move it either way.
    let ns = if only_lower {
        ns.min(shared.round_ns.load(Ordering::Relaxed))
    } else {
        ns
    };
    shared.round_ns.store(ns.max(1), Ordering::Relaxed);
    predictor.release(lane);
}

struct Job {
    work: Work,
    done: oneshot::Sender<Result<Work, SchedError>>,
}

/// A job waiting for a place in the model call, with its priority.
struct Waiting {
    job: Job,
    priority: f64,
    since: Instant,
}

/// Takes the waiting job with the largest priority plus seconds waited
/// (first come first among equals).
fn next_waiting(waiting: &mut Vec<Waiting>, now: Instant) -> Option<Waiting> {
    let score = |w: &Waiting| w.priority + now.duration_since(w.since).as_secs_f64();
    let best = (0..waiting.len()).fold(None, |best: Option<usize>, i| match best {
        Some(b) if score(&waiting[b]) >= score(&waiting[i]) => Some(b),
        _ => Some(i),
    })?;
    Some(waiting.remove(best))
}

fn run(mut predictor: Box<dyn Predictor + Send>, rx: mpsc::Receiver<Cmd>, shared: &Shared) {
    let mut jobs: Vec<Job> = Vec::new();
    let mut waiting: Vec<Waiting> = Vec::new();
    let mut batch: Vec<(LaneId, Request)> = Vec::new();
    let mut owner: Vec<usize> = Vec::new();
    let mut retime = RETIME_FIRST;
    loop {
        // Take new commands: block only when there is nothing to do.
        let first = if jobs.is_empty() && waiting.is_empty() {
            // Idle: re-time a step now and then, so that an estimate made
            // while the machine was busy (another model loading at start)
            // does not keep the model out of every frame for good.
            match rx.recv_timeout(retime) {
                Ok(c) => Some(c),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let t = Instant::now();
                    warm_up(&mut *predictor, shared, true);
                    // At most ~1 % of the idle time.
                    retime = RETIME_IDLE.max(t.elapsed() * 100);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            None
        };
        for cmd in first.into_iter().chain(rx.try_iter()) {
            match cmd {
                Cmd::Run(work, priority, done) => waiting.push(Waiting {
                    job: Job { work, done },
                    priority,
                    since: Instant::now(),
                }),
                Cmd::Release(lane) => predictor.release(lane),
            }
        }
        // Jobs join while their lanes fit in a batch (a frame coded on
        // several lanes asks for one row per lane).
        let now = Instant::now();
        let mut rows: usize = jobs.iter().map(|j| j.work.rows()).sum();
        while rows < shared.max_batch {
            match next_waiting(&mut waiting, now) {
                Some(w) => {
                    rows += w.job.work.rows();
                    jobs.push(w.job);
                }
                None => break,
            }
        }
        metrics::gauge!("llmpack_model_backlog").set((jobs.len() + waiting.len()) as f64);
        // Every request due from every job (all of a job's requests were
        // answered last round, so one that asks nothing is finished); finished
        // jobs go back.
        batch.clear();
        owner.clear();
        let mut i = 0;
        while i < jobs.len() {
            let before = batch.len();
            jobs[i]
                .work
                .poll_requests(&mut |lane, req| batch.push((lane, req)));
            if batch.len() > before {
                owner.resize(batch.len(), i);
                i += 1;
            } else {
                let j = jobs.swap_remove(i);
                let _ = j.done.send(Ok(j.work));
            }
        }
        if batch.is_empty() {
            continue;
        }
        let t = Instant::now();
        let result = predictor.predict(&batch, &mut |k, logits| {
            jobs[owner[k]].work.handle_prediction(batch[k].0, logits);
        });
        let took = t.elapsed();
        metrics::histogram!("llmpack_inference_seconds").record(took.as_secs_f64());
        metrics::histogram!("llmpack_batch_size").record(batch.len() as f64);
        // Only rounds of one-token steps time a round: a prime runs a whole
        // context in one call and would make every later estimate too slow.
        if batch.iter().all(|(_, r)| matches!(r, Request::Step { .. })) {
            let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
            let old = shared.round_ns.load(Ordering::Relaxed);
            shared
                .round_ns
                .store(old - old / 8 + ns / 8, Ordering::Relaxed);
        }
        if let Err(e) = result {
            tracing::error!(error = %e, lanes = batch.len(), "model call failed");
            // Every job in `jobs` asked in this round.
            for j in jobs.drain(..) {
                for lane in j.work.lanes() {
                    predictor.release(lane);
                }
                let _ = j
                    .done
                    .send(Err(SchedError::Predict(PredictError(e.0.clone()))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmpack_codec::{ByteVocab, StreamConfig};

    fn waiting(priority: f64, waited_ms: u64, now: Instant) -> Waiting {
        let enc = StreamEncoder::new(
            0,
            StreamConfig::default(),
            Arc::new(ByteVocab::default()),
            b"",
        );
        Waiting {
            job: Job {
                work: Work::Encode(Box::new(enc)),
                done: oneshot::channel().0,
            },
            priority,
            since: now - Duration::from_millis(waited_ms),
        }
    }

    /// The (priority, waited ms) of the jobs in the order they are taken.
    fn order(jobs: &[(f64, u64)]) -> Vec<(f64, u64)> {
        let now = Instant::now() + Duration::from_secs(100);
        let mut w: Vec<Waiting> = jobs.iter().map(|&(p, ms)| waiting(p, ms, now)).collect();
        let mut out = Vec::new();
        while let Some(x) = next_waiting(&mut w, now) {
            let ms = u64::try_from(now.duration_since(x.since).as_millis()).unwrap_or(0);
            out.push((x.priority, ms));
        }
        out
    }

    #[test]
    fn longest_link_queue_first_and_no_one_starves() {
        assert_eq!(
            order(&[(0.0, 0), (5.0, 0), (1.0, 0)]),
            [(5.0, 0), (1.0, 0), (0.0, 0)]
        );
        // Equal scores (1 + 1 s waited = 2 + 0): first come first.
        assert_eq!(
            order(&[(1.0, 0), (1.0, 1000), (2.0, 0)]),
            [(1.0, 1000), (2.0, 0), (1.0, 0)]
        );
        // A job that waited 10 s beats a 5 s link queue that just came.
        assert_eq!(order(&[(5.0, 0), (0.0, 10_000)]), [(0.0, 10_000), (5.0, 0)]);
        assert!(order(&[]).is_empty());
    }
}
