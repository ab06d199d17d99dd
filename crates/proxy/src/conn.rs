//! One tunnelled TCP connection: both directions over one QUIC stream.
//!
//! Four futures run together per connection (on one task):
//! - the **reader** parses the peer's [`Msg`]s and routes them: frames to the
//!   decode pump, acknowledgements and resend requests to the encode pump;
//! - the **encode pump** cuts what the local socket sends into frames: what
//!   a read returns is framed at once when the coder is free, and bytes
//!   gather (up to the frame cap) only while an earlier frame is still being
//!   coded or the link is backed up; timer coalescing (`flush_idle`) is
//!   opt-in. It codes them (the model through the scheduler when
//!   it can finish in time, zstd or raw otherwise) and keeps every frame until
//!   the peer acknowledges it, so that a frame that fails at the peer can be
//!   resent model-free;
//! - the **decode pump** decodes the peer's frames, writes verified bytes to
//!   the local socket, acknowledges them, and asks for a resend when a frame
//!   fails its checksum;
//! - the **writer** puts both pumps' messages on the QUIC stream.
//!
//! Memory per connection is bounded: at most `limits.buffer` bytes read from
//! the socket and not yet acknowledged, one frame being decoded, and small
//! bounded channels between the futures.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::FutureExt;
use llmpack_codec::{
    ByteVocab, DecodeError, EncodedFrame, LaneId, LmParams, Policy, StreamConfig, StreamDecoder,
    StreamEncoder, Vocabulary,
};
use llmpack_frame::fec_items::{ITEM_PAYLOAD, ItemKind};
use llmpack_frame::policy::{self, Choice};
use llmpack_frame::protocol::{FinStep, FrameStep, Inbound, Inbox, Receiving, Restarted, Sending};
use llmpack_frame::{FrameHeader, Msg};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::ConnError;
use crate::fec_link::{Attached, FecRx, FecTx};
use crate::load::{ConnCosts, InFlight, LinkLoad};
use crate::sched::{SchedError, Scheduler, Work};

/// QUIC application error code for a stream reset by LLMPack.
pub const RESET_CODE: u32 = 1;

/// What one tunnel's connections are coded with; fixed per link.
#[derive(Debug)]
pub struct Coding {
    /// The tunnel's name (metrics label, logs).
    pub tunnel: String,
    /// `proxy` role label for metrics: "sender" or "receiver".
    pub role: &'static str,
    /// Codecs this end sends with.
    pub policy: Policy,
    /// Text both ends start the model context from.
    pub primer: Vec<u8>,
    /// The model context rule; `None` when the link has no model coding.
    pub lm: Option<LmParams>,
    /// zstd level for zstd frames; `None`: by the link's rate (see
    /// [`zstd_level_for`]).
    pub zstd_level: Option<i32>,
    /// The model's vocabulary, or bytes when there is no model.
    pub vocab: Arc<dyn Vocabulary>,
    /// The scheduler of the model instance, if model coding is on.
    pub sched: Option<Scheduler>,
    /// Frames go model-free when the model would take longer than this.
    pub max_delay: Duration,
    /// Buffering and framing limits.
    pub limits: Limits,
    /// Metric handles, looked up once per connection.
    pub metrics: ConnMetrics,
    /// The link's rate, queue and measured frame costs.
    pub link: Arc<LinkLoad>,
}

/// How fast zstd compresses frames on this machine, per level: moving
/// averages over every frame this process compressed, input bytes/s.
#[derive(Debug)]
pub struct ZstdSpeed([std::sync::atomic::AtomicU64; 23]);

/// This process's zstd speeds.
pub static ZSTD_SPEED: ZstdSpeed = ZstdSpeed::new();

impl ZstdSpeed {
    /// No measurements yet.
    const fn new() -> Self {
        ZstdSpeed([const { std::sync::atomic::AtomicU64::new(0) }; 23])
    }

    fn slot(&self, level: i32) -> &std::sync::atomic::AtomicU64 {
        let i = usize::try_from(level.clamp(0, 22)).unwrap_or(0);
        &self.0[i]
    }

