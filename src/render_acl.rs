//! ACL users into redis.conf and sentinel.conf (config/acl.rs decides who they are).
//!
//! `user` directives in the rendered files rather than an aclfile or `ACL SETUSER` at run time:
//! the files are rendered afresh at every start (so a restart applies the Secret's current
//! passwords), Redis and Sentinel keep them through their own CONFIG REWRITE, and no command
//! carrying a password ever crosses a socket. Passwords are written as SHA-256 (`#<hex>`), so
//! the files hold no plaintext except the one a client must send (`masterauth`, `auth-pass`,
//! `sentinel-pass`: already redacted by `render`).

use std::fmt::Write as _;

use crate::config::acl::{
    Acl, AclUser, Kind, APP_SENTINEL_RULES, HA_DENY, REDISHA_DATA_RULES, REDISHA_SENTINEL_RULES,
    REPLICATION_RULES, SENTINEL_DATA_RULES, SENTINEL_PEER_RULES,
};

fn sha256_hex(s: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let mut out = String::with_capacity(64);
    for b in d.as_ref() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `user <name> reset <rules> on #<hash>...`: `reset` first so nothing from an earlier
/// definition survives, the passwords last so no rule can drop them (the rule file may not
/// hold password rules anyway).
fn user_line(u: &AclUser, rules: &[&str], extra: &[String], out: &mut String) {
    let _ = write!(out, "user {} reset", u.name);
    for r in rules {
        let _ = write!(out, " {r}");
    }
    for r in extra {
        let _ = write!(out, " {r}");
    }
    // An operator's `off` (a user kept but disabled) stands; every other user is on.
    if !extra.iter().any(|r| r == "off") {
        let _ = write!(out, " on");
    }
    for p in &u.passwords {
        let _ = write!(out, " #{}", sha256_hex(p.expose()));
    }
    out.push('\n');
}

/// An application user on a data node: the operator's rules, then every HA command taken away,
/// whatever the rules said.
fn app_data_rules(u: &AclUser) -> Vec<String> {
    let mut v = u.rules.clone();
    v.push("-@admin".into());
    v.push("-@dangerous".into());
    v.extend(HA_DENY.iter().map(|c| format!("-{c}")));
    v
}

/// The data node's users and the replica's login to its master.
pub fn redis_lines(acl: &Acl, quote_secret: fn(&str) -> String, out: &mut String) {
    // `default` off: a client that does not say who it is gets nothing.
    out.push_str("user default reset off resetkeys resetchannels -@all\n");
    for u in &acl.users {
        match u.kind {
            Kind::Redisha => user_line(u, REDISHA_DATA_RULES, &[], out),
            Kind::Replication => user_line(u, REPLICATION_RULES, &[], out),
            Kind::Sentinel => user_line(u, SENTINEL_DATA_RULES, &[], out),
            Kind::App => user_line(
                u,
                &["resetkeys", "resetchannels", "-@all"],
                &app_data_rules(u),
                out,
            ),
        }
    }
    if let Some(r) = acl.user(Kind::Replication) {
        let _ = writeln!(out, "masteruser {}", r.name);
        let _ = writeln!(out, "masterauth {}", quote_secret(r.current().expose()));
    }
}

/// The sentinel's users and how it logs in to its peers.
pub fn sentinel_lines(acl: &Acl, quote_secret: fn(&str) -> String, out: &mut String) {
    out.push_str("user default reset off resetkeys resetchannels -@all\n");
    for u in &acl.users {
        match u.kind {
            Kind::Redisha => user_line(u, REDISHA_SENTINEL_RULES, &[], out),
            // The replication user has no business with a sentinel.
            Kind::Replication => {}
            Kind::Sentinel => user_line(u, SENTINEL_PEER_RULES, &[], out),
            Kind::App => user_line(u, APP_SENTINEL_RULES, &[], out),
        }
    }
    if let Some(s) = acl.user(Kind::Sentinel) {
        let _ = writeln!(out, "sentinel sentinel-user {}", s.name);
        let _ = writeln!(
            out,
            "sentinel sentinel-pass {}",
            quote_secret(s.current().expose())
        );
    }
}

/// After `sentinel monitor`: how the sentinel logs in to the group's data nodes.
pub fn sentinel_group_lines(
    acl: &Acl,
    group: &str,
    quote_secret: fn(&str) -> String,
    out: &mut String,
) {
    if let Some(s) = acl.user(Kind::Sentinel) {
        let _ = writeln!(out, "sentinel auth-user {group} {}", s.name);
        let _ = writeln!(
            out,
            "sentinel auth-pass {group} {}",
            quote_secret(s.current().expose())
        );
    }
}

/// `render` output: the password hashes of `user` lines replaced (a weak password's hash is
/// as good as the password).
pub fn redact_hashes(line: &str) -> Option<String> {
    let t = line.trim_start();
    if !t.starts_with("user ") {
        return None;
    }
    let words: Vec<&str> = t
        .split(' ')
        .map(|w| {
            if w.starts_with('#') || w.starts_with('>') {
                "#<redacted>"
            } else {
                w
            }
        })
        .collect();
    Some(words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_redis() {
        // ACL GETUSER of a user with password "foo" on redis 7.0 shows this hash.
        assert_eq!(
            sha256_hex("foo"),
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
        );
    }

    #[test]
    fn hashes_are_redacted() {
        let l = "user app reset ~* on #2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
        let r = redact_hashes(l).expect("a user line");
        assert!(!r.contains("2c26"), "{r}");
        assert!(r.starts_with("user app reset ~* on #<redacted>"), "{r}");
        assert_eq!(redact_hashes("requirepass x"), None);
    }
}
