//! The link handshake: the client (sender) opens the first bidirectional
//! stream and sends a [`Hello`]; the server answers [`Reply::Welcome`] or
//! [`Reply::Refused`] and both sides close that stream.
//!
//! Both ends reach the same verdict:
//! - token required but missing or wrong: the server closes the connection
//!   with [`CLOSE_UNAUTHENTICATED`] and no details;
//! - protocol versions differ: refused;
//! - both ends have a model and the ids differ: refused;
//! - same id, different probe: welcome without model coding, and a warning;
//! - either end without a model: welcome without model coding.

mod wire;

use std::time::Duration;

use quinn::{ConnectionError, ReadError, ReadToEndError, VarInt, WriteError};
use tracing::{debug, info, warn};

pub use wire::{
    HELLO_MAGIC, Hello, MAX_HELLO_LEN, MAX_REASON_LEN, MAX_REPLY_LEN, MAX_RUNTIME_LEN,
    MAX_TOKEN_LEN, ModelInfo, PROTOCOL_VERSION, REPLY_MAGIC, Reply, Secret,
};

/// Longest the whole exchange may take before the link is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Application close code: normal shutdown.
pub const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);
/// Application close code: the client's token was missing or wrong (sent without a reason).
pub const CLOSE_UNAUTHENTICATED: VarInt = VarInt::from_u32(1);
/// Application close code: the handshake refused the link; the reason is the close reason.
pub const CLOSE_REFUSED: VarInt = VarInt::from_u32(2);
/// Application close code: the peer broke the handshake protocol.
pub const CLOSE_PROTOCOL: VarInt = VarInt::from_u32(3);
/// Application close code: the handshake did not finish within [`HANDSHAKE_TIMEOUT`].
pub const CLOSE_TIMEOUT: VarInt = VarInt::from_u32(4);

/// Errors from the handshake. Every error has closed the connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The connection failed before the handshake finished.
    #[error("connection lost during the handshake: {0}")]
    Connection(#[from] ConnectionError),
    /// The handshake stream failed (reset or stopped by the peer).
    #[error("handshake stream failed: {0}")]
    Stream(String),
    /// The peer's handshake message cannot be parsed.
    #[error(
        "malformed handshake message from the peer ({0}); is it an llmpack of the same version?"
    )]
    Malformed(#[from] llmpack_frame::Error),
    /// Server side: the client sent no token or a wrong one.
    #[error("client presented no token or a wrong one; connection closed")]
    Unauthenticated,
    /// Client side: the server closed the link as unauthenticated.
    #[error("the receiver rejected our credentials; check that `token` matches the receiver's")]
    TokenRejected,
    /// The link was refused; the text says why and is the same on both ends.
    #[error("link refused: {0}")]
    Refused(String),
    /// The peer answered against the protocol rules.
    #[error("peer broke the handshake protocol: {0}")]
    Protocol(String),
    /// The handshake took too long.
    #[error("no handshake within {0:?}; is the peer an llmpack, and is the link up?")]
    Timeout(Duration),
}

/// What the server accepts.
#[derive(Debug, Clone, Default)]
pub struct ServerPolicy {
    /// `Some`: clients must send this token (compared in constant time).
    pub token: Option<Secret>,
    /// The server's model, if it has one.
    pub model: Option<ModelInfo>,
}

/// The outcome both ends agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreed {
    /// Whether traffic is coded with the model.
    pub lm: bool,
    /// The peer's model, if it has one.
    pub peer_model: Option<ModelInfo>,
}

/// Runs the client side on a fresh connection. On error the connection is closed.
pub async fn client_handshake(
    conn: &quinn::Connection,
    hello: &Hello,
) -> Result<Agreed, HandshakeError> {
    let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, client_exchange(conn, hello))
        .await
        .unwrap_or(Err(HandshakeError::Timeout(HANDSHAKE_TIMEOUT)));
    if let Err(e) = &result {
        close_on(conn, e);
    }
    result
}

/// Runs the server side on a freshly accepted connection. On error the
/// connection is closed; an unauthenticated peer learns nothing but the close code.
pub async fn server_handshake(
    conn: &quinn::Connection,
    policy: &ServerPolicy,
) -> Result<Agreed, HandshakeError> {
    let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, server_exchange(conn, policy))
        .await
        .unwrap_or(Err(HandshakeError::Timeout(HANDSHAKE_TIMEOUT)));
    if let Err(e) = &result {
        close_on(conn, e);
    }
    result
}

