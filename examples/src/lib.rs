//! Examples live beside this crate as `cargo run -p llmpack-examples --example roundtrip`.
