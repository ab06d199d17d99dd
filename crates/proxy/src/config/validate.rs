//! [`RawConfig`] to [`Config`]: required fields per role, parsing, ranges,
//! cross-field rules. The first problem found is the error.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use llmpack_codec::{LmParams, Policy};
use llmpack_frame::MAX_FRAME_LEN;

use super::defaults::*;
use super::raw::{RawConfig, RawFec, RawLimits, RawLink, RawMetrics, RawModel, RawTunnel};
use super::values::{duration, host_port, in_range, read_file, resolve, size, socket_addr};
use super::{
    Config, ConfigError, DEFAULT_SERVER_NAME, FecSettings, Identity, Limits, LinkConfig, LinkMode,
    MIN_TOKEN_LEN, ModelConfig, Role, Secret, TunnelConfig,
};

/// Checks `raw` and builds the [`Config`]; relative paths resolve against
/// `base_dir` (the config file's directory). Reads `link.token_file` and
/// `tunnel.primer_file`, nothing else.
pub fn validate(raw: RawConfig, base_dir: &Path) -> Result<Config, ConfigError> {
    let role = match raw.role.as_deref() {
        Some("sender") => Role::Sender,
        Some("receiver") => Role::Receiver,
        Some(other) => {
            return Err(ConfigError::field(
                "role",
                format!("expected \"sender\" or \"receiver\", not {other:?}"),
            ));
        }
        None => {
            return Err(ConfigError::field(
                "role",
                "required: role = \"sender\" or role = \"receiver\"",
            ));
        }
    };
    let link = link(raw.link, role, base_dir)?;
    let model = model(raw.model, base_dir)?;
    let metrics = metrics(raw.metrics)?;
    let limits = limits(raw.limits)?;
    let tunnels = tunnels(raw.tunnel, role, base_dir, metrics)?;
    Ok(Config {
        role,
        link,
        model,
        metrics,
        limits,
        tunnels,
    })
}

