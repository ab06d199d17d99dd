//! The sending direction's state machine (`llmpack_frame::outgoing`) fed an
//! arbitrary sequence of events: reads, the socket's end, time passing, the
//! coder finishing, and a peer's acks and resend requests (true or lying).
//! Never a panic; every byte read comes out in frames once and in order; no
//! frame exceeds the cap; a deadline is never in the past once polled.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use llmpack_frame::outgoing::{
    CodecRule, FrameLimits, Measured, Outgoing, OutgoingConfig, Step,
};
use llmpack_frame::policy::ZSTD_LEVELS;

fuzz_target!(|data: &[u8]| {
    let Some((cfg, events)) = data.split_first_chunk::<4>() else {
        return;
    };
    let frame = usize::from(cfg[0] % 64) + 1;
    let buffer = usize::from(cfg[1]) + 1;
    let ms = |b: u8| Duration::from_millis(u64::from(b % 8) * 3);
    let rule = match cfg[3] % 3 {
        0 => CodecRule::Auto,
        1 => CodecRule::Lm,
        _ => CodecRule::ModelFree,
    };
    let mut o = Outgoing::new(OutgoingConfig {
        limits: FrameLimits {
            frame,
            buffer,
            flush_idle: ms(cfg[2]),
            flush_max: ms(cfg[2] >> 3),
        },
        rule,
        zstd_level: None,
        max_delay: Duration::from_millis(50),
        lanes: 1,
    });
    let m = Measured {
        model_secs_per_byte: (cfg[3] & 4 != 0).then_some(1e-6),
        link_rate: u64::from(cfg[3] >> 3) * 1000,
        link_busy_secs: f64::from(cfg[3] >> 5),
        link_unsent_secs: f64::from(cfg[3] >> 6),
        lm_cost: Some(0.2),
        free_cost: 0.5,
        zstd_cost: (cfg[1] & 1 != 0).then_some(f64::from(cfg[2]) / 128.0),
        zstd_speed: [u64::from(cfg[1]) * 4000; ZSTD_LEVELS],
        zstd_speed_short: [u64::from(cfg[1]) * 1000; ZSTD_LEVELS],
        zstd_probe: cfg[1] & 2 != 0,
    };
    let mut now = Instant::now();
    let mut next = 0u8;
    let mut read = Vec::new();
    let mut framed = Vec::new();
    let mut sent = 0u64;
    let mut with_coder: Option<Vec<u8>> = None;
    let mut it = events.chunks_exact(2);
    for ev in it.by_ref() {
        let arg = ev[1];
        match ev[0] % 7 {
            0 if o.wants_read() => {
                let bytes: Vec<u8> = (0..=arg % 48)
                    .map(|_| {
                        next = next.wrapping_add(1);
                        next
                    })
                    .collect();
                read.extend_from_slice(&bytes);
                if arg & 1 == 0 {
                    o.handle_read(now, &bytes);
                } else {
                    // The tunnel's path: the read buffer handed over.
                    let mut buf = bytes::BytesMut::from(&bytes[..]);
                    o.handle_read_buf(now, &mut buf);
                    assert!(buf.is_empty());
                }
            }
            1 => o.handle_eof(),
            2 => now += Duration::from_millis(u64::from(arg % 32)),
            3 => {
                if let Some(d) = with_coder.take() {
                    assert_eq!(o.handle_coded(d), sent);
                    sent += 1;
                }
            }
            // The peer may lie: any sequence number.
            4 => {
                let _ = o.handle_ack(u64::from(arg % 16));
            }
            5 => o.handle_resend(u64::from(arg % 16)),
            _ => loop {
                match o.poll(now, || m) {
                    Ok(Some(Step::Frame(c))) => {
                        assert!(!c.data.is_empty() && c.data.len() <= frame);
                        assert!(with_coder.is_none());
                        framed.extend_from_slice(&c.data);
                        if arg & 1 == 1 {
                            with_coder = Some(c.data);
                            break;
                        }
                        assert_eq!(o.handle_coded(c.data), sent);
                        sent += 1;
                    }
                    Ok(Some(Step::Restart(r))) => {
                        assert!(r.seq < sent);
                        assert_eq!(r.bytes.len() as u64, sent - r.seq);
                    }
                    Ok(Some(Step::Fin)) => {}
                    Ok(Some(Step::Done)) => {
                        assert!(o.is_flushed());
                        break;
                    }
                    Ok(None) => {
                        if let Some(t) = o.poll_timeout() {
                            assert!(t > now, "a deadline passed without a frame");
                        }
                        break;
                    }
                    Err(_) => return,
                }
            },
        }
        assert!(o.pending() <= frame + 48 + buffer);
    }
    assert!(read.starts_with(&framed));
    assert_eq!(read.len(), framed.len() + o.pending());
});