async fn client_exchange(
    conn: &quinn::Connection,
    hello: &Hello,
) -> Result<Agreed, HandshakeError> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(from_connection)?;
    let mut buf = Vec::new();
    hello.encode(&mut buf);
    send.write_all(&buf).await.map_err(from_write)?;
    send.finish()
        .map_err(|e| HandshakeError::Stream(e.to_string()))?;
    let bytes = recv
        .read_to_end(MAX_REPLY_LEN)
        .await
        .map_err(|e| from_read(e, "reply", MAX_REPLY_LEN))?;
    let mut rd = &bytes[..];
    let reply = Reply::decode(&mut rd)?;
    no_trailing(rd, "reply")?;
    match reply {
        Reply::Refused { reason } => Err(HandshakeError::Refused(reason)),
        Reply::Welcome { lm, model } => match judge(hello.model.as_ref(), model.as_ref()) {
            Verdict::Refuse(why) => Err(HandshakeError::Protocol(format!(
                "the receiver welcomed us although {why}"
            ))),
            Verdict::Agree { lm: expected } if expected != lm => {
                Err(HandshakeError::Protocol(format!(
                    "the receiver set model coding {} where this end expects {}",
                    on_off(lm),
                    on_off(expected)
                )))
            }
            Verdict::Agree { .. } => {
                info!(lm, "link handshake done");
                Ok(Agreed {
                    lm,
                    peer_model: model,
                })
            }
        },
    }
}

async fn server_exchange(
    conn: &quinn::Connection,
    policy: &ServerPolicy,
) -> Result<Agreed, HandshakeError> {
    let (mut send, mut recv) = conn.accept_bi().await?;
    let bytes = recv
        .read_to_end(MAX_HELLO_LEN)
        .await
        .map_err(|e| from_read(e, "hello", MAX_HELLO_LEN))?;
    let (version, token) = Hello::decode_prefix(&mut &bytes[..])?;
    if let Some(want) = &policy.token {
        if !token.is_some_and(|t| t.matches(want)) {
            warn!(peer = %conn.remote_address(), "client presented no token or a wrong one");
            return Err(HandshakeError::Unauthenticated);
        }
    } else if token.is_some() {
        debug!("client sent a token; this receiver requires none");
    }
    let reason = if version != PROTOCOL_VERSION {
        format!(
            "sender speaks protocol v{version}, receiver v{PROTOCOL_VERSION}; run the same llmpack version on both ends"
        )
    } else {
        let mut rd = &bytes[..];
        let hello = Hello::decode(&mut rd)?;
        no_trailing(rd, "hello")?;
        match judge(hello.model.as_ref(), policy.model.as_ref()) {
            Verdict::Agree { lm } => {
                let reply = Reply::Welcome {
                    lm,
                    model: policy.model.clone(),
                };
                send_reply(&mut send, &reply).await?;
                info!(lm, peer = %conn.remote_address(), "link handshake done");
                return Ok(Agreed {
                    lm,
                    peer_model: hello.model,
                });
            }
            Verdict::Refuse(reason) => reason,
        }
    };
    warn!(peer = %conn.remote_address(), %reason, "link refused");
    send_reply(
        &mut send,
        &Reply::Refused {
            reason: reason.clone(),
        },
    )
    .await?;
    // Let the reply arrive before `server_handshake` closes the connection.
    let _ = send.stopped().await;
    Err(HandshakeError::Refused(reason))
}

async fn send_reply(send: &mut quinn::SendStream, reply: &Reply) -> Result<(), HandshakeError> {
    let mut buf = Vec::new();
    reply.encode(&mut buf);
    send.write_all(&buf).await.map_err(from_write)?;
    send.finish()
        .map_err(|e| HandshakeError::Stream(e.to_string()))
}

/// The verdict on two ends' models.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Agree { lm: bool },
    Refuse(String),
}

