//! One tunnelled TCP connection: both directions over one QUIC stream.
//!
//! Four futures run together per connection (on one task):
//! - the **reader** parses the peer's [`Msg`]s and routes them: frames to the
//!   decode pump, acknowledgements and resend requests to the encode pump;
//! - the **encode pump** reads the local socket into the sending direction's
//!   state machine ([`Outgoing`]), which decides when bytes become a frame
//!   and which coder takes it, and keeps every frame until the peer
//!   acknowledges it; the pump codes the frames it cuts (the model through
//!   the scheduler, zstd or raw at once), sends them, and resends model-free
//!   what the peer failed;
//! - the **decode pump** decodes the peer's frames, writes verified bytes to
//!   the local socket, acknowledges them, and asks for a resend when a frame
//!   fails its checksum;
//! - the **writer** puts both pumps' messages on the QUIC stream; it holds
//!   the decode pump's acks ([`DelayedAck`]) so that they ride with the next
//!   message instead of costing a packet each.
//!
//! Memory per connection is bounded: at most `limits.buffer` bytes read from
//! the socket and not yet acknowledged, one frame being decoded, and small
//! bounded channels between the futures.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use llmpack_codec::{ByteVocab, DecodeError, EncodedFrame, StreamDecoder, StreamEncoder};
use llmpack_frame::fec_items::{ITEM_PAYLOAD, ItemKind};
use llmpack_frame::opening::{Opening, Path as OpeningPath};
use llmpack_frame::outgoing::{Cut, Outgoing, Step};
use llmpack_frame::protocol::{
    ACK_DELAY, DelayedAck, FinStep, FrameStep, Inbound, Inbox, Receiving, Resend, Restarted,
};
use llmpack_frame::{Codec, Msg};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::coding::{Coding, Dir, ZSTD_SPEED};
use crate::error::ConnError;
use crate::fec_conn::{FecSource, StreamSlot, read_fec, watch};
use crate::fec_link::{Attached, FecTx};
use crate::load::{ConnCosts, InFlight};
use crate::sched::{SchedError, Work};

/// QUIC application error code for a stream reset by LLMPack.
pub const RESET_CODE: u32 = 1;

/// Control messages for the encode pump: the peer's ack and resend
/// requests of this end's frames.
#[derive(Debug)]
enum Ctl {
    Ack(u64),
    Resend(u64),
}

/// What the pumps hand the writer.
#[derive(Debug)]
enum Out {
    /// A message to send as it is.
    Msg(Msg),
    /// The peer's frames up to `seq` (`bytes` more of its data) are
    /// verified: held by the writer's [`DelayedAck`] to ride with the next
    /// message; `urgent` for the peer's last frame.
    Ack {
        seq: u64,
        bytes: usize,
        urgent: bool,
    },
    /// The peer's direction ended: send a held ack now.
    FlushAcks,
}

/// How a connection reaches its peer.
pub(crate) enum Carrier<'a> {
    /// Stream mode: every message on the connection's QUIC stream.
    Stream {
        /// The stream's sending half.
        send: &'a mut quinn::SendStream,
        /// The stream's receiving half.
        recv: &'a mut quinn::RecvStream,
        /// This end sent `Open`: the peer's first message must be `Opened`.
        expect_opened: bool,
        /// The peer's bytes already read from the stream.
        initial: BytesMut,
    },
    /// datagram-fec mode: messages in FEC items, the openings on both the
    /// stream and the items (see [`crate::fec_conn`]).
    Fec {
        /// The connection on the link's FEC side.
        fec: Attached,
        /// The connection's stream, here or to come.
        stream: &'a mut StreamSlot,
        /// The peer's opening as far as it came: the receiver's holds the
        /// `Open` it acted on.
        opening: Opening,
    },
}

