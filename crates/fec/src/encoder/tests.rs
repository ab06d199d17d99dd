//! Unit tests of the encoder.
use super::*;

fn encoder(cfg: EncoderConfig) -> BlockEncoder {
    BlockEncoder::new(cfg).unwrap()
}

#[test]
fn symbol_size_follows_max_datagram() {
    let now = Instant::now();
    for mtu in [200, 1200, 1452] {
        let mut enc = encoder(EncoderConfig::default());
        enc.push(now, &vec![1u8; 20_000]).unwrap();
        let later = now + Duration::from_millis(10);
        let first = enc.poll_transmit(later, mtu).unwrap();
        let h = SymbolHeader::decode(&mut &first[..]).unwrap();
        assert!(first.len() <= mtu);
        // The fewest symbols that fit the datagram, evenly filled.
        let max_symbol = u32::try_from(mtu - HEADER_LEN).unwrap();
        assert_eq!(u32::from(h.k), 20_004u32.div_ceil(max_symbol));
        assert_eq!(u32::from(h.k), 20_004u32.div_ceil(u32::from(h.symbol_size)));
    }
}

#[test]
fn closes_on_size_and_on_delay() {
    let now = Instant::now();
    let cfg = EncoderConfig {
        block_bytes: 1000,
        ..EncoderConfig::default()
    };
    let mut enc = encoder(cfg);
    enc.push(now, &[0; 600]).unwrap();
    assert_eq!(enc.poll_timeout(), Some(now + Duration::from_millis(10)));
    assert!(enc.poll_transmit(now, 1200).is_none(), "block still open");
    enc.push(now, &[0; 600]).unwrap(); // does not fit: closes the first
    assert!(enc.poll_transmit(now, 1200).is_some());
    while enc.poll_transmit(now, 1200).is_some() {}
    assert_eq!(enc.stats().blocks, 1);
    let later = now + Duration::from_millis(10);
    assert!(
        enc.poll_transmit(later, 1200).is_some(),
        "closed by the timer"
    );
    assert_eq!(enc.stats().blocks, 2);
}

#[test]
fn backpressure_and_limits() {
    let now = Instant::now();
    let cfg = EncoderConfig {
        block_bytes: 100,
        max_blocks_in_flight: 2,
        ..Default::default()
    };
    let mut enc = encoder(cfg);
    assert_eq!(
        enc.push(now, &vec![0; MAX_ITEM_LEN + 1]),
        Err(FecError::ItemTooLarge {
            len: MAX_ITEM_LEN + 1
        })
    );
    enc.push(now, &[0; 200]).unwrap();
    enc.push(now, &[0; 200]).unwrap();
    assert!(enc.is_full());
    assert_eq!(enc.push(now, &[0; 1]), Err(FecError::Full));
    enc.handle_feedback(Feedback::Report {
        decoded_below: 2,
        expected: 0,
        received: 0,
    });
    assert!(!enc.is_full());
    assert!(enc.is_idle());
}

#[test]
fn ratio_adapts_to_reported_loss() {
    let mut enc = encoder(EncoderConfig::default());
    assert!((enc.stats().repair_ratio - 0.05).abs() < 1e-9);
    let report = Feedback::Report {
        decoded_below: 0,
        expected: 100,
        received: 80,
    };
    enc.handle_feedback(report);
    assert!((enc.stats().repair_ratio - 0.26).abs() < 1e-9);
    // A report on 16 symbols moves the average by `loss_weight` (0.25)...
    enc.handle_feedback(Feedback::Report {
        decoded_below: 0,
        expected: 16,
        received: 16,
    });
    assert!((enc.stats().loss_estimate - 0.15).abs() < 1e-9);
    // ... and one on a single symbol by a sixteenth of that.
    enc.handle_feedback(Feedback::Report {
        decoded_below: 0,
        expected: 1,
        received: 0,
    });
    let l = enc.stats().loss_estimate;
    assert!((l - (0.15 + 0.25 / 16.0 * 0.85)).abs() < 1e-9, "{l}");
}

