//! The `llmpack` binary end to end: pack → unpack is byte-exact, and broken,
//! truncated or hostile pack files fail with a clear error, never a panic,
//! and leave no output behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use llmpack_frame::{ContainerHeader, FRAME_HEADER_LEN, FrameHeader, MAX_FRAME_LEN, ModelId};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_llmpack"))
}

mod common;
use common::TempDir;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("llmpack runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    out
}

fn pack(input: &Path, output: &Path, args: &[&str]) -> Output {
    run(bin()
        .arg("pack")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(args))
}

fn unpack(input: &Path, output: &Path, args: &[&str]) -> Output {
    run(bin()
        .arg("unpack")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(args))
}

use llmpack_codec::toy::random_bytes as pseudo_random;

fn text(n: usize) -> Vec<u8> {
    let para = "LLMPack carries TCP traffic between two sites over one QUIC link and shrinks it. \
                The receiver regenerates the exact bytes; a tunnel that changes one byte is broken.\n";
    para.bytes().cycle().take(n).collect()
}

fn model_args() -> Vec<String> {
    let dir = llmpack_model_dir();
    vec!["--model".into(), dir.display().to_string()]
}

fn llmpack_model_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("models/smollm2-135m"))
        .find(|p| p.join("manifest.toml").exists())
        .expect("models/smollm2-135m not found: run scripts/setup.sh first")
}

