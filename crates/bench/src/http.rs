//! Real HTTP programs for benchmarks and tests: nginx as the server, curl as
//! the client, both found on this machine (Debian: `apt-get install
//! nginx-light curl`).
//!
//! nginx runs in the foreground as a child of this process (no daemon, no
//! master process) from a config written into a scratch directory, so it
//! needs no root and touches nothing outside that directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How to install the programs, for error messages.
pub const INSTALL_HINT: &str = "apt-get install nginx-light curl (any nginx package will do)";

/// Finds `name` on `PATH` or in the sbin directories (nginx lives in
/// /usr/sbin, which a non-root `PATH` often lacks).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// nginx and curl, both found.
#[derive(Debug, Clone)]
pub struct Tools {
    /// The nginx binary.
    pub nginx: PathBuf,
    /// The curl binary.
    pub curl: PathBuf,
}

impl Tools {
    /// Both programs, or an error naming the missing ones and how to
    /// install them.
    pub fn find() -> Result<Tools> {
        match (find_tool("nginx"), find_tool("curl")) {
            (Some(nginx), Some(curl)) => Ok(Tools { nginx, curl }),
            (nginx, curl) => {
                let missing: Vec<&str> = [("nginx", nginx.is_none()), ("curl", curl.is_none())]
                    .into_iter()
                    .filter(|(_, m)| *m)
                    .map(|(n, _)| n)
                    .collect();
                bail!(
                    "{} not found on PATH or in /usr/sbin; install with: {INSTALL_HINT}",
                    missing.join(" and ")
                )
            }
        }
    }
}

/// An nginx child process serving one directory; killed when dropped.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Starts `nginx` in the foreground serving `www` on a free port of
    /// 127.0.0.1, with its config, logs and temp files in `dir`, and waits
    /// until the port accepts connections. `.html` files are served as
    /// `text/html`, `.json` as `application/json`, everything else as
    /// `application/octet-stream`.
    pub async fn start(nginx: &Path, dir: &Path, www: &Path) -> Result<Nginx> {
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        // nginx before 1.19.5 has no -e; then it warns about its compiled-in
        // log and goes on.
        let mut dash_e = true;
        // Another process may take the port between our probe and nginx's
        // bind: try a few ports.
        for attempt in 0..5 {
            let addr = free_port()?;
            let conf_path = dir.join("nginx.conf");
            std::fs::write(&conf_path, config(dir, &tmp, www, addr))
                .with_context(|| format!("writing {}", conf_path.display()))?;
            let _ = std::fs::remove_file(dir.join("error.log"));
            let stderr = std::fs::File::create(dir.join("stderr.log"))?;
            // -p: prefix for relative paths; -e: the log used before the
            // config is read (else nginx tries /var/log/nginx/error.log).
            let mut cmd = Command::new(nginx);
            cmd.arg("-p").arg(dir);
            if dash_e {
                cmd.arg("-e").arg(dir.join("error.log"));
            }
            let child = cmd
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .with_context(|| format!("starting {}", nginx.display()))?;
            let mut n = Nginx {
                child,
                addr,
                dir: dir.to_path_buf(),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = n.child.try_wait()? {
                    let logs = n.logs();
                    if attempt < 4 && logs.contains("Address already in use") {
                        break;
                    }
                    if attempt < 4 && dash_e && logs.contains("invalid option") {
                        dash_e = false;
                        break;
                    }
                    bail!("nginx exited with {status} before serving\n{logs}");
                }
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return Ok(n);
                }
                if Instant::now() >= deadline {
                    bail!(
                        "nginx did not accept connections on {addr} within 10 s\n{}",
                        n.logs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        bail!("nginx found no free port in 5 attempts")
    }

    /// nginx's error log and its stderr, for failure messages.
    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "error.log:\n{}\nstderr:\n{}",
            read("error.log"),
            read("stderr.log")
        )
    }
}

fn config(dir: &Path, tmp: &Path, www: &Path, addr: SocketAddr) -> String {
    let (d, t, w) = (dir.display(), tmp.display(), www.display());
    format!(
        "daemon off;\n\
         master_process off;\n\
         error_log {d}/error.log;\n\
         pid {d}/nginx.pid;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 client_body_temp_path {t}/body;\n\
         \x20 proxy_temp_path {t}/proxy;\n\
         \x20 fastcgi_temp_path {t}/fastcgi;\n\
         \x20 uwsgi_temp_path {t}/uwsgi;\n\
         \x20 scgi_temp_path {t}/scgi;\n\
         \x20 types {{ text/html html; application/json json; }}\n\
         \x20 default_type application/octet-stream;\n\
         \x20 server {{\n\
         \x20   listen {addr};\n\
         \x20   root {w};\n\
         \x20 }}\n\
         }}\n"
    )
}

/// A free port on 127.0.0.1 (bound, read and released; nginx binds it next).
fn free_port() -> Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("probing for a free port")?;
    Ok(l.local_addr()?)
}

/// One HTTP GET done by curl.
#[derive(Debug)]
pub struct Fetched {
    /// The response body.
    pub body: Vec<u8>,
    /// HTTP status code.
    pub status: u16,
    /// Bytes of the request curl sent plus the response headers it read
    /// (`%{size_request}` + `%{size_header}`): the HTTP overhead around the
    /// body.
    pub overhead: u64,
}

/// Fetches `url` with `curl` (one process, one connection, HTTP/1.1), off
/// the async threads; fails on curl errors, never on HTTP status (see
/// [`Fetched::status`]).
pub async fn curl_get(curl: &Path, url: &str, max_time: Duration) -> Result<Fetched> {
    let (curl, url) = (curl.to_path_buf(), url.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&curl)
            .args(["-sS", "--http1.1", "--max-time"])
            .arg(format!("{:.3}", max_time.as_secs_f64().max(0.001)))
            // The body goes to stdout, the numbers to stderr after it.
            .args([
                "-w",
                "%{stderr}\nllmpack %{http_code} %{size_request} %{size_header}",
            ])
            .arg(&url)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", curl.display()))
    })
    .await
    .context("curl task")??;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("curl {}: {}", out.status, err.trim());
    }
    let nums: Vec<u64> = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("llmpack "))
        .context("curl printed no transfer numbers")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("curl's transfer numbers")?;
    let [status, request, header] = nums[..] else {
        bail!("curl printed {} transfer numbers, expected 3", nums.len());
    };
    Ok(Fetched {
        body: out.stdout,
        status: u16::try_from(status).unwrap_or(0),
        overhead: request + header,
    })
}
