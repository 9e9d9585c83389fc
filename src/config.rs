//! Environment + flags → one typed, validated `Config`.
//!
//! Everything is checked here, before anything starts: a bad value ends the program with one line
//! naming the variable (exit 78, EX_CONFIG). Values never reach a config file unless they passed a
//! validator that rejects whitespace and control characters, so no value can inject a directive.

#[cfg(test)]
use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Master,
    Replica,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Master => "master",
            Role::Replica => "replica",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
    /// Children write straight to our stdout/stderr: no tags, no framing, no copy (tini's
    /// throughput). Redis writes each log line with one write, so its lines stay whole.
    Raw,
}

/// A host as it may appear in a config file: an IP or a DNS name (a Kubernetes Service).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// The two servers of a pod: the data node and its sentinel. One enum for the supervisor's slots
/// (the discriminant is the slot index), the probes' argument, and the client's password choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Server {
    Redis = 0,
    Sentinel = 1,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Redis => "redis",
            Server::Sentinel => "sentinel",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: Host,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            h => write!(f, "{h}:{}", self.port),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub role: Role,
    /// `MY_POD_IP`; `None` means local mode (loopback only).
    pub pod_ip: Option<IpAddr>,
    pub redis_port: u16,
    pub sentinel_port: u16,
    /// Where a replica looks for its master on first boot (`REDIS_MASTER_SERVICE_HOST/PORT`).
    pub master_service: Option<Endpoint>,
    /// Sentinels asked at boot who the master is.
    pub sentinels: Vec<Endpoint>,
    pub state_dir: PathBuf,
    pub conf_dir: Option<PathBuf>,
    pub group: String,
    pub quorum: u32,
    pub down_after_ms: u64,
    /// Period of the stale-entry cleanup (cleanup.rs); 0 = off.
    pub cleanup_interval_ms: u64,
    /// How long an entry must be s_down before the cleanup forgets it.
    pub stale_after_ms: u64,
    pub failover_timeout_ms: u64,
    pub parallel_syncs: u32,
    pub min_replicas_to_write: u32,
    pub min_replicas_max_lag: u32,
    pub log_format: LogFormat,
    pub stop_grace_ms: u64,
    pub redis_server: PathBuf,
    pub handover: bool,
    /// `appendfsync always` and a crashed master restarted in place (REDISHA_DURABILITY=strict),
    /// or `everysec` with a crashed master failed over to a replica (replicated).
    pub strict_durability: bool,
    pub auth: Auth,
    pub tls: Option<TlsFiles>,
    pub discovery_timeout_ms: u64,
    pub restart: crate::supervise::policy::RestartPolicy,
    /// `REDISHA_MAXMEMORY`.
    pub maxmemory: crate::memory::Setting,
    /// The container's memory limit, read at start (main.rs); the default (nothing found) keeps
    /// `build` pure.
    pub memory: crate::memory::Detected,
}

impl Config {
    /// The address other pods reach this pod at.
    pub fn announce_ip(&self) -> IpAddr {
        self.pod_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]))
    }

    /// This pod's own redis or sentinel, as our checks dial it and the others reach it: at the
    /// announced address, which a TLS certificate must name anyway (127.0.0.1 need not be in its
    /// SANs).
    pub fn own(&self, s: Server) -> Endpoint {
        Endpoint {
            host: Host::Ip(self.announce_ip()),
            port: match s {
                Server::Redis => self.redis_port,
                Server::Sentinel => self.sentinel_port,
            },
        }
    }

    pub fn redis_dir(&self) -> PathBuf {
        self.state_dir.join("redis")
    }

    pub fn sentinel_dir(&self) -> PathBuf {
        self.state_dir.join("sentinel")
    }

    pub fn redis_conf_path(&self) -> PathBuf {
        self.redis_dir().join("redis.conf")
    }

    pub fn sentinel_conf_path(&self) -> PathBuf {
        self.sentinel_dir().join("sentinel.conf")
    }
}

/// A secret value. Its Debug output is redacted so it cannot leak through a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// requirepass/masterauth of the data nodes, auth-pass of the sentinels.
    pub redis: Option<Secret>,
    /// requirepass of the sentinels and sentinel-pass between them.
    pub sentinel: Option<Secret>,
}