fn link(raw: RawLink, role: Role, base_dir: &Path) -> Result<LinkConfig, ConfigError> {
    let mut link = LinkConfig {
        connect: None,
        server_name: DEFAULT_SERVER_NAME.to_owned(),
        bind: DEFAULT_BIND.parse().expect("valid default"),
        listen: None,
        identity: None,
        peer_certificate: None,
        token: None,
        reconnect_min: DEFAULT_RECONNECT_MIN,
        reconnect_max: DEFAULT_RECONNECT_MAX,
        idle_timeout: llmpack_transport::Tuning::DEFAULT_IDLE_TIMEOUT,
        mode: LinkMode::Stream,
        congestion: llmpack_transport::Congestion::Cubic,
        fec: FecSettings::default(),
    };
    if let Some(m) = &raw.mode {
        link.mode = match m.as_str() {
            "stream" => LinkMode::Stream,
            "datagram-fec" => LinkMode::DatagramFec,
            other => {
                return Err(ConfigError::field(
                    "link.mode",
                    format!("{other:?}: use \"stream\" or \"datagram-fec\""),
                ));
            }
        };
    }
    link.fec = fec(&raw.fec)?;
    if let Some(s) = &raw.idle_timeout {
        let d = duration("link.idle_timeout", s)?;
        if d < Duration::from_millis(500) || d > Duration::from_secs(600) {
            return Err(ConfigError::field(
                "link.idle_timeout",
                format!("{d:?}: use 500ms to 10min (the default is 10s)"),
            ));
        }
        link.idle_timeout = d;
    }
    link.congestion = match raw.congestion.as_deref() {
        None if link.mode == LinkMode::DatagramFec => llmpack_transport::Congestion::Bbr,
        None | Some("cubic") => llmpack_transport::Congestion::Cubic,
        Some("bbr") => llmpack_transport::Congestion::Bbr,
        Some(other) => {
            return Err(ConfigError::field(
                "link.congestion",
                format!("{other:?}: use \"cubic\" or \"bbr\""),
            ));
        }
    };
    match role {
        Role::Sender => {
            if raw.listen.is_some() {
                return Err(ConfigError::field(
                    "link.listen",
                    "only a receiver listens for the link; a sender dials it with link.connect",
                ));
            }
            let connect = raw.connect.ok_or_else(|| {
                ConfigError::field(
                    "link.connect",
                    "required on a sender: the receiver's host:port, such as \"203.0.113.7:4433\"",
                )
            })?;
            link.connect = Some(host_port("link.connect", &connect)?);
            if let Some(name) = raw.server_name {
                if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '/') {
                    return Err(ConfigError::field(
                        "link.server_name",
                        format!("not a DNS name ({name:?})"),
                    ));
                }
                link.server_name = name;
            }
            if let Some(bind) = raw.bind {
                link.bind = socket_addr("link.bind", &bind)?;
            }
            if let Some(s) = raw.reconnect_min {
                link.reconnect_min = duration("link.reconnect_min", &s)?;
            }
            if let Some(s) = raw.reconnect_max {
                link.reconnect_max = duration("link.reconnect_max", &s)?;
            }
            if link.reconnect_min.is_zero() {
                return Err(ConfigError::field(
                    "link.reconnect_min",
                    "must be more than 0, or a sender would redial a down receiver in a tight loop",
                ));
            }
            if link.reconnect_max < link.reconnect_min {
                return Err(ConfigError::field(
                    "link.reconnect_max",
                    format!(
                        "{:?} is less than link.reconnect_min ({:?})",
                        link.reconnect_max, link.reconnect_min
                    ),
                ));
            }
        }
        Role::Receiver => {
            let sender_only = [
                ("link.connect", raw.connect.is_some()),
                ("link.server_name", raw.server_name.is_some()),
                ("link.bind", raw.bind.is_some()),
                ("link.reconnect_min", raw.reconnect_min.is_some()),
                ("link.reconnect_max", raw.reconnect_max.is_some()),
            ];
            if let Some((field, _)) = sender_only.iter().find(|(_, set)| *set) {
                return Err(ConfigError::field(
                    *field,
                    "only a sender dials the link; a receiver accepts it on link.listen",
                ));
            }
            let listen = raw.listen.ok_or_else(|| {
                ConfigError::field(
                    "link.listen",
                    "required on a receiver: the UDP address to accept the link on, such as \"0.0.0.0:4433\"",
                )
            })?;
            link.listen = Some(socket_addr("link.listen", &listen)?);
        }
    }

    // Authentication.
    let token_field = if raw.token_file.is_some() {
        "link.token_file"
    } else {
        "link.token"
    };
    link.token = match (raw.token, raw.token_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::field(
                "link.token_file",
                "give link.token or link.token_file, not both",
            ));
        }
        (Some(token), None) => Some(token),
        (None, Some(file)) => {
            let path = resolve("link.token_file", &file, base_dir)?;
            let mut bytes = read_file("link.token_file", &path)?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            Some(Secret::new(bytes))
        }
        (None, None) => None,
    };
    if let Some(token) = &link.token
        && token.len() < MIN_TOKEN_LEN
    {
        return Err(ConfigError::field(
            token_field,
            format!(
                "the token is {} bytes; use at least {MIN_TOKEN_LEN} random bytes \
                 (for example `openssl rand -hex 32`)",
                token.len()
            ),
        ));
    }
    let has_token = link.token.is_some();
    link.identity = match (raw.certificate, raw.key) {
        (Some(certificate), Some(key)) => Some(Identity {
            certificate: resolve("link.certificate", &certificate, base_dir)?,
            key: resolve("link.key", &key, base_dir)?,
        }),
        (Some(_), None) => {
            return Err(ConfigError::field(
                "link.key",
                "required with link.certificate: this end's private key (PEM)",
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::field(
                "link.certificate",
                "required with link.key: this end's certificate (PEM)",
            ));
        }
        (None, None) => {
            let why = match role {
                Role::Receiver => "required on a receiver",
                Role::Sender if !has_token => "required on a sender unless a token is given",
                Role::Sender => "",
            };
            if !why.is_empty() {
                return Err(ConfigError::field(
                    "link.certificate",
                    format!(
                        "{why}: this end's certificate (PEM) and link.key; \
                         `llmpack keygen --out keys` makes a pair for each end"
                    ),
                ));
            }
            None
        }
    };
    link.peer_certificate = match raw.peer_certificate {
        Some(path) => Some(resolve("link.peer_certificate", &path, base_dir)?),
        None if role == Role::Sender => {
            return Err(ConfigError::field(
                "link.peer_certificate",
                "required on a sender: the receiver's certificate (PEM), which the sender pins",
            ));
        }
        None if !has_token => {
            return Err(ConfigError::field(
                "link.peer_certificate",
                "required on a receiver unless a token is given: the sender's certificate (PEM)",
            ));
        }
        None => None,
    };
    Ok(link)
}

