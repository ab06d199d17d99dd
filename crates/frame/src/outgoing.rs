//! The sending direction of a tunnelled connection, sans I/O: when the bytes
//! read from the local socket become a frame, which coder takes it, and the
//! protocol around it (acks, resends, `Fin`).
//!
//! [`Outgoing`] reads no socket and no clock: the tunnel hands it what it
//! read ([`Outgoing::handle_read`]) with the time, the peer's acks and resend
//! requests, and the end of its coder's work; it answers with [`Step`]s
//! ([`Outgoing::poll`]) and the next deadline ([`Outgoing::poll_timeout`]).
//!
//! # When bytes become a frame
//! - While the coder is free, what a read returned is framed at once: an
//!   interactive request never waits for a timer.
//! - Bytes coalesce only while an earlier frame is being coded, or while the
//!   socket is not read because the link is backed up (the bytes not yet
//!   acknowledged reach [`FrameLimits::buffer`]); a frame takes at most
//!   [`FrameLimits::frame`] bytes.
//! - Timer coalescing is opt-in: with both [`FrameLimits::flush_idle`] and
//!   [`FrameLimits::flush_max`] set, a partial frame waits until the socket
//!   has been quiet for `flush_idle`, or its first byte has waited
//!   `flush_max`, or a full frame or the socket's end is there.
//!
//! # Which coder
//! The goodput rule ([`policy::choose`]) decides between the model and the
//! model-free coders from the [`Measured`] state of the link and the model,
//! which the tunnel hands in when a frame is cut. Under `auto`, a frame goes
//! raw instead of zstd when zstd would not pay for its time
//! ([`policy::zstd_pays`]: the link outruns zstd, or compressing takes
//! longer than the bytes it saves take on an idle link), except a frame the
//! tunnel marks as a probe ([`Measured::zstd_probe`], one per link every
//! [`policy::ZSTD_PROBE_INTERVAL`]), which keeps zstd's speed and ratio
//! measured.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::policy::{self, Choice, Inputs, ZSTD_LEVELS};
use crate::protocol::{ProtoError, Resend, Sending};

/// Framing and buffering limits of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Frame size cap, bytes (at least 1).
    pub frame: usize,
    /// Most bytes read from the socket and not yet acknowledged by the peer.
    pub buffer: usize,
    /// Opt-in coalescing: a partial frame waits until the socket has been
    /// quiet this long (0: it goes out at once when the coder is free) ...
    pub flush_idle: Duration,
    /// ... or until its first byte has waited this long (0: no timer).
    pub flush_max: Duration,
}

/// Which coders the connection's policy allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecRule {
    /// `auto`: the goodput rule picks the model or a model-free coder.
    Auto,
    /// `lm`: the model takes every frame it can finish within `max_delay`.
    Lm,
    /// `zstd` or `raw`: never the model.
    ModelFree,
}

/// How a connection's sending direction is set up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutgoingConfig {
    /// Framing and buffering limits.
    pub limits: FrameLimits,
    /// Which coders may take a frame.
    pub rule: CodecRule,
    /// zstd level for zstd frames; `None`: by the link's rate
    /// ([`policy::zstd_level_for`]).
    pub zstd_level: Option<i32>,
    /// Most time the model may add to a frame's delivery.
    pub max_delay: Duration,
    /// Lanes a model frame may be coded on at once (see
    /// [`policy::Inputs::lanes`]).
    pub lanes: usize,
}

/// What the tunnel measured, handed in when a frame is cut.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Seconds per input byte one end's model takes on a frame that joined
    /// now, its backlog included; `None`: the link has no model.
    pub model_secs_per_byte: Option<f64>,
    /// The link's delivery rate, bytes/s (0: not known yet).
    pub link_rate: u64,
    /// Seconds the link stays busy with what is already queued for it.
    pub link_busy_secs: f64,
    /// Of those, the seconds this end's bytes not sent yet take to leave.
    pub link_unsent_secs: f64,
    /// Wire bytes per input byte of model frames, if measured.
    pub lm_cost: Option<f64>,
    /// Wire bytes per input byte of model-free frames (1.0: raw).
    pub free_cost: f64,
    /// Output bytes per input byte of the frames zstd was tried on (raw
    /// ones count 1.0), if measured.
    pub zstd_cost: Option<f64>,
    /// zstd's speed on this machine per level, input bytes/s, on frames of
    /// at least [`policy::ZSTD_MIN_TIMED`] bytes (0: not measured).
    pub zstd_speed: [u64; ZSTD_LEVELS],
    /// The same on shorter frames, each counted as
    /// [`policy::ZSTD_MIN_TIMED`] bytes (see [`policy::zstd_speed_for`]).
    pub zstd_speed_short: [u64; ZSTD_LEVELS],
    /// This frame tries zstd even where [`policy::zstd_pays`] says raw, to
    /// keep zstd's speed and ratio measured (the tunnel grants one such
    /// frame per link every [`policy::ZSTD_PROBE_INTERVAL`]).
    pub zstd_probe: bool,
}

