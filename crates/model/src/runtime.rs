//! Finding and loading the ONNX Runtime shared library, on the device asked
//! for (see [`crate::Device`]), and building sessions on it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::ep::ExecutionProvider as _;
use ort::session::builder::SessionBuilder;

use crate::{Backend, Device, Error, Result};

/// The ONNX Runtime release the project installs and tests with.
pub const ORT_VERSION: &str = "1.31.1";

/// Where `scripts/setup.sh` puts the library, relative to the project root.
const CACHED: &str = ".cache/onnxruntime-1.31.1/onnxruntime/capi/libonnxruntime.so.1.31.1";

/// Where `scripts/setup.sh --gpu` puts the CUDA build of the library, with
/// the CUDA libraries it needs beside it.
const CACHED_GPU: &str = ".cache/onnxruntime-gpu-1.31.1/lib/libonnxruntime.so.1.31.1";

/// The NVIDIA driver's library, which the system provides.
const DRIVER: &str = "libcuda.so.1";

/// The CUDA 13 libraries the CUDA execution provider loads, in dependency
/// order, and whether it cannot start without them (the rest it loads only
/// for some operators). They are loaded before the runtime, from beside the
/// runtime's library where they are there, else by name (`LD_LIBRARY_PATH`,
/// the system's library paths), so that the provider finds them by name.
/// cuDNN's own parts (`libcudnn_ops.so.9`, ...) are found beside
/// `libcudnn.so.9` when it needs them.
const CUDA_LIBS: &[(&str, bool)] = &[
    ("libcudart.so.13", true),
    ("libnvJitLink.so.13", false),
    ("libcublasLt.so.13", true),
    ("libcublas.so.13", true),
    ("libcurand.so.10", true),
    ("libcufft.so.12", false),
    ("libnvrtc.so.13", false),
    ("libcudnn.so.9", false),
];

/// What to tell a user whose GPU cannot be used.
const CPU_HINT: &str = "or run the model on the CPU: --device cpu, or [model] device = \"cpu\"";

/// The library to load on the CPU: `explicit` if given, else
/// `$ORT_DYLIB_PATH`, else the project-local cache.
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

/// The library to load for the GPU: `explicit` if given, else
/// `$ORT_DYLIB_PATH`, else the CUDA build in the project cache
/// (`scripts/setup.sh --gpu`); `None` if there is none.
pub fn cuda_library_path(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .or_else(|| crate::find_in_project(CACHED_GPU))
}

