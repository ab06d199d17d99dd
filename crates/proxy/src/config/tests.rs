use std::path::{Path, PathBuf};
use std::time::Duration;

use llmpack_codec::{LmParams, Policy};

use super::*;

/// A config file path for tests that read no files.
const FAKE: &str = "/etc/llmpack/test.toml";

fn sender(extra: &str) -> String {
    format!(
        r#"
role = "sender"
[link]
connect = "127.0.0.1:4433"
certificate = "keys/sender.crt"
key = "keys/sender.key"
peer_certificate = "keys/receiver.crt"
{extra}
[[tunnel]]
name = "web"
listen = "127.0.0.1:8080"
"#
    )
}

fn receiver_tunnel(tunnel: &str) -> String {
    format!(
        r#"
role = "receiver"
[link]
listen = "0.0.0.0:4433"
certificate = "keys/receiver.crt"
key = "keys/receiver.key"
peer_certificate = "keys/sender.crt"
[[tunnel]]
{tunnel}
"#
    )
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new(FAKE))
}

/// The field a validation error names; panics on success or another error.
#[track_caller]
fn field_err(text: &str) -> (String, String) {
    match load(text) {
        Err(ConfigError::Field { field, message }) => (field, message),
        other => panic!("expected a field error, got {other:?}"),
    }
}

/// All `*.toml` files under `dir`, recursively.
fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read config dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_file_in_config_dir_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut files = Vec::new();
    toml_files(&dir, &mut files);
    assert!(
        files.len() >= 2,
        "expected at least 2 configs under {}, found {files:?}",
        dir.display()
    );
    for file in &files {
        let config = Config::load(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!config.describe().is_empty());
    }
}

#[test]
fn example_pair_matches() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let s = Config::load(dir.join("sender.example.toml")).unwrap();
    let r = Config::load(dir.join("receiver.example.toml")).unwrap();
    assert_eq!(s.role, Role::Sender);
    assert_eq!(r.role, Role::Receiver);
    // The sender dials where the receiver listens.
    assert_eq!(
        s.link.connect.as_deref(),
        Some(r.link.listen.unwrap().to_string().as_str())
    );
    assert_eq!(s.link.server_name, DEFAULT_SERVER_NAME);
    // Each pins the other's certificate.
    assert_eq!(
        s.link.peer_certificate.as_ref(),
        Some(&r.link.identity.as_ref().unwrap().certificate)
    );
    assert_eq!(
        r.link.peer_certificate.as_ref(),
        Some(&s.link.identity.as_ref().unwrap().certificate)
    );
    assert_ne!(s.metrics, r.metrics);
    let names = |c: &Config| c.tunnels.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&s), ["web", "echo"]);
    assert_eq!(names(&r), names(&s));
    for t in &s.tunnels {
        let peer = r.tunnel(&t.name).unwrap();
        assert_eq!(t.primer_digest(), peer.primer_digest(), "{}", t.name);
        assert_eq!(
            (t.window, t.keep, t.lanes),
            (peer.window, peer.keep, peer.lanes)
        );
        assert_eq!(t.lanes, 4, "the default");
    }
    assert_eq!(
        s.tunnel("web").unwrap().listen,
        Some("127.0.0.1:8080".parse().unwrap())
    );
    assert_eq!(
        r.tunnel("web").unwrap().target.as_deref(),
        Some("127.0.0.1:8081")
    );
    assert_eq!(
        r.tunnel("echo").unwrap().target.as_deref(),
        Some("127.0.0.1:7071")
    );
    assert!(
        s.tunnel("web")
            .unwrap()
            .primer
            .starts_with(b"GET / HTTP/1.1\r\n")
    );
}

#[test]
fn defaults() {
    let c = load(&sender("")).unwrap();
    assert_eq!(c.link.bind, "0.0.0.0:0".parse().unwrap());
    assert_eq!(c.link.server_name, "llmpack");
    assert_eq!(c.link.reconnect_min, Duration::from_millis(500));
    assert_eq!(c.link.reconnect_max, Duration::from_secs(30));
    assert!(c.link.token.is_none());
    assert_eq!(c.model.dir, None);
    assert!((1..=8).contains(&c.model.threads));
    assert_eq!(c.model.max_delay, Duration::from_secs(2));
    assert_eq!(c.model.max_batch, 64);
    assert_eq!(c.metrics, None);
    assert_eq!(
        c.limits,
        Limits {
            max_connections: 256,
            buffer: 1 << 20,
            frame: 16 << 10,
            flush_idle: Duration::ZERO,
            flush_max: Duration::ZERO,
        }
    );
    let t = &c.tunnels[0];
    assert_eq!(t.policy, Policy::Auto);
    assert!(t.primer.is_empty());
    assert_eq!(t.context_rule(LmParams::default()), LmParams::default());
}