/// Judges the sender's (client's) and receiver's (server's) models, and logs
/// the verdict. Both ends call it with the same arguments.
fn judge(sender: Option<&ModelInfo>, receiver: Option<&ModelInfo>) -> Verdict {
    let (s, r) = match (sender, receiver) {
        (Some(s), Some(r)) => (s, r),
        (s, r) => {
            let missing = match (s, r) {
                (None, None) => "neither end has",
                (None, _) => "the sender has",
                _ => "the receiver has",
            };
            info!("model coding off: {missing} no model");
            return Verdict::Agree { lm: false };
        }
    };
    if s.id != r.id {
        return Verdict::Refuse(format!(
            "model mismatch: sender has model {}, receiver has model {}; install the same model on both ends",
            s.id, r.id
        ));
    }
    if s.probe != r.probe {
        warn!(
            model = %s.id,
            sender_probe = format_args!("{:016x}", s.probe),
            receiver_probe = format_args!("{:016x}", r.probe),
            sender_runtime = %s.runtime,
            receiver_runtime = %r.runtime,
            "MODEL CODING OFF: the same model computes differently on the two ends; \
             check that both run the same runtime version and execution provider"
        );
        return Verdict::Agree { lm: false };
    }
    if s.runtime != r.runtime {
        info!(
            model = %s.id,
            sender_runtime = %s.runtime,
            receiver_runtime = %r.runtime,
            "runtimes differ but compute the same probe; model coding on"
        );
    }
    Verdict::Agree { lm: true }
}

fn on_off(lm: bool) -> &'static str {
    if lm { "on" } else { "off" }
}

fn no_trailing(rest: &[u8], what: &'static str) -> Result<(), HandshakeError> {
    if rest.is_empty() {
        return Ok(());
    }
    Err(llmpack_frame::Error::Invalid {
        what,
        why: format!("{} trailing bytes", rest.len()),
    }
    .into())
}

/// Closes the connection with the code for `e`, unless it is closed already
/// (closing again would replace the peer's close reason with our own).
fn close_on(conn: &quinn::Connection, e: &HandshakeError) {
    if conn.close_reason().is_some() {
        return;
    }
    let (code, reason): (VarInt, &[u8]) = match e {
        HandshakeError::Unauthenticated | HandshakeError::TokenRejected => {
            (CLOSE_UNAUTHENTICATED, b"")
        }
        HandshakeError::Refused(reason) => (CLOSE_REFUSED, reason.as_bytes()),
        HandshakeError::Timeout(_) => (CLOSE_TIMEOUT, b""),
        _ => (CLOSE_PROTOCOL, b""),
    };
    let reason = &reason[..reason.len().min(MAX_REASON_LEN)];
    conn.close(code, reason);
}

/// Maps a lost connection, recognising the server's close codes.
fn from_connection(e: ConnectionError) -> HandshakeError {
    if let ConnectionError::ApplicationClosed(close) = &e {
        if close.error_code == CLOSE_UNAUTHENTICATED {
            return HandshakeError::TokenRejected;
        }
        if close.error_code == CLOSE_REFUSED {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            return HandshakeError::Refused(if reason.is_empty() {
                "no reason given".into()
            } else {
                reason
            });
        }
    }
    HandshakeError::Connection(e)
}

fn from_write(e: WriteError) -> HandshakeError {
    match e {
        WriteError::ConnectionLost(e) => from_connection(e),
        e => HandshakeError::Stream(e.to_string()),
    }
}

fn from_read(e: ReadToEndError, what: &'static str, limit: usize) -> HandshakeError {
    match e {
        ReadToEndError::Read(ReadError::ConnectionLost(e)) => from_connection(e),
        ReadToEndError::TooLong => llmpack_frame::Error::Invalid {
            what,
            why: format!("longer than {limit} bytes"),
        }
        .into(),
        e => HandshakeError::Stream(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmpack_frame::ModelId;

    fn m(id: u8, probe: u64, runtime: &str) -> ModelInfo {
        ModelInfo {
            id: ModelId([id; 32]),
            runtime: runtime.into(),
            probe,
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(judge(None, None), Verdict::Agree { lm: false });
        assert_eq!(
            judge(Some(&m(1, 1, "a")), None),
            Verdict::Agree { lm: false }
        );
        assert_eq!(
            judge(None, Some(&m(1, 1, "a"))),
            Verdict::Agree { lm: false }
        );
        assert_eq!(
            judge(Some(&m(1, 1, "a")), Some(&m(1, 1, "b"))),
            Verdict::Agree { lm: true }
        );
        assert_eq!(
            judge(Some(&m(1, 1, "a")), Some(&m(1, 2, "a"))),
            Verdict::Agree { lm: false }
        );
        let Verdict::Refuse(why) = judge(Some(&m(1, 1, "a")), Some(&m(2, 1, "a"))) else {
            panic!()
        };
        assert!(
            why.contains("0101010101010101") && why.contains("0202020202020202"),
            "{why}"
        );
    }
}
