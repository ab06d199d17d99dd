//! Unit tests of the encoder.
use super::repair::{LOW_LOSS, TAIL_FAILURE, block_failure};
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
    assert_eq!(
        enc.poll_transmit(later, 1200).map(|d| d.len()),
        Some(HEADER_LEN + 64),
        "the source symbol"
    );
    assert!(
        enc.poll_transmit(later, 1200).is_none(),
        "the repair symbol would share its packet: it waits"
    );
    let sent = enc.drain(later, 1200).len();
    assert_eq!(sent, 1, "then the repair symbol");
    enc.handle_feedback(Feedback::NeedMore {
        block: 0,
        symbols: 3,
    });
    let esis: Vec<u32> = (enc.drain(later, 1200).iter())
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
fn ack_timeout_falls_back_after_the_tail_probes() {
    let now = Instant::now();
    let cfg = EncoderConfig::default();
    let mut enc = encoder(cfg.clone());
    enc.push(now, b"x").unwrap();
    let now = now + Duration::from_millis(10);
    assert_eq!(enc.drain(now, 1200).len(), 2);
    // The repair symbol went a spacing after the source symbol.
    let later = now + crate::spacing(Duration::ZERO);
    // No feedback: a probe after 25 ms + block_delay, another twice as
    // late, then the fallback ack_timeout after the last symbol sent.
    let step = PROBE_MIN + cfg.block_delay;
    let mut sent_at = Vec::new();
    let mut t = later;
    for _ in 0..10 {
        t = enc.poll_timeout().unwrap();
        enc.handle_timeout(t);
        if enc.poll_fallback().is_some() {
            break;
        }
        while enc.poll_transmit(t, 1200).is_some() {
            sent_at.push(t);
        }
    }
    assert_eq!(sent_at, vec![later + step, later + step * 3]);
    assert_eq!(t, later + step * 3 + cfg.ack_timeout);
    assert_eq!(enc.stats().probes, 2);
}