#[test]
fn idle_timeout_parses_and_is_bounded() {
    let c = load(&sender("idle_timeout = \"2s\"")).unwrap();
    assert_eq!(c.link.idle_timeout, Duration::from_secs(2));
    let c = load(&sender("")).unwrap();
    assert_eq!(c.link.idle_timeout, Duration::from_secs(10));
    assert_eq!(
        field_err(&sender("idle_timeout = \"100ms\"")).0,
        "link.idle_timeout"
    );
    assert_eq!(
        field_err(&sender("idle_timeout = \"1h\"")).0,
        "link.idle_timeout"
    );
}

#[test]
fn values_parse() {
    let c = load(&sender(
        r#"
bind = "[::]:0"
reconnect_min = "1s"
reconnect_max = "2min"
[model]
threads = 3
max_delay = "250ms"
max_batch = 8
[metrics]
listen = "127.0.0.1:9464"
[limits]
max_connections = 10
buffer = 65536
frame = "4KiB"
flush_idle = "1ms"
flush_max = "1ms"
"#,
    ))
    .unwrap();
    assert_eq!(c.link.bind, "[::]:0".parse().unwrap());
    assert_eq!(c.link.reconnect_max, Duration::from_secs(120));
    assert_eq!(c.model.threads, 3);
    assert_eq!(c.model.max_delay, Duration::from_millis(250));
    assert_eq!(c.metrics, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(c.limits.buffer, 65536);
    assert_eq!(c.limits.frame, 4096);
    assert_eq!(c.limits.max_connections, 10);
}

#[test]
fn unknown_field_is_a_parse_error_naming_it() {
    let err = load(&sender("bogus = 1")).unwrap_err();
    let ConfigError::Parse { path, message } = &err else {
        panic!("expected a parse error, got {err:?}");
    };
    assert_eq!(path, Path::new(FAKE));
    assert!(message.contains("bogus"), "{message}");
    assert!(message.contains("line"), "{message}");
    let err = load(&receiver_tunnel(
        "name = \"a\"\ntarget = \"h:1\"\nforward = \"x:1\"",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("forward"), "{err}");
}

#[test]
fn role_required_and_checked() {
    assert_eq!(field_err("[link]").0, "role");
    assert_eq!(field_err("role = \"client\"").0, "role");
}

#[test]
fn sender_needs_connect() {
    let text = sender("").replace("connect = \"127.0.0.1:4433\"", "");
    assert_eq!(field_err(&text).0, "link.connect");
}

#[test]
fn fields_of_the_other_role_are_refused() {
    let text = sender("").replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\ntarget = \"127.0.0.1:80\"",
    );
    let (field, message) = field_err(&text);
    assert_eq!(field, "tunnel[0].target");
    assert!(
        message.starts_with("only a receiver dials targets"),
        "{message}"
    );
    assert_eq!(
        field_err(&sender("listen = \"0.0.0.0:4433\"")).0,
        "link.listen"
    );

    let text = receiver_tunnel("name = \"a\"\ntarget = \"h:1\"\nlisten = \"127.0.0.1:1\"");
    assert_eq!(field_err(&text).0, "tunnel[0].listen");
    let text = receiver_tunnel("name = \"a\"\ntarget = \"h:1\"")
        .replace("[link]", "[link]\nconnect = \"h:1\"");
    assert_eq!(field_err(&text).0, "link.connect");
    let text = receiver_tunnel("name = \"a\"");
    assert_eq!(field_err(&text).0, "tunnel[0].target");
}

#[test]
fn bad_addresses() {
    let (field, message) = field_err(&receiver_tunnel("name = \"a\"\ntarget = \"example\""));
    assert_eq!(field, "tunnel[0].target");
    assert!(
        message.starts_with("not a host:port (\"example\")"),
        "{message}"
    );
    let err = load(&receiver_tunnel("name = \"a\"\ntarget = \"example\"")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("tunnel[0].target: not a host:port (\"example\")"),
        "{err}"
    );
    for bad in [
        "h:0", "h:65536", ":80", "h:", "::1:80", "[::1:80", "a b:80", "h:http",
    ] {
        let text = receiver_tunnel(&format!("name = \"a\"\ntarget = {bad:?}"));
        assert_eq!(field_err(&text).0, "tunnel[0].target", "{bad}");
    }
    for good in ["example.com:80", "10.0.0.1:65535", "[::1]:443", "my_host:7"] {
        let c = load(&receiver_tunnel(&format!(
            "name = \"a\"\ntarget = {good:?}"
        )))
        .unwrap();
        assert_eq!(c.tunnels[0].target.as_deref(), Some(good));
    }
    let text = sender("").replace("127.0.0.1:8080", "localhost:8080");
    assert_eq!(field_err(&text).0, "tunnel[0].listen");
    assert_eq!(field_err(&sender("bind = \"0.0.0.0\"")).0, "link.bind");
    let text = sender("").replace("127.0.0.1:4433", "4433");
    assert_eq!(field_err(&text).0, "link.connect");
    assert_eq!(
        field_err(&sender("[metrics]\nlisten = \"nowhere\"")).0,
        "metrics.listen"
    );
}

#[test]
fn tunnels_need_unique_names_and_listens() {
    let dup = sender("") + "[[tunnel]]\nname = \"web\"\nlisten = \"127.0.0.1:8081\"\n";
    let (field, message) = field_err(&dup);
    assert_eq!(field, "tunnel[1].name");
    assert!(message.contains("\"web\""), "{message}");
    let dup = sender("") + "[[tunnel]]\nname = \"b\"\nlisten = \"127.0.0.1:8080\"\n";
    assert_eq!(field_err(&dup).0, "tunnel[1].listen");
    let clash = sender("[metrics]\nlisten = \"127.0.0.1:8080\"");
    assert_eq!(field_err(&clash).0, "tunnel[0].listen");
    // Port 0 takes a fresh port each time, so it may repeat.
    let text = sender("").replace("127.0.0.1:8080", "127.0.0.1:0")
        + "[[tunnel]]\nname = \"b\"\nlisten = \"127.0.0.1:0\"\n";
    assert_eq!(load(&text).unwrap().tunnels.len(), 2);
    for bad in ["", "a b", "a/b", &"x".repeat(65)] {
        let text = sender("").replace("name = \"web\"", &format!("name = {bad:?}"));
        assert_eq!(field_err(&text).0, "tunnel[0].name", "{bad:?}");
    }
    let none = sender("").replace(
        "[[tunnel]]\nname = \"web\"\nlisten = \"127.0.0.1:8080\"",
        "",
    );
    assert_eq!(field_err(&none).0, "tunnel");
}

#[test]
fn limits_are_checked() {
    let (field, message) = field_err(&sender("[limits]\nframe = \"2MiB\""));
    assert_eq!(field, "limits.frame");
    assert!(message.contains("out of range"), "{message}");
    assert_eq!(field_err(&sender("[limits]\nframe = 0")).0, "limits.frame");
    assert!(load(&sender("[limits]\nframe = \"1MiB\"")).is_ok());
    let (field, message) = field_err(&sender("[limits]\nbuffer = \"8KiB\"\nframe = \"16KiB\""));
    assert_eq!(field, "limits.buffer");
    assert!(message.contains("limits.frame"), "{message}");
    assert_eq!(
        field_err(&sender("[limits]\nbuffer = \"lots\"")).0,
        "limits.buffer"
    );
    assert_eq!(
        field_err(&sender("[limits]\nmax_connections = 0")).0,
        "limits.max_connections"
    );
    assert_eq!(
        field_err(&sender(
            "[limits]\nflush_idle = \"10ms\"\nflush_max = \"5ms\""
        ))
        .0,
        "limits.flush_max"
    );
    let c = load(&sender("[limits]\nflush_idle = \"5ms\"")).unwrap();
    assert_eq!(
        (c.limits.flush_idle, c.limits.flush_max),
        (Duration::from_millis(5), Duration::from_millis(50)),
        "flush_idle alone bounds the wait at ten times it"
    );
    let c = load(&sender("[limits]\nflush_idle = \"0ms\"")).unwrap();
    assert!(c.limits.flush_idle.is_zero() && c.limits.flush_max.is_zero());
    assert_eq!(
        field_err(&sender("[limits]\nflush_max = \"soon\"")).0,
        "limits.flush_max"
    );
    assert_eq!(
        field_err(&sender("[model]\nthreads = 0")).0,
        "model.threads"
    );
    assert_eq!(
        field_err(&sender("[model]\nthreads = 257")).0,
        "model.threads"
    );
    assert_eq!(
        field_err(&sender("[model]\nmax_batch = 1025")).0,
        "model.max_batch"
    );
    assert_eq!(
        field_err(&sender("[model]\nmax_delay = \"0s\"")).0,
        "model.max_delay"
    );
    assert_eq!(
        field_err(&sender("reconnect_min = \"5s\"\nreconnect_max = \"1s\"")).0,
        "link.reconnect_max"
    );
}

#[test]
fn codec_and_context_rule() {
    let with = |extra: &str| {
        sender("").replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:8080\"\n{extra}"),
        )
    };
    let (field, message) = field_err(&with("codec = \"brotli\""));
    assert_eq!(field, "tunnel[0].codec");
    assert!(message.contains("\"brotli\""), "{message}");
    let c = load(&with("codec = \"zstd\"\nwindow = 512\nkeep = 64")).unwrap();
    let t = &c.tunnels[0];
    assert_eq!(t.policy, Policy::Zstd);
    assert_eq!((t.window, t.keep), (Some(512), Some(64)));
    assert_eq!(
        t.context_rule(LmParams::default()),
        LmParams {
            window: 512,
            keep: 64
        }
    );
    assert_eq!(
        field_err(&with("window = 100\nkeep = 90")).0,
        "tunnel[0].window"
    );
    assert!(load(&with("window = 106\nkeep = 90")).is_ok());
    // An unset one takes the default (window 1024, keep 256).
    assert_eq!(field_err(&with("window = 200")).0, "tunnel[0].window");
    assert_eq!(field_err(&with("keep = 2000")).0, "tunnel[0].keep");
    assert_eq!(load(&with("lanes = 16")).unwrap().tunnels[0].lanes, 16);
    assert_eq!(load(&with("lanes = 1")).unwrap().tunnels[0].lanes, 1);
    assert_eq!(field_err(&with("lanes = 0")).0, "tunnel[0].lanes");
    assert_eq!(field_err(&with("lanes = 17")).0, "tunnel[0].lanes");
    assert_eq!(
        field_err(&with("primer = \"a\"\nprimer_file = \"p\"")).0,
        "tunnel[0].primer_file"
    );
}

