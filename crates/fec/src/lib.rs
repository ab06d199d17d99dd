//! LLMPack FEC mode: RaptorQ (RFC 6330) block framing for QUIC datagrams.
//!
//! This crate is sans-IO: state machines that take bytes and time (`now`) and
//! hand back datagrams, items, feedback and deadlines. It owns no socket, reads
//! no clock and spawns no task. It must not depend on tokio, quinn or ort.
//!
//! # Design
//!
//! The sender side, [`BlockEncoder`], collects opaque *items* (tunnel messages,
//! up to [`MAX_ITEM_LEN`] bytes each) into *blocks*; inside a block every item
//! is prefixed with its length (`u32` little-endian). A block is closed when it
//! reaches [`EncoderConfig::block_bytes`] or when its first item has waited
//! [`EncoderConfig::block_delay`] ([`BlockEncoder::poll_timeout`] gives the
//! deadline). A closed block is encoded as one RaptorQ source block when it is
//! first polled for transmission: the symbol size is derived from the
//! `max_datagram` passed to [`BlockEncoder::poll_transmit`] (what quinn's
//! `max_datagram_size()` says at that moment) minus [`HEADER_LEN`], never a
//! constant. It yields the `k` source symbols plus `k * repair_ratio` repair
//! symbols on average (at least one until the path has shown itself clean).
//! A block closed by [`BlockEncoder::flush`] (the caller's link went idle:
//! the last block of a burst) gets at least as many as leave a chance of
//! at most 1 % that its losses exceed its repair, since a top-up would cost
//! it a whole round trip. Two datagrams of a block small enough to share a
//! QUIC packet are spaced apart, so that one lost packet does not take both.
//!
//! The receiver side, [`BlockDecoder`], parses and validates every header field
//! before a symbol reaches raptorq (raptorq indexes without checking), decodes
//! blocks, and yields items strictly in block order: a missing block holds back
//! later ones only while it is incomplete. It sends [`Feedback`]:
//! - [`Feedback::Decoded`] when a block is complete, so the sender frees it;
//! - [`Feedback::NeedMore`] when a block is still incomplete
//!   [`DecoderConfig::topup_after`] after its last symbol: the sender answers
//!   with that many *fresh* repair symbols (new ESIs; a fountain code can make
//!   as many as needed); also for a block none of whose symbols arrived, once
//!   a later block shows it was sent ([`WHOLE_BLOCK`]);
//! - [`Feedback::Report`], periodically: symbols expected vs received (the loss
//!   estimate) and the first block not yet decoded (a cumulative ack, so a lost
//!   `Decoded` costs nothing).
//!
//! The sender keeps an exponentially weighted average of the reported loss and
//! sets `repair_ratio = clamp(loss * 1.25 + 0.01, min_ratio, max_ratio)`,
//! starting from [`EncoderConfig::repair_ratio`].
//!
//! Data is never lost. A block that still is not decoded after
//! [`EncoderConfig::max_topups`] top-ups, whose symbols no longer fit the
//! datagram limit, or that sees no feedback for [`EncoderConfig::ack_timeout`]
//! is given up: [`BlockEncoder::poll_fallback`] hands back its items, tagged
//! with the block number, and the caller sends them on the reliable path. The
//! receiver feeds them to [`BlockDecoder::handle_fallback`], which puts them in
//! the block's place in the sequence and ignores them if the block was decoded
//! after all: every item comes out of [`BlockDecoder::poll_item`] exactly once,
//! in order.
//!
//! Memory is bounded on both ends: the encoder holds at most
//! [`EncoderConfig::max_blocks_in_flight`] (+1 while a push closes two blocks)
//! blocks and reports [`BlockEncoder::is_full`]; the decoder keeps at most
//! [`DecoderConfig::max_blocks`] blocks ahead of the next one to deliver,
//! rejects datagrams for blocks beyond that with an error, and stores at most
//! `k + MAX_EXTRA_SYMBOLS` symbols per block.
//!
//! # Wire format (little-endian)
//!
//! Symbol datagram: `type u8 (0xF0) | block u32 | k u16 | symbol_size u16 |
//! transfer_len u32 | esi u32 | symbol bytes (exactly symbol_size)`; see
//! [`SymbolHeader`]. Feedback messages: see [`Feedback`].
#![warn(missing_docs)]

use std::time::Duration;

mod decoder;
mod encoder;
mod items;
mod wire;

pub use decoder::{BlockDecoder, DecoderConfig, DecoderStats};
pub use encoder::{BlockEncoder, EncoderConfig, EncoderStats, Fallback};
pub use wire::{Feedback, SymbolHeader};