/// Certificate paths; TLS is on for clients, replication and sentinels when these are set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// One bad input. Its `Display` is the single line the operator sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub name: String,
    pub value: Option<String>,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}: {}", self.name, shown(v), self.reason),
            None => write!(f, "{}: {}", self.name, self.reason),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Bad values are echoed so the operator can see what is wrong, but escaped (a newline must not
/// split the error into two log lines) and cut (a 1 MiB value must not become a 1 MiB line).
fn shown(v: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::from("\"");
    for (i, c) in v.chars().enumerate() {
        if i == MAX {
            out.push_str(&format!("…\" ({} bytes)", v.len()));
            return out;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

fn err(name: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        name: name.to_string(),
        value: Some(value.to_string()),
        reason: reason.into(),
    }
}

/// The raw environment, as strings, read with envy. Non-UTF-8 values are rejected before this.
#[derive(Debug, Default, Deserialize)]
pub struct RawEnv {
    pub my_pod_ip: Option<String>,
    pub master_announce_port: Option<String>,
    pub sentinel_announce_port: Option<String>,
    pub redis_master_service_host: Option<String>,
    pub redis_master_service_port: Option<String>,
    pub redisha_role: Option<String>,
    pub redisha_sentinels: Option<String>,
    pub redisha_state_dir: Option<String>,
    pub redisha_conf_dir: Option<String>,
    pub redisha_master_group: Option<String>,
    pub redisha_quorum: Option<String>,
    pub redisha_down_after_ms: Option<String>,
    pub redisha_failover_timeout_ms: Option<String>,
    pub redisha_parallel_syncs: Option<String>,
    pub redisha_min_replicas_to_write: Option<String>,
    pub redisha_min_replicas_max_lag: Option<String>,
    pub redisha_log_format: Option<String>,
    pub redisha_stop_grace_ms: Option<String>,
    pub redisha_redis_server: Option<String>,
    pub redisha_handover: Option<String>,
    pub redisha_durability: Option<String>,
    pub redisha_discovery_timeout_ms: Option<String>,
    pub redisha_restart_backoff_ms: Option<String>,
    pub redis_password: Option<String>,
    pub redis_password_file: Option<String>,
    pub redis_sentinel_password: Option<String>,
    pub redis_sentinel_password_file: Option<String>,
    pub allow_empty_password: Option<String>,
    pub redisha_tls_cert_file: Option<String>,
    pub redisha_tls_key_file: Option<String>,
    pub redisha_tls_ca_file: Option<String>,
    pub redisha_restart_budget: Option<String>,
    pub redisha_restart_stable_ms: Option<String>,
    pub redisha_maxmemory: Option<String>,
    pub redisha_pod_name: Option<String>,
    pub redisha_cleanup_interval_ms: Option<String>,
    pub redisha_stale_after_ms: Option<String>,
    pub home: Option<String>,
    /// The kernel's hostname (a StatefulSet pod's name), not an environment variable: the
    /// fallback of `REDISHA_ROLE=ordinal` when `REDISHA_POD_NAME` is not set. Filled by the
    /// caller (`kernel_hostname`), so `build` stays free of I/O.
    #[serde(skip)]
    pub hostname: Option<String>,
}

/// Every variable we read. Only these are checked for UTF-8 (PATH etc. are not ours to judge).
pub const VARS: &[&str] = &[
    "MY_POD_IP",
    "MASTER_ANNOUNCE_PORT",
    "SENTINEL_ANNOUNCE_PORT",
    "REDIS_MASTER_SERVICE_HOST",
    "REDIS_MASTER_SERVICE_PORT",
    "REDISHA_ROLE",
    "REDISHA_SENTINELS",
    "REDISHA_STATE_DIR",
    "REDISHA_CONF_DIR",
    "REDISHA_MASTER_GROUP",
    "REDISHA_QUORUM",
    "REDISHA_DOWN_AFTER_MS",
    "REDISHA_FAILOVER_TIMEOUT_MS",
    "REDISHA_PARALLEL_SYNCS",
    "REDISHA_MIN_REPLICAS_TO_WRITE",
    "REDISHA_MIN_REPLICAS_MAX_LAG",
    "REDISHA_LOG_FORMAT",
    "REDISHA_STOP_GRACE_MS",
    "REDISHA_REDIS_SERVER",
    "REDISHA_HANDOVER",
    "REDISHA_DURABILITY",
    "REDISHA_DISCOVERY_TIMEOUT_MS",
    "REDISHA_RESTART_BACKOFF_MS",
    "REDIS_PASSWORD",
    "REDIS_PASSWORD_FILE",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_SENTINEL_PASSWORD_FILE",
    "ALLOW_EMPTY_PASSWORD",
    "REDISHA_TLS_CERT_FILE",
    "REDISHA_TLS_KEY_FILE",
    "REDISHA_TLS_CA_FILE",
    "REDISHA_RESTART_BUDGET",
    "REDISHA_RESTART_STABLE_MS",
    "REDISHA_MAXMEMORY",
    "REDISHA_POD_NAME",
    "REDISHA_CLEANUP_INTERVAL_MS",
    "REDISHA_STALE_AFTER_MS",
    "HOME",
];

impl RawEnv {
    /// Reads our variables from an OS environment. A non-UTF-8 value is an error naming the
    /// variable; `std::env::vars()` would panic on it, which PID 1 must never do.
    pub fn from_os<I: IntoIterator<Item = (OsString, OsString)>>(
        vars: I,
    ) -> Result<RawEnv, ConfigError> {
        let mut kept = Vec::new();
        for (k, v) in vars {
            let Some(k) = k.to_str() else { continue };
            if !VARS.contains(&k) {
                continue;
            }
            match v.into_string() {
                Ok(v) => kept.push((k.to_string(), v)),
                Err(v) => {
                    // A secret is never echoed, not even a broken one.
                    let secret = k.contains("PASSWORD") && !k.ends_with("_FILE");
                    return Err(ConfigError {
                        name: k.to_string(),
                        value: (!secret).then(|| v.to_string_lossy().into_owned()),
                        reason: "not valid UTF-8".into(),
                    });
                }
            }
        }
        envy::from_iter(kept).map_err(|e| ConfigError {
            name: "environment".into(),
            value: None,
            reason: e.to_string(),
        })
    }
}

/// Command-line values; each overrides its environment variable.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub role: Option<String>,
    pub sentinels: Option<String>,
    pub state_dir: Option<String>,
    pub conf_dir: Option<String>,
    pub master_group: Option<String>,
    pub quorum: Option<String>,
    pub down_after_ms: Option<String>,
    pub failover_timeout_ms: Option<String>,
    pub parallel_syncs: Option<String>,
    pub min_replicas_to_write: Option<String>,
    pub min_replicas_max_lag: Option<String>,
    pub log_format: Option<String>,
    pub stop_grace_ms: Option<String>,
    pub redis_server: Option<String>,
    pub handover: Option<String>,
}

/// Defaults, with the reasoning in README.md ("Timing defaults").
pub const DEFAULT_DOWN_AFTER_MS: u64 = 5_000;
pub const DEFAULT_FAILOVER_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_STOP_GRACE_MS: u64 = 8_000;
pub const DEFAULT_DISCOVERY_TIMEOUT_MS: u64 = 20_000;

/// Picks the flag if given, else the variable; returns the name to blame alongside the value.
fn pick<'a>(
    flag: &'a Option<String>,
    flag_name: &'static str,
    env: &'a Option<String>,
    var: &'static str,
) -> Option<(&'static str, &'a str)> {
    match (flag, env) {
        (Some(f), _) => Some((flag_name, f.as_str())),
        (None, Some(e)) => Some((var, e.as_str())),
        (None, None) => None,
    }
}

fn parse_num<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
    name: &str,
    v: &str,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    let n: T = v
        .trim()
        .parse()
        .map_err(|_| err(name, v, format!("not an integer in {min}..={max}")))?;
    if n < min || n > max || v.trim() != v {
        return Err(err(name, v, format!("not an integer in {min}..={max}")));
    }
    Ok(n)
}