fn model(raw: RawModel, base_dir: &Path) -> Result<ModelConfig, ConfigError> {
    let dir = raw
        .dir
        .map(|p| resolve("model.dir", &p, base_dir))
        .transpose()?;
    let ort_lib = raw
        .ort_lib
        .map(|p| resolve("model.ort_lib", &p, base_dir))
        .transpose()?;
    let threads = match raw.threads {
        Some(n) => in_range("model.threads", n, 1, MAX_THREADS)?,
        None => default_threads(),
    };
    let max_delay = match raw.max_delay {
        Some(s) => duration("model.max_delay", &s)?,
        None => DEFAULT_MAX_DELAY,
    };
    if max_delay.is_zero() {
        return Err(ConfigError::field(
            "model.max_delay",
            "must be more than 0; to keep the model off, set codec = \"zstd\" on the tunnels",
        ));
    }
    let device = match raw.device.as_deref() {
        None => llmpack_model::Device::default(),
        Some(s) => llmpack_model::Device::parse(s).ok_or_else(|| {
            ConfigError::field(
                "model.device",
                format!(
                    "expected \"cpu\", \"cuda\" or \"auto\", not {s:?}; \"cuda\" and \"auto\" need `scripts/setup.sh --gpu`"
                ),
            )
        })?,
    };
    let max_batch = in_range(
        "model.max_batch",
        raw.max_batch.unwrap_or(DEFAULT_MAX_BATCH),
        1,
        MAX_BATCH,
    )?;
    let max_batch_gpu = in_range(
        "model.max_batch",
        raw.max_batch.unwrap_or(DEFAULT_MAX_BATCH_GPU),
        1,
        MAX_BATCH,
    )?;
    Ok(ModelConfig {
        dir,
        threads,
        ort_lib,
        device,
        max_delay,
        max_batch,
        max_batch_gpu,
    })
}

fn metrics(raw: RawMetrics) -> Result<Option<SocketAddr>, ConfigError> {
    raw.listen
        .map(|s| socket_addr("metrics.listen", &s))
        .transpose()
}

fn limits(raw: RawLimits) -> Result<Limits, ConfigError> {
    let max_connections = in_range(
        "limits.max_connections",
        raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
        1,
        u64::MAX,
    )?;
    let frame = match &raw.frame {
        Some(s) => size("limits.frame", s)?,
        None => DEFAULT_FRAME,
    };
    let frame: u32 = in_range("limits.frame", frame, 1, u64::from(MAX_FRAME_LEN))?;
    let buffer = match &raw.buffer {
        Some(s) => size("limits.buffer", s)?,
        None => DEFAULT_BUFFER,
    };
    if buffer < u64::from(frame) {
        return Err(ConfigError::field(
            "limits.buffer",
            format!(
                "{buffer} bytes is less than limits.frame ({frame} bytes); \
                 a connection must be able to hold one whole frame"
            ),
        ));
    }
    let buffer: usize = in_range("limits.buffer", buffer, 1, u64::MAX)?;
    let idle_given = raw.flush_idle.is_some();
    let flush_idle = match raw.flush_idle {
        Some(s) => duration("limits.flush_idle", &s)?,
        None => DEFAULT_FLUSH_IDLE,
    };
    // A flush_idle given alone bounds a byte's wait at ten times it.
    let flush_max = match raw.flush_max {
        Some(s) => duration("limits.flush_max", &s)?,
        None if idle_given => flush_idle.saturating_mul(10),
        None => DEFAULT_FLUSH_MAX,
    };
    if flush_max < flush_idle {
        return Err(ConfigError::field(
            "limits.flush_max",
            format!("{flush_max:?} is less than limits.flush_idle ({flush_idle:?})"),
        ));
    }
    Ok(Limits {
        max_connections,
        buffer,
        frame,
        flush_idle,
        flush_max,
    })
}

