//! Finding and loading the ONNX Runtime shared library.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::{Error, Result};

/// The ONNX Runtime release the project installs and tests with.
pub const ORT_VERSION: &str = "1.31.1";

/// Where `scripts/setup.sh` puts the library, relative to the project root.
const CACHED: &str = ".cache/onnxruntime-1.31.1/onnxruntime/capi/libonnxruntime.so.1.31.1";

/// The library to load: `explicit` if given, else `$ORT_DYLIB_PATH`, else
/// the project-local cache.
pub fn ort_library_path(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Ok(PathBuf::from(p));
    }
    crate::find_in_project(CACHED).ok_or_else(|| {
        Error::Runtime(format!(
            "ONNX Runtime {ORT_VERSION} not found (looked for {CACHED} in this directory, its parents and beside the executable); \
             run `scripts/setup.sh` to install it into the project cache, or set ORT_DYLIB_PATH to a libonnxruntime.so of version 1.31 or later"
        ))
    })
}

static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime once per process. Later calls return the first result.
pub fn init_runtime(explicit: Option<PathBuf>) -> Result<()> {
    ENV.get_or_init(|| {
        let path = ort_library_path(explicit).map_err(|e| e.to_string())?;
        if !path.exists() {
            return Err(format!(
                "ONNX Runtime library {} does not exist; run `scripts/setup.sh` or fix ORT_DYLIB_PATH",
                path.display()
            ));
        }
        let builder = ort::init_from(&path)
            .map_err(|e| format!("loading ONNX Runtime from {}: {e}", path.display()))?;
        builder
            .with_name("llmpack")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("starting ONNX Runtime from {}: {e}", path.display()))
    })
    .as_ref()
    .map(|_| ())
    .map_err(|e| Error::Runtime(e.clone()))
}

/// The process's runtime environment; loads the library from the default
/// places if [`init_runtime`] was not called.
pub(crate) fn environment() -> Result<ort::environment::Environment> {
    init_runtime(None)?;
    Ok(ENV
        .get()
        .and_then(|r| r.as_ref().ok())
        .cloned()
        .expect("initialised above"))
}

/// A CPU session over the graph at `path` with `threads` intra-op threads
/// (one inter-op thread: the graphs here are chains).
pub(crate) fn session(path: &std::path::Path, threads: usize) -> Result<ort::session::Session> {
    let env = environment()?;
    Ok(ort::session::Session::builder(&env)?
        .with_intra_threads(threads)
        .map_err(ort::Error::from)?
        .with_inter_threads(1)
        .map_err(ort::Error::from)?
        .commit_from_file(path)?)
}
