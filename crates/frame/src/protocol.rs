//! The per-connection message protocol of a tunnel stream, sans I/O.
//!
//! A tunnelled connection carries one direction each way as [`Msg`]s. Three
//! parts follow it, each owned by one side of the connection's I/O, and none
//! reads a socket or a clock: the tunnel's tasks move bytes and call them.
//!
//! - [`Inbox`] parses the peer's bytes into messages. It checks the opening
//!   (where this end sent `Open`, the peer's first message is `Opened` or
//!   `Refused`), refuses messages that never belong on a data stream, and
//!   bounds how much it buffers.
//! - [`Sending`] keeps the frames this end sent and the peer has not
//!   acknowledged: sequence numbers, acknowledgements, and the model-free
//!   resend of a frame the peer failed to decode.
//! - [`Receiving`] follows the peer's direction: the frame expected next,
//!   what to acknowledge, the resend after a failed frame, and the end.
//!
//! A peer that breaks the protocol (an ack of a frame never sent, a resend
//! of one already acknowledged, a restart nobody asked for, data after its
//! end) gets a [`ProtoError`]; nothing here panics on a peer's bytes, and
//! every buffer is bounded.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::{Error, FrameHeader, MAX_FRAME_LEN, MAX_REASON_LEN, Msg};

/// Bytes of a direction's history kept to rebuild a model context after a
/// failed frame.
pub const REBUILD_TAIL: usize = 1024;

/// Largest message the inbox holds while it waits for the rest: a whole
/// frame and its header.
pub const MAX_MESSAGE: usize = MAX_FRAME_LEN as usize + 64;

/// Why a connection's protocol ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtoError {
    /// The receiver will not carry the connection.
    #[error("refused by the receiver: {0}")]
    Refused(String),
    /// The peer broke the protocol.
    #[error("peer protocol error: {0}")]
    Violation(String),
}

fn violation(why: impl Into<String>) -> ProtoError {
    ProtoError::Violation(why.into())
}

/// A message from the peer, routed: the frames of its direction go to the
/// decoding side, acknowledgements and resend requests of ours to the
/// sending side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A frame of the peer's direction.
    Frame {
        /// Its header.
        header: FrameHeader,
        /// Its payload (a slice of the bytes the peer sent: no copy).
        payload: Bytes,
    },
    /// The peer resends its frames from `seq` (see [`Receiving::on_restart`]).
    Restart {
        /// First resent frame.
        seq: u64,
        /// Frames resent model-free.
        frames: u32,
    },
    /// The end of the peer's direction.
    Fin,
    /// The peer verified our frames up to `seq`.
    Ack(u64),
    /// The peer failed our frame `seq`.
    Resend(u64),
}

/// Parses the peer's bytes into [`Inbound`] messages.
#[derive(Debug)]
pub struct Inbox {
    buf: BytesMut,
    awaiting_opened: bool,
}

impl Inbox {
    /// An empty inbox. `awaiting_opened`: this end sent `Open`, so the
    /// peer's first message must be `Opened` or `Refused`.
    pub fn new(awaiting_opened: bool) -> Self {
        Inbox {
            buf: BytesMut::new(),
            awaiting_opened,
        }
    }

    /// Whether the peer's `Opened` is still to come.
    pub fn awaiting_opened(&self) -> bool {
        self.awaiting_opened
    }

    /// Counts as the peer's `Opened` (an end that sees the peer's data on
    /// another path knows it carries the connection).
    pub fn opened(&mut self) {
        self.awaiting_opened = false;
    }

