//! Items inside a block: each is a `u32` little-endian length, then its bytes.

use bytes::Buf;

use crate::{MAX_ITEM_LEN, WireError, invalid, need};

/// Length of the prefix in front of every item.
pub(crate) const PREFIX_LEN: usize = 4;

/// Appends one length-prefixed item; `item` is at most [`MAX_ITEM_LEN`] bytes.
pub(crate) fn append(block: &mut Vec<u8>, item: &[u8]) {
    let len = u32::try_from(item.len()).expect("items are at most MAX_ITEM_LEN bytes");
    block.extend_from_slice(&len.to_le_bytes());
    block.extend_from_slice(item);
}

/// Splits a block's payload back into items.
pub(crate) fn split(mut block: &[u8]) -> Result<Vec<Vec<u8>>, WireError> {
    const WHAT: &str = "FEC block";
    let mut items = Vec::new();
    while block.has_remaining() {
        need(&block, PREFIX_LEN)?;
        let len = usize::try_from(block.get_u32_le())
            .map_err(|_| invalid(WHAT, "item length overflows"))?;
        if len > MAX_ITEM_LEN {
            return Err(invalid(WHAT, "item longer than MAX_ITEM_LEN"));
        }
        need(&block, len)?;
        items.push(block[..len].to_vec());
        block.advance(len);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation() {
        let items = vec![b"hello".to_vec(), Vec::new(), vec![7u8; 300]];
        let mut block = Vec::new();
        for i in &items {
            append(&mut block, i);
        }
        assert_eq!(split(&block).unwrap(), items);
        assert!(split(&block[..block.len() - 1]).is_err());
        assert!(split(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
