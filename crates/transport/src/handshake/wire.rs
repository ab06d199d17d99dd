//! Wire format of the handshake messages.
//!
//! Hello (client to server), all integers big-endian:
//!
//! ```text
//! HELLO_MAGIC [8] | version u16 | token_len u16 | token [token_len]
//!   | has_model u8 | (id [32] | runtime_len u8 | runtime [runtime_len] | probe u64)?
//! ```
//!
//! The magic, version and token keep this layout in every protocol version,
//! so a server can authenticate, then refuse, a peer of another version
//! ([`Hello::decode_prefix`]). A `token_len` of 0 means no token.
//!
//! Reply (server to client):
//!
//! ```text
//! REPLY_MAGIC [8] | 0 u8 | lm u8 | has_model u8 | model?        (Welcome)
//! REPLY_MAGIC [8] | 1 u8 | reason_len u16 | reason [reason_len]  (Refused)
//! ```

use std::fmt;

use bytes::{Buf, BufMut};
use llmpack_frame::{Error, ModelId, Result};
use sha2::{Digest, Sha256};

/// Handshake protocol version this build speaks (2: `lm` tables mix in the
/// codec's match model, so frames of version 1 peers would not decode; 3: a
/// stream's `Open` names its lanes, and `lm` frames of a tunnel with more
/// than one carry a segment table; 4: in datagram-fec mode each
/// connection's first item carries its opening, an item kind a version 3
/// receiver drops, after which that connection's later items would wait
/// for it forever).
pub const PROTOCOL_VERSION: u16 = 4;
/// First bytes of a [`Hello`].
pub const HELLO_MAGIC: [u8; 8] = *b"LLMPKH1\0";
/// First bytes of a [`Reply`].
pub const REPLY_MAGIC: [u8; 8] = *b"LLMPKR1\0";
/// Longest token, in bytes.
pub const MAX_TOKEN_LEN: usize = 256;
/// Longest runtime description in a [`ModelInfo`], in bytes; longer ones are cut on encode.
pub const MAX_RUNTIME_LEN: usize = 64;
/// Longest refusal reason, in bytes; longer ones are cut on encode.
pub const MAX_REASON_LEN: usize = 1024;
/// Most bytes read for a hello, in any protocol version (v1 needs at most 374).
pub const MAX_HELLO_LEN: usize = 4096;
/// Most bytes read for a reply, in any protocol version (v1 needs at most 1035).
pub const MAX_REPLY_LEN: usize = 4096;

const MODEL_LEN_MIN: usize = 32 + 1 + 8;

/// A shared secret (the handshake token): 1 to [`MAX_TOKEN_LEN`] bytes.
///
/// `Debug` prints `***`; equality is constant-time.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps a token, checking its length.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(invalid("token", "empty; use a long random string"));
        }
        if bytes.len() > MAX_TOKEN_LEN {
            return Err(invalid(
                "token",
                format!("{} bytes long, at most {MAX_TOKEN_LEN}", bytes.len()),
            ));
        }
        Ok(Secret(bytes))
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Constant-time comparison: compares SHA-256 digests, so neither the
    /// content nor the length of `self` leaks through timing.
    pub fn matches(&self, other: &Secret) -> bool {
        let (a, b) = (Sha256::digest(&self.0), Sha256::digest(&other.0));
        let diff = a
            .iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(diff) == 0
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.matches(other)
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// What one end knows about its language model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// Model identity (hash of graph and tokenizer).
    pub id: ModelId,
    /// Runtime description, e.g. `onnxruntime 1.31.1`; informational, at
    /// most [`MAX_RUNTIME_LEN`] bytes on the wire.
    pub runtime: String,
    /// Hash of the model's output for a fixed probe input on this machine.
    pub probe: u64,
}

/// The client's opening message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the client speaks ([`PROTOCOL_VERSION`]).
    pub version: u16,
    /// Token for a server in token mode.
    pub token: Option<Secret>,
    /// The client's model, if it has one.
    pub model: Option<ModelInfo>,
}