#[test]
fn topups_then_fallback_return_items() {
    let now = Instant::now();
    let cfg = EncoderConfig {
        max_topups: 1,
        ..EncoderConfig::default()
    };
    let mut enc = encoder(cfg);
    enc.push(now, b"one").unwrap();
    enc.push(now, b"two").unwrap();
    let later = now + Duration::from_millis(10);
    let sent = std::iter::from_fn(|| enc.poll_transmit(later, 1200)).count();
    assert_eq!(sent, 2, "one source symbol plus one repair");
    enc.handle_feedback(Feedback::NeedMore {
        block: 0,
        symbols: 3,
    });
    let esis: Vec<u32> = std::iter::from_fn(|| enc.poll_transmit(later, 1200))
        .map(|d| SymbolHeader::decode(&mut &d[..]).unwrap().esi)
        .collect();
    assert_eq!(esis, [2, 3, 4], "fresh repair symbols");
    assert!(enc.poll_fallback().is_none());
    enc.handle_feedback(Feedback::NeedMore {
        block: 0,
        symbols: 3,
    });
    let fb = enc.poll_fallback().unwrap();
    assert_eq!(
        fb,
        Fallback {
            block: 0,
            items: vec![b"one".to_vec(), b"two".to_vec()]
        }
    );
    assert_eq!(enc.stats().fallbacks, 1);
}

#[test]
fn too_small_datagram_falls_back() {
    let now = Instant::now();
    let mut enc = encoder(EncoderConfig::default());
    enc.push(now, b"x").unwrap();
    let later = now + Duration::from_millis(10);
    assert!(enc.poll_transmit(later, HEADER_LEN + 10).is_none());
    assert_eq!(enc.poll_fallback().unwrap().items, vec![b"x".to_vec()]);
}

#[test]
fn ack_timeout_falls_back() {
    let now = Instant::now();
    let mut enc = encoder(EncoderConfig::default());
    enc.push(now, b"x").unwrap();
    let later = now + Duration::from_millis(10);
    while enc.poll_transmit(later, 1200).is_some() {}
    let deadline = enc.poll_timeout().unwrap();
    assert_eq!(deadline, later + EncoderConfig::default().ack_timeout);
    enc.handle_timeout(deadline);
    assert!(enc.poll_fallback().is_some());
}

#[test]
fn whole_block_topup_resends_enough_for_the_loss() {
    let now = Instant::now();
    let mut enc = encoder(EncoderConfig::default());
    enc.push(now, &[7; 3000]).unwrap();
    let later = now + Duration::from_secs(1);
    let first: Vec<_> = std::iter::from_fn(|| enc.poll_transmit(later, 1017)).collect();
    let k = first.len() - 1; // one repair symbol at ratio 0.1 for k = 3
    enc.handle_feedback(Feedback::NeedMore {
        block: 0,
        symbols: crate::WHOLE_BLOCK,
    });
    let again: Vec<_> = std::iter::from_fn(|| enc.poll_transmit(later, 1017)).collect();
    // ceil(k / 0.9) + 2 fresh symbols before any loss report.
    let want = (k * 10).div_ceil(9) + 2; // ceil(k / 0.9) + 2
    assert_eq!(again.len(), want, "k = {k}");
}

#[test]
fn clean_path_spends_the_ratio_on_average_not_a_symbol_per_block() {
    let now = Instant::now();
    let mut enc = encoder(EncoderConfig::default());
    enc.handle_feedback(Feedback::Report {
        decoded_below: 0,
        expected: 1000,
        received: 1000,
    });
    let ratio = enc.stats().repair_ratio;
    assert!((ratio - 0.02).abs() < 1e-9, "{ratio}");
    let later = now + Duration::from_secs(1);
    for i in 0..100u32 {
        enc.push(now, &[7; 3000]).unwrap();
        while enc.poll_transmit(later, 1017).is_some() {}
        enc.handle_feedback(Feedback::Decoded { block: i });
    }
    let s = enc.stats();
    assert_eq!(s.source_symbols, 400, "k = 4 per block");
    // 8 = 400 x 0.02, give or take the float sum's rounding.
    assert!((7..=8).contains(&s.repair_symbols), "{}", s.repair_symbols);
}