    /// Input bytes/s at `level`; 0 before the first measurement.
    pub fn get(&self, level: i32) -> u64 {
        self.slot(level).load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Adds one measurement at `level`: `bytes` compressed in `took`
    /// (frames of under 512 bytes are too short to time and are ignored;
    /// smaller frames count, since their per-frame cost is what an
    /// interactive connection pays).
    pub fn record(&self, level: i32, bytes: u64, took: Duration) {
        if bytes < 512 {
            return;
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX).max(1);
        let now = u64::try_from(u128::from(bytes) * 1_000_000_000 / u128::from(nanos))
            .unwrap_or(u64::MAX / 2)
            .min(u64::MAX / 2);
        let slot = self.slot(level);
        let old = slot.load(std::sync::atomic::Ordering::Relaxed);
        // A quarter of the new value: smooth, but a machine that gets busy
        // shows within a few frames. (Racing updates lose one sample.)
        let avg = if old == 0 {
            now
        } else {
            old - old / 4 + now / 4
        };
        slot.store(avg, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Frames in a row a connection may skip zstd before it tries zstd on one
/// again, to keep the speed measurement current.
const ZSTD_PROBE_EVERY: u32 = 32;

/// Whether the next frame should skip zstd under `auto`: the link (`rate`,
/// bytes/s) delivers bytes faster than zstd (`speed`, input bytes/s)
/// compresses them, so the link would wait for zstd, and the frame gets
/// there sooner uncompressed (unknown rate or speed: try zstd).
pub fn link_outruns_zstd(rate: u64, speed: u64) -> bool {
    rate > 0 && speed > 0 && rate > speed
}

/// A direction of a connection, as seen from this end.
#[derive(Debug, Clone, Copy)]
pub enum Dir {
    /// What this end receives (from the link, or from its socket for `app`).
    In = 0,
    /// What this end sends.
    Out = 1,
}

/// Metric handles of one frame codec in one direction.
#[derive(Debug, Clone)]
pub struct FrameMetrics {
    frames: metrics::Counter,
    bytes_in: metrics::Counter,
    bytes_out: metrics::Counter,
    bits_per_byte: metrics::Histogram,
}

/// A connection's metric handles: bytes at the socket (`app`) and on the
/// link per direction, and frames per direction and codec.
#[derive(Debug, Clone)]
pub struct ConnMetrics {
    app: [metrics::Counter; 2],
    link: [metrics::Counter; 2],
    frames: [[FrameMetrics; 3]; 2],
    /// Input bytes the model coded (what it carried of this end's traffic).
    model_bytes: metrics::Counter,
    /// Wire bytes the model saved against the model-free cost, estimated.
    model_saved: metrics::Counter,
}

impl ConnMetrics {
    /// The handles of tunnel `tunnel` at an end of role `role`.
    pub fn new(tunnel: &str, role: &'static str) -> Self {
        let dirs = ["in", "out"];
        let bytes = |name: &'static str, d: &'static str| metrics::counter!(name, "tunnel" => tunnel.to_string(), "role" => role, "direction" => d);
        let frame = |d: &'static str, codec: llmpack_frame::Codec| {
            let labels = [
                ("tunnel", tunnel.to_string()),
                ("role", role.to_string()),
                ("direction", d.to_string()),
                ("codec", codec.name().to_string()),
            ];
            FrameMetrics {
                frames: metrics::counter!("llmpack_frames_total", &labels),
                bytes_in: metrics::counter!("llmpack_frame_bytes_in_total", &labels),
                bytes_out: metrics::counter!("llmpack_frame_bytes_out_total", &labels),
                bits_per_byte: metrics::histogram!("llmpack_frame_bits_per_byte", &labels),
            }
        };
        ConnMetrics {
            app: dirs.map(|d| bytes("llmpack_app_bytes_total", d)),
            link: dirs.map(|d| bytes("llmpack_link_bytes_total", d)),
            frames: dirs.map(|d| llmpack_frame::Codec::ALL.map(|c| frame(d, c))),
            model_bytes: metrics::counter!("llmpack_model_coded_bytes_total", "tunnel" => tunnel.to_string(), "role" => role),
            model_saved: metrics::counter!("llmpack_model_saved_bytes_total", "tunnel" => tunnel.to_string(), "role" => role),
        }
    }
}

/// Framing and buffering limits of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Frame size cap, bytes.
    pub frame: usize,
    /// Most bytes read from the socket and not yet acknowledged by the peer.
    pub buffer: usize,
    /// Opt-in coalescing: a partial frame waits until the socket has been
    /// quiet this long (0: it goes out at once when the coder is free) ...
    pub flush_idle: Duration,
    /// ... or until its first byte has waited this long.
    pub flush_max: Duration,
}

impl Coding {
    fn stream_config(&self, policy: Policy, lm: bool) -> StreamConfig {
        StreamConfig {
            policy,
            zstd_level: self.zstd_level.unwrap_or(3),
            lm: if lm { self.lm } else { None },
            ..StreamConfig::default()
        }
    }

    fn lane(&self) -> LaneId {
        self.sched.as_ref().map_or(0, Scheduler::new_lane)
    }

    fn release(&self, lane: Option<LaneId>) {
        if let (Some(s), Some(l)) = (&self.sched, lane) {
            s.release(l);
        }
    }

    fn encoder(&self, primer: &[u8]) -> Box<StreamEncoder> {
        let cfg = self.stream_config(self.policy, self.lm.is_some());
        Box::new(StreamEncoder::new(
            self.lane(),
            cfg,
            self.vocab.clone(),
            primer,
        ))
    }

    fn decoder(&self, primer: &[u8]) -> Box<StreamDecoder> {
        let cfg = self.stream_config(Policy::Auto, self.lm.is_some());
        Box::new(StreamDecoder::new(
            self.lane(),
            &cfg,
            self.vocab.clone(),
            primer,
        ))
    }

    /// The coders of a model-free resend (no lane, fresh zstd history).
    fn resend_config(&self) -> StreamConfig {
        self.stream_config(Policy::Zstd, false)
    }

    fn rebuilt_primer(&self, tail: &[u8]) -> Vec<u8> {
        let mut p = self.primer.clone();
        p.extend_from_slice(tail);
        p
    }

    /// The goodput rule's decision for the next frame, from `pending`
    /// bytes (see [`llmpack_frame::policy`]).
    fn choose(&self, pending: usize, costs: &ConnCosts) -> Choice {
        // A model frame's bytes are usable once this end has coded it and
        // the peer has decoded it, at about the same speed: both count.
        let model = match (&self.sched, self.policy) {
            (Some(s), Policy::Auto | Policy::Lm) => Some(2.0 * s.secs_per_byte()),
            _ => None,
        };
        let i = policy::Inputs {
            pending,
            frame: self.limits.frame,
            forced: self.policy == Policy::Lm,
            model_secs_per_byte: model,
            max_delay: self.max_delay.as_secs_f64(),
            link_rate: self.link.rate() as f64,
            link_queue: self.link.busy_secs() * self.link.rate() as f64,
            lm_cost: costs.lm(&self.link),
            free_cost: costs.free(&self.link),
        };
        let c = policy::choose(&i);
        tracing::trace!(?i, ?c, "codec choice");
        c
    }

    /// Counts a sent frame toward the link's queue, the measured costs and
    /// the model's metrics; returns its wire bytes.
    fn account(&self, costs: &mut ConnCosts, f: &EncodedFrame, tried_model: bool) -> u64 {
        let wire = f.wire_len() + 1;
        let input = f.header.orig_len as usize;
        self.link.wrote(wire as u64);
        if self.sched.is_none() {
            return wire as u64;
        }
        let lm = f.header.codec == llmpack_frame::Codec::Lm;
        if lm {
            // What the model saved against the model-free cost measured
            // on this connection (or its link): the goodput it added.
            let saved = costs.free(&self.link) * input as f64 - wire as f64;
            if saved >= 1.0 {
                // Positive and at most a frame's bytes: whole bytes survive.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                self.metrics.model_saved.increment(saved as u64);
            }
            self.metrics.model_bytes.increment(input as u64);
        }
        costs.record(&self.link, tried_model, input, wire);
        wire as u64
    }

    fn count_frame(&self, dir: Dir, f: &FrameHeader) {
        let m = &self.metrics.frames[dir as usize][usize::from(f.codec.to_byte()).min(2)];
        m.frames.increment(1);
        m.bytes_in.increment(u64::from(f.orig_len));
        m.bytes_out
            .increment(u64::from(f.payload_len) + llmpack_frame::FRAME_HEADER_LEN as u64);
        if f.orig_len > 0 {
            m.bits_per_byte
                .record(8.0 * f64::from(f.payload_len) / f64::from(f.orig_len));
        }
    }
}

/// The zstd level for a link delivering `rate` bytes/s (0: unknown): the
/// smallest output zstd can make while it still outruns the link on one core
/// (16 KiB frames with a 128 KiB prefix: level 19 ~2 MB/s, 9 ~15 MB/s, 3 ~30
/// MB/s and more on this project's 2-core machine).
pub fn zstd_level_for(rate: u64) -> i32 {
    match rate {
        0 => 3,
        r if r < 256 << 10 => 19,
        r if r < 2 << 20 => 9,
        _ => 3,
    }
}

/// Control messages for the encode pump: the peer's ack and resend
/// requests of this end's frames.
#[derive(Debug)]
enum Ctl {
    Ack(u64),
    Resend(u64),
}

/// Carries one connection until both directions are done. `expect_opened`:
/// this end sent `Open` and the peer's first message must be `Opened`.
/// With `fec`, the messages after `Open` / `Opened` travel on the link's
/// FEC datagrams instead of the stream (see [`crate::fec_link`]).
/// On error, the caller resets the stream and the socket.
pub(crate) async fn carry(
    tcp: &mut TcpStream,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    coding: &Coding,
    expect_opened: bool,
    initial: BytesMut,
    fec: Option<Attached>,
) -> Result<(), ConnError> {
    let (rd, wr) = tcp.split();
    let (out_tx, out_rx) = mpsc::channel::<Msg>(64);
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(4);
    let (ctl_tx, ctl_rx) = mpsc::channel::<Ctl>(1024);
    let (fec_tx, fec_rx) = match fec {
        Some(a) => (Some(a.tx), Some(a.rx)),
        None => (None, None),
    };
    tokio::try_join!(
        reader(
            recv,
            initial,
            in_tx,
            ctl_tx,
            Inbox::new(expect_opened),
            coding,
            fec_rx
        ),
        writer(send, out_rx, coding, fec_tx),
        encode_pump(rd, ctl_rx, out_tx.clone(), coding),
        decode_pump(wr, in_rx, out_tx, coding),
    )?;
    Ok(())
}

/// Reads more of the peer's messages from the stream into `inbox`;
/// `false` at their end.
async fn read_stream(recv: &mut quinn::RecvStream, inbox: &mut Inbox) -> Result<bool, ConnError> {
    match recv.read_chunk(64 << 10, true).await {
        Ok(Some(chunk)) => {
            inbox.push(&chunk.bytes);
            Ok(true)
        }
        Ok(None) => Ok(false),
        Err(e) => Err(ConnError::Stream(e.to_string())),
    }
}

/// What the stream still carries in datagram-fec mode: `Opened` or
/// `Refused` on the sender's side, then only its end or a reset.
struct StreamSide {
    open: bool,
    /// Parses `Opened` / `Refused` where this end sent `Open`.
    inbox: Inbox,
}

/// Reads more of the peer's messages from its FEC items into `buf`; `false`
/// at their end. Meanwhile reads the stream: `Opened` / `Refused`, a reset.
/// An item means the receiver carries the connection, so it counts as
/// `Opened` even before that arrives (a lost packet then costs the data
/// nothing).
async fn read_fec(
    recv: &mut quinn::RecvStream,
    rx: &mut FecRx,
    side: &mut StreamSide,
    inbox: &mut Inbox,
) -> Result<bool, ConnError> {
    loop {
        tokio::select! {
            it = rx.recv() => {
                inbox.opened();
                return match it {
                    Some(it) if it.kind() == ItemKind::Msgs => {
                        inbox.push(it.payload());
                        Ok(true)
                    }
                    Some(_) => Ok(false),
                    None => Err(ConnError::Stream(
                        "the FEC link closed or dropped this connection".into(),
                    )),
                };
            },
            r = recv.read_chunk(4096, true), if side.open => match r {
                Ok(None) => {
                    side.open = false;
                    side.inbox.finish()?;
                }
                Ok(Some(c)) => {
                    if !side.inbox.awaiting_opened() {
                        return Err(ConnError::Protocol(
                            "stream data after Opened in datagram-fec mode".into(),
                        ));
                    }
                    side.inbox.push(&c.bytes);
                    if let Some(m) = side.inbox.poll()? {
                        return Err(ConnError::Protocol(format!(
                            "expected only Opened on the stream, got {m:?}"
                        )));
                    }
                    if !side.inbox.awaiting_opened() {
                        inbox.opened();
                    }
                }
                Err(e) => return Err(ConnError::Stream(e.to_string())),
            },
        }
    }
}

async fn reader(
    recv: &mut quinn::RecvStream,
    initial: BytesMut,
    frames: mpsc::Sender<Inbound>,
    ctl: mpsc::Sender<Ctl>,
    mut inbox: Inbox,
    coding: &Coding,
    mut fec: Option<FecRx>,
) -> Result<(), ConnError> {
    let mut side = StreamSide {
        open: true,
        inbox: Inbox::new(inbox.awaiting_opened()),
    };
    inbox.push(&initial);
    loop {
        while let Some(m) = inbox.poll()? {
            match m {
                Inbound::Ack(seq) => {
                    let _ = ctl.send(Ctl::Ack(seq)).await;
                }
                Inbound::Resend(seq) => {
                    let _ = ctl.send(Ctl::Resend(seq)).await;
                }
                m => {
                    if let Inbound::Frame { header, .. } = &m {
                        coding.metrics.link[Dir::In as usize].increment(
                            u64::from(header.payload_len)
                                + llmpack_frame::FRAME_HEADER_LEN as u64
                                + 1,
                        );
                    }
                    frames
                        .send(m)
                        .await
                        .map_err(|_| ConnError::Protocol("data after the peer's Fin".into()))?;
                }
            }
        }
        let more = match fec.as_mut() {
            None => read_stream(recv, &mut inbox).await?,
            Some(rx) => read_fec(recv, rx, &mut side, &mut inbox).await?,
        };
        if !more {
            inbox.finish()?;
            return Ok(());
        }
    }
}

async fn writer(
    send: &mut quinn::SendStream,
    mut rx: mpsc::Receiver<Msg>,
    coding: &Coding,
    mut fec: Option<FecTx>,
) -> Result<(), ConnError> {
    let mut buf = Vec::with_capacity(64 << 10);
    while let Some(m) = rx.recv().await {
        buf.clear();
        m.encode(&mut buf);
        // Coalesce what is already queued into one write.
        while buf.len() < (64 << 10) {
            match rx.try_recv() {
                Ok(m) => m.encode(&mut buf),
                Err(_) => break,
            }
        }
        match &mut fec {
            None => send
                .write_all(&buf)
                .await
                .map_err(|e| ConnError::Stream(e.to_string()))?,
            Some(tx) => {
                for chunk in buf.chunks(ITEM_PAYLOAD) {
                    tx.send(ItemKind::Msgs, chunk).await?;
                }
            }
        }
        coding.metrics.link[Dir::Out as usize].increment(buf.len() as u64);
    }
    if let Some(tx) = &mut fec {
        tx.send(ItemKind::End, &[]).await?;
        // The stream carried only Open / Opened; its end tells nothing.
        let _ = send.finish();
        return Ok(());
    }
    send.finish()
        .map_err(|e| ConnError::Stream(e.to_string()))?;
    Ok(())
}

type Coded = Pin<Box<dyn Future<Output = Result<Work, SchedError>> + Send>>;

/// The sending direction: the protocol state ([`Sending`]) and its coder.
struct Outbound<'a> {
    coding: &'a Coding,
    /// Wire cost per input byte this connection's frames got, per kind.
    costs: ConnCosts,
    /// Wire bytes of the frames the peer has not acknowledged, on the link.
    in_flight: InFlight,
    enc: Option<Box<StreamEncoder>>,
    out: mpsc::Sender<Msg>,
    proto: Sending,
}

impl Outbound<'_> {
    /// Sends a coded frame; `tried_model`: the model had it (and coded it,
    /// or lost to zstd / raw).
    async fn send_frame(
        &mut self,
        f: EncodedFrame,
        data: Vec<u8>,
        tried_model: bool,
    ) -> Result<(), ConnError> {
        self.coding.count_frame(Dir::Out, &f.header);
        let wire = self.coding.account(&mut self.costs, &f, tried_model);
        let seq = self.proto.sent(data);
        self.in_flight.sent(seq, wire);
        self.msg(Msg::Frame {
            header: f.header,
            payload: f.payload,
        })
        .await
    }

