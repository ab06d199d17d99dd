//! Traffic classes: the bytes a benchmark's server answers with.
//!
//! Each class is one buffer of real data read from disk (or seeded random
//! bytes for `binary`); response `n` is the `n`-th response-sized slice of it,
//! wrapping around at the end, so every client knows exactly what it must
//! receive.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use rand::{Rng, SeedableRng, rngs::SmallRng};

/// Classes accepted by [`Workload::resolve`].
pub const CLASSES: &[&str] = &["prose", "code", "html", "json", "logs", "binary", "mix"];

/// Sample files of the text classes, under the samples directory.
const SAMPLES: &[(&str, &str)] = &[
    ("prose", "prose.txt"),
    ("code", "code.py"),
    ("html", "page.html"),
    ("json", "data.json"),
];

/// Log files looked for on this machine for the `logs` class.
const LOG_FILES: &[&str] = &[
    "/var/log/dpkg.log",
    "/var/log/apt/history.log",
    "/var/log/apt/term.log",
    "/var/log/alternatives.log",
    "/var/log/syslog",
    "/var/log/messages",
];

/// Least bytes a class needs, so responses are not one file repeated.
pub const MIN_CLASS_BYTES: usize = 32 * 1024;

/// Size of the `binary` class.
const BINARY_BYTES: usize = 1 << 20;

/// Bytes taken from each class in turn for `mix`.
pub const MIX_BLOCK: usize = 4 * 1024;

/// One traffic class.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Name shown in reports.
    pub name: String,
    data: Vec<u8>,
}

impl Workload {
    /// A class from bytes; fails on fewer than [`MIN_CLASS_BYTES`].
    pub fn from_bytes(name: &str, data: Vec<u8>) -> Result<Self> {
        ensure!(
            data.len() >= MIN_CLASS_BYTES,
            "workload {name}: only {} bytes, need at least {MIN_CLASS_BYTES}",
            data.len()
        );
        Ok(Workload {
            name: name.to_string(),
            data,
        })
    }

    /// The files at `paths` (directories are read recursively, in name
    /// order), concatenated.
    pub fn from_paths(name: &str, paths: &[PathBuf]) -> Result<Self> {
        let mut data = Vec::new();
        for p in paths {
            read_tree(p, &mut data)?;
        }
        Self::from_bytes(name, data)
    }

    /// A class by name (see [`CLASSES`]) or, if `spec` names an existing
    /// file or directory, that path's contents. `samples` is the directory
    /// of the text samples (`prose.txt`, `code.py`, `page.html`,
    /// `data.json`).
    pub fn resolve(spec: &str, samples: &Path, seed: u64) -> Result<Self> {
        if let Some((_, file)) = SAMPLES.iter().find(|(n, _)| *n == spec) {
            let path = samples.join(file);
            let data = std::fs::read(&path).with_context(|| {
                format!(
                    "reading {}; run scripts/setup.sh to fetch the samples or pass --samples DIR",
                    path.display()
                )
            })?;
            return Self::from_bytes(spec, data);
        }
        match spec {
            "logs" => Self::logs(),
            "binary" => {
                let mut data = vec![0u8; BINARY_BYTES];
                SmallRng::seed_from_u64(seed).fill(&mut data[..]);
                Self::from_bytes("binary", data)
            }
            "mix" => {
                let parts = CLASSES
                    .iter()
                    .filter(|c| **c != "mix")
                    .map(|c| Self::resolve(c, samples, seed))
                    .collect::<Result<Vec<_>>>()?;
                Ok(Self::interleave("mix", &parts))
            }
            _ if Path::new(spec).exists() => {
                let name = Path::new(spec)
                    .file_name()
                    .map_or_else(|| spec.to_string(), |n| n.to_string_lossy().into_owned());
                Self::from_paths(&name, &[PathBuf::from(spec)])
            }
            _ => bail!(
                "unknown workload `{spec}`: use one of {} or a file or directory",
                CLASSES.join(", ")
            ),
        }
    }

