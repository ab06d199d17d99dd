//! A short human summary of a [`Config`], for `llmpack check-config`.

use std::fmt::Write as _;
use std::path::Path;

use llmpack_codec::Policy;

use super::{Config, Role};

impl Config {
    /// A few lines saying what this config does: role, link, authentication,
    /// model, metrics, limits and one line per tunnel. Secrets are not shown;
    /// primers appear as length and hash prefix, so the two ends' summaries
    /// can be compared.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let link = &self.link;
        // Writing to a String cannot fail.
        let _ = writeln!(s, "role: {}", self.role);
        match self.role {
            Role::Sender => {
                let _ = writeln!(
                    s,
                    "link: connect to {} (server name {:?}) from {}; reconnect after {:?} to {:?}; lost after {:?} silent",
                    link.connect.as_deref().unwrap_or("?"),
                    link.server_name,
                    link.bind,
                    link.reconnect_min,
                    link.reconnect_max,
                    link.idle_timeout,
                );
            }
            Role::Receiver => {
                let _ = writeln!(
                    s,
                    "link: accept on {}",
                    link.listen
                        .map_or_else(|| "?".to_owned(), |a| a.to_string())
                );
            }
        }
        let mut auth = Vec::new();
        if let Some(id) = &link.identity {
            auth.push(format!(
                "certificate {}, key {}",
                show(&id.certificate),
                show(&id.key)
            ));
        }
        if let Some(peer) = &link.peer_certificate {
            auth.push(format!("peer pinned to {}", show(peer)));
        }
        if let Some(token) = &link.token {
            auth.push(format!("token ({} bytes)", token.len()));
        }
        let _ = writeln!(s, "auth: {}", auth.join("; "));

        let model = &self.model;
        let _ = write!(
            s,
            "model: {}, device {}, {} threads, max delay {:?}, max batch {}",
            model
                .dir
                .as_deref()
                .map_or_else(|| "built-in default".to_owned(), show),
            model.device,
            model.threads,
            model.max_delay,
            match model.device {
                llmpack_model::Device::Cpu => model.max_batch.to_string(),
                llmpack_model::Device::Cuda => model.max_batch_gpu.to_string(),
                llmpack_model::Device::Auto => format!(
                    "{} on a GPU, {} on the CPU",
                    model.max_batch_gpu, model.max_batch
                ),
            },
        );
        if let Some(lib) = &model.ort_lib {
            let _ = write!(s, ", ONNX Runtime {}", show(lib));
        }
        s.push('\n');
        let _ = writeln!(
            s,
            "metrics: {}",
            self.metrics
                .map_or_else(|| "off".to_owned(), |a| format!("listening on {a}"))
        );
        let l = &self.limits;
        let flush = if l.flush_max.is_zero() {
            "reads framed at once".to_string()
        } else {
            format!("flush after {:?} quiet or {:?}", l.flush_idle, l.flush_max)
        };
        let _ = writeln!(
            s,
            "limits: {} connections, buffer {}, frame {}, {flush}",
            l.max_connections,
            size(u64::try_from(l.buffer).unwrap_or(u64::MAX)),
            size(u64::from(l.frame)),
        );
        for t in &self.tunnels {
            let _ = write!(s, "tunnel {}: ", t.name);
            match (t.listen, &t.target) {
                (Some(listen), _) => {
                    let _ = write!(s, "{listen} -> receiver");
                }
                (None, Some(target)) => {
                    let _ = write!(s, "sender -> {target}");
                }
                (None, None) => s.push('?'),
            }
            let _ = write!(s, ", codec {}", policy_name(t.policy));
            if t.primer.is_empty() {
                s.push_str(", no primer");
            } else {
                let digest = hex::encode(t.primer_digest());
                let _ = write!(
                    s,
                    ", primer {} bytes (sha256 {})",
                    t.primer.len(),
                    &digest[..16]
                );
            }
            if let Some(w) = t.window {
                let _ = write!(s, ", window {w}");
            }
            match t.zstd_level {
                Some(l) => {
                    let _ = write!(s, ", zstd level {l}");
                }
                None => s.push_str(", zstd level by link rate"),
            }
            if let Some(k) = t.keep {
                let _ = write!(s, ", keep {k}");
            }
            s.push('\n');
        }
        s
    }
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// The config spelling of a policy.
fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::Auto => "auto",
        Policy::Lm => "lm",
        Policy::Zstd => "zstd",
        Policy::Raw => "raw",
        _ => "?",
    }
}

/// `n` bytes in the largest binary unit that divides it (`16KiB`).
fn size(n: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n != 0 && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}
