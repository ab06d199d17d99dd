//! LLMPack proxies: the sender and receiver roles, their config, TCP accept
//! and dial, the inference scheduler and the metrics export.
#![warn(missing_docs)]

pub mod config;
pub mod conn;
mod fec_link;
pub mod load;
pub mod metrics_http;
mod receiver;
mod run;
pub mod sched;
mod sender;

pub use run::{DEFAULT_MODEL, ModelParts, Running, run, start, start_with};
pub mod units;
