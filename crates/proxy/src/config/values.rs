//! Parsers of single config values: paths, addresses, sizes, durations,
//! ranges. Each error names the field.

use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use super::raw::RawSize;
use crate::units::{parse_duration, parse_u64};

/// `path` joined to `base_dir` unless absolute.
pub(super) fn resolve(field: &str, path: &Path, base_dir: &Path) -> Result<PathBuf, ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(ConfigError::field(field, "empty path"));
    }
    Ok(base_dir.join(path))
}

pub(super) fn read_file(field: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::field(field, format!("cannot read {}: {e}", path.display())))
}

pub(super) fn socket_addr(field: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        ConfigError::field(
            field,
            format!(
                "not an IP:port ({s:?}); a listen address takes an IP, \
                 such as \"127.0.0.1:8080\" or \"[::]:4433\""
            ),
        )
    })
}

/// Checks a `host:port` to dial (the host may be a DNS name, an IPv4
/// address or a bracketed IPv6 address) and returns it as written.
pub(super) fn host_port(field: &str, s: &str) -> Result<String, ConfigError> {
    let bad = |why: &str| {
        ConfigError::field(
            field,
            format!(
                "not a host:port ({s:?}){why}; write it like \"example.com:80\" or \"[::1]:80\""
            ),
        )
    };
    let (host, port) = s.rsplit_once(':').ok_or_else(|| bad(""))?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {}
        _ => return Err(bad(": the port must be 1 to 65535")),
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    if !host_ok {
        return Err(bad(": bad host"));
    }
    Ok(s.to_owned())
}

pub(super) fn duration(field: &str, s: &str) -> Result<Duration, ConfigError> {
    parse_duration(s).map_err(|e| ConfigError::field(field, e))
}

pub(super) fn size(field: &str, raw: &RawSize) -> Result<u64, ConfigError> {
    match raw {
        RawSize::Bytes(n) => Ok(*n),
        RawSize::Text(s) => parse_u64(s).map_err(|e| ConfigError::field(field, e)),
    }
}

/// `n` within `lo..=hi`, converted to the field's type.
pub(super) fn in_range<T: TryFrom<u64>>(
    field: &str,
    n: u64,
    lo: u64,
    hi: u64,
) -> Result<T, ConfigError> {
    if n < lo || n > hi {
        let range = if hi == u64::MAX {
            format!("at least {lo}")
        } else {
            format!("{lo} to {hi}")
        };
        return Err(ConfigError::field(
            field,
            format!("{n} is out of range: use {range}"),
        ));
    }
    T::try_from(n)
        .map_err(|_| ConfigError::field(field, format!("{n} is too large for this machine")))
}
