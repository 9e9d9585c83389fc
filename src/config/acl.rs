//! ACL users (README, "ACL users"): one user per job, each with its own password file, instead of
//! one password that opens everything. On when `REDISHA_ACL_DIR` names a directory (a mounted
//! Secret) holding one file per user; `REDIS_PASSWORD` alone keeps working as before.
//!
//! A password file holds one password per line. Servers accept every line; as a client (our own
//! connections, `masterauth`, Sentinel's `auth-pass`/`sentinel-pass`) a pod sends the first. So a
//! rotation rolls three times: append the new line, move it first, drop the old one; at no
//! point does a pod send a password that a peer does not accept.
//!
//! Every rule set here is derived from what the code and the servers send; tests/acl.rs fails
//! when redisha-init sends a command its own user may not run.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::build::{build_auth, check_secret};
use super::parse::parse_path;
use super::{err, Auth, ConfigError, RawEnv, Secret};

/// redisha-init itself: PID 1, `status`, `switchover`, probes, handover.
pub const REDISHA_USER: &str = "redisha";
/// `masteruser` of the replicas.
pub const REPLICATION_USER: &str = "replication";
/// Sentinel's `auth-user` on the data nodes and `sentinel-user` between sentinels.
pub const SENTINEL_USER: &str = "sentinel";
/// The application user when no rule file is given.
pub const DEFAULT_APP_USER: &str = "app";
/// Names an operator's rule file may not define: Redis's own and ours.
pub const RESERVED: &[&str] = &["default", REDISHA_USER, REPLICATION_USER, SENTINEL_USER];

/// What redisha-init sends to a data node (grep `redis::cmd(` outside SENTINEL): INFO, PING,
/// CONFIG GET/SET replica-priority, CLIENT PAUSE/UNPAUSE (handover, split vote), REPLICAOF
/// (follow), ACL LIST (status compares the pods' users) and ACL LOG (read-only: the refusals,
/// which the HA tests read to prove no internal user was ever refused).
/// tests/acl.rs checks the source against it.
pub const REDISHA_DATA_RULES: &[&str] = &[
    "resetkeys",
    "resetchannels",
    "-@all",
    "+ping",
    "+info",
    "+config|get",
    "+config|set",
    "+client|pause",
    "+client|unpause",
    "+replicaof",
    "+acl|list",
    "+acl|log",
];

/// What a replica sends its master (Redis's replication.c: AUTH, PING, REPLCONF, PSYNC).
pub const REPLICATION_RULES: &[&str] = &[
    "resetkeys",
    "resetchannels",
    "-@all",
    "+psync",
    "+replconf",
    "+ping",
];

/// What Sentinel sends a data node, from Redis's Sentinel documentation ("Redis ACL" section);
/// `replicaof` too, which Valkey's sentinel sends where Redis's sends SLAVEOF.
pub const SENTINEL_DATA_RULES: &[&str] = &[
    "resetkeys",
    "allchannels",
    "-@all",
    "+multi",
    "+exec",
    "+slaveof",
    "+replicaof",
    "+ping",
    "+subscribe",
    "+publish",
    "+config|rewrite",
    "+role",
    "+info",
    "+client|setname",
    "+client|kill",
    "+script|kill",
];

/// Commands that can break failover or lock redisha-init out. Denied to every application user
/// after its own rules, and refused when a rule file grants one.
pub const HA_DENY: &[&str] = &[
    "acl",
    "config",
    "debug",
    "shutdown",
    "replicaof",
    "slaveof",
    "failover",
    "monitor",
    "module",
    "sync",
    "psync",
    "replconf",
    "client|pause",
    "client|unpause",
    "client|kill",
    "script|kill",
    "function|kill",
    "save",
    "bgsave",
    "bgrewriteaof",
];

/// Categories no application rule may grant: they hold the HA commands.
pub const DENIED_CATEGORIES: &[&str] = &["admin", "dangerous"];

/// The application user's rules when the operator gives none: data commands on every key and
/// channel, without the admin and dangerous categories (HA_DENY follows anyway).
pub const DEFAULT_APP_RULES: &[&str] = &["~*", "&*", "+@all"];

/// An application user on a sentinel: discovery and notifications only (the read-only list of
/// Redis's Sentinel documentation); SENTINEL SET, FAILOVER, RESET, MONITOR, REMOVE, CONFIG are not
/// in it.
pub const APP_SENTINEL_RULES: &[&str] = &[
    "resetkeys",
    "allchannels",
    "-@all",
    "+auth",
    "+hello",
    "+ping",
    "+role",
    "+command",
    "+client|setname",
    "+client|getname",
    "+client|id",
    "+subscribe",
    "+psubscribe",
    "+unsubscribe",
    "+punsubscribe",
    "+sentinel|get-master-addr-by-name",
    "+sentinel|master",
    "+sentinel|masters",
    "+sentinel|myid",
    "+sentinel|replicas",
    "+sentinel|slaves",
    "+sentinel|sentinels",
];

