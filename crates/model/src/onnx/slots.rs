//! Which row of the predictor's per-lane buffers each lane owns, and how a
//! call's lanes are brought into one contiguous run of rows.
//!
//! A model call takes rows `a..a+n` of every buffer as its batch. When the
//! lanes of a call are not contiguous, [`Slots::arrange`] picks the window
//! that already holds most of them and swaps the others in; the caller moves
//! the rows' data the same way. A steady set of lanes (a bulk transfer, a
//! pack job) settles after its first call and never moves again.

use std::collections::HashMap;

use llmpack_codec::LaneId;

/// Lane ↔ row bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    of_lane: HashMap<LaneId, usize>,
    lane_at: Vec<Option<LaneId>>,
}

impl Slots {
    /// Rows in use or free (the buffers' row count).
    pub(crate) fn rows(&self) -> usize {
        self.lane_at.len()
    }

    /// Lanes holding a row.
    pub(crate) fn lanes(&self) -> usize {
        self.of_lane.len()
    }

    /// The row of `lane`, if it has one.
    pub(crate) fn get(&self, lane: LaneId) -> Option<usize> {
        self.of_lane.get(&lane).copied()
    }

    /// The row of `lane`, giving it the first free one (appending a row when
    /// none is free; the caller grows its buffers to [`Slots::rows`]).
    pub(crate) fn assign(&mut self, lane: LaneId) -> usize {
        if let Some(r) = self.get(lane) {
            return r;
        }
        let r = match self.lane_at.iter().position(Option::is_none) {
            Some(r) => r,
            None => {
                self.lane_at.push(None);
                self.lane_at.len() - 1
            }
        };
        self.lane_at[r] = Some(lane);
        self.of_lane.insert(lane, r);
        r
    }

    /// Frees `lane`'s row; trailing free rows are dropped. Returns the new
    /// row count.
    pub(crate) fn release(&mut self, lane: LaneId) -> usize {
        if let Some(r) = self.of_lane.remove(&lane) {
            self.lane_at[r] = None;
        }
        while self.lane_at.last().is_some_and(Option::is_none) {
            self.lane_at.pop();
        }
        self.lane_at.len()
    }

    /// Makes the rows of `lanes` (distinct, each holding a row) contiguous:
    /// returns the first row of the window and the row swaps done to get
    /// there, in order (the caller swaps its data the same way). Lanes in the
    /// window keep their rows; the order of rows need not follow `lanes`.
    pub(crate) fn arrange(&mut self, lanes: &[LaneId]) -> (usize, Vec<(usize, usize)>) {
        let n = lanes.len();
        let rows = self.lane_at.len();
        debug_assert!(n <= rows);
        let mut member = vec![false; rows];
        for l in lanes {
            member[self.of_lane[l]] = true;
        }
        // The window of n rows holding the most members.
        let mut inside: usize = member[..n].iter().filter(|&&m| m).count();
        let (mut best, mut best_at) = (inside, 0);
        for a in 1..=rows - n {
            inside = inside + usize::from(member[a + n - 1]) - usize::from(member[a - 1]);
            if inside > best {
                (best, best_at) = (inside, a);
            }
        }
        let window = best_at..best_at + n;
        let outsiders: Vec<usize> = (0..rows)
            .filter(|r| member[*r] && !window.contains(r))
            .collect();
        let holes: Vec<usize> = window.clone().filter(|r| !member[*r]).collect();
        debug_assert_eq!(outsiders.len(), holes.len());
        let swaps: Vec<(usize, usize)> = outsiders.into_iter().zip(holes).collect();
        for &(x, y) in &swaps {
            self.lane_at.swap(x, y);
            for r in [x, y] {
                if let Some(l) = self.lane_at[r] {
                    self.of_lane.insert(l, r);
                }
            }
        }
        (best_at, swaps)
    }
}

/// A batch's step requests laid out as rows `first..first + n`.
#[derive(Debug)]
pub(crate) struct StepRows {
    /// The first row of the call.
    pub first: usize,
    /// Each row's token.
    pub tokens: Vec<i64>,
    /// Which request of the batch each row answers.
    pub request_of_row: Vec<usize>,
}

impl StepRows {
    /// Calls `answer(request, logits)` for each row of `logits` (`vocab`
    /// per row).
    pub fn answer(&self, logits: &[f32], vocab: usize, answer: super::Answer<'_>) {
        for (r, &i) in self.request_of_row.iter().enumerate() {
            answer(i, &logits[r * vocab..(r + 1) * vocab]);
        }
    }
}

impl Slots {
    /// Lays out `steps` (`(request, lane, token)`, lanes distinct, each
    /// holding a row) as one contiguous run of rows, calling `swap` for each
    /// pair of rows whose data must trade places first.
    pub(crate) fn lay_out(
        &mut self,
        steps: &[(usize, LaneId, u32)],
        mut swap: impl FnMut(usize, usize),
    ) -> StepRows {
        let lanes: Vec<LaneId> = steps.iter().map(|s| s.1).collect();
        let (first, swaps) = self.arrange(&lanes);
        for (x, y) in swaps {
            swap(x, y);
        }
        let n = steps.len();
        let mut rows = StepRows {
            first,
            tokens: vec![0; n],
            request_of_row: vec![0; n],
        };
        for &(i, lane, token) in steps {
            let r = self.of_lane[&lane] - first;
            rows.tokens[r] = i64::from(token);
            rows.request_of_row[r] = i;
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrange_brings_any_set_together_with_few_swaps() {
        let mut s = Slots::default();
        for (l, row) in (0..8u64).zip(0usize..) {
            assert_eq!(s.assign(l), row);
        }
        // Already contiguous: no swap.
        let (a, swaps) = s.arrange(&[2, 3, 4]);
        assert_eq!((a, swaps.len()), (2, 0));
        // Scattered: one swap brings 7 next to 0 and 1.
        let (a, swaps) = s.arrange(&[0, 1, 7]);
        assert_eq!(swaps.len(), 1);
        let mut rows: Vec<usize> = [0, 1, 7].iter().map(|&l| s.get(l).unwrap()).collect();
        rows.sort_unstable();
        assert_eq!(rows, vec![a, a + 1, a + 2]);
        // Every lane still has a distinct row.
        let mut all: Vec<usize> = (0..8u64).map(|l| s.get(l).unwrap()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn released_rows_are_reused_and_trailing_ones_dropped() {
        let mut s = Slots::default();
        for l in 0..4 {
            s.assign(l);
        }
        assert_eq!(s.release(1), 4);
        assert_eq!(s.assign(9), 1);
        assert_eq!(s.release(3), 3);
        assert_eq!(s.release(2), 2);
        assert_eq!(s.lanes(), 2);
        assert_eq!(s.rows(), 2);
    }
}
