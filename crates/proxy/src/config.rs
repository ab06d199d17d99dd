//! The proxies' config file: one TOML format for both roles.
//!
//! Two steps, as in the house style: serde reads the file into a
//! [`RawConfig`] (every table `deny_unknown_fields`, every value still as
//! written), then [`validate`] checks it and builds the typed [`Config`] the
//! program uses. Validation errors name the field
//! (`tunnel[2].target: not a host:port ("example")`).
//!
//! Validation resolves relative paths against the config file's directory. It
//! reads `link.token_file` and `tunnel.primer_file` (their contents are part of
//! the config) but not the certificates and keys: the transport loads those
//! when it starts. `config/README.md` documents every field.

mod defaults;
mod describe;
pub mod raw;
mod validate;
mod values;

#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use llmpack_codec::{LmParams, Policy};
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

pub use raw::RawConfig;
pub use validate::validate;

/// The server name a sender expects on the receiver's certificate unless
/// `link.server_name` says otherwise; `llmpack keygen` issues certificates
/// for this name.
pub const DEFAULT_SERVER_NAME: &str = "llmpack";

/// Which end of the link this proxy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Listens for local clients and dials the receiver.
    Sender,
    /// Accepts the link and dials the targets in its own config.
    Receiver,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        })
    }
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Which end this is.
    pub role: Role,
    /// The QUIC link to the other end.
    pub link: LinkConfig,
    /// The language model.
    pub model: ModelConfig,
    /// Where the Prometheus endpoint listens; `None`: no endpoint.
    pub metrics: Option<SocketAddr>,
    /// Sizes and timers of the data path.
    pub limits: Limits,
    /// The tunnels, in file order; at least one, names unique.
    pub tunnels: Vec<TunnelConfig>,
}

/// The `[link]` table.
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// Sender: the receiver's address (`host:port`, the host may be a DNS
    /// name). `None` on a receiver.
    pub connect: Option<String>,
    /// Sender: the name the receiver's certificate must carry. On a receiver
    /// always [`DEFAULT_SERVER_NAME`] and unused.
    pub server_name: String,
    /// Sender: the local UDP address to send from. Unused on a receiver.
    pub bind: SocketAddr,
    /// Receiver: the UDP address to accept the link on. `None` on a sender.
    pub listen: Option<SocketAddr>,
    /// This end's certificate and key. Always set on a receiver; on a sender
    /// `None` only when a token authenticates it.
    pub identity: Option<Identity>,
    /// The other end's certificate (PEM), pinned. Always set on a sender; on
    /// a receiver `None` only when a token authenticates the sender.
    pub peer_certificate: Option<PathBuf>,
    /// Pre-shared token (at least [`MIN_TOKEN_LEN`] bytes).
    pub token: Option<Secret>,
    /// Sender: first wait before dialling again after the link drops.
    pub reconnect_min: Duration,
    /// Sender: the wait doubles after each failure up to this.
    pub reconnect_max: Duration,
    /// The link counts as lost after this long without a packet from the
    /// other end (QUIC's idle timeout; the two ends' values negotiate to the
    /// smaller, and QUIC never uses less than three probe timeouts, which
    /// grow with the round trip). Keep-alives go every third of it, at
    /// most every second.
    pub idle_timeout: Duration,
    /// How frames cross the link.
    pub mode: LinkMode,
    /// This end's congestion controller (default: CUBIC in stream mode, BBR
    /// in datagram-fec mode, where random loss is repaired rather than read
    /// as congestion).
    pub congestion: llmpack_transport::Congestion,
    /// The datagram-fec mode's settings (used only in that mode).
    pub fec: FecSettings,
}

/// How frames cross the link (`link.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkMode {
    /// Every connection's frames on its own reliable QUIC stream.
    #[default]
    Stream,
    /// Frames in RaptorQ-protected QUIC datagrams, shared by all connections;
    /// used only when both ends set it (each end checks that the other
    /// accepts datagrams), otherwise the link runs in `Stream` mode.
    DatagramFec,
}

impl LinkMode {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            LinkMode::Stream => "stream",
            LinkMode::DatagramFec => "datagram-fec",
        }
    }
}

/// The `[link.fec]` table, as the FEC encoder and decoder take it.
#[derive(Debug, Clone)]
pub struct FecSettings {
    /// Sending side.
    pub encoder: llmpack_fec::EncoderConfig,
    /// Receiving side.
    pub decoder: llmpack_fec::DecoderConfig,
}

impl Default for FecSettings {
    fn default() -> Self {
        FecSettings {
            encoder: llmpack_fec::EncoderConfig {
                // ~14 symbols of 1200 bytes: a block fills quickly on a slow link.
                block_bytes: 16 << 10,
                ..llmpack_fec::EncoderConfig::default()
            },
            decoder: llmpack_fec::DecoderConfig {
                ordered: false,
                ..llmpack_fec::DecoderConfig::default()
            },
        }
    }
}

