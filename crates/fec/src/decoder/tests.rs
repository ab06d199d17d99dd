//! Unit tests of the decoder.
use super::*;
use crate::{BlockEncoder, EncoderConfig};

/// Datagrams of blocks 0.. each holding one item, sent at `mtu` 300.
fn blocks(items: &[&[u8]]) -> Vec<Vec<Vec<u8>>> {
    let mut enc = BlockEncoder::new(EncoderConfig::default()).unwrap();
    let now = Instant::now();
    items
        .iter()
        .map(|item| {
            enc.push(now, item).unwrap();
            enc.drain(now + Duration::from_secs(1), 300)
        })
        .collect()
}

fn decoder(max_blocks: u32) -> BlockDecoder {
    BlockDecoder::new(DecoderConfig {
        max_blocks,
        ..DecoderConfig::default()
    })
    .unwrap()
}

#[test]
fn delivers_in_block_order() {
    let b = blocks(&[b"zero", b"one"]);
    let mut dec = decoder(4);
    let now = Instant::now();
    dec.handle_datagram(now, &b[1][0]).unwrap();
    assert_eq!(dec.poll_item(), None, "block 0 still missing");
    dec.handle_datagram(now, &b[0][1]).unwrap(); // repair only
    assert_eq!(dec.poll_item().as_deref(), Some(&b"zero"[..]));
    assert_eq!(dec.poll_item().as_deref(), Some(&b"one"[..]));
    assert_eq!(dec.stats().blocks_recovered, 1);
    assert_eq!(dec.poll_feedback(now), Some(Feedback::Decoded { block: 1 }));
    assert_eq!(dec.poll_feedback(now), Some(Feedback::Decoded { block: 0 }));
}

#[test]
fn rejects_far_ahead_and_inconsistent() {
    let b = blocks(&[b"a", b"b", b"c"]);
    let mut dec = decoder(2);
    let now = Instant::now();
    let far = dec.handle_datagram(now, &b[2][0]);
    assert_eq!(far, Err(FecError::TooFarAhead { block: 2, next: 0 }));
    assert_eq!(dec.buffered_bytes(), 0);
    let short = &b[0][0][..b[0][0].len() - 1];
    assert!(matches!(
        dec.handle_datagram(now, short),
        Err(FecError::Wire(_))
    ));
    // Same block number, different parameters: refused before raptorq.
    let big = blocks(&[&[7; 1000]]).remove(0);
    let bigger = blocks(&[&[7; 1200]]).remove(0);
    dec.handle_datagram(now, &big[0]).unwrap();
    assert!(matches!(
        dec.handle_datagram(now, &bigger[1]),
        Err(FecError::Wire(_))
    ));
    assert_eq!(dec.stats().rejected, 3);
}

#[test]
fn asks_for_topups_then_takes_fallback_once() {
    let b = blocks(&[b"zero", b"one"]);
    let mut dec = decoder(4);
    let now = Instant::now();
    dec.handle_datagram(now, &b[1][0]).unwrap();
    dec.poll_feedback(now); // Decoded { 1 }
    // Block 1 is decoded; block 0 lost every symbol: ask for all of it.
    let t = now + Duration::from_millis(100);
    let fb: Vec<_> = std::iter::from_fn(|| dec.poll_feedback(t)).collect();
    assert!(fb.contains(&Feedback::NeedMore {
        block: 0,
        symbols: crate::WHOLE_BLOCK
    }));
    assert!(
        fb.iter().any(|f| matches!(
            f,
            Feedback::Report {
                decoded_below: 0,
                ..
            }
        )),
        "{fb:?}"
    );
    assert!(
        !dec.handle_fallback(t, 1, vec![b"dup".to_vec()]),
        "already decoded"
    );
    assert!(dec.handle_fallback(t, 0, vec![b"zero".to_vec()]));
    let items: Vec<_> = std::iter::from_fn(|| dec.poll_item()).collect();
    assert_eq!(items, [b"zero".to_vec(), b"one".to_vec()]);
    assert!(
        !dec.handle_fallback(t, 0, vec![b"zero".to_vec()]),
        "already delivered"
    );
    dec.handle_datagram(t, &b[0][0]).unwrap(); // late symbol: ignored
    assert_eq!(dec.poll_item(), None);
}