/// A sentinel asking a peer: AUTH, CLIENT SETNAME, PING, SENTINEL IS-MASTER-DOWN-BY-ADDR, and
/// PUBLISH of its hellos on `__sentinel__:hello` (sentinel.c sends them to peers too; the HA
/// test's ACL LOG check found it).
pub const SENTINEL_PEER_RULES: &[&str] = &[
    "resetkeys",
    "allchannels",
    "-@all",
    "+ping",
    "+publish",
    "+client|setname",
    "+sentinel|is-master-down-by-addr",
];

/// Our own user on our own sentinel: it monitors, sets, fails over and resets groups.
pub const REDISHA_SENTINEL_RULES: &[&str] = &["~*", "&*", "+@all"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redisha,
    Replication,
    Sentinel,
    App,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclUser {
    pub name: String,
    pub kind: Kind,
    /// Every password the servers accept; the first is the one a client sends. Never empty.
    pub passwords: Vec<Secret>,
    /// An application user's own rules (validated words); empty for ours, whose rules are above.
    pub rules: Vec<String>,
}

impl AclUser {
    /// The password this pod sends as a client.
    pub fn current(&self) -> &Secret {
        // `read_passwords` never returns an empty list.
        &self.passwords[0]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub users: Vec<AclUser>,
}

impl Acl {
    pub fn user(&self, kind: Kind) -> Option<&AclUser> {
        self.users.iter().find(|u| u.kind == kind)
    }
}

const DIR_VAR: &str = "REDISHA_ACL_DIR";
const FILE_VAR: &str = "REDISHA_ACL_FILE";

/// `build`'s hook: the passwords of today (`REDIS_PASSWORD`...) or, with `REDISHA_ACL_DIR`, the
/// users and the `Auth` our own connections use (user `redisha`).
pub(super) fn build_auth_acl(
    env: &RawEnv,
    in_pod: bool,
) -> Result<(Auth, Option<Acl>), ConfigError> {
    let Some(dir) = env.get(DIR_VAR) else {
        if let Some(v) = env.get(FILE_VAR) {
            return Err(err(
                FILE_VAR,
                v,
                "needs REDISHA_ACL_DIR (the users' passwords)",
            ));
        }
        return Ok((build_auth(env, in_pod)?, None));
    };
    // One way to authenticate: a shared password next to ACL users would open everything again.
    for v in [
        "REDIS_PASSWORD",
        "REDIS_PASSWORD_FILE",
        "REDIS_SENTINEL_PASSWORD",
        "REDIS_SENTINEL_PASSWORD_FILE",
    ] {
        if env.get(v).is_some() {
            return Err(ConfigError {
                name: v.into(),
                value: None,
                reason: "set together with REDISHA_ACL_DIR: with ACL users every password comes from that directory".into(),
            });
        }
    }
    let dir = parse_path(DIR_VAR, dir)?;
    if !dir.is_dir() {
        return Err(err(
            DIR_VAR,
            &dir.display().to_string(),
            "not a readable directory",
        ));
    }
    let apps = match env.get(FILE_VAR) {
        Some(f) => {
            let p = parse_path(FILE_VAR, f)?;
            let text = std::fs::read_to_string(&p)
                .map_err(|e| err(FILE_VAR, f, format!("cannot read: {}", e.kind())))?;
            parse_rules(&text).map_err(|why| err(FILE_VAR, f, why))?
        }
        None => vec![(
            DEFAULT_APP_USER.to_string(),
            DEFAULT_APP_RULES.iter().map(|s| s.to_string()).collect(),
        )],
    };
    let mut users = Vec::new();
    for (name, kind) in [
        (REDISHA_USER, Kind::Redisha),
        (REPLICATION_USER, Kind::Replication),
        (SENTINEL_USER, Kind::Sentinel),
    ] {
        users.push(AclUser {
            name: name.into(),
            kind,
            passwords: read_passwords(&dir, name)?,
            rules: Vec::new(),
        });
    }
    for (name, rules) in apps {
        users.push(AclUser {
            passwords: read_passwords(&dir, &name)?,
            name,
            kind: Kind::App,
            rules,
        });
    }
    let ours = users[0].current().clone();
    let auth = Auth {
        redis: Some(ours.clone()),
        sentinel: Some(ours),
        user: Some(REDISHA_USER.into()),
    };
    Ok((auth, Some(Acl { users })))
}

/// A user's password file: one password per line (at most 4: a rotation needs 2), blank lines
/// ignored. Errors name the file, never a value.
fn read_passwords(dir: &Path, user: &str) -> Result<Vec<Secret>, ConfigError> {
    let path: PathBuf = dir.join(user);
    let name = format!("{DIR_VAR}/{user}");
    let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
        name: name.clone(),
        value: None,
        reason: format!("cannot read the password of user {user:?}: {}", e.kind()),
    })?;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        out.push(check_secret(&name, line)?);
    }
    if out.is_empty() || out.len() > 4 {
        return Err(ConfigError {
            name,
            value: None,
            reason: "expected 1 to 4 passwords, one per line (the first is sent, all are accepted)"
                .into(),
        });
    }
    Ok(out)
}

