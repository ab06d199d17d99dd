//! Tunnel stream messages from arbitrary bytes (what a hostile peer can
//! send): never a panic; a parsed message consumed exactly its own encoding,
//! and the receive path's zero-copy decode (`Msg::decode_from`) reads the
//! same messages and leaves the same bytes.
//! The same bytes as the payload of a datagram-fec `Open` item: never a
//! panic, only an opening message is accepted, and two copies of an opening
//! agree only when they are equal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmpack_frame::Msg;
use llmpack_frame::fec_items::decode_opening;
use llmpack_frame::opening::{Opening, OpeningStep, Path};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut shared = bytes::BytesMut::from(data);
    loop {
        let before = rest;
        let plain = Msg::decode(&mut rest);
        let cut = Msg::decode_from(&mut shared);
        assert_eq!(&shared[..], rest, "decode_from left other bytes");
        let Ok(m) = plain else {
            assert!(cut.is_err());
            break;
        };
        assert_eq!(cut.as_ref().ok(), Some(&m));
        let used = &before[..before.len() - rest.len()];
        // Refusal reasons are decoded lossily (invalid UTF-8 is replaced);
        // every other message re-encodes to exactly the bytes it came from.
        if !matches!(m, Msg::Refused { .. }) {
            let mut v = Vec::new();
            m.encode(&mut v);
            assert_eq!(&v[..], used);
        }
    }
    // The input cut in two: an item's copy and the stream's copy.
    let cut = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let (a, b) = data.split_at(cut);
    let copies = [decode_opening(&mut &a[..]), decode_opening(&mut &b[..])];
    for mut o in [Opening::receiver(), Opening::sender()] {
        let mut first = None;
        for (c, path) in copies.iter().zip([Path::Item, Path::Stream]) {
            let Ok(m) = c else { continue };
            assert!(matches!(
                m,
                Msg::Open { .. } | Msg::Opened | Msg::Refused { .. }
            ));
            match o.handle(path, m.clone()) {
                Ok(OpeningStep::First(f)) => first = Some(f),
                Ok(OpeningStep::Agreed) => assert_eq!(first.as_ref(), Some(m)),
                Err(_) => {}
            }
        }
    }
});
