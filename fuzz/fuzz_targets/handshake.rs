//! Link handshake messages from arbitrary bytes: never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmpack_transport::{Hello, Reply};

fuzz_target!(|data: &[u8]| {
    let _ = Hello::decode(&mut &data[..]);
    let _ = Hello::decode_prefix(&mut &data[..]);
    let _ = Reply::decode(&mut &data[..]);
});
