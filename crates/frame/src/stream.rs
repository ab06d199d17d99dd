//! Messages on a tunnel stream: one QUIC bidirectional stream per TCP
//! connection carries, in each direction, a sequence of [`Msg`]s.
//!
//! ```text
//! sender → receiver   Open, then Frame | Ack | Resend | Restart | Fin ...
//! receiver → sender   Opened or Refused, then Frame | Ack | Resend | Restart | Fin ...
//!
//! Open     tag 1 | name_len u8 | name | primer_check u64 | window u32 | keep u32 | lanes u8
//! Opened   tag 2
//! Refused  tag 3 | reason_len u16 | reason (UTF-8)
//! Frame    tag 4 | frame header (22) | payload
//! Ack      tag 5 | seq u64      every frame up to seq of the peer's direction was verified
//! Resend   tag 6 | seq u64      frame seq of the peer's direction failed its checksum
//! Restart  tag 7 | seq u64 | frames u32   the next `frames` frames resend seq.. model-free
//! Fin      tag 8                no more data in this direction   (all little-endian)
//! ```
//! Frames of a direction are numbered from 0 in the order they are sent;
//! the frames after a `Restart { seq, .. }` are numbered from `seq` again.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::{Error, FRAME_HEADER_LEN, FrameHeader, Result, need};

/// Longest tunnel name.
pub const MAX_TUNNEL_NAME: usize = 64;

/// Longest reason in a [`Msg::Refused`].
pub const MAX_REASON_LEN: usize = 1024;

/// One message on a tunnel stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Msg {
    /// The sender asks for a connection through tunnel `name`.
    Open {
        /// The tunnel, as named in both ends' configs.
        name: String,
        /// xxh3-64 of the tunnel's primer: both ends must use the same.
        primer_check: u64,
        /// Model context window of the tunnel (tokens), 0 without a model.
        window: u32,
        /// Tokens kept when the window is full.
        keep: u32,
        /// Lanes one frame may be coded on (`llmpack_codec::StreamConfig::lanes`).
        lanes: u8,
    },
    /// The receiver reached the target; data flows.
    Opened,
    /// The receiver will not carry this connection.
    Refused {
        /// Why, for the log of the other end.
        reason: String,
    },
    /// A coded frame.
    Frame {
        /// Its header.
        header: FrameHeader,
        /// Its payload, `header.payload_len` bytes (shared, so a sender
        /// can keep it for a resend without a copy).
        payload: Bytes,
    },
    /// Every frame of the peer's direction up to `seq` decoded and verified.
    Ack {
        /// Sequence number of the last verified frame.
        seq: u64,
    },
    /// Frame `seq` of the peer's direction failed; resend from there.
    Resend {
        /// The first frame that failed.
        seq: u64,
    },
    /// The next `frames` frames resend frames `seq..` model-free, then a
    /// coder with a context rebuilt from the verified bytes goes on.
    Restart {
        /// The first resent frame.
        seq: u64,
        /// How many frames are resent.
        frames: u32,
    },
    /// No more data in this direction.
    Fin,
}

const OPEN: u8 = 1;
const OPENED: u8 = 2;
const REFUSED: u8 = 3;
const FRAME: u8 = 4;
const ACK: u8 = 5;
const RESEND: u8 = 6;
const RESTART: u8 = 7;
const FIN: u8 = 8;

impl Msg {
    /// Appends the wire form of a `Frame` message up to its payload, which
    /// follows as it is (a writer may hand the payload on without copying).
    pub fn encode_frame_head(header: &FrameHeader, buf: &mut impl BufMut) {
        buf.put_u8(FRAME);
        header.encode(buf);
    }