#[test]
fn authentication_rules() {
    let token = "token = \"0123456789abcdef\"";
    let no_identity = |text: String| {
        text.replace("certificate = \"keys/sender.crt\"\n", "")
            .replace("key = \"keys/sender.key\"\n", "")
    };
    // A sender without certificate needs a token.
    assert_eq!(field_err(&no_identity(sender(""))).0, "link.certificate");
    let c = load(&no_identity(sender(token))).unwrap();
    assert!(c.link.identity.is_none());
    assert_eq!(c.link.token.as_ref().unwrap().expose(), b"0123456789abcdef");
    // ... but always pins the receiver.
    let text = sender(token).replace("peer_certificate = \"keys/receiver.crt\"\n", "");
    assert_eq!(field_err(&text).0, "link.peer_certificate");
    // A certificate needs its key and the other way round.
    let text = sender("").replace("key = \"keys/sender.key\"\n", "");
    assert_eq!(field_err(&text).0, "link.key");
    let text = sender("").replace("certificate = \"keys/sender.crt\"\n", "");
    assert_eq!(field_err(&text).0, "link.certificate");
    // Short token.
    let (field, message) = field_err(&sender("token = \"short\""));
    assert_eq!(field, "link.token");
    assert!(message.contains("16"), "{message}");
    assert_eq!(
        field_err(&sender("token = \"0123456789abcdef\"\ntoken_file = \"t\"")).0,
        "link.token_file"
    );

    let recv = receiver_tunnel("name = \"a\"\ntarget = \"h:1\"");
    // A receiver always needs its certificate.
    let text = recv
        .replace("certificate = \"keys/receiver.crt\"\n", "")
        .replace("key = \"keys/receiver.key\"\n", "")
        .replace("[link]", &format!("[link]\n{token}"));
    assert_eq!(field_err(&text).0, "link.certificate");
    // It pins the sender unless a token is given.
    let unpinned = recv.replace("peer_certificate = \"keys/sender.crt\"\n", "");
    assert_eq!(field_err(&unpinned).0, "link.peer_certificate");
    let c = load(&unpinned.replace("[link]", &format!("[link]\n{token}"))).unwrap();
    assert!(c.link.peer_certificate.is_none());
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("llmpack-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("site/keys")).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn relative_paths_resolve_against_the_config_dir() {
    let tmp = TempDir::new("paths");
    let site = tmp.0.join("site");
    std::fs::write(site.join("keys/token"), "0123456789abcdef0123\r\n").unwrap();
    std::fs::write(site.join("web.txt"), "GET / HTTP/1.1\r\n").unwrap();
    let text = sender(
        r#"token_file = "keys/token"
[model]
dir = "../models/default"
ort_lib = "/opt/ort/libonnxruntime.so"
"#,
    )
    .replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nprimer_file = \"web.txt\"",
    );
    let path = site.join("sender.toml");
    std::fs::write(&path, text).unwrap();
    let c = Config::load(&path).unwrap();
    let id = c.link.identity.as_ref().unwrap();
    assert_eq!(id.certificate, site.join("keys/sender.crt"));
    assert_eq!(id.key, site.join("keys/sender.key"));
    assert_eq!(
        c.link.peer_certificate.as_deref(),
        Some(site.join("keys/receiver.crt").as_path())
    );
    assert_eq!(c.model.dir, Some(site.join("../models/default")));
    assert_eq!(
        c.model.ort_lib.as_deref(),
        Some(Path::new("/opt/ort/libonnxruntime.so"))
    );
    // Trailing newline trimmed.
    assert_eq!(
        c.link.token.as_ref().unwrap().expose(),
        b"0123456789abcdef0123"
    );
    assert_eq!(c.tunnels[0].primer, b"GET / HTTP/1.1\r\n");
    let summary = c.describe();
    assert!(summary.contains("token (20 bytes)"), "{summary}");
    assert!(!summary.contains("0123456789"), "{summary}");

    // A file name without a directory resolves against ".".
    assert_eq!(base_dir(Path::new("sender.toml")), Path::new("."));
}

