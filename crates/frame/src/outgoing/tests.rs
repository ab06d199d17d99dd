//! Virtual-time tests of the sending direction: flush timing, coalescing,
//! the codec choice, and a property test that every byte comes out once.
use super::*;
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);

fn limits(frame: usize, buffer: usize, idle_ms: u64, max_ms: u64) -> FrameLimits {
    FrameLimits {
        frame,
        buffer,
        flush_idle: Duration::from_millis(idle_ms),
        flush_max: Duration::from_millis(max_ms),
    }
}

fn outgoing(l: FrameLimits, rule: CodecRule) -> Outgoing {
    Outgoing::new(OutgoingConfig {
        limits: l,
        rule,
        zstd_level: None,
        max_delay: Duration::from_secs(2),
        lanes: 1,
    })
}

/// No model, link not measured yet.
fn idle() -> Measured {
    Measured {
        model_secs_per_byte: None,
        link_rate: 0,
        link_busy_secs: 0.0,
        link_unsent_secs: 0.0,
        lm_cost: None,
        free_cost: 1.0,
        zstd_cost: None,
        zstd_speed: [0; ZSTD_LEVELS],
        zstd_speed_short: [0; ZSTD_LEVELS],
        zstd_probe: false,
    }
}

/// A geo-sat-like link with 25 s queued and a model at 1.6 KB/s.
fn slow_queued_link() -> Measured {
    Measured {
        model_secs_per_byte: Some(1.0 / 3200.0),
        link_rate: 8000,
        link_busy_secs: 25.0,
        lm_cost: Some(0.2),
        free_cost: 0.32,
        ..idle()
    }
}

/// A poll that must not cut a frame (it would call `measure`).
fn quiet(o: &mut Outgoing, now: Instant) -> Option<Step> {
    o.poll(now, || panic!("measured without a frame to cut"))
        .unwrap()
}

fn frame(o: &mut Outgoing, now: Instant) -> Cut {
    match o.poll(now, idle).unwrap() {
        Some(Step::Frame(c)) => c,
        s => panic!("expected a frame at {now:?}, got {s:?}"),
    }
}