fn tunnels(
    raw: Vec<RawTunnel>,
    role: Role,
    base_dir: &Path,
    metrics: Option<SocketAddr>,
) -> Result<Vec<TunnelConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::field(
            "tunnel",
            "at least one [[tunnel]] is needed",
        ));
    }
    let mut names = HashSet::new();
    // Port 0 asks the OS for a fresh port, so only fixed ports can clash.
    let mut listens: HashSet<SocketAddr> = metrics.into_iter().collect();
    let mut out = Vec::with_capacity(raw.len());
    for (i, t) in raw.into_iter().enumerate() {
        let f = |name: &str| format!("tunnel[{i}].{name}");
        let name = t
            .name
            .ok_or_else(|| ConfigError::field(f("name"), "required"))?;
        let name_ok = (1..=MAX_NAME_LEN).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err(ConfigError::field(
                f("name"),
                format!("{name:?}: use 1 to {MAX_NAME_LEN} of A-Z a-z 0-9 . _ -"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(ConfigError::field(
                f("name"),
                format!("{name:?} is used by an earlier tunnel; names must be unique"),
            ));
        }

        let (listen, target) = match role {
            Role::Sender => {
                if t.target.is_some() {
                    return Err(ConfigError::field(
                        f("target"),
                        "only a receiver dials targets; set it in the receiver's config",
                    ));
                }
                let s = t.listen.ok_or_else(|| {
                    ConfigError::field(
                        f("listen"),
                        "required on a sender: where local clients connect, such as \"127.0.0.1:8080\"",
                    )
                })?;
                let addr = socket_addr(&f("listen"), &s)?;
                if addr.port() != 0 && !listens.insert(addr) {
                    return Err(ConfigError::field(
                        f("listen"),
                        format!("{addr} is already used by an earlier tunnel or metrics.listen"),
                    ));
                }
                (Some(addr), None)
            }
            Role::Receiver => {
                if t.listen.is_some() {
                    return Err(ConfigError::field(
                        f("listen"),
                        "only a sender listens for clients; a receiver dials the tunnel's target",
                    ));
                }
                let s = t.target.ok_or_else(|| {
                    ConfigError::field(
                        f("target"),
                        "required on a receiver: the one host:port this tunnel may dial",
                    )
                })?;
                (None, Some(host_port(&f("target"), &s)?))
            }
        };

        let policy = match t.codec.as_deref() {
            None => Policy::default(),
            Some(s) => Policy::parse(s).ok_or_else(|| {
                ConfigError::field(
                    f("codec"),
                    format!("unknown codec {s:?}; use \"auto\", \"lm\", \"zstd\" or \"raw\""),
                )
            })?,
        };

        let primer_field = if t.primer_file.is_some() {
            f("primer_file")
        } else {
            f("primer")
        };
        let primer = match (t.primer, t.primer_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::field(
                    f("primer_file"),
                    "give primer or primer_file, not both",
                ));
            }
            (Some(text), None) => text.into_bytes(),
            (None, Some(file)) => {
                let path = resolve(&f("primer_file"), &file, base_dir)?;
                read_file(&f("primer_file"), &path)?
            }
            (None, None) => Vec::new(),
        };
        if primer.len() > MAX_PRIMER_LEN {
            return Err(ConfigError::field(
                primer_field,
                format!(
                    "{} bytes; a primer is model context and may be at most {MAX_PRIMER_LEN} bytes",
                    primer.len()
                ),
            ));
        }

        let default = LmParams::default();
        let window = t.window.unwrap_or(default.window);
        let keep = t.keep.unwrap_or(default.keep);
        if u64::from(window) < u64::from(keep) + MIN_WINDOW_MARGIN {
            let field = if t.window.is_some() { "window" } else { "keep" };
            return Err(ConfigError::field(
                f(field),
                format!(
                    "window {window} must be at least keep {keep} + {MIN_WINDOW_MARGIN} \
                     (an unset one takes the default, window {} and keep {})",
                    default.window, default.keep
                ),
            ));
        }

        let lanes = t.lanes.unwrap_or(DEFAULT_LANES);
        if !(1..=llmpack_codec::segments::MAX_LANES).contains(&lanes) {
            return Err(ConfigError::field(
                f("lanes"),
                format!(
                    "{lanes}: a frame may be coded on 1 to {} lanes",
                    llmpack_codec::segments::MAX_LANES
                ),
            ));
        }

        let zstd_level = t.zstd_level;
        if let Some(zstd_level) = zstd_level
            && !(1..=19).contains(&zstd_level)
        {
            return Err(ConfigError::field(
                f("zstd_level"),
                format!("{zstd_level}: zstd levels run from 1 (fastest) to 19 (smallest)"),
            ));
        }

        out.push(TunnelConfig {
            name,
            listen,
            target,
            policy,
            primer,
            window: t.window,
            keep: t.keep,
            lanes,
            zstd_level,
        });
    }
    Ok(out)
}