#[test]
fn unreadable_files_name_field_and_path() {
    let tmp = TempDir::new("missing");
    let path = tmp.0.join("site/sender.toml");
    std::fs::write(&path, sender("token_file = \"keys/nope\"")).unwrap();
    let (field, message) = match Config::load(&path) {
        Err(ConfigError::Field { field, message }) => (field, message),
        other => panic!("{other:?}"),
    };
    assert_eq!(field, "link.token_file");
    assert!(message.contains("keys/nope"), "{message}");

    let text = sender("").replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\nprimer_file = \"primers/web.txt\"",
    );
    std::fs::write(&path, text).unwrap();
    let err = Config::load(&path).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("tunnel[0].primer_file: cannot read")
            && err.to_string().contains("primers/web.txt"),
        "{err}"
    );

    let err = Config::load(tmp.0.join("absent.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.toml"), "{err}");
}

#[test]
fn secrets_stay_hidden() {
    let secret = Secret::new("hunter2hunter2hunter2");
    assert_eq!(format!("{secret:?}"), "***");
    let c = load(&sender("token = \"hunter2hunter2hunter2\"")).unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("***"), "{debug}");
    let raw: RawConfig = toml::from_str("[link]\ntoken = \"hunter2hunter2hunter2\"").unwrap();
    assert!(!format!("{raw:?}").contains("hunter2"));
}