    async fn msg(&self, m: Msg) -> Result<(), ConnError> {
        self.out
            .send(m)
            .await
            .map_err(|_| ConnError::Stream("writer stopped".into()))
    }

    /// The peer could not decode frame `seq`: resend it and every later
    /// frame model-free, then go on with a context rebuilt from the bytes.
    async fn restart(&mut self, seq: u64) -> Result<(), ConnError> {
        let resend = self.proto.on_resend(seq)?;
        let frames = u32::try_from(resend.bytes.len())
            .map_err(|_| ConnError::Protocol("resend too long".into()))?;
        tracing::warn!(
            tunnel = %self.coding.tunnel, seq, frames,
            "peer failed to decode a frame; resending model-free and rebuilding the context"
        );
        metrics::counter!("llmpack_resends_total", "tunnel" => self.coding.tunnel.clone(), "role" => self.coding.role)
            .increment(1);
        self.msg(Msg::Restart { seq, frames }).await?;
        let mut free = StreamEncoder::new(
            0,
            self.coding.resend_config(),
            Arc::new(ByteVocab::default()),
            b"",
        );
        for data in resend.bytes {
            free.push(data);
            let f = free.take_frame().expect("model-free frames finish in push");
            self.coding.count_frame(Dir::Out, &f.header);
            self.msg(Msg::Frame {
                header: f.header,
                payload: f.payload,
            })
            .await?;
        }
        if let Some(old) = self.enc.take() {
            self.coding.release(old.used_lane());
        }
        self.enc = Some(
            self.coding
                .encoder(&self.coding.rebuilt_primer(self.proto.tail())),
        );
        Ok(())
    }
}