    /// Adds bytes from the peer.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that form no whole message yet.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole message, or `None` until more bytes come.
    pub fn poll(&mut self) -> Result<Option<Inbound>, ProtoError> {
        loop {
            let msg = match Msg::decode_from(&mut self.buf) {
                Ok(m) => m,
                Err(Error::Incomplete { .. }) => {
                    let max = if self.awaiting_opened {
                        MAX_REASON_LEN + 16
                    } else {
                        MAX_MESSAGE
                    };
                    if self.buf.len() > max {
                        return Err(violation("message larger than any the protocol has"));
                    }
                    return Ok(None);
                }
                Err(e) => return Err(violation(e.to_string())),
            };
            if self.awaiting_opened {
                match msg {
                    Msg::Opened => {
                        self.awaiting_opened = false;
                        continue;
                    }
                    Msg::Refused { reason } => return Err(ProtoError::Refused(reason)),
                    m => return Err(violation(format!("expected Opened, got {}", name(&m)))),
                }
            }
            return match msg {
                Msg::Frame { header, payload } => Ok(Some(Inbound::Frame { header, payload })),
                Msg::Restart { seq, frames } => Ok(Some(Inbound::Restart { seq, frames })),
                Msg::Fin => Ok(Some(Inbound::Fin)),
                Msg::Ack { seq } => Ok(Some(Inbound::Ack(seq))),
                Msg::Resend { seq } => Ok(Some(Inbound::Resend(seq))),
                m => Err(violation(format!(
                    "unexpected {} on a data stream",
                    name(&m)
                ))),
            };
        }
    }

    /// Checks the end of the peer's bytes: not inside a message, and not
    /// before `Opened` (a receiver that closes at once refused).
    pub fn finish(&self) -> Result<(), ProtoError> {
        if !self.buf.is_empty() {
            return Err(violation("stream ends inside a message"));
        }
        if self.awaiting_opened {
            return Err(ProtoError::Refused("the receiver closed the stream".into()));
        }
        Ok(())
    }
}

/// A message's kind, for errors (never its contents).
fn name(m: &Msg) -> &'static str {
    match m {
        Msg::Open { .. } => "Open",
        Msg::Opened => "Opened",
        Msg::Refused { .. } => "Refused",
        Msg::Frame { .. } => "Frame",
        Msg::Ack { .. } => "Ack",
        Msg::Resend { .. } => "Resend",
        Msg::Restart { .. } => "Restart",
        Msg::Fin => "Fin",
    }
}

/// Appends `data` to a tail of at most [`REBUILD_TAIL`] bytes.
fn push_tail(tail: &mut Vec<u8>, data: &[u8]) {
    let data = &data[data.len().saturating_sub(REBUILD_TAIL)..];
    tail.extend_from_slice(data);
    if tail.len() > REBUILD_TAIL {
        tail.drain(..tail.len() - REBUILD_TAIL);
    }
}

/// What this end must send after the peer failed frame `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resend {
    /// The first frame to resend.
    pub seq: u64,
    /// The bytes of frames `seq..`, in order, to resend model-free after a
    /// `Restart { seq, frames: bytes.len() }`.
    pub bytes: Vec<Bytes>,
}

/// The sending direction: frames sent and not yet acknowledged.
#[derive(Debug, Default)]
pub struct Sending {
    next_seq: u64,
    unacked: VecDeque<(u64, Bytes)>,
    unacked_bytes: usize,
    tail: Vec<u8>,
    fin: bool,
}

impl Sending {
    /// Nothing sent yet.
    pub fn new() -> Self {
        Sending::default()
    }

    /// Records a frame about to be sent, carrying `data`; returns its
    /// sequence number.
    pub fn sent(&mut self, data: impl Into<Bytes>) -> u64 {
        let data = data.into();
        push_tail(&mut self.tail, &data);
        self.unacked_bytes += data.len();
        let seq = self.next_seq;
        self.unacked.push_back((seq, data));
        self.next_seq += 1;
        seq
    }

    /// Records this end's `Fin`.
    pub fn fin(&mut self) {
        self.fin = true;
    }

    /// Whether `Fin` was sent.
    pub fn fin_sent(&self) -> bool {
        self.fin
    }

    /// The peer verified every frame up to `seq`. An ack of a frame not
    /// sent is a violation; an old one is a no-op.
    pub fn on_ack(&mut self, seq: u64) -> Result<(), ProtoError> {
        if seq >= self.next_seq {
            return Err(violation(format!(
                "ack of frame {seq}, but only {} were sent",
                self.next_seq
            )));
        }
        while let Some((s, d)) = self.unacked.front() {
            if *s > seq {
                break;
            }
            self.unacked_bytes -= d.len();
            self.unacked.pop_front();
        }
        Ok(())
    }