#[test]
fn describe_summarises() {
    let c = load(&sender("[metrics]\nlisten = \"127.0.0.1:9464\"")).unwrap();
    let d = c.describe();
    for want in [
        "role: sender",
        "connect to 127.0.0.1:4433",
        "built-in default",
        "buffer 1MiB, frame 16KiB",
        "tunnel web: 127.0.0.1:8080 -> receiver, codec auto, no primer",
        "127.0.0.1:9464",
    ] {
        assert!(d.contains(want), "missing {want:?} in\n{d}");
    }
    let c = load(&receiver_tunnel(
        "name = \"a\"\ntarget = \"db.internal:5432\"\ncodec = \"raw\"",
    ))
    .unwrap();
    let d = c.describe();
    assert!(d.contains("accept on 0.0.0.0:4433"), "{d}");
    assert!(
        d.contains("tunnel a: sender -> db.internal:5432, codec raw"),
        "{d}"
    );
    assert!(d.contains("metrics: off"), "{d}");
}

#[test]
fn link_mode_congestion_and_fec() {
    let c = load(&sender("")).unwrap();
    assert_eq!(c.link.mode, LinkMode::Stream);
    assert_eq!(c.link.congestion, llmpack_transport::Congestion::Cubic);
    let c = load(&sender("mode = \"datagram-fec\"")).unwrap();
    assert_eq!(c.link.mode, LinkMode::DatagramFec);
    assert_eq!(
        c.link.congestion,
        llmpack_transport::Congestion::Bbr,
        "datagram-fec defaults to BBR"
    );
    let c = load(&sender("mode = \"datagram-fec\"\ncongestion = \"cubic\"")).unwrap();
    assert_eq!(c.link.congestion, llmpack_transport::Congestion::Cubic);
    let c = load(&sender(
        "mode = \"datagram-fec\"\n[link.fec]\nrepair_ratio = 0.2\nblock_bytes = \"32KiB\"\nblock_delay = \"5ms\"\nmax_topups = 2\nack_timeout = \"3s\"\ntopup_after = \"40ms\"",
    ))
    .unwrap();
    let f = &c.link.fec;
    assert!((f.encoder.repair_ratio - 0.2).abs() < 1e-12);
    assert_eq!(f.encoder.block_bytes, 32 << 10);
    assert_eq!(f.encoder.block_delay, Duration::from_millis(5));
    assert_eq!(f.encoder.max_topups, 2);
    assert_eq!(f.encoder.ack_timeout, Duration::from_secs(3));
    assert_eq!(f.decoder.topup_after, Duration::from_millis(40));
    assert!(!f.decoder.ordered, "the tunnel reorders per connection");

    let (field, msg) = field_err(&sender("mode = \"udp\""));
    assert_eq!(field, "link.mode");
    assert!(msg.contains("datagram-fec"), "{msg}");
    assert_eq!(
        field_err(&sender("congestion = \"reno\"")).0,
        "link.congestion"
    );
    assert_eq!(
        field_err(&sender("[link.fec]\nmax_ratio = 5.0")).0,
        "link.fec.max_ratio"
    );
    assert_eq!(
        field_err(&sender("[link.fec]\nmin_ratio = 0.5\nmax_ratio = 0.1")).0,
        "link.fec.max_ratio"
    );
    assert_eq!(
        field_err(&sender("[link.fec]\nblock_bytes = 10")).0,
        "link.fec.block_bytes"
    );
    assert_eq!(
        field_err(&sender("[link.fec]\nack_timeout = \"0s\"")).0,
        "link.fec.ack_timeout"
    );
    assert_eq!(
        field_err(&sender("[link.fec]\nmax_topups = 1000")).0,
        "link.fec.max_topups"
    );
    assert!(matches!(
        load(&sender("[link.fec]\nrepairs = 1")),
        Err(ConfigError::Parse { .. })
    ));
}