async fn encode_pump<R: AsyncRead + Unpin>(
    mut rd: R,
    mut ctl: mpsc::Receiver<Ctl>,
    out: mpsc::Sender<Msg>,
    coding: &Coding,
) -> Result<(), ConnError> {
    let limits = coding.limits;
    let mut o = Outbound {
        coding,
        enc: Some(coding.encoder(&coding.primer)),
        costs: ConnCosts::default(),
        in_flight: InFlight::new(coding.link.clone()),
        out,
        proto: Sending::new(),
    };
    let mut pending = BytesMut::new();
    let mut first_at = Instant::now();
    let mut last_read = Instant::now();
    let mut eof = false;
    let mut in_flight: Option<(Coded, Vec<u8>)> = None;
    let mut deferred_resend: Option<u64> = None;
    // Frames in a row sent without trying zstd (see `link_outruns_zstd`).
    let mut zstd_skipped = 0u32;
    let result = loop {
        if in_flight.is_none() {
            if let Some(seq) = deferred_resend.take() {
                o.restart(seq).await?;
            }
            if eof && pending.is_empty() {
                if !o.proto.fin_sent() {
                    o.msg(Msg::Fin).await?;
                    o.proto.fin();
                }
                if o.proto.all_acked() {
                    break Ok(());
                }
            }
            let due = !pending.is_empty()
                && (limits.flush_max.is_zero() || pending.len() >= limits.frame || eof || {
                    let now = Instant::now();
                    now >= last_read + limits.flush_idle || now >= first_at + limits.flush_max
                });
            if due {
                let choice = coding.choose(pending.len(), &o.costs);
                let n = choice.bytes();
                let data: Vec<u8> = pending.split_to(n).to_vec();
                if !pending.is_empty() {
                    first_at = Instant::now();
                }
                let allow = choice.model();
                let mut enc = o.enc.take().expect("encoder present between frames");
                let rate = coding.link.rate();
                let level = coding.zstd_level.unwrap_or_else(|| zstd_level_for(rate));
                enc.set_zstd_level(level);
                let skip = coding.policy == Policy::Auto
                    && zstd_skipped < ZSTD_PROBE_EVERY
                    && link_outruns_zstd(rate, ZSTD_SPEED.get(level));
                zstd_skipped = if skip { zstd_skipped + 1 } else { 0 };
                enc.set_zstd(!skip);
                let before = enc.zstd_work();
                enc.push_with(data.clone(), allow);
                let after = enc.zstd_work();
                ZSTD_SPEED.record(level, after.0 - before.0, after.1.saturating_sub(before.1));
                match enc.take_frame() {
                    Some(f) => {
                        o.enc = Some(enc);
                        o.send_frame(f, data, false).await?;
                    }
                    None => {
                        let sched = coding.sched.clone().expect("lm frames need the scheduler");
                        let busy = coding.link.busy_secs();
                        let fut: Coded =
                            Box::pin(async move { sched.run_with(Work::Encode(enc), busy).await });
                        in_flight = Some((fut, data));
                    }
                }
                continue;
            }
        }
        let room =
            o.proto.unacked_bytes() + pending.len() < limits.buffer && pending.len() < limits.frame;
        let deadline = if pending.is_empty() {
            Instant::now() + Duration::from_secs(3600)
        } else {
            (last_read + limits.flush_idle).min(first_at + limits.flush_max)
        };
        tokio::select! {
            c = ctl.recv() => match c {
                Some(Ctl::Ack(seq)) => {
                    o.proto.on_ack(seq)?;
                    o.in_flight.acked(seq);
                }
                Some(Ctl::Resend(seq)) => {
                    if in_flight.is_some() {
                        deferred_resend = Some(seq);
                    } else {
                        o.restart(seq).await?;
                    }
                }
                None => {
                    if eof && pending.is_empty() && o.proto.all_acked() && in_flight.is_none() {
                        break Ok(());
                    }
                    break Err(ConnError::Stream("the peer closed the stream before acknowledging our data".into()));
                }
            },
            r = async {
                let was_empty = pending.is_empty();
                pending.reserve(limits.frame.max(64 << 10));
                rd.read_buf(&mut pending).await.map(|n| (n, was_empty))
            }, if !eof && room => {
                let (n, was_empty) = r?;
                if n == 0 {
                    eof = true;
                } else {
                    if was_empty {
                        first_at = Instant::now();
                    }
                    last_read = Instant::now();
                    coding.metrics.app[Dir::In as usize].increment(n as u64);
                }
            }
            w = async { in_flight.as_mut().expect("guarded").0.as_mut().await }, if in_flight.is_some() => {
                let (_, data) = in_flight.take().expect("guarded");
                let mut enc = match w {
                    Ok(Work::Encode(enc)) => enc,
                    Ok(Work::Decode(_)) => unreachable!("an encoder comes back as an encoder"),
                    Err(e) => {
                        // The model call failed and took the coder with it:
                        // this frame goes model-free from a coder rebuilt on
                        // the bytes sent so far. The peer's context differs
                        // from the rebuilt one, so its next model frame fails
                        // its check and the resend brings both ends together.
                        tracing::warn!(
                            tunnel = %coding.tunnel, error = %e,
                            "model call failed; frame sent model-free, context rebuilt"
                        );
                        metrics::counter!("llmpack_model_failures_total", "tunnel" => coding.tunnel.clone(), "role" => coding.role)
                            .increment(1);
                        let mut enc = coding.encoder(&coding.rebuilt_primer(o.proto.tail()));
                        enc.push_with(data.clone(), false);
                        enc
                    }
                };
                let f = enc.take_frame().expect("finished frames: the scheduler's, or model-free");
                o.enc = Some(enc);
                o.send_frame(f, data, true).await?;
            }
            _ = tokio::time::sleep_until(deadline), if !pending.is_empty() => {}
        }
    };
    if let Some(enc) = o.enc.take() {
        coding.release(enc.used_lane());
    }
    result
}

