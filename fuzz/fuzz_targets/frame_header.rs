//! Frame headers from arbitrary bytes: never a panic; accepted headers keep
//! their limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmpack_frame::{FrameHeader, MAX_FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = FrameHeader::decode(&mut &data[..]) {
        assert!(h.orig_len <= MAX_FRAME_LEN);
        assert!(h.payload_len <= h.orig_len);
        assert!(h.tokens <= h.orig_len);
    }
});
