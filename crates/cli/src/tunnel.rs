//! `llmpack sender`, `receiver`, `emulate`, `check-config` and `keygen`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use llmpack_proxy::config::{Config, Role};

/// Runs a proxy of `role` from the config at `path` until SIGINT or SIGTERM.
pub fn serve(path: &Path, role: Role) -> Result<()> {
    let config = Config::load(path).with_context(|| format!("config {}", path.display()))?;
    if config.role != role {
        bail!(
            "{} is a {:?} config; run `llmpack {}` with it",
            path.display(),
            config.role,
            match config.role {
                Role::Sender => "sender",
                Role::Receiver => "receiver",
            }
        );
    }
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(llmpack_proxy::run(config, shutdown_signal()))
}

/// Runs `llmpack emulate` until SIGINT or SIGTERM.
pub fn emulate(args: &llmpack_bench::emulate::EmulateArgs) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(llmpack_bench::emulate::run(args, shutdown_signal()))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Validates a config and prints what it describes.
pub fn check(path: &Path) -> Result<()> {
    let config = Config::load(path).with_context(|| format!("config {}", path.display()))?;
    let described = config.describe();
    print!("{described}");
    if !described.ends_with('\n') {
        println!();
    }
    // The files the proxy will read at start, read the same way now: a
    // missing, unreadable or mismatched key fails here, not at start-up.
    let link = &config.link;
    if let Some(id) = &link.identity {
        let loaded =
            llmpack_transport::Identity::load(&id.certificate, &id.key).with_context(|| {
                format!(
                    "{}: link.certificate / link.key ({} / {}; `llmpack keygen --out DIR` makes a pair)",
                    path.display(),
                    id.certificate.display(),
                    id.key.display()
                )
            })?;
        println!("  this end's certificate: SHA-256 {}", loaded.fingerprint());
    }
    if let Some(peer) = &link.peer_certificate {
        let pin = llmpack_transport::load_certificate(peer).with_context(|| {
            format!(
                "{}: link.peer_certificate ({})",
                path.display(),
                peer.display()
            )
        })?;
        println!(
            "  pinned peer certificate: SHA-256 {}",
            llmpack_transport::fingerprint(&pin)
        );
    }
    println!("{}: ok", path.display());
    Ok(())
}

/// Writes a new self-signed certificate and key for one end of a link.
pub fn keygen(out: &Path, name: &str, server_name: &str) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let (cert, key) = llmpack_transport::generate(server_name)
        .with_context(|| format!("generating a certificate for {name}"))?;
    let cert_path: PathBuf = out.join(format!("{name}.crt"));
    let key_path: PathBuf = out.join(format!("{name}.key"));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            bail!(
                "{} exists; remove it first or pick another --out",
                p.display()
            );
        }
    }
    std::fs::write(&cert_path, cert).with_context(|| format!("writing {}", cert_path.display()))?;
    write_private(&key_path, key.as_bytes())?;
    let id = llmpack_transport::Identity::load(&cert_path, &key_path)?;
    println!(
        "wrote {} and {} (SHA-256 {})",
        cert_path.display(),
        key_path.display(),
        id.fingerprint()
    );
    println!(
        "give {} to the other end as its link.peer_certificate",
        cert_path.display()
    );
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}