#[test]
fn model_free_codecs_round_trip_and_binary_costs_only_headers() {
    let dir = TempDir::new("cli-modelfree");
    let mut data = text(200_000);
    let random = pseudo_random(300_000, 1);
    data.extend_from_slice(&random);
    data.extend_from_slice(&text(50_000));
    let input = dir.path("in.bin");
    std::fs::write(&input, &data).unwrap();
    for codec in ["zstd", "raw"] {
        let packed = dir.path(&format!("{codec}.lmp"));
        let out = pack(
            &input,
            &packed,
            &["--codec", codec, "--lanes", "4", "--min-lane", "64KiB"],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let restored = dir.path(&format!("{codec}.out"));
        let out = unpack(&packed, &restored, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(std::fs::read(&restored).unwrap(), data, "{codec}");
        let size = std::fs::read(&packed).unwrap().len();
        let overhead =
            |len: usize| ContainerHeader::LEN + 32 + (len.div_ceil(16384) + 4) * FRAME_HEADER_LEN;
        if codec == "raw" {
            assert!(size <= data.len() + overhead(data.len()), "{size}");
        } else {
            assert!(
                size < random.len() + data.len() / 20,
                "text shrinks: {size}"
            );
        }
    }
    // Incompressible bytes cost their size plus frame headers, no more.
    let rand_in = dir.path("random.bin");
    std::fs::write(&rand_in, &random).unwrap();
    let packed = dir.path("random.lmp");
    assert!(
        pack(&rand_in, &packed, &["--codec", "zstd"])
            .status
            .success()
    );
    let size = std::fs::read(&packed).unwrap().len();
    let frames = random.len().div_ceil(16384) + 16;
    assert!(
        size <= random.len() + ContainerHeader::LEN + 32 + frames * FRAME_HEADER_LEN,
        "{size}"
    );
}

#[test]
fn empty_file_round_trips() {
    let dir = TempDir::new("cli-empty");
    let input = dir.path("empty");
    std::fs::write(&input, b"").unwrap();
    let packed = dir.path("empty.lmp");
    assert!(pack(&input, &packed, &["--codec", "zstd"]).status.success());
    let restored = dir.path("empty.out");
    assert!(unpack(&packed, &restored, &[]).status.success());
    assert_eq!(std::fs::read(&restored).unwrap(), b"");
}

/// Every damaged variant of a pack file fails cleanly and leaves no output.
fn assert_rejected(dir: &TempDir, packed: &[u8], extra: &[String], what: &str) {
    let bad = dir.path("bad.lmp");
    std::fs::write(&bad, packed).unwrap();
    let restored = dir.path("bad.out");
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let out = unpack(&bad, &restored, &extra);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{what}: unpack accepted a damaged file"
    );
    assert!(stderr.starts_with("error: "), "{what}: {stderr}");
    assert!(!restored.exists(), "{what}: output left behind");
    assert!(
        !dir.path("bad.out.partial").exists(),
        "{what}: partial output left behind"
    );
}

#[test]
fn corrupt_truncated_and_hostile_files_are_rejected() {
    let dir = TempDir::new("cli-corrupt");
    let mut data = text(40_000);
    data.extend(pseudo_random(20_000, 2));
    let input = dir.path("in");
    std::fs::write(&input, &data).unwrap();
    let packed_path = dir.path("in.lmp");
    assert!(
        pack(
            &input,
            &packed_path,
            &["--codec", "zstd", "--frame", "8KiB"]
        )
        .status
        .success()
    );
    let packed = std::fs::read(&packed_path).unwrap();
    // Flipped bits all over the file.
    for pos in
        (0..packed.len())
            .step_by(packed.len() / 23 + 1)
            .chain([8, 10, 20, 60, packed.len() - 1])
    {
        let mut bad = packed.clone();
        bad[pos] ^= 0x10;
        assert_rejected(&dir, &bad, &[], &format!("bit flip at {pos}"));
    }
    // Truncations.
    for len in [0, 7, 50, 100, 121, packed.len() / 2, packed.len() - 1] {
        assert_rejected(&dir, &packed[..len], &[], &format!("truncated to {len}"));
    }
    // Trailing garbage.
    let mut bad = packed.clone();
    bad.push(0);
    assert_rejected(&dir, &bad, &[], "trailing byte");
    // Hostile but well-formed header: claims an exabyte in 64 lanes of
    // 1 MiB frames, then a frame header claiming the largest frame.
    let hostile = ContainerHeader {
        lanes: 64,
        frame_len: MAX_FRAME_LEN,
        window: 1024,
        keep: 256,
        zstd_history: 1 << 17,
        model: ModelId::NONE,
        probe: 0,
        total_len: 1 << 60,
    };
    let mut bad = Vec::new();
    hostile.encode(&mut bad);
    bad.extend_from_slice(&[0, 0]);
    bad.extend_from_slice(&MAX_FRAME_LEN.to_le_bytes());
    bad.extend_from_slice(&MAX_FRAME_LEN.to_le_bytes());
    bad.extend_from_slice(&[0; 12]);
    assert_rejected(&dir, &bad, &[], "hostile lengths");
    // Not a pack file at all.
    assert_rejected(&dir, b"hello, world, this is not a pack file at all........................................................................................", &[], "wrong magic");
}

#[test]
fn bad_arguments_give_clear_errors() {
    let dir = TempDir::new("cli-args");
    let out = pack(&dir.path("missing"), &dir.path("x"), &["--codec", "zstd"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));
    let input = dir.path("in");
    std::fs::write(&input, b"abc").unwrap();
    let out = pack(
        &input,
        &dir.path("x"),
        &["--model", dir.path("nowhere").to_str().unwrap()],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("manifest.toml") && stderr.contains("setup.sh"),
        "{stderr}"
    );
    let out = pack(&input, &dir.path("x"), &["--frame", "12 parsecs"]);
    assert!(!out.status.success());
}

#[test]
fn lm_round_trip_and_wrong_model_refused() {
    let dir = TempDir::new("cli-lm");
    let mut data = b"Mixed input: text, then bytes \xff\x00\xc0 that are not UTF-8.\n".to_vec();
    data.extend(text(1500));
    data.extend(pseudo_random(3000, 3));
    let input = dir.path("in");
    std::fs::write(&input, &data).unwrap();
    let packed = dir.path("in.lmp");
    let margs = model_args();
    let margs: Vec<&str> = margs.iter().map(String::as_str).collect();
    let mut args = margs.clone();
    args.extend(["--frame", "2KiB", "--min-lane", "1KiB"]);
    let out = pack(&input, &packed, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = std::fs::read(&packed).unwrap().len();
    assert!(
        size < 3000 + 900,
        "text shrank, random bytes cost their size plus headers: {size}"
    );
    let restored = dir.path("out");
    let out = unpack(&packed, &restored, &margs);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&restored).unwrap(), data);

    // A model directory with the same graph but a different tokenizer file
    // is a different model: refused before anything is decoded.
    let real = llmpack_model_dir();
    let fake = dir.path("fake-model");
    std::fs::create_dir_all(&fake).unwrap();
    std::os::unix::fs::symlink(real.join("model.onnx"), fake.join("model.onnx")).unwrap();
    let mut tok = std::fs::read(real.join("tokenizer.json")).unwrap();
    tok.push(b'\n');
    std::fs::write(fake.join("tokenizer.json"), &tok).unwrap();
    let manifest = std::fs::read_to_string(real.join("manifest.toml")).unwrap();
    let old = manifest
        .lines()
        .find(|l| l.starts_with("\"tokenizer.json\""))
        .unwrap()
        .to_string();
    let new_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&tok))
    };
    std::fs::write(
        fake.join("manifest.toml"),
        manifest.replace(&old, &format!("\"tokenizer.json\" = \"{new_hash}\"")),
    )
    .unwrap();
    let packed_bytes = std::fs::read(&packed).unwrap();
    let fake_args = vec!["--model".to_string(), fake.display().to_string()];
    assert_rejected(&dir, &packed_bytes, &fake_args, "wrong model");
    let out = unpack(
        &packed,
        &dir.path("again"),
        &["--model", fake.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("packed with model"), "{stderr}");

    // Same model, other arithmetic (as on a CPU with other SIMD paths): the
    // numeric probe in the header differs, refused up front with a reason.
    let mut h = ContainerHeader::decode(&mut &packed_bytes[..]).unwrap();
    h.probe ^= 1;
    let mut forged = Vec::new();
    h.encode(&mut forged);
    forged.extend_from_slice(&packed_bytes[ContainerHeader::LEN..]);
    assert_rejected(&dir, &forged, &model_args(), "other numeric probe");
    std::fs::write(dir.path("forged.lmp"), &forged).unwrap();
    let out = unpack(&dir.path("forged.lmp"), &dir.path("forged.out"), &margs);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("arithmetic differs"), "{stderr}");

    // A flipped bit early in an lm payload derails the range decoder; the
    // frame checksum catches it before a byte is written.
    let mut at = ContainerHeader::LEN;
    loop {
        let h = FrameHeader::decode(&mut &packed_bytes[at..]).unwrap();
        if h.codec == llmpack_frame::Codec::Lm {
            break;
        }
        at += FRAME_HEADER_LEN + h.payload_len as usize;
    }
    let mut bad = packed_bytes.clone();
    bad[at + FRAME_HEADER_LEN + 2] ^= 0x01;
    assert_rejected(&dir, &bad, &model_args(), "lm payload bit flip");
}

