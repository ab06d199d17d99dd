//! Where the model runs: the CPU, or an NVIDIA GPU through ONNX Runtime's
//! CUDA execution provider.
//!
//! A process loads one ONNX Runtime library, so the device is chosen once,
//! before the first session ([`crate::start_runtime`]): `cpu` loads the CPU
//! build that `scripts/setup.sh` installs, `cuda` and `auto` the CUDA build
//! that `scripts/setup.sh --gpu` installs, with the CUDA libraries beside it
//! loaded first. `cuda` fails with one error that says what is missing when
//! that cannot work; `auto` then warns once and runs on the CPU.

use std::fmt;
use std::str::FromStr;

/// The device a user asks for (`--device`, `[model] device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The CPU, through ONNX Runtime's CPU build (the default).
    #[default]
    Cpu,
    /// An NVIDIA GPU through the CUDA execution provider; an error if that
    /// cannot work here.
    Cuda,
    /// The GPU when the CUDA execution provider works here, else the CPU
    /// with a warning.
    Auto,
}

impl Device {
    /// The names the settings accept.
    pub const NAMES: &'static str = "cpu, cuda or auto";

    /// `cpu`, `cuda` or `auto`.
    pub fn parse(s: &str) -> Option<Device> {
        match s {
            "cpu" => Some(Device::Cpu),
            "cuda" => Some(Device::Cuda),
            "auto" => Some(Device::Auto),
            _ => None,
        }
    }

    /// The setting's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Auto => "auto",
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Device::parse(s).ok_or_else(|| format!("`{s}`: expected {}", Device::NAMES))
    }
}

/// Where the model does run, once the runtime has started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// ONNX Runtime's CPU execution provider.
    Cpu,
    /// ONNX Runtime's CUDA execution provider (GPU 0).
    Cuda,
}

impl Backend {
    /// `cpu` or `cuda`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Cuda => "cuda",
        }
    }

    /// Whether sessions on this backend can serve a request for `device`.
    pub(crate) fn serves(self, device: Device) -> bool {
        matches!(
            (device, self),
            (Device::Auto, _) | (Device::Cpu, Backend::Cpu) | (Device::Cuda, Backend::Cuda)
        )
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in [Device::Cpu, Device::Cuda, Device::Auto] {
            assert_eq!(Device::parse(d.as_str()), Some(d));
            assert_eq!(d.to_string().parse::<Device>(), Ok(d));
        }
        assert_eq!(Device::default(), Device::Cpu);
        let e = "gpu".parse::<Device>().unwrap_err();
        assert!(e.contains("cpu, cuda or auto"), "{e}");
        assert_eq!(Device::parse("CUDA"), None);
    }

    #[test]
    fn backends_serve_requests() {
        assert!(Backend::Cpu.serves(Device::Cpu));
        assert!(Backend::Cpu.serves(Device::Auto));
        assert!(!Backend::Cpu.serves(Device::Cuda));
        assert!(Backend::Cuda.serves(Device::Cuda));
        assert!(Backend::Cuda.serves(Device::Auto));
        assert!(!Backend::Cuda.serves(Device::Cpu));
    }
}
