//! Every variable redisha-init reads, declared once: its name, the flag that overrides it, its
//! default as the README states it, and one line of documentation. The environment lookup, the
//! UTF-8 check, `--help`, the README table check and the hostile-input test all come from this
//! table; a new variable is one line here plus its parsing in `build`.

use std::collections::HashMap;
use std::ffi::OsString;

use super::ConfigError;

pub struct Var {
    pub name: &'static str,
    /// The command-line flag that overrides the variable (`--role`), if any.
    pub flag: Option<&'static str>,
    pub default: &'static str,
    pub doc: &'static str,
}

const fn var(name: &'static str, default: &'static str, doc: &'static str) -> Var {
    Var {
        name,
        flag: None,
        default,
        doc,
    }
}

const fn flag(
    name: &'static str,
    flag: &'static str,
    default: &'static str,
    doc: &'static str,
) -> Var {
    Var {
        name,
        flag: Some(flag),
        default,
        doc,
    }
}

#[rustfmt::skip]
pub const VARS: &[Var] = &[
    flag("REDISHA_ROLE", "--role", "required", "master, replica or ordinal (master if the pod name ends in -0); the sentinels' answer wins when they know a master"),
    var("REDISHA_POD_NAME", "the hostname", "the pod's name for REDISHA_ROLE=ordinal"),
    var("MY_POD_IP", "unset: local mode", "address announced to the others"),
    var("MASTER_ANNOUNCE_PORT", "6379", "redis port (listen and announce)"),
    var("SENTINEL_ANNOUNCE_PORT", "26379", "sentinel port (listen and announce)"),
    var("REDIS_MASTER_SERVICE_HOST", "required for replica", "the master Service's host"),
    var("REDIS_MASTER_SERVICE_PORT", "6379", "the master Service's port"),
    flag("REDISHA_SENTINELS", "--sentinels", "the master Service host on the sentinel port", "sentinels asked at boot, host:port,..."),
    flag("REDISHA_STATE_DIR", "--state-dir", "/data in a pod, under ~/.local/state locally", "rendered files, Sentinel's state and the data"),
    flag("REDISHA_CONF_DIR", "--conf-dir", "built-in conf/", "directory with your own redis-master.conf, redis-replica.conf, sentinel.conf"),
    flag("REDISHA_MASTER_GROUP", "--master-group", "mymaster", "Sentinel master group name"),
    flag("REDISHA_QUORUM", "--quorum", "2", "Sentinel quorum"),
    flag("REDISHA_DOWN_AFTER_MS", "--down-after-ms", "5000", "Sentinel down-after-milliseconds"),
    flag("REDISHA_FAILOVER_TIMEOUT_MS", "--failover-timeout-ms", "10000", "Sentinel failover-timeout"),
    flag("REDISHA_PARALLEL_SYNCS", "--parallel-syncs", "1", "Sentinel parallel-syncs"),
    flag("REDISHA_MIN_REPLICAS_TO_WRITE", "--min-replicas-to-write", "1 in a pod, 0 locally", "a master cut off from every replica refuses writes"),
    flag("REDISHA_MIN_REPLICAS_MAX_LAG", "--min-replicas-max-lag", "down-after - 1 s, 2..3600", "seconds without a replica's acknowledgement before writes are refused"),
    flag("REDISHA_LOG_FORMAT", "--log-format", "text", "text, json or raw"),
    flag("REDISHA_STOP_GRACE_MS", "--stop-grace-ms", "8000", "time from SIGTERM to SIGKILL of what is left"),
    flag("REDISHA_REDIS_SERVER", "--redis-server", "redis-server from PATH, else valkey-server", "server executable for the data node and the sentinel: redis-server or valkey-server"),
    flag("REDISHA_HANDOVER", "--handover", "yes", "hand the master role over before stopping: yes/no"),
    var("REDISHA_DURABILITY", "replicated in a pod, strict when min-replicas-to-write is 0", "replicated (fsync every second, a crashed master fails over) or strict (fsync every write, restart in place)"),
    var("REDISHA_DISCOVERY_TIMEOUT_MS", "20000", "how long boot waits for a named master to answer"),
    var("REDISHA_OUTAGE_ELECT_MS", "down-after + failover-timeout", "after a full outage, how long a returning majority waits for a lost master before electing one of its own (0 = never)"),
    var("REDISHA_RESTART_BACKOFF_MS", "500", "first restart delay, doubling"),
    var("REDISHA_RESTART_BUDGET", "5", "restarts in a row before the pod gives up"),
    var("REDISHA_RESTART_STABLE_MS", "60000", "uptime after which a child has its whole budget again"),
    var("REDISHA_CLEANUP_INTERVAL_MS", "30000", "stale-entry check period (0 = off)"),
    var("REDISHA_STALE_AFTER_MS", "60000", "how long an entry must be down to be stale"),
    var("REDIS_PASSWORD", "none", "data-node password"),
    var("REDIS_PASSWORD_FILE", "none", "file holding the data-node password (a mounted Secret)"),
    var("REDIS_SENTINEL_PASSWORD", "the data-node password", "sentinels' password"),
    var("REDIS_SENTINEL_PASSWORD_FILE", "none", "file holding the sentinels' password"),
    var("REDISHA_ACL_DIR", "none (one shared password)", "ACL users: directory (a mounted Secret) with one password file per user: redisha, replication, sentinel, app or the rule file's users"),
    var("REDISHA_ACL_FILE", "app: all but @admin, @dangerous and the HA commands", "application users' ACL rules, `user <name> <rules>` per line (needs REDISHA_ACL_DIR)"),
    var("ALLOW_EMPTY_PASSWORD", "no", "yes: run without a password although reachable on MY_POD_IP"),
    var("REDISHA_TLS_CERT_FILE", "none", "TLS certificate (all three TLS files: TLS on every port)"),
    var("REDISHA_TLS_KEY_FILE", "none", "TLS private key"),
    var("REDISHA_TLS_CA_FILE", "none", "TLS CA bundle"),
    var("REDISHA_MAXMEMORY", "30 % of the container's memory limit", "redis's maxmemory (512mb, 1gb, 50%); 0 = do not set"),
    var("REDISHA_MASTER_PROXY_PORT", "off", "port of the master proxy, a third child that forwards every connection to the master the sentinels name (0/off: none)"),
    var("REDISHA_MASTER_PROXY_MAX_CONNS", "10000", "master proxy: connections at once (a client address gets at most half)"),
    var("REDISHA_METRICS_PORT", "unset: off", "port of the Prometheus endpoint GET /metrics served by PID 1"),
    var("HOME", "none", "local mode: where the default state directory goes"),
];