/// A certificate and its private key, both PEM files (not read by
/// validation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The certificate chain.
    pub certificate: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// The `[model]` table.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The model directory; `None`: the program's built-in default.
    pub dir: Option<PathBuf>,
    /// Inference threads.
    pub threads: usize,
    /// The ONNX Runtime shared library; `None`: the runtime's own search.
    pub ort_lib: Option<PathBuf>,
    /// Where the model runs (`cpu`, `cuda` or `auto`; see
    /// [`llmpack_model::Device`]).
    pub device: llmpack_model::Device,
    /// A frame is model-coded only if the scheduler expects it done within
    /// this; otherwise it goes `zstd`.
    pub max_delay: Duration,
    /// Most lanes in one batched model call on the CPU.
    pub max_batch: usize,
    /// Most lanes in one batched model call on a GPU: `model.max_batch`
    /// where given, else a larger default than the CPU's.
    pub max_batch_gpu: usize,
}

impl ModelConfig {
    /// Most lanes in one batched model call on `backend`.
    pub fn max_batch_on(&self, backend: llmpack_model::Backend) -> usize {
        match backend {
            llmpack_model::Backend::Cpu => self.max_batch,
            llmpack_model::Backend::Cuda => self.max_batch_gpu,
        }
    }
}

/// The `[limits]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most TCP connections open at once (all tunnels together).
    pub max_connections: usize,
    /// Per connection and direction: most bytes read from TCP but not yet
    /// acknowledged by the peer. At least `frame`.
    pub buffer: usize,
    /// Frame size cap, `1..=MAX_FRAME_LEN`.
    pub frame: u32,
    /// Opt-in coalescing: hold a partial frame until the socket has been
    /// quiet this long... (0, the default: frame each read at once when the
    /// coder is free).
    pub flush_idle: Duration,
    /// ...or until its first byte has waited this long. At least
    /// `flush_idle`.
    pub flush_max: Duration,
}

/// One `[[tunnel]]`.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// Unique name, `[A-Za-z0-9._-]{1,64}`; both ends match tunnels by it.
    pub name: String,
    /// Sender: where local clients connect. `None` on a receiver.
    pub listen: Option<SocketAddr>,
    /// Receiver: the one `host:port` this tunnel may dial. `None` on a sender.
    pub target: Option<String>,
    /// Codecs for the bytes this end sends.
    pub policy: Policy,
    /// Context both ends share before the first byte (may be empty).
    pub primer: Vec<u8>,
    /// Model context window override, in tokens.
    pub window: Option<u32>,
    /// Tokens kept on re-prime override.
    pub keep: Option<u32>,
    /// Lanes one frame may be coded on at once (1..=16): a long frame's
    /// segments step through the model together.
    pub lanes: u8,
    /// zstd level of the zstd frames this end sends (1..=19); `None`: chosen
    /// per frame from the link's rate.
    pub zstd_level: Option<i32>,
}

impl TunnelConfig {
    /// The context rule: this tunnel's overrides on top of `default` (the
    /// model's rule).
    pub fn context_rule(&self, default: LmParams) -> LmParams {
        LmParams {
            window: self.window.unwrap_or(default.window),
            keep: self.keep.unwrap_or(default.keep),
        }
    }

    /// SHA-256 of the primer: what the two ends compare per stream.
    pub fn primer_digest(&self) -> [u8; 32] {
        Sha256::digest(&self.primer).into()
    }
}

/// Shortest pre-shared token accepted, in bytes: 16 random bytes are
/// 128 bits, out of reach of guessing.
pub const MIN_TOKEN_LEN: usize = 16;

/// A secret (a token) whose `Debug` prints `***`, so it stays out of logs.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// The secret itself; keep it out of logs and error messages.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the format (unknown field,
    /// wrong type); the message gives line and column.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// A value is missing, malformed, out of range or inconsistent.
    #[error("{field}: {message}")]
    Field {
        /// The field, as `tunnel[2].target`.
        field: String,
        /// What is wrong and, where it helps, what to write instead.
        message: String,
    },
}

impl ConfigError {
    /// A [`ConfigError::Field`].
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// Reads, parses and validates the config file at `path`; relative paths
    /// in it resolve against its directory. Field errors do not repeat the
    /// file name: callers add it (`.context("checking config/sender.toml")`).
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates `text` as if read from the file at `path` (which
    /// need not exist): `path` names the file in errors and its directory
    /// anchors relative paths.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        validate(raw, base_dir(path))
    }

    /// The tunnel called `name`.
    pub fn tunnel(&self, name: &str) -> Option<&TunnelConfig> {
        self.tunnels.iter().find(|t| t.name == name)
    }
}

/// The directory relative paths in the config file at `path` resolve
/// against.
fn base_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}
