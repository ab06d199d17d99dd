//! Sender side: items into blocks, blocks into RaptorQ symbol datagrams.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use raptorq::{EncodingPacket, ObjectTransmissionInformation, SourceBlockEncoder};

use crate::items::{self, PREFIX_LEN};
use crate::wire::{SymbolHeader, source_symbols};
use crate::{
    FecError, Feedback, HEADER_LEN, MAX_BLOCK_BYTES, MAX_ESI, MAX_EXTRA_SYMBOLS, MAX_ITEM_LEN,
    MAX_SYMBOL_SIZE, MIN_SYMBOL_SIZE, WHOLE_BLOCK,
};

/// Sender configuration.
#[derive(Debug, Clone)]
pub struct EncoderConfig {
    /// Close a block once it holds this many bytes (prefixes included).
    pub block_bytes: usize,
    /// Close a block once its first item has waited this long.
    pub block_delay: Duration,
    /// Repair ratio until the first loss report arrives.
    pub repair_ratio: f64,
    /// Lowest adaptive repair ratio.
    pub min_ratio: f64,
    /// Highest adaptive repair ratio.
    pub max_ratio: f64,
    /// Weight of a new loss report in the moving average, in `(0, 1]`.
    pub loss_weight: f64,
    /// Blocks held until decoded; [`BlockEncoder::push`] refuses beyond this.
    pub max_blocks_in_flight: usize,
    /// Top-ups granted per block before it falls back to the reliable path.
    pub max_topups: u32,
    /// A block with no feedback this long after its last symbol falls back.
    pub ack_timeout: Duration,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            // ~50 symbols at a 1200-byte datagram: cheap to decode, small loss variance.
            block_bytes: 64 * 1024,
            // Adds at most 10 ms of latency to a lone message.
            block_delay: Duration::from_millis(10),
            // Covers a few % loss before the first report arrives.
            repair_ratio: 0.05,
            min_ratio: 0.02,
            max_ratio: 1.0,
            loss_weight: 0.25,
            max_blocks_in_flight: 32,
            max_topups: 4,
            // Several round trips on a long-delay link.
            ack_timeout: Duration::from_secs(2),
        }
    }
}

impl EncoderConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), FecError> {
        let bad = |field, why| Err(FecError::Config { field, why });
        let max = usize::try_from(MAX_BLOCK_BYTES).unwrap_or(usize::MAX);
        if self.block_bytes == 0 || self.block_bytes > max {
            return bad("block_bytes", "must be in [1, MAX_BLOCK_BYTES]");
        }
        let ratio_ok = |r: f64| (0.0..=4.0).contains(&r);
        if !ratio_ok(self.min_ratio) || !ratio_ok(self.max_ratio) || self.min_ratio > self.max_ratio
        {
            return bad(
                "min_ratio/max_ratio",
                "need 0 <= min_ratio <= max_ratio <= 4",
            );
        }
        if !(self.min_ratio..=self.max_ratio).contains(&self.repair_ratio) {
            return bad("repair_ratio", "must be in [min_ratio, max_ratio]");
        }
        if !(self.loss_weight > 0.0 && self.loss_weight <= 1.0) {
            return bad("loss_weight", "must be in (0, 1]");
        }
        if self.max_blocks_in_flight == 0 {
            return bad("max_blocks_in_flight", "must be at least 1");
        }
        Ok(())
    }
}

/// Items of a block given up on: send them on the reliable path and hand them
/// to [`BlockDecoder::handle_fallback`](crate::BlockDecoder::handle_fallback)
/// with the same block number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The block they replace.
    pub block: u32,
    /// Its items, in order.
    pub items: Vec<Vec<u8>>,
}

/// Sender counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncoderStats {
    /// Source symbols sent.
    pub source_symbols: u64,
    /// Repair symbols sent with blocks (not top-ups).
    pub repair_symbols: u64,
    /// Repair symbols sent in answer to [`Feedback::NeedMore`].
    pub topup_symbols: u64,
    /// Top-ups granted.
    pub topups: u64,
    /// Blocks encoded.
    pub blocks: u64,
    /// Blocks given up and handed to [`BlockEncoder::poll_fallback`].
    pub fallbacks: u64,
    /// Tail probes: one repair symbol resent for a block with no feedback
    /// (see [`BlockEncoder::handle_timeout`]).
    pub probes: u64,
    /// Repair ratio in force.
    pub repair_ratio: f64,
    /// Moving average of the loss the receiver reports.
    pub loss_estimate: f64,
}

