//! Why a tunnelled connection ended abnormally: one error type shared by
//! the connection's pumps ([`crate::conn`]) and the FEC link
//! (`fec_link`), so that neither depends on the other for it.

use llmpack_frame::protocol::ProtoError;

use crate::sched::SchedError;

/// Why a connection ended abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The local socket failed.
    #[error("socket: {0}")]
    Socket(#[from] std::io::Error),
    /// The QUIC stream failed (link lost, peer reset the stream).
    #[error("link stream: {0}")]
    Stream(String),
    /// The peer sent something that breaks the stream protocol.
    #[error("peer protocol error: {0}")]
    Protocol(String),
    /// The receiver refused the connection.
    #[error("refused by the receiver: {0}")]
    Refused(String),
    /// The model scheduler failed.
    #[error(transparent)]
    Sched(#[from] SchedError),
}

impl From<ProtoError> for ConnError {
    fn from(e: ProtoError) -> Self {
        match e {
            ProtoError::Refused(r) => ConnError::Refused(r),
            ProtoError::Violation(v) => ConnError::Protocol(v),
            e => ConnError::Protocol(e.to_string()),
        }
    }
}
