//! The connection protocol state machine (`llmpack_frame::protocol`) fed a
//! hostile peer's bytes in arbitrary chunks: never a panic, the inbox
//! buffers at most one message's worth, and the sending side's books stay
//! consistent whatever acks and resend requests arrive.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmpack_frame::protocol::{FrameStep, Inbound, Inbox, MAX_MESSAGE, Receiving, Sending};

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let mut inbox = Inbox::new(ctl & 1 == 1);
    let mut s = Sending::new();
    for i in 0..(ctl >> 1) % 8 {
        s.sent(vec![i; usize::from(i) + 1]);
    }
    let mut r = Receiving::new();
    // Chunk sizes come from the input too: 1..=64 bytes at a time.
    let mut rest = rest;
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n % 64 + 1).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        inbox.push(chunk);
        loop {
            match inbox.poll() {
                Ok(Some(m)) => drive(&mut s, &mut r, m),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(inbox.buffered() <= MAX_MESSAGE + 64);
    }
    let _ = inbox.finish();
});

fn drive(s: &mut Sending, r: &mut Receiving, m: Inbound) {
    match m {
        Inbound::Frame { payload, .. } => {
            if r.on_frame() == Ok(FrameStep::Decode) {
                // A frame whose payload starts with 0 "fails its check".
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
            let before = s.unacked_bytes();
            if s.on_ack(seq).is_ok() {
                assert!(s.unacked_bytes() <= before);
            }
        }
        Inbound::Resend(seq) => {
            if let Ok(rs) = s.on_resend(seq) {
                assert_eq!(rs.seq, seq);
                assert_eq!(rs.bytes.len() as u64, s.next_seq() - seq);
                let total: usize = rs.bytes.iter().map(bytes::Bytes::len).sum();
                assert!(total <= s.unacked_bytes());
            }
        }
    }
}
