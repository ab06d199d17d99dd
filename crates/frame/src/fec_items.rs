//! The wire formats of the `datagram-fec` link mode: the *items* that carry
//! each connection's stream messages inside RaptorQ blocks, and the
//! *fallback* stream that carries a block's items when its datagrams gave up.
//!
//! ```text
//! item      = stream u64 | seq u32 | kind u8 | payload          (little-endian)
//!             kind 0 (Msgs): payload is the next bytes of the direction's
//!                            messages (a message may span items), at most
//!                            ITEM_PAYLOAD bytes
//!             kind 1 (End):  the end of this direction; no payload
//!             kind 2 (Open): the connection's opening message, whole (a
//!                            stream message: Open from the sender, Opened
//!                            or Refused from the receiver), at most
//!                            MAX_OPENING bytes; only as item 0
//! fallback  = block u32 | count u32 | (len u32 | item) * count  (little-endian)
//! ```
//!
//! An item's length is set by what carries it (a FEC block, or `len` in a
//! fallback stream), so [`Item::decode`] takes every remaining byte.

use bytes::{Buf, BufMut};

use crate::{Error, MAX_REASON_LEN, Msg, Result, need};

/// Bytes before an item's payload.
pub const ITEM_HEADER: usize = 13;

/// Largest payload of one item: a writer cuts its bytes into items of at
/// most this, the reader joins them again.
pub const ITEM_PAYLOAD: usize = 64 << 10;

/// Largest item, header included.
pub const MAX_ITEM: usize = ITEM_HEADER + ITEM_PAYLOAD;

/// Largest payload of an [`ItemKind::Open`] item: the longest opening
/// message, a `Refused` (tag, reason length, reason); an `Open` is shorter.
pub const MAX_OPENING: usize = 3 + MAX_REASON_LEN;

/// What an item carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// The next bytes of the direction's stream messages.
    Msgs = 0,
    /// The end of the direction.
    End = 1,
    /// The connection's opening message (see [`encode_opening`]), so that
    /// it need not wait for the connection's QUIC stream.
    Open = 2,
}

impl ItemKind {
    /// The kind's byte on the wire.
    pub fn to_byte(self) -> u8 {
        self as u8
    }

    /// The kind of a wire byte.
    pub fn from_byte(b: u8) -> Result<Self> {
        match b {
            0 => Ok(ItemKind::Msgs),
            1 => Ok(ItemKind::End),
            2 => Ok(ItemKind::Open),
            _ => Err(Error::invalid("FEC item", format!("unknown kind {b}"))),
        }
    }
}

/// The header of an item: which connection, which of its items, what kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemHeader {
    /// The QUIC stream id of the connection.
    pub stream: u64,
    /// The connection's items in this direction, counted from 0 (wrapping).
    pub seq: u32,
    /// What the payload is.
    pub kind: ItemKind,
}

impl ItemHeader {
    /// Appends the [`ITEM_HEADER`] bytes.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_u64_le(self.stream);
        buf.put_u32_le(self.seq);
        buf.put_u8(self.kind.to_byte());
    }

    /// Reads [`ITEM_HEADER`] bytes.
    pub fn decode(buf: &mut impl Buf) -> Result<Self> {
        need(buf, ITEM_HEADER)?;
        let stream = buf.get_u64_le();
        let seq = buf.get_u32_le();
        let kind = ItemKind::from_byte(buf.get_u8())?;
        Ok(ItemHeader { stream, seq, kind })
    }

    /// Checks a whole item's bytes (header and payload bounds) and returns
    /// its header; the payload is `item[ITEM_HEADER..]`.
    pub fn check(item: &[u8]) -> Result<Self> {
        let mut b = item;
        let h = ItemHeader::decode(&mut b)?;
        check_payload(h, b.len())?;
        Ok(h)
    }
}

fn check_payload(h: ItemHeader, len: usize) -> Result<()> {
    match h.kind {
        ItemKind::Msgs if len > ITEM_PAYLOAD => Err(Error::invalid(
            "FEC item",
            format!("payload of {len} bytes, more than {ITEM_PAYLOAD}"),
        )),
        ItemKind::End if len > 0 => Err(Error::invalid("FEC item", "End item with a payload")),
        ItemKind::Open if h.seq != 0 => Err(Error::invalid(
            "FEC item",
            format!("Open item with seq {}, not 0", h.seq),
        )),
        ItemKind::Open if len == 0 || len > MAX_OPENING => Err(Error::invalid(
            "FEC item",
            format!("Open item of {len} bytes (1 to {MAX_OPENING})"),
        )),
        _ => Ok(()),
    }
}

