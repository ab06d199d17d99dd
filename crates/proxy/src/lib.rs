//! LLMPack proxies: the sender and receiver roles, their config, TCP accept
//! and dial, the inference scheduler and the metrics export.
#![warn(missing_docs)]

pub mod coding;
pub mod config;
pub mod conn;
pub mod error;
mod fec_conn;
mod fec_link;
pub mod load;
pub mod metrics_http;
mod receiver;
mod run;
mod running;
pub mod sched;
mod sender;
mod shared;

#[doc(hidden)]
pub use fec_conn::testing;
pub use run::{DEFAULT_MODEL, ModelParts, run, start, start_with};
pub use running::Running;
pub mod units;
