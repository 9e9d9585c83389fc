//! Config + decided role → both config files and both argument lists. Pure except
//! `Bases::load`, which reads an operator's base files (REDISHA_CONF_DIR) once at start.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::{Config, Endpoint, Host, Role};
use crate::memory::{self, Choice};

/// The base files from conf/, compiled in so the binary is self-contained; an operator overrides
/// them with REDISHA_CONF_DIR.
pub struct Bases {
    pub redis_master: String,
    pub redis_replica: String,
    pub sentinel: String,
}

impl Bases {
    pub fn builtin() -> Bases {
        Bases {
            redis_master: include_str!("../conf/redis-master.conf").to_string(),
            redis_replica: include_str!("../conf/redis-replica.conf").to_string(),
            sentinel: include_str!("../conf/sentinel.conf").to_string(),
        }
    }

    pub fn load(dir: Option<&Path>) -> std::io::Result<Bases> {
        let Some(dir) = dir else {
            return Ok(Bases::builtin());
        };
        let read = |f: &str| std::fs::read_to_string(dir.join(f));
        Ok(Bases {
            redis_master: read("redis-master.conf")?,
            redis_replica: read("redis-replica.conf")?,
            sentinel: read("sentinel.conf")?,
        })
    }
}

/// Everything `run` starts, and everything `render` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub role: Role,
    pub master: Endpoint,
    pub redis_conf_path: PathBuf,
    pub redis_conf: String,
    pub sentinel_conf_path: PathBuf,
    pub sentinel_conf: String,
    pub redis_argv: Vec<OsString>,
    pub sentinel_argv: Vec<OsString>,
    /// What redis.conf got for `maxmemory`, and why (shown by `render`, logged at start).
    pub maxmemory: Choice,
}

const MARK: &str =
    "# ---- rendered by redisha-init for this pod; lines below override the base above ----";

pub fn render(
    cfg: &Config,
    role: Role,
    master: &Endpoint,
    bases: &Bases,
    prior_sentinel: Option<&str>,
) -> Rendered {
    let maxmemory = maxmemory_choice(cfg, role, bases);
    let redis_conf = render_redis(cfg, role, master, bases, maxmemory);
    let sentinel_conf = render_sentinel(cfg, master, bases, prior_sentinel);
    let redis_conf_path = cfg.redis_conf_path();
    let sentinel_conf_path = cfg.sentinel_conf_path();
    let exe: OsString = cfg.redis_server.clone().into_os_string();
    Rendered {
        role,
        master: master.clone(),
        redis_argv: vec![exe.clone(), redis_conf_path.clone().into_os_string()],
        sentinel_argv: vec![
            exe,
            sentinel_conf_path.clone().into_os_string(),
            "--sentinel".into(),
        ],
        redis_conf_path,
        redis_conf,
        sentinel_conf_path,
        sentinel_conf,
        maxmemory,
    }
}

fn redis_base(role: Role, bases: &Bases) -> &str {
    match role {
        Role::Master => &bases.redis_master,
        Role::Replica => &bases.redis_replica,
    }
}

/// REDISHA_MAXMEMORY, else a `maxmemory` in the operator's base file, else a share of the
/// container's limit (memory.rs).
pub fn maxmemory_choice(cfg: &Config, role: Role, bases: &Bases) -> Choice {
    let base_sets = memory::sets_directive(redis_base(role, bases), "maxmemory");
    memory::choose(cfg.maxmemory, cfg.memory.limit, base_sets)
}

/// Where the pod must be reachable, listen everywhere with protected mode really off (commenting
/// the line out leaves it on: it is the compiled default). Locally, loopback only.
fn listen_lines(cfg: &Config, out: &mut String) {
    if cfg.pod_ip.is_some() {
        out.push_str("bind * -::*\nprotected-mode no\n");
    } else {
        out.push_str("bind 127.0.0.1 -::1\nprotected-mode yes\n");
    }
}