pub fn parse_port(name: &str, v: &str) -> Result<u16, ConfigError> {
    parse_num::<u16>(name, v, 1, 65535).map_err(|_| err(name, v, "not a port in 1..=65535"))
}

pub fn parse_ip(name: &str, v: &str) -> Result<IpAddr, ConfigError> {
    v.parse::<IpAddr>()
        .map_err(|_| err(name, v, "not an IPv4 or IPv6 address"))
}

/// A DNS name (RFC 1123 labels) or an IP. Nothing else can reach a config file.
pub fn parse_host(name: &str, v: &str) -> Result<Host, ConfigError> {
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let trimmed = v.strip_suffix('.').unwrap_or(v);
    if v.is_empty() || v.len() > 253 || !trimmed.split('.').all(ok_label) {
        return Err(err(name, v, "not a host name or IP address"));
    }
    Ok(Host::Name(v.to_string()))
}

/// `host:port` or `[v6]:port`.
pub fn parse_endpoint(name: &str, v: &str) -> Result<Endpoint, ConfigError> {
    let bad = || err(name, v, "not a host:port pair");
    let (h, p) = if let Some(rest) = v.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        v.rsplit_once(':').ok_or_else(bad)?
    };
    let host = parse_host(name, h).map_err(|_| bad())?;
    let port = parse_port(name, p).map_err(|_| err(name, v, "port not in 1..=65535"))?;
    Ok(Endpoint { host, port })
}

pub fn parse_role(name: &str, v: &str) -> Result<Role, ConfigError> {
    match v {
        "master" => Ok(Role::Master),
        "replica" => Ok(Role::Replica),
        _ => Err(err(
            name,
            v,
            "unknown role (expected master, replica or ordinal)",
        )),
    }
}

/// The first-boot role of a StatefulSet pod, from the ordinal its controller appends to the name
/// (`redis-0`, `redis-1`, ...): ordinal 0 is the master, every other a replica. One rule for
/// every pod of one StatefulSet, so that all of them can share one image and one template;
/// as with `master`/`replica`, the sentinels' answer wins whenever they know a master.
pub fn role_from_ordinal(pod_name: &str) -> Result<Role, &'static str> {
    let (_, ordinal) = pod_name
        .rsplit_once('-')
        .ok_or("no ordinal: expected a StatefulSet pod name ending in -<number>")?;
    // Kubernetes writes ordinals without leading zeros; "redis-00" is not a pod it names.
    if ordinal.is_empty()
        || ordinal.len() > 9
        || !ordinal.bytes().all(|b| b.is_ascii_digit())
        || (ordinal.len() > 1 && ordinal.starts_with('0'))
    {
        return Err("no ordinal: expected a StatefulSet pod name ending in -<number>");
    }
    Ok(if ordinal == "0" {
        Role::Master
    } else {
        Role::Replica
    })
}

/// A pod name as Kubernetes allows it (a DNS label: lower-case alphanumerics and '-', at most 63),
/// which is also all a hostname may hold here.
fn parse_pod_name(name: &str, v: &str) -> Result<String, ConfigError> {
    if v.is_empty()
        || v.len() > 63
        || v.starts_with('-')
        || !v
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(err(
            name,
            v,
            "not a pod name (a DNS label: [a-z0-9-], at most 63 characters)",
        ));
    }
    Ok(v.to_string())
}

/// The kernel's hostname, which Kubernetes sets to the pod's name (Docker: `hostname:`).
pub fn kernel_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => Err(err(name, v, "not a boolean (yes/no)")),
    }
}

/// Paths end up quoted inside config files; characters that would need escaping are refused.
fn parse_path(name: &str, v: &str) -> Result<PathBuf, ConfigError> {
    if v.is_empty()
        || v.len() > 1024
        || v.chars()
            .any(|c| c.is_control() || c == '"' || c == '\\' || c == '\'')
    {
        return Err(err(
            name,
            v,
            "not a usable path (empty, too long, or holds quotes or control characters)",
        ));
    }
    Ok(PathBuf::from(v))
}

/// Group names go into every sentinel directive; keep them to a safe alphabet.
fn parse_group(name: &str, v: &str) -> Result<String, ConfigError> {
    if v.is_empty()
        || v.len() > 64
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(err(
            name,
            v,
            "not a master group name ([A-Za-z0-9._-], 1..64 characters)",
        ));
    }
    Ok(v.to_string())
}