impl Hello {
    /// A hello of this build's [`PROTOCOL_VERSION`].
    pub fn new(token: Option<Secret>, model: Option<ModelInfo>) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            token,
            model,
        }
    }

    /// Writes the hello.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(&HELLO_MAGIC);
        buf.put_u16(self.version);
        let token = self.token.as_ref().map_or(&[][..], Secret::expose);
        put_len_u16(buf, token);
        put_model(buf, self.model.as_ref());
    }

    /// Reads the fields every protocol version shares: version and token.
    pub fn decode_prefix(buf: &mut impl Buf) -> Result<(u16, Option<Secret>)> {
        need(buf, HELLO_MAGIC.len() + 4)?;
        let mut magic = [0; 8];
        buf.copy_to_slice(&mut magic);
        if magic != HELLO_MAGIC {
            return Err(invalid(
                "hello",
                "bad magic: the peer is not an llmpack sender",
            ));
        }
        let version = buf.get_u16();
        let len = usize::from(buf.get_u16());
        if len > MAX_TOKEN_LEN {
            return Err(invalid(
                "hello",
                format!("token of {len} bytes, at most {MAX_TOKEN_LEN}"),
            ));
        }
        need(buf, len)?;
        let token = (len > 0).then(|| Secret(buf.copy_to_bytes(len).to_vec()));
        Ok((version, token))
    }

    /// Reads a hello in this version's layout (whatever its version field says).
    pub fn decode(buf: &mut impl Buf) -> Result<Hello> {
        let (version, token) = Hello::decode_prefix(buf)?;
        let model = get_model(buf)?;
        Ok(Hello {
            version,
            token,
            model,
        })
    }
}

/// The server's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The link is up.
    Welcome {
        /// Whether both ends code with the model.
        lm: bool,
        /// The server's model, if it has one.
        model: Option<ModelInfo>,
    },
    /// The link is refused.
    Refused {
        /// Why, for the user; at most [`MAX_REASON_LEN`] bytes on the wire.
        reason: String,
    },
}

impl Reply {
    /// Writes the reply.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_slice(&REPLY_MAGIC);
        match self {
            Reply::Welcome { lm, model } => {
                buf.put_u8(0);
                buf.put_u8(u8::from(*lm));
                put_model(buf, model.as_ref());
            }
            Reply::Refused { reason } => {
                buf.put_u8(1);
                put_len_u16(buf, truncate(reason, MAX_REASON_LEN).as_bytes());
            }
        }
    }

    /// Reads a reply.
    pub fn decode(buf: &mut impl Buf) -> Result<Reply> {
        need(buf, REPLY_MAGIC.len() + 1)?;
        let mut magic = [0; 8];
        buf.copy_to_slice(&mut magic);
        if magic != REPLY_MAGIC {
            return Err(invalid(
                "reply",
                "bad magic: the peer is not an llmpack receiver",
            ));
        }
        match buf.get_u8() {
            0 => {
                need(buf, 1)?;
                let lm = get_bool(buf, "reply lm flag")?;
                let model = get_model(buf)?;
                Ok(Reply::Welcome { lm, model })
            }
            1 => {
                need(buf, 2)?;
                let len = usize::from(buf.get_u16());
                if len > MAX_REASON_LEN {
                    return Err(invalid(
                        "reply",
                        format!("reason of {len} bytes, at most {MAX_REASON_LEN}"),
                    ));
                }
                let reason = get_string(buf, len, "reply reason")?;
                Ok(Reply::Refused { reason })
            }
            tag => Err(invalid("reply", format!("unknown kind {tag}"))),
        }
    }
}

fn invalid(what: &'static str, why: impl Into<String>) -> Error {
    Error::Invalid {
        what,
        why: why.into(),
    }
}

