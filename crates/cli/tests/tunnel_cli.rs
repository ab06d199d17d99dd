//! `llmpack keygen`, `check-config`, `receiver` as a process: keys are made,
//! example and broken configs are checked with errors naming the field, and
//! the receiver stops cleanly on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llmpack"))
}

fn scratch(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("llmpack-tcli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn keygen_makes_a_pair_and_refuses_to_overwrite() {
    let d = scratch("keygen");
    let out = bin().args(["keygen", "--out"]).arg(&d).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["sender.crt", "sender.key", "receiver.crt", "receiver.key"] {
        assert!(d.join(f).exists(), "{f}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("sender.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "private key readable by others: {mode:o}");
    }
    let again = bin().args(["keygen", "--out"]).arg(&d).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
}

#[test]
fn example_configs_check_and_broken_ones_name_the_field() {
    // The examples name keys under `keys/` beside them, made by `keygen`. A
    // copy of each example beside no keys names the missing file; beside a
    // fresh pair it checks.
    let d = scratch("badcfg");
    for f in ["sender.example.toml", "receiver.example.toml"] {
        std::fs::copy(repo().join("config").join(f), d.join(f)).unwrap();
        let out = bin().arg("check-config").arg(d.join(f)).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{f} accepted without its keys");
        assert!(
            err.contains("keys/"),
            "{f}: error does not name the key file: {err}"
        );
    }
    let out = bin()
        .args(["keygen", "--out"])
        .arg(d.join("keys"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in ["sender.example.toml", "receiver.example.toml"] {
        let out = bin().arg("check-config").arg(d.join(f)).output().unwrap();
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    }
    let cases = [
        (
            "role = \"sender\"\n[link]\nconnect = \"x:1\"\npeer_certificate = \"r.crt\"\ncertificate = \"a\"\nkey = \"b\"\n[[tunnel]]\nname = \"w\"\nlisten = \"127.0.0.1:1\"\ntarget = \"127.0.0.1:2\"\n",
            "tunnel[0].target",
        ),
        (
            "role = \"sender\"\n[link]\nconnect = \"x:1\"\npeer_certificate = \"r.crt\"\ncertificate = \"a\"\nkey = \"b\"\nspeed = 3\n[[tunnel]]\nname = \"w\"\nlisten = \"127.0.0.1:1\"\n",
            "speed",
        ),
        (
            "role = \"receiver\"\n[link]\nlisten = \"nowhere\"\ncertificate = \"a\"\nkey = \"b\"\npeer_certificate = \"c\"\n[[tunnel]]\nname = \"w\"\ntarget = \"127.0.0.1:2\"\n",
            "link.listen",
        ),
    ];
    for (i, (text, field)) in cases.iter().enumerate() {
        let p = d.join(format!("bad{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let out = bin().arg("check-config").arg(&p).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} accepted");
        assert!(
            err.contains(field),
            "case {i}: error does not name {field}: {err}"
        );
        assert!(!err.contains("panicked"));
    }
    let out = bin()
        .args(["check-config", "/nonexistent/llmpack.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/llmpack.toml"));
}

#[cfg(unix)]
#[test]
fn receiver_stops_cleanly_on_sigterm() {
    let d = scratch("sigterm");
    let out = bin().args(["keygen", "--out"]).arg(&d).output().unwrap();
    assert!(out.status.success());
    let cfg = d.join("receiver.toml");
    std::fs::write(
        &cfg,
        "role = \"receiver\"\n[link]\nlisten = \"127.0.0.1:0\"\ncertificate = \"receiver.crt\"\nkey = \"receiver.key\"\npeer_certificate = \"sender.crt\"\n[[tunnel]]\nname = \"w\"\ntarget = \"127.0.0.1:9\"\ncodec = \"zstd\"\n",
    )
    .unwrap();
    let mut child = bin()
        .args(["receiver", "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(child.try_wait().unwrap().is_none(), "receiver exited early");
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "receiver ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "exit {status:?}: {err}");
    assert!(err.contains("shutting down"), "{err}");
}
