//! Runnable examples of the LLMPack library API; see `roundtrip.rs`:
//! `cargo run --release -p llmpack-examples --example roundtrip`.