/// Every symbol of the last block is lost: the tail probe makes it known,
/// the receiver decodes it, and no fallback happens. Then a decoded block
/// whose feedback is lost: the probe draws a report that frees it.
#[test]
fn a_tail_probe_recovers_a_wholly_lost_block_and_a_lost_ack() {
    use crate::{BlockDecoder, DecoderConfig};
    let now = Instant::now();
    let mut enc = encoder(EncoderConfig::default());
    let mut dec = BlockDecoder::new(DecoderConfig::default()).unwrap();
    enc.push(now, b"request").unwrap();
    enc.flush();
    while enc.poll_transmit(now, 1200).is_some() {} // all lost
    let t = enc.poll_timeout().unwrap();
    assert!(t < now + Duration::from_millis(100), "probe due soon");
    enc.handle_timeout(t);
    let probe = enc.poll_transmit(t, 1200).unwrap();
    dec.handle_datagram(t, &probe).unwrap();
    assert_eq!(dec.poll_item().unwrap(), b"request");
    let mut freed = false;
    let mut u = t;
    for _ in 0..4 {
        while let Some(fb) = dec.poll_feedback(u) {
            enc.handle_feedback(fb);
        }
        freed |= enc.blocks_in_flight() == 0;
        u += Duration::from_millis(30);
    }
    assert!(freed, "the probe's block was acknowledged");
    assert!(enc.poll_fallback().is_none());

    // Block 1 arrives and decodes; its feedback is lost.
    let t = u;
    enc.push(t, b"again").unwrap();
    enc.flush();
    while let Some(d) = enc.poll_transmit(t, 1200) {
        dec.handle_datagram(t, &d).unwrap();
    }
    assert_eq!(dec.poll_item().unwrap(), b"again");
    while dec.poll_feedback(t + Duration::from_millis(200)).is_some() {} // lost
    assert_eq!(enc.blocks_in_flight(), 1);
    let p = enc.poll_timeout().unwrap();
    enc.handle_timeout(p);
    let probe = enc.poll_transmit(p, 1200).unwrap();
    dec.handle_datagram(p, &probe).unwrap();
    let mut u = p;
    for _ in 0..4 {
        while let Some(fb) = dec.poll_feedback(u) {
            enc.handle_feedback(fb);
        }
        u += Duration::from_millis(10);
    }
    assert_eq!(enc.blocks_in_flight(), 0, "the re-ack freed the block");
    assert!(enc.poll_fallback().is_none());
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

/// A small block's symbols could share a packet: the next one waits for a
/// packet's worth of other datagrams or for the spacing, whichever first.
#[test]
fn a_small_blocks_symbols_never_leave_together() {
    let now = Instant::now();
    let mut enc = encoder(EncoderConfig::default());
    enc.set_rtt(Duration::from_millis(600));
    enc.push(now, b"small").unwrap();
    enc.flush();
    enc.push(now, &[1; 3000]).unwrap(); // three symbols of ~1000 bytes
    enc.flush();
    let block = |d: &[u8]| SymbolHeader::decode(&mut &d[..]).unwrap().block;
    let order: Vec<u32> = std::iter::from_fn(|| enc.poll_transmit(now, 1200))
        .map(|d| block(&d))
        .collect();
    // Block 0's repair goes once more than 1200 bytes left after its source.
    assert_eq!(order[..3], [0, 1, 1]);
    assert_eq!(order.iter().filter(|&&b| b == 0).count(), 2, "{order:?}");
    // Alone, it waits for the spacing: 30 ms at a 600 ms round trip.
    enc.push(now, b"alone").unwrap();
    enc.flush();
    assert!(enc.poll_transmit(now, 1200).is_some());
    assert!(enc.poll_transmit(now, 1200).is_none());
    let t = enc.poll_timeout().unwrap();
    assert_eq!(t, now + Duration::from_millis(30));
    assert!(enc.poll_transmit(t, 1200).is_some());
}

/// The last block of a burst gets repair from the binomial tail; a block
/// closed by size keeps the mean-based ratio.
#[test]
fn a_flushed_block_gets_repair_for_the_tail_of_the_loss() {
    let now = Instant::now();
    let five_percent = Feedback::Report {
        decoded_below: 0,
        expected: 1000,
        received: 950,
    };
    let repair = |flush: bool| {
        let cfg = EncoderConfig {
            block_bytes: 6 * 1000,
            ..EncoderConfig::default()
        };
        let mut enc = encoder(cfg);
        enc.handle_feedback(five_percent);
        enc.push(now, &[1; 5980]).unwrap(); // 5984 bytes: k = 6 at 1017
        if flush {
            enc.flush();
        } else {
            enc.push(now, &[1; 100]).unwrap(); // does not fit: closes it
        }
        let n = enc.drain(now, 1017).len();
        n - 6
    };
    assert_eq!(repair(true), 2, "P(> 2 of 8 lost) = 0.6 % <= 1 %");
    assert_eq!(repair(false), 1, "6 x 0.0725 rounds up to one");
    assert!((block_failure(6, 1, 0.05) - 0.0444).abs() < 1e-3);
    assert!((block_failure(1, 1, 0.05) - 0.0025).abs() < 1e-9);
    assert!(block_failure(6, 2, 0.05) <= TAIL_FAILURE);
}

/// Small reports of no loss do not make a lossy path look clean: one-symbol
/// blocks keep their repair symbol until a long run shows no loss.
#[test]
fn small_clean_reports_do_not_drop_the_repair_of_small_blocks() {
    let now = Instant::now();
    let mut enc = encoder(EncoderConfig::default());
    let report = |n| Feedback::Report {
        decoded_below: 0,
        expected: n,
        received: n,
    };
    for _ in 0..100 {
        enc.handle_feedback(report(2));
    }
    assert!(enc.stats().loss_estimate < LOW_LOSS);
    enc.push(now, b"x").unwrap();
    assert_eq!(enc.drain(now + Duration::from_secs(1), 1200).len(), 2);
    enc.handle_feedback(Feedback::Decoded { block: 0 });
    // Over 300 symbols without a loss: the path is clean now.
    enc.handle_feedback(report(200));
    let mut sent = 0;
    for i in 1..=10u32 {
        enc.push(now, b"x").unwrap();
        sent += enc.drain(now + Duration::from_secs(1), 1200).len();
        enc.handle_feedback(Feedback::Decoded { block: i });
    }
    assert!(sent < 20, "{sent} datagrams for 10 one-symbol blocks");
}
