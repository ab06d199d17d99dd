//! LLMPack benchmarks: link emulator, workloads, `llmpack bench` reports and plots.
//!
//! [`link`] emulates a slow, lossy, delayed network path in user space (no root,
//! no netem): a UDP relay for the QUIC tunnel and a TCP relay for plain-TCP
//! baselines, both with a rate-limited drop-tail bottleneck per direction.
//! [`units`] parses the rates and percentages that users type.
//!
//! This crate sits at the top of the dependency graph: it may use the tunnel
//! crates, but no tunnel crate may depend on it.
#![warn(missing_docs)]

pub mod link;
pub mod units;