    /// Appends the message's wire form.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Msg::Open {
                name,
                primer_check,
                window,
                keep,
                lanes,
            } => {
                buf.put_u8(OPEN);
                let name = &name.as_bytes()[..name.len().min(MAX_TUNNEL_NAME)];
                buf.put_u8(u8::try_from(name.len()).unwrap_or(u8::MAX));
                buf.put_slice(name);
                buf.put_u64_le(*primer_check);
                buf.put_u32_le(*window);
                buf.put_u32_le(*keep);
                buf.put_u8(*lanes);
            }
            Msg::Opened => buf.put_u8(OPENED),
            Msg::Refused { reason } => {
                buf.put_u8(REFUSED);
                let mut end = reason.len().min(MAX_REASON_LEN);
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                buf.put_u16_le(u16::try_from(end).unwrap_or(0));
                buf.put_slice(&reason.as_bytes()[..end]);
            }
            Msg::Frame { header, payload } => {
                Msg::encode_frame_head(header, buf);
                buf.put_slice(payload);
            }
            Msg::Ack { seq } => {
                buf.put_u8(ACK);
                buf.put_u64_le(*seq);
            }
            Msg::Resend { seq } => {
                buf.put_u8(RESEND);
                buf.put_u64_le(*seq);
            }
            Msg::Restart { seq, frames } => {
                buf.put_u8(RESTART);
                buf.put_u64_le(*seq);
                buf.put_u32_le(*frames);
            }
            Msg::Fin => buf.put_u8(FIN),
        }
    }

    /// Parses one message from the front of `buf`, consuming it. On
    /// [`Error::Incomplete`] nothing is consumed (`buf` is only read through
    /// a copy); frame payloads are bounded by the header checks.
    pub fn decode(buf: &mut impl Buf) -> Result<Self> {
        let bytes = buf.chunk();
        if bytes.len() < buf.remaining() {
            // Callers pass contiguous buffers; refuse rather than misparse.
            return Err(Error::invalid("stream message", "non-contiguous buffer"));
        }
        let mut peek = bytes;
        let msg = Self::parse(&mut peek)?;
        let used = bytes.len() - peek.len();
        buf.advance(used);
        Ok(msg)
    }

    /// [`Self::decode`] from a buffer the message may be cut out of: a
    /// frame's payload is then a slice of `buf`'s memory, not a copy. On
    /// an error `buf` is left as it was.
    pub fn decode_from(buf: &mut BytesMut) -> Result<Self> {
        if buf.first() != Some(&FRAME) {
            return Self::decode(buf);
        }
        let mut b = &buf[1..];
        need(&b, FRAME_HEADER_LEN)?;
        let header = FrameHeader::decode(&mut b)?;
        // payload_len <= MAX_PAYLOAD_LEN, checked by the header.
        let n = header.payload_len as usize;
        need(&b, n)?;
        let start = buf.len() - b.len();
        buf.advance(start);
        let payload = buf.split_to(n).freeze();
        Ok(Msg::Frame { header, payload })
    }

    fn parse(b: &mut &[u8]) -> Result<Self> {
        need(b, 1)?;
        let tag = b.get_u8();
        Ok(match tag {
            OPEN => {
                need(b, 1)?;
                let n = usize::from(b.get_u8());
                if n == 0 || n > MAX_TUNNEL_NAME {
                    return Err(Error::invalid("open", format!("tunnel name of {n} bytes")));
                }
                need(b, n + 17)?;
                let name = std::str::from_utf8(&b[..n])
                    .map_err(|_| Error::invalid("open", "tunnel name is not UTF-8"))?
                    .to_string();
                b.advance(n);
                Msg::Open {
                    name,
                    primer_check: b.get_u64_le(),
                    window: b.get_u32_le(),
                    keep: b.get_u32_le(),
                    lanes: b.get_u8(),
                }
            }
            OPENED => Msg::Opened,
            REFUSED => {
                need(b, 2)?;
                let n = usize::from(b.get_u16_le());
                if n > MAX_REASON_LEN {
                    return Err(Error::invalid("refused", format!("reason of {n} bytes")));
                }
                need(b, n)?;
                let reason = String::from_utf8_lossy(&b[..n]).into_owned();
                b.advance(n);
                Msg::Refused { reason }
            }
            FRAME => {
                need(b, FRAME_HEADER_LEN)?;
                let header = FrameHeader::decode(b)?;
                // payload_len <= MAX_PAYLOAD_LEN, checked by the header.
                let n = header.payload_len as usize;
                need(b, n)?;
                let payload = Bytes::copy_from_slice(&b[..n]);
                b.advance(n);
                Msg::Frame { header, payload }
            }
            ACK => {
                need(b, 8)?;
                Msg::Ack {
                    seq: b.get_u64_le(),
                }
            }
            RESEND => {
                need(b, 8)?;
                Msg::Resend {
                    seq: b.get_u64_le(),
                }
            }
            RESTART => {
                need(b, 12)?;
                Msg::Restart {
                    seq: b.get_u64_le(),
                    frames: b.get_u32_le(),
                }
            }
            FIN => Msg::Fin,
            t => return Err(Error::invalid("stream message", format!("unknown tag {t}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Codec;
    use proptest::prelude::*;

    fn samples() -> Vec<Msg> {
        vec![
            Msg::Open {
                name: "web".into(),
                primer_check: 7,
                window: 512,
                keep: 128,
                lanes: 4,
            },
            Msg::Opened,
            Msg::Refused {
                reason: "target 127.0.0.1:9: connection refused".into(),
            },
            Msg::Frame {
                header: FrameHeader {
                    codec: Codec::Raw,
                    orig_len: 3,
                    payload_len: 3,
                    tokens: 0,
                    checksum: 9,
                },
                payload: Bytes::from_static(b"abc"),
            },
            Msg::Ack { seq: 5 },
            Msg::Resend { seq: 6 },
            Msg::Restart { seq: 6, frames: 2 },
            Msg::Fin,
        ]
    }

    #[test]
    fn round_trip_and_incomplete() {
        for m in samples() {
            let mut v = Vec::new();
            m.encode(&mut v);
            for cut in 0..v.len() {
                let mut b = &v[..cut];
                assert!(
                    matches!(Msg::decode(&mut b), Err(Error::Incomplete { .. })),
                    "{m:?} cut at {cut}"
                );
                assert_eq!(b.len(), cut, "nothing consumed");
            }
            for cut in 0..v.len() {
                let mut b = BytesMut::from(&v[..cut]);
                assert!(
                    matches!(Msg::decode_from(&mut b), Err(Error::Incomplete { .. })),
                    "{m:?} cut at {cut}"
                );
                assert_eq!(&b[..], &v[..cut], "nothing consumed");
            }
            v.extend_from_slice(b"tail");
            let mut b = &v[..];
            assert_eq!(Msg::decode(&mut b).unwrap(), m);
            assert_eq!(b, b"tail");
            // Cut out of a shared buffer: the same message, a payload that
            // is a slice of the buffer's memory, the rest left.
            let mut shared = BytesMut::from(&v[..]);
            let base = shared.as_ptr() as usize;
            let got = Msg::decode_from(&mut shared).unwrap();
            assert_eq!(got, m);
            assert_eq!(&shared[..], b"tail");
            if let Msg::Frame { payload, .. } = got
                && !payload.is_empty()
            {
                let at = payload.as_ptr() as usize;
                assert!((base..base + v.len()).contains(&at), "payload was copied");
            }
        }
    }

    #[test]
    fn rejects_bad_tags_and_lengths() {
        assert!(matches!(
            Msg::decode(&mut &[0u8][..]),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            Msg::decode(&mut &[OPEN, 65][..]),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            Msg::decode(&mut &[REFUSED, 0xff, 0xff][..]),
            Err(Error::Invalid { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut b = &v[..];
            let plain = Msg::decode(&mut b);
            let mut shared = BytesMut::from(&v[..]);
            let cut = Msg::decode_from(&mut shared);
            match (plain, cut) {
                (Ok(a), Ok(c)) => {
                    prop_assert_eq!(a, c);
                    prop_assert_eq!(b, &shared[..]);
                }
                (Err(_), Err(_)) => prop_assert_eq!(&shared[..], &v[..]),
                (a, c) => prop_assert!(false, "decode {a:?}, decode_from {c:?}"),
            }
        }
    }
}