/// Builds the validated configuration from the flags and the environment (`RawEnv`: the
/// process's in production, a map in tests).
pub fn build(flags: &Flags, env: &RawEnv) -> Result<Config, ConfigError> {
    // Checked whenever set, so a bad value is refused even where the role does not need it.
    let pod_name = match env.redisha_pod_name.as_deref() {
        Some(v) => Some(parse_pod_name("REDISHA_POD_NAME", v)?),
        None => None,
    };
    let role = match pick(&flags.role, "--role", &env.redisha_role, "REDISHA_ROLE") {
        Some((n, "ordinal")) => {
            let (from, name) = match (&pod_name, &env.hostname) {
                (Some(p), _) => ("REDISHA_POD_NAME", p.as_str()),
                (None, Some(h)) => (n, h.as_str()),
                (None, None) => {
                    return Err(err(
                        n,
                        "ordinal",
                        "needs the pod's name: set REDISHA_POD_NAME (or a hostname)",
                    ))
                }
            };
            role_from_ordinal(name).map_err(|why| err(from, name, why))?
        }
        Some((n, v)) => parse_role(n, v)?,
        None => {
            return Err(ConfigError {
                name: "--role".into(),
                value: None,
                reason: "missing (set --role master|replica|ordinal or REDISHA_ROLE)".into(),
            })
        }
    };
    let pod_ip = match env.my_pod_ip.as_deref() {
        Some(v) => Some(parse_ip("MY_POD_IP", v)?),
        None => None,
    };
    let port_or = |var: &str, v: &Option<String>, d: u16| match v.as_deref() {
        Some(v) => parse_port(var, v),
        None => Ok(d),
    };
    let redis_port = port_or("MASTER_ANNOUNCE_PORT", &env.master_announce_port, 6379)?;
    let sentinel_port = port_or("SENTINEL_ANNOUNCE_PORT", &env.sentinel_announce_port, 26379)?;
    if redis_port == sentinel_port {
        return Err(err(
            "SENTINEL_ANNOUNCE_PORT",
            &sentinel_port.to_string(),
            "same as MASTER_ANNOUNCE_PORT",
        ));
    }

    let master_host = match env.redis_master_service_host.as_deref() {
        Some(v) => Some(parse_host("REDIS_MASTER_SERVICE_HOST", v)?),
        None => None,
    };
    let master_port = port_or(
        "REDIS_MASTER_SERVICE_PORT",
        &env.redis_master_service_port,
        6379,
    )?;
    let master_service = master_host.map(|host| Endpoint {
        host,
        port: master_port,
    });
    if role == Role::Replica && master_service.is_none() {
        return Err(ConfigError {
            name: "REDIS_MASTER_SERVICE_HOST".into(),
            value: None,
            reason: "missing: the replica role needs the master's host".into(),
        });
    }

    let sentinels = match pick(
        &flags.sentinels,
        "--sentinels",
        &env.redisha_sentinels,
        "REDISHA_SENTINELS",
    ) {
        Some((n, v)) => {
            let list: Result<Vec<_>, _> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| parse_endpoint(n, s))
                .collect();
            let list = list.map_err(|e| err(n, v, e.reason))?;
            if list.is_empty() || list.len() > 32 {
                return Err(err(
                    n,
                    v,
                    "expected 1..32 comma-separated host:port entries",
                ));
            }
            list
        }
        None => master_service
            .as_ref()
            .map(|m| {
                vec![Endpoint {
                    host: m.host.clone(),
                    port: sentinel_port,
                }]
            })
            .unwrap_or_default(),
    };

    let state_dir = match pick(
        &flags.state_dir,
        "--state-dir",
        &env.redisha_state_dir,
        "REDISHA_STATE_DIR",
    ) {
        Some((n, v)) => parse_path(n, v)?,
        None => default_state_dir(pod_ip.is_some(), env.home.as_deref(), role, redis_port),
    };
    let conf_dir = match pick(
        &flags.conf_dir,
        "--conf-dir",
        &env.redisha_conf_dir,
        "REDISHA_CONF_DIR",
    ) {
        Some((n, v)) => Some(parse_path(n, v)?),
        None => None,
    };
    let group = match pick(
        &flags.master_group,
        "--master-group",
        &env.redisha_master_group,
        "REDISHA_MASTER_GROUP",
    ) {
        Some((n, v)) => parse_group(n, v)?,
        None => "mymaster".into(),
    };
    let num = |f: &Option<String>,
               fname: &'static str,
               e: &Option<String>,
               var: &'static str,
               d: u64,
               min: u64,
               max: u64| match pick(f, fname, e, var) {
        Some((n, v)) => parse_num::<u64>(n, v, min, max),
        None => Ok(d),
    };
    let quorum = num(
        &flags.quorum,
        "--quorum",
        &env.redisha_quorum,
        "REDISHA_QUORUM",
        2,
        1,
        255,
    )? as u32;
    let down_after_ms = num(
        &flags.down_after_ms,
        "--down-after-ms",
        &env.redisha_down_after_ms,
        "REDISHA_DOWN_AFTER_MS",
        DEFAULT_DOWN_AFTER_MS,
        100,
        86_400_000,
    )?;
    let failover_timeout_ms = num(
        &flags.failover_timeout_ms,
        "--failover-timeout-ms",
        &env.redisha_failover_timeout_ms,
        "REDISHA_FAILOVER_TIMEOUT_MS",
        DEFAULT_FAILOVER_TIMEOUT_MS,
        1_000,
        86_400_000,
    )?;
    let parallel_syncs = num(
        &flags.parallel_syncs,
        "--parallel-syncs",
        &env.redisha_parallel_syncs,
        "REDISHA_PARALLEL_SYNCS",
        1,
        1,
        64,
    )? as u32;
    // A lone laptop master has no replica to acknowledge writes; requiring one there would make
    // every write fail, so the safety default applies only where there is a pod network.
    let min_rep_default = if pod_ip.is_some() { 1 } else { 0 };
    let min_replicas_to_write = num(
        &flags.min_replicas_to_write,
        "--min-replicas-to-write",
        &env.redisha_min_replicas_to_write,
        "REDISHA_MIN_REPLICAS_TO_WRITE",
        min_rep_default,
        0,
        64,
    )? as u32;
    // An isolated master must stop accepting writes no later than the majority starts a
    // failover (down-after): writes it takes after that are lost when it is demoted.
    let lag_default = (down_after_ms / 1000).saturating_sub(1).clamp(2, 3600);
    let min_replicas_max_lag = num(
        &flags.min_replicas_max_lag,
        "--min-replicas-max-lag",
        &env.redisha_min_replicas_max_lag,
        "REDISHA_MIN_REPLICAS_MAX_LAG",
        lag_default,
        1,
        3600,
    )? as u32;
    let log_format = match pick(
        &flags.log_format,
        "--log-format",
        &env.redisha_log_format,
        "REDISHA_LOG_FORMAT",
    ) {
        Some((_, "text")) | None => LogFormat::Text,
        Some((_, "json")) => LogFormat::Json,
        Some((_, "raw")) => LogFormat::Raw,
        Some((n, v)) => return Err(err(n, v, "unknown log format (expected text, json or raw)")),
    };
    let stop_grace_ms = num(
        &flags.stop_grace_ms,
        "--stop-grace-ms",
        &env.redisha_stop_grace_ms,
        "REDISHA_STOP_GRACE_MS",
        DEFAULT_STOP_GRACE_MS,
        100,
        3_600_000,
    )?;
    let redis_server = match pick(
        &flags.redis_server,
        "--redis-server",
        &env.redisha_redis_server,
        "REDISHA_REDIS_SERVER",
    ) {
        Some((n, v)) => parse_path(n, v)?,
        None => PathBuf::from("redis-server"),
    };
    let handover = match pick(
        &flags.handover,
        "--handover",
        &env.redisha_handover,
        "REDISHA_HANDOVER",
    ) {
        Some((n, v)) => parse_bool(n, v)?,
        None => true,
    };
    // Without a replica required for writes, a master's AOF is the only copy of what it
    // acknowledged: strict unless told otherwise.
    let strict_durability = match env.redisha_durability.as_deref() {
        Some("strict") => true,
        Some("replicated") => false,
        Some(v) => {
            return Err(err(
                "REDISHA_DURABILITY",
                v,
                "not a durability mode (strict or replicated)",
            ))
        }
        None => min_replicas_to_write == 0,
    };
    let discovery_timeout_ms = match env.redisha_discovery_timeout_ms.as_deref() {
        Some(v) => parse_num::<u64>("REDISHA_DISCOVERY_TIMEOUT_MS", v, 0, 3_600_000)?,
        None => DEFAULT_DISCOVERY_TIMEOUT_MS,
    };

    let env_num = |var: &str, v: &Option<String>, d: u64, min: u64, max: u64| match v.as_deref() {
        Some(v) => parse_num::<u64>(var, v, min, max),
        None => Ok(d),
    };
    let dflt = crate::supervise::policy::RestartPolicy::default();
    let restart = crate::supervise::policy::RestartPolicy {
        initial_backoff: std::time::Duration::from_millis(env_num(
            "REDISHA_RESTART_BACKOFF_MS",
            &env.redisha_restart_backoff_ms,
            dflt.initial_backoff.as_millis() as u64,
            10,
            60_000,
        )?),
        budget: env_num(
            "REDISHA_RESTART_BUDGET",
            &env.redisha_restart_budget,
            dflt.budget.into(),
            0,
            1000,
        )? as u32,
        stable_after: std::time::Duration::from_millis(env_num(
            "REDISHA_RESTART_STABLE_MS",
            &env.redisha_restart_stable_ms,
            dflt.stable_after.as_millis() as u64,
            100,
            86_400_000,
        )?),
        ..dflt
    };

    // The stale-entry cleanup (cleanup.rs): 0 turns it off; an entry down for less than
    // down-after is not even s_down, so a shorter staleness would be meaningless.
    let cleanup_interval_ms = match env.redisha_cleanup_interval_ms.as_deref() {
        Some("0") => 0,
        Some(v) => parse_num::<u64>("REDISHA_CLEANUP_INTERVAL_MS", v, 1_000, 86_400_000)?,
        None => crate::cleanup::DEFAULT_INTERVAL_MS,
    };
    let stale_after_ms = env_num(
        "REDISHA_STALE_AFTER_MS",
        &env.redisha_stale_after_ms,
        crate::cleanup::DEFAULT_STALE_AFTER_MS,
        1_000,
        86_400_000,
    )?;
    if stale_after_ms <= down_after_ms {
        return Err(err(
            "REDISHA_STALE_AFTER_MS",
            &stale_after_ms.to_string(),
            format!("must exceed the down-after time ({down_after_ms} ms)"),
        ));
    }

    let maxmemory = match env.redisha_maxmemory.as_deref() {
        Some(v) => {
            crate::memory::parse_setting(v).map_err(|why| err("REDISHA_MAXMEMORY", v, why))?
        }
        None => crate::memory::Setting::Auto,
    };

    let auth = build_auth(env, pod_ip.is_some())?;
    let tls = build_tls(env)?;

    Ok(Config {
        auth,
        tls,
        restart,
        role,
        pod_ip,
        redis_port,
        sentinel_port,
        master_service,
        sentinels,
        state_dir,
        conf_dir,
        group,
        quorum,
        down_after_ms,
        failover_timeout_ms,
        parallel_syncs,
        min_replicas_to_write,
        min_replicas_max_lag,
        log_format,
        stop_grace_ms,
        redis_server,
        handover,
        strict_durability,
        discovery_timeout_ms,
        cleanup_interval_ms,
        stale_after_ms,
        maxmemory,
        memory: crate::memory::Detected::default(),
    })
}