/// The process's runtime: the library loaded and the device its sessions use.
#[derive(Debug)]
struct Runtime {
    env: ort::environment::Environment,
    backend: Backend,
    lib: PathBuf,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Loads ONNX Runtime once per process for `device` (the first call
/// decides; see [`Device`]) and returns where sessions run. A later call for
/// a device the loaded runtime cannot serve (`cpu` after `cuda`, or the
/// reverse) is an error: one process loads one library.
pub fn start_runtime(explicit: Option<PathBuf>, device: Device) -> Result<Backend> {
    let rt = RUNTIME
        .get_or_init(|| start(explicit, device))
        .as_ref()
        .map_err(|e| Error::Runtime(e.clone()))?;
    if !rt.backend.serves(device) {
        return Err(Error::Runtime(format!(
            "ONNX Runtime already runs on the {} in this process (from {}); device \"{device}\" needs a process of its own",
            rt.backend,
            rt.lib.display()
        )));
    }
    Ok(rt.backend)
}

/// Loads ONNX Runtime for the CPU once per process ([`start_runtime`] with
/// [`Device::Cpu`]).
pub fn init_runtime(explicit: Option<PathBuf>) -> Result<()> {
    start_runtime(explicit, Device::Cpu).map(|_| ())
}

fn start(explicit: Option<PathBuf>, device: Device) -> Result<Runtime, String> {
    match device {
        Device::Cpu => load_cpu(explicit),
        Device::Cuda => start_cuda(explicit).map_err(|f| {
            format!(
                "device \"cuda\": {}; {}",
                f.why,
                if f.not_installed {
                    format!("run `scripts/setup.sh --gpu` to install it, {CPU_HINT}")
                } else {
                    CPU_HINT.to_string()
                }
            )
        }),
        Device::Auto => match start_cuda(explicit.clone()) {
            Ok(rt) => Ok(rt),
            Err(f) => {
                tracing::warn!(
                    reason = %f.why,
                    "device \"auto\": CUDA is not usable here, running the model on the CPU"
                );
                match f.loaded {
                    // The CUDA build is loaded already: its CPU provider.
                    Some(rt) => Ok(rt),
                    None => load_cpu(explicit),
                }
            }
        },
    }
}

fn load_cpu(explicit: Option<PathBuf>) -> Result<Runtime, String> {
    let path = ort_library_path(explicit).map_err(|e| e.to_string())?;
    if !path.exists() {
        return Err(format!(
            "ONNX Runtime library {} does not exist; run `scripts/setup.sh` or fix ORT_DYLIB_PATH",
            path.display()
        ));
    }
    let env = load(&path)?;
    Ok(Runtime {
        env,
        backend: Backend::Cpu,
        lib: path,
    })
}

fn load(path: &Path) -> Result<ort::environment::Environment, String> {
    let builder = ort::init_from(path)
        .map_err(|e| format!("loading ONNX Runtime from {}: {e}", path.display()))?;
    builder
        .with_name("llmpack")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("starting ONNX Runtime from {}: {e}", path.display()))
}

/// Why the GPU cannot be used.
struct CudaFailure {
    why: String,
    /// The CUDA build of ONNX Runtime is missing (setup fixes that).
    not_installed: bool,
    /// The library was loaded before the failure: its CPU provider is what
    /// this process can still use.
    loaded: Option<Runtime>,
}

fn fail(why: String) -> CudaFailure {
    CudaFailure {
        why,
        not_installed: false,
        loaded: None,
    }
}

/// Loads the CUDA build of ONNX Runtime and checks, with a one-node graph
/// run on the GPU, that its CUDA execution provider works here.
fn start_cuda(explicit: Option<PathBuf>) -> Result<Runtime, CudaFailure> {
    let Some(lib) = cuda_library_path(explicit) else {
        return Err(CudaFailure {
            why: format!(
                "the CUDA build of ONNX Runtime {ORT_VERSION} is not installed (looked for {CACHED_GPU} in this directory, \
                 its parents and beside the executable)"
            ),
            not_installed: true,
            loaded: None,
        });
    };
    if !lib.exists() {
        return Err(CudaFailure {
            why: format!(
                "ONNX Runtime library {} (from --ort-lib, model.ort_lib or ORT_DYLIB_PATH) does not exist",
                lib.display()
            ),
            not_installed: true,
            loaded: None,
        });
    }
    ort::util::preload_dylib(DRIVER).map_err(|e| {
        fail(format!(
            "no NVIDIA driver here ({DRIVER} cannot be loaded: {e}); the CUDA execution provider needs an NVIDIA GPU \
             and a driver for CUDA 13 (version 580 or later)"
        ))
    })?;
    let dir = lib.parent().unwrap_or(Path::new("."));
    for &(name, required) in CUDA_LIBS {
        let beside = dir.join(name);
        let loaded = if beside.exists() {
            ort::util::preload_dylib(&beside)
        } else {
            ort::util::preload_dylib(name)
        };
        match loaded {
            Ok(()) => {}
            Err(e) if required => {
                return Err(CudaFailure {
                    why: format!(
                        "the CUDA library {name} is neither beside {} nor on the library path ({e}); \
                         `scripts/setup.sh --gpu` installs it there, or add the folder of your CUDA 13 libraries to LD_LIBRARY_PATH",
                        lib.display()
                    ),
                    not_installed: true,
                    loaded: None,
                });
            }
            Err(e) => {
                tracing::debug!(lib = name, error = %e, "optional CUDA library not preloaded")
            }
        }
    }
    let env = load(&lib).map_err(fail)?;
    let rt = Runtime {
        env,
        backend: Backend::Cpu,
        lib,
    };
    let loaded = |why: String, rt: Runtime| CudaFailure {
        why,
        not_installed: false,
        loaded: Some(rt),
    };
    match ort::ep::CUDA::is_available() {
        Ok(true) => {}
        Ok(false) => {
            let why = format!(
                "{} is a build of ONNX Runtime without the CUDA execution provider; leave ORT_DYLIB_PATH, --ort-lib and \
                 model.ort_lib unset to use the CUDA build that `scripts/setup.sh --gpu` installs, or point them at one",
                rt.lib.display()
            );
            return Err(loaded(why, rt));
        }
        Err(e) => {
            return Err(loaded(
                format!("asking ONNX Runtime for its providers: {e}"),
                rt,
            ));
        }
    }
    if let Err(e) = crate::peak::check_cuda(&rt.env) {
        let why = format!(
            "the CUDA execution provider does not start here: {}",
            e.to_string().trim()
        );
        return Err(loaded(why, rt));
    }
    tracing::info!(lib = %rt.lib.display(), "ONNX Runtime on the GPU (CUDA execution provider)");
    Ok(Runtime {
        backend: Backend::Cuda,
        ..rt
    })
}

/// The process's runtime; loads the CPU library from the default places if
/// [`start_runtime`] was not called.
fn runtime() -> Result<&'static Runtime> {
    init_runtime(None).or_else(|e| match RUNTIME.get() {
        // Started on another device: that is the one to use.
        Some(Ok(_)) => Ok(()),
        _ => Err(e),
    })?;
    Ok(RUNTIME
        .get()
        .and_then(|r| r.as_ref().ok())
        .expect("initialised above"))
}

/// The device the process's sessions run on, once the runtime has started.
pub fn runtime_backend() -> Option<Backend> {
    RUNTIME.get()?.as_ref().ok().map(|r| r.backend)
}

/// The CUDA execution provider as every session here registers it: GPU 0,
/// and an error rather than a silent fall back to the CPU.
pub(crate) fn cuda_provider() -> ort::ep::ExecutionProviderDispatch {
    ort::ep::CUDA::default().build().error_on_failure()
}

/// A session builder on the process's device with `threads` intra-op
/// threads (one inter-op thread: the graphs here are chains).
pub(crate) fn builder(threads: usize) -> Result<SessionBuilder> {
    let rt = runtime()?;
    let b = ort::session::Session::builder(&rt.env)?
        .with_intra_threads(threads)
        .map_err(ort::Error::from)?
        .with_inter_threads(1)
        .map_err(ort::Error::from)?;
    Ok(match rt.backend {
        Backend::Cpu => b,
        Backend::Cuda => b
            .with_execution_providers([cuda_provider()])
            .map_err(ort::Error::from)?,
    })
}

/// A session over the graph at `path` on the process's device.
pub(crate) fn session(path: &Path, threads: usize) -> Result<ort::session::Session> {
    Ok(builder(threads)?.commit_from_file(path)?)
}
