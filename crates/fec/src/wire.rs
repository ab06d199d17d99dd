//! Wire format of symbol datagrams and feedback messages (little-endian).

use bytes::{Buf, BufMut};

use crate::{
    HEADER_LEN, MAX_BLOCK_BYTES, MAX_ESI, MAX_SYMBOL_SIZE, MAX_TOPUP_SYMBOLS, MIN_SYMBOL_SIZE,
    WireError, invalid, need,
};

const TYPE_SYMBOL: u8 = 0xF0;
const TYPE_DECODED: u8 = 0xF1;
const TYPE_NEED_MORE: u8 = 0xF2;
const TYPE_REPORT: u8 = 0xF3;

/// Header of a symbol datagram; the symbol (`symbol_size` bytes) follows.
///
/// [`SymbolHeader::decode`] validates every field, so a header it returns can
/// be handed to raptorq without tripping its assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymbolHeader {
    /// Block number, consecutive from 0 per encoder.
    pub block: u32,
    /// Source symbols in the block: `ceil(transfer_len / symbol_size)`.
    pub k: u16,
    /// Bytes per symbol, in `[MIN_SYMBOL_SIZE, MAX_SYMBOL_SIZE]`.
    pub symbol_size: u16,
    /// Block length in bytes before padding, in `[1, MAX_BLOCK_BYTES]`.
    pub transfer_len: u32,
    /// Encoding symbol id: `< k` source, `>= k` repair; below [`MAX_ESI`].
    pub esi: u32,
}

/// `ceil(transfer_len / symbol_size)`, or `None` if it does not fit a `u16`.
pub(crate) fn source_symbols(transfer_len: u32, symbol_size: u16) -> Option<u16> {
    u16::try_from(transfer_len.div_ceil(u32::from(symbol_size.max(1)))).ok()
}

impl SymbolHeader {
    /// Writes the header.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u8(TYPE_SYMBOL);
        buf.put_u32_le(self.block);
        buf.put_u16_le(self.k);
        buf.put_u16_le(self.symbol_size);
        buf.put_u32_le(self.transfer_len);
        buf.put_u32_le(self.esi);
    }

    /// Reads and validates a header; the symbol bytes stay in `buf`.
    pub fn decode(buf: &mut impl Buf) -> Result<Self, WireError> {
        const WHAT: &str = "FEC symbol header";
        need(buf, HEADER_LEN)?;
        if buf.get_u8() != TYPE_SYMBOL {
            return Err(invalid(WHAT, "not a symbol datagram"));
        }
        let h = SymbolHeader {
            block: buf.get_u32_le(),
            k: buf.get_u16_le(),
            symbol_size: buf.get_u16_le(),
            transfer_len: buf.get_u32_le(),
            esi: buf.get_u32_le(),
        };
        if !(MIN_SYMBOL_SIZE..=MAX_SYMBOL_SIZE).contains(&h.symbol_size) {
            return Err(invalid(WHAT, "symbol size out of range"));
        }
        if h.transfer_len == 0 || h.transfer_len > MAX_BLOCK_BYTES {
            return Err(invalid(WHAT, "transfer length out of range"));
        }
        if source_symbols(h.transfer_len, h.symbol_size) != Some(h.k) {
            return Err(invalid(
                WHAT,
                "k does not match transfer length and symbol size",
            ));
        }
        if h.esi >= MAX_ESI {
            return Err(invalid(WHAT, "encoding symbol id out of range"));
        }
        Ok(h)
    }
}

/// Receiver-to-sender feedback about blocks.
///
/// Wire format: `type u8` then, per variant, `Decoded: block u32`;
/// `NeedMore: block u32 | symbols u32`; `Report: decoded_below u32 |
/// expected u32 | received u32`. Every message is at most
/// [`Feedback::MAX_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Feedback {
    /// The block is decoded; the sender may free it.
    Decoded {
        /// The block.
        block: u32,
    },
    /// The block is stalled: send this many fresh repair symbols.
    NeedMore {
        /// The block.
        block: u32,
        /// Repair symbols wanted, in `[1, MAX_TOPUP_SYMBOLS]`.
        symbols: u32,
    },
    /// Periodic report: loss since the last report, and a cumulative ack.
    Report {
        /// Every block below this one is decoded (or replaced by fallback).
        decoded_below: u32,
        /// Symbols the sender sent, as far as the receiver can tell.
        expected: u32,
        /// Symbols that arrived (`<= expected`).
        received: u32,
    },
}

impl Feedback {
    /// Longest encoded feedback message.
    pub const MAX_LEN: usize = 13;

