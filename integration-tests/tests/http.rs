//! Real HTTP through the real tunnel: nginx serves real files, curl fetches
//! them through the sender's tunnels (`zstd` and `raw`), and every download
//! is compared byte for byte (SHA-256) with the file on disk.
//!
//! nginx and curl must be installed (`apt-get install nginx-light curl`;
//! any nginx package will do);
//! `LLMPACK_SKIP_NGINX=1` skips these tests instead of failing them.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use llmpack_bench::http::{Nginx, Tools, find_tool};

/// The tunnels every test goes through, by name and codec.
const TUNNELS: [(&str, &str); 2] = [("z", "zstd"), ("r", "raw")];

/// The tools, or `None` when they are missing and `LLMPACK_SKIP_NGINX=1`
/// says to skip. Missing tools otherwise fail the test.
fn tools(test: &str) -> Option<Tools> {
    let nginx = find_tool("nginx");
    let curl = find_tool("curl");
    if let (Some(nginx), Some(curl)) = (&nginx, &curl) {
        return Some(Tools {
            nginx: nginx.clone(),
            curl: curl.clone(),
        });
    }
    let missing: Vec<&str> = [("nginx", &nginx), ("curl", &curl)]
        .into_iter()
        .filter(|(_, p)| p.is_none())
        .map(|(n, _)| n)
        .collect();
    let missing = missing.join(" and ");
    if std::env::var("LLMPACK_SKIP_NGINX").is_ok_and(|v| v == "1") {
        // Straight to the stderr handle, not eprintln!: the test harness
        // captures the macros and would hide the notice of a passing test.
        let _ = writeln!(
            std::io::stderr(),
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPED {test}: {missing} not installed and\n\
             !!! LLMPACK_SKIP_NGINX=1 is set. Nothing was tested.\n\
             !!! Install them with: apt-get install nginx-light curl\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        );
        return None;
    }
    panic!(
        "{missing} not found (looked on PATH and in /usr/sbin, /usr/local/sbin, /sbin): \
         install them with `apt-get install nginx-light curl` (any nginx package will do), \
         or set LLMPACK_SKIP_NGINX=1 to skip the nginx tests"
    );
}

/// One file nginx serves: its name under the docroot and what it holds.
struct Served {
    name: String,
    sha: String,
    len: usize,
    content_type: &'static str,
}

/// What nginx's `types` block below makes of a file name.
fn content_type(name: &str) -> &'static str {
    if name.ends_with(".html") {
        "text/html"
    } else if name.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    }
}

/// Fills `www` with real files the project did not write (the evaluation
/// samples from `.cache/samples`, when `scripts/setup.sh` has fetched them,
/// and the system's licence texts), plus random bytes and an empty file.
fn docroot(www: &Path) -> Vec<Served> {
    std::fs::create_dir_all(www).unwrap();
    let mut sources: Vec<(String, PathBuf)> = Vec::new();
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/samples");
    if let Ok(rd) = std::fs::read_dir(&samples) {
        let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        v.sort();
        for p in v {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_file() && !name.starts_with('.') {
                sources.push((name, p));
            }
        }
    }
    for l in [
        "GPL-3",
        "Apache-2.0",
        "LGPL-2.1",
        "MPL-2.0",
        "Artistic",
        "BSD",
    ] {
        let p = Path::new("/usr/share/common-licenses").join(l);
        if p.is_file() {
            sources.push((format!("license-{l}"), p));
        }
    }
    assert!(
        !sources.is_empty(),
        "no real files to serve: neither {} (run scripts/setup.sh) nor \
         /usr/share/common-licenses (Debian's base-files) is there",
        samples.display()
    );
    let mut files: Vec<(String, Vec<u8>)> = sources
        .into_iter()
        .map(|(name, p)| {
            let data = std::fs::read(&p).unwrap();
            (name, data)
        })
        .collect();
    files.push(("random-3MiB.bin".into(), random(3 << 20, 7)));
    files.push(("random-12345.bin".into(), random(12_345, 8)));
    files.push(("empty.txt".into(), Vec::new()));
    files
        .into_iter()
        .map(|(name, data)| {
            std::fs::write(www.join(&name), &data).unwrap();
            Served {
                content_type: content_type(&name),
                sha: sha(&data),
                len: data.len(),
                name,
            }
        })
        .collect()
}

/// Runs curl with `args` off the async threads; returns its output.
async fn curl(curl: &Path, args: Vec<String>) -> Output {
    let curl = curl.to_path_buf();
    tokio::task::spawn_blocking(move || {
        Command::new(&curl)
            .args(["-sS", "--max-time", "120"])
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", curl.display()))
    })
    .await
    .unwrap()
}

/// The same nginx in front of a `zstd` and a `raw` tunnel.
struct Setup {
    tools: Tools,
    files: Vec<Served>,
    out: PathBuf,
    pair: Pair,
    nginx: Nginx,
}

/// Starts nginx on a fresh docroot and a tunnel pair in front of it, or
/// returns `None` when the tools are missing and the test is to be skipped.
async fn setup(test: &str) -> Option<Setup> {
    let tools = tools(test)?;
    let dir = scratch(test);
    keys(&dir);
    let www = dir.join("www");
    let files = docroot(&www);
    let nginx = Nginx::start(&tools.nginx, &dir, &www)
        .await
        .expect("starting nginx");
    let tunnels: Vec<T> = TUNNELS
        .iter()
        .map(|&(name, codec)| tunnel(name, codec, nginx.addr))
        .collect();
    let pair = pair(
        &dir,
        &tunnels,
        &Opts {
            limits: "max_connections = 512".into(),
            ..Opts::default()
        },
    )
    .await;
    assert!(
        link_up(&pair.sender, Duration::from_secs(10)).await,
        "the tunnel's link did not come up"
    );
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    Some(Setup {
        tools,
        files,
        out,
        pair,
        nginx,
    })
}

