//! Pack headers from arbitrary bytes: never a panic; accepted headers pass
//! their own validation and re-encode to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use llmpack_frame::ContainerHeader;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = ContainerHeader::decode(&mut &data[..]) {
        assert!(h.validate().is_ok());
        let mut v = Vec::new();
        h.encode(&mut v);
        assert_eq!(&v[..], &data[..ContainerHeader::LEN]);
    }
});