async fn decode_pump<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut frames: mpsc::Receiver<Inbound>,
    out: mpsc::Sender<Msg>,
    coding: &Coding,
) -> Result<(), ConnError> {
    let send = |m: Msg| {
        let out = out.clone();
        async move {
            out.send(m)
                .await
                .map_err(|_| ConnError::Stream("writer stopped".into()))
        }
    };
    let mut dec = coding.decoder(&coding.primer);
    let mut proto = Receiving::new();
    let result = loop {
        let Some(msg) = frames.recv().await else {
            break Err(ConnError::Stream(
                "the peer's stream ended without Fin".into(),
            ));
        };
        match msg {
            Inbound::Frame { header, payload } => {
                if proto.on_frame()? == FrameStep::Skip {
                    continue;
                }
                coding.count_frame(Dir::In, &header);
                dec.push(header, payload);
                let output = match dec.take_output() {
                    Some(o) => o,
                    None => {
                        let sched = coding
                            .sched
                            .as_ref()
                            .expect("decoders have a lane only with a scheduler");
                        match sched.run(Work::Decode(dec)).await {
                            Ok(Work::Decode(d)) => {
                                dec = d;
                                dec.take_output().expect("finished frames have output")
                            }
                            Ok(Work::Encode(_)) => {
                                unreachable!("a decoder comes back as a decoder")
                            }
                            Err(e) => {
                                // The model call failed and took the decoder:
                                // ask for a model-free resend, as for a frame
                                // that failed its check. Until the peer's
                                // Restart replaces it, frames are skipped, so
                                // a model-free placeholder stands in.
                                metrics::counter!("llmpack_model_failures_total", "tunnel" => coding.tunnel.clone(), "role" => coding.role)
                                    .increment(1);
                                dec = Box::new(StreamDecoder::new(
                                    0,
                                    &coding.resend_config(),
                                    Arc::new(ByteVocab::default()),
                                    b"",
                                ));
                                Err(DecodeError::Model(e.to_string()))
                            }
                        }
                    }
                };
                match output {
                    Ok(data) => {
                        wr.write_all(&data).await?;
                        coding.metrics.app[Dir::Out as usize].increment(data.len() as u64);
                        let step = proto.decoded(&data);
                        send(Msg::Ack { seq: step.ack }).await?;
                        if step.rebuild {
                            coding.release(dec.used_lane());
                            dec = coding.decoder(&coding.rebuilt_primer(proto.tail()));
                        }
                        if step.finished {
                            wr.shutdown().await?;
                            break Ok(());
                        }
                    }
                    Err(e) => {
                        let seq = proto.failed();
                        log_failure(coding, seq, &e);
                        send(Msg::Resend { seq }).await?;
                    }
                }
            }
            Inbound::Restart { seq, frames: n } => {
                let Restarted::ModelFree { .. } = proto.on_restart(seq, n)?;
                coding.release(dec.used_lane());
                dec = Box::new(StreamDecoder::new(
                    0,
                    &coding.resend_config(),
                    Arc::new(ByteVocab::default()),
                    b"",
                ));
            }
            Inbound::Fin => {
                if proto.on_fin()? == FinStep::Finished {
                    wr.shutdown().await?;
                    break Ok(());
                }
            }
            Inbound::Ack(_) | Inbound::Resend(_) => {
                break Err(ConnError::Protocol("control message routed as data".into()));
            }
        }
    };
    coding.release(dec.used_lane());
    result
}

