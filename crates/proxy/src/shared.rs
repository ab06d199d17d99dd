//! What a started proxy's roles share: the loaded model, the limits and
//! link settings every connection needs, and the link's transport tuning.
//! `run` builds it; the sender and receiver roles use it.

use std::sync::Arc;
use std::time::Duration;

use llmpack_codec::{ByteVocab, LmParams, Vocabulary};
use llmpack_frame::outgoing::FrameLimits;
use llmpack_transport::{ModelInfo, Tuning};
use tokio::sync::Semaphore;

use crate::coding::Coding;
use crate::config::{FecSettings, LinkConfig, LinkMode, Role, TunnelConfig};
use crate::fec_link::FecLink;
use crate::sched::Scheduler;

/// The loaded model of a proxy, shared by all its connections.
#[derive(Debug, Clone)]
pub(crate) struct ModelRt {
    pub vocab: Arc<dyn Vocabulary>,
    pub sched: Scheduler,
    pub info: ModelInfo,
    /// The model's context rule (its manifest's context length).
    pub rule: LmParams,
}

/// What every connection of this proxy needs.
#[derive(Debug)]
pub(crate) struct Shared {
    pub role: Role,
    pub model: Option<ModelRt>,
    pub limits: FrameLimits,
    pub max_delay: Duration,
    pub slots: Arc<Semaphore>,
    pub max_connections: usize,
    pub link_mode: LinkMode,
    pub fec: FecSettings,
}

impl Shared {
    /// Starts the FEC side of a new link if this end is configured for
    /// `datagram-fec` and the peer accepts datagrams (which it does only in
    /// that mode too); `None`: the link runs in stream mode.
    pub fn fec_link(&self, conn: &quinn::Connection) -> Option<Arc<FecLink>> {
        if self.link_mode != LinkMode::DatagramFec {
            return None;
        }
        if conn.max_datagram_size().is_none() {
            tracing::warn!(
                "link.mode is datagram-fec but the peer does not accept datagrams \
                 (set link.mode = \"datagram-fec\" on both ends); using stream mode"
            );
            return None;
        }
        // One connection's unread data: what the peer may send unacknowledged
        // (its limits.buffer, a resend of as much, and acks), or at least
        // what a QUIC stream's window would allow.
        let cap = (2 * self.limits.buffer + (1 << 20)).max(16 << 20);
        let opens = self.role == Role::Receiver;
        match FecLink::start(conn.clone(), &self.fec, cap, self.role_label(), opens) {
            Ok(l) => {
                tracing::info!("link in datagram-fec mode");
                Some(l)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the FEC link; using stream mode");
                None
            }
        }
    }

    fn role_label(&self) -> &'static str {
        match self.role {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }

    /// The context rule a tunnel uses with this model (clamped to the
    /// model's context length), or `None` without a model.
    pub fn rule(&self, t: &TunnelConfig) -> Option<LmParams> {
        let m = self.model.as_ref()?;
        let r = t.context_rule(m.rule);
        let window = r.window.min(m.rule.window);
        let keep = r.keep.min(window / 2);
        Some(LmParams { window, keep })
    }

    /// The coding of one connection of tunnel `t` on a link where model
    /// coding is `lm`.
    pub fn coding(&self, t: &TunnelConfig, lm: bool, link: Arc<crate::load::LinkLoad>) -> Coding {
        let model = self.model.as_ref().filter(|_| lm);
        Coding {
            tunnel: t.name.clone(),
            role: self.role_label(),
            policy: t.policy,
            primer: t.primer.clone(),
            lm: model.and_then(|_| self.rule(t)),
            lanes: t.lanes,
            zstd_level: t.zstd_level,
            vocab: match model {
                Some(m) => m.vocab.clone(),
                None => Arc::new(ByteVocab::default()),
            },
            sched: model.map(|m| m.sched.clone()),
            max_delay: self.max_delay,
            limits: self.limits,
            metrics: crate::coding::ConnMetrics::new(&t.name, self.role_label()),
            link,
        }
    }
}

/// Streams the link allows beyond `limits.max_connections`: a closed
/// connection's stream lingers until both ends have seen its end.
const STREAM_MARGIN: usize = 64;

/// The link's concurrent-stream limit for `max_connections` connections.
///
/// quinn announces freed stream credit (`MAX_STREAMS`) only once more than
/// an eighth of the limit has been freed since the last announcement, so the
/// sender may see up to `limit / 8` fewer streams than are really free. The
/// limit therefore exceeds `max_connections` by more than that lag: with a
/// margin `m` and `limit = c + m`, `m > limit / 8` needs `m > c / 7`.
/// Without it, rounds of 2,000 connections that open and close together
/// found no stream after 12,000-16,000 connections, whenever the unannounced
/// remainder exceeded the fixed margin.
pub(crate) fn stream_limit(max_connections: usize) -> u32 {
    let margin = max_connections / 7 + STREAM_MARGIN;
    u32::try_from(max_connections.saturating_add(margin))
        .unwrap_or(u32::MAX)
        .max(Tuning::DEFAULT_MAX_STREAMS)
}

/// The QUIC transport settings of a link end.
pub(crate) fn transport_tuning(link: &LinkConfig, max_connections: usize) -> Tuning {
    let fec = link.mode == LinkMode::DatagramFec;
    Tuning {
        // One stream per tunnelled connection: the link's limit follows
        // limits.max_connections (never below quinn's usual 1024).
        max_streams: stream_limit(max_connections),
        datagrams: fec,
        // A few datagrams: the FEC task keeps quinn fed, and feedback never
        // queues behind seconds of symbols on a slow link.
        datagram_send_buffer: if fec { 3 << 10 } else { 1 << 20 },
        congestion: link.congestion,
        // FEC symbols are sized to the datagram limit when their block is
        // encoded; a limit that later shrinks (MTU discovery backing off
        // after delay or loss) strands them, so FEC mode keeps it fixed.
        mtu_discovery: !fec,
        idle_timeout: link.idle_timeout,
        keep_alive: (link.idle_timeout / 3).min(Tuning::DEFAULT_KEEP_ALIVE),
        ..Tuning::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The margin over max_connections always exceeds the credit quinn may
    /// hold back (an eighth of the limit), and the limit never drops below
    /// quinn's default.
    #[test]
    fn stream_limit_covers_quinns_unannounced_credit() {
        for c in [0, 1, 100, 256, 1000, 2000, 2100, 10_000, 100_000, 1 << 24] {
            let limit = usize::try_from(stream_limit(c)).unwrap();
            assert!(limit >= c + STREAM_MARGIN, "{c}");
            assert!(limit - c > limit / 8, "{c}: limit {limit}");
            assert!(limit >= Tuning::DEFAULT_MAX_STREAMS as usize);
        }
    }
}
