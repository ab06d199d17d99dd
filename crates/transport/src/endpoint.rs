//! quinn endpoints: TLS 1.3 only, ALPN [`ALPN`], pinned certificates, and the
//! transport tuning for long fat links.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, TransportConfig, VarInt};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::tls::{ALPN, Identity, PinnedClientVerifier, PinnedServerVerifier, TlsError, provider};

/// Server name the client puts in its TLS hello. The pinned-certificate
/// verifier ignores it, but rustls needs a syntactically valid one.
pub const SERVER_NAME: &str = "llmpack";

/// Errors from building an endpoint.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A certificate or key problem.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// rustls refused the configuration (for example an unusable key type).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The crypto provider lacks the cipher suite QUIC needs for its first packets.
    #[error("TLS provider cannot do QUIC: {0}")]
    Quic(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The UDP socket could not be opened.
    #[error(
        "cannot bind UDP {addr}: {source}; is another llmpack using the port, or is the address wrong?"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A [`Tuning`] value is out of range.
    #[error("tuning: {field}: {why}")]
    Tuning {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

/// How the server authenticates clients.
#[derive(Debug, Clone)]
pub struct ServerAuth {
    /// The certificate and key the server presents (the client pins it).
    pub identity: Identity,
    /// The only client certificate accepted. `None` is token mode: the TLS
    /// layer asks for no client certificate and the handshake token
    /// authenticates the client instead.
    pub client_pin: Option<CertificateDer<'static>>,
}

/// QUIC transport settings shared by both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuning {
    /// Concurrent bidirectional streams the peer may open (one per tunnelled TCP connection).
    pub max_streams: u32,
    /// Interval between keep-alive pings; zero disables them.
    pub keep_alive: Duration,
    /// The link is dropped after this long without a packet; zero means never.
    pub idle_timeout: Duration,
    /// Bytes a single stream may have in flight before the receiver reads them.
    pub stream_window: u32,
    /// Bytes all streams together may have in flight.
    pub conn_window: u32,
    /// Whether unreliable QUIC datagrams are accepted.
    pub datagrams: bool,
    /// Bytes of outgoing datagrams quinn queues before a sender waits; small
    /// keeps the queue (and so the latency of feedback behind it) short.
    pub datagram_send_buffer: usize,
    /// The congestion controller of this end's sending direction.
    pub congestion: Congestion,
    /// Whether path-MTU discovery may grow (and, on suspected black holes,
    /// shrink) the packet size; off keeps `max_datagram_size()` stable.
    pub mtu_discovery: bool,
}

/// Congestion controller of a link end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// CUBIC (quinn's default): every loss is read as congestion.
    #[default]
    Cubic,
    /// BBR: paces at the measured bottleneck rate; random loss does not
    /// shrink the window the way it does under CUBIC.
    Bbr,
}

impl Tuning {
    /// Default concurrent streams: enough for a busy tunnel of many small connections.
    pub const DEFAULT_MAX_STREAMS: u32 = 1024;
    /// Default keep-alive: a packet a second keeps NATs open and lets a
    /// restarted receiver's stateless reset reach the sender within about a
    /// second (~50 bytes/s on an idle link).
    pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(1);
    /// Default idle timeout: ten missed keep-alives; how long a peer that
    /// vanished without a restart takes to notice.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default stream window: 8 MiB keeps one stream busy at ~670 Mbit/s over 100 ms RTT.
    pub const DEFAULT_STREAM_WINDOW: u32 = 8 << 20;
    /// Default connection window: 64 MiB, ~5 Gbit/s over 100 ms RTT for all streams together.
    pub const DEFAULT_CONN_WINDOW: u32 = 64 << 20;

    fn check(&self) -> Result<(), TransportError> {
        let bad = |field, why: &str| {
            Err(TransportError::Tuning {
                field,
                why: why.to_owned(),
            })
        };
        if self.max_streams == 0 {
            return bad(
                "max_streams",
                "must be at least 1, or no connection can be tunnelled",
            );
        }
        if self.stream_window == 0 {
            return bad("stream_window", "must be more than 0 bytes");
        }
        if self.conn_window < self.stream_window {
            return bad("conn_window", "must be at least stream_window");
        }
        if !self.idle_timeout.is_zero()
            && !self.keep_alive.is_zero()
            && self.keep_alive >= self.idle_timeout
        {
            return bad(
                "keep_alive",
                "must be shorter than idle_timeout, or an idle link drops between pings",
            );
        }
        Ok(())
    }