impl Setup {
    fn url(&self, tunnel: &str, name: &str) -> String {
        format!("http://{}/{name}", self.pair.addr(tunnel))
    }

    /// Checks that the download at `path` is `f`, byte for byte.
    fn check(&self, path: &Path, f: &Served, how: &str) {
        let got = std::fs::read(path)
            .unwrap_or_else(|e| panic!("{how}: reading {}: {e}", path.display()));
        assert_eq!(got.len(), f.len, "{how}: {} length", f.name);
        assert_eq!(sha(&got), f.sha, "{how}: {} SHA-256", f.name);
    }

    /// Panics with curl's and nginx's complaints unless curl succeeded.
    fn expect_success(&self, o: &Output, how: &str) {
        assert!(
            o.status.success(),
            "{how}: curl failed ({})\nstderr: {}\nnginx {}",
            o.status,
            String::from_utf8_lossy(&o.stderr),
            self.nginx.logs()
        );
    }

    async fn shutdown(self) {
        self.pair.shutdown().await;
        drop(self.nginx);
    }
}

/// Each file, one curl per file and tunnel: status 200, nginx's content
/// type, and the exact bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_through_zstd_and_raw_is_byte_exact() {
    let Some(s) = setup("http-files").await else {
        return;
    };
    for (t, codec) in TUNNELS {
        for f in &s.files {
            let out = s.out.join(format!("{t}-{}", f.name));
            let how = format!("tunnel {codec}, {}", f.name);
            let o = curl(
                &s.tools.curl,
                vec![
                    "--fail".into(),
                    "-o".into(),
                    out.display().to_string(),
                    "-w".into(),
                    "%{http_code} %{content_type}".into(),
                    s.url(t, &f.name),
                ],
            )
            .await;
            s.expect_success(&o, &how);
            assert_eq!(
                String::from_utf8_lossy(&o.stdout),
                format!("200 {}", f.content_type),
                "{how}: status and content type"
            );
            s.check(&out, f, &how);
        }
    }
    s.shutdown().await;
}

/// Many files in one curl over HTTP/1.1 keep-alive: one TCP connection
/// through the tunnel carries every request and response in turn. Then the
/// same files fetched in parallel, on many connections at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_parallel_fetches_are_byte_exact() {
    let Some(s) = setup("http-keepalive").await else {
        return;
    };
    for (t, codec) in TUNNELS {
        // Every file twice, so the connection is reused after large and
        // empty responses alike.
        let order: Vec<&Served> = s.files.iter().chain(s.files.iter().rev()).collect();
        let mut args: Vec<String> = vec![
            "--http1.1".into(),
            "-H".into(),
            "Connection: keep-alive".into(),
            "--fail".into(),
            "-w".into(),
            "%{http_code} %{num_connects}\\n".into(),
        ];
        for (i, f) in order.iter().enumerate() {
            args.push("-o".into());
            args.push(s.out.join(format!("ka-{t}-{i}")).display().to_string());
            args.push(s.url(t, &f.name));
        }
        let how = format!("tunnel {codec}, keep-alive");
        let o = curl(&s.tools.curl, args).await;
        s.expect_success(&o, &how);
        let report = String::from_utf8_lossy(&o.stdout).into_owned();
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), order.len(), "{how}: one line per transfer");
        let mut connects = 0u32;
        for (i, line) in lines.iter().enumerate() {
            let (code, n) = line.split_once(' ').unwrap();
            assert_eq!(code, "200", "{how}: transfer {i} ({})", order[i].name);
            connects += n.parse::<u32>().unwrap();
        }
        assert_eq!(
            connects,
            1,
            "{how}: curl opened {connects} connections for {} transfers (report:\n{report})",
            order.len()
        );
        for (i, f) in order.iter().enumerate() {
            s.check(&s.out.join(format!("ka-{t}-{i}")), f, &how);
        }

        // All files at once, each on its own connection.
        let mut args: Vec<String> = vec!["--parallel".into(), "--parallel-max".into(), "16".into()];
        args.push("--fail".into());
        for f in &s.files {
            args.push("-o".into());
            args.push(
                s.out
                    .join(format!("par-{t}-{}", f.name))
                    .display()
                    .to_string(),
            );
            args.push(s.url(t, &f.name));
        }
        let how = format!("tunnel {codec}, parallel");
        let o = curl(&s.tools.curl, args).await;
        s.expect_success(&o, &how);
        for f in &s.files {
            s.check(&s.out.join(format!("par-{t}-{}", f.name)), f, &how);
        }
    }
    s.shutdown().await;
}

/// A file that is not there: nginx's 404 comes back through the tunnel,
/// and curl's `--fail` turns it into exit status 22.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_file_is_a_404_through_the_tunnel() {
    let Some(s) = setup("http-404").await else {
        return;
    };
    for (t, codec) in TUNNELS {
        let how = format!("tunnel {codec}");
        let url = s.url(t, "no-such-file.txt");
        let o = curl(
            &s.tools.curl,
            vec![
                "-o".into(),
                "/dev/null".into(),
                "-w".into(),
                "%{http_code}".into(),
                url.clone(),
            ],
        )
        .await;
        s.expect_success(&o, &how);
        assert_eq!(String::from_utf8_lossy(&o.stdout), "404", "{how}: status");
        let o = curl(
            &s.tools.curl,
            vec!["--fail".into(), "-o".into(), "/dev/null".into(), url],
        )
        .await;
        assert_eq!(o.status.code(), Some(22), "{how}: curl --fail exit status");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("404"), "{how}: curl said {err:?}");
    }
    s.shutdown().await;
}
