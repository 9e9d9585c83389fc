//! The validators: each turns one raw value into a typed one or a one-line error naming its
//! source. Nothing that fails them reaches a rendered file.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use super::{err, ConfigError, Endpoint, Host, Role};

pub(super) fn parse_num<T: std::str::FromStr + PartialOrd + fmt::Display + Copy>(
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
pub(super) fn parse_pod_name(name: &str, v: &str) -> Result<String, ConfigError> {
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

pub(super) fn parse_bool(name: &str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => Err(err(name, v, "not a boolean (yes/no)")),
    }
}

/// Paths end up quoted inside config files; characters that would need escaping are refused.
pub(super) fn parse_path(name: &str, v: &str) -> Result<PathBuf, ConfigError> {
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
pub(super) fn parse_group(name: &str, v: &str) -> Result<String, ConfigError> {
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