/// Length of a symbol datagram's header, in bytes.
pub const HEADER_LEN: usize = 17;
/// Smallest symbol size we send or accept: below this the header dominates.
pub const MIN_SYMBOL_SIZE: u16 = 64;
/// Largest symbol size we send or accept: no real path carries bigger datagrams.
pub const MAX_SYMBOL_SIZE: u16 = 16_384;
/// Largest item [`BlockEncoder::push`] accepts (one tunnel message).
pub const MAX_ITEM_LEN: usize = 1 << 20;
/// Largest block (`transfer_len`): `block_bytes` is capped here, and a single
/// item of [`MAX_ITEM_LEN`] plus its prefix fits. With [`MIN_SYMBOL_SIZE`] this
/// keeps `k` far below raptorq's limit of 56 403 source symbols.
pub const MAX_BLOCK_BYTES: u32 = 2 << 20;
/// Encoding symbol ids are 24 bits in RFC 6330 (raptorq asserts this).
pub const MAX_ESI: u32 = 1 << 24;
/// Symbols beyond `k` that the decoder stores for one block; more are dropped.
pub const MAX_EXTRA_SYMBOLS: u32 = 32;
/// Largest symbol count a [`Feedback::NeedMore`] may ask for.
pub const MAX_TOPUP_SYMBOLS: u32 = 1 << 16;
/// [`Feedback::NeedMore`] `symbols` meaning "none of this block arrived":
/// the encoder sends the whole block again in fresh symbols, as many as its
/// loss estimate says are needed.
pub const WHOLE_BLOCK: u32 = MAX_TOPUP_SYMBOLS;

/// Least time between two datagrams of one block small enough to share a
/// packet (see [`spacing`]).
const SPACING_MIN: Duration = Duration::from_millis(1);
/// Most time between them: long enough for the proxy's 3 KiB datagram send
/// buffer to drain at 1 Mbit/s (25 ms).
const SPACING_MAX: Duration = Duration::from_millis(30);

/// Time between two datagrams of one block that could share a packet, on a
/// path of round trip `rtt`. QUIC puts as many queued datagrams into a
/// packet as fit, so a small block's source and repair symbols, queued
/// together, would be lost together and the repair would protect nothing.
/// The encoder holds the block's next datagram until a packet's worth of
/// other datagrams went after its previous one, or for this long (a
/// twentieth of the round trip, 1 to 30 ms: time for the queues below to
/// drain); that costs latency only when the first one is lost, far less
/// than the round trip of a top-up. The decoder waits this much longer
/// before it asks for a block none of whose symbols arrived.
pub(crate) fn spacing(rtt: Duration) -> Duration {
    (rtt / 20).clamp(SPACING_MIN, SPACING_MAX)
}

/// Errors from parsing wire data.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum WireError {
    /// More bytes are needed before this message can be parsed.
    #[error("incomplete: {needed} more bytes needed")]
    Incomplete {
        /// How many more bytes are needed at least.
        needed: usize,
    },
    /// The bytes can never form a valid message: the peer is broken or hostile.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// The message or field being parsed.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Errors from the FEC state machines.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum FecError {
    /// A datagram or feedback message failed to parse or validate.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// An item is larger than [`MAX_ITEM_LEN`]; send it on the reliable path.
    #[error(
        "item of {len} bytes exceeds the FEC limit of {MAX_ITEM_LEN}; send it on the reliable path"
    )]
    ItemTooLarge {
        /// The item's length.
        len: usize,
    },
    /// Too many blocks in flight: wait for feedback (or poll fallbacks) and retry.
    #[error("too many FEC blocks in flight; retry after feedback arrives")]
    Full,
    /// A datagram for a block too far ahead of delivery; it was not stored.
    #[error("block {block} is too far ahead of block {next}, the next to deliver")]
    TooFarAhead {
        /// The datagram's block.
        block: u32,
        /// The next block the decoder will deliver.
        next: u32,
    },
    /// A decoded block did not parse into items; its symbols were discarded.
    #[error("block {block} decoded to malformed items; discarded")]
    CorruptBlock {
        /// The block.
        block: u32,
    },
    /// A configuration value is out of range.
    #[error("FEC config: {field}: {why}")]
    Config {
        /// The offending field.
        field: &'static str,
        /// The accepted range.
        why: &'static str,
    },
}

/// Checks that `buf` holds at least `n` bytes.
pub(crate) fn need(buf: &impl bytes::Buf, n: usize) -> Result<(), WireError> {
    let have = buf.remaining();
    if have < n {
        return Err(WireError::Incomplete { needed: n - have });
    }
    Ok(())
}

pub(crate) const fn invalid(what: &'static str, why: &'static str) -> WireError {
    WireError::Invalid { what, why }
}
