//! FEC datagrams and feedback from arbitrary bytes (what a hostile peer can
//! send): every field is validated before raptorq sees a symbol, so never a
//! panic.
#![no_main]
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use llmpack_fec::{BlockDecoder, DecoderConfig, Feedback};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let _ = Feedback::decode(&mut &data[..]);
    let mut d = BlockDecoder::new(DecoderConfig::default()).expect("default config is valid");
    // Feed the input as a series of datagrams cut at its first byte's value.
    let cut = usize::from(data.first().copied().unwrap_or(1)).max(18);
    for dgram in data.chunks(cut) {
        let _ = d.handle_datagram(now, dgram);
        while d.poll_item().is_some() {}
    }
});