/// A secret inside a config line: double-quoted with every byte outside a plain alphabet written
/// as `\xHH` (Redis's config parser decodes it), so no value can end the string or the line.
fn quote_secret(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.@%+=:/,".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

/// Directives whose last argument is a secret.
const SECRET_DIRECTIVES: &[&str] = &[
    "requirepass",
    "masterauth",
    "sentinel auth-pass",
    "sentinel sentinel-pass",
    "tls-key-file-pass",
];

/// The text with every secret replaced, for `render` output.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(l) = crate::render_acl::redact_hashes(line) {
            let _ = writeln!(out, "{l}");
        } else if SECRET_DIRECTIVES
            .iter()
            .any(|d| t.starts_with(&format!("{d} ")))
        {
            let keep = t.rfind(' ').map(|i| &t[..i]).unwrap_or(t);
            let _ = writeln!(out, "{keep} \"<redacted>\"");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// TLS on every port (the plaintext port is closed) and for replication and sentinel links.
fn tls_lines(cfg: &Config, port: u16, out: &mut String) {
    match &cfg.conn.tls {
        None => {
            let _ = writeln!(out, "port {port}");
        }
        Some(t) => {
            let _ = writeln!(out, "port 0");
            let _ = writeln!(out, "tls-port {port}");
            let _ = writeln!(out, "tls-cert-file {}", quoted(&t.cert));
            let _ = writeln!(out, "tls-key-file {}", quoted(&t.key));
            let _ = writeln!(out, "tls-ca-cert-file {}", quoted(&t.ca));
            let _ = writeln!(out, "tls-replication yes");
            // Clients authenticate with the password; a certificate is checked when presented.
            let _ = writeln!(out, "tls-auth-clients optional");
        }
    }
}

fn quoted(p: &Path) -> String {
    // config::parse_path refused quotes, backslashes and control characters, so plain quoting is
    // enough to keep spaces from splitting the argument.
    format!("\"{}\"", p.display())
}

fn render_redis(
    cfg: &Config,
    role: Role,
    master: &Endpoint,
    bases: &Bases,
    maxmemory: Choice,
) -> String {
    let mut out = redis_base(role, bases).to_string();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(MARK);
    out.push('\n');
    tls_lines(cfg, cfg.redis_port, &mut out);
    listen_lines(cfg, &mut out);
    if let Some(acl) = &cfg.acl {
        crate::render_acl::redis_lines(acl, quote_secret, &mut out);
    } else if let Some(pw) = &cfg.conn.auth.redis {
        let _ = writeln!(out, "requirepass {}", quote_secret(pw.expose()));
        let _ = writeln!(out, "masterauth {}", quote_secret(pw.expose()));
    }
    let _ = writeln!(out, "dir {}", quoted(&cfg.redis_dir()));
    // Sentinel learns replicas from the master's INFO; every node announces its pod address, the
    // master too, because it becomes a replica once demoted.
    let _ = writeln!(out, "replica-announce-ip {}", cfg.announce_ip());
    let _ = writeln!(out, "replica-announce-port {}", cfg.redis_port);
    let _ = writeln!(out, "min-replicas-to-write {}", cfg.min_replicas_to_write);
    let _ = writeln!(out, "min-replicas-max-lag {}", cfg.min_replicas_max_lag);
    if cfg.strict_durability {
        let _ = writeln!(out, "appendfsync always");
    }
    // Redis refuses writes with its OOM error at this size instead of growing until the
    // kernel kills it; the policy (noeviction by default) is in the base file.
    if let Some(bytes) = maxmemory.line() {
        let _ = writeln!(out, "maxmemory {bytes}");
    }
    // A master told to stop waits for its replicas to acknowledge its last writes, by default up
    // to 10 s: far beyond our grace, so it was SIGKILLed mid-wait. It gets the quarter of the
    // grace that the handover leaves for the shutdown (whole seconds; 0 = do not wait).
    let _ = writeln!(out, "shutdown-timeout {}", cfg.stop_grace_ms / 4 / 1000);
    if role == Role::Replica {
        let _ = writeln!(out, "replicaof {} {}", master.host, master.port);
    }
    out
}

/// Lines Sentinel wrote about its own identity and the group's history. They are kept across
/// restarts: a sentinel with a new myid counts as a new voter, and lost epochs reopen old votes.
fn kept_state<'a>(prior: &'a str, group: &str, master: &Endpoint) -> Vec<&'a str> {
    let per_group = [
        "config-epoch",
        "leader-epoch",
        "known-replica",
        "known-sentinel",
    ];
    let safe = |l: &str| l.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    prior
        .lines()
        .map(str::trim)
        .filter(|l| safe(l))
        .filter(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["sentinel", "myid", id] => id.len() == 40,
                ["sentinel", "current-epoch", _] => true,
                // A replica entry naming the master itself would make Sentinel track the master
                // twice; it appears when this pod was a replica before and is master now.
                ["sentinel", "known-replica", g, h, p] => {
                    *g == group && Endpoint::from_fields(h, p).as_ref() != Some(master)
                }
                ["sentinel", kind, g, ..] => per_group.contains(kind) && *g == group,
                _ => false,
            }
        })
        .collect()
}