fn known(name: &str) -> Option<&'static Var> {
    VARS.iter().find(|v| v.name == name)
}

/// Our variables from the environment, as strings. Only names in `VARS` are kept, and only these
/// are checked for UTF-8 (PATH etc. are not ours to judge).
#[derive(Debug, Default)]
pub struct RawEnv {
    vals: HashMap<&'static str, String>,
    /// The kernel's hostname (a StatefulSet pod's name), not an environment variable: the
    /// fallback of `REDISHA_ROLE=ordinal` when `REDISHA_POD_NAME` is not set. Filled by the
    /// caller (`kernel_hostname`), so `build` stays free of I/O.
    pub hostname: Option<String>,
}

impl RawEnv {
    /// Reads our variables from an OS environment. A non-UTF-8 value is an error naming the
    /// variable; `std::env::vars()` would panic on it, which PID 1 must never do.
    pub fn from_os<I: IntoIterator<Item = (OsString, OsString)>>(
        vars: I,
    ) -> Result<RawEnv, ConfigError> {
        let mut env = RawEnv::default();
        for (k, v) in vars {
            let Some(var) = k.to_str().and_then(known) else {
                continue;
            };
            match v.into_string() {
                Ok(v) => {
                    env.vals.insert(var.name, v);
                }
                Err(v) => {
                    // A secret is never echoed, not even a broken one.
                    let secret = var.name.contains("PASSWORD") && !var.name.ends_with("_FILE");
                    return Err(ConfigError {
                        name: var.name.to_string(),
                        value: (!secret).then(|| v.to_string_lossy().into_owned()),
                        reason: "not valid UTF-8".into(),
                    });
                }
            }
        }
        Ok(env)
    }