fn log_failure(coding: &Coding, seq: u64, e: &DecodeError) {
    tracing::warn!(
        tunnel = %coding.tunnel, seq, error = %e,
        "frame failed to decode; asking for a model-free resend"
    );
    metrics::counter!("llmpack_decode_failures_total", "tunnel" => coding.tunnel.clone(), "role" => coding.role)
        .increment(1);
}

/// Resets the stream and the socket after a failed connection.
pub fn abort(tcp: &TcpStream, send: &mut quinn::SendStream, recv: &mut quinn::RecvStream) {
    let code = quinn::VarInt::from_u32(RESET_CODE);
    let _ = send.reset(code);
    let _ = recv.stop(code);
    // Zero linger makes the close below send a TCP reset.
    #[allow(deprecated)]
    let _ = tcp.set_linger(Some(Duration::ZERO));
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>(_: T) {}
    let _ = |c: &'static Coding,
             t: &'static mut TcpStream,
             s: &'static mut quinn::SendStream,
             r: &'static mut quinn::RecvStream| {
        is_send(carry(t, s, r, c, false, BytesMut::new(), None).boxed());
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_is_skipped_only_when_the_link_is_faster() {
        assert!(!link_outruns_zstd(0, 50 << 20), "unknown link rate");
        assert!(!link_outruns_zstd(100 << 20, 0), "zstd not measured yet");
        assert!(!link_outruns_zstd(1 << 20, 50 << 20), "slow link: compress");
        assert!(link_outruns_zstd(100 << 20, 50 << 20), "fast link: raw");
    }

    #[test]
    fn zstd_speed_averages_per_level() {
        let s = ZstdSpeed::new();
        s.record(5, 100, Duration::from_millis(1));
        assert_eq!(s.get(5), 0, "short frames are not timed");
        s.record(5, 1 << 20, Duration::from_millis(100));
        let first = s.get(5);
        assert!((10_000_000..11_000_000).contains(&first), "{first}");
        // A 4x slower frame moves the average a quarter of the way.
        s.record(5, 1 << 20, Duration::from_millis(400));
        let second = s.get(5);
        assert!(second < first && second > first / 2, "{first} -> {second}");
        assert_eq!(s.get(19), 0, "levels are kept apart");
        assert_eq!(s.get(99), s.get(22), "levels beyond 22 share its slot");
    }
}