struct Open {
    data: Vec<u8>,
    first_at: Instant,
}

struct Encoded {
    encoder: SourceBlockEncoder,
    header: SymbolHeader,
    next_repair: u32,
    topups: u32,
    deadline: Option<Instant>,
    /// When to send a tail probe if no feedback has come.
    probe_at: Option<Instant>,
    probes: u32,
    /// When the block's next datagram may go, if two of its datagrams fit
    /// in one packet (see [`spacing`](crate::spacing)).
    gate: Option<Gate>,
}

/// The next datagram of a small block waits until either holds: then it
/// cannot share a packet with the block's previous one.
#[derive(Clone, Copy)]
struct Gate {
    /// The previous one has left the sender's queues by then.
    at: Instant,
    /// A packet's worth of other datagrams went after the previous one.
    sent_bytes: u64,
}

impl Gate {
    fn open(self, now: Instant, sent_bytes: u64) -> bool {
        self.at <= now || self.sent_bytes <= sent_bytes
    }
}

/// Tail probes per block: a block whose every symbol was lost is unknown to
/// the receiver, which therefore cannot ask for it (it asks for a block it
/// skipped only once a later one arrives, and the last block of an exchange
/// has none after it). A probe, one fresh repair symbol, makes the block
/// known (or, if the block was decoded and the feedback lost, draws a new
/// report), so a lost tail costs a few round trips instead of the whole
/// `ack_timeout` and a fallback.
const MAX_PROBES: u32 = 2;
/// Least wait before a tail probe.
const PROBE_MIN: Duration = Duration::from_millis(25);

struct TxBlock {
    data: Vec<u8>,
    encoded: Option<Encoded>,
    /// Closed by [`BlockEncoder::flush`]: the last of a burst (see
    /// [`TAIL_FAILURE`](repair::TAIL_FAILURE)).
    tail: bool,
}

/// Sender state machine; see the crate docs.
pub struct BlockEncoder {
    config: EncoderConfig,
    open: Option<Open>,
    next_block: u32,
    blocks: BTreeMap<u32, TxBlock>,
    queue: VecDeque<(u32, Vec<u8>)>,
    /// Datagrams of small blocks held back until their block's [`Gate`]
    /// opens, each block's in order (see [`spacing`](crate::spacing)).
    spaced: VecDeque<(u32, Vec<u8>)>,
    /// Bytes of all datagrams handed out.
    sent_bytes: u64,
    fallbacks: VecDeque<Fallback>,
    loss: Option<f64>,
    /// Symbols reported and lost over the long run (see [`CLEAN_RUN`](repair::CLEAN_RUN)).
    long_run: (f64, f64),
    /// Fractional repair symbols owed on a clean path (see [`LOW_LOSS`](repair::LOW_LOSS)).
    credit: f64,
    /// Feedback freed a block since the last `handle_timeout`.
    progressed: bool,
    rtt: Duration,
    stats: EncoderStats,
}