/// Carries one connection until both directions are done. On error, the
/// caller resets the stream and the socket.
pub(crate) async fn carry(
    tcp: &mut TcpStream,
    coding: &Coding,
    carrier: Carrier<'_>,
) -> Result<(), ConnError> {
    let (rd, wr) = tcp.split();
    let (out_tx, out_rx) = mpsc::channel::<Out>(64);
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(4);
    let (ctl_tx, ctl_rx) = mpsc::channel::<Ctl>(1024);
    let (source, sink, inbox, initial, watcher) = match carrier {
        Carrier::Stream {
            send,
            recv,
            expect_opened,
            initial,
        } => (
            Source::Stream(recv),
            Sink::Stream(send),
            Inbox::new(expect_opened),
            initial,
            None,
        ),
        Carrier::Fec {
            fec,
            stream,
            opening,
        } => {
            let (open_tx, open_rx) = mpsc::channel(1);
            let peer_opening = opening.awaits(OpeningPath::Stream);
            let source = Source::Fec(FecSource {
                rx: fec.rx,
                openings: open_rx,
                opening,
            });
            // The openings travel beside the inbox, which sees only data.
            let watcher = watch(stream, peer_opening, open_tx);
            (
                source,
                Sink::Fec(fec.tx),
                Inbox::new(false),
                BytesMut::new(),
                Some(watcher),
            )
        }
    };
    let run = async {
        tokio::try_join!(
            reader(source, initial, in_tx, ctl_tx, inbox, coding),
            writer(sink, out_rx, coding),
            encode_pump(rd, ctl_rx, out_tx.clone(), coding),
            decode_pump(wr, in_rx, out_tx, coding),
        )
        .map(|_| ())
    };
    match watcher {
        None => run.await,
        // The stream only ever fails the connection: it ends with its data.
        Some(w) => tokio::select! {
            r = run => r,
            e = w => Err(e),
        },
    }
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

/// Where the reader gets the peer's messages.
enum Source<'a> {
    Stream(&'a mut quinn::RecvStream),
    Fec(FecSource),
}

/// Where the writer puts this end's messages.
enum Sink<'a> {
    Stream(&'a mut quinn::SendStream),
    Fec(FecTx),
}

async fn reader(
    mut source: Source<'_>,
    initial: BytesMut,
    frames: mpsc::Sender<Inbound>,
    ctl: mpsc::Sender<Ctl>,
    mut inbox: Inbox,
    coding: &Coding,
) -> Result<(), ConnError> {
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
        let more = match &mut source {
            Source::Stream(recv) => read_stream(recv, &mut inbox).await?,
            Source::Fec(src) => read_fec(src, &mut inbox).await?,
        };
        if !more {
            inbox.finish()?;
            return Ok(());
        }
    }
}

/// Frame payloads of at least this many bytes go to a stream as chunks of
/// their own instead of being copied into the write buffer.
const OWN_CHUNK: usize = 4 << 10;

