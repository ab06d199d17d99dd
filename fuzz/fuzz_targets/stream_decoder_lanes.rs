//! A decoder of a stream whose frames may be coded on several lanes (the
//! tunnel's `lanes`), with the small deterministic toy model, fed arbitrary
//! frames: segment tables of any shape, token counts and payloads are
//! refused with an error or decoded, never a panic, and the work stays
//! bounded by the frame's own lengths. The first byte picks the lanes
//! (1..=16).
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use llmpack_codec::toy::ToyPredictor;
use llmpack_codec::{ByteVocab, StreamConfig, StreamDecoder, Vocabulary, drive};
use llmpack_frame::{FRAME_HEADER_LEN, FrameHeader};

fuzz_target!(|data: &[u8]| {
    let Some((&lanes, mut rest)) = data.split_first() else {
        return;
    };
    let vocab: Arc<dyn Vocabulary> = Arc::new(ByteVocab::default());
    let cfg = StreamConfig {
        lanes: lanes % 16 + 1,
        ..StreamConfig::default()
    };
    let mut model = ToyPredictor::new(vocab.vocab_size());
    let mut dec = StreamDecoder::new(0, &cfg, vocab, b"");
    while rest.len() >= FRAME_HEADER_LEN {
        let Ok(h) = FrameHeader::decode(&mut rest) else {
            return;
        };
        // Keep each run short: a frame's tokens are at most its length.
        if h.orig_len > 1536 {
            return;
        }
        let n = (h.payload_len as usize).min(rest.len());
        let (payload, tail) = rest.split_at(n);
        rest = tail;
        dec.push(h, payload.to_vec());
        drive(&mut model, &mut [&mut dec], &mut |_| {}).unwrap();
        if dec.take_output().is_some_and(|r| r.is_err()) {
            return;
        }
    }
});
