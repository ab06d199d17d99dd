//! The `datagram-fec` link mode: every connection's stream messages cross
//! the link as *items* in RaptorQ-protected QUIC datagrams (llmpack-fec),
//! shared by all connections of the link.
//!
//! One task per QUIC connection and end runs a [`BlockEncoder`] for what this
//! end sends and a [`BlockDecoder`] for what it receives; feedback
//! (decoded blocks, top-up requests, loss reports) travels in datagrams too.
//! A block the encoder gives up on (too many top-ups, no feedback) is resent
//! on a fresh unidirectional QUIC stream, which is reliable: nothing is lost.
//!
//! Each connection keeps its QUIC stream for `Open` / `Opened` / `Refused`
//! and for resets; its messages go into items
//! ([`llmpack_frame::fec_items`]: the item and fallback wire formats), and
//! its opening goes into its first item too ([`crate::fec_conn`]).
//! `stream` is the QUIC stream id of the connection, `seq` counts the
//! connection's items in this direction from 0. The decoder hands out a
//! block as soon as it is decoded (a stalled block holds back only the
//! connections that have items in it); the [`Routes`] table puts each
//! connection's items back in `seq` order. Items of a connection the
//! receiver has not opened yet (they can overtake `Open` on its stream) wait
//! in the table, bounded in bytes and time; when such a connection's first
//! item, its `Open`, is handed out, the receiver hears of it
//! ([`FecLink::take_opens`]) and may open the connection from it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use llmpack_fec::{BlockDecoder, BlockEncoder, EncoderStats, Fallback, FecError, Feedback};
use llmpack_frame::fec_items::{FallbackBlock, ITEM_HEADER, ITEM_PAYLOAD, ItemHeader, ItemKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::config::FecSettings;
use crate::error::ConnError;

/// Items held for connections not opened yet, or out of order, in all.
const MAX_LOOSE_BYTES: usize = 32 << 20;
/// Connections the table tracks at once (open, waiting, recently ended).
const MAX_ROUTES: usize = 16_384;
/// Items for a connection that is not opened within this are dropped.
const EARLY_TTL: Duration = Duration::from_secs(30);
/// An ended connection's entry is kept this long so that stray items for it
/// are recognised and dropped.
const DEAD_TTL: Duration = Duration::from_secs(60);
/// Longest fallback stream.
const MAX_FALLBACK_LEN: usize = llmpack_fec::MAX_BLOCK_BYTES as usize + (64 << 10);
/// Items queued from connections to the encoder.
const ITEM_QUEUE: usize = 64;
/// Connections opened by their first item and not yet taken up by the
/// receiver; past this, such a connection opens from its stream.
const OPEN_QUEUE: usize = 1024;

/// The `stream` id of a QUIC stream, as items carry it.
pub(crate) fn stream_key(id: quinn::StreamId) -> u64 {
    quinn::VarInt::from(id).into_inner()
}

enum State {
    /// Not opened by this end yet: items wait here.
    Early(VecDeque<Vec<u8>>),
    /// A connection reads them.
    Claimed(mpsc::UnboundedSender<Vec<u8>>),
    /// Ended, refused or overrun: items are dropped.
    Dead,
}

struct Route {
    /// The next `seq` to hand out.
    next: u32,
    /// Items that arrived ahead of `next`.
    held: BTreeMap<u32, Vec<u8>>,
    state: State,
    /// Bytes of this route not yet read by its connection (held, early and
    /// queued in the channel); the connection subtracts what it reads.
    bytes: Arc<AtomicUsize>,
    /// Bytes of this route counted in [`Routes::loose`].
    loose: usize,
    since: Instant,
}

impl Route {
    fn new(state: State, now: Instant) -> Self {
        Route {
            next: 0,
            held: BTreeMap::new(),
            state,
            bytes: Arc::new(AtomicUsize::new(0)),
            loose: 0,
            since: now,
        }
    }
}

/// Where decoded items go: one entry per connection of the link.
pub(crate) struct Routes {
    map: HashMap<u64, Route>,
    /// Bytes in `held` and `Early` queues of all routes.
    loose: usize,
    /// Most unread bytes one connection may have.
    route_cap: usize,
    /// Where the ids of unclaimed connections whose `Open` item is handed
    /// out go (on the receiver).
    opens: Option<mpsc::Sender<u64>>,
}

impl Routes {
    fn new(route_cap: usize, opens: Option<mpsc::Sender<u64>>) -> Self {
        Routes {
            map: HashMap::new(),
            loose: 0,
            route_cap,
            opens,
        }
    }

    fn kill(&mut self, id: u64, now: Instant) {
        if let Some(r) = self.map.get_mut(&id) {
            self.loose -= r.loose;
            r.loose = 0;
            r.held.clear();
            r.state = State::Dead;
            r.since = now;
        }
    }

    /// Routes one decoded item; returns why it was dropped, if it was.
    fn dispatch(&mut self, item: Vec<u8>, now: Instant) -> Result<(), String> {
        let ItemHeader {
            stream: id, seq, ..
        } = ItemHeader::check(&item).map_err(|e| e.to_string())?;
        if !self.map.contains_key(&id) {
            if self.map.len() >= MAX_ROUTES {
                return Err("too many connections at once".into());
            }
            self.map
                .insert(id, Route::new(State::Early(VecDeque::new()), now));
        }
        let r = self.map.get_mut(&id).expect("present");
        if matches!(r.state, State::Dead) || seq < r.next || r.held.contains_key(&seq) {
            return Ok(()); // ended connection, or a duplicate
        }
        let len = item.len();
        if r.bytes.load(Ordering::Relaxed) + len > self.route_cap
            || self.loose + len > MAX_LOOSE_BYTES
        {
            self.kill(id, now);
            return Err("a connection's unread data exceeds its bound".into());
        }
        r.bytes.fetch_add(len, Ordering::Relaxed);
        r.held.insert(seq, item);
        r.loose += len;
        self.loose += len;
        while let Some(it) = r.held.remove(&r.next) {
            r.next = r.next.wrapping_add(1);
            match &mut r.state {
                State::Claimed(tx) => {
                    r.loose -= it.len();
                    self.loose -= it.len();
                    let _ = tx.send(it); // a closed reader drops its route soon
                }
                State::Early(q) => {
                    let open = ItemHeader::check(&it).is_ok_and(|h| h.kind == ItemKind::Open);
                    q.push_back(it);
                    if let (true, Some(tx)) = (open, &self.opens) {
                        // Full: the connection opens from its stream.
                        let _ = tx.try_send(id);
                    }
                }
                State::Dead => {}
            }
        }
        Ok(())
    }

    /// This end carries connection `id` now: its items go to the returned
    /// receiver, in order.
    fn claim(
        &mut self,
        id: u64,
        now: Instant,
    ) -> Result<(mpsc::UnboundedReceiver<Vec<u8>>, Arc<AtomicUsize>), &'static str> {
        let (tx, rx) = mpsc::unbounded_channel();
        let r = self
            .map
            .entry(id)
            .or_insert_with(|| Route::new(State::Early(VecDeque::new()), now));
        match std::mem::replace(&mut r.state, State::Dead) {
            State::Early(q) => {
                for it in q {
                    r.loose -= it.len();
                    self.loose -= it.len();
                    let _ = tx.send(it);
                }
                r.state = State::Claimed(tx);
                Ok((rx, r.bytes.clone()))
            }
            State::Claimed(old) => {
                r.state = State::Claimed(old);
                Err("the connection is already open")
            }
            State::Dead => Err("the connection's data was dropped (too late or too much)"),
        }
    }

    /// Drops waiting connections nobody opened, and old ended ones.
    fn sweep(&mut self, now: Instant) {
        let mut expired = Vec::new();
        self.map.retain(|&id, r| match r.state {
            State::Early(_) if now > r.since + EARLY_TTL => {
                expired.push(id);
                true
            }
            State::Dead => now <= r.since + DEAD_TTL,
            _ => true,
        });
        for id in expired {
            warn!(
                stream = id,
                "dropping FEC data of a connection that was never opened"
            );
            self.kill(id, now);
        }
    }
}

