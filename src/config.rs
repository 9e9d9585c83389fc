//! Environment + flags → one typed, validated `Config`.
//!
//! Everything is checked here, before anything starts: a bad value ends the program with one line
//! naming the variable (exit 78, EX_CONFIG). Values never reach a config file unless they passed a
//! validator that rejects whitespace and control characters, so no value can inject a directive.

#[cfg(test)]
use std::collections::HashMap;
#[cfg(test)]
use std::ffi::OsString;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

mod vars;
pub use vars::{Flags, RawEnv, Sources, VARS};

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

/// The one text form of an address (IPv6 in brackets, as Redis's own `anetFormatAddr` and URLs
/// write it). Every address string this program prints or keys a map with comes from here, so
/// two strings are equal exactly when the endpoints are.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            h => write!(f, "{h}:{}", self.port),
        }
    }
}

impl Endpoint {
    /// An address a server reports as two fields: Sentinel's `ip`/`port`, INFO's
    /// `master_host`/`master_port` and `slaveN:ip=..,port=..`, `GET-MASTER-ADDR-BY-NAME`,
    /// sentinel.conf's words. Redis writes IPv6 there bare (`fd88::22`); brackets are accepted
    /// too so a hand-written value compares equal. `None` for anything that is no IP or DNS name.
    pub fn from_fields(host: &str, port: &str) -> Option<Endpoint> {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Some(Endpoint {
            host: parse_host("address", host).ok()?,
            port: parse_port("address", port).ok()?,
        })
    }

    /// An address as one string: `host:port`, `[v6]:port` (this type's Display, and Sentinel's
    /// `name` of a replica), or bare `v6:port`. The bare form is read with the port after the
    /// last colon, as `REDISHA_SENTINELS` and `--to` always read it; brackets are what we print
    /// and what an operator should write, since `fd88::1:22` alone is also a valid address.
    pub fn parse(s: &str) -> Option<Endpoint> {
        parse_endpoint("address", s).ok()
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
    /// Passwords and TLS files: all that the I/O layer (`redisio`) gets of the configuration.
    pub conn: Conn,
    pub discovery_timeout_ms: u64,
    /// After a full outage: how long a returning majority waits for a lost master before it
    /// elects one of its members (outage.rs); 0 = never.
    pub outage_elect_ms: u64,
    pub restart: RestartPolicy,
    /// `REDISHA_MAXMEMORY`.
    pub maxmemory: crate::memory::Setting,
    /// The container's memory limit, read at start (main.rs); the default (nothing found) keeps
    /// `build` pure.
    pub memory: crate::memory::Detected,
    /// `REDISHA_MASTER_PROXY_*`; None: no proxy (proxy/mod.rs).
    pub proxy: Option<crate::proxy::Settings>,
    /// ACL users (`REDISHA_ACL_DIR`, acl.rs); `None`: the shared password of before.
    pub acl: Option<Acl>,
    /// `REDISHA_METRICS_PORT`: PID 1 serves Prometheus metrics there (metrics.rs); None = off.
    pub metrics_port: Option<u16>,
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
    /// The ACL user our connections log in as (`redisha` with ACL users); `None`: `default`.
    pub user: Option<String>,
}

/// What a connection to a data node or a sentinel needs: the passwords and the TLS files.
/// Built once with the `Config` and handed to every `redisio` call instead of the whole
/// `Config`, so the I/O layer cannot come to depend on anything else in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conn {
    pub auth: Auth,
    pub tls: Option<TlsFiles>,
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

/// Defaults, with the reasoning in README.md ("Timing defaults").
pub const DEFAULT_DOWN_AFTER_MS: u64 = 5_000;
pub const DEFAULT_FAILOVER_TIMEOUT_MS: u64 = 10_000;
pub const DEFAULT_STOP_GRACE_MS: u64 = 8_000;
pub const DEFAULT_DISCOVERY_TIMEOUT_MS: u64 = 20_000;

/// How the supervisor restarts a child that exits unexpectedly (REDISHA_RESTART_*; the decision
/// itself is supervise::policy's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub initial_backoff: std::time::Duration,
    pub max_backoff: std::time::Duration,
    /// Restarts allowed in a row before giving up.
    pub budget: u32,
    /// A child that ran this long is considered healthy again and gets its whole budget back.
    pub stable_after: std::time::Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: std::time::Duration::from_millis(500),
            max_backoff: std::time::Duration::from_secs(30),
            budget: 5,
            stable_after: std::time::Duration::from_secs(60),
        }
    }
}

/// The stale-entry cleanup (cleanup.rs): how often it looks, and how long an entry must have
/// been s_down before it is forgotten.
pub const DEFAULT_CLEANUP_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_STALE_AFTER_MS: u64 = 60_000;

pub mod acl;
mod build;
mod parse;
#[cfg(test)]
mod tests;
mod timings;

pub use acl::Acl;
pub use build::build;
#[cfg(test)]
pub use build::build_from_map;
pub use parse::*;
#[cfg(test)]
pub use timings::tilt_period_ms;