async fn writer(
    mut sink: Sink<'_>,
    mut rx: mpsc::Receiver<Out>,
    coding: &Coding,
) -> Result<(), ConnError> {
    // Small messages and frame heads; large payloads as their own chunks
    // (stream mode: quinn takes them without a copy).
    let mut buf = BytesMut::with_capacity(16 << 10);
    let mut chunks: Vec<Bytes> = Vec::new();
    let own_chunks = matches!(sink, Sink::Stream(_));
    // A quarter of the peer's resend buffer keeps a one-way bulk transfer
    // acknowledged well before that buffer fills.
    let mut acks = DelayedAck::new(coding.limits.buffer / 4, ACK_DELAY);
    let mut open = true;
    while open {
        // The next message, or `None` when the held ack falls due.
        let woke = match acks.poll_timeout() {
            None => Some(rx.recv().await),
            Some(at) => tokio::select! {
                m = rx.recv() => Some(m),
                () = tokio::time::sleep_until(Instant::from_std(at)) => None,
            },
        };
        let mut next = match woke {
            Some(Some(m)) => Some(m),
            Some(None) => {
                open = false;
                None
            }
            None => None,
        };
        // Coalesce what is already queued into one write.
        let mut len = 0;
        while let Some(m) = next.take() {
            match m {
                Out::Msg(Msg::Frame { header, payload })
                    if own_chunks && payload.len() >= OWN_CHUNK =>
                {
                    Msg::encode_frame_head(&header, &mut buf);
                    len += buf.len() + payload.len();
                    chunks.push(buf.split().freeze());
                    chunks.push(payload);
                }
                Out::Msg(m) => m.encode(&mut buf),
                Out::Ack { seq, bytes, urgent } => {
                    acks.on_decoded(Instant::now().into_std(), seq, bytes, urgent);
                }
                Out::FlushAcks => acks.flush(),
            }
            if len + buf.len() >= (64 << 10) {
                break;
            }
            match rx.try_recv() {
                Ok(m) => next = Some(m),
                Err(mpsc::error::TryRecvError::Empty) => {}
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        // A held ack rides with any message; alone it goes when due, and
        // before the writer ends.
        let sending = !buf.is_empty() || !chunks.is_empty();
        if (sending || !open || acks.is_due(Instant::now().into_std()))
            && let Some(seq) = acks.take()
        {
            Msg::Ack { seq }.encode(&mut buf);
        }
        len += buf.len();
        if !buf.is_empty() {
            chunks.push(buf.split().freeze());
        }
        if chunks.is_empty() {
            continue;
        }
        match &mut sink {
            Sink::Stream(send) => send
                .write_all_chunks(&mut chunks)
                .await
                .map_err(|e| ConnError::Stream(e.to_string()))?,
            Sink::Fec(tx) => {
                // Only small messages here (no own chunks): one buffer.
                for part in &chunks {
                    for chunk in part.chunks(ITEM_PAYLOAD) {
                        tx.send(ItemKind::Msgs, chunk).await?;
                    }
                }
            }
        }
        chunks.clear();
        coding.metrics.link[Dir::Out as usize].increment(len as u64);
    }
    match sink {
        // The stream carries only the openings; the caller closes it.
        Sink::Fec(mut tx) => tx.send(ItemKind::End, &[]).await,
        Sink::Stream(send) => send.finish().map_err(|e| ConnError::Stream(e.to_string())),
    }
}

type Coded = Pin<Box<dyn Future<Output = Result<Work, SchedError>> + Send>>;

/// The sending direction: its state machine ([`Outgoing`]) and its coder.
struct Outbound<'a> {
    coding: &'a Coding,
    /// Wire cost per input byte this connection's frames got, per kind.
    costs: ConnCosts,
    /// Wire bytes of the frames the peer has not acknowledged, on the link.
    in_flight: InFlight,
    enc: Option<Box<StreamEncoder>>,
    out: mpsc::Sender<Out>,
    proto: Outgoing,
}

impl Outbound<'_> {
    /// Sends a coded frame of `data` (kept for a resend until the peer
    /// acknowledges it); `None`: a frame that could only go raw, whose
    /// payload is its bytes, so one buffer serves both. `tried_model`: the
    /// model had it (and coded it, or lost to zstd / raw); `tried_zstd`:
    /// zstd had it.
    async fn send_frame(
        &mut self,
        f: EncodedFrame,
        data: Option<Vec<u8>>,
        tried_model: bool,
        tried_zstd: bool,
    ) -> Result<(), ConnError> {
        self.coding.count_frame(Dir::Out, &f.header);
        let wire = self
            .coding
            .account(&mut self.costs, &f, tried_model, tried_zstd);
        let payload = Bytes::from(f.payload);
        let data = match data {
            Some(d) => Bytes::from(d),
            None if f.header.codec == Codec::Raw && payload.len() == f.header.orig_len as usize => {
                payload.clone()
            }
            // A resend must carry the original bytes: never guess them.
            None => {
                return Err(ConnError::Protocol(format!(
                    "internal: a frame without zstd or the model came out {:?}",
                    f.header.codec
                )));
            }
        };
        let seq = self.proto.handle_coded(data);
        self.in_flight.sent(seq, wire);
        self.msg(Msg::Frame {
            header: f.header,
            payload,
        })
        .await
    }

    async fn msg(&self, m: Msg) -> Result<(), ConnError> {
        self.out
            .send(Out::Msg(m))
            .await
            .map_err(|_| ConnError::Stream("writer stopped".into()))
    }

    /// Codes `cut` as the state machine said. A frame the coder finishes
    /// at once is sent; a model frame goes to the scheduler, and its
    /// future comes back with the frame's bytes.
    async fn code(&mut self, cut: Cut) -> Result<Option<(Coded, Vec<u8>)>, ConnError> {
        let Cut {
            data,
            choice,
            inputs,
            zstd_level,
            zstd,
        } = cut;
        tracing::trace!(?inputs, ?choice, "codec choice");
        let mut enc = self.enc.take().expect("encoder present between frames");
        enc.set_zstd_level(zstd_level);
        enc.set_zstd(zstd);
        let before = enc.zstd_work();
        let model = choice.model();
        // A frame that can only go raw carries the bytes themselves as its
        // payload: no second copy to keep for a resend.
        let keep = (!enc.sends_raw(model)).then(|| data.clone());
        enc.push_with(data, model);
        let after = enc.zstd_work();
        ZSTD_SPEED.record(
            zstd_level,
            after.0 - before.0,
            after.1.saturating_sub(before.1),
        );
        match enc.take_frame() {
            Some(f) => {
                self.enc = Some(enc);
                self.send_frame(f, keep, false, zstd).await?;
                Ok(None)
            }
            None => {
                let data = keep.expect("a frame the model takes is not raw-only");
                let sched = (self.coding.sched.clone()).expect("lm frames need the scheduler");
                let busy = self.coding.link.busy_secs();
                let fut: Coded =
                    Box::pin(async move { sched.run_with(Work::Encode(enc), busy).await });
                Ok(Some((fut, data)))
            }
        }
    }

    /// The peer could not decode frame `resend.seq`: resend it and every
    /// later frame model-free, then go on with a context rebuilt from the
    /// bytes.
    async fn restart(&mut self, resend: Resend) -> Result<(), ConnError> {
        let seq = resend.seq;
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
            free.push(data.to_vec());
            let f = free.take_frame().expect("model-free frames finish in push");
            self.coding.count_frame(Dir::Out, &f.header);
            self.msg(Msg::Frame {
                header: f.header,
                payload: f.payload.into(),
            })
            .await?;
        }
        if let Some(old) = self.enc.take() {
            self.coding.release(old.used_lanes());
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
    out: mpsc::Sender<Out>,
    coding: &Coding,
) -> Result<(), ConnError> {
    let read_size = coding.limits.frame.max(64 << 10);
    let mut o = Outbound {
        coding,
        enc: Some(coding.encoder(&coding.primer)),
        costs: ConnCosts::default(),
        in_flight: InFlight::new(coding.link.clone()),
        out,
        proto: Outgoing::new(coding.outgoing()),
    };
    let now = || Instant::now().into_std();
    let mut buf = BytesMut::new();
    let mut in_flight: Option<(Coded, Vec<u8>)> = None;
    let result = 'pump: loop {
        while let Some(step) = o.proto.poll(now(), || coding.measured(&o.costs))? {
            match step {
                Step::Restart(r) => o.restart(r).await?,
                Step::Fin => o.msg(Msg::Fin).await?,
                Step::Done => break 'pump Ok(()),
                Step::Frame(cut) => in_flight = o.code(cut).await?,
            }
        }
        let deadline = o.proto.poll_timeout().map(Instant::from_std);
        tokio::select! {
            c = ctl.recv() => match c {
                Some(Ctl::Ack(seq)) => {
                    o.proto.handle_ack(seq)?;
                    o.in_flight.acked(seq);
                }
                Some(Ctl::Resend(seq)) => o.proto.handle_resend(seq),
                None => {
                    if o.proto.is_flushed() {
                        break Ok(());
                    }
                    break Err(ConnError::Stream("the peer closed the stream before acknowledging our data".into()));
                }
            },
            r = async {
                buf.clear();
                buf.reserve(read_size);
                rd.read_buf(&mut buf).await
            }, if o.proto.wants_read() => {
                let n = r?;
                if n == 0 {
                    o.proto.handle_eof();
                } else {
                    coding.metrics.app[Dir::In as usize].increment(n as u64);
                    o.proto.handle_read_buf(now(), &mut buf);
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
                o.send_frame(f, Some(data), true, false).await?;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
        }
    };
    if let Some(enc) = o.enc.take() {
        coding.release(enc.used_lanes());
    }
    result
}

async fn decode_pump<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut frames: mpsc::Receiver<Inbound>,
    out: mpsc::Sender<Out>,
    coding: &Coding,
) -> Result<(), ConnError> {
    let send = |m: Out| {
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
                        send(Out::Ack {
                            seq: step.ack,
                            bytes: data.len(),
                            urgent: step.finished,
                        })
                        .await?;
                        if step.rebuild {
                            coding.release(dec.used_lanes());
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
                        send(Out::Msg(Msg::Resend { seq })).await?;
                    }
                }
            }
            Inbound::Restart { seq, frames: n } => {
                let Restarted::ModelFree { .. } = proto.on_restart(seq, n)?;
                coding.release(dec.used_lanes());
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
                    send(Out::FlushAcks).await?;
                    break Ok(());
                }
            }
            Inbound::Ack(_) | Inbound::Resend(_) => {
                break Err(ConnError::Protocol("control message routed as data".into()));
            }
        }
    };
    coding.release(dec.used_lanes());
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
    reset_stream(send, recv);
    reset_socket(tcp);
}

/// Resets both halves of a connection's stream.
pub fn reset_stream(send: &mut quinn::SendStream, recv: &mut quinn::RecvStream) {
    let code = quinn::VarInt::from_u32(RESET_CODE);
    let _ = send.reset(code);
    let _ = recv.stop(code);
}

/// Makes the socket's close a TCP reset.
pub fn reset_socket(tcp: &TcpStream) {
    // Zero linger makes the close send a TCP reset.
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
        let carrier = Carrier::Stream {
            send: s,
            recv: r,
            expect_opened: false,
            initial: BytesMut::new(),
        };
        is_send(carry(t, c, carrier).boxed());
    };
}