    /// Real log files of this machine (those of [`LOG_FILES`] that exist and
    /// are readable).
    fn logs() -> Result<Self> {
        let mut data = Vec::new();
        for f in LOG_FILES {
            if let Ok(b) = std::fs::read(f) {
                data.extend_from_slice(&b);
            }
        }
        ensure!(
            data.len() >= MIN_CLASS_BYTES,
            "workload logs: found only {} bytes in {}; need {MIN_CLASS_BYTES}; pass log files as a workload path instead",
            data.len(),
            LOG_FILES.join(", ")
        );
        Ok(Workload {
            name: "logs".into(),
            data,
        })
    }

    /// Blocks of [`MIX_BLOCK`] bytes taken from each part in turn, until the
    /// longest part is used up (shorter ones wrap around).
    pub fn interleave(name: &str, parts: &[Workload]) -> Self {
        let longest = parts.iter().map(|p| p.data.len()).max().unwrap_or(0);
        let mut data = Vec::new();
        let mut at = 0;
        while at < longest {
            for p in parts {
                let n = u64::try_from(at / MIX_BLOCK).unwrap_or(u64::MAX);
                data.extend_from_slice(&p.response(n, MIX_BLOCK));
            }
            at += MIX_BLOCK;
        }
        Workload {
            name: name.to_string(),
            data,
        }
    }

    /// Bytes in the class.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the class is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Response `n`: `size` bytes from offset `n * size` (modulo the class
    /// length), wrapping around at the end.
    pub fn response(&self, n: u64, size: usize) -> Vec<u8> {
        let len = self.data.len();
        if len == 0 {
            return Vec::new();
        }
        // usize -> u128 only widens; the remainder is below `len`.
        let start = usize::try_from(u128::from(n) * size as u128 % len as u128).unwrap_or(0);
        let mut out = Vec::with_capacity(size);
        let mut at = start;
        while out.len() < size {
            let take = (size - out.len()).min(len - at);
            out.extend_from_slice(&self.data[at..at + take]);
            at = (at + take) % len;
        }
        out
    }
}

fn read_tree(path: &Path, out: &mut Vec<u8>) -> Result<()> {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading directory {}", path.display()))?
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for e in entries {
            read_tree(&e, out)?;
        }
    } else {
        let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        out.extend_from_slice(&b);
    }
    Ok(())
}

/// The samples directory: `.cache/samples` in the working directory or one
/// of its ancestors, or next to the executable's ancestors.
pub fn find_samples() -> Option<PathBuf> {
    let rel = Path::new(".cache/samples");
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.extend(cwd.ancestors().map(Path::to_path_buf));
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().skip(1).map(Path::to_path_buf));
    }
    roots.into_iter().map(|r| r.join(rel)).find(|p| p.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_wrap() {
        let data: Vec<u8> = (0..40_000u32)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let w = Workload::from_bytes("t", data.clone()).unwrap();
        assert_eq!(w.response(0, 100), data[..100]);
        assert_eq!(w.response(3, 100), data[300..400]);
        let r = w.response(1, 30_000);
        assert_eq!(r[..10_000], data[30_000..]);
        assert_eq!(r[10_000..], data[..20_000]);
        assert!(Workload::from_bytes("t", vec![0; 10]).is_err());
    }

    #[test]
    fn binary_is_seeded_and_mix_interleaves() {
        let dir = std::env::temp_dir();
        let a = Workload::resolve("binary", &dir, 7).unwrap();
        let b = Workload::resolve("binary", &dir, 7).unwrap();
        assert_eq!(a.response(5, 64), b.response(5, 64));
        let x = Workload::from_bytes("x", vec![b'x'; MIX_BLOCK * 8]).unwrap();
        let y = Workload::from_bytes("y", vec![b'y'; MIX_BLOCK * 16]).unwrap();
        let m = Workload::interleave("m", &[x, y]);
        assert_eq!(m.len(), MIX_BLOCK * 32);
        assert_eq!(m.response(0, MIX_BLOCK), vec![b'x'; MIX_BLOCK]);
        assert_eq!(m.response(1, MIX_BLOCK), vec![b'y'; MIX_BLOCK]);
    }
}