#[test]
fn stalled_block_requests_more() {
    let mut enc = BlockEncoder::new(EncoderConfig::default()).unwrap();
    let now = Instant::now();
    enc.push(now, &[5u8; 3000]).unwrap();
    let later = now + Duration::from_secs(1);
    let d: Vec<_> = std::iter::from_fn(|| enc.poll_transmit(later, 300)).collect();
    let mut dec = decoder(4);
    for x in &d[3..] {
        dec.handle_datagram(now, x).unwrap();
    }
    let k = usize::from(SymbolHeader::decode(&mut &d[0][..]).unwrap().k);
    let missing = k - (d.len() - 3);
    assert_eq!(dec.poll_timeout(), Some(now + Duration::from_millis(20)));
    assert_eq!(dec.poll_feedback(now + Duration::from_millis(19)), None);
    let t = now + Duration::from_millis(20);
    let fb = dec.poll_feedback(t).unwrap();
    let want = u32::try_from(missing).unwrap() + 2;
    assert_eq!(
        fb,
        Feedback::NeedMore {
            block: 0,
            symbols: want
        }
    );
    enc.handle_feedback(fb);
    for x in std::iter::from_fn(|| enc.poll_transmit(later, 300)) {
        dec.handle_datagram(t, &x).unwrap();
    }
    assert_eq!(dec.poll_item(), Some(vec![5u8; 3000]));
}

#[test]
fn unordered_hands_out_decoded_blocks_at_once_and_each_once() {
    let b = blocks(&[b"zero", b"one", b"two"]);
    let mut dec = BlockDecoder::new(DecoderConfig {
        max_blocks: 4,
        ordered: false,
        ..DecoderConfig::default()
    })
    .unwrap();
    let now = Instant::now();
    dec.handle_datagram(now, &b[2][0]).unwrap();
    assert_eq!(
        dec.poll_item().as_deref(),
        Some(&b"two"[..]),
        "block 2 does not wait"
    );
    assert_eq!(dec.poll_item(), None);
    dec.handle_datagram(now, &b[2][1]).unwrap(); // late symbol of a delivered block
    assert!(
        !dec.handle_fallback(now, 2, vec![b"two".to_vec()]),
        "delivered already"
    );
    assert_eq!(dec.poll_item(), None);
    assert!(dec.handle_fallback(now, 0, vec![b"zero".to_vec()]));
    assert_eq!(dec.poll_item().as_deref(), Some(&b"zero"[..]));
    dec.handle_datagram(now, &b[1][1]).unwrap();
    assert_eq!(dec.poll_item().as_deref(), Some(&b"one"[..]));
    assert_eq!(dec.poll_item(), None);
    assert_eq!(
        dec.buffered_bytes(),
        0,
        "nothing held once all are delivered"
    );
    // Blocks 0..=2 are behind the delivery point now: block 3 is accepted
    // with max_blocks 4, and a late block-1 symbol is ignored.
    dec.handle_datagram(now, &b[1][0]).unwrap();
    assert_eq!(dec.poll_item(), None);
}

#[test]
fn a_wholly_lost_block_is_asked_for_once_a_later_one_arrives() {
    let b = blocks(&[b"zero", b"one"]);
    let mut dec = decoder(4);
    let now = Instant::now();
    dec.handle_datagram(now, &b[1][0]).unwrap();
    assert_eq!(dec.poll_feedback(now), Some(Feedback::Decoded { block: 1 }));
    let later = dec.poll_timeout().expect("block 0 has a deadline");
    assert!(later > now);
    let asks: Vec<_> = std::iter::from_fn(|| dec.poll_feedback(later)).collect();
    assert!(
        asks.contains(&Feedback::NeedMore {
            block: 0,
            symbols: crate::WHOLE_BLOCK
        }),
        "{asks:?}"
    );
    dec.handle_datagram(later, &b[0][1]).unwrap();
    assert_eq!(dec.poll_item().as_deref(), Some(&b"zero"[..]));
    assert_eq!(dec.poll_item().as_deref(), Some(&b"one"[..]));
}

#[test]
fn fallbacks_far_ahead_are_refused_and_take_no_memory() {
    let mut dec = decoder(4);
    let t = Instant::now();
    for b in 4..10_000 {
        assert!(
            !dec.handle_fallback(t, b, vec![b"far".to_vec()]),
            "block {b}"
        );
    }
    assert_eq!(dec.stats().rejected, 9_996);
    // Within the window they are taken, and delivered in order.
    assert!(dec.handle_fallback(t, 1, vec![b"one".to_vec()]));
    assert!(dec.handle_fallback(t, 0, vec![b"zero".to_vec()]));
    let items: Vec<_> = std::iter::from_fn(|| dec.poll_item()).collect();
    assert_eq!(items, [b"zero".to_vec(), b"one".to_vec()]);
}