    pub fn get(&self, name: &'static str) -> Option<&str> {
        debug_assert!(known(name).is_some(), "{name} is not in config::VARS");
        self.vals.get(name).map(String::as_str)
    }
}

/// Command-line values, by the name of the variable each overrides.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    vals: HashMap<&'static str, String>,
}

impl Flags {
    /// `var` must have a flag in `VARS`; others are ignored (only `main` and tests set flags).
    pub fn set(&mut self, var: &'static str, v: impl Into<String>) {
        if let Some(known) = known(var).filter(|k| k.flag.is_some()) {
            self.vals.insert(known.name, v.into());
        }
    }

    pub fn get(&self, var: &'static str) -> Option<&str> {
        self.vals.get(var).map(String::as_str)
    }

    #[cfg(test)]
    pub fn with(pairs: &[(&'static str, &str)]) -> Flags {
        let mut f = Flags::default();
        for (k, v) in pairs {
            f.set(k, *v);
        }
        f
    }
}

/// Where a setting comes from: its flag wins over its variable.
pub struct Sources<'a> {
    pub flags: &'a Flags,
    pub env: &'a RawEnv,
}

impl Sources<'_> {
    /// The value and the name to blame for it (`--role` or `REDISHA_ROLE`).
    pub fn pick(&self, var: &'static str) -> Option<(&'static str, &str)> {
        let flag = known(var).and_then(|v| v.flag);
        match (flag, self.flags.get(var)) {
            (Some(f), Some(v)) => Some((f, v)),
            _ => self.env.get(var).map(|v| (var, v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_flags_are_unique_and_well_formed() {
        let mut names = std::collections::HashSet::new();
        let mut flags = std::collections::HashSet::new();
        for v in VARS {
            assert!(names.insert(v.name), "{} twice", v.name);
            assert!(
                v.name.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
                "{}",
                v.name
            );
            assert!(!v.doc.is_empty() && !v.default.is_empty(), "{}", v.name);
            if let Some(f) = v.flag {
                assert!(flags.insert(f), "{f} twice");
                let want = format!(
                    "--{}",
                    v.name
                        .trim_start_matches("REDISHA_")
                        .to_lowercase()
                        .replace('_', "-")
                );
                assert_eq!(f, want, "{}: flag named after the variable", v.name);
            }
        }
    }

    /// The README's configuration table names exactly the variables of this table.
    #[test]
    fn readme_table_lists_every_variable() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("## Configuration")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has a Configuration section");
        let mut documented = std::collections::BTreeSet::new();
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let first = row.split('|').nth(1).unwrap_or("");
            for name in first.split('`').skip(1).step_by(2) {
                documented.insert(name.to_string());
            }
        }
        // Variables and their flags (`--role`), both from the first column.
        let ours: std::collections::BTreeSet<String> = VARS
            .iter()
            .flat_map(|v| std::iter::once(v.name).chain(v.flag))
            .map(String::from)
            .collect();
        assert_eq!(
            documented, ours,
            "README Configuration table vs config::VARS"
        );
    }

    #[test]
    fn flags_win_over_the_environment_and_name_the_source() {
        let env = RawEnv::from_os([
            (OsString::from("REDISHA_QUORUM"), OsString::from("3")),
            (OsString::from("REDISHA_ROLE"), OsString::from("replica")),
            (OsString::from("PATH"), OsString::from("/bin")),
        ])
        .expect("utf-8");
        let flags = Flags::with(&[("REDISHA_ROLE", "master"), ("MY_POD_IP", "10.0.0.1")]);
        let src = Sources {
            flags: &flags,
            env: &env,
        };
        assert_eq!(src.pick("REDISHA_ROLE"), Some(("--role", "master")));
        assert_eq!(src.pick("REDISHA_QUORUM"), Some(("REDISHA_QUORUM", "3")));
        // MY_POD_IP has no flag: a flag for it is ignored.
        assert_eq!(src.pick("MY_POD_IP"), None);
        assert_eq!(src.pick("REDISHA_SENTINELS"), None);
    }
}
