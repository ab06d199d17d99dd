//! The LLMPack path of a run: a receiver in front of the server, a
//! [`UdpRelay`] in front of the receiver, and a sender that reaches the
//! receiver through the relay; both proxies run in this process. Without an
//! emulated link (the `loopback` scenario) the sender dials the receiver
//! straight over loopback UDP.
//!
//! The generated configs set no `[limits]`, so the proxies run with their
//! defaults (flush timers included), as a user's would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use llmpack_proxy::Running;
use llmpack_proxy::config::Config;

use crate::link::{LinkSpec, UdpRelay};

/// Name of the one tunnel of a bench pair (the `tunnel` label of its metrics).
pub const TUNNEL: &str = "bench";

/// How long the sender may take to bring the link up through the relay.
const LINK_UP_LIMIT: Duration = Duration::from_secs(30);

/// Model settings of the proxies.
#[derive(Debug, Clone, Default)]
pub struct ModelOpts {
    /// `[model] dir`; `None`: the built-in default (`models/default`).
    pub dir: Option<PathBuf>,
    /// `[model] max_delay`; `None`: the proxy's default.
    pub max_delay: Option<Duration>,
}

/// A running sender/receiver pair behind an emulated link.
#[derive(Debug)]
pub(crate) struct Pair {
    /// Where clients connect (the sender's tunnel listener).
    pub addr: SocketAddr,
    /// The link between sender and receiver; `None`: plain loopback.
    pub relay: Option<UdpRelay>,
    /// The sender's `limits.flush_idle` and `limits.flush_max` in force.
    pub flush: (Duration, Duration),
    sender: Running,
    receiver: Running,
    dir: PathBuf,
}

impl Pair {
    /// Starts the pair with one tunnel of `codec` to `target` and waits for
    /// the link; `link: None` puts no emulator between them.
    pub async fn start(
        codec: &str,
        target: SocketAddr,
        link: Option<LinkSpec>,
        model: &ModelOpts,
        link_toml: &str,
    ) -> Result<Self> {
        let mode = link_toml;
        let dir = crate::scratch("pair")?;
        for name in ["sender", "receiver"] {
            let (crt, key) = llmpack_transport::generate("llmpack").context("making keys")?;
            std::fs::write(dir.join(format!("{name}.crt")), crt)?;
            std::fs::write(dir.join(format!("{name}.key")), key)?;
        }
        let uses_model = matches!(codec, "lm" | "auto");
        let model_toml = model_table(model, uses_model);
        let receiver_toml = format!(
            "role = \"receiver\"\n[link]\nlisten = \"127.0.0.1:0\"\ncertificate = \"receiver.crt\"\nkey = \"receiver.key\"\npeer_certificate = \"sender.crt\"\n{mode}{model_toml}\n[[tunnel]]\nname = \"{TUNNEL}\"\ntarget = \"{target}\"\ncodec = \"{codec}\"\n"
        );
        let receiver = llmpack_proxy::start(load(&dir, "receiver.toml", &receiver_toml)?)
            .await
            .context("starting the receiver")?;
        let link_addr = receiver.link.context("receiver has no link address")?;
        let relay = match link {
            Some(link) => Some(
                UdpRelay::start(local(), link_addr, link)
                    .await
                    .context("starting the UDP link relay")?,
            ),
            None => None,
        };
        let connect = relay.as_ref().map_or(link_addr, UdpRelay::local_addr);
        let sender_toml = format!(
            "role = \"sender\"\n[link]\nconnect = \"{connect}\"\npeer_certificate = \"receiver.crt\"\ncertificate = \"sender.crt\"\nkey = \"sender.key\"\nreconnect_min = \"50ms\"\nreconnect_max = \"500ms\"\n{mode}{model_toml}\n[[tunnel]]\nname = \"{TUNNEL}\"\nlisten = \"127.0.0.1:0\"\ncodec = \"{codec}\"\n"
        );
        let sender_config = load(&dir, "sender.toml", &sender_toml)?;
        let flush = (
            sender_config.limits.flush_idle,
            sender_config.limits.flush_max,
        );
        let sender = llmpack_proxy::start(sender_config)
            .await
            .context("starting the sender")?;
        let addr = *sender
            .tunnels
            .get(TUNNEL)
            .context("sender has no bench tunnel")?;
        if !link_up(&sender).await {
            sender.shutdown().await;
            receiver.shutdown().await;
            bail!(
                "the link did not come up within {} s through the emulated link",
                LINK_UP_LIMIT.as_secs()
            );
        }
        Ok(Pair {
            addr,
            relay,
            flush,
            sender,
            receiver,
            dir,
        })
    }

    /// Stops both proxies and the relay and removes the scratch directory.
    pub async fn shutdown(self) {
        self.sender.shutdown().await;
        self.receiver.shutdown().await;
        if let Some(r) = self.relay {
            r.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn model_table(model: &ModelOpts, uses_model: bool) -> String {
    let mut s = String::from("[model]\n");
    if uses_model && let Some(d) = &model.dir {
        // Absolute, since relative paths are taken from the config's folder.
        let abs = std::path::absolute(d).unwrap_or_else(|_| d.clone());
        s += &format!("dir = {:?}\n", abs.display().to_string());
    }
    if let Some(d) = model.max_delay {
        s += &format!("max_delay = \"{}ms\"\n", d.as_millis());
    }
    s
}

fn load(dir: &Path, name: &str, text: &str) -> Result<Config> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Config::load(&path).with_context(|| format!("loading generated config {}", path.display()))
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn link_up(r: &Running) -> bool {
    let mut rx = r.link_up.clone();
    tokio::time::timeout(LINK_UP_LIMIT, rx.wait_for(|up| *up))
        .await
        .is_ok_and(|r| r.is_ok())
}