    /// Writes the message.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match *self {
            Feedback::Decoded { block } => {
                buf.put_u8(TYPE_DECODED);
                buf.put_u32_le(block);
            }
            Feedback::NeedMore { block, symbols } => {
                buf.put_u8(TYPE_NEED_MORE);
                buf.put_u32_le(block);
                buf.put_u32_le(symbols);
            }
            Feedback::Report {
                decoded_below,
                expected,
                received,
            } => {
                buf.put_u8(TYPE_REPORT);
                buf.put_u32_le(decoded_below);
                buf.put_u32_le(expected);
                buf.put_u32_le(received);
            }
        }
    }

    /// Reads and validates a message.
    pub fn decode(buf: &mut impl Buf) -> Result<Self, WireError> {
        const WHAT: &str = "FEC feedback";
        need(buf, 1)?;
        match buf.get_u8() {
            TYPE_DECODED => {
                need(buf, 4)?;
                Ok(Feedback::Decoded {
                    block: buf.get_u32_le(),
                })
            }
            TYPE_NEED_MORE => {
                need(buf, 8)?;
                let block = buf.get_u32_le();
                let symbols = buf.get_u32_le();
                if symbols == 0 || symbols > MAX_TOPUP_SYMBOLS {
                    return Err(invalid(WHAT, "top-up symbol count out of range"));
                }
                Ok(Feedback::NeedMore { block, symbols })
            }
            TYPE_REPORT => {
                need(buf, 12)?;
                let decoded_below = buf.get_u32_le();
                let expected = buf.get_u32_le();
                let received = buf.get_u32_le();
                if received > expected {
                    return Err(invalid(WHAT, "more symbols received than expected"));
                }
                Ok(Feedback::Report {
                    decoded_below,
                    expected,
                    received,
                })
            }
            _ => Err(invalid(WHAT, "unknown feedback type")),
        }
    }

    /// The message as bytes, ready for a datagram.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::MAX_LEN);
        self.encode(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> impl Strategy<Value = SymbolHeader> {
        (
            any::<u32>(),
            MIN_SYMBOL_SIZE..=MAX_SYMBOL_SIZE,
            1..=MAX_BLOCK_BYTES,
            0..MAX_ESI,
        )
            .prop_map(|(block, symbol_size, transfer_len, esi)| SymbolHeader {
                block,
                k: source_symbols(transfer_len, symbol_size).unwrap(),
                symbol_size,
                transfer_len,
                esi,
            })
    }

    fn feedback() -> impl Strategy<Value = Feedback> {
        prop_oneof![
            any::<u32>().prop_map(|block| Feedback::Decoded { block }),
            (any::<u32>(), 1..=MAX_TOPUP_SYMBOLS)
                .prop_map(|(block, symbols)| Feedback::NeedMore { block, symbols }),
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(d, a, b)| Feedback::Report {
                decoded_below: d,
                expected: a.max(b),
                received: a.min(b),
            }),
        ]
    }

    proptest! {
        #[test]
        fn header_roundtrip(h in header()) {
            let mut v = Vec::new();
            h.encode(&mut v);
            prop_assert_eq!(v.len(), HEADER_LEN);
            prop_assert_eq!(SymbolHeader::decode(&mut &v[..]), Ok(h));
            for cut in 0..HEADER_LEN {
                let incomplete = matches!(
                    SymbolHeader::decode(&mut &v[..cut]),
                    Err(WireError::Incomplete { .. })
                );
                prop_assert!(incomplete);
            }
        }

        #[test]
        fn feedback_roundtrip(f in feedback()) {
            let v = f.to_vec();
            prop_assert!(v.len() <= Feedback::MAX_LEN);
            prop_assert_eq!(Feedback::decode(&mut &v[..]), Ok(f));
            for cut in 0..v.len() {
                let incomplete = matches!(
                    Feedback::decode(&mut &v[..cut]),
                    Err(WireError::Incomplete { .. })
                );
                prop_assert!(incomplete);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Feedback::decode(&mut &bytes[..]);
            if let Ok(h) = SymbolHeader::decode(&mut &bytes[..]) {
                prop_assert_eq!(source_symbols(h.transfer_len, h.symbol_size), Some(h.k));
            }
        }
    }

    #[test]
    fn rejects_inconsistent_k() {
        let h = SymbolHeader {
            block: 0,
            k: 2,
            symbol_size: 100,
            transfer_len: 250,
            esi: 0,
        };
        let mut v = Vec::new();
        h.encode(&mut v);
        assert!(matches!(
            SymbolHeader::decode(&mut &v[..]),
            Err(WireError::Invalid { .. })
        ));
    }
}
