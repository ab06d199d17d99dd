//! A decoder without a model (a `zstd` tunnel, or a receiver that switched
//! the model off after a failed probe) fed arbitrary frames: `lm` frames of
//! any token count are refused with an error, and it never asks a predictor
//! for anything (the predictor here fails every request, so any ask is a
//! finding), never panics.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use llmpack_codec::{ByteVocab, NoModel, Policy, StreamConfig, StreamDecoder, Vocabulary, drive};
use llmpack_frame::{FRAME_HEADER_LEN, FrameHeader};

fuzz_target!(|data: &[u8]| {
    let vocab: Arc<dyn Vocabulary> = Arc::new(ByteVocab::default());
    let cfg = StreamConfig {
        policy: Policy::Zstd,
        lm: None,
        ..StreamConfig::default()
    };
    let mut dec = StreamDecoder::new(0, &cfg, vocab, b"");
    let mut rest = data;
    while rest.len() >= FRAME_HEADER_LEN {
        let Ok(h) = FrameHeader::decode(&mut rest) else {
            return;
        };
        let n = (h.payload_len as usize).min(rest.len());
        let (payload, tail) = rest.split_at(n);
        rest = tail;
        dec.push(h, payload.to_vec());
        drive(&mut NoModel, &mut [&mut dec], &mut |_| {}).unwrap();
        if dec.take_output().is_some_and(|r| r.is_err()) {
            return;
        }
    }
});
