//! The FEC sender driven by arbitrary events: items pushed, time passing,
//! round-trip estimates, and feedback decoded from the input's bytes (what a
//! hostile or broken peer can send). Never a panic, and the state stays
//! bounded: at most `max_blocks_in_flight` blocks.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use llmpack_fec::{BlockEncoder, EncoderConfig, Feedback};

fuzz_target!(|data: &[u8]| {
    let config = EncoderConfig::default();
    let max_blocks = config.max_blocks_in_flight;
    let mut e = BlockEncoder::new(config).expect("default config is valid");
    let mut now = Instant::now();
    let mut rest = data;
    let mut sent = 0usize;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        match op % 6 {
            0 => {
                let n = usize::from(rest.first().copied().unwrap_or(0)) * 8;
                if !e.is_full() {
                    let _ = e.push(now, &vec![op; n.min(4000)]);
                }
            }
            1 => e.flush(),
            2 => now += Duration::from_millis(u64::from(rest.first().copied().unwrap_or(1))),
            3 => e.set_rtt(Duration::from_millis(u64::from(rest.first().copied().unwrap_or(0)) * 5)),
            4 => {
                // Feedback from the next bytes, as the link would decode it.
                let mut cur = rest;
                if let Ok(fb) = Feedback::decode(&mut cur) {
                    e.handle_feedback(fb);
                }
                rest = cur;
                continue;
            }
            _ => {
                // A QUIC link's datagram room: about 1.1-2 KB, and below any
                // symbol (17-byte header + 64) when the path shrinks (b < 8).
                // Rooms of a few dozen bytes more would cut 64 KiB blocks
                // into 1000 tiny symbols, which the link never does and which
                // take RaptorQ under the sanitizer a minute per input.
                let b = usize::from(rest.first().copied().unwrap_or(0));
                let max = if b < 8 { 40 + b * 4 } else { 1000 + b * 4 };
                while let Some(d) = e.poll_transmit(now, max) {
                    sent += 1;
                    assert!(d.len() <= max, "datagram of {} bytes over {max}", d.len());
                    if sent > 20_000 {
                        return;
                    }
                }
                while e.poll_fallback().is_some() {}
            }
        }
        rest = rest.get(1..).unwrap_or(&[]);
        assert!(e.blocks_in_flight() <= max_blocks + 1);
        let _ = e.poll_timeout();
    }
});