/// Checks a secret without ever echoing it: errors name the variable only.
fn check_secret(name: &str, v: &str) -> Result<Secret, ConfigError> {
    let bad = |reason: &str| ConfigError {
        name: name.into(),
        value: None,
        reason: reason.into(),
    };
    if v.is_empty() {
        return Err(bad("empty"));
    }
    if v.len() > 4096 {
        return Err(bad("longer than 4096 bytes"));
    }
    if v.chars().any(char::is_control) {
        return Err(bad("holds control characters (value not shown)"));
    }
    Ok(Secret(v.to_string()))
}

/// `VAR` or `VAR_FILE` (a mounted Kubernetes Secret; one trailing newline is dropped).
fn secret_from(
    env_val: &Option<String>,
    var: &str,
    file_val: &Option<String>,
    file_var: &str,
) -> Result<Option<Secret>, ConfigError> {
    match (env_val, file_val) {
        (Some(_), Some(_)) => Err(ConfigError {
            name: var.into(),
            value: None,
            reason: format!("set both {var} and {file_var}; set one"),
        }),
        (Some(v), None) => check_secret(var, v).map(Some),
        (None, Some(path)) => {
            let p = parse_path(file_var, path)?;
            let text = std::fs::read_to_string(&p)
                .map_err(|e| err(file_var, path, format!("cannot read: {}", e.kind())))?;
            let text = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text);
            check_secret(file_var, text).map(Some)
        }
        (None, None) => Ok(None),
    }
}

