//! Unit tests and property tests of the connection protocol.
use super::*;
use crate::Codec;
use proptest::prelude::*;

fn header(len: u32) -> FrameHeader {
    FrameHeader {
        codec: Codec::Raw,
        orig_len: len,
        payload_len: len,
        tokens: 0,
        checksum: 0,
    }
}

fn bytes_of(msgs: &[Msg]) -> Vec<u8> {
    let mut b = Vec::new();
    for m in msgs {
        m.encode(&mut b);
    }
    b
}

#[test]
fn inbox_routes_messages_after_opened_byte_by_byte() {
    let msgs = [
        Msg::Opened,
        Msg::Frame {
            header: header(3),
            payload: Bytes::from_static(b"abc"),
        },
        Msg::Ack { seq: 0 },
        Msg::Resend { seq: 1 },
        Msg::Restart { seq: 2, frames: 1 },
        Msg::Fin,
    ];
    let mut inbox = Inbox::new(true);
    let mut got = Vec::new();
    for b in bytes_of(&msgs) {
        inbox.push(&[b]);
        while let Some(m) = inbox.poll().unwrap() {
            got.push(m);
        }
    }
    assert!(!inbox.awaiting_opened());
    assert_eq!(
        got,
        vec![
            Inbound::Frame {
                header: header(3),
                payload: Bytes::from_static(b"abc")
            },
            Inbound::Ack(0),
            Inbound::Resend(1),
            Inbound::Restart { seq: 2, frames: 1 },
            Inbound::Fin,
        ]
    );
    inbox.finish().unwrap();
}

#[test]
fn inbox_refusals_and_lies() {
    let mut inbox = Inbox::new(true);
    inbox.push(&bytes_of(&[Msg::Refused {
        reason: "no such tunnel".into(),
    }]));
    assert_eq!(
        inbox.poll(),
        Err(ProtoError::Refused("no such tunnel".into()))
    );

    let mut inbox = Inbox::new(true);
    inbox.push(&bytes_of(&[Msg::Fin]));
    assert!(matches!(inbox.poll(), Err(ProtoError::Violation(_))));

    // A receiver that closes before Opened refused.
    assert!(matches!(
        Inbox::new(true).finish(),
        Err(ProtoError::Refused(_))
    ));

    // Open / Opened on a data stream.
    let mut inbox = Inbox::new(false);
    inbox.push(&bytes_of(&[Msg::Opened]));
    let e = inbox.poll().unwrap_err();
    assert!(e.to_string().contains("unexpected Opened"), "{e}");

    // Garbage.
    let mut inbox = Inbox::new(false);
    inbox.push(&[0xEE; 8]);
    assert!(matches!(inbox.poll(), Err(ProtoError::Violation(_))));

    // A stream that ends inside a message.
    let mut inbox = Inbox::new(false);
    let b = bytes_of(&[Msg::Ack { seq: 9 }]);
    inbox.push(&b[..b.len() - 1]);
    assert_eq!(inbox.poll(), Ok(None));
    assert!(inbox.finish().is_err());
}

#[test]
fn sending_acks_resends_and_lies() {
    let mut s = Sending::new();
    assert_eq!(s.sent(b"one".to_vec()), 0);
    assert_eq!(s.sent(b"two".to_vec()), 1);
    assert_eq!(s.sent(b"three".to_vec()), 2);
    assert_eq!(s.unacked_bytes(), 11);
    s.on_ack(0).unwrap();
    s.on_ack(0).unwrap(); // duplicate: no-op
    assert_eq!(s.unacked_bytes(), 8);
    assert!(s.on_ack(3).is_err(), "ack of a frame never sent");
    assert!(s.on_resend(0).is_err(), "resend of an acknowledged frame");
    assert!(s.on_resend(3).is_err(), "resend of a frame never sent");
    let r = s.on_resend(1).unwrap();
    assert_eq!(r.seq, 1);
    assert_eq!(r.bytes, vec![b"two".to_vec(), b"three".to_vec()]);
    // The resent frames keep their numbers and stay unacknowledged.
    assert_eq!(s.next_seq(), 3);
    s.on_ack(2).unwrap();
    assert!(s.all_acked());
    assert_eq!(s.unacked_bytes(), 0);
    assert_eq!(s.tail(), b"onetwothree");
}

