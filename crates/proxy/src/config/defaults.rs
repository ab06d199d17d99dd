//! Default values and limits of the config fields, each with its reason.

use std::time::Duration;

/// Sender's local UDP address: any interface, a port the OS picks (a client
/// needs no fixed port). An IPv6-only receiver needs `bind = "[::]:0"`.
pub(super) const DEFAULT_BIND: &str = "0.0.0.0:0";
/// First reconnect wait: quick enough that a blip goes unnoticed, slow
/// enough not to spin on a receiver that is down.
pub(super) const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(500);
/// Longest reconnect wait: a receiver back after an outage is found within
/// half a minute.
pub(super) const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(30);
/// Inference threads cap: ONNX Runtime's speed-up on a small model flattens
/// past about 8 threads, and the proxies need cores too.
pub(super) const DEFAULT_THREADS_CAP: usize = 8;
/// Most inference threads accepted; more is a typo.
pub(super) const MAX_THREADS: u64 = 256;
/// Latency budget of a model-coded frame: on the slow links LLMPack is for,
/// 2 s of coding still beats sending the bytes uncompressed.
pub(super) const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(2);
/// Lanes per model call: enough to keep a CPU busy, small enough that one
/// call stays short.
pub(super) const DEFAULT_MAX_BATCH: u64 = 64;
/// Lanes per model call on a GPU: a call of a few hundred rows costs the
/// GPU little more than one of a few (not yet measured: issue 16).
pub(super) const DEFAULT_MAX_BATCH_GPU: u64 = 512;
/// Most lanes per model call accepted.
pub(super) const MAX_BATCH: u64 = 1024;
/// Connections at once: plenty for a site's worth of clients while bounding
/// memory to about `max_connections × 2 × buffer`.
pub(super) const DEFAULT_MAX_CONNECTIONS: u64 = 256;
/// Unacknowledged bytes per connection and direction: fills a 1 MiB
/// bandwidth-delay product (8 Mbit/s at 1 s round trip).
pub(super) const DEFAULT_BUFFER: u64 = 1 << 20;
/// Frame cap: big enough that a frame's header is noise, small enough that
/// a frame is coded within the latency budget.
pub(super) const DEFAULT_FRAME: u64 = 16 << 10;
/// Timer coalescing is off by default: what a socket read returns is framed
/// at once when the connection's coder is free, and bytes gather only while
/// an earlier frame is still being coded or the link is backed up (then
/// they wait anyway). A timer would add its delay to every round trip of an
/// interactive protocol.
pub(super) const DEFAULT_FLUSH_IDLE: Duration = Duration::ZERO;
/// See [`DEFAULT_FLUSH_IDLE`].
pub(super) const DEFAULT_FLUSH_MAX: Duration = Duration::ZERO;
/// Tokens a context window must hold beyond `keep`, so that a re-prime
/// leaves room for some coding.
pub(super) const MIN_WINDOW_MARGIN: u64 = 16;
/// Largest primer accepted: a primer is model context, and no window holds
/// more than this; a bigger file is a mistake.
pub(super) const MAX_PRIMER_LEN: usize = 1 << 20;
/// Longest tunnel name.
pub(super) const MAX_NAME_LEN: usize = 64;

/// Inference threads by default: the available cores, capped.
pub(super) fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(DEFAULT_THREADS_CAP)
}
/// Lanes one frame may be coded on (a tunnel's `lanes`): a frame of at least
/// 2 × 512 tokens (~3 KB) is cut into up to this many segments that step
/// through the model together, ~2x the model's speed on one connection for
/// a few percent of ratio (models/default/MODEL.md).
pub(super) const DEFAULT_LANES: u8 = 4;