    /// The quinn transport config these settings describe.
    fn transport(&self) -> Result<Arc<TransportConfig>, TransportError> {
        self.check()?;
        let mut t = TransportConfig::default();
        t.max_concurrent_bidi_streams(VarInt::from_u32(self.max_streams))
            .keep_alive_interval((!self.keep_alive.is_zero()).then_some(self.keep_alive))
            .stream_receive_window(VarInt::from_u32(self.stream_window))
            .receive_window(VarInt::from_u32(self.conn_window))
            .send_window(u64::from(self.conn_window));
        let idle = if self.idle_timeout.is_zero() {
            None
        } else {
            Some(
                IdleTimeout::try_from(self.idle_timeout).map_err(|_| TransportError::Tuning {
                    field: "idle_timeout",
                    why: format!("{:?} is too long", self.idle_timeout),
                })?,
            )
        };
        t.max_idle_timeout(idle);
        if !self.datagrams {
            t.datagram_receive_buffer_size(None);
        }
        t.datagram_send_buffer_size(self.datagram_send_buffer);
        if !self.mtu_discovery {
            t.mtu_discovery_config(None);
        }
        if self.congestion == Congestion::Bbr {
            t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
        }
        Ok(Arc::new(t))
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            max_streams: Self::DEFAULT_MAX_STREAMS,
            keep_alive: Self::DEFAULT_KEEP_ALIVE,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            stream_window: Self::DEFAULT_STREAM_WINDOW,
            conn_window: Self::DEFAULT_CONN_WINDOW,
            datagrams: false,
            datagram_send_buffer: 1 << 20,
            congestion: Congestion::Cubic,
            mtu_discovery: true,
        }
    }
}

/// Opens a server endpoint on `listen` (must run inside a tokio runtime).
///
/// With `auth.client_pin` set, clients must present exactly that certificate;
/// without it no client certificate is asked for (token mode).
pub fn server_endpoint(
    listen: SocketAddr,
    auth: &ServerAuth,
    tuning: &Tuning,
) -> Result<quinn::Endpoint, TransportError> {
    let transport = tuning.transport()?;
    let provider = provider();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match &auth.client_pin {
        Some(pin) => builder
            .with_client_cert_verifier(Arc::new(PinnedClientVerifier::new(pin.clone(), &provider))),
        None => builder.with_no_client_auth(),
    };
    let (chain, key) = auth.identity.chain_and_key();
    let mut tls = builder.with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    config.transport_config(transport);
    let bind = |source| TransportError::Bind {
        addr: listen,
        source,
    };
    let socket = udp_socket(listen).map_err(bind)?;
    let (reset_key, cid_key) = restart_keys(&auth.identity);
    let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
    endpoint_config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    quinn::Endpoint::new(
        endpoint_config,
        Some(config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(bind)
}

/// Socket buffer the link's UDP socket asks for, each way. The kernel's
/// default (~208 KiB on Linux) overflows when the process is busy for a
/// moment under load: 32 concurrent 16 KiB responses in datagram-fec mode
/// lost half their datagrams at the receive buffer on a clean loopback,
/// QUIC acknowledged nothing of them (they never reached it), and the FEC
/// layer mistook the overflow for a lossy link. The kernel caps the request
/// at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER: usize = 4 << 20;

/// A UDP socket bound to `addr`, with [`SOCKET_BUFFER`] asked for each way
/// (a refusal is not an error: the default buffers still work).
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "link socket: receive buffer size refused");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "link socket: send buffer size refused");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The server's stateless-reset key and connection-id key, derived from its
/// private key so that both survive a restart: a receiver that comes back
/// recognises the connection ids it handed out before (so it does not drop
/// their packets as invalid) and answers them with a stateless reset the
/// sender accepts; the sender reconnects at once instead of waiting out the
/// idle timeout. (Anyone holding the private key could reset links anyway.)
fn restart_keys(identity: &Identity) -> (ring::hmac::Key, u64) {
    let derive = |label: &[u8]| {
        let mut h = Sha256::new();
        h.update(label);
        h.update(identity.key_der());
        h.finalize()
    };
    let reset = derive(b"llmpack stateless reset key v1\0");
    let cid = derive(b"llmpack connection id key v1\0");
    let mut k = [0u8; 8];
    k.copy_from_slice(&cid[..8]);
    (
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset),
        u64::from_le_bytes(k),
    )
}

/// Opens a client endpoint bound to `bind` (use port 0) whose default client
/// config pins `server_pin` and, if given, presents `client_identity`.
///
/// Connect with `endpoint.connect(addr, SERVER_NAME)?.await`. Must run inside
/// a tokio runtime.
pub fn client_endpoint(
    bind: SocketAddr,
    server_pin: CertificateDer<'static>,
    client_identity: Option<Identity>,
    tuning: &Tuning,
) -> Result<quinn::Endpoint, TransportError> {
    let transport = tuning.transport()?;
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier::new(
            server_pin, &provider,
        )));
    let mut tls = match client_identity {
        Some(identity) => {
            let (chain, key) = identity.chain_and_key();
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    config.transport_config(transport);
    let err = |source| TransportError::Bind { addr: bind, source };
    let socket = udp_socket(bind).map_err(err)?;
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(err)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tuning_is_valid() {
        Tuning::default().transport().unwrap();
    }

    #[test]
    fn bad_tuning_names_the_field() {
        let t = Tuning {
            keep_alive: Duration::from_secs(40),
            ..Tuning::default()
        };
        let err = t.transport().unwrap_err().to_string();
        assert!(err.starts_with("tuning: keep_alive:"), "{err}");
        let t = Tuning {
            max_streams: 0,
            ..Tuning::default()
        };
        assert!(
            t.transport()
                .unwrap_err()
                .to_string()
                .contains("max_streams")
        );
        let t = Tuning {
            idle_timeout: Duration::ZERO,
            ..Tuning::default()
        };
        t.transport().unwrap();
    }
}