fn need(buf: &impl Buf, n: usize) -> Result<()> {
    let have = buf.remaining();
    if have < n {
        return Err(Error::Incomplete { needed: n - have });
    }
    Ok(())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes a u16 length and the bytes; callers bound `bytes` to `u16::MAX`.
fn put_len_u16(buf: &mut impl BufMut, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    buf.put_u16(len);
    buf.put_slice(&bytes[..usize::from(len)]);
}

fn put_model(buf: &mut impl BufMut, model: Option<&ModelInfo>) {
    let Some(m) = model else {
        buf.put_u8(0);
        return;
    };
    buf.put_u8(1);
    buf.put_slice(&m.id.0);
    let runtime = truncate(&m.runtime, MAX_RUNTIME_LEN).as_bytes();
    buf.put_u8(u8::try_from(runtime.len()).unwrap_or(u8::MAX));
    buf.put_slice(runtime);
    buf.put_u64(m.probe);
}

fn get_bool(buf: &mut impl Buf, what: &'static str) -> Result<bool> {
    match buf.get_u8() {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(invalid(what, format!("{b} is neither 0 nor 1"))),
    }
}

fn get_string(buf: &mut impl Buf, len: usize, what: &'static str) -> Result<String> {
    need(buf, len)?;
    String::from_utf8(buf.copy_to_bytes(len).to_vec()).map_err(|_| invalid(what, "not UTF-8"))
}

fn get_model(buf: &mut impl Buf) -> Result<Option<ModelInfo>> {
    need(buf, 1)?;
    if !get_bool(buf, "model flag")? {
        return Ok(None);
    }
    need(buf, MODEL_LEN_MIN)?;
    let mut id = [0; 32];
    buf.copy_to_slice(&mut id);
    let len = usize::from(buf.get_u8());
    if len > MAX_RUNTIME_LEN {
        return Err(invalid(
            "model runtime",
            format!("{len} bytes, at most {MAX_RUNTIME_LEN}"),
        ));
    }
    let runtime = get_string(buf, len, "model runtime")?;
    need(buf, 8)?;
    let probe = buf.get_u64();
    Ok(Some(ModelInfo {
        id: ModelId(id),
        runtime,
        probe,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn model() -> impl Strategy<Value = Option<ModelInfo>> {
        proptest::option::of(
            (any::<[u8; 32]>(), "[a-z0-9 .é]{0,21}", any::<u64>()).prop_map(
                |(id, runtime, probe)| ModelInfo {
                    id: ModelId(id),
                    runtime,
                    probe,
                },
            ),
        )
    }

    fn hello() -> impl Strategy<Value = Hello> {
        let token = proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=MAX_TOKEN_LEN));
        (any::<u16>(), token, model()).prop_map(|(version, token, model)| Hello {
            version,
            token: token.map(|t| Secret::new(t).unwrap()),
            model,
        })
    }

    fn reply() -> impl Strategy<Value = Reply> {
        prop_oneof![
            (any::<bool>(), model()).prop_map(|(lm, model)| Reply::Welcome { lm, model }),
            "\\PC{0,300}".prop_map(|reason| Reply::Refused {
                reason: truncate(&reason, MAX_REASON_LEN).to_owned()
            }),
        ]
    }

    proptest! {
        #[test]
        fn hello_round_trips(h in hello()) {
            let mut buf = Vec::new();
            h.encode(&mut buf);
            prop_assert!(buf.len() <= MAX_HELLO_LEN);
            let mut rd = &buf[..];
            prop_assert_eq!(Hello::decode(&mut rd).unwrap(), h.clone());
            prop_assert!(rd.is_empty());
            for cut in 0..buf.len() {
                let is_incomplete = matches!(Hello::decode(&mut &buf[..cut]), Err(Error::Incomplete { .. }));
                prop_assert!(is_incomplete, "cut at {}", cut);
            }
        }

        #[test]
        fn reply_round_trips(r in reply()) {
            let mut buf = Vec::new();
            r.encode(&mut buf);
            prop_assert!(buf.len() <= MAX_REPLY_LEN);
            let mut rd = &buf[..];
            prop_assert_eq!(Reply::decode(&mut rd).unwrap(), r);
            prop_assert!(rd.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Hello::decode(&mut &bytes[..]);
            let _ = Reply::decode(&mut &bytes[..]);
            let mut h = HELLO_MAGIC.to_vec();
            h.extend_from_slice(&bytes);
            let _ = Hello::decode(&mut &h[..]);
            let mut r = REPLY_MAGIC.to_vec();
            r.extend_from_slice(&bytes);
            let _ = Reply::decode(&mut &r[..]);
        }
    }

    #[test]
    fn long_fields_are_cut_not_corrupted() {
        let reply = Reply::Refused {
            reason: "é".repeat(MAX_REASON_LEN),
        };
        let mut buf = Vec::new();
        reply.encode(&mut buf);
        let Reply::Refused { reason } = Reply::decode(&mut &buf[..]).unwrap() else {
            panic!()
        };
        assert_eq!(reason.len(), MAX_REASON_LEN);
        let hello = Hello::new(
            None,
            Some(ModelInfo {
                id: ModelId([7; 32]),
                runtime: "x".repeat(100),
                probe: 1,
            }),
        );
        let mut buf = Vec::new();
        hello.encode(&mut buf);
        assert_eq!(
            Hello::decode(&mut &buf[..])
                .unwrap()
                .model
                .unwrap()
                .runtime
                .len(),
            MAX_RUNTIME_LEN
        );
    }

    #[test]
    fn oversized_lengths_are_invalid() {
        let mut buf = HELLO_MAGIC.to_vec();
        buf.extend_from_slice(&[0, 1, 0xff, 0xff]);
        assert!(matches!(
            Hello::decode(&mut &buf[..]),
            Err(Error::Invalid { .. })
        ));
        let mut buf = REPLY_MAGIC.to_vec();
        buf.extend_from_slice(&[1, 0xff, 0xff]);
        assert!(matches!(
            Reply::decode(&mut &buf[..]),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            Hello::decode(&mut &b"GET / HTTP/1.1\r\n"[..]),
            Err(Error::Invalid { .. })
        ));
    }

    #[test]
    fn secret_is_masked_and_bounded() {
        let s = Secret::new(b"hunter2".to_vec()).unwrap();
        assert_eq!(format!("{s:?}"), "***");
        assert!(s.matches(&Secret::new(b"hunter2".to_vec()).unwrap()));
        assert!(!s.matches(&Secret::new(b"hunter3".to_vec()).unwrap()));
        assert!(Secret::new(Vec::new()).is_err());
        assert!(Secret::new(vec![b'a'; MAX_TOKEN_LEN + 1]).is_err());
    }
}