/// A frame's bytes and how to code them.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    /// The bytes, in order after the previous frame's.
    pub data: Vec<u8>,
    /// The goodput rule's decision ([`Choice::model`]: the model may code it).
    pub choice: Choice,
    /// What the rule decided from (for logs).
    pub inputs: Inputs,
    /// The zstd level to code it at.
    pub zstd_level: i32,
    /// Whether to try zstd on it (`false`: zstd would not pay for its
    /// time, [`policy::zstd_pays`]).
    pub zstd: bool,
}

/// What the tunnel must do next for the sending direction.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// The peer failed a frame: send `Restart` and the frames model-free,
    /// then code on from a context rebuilt from [`Outgoing::tail`].
    Restart(Resend),
    /// Code this frame, then call [`Outgoing::handle_coded`] with its bytes.
    Frame(Cut),
    /// Send `Fin`: every byte is framed and the socket ended.
    Fin,
    /// The direction is complete: `Fin` sent and every frame acknowledged.
    Done,
}

/// The sending direction of a connection (see the module docs).
#[derive(Debug)]
pub struct Outgoing {
    cfg: OutgoingConfig,
    sending: Sending,
    /// Bytes read and not framed yet.
    pending: BytesMut,
    /// When the oldest of `pending` was read.
    first_at: Option<Instant>,
    /// When the socket last gave bytes.
    last_read: Option<Instant>,
    eof: bool,
    /// A frame is with the coder.
    coding: bool,
    /// A resend request that waits for the coder.
    resend: Option<u64>,
}

impl Outgoing {
    /// Nothing read or sent yet.
    pub fn new(mut cfg: OutgoingConfig) -> Self {
        cfg.limits.frame = cfg.limits.frame.max(1);
        Outgoing {
            cfg,
            sending: Sending::new(),
            pending: BytesMut::new(),
            first_at: None,
            last_read: None,
            eof: false,
            coding: false,
            resend: None,
        }
    }

    /// Whether the tunnel should read the socket: it has not ended, and the
    /// bytes held (unacknowledged and not framed) leave room.
    pub fn wants_read(&self) -> bool {
        let l = &self.cfg.limits;
        !self.eof
            && self.sending.unacked_bytes() + self.pending.len() < l.buffer
            && self.pending.len() < l.frame
    }

    /// The socket gave `bytes` at `now`.
    pub fn handle_read(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.pending.is_empty() {
            self.first_at = Some(now);
        }
        self.last_read = Some(now);
        self.pending.extend_from_slice(bytes);
    }

    /// [`Self::handle_read`] for a read buffer this end may keep: with
    /// nothing pending it takes the buffer's bytes without a copy (`buf`
    /// is left empty, with whatever capacity it gets back).
    pub fn handle_read_buf(&mut self, now: Instant, buf: &mut BytesMut) {
        if self.pending.is_empty() && !buf.is_empty() {
            self.first_at = Some(now);
            self.last_read = Some(now);
            std::mem::swap(&mut self.pending, buf);
            buf.clear();
        } else {
            self.handle_read(now, buf);
            buf.clear();
        }
    }

    /// The socket ended.
    pub fn handle_eof(&mut self) {
        self.eof = true;
    }

    /// The peer verified every frame up to `seq`.
    pub fn handle_ack(&mut self, seq: u64) -> Result<(), ProtoError> {
        self.sending.on_ack(seq)
    }

    /// The peer failed frame `seq`; [`Self::poll`] answers with a
    /// [`Step::Restart`] once the coder is free (a later request replaces
    /// one still waiting).
    pub fn handle_resend(&mut self, seq: u64) {
        self.resend = Some(seq);
    }

    /// The coder finished the frame of the last [`Step::Frame`], which
    /// carried `data`, and it is sent: returns its sequence number.
    pub fn handle_coded(&mut self, data: impl Into<Bytes>) -> u64 {
        self.coding = false;
        self.sending.sent(data)
    }