fn known_commands() -> HashSet<&'static str> {
    include_str!("acl_commands.txt").lines().collect()
}

const CATEGORIES: &[&str] = &[
    "all",
    "admin",
    "bitmap",
    "blocking",
    "connection",
    "dangerous",
    "fast",
    "geo",
    "hash",
    "hyperloglog",
    "keyspace",
    "list",
    "pubsub",
    "read",
    "scripting",
    "set",
    "slow",
    "sortedset",
    "stream",
    "string",
    "transaction",
    "write",
];

/// An operator's rule file: `user <name> <rule>...` per line, `#` comments. Passwords are not
/// written here (they come from REDISHA_ACL_DIR/<name>). The words are checked against the
/// commands and categories that Redis 7.0 and Valkey 8 both know, so a typo stops the pod here,
/// with its line number, not in a crash loop of redis-server.
pub fn parse_rules(text: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let cmds = known_commands();
    let mut users: Vec<(String, Vec<String>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        let (name, rules) = match words.as_slice() {
            [] => continue,
            [w, ..] if w.starts_with('#') => continue,
            ["user", name, rules @ ..] => (*name, rules),
            _ => return Err(format!("line {n}: expected `user <name> <rules>`")),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            return Err(format!(
                "line {n}: user name {name:?} is not [A-Za-z0-9._-]"
            ));
        }
        if RESERVED.contains(&name) {
            return Err(format!(
                "line {n}: user {name:?} is a built-in user; choose another name"
            ));
        }
        if users.iter().any(|(u, _)| u == name) {
            return Err(format!("line {n}: user {name:?} defined twice"));
        }
        let mut out = Vec::new();
        for r in rules {
            check_rule(r, &cmds).map_err(|why| format!("line {n}: user {name:?}: {why}"))?;
            out.push(r.to_string());
        }
        users.push((name.to_string(), out));
    }
    if users.is_empty() {
        return Err("defines no user".into());
    }
    Ok(users)
}

fn check_rule(r: &str, cmds: &HashSet<&str>) -> Result<(), String> {
    // Rendered as one word of a config line: nothing that could end it or open a quote.
    if !r
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"\"'\\".contains(&b))
    {
        return Err(format!("rule {r:?} holds quotes or non-ASCII characters"));
    }
    match r {
        "on"
        | "off"
        | "allkeys"
        | "allchannels"
        | "resetkeys"
        | "resetchannels"
        | "allcommands"
        | "nocommands"
        | "sanitize-payload"
        | "skip-sanitize-payload" => return Ok(()),
        "nopass" | "resetpass" | "reset" => {
            return Err(format!(
                "rule {r:?} changes passwords; they come from REDISHA_ACL_DIR/<user>"
            ))
        }
        _ => {}
    }
    if r.starts_with(['>', '<', '#', '!']) {
        return Err("a password rule; passwords come from REDISHA_ACL_DIR/<user>".into());
    }
    if r.starts_with('(') || r == "clearselectors" {
        return Err(format!("rule {r:?}: selectors are not supported"));
    }
    for p in ["~", "%R~", "%W~", "%RW~", "&"] {
        if let Some(pat) = r.strip_prefix(p) {
            return if pat.is_empty() {
                Err(format!("rule {r:?}: empty pattern"))
            } else {
                Ok(())
            };
        }
    }
    let (grant, what) = match r.split_at(1) {
        ("+", w) => (true, w),
        ("-", w) => (false, w),
        _ => return Err(format!("unknown rule {r:?}")),
    };
    if let Some(cat) = what.strip_prefix('@') {
        if !CATEGORIES.contains(&cat) {
            return Err(format!("unknown category {r:?}"));
        }
        if grant && DENIED_CATEGORIES.contains(&cat) {
            return Err(lockout(r));
        }
        return Ok(());
    }
    let what = what.to_ascii_lowercase();
    if !cmds.contains(what.as_str()) {
        return Err(format!("unknown command {r:?}"));
    }
    let parent = what.split('|').next().unwrap_or("");
    if grant && (HA_DENY.contains(&what.as_str()) || HA_DENY.contains(&parent)) {
        return Err(lockout(r));
    }
    Ok(())
}

