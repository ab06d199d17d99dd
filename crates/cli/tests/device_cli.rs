//! `--device` end to end with the real binary and the default model:
//! `cpu` is what it always was, `cuda` where CUDA cannot work fails with one
//! clear error (no panic, no hang), and `auto` there warns once and codes on
//! the CPU, byte-exact. No test needs a GPU; on a machine where the CUDA
//! execution provider does work, the `cuda` and `auto` tests check the GPU's
//! round trip instead of the error.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest a command may take here: loading the default model and coding a
/// few KiB takes seconds; a hang fails the test instead of blocking it.
const DEADLINE: Duration = Duration::from_secs(300);

/// The warning `auto` gives once when it falls back to the CPU.
const AUTO_WARNING: &str = "device \"auto\": CUDA is not usable here, running the model on the CPU";

mod common;
use common::TempDir;

/// Runs `llmpack args...` to the end or [`DEADLINE`], and checks it did not
/// panic.
fn llmpack(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llmpack"))
        .args(args)
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("llmpack starts");
    let t0 = Instant::now();
    while child.try_wait().expect("waiting for llmpack").is_none() {
        if t0.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("llmpack {args:?} still running after {DEADLINE:?}: a hang");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("llmpack output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn text(n: usize) -> Vec<u8> {
    let para = "LLMPack carries TCP traffic between two sites over one QUIC link and shrinks it. \
                The receiver regenerates the exact bytes; a tunnel that changes one byte is broken.\n";
    para.bytes().cycle().take(n).collect()
}

/// Packs `input` with the language model on `device` into `output`.
fn pack_lm(input: &Path, output: &Path, device: &str) -> Output {
    llmpack(&[
        "pack",
        s(input),
        "-o",
        s(output),
        "--codec",
        "lm",
        "--device",
        device,
    ])
}

fn unpack(input: &Path, output: &Path, device: &str) -> Output {
    llmpack(&["unpack", s(input), "-o", s(output), "--device", device])
}

/// Whether the CUDA execution provider works on this machine, found out by
/// asking for it (never assumed): `Ok(())` if `llmpack pack --device cuda`
/// succeeded, else its stderr.
fn cuda_works(dir: &TempDir) -> Result<(), String> {
    let input = dir.path("probe.txt");
    std::fs::write(&input, text(2000)).unwrap();
    let out = pack_lm(&input, &dir.path("probe.llmp"), "cuda");
    if out.status.success() {
        Ok(())
    } else {
        Err(stderr(&out))
    }
}

/// The one error `--device cuda` gives where CUDA cannot work.
#[track_caller]
fn assert_clear_cuda_error(out: &Output, what: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "{what}: succeeded without CUDA");
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error line, got: {err}");
    let line = errors[0];
    assert!(line.contains("device \"cuda\""), "{what}: {line}");
    // What is missing...
    assert!(
        [
            "is not installed",
            "does not exist",
            "no NVIDIA driver",
            "neither beside",
            "without the CUDA execution provider",
            "does not start here",
        ]
        .iter()
        .any(|why| line.contains(why)),
        "{what}: says what is missing: {line}"
    );
    // ...and what to do about it.
    assert!(line.contains("--device cpu"), "{what}: {line}");
    if line.contains("is not installed") || line.contains("does not exist") {
        assert!(line.contains("scripts/setup.sh --gpu"), "{what}: {line}");
    }
}

#[test]
fn cuda_fails_with_one_clear_error_where_it_cannot_work() {
    let dir = TempDir::new("device-cuda");
    let input = dir.path("in.txt");
    let data = text(3000);
    std::fs::write(&input, &data).unwrap();
    let cpu_pack = dir.path("cpu.llmp");
    let out = pack_lm(&input, &cpu_pack, "cpu");
    assert!(out.status.success(), "{}", stderr(&out));

    match cuda_works(&dir) {
        Ok(()) => {
            // A machine with a working GPU: `cuda` must code byte-exactly.
            let packed = dir.path("gpu.llmp");
            let out = pack_lm(&input, &packed, "cuda");
            assert!(out.status.success(), "{}", stderr(&out));
            let back = dir.path("gpu.out");
            let out = unpack(&packed, &back, "cuda");
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(std::fs::read(&back).unwrap(), data);
        }
        Err(_) => {
            // Every command that loads the model says the same.
            let out = pack_lm(&input, &dir.path("x.llmp"), "cuda");
            assert_clear_cuda_error(&out, "pack");
            assert!(!dir.path("x.llmp").exists());
            assert!(!dir.path("x.llmp.partial").exists());
            let out = unpack(&cpu_pack, &dir.path("x.out"), "cuda");
            assert_clear_cuda_error(&out, "unpack");
            assert!(!dir.path("x.out").exists());
            let out = llmpack(&["eval", s(&input), "--codec", "lm", "--device", "cuda"]);
            assert_clear_cuda_error(&out, "eval");
            let out = llmpack(&[
                "speed",
                "--input",
                s(&input),
                "--bytes",
                "512",
                "--lanes",
                "1",
                "--device",
                "cuda",
            ]);
            assert_clear_cuda_error(&out, "speed");
        }
    }

    // A library that is not there is named, with the setup step, on any machine.
    let out = llmpack(&[
        "pack",
        s(&input),
        "-o",
        s(&dir.path("y.llmp")),
        "--codec",
        "lm",
        "--device",
        "cuda",
        "--ort-lib",
        "/nonexistent/libonnxruntime.so.1.31.1",
    ]);
    assert_clear_cuda_error(&out, "pack --ort-lib missing");
    assert!(
        stderr(&out).contains("/nonexistent/libonnxruntime.so.1.31.1 (from --ort-lib"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn auto_warns_once_and_round_trips_exactly() {
    let dir = TempDir::new("device-auto");
    let input = dir.path("in.txt");
    let data = text(5000);
    std::fs::write(&input, &data).unwrap();
    let gpu = cuda_works(&dir).is_ok();

    let packed = dir.path("auto.llmp");
    let out = pack_lm(&input, &packed, "auto");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches(AUTO_WARNING).count(),
        usize::from(!gpu),
        "one warning exactly when CUDA does not work: {err}"
    );
    let back = dir.path("auto.out");
    let out = unpack(&packed, &back, "auto");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&back).unwrap(), data, "auto -> auto");
    if !gpu {
        // On the CPU, `auto` is `cpu`: the same pack file, and it unpacks there.
        let cpu_packed = dir.path("cpu.llmp");
        let out = pack_lm(&input, &cpu_packed, "cpu");
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            std::fs::read(&cpu_packed).unwrap(),
            std::fs::read(&packed).unwrap()
        );
        let back = dir.path("cpu.out");
        let out = unpack(&packed, &back, "cpu");
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(std::fs::read(&back).unwrap(), data, "auto -> cpu");

        let json = dir.path("speed.json");
        let out = llmpack(&[
            "speed",
            "--input",
            s(&input),
            "--bytes",
            "512",
            "--lanes",
            "1,2",
            "--device",
            "auto",
            "--json",
            s(&json),
        ]);
        let err = stderr(&out);
        assert!(out.status.success(), "{err}");
        assert_eq!(err.matches(AUTO_WARNING).count(), 1, "{err}");
        let report = std::fs::read_to_string(&json).unwrap();
        assert!(report.contains("\"device\": \"cpu\""), "{report}");
    }
}

#[test]
fn cpu_is_the_default_and_unchanged() {
    let dir = TempDir::new("device-cpu");
    let input = dir.path("in.txt");
    let data = text(4000);
    std::fs::write(&input, &data).unwrap();
    let default = dir.path("default.llmp");
    let out = llmpack(&["pack", s(&input), "-o", s(&default), "--codec", "lm"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).is_empty() || !stderr(&out).contains("WARN"));
    let cpu = dir.path("cpu.llmp");
    let out = pack_lm(&input, &cpu, "cpu");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&default).unwrap(),
        std::fs::read(&cpu).unwrap()
    );
    let back = dir.path("out");
    let out = llmpack(&["unpack", s(&cpu), "-o", s(&back)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(&back).unwrap(), data);

    let out = llmpack(&["pack", s(&input), "-o", s(&cpu), "--device", "gpu"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(
        stderr(&out).contains("`gpu`: expected cpu, cuda or auto"),
        "{}",
        stderr(&out)
    );
}
