//! Receiver side: symbol datagrams into blocks, blocks into ordered items.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use raptorq::{EncodingPacket, ObjectTransmissionInformation, PayloadId, SourceBlockDecoder};

use crate::items;
use crate::wire::SymbolHeader;
use crate::{
    FecError, Feedback, MAX_EXTRA_SYMBOLS, MAX_TOPUP_SYMBOLS, WHOLE_BLOCK, WireError, invalid,
};

/// Feedback messages queued at most; older ones are dropped (they are hints).
const MAX_PENDING_FEEDBACK: usize = 1024;

/// Receiver configuration.
#[derive(Debug, Clone)]
pub struct DecoderConfig {
    /// Blocks accepted ahead of the next one to deliver; beyond is rejected.
    pub max_blocks: u32,
    /// Ask for a top-up when an incomplete block got no symbol for this long
    /// (about 1.5 × the one-way delay jitter plus the sender's pacing gap).
    pub topup_after: Duration,
    /// Ask again after this long if the top-up does not arrive (> one RTT).
    pub topup_retry: Duration,
    /// Extra symbols asked for on top of the estimated shortfall.
    pub topup_margin: u32,
    /// Interval of [`Feedback::Report`] messages.
    pub report_interval: Duration,
    /// `true`: [`BlockDecoder::poll_item`] yields items strictly in block
    /// order. `false`: a block's items come out as soon as it is decoded, so
    /// a stalled block holds back only itself; the caller restores whatever
    /// order it needs (the tunnel numbers each connection's items).
    pub ordered: bool,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        DecoderConfig {
            max_blocks: 64,
            topup_after: Duration::from_millis(20),
            topup_retry: Duration::from_millis(200),
            // raptorq fails with ~1% at k symbols, ~1e-6 at k + 2.
            topup_margin: 2,
            report_interval: Duration::from_millis(50),
            ordered: true,
        }
    }
}

/// Receiver counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecoderStats {
    /// Valid symbols received (duplicates excluded where detectable).
    pub symbols_received: u64,
    /// Datagrams rejected with an error.
    pub rejected: u64,
    /// Blocks decoded from symbols.
    pub blocks_decoded: u64,
    /// Of those, blocks that needed repair symbols (some source symbol lost).
    pub blocks_recovered: u64,
    /// [`Feedback::NeedMore`] requests issued.
    pub topup_requests: u64,
    /// Blocks replaced by [`BlockDecoder::handle_fallback`].
    pub fallbacks: u64,
    /// Moving average of measured symbol loss.
    pub loss_estimate: f64,
}

struct Partial {
    header: SymbolHeader,
    decoder: SourceBlockDecoder,
    esis: HashSet<u32>,
    source_received: u32,
    next_request: Instant,
    last_arrival: Instant,
}

enum Rx {
    Partial(Box<Partial>),
    Done(Vec<Vec<u8>>),
    /// Decoded and handed out ahead of an earlier block (unordered mode).
    Delivered,
    /// Not one symbol arrived, but a later block did: every symbol of this
    /// one was lost. Holds when to ask for it.
    Missing(Instant),
}

/// Per-block loss accounting: what the sender sent (highest ESI + 1) vs what
/// arrived, and how much of it was already reported.
struct LossRecord {
    sent: u32,
    received: u32,
    reported_sent: u32,
    reported_received: u32,
    last: Instant,
}

/// Receiver state machine; see the crate docs.
pub struct BlockDecoder {
    config: DecoderConfig,
    next_deliver: u32,
    blocks: BTreeMap<u32, Rx>,
    ready: VecDeque<Vec<u8>>,
    feedback: VecDeque<Feedback>,
    loss: BTreeMap<u32, LossRecord>,
    next_report: Option<Instant>,
    reported_below: u32,
    /// The next report repeats the cumulative ack (see `reack`).
    reack: bool,
    /// Moving average of the gap between a block's symbols.
    gap: Duration,
    /// One past the highest block a symbol arrived for.
    seen_below: u32,
    /// The path's round-trip time, if known.
    rtt: Duration,
    stats: DecoderStats,
}