    /// The peer failed frame `seq`: the frames to resend model-free. The
    /// caller then codes on with a context rebuilt from [`Self::tail`].
    pub fn on_resend(&mut self, seq: u64) -> Result<Resend, ProtoError> {
        let first = self.unacked.front().map(|(s, _)| *s);
        if first.is_none_or(|f| seq < f) || seq >= self.next_seq {
            return Err(violation(format!(
                "resend of frame {seq}, which is not outstanding"
            )));
        }
        let bytes = (self.unacked.iter())
            .filter(|(s, _)| *s >= seq)
            .map(|(_, d)| d.clone())
            .collect::<Vec<_>>();
        if u32::try_from(bytes.len()).is_err() {
            return Err(violation("resend too long"));
        }
        Ok(Resend { seq, bytes })
    }

    /// Bytes sent and not yet acknowledged.
    pub fn unacked_bytes(&self) -> usize {
        self.unacked_bytes
    }

    /// Whether every frame sent is acknowledged.
    pub fn all_acked(&self) -> bool {
        self.unacked.is_empty()
    }

    /// The sequence number of the next frame.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The last bytes framed (at most [`REBUILD_TAIL`]).
    pub fn tail(&self) -> &[u8] {
        &self.tail
    }
}

/// What to do with a frame of the peer's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStep {
    /// Decode it, then call [`Receiving::decoded`] or [`Receiving::failed`].
    Decode,
    /// Drop it: a resend from an earlier failed frame is on its way.
    Skip,
}

/// After a frame decoded: what to acknowledge and what comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Acknowledge frames up to this one.
    pub ack: u64,
    /// The model-free resend is complete: code on with a context rebuilt
    /// from [`Receiving::tail`].
    pub rebuild: bool,
    /// The peer's direction is complete (its `Fin` came during the resend).
    pub finished: bool,
}

/// How a `Restart` replaces the decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restarted {
    /// The next `frames` frames are model-free resends (fresh zstd, no
    /// history); a context rebuilt from [`Receiving::tail`] follows.
    ModelFree {
        /// Frames of the resend.
        frames: u32,
    },
}

/// What a `Fin` from the peer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinStep {
    /// The peer's direction is complete: shut the socket's write side.
    Finished,
    /// A resend is still to come; the direction ends after it.
    AfterResend,
}

/// The peer's direction: the frame expected next and the resend state.
#[derive(Debug, Default)]
pub struct Receiving {
    expect: u64,
    /// A frame failed: frames are dropped until the peer's `Restart`.
    discarding: Option<u64>,
    /// Frames of a model-free resend still to come.
    resend_left: u32,
    /// The peer's `Fin` came while a resend was pending.
    fin_seen: bool,
    done: bool,
    tail: Vec<u8>,
}

impl Receiving {
    /// Nothing received yet.
    pub fn new() -> Self {
        Receiving::default()
    }

    /// A frame arrived.
    pub fn on_frame(&mut self) -> Result<FrameStep, ProtoError> {
        if self.done {
            return Err(violation("frame after the peer's Fin"));
        }
        Ok(if self.discarding.is_some() {
            FrameStep::Skip
        } else {
            FrameStep::Decode
        })
    }

    /// The frame decoded and verified to `data`.
    pub fn decoded(&mut self, data: &[u8]) -> Decoded {
        push_tail(&mut self.tail, data);
        let ack = self.expect;
        self.expect += 1;
        let mut rebuild = false;
        let mut finished = false;
        if self.resend_left > 0 {
            self.resend_left -= 1;
            if self.resend_left == 0 {
                rebuild = true;
                if self.fin_seen {
                    finished = true;
                    self.done = true;
                }
            }
        }
        Decoded {
            ack,
            rebuild,
            finished,
        }
    }

    /// The frame failed its check: ask the peer to resend from the
    /// returned sequence number, and drop frames until it restarts.
    pub fn failed(&mut self) -> u64 {
        self.discarding = Some(self.expect);
        self.expect
    }