/// The master a sentinel last wrote it monitors (it rewrites the line after a failover).
pub fn prior_monitor(prior: &str, group: &str) -> Option<Endpoint> {
    prior.lines().find_map(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["sentinel", "monitor", g, host, port, _] if *g == group => {
                Endpoint::from_fields(host, port)
            }
            _ => None,
        }
    })
}

/// A first boot: the sentinel is told the data nodes of the other configured pods (and this
/// pod's own, on a replica) as known replicas. A fresh sentinel learns replicas from the master's
/// INFO only, and peers only through hellos on instances it knows: a master lost in the first
/// second left one sentinel knowing no replica and no peer, and no failover ever came. Knowing
/// every pod's data node, the sentinels meet through any live one. Only IP addresses.
pub fn with_known_replicas(sentinel_conf: &str, group: &str, replicas: &[Endpoint]) -> String {
    let mut out = sentinel_conf.to_string();
    for r in replicas {
        if let Host::Ip(ip) = &r.host {
            let line = format!("sentinel known-replica {group} {ip} {}", r.port);
            if !out.lines().any(|l| l.trim() == line) {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    out
}

/// A forced promotion (`promote --force`): the sentinel claims `claim` as its config and current
/// epoch unless it already holds a higher one, so its hello outranks every older configuration.
pub fn with_claimed_epoch(sentinel_conf: &str, group: &str, claim: u64) -> String {
    let mut config = claim;
    let mut current = claim;
    let mut out = String::with_capacity(sentinel_conf.len() + 64);
    for l in sentinel_conf.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["sentinel", "config-epoch", g, e] if *g == group => {
                config = config.max(e.parse().unwrap_or(0));
            }
            ["sentinel", "current-epoch", e] => current = current.max(e.parse().unwrap_or(0)),
            _ => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    let _ = writeln!(out, "sentinel current-epoch {}", current.max(config));
    let _ = writeln!(out, "sentinel config-epoch {group} {config}");
    out
}

fn render_sentinel(cfg: &Config, master: &Endpoint, bases: &Bases, prior: Option<&str>) -> String {
    let mut out = bases.sentinel.clone();
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(MARK);
    out.push('\n');
    tls_lines(cfg, cfg.sentinel_port, &mut out);
    listen_lines(cfg, &mut out);
    if let Some(acl) = &cfg.acl {
        crate::render_acl::sentinel_lines(acl, quote_secret, &mut out);
    } else if let Some(pw) = &cfg.conn.auth.sentinel {
        let _ = writeln!(out, "requirepass {}", quote_secret(pw.expose()));
        let _ = writeln!(out, "sentinel sentinel-pass {}", quote_secret(pw.expose()));
    }
    let _ = writeln!(out, "dir {}", quoted(&cfg.sentinel_dir()));
    let _ = writeln!(out, "sentinel announce-ip {}", cfg.announce_ip());
    let _ = writeln!(out, "sentinel announce-port {}", cfg.sentinel_port);
    let g = &cfg.group;
    let host = match &master.host {
        Host::Ip(ip) => ip.to_string(),
        Host::Name(n) => n.clone(),
    };
    let _ = writeln!(
        out,
        "sentinel monitor {g} {host} {} {}",
        master.port, cfg.quorum
    );
    let _ = writeln!(
        out,
        "sentinel down-after-milliseconds {g} {}",
        cfg.down_after_ms
    );
    let _ = writeln!(out, "sentinel parallel-syncs {g} {}", cfg.parallel_syncs);
    let _ = writeln!(
        out,
        "sentinel failover-timeout {g} {}",
        cfg.failover_timeout_ms
    );
    if let Some(acl) = &cfg.acl {
        crate::render_acl::sentinel_group_lines(acl, g, quote_secret, &mut out);
    } else if let Some(pw) = &cfg.conn.auth.redis {
        let _ = writeln!(out, "sentinel auth-pass {g} {}", quote_secret(pw.expose()));
    }
    if let Some(prior) = prior {
        for l in kept_state(prior, g, master) {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Server;
    use crate::config::{build_from_map, Flags};
    use std::collections::HashMap;

    fn cfg(role: &str, vars: &[(&str, &str)]) -> Config {
        let f = Flags::with(&[("REDISHA_ROLE", role), ("REDISHA_STATE_DIR", "/s")]);
        build_from_map(&f, &vars.iter().copied().collect::<HashMap<_, _>>()).expect("valid config")
    }

    fn lines(s: &str) -> Vec<&str> {
        s.lines().collect()
    }

    #[test]
    fn first_boot_known_replicas() {
        let e = |s: &str| crate::config::parse_endpoint("t", s).expect("endpoint");
        let out = with_known_replicas(
            "sentinel monitor g 10.0.0.1 6379 2\n",
            "g",
            &[e("10.0.0.2:6379"), e("10.0.0.3:6379"), e("redis-2:6379")],
        );
        assert!(
            out.contains("sentinel known-replica g 10.0.0.2 6379\n"),
            "{out}"
        );
        assert!(
            out.contains("sentinel known-replica g 10.0.0.3 6379\n"),
            "{out}"
        );
        assert!(!out.contains("redis-2"), "names are never written: {out}");
    }

    #[test]
    fn claimed_epoch_outranks_but_never_lowers() {
        let text = "sentinel monitor g 10.0.0.1 6379 2\nsentinel current-epoch 3\nsentinel config-epoch g 3\n";
        let out = with_claimed_epoch(text, "g", 5);
        assert!(out.contains("sentinel config-epoch g 5\n"), "{out}");
        assert!(out.contains("sentinel current-epoch 5\n"), "{out}");
        assert_eq!(out.matches("config-epoch").count(), 1);
        let out = with_claimed_epoch(text, "g", 2);
        assert!(out.contains("sentinel config-epoch g 3\n"), "{out}");
        let out = with_claimed_epoch("sentinel monitor g 10.0.0.1 6379 2\n", "g", 1);
        assert!(out.contains("sentinel config-epoch g 1\n"), "{out}");
    }

    #[test]
    fn replica_in_pod() {
        let c = cfg(
            "replica",
            &[
                ("MY_POD_IP", "10.0.0.7"),
                ("ALLOW_EMPTY_PASSWORD", "yes"),
                ("REDIS_MASTER_SERVICE_HOST", "redis-primary"),
                ("REDIS_MASTER_SERVICE_PORT", "6379"),
            ],
        );
        let m = c.master_service.clone().expect("set");
        let p = render(&c, Role::Replica, &m, &Bases::builtin(), None);
        let r = lines(&p.redis_conf);
        for want in [
            "replicaof redis-primary 6379",
            "replica-announce-ip 10.0.0.7",
            "replica-announce-port 6379",
            "protected-mode no",
            "bind * -::*",
            "appendonly yes",
            "min-replicas-to-write 1",
            "dir \"/s/redis\"",
        ] {
            assert!(
                r.contains(&want),
                "redis.conf lacks {want:?}:\n{}",
                p.redis_conf
            );
        }
        assert!(!p.redis_conf.contains("cluster-announce"));
        let s = lines(&p.sentinel_conf);
        for want in [
            "sentinel monitor mymaster redis-primary 6379 2",
            "sentinel announce-ip 10.0.0.7",
            "sentinel announce-port 26379",
            "sentinel resolve-hostnames yes",
            "sentinel down-after-milliseconds mymaster 5000",
            "sentinel failover-timeout mymaster 10000",
            "sentinel parallel-syncs mymaster 1",
            "protected-mode no",
        ] {
            assert!(
                s.contains(&want),
                "sentinel.conf lacks {want:?}:\n{}",
                p.sentinel_conf
            );
        }
        assert_eq!(
            p.sentinel_argv.last().map(|a| a.to_str()),
            Some(Some("--sentinel"))
        );
        assert_eq!(p.redis_argv[1], OsString::from("/s/redis/redis.conf"));
    }

    #[test]
    fn master_monitors_itself_and_has_no_replicaof() {
        let c = cfg(
            "master",
            &[("MY_POD_IP", "10.0.0.5"), ("ALLOW_EMPTY_PASSWORD", "yes")],
        );
        let me = c.own(Server::Redis);
        let p = render(&c, Role::Master, &me, &Bases::builtin(), None);
        assert!(!p.redis_conf.contains("replicaof"));
        assert!(lines(&p.sentinel_conf).contains(&"sentinel monitor mymaster 10.0.0.5 6379 2"));
        assert!(lines(&p.redis_conf).contains(&"replica-announce-ip 10.0.0.5"));
    }

    #[test]
    fn secrets_are_escaped_and_redacted() {
        let pw = "p\"w\\ \u{e9}\"\nx"; // quote, backslash, space, non-ASCII; newline refused earlier
        let pw = &pw[..pw.len() - 2];
        let c = cfg(
            "master",
            &[("MY_POD_IP", "10.0.0.5"), ("REDIS_PASSWORD", pw)],
        );
        let p = render(
            &c,
            Role::Master,
            &c.own(Server::Redis),
            &Bases::builtin(),
            None,
        );
        let want = "\"p\\x22w\\x5c\\x20\\xc3\\xa9\\x22\"";
        assert!(
            lines(&p.redis_conf).contains(&format!("requirepass {want}").as_str()),
            "{}",
            p.redis_conf
        );
        assert!(lines(&p.redis_conf).contains(&format!("masterauth {want}").as_str()));
        assert!(lines(&p.sentinel_conf)
            .contains(&format!("sentinel auth-pass mymaster {want}").as_str()));
        assert!(lines(&p.sentinel_conf).contains(&format!("requirepass {want}").as_str()));
        assert!(
            lines(&p.sentinel_conf).contains(&format!("sentinel sentinel-pass {want}").as_str())
        );
        for text in [&p.redis_conf, &p.sentinel_conf] {
            let r = redact(text);
            assert!(!r.contains("x22w"), "{r}");
            assert_eq!(r.lines().count(), text.lines().count());
        }
        assert!(redact(&p.redis_conf).contains("requirepass \"<redacted>\""));
    }

    #[test]
    fn maxmemory_from_the_limit_the_variable_or_the_base() {
        let gib = 1u64 << 30;
        let with_limit = |vars: &[(&str, &str)], limit: Option<u64>| {
            let mut c = cfg("master", vars);
            c.memory.limit = limit;
            c
        };
        let own_base = |extra: &str| {
            let mut b = Bases::builtin();
            b.redis_master.push_str(extra);
            b
        };
        let mm = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| l.starts_with("maxmemory "))
                .map(String::from)
                .collect()
        };
        // (variables, limit, extra base line, maxmemory lines after the mark, choice)
        type Case<'a> = (
            Vec<(&'a str, &'a str)>,
            Option<u64>,
            &'a str,
            Vec<String>,
            Choice,
        );
        let cases: Vec<Case> = vec![
            (
                vec![],
                Some(gib),
                "",
                vec![format!("maxmemory {}", gib * 30 / 100)],
                Choice::Derived {
                    bytes: gib * 30 / 100,
                    limit: gib,
                    percent: memory::DEFAULT_PERCENT,
                },
            ),
            (vec![], None, "", vec![], Choice::NoLimit),
            (
                vec![("REDISHA_MAXMEMORY", "300mb")],
                Some(gib),
                "",
                vec![format!("maxmemory {}", 300u64 << 20)],
                Choice::Operator(300 << 20),
            ),
            (
                vec![("REDISHA_MAXMEMORY", "25%")],
                Some(gib),
                "maxmemory 100mb\n",
                vec![format!("maxmemory {}", gib / 4)],
                Choice::Derived {
                    bytes: gib / 4,
                    limit: gib,
                    percent: 25,
                },
            ),
            (
                vec![("REDISHA_MAXMEMORY", "0")],
                Some(gib),
                "",
                vec![],
                Choice::Off,
            ),
            (
                vec![],
                Some(gib),
                "maxmemory 100mb\n",
                vec![],
                Choice::BaseFile,
            ),
            // The variable is rendered below the mark, so it wins over the base file.
            (
                vec![("REDISHA_MAXMEMORY", "200mb")],
                Some(gib),
                "maxmemory 100mb\n",
                vec![format!("maxmemory {}", 200u64 << 20)],
                Choice::Operator(200 << 20),
            ),
        ];
        for (vars, limit, extra, want_lines, want_choice) in cases {
            let c = with_limit(&vars, limit);
            let p = render(
                &c,
                Role::Master,
                &c.own(Server::Redis),
                &own_base(extra),
                None,
            );
            let rendered = p.redis_conf.split(MARK).nth(1).expect("mark");
            assert_eq!(mm(rendered), want_lines, "{vars:?} {limit:?} {extra:?}");
            assert_eq!(p.maxmemory, want_choice, "{vars:?} {limit:?} {extra:?}");
        }
        // The policy lives in the base file, where an operator changes it.
        let p = render(
            &with_limit(&[], Some(gib)),
            Role::Replica,
            &crate::config::parse_endpoint("t", "10.0.0.1:6379").expect("endpoint"),
            &Bases::builtin(),
            None,
        );
        assert!(lines(&p.redis_conf).contains(&"maxmemory-policy noeviction"));
        assert!(lines(&p.redis_conf).contains(&format!("maxmemory {}", gib * 30 / 100).as_str()));
    }

    #[test]
    fn local_mode_stays_on_loopback() {
        let c = cfg("master", &[]);
        let p = render(
            &c,
            Role::Master,
            &c.own(Server::Redis),
            &Bases::builtin(),
            None,
        );
        assert!(lines(&p.redis_conf).contains(&"bind 127.0.0.1 -::1"));
        assert!(lines(&p.redis_conf).contains(&"min-replicas-to-write 0"));
    }

    #[test]
    fn sentinel_state_is_kept_and_filtered() {
        let c = cfg(
            "master",
            &[("MY_POD_IP", "10.0.0.5"), ("ALLOW_EMPTY_PASSWORD", "yes")],
        );
        let prior = "\
sentinel myid 0123456789012345678901234567890123456789
sentinel current-epoch 7
sentinel monitor mymaster 10.0.0.9 6379 2
sentinel config-epoch mymaster 7
sentinel leader-epoch mymaster 7
sentinel known-replica mymaster 10.0.0.6 6379
sentinel known-replica mymaster 10.0.0.5 6379
sentinel known-sentinel mymaster 10.0.0.6 26379 abcdef
sentinel known-replica othergroup 10.0.0.8 6379
bind 1.2.3.4
user default on nopass ~* &* +@all
";
        let p = render(
            &c,
            Role::Master,
            &c.own(Server::Redis),
            &Bases::builtin(),
            Some(prior),
        );
        let s = lines(&p.sentinel_conf);
        for want in [
            "sentinel myid 0123456789012345678901234567890123456789",
            "sentinel current-epoch 7",
            "sentinel config-epoch mymaster 7",
            "sentinel known-replica mymaster 10.0.0.6 6379",
            "sentinel known-sentinel mymaster 10.0.0.6 26379 abcdef",
        ] {
            assert!(s.contains(&want), "lost {want:?}:\n{}", p.sentinel_conf);
        }
        for gone in [
            "sentinel monitor mymaster 10.0.0.9 6379 2",
            "sentinel known-replica mymaster 10.0.0.5 6379",
            "bind 1.2.3.4",
        ] {
            assert!(!s.contains(&gone), "kept {gone:?}");
        }
        assert_eq!(
            s.iter()
                .filter(|l| l.starts_with("sentinel monitor"))
                .count(),
            1
        );
    }
}

/// Property: whatever the environment holds, a configuration that validates renders exactly the
/// per-pod lines we intend: no value adds, splits or comments out a line. Bounded (512 cases).
#[cfg(test)]
mod prop {
    use super::*;
    use crate::config::{build_from_map, Flags};
    use proptest::prelude::*;
    use std::collections::HashMap;

    const VARS: &[&str] = &[
        "MY_POD_IP",
        "MASTER_ANNOUNCE_PORT",
        "SENTINEL_ANNOUNCE_PORT",
        "REDIS_MASTER_SERVICE_HOST",
        "REDIS_MASTER_SERVICE_PORT",
        "REDISHA_MASTER_GROUP",
        "REDISHA_QUORUM",
        "REDISHA_STATE_DIR",
        "REDIS_PASSWORD",
        "REDIS_SENTINEL_PASSWORD",
        "REDISHA_DOWN_AFTER_MS",
        "REDISHA_MAXMEMORY",
    ];

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            // plausible values, so that many cases validate and reach the renderer
            Just("10.0.0.1".to_string()),
            Just("6380".to_string()),
            Just("redis-primary".to_string()),
            Just("512mb".to_string()),
            "[a-z0-9.-]{1,20}",
            "[0-9]{1,6}",
            // hostile ones
            "[ -~]{0,30}",
            ".{0,30}",
            Just("x\nbind 0.0.0.0".to_string()),
            Just("\"\nrequirepass \"".to_string()),
            Just("pw with spaces\"and#hash\\".to_string()),
        ]
    }

    fn directive_count(text: &str) -> usize {
        text.split(MARK)
            .nth(1)
            .map(|t| t.lines().filter(|l| !l.is_empty()).count())
            .unwrap_or(0)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn values_never_inject_lines(vals in proptest::collection::vec(value(), VARS.len()), mask in any::<u16>()) {
            let mut env: HashMap<&str, &str> = HashMap::from([("REDIS_MASTER_SERVICE_HOST", "redis-primary"), ("ALLOW_EMPTY_PASSWORD", "yes")]);
            for (i, var) in VARS.iter().enumerate() {
                if mask & (1 << i) != 0 {
                    env.insert(var, vals[i].as_str());
                }
            }
            let flags = Flags::with(&[("REDISHA_ROLE", "replica")]);
            if let Ok(c) = build_from_map(&flags, &env) {
                let m = c.master_service.clone().expect("replica has a master");
                let p = render(&c, Role::Replica, &m, &Bases::builtin(), None);
                let redis_lines = 10 + if c.conn.auth.redis.is_some() { 2 } else { 0 } + usize::from(c.strict_durability) + usize::from(p.maxmemory.line().is_some());
                prop_assert_eq!(directive_count(&p.redis_conf), redis_lines, "{}", p.redis_conf);
                let sentinel_lines = 10 + if c.conn.auth.redis.is_some() { 1 } else { 0 } + if c.conn.auth.sentinel.is_some() { 2 } else { 0 };
                prop_assert_eq!(directive_count(&p.sentinel_conf), sentinel_lines, "{}", p.sentinel_conf);
                for line in p.redis_conf.lines().chain(p.sentinel_conf.lines()) {
                    prop_assert!(!line.chars().any(|ch| ch.is_control()), "control character in {:?}", line);
                    prop_assert!(!line.trim_start().starts_with('#') || !line.contains(MARK) || line == MARK);
                }
            }
        }
    }
}