fn build_auth(env: &RawEnv, in_pod: bool) -> Result<Auth, ConfigError> {
    let redis = secret_from(
        &env.redis_password,
        "REDIS_PASSWORD",
        &env.redis_password_file,
        "REDIS_PASSWORD_FILE",
    )?;
    let sentinel = secret_from(
        &env.redis_sentinel_password,
        "REDIS_SENTINEL_PASSWORD",
        &env.redis_sentinel_password_file,
        "REDIS_SENTINEL_PASSWORD_FILE",
    )?
    .or_else(|| redis.clone());
    let allow_empty = match env.allow_empty_password.as_deref() {
        Some(v) => parse_bool("ALLOW_EMPTY_PASSWORD", v)?,
        None => false,
    };
    // Reachable beyond loopback with no password: anyone on the pod network would own the data.
    if in_pod && redis.is_none() && !allow_empty {
        return Err(ConfigError {
            name: "REDIS_PASSWORD".into(),
            value: None,
            reason: "no password while reachable on MY_POD_IP: set REDIS_PASSWORD_FILE (a mounted Secret) or REDIS_PASSWORD, or ALLOW_EMPTY_PASSWORD=yes to run open".into(),
        });
    }
    Ok(Auth { redis, sentinel })
}

fn build_tls(env: &RawEnv) -> Result<Option<TlsFiles>, ConfigError> {
    let vars = [
        ("REDISHA_TLS_CERT_FILE", &env.redisha_tls_cert_file),
        ("REDISHA_TLS_KEY_FILE", &env.redisha_tls_key_file),
        ("REDISHA_TLS_CA_FILE", &env.redisha_tls_ca_file),
    ];
    if vars.iter().all(|(_, v)| v.is_none()) {
        return Ok(None);
    }
    // Each value given is checked first, so the error names the variable that is wrong.
    for (name, v) in vars {
        if let Some(v) = v {
            let p = parse_path(name, v)?;
            if std::fs::File::open(&p).is_err() {
                return Err(err(name, v, "cannot be read"));
            }
        }
    }
    let mut paths = Vec::new();
    for (name, v) in vars {
        let Some(v) = v else {
            return Err(ConfigError {
                name: name.into(),
                value: None,
                reason: "missing: TLS needs the cert, key and CA files".into(),
            });
        };
        paths.push(PathBuf::from(v));
    }
    let [cert, key, ca]: [PathBuf; 3] = paths
        .try_into()
        .map_err(|_| err("REDISHA_TLS_CERT_FILE", "", "internal"))?;
    Ok(Some(TlsFiles { cert, key, ca }))
}

/// In a pod the state lives in the volume at /data; on a laptop it goes under $HOME, one directory
/// per role and port so a local master and replica do not share files.
fn default_state_dir(in_pod: bool, home: Option<&str>, role: Role, port: u16) -> PathBuf {
    if in_pod {
        return PathBuf::from("/data");
    }
    match home {
        Some(h) if !h.is_empty() => PathBuf::from(h)
            .join(".local/state/redisha-init")
            .join(format!("{role}-{port}")),
        _ => PathBuf::from(format!("/tmp/redisha-init-{role}-{port}")),
    }
}

