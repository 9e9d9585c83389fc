//! Flags and environment → one validated `Config`, every value through a validator of
//! parse.rs, in the order the README's table lists them.

#[cfg(test)]
use std::collections::HashMap;
#[cfg(test)]
use std::ffi::OsString;
use std::path::PathBuf;

use super::parse::*;
use super::*;

/// Builds the validated configuration from the flags and the environment (`RawEnv`: the
/// process's in production, a map in tests).
pub fn build(flags: &Flags, env: &RawEnv) -> Result<Config, ConfigError> {
    let src = Sources { flags, env };
    let role = role(&src, env)?;
    let (pod_ip, redis_port, sentinel_port, master_service) = network(env, role)?;
    let sentinels = sentinels(&src, &master_service, sentinel_port)?;
    let state_dir = state_dir(&src, env, &pod_ip, role, redis_port)?;
    let conf_dir = match src.pick("REDISHA_CONF_DIR") {
        Some((n, v)) => Some(parse_path(n, v)?),
        None => None,
    };
    let group = match src.pick("REDISHA_MASTER_GROUP") {
        Some((n, v)) => parse_group(n, v)?,
        None => "mymaster".into(),
    };
    let n = numbers(&src, pod_ip.is_some())?;
    let p = process(&src, env, &n)?;
    let restart = restart_policy(&src)?;
    let (cleanup_interval_ms, stale_after_ms) = cleanup(&src, n.down_after_ms)?;

    let maxmemory = match env.get("REDISHA_MAXMEMORY") {
        Some(v) => {
            crate::memory::parse_setting(v).map_err(|why| err("REDISHA_MAXMEMORY", v, why))?
        }
        None => crate::memory::Setting::Auto,
    };

    let proxy = crate::proxy::settings(env, redis_port, sentinel_port)?;
    let metrics_port = match env.get("REDISHA_METRICS_PORT") {
        Some(v) => match parse_port("REDISHA_METRICS_PORT", v)? {
            p if p == redis_port || p == sentinel_port => {
                return Err(err(
                    "REDISHA_METRICS_PORT",
                    v,
                    "same as the redis or sentinel port",
                ))
            }
            p => Some(p),
        },
        None => None,
    };
    let (auth, acl) = super::acl::build_auth_acl(env, pod_ip.is_some())?;
    let tls = build_tls(env)?;

    Ok(Config {
        conn: Conn { auth, tls },
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
        quorum: n.quorum,
        down_after_ms: n.down_after_ms,
        failover_timeout_ms: n.failover_timeout_ms,
        parallel_syncs: n.parallel_syncs,
        min_replicas_to_write: n.min_replicas_to_write,
        min_replicas_max_lag: n.min_replicas_max_lag,
        log_format: p.log_format,
        stop_grace_ms: p.stop_grace_ms,
        redis_server: p.redis_server,
        handover: p.handover,
        strict_durability: p.strict_durability,
        discovery_timeout_ms: p.discovery_timeout_ms,
        outage_elect_ms: p.outage_elect_ms,
        cleanup_interval_ms,
        stale_after_ms,
        maxmemory,
        memory: crate::memory::Detected::default(),
        proxy,
        acl,
        metrics_port,
    })
}

/// A numeric setting: its flag if given, else its variable, else the default (a variable
/// without a flag: the variable, else the default).
fn num(
    src: &Sources,
    var: &'static str,
    d: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    match src.pick(var) {
        Some((n, v)) => parse_num::<u64>(n, v, *range.start(), *range.end()),
        None => Ok(d),
    }
}

