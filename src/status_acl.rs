//! `status` with ACL users: which users each server has, and which server's ACL differs from its
//! peers' (`ACL LIST` as user `redisha`). Data nodes are compared with data nodes and sentinels
//! with sentinels (their rules differ by design). A difference is reported, not judged: during
//! a password rotation (README, "ACL users") the pods that have rolled differ from the others.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, Endpoint, Server};
use crate::redisio;

/// One server's `ACL LIST`, reduced to its user names and a fingerprint of the whole list (the
/// rules and password hashes; never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AclObs {
    pub addr: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub users: Vec<String>,
    #[serde(skip)]
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AclGroup {
    /// The users the most servers of this kind have.
    pub users: Vec<String>,
    /// How many of those that answered hold the common ACL.
    pub agree: usize,
    pub answered: usize,
    /// Servers whose ACL differs from the common one.
    pub differ: Vec<String>,
    /// Servers that could not be asked.
    pub unknown: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AclReport {
    pub data_nodes: AclGroup,
    pub sentinels: AclGroup,
}

/// The common ACL is the one most servers hold (ties: the smallest fingerprint, so the answer
/// does not depend on the order servers answered in).
pub fn compare(obs: &[AclObs]) -> AclGroup {
    let mut count: BTreeMap<&str, (usize, &Vec<String>)> = BTreeMap::new();
    for o in obs.iter().filter(|o| o.error.is_none()) {
        count.entry(&o.fingerprint).or_insert((0, &o.users)).0 += 1;
    }
    let best = count
        .iter()
        .max_by(|a, b| a.1 .0.cmp(&b.1 .0).then(b.0.cmp(a.0)))
        .map(|(f, (n, u))| (f.to_string(), *n, (*u).clone()));
    let (fp, agree, users) = best.unwrap_or_default();
    AclGroup {
        users,
        agree,
        answered: obs.iter().filter(|o| o.error.is_none()).count(),
        differ: obs
            .iter()
            .filter(|o| o.error.is_none() && o.fingerprint != fp)
            .map(|o| o.addr.clone())
            .collect(),
        unknown: obs
            .iter()
            .filter(|o| o.error.is_some())
            .map(|o| o.addr.clone())
            .collect(),
    }
}

/// `ACL LIST` lines → (user names, fingerprint). Redis 7.0 lists a user's commands in an order
/// that differs from process to process (its command table is a hash table), so each line's
/// words are sorted: two servers with the same permissions describe them with the same words.
pub fn reduce(lines: &[String]) -> (Vec<String>, String) {
    let mut sorted: Vec<String> = lines
        .iter()
        .map(|l| {
            let mut w: Vec<&str> = l.split_whitespace().collect();
            if w.len() > 2 {
                w[2..].sort_unstable();
            }
            w.join(" ")
        })
        .collect();
    sorted.sort_unstable();
    let users = sorted
        .iter()
        .filter_map(|l| l.strip_prefix("user "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    let d = ring::digest::digest(&ring::digest::SHA256, sorted.join("\n").as_bytes());
    let fp = d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    (users, fp)
}

async fn ask(cfg: &Config, addr: &str, target: Server, t: Duration) -> AclObs {
    let fail = |e: String| AclObs {
        addr: addr.to_string(),
        error: Some(e),
        users: Vec::new(),
        fingerprint: String::new(),
    };
    let Some(e) = Endpoint::parse(addr) else {
        return fail("not an address".into());
    };
    let mut con = match redisio::connect(&cfg.conn, &e, target, t).await {
        Ok(c) => c,
        Err(err) => return fail(err.to_string()),
    };
    match redisio::query::<Vec<String>>(&mut con, redis::cmd("ACL").arg("LIST"), t).await {
        Ok(lines) => {
            let (users, fingerprint) = reduce(&lines);
            AclObs {
                addr: addr.to_string(),
                error: None,
                users,
                fingerprint,
            }
        }
        Err(err) => fail(err.to_string()),
    }
}

/// `status`'s hook: the servers that answered its main look.
pub async fn gather_for(
    cfg: &Config,
    report: &crate::status::Report,
    t: Duration,
) -> Option<AclReport> {
    let nodes: Vec<String> = report
        .nodes
        .iter()
        .filter(|n| n.error.is_none())
        .map(|n| n.addr.clone())
        .collect();
    let sentinels: Vec<String> = report
        .sentinels
        .iter()
        .filter(|s| s.answered())
        .map(|s| s.addr.clone())
        .collect();
    gather(cfg, &nodes, &sentinels, t).await
}

/// Asks every data node and sentinel that answered the main look; None without ACL users.
pub async fn gather(
    cfg: &Config,
    nodes: &[String],
    sentinels: &[String],
    t: Duration,
) -> Option<AclReport> {
    cfg.acl.as_ref()?;
    let mut n = Vec::new();
    for a in nodes {
        n.push(ask(cfg, a, Server::Redis, t).await);
    }
    let mut s = Vec::new();
    for a in sentinels {
        s.push(ask(cfg, a, Server::Sentinel, t).await);
    }
    Some(AclReport {
        data_nodes: compare(&n),
        sentinels: compare(&s),
    })
}

impl AclReport {
    pub fn lines(&self) -> String {
        let mut out = String::new();
        for (what, g) in [
            ("data nodes", &self.data_nodes),
            ("sentinels", &self.sentinels),
        ] {
            let _ = write!(
                out,
                "acl {what}: users {}; {}/{} agree",
                g.users.join(", "),
                g.agree,
                g.answered
            );
            if !g.differ.is_empty() {
                let _ = write!(
                    out,
                    "; DIFFERS: {} (a rotation or rollout under way?)",
                    g.differ.join(", ")
                );
            }
            if !g.unknown.is_empty() {
                let _ = write!(out, "; not asked: {}", g.unknown.join(", "));
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(addr: &str, list: &[&str]) -> AclObs {
        let (users, fingerprint) = reduce(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        AclObs {
            addr: addr.into(),
            error: None,
            users,
            fingerprint,
        }
    }

    #[test]
    fn the_odd_server_is_named() {
        let a = [
            "user app on #aa ~* +@all",
            "user redisha on #bb -@all +info",
        ];
        let b = [
            "user app on #aa #cc ~* +@all",
            "user redisha on #bb -@all +info",
        ];
        let g = compare(&[obs("n1", &a), obs("n2", &b), obs("n3", &a)]);
        assert_eq!(g.users, vec!["app", "redisha"]);
        assert_eq!((g.agree, g.answered), (2, 3));
        assert_eq!(g.differ, vec!["n2"]);
        // The order of the lines and of a line's rules does not matter (Redis 7.0 varies it).
        let g = compare(&[
            obs("n1", &a),
            obs("n2", &["user redisha on #bb +info -@all", a[0]]),
        ]);
        assert!(g.differ.is_empty(), "{g:?}");
        // A tie is decided by the fingerprint, not by who answered first.
        let g1 = compare(&[obs("n1", &a), obs("n2", &b)]);
        let g2 = compare(&[obs("n2", &b), obs("n1", &a)]);
        assert_eq!(g1.differ, g2.differ);
        let mut down = obs("n4", &a);
        down.error = Some("refused".into());
        let g = compare(&[obs("n1", &a), down]);
        assert_eq!(
            (g.agree, g.answered, g.unknown.clone()),
            (1, 1, vec!["n4".to_string()])
        );
    }
}
