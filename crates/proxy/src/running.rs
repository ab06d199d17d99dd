//! A started proxy, as [`crate::start`] hands it back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

/// A started proxy.
#[derive(Debug)]
pub struct Running {
    /// Sender: where each tunnel accepts local clients, by tunnel name.
    pub tunnels: HashMap<String, SocketAddr>,
    /// Receiver: the UDP address the link is accepted on.
    pub link: Option<SocketAddr>,
    /// The Prometheus endpoint, if configured.
    pub metrics: Option<SocketAddr>,
    /// Whether the sender's link is up and its handshake done (always
    /// `true` on a receiver).
    pub link_up: watch::Receiver<bool>,
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
    endpoint: quinn::Endpoint,
}

impl Running {
    /// A started proxy of these parts.
    pub(crate) fn new(
        tunnels: HashMap<String, SocketAddr>,
        link: Option<SocketAddr>,
        metrics: Option<SocketAddr>,
        link_up: watch::Receiver<bool>,
        tasks: JoinSet<()>,
        stop: watch::Sender<bool>,
        endpoint: quinn::Endpoint,
    ) -> Self {
        Running {
            tunnels,
            link,
            metrics,
            link_up,
            tasks,
            stop,
            endpoint,
        }
    }

    /// Stops accepting, closes the link and waits briefly for it to close.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.endpoint
            .close(llmpack_transport::CLOSE_SHUTDOWN, b"shutdown");
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}
