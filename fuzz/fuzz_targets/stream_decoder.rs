//! A stream decoder fed arbitrary frames (header + payload from the input)
//! with the toy predictor: errors are fine, panics and unbounded work are not.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use llmpack_codec::toy::ToyPredictor;
use llmpack_codec::{ByteVocab, StreamConfig, StreamDecoder, Vocabulary, drive};
use llmpack_frame::{FRAME_HEADER_LEN, FrameHeader};

fuzz_target!(|data: &[u8]| {
    let vocab: Arc<dyn Vocabulary> = Arc::new(ByteVocab::default());
    let mut predictor = ToyPredictor::new(vocab.vocab_size());
    let mut dec = StreamDecoder::new(0, &StreamConfig::default(), vocab, b"");
    let mut rest = data;
    while rest.len() >= FRAME_HEADER_LEN {
        let Ok(h) = FrameHeader::decode(&mut rest) else { return };
        let n = (h.payload_len as usize).min(rest.len());
        let (payload, tail) = rest.split_at(n);
        rest = tail;
        dec.push(h, payload.to_vec());
        drive(&mut predictor, &mut [&mut dec], &mut |_| {}).unwrap();
        if dec.take_output().is_some_and(|r| r.is_err()) {
            return;
        }
    }
});