/// Convenience for tests: a config from a map of variables and flags.
#[cfg(test)]
pub fn build_from_map(flags: &Flags, vars: &HashMap<&str, &str>) -> Result<Config, ConfigError> {
    let env = RawEnv::from_os(
        vars.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    )?;
    build(flags, &env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags_role(r: &str) -> Flags {
        Flags {
            role: Some(r.into()),
            ..Default::default()
        }
    }

    #[test]
    fn local_master_needs_nothing() {
        let c = build_from_map(&flags_role("master"), &HashMap::from([("HOME", "/home/u")]))
            .expect("valid");
        assert_eq!(c.role, Role::Master);
        assert_eq!(c.redis_port, 6379);
        assert_eq!(c.sentinel_port, 26379);
        assert_eq!(c.announce_ip().to_string(), "127.0.0.1");
        assert_eq!(
            c.state_dir,
            PathBuf::from("/home/u/.local/state/redisha-init/master-6379")
        );
        assert_eq!(c.min_replicas_to_write, 0);
        assert!(c.sentinels.is_empty());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("MY_POD_IP", "10.0.0.300", "MY_POD_IP"),
            ("MY_POD_IP", "", "MY_POD_IP"),
            ("MASTER_ANNOUNCE_PORT", "0", "MASTER_ANNOUNCE_PORT"),
            ("MASTER_ANNOUNCE_PORT", "65536", "MASTER_ANNOUNCE_PORT"),
            ("SENTINEL_ANNOUNCE_PORT", "x", "SENTINEL_ANNOUNCE_PORT"),
            ("REDISHA_QUORUM", "two", "REDISHA_QUORUM"),
            ("REDISHA_DOWN_AFTER_MS", "5s", "REDISHA_DOWN_AFTER_MS"),
            (
                "REDISHA_FAILOVER_TIMEOUT_MS",
                "-1",
                "REDISHA_FAILOVER_TIMEOUT_MS",
            ),
            (
                "REDISHA_PARALLEL_SYNCS",
                "1\nbind 0.0.0.0",
                "REDISHA_PARALLEL_SYNCS",
            ),
            ("REDISHA_MASTER_GROUP", "my master", "REDISHA_MASTER_GROUP"),
            (
                "REDISHA_MASTER_GROUP",
                "g\nsentinel monitor x",
                "REDISHA_MASTER_GROUP",
            ),
            ("REDISHA_LOG_FORMAT", "xml", "REDISHA_LOG_FORMAT"),
            ("REDISHA_STATE_DIR", "/tmp/a\"b", "REDISHA_STATE_DIR"),
            ("REDISHA_STATE_DIR", "/tmp/a\nb", "REDISHA_STATE_DIR"),
            ("REDISHA_ROLE", "leader", "REDISHA_ROLE"),
            ("REDISHA_SENTINELS", "a:1,b", "REDISHA_SENTINELS"),
            (
                "REDIS_MASTER_SERVICE_HOST",
                "redis primary",
                "REDIS_MASTER_SERVICE_HOST",
            ),
            (
                "REDIS_MASTER_SERVICE_HOST",
                "x\nslaveof 1.2.3.4 1",
                "REDIS_MASTER_SERVICE_HOST",
            ),
            ("REDISHA_HANDOVER", "maybe", "REDISHA_HANDOVER"),
            ("REDISHA_MAXMEMORY", "1.5gb", "REDISHA_MAXMEMORY"),
            ("REDISHA_MAXMEMORY", "512", "REDISHA_MAXMEMORY"),
            ("REDISHA_MAXMEMORY", "1gb\nmaxmemory 0", "REDISHA_MAXMEMORY"),
        ];
        for (var, val, named) in cases {
            let mut m =
                HashMap::from([(*var, *val), ("REDIS_MASTER_SERVICE_HOST", "redis-primary")]);
            if *var == "REDIS_MASTER_SERVICE_HOST" {
                m.insert(var, val);
            }
            let flags = if *var == "REDISHA_ROLE" {
                Flags::default()
            } else {
                flags_role("replica")
            };
            let e =
                build_from_map(&flags, &m).expect_err(&format!("{var}={val:?} must be refused"));
            assert_eq!(e.name, *named, "{var}={val:?}: {e}");
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn replica_needs_master_host() {
        let e = build_from_map(&flags_role("replica"), &HashMap::new()).expect_err("missing host");
        assert_eq!(e.name, "REDIS_MASTER_SERVICE_HOST");
    }

    #[test]
    fn flag_overrides_env() {
        let f = Flags {
            role: Some("master".into()),
            quorum: Some("3".into()),
            ..Default::default()
        };
        let c = build_from_map(
            &f,
            &HashMap::from([("REDISHA_QUORUM", "2"), ("REDISHA_ROLE", "replica")]),
        )
        .expect("valid");
        assert_eq!(c.quorum, 3);
        assert_eq!(c.role, Role::Master);
    }

    #[test]
    fn sentinel_default_is_master_service() {
        let c = build_from_map(
            &flags_role("replica"),
            &HashMap::from([
                ("REDIS_MASTER_SERVICE_HOST", "redis-primary"),
                ("MY_POD_IP", "10.1.2.3"),
                ("ALLOW_EMPTY_PASSWORD", "yes"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.sentinels.len(), 1);
        assert_eq!(c.sentinels[0].to_string(), "redis-primary:26379");
        assert_eq!(c.min_replicas_to_write, 1);
        assert_eq!(c.min_replicas_max_lag, 4, "derived from down-after 5000");
        assert_eq!(c.state_dir, PathBuf::from("/data"));
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoint("X", "a.b:1").map(|e| e.to_string()),
            Ok("a.b:1".into())
        );
        assert_eq!(
            parse_endpoint("X", "[::1]:26379").map(|e| e.to_string()),
            Ok("[::1]:26379".into())
        );
        assert!(parse_endpoint("X", "a.b").is_err());
        assert!(parse_endpoint("X", "a b:1").is_err());
        assert!(parse_endpoint("X", "a:0").is_err());
    }

    #[test]
    fn pod_without_password_is_refused_unless_allowed() {
        let e = build_from_map(
            &flags_role("master"),
            &HashMap::from([("MY_POD_IP", "10.1.2.3")]),
        )
        .expect_err("refused");
        assert_eq!(e.name, "REDIS_PASSWORD");
        assert!(e.to_string().contains("ALLOW_EMPTY_PASSWORD"), "{e}");
        let c = build_from_map(
            &flags_role("master"),
            &HashMap::from([("MY_POD_IP", "10.1.2.3"), ("REDIS_PASSWORD", "s3cret")]),
        )
        .expect("valid");
        assert_eq!(c.auth.redis.as_ref().map(Secret::expose), Some("s3cret"));
        assert_eq!(
            c.auth.sentinel.as_ref().map(Secret::expose),
            Some("s3cret"),
            "sentinel defaults to the same secret"
        );
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "Debug of the config never shows a secret"
        );
    }

    #[test]
    fn secret_errors_never_echo_the_value() {
        for (var, val) in [
            ("REDIS_PASSWORD", "abc\ndef"),
            ("REDIS_SENTINEL_PASSWORD", "x\u{7f}y"),
            ("REDIS_PASSWORD", ""),
        ] {
            let e = build_from_map(&flags_role("master"), &HashMap::from([(var, val)]))
                .expect_err("bad secret");
            assert_eq!(e.name, var);
            assert!(e.value.is_none());
            if !val.is_empty() {
                assert!(
                    !e.to_string().contains(val) && !e.to_string().contains("abc"),
                    "{e}"
                );
            }
        }
        let dir = std::env::temp_dir().join(format!("redisha-pw-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").expect("write");
        let path = dir.display().to_string();
        let c = build_from_map(
            &flags_role("master"),
            &HashMap::from([("REDIS_PASSWORD_FILE", path.as_str())]),
        )
        .expect("valid");
        assert_eq!(c.auth.redis.as_ref().map(Secret::expose), Some("from-file"));
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn non_utf8_secret_is_not_echoed() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(b"hunter2\xff".to_vec());
        let e = RawEnv::from_os([(OsString::from("REDIS_PASSWORD"), bad)]).expect_err("refused");
        assert_eq!(e.name, "REDIS_PASSWORD");
        assert!(
            e.value.is_none() && !e.to_string().contains("hunter2"),
            "{e}"
        );
        let e = RawEnv::from_os([(
            OsString::from("MY_POD_IP"),
            OsString::from_vec(b"10.0.0.\xff".to_vec()),
        )])
        .expect_err("refused");
        assert!(
            e.to_string().contains("10.0.0."),
            "non-secrets are shown: {e}"
        );
    }

    #[test]
    fn long_values_are_cut_in_errors() {
        let long = "x".repeat(1 << 20);
        let e = build_from_map(
            &flags_role("master"),
            &HashMap::from([("REDISHA_QUORUM", long.as_str())]),
        )
        .expect_err("bad");
        assert!(e.to_string().len() < 200, "{}", e.to_string().len());
    }

    #[test]
    fn role_from_ordinal_table() {
        let no = "no ordinal: expected a StatefulSet pod name ending in -<number>";
        let cases: &[(&str, Result<Role, &str>)] = &[
            ("redis-0", Ok(Role::Master)),
            ("redis-1", Ok(Role::Replica)),
            ("redis-2", Ok(Role::Replica)),
            ("redis-10", Ok(Role::Replica)),
            ("my-redis-ha-0", Ok(Role::Master)),
            ("my-redis-ha-3", Ok(Role::Replica)),
            // The seed's and compose's names carry no StatefulSet ordinal of 0..: "-1" would be
            // read as one, so they are not for this rule (documented).
            ("redis-primary", Err(no)),
            ("redis", Err(no)),
            ("redis-", Err(no)),
            ("redis-00", Err(no)),
            ("redis-01", Err(no)),
            ("redis-0a", Err(no)),
            ("redis-9999999999", Err(no)),
            ("", Err(no)),
        ];
        for (name, want) in cases {
            assert_eq!(role_from_ordinal(name), *want, "{name:?}");
        }
    }

    #[test]
    fn ordinal_role_from_pod_name_or_hostname() {
        let with = |pod: Option<&str>, host: Option<&str>| {
            let mut vars = HashMap::from([
                ("REDISHA_ROLE", "ordinal"),
                ("REDIS_MASTER_SERVICE_HOST", "redis-0.redis-headless"),
            ]);
            if let Some(p) = pod {
                vars.insert("REDISHA_POD_NAME", p);
            }
            let mut env = RawEnv::from_os(
                vars.iter()
                    .map(|(k, v)| (OsString::from(k), OsString::from(v))),
            )
            .expect("env");
            env.hostname = host.map(str::to_string);
            super::build(&Flags::default(), &env)
        };
        // (REDISHA_POD_NAME, hostname, role or the variable the error names)
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Result<Role, &'a str>);
        let cases: &[Case] = &[
            (Some("redis-0"), None, Ok(Role::Master)),
            (Some("redis-2"), None, Ok(Role::Replica)),
            // The variable wins over the hostname.
            (Some("redis-1"), Some("redis-0"), Ok(Role::Replica)),
            (None, Some("redis-0"), Ok(Role::Master)),
            (None, Some("redis-1"), Ok(Role::Replica)),
            (None, Some("laptop"), Err("REDISHA_ROLE")),
            (None, None, Err("REDISHA_ROLE")),
            (Some("redis-x"), Some("redis-0"), Err("REDISHA_POD_NAME")),
            (Some("Redis-0"), None, Err("REDISHA_POD_NAME")),
            (Some(""), None, Err("REDISHA_POD_NAME")),
        ];
        for (pod, host, want) in cases {
            let got = with(*pod, *host).map(|c| c.role).map_err(|e| e.name);
            assert_eq!(got, want.map_err(str::to_string), "{pod:?} {host:?}");
        }
        // --role wins over REDISHA_ROLE, as for every flag.
        let mut env = RawEnv::from_os([
            (OsString::from("REDISHA_ROLE"), OsString::from("ordinal")),
            (
                OsString::from("REDISHA_POD_NAME"),
                OsString::from("redis-1"),
            ),
        ])
        .expect("env");
        env.hostname = None;
        assert_eq!(
            super::build(&flags_role("master"), &env)
                .map(|c| c.role)
                .ok(),
            Some(Role::Master)
        );
    }
}