/// The datagram-fec side of one QUIC connection.
pub(crate) struct FecLink {
    items: mpsc::Sender<Vec<u8>>,
    routes: Arc<Mutex<Routes>>,
    opens: Mutex<Option<mpsc::Receiver<u64>>>,
}

impl std::fmt::Debug for FecLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FecLink").finish_non_exhaustive()
    }
}

/// A connection's sending half on the FEC link.
pub(crate) struct FecTx {
    id: u64,
    seq: u32,
    items: mpsc::Sender<Vec<u8>>,
}

impl FecTx {
    /// Sends `payload` (at most [`ITEM_PAYLOAD`] bytes) as an item of `kind`.
    pub async fn send(&mut self, kind: ItemKind, payload: &[u8]) -> Result<(), ConnError> {
        debug_assert!(payload.len() <= ITEM_PAYLOAD);
        let mut item = Vec::with_capacity(ITEM_HEADER + payload.len());
        let header = ItemHeader {
            stream: self.id,
            seq: self.seq,
            kind,
        };
        header.encode(&mut item);
        item.extend_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        self.items
            .send(item)
            .await
            .map_err(|_| ConnError::Stream("the FEC link is closed".into()))
    }
}

/// A connection's receiving half on the FEC link; dropping it drops the
/// connection's route.
pub(crate) struct FecRx {
    id: u64,
    rx: mpsc::UnboundedReceiver<Vec<u8>>,
    bytes: Arc<AtomicUsize>,
    routes: Arc<Mutex<Routes>>,
}