fn lockout(r: &str) -> String {
    format!(
        "rule {r:?} grants a command that can break failover or lock redisha-init out (ACL, CONFIG, REPLICAOF, SHUTDOWN, CLIENT PAUSE/KILL...); these are reserved"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_files() {
        let ok = parse_rules("# apps\n\nuser orders ~orders:* &orders:* +@read +@write -flushdb\nuser ro ~* +get +client|setname\n")
            .expect("valid");
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].0, "orders");
        let bad = [
            ("user a ~* +gett", "unknown command \"+gett\""),
            ("user a ~* +@reads", "unknown category"),
            ("user default ~* +get", "built-in"),
            ("user redisha ~* +get", "built-in"),
            ("user sentinel +get", "built-in"),
            ("user a >secret", "password rule"),
            ("user a nopass", "changes passwords"),
            ("user a +acl", "lock redisha-init out"),
            ("user a +config|set", "lock redisha-init out"),
            ("user a +@admin", "lock redisha-init out"),
            ("user a +CLIENT|KILL", "lock redisha-init out"),
            ("user a (~x +get)", "selectors"),
            ("usr a +get", "expected `user"),
            ("user ../x +get", "not [A-Za-z0-9._-]"),
            ("user a +get\nuser a +set", "twice"),
            ("user a ~\"x", "quotes"),
            ("", "no user"),
        ];
        for (text, want) in bad {
            let e = parse_rules(text).expect_err(text);
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
        // Taking commands away is always allowed, HA ones included.
        parse_rules("user a ~* +@all -acl -config|set -@admin").expect("removals");
    }

    #[test]
    fn acl_dir_builds_users_and_our_login() {
        use crate::config::{build_from_map, Flags};
        use std::collections::HashMap;
        let dir = std::env::temp_dir().join(format!("redisha-acl-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for u in ["redisha", "replication", "sentinel"] {
            std::fs::write(dir.join(u), format!("{u}-pw\n")).expect("pw");
        }
        std::fs::write(dir.join("app"), "new\r\n\nold\n").expect("pw");
        let d = dir.display().to_string();
        let flags = Flags::with(&[("REDISHA_ROLE", "master")]);
        let c = build_from_map(&flags, &HashMap::from([("REDISHA_ACL_DIR", d.as_str())]))
            .expect("valid");
        assert_eq!(c.conn.auth.user.as_deref(), Some(REDISHA_USER));
        assert_eq!(
            c.conn.auth.redis.as_ref().map(Secret::expose),
            Some("redisha-pw")
        );
        let acl = c.acl.expect("acl");
        let app = acl.user(Kind::App).expect("app");
        let pws: Vec<&str> = app.passwords.iter().map(Secret::expose).collect();
        assert_eq!(
            pws,
            ["new", "old"],
            "first line sent, blank lines and CR dropped"
        );
        // A shared password next to the users is refused, naming it, not echoing it.
        let e = build_from_map(
            &flags,
            &HashMap::from([
                ("REDISHA_ACL_DIR", d.as_str()),
                ("REDIS_PASSWORD", "s3cret"),
            ]),
        )
        .expect_err("both");
        assert!(e.to_string().starts_with("REDIS_PASSWORD:") && !e.to_string().contains("s3cret"));
        // The rule file alone means nothing.
        let e = build_from_map(&flags, &HashMap::from([("REDISHA_ACL_FILE", "/x")]))
            .expect_err("alone");
        assert!(e.to_string().contains("needs REDISHA_ACL_DIR"), "{e}");
        std::fs::remove_file(dir.join("sentinel")).expect("rm");
        let e = build_from_map(&flags, &HashMap::from([("REDISHA_ACL_DIR", d.as_str())]))
            .expect_err("missing");
        assert!(e.to_string().contains("REDISHA_ACL_DIR/sentinel"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_fixed_rule_names_known_commands() {
        let cmds = known_commands();
        for set in [
            REDISHA_DATA_RULES,
            REPLICATION_RULES,
            SENTINEL_DATA_RULES,
            DEFAULT_APP_RULES,
        ] {
            for r in set {
                if let Some(c) = r.strip_prefix(['+', '-']).filter(|c| !c.starts_with('@')) {
                    assert!(cmds.contains(c), "{r}");
                }
            }
        }
        for c in HA_DENY {
            assert!(cmds.contains(c), "{c}");
        }
    }
}