#[test]
fn receiving_resend_restart_and_lies() {
    let mut r = Receiving::new();
    assert_eq!(r.on_frame(), Ok(FrameStep::Decode));
    assert_eq!(r.decoded(b"a").ack, 0);
    assert!(r.on_restart(1, 1).is_err(), "restart nobody asked for");
    assert_eq!(r.on_frame(), Ok(FrameStep::Decode));
    assert_eq!(r.failed(), 1);
    assert_eq!(
        r.on_frame(),
        Ok(FrameStep::Skip),
        "frames after a failure are dropped"
    );
    assert!(r.on_restart(2, 1).is_err(), "restart at the wrong frame");
    assert!(r.on_restart(1, 0).is_err(), "restart that resends nothing");
    assert_eq!(r.on_restart(1, 2), Ok(Restarted::ModelFree { frames: 2 }));
    assert_eq!(r.on_frame(), Ok(FrameStep::Decode));
    let d = r.decoded(b"b");
    assert_eq!((d.ack, d.rebuild, d.finished), (1, false, false));
    let d = r.decoded(b"c");
    assert_eq!((d.ack, d.rebuild, d.finished), (2, true, false));
    assert_eq!(r.on_fin(), Ok(FinStep::Finished));
    assert!(r.is_done());
    assert!(r.on_frame().is_err(), "frame after Fin");
    assert!(r.on_fin().is_err(), "a second Fin");
    assert_eq!(r.tail(), b"abc");
}

/// The peer's Fin arrives while a resend is pending (it sent its last
/// frames and Fin before our resend request reached it): the direction is
/// complete once the resend is decoded, with no second Fin.
#[test]
fn fin_before_the_resend_completes_after_it() {
    let mut r = Receiving::new();
    r.on_frame().unwrap();
    r.decoded(b"x");
    r.on_frame().unwrap();
    assert_eq!(r.failed(), 1);
    assert_eq!(r.on_frame(), Ok(FrameStep::Skip));
    assert_eq!(r.on_fin(), Ok(FinStep::AfterResend));
    assert!(!r.is_done());
    r.on_restart(1, 2).unwrap();
    r.on_frame().unwrap();
    assert!(!r.decoded(b"y").finished);
    r.on_frame().unwrap();
    let d = r.decoded(b"z");
    assert!(d.rebuild && d.finished);
    assert!(r.is_done());
    assert!(r.on_frame().is_err());
}

/// One step of a simulated connection with a lossless stream in between.
#[derive(Debug, Clone)]
enum Step {
    /// The sender frames this many bytes.
    Send(u8),
    /// The receiver handles the next queued message; its decode fails if
    /// `fail` (a checksum failure at the receiver).
    Deliver { fail: bool },
    /// The sender handles the next message from the receiver.
    Feedback,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u8..=255).prop_map(Step::Send),
        any::<bool>().prop_map(|f| Step::Deliver { fail: f }),
        Just(Step::Feedback),
    ]
}

proptest! {
    /// A sender and a receiver driven in any order, with any frames failing
    /// at the receiver, deliver every byte exactly once and in order, and
    /// the sender ends with everything acknowledged.
    #[test]
    fn any_schedule_with_failures_delivers_everything_in_order(
        steps in proptest::collection::vec(step(), 1..200),
    ) {
        let mut s = Sending::new();
        let mut r = Receiving::new();
        let mut to_r: VecDeque<Msg> = VecDeque::new();
        let mut to_s: VecDeque<Inbound> = VecDeque::new();
        let mut sent = Vec::new();
        let mut got = Vec::new();
        let mut counter = 0u8;
        let mut fails = 0;
        let send_frame = |data: Vec<u8>, to_r: &mut VecDeque<Msg>| {
            let len = u32::try_from(data.len()).unwrap();
            to_r.push_back(Msg::Frame { header: header(len), payload: data.into() });
        };
        let deliver = |fail: bool,
                       r: &mut Receiving,
                       to_r: &mut VecDeque<Msg>,
                       to_s: &mut VecDeque<Inbound>,
                       got: &mut Vec<u8>,
                       fails: &mut u32| {
            let Some(m) = to_r.pop_front() else { return };
            match m {
                Msg::Frame { payload, .. } => match r.on_frame().unwrap() {
                    FrameStep::Skip => {}
                    FrameStep::Decode if fail && *fails < 20 => {
                        *fails += 1;
                        to_s.push_back(Inbound::Resend(r.failed()));
                    }
                    FrameStep::Decode => {
                        got.extend_from_slice(&payload);
                        to_s.push_back(Inbound::Ack(r.decoded(&payload).ack));
                    }
                },
                Msg::Restart { seq, frames } => {
                    r.on_restart(seq, frames).unwrap();
                }
                Msg::Fin => {
                    r.on_fin().unwrap();
                }
                m => panic!("unexpected {m:?}"),
            }
        };
        let feedback = |s: &mut Sending, to_s: &mut VecDeque<Inbound>, to_r: &mut VecDeque<Msg>| {
            match to_s.pop_front() {
                Some(Inbound::Ack(seq)) => s.on_ack(seq).unwrap(),
                Some(Inbound::Resend(seq)) => {
                    let rs = s.on_resend(seq).unwrap();
                    let frames = u32::try_from(rs.bytes.len()).unwrap();
                    to_r.push_back(Msg::Restart { seq: rs.seq, frames });
                    for d in rs.bytes {
                        send_frame(d.to_vec(), to_r);
                    }
                }
                Some(m) => panic!("unexpected {m:?}"),
                None => {}
            }
        };
        for st in steps {
            match st {
                Step::Send(n) => {
                    let data: Vec<u8> = (0..n).map(|_| { counter = counter.wrapping_add(1); counter }).collect();
                    sent.extend_from_slice(&data);
                    s.sent(data.clone());
                    send_frame(data, &mut to_r);
                }
                Step::Deliver { fail } => deliver(fail, &mut r, &mut to_r, &mut to_s, &mut got, &mut fails),
                Step::Feedback => feedback(&mut s, &mut to_s, &mut to_r),
            }
            prop_assert!(sent.starts_with(&got), "delivered bytes are a prefix of the sent ones");
        }
        // The end: Fin, then drain both ways with no more failures.
        s.fin();
        to_r.push_back(Msg::Fin);
        for _ in 0..100_000 {
            if to_r.is_empty() && to_s.is_empty() {
                break;
            }
            deliver(false, &mut r, &mut to_r, &mut to_s, &mut got, &mut fails);
            feedback(&mut s, &mut to_s, &mut to_r);
        }
        prop_assert_eq!(&got, &sent);
        prop_assert!(r.is_done());
        prop_assert!(s.all_acked());
    }

    /// Any message sequence from a peer, fed to all three parts, ends in
    /// messages or errors: no panic, and the inbox buffers at most one
    /// message's worth.
    #[test]
    fn arbitrary_peer_messages_never_panic(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..64),
        opened in any::<bool>(),
    ) {
        let mut inbox = Inbox::new(opened);
        let mut s = Sending::new();
        s.sent(vec![1; 10]);
        s.sent(vec![2; 10]);
        let mut r = Receiving::new();
        'feed: for c in chunks {
            inbox.push(&c);
            loop {
                match inbox.poll() {
                    Ok(Some(m)) => drive(&mut s, &mut r, m),
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
            prop_assert!(inbox.buffered() <= MAX_MESSAGE + 64);
        }
    }
}

