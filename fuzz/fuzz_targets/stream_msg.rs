//! Tunnel stream messages from arbitrary bytes (what a hostile peer can
//! send): never a panic; a parsed message consumed exactly its own encoding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmpack_frame::Msg;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        let before = rest;
        let Ok(m) = Msg::decode(&mut rest) else { break };
        let used = &before[..before.len() - rest.len()];
        // Refusal reasons are decoded lossily (invalid UTF-8 is replaced);
        // every other message re-encodes to exactly the bytes it came from.
        if !matches!(m, Msg::Refused { .. }) {
            let mut v = Vec::new();
            m.encode(&mut v);
            assert_eq!(&v[..], used);
        }
    }
});
