//! One connection's QUIC stream in the `datagram-fec` link mode, and the
//! reading of its FEC items.
//!
//! In this mode a connection's messages travel as FEC items
//! ([`crate::fec_link`]); its QUIC stream carries only the two openings
//! (`Open` one way, `Opened` or `Refused` the other) and its end or reset.
//! Each opening also travels as the connection's first item, so a lost
//! stream packet costs no retransmission timeout; whichever copy arrives
//! first counts, and [`Opening`] checks that the other agrees.
//!
//! On the receiver, a connection opened from its item runs before QUIC has
//! handed over its stream: the [`StreamSlot`] takes the stream when it comes,
//! writes this end's opening on it then, and closes it after the connection
//! (finished, or reset after a failure).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use llmpack_frame::Msg;
use llmpack_frame::fec_items::{ItemKind, MAX_OPENING, decode_opening};
use llmpack_frame::opening::{Opening, OpeningStep, Path};
use llmpack_frame::protocol::Inbox;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::conn::reset_stream;
use crate::error::ConnError;
use crate::fec_link::FecRx;

/// The two halves of a connection's QUIC stream.
pub(crate) type Pair = (quinn::SendStream, quinn::RecvStream);

/// How long a connection that ended before its stream arrived still waits
/// for it, to close it as the connection ended.
const LATE_STREAM_WAIT: Duration = Duration::from_secs(60);

/// A connection's QUIC stream, which may arrive after the connection opened
/// from its first FEC item.
pub(crate) struct StreamSlot {
    pair: Option<Pair>,
    late: Option<oneshot::Receiver<Pair>>,
    /// This end's opening, still to be written on the stream.
    ours: Option<Msg>,
    /// Bytes read from the stream that form no whole message yet.
    buf: BytesMut,
}

impl StreamSlot {
    /// A connection whose stream is here.
    pub fn now(pair: Pair) -> Self {
        StreamSlot {
            pair: Some(pair),
            late: None,
            ours: None,
            buf: BytesMut::new(),
        }
    }

    /// A connection whose stream comes through `late`.
    pub fn later(late: oneshot::Receiver<Pair>) -> Self {
        StreamSlot {
            pair: None,
            late: Some(late),
            ours: None,
            buf: BytesMut::new(),
        }
    }

    /// Whether the stream is here.
    pub fn has_stream(&self) -> bool {
        self.pair.is_some()
    }

    /// The stream, if it is here.
    pub fn pair(&mut self) -> Option<&mut Pair> {
        self.pair.as_mut()
    }

    /// This end's opening: written on the stream once it is here (see
    /// [`watch`]).
    pub fn set_ours(&mut self, m: Msg) {
        self.ours = Some(m);
    }

    /// Waits for a stream still to come; `false` if it never will (the link
    /// went).
    pub async fn arrive(&mut self) -> bool {
        if self.pair.is_some() {
            return true;
        }
        let Some(late) = self.late.as_mut() else {
            return false;
        };
        let got = late.await;
        self.late = None;
        match got {
            Ok(p) => {
                self.pair = Some(p);
                true
            }
            Err(_) => false,
        }
    }

    /// Writes this end's opening now if the stream is here.
    pub async fn write_ours(&mut self) -> Result<(), ConnError> {
        let (Some(m), Some((send, _))) = (self.ours.as_ref(), self.pair.as_mut()) else {
            return Ok(());
        };
        if let Msg::Open { name, .. } = m {
            testing::wait_released(name).await;
        }
        let mut b = Vec::new();
        m.encode(&mut b);
        send.write_all(&b)
            .await
            .map_err(|e| ConnError::Stream(e.to_string()))?;
        self.ours = None;
        Ok(())
    }

    /// Reads the peer's opening message from the stream (which must be
    /// here); anything after it stays in the slot.
    pub async fn read_opening(&mut self) -> Result<Msg, ConnError> {
        let Some((_, recv)) = self.pair.as_mut() else {
            return Err(ConnError::Stream("no stream yet".into()));
        };
        loop {
            let mut cur = &self.buf[..];
            match Msg::decode(&mut cur) {
                Ok(m) => {
                    let used = self.buf.len() - cur.len();
                    self.buf.advance(used);
                    return Ok(m);
                }
                Err(llmpack_frame::Error::Incomplete { .. }) if self.buf.len() <= MAX_OPENING => {}
                Err(e) => return Err(ConnError::Protocol(format!("bad opening message: {e}"))),
            }
            match recv.read_chunk(MAX_OPENING, true).await {
                Ok(Some(c)) => self.buf.extend_from_slice(&c.bytes),
                Ok(None) => {
                    return Err(ConnError::Protocol(
                        "the stream ended before its opening message".into(),
                    ));
                }
                Err(e) => return Err(ConnError::Stream(e.to_string())),
            }
        }
    }

    /// Bytes the stream carried after the peer's opening (stream mode: the
    /// first messages).
    pub fn take_rest(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }

    /// After the connection: a stream that is here, or arrives within
    /// [`LATE_STREAM_WAIT`], gets this end's opening if still unwritten and
    /// its end (`ok`), or a reset.
    pub async fn close(mut self, ok: bool) {
        if !self.has_stream()
            && tokio::time::timeout(LATE_STREAM_WAIT, self.arrive())
                .await
                .is_err()
        {
            return;
        }
        if ok && self.write_ours().await.is_ok() {
            if let Some((send, _)) = self.pair.as_mut() {
                let _ = send.finish();
                // Let the end (a refusal, say) reach the peer before the
                // stream is dropped.
                let _ = tokio::time::timeout(Duration::from_secs(2), send.stopped()).await;
            }
            return;
        }
        if let Some((send, recv)) = self.pair.as_mut() {
            reset_stream(send, recv);
        }
    }

