//! The config file as serde reads it: every value as written, every table
//! closed to unknown fields. [`validate`](super::validate) turns it into a
//! [`Config`](super::Config); the meaning of each field is documented there
//! and in `config/README.md`.
//!
//! Required fields are `Option` here so that validation, not serde, reports
//! them missing, with the field's full name.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, Unexpected, Visitor};

use super::Secret;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `"sender"` or `"receiver"`.
    pub role: Option<String>,
    /// `[link]`.
    #[serde(default)]
    pub link: RawLink,
    /// `[model]`.
    #[serde(default)]
    pub model: RawModel,
    /// `[metrics]`.
    #[serde(default)]
    pub metrics: RawMetrics,
    /// `[limits]`.
    #[serde(default)]
    pub limits: RawLimits,
    /// `[[tunnel]]`.
    #[serde(default)]
    pub tunnel: Vec<RawTunnel>,
}

/// `[link]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLink {
    /// Sender: the receiver's `host:port`.
    pub connect: Option<String>,
    /// Sender: the name on the receiver's certificate.
    pub server_name: Option<String>,
    /// Sender: local UDP address.
    pub bind: Option<String>,
    /// Receiver: UDP address to accept the link on.
    pub listen: Option<String>,
    /// This end's certificate.
    pub certificate: Option<PathBuf>,
    /// This end's private key.
    pub key: Option<PathBuf>,
    /// The other end's certificate, pinned.
    pub peer_certificate: Option<PathBuf>,
    /// Pre-shared token, inline.
    pub token: Option<Secret>,
    /// Pre-shared token, from a file.
    pub token_file: Option<PathBuf>,
    /// Sender: first reconnect wait.
    pub reconnect_min: Option<String>,
    /// Sender: longest reconnect wait.
    pub reconnect_max: Option<String>,
    /// How long the link may stay silent before it counts as lost.
    pub idle_timeout: Option<String>,
    /// `"stream"` or `"datagram-fec"`.
    pub mode: Option<String>,
    /// `"cubic"` or `"bbr"`.
    pub congestion: Option<String>,
    /// `[link.fec]`.
    #[serde(default)]
    pub fec: RawFec,
}

/// `[link.fec]`: the datagram-fec mode's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFec {
    /// Repair ratio until loss is measured.
    pub repair_ratio: Option<f64>,
    /// Lowest adaptive repair ratio.
    pub min_ratio: Option<f64>,
    /// Highest adaptive repair ratio.
    pub max_ratio: Option<f64>,
    /// Block size cap.
    pub block_bytes: Option<RawSize>,
    /// Longest wait of a block's first item.
    pub block_delay: Option<String>,
    /// Silence after which an incomplete block asks for more symbols.
    pub topup_after: Option<String>,
    /// Top-ups per block before its frames go on the reliable path.
    pub max_topups: Option<u64>,
    /// A block without feedback this long goes on the reliable path.
    pub ack_timeout: Option<String>,
}

/// `[model]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// Model directory.
    pub dir: Option<PathBuf>,
    /// Inference threads.
    pub threads: Option<u64>,
    /// ONNX Runtime library.
    pub ort_lib: Option<PathBuf>,
    /// `cpu`, `cuda` or `auto`.
    pub device: Option<String>,
    /// Latency budget of a model-coded frame.
    pub max_delay: Option<String>,
    /// Most lanes per model call.
    pub max_batch: Option<u64>,
}

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Prometheus endpoint address.
    pub listen: Option<String>,
}

/// `[limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Most connections at once.
    pub max_connections: Option<u64>,
    /// Unacknowledged bytes per connection and direction.
    pub buffer: Option<RawSize>,
    /// Frame size cap.
    pub frame: Option<RawSize>,
    /// Quiet time that flushes a partial frame.
    pub flush_idle: Option<String>,
    /// Longest wait of a frame's first byte.
    pub flush_max: Option<String>,
}

/// One `[[tunnel]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTunnel {
    /// Unique name.
    pub name: Option<String>,
    /// Sender: local listen address.
    pub listen: Option<String>,
    /// Receiver: the `host:port` to dial.
    pub target: Option<String>,
    /// `auto`, `lm`, `zstd` or `raw`.
    pub codec: Option<String>,
    /// Primer text, inline.
    pub primer: Option<String>,
    /// Primer, from a file.
    pub primer_file: Option<PathBuf>,
    /// Context window override (tokens).
    pub window: Option<u32>,
    /// Re-prime keep override (tokens).
    pub keep: Option<u32>,
    /// Lanes one frame may be coded on at once.
    pub lanes: Option<u8>,
    /// zstd level of this end's zstd frames.
    pub zstd_level: Option<i32>,
}

/// A byte size as written: a bare number of bytes (`16384`) or a string
/// with a unit (`"16KiB"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSize {
    /// A bare integer.
    Bytes(u64),
    /// A string, parsed by [`crate::units::parse_u64`] during validation.
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SizeVisitor;

        impl Visitor<'_> for SizeVisitor {
            type Value = RawSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"16KiB\" or a number of bytes")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawSize, E> {
                u64::try_from(v)
                    .map(RawSize::Bytes)
                    .map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }

        d.deserialize_any(SizeVisitor)
    }
}