/// `check-config` reads the certificate and key files the proxy will read,
/// and names what is wrong with them.
#[test]
fn check_config_reads_the_key_and_certificate_files() {
    let dir = TempDir::new("cli-check-config");
    let keys = dir.path("keys");
    let out = run(bin().arg("keygen").arg("--out").arg(&keys));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = dir.path("receiver.toml");
    std::fs::write(
        &config,
        "role = \"receiver\"\n[link]\nlisten = \"127.0.0.1:4433\"\n\
         certificate = \"keys/receiver.crt\"\nkey = \"keys/receiver.key\"\n\
         peer_certificate = \"keys/sender.crt\"\n\
         [[tunnel]]\nname = \"web\"\ntarget = \"127.0.0.1:8081\"\ncodec = \"zstd\"\n",
    )
    .unwrap();
    let check = || run(bin().arg("check-config").arg(&config));
    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("pinned peer certificate: SHA-256"),
        "{stdout}"
    );
    // A missing key.
    std::fs::rename(keys.join("receiver.key"), keys.join("receiver.key.bak")).unwrap();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("link.certificate / link.key"), "{stderr}");
    assert!(stderr.contains("receiver.key"), "{stderr}");
    // Another certificate's key.
    std::fs::copy(keys.join("sender.key"), keys.join("receiver.key")).unwrap();
    let out = check();
    assert!(!out.status.success(), "a key of another certificate passed");
    // A peer certificate that is not PEM.
    std::fs::rename(keys.join("receiver.key.bak"), keys.join("receiver.key")).unwrap();
    std::fs::write(keys.join("sender.crt"), "not a certificate\n").unwrap();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("link.peer_certificate"), "{stderr}");
}

