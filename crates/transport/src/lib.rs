//! LLMPack link: quinn endpoints, TLS 1.3 with pinned certificates or a
//! token, and the handshake that checks both ends can talk.
//!
//! - [`tls`]: certificates and keys ([`generate`], [`Identity`]) and the
//!   verifiers that trust exactly one pinned certificate;
//! - [`endpoint`]: [`server_endpoint`] and [`client_endpoint`] with [`Tuning`];
//! - [`handshake`]: [`Hello`]/[`Reply`] on the first stream, [`client_handshake`]
//!   and [`server_handshake`].
//!
//! Must not depend on ort or the model crate: a model is described here only
//! by its [`ModelInfo`].
#![warn(missing_docs)]

pub mod endpoint;
pub mod handshake;
pub mod tls;

#[cfg(test)]
mod link_tests;

pub use endpoint::{
    Congestion, SERVER_NAME, ServerAuth, TransportError, Tuning, client_endpoint, server_endpoint,
};
pub use handshake::{
    Agreed, CLOSE_PROTOCOL, CLOSE_REFUSED, CLOSE_SHUTDOWN, CLOSE_TIMEOUT, CLOSE_UNAUTHENTICATED,
    HANDSHAKE_TIMEOUT, HandshakeError, Hello, MAX_TOKEN_LEN, ModelInfo, PROTOCOL_VERSION, Reply,
    Secret, ServerPolicy, client_handshake, server_handshake,
};
pub use llmpack_frame::ModelId;
pub use tls::{ALPN, Identity, TlsError, fingerprint, generate, load_certificate};
// Re-exported so callers name the same types as this crate.
pub use quinn;
pub use rustls::pki_types::CertificateDer;
