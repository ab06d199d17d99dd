//! The encoder's repair policy: the loss estimate from the receiver's
//! reports, and how many repair symbols a block gets from it.

use super::BlockEncoder;

/// Below this loss, measured both over the last ~64 symbols and over the
/// long run (see [`CLEAN_RUN`]), a block may get no repair symbol at all
/// (see `repair_for`); otherwise every block gets at least one.
pub const LOW_LOSS: f64 = 0.005;
/// Symbols the long-run loss counts: at least this many before the path
/// may count as clean, and their weight halves past twice as many. The
/// short average follows the last ~64 symbols, so on a link of a few %
/// loss that carries small blocks it dips below [`LOW_LOSS`] between two
/// losses, and a one-symbol block sent without repair is lost whole. At
/// 5 % loss (about half of it visible to the receiver, which cannot count
/// a block's lost last symbols) a window of 300 to 600 symbols shows less
/// than 0.5 % with a chance under 1 %.
pub const CLEAN_RUN: f64 = 300.0;

/// Highest chance that the last block of a burst (see
/// [`BlockEncoder::flush`]) loses more symbols than its repair covers. Such
/// a block costs a top-up, a whole round trip, and nothing sent behind it
/// hides the wait; in the middle of a burst the mean-based ratio holds,
/// since the link stays busy meanwhile. At 5 % loss this gives a one-symbol
/// block one repair symbol (0.25 % failure) and a six-symbol block two
/// (0.6 %, against 4.4 % with one).
pub const TAIL_FAILURE: f64 = 0.01;
/// Largest block, in source symbols, that [`TAIL_FAILURE`] applies to.
pub const TAIL_MAX_K: u16 = 64;

/// Chance that more than `r` of `k + r` symbols are lost, each with
/// chance `loss` (clamped to 0..=0.5): the binomial tail.
pub(super) fn block_failure(k: u32, r: u32, loss: f64) -> f64 {
    let p = loss.clamp(0.0, 0.5);
    let q = 1.0 - p;
    let n = k + r;
    let mut term = q.powf(f64::from(n)); // P(no loss)
    let mut at_most_r = term;
    for i in 0..r {
        term *= f64::from(n - i) / f64::from(i + 1) * p / q;
        at_most_r += term;
    }
    (1.0 - at_most_r).max(0.0)
}

impl BlockEncoder {
    /// Whether the path counts as clean: measured loss below [`LOW_LOSS`]
    /// lately and over the long run, of at least [`CLEAN_RUN`] symbols.
    fn is_clean(&self) -> bool {
        let (expected, lost) = self.long_run;
        self.loss.is_some_and(|l| l < LOW_LOSS)
            && expected >= CLEAN_RUN
            && lost < LOW_LOSS * expected
    }

    /// Repair symbols for the last block of a burst, of `k` source symbols:
    /// the fewest that leave at most [`TAIL_FAILURE`] chance of more losses
    /// than repair at the measured loss (the starting guess until a report
    /// comes), within `max_ratio`. None on a clean path or for blocks of
    /// more than [`TAIL_MAX_K`] symbols, whose loss averages out.
    pub(super) fn tail_repair(&self, k: u16) -> u32 {
        if self.is_clean() || k > TAIL_MAX_K {
            return 0;
        }
        let loss = self.loss.unwrap_or_else(|| self.prior_loss());
        let k = u32::from(k);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "k <= TAIL_MAX_K and max_ratio <= 4"
        )]
        let most = (f64::from(k) * self.config.max_ratio).ceil() as u32;
        (0..=most)
            .find(|&r| block_failure(k, r, loss) <= TAIL_FAILURE)
            .unwrap_or(most)
    }

    /// The loss the starting repair ratio stands for.
    fn prior_loss(&self) -> f64 {
        ((self.config.repair_ratio - 0.01) / 1.25).max(0.0)
    }

    /// Repair symbols for a block of `k`: `k * ratio` on average, fractions
    /// carried from block to block. Until the path counts as clean (loss
    /// below [`LOW_LOSS`] over [`CLEAN_RUN`] symbols) every block gets at least one, and
    /// the extra is paid back by later blocks (at most one symbol owed);
    /// on a clean path a block may get none: a rare loss then costs a
    /// top-up, not a standing tax of a whole symbol on every small block.
    pub(super) fn repair_for(&mut self, k: u16, ratio: f64) -> u32 {
        if ratio <= 0.0 {
            return 0;
        }
        let clean = self.is_clean();
        self.credit += f64::from(k) * ratio;
        let mut r = self.credit.floor().clamp(0.0, 4.0 * 65_536.0);
        if r == 0.0 && !clean {
            r = 1.0;
        }
        self.credit = (self.credit - r).max(-1.0);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "clamped to [0, 2^18]"
        )]
        let r = r as u32;
        r
    }

    /// Counts a loss report: `received` of `expected` symbols arrived.
    pub(super) fn handle_loss_report(&mut self, expected: u32, received: u32) {
        let (e, l) = &mut self.long_run;
        *e += f64::from(expected);
        *l += f64::from(expected.saturating_sub(received));
        if *e > 2.0 * CLEAN_RUN {
            *e /= 2.0;
            *l /= 2.0;
        }
        if expected > 0 {
            let sample = 1.0 - f64::from(received) / f64::from(expected);
            let w = sample_weight(self.config.loss_weight, expected);
            let loss = match self.loss {
                Some(l) => l + w * (sample - l),
                // The first report replaces the loss the starting
                // ratio stands for only as far as it covers enough
                // symbols to measure anything: a report on one
                // symbol that arrived says little, and reading it as
                // 0 % loss would send small blocks without repair.
                None => {
                    let prior = self.prior_loss();
                    prior + sample_weight(1.0, expected) * (sample - prior)
                }
            };
            self.loss = Some(loss);
            self.stats.loss_estimate = loss;
            self.stats.repair_ratio =
                (loss * 1.25 + 0.01).clamp(self.config.min_ratio, self.config.max_ratio);
        }
    }
}

/// Symbols a loss report must cover to get the full `loss_weight`.
pub(crate) const WEIGHT_SYMBOLS: u32 = 16;

/// The weight of a loss sample over `symbols` symbols in a moving average
/// that gives a report `w`: reports on fewer than [`WEIGHT_SYMBOLS`] symbols
/// get proportionally less, so that a run of tiny reports (a lightly
/// loaded link) does not swing the estimate.
pub(crate) fn sample_weight(w: f64, symbols: u32) -> f64 {
    w * f64::from(symbols.min(WEIGHT_SYMBOLS)) / f64::from(WEIGHT_SYMBOLS)
}