/// A receiver killed with SIGKILL and restarted: the sender learns of it
/// from the restarted receiver's stateless reset (its key survives the
/// restart) and the tunnel carries traffic again within seconds, not at the
/// link's idle timeout.
#[test]
fn a_killed_and_restarted_receiver_is_back_within_seconds() {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
    use std::time::{Duration, Instant};

    let dir = TempDir::new("cli-restart");
    let out = run(bin().arg("keygen").arg("--out").arg(dir.path("keys")));
    assert!(out.status.success());
    // An echo server.
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_at = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = Vec::new();
                if s.read_to_end(&mut buf).is_ok() {
                    let _ = s.write_all(&buf);
                }
            });
        }
    });
    let udp = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let rconf = dir.path("receiver.toml");
    std::fs::write(
        &rconf,
        format!(
            "role = \"receiver\"\n[link]\nlisten = \"{udp}\"\ncertificate = \"keys/receiver.crt\"\n\
             key = \"keys/receiver.key\"\npeer_certificate = \"keys/sender.crt\"\n\
             [[tunnel]]\nname = \"echo\"\ntarget = \"{echo_at}\"\ncodec = \"raw\"\n"
        ),
    )
    .unwrap();
    let sconf = dir.path("sender.toml");
    std::fs::write(
        &sconf,
        format!(
            "role = \"sender\"\n[link]\nconnect = \"{udp}\"\ncertificate = \"keys/sender.crt\"\n\
             key = \"keys/sender.key\"\npeer_certificate = \"keys/receiver.crt\"\n\
             [[tunnel]]\nname = \"echo\"\nlisten = \"{tcp}\"\ncodec = \"raw\"\n"
        ),
    )
    .unwrap();
    let start = |role: &str, conf: &Path| {
        bin()
            .arg(role)
            .arg("--config")
            .arg(conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path(&format!("{role}.log"))).unwrap())
            .spawn()
            .unwrap()
    };
    // One exchange through the tunnel, given a second at most.
    let exchange = || -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&tcp, Duration::from_millis(500)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut got = Vec::new();
        s.write_all(b"ping\n").is_ok()
            && s.shutdown(Shutdown::Write).is_ok()
            && s.read_to_end(&mut got).is_ok()
            && got == b"ping\n"
    };
    let until = |limit: Duration| -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if exchange() {
                return Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    };
    let mut receiver = start("receiver", &rconf);
    let mut sender = start("sender", &sconf);
    let first = until(Duration::from_secs(20));
    assert!(first.is_some(), "the tunnel never carried traffic");
    receiver.kill().unwrap(); // SIGKILL: no close reaches the sender
    receiver.wait().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut receiver = start("receiver", &rconf);
    let back = until(Duration::from_secs(25));
    let _ = receiver.kill();
    let _ = sender.kill();
    let _ = receiver.wait();
    let _ = sender.wait();
    let log = std::fs::read_to_string(dir.path("sender.log")).unwrap_or_default();
    let back = back.unwrap_or_else(|| panic!("the tunnel did not come back; sender log:\n{log}"));
    eprintln!("traffic again {back:?} after the receiver's restart");
    assert!(
        back < Duration::from_secs(5),
        "traffic came back only {back:?} after the restart; sender log:\n{log}"
    );
}