/// One whole item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Its header.
    pub header: ItemHeader,
    /// Its payload (empty for [`ItemKind::End`]).
    pub payload: Vec<u8>,
}

impl Item {
    /// Appends the item.
    pub fn encode(&self, buf: &mut impl BufMut) {
        self.header.encode(buf);
        buf.put_slice(&self.payload);
    }

    /// Reads an item that fills the rest of `buf`.
    pub fn decode(buf: &mut impl Buf) -> Result<Self> {
        let header = ItemHeader::decode(buf)?;
        let len = buf.remaining();
        check_payload(header, len)?;
        let mut payload = vec![0; len];
        buf.copy_to_slice(&mut payload);
        Ok(Item { header, payload })
    }
}

/// Whether `m` may open a connection: `Open`, `Opened` or `Refused`.
fn is_opening(m: &Msg) -> bool {
    matches!(m, Msg::Open { .. } | Msg::Opened | Msg::Refused { .. })
}

/// Appends the payload of an [`ItemKind::Open`] item: `m` in its stream
/// encoding. Any other message than `Open`, `Opened` or `Refused` is
/// refused (this end sends none).
pub fn encode_opening(m: &Msg, buf: &mut impl BufMut) -> Result<()> {
    if !is_opening(m) {
        return Err(Error::invalid("FEC opening", "not an opening message"));
    }
    m.encode(buf);
    Ok(())
}

/// Reads the payload of an [`ItemKind::Open`] item, which fills the rest of
/// `buf`: exactly one `Open`, `Opened` or `Refused`, nothing after it. A
/// payload cut short is [`Error::Invalid`], not incomplete: an item is
/// whole.
pub fn decode_opening(buf: &mut impl Buf) -> Result<Msg> {
    let len = buf.remaining();
    if len > MAX_OPENING {
        return Err(Error::invalid(
            "FEC opening",
            format!("{len} bytes, more than {MAX_OPENING}"),
        ));
    }
    let m = Msg::decode(buf).map_err(|e| match e {
        Error::Incomplete { .. } => Error::invalid("FEC opening", "message cut short"),
        e => e,
    })?;
    if !is_opening(&m) {
        return Err(Error::invalid("FEC opening", "not an opening message"));
    }
    if buf.has_remaining() {
        return Err(Error::invalid(
            "FEC opening",
            format!("{} bytes after the message", buf.remaining()),
        ));
    }
    Ok(m)
}

/// A block's items resent on a reliable stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FallbackBlock {
    /// The block number.
    pub block: u32,
    /// Its items, each at most [`MAX_ITEM`] bytes, in order.
    pub items: Vec<Vec<u8>>,
}

impl FallbackBlock {
    /// Appends the block; an item over [`MAX_ITEM`] bytes is refused (this
    /// end's items never are).
    pub fn encode(&self, buf: &mut impl BufMut) -> Result<()> {
        let count = u32::try_from(self.items.len())
            .map_err(|_| Error::invalid("fallback block", "more than u32::MAX items"))?;
        if let Some(it) = self.items.iter().find(|it| it.len() > MAX_ITEM) {
            return Err(Error::invalid(
                "fallback block",
                format!("item of {} bytes, more than {MAX_ITEM}", it.len()),
            ));
        }
        buf.put_u32_le(self.block);
        buf.put_u32_le(count);
        for it in &self.items {
            // At most MAX_ITEM (checked above): fits a u32.
            buf.put_u32_le(u32::try_from(it.len()).unwrap_or(u32::MAX));
            buf.put_slice(it);
        }
        Ok(())
    }