    /// What to do next, at `now`; `measure` is called only when a frame is
    /// cut. `None`: wait for an event or [`Self::poll_timeout`].
    pub fn poll(
        &mut self,
        now: Instant,
        measure: impl FnOnce() -> Measured,
    ) -> Result<Option<Step>, ProtoError> {
        if self.coding {
            return Ok(None);
        }
        if let Some(seq) = self.resend.take() {
            return self.sending.on_resend(seq).map(|r| Some(Step::Restart(r)));
        }
        if self.eof && self.pending.is_empty() {
            if !self.sending.fin_sent() {
                self.sending.fin();
                return Ok(Some(Step::Fin));
            }
            return Ok(self.sending.all_acked().then_some(Step::Done));
        }
        if !self.due(now) {
            return Ok(None);
        }
        Ok(Some(Step::Frame(self.cut(now, &measure()))))
    }

    /// When [`Self::poll`] may have a frame without another event: a
    /// partial frame's flush timer. `None` while the coder is busy (the
    /// coder's end is the next event), with nothing pending, and when
    /// nothing waits for a timer.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.coding || self.pending.is_empty() || self.due_untimed() {
            return None;
        }
        let l = &self.cfg.limits;
        let idle = self.last_read.and_then(|t| t.checked_add(l.flush_idle));
        let max = self.first_at.and_then(|t| t.checked_add(l.flush_max));
        match (idle, max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether every byte read is framed, sent and acknowledged (a peer
    /// that closes now closes a finished direction).
    pub fn is_flushed(&self) -> bool {
        self.eof && self.pending.is_empty() && self.sending.all_acked() && !self.coding
    }

    /// Bytes read and not framed yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The protocol state of the frames sent.
    pub fn sending(&self) -> &Sending {
        &self.sending
    }

    /// The last bytes framed (see [`Sending::tail`]).
    pub fn tail(&self) -> &[u8] {
        self.sending.tail()
    }

    /// A frame is due without a timer: flushing is immediate (no
    /// `flush_max`), a whole frame is there, or the socket ended.
    fn due_untimed(&self) -> bool {
        let l = &self.cfg.limits;
        l.flush_max.is_zero() || self.pending.len() >= l.frame || self.eof
    }

    fn due(&self, now: Instant) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let l = &self.cfg.limits;
        let passed = |t: Option<Instant>, d: Duration| {
            t.is_none_or(|t| t.checked_add(d).is_some_and(|at| now >= at))
        };
        self.due_untimed()
            || passed(self.last_read, l.flush_idle)
            || passed(self.first_at, l.flush_max)
    }

    fn cut(&mut self, now: Instant, m: &Measured) -> Cut {
        let c = &self.cfg;
        let model = match c.rule {
            // A model frame's bytes are usable once this end has coded it
            // and the peer has decoded it, at about the same speed: both
            // count.
            CodecRule::Auto | CodecRule::Lm => m.model_secs_per_byte.map(|s| 2.0 * s),
            CodecRule::ModelFree => None,
        };
        let inputs = Inputs {
            pending: self.pending.len(),
            frame: c.limits.frame,
            forced: c.rule == CodecRule::Lm,
            model_secs_per_byte: model,
            lanes: c.lanes,
            max_delay: c.max_delay.as_secs_f64(),
            link_rate: m.link_rate as f64,
            link_queue: m.link_busy_secs * m.link_rate as f64,
            lm_cost: m.lm_cost,
            free_cost: m.free_cost,
        };
        let choice = policy::choose(&inputs);
        let n = choice.bytes().min(self.pending.len());
        let data = self.pending.split_to(n).to_vec();
        if !self.pending.is_empty() {
            self.first_at = Some(now);
        }
        let zstd_level = c
            .zstd_level
            .unwrap_or_else(|| policy::zstd_level_for(m.link_rate));
        let slot = usize::try_from(zstd_level.max(0))
            .unwrap_or(0)
            .min(ZSTD_LEVELS - 1);
        let skip = c.rule == CodecRule::Auto
            && !m.zstd_probe
            && !policy::zstd_pays(
                data.len(),
                m.link_rate,
                m.link_unsent_secs,
                policy::zstd_speed_for(data.len(), m.zstd_speed[slot], m.zstd_speed_short[slot]),
                m.zstd_cost,
            );
        self.coding = true;
        Cut {
            data,
            choice,
            inputs,
            zstd_level,
            zstd: !skip,
        }
    }
}

#[cfg(test)]
mod tests;