impl FecRx {
    /// The peer's next item for this connection; `None` when the link is
    /// gone or this connection's data was dropped.
    pub async fn recv(&mut self) -> Option<Received> {
        let item = self.rx.recv().await?;
        self.bytes.fetch_sub(item.len(), Ordering::Relaxed);
        // Routing passed only items that check.
        let kind = ItemHeader::check(&item).ok()?.kind;
        Some(Received { kind, item })
    }
}

/// A received item, header included.
pub(crate) struct Received {
    kind: ItemKind,
    item: Vec<u8>,
}

impl Received {
    /// What the item carries.
    pub fn kind(&self) -> ItemKind {
        self.kind
    }

    /// The bytes after the header.
    pub fn payload(&self) -> &[u8] {
        &self.item[ITEM_HEADER..]
    }
}

impl Drop for FecRx {
    fn drop(&mut self) {
        if let Ok(mut r) = self.routes.lock() {
            r.kill(self.id, Instant::now());
        }
    }
}

/// Both halves of a connection on the FEC link.
pub(crate) struct Attached {
    /// Sending half.
    pub tx: FecTx,
    /// Receiving half.
    pub rx: FecRx,
}

impl FecLink {
    /// Starts the FEC task of `conn`. `route_cap` bounds one connection's
    /// unread data at this end; `opens`: connections may open from their
    /// first item (the receiver's end, see [`FecLink::take_opens`]).
    pub fn start(
        conn: quinn::Connection,
        settings: &FecSettings,
        route_cap: usize,
        role: &'static str,
        opens: bool,
    ) -> Result<Arc<FecLink>, FecError> {
        let enc = BlockEncoder::new(settings.encoder.clone())?;
        let dec = BlockDecoder::new(settings.decoder.clone())?;
        let (items, items_rx) = mpsc::channel(ITEM_QUEUE);
        let (opens_tx, opens_rx) = match opens {
            true => {
                let (tx, rx) = mpsc::channel(OPEN_QUEUE);
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let routes = Arc::new(Mutex::new(Routes::new(route_cap, opens_tx)));
        let (fb_tx, fb_rx) = mpsc::channel(16);
        tokio::spawn(accept_fallbacks(conn.clone(), fb_tx));
        tokio::spawn(run(
            conn,
            enc,
            dec,
            items_rx,
            fb_rx,
            routes.clone(),
            FecMetrics::new(role),
        ));
        Ok(Arc::new(FecLink {
            items,
            routes,
            opens: Mutex::new(opens_rx),
        }))
    }

    /// The stream ids of connections whose `Open` item arrived before this
    /// end carried them (once; `None` after the first call or where
    /// connections do not open from items).
    pub fn take_opens(&self) -> Option<mpsc::Receiver<u64>> {
        self.opens.lock().ok()?.take()
    }

    /// Connection `stream` is carried by this end from now on.
    pub fn attach(&self, stream: u64) -> Result<Attached, ConnError> {
        let mut routes = self
            .routes
            .lock()
            .map_err(|_| ConnError::Stream("FEC route table poisoned".into()))?;
        let (rx, bytes) = routes
            .claim(stream, Instant::now())
            .map_err(|e| ConnError::Protocol(format!("FEC link: {e}")))?;
        Ok(Attached {
            tx: FecTx {
                id: stream,
                seq: 0,
                items: self.items.clone(),
            },
            rx: FecRx {
                id: stream,
                rx,
                bytes,
                routes: self.routes.clone(),
            },
        })
    }
}

/// Counters of the FEC task, labelled with the end's role.
struct FecMetrics {
    source: metrics::Counter,
    repair: metrics::Counter,
    topup: metrics::Counter,
    topups: metrics::Counter,
    fallbacks: metrics::Counter,
    received: metrics::Counter,
    rejected: metrics::Counter,
    decoded: metrics::Counter,
    recovered: metrics::Counter,
    ratio: metrics::Gauge,
    loss: metrics::Gauge,
    last_enc: EncoderStats,
    last_dec: llmpack_fec::DecoderStats,
}

impl FecMetrics {
    fn new(role: &'static str) -> Self {
        let c = |name: &'static str| metrics::counter!(name, "role" => role);
        let sym = |kind: &'static str| metrics::counter!("llmpack_fec_symbols_sent_total", "role" => role, "kind" => kind);
        FecMetrics {
            source: sym("source"),
            repair: sym("repair"),
            topup: sym("topup"),
            topups: c("llmpack_fec_topups_total"),
            fallbacks: c("llmpack_fec_fallbacks_total"),
            received: c("llmpack_fec_symbols_received_total"),
            rejected: c("llmpack_fec_rejected_total"),
            decoded: c("llmpack_fec_blocks_decoded_total"),
            recovered: c("llmpack_fec_blocks_recovered_total"),
            ratio: metrics::gauge!("llmpack_fec_repair_ratio", "role" => role),
            loss: metrics::gauge!("llmpack_fec_loss", "role" => role),
            last_enc: EncoderStats::default(),
            last_dec: llmpack_fec::DecoderStats::default(),
        }
    }

    fn update(&mut self, enc: &EncoderStats, dec: &llmpack_fec::DecoderStats) {
        let d = |now: u64, last: u64| now.saturating_sub(last);
        let l = &self.last_enc;
        self.source
            .increment(d(enc.source_symbols, l.source_symbols));
        self.repair
            .increment(d(enc.repair_symbols, l.repair_symbols));
        self.topup.increment(d(enc.topup_symbols, l.topup_symbols));
        self.topups.increment(d(enc.topups, l.topups));
        self.fallbacks.increment(d(enc.fallbacks, l.fallbacks));
        let l = &self.last_dec;
        self.received
            .increment(d(dec.symbols_received, l.symbols_received));
        self.rejected.increment(d(dec.rejected, l.rejected));
        self.decoded
            .increment(d(dec.blocks_decoded, l.blocks_decoded));
        self.recovered
            .increment(d(dec.blocks_recovered, l.blocks_recovered));
        self.ratio.set(enc.repair_ratio);
        self.loss.set(enc.loss_estimate);
        self.last_enc = enc.clone();
        self.last_dec = dec.clone();
    }
}

async fn run(
    conn: quinn::Connection,
    enc: BlockEncoder,
    dec: BlockDecoder,
    items: mpsc::Receiver<Vec<u8>>,
    fallbacks: mpsc::Receiver<(u32, Vec<Vec<u8>>)>,
    routes: Arc<Mutex<Routes>>,
    m: FecMetrics,
) {
    let (mut enc, mut dec) = (enc, dec);
    let why = drive(&conn, &mut enc, &mut dec, items, fallbacks, &routes, m).await;
    if conn.close_reason().is_none() {
        // Connections would wait forever on a link without its FEC side:
        // close it, so that they fail and the sender dials again.
        warn!(reason = why, "FEC link failed; closing the QUIC connection");
        conn.close(llmpack_transport::CLOSE_PROTOCOL, why.as_bytes());
    }
    let (e, d) = (enc.stats(), dec.stats());
    tracing::info!(
        blocks_sent = e.blocks,
        source = e.source_symbols,
        repair = e.repair_symbols,
        topup_symbols = e.topup_symbols,
        topups = e.topups,
        fallbacks = e.fallbacks,
        probes = e.probes,
        peer_loss = format_args!("{:.3}", e.loss_estimate),
        received = d.symbols_received,
        decoded = d.blocks_decoded,
        recovered = d.blocks_recovered,
        topup_requests = d.topup_requests,
        peer_fallbacks = d.fallbacks,
        "FEC link closed"
    );
}

async fn drive(
    conn: &quinn::Connection,
    enc: &mut BlockEncoder,
    dec: &mut BlockDecoder,
    mut items: mpsc::Receiver<Vec<u8>>,
    mut fallbacks: mpsc::Receiver<(u32, Vec<Vec<u8>>)>,
    routes: &Mutex<Routes>,
    mut m: FecMetrics,
) -> &'static str {
    // Datagrams waiting for room in quinn's send buffer: feedback first.
    let mut control: VecDeque<Bytes> = VecDeque::new();
    let mut pending: Option<Bytes> = None;
    let mut sweep_at = Instant::now() + Duration::from_secs(5);
    let mut items_open = true;
    loop {
        let now = Instant::now();
        let std_now = now.into_std();
        let rtt = conn.rtt();
        enc.set_rtt(rtt);
        dec.set_rtt(rtt);
        let probes = enc.stats().probes;
        enc.handle_timeout(std_now);
        if enc.stats().probes != probes {
            debug!(probes = enc.stats().probes, "FEC tail probe");
        }
        {
            let Ok(mut r) = routes.lock() else {
                return "route table poisoned";
            };
            while let Some(item) = dec.poll_item() {
                if let Err(why) = r.dispatch(item, now) {
                    warn!(why, "FEC link: dropped an item from the peer");
                }
            }
            if now >= sweep_at {
                r.sweep(now);
                sweep_at = now + Duration::from_secs(5);
            }
        }
        while let Some(fb) = dec.poll_feedback(std_now) {
            if let Feedback::NeedMore { block, symbols } = fb {
                debug!(block, symbols, "FEC asking the peer for a top-up");
            }
            let mut b = Vec::with_capacity(Feedback::MAX_LEN);
            fb.encode(&mut b);
            if control.len() >= 256 {
                control.pop_front(); // feedback is a hint; newer is better
            }
            control.push_back(b.into());
        }
        while let Some(f) = enc.poll_fallback() {
            debug!(
                block = f.block,
                items = f.items.len(),
                "FEC block falls back to a stream"
            );
            tokio::spawn(send_fallback(conn.clone(), f));
        }
        let Some(max_dg) = conn.max_datagram_size() else {
            return "the peer no longer accepts datagrams";
        };
        if pending.is_none() {
            pending = control
                .pop_front()
                .or_else(|| enc.poll_transmit(std_now, max_dg).map(Bytes::from));
        }
        m.update(enc.stats(), dec.stats());
        let deadline = [enc.poll_timeout(), dec.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .map_or(sweep_at, |t| Instant::from_std(t).min(sweep_at));
        tokio::select! {
            d = conn.read_datagram() => match d {
                Ok(d) => on_datagram(enc, dec, std_now, &d),
                Err(_) => return "connection closed",
            },
            it = items.recv(), if items_open && !enc.is_full() => match it {
                Some(it) => {
                    let mut next = Some(it);
                    while let Some(it) = next.take() {
                        if let Err(e) = enc.push(Instant::now().into_std(), &it) {
                            // Bounded by the writer, so this is a bug, not the peer.
                            warn!(error = %e, "FEC link: item refused by the encoder");
                        }
                        if !enc.is_full() {
                            next = items.try_recv().ok();
                        }
                    }
                    // An idle link sends at once; a busy one lets the block
                    // fill (up to block_bytes / block_delay) meanwhile.
                    if pending.is_none() && control.is_empty() {
                        enc.flush();
                    }
                }
                None => items_open = false,
            },
            f = fallbacks.recv() => {
                if let Some((block, its)) = f {
                    dec.handle_fallback(std_now, block, its);
                }
            }
            r = conn.send_datagram_wait(pending.clone().unwrap_or_default()), if pending.is_some() => {
                pending = None;
                match r {
                    Ok(()) => {}
                    // The path's datagram limit shrank (MTU discovery backed
                    // off) under a symbol already made: it counts as lost, and
                    // the encoder gives its block up if top-ups no longer fit.
                    Err(quinn::SendDatagramError::TooLarge) => {
                        debug!("FEC datagram over the shrunk path limit dropped");
                    }
                    Err(quinn::SendDatagramError::ConnectionLost(_)) => return "connection closed",
                    Err(_) => return "the link stopped taking datagrams",
                }
            }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

fn on_datagram(enc: &mut BlockEncoder, dec: &mut BlockDecoder, now: std::time::Instant, d: &[u8]) {
    match d.first() {
        Some(0xF0) => {
            if let Err(e) = dec.handle_datagram(now, d) {
                debug!(error = %e, "FEC symbol dropped");
            }
        }
        Some(_) => {
            let mut b = d;
            match Feedback::decode(&mut b) {
                Ok(fb) => {
                    if let Feedback::NeedMore { block, symbols } = fb {
                        debug!(block, symbols, "FEC top-up asked by the peer");
                    }
                    enc.handle_feedback(fb);
                }
                Err(e) => debug!(error = %e, "FEC feedback dropped"),
            }
        }
        None => {}
    }
}

/// Sends a given-up block's items on a unidirectional stream.
async fn send_fallback(conn: quinn::Connection, f: Fallback) {
    let block = f.block;
    let fb = FallbackBlock {
        block,
        items: f.items,
    };
    let r = async {
        let mut buf = Vec::new();
        fb.encode(&mut buf).map_err(|e| e.to_string())?;
        let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
        s.write_all(&buf).await.map_err(|e| e.to_string())?;
        s.finish().map_err(|e| e.to_string())
    }
    .await;
    match r {
        Err(e) if conn.close_reason().is_none() => {
            warn!(block, error = %e, "FEC fallback not sent");
        }
        Err(e) => debug!(block, error = %e, "FEC fallback not sent: link closed"),
        Ok(()) => {}
    }
}

async fn accept_fallbacks(conn: quinn::Connection, tx: mpsc::Sender<(u32, Vec<Vec<u8>>)>) {
    while let Ok(mut s) = conn.accept_uni().await {
        let tx = tx.clone();
        let conn = conn.clone();
        tokio::spawn(async move {
            match s.read_to_end(MAX_FALLBACK_LEN).await {
                Ok(b) => match FallbackBlock::parse(&b) {
                    Ok(f) => {
                        let _ = tx.send((f.block, f.items)).await;
                    }
                    Err(e) => {
                        warn!(error = %e, "malformed FEC fallback stream from the peer; dropped")
                    }
                },
                Err(e) if conn.close_reason().is_none() => {
                    warn!(error = %e, "FEC fallback stream failed");
                }
                Err(e) => debug!(error = %e, "FEC fallback stream cut by the link closing"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND_MSGS: u8 = ItemKind::Msgs as u8;
    const KIND_END: u8 = ItemKind::End as u8;

    /// An item's bytes; `kind` as a byte, so that tests can send unknown ones.
    fn item(id: u64, seq: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        let h = ItemHeader {
            stream: id,
            seq,
            kind: ItemKind::Msgs,
        };
        h.encode(&mut b);
        b[ITEM_HEADER - 1] = kind;
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn routes_reorder_hold_early_items_and_drop_dead_ones() {
        let now = Instant::now();
        let mut r = Routes::new(1 << 20, None);
        r.dispatch(item(4, 1, KIND_MSGS, b"b"), now).unwrap();
        r.dispatch(item(4, 0, KIND_MSGS, b"a"), now).unwrap();
        r.dispatch(item(4, 0, KIND_MSGS, b"a"), now).unwrap(); // duplicate
        let (mut rx, bytes) = r.claim(4, now).unwrap();
        assert_eq!(rx.try_recv().unwrap(), item(4, 0, KIND_MSGS, b"a"));
        assert_eq!(rx.try_recv().unwrap(), item(4, 1, KIND_MSGS, b"b"));
        assert!(rx.try_recv().is_err());
        assert_eq!(bytes.load(Ordering::Relaxed), 2 * (ITEM_HEADER + 1));
        assert_eq!(r.loose, 0);
        r.dispatch(item(4, 3, KIND_END, b""), now).unwrap();
        assert!(rx.try_recv().is_err(), "seq 2 is missing");
        r.dispatch(item(4, 2, KIND_MSGS, b"c"), now).unwrap();
        assert_eq!(rx.try_recv().unwrap(), item(4, 2, KIND_MSGS, b"c"));
        assert_eq!(rx.try_recv().unwrap(), item(4, 3, KIND_END, b""));
        assert!(r.claim(4, now).is_err(), "claimed twice");
        r.kill(4, now);
        r.dispatch(item(4, 4, KIND_MSGS, b"x"), now).unwrap();
        assert!(rx.try_recv().is_err(), "dead routes take nothing");
        assert!(r.dispatch(item(5, 0, 9, b""), now).is_err(), "unknown kind");
        assert!(r.dispatch(vec![1, 2, 3], now).is_err(), "short item");
    }

    #[test]
    fn routes_are_bounded() {
        let now = Instant::now();
        let mut r = Routes::new(100, None);
        r.dispatch(item(1, 0, KIND_MSGS, &[0; 50]), now).unwrap();
        assert!(r.dispatch(item(1, 1, KIND_MSGS, &[0; 50]), now).is_err());
        assert!(r.claim(1, now).is_err(), "an overrun connection is dropped");
        assert_eq!(r.loose, 0);
        // Never-opened connections expire.
        r.dispatch(item(2, 0, KIND_MSGS, b"a"), now).unwrap();
        r.sweep(now + EARLY_TTL + Duration::from_secs(1));
        assert!(r.claim(2, now).is_err());
        assert_eq!(r.loose, 0);
        r.sweep(now + EARLY_TTL + DEAD_TTL + Duration::from_secs(2));
        assert!(r.map.is_empty());
    }

    proptest::proptest! {
        /// Whatever a peer's decoded items hold, routing never panics, each
        /// connection sees its items once and in order, and what is held is
        /// bounded.
        #[test]
        fn routing_hostile_items_is_safe(
            items in proptest::collection::vec(
                (0u64..4, 0u32..8, 0u8..3, proptest::collection::vec(proptest::num::u8::ANY, 0..64)),
                0..200,
            ),
            junk in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..20), 0..20),
        ) {
            let now = Instant::now();
            let mut r = Routes::new(2048, None);
            let (mut rx, _) = r.claim(1, now).unwrap();
            for j in junk {
                let _ = r.dispatch(j, now);
            }
            for (id, seq, kind, payload) in items {
                let _ = r.dispatch(item(id, seq, kind, &payload), now);
                proptest::prop_assert!(r.loose <= MAX_LOOSE_BYTES);
                for route in r.map.values() {
                    proptest::prop_assert!(route.bytes.load(Ordering::Relaxed) <= 2048);
                }
            }
            let mut last = None;
            while let Ok(it) = rx.try_recv() {
                let seq = u32::from_le_bytes(it[8..12].try_into().unwrap());
                proptest::prop_assert!(last.is_none_or(|l: u32| seq == l + 1), "in order, no gaps");
                proptest::prop_assert!(last.is_some() || seq == 0);
                last = Some(seq);
            }
        }
    }
}