    /// Reads the peer's opening from the stream once it is here.
    pub async fn arrive_and_read_opening(&mut self) -> Result<Msg, ConnError> {
        if !self.arrive().await {
            return std::future::pending().await;
        }
        self.read_opening().await
    }
}

/// The stream's part while the connection runs: takes a late stream,
/// writes this end's opening, hands the peer's opening (when `peer_opening`,
/// it is still on the stream) to the reader, then waits for the stream's
/// end. Returns only on failure: a reset, data where none belongs.
pub(crate) async fn watch(
    slot: &mut StreamSlot,
    peer_opening: bool,
    openings: mpsc::Sender<Msg>,
) -> ConnError {
    if !slot.arrive().await {
        return std::future::pending().await;
    }
    if let Err(e) = slot.write_ours().await {
        return e;
    }
    if peer_opening {
        match slot.read_opening().await {
            Ok(m) => {
                let _ = openings.send(m).await;
            }
            Err(e) => return e,
        }
    }
    let Some((_, recv)) = slot.pair.as_mut() else {
        return std::future::pending().await;
    };
    if !slot.buf.is_empty() {
        return ConnError::Protocol("stream data after the opening in datagram-fec mode".into());
    }
    match recv.read_chunk(4096, true).await {
        Ok(None) => std::future::pending().await,
        Ok(Some(_)) => {
            ConnError::Protocol("stream data after the opening in datagram-fec mode".into())
        }
        Err(e) => ConnError::Stream(e.to_string()),
    }
}

/// What the reader of a datagram-fec connection reads: its items, and the
/// peer's opening as the stream delivered it.
pub(crate) struct FecSource {
    /// The connection's items.
    pub rx: FecRx,
    /// The peer's opening from the stream ([`watch`]).
    pub openings: mpsc::Receiver<Msg>,
    /// Both copies of the peer's opening.
    pub opening: Opening,
}

/// Reads more of the peer's messages from its FEC items into `inbox`;
/// `false` at their end. Copies of the peer's opening, from either path,
/// are checked on the way; a `Refused` ends the connection.
pub(crate) async fn read_fec(src: &mut FecSource, inbox: &mut Inbox) -> Result<bool, ConnError> {
    loop {
        tokio::select! {
            it = src.rx.recv() => {
                let Some(it) = it else {
                    return Err(ConnError::Stream(
                        "the FEC link closed or dropped this connection".into(),
                    ));
                };
                match it.kind() {
                    ItemKind::Open => {
                        let m = decode_opening(&mut it.payload())
                            .map_err(|e| ConnError::Protocol(e.to_string()))?;
                        on_opening(&mut src.opening, Path::Item, m)?;
                    }
                    _ if src.opening.first().is_none() => {
                        return Err(ConnError::Protocol("FEC data before the peer's opening".into()));
                    }
                    ItemKind::Msgs => {
                        inbox.push(it.payload());
                        return Ok(true);
                    }
                    ItemKind::End => return Ok(false),
                }
            },
            Some(m) = src.openings.recv() => on_opening(&mut src.opening, Path::Stream, m)?,
        }
    }
}

/// One copy of the peer's opening: the first `Refused` ends the
/// connection; a copy unlike the first is a protocol error.
pub(crate) fn on_opening(o: &mut Opening, path: Path, m: Msg) -> Result<(), ConnError> {
    match o.handle(path, m)? {
        OpeningStep::First(Msg::Refused { reason }) => Err(ConnError::Refused(reason)),
        _ => Ok(()),
    }
}

/// Test hooks: hold a tunnel's `Open` off its stream, as if the packet that
/// carries it were lost, so that a test can show the connection runs on
/// its FEC items alone.
#[doc(hidden)]
pub mod testing {
    use super::{AtomicBool, HashSet, Mutex, Notify, Ordering};

    static ANY: AtomicBool = AtomicBool::new(false);
    static HELD: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    static RELEASED: Notify = Notify::const_new();

    fn held(tunnel: &str) -> bool {
        HELD.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .is_some_and(|h| h.contains(tunnel))
    }

    /// While the returned guard lives, senders of `tunnel` write their
    /// `Open` on the stream only once it is dropped.
    pub fn hold_stream_open(tunnel: &str) -> Hold {
        HELD.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(HashSet::new)
            .insert(tunnel.to_string());
        ANY.store(true, Ordering::Relaxed);
        Hold(tunnel.to_string())
    }

    /// Releases its tunnel's `Open`s when dropped.
    #[derive(Debug)]
    pub struct Hold(String);

    impl Drop for Hold {
        fn drop(&mut self) {
            if let Some(h) = HELD
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_mut()
            {
                h.remove(&self.0);
            }
            RELEASED.notify_waiters();
        }
    }

    pub(crate) async fn wait_released(tunnel: &str) {
        if !ANY.load(Ordering::Relaxed) {
            return;
        }
        loop {
            let released = RELEASED.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if !held(tunnel) {
                return;
            }
            released.await;
        }
    }
}