    /// The peer's `Restart`: valid only as the answer to our resend request.
    pub fn on_restart(&mut self, seq: u64, frames: u32) -> Result<Restarted, ProtoError> {
        if self.done || self.discarding != Some(seq) {
            return Err(violation(format!(
                "restart at frame {seq} that was not asked for"
            )));
        }
        if frames == 0 {
            return Err(violation("restart that resends no frame"));
        }
        self.discarding = None;
        self.expect = seq;
        self.resend_left = frames;
        Ok(Restarted::ModelFree { frames })
    }

    /// The peer's `Fin`.
    pub fn on_fin(&mut self) -> Result<FinStep, ProtoError> {
        if self.done || self.fin_seen {
            return Err(violation("a second Fin"));
        }
        if self.discarding.is_some() || self.resend_left > 0 {
            // The resend's Restart covers every frame the peer sent, so the
            // direction is complete once it is decoded.
            self.fin_seen = true;
            return Ok(FinStep::AfterResend);
        }
        self.done = true;
        Ok(FinStep::Finished)
    }

    /// Whether the peer's direction is complete.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The sequence number of the next frame.
    pub fn expect(&self) -> u64 {
        self.expect
    }

    /// The last bytes decoded (at most [`REBUILD_TAIL`]).
    pub fn tail(&self) -> &[u8] {
        &self.tail
    }
}

/// How long an acknowledgement may wait for a message to ride with.
pub const ACK_DELAY: Duration = Duration::from_millis(5);

/// Acknowledgements of the peer's frames, held briefly so that they ride
/// with this end's next message instead of costing a packet of their own.
///
/// Acks only free the peer's resend buffer; no data waits for them while
/// that buffer has room. So an ack waits until this end sends anything
/// else, at most [`ACK_DELAY`], and goes at once when the frames it covers
/// hold `max_bytes` (a bulk transfer in one direction gets its acks at that
/// rate, well before the peer's buffer fills) or when it ends the peer's
/// direction. Acks are cumulative: a later one replaces a held one.
#[derive(Debug, Clone)]
pub struct DelayedAck {
    held: Option<Held>,
    max_bytes: usize,
    max_delay: Duration,
}

/// An ack waiting to go.
#[derive(Debug, Clone, Copy)]
struct Held {
    seq: u64,
    /// Bytes of the peer's data it covers beyond the last ack sent.
    bytes: usize,
    /// When the oldest frame it covers was verified.
    since: Instant,
    /// Send it without waiting.
    urgent: bool,
}

impl DelayedAck {
    /// Nothing held; acks go at once past `max_bytes` of frames, or after
    /// `max_delay`.
    pub fn new(max_bytes: usize, max_delay: Duration) -> Self {
        DelayedAck {
            held: None,
            max_bytes,
            max_delay,
        }
    }

    /// Frames up to `seq`, `bytes` more of the peer's data, are verified;
    /// `urgent`: send the ack without waiting (the peer's last frame).
    pub fn on_decoded(&mut self, now: Instant, seq: u64, bytes: usize, urgent: bool) {
        let h = self.held.get_or_insert(Held {
            seq,
            bytes: 0,
            since: now,
            urgent: false,
        });
        h.seq = h.seq.max(seq);
        h.bytes = h.bytes.saturating_add(bytes);
        h.urgent |= urgent;
    }

    /// Makes a held ack go at once (the peer's direction ended).
    pub fn flush(&mut self) {
        if let Some(h) = &mut self.held {
            h.urgent = true;
        }
    }

    /// Whether the held ack must go now, even alone.
    pub fn is_due(&self, now: Instant) -> bool {
        self.held.is_some_and(|h| {
            h.urgent || h.bytes >= self.max_bytes || now >= h.since + self.max_delay
        })
    }

    /// When the held ack becomes due by time; `None` with nothing held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held.map(|h| h.since + self.max_delay)
    }

    /// The ack to send now (with other messages, or because it is due),
    /// and nothing held after it.
    pub fn take(&mut self) -> Option<u64> {
        self.held.take().map(|h| h.seq)
    }
}

#[cfg(test)]
mod tests;