fn role(src: &Sources, env: &RawEnv) -> Result<Role, ConfigError> {
    // Checked whenever set, so a bad value is refused even where the role does not need it.
    let pod_name = match env.get("REDISHA_POD_NAME") {
        Some(v) => Some(parse_pod_name("REDISHA_POD_NAME", v)?),
        None => None,
    };
    let role = match src.pick("REDISHA_ROLE") {
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
    Ok(role)
}

/// This pod's address, its two ports and the master Service.
fn network(
    env: &RawEnv,
    role: Role,
) -> Result<(Option<IpAddr>, u16, u16, Option<Endpoint>), ConfigError> {
    let pod_ip = match env.get("MY_POD_IP") {
        // status.podIPs of a dual-stack pod: Redis announces one address, so the operator must
        // pick the family (README, "IPv6 and dual stack") rather than us guessing one.
        Some(v) if v.contains(',') => {
            return Err(err(
                "MY_POD_IP",
                v,
                "a list: give one address (the downward API's status.podIP, not status.podIPs)",
            ))
        }
        Some(v) => Some(parse_ip("MY_POD_IP", v)?),
        None => None,
    };
    let port_or = |var: &str, v: Option<&str>, d: u16| match v {
        Some(v) => parse_port(var, v),
        None => Ok(d),
    };
    let redis_port = port_or(
        "MASTER_ANNOUNCE_PORT",
        env.get("MASTER_ANNOUNCE_PORT"),
        6379,
    )?;
    let sentinel_port = port_or(
        "SENTINEL_ANNOUNCE_PORT",
        env.get("SENTINEL_ANNOUNCE_PORT"),
        26379,
    )?;
    if redis_port == sentinel_port {
        return Err(err(
            "SENTINEL_ANNOUNCE_PORT",
            &sentinel_port.to_string(),
            "same as MASTER_ANNOUNCE_PORT",
        ));
    }

    let master_host = match env.get("REDIS_MASTER_SERVICE_HOST") {
        Some(v) => Some(parse_host("REDIS_MASTER_SERVICE_HOST", v)?),
        None => None,
    };
    let master_port = port_or(
        "REDIS_MASTER_SERVICE_PORT",
        env.get("REDIS_MASTER_SERVICE_PORT"),
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
    Ok((pod_ip, redis_port, sentinel_port, master_service))
}

fn sentinels(
    src: &Sources,
    master_service: &Option<Endpoint>,
    sentinel_port: u16,
) -> Result<Vec<Endpoint>, ConfigError> {
    let sentinels = match src.pick("REDISHA_SENTINELS") {
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
    Ok(sentinels)
}

fn state_dir(
    src: &Sources,
    env: &RawEnv,
    pod_ip: &Option<IpAddr>,
    role: Role,
    redis_port: u16,
) -> Result<PathBuf, ConfigError> {
    let state_dir = match src.pick("REDISHA_STATE_DIR") {
        Some((n, v)) => parse_path(n, v)?,
        None => {
            // HOME becomes part of a path in the rendered files: it passes the same check as a
            // path we are given (an empty HOME means none).
            let home = match env.get("HOME") {
                Some(h) if !h.is_empty() && pod_ip.is_none() => {
                    Some(parse_path("HOME", h)?.to_string_lossy().into_owned())
                }
                _ => None,
            };
            default_state_dir(pod_ip.is_some(), home.as_deref(), role, redis_port)
        }
    };
    Ok(state_dir)
}

/// Sentinel's and the data node's replication numbers.
struct Numbers {
    quorum: u32,
    down_after_ms: u64,
    failover_timeout_ms: u64,
    parallel_syncs: u32,
    min_replicas_to_write: u32,
    min_replicas_max_lag: u32,
}

fn numbers(src: &Sources, in_pod: bool) -> Result<Numbers, ConfigError> {
    let quorum = num(src, "REDISHA_QUORUM", 2, 1..=255)? as u32;
    let down_after_ms = num(
        src,
        "REDISHA_DOWN_AFTER_MS",
        DEFAULT_DOWN_AFTER_MS,
        100..=86_400_000,
    )?;
    let failover_timeout_ms = num(
        src,
        "REDISHA_FAILOVER_TIMEOUT_MS",
        DEFAULT_FAILOVER_TIMEOUT_MS,
        1_000..=86_400_000,
    )?;
    let parallel_syncs = num(src, "REDISHA_PARALLEL_SYNCS", 1, 1..=64)? as u32;
    // A lone laptop master has no replica to acknowledge writes; requiring one there would make
    // every write fail, so the safety default applies only where there is a pod network.
    let min_rep_default = if in_pod { 1 } else { 0 };
    let min_replicas_to_write = num(
        src,
        "REDISHA_MIN_REPLICAS_TO_WRITE",
        min_rep_default,
        0..=64,
    )? as u32;
    let lag_default = timings::default_max_lag_s(down_after_ms);
    let min_replicas_max_lag =
        num(src, "REDISHA_MIN_REPLICAS_MAX_LAG", lag_default, 1..=3600)? as u32;
    Ok(Numbers {
        quorum,
        down_after_ms,
        failover_timeout_ms,
        parallel_syncs,
        min_replicas_to_write,
        min_replicas_max_lag,
    })
}

/// How PID 1 itself behaves: logs, stop, the server binary, handover, durability, discovery.
struct Process {
    log_format: LogFormat,
    stop_grace_ms: u64,
    redis_server: PathBuf,
    handover: bool,
    strict_durability: bool,
    discovery_timeout_ms: u64,
    outage_elect_ms: u64,
}

fn process(src: &Sources, env: &RawEnv, n: &Numbers) -> Result<Process, ConfigError> {
    let log_format = match src.pick("REDISHA_LOG_FORMAT") {
        Some((_, "text")) | None => LogFormat::Text,
        Some((_, "json")) => LogFormat::Json,
        Some((_, "raw")) => LogFormat::Raw,
        Some((n, v)) => return Err(err(n, v, "unknown log format (expected text, json or raw)")),
    };
    let stop_grace_ms = num(
        src,
        "REDISHA_STOP_GRACE_MS",
        DEFAULT_STOP_GRACE_MS,
        100..=3_600_000,
    )?;
    let redis_server = match src.pick("REDISHA_REDIS_SERVER") {
        Some((n, v)) => parse_path(n, v)?,
        None => PathBuf::from("redis-server"),
    };
    let handover = match src.pick("REDISHA_HANDOVER") {
        Some((n, v)) => parse_bool(n, v)?,
        None => true,
    };
    // Without a replica required for writes, a master's AOF is the only copy of what it
    // acknowledged: strict unless told otherwise.
    let strict_durability = match env.get("REDISHA_DURABILITY") {
        Some("strict") => true,
        Some("replicated") => false,
        Some(v) => {
            return Err(err(
                "REDISHA_DURABILITY",
                v,
                "not a durability mode (strict or replicated)",
            ))
        }
        None => n.min_replicas_to_write == 0,
    };
    let discovery_timeout_ms = match env.get("REDISHA_DISCOVERY_TIMEOUT_MS") {
        Some(v) => parse_num::<u64>("REDISHA_DISCOVERY_TIMEOUT_MS", v, 0, 3_600_000)?,
        None => DEFAULT_DISCOVERY_TIMEOUT_MS,
    };
    let outage_elect_ms = match env.get("REDISHA_OUTAGE_ELECT_MS") {
        Some(v) => parse_num::<u64>("REDISHA_OUTAGE_ELECT_MS", v, 0, 86_400_000)?,
        None => timings::default_outage_elect_ms(n.down_after_ms, n.failover_timeout_ms),
    };
    Ok(Process {
        log_format,
        stop_grace_ms,
        redis_server,
        handover,
        strict_durability,
        discovery_timeout_ms,
        outage_elect_ms,
    })
}

fn restart_policy(src: &Sources) -> Result<RestartPolicy, ConfigError> {
    let dflt = RestartPolicy::default();
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let backoff_ms = ms(dflt.initial_backoff);
    let stable_ms = ms(dflt.stable_after);
    let backoff = num(src, "REDISHA_RESTART_BACKOFF_MS", backoff_ms, 10..=60_000)?;
    let budget = num(src, "REDISHA_RESTART_BUDGET", dflt.budget.into(), 0..=1000)?;
    let stable = num(
        src,
        "REDISHA_RESTART_STABLE_MS",
        stable_ms,
        100..=86_400_000,
    )?;
    Ok(RestartPolicy {
        initial_backoff: std::time::Duration::from_millis(backoff),
        budget: budget as u32,
        stable_after: std::time::Duration::from_millis(stable),
        ..dflt
    })
}

/// `(cleanup_interval_ms, stale_after_ms)`.
fn cleanup(src: &Sources, down_after_ms: u64) -> Result<(u64, u64), ConfigError> {
    let env = src.env;
    // The stale-entry cleanup (cleanup.rs): 0 turns it off; an entry down for less than
    // down-after is not even s_down, so a shorter staleness would be meaningless.
    let cleanup_interval_ms = match env.get("REDISHA_CLEANUP_INTERVAL_MS") {
        Some("0") => 0,
        Some(v) => parse_num::<u64>("REDISHA_CLEANUP_INTERVAL_MS", v, 1_000, 86_400_000)?,
        None => DEFAULT_CLEANUP_INTERVAL_MS,
    };
    let stale_after_ms = num(
        src,
        "REDISHA_STALE_AFTER_MS",
        DEFAULT_STALE_AFTER_MS,
        1_000..=86_400_000,
    )?;
    if stale_after_ms <= down_after_ms {
        return Err(err(
            "REDISHA_STALE_AFTER_MS",
            &stale_after_ms.to_string(),
            format!("must exceed the down-after time ({down_after_ms} ms)"),
        ));
    }
    Ok((cleanup_interval_ms, stale_after_ms))
}

/// Checks a secret without ever echoing it: errors name the variable only.
pub(super) fn check_secret(name: &str, v: &str) -> Result<Secret, ConfigError> {
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
pub(super) fn secret_from(
    env_val: Option<&str>,
    var: &str,
    file_val: Option<&str>,
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

pub(super) fn build_auth(env: &RawEnv, in_pod: bool) -> Result<Auth, ConfigError> {
    let redis = secret_from(
        env.get("REDIS_PASSWORD"),
        "REDIS_PASSWORD",
        env.get("REDIS_PASSWORD_FILE"),
        "REDIS_PASSWORD_FILE",
    )?;
    let sentinel = secret_from(
        env.get("REDIS_SENTINEL_PASSWORD"),
        "REDIS_SENTINEL_PASSWORD",
        env.get("REDIS_SENTINEL_PASSWORD_FILE"),
        "REDIS_SENTINEL_PASSWORD_FILE",
    )?
    .or_else(|| redis.clone());
    let allow_empty = match env.get("ALLOW_EMPTY_PASSWORD") {
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
    Ok(Auth {
        redis,
        sentinel,
        user: None,
    })
}

pub(super) fn build_tls(env: &RawEnv) -> Result<Option<TlsFiles>, ConfigError> {
    let vars = [
        ("REDISHA_TLS_CERT_FILE", env.get("REDISHA_TLS_CERT_FILE")),
        ("REDISHA_TLS_KEY_FILE", env.get("REDISHA_TLS_KEY_FILE")),
        ("REDISHA_TLS_CA_FILE", env.get("REDISHA_TLS_CA_FILE")),
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
pub(super) fn default_state_dir(
    in_pod: bool,
    home: Option<&str>,
    role: Role,
    port: u16,
) -> PathBuf {
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