fn drive(s: &mut Sending, r: &mut Receiving, m: Inbound) {
    match m {
        Inbound::Frame { payload, .. } => {
            if r.on_frame() == Ok(FrameStep::Decode) {
                if payload.first() == Some(&0) {
                    r.failed();
                } else {
                    r.decoded(&payload);
                }
            }
        }
        Inbound::Restart { seq, frames } => {
            let _ = r.on_restart(seq, frames);
        }
        Inbound::Fin => {
            let _ = r.on_fin();
        }
        Inbound::Ack(seq) => {
            let _ = s.on_ack(seq);
        }
        Inbound::Resend(seq) => {
            let _ = s.on_resend(seq);
        }
    }
}

#[test]
fn delayed_acks_wait_for_company_time_or_bytes() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut a = DelayedAck::new(1000, ms(5));
    assert_eq!(a.poll_timeout(), None);
    assert!(!a.is_due(t0));
    assert_eq!(a.take(), None);

    // Held until the delay runs out; a later ack replaces an earlier one.
    a.on_decoded(t0, 3, 100, false);
    a.on_decoded(t0 + ms(1), 4, 100, false);
    assert_eq!(a.poll_timeout(), Some(t0 + ms(5)), "timed from the first");
    assert!(!a.is_due(t0 + ms(4)));
    assert!(a.is_due(t0 + ms(5)));
    assert_eq!(a.take(), Some(4));
    assert_eq!(a.poll_timeout(), None);

    // Enough bytes make it due at once, and the count starts over.
    a.on_decoded(t0, 5, 600, false);
    assert!(!a.is_due(t0));
    a.on_decoded(t0, 6, 400, false);
    assert!(a.is_due(t0));
    assert_eq!(a.take(), Some(6));
    a.on_decoded(t0, 7, 600, false);
    assert!(!a.is_due(t0));

    // The peer's last frame: at once.
    a.on_decoded(t0, 8, 1, true);
    assert!(a.is_due(t0));
    assert_eq!(a.take(), Some(8));
    assert!(!a.is_due(t0 + ms(100)), "nothing held");

    // Never goes backwards.
    a.on_decoded(t0, 9, 1, false);
    a.on_decoded(t0, 2, 1, false);
    assert_eq!(a.take(), Some(9));
}

#[test]
fn a_flushed_ack_is_due_at_once() {
    let t0 = Instant::now();
    let mut a = DelayedAck::new(1000, Duration::from_millis(5));
    a.flush();
    assert!(!a.is_due(t0), "nothing held, nothing due");
    a.on_decoded(t0, 1, 1, false);
    a.flush();
    assert!(a.is_due(t0));
    assert_eq!(a.take(), Some(1));
}