impl std::fmt::Debug for BlockEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockEncoder")
            .field("next_block", &self.next_block)
            .field("blocks", &self.blocks.len())
            .field("queued", &self.queue.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl BlockEncoder {
    /// A new encoder; fails if the config is out of range.
    pub fn new(config: EncoderConfig) -> Result<Self, FecError> {
        config.validate()?;
        let stats = EncoderStats {
            repair_ratio: config.repair_ratio,
            ..EncoderStats::default()
        };
        Ok(BlockEncoder {
            config,
            open: None,
            next_block: 0,
            blocks: BTreeMap::new(),
            queue: VecDeque::new(),
            spaced: VecDeque::new(),
            sent_bytes: 0,
            fallbacks: VecDeque::new(),
            loss: None,
            long_run: (0.0, 0.0),
            credit: 0.0,
            progressed: false,
            rtt: Duration::ZERO,
            stats,
        })
    }

    /// Tells the encoder the path's round-trip time: a block waits at least
    /// four of them for feedback before it falls back.
    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt;
    }

    fn ack_timeout(&self) -> Duration {
        self.config.ack_timeout.max(self.rtt * 4)
    }

    /// Wait after a block's last symbol before a tail probe: two round
    /// trips, at least [`PROBE_MIN`], plus `block_delay`.
    fn probe_after(&self) -> Duration {
        (self.rtt * 2).max(PROBE_MIN) + self.config.block_delay
    }

    /// The first held datagram whose block's gate is open (or whose block
    /// is gone: the caller drops it).
    fn pop_spaced(&mut self, now: Instant) -> Option<(u32, Vec<u8>)> {
        let mut waiting: Vec<u32> = Vec::new();
        for i in 0..self.spaced.len() {
            let id = self.spaced[i].0;
            if waiting.contains(&id) {
                continue;
            }
            let gate = self.blocks.get(&id).and_then(|b| b.encoded.as_ref()?.gate);
            if gate.is_none_or(|g| g.open(now, self.sent_bytes)) {
                return self.spaced.remove(i);
            }
            waiting.push(id);
        }
        None
    }

    /// Whether [`push`](Self::push) would refuse: too many blocks in flight.
    pub fn is_full(&self) -> bool {
        self.blocks.len() >= self.config.max_blocks_in_flight
    }

    /// Appends an item to the current block.
    pub fn push(&mut self, now: Instant, item: &[u8]) -> Result<(), FecError> {
        if item.len() > MAX_ITEM_LEN {
            return Err(FecError::ItemTooLarge { len: item.len() });
        }
        if self.is_full() {
            return Err(FecError::Full);
        }
        let needed = PREFIX_LEN + item.len();
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.data.len() + needed > self.config.block_bytes)
        {
            self.close(false);
        }
        let open = self.open.get_or_insert_with(|| Open {
            data: Vec::new(),
            first_at: now,
        });
        items::append(&mut open.data, item);
        if open.data.len() >= self.config.block_bytes {
            self.close(false);
        }
        Ok(())
    }

    /// Closes the open block now, without waiting for `block_delay`: for a
    /// caller whose link is idle, where waiting for more items only adds
    /// latency. The block is the last of a burst, so it gets enough repair
    /// symbols that it needs a top-up at most 1 % of the time.
    pub fn flush(&mut self) {
        self.close(true);
    }

    fn close(&mut self, tail: bool) {
        if let Some(open) = self.open.take() {
            let data = open.data;
            self.blocks.insert(
                self.next_block,
                TxBlock {
                    data,
                    encoded: None,
                    tail,
                },
            );
            self.next_block = self.next_block.wrapping_add(1);
        }
    }

    /// The next deadline: a block to close or a block whose feedback is overdue.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let open = self
            .open
            .as_ref()
            .map(|o| o.first_at + self.config.block_delay);
        let acks = self
            .blocks
            .values()
            .filter_map(|b| b.encoded.as_ref()?.deadline);
        let spaced = (self.spaced.iter())
            .filter_map(|(id, _)| Some(self.blocks.get(id)?.encoded.as_ref()?.gate?.at))
            .min();
        let probe = if self.queue.is_empty() && self.spaced.is_empty() {
            (self.blocks.values().rev())
                .find_map(|b| b.encoded.as_ref())
                .and_then(|e| e.probe_at)
        } else {
            None
        };
        open.into_iter()
            .chain(acks)
            .chain(spaced)
            .chain(probe)
            .min()
    }

    /// Handles expired deadlines; [`poll_transmit`](Self::poll_transmit) calls it too.
    pub fn handle_timeout(&mut self, now: Instant) {
        if std::mem::take(&mut self.progressed) {
            // The receiver is decoding: feedback is slow (a queue on the
            // way back), not absent. A block it really lost is asked for
            // once a later one arrives; only when feedback stops does the
            // deadline run out.
            let until = now + self.ack_timeout();
            for enc in self.blocks.values_mut().filter_map(|b| b.encoded.as_mut()) {
                if let Some(d) = enc.deadline.as_mut() {
                    *d = (*d).max(until);
                }
            }
        }
        if self
            .open
            .as_ref()
            .is_some_and(|o| o.first_at + self.config.block_delay <= now)
        {
            self.close(false);
        }
        let overdue: Vec<u32> = (self.blocks.iter())
            .filter(|(_, b)| {
                b.encoded
                    .as_ref()
                    .and_then(|e| e.deadline)
                    .is_some_and(|d| d <= now)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in overdue {
            self.give_up(id);
        }
        // Only the newest block sent is probed, and only while nothing
        // else waits to go: any later symbol that arrives shows the
        // receiver the blocks before it, and it asks for those itself.
        let probe_after = self.probe_after();
        if !self.queue.is_empty() || !self.spaced.is_empty() {
            return;
        }
        let Some((&id, enc)) =
            (self.blocks.iter_mut().rev()).find_map(|(id, b)| Some((id, b.encoded.as_mut()?)))
        else {
            return;
        };
        if enc.probe_at.is_none_or(|t| t > now) {
            return;
        }
        let k = u32::from(enc.header.k);
        if enc.probes >= MAX_PROBES || k + enc.next_repair + 1 > MAX_ESI {
            enc.probe_at = None;
            return;
        }
        // Backs off: the second probe waits twice as long.
        enc.probes += 1;
        enc.probe_at = Some(now + probe_after * (enc.probes + 1));
        if let Some(p) = enc.encoder.repair_packets(enc.next_repair, 1).pop() {
            self.queue.push_front((id, datagram(enc.header, p)));
            enc.next_repair += 1;
            self.stats.probes += 1;
        }
    }

    /// The next datagram to send, at most `max_datagram` bytes (quinn's
    /// `max_datagram_size()` now), or `None` when there is nothing to send.
    pub fn poll_transmit(&mut self, now: Instant, max_datagram: usize) -> Option<Vec<u8>> {
        self.handle_timeout(now);
        let timeout = self.ack_timeout();
        let probe_after = self.probe_after();
        let spacing = crate::spacing(self.rtt);
        loop {
            let due = self.pop_spaced(now).map(|(id, d)| (id, d, true));
            let next = due.or_else(|| self.queue.pop_front().map(|(id, d)| (id, d, false)));
            if let Some((id, datagram, was_spaced)) = next {
                let Some(enc) = self.blocks.get_mut(&id).and_then(|b| b.encoded.as_mut()) else {
                    continue; // decoded or given up meanwhile
                };
                if datagram.len() > max_datagram {
                    self.give_up(id); // the path shrank below this block's symbols
                    continue;
                }
                let len = u64::try_from(datagram.len()).unwrap_or(u64::MAX);
                if datagram.len().saturating_mul(2) <= max_datagram {
                    let shut = enc.gate.is_some_and(|g| !g.open(now, self.sent_bytes));
                    if !was_spaced && (shut || self.spaced.iter().any(|(b, _)| *b == id)) {
                        // Too soon after the block's previous datagram, or
                        // earlier ones of it wait: queue behind them.
                        self.spaced.push_back((id, datagram));
                        continue;
                    }
                    let max = u64::try_from(max_datagram).unwrap_or(u64::MAX);
                    enc.gate = Some(Gate {
                        at: now + spacing,
                        sent_bytes: self.sent_bytes + len + max,
                    });
                }
                self.sent_bytes += len;
                enc.deadline = Some(now + timeout);
                if enc.probes == 0 && enc.topups == 0 {
                    enc.probe_at = Some(now + probe_after);
                }
                return Some(datagram);
            }
            let id = *self.blocks.iter().find(|(_, b)| b.encoded.is_none())?.0;
            if self.encode(id, max_datagram).is_none() {
                self.give_up(id); // no symbol fits this datagram size
            }
        }
    }

    fn encode(&mut self, id: u32, max_datagram: usize) -> Option<()> {
        let ratio = self.stats.repair_ratio;
        let block = self.blocks.get(&id)?;
        let max_symbol = u16::try_from(max_datagram.checked_sub(HEADER_LEN)?)
            .unwrap_or(MAX_SYMBOL_SIZE)
            .min(MAX_SYMBOL_SIZE);
        if max_symbol < MIN_SYMBOL_SIZE {
            return None;
        }
        let transfer_len = u32::try_from(block.data.len()).ok()?;
        // Spread the block evenly over the fewest symbols: least padding.
        let k = source_symbols(transfer_len, max_symbol)?;
        let even = u16::try_from(transfer_len.div_ceil(u32::from(k))).ok()?;
        let symbol_size = even.max(MIN_SYMBOL_SIZE);
        let k = source_symbols(transfer_len, symbol_size)?;
        let mut padded = block.data.clone();
        padded.resize(usize::from(k) * usize::from(symbol_size), 0);
        let oti = ObjectTransmissionInformation::new(u64::from(transfer_len), symbol_size, 1, 1, 1);
        let encoder = SourceBlockEncoder::new(0, &oti, &padded);
        let tail = block.tail;
        let mut repair = self.repair_for(k, ratio);
        if tail {
            repair = repair.max(self.tail_repair(k));
        }
        let block = self.blocks.get_mut(&id)?;
        let header = SymbolHeader {
            block: id,
            k,
            symbol_size,
            transfer_len,
            esi: 0,
        };
        let packets = encoder
            .source_packets()
            .into_iter()
            .chain(encoder.repair_packets(0, repair));
        for p in packets {
            self.queue.push_back((id, datagram(header, p)));
        }
        self.stats.blocks += 1;
        self.stats.source_symbols += u64::from(k);
        self.stats.repair_symbols += u64::from(repair);
        block.encoded = Some(Encoded {
            encoder,
            header,
            next_repair: repair,
            topups: 0,
            deadline: None,
            probe_at: None,
            probes: 0,
            gate: None,
        });
        Some(())
    }

    /// Handles feedback from the receiver.
    pub fn handle_feedback(&mut self, fb: Feedback) {
        match fb {
            Feedback::Decoded { block } => {
                self.progressed |= self.blocks.remove(&block).is_some();
                self.known_up_to(block);
            }
            Feedback::NeedMore { block, symbols } => {
                self.known_up_to(block);
                self.top_up(block, symbols);
            }
            Feedback::Report {
                decoded_below,
                expected,
                received,
            } => {
                let done: Vec<u32> = self
                    .blocks
                    .range(..decoded_below)
                    .map(|(&id, _)| id)
                    .collect();
                self.progressed |= !done.is_empty();
                for id in done {
                    self.blocks.remove(&id);
                }
                self.handle_loss_report(expected, received);
            }
        }
    }

    /// The receiver has seen block `last`: it knows every block up to it
    /// and asks for any it lacks, so they need no tail probe.
    fn known_up_to(&mut self, last: u32) {
        for b in self.blocks.range_mut(..=last).map(|(_, b)| b) {
            if let Some(e) = b.encoded.as_mut() {
                e.probe_at = None;
            }
        }
    }

    fn top_up(&mut self, id: u32, symbols: u32) {
        let Some(enc) = self.blocks.get_mut(&id).and_then(|b| b.encoded.as_mut()) else {
            return; // already decoded, given up, or not sent yet
        };
        let k = u32::from(enc.header.k);
        let n = if symbols == WHOLE_BLOCK {
            let keep = 1.0
                - self
                    .loss
                    .unwrap_or(self.config.repair_ratio)
                    .clamp(0.0, 0.5);
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "k / keep <= 2 * u16::MAX"
            )]
            let need = (f64::from(k) / keep).ceil() as u32;
            need + 2
        } else {
            symbols
        }
        .min(k + MAX_EXTRA_SYMBOLS);
        if enc.topups >= self.config.max_topups || k + enc.next_repair + n > MAX_ESI {
            self.give_up(id);
            return;
        }
        enc.topups += 1;
        // Top-ups go first: a stalled block holds back every later one.
        let packets = enc.encoder.repair_packets(enc.next_repair, n);
        for p in packets.into_iter().rev() {
            self.queue.push_front((id, datagram(enc.header, p)));
        }
        enc.next_repair += n;
        self.stats.topups += 1;
        self.stats.topup_symbols += u64::from(n);
    }

    fn give_up(&mut self, id: u32) {
        if let Some(block) = self.blocks.remove(&id) {
            let items = items::split(&block.data).expect("our own blocks parse");
            self.fallbacks.push_back(Fallback { block: id, items });
            self.stats.fallbacks += 1;
        }
    }

    /// A block given up on, whose items must go on the reliable path.
    pub fn poll_fallback(&mut self) -> Option<Fallback> {
        self.fallbacks.pop_front()
    }

    /// Blocks held (closed, not yet decoded or given up).
    pub fn blocks_in_flight(&self) -> usize {
        self.blocks.len()
    }

    /// Whether nothing is held: no open block, no block awaiting feedback, no
    /// fallback waiting to be polled.
    pub fn is_idle(&self) -> bool {
        self.open.is_none() && self.blocks.is_empty() && self.fallbacks.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> &EncoderStats {
        &self.stats
    }
}

fn datagram(mut header: SymbolHeader, packet: EncodingPacket) -> Vec<u8> {
    let (id, symbol) = packet.split();
    header.esi = id.encoding_symbol_id();
    let mut v = Vec::with_capacity(HEADER_LEN + symbol.len());
    header.encode(&mut v);
    v.extend_from_slice(&symbol);
    v
}

#[cfg(test)]
impl BlockEncoder {
    /// Everything due by `now` and the datagrams spaced after it (see
    /// [`spacing`](crate::spacing)), short of tail probes.
    pub(crate) fn drain(&mut self, now: Instant, max_datagram: usize) -> Vec<Vec<u8>> {
        let step = crate::spacing(self.rtt);
        let mut out = Vec::new();
        for i in 0..8 {
            let t = now + step * i;
            out.extend(std::iter::from_fn(|| self.poll_transmit(t, max_datagram)));
        }
        out
    }
}

mod repair;
#[cfg(test)]
mod tests;

pub(crate) use repair::sample_weight;
