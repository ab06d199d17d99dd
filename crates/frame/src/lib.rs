//! LLMPack wire format: the frame header every coded chunk carries, the
//! messages of a tunnel stream, the `datagram-fec` items and fallback blocks,
//! the `pack` file container, and the limits that bound everything a peer or a file can
//! make us allocate.
//!
//! This crate is plain data and parsing. It must not depend on the codec, the
//! model runtime, tokio or quinn: everything above depends on it.
//!
//! Every length read from the wire is checked against a named constant before
//! it is used, and parsing distinguishes [`Error::Incomplete`] (wait for more
//! bytes) from [`Error::Invalid`] (the peer or file is broken or hostile).
#![warn(missing_docs)]

mod container;
pub mod fec_items;
mod frame;
pub mod opening;
pub mod outgoing;
pub mod policy;
pub mod protocol;
mod stream;

pub use container::{
    ContainerHeader, MAGIC, MAX_LANES, MAX_WINDOW, MAX_ZSTD_HISTORY, ModelId, VERSION, lane_range,
    next_frame_len,
};
pub use frame::{Codec, FRAME_HEADER_LEN, FrameHeader, MAX_FRAME_LEN, MAX_PAYLOAD_LEN};
pub use stream::{MAX_REASON_LEN, MAX_TUNNEL_NAME, Msg};

/// Errors from parsing wire data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// More bytes are needed before this item can be parsed.
    #[error("incomplete: {needed} more bytes needed")]
    Incomplete {
        /// How many more bytes are needed at least.
        needed: usize,
    },
    /// The bytes can never form a valid item.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The item being parsed.
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

impl Error {
    pub(crate) fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            why: why.into(),
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Checks that `buf` holds at least `n` bytes.
pub(crate) fn need(buf: &impl bytes::Buf, n: usize) -> Result<()> {
    let have = buf.remaining();
    if have < n {
        return Err(Error::Incomplete { needed: n - have });
    }
    Ok(())
}