fn fec(raw: &RawFec) -> Result<FecSettings, ConfigError> {
    let mut f = FecSettings::default();
    let e = &mut f.encoder;
    let ratio = |field: &str, r: Option<f64>, default: f64| match r {
        Some(r) if !(0.0..=4.0).contains(&r) => Err(ConfigError::field(
            field,
            format!("{r} is out of range: use 0 to 4 (repair symbols per source symbol)"),
        )),
        Some(r) => Ok(r),
        None => Ok(default),
    };
    e.min_ratio = ratio("link.fec.min_ratio", raw.min_ratio, e.min_ratio)?;
    e.max_ratio = ratio("link.fec.max_ratio", raw.max_ratio, e.max_ratio)?;
    if e.min_ratio > e.max_ratio {
        return Err(ConfigError::field(
            "link.fec.max_ratio",
            format!(
                "{} is less than link.fec.min_ratio ({})",
                e.max_ratio, e.min_ratio
            ),
        ));
    }
    e.repair_ratio = ratio("link.fec.repair_ratio", raw.repair_ratio, e.repair_ratio)?
        .clamp(e.min_ratio, e.max_ratio);
    if let Some(b) = &raw.block_bytes {
        let n = size("link.fec.block_bytes", b)?;
        e.block_bytes = in_range("link.fec.block_bytes", n, 1024, 1 << 20)?;
    }
    if let Some(d) = &raw.block_delay {
        e.block_delay = duration("link.fec.block_delay", d)?;
    }
    if let Some(d) = &raw.ack_timeout {
        e.ack_timeout = duration("link.fec.ack_timeout", d)?;
        if e.ack_timeout.is_zero() {
            return Err(ConfigError::field(
                "link.fec.ack_timeout",
                "must be more than 0",
            ));
        }
    }
    if let Some(n) = raw.max_topups {
        e.max_topups = in_range("link.fec.max_topups", n, 0, 64)?;
    }
    if let Some(d) = &raw.topup_after {
        f.decoder.topup_after = duration("link.fec.topup_after", d)?;
        if f.decoder.topup_after.is_zero() {
            return Err(ConfigError::field(
                "link.fec.topup_after",
                "must be more than 0",
            ));
        }
    }
    f.encoder
        .validate()
        .map_err(|e| ConfigError::field("link.fec", e.to_string()))?;
    Ok(f)
}