impl std::fmt::Debug for BlockDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockDecoder")
            .field("next_deliver", &self.next_deliver)
            .field("blocks", &self.blocks.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl BlockDecoder {
    /// A new decoder; fails if the config is out of range.
    pub fn new(config: DecoderConfig) -> Result<Self, FecError> {
        if config.max_blocks == 0 {
            return Err(FecError::Config {
                field: "max_blocks",
                why: "must be at least 1",
            });
        }
        Ok(BlockDecoder {
            config,
            next_deliver: 0,
            blocks: BTreeMap::new(),
            ready: VecDeque::new(),
            feedback: VecDeque::new(),
            loss: BTreeMap::new(),
            next_report: None,
            reported_below: 0,
            reack: false,
            gap: Duration::ZERO,
            seen_below: 0,
            rtt: Duration::ZERO,
            stats: DecoderStats::default(),
        })
    }

    /// Tells the decoder the path's round-trip time: a top-up request is
    /// repeated only after the answer to the last one could have arrived.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt;
    }

    fn topup_retry(&self) -> Duration {
        self.config
            .topup_retry
            .max(self.rtt * 3 / 2 + self.config.topup_after.max(self.gap * 3))
    }

    /// Handles one symbol datagram. Errors mean the datagram was dropped;
    /// [`FecError::Wire`] with `Invalid` means the peer is broken or hostile.
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) -> Result<(), FecError> {
        let r = self.handle_inner(now, bytes);
        if r.is_err() {
            self.stats.rejected += 1;
        }
        r
    }

    fn handle_inner(&mut self, now: Instant, bytes: &[u8]) -> Result<(), FecError> {
        let mut symbol = bytes;
        let h = SymbolHeader::decode(&mut symbol)?;
        if symbol.len() != usize::from(h.symbol_size) {
            return Err(
                invalid("FEC symbol", "length differs from the header's symbol size").into(),
            );
        }
        if h.block < self.next_deliver {
            self.account(now, h, false); // late symbol of a delivered block
            self.reack(now);
            return Ok(());
        }
        let next = self.next_deliver;
        if h.block - next >= self.config.max_blocks {
            return Err(FecError::TooFarAhead {
                block: h.block,
                next,
            });
        }
        // Blocks skipped over lost all their symbols: ask for them after
        // the usual gap, as for a block that stalled, plus the spacing of a
        // small block's symbols (its repair may still be on the way).
        let after = self.config.topup_after.max(self.gap * 3) + crate::spacing(self.rtt);
        for b in self.seen_below.max(next)..h.block {
            self.blocks.entry(b).or_insert(Rx::Missing(now + after));
        }
        self.seen_below = self.seen_below.max(h.block + 1);
        let p = match self.blocks.get_mut(&h.block) {
            Some(Rx::Done(_) | Rx::Delivered) => {
                // Decoded but held behind an earlier block: the cumulative
                // ack does not cover it, so ack it by itself.
                self.account(now, h, false);
                self.push_feedback(Feedback::Decoded { block: h.block });
                return Ok(());
            }
            Some(Rx::Partial(p)) => p,
            None | Some(Rx::Missing(_)) => {
                let oti = ObjectTransmissionInformation::new(
                    u64::from(h.transfer_len),
                    h.symbol_size,
                    1,
                    1,
                    1,
                );
                let p = Partial {
                    header: h,
                    decoder: SourceBlockDecoder::new(0, &oti, u64::from(h.transfer_len)),
                    esis: HashSet::new(),
                    source_received: 0,
                    next_request: now,
                    last_arrival: now,
                };
                self.blocks.insert(h.block, Rx::Partial(Box::new(p)));
                match self.blocks.get_mut(&h.block) {
                    Some(Rx::Partial(p)) => p,
                    _ => unreachable!("just inserted"),
                }
            }
        };
        let same = SymbolHeader { esi: 0, ..p.header } == SymbolHeader { esi: 0, ..h };
        if !same {
            return Err(WireError::Invalid {
                what: "FEC symbol header",
                why: "block parameters differ from the block's first symbol",
            }
            .into());
        }
        // The pace of a block's symbols (the link rate) sets how long a gap
        // means loss: a slow link spaces them out.
        let gap = now.saturating_duration_since(p.last_arrival);
        if !p.esis.is_empty() && !p.esis.contains(&h.esi) {
            self.gap = if self.gap.is_zero() {
                gap
            } else {
                (self.gap * 7 + gap) / 8
            };
        }
        p.last_arrival = now;
        p.next_request = now + self.config.topup_after.max(self.gap * 3);
        let k = u32::from(h.k);
        let full = u32::try_from(p.esis.len()).unwrap_or(u32::MAX) >= k + MAX_EXTRA_SYMBOLS;
        if p.esis.contains(&h.esi) || full {
            return Ok(()); // duplicate, or storage for this block exhausted
        }
        p.esis.insert(h.esi);
        if h.esi < k {
            p.source_received += 1;
        }
        let recovered = p.source_received < k;
        let packet = EncodingPacket::new(PayloadId::new(0, h.esi), symbol.to_vec());
        let decoded = p.decoder.decode([packet]);
        self.account(now, h, true);
        let Some(mut data) = decoded else {
            return Ok(());
        };
        data.truncate(usize::try_from(h.transfer_len).unwrap_or(usize::MAX));
        match items::split(&data) {
            Ok(items) => {
                self.blocks.insert(h.block, Rx::Done(items));
                self.stats.blocks_decoded += 1;
                self.stats.blocks_recovered += u64::from(recovered);
                self.push_feedback(Feedback::Decoded { block: h.block });
                Ok(())
            }
            Err(_) => {
                self.blocks.remove(&h.block);
                Err(FecError::CorruptBlock { block: h.block })
            }
        }
    }

    fn account(&mut self, now: Instant, h: SymbolHeader, fresh: bool) {
        if fresh {
            self.stats.symbols_received += 1;
        }
        let rec = match self.loss.get_mut(&h.block) {
            Some(rec) => rec,
            None if fresh => self.loss.entry(h.block).or_insert(LossRecord {
                sent: 0,
                received: 0,
                reported_sent: 0,
                reported_received: 0,
                last: now,
            }),
            None => return,
        };
        rec.sent = rec.sent.max(h.esi + 1);
        rec.received = rec.received.saturating_add(1).min(rec.sent);
        rec.last = now;
        self.next_report
            .get_or_insert(now + self.config.report_interval);
    }

    /// A symbol of a decoded block arrived: the sender may not know it is
    /// decoded (lost feedback; its tail probe). The next report, due within
    /// `topup_after`, repeats the cumulative ack (at most one per
    /// `topup_after`, whatever arrives).
    fn reack(&mut self, now: Instant) {
        self.reack = true;
        let soon = now + self.config.topup_after;
        self.next_report = Some(self.next_report.map_or(soon, |t| t.min(soon)));
    }

    fn push_feedback(&mut self, fb: Feedback) {
        if self.feedback.len() >= MAX_PENDING_FEEDBACK {
            self.feedback.pop_front();
        }
        self.feedback.push_back(fb);
    }

    /// Replaces a block by the items that came on the reliable path. Returns
    /// `false` (and drops them) if the block was already decoded, or if it
    /// is `max_blocks` or more ahead of the next block to deliver: the same
    /// bound as for symbols, so a peer's block numbers cannot grow the map
    /// (such a fallback counts as rejected).
    pub fn handle_fallback(&mut self, now: Instant, block: u32, items: Vec<Vec<u8>>) -> bool {
        if block < self.next_deliver
            || matches!(self.blocks.get(&block), Some(Rx::Done(_) | Rx::Delivered))
        {
            return false;
        }
        if block - self.next_deliver >= self.config.max_blocks {
            self.stats.rejected += 1;
            return false;
        }
        self.blocks.insert(block, Rx::Done(items));
        self.stats.fallbacks += 1;
        self.next_report.get_or_insert(now); // report the new cumulative ack
        true
    }

    /// The next item: in block order, or (unordered) from any decoded block.
    pub fn poll_item(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if !self.config.ordered {
                let done = self
                    .blocks
                    .iter()
                    .find_map(|(&b, rx)| matches!(rx, Rx::Done(_)).then_some(b))?;
                if let Some(Rx::Done(items)) = self.blocks.insert(done, Rx::Delivered) {
                    self.ready.extend(items);
                }
                while let Some(Rx::Delivered) = self.blocks.get(&self.next_deliver) {
                    self.blocks.remove(&self.next_deliver);
                    self.next_deliver += 1;
                }
                continue;
            }
            let Some(Rx::Done(_)) = self.blocks.get(&self.next_deliver) else {
                return None;
            };
            if let Some(Rx::Done(items)) = self.blocks.remove(&self.next_deliver) {
                self.ready.extend(items);
            }
            self.next_deliver += 1;
        }
    }

    fn decoded_below(&self) -> u32 {
        let mut b = self.next_deliver;
        while let Some(Rx::Done(_) | Rx::Delivered) = self.blocks.get(&b) {
            b += 1;
        }
        b
    }

    /// The next deadline: a top-up request or a report.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let requests = self.blocks.values().filter_map(|b| match b {
            Rx::Partial(p) => Some(p.next_request),
            Rx::Missing(t) => Some(*t),
            Rx::Done(_) | Rx::Delivered => None,
        });
        requests.chain(self.next_report).min()
    }

    /// The next feedback message to send to the encoder.
    pub fn poll_feedback(&mut self, now: Instant) -> Option<Feedback> {
        if self.feedback.is_empty() {
            self.make_feedback(now);
        }
        self.feedback.pop_front()
    }

    fn make_feedback(&mut self, now: Instant) {
        let keep = 1.0 - self.stats.loss_estimate.clamp(0.0, 0.5);
        let retry = self.topup_retry();
        let mut requests = Vec::new();
        for (&block, rx) in &mut self.blocks {
            if let Rx::Missing(t) = rx {
                if *t <= now {
                    requests.push(Feedback::NeedMore {
                        block,
                        symbols: WHOLE_BLOCK,
                    });
                    *t = now + retry;
                }
                continue;
            }
            let Rx::Partial(p) = rx else { continue };
            if p.next_request > now {
                continue;
            }
            let have = u32::try_from(p.esis.len()).unwrap_or(u32::MAX);
            let missing = f64::from(u32::from(p.header.k).saturating_sub(have));
            // Ask for enough that `missing` arrive at the measured loss.
            let symbols = (missing / keep).ceil() + f64::from(self.config.topup_margin);
            let symbols = symbols.clamp(1.0, f64::from(MAX_TOPUP_SYMBOLS));
            #[allow(
                clippy::cast_possible_truncation,
                reason = "clamped to [1, MAX_TOPUP_SYMBOLS]"
            )]
            let symbols = symbols as u32;
            requests.push(Feedback::NeedMore { block, symbols });
            p.next_request = now + retry;
        }
        self.stats.topup_requests += requests.len() as u64;
        for r in requests {
            self.push_feedback(r);
        }
        if self.next_report.is_some_and(|t| t <= now) {
            self.report(now);
        }
    }

    fn report(&mut self, now: Instant) {
        let (mut expected, mut received) = (0u64, 0u64);
        for rec in self.loss.values_mut() {
            expected += u64::from(rec.sent - rec.reported_sent);
            received += u64::from(rec.received - rec.reported_received);
            rec.reported_sent = rec.sent;
            rec.reported_received = rec.received;
        }
        // Records of delivered blocks that went quiet are done with.
        let settle = self.config.topup_retry;
        let next = self.next_deliver;
        let cap = usize::try_from(self.config.max_blocks).unwrap_or(usize::MAX) * 2;
        self.loss
            .retain(|&b, rec| b >= next || rec.last + settle > now);
        while self.loss.len() > cap {
            self.loss.pop_first();
        }
        let expected = u32::try_from(expected).unwrap_or(u32::MAX);
        let received = u32::try_from(received).unwrap_or(u32::MAX).min(expected);
        if expected > 0 {
            let sample = 1.0 - f64::from(received) / f64::from(expected);
            let w = crate::encoder::sample_weight(0.25, expected);
            let l = &mut self.stats.loss_estimate;
            *l += w * (sample - *l);
        }
        let decoded_below = self.decoded_below();
        if expected > 0 || decoded_below != self.reported_below || std::mem::take(&mut self.reack) {
            self.reported_below = decoded_below;
            self.push_feedback(Feedback::Report {
                decoded_below,
                expected,
                received,
            });
        }
        let active = !self.loss.is_empty() || decoded_below != self.reported_below;
        self.next_report = active.then(|| now + self.config.report_interval);
    }

    /// Bytes held in incomplete and undelivered blocks (symbols and items).
    pub fn buffered_bytes(&self) -> usize {
        let held = self.blocks.values().map(|b| match b {
            Rx::Partial(p) => p.esis.len() * usize::from(p.header.symbol_size),
            Rx::Done(items) => items.iter().map(Vec::len).sum(),
            Rx::Delivered | Rx::Missing(_) => 0,
        });
        held.sum::<usize>() + self.ready.iter().map(Vec::len).sum::<usize>()
    }

    /// Counters.
    pub fn stats(&self) -> &DecoderStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests;