    /// Reads one block. Every item costs at least its 4-byte length, so a
    /// peer's `count` allocates nothing it did not send.
    pub fn decode(buf: &mut impl Buf) -> Result<Self> {
        need(buf, 8)?;
        let block = buf.get_u32_le();
        let count = buf.get_u32_le();
        let mut items = Vec::new();
        for _ in 0..count {
            need(buf, 4)?;
            let len = usize::try_from(buf.get_u32_le())
                .map_err(|_| Error::invalid("fallback block", "item length"))?;
            if len > MAX_ITEM {
                return Err(Error::invalid(
                    "fallback block",
                    format!("item of {len} bytes, more than {MAX_ITEM}"),
                ));
            }
            need(buf, len)?;
            let mut it = vec![0; len];
            buf.copy_to_slice(&mut it);
            items.push(it);
        }
        Ok(FallbackBlock { block, items })
    }

    /// Parses a whole fallback stream: exactly one block, nothing after it.
    pub fn parse(mut bytes: &[u8]) -> Result<Self> {
        let b = FallbackBlock::decode(&mut bytes)?;
        if !bytes.is_empty() {
            return Err(Error::invalid(
                "fallback block",
                format!("{} bytes after the block", bytes.len()),
            ));
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn item(stream: u64, seq: u32, kind: ItemKind, payload: &[u8]) -> Item {
        Item {
            header: ItemHeader { stream, seq, kind },
            payload: payload.to_vec(),
        }
    }

    /// The encodings peers of the current version send and expect.
    #[test]
    fn wire_format_is_pinned() {
        let mut b = Vec::new();
        item(0x0102_0304_0506_0708, 0x0a0b_0c0d, ItemKind::Msgs, b"hi").encode(&mut b);
        assert_eq!(hex(&b), "08070605040302010d0c0b0a006869");
        let mut b = Vec::new();
        item(4, 1, ItemKind::End, b"").encode(&mut b);
        assert_eq!(hex(&b), "04000000000000000100000001");
        let mut b = Vec::new();
        let fb = FallbackBlock {
            block: 7,
            items: vec![b"x".to_vec(), vec![]],
        };
        fb.encode(&mut b).unwrap();
        assert_eq!(hex(&b), "0700000002000000010000007800000000");
    }

    #[test]
    fn items_round_trip_and_refuse_malformed_bytes() {
        for it in [
            item(9, 0, ItemKind::Msgs, b""),
            item(u64::MAX, u32::MAX, ItemKind::Msgs, &[7; ITEM_PAYLOAD]),
            item(1, 2, ItemKind::End, b""),
        ] {
            let mut b = Vec::new();
            it.encode(&mut b);
            assert_eq!(ItemHeader::check(&b), Ok(it.header));
            assert_eq!(Item::decode(&mut &b[..]), Ok(it));
        }
        // Truncated header.
        let mut b = Vec::new();
        item(1, 2, ItemKind::Msgs, b"").encode(&mut b);
        assert_eq!(
            Item::decode(&mut &b[..ITEM_HEADER - 1]),
            Err(Error::Incomplete { needed: 1 })
        );
        // Unknown kind.
        b[ITEM_HEADER - 1] = 2;
        assert!(matches!(ItemHeader::check(&b), Err(Error::Invalid { .. })));
        // Oversize payload, and an End that carries bytes.
        let mut b = Vec::new();
        item(1, 2, ItemKind::Msgs, &[0; ITEM_PAYLOAD + 1]).encode(&mut b);
        assert!(matches!(ItemHeader::check(&b), Err(Error::Invalid { .. })));
        assert!(matches!(
            Item::decode(&mut &b[..]),
            Err(Error::Invalid { .. })
        ));
        let mut b = Vec::new();
        item(1, 2, ItemKind::End, b"x").encode(&mut b);
        assert!(matches!(ItemHeader::check(&b), Err(Error::Invalid { .. })));
    }

    fn opening(m: &Msg) -> Vec<u8> {
        let mut b = Vec::new();
        encode_opening(m, &mut b).unwrap();
        b
    }

    #[test]
    fn open_items_carry_one_opening_message_as_item_zero() {
        let open = Msg::Open {
            name: "web".into(),
            primer_check: 7,
            window: 512,
            keep: 128,
            lanes: 4,
        };
        let refused = Msg::Refused {
            reason: "r".repeat(MAX_REASON_LEN),
        };
        for m in [open.clone(), Msg::Opened, refused] {
            let p = opening(&m);
            assert!(p.len() <= MAX_OPENING);
            let it = item(4, 0, ItemKind::Open, &p);
            let mut b = Vec::new();
            it.encode(&mut b);
            assert_eq!(ItemHeader::check(&b), Ok(it.header));
            assert_eq!(Item::decode(&mut &b[..]), Ok(it));
            assert_eq!(decode_opening(&mut &p[..]), Ok(m));
        }
        // Pinned: kind byte 2, then the stream encoding of Opened.
        let mut b = Vec::new();
        item(4, 0, ItemKind::Open, &opening(&Msg::Opened)).encode(&mut b);
        assert_eq!(hex(&b), "0400000000000000000000000202");
        // Only item 0 opens; an empty or oversize payload is refused.
        let p = opening(&open);
        for bad in [
            item(4, 1, ItemKind::Open, &p),
            item(4, 0, ItemKind::Open, b""),
            item(4, 0, ItemKind::Open, &[0; MAX_OPENING + 1]),
        ] {
            let mut b = Vec::new();
            bad.encode(&mut b);
            assert!(matches!(ItemHeader::check(&b), Err(Error::Invalid { .. })));
            assert!(matches!(
                Item::decode(&mut &b[..]),
                Err(Error::Invalid { .. })
            ));
        }
        // Data messages are no opening, either way.
        assert!(encode_opening(&Msg::Fin, &mut Vec::new()).is_err());
        assert!(matches!(
            decode_opening(&mut &opening_bytes(&Msg::Ack { seq: 1 })[..]),
            Err(Error::Invalid { .. })
        ));
        // Cut short, trailing bytes, junk, oversize: invalid, never incomplete.
        let mut long = p.clone();
        long.push(0);
        for bad in [&p[..p.len() - 1], &long[..], &[0xff][..], &[][..]] {
            assert!(
                matches!(decode_opening(&mut &bad[..]), Err(Error::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            decode_opening(&mut &[0u8; MAX_OPENING + 1][..]),
            Err(Error::Invalid { .. })
        ));
    }

    fn opening_bytes(m: &Msg) -> Vec<u8> {
        let mut b = Vec::new();
        m.encode(&mut b);
        b
    }

    proptest::proptest! {
        /// Whatever an Open item carries, decoding never panics and
        /// accepts only what re-encodes to the same opening.
        #[test]
        fn arbitrary_opening_payloads_never_panic(
            v in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            if let Ok(m) = decode_opening(&mut &v[..]) {
                proptest::prop_assert!(is_opening(&m));
                if !matches!(m, Msg::Refused { .. }) {
                    proptest::prop_assert_eq!(opening_bytes(&m), v);
                }
            }
        }
    }

    #[test]
    fn fallback_blocks_round_trip_and_parse_strictly() {
        let fb = FallbackBlock {
            block: 7,
            items: vec![b"x".to_vec(), vec![], vec![3; MAX_ITEM]],
        };
        let mut b = Vec::new();
        fb.encode(&mut b).unwrap();
        assert_eq!(FallbackBlock::parse(&b), Ok(fb.clone()));
        // Truncated anywhere: incomplete.
        for cut in [0, 7, 8, 11, 12, 13, b.len() - 1] {
            assert!(
                matches!(
                    FallbackBlock::parse(&b[..cut]),
                    Err(Error::Incomplete { .. })
                ),
                "cut at {cut}"
            );
        }
        // Trailing bytes.
        let mut long = b.clone();
        long.push(0);
        assert!(matches!(
            FallbackBlock::parse(&long),
            Err(Error::Invalid { .. })
        ));
        // An oversize item, sent or received.
        let big = FallbackBlock {
            block: 1,
            items: vec![vec![0; MAX_ITEM + 1]],
        };
        assert!(big.encode(&mut Vec::new()).is_err());
        let mut huge = b[..8].to_vec();
        huge.put_u32_le(u32::MAX);
        assert!(matches!(
            FallbackBlock::parse(&huge),
            Err(Error::Invalid { .. })
        ));
        // A count the bytes do not hold allocates nothing and fails.
        let mut lying = Vec::new();
        lying.put_u32_le(1);
        lying.put_u32_le(u32::MAX);
        assert!(matches!(
            FallbackBlock::parse(&lying),
            Err(Error::Incomplete { .. })
        ));
    }
}