#[test]
fn model_device_and_its_batch() {
    use llmpack_model::{Backend, Device};
    let c = load(&sender("")).unwrap();
    assert_eq!(c.model.device, Device::Cpu);
    assert_eq!(c.model.max_batch_on(Backend::Cpu), 64);
    assert_eq!(c.model.max_batch_on(Backend::Cuda), 512);
    assert!(c.describe().contains("device cpu,"), "{}", c.describe());
    for (name, device) in [
        ("cpu", Device::Cpu),
        ("cuda", Device::Cuda),
        ("auto", Device::Auto),
    ] {
        let c = load(&sender(&format!("[model]\ndevice = \"{name}\""))).unwrap();
        assert_eq!(c.model.device, device);
        assert!(c.describe().contains(&format!("device {name},")));
    }
    let c = load(&sender("[model]\ndevice = \"auto\"")).unwrap();
    assert!(
        c.describe()
            .contains("max batch 512 on a GPU, 64 on the CPU"),
        "{}",
        c.describe()
    );
    // An explicit max_batch holds on either device.
    let c = load(&sender("[model]\ndevice = \"cuda\"\nmax_batch = 8")).unwrap();
    assert_eq!(c.model.max_batch_on(Backend::Cuda), 8);
    assert_eq!(c.model.max_batch_on(Backend::Cpu), 8);
    for bad in ["gpu", "CUDA", ""] {
        let (field, message) = field_err(&sender(&format!("[model]\ndevice = \"{bad}\"")));
        assert_eq!(field, "model.device");
        assert!(
            message.contains(&format!("not {bad:?}")) && message.contains("\"auto\""),
            "{message}"
        );
    }
}