#[test]
fn an_idle_connection_frames_a_read_at_once() {
    let t0 = Instant::now();
    let mut o = outgoing(limits(16 << 10, 1 << 20, 0, 0), CodecRule::Auto);
    assert_eq!(quiet(&mut o, t0), None);
    assert_eq!(o.poll_timeout(), None);
    assert!(o.wants_read());
    o.handle_read(t0, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(o.poll_timeout(), None, "no timer on the fast path");
    let c = frame(&mut o, t0);
    assert_eq!(c.data, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(c.choice, Choice::Free { bytes: 18 });
    assert!(c.zstd);
    assert_eq!(c.zstd_level, 3, "rate unknown: level 3");
    assert_eq!(o.handle_coded(c.data), 0);
    assert_eq!(quiet(&mut o, t0), None);
    assert_eq!(o.sending().unacked_bytes(), 18);
}

#[test]
fn bytes_coalesce_while_the_coder_is_busy() {
    let t0 = Instant::now();
    let mut o = outgoing(limits(10, 1 << 20, 0, 0), CodecRule::Auto);
    o.handle_read(t0, b"ab");
    let a = frame(&mut o, t0);
    assert_eq!(a.data, b"ab");
    // The coder has it: later reads wait, with no timer.
    o.handle_read(t0 + MS, b"cd");
    o.handle_read(t0 + 2 * MS, b"efghijklmn");
    assert_eq!(quiet(&mut o, t0 + 100 * MS), None);
    assert_eq!(o.poll_timeout(), None);
    assert!(!o.wants_read(), "a whole frame waits: no more reads");
    assert_eq!(o.handle_coded(a.data), 0);
    // Freed: one frame of the cap, then the rest.
    let b = frame(&mut o, t0 + 101 * MS);
    assert_eq!(b.data, b"cdefghijkl");
    o.handle_coded(b.data);
    assert_eq!(frame(&mut o, t0 + 101 * MS).data, b"mn");
}

#[test]
fn a_backed_up_link_stops_reads_until_acks() {
    let t0 = Instant::now();
    let mut o = outgoing(limits(4, 10, 0, 0), CodecRule::Auto);
    for (i, chunk) in [b"abcd", b"efgh"].iter().enumerate() {
        o.handle_read(t0, *chunk);
        let c = frame(&mut o, t0);
        assert_eq!(o.handle_coded(c.data), i as u64);
    }
    assert!(o.wants_read());
    o.handle_read(t0, b"ij");
    assert!(
        !o.wants_read(),
        "8 unacknowledged + 2 pending fill the buffer"
    );
    // The two bytes still go (the coder is free), and reads wait for acks.
    assert_eq!(frame(&mut o, t0).data, b"ij");
    o.handle_coded(b"ij".to_vec());
    assert!(!o.wants_read());
    o.handle_ack(0).unwrap();
    assert!(o.wants_read());
    assert!(o.handle_ack(3).is_err(), "an ack of a frame never sent");
}

#[test]
fn flush_timers_bound_a_partial_frame() {
    let t0 = Instant::now();
    let mut o = outgoing(limits(100, 1 << 20, 10, 50), CodecRule::Auto);
    o.handle_read(t0, b"a");
    assert_eq!(quiet(&mut o, t0), None);
    assert_eq!(
        o.poll_timeout(),
        Some(t0 + 10 * MS),
        "flush_idle after the read"
    );
    // Reads keep the socket busy: the idle timer moves, flush_max does not.
    for i in 1..7 {
        let t = t0 + 8 * i * MS;
        assert_eq!(quiet(&mut o, t), None, "at {i}");
        o.handle_read(t, b"b");
        let want = (t + 10 * MS).min(t0 + 50 * MS);
        assert_eq!(o.poll_timeout(), Some(want));
    }
    assert_eq!(quiet(&mut o, t0 + 49 * MS), None);
    let c = frame(&mut o, t0 + 50 * MS);
    assert_eq!(c.data, b"abbbbbb", "flush_max cut it");
    o.handle_coded(c.data);
    // Quiet after one read: the idle timer cuts it.
    o.handle_read(t0 + 60 * MS, b"c");
    assert_eq!(quiet(&mut o, t0 + 69 * MS), None);
    assert_eq!(frame(&mut o, t0 + 70 * MS).data, b"c");
}

#[test]
fn a_whole_frame_or_the_end_skips_the_timers() {
    let t0 = Instant::now();
    let mut o = outgoing(limits(4, 1 << 20, 10, 50), CodecRule::Auto);
    o.handle_read(t0, b"abcdef");
    assert_eq!(o.poll_timeout(), None, "a whole frame is due now");
    let c = frame(&mut o, t0);
    assert_eq!(c.data, b"abcd");
    o.handle_coded(c.data);
    // The rest waits for a timer, restarted at the cut.
    assert_eq!(quiet(&mut o, t0 + MS), None);
    assert_eq!(o.poll_timeout(), Some(t0 + 10 * MS));
    o.handle_eof();
    assert_eq!(o.poll_timeout(), None, "the end flushes");
    assert_eq!(frame(&mut o, t0 + MS).data, b"ef");
}

#[test]
fn flush_max_alone_or_flush_idle_alone() {
    let t0 = Instant::now();
    // No flush_max: a read goes at once whatever flush_idle says.
    let mut o = outgoing(limits(100, 1 << 20, 10, 0), CodecRule::Auto);
    o.handle_read(t0, b"a");
    assert_eq!(frame(&mut o, t0).data, b"a");
    // flush_max with a zero flush_idle: at once too.
    let mut o = outgoing(limits(100, 1 << 20, 0, 50), CodecRule::Auto);
    o.handle_read(t0, b"a");
    assert_eq!(frame(&mut o, t0).data, b"a");
}

#[test]
fn fin_then_done_once_everything_is_acknowledged() {
    let t0 = Instant::now();
    let mut o = outgoing(limits(100, 1 << 20, 0, 0), CodecRule::Auto);
    o.handle_read(t0, b"abc");
    o.handle_eof();
    let c = frame(&mut o, t0);
    assert_eq!(quiet(&mut o, t0), None, "Fin waits for the coder");
    assert!(!o.is_flushed());
    o.handle_coded(c.data);
    assert_eq!(quiet(&mut o, t0), Some(Step::Fin));
    assert_eq!(quiet(&mut o, t0), None, "Done waits for the ack");
    assert!(!o.wants_read());
    o.handle_ack(0).unwrap();
    assert!(o.is_flushed());
    assert_eq!(quiet(&mut o, t0), Some(Step::Done));
}

#[test]
fn a_resend_waits_for_the_coder_and_the_latest_wins() {
    let t0 = Instant::now();
    let mut o = outgoing(limits(100, 1 << 20, 0, 0), CodecRule::Auto);
    for d in [b"a", b"b"] {
        o.handle_read(t0, d);
        let c = frame(&mut o, t0);
        o.handle_coded(c.data);
    }
    o.handle_read(t0, b"c");
    let c = frame(&mut o, t0);
    o.handle_resend(0);
    o.handle_resend(1);
    assert_eq!(quiet(&mut o, t0), None, "the coder is busy");
    o.handle_coded(c.data);
    assert_eq!(
        quiet(&mut o, t0),
        Some(Step::Restart(Resend {
            seq: 1,
            bytes: vec![Bytes::from_static(b"b"), Bytes::from_static(b"c")]
        }))
    );
    assert_eq!(o.tail(), b"abc");
    // A request for a frame never sent is the peer's lie.
    o.handle_resend(9);
    assert!(o.poll(t0, idle).is_err());
}

#[test]
fn the_codec_choice_follows_the_rule_and_the_link() {
    let t0 = Instant::now();
    let cut = |rule, m: Measured, len: usize| {
        let mut o = outgoing(limits(16 << 10, 1 << 20, 0, 0), rule);
        o.handle_read(t0, &vec![b'x'; len]);
        match o.poll(t0, || m).unwrap() {
            Some(Step::Frame(c)) => c,
            s => panic!("{s:?}"),
        }
    };
    // A queued slow link: the model takes the frame (twice the one-end
    // speed counts), at the slow link's zstd level.
    let c = cut(CodecRule::Auto, slow_queued_link(), 4000);
    assert_eq!(c.choice, Choice::Model { bytes: 4000 });
    assert_eq!(c.inputs.model_secs_per_byte, Some(2.0 / 3200.0));
    assert_eq!(c.inputs.link_queue, 200_000.0);
    assert_eq!(c.zstd_level, 19);
    // zstd or raw only: never the model.
    let c = cut(CodecRule::ModelFree, slow_queued_link(), 4000);
    assert_eq!(c.choice, Choice::Free { bytes: 4000 });
    // No model on the link.
    let m = Measured {
        model_secs_per_byte: None,
        ..slow_queued_link()
    };
    assert_eq!(
        cut(CodecRule::Lm, m, 100).choice,
        Choice::Free { bytes: 100 }
    );
    // Forced lm on a fast idle link: only max_delay counts.
    let fast = Measured {
        link_rate: 125_000_000,
        link_busy_secs: 0.0,
        ..slow_queued_link()
    };
    assert_eq!(
        cut(CodecRule::Lm, fast, 100).choice,
        Choice::Model { bytes: 100 }
    );
    assert_eq!(
        cut(CodecRule::Auto, fast, 100).choice,
        Choice::Free { bytes: 100 }
    );
    assert_eq!(cut(CodecRule::Auto, fast, 100).zstd_level, 3);
}

#[test]
fn a_link_faster_than_zstd_skips_it_but_probes_it() {
    let t0 = Instant::now();
    let fast = Measured {
        link_rate: 100 << 20,
        zstd_speed: [50 << 20; ZSTD_LEVELS],
        ..idle()
    };
    let probe = Measured {
        zstd_probe: true,
        ..fast
    };
    for (rule, skips) in [(CodecRule::Auto, true), (CodecRule::ModelFree, false)] {
        let mut o = outgoing(limits(16 << 10, 1 << 20, 0, 0), rule);
        let mut tried = Vec::new();
        for i in 0..10 {
            o.handle_read(t0, b"x");
            let m = if i == 3 || i == 7 { probe } else { fast };
            let Some(Step::Frame(c)) = o.poll(t0, || m).unwrap() else {
                panic!()
            };
            tried.push(c.zstd);
            o.handle_coded(c.data);
        }
        let probes: Vec<usize> = (tried.iter().enumerate())
            .filter(|(_, z)| **z)
            .map(|(i, _)| i)
            .collect();
        if skips {
            assert_eq!(probes, vec![3, 7], "{rule:?}");
        } else {
            assert_eq!(probes.len(), tried.len(), "{rule:?}");
        }
    }
    // A link a little slower than zstd, idle: a 16 KiB frame of text goes
    // raw once zstd's ratio is known (compressing takes longer than the
    // link time it saves), zstd while unknown or while the link is busy.
    let lan = Measured {
        link_rate: 80_000_000,
        zstd_speed: [100_000_000; ZSTD_LEVELS],
        zstd_cost: Some(0.4),
        ..idle()
    };
    let busy = Measured {
        link_busy_secs: 0.001,
        link_unsent_secs: 0.001,
        ..lan
    };
    // A network queue alone (this end has nothing unsent) does not hide it.
    let standing = Measured {
        link_busy_secs: 0.001,
        ..lan
    };
    let unknown = Measured {
        zstd_cost: None,
        ..lan
    };
    for (m, tries) in [
        (lan, false),
        (busy, true),
        (standing, false),
        (unknown, true),
    ] {
        let mut o = outgoing(limits(16 << 10, 1 << 20, 0, 0), CodecRule::Auto);
        o.handle_read(t0, &[b'a'; 16 << 10]);
        let Some(Step::Frame(c)) = o.poll(t0, || m).unwrap() else {
            panic!()
        };
        assert_eq!(c.zstd, tries, "{m:?}");
    }
    // Short frames (a database client's queries) use the speed timed on
    // short frames: unknown, every one goes to zstd to measure it; known
    // and slower than the time it saves on an idle LAN, raw.
    let queries = Measured {
        zstd_speed: [0; ZSTD_LEVELS],
        ..lan
    };
    let timed = Measured {
        zstd_speed_short: [20_000_000; ZSTD_LEVELS],
        ..queries
    };
    for (m, tries) in [(queries, true), (timed, false)] {
        let mut o = outgoing(limits(16 << 10, 1 << 20, 0, 0), CodecRule::Auto);
        o.handle_read(t0, &[b'q'; 100]);
        let Some(Step::Frame(c)) = o.poll(t0, || m).unwrap() else {
            panic!()
        };
        assert_eq!(c.zstd, tries, "{m:?}");
    }
    // A configured level holds whatever the link.
    let mut o = Outgoing::new(OutgoingConfig {
        limits: limits(100, 1000, 0, 0),
        rule: CodecRule::Auto,
        zstd_level: Some(7),
        max_delay: Duration::ZERO,
        lanes: 1,
    });
    o.handle_read(t0, b"x");
    let Some(Step::Frame(c)) = o.poll(t0, || fast).unwrap() else {
        panic!()
    };
    assert_eq!(c.zstd_level, 7);
}

/// One event a tunnel may hand the sending direction.
#[derive(Debug, Clone)]
enum Ev {
    /// The socket gives this many bytes (only while it is read).
    Read(usize),
    /// The socket ends.
    Eof,
    /// Time passes.
    Wait(u64),
    /// The coder finishes the frame it has.
    Coded,
    /// The peer acknowledges everything sent.
    AckAll,
    /// The peer fails the last frame sent, if it is not acknowledged.
    Resend,
    /// The tunnel drains `poll`, coding model-free frames at once.
    Poll,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (1usize..40).prop_map(Ev::Read),
        1 => Just(Ev::Eof),
        2 => (0u64..30).prop_map(Ev::Wait),
        2 => Just(Ev::Coded),
        2 => Just(Ev::AckAll),
        1 => Just(Ev::Resend),
        4 => Just(Ev::Poll),
    ]
}

/// Drives `o` like the tunnel does; frames (and resends) go into `out`.
struct Driver {
    o: Outgoing,
    now: Instant,
    next_byte: u8,
    read: Vec<u8>,
    /// Frames in the order sent, by sequence number.
    sent: Vec<Vec<u8>>,
    with_coder: Option<Vec<u8>>,
    fin: bool,
    done: bool,
    model_every: usize,
    /// A resend was asked for and its restart has not come yet (the peer
    /// acknowledges nothing meanwhile).
    asked: bool,
}

impl Driver {
    fn poll(&mut self) {
        let m = Measured {
            model_secs_per_byte: Some(1e-6),
            link_rate: 1000,
            link_busy_secs: 1e6,
            lm_cost: Some(0.1),
            ..idle()
        };
        while let Some(step) = self.o.poll(self.now, || m).unwrap() {
            match step {
                Step::Frame(c) => {
                    assert!(!c.data.is_empty());
                    assert!(c.data.len() <= self.o.cfg.limits.frame);
                    assert!(self.with_coder.is_none());
                    // Some frames go to the "model" and come back later.
                    if c.choice.model() && self.sent.len().is_multiple_of(self.model_every) {
                        self.with_coder = Some(c.data);
                        return;
                    }
                    self.sent.push(c.data.clone());
                    let seq = self.o.handle_coded(c.data);
                    assert_eq!(seq, self.sent.len() as u64 - 1);
                }
                Step::Restart(r) => {
                    self.asked = false;
                    // Resent frames keep their numbers and bytes.
                    for (i, b) in r.bytes.iter().enumerate() {
                        assert_eq!(&self.sent[usize::try_from(r.seq).unwrap() + i], b);
                    }
                }
                Step::Fin => {
                    assert!(!self.fin);
                    self.fin = true;
                }
                Step::Done => {
                    self.done = true;
                    return;
                }
            }
        }
    }

    fn on(&mut self, e: Ev) {
        match e {
            Ev::Read(n) => {
                if self.o.wants_read() {
                    let bytes: Vec<u8> = (0..n)
                        .map(|_| {
                            self.next_byte = self.next_byte.wrapping_add(1);
                            self.next_byte
                        })
                        .collect();
                    self.read.extend_from_slice(&bytes);
                    if n % 2 == 0 {
                        self.o.handle_read(self.now, &bytes);
                    } else {
                        // The tunnel's path: the read buffer itself.
                        let mut buf = bytes::BytesMut::from(&bytes[..]);
                        self.o.handle_read_buf(self.now, &mut buf);
                        assert!(buf.is_empty());
                    }
                }
            }
            Ev::Eof => self.o.handle_eof(),
            Ev::Wait(ms) => {
                // Never past a deadline without polling at it.
                let to = self.now + Duration::from_millis(ms);
                while let Some(t) = self.o.poll_timeout().filter(|t| *t <= to) {
                    self.now = self.now.max(t);
                    self.poll();
                    if self.o.poll_timeout() == Some(t) {
                        panic!("a deadline that passes without a frame");
                    }
                }
                self.now = to;
            }
            Ev::Coded => {
                if let Some(d) = self.with_coder.take() {
                    self.sent.push(d.clone());
                    self.o.handle_coded(d);
                }
            }
            Ev::AckAll if self.asked => {}
            Ev::AckAll => {
                if let Some(last) = self.sent.len().checked_sub(1) {
                    self.o.handle_ack(last as u64).unwrap();
                }
            }
            Ev::Resend => {
                // Acks cover everything sent, so the last frame is
                // outstanding whenever any is.
                if !self.o.sending().all_acked() {
                    self.asked = true;
                    self.o.handle_resend(self.sent.len() as u64 - 1);
                }
            }
            Ev::Poll => self.poll(),
        }
    }
}

proptest! {
    /// Whatever the order of reads, timers, acks, resends and the coder's
    /// work, every byte read comes out in frames exactly once and in order,
    /// no frame exceeds the cap, and the direction completes.
    #[test]
    fn every_byte_comes_out_once_in_order(
        frame_cap in 1usize..64,
        buffer in 1usize..256,
        idle_ms in prop_oneof![Just(0u64), 1u64..20],
        max_ms in prop_oneof![Just(0u64), 1u64..60],
        model_every in 1usize..4,
        events in proptest::collection::vec(ev(), 0..300),
    ) {
        let mut d = Driver {
            o: outgoing(limits(frame_cap, buffer, idle_ms, max_ms), CodecRule::Auto),
            now: Instant::now(),
            next_byte: 0,
            read: Vec::new(),
            sent: Vec::new(),
            with_coder: None,
            fin: false,
            done: false,
            model_every,
            asked: false,
        };
        for e in events {
            d.on(e);
            prop_assert!(!d.done || d.o.is_flushed());
        }
        // The end: the socket closes, time passes, the coder and the peer
        // keep up.
        d.on(Ev::Eof);
        for _ in 0..10_000 {
            if d.done {
                break;
            }
            d.on(Ev::Coded);
            d.on(Ev::Poll);
            d.on(Ev::AckAll);
            d.on(Ev::Wait(100));
        }
        prop_assert!(d.done, "the direction completes");
        prop_assert!(d.fin);
        prop_assert_eq!(d.sent.concat(), d.read);
        prop_assert_eq!(d.o.pending(), 0);
    }
}
