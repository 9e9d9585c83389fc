//! `redisha-init probe redis|sentinel --live|--ready`: exec probes for Kubernetes and the Docker
//! HEALTHCHECK. Exit 0 or 1, one line on failure. Same environment as the pod, so the same
//! password and TLS settings.

use std::time::Duration;

use crate::config::Config;
use crate::config::Endpoint;
use crate::config::Server;
use crate::engine::ServerVersion;
use crate::redisio;
use crate::sentinel::ReplicaView;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Ready,
}

/// What the server said to PING: the reply, or the error code (LOADING, MASTERDOWN, NOAUTH, …),
/// or that it could not be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ping {
    Pong,
    Error(String),
    Unreachable(String),
}

/// The pure judgement. `info`: `INFO replication` (redis readiness); `names_master`: whether the
/// sentinel names a master (sentinel readiness).
pub fn judge(
    kind: Server,
    mode: Mode,
    ping: &Ping,
    info: Option<&str>,
    names_master: Option<bool>,
) -> Result<(), String> {
    match (ping, mode) {
        (Ping::Unreachable(e), _) => return Err(format!("not reachable: {e}")),
        // Alive but busy: loading its data set, or a replica whose master is down. Restarting it
        // would only make that worse.
        (Ping::Error(code), Mode::Live) if code == "LOADING" || code == "MASTERDOWN" => {
            return Ok(())
        }
        (Ping::Error(code), Mode::Ready) if code == "LOADING" => {
            return Err("loading the data set".into())
        }
        (Ping::Error(code), _) => return Err(format!("PING answered {code}")),
        (Ping::Pong, Mode::Live) => return Ok(()),
        (Ping::Pong, Mode::Ready) => {}
    }
    match kind {
        Server::Redis => {
            let info = info.ok_or("no INFO replication reply")?;
            if redisio::info_field(info, "role") == Some("slave") {
                // The link reads "down" during the initial sync too; name the more specific cause.
                if redisio::info_field(info, "master_sync_in_progress") != Some("0") {
                    return Err("replica: initial sync in progress".into());
                }
                if redisio::info_field(info, "master_link_status") != Some("up") {
                    return Err("replica: master link down".into());
                }
            }
            Ok(())
        }
        Server::Sentinel => match names_master {
            Some(true) => Ok(()),
            _ => Err("sentinel names no master for the group".into()),
        },
    }
}

pub async fn run(cfg: &Config, kind: Server, mode: Mode, timeout: Duration) -> Result<(), String> {
    let (e, target) = (cfg.own(kind), kind);
    let work = async {
        let mut con = match redisio::connect(&cfg.conn, &e, target, timeout).await {
            Ok(c) => c,
            Err(err) => return judge(kind, mode, &classify(&err), None, None),
        };
        let ping = match redisio::query::<String>(&mut con, &mut redis::cmd("PING"), timeout).await
        {
            Ok(s) if s == "PONG" => Ping::Pong,
            Ok(s) => Ping::Error(s),
            Err(err) => classify(&err),
        };
        if ping != Ping::Pong || mode == Mode::Live {
            return judge(kind, mode, &ping, None, None);
        }
        match kind {
            Server::Redis => {
                let info: Option<String> =
                    redisio::query(&mut con, redis::cmd("INFO").arg("replication"), timeout)
                        .await
                        .ok();
                let verdict = judge(kind, mode, &ping, info.as_deref(), None);
                match (&verdict, info.as_deref()) {
                    // Not linked: say so when the version rule explains it, else the link.
                    (Err(_), Some(i)) => match version_block(cfg, &mut con, i, timeout).await {
                        Some(why) => Err(why),
                        None => verdict,
                    },
                    _ => verdict,
                }
            }
            Server::Sentinel => {
                let safety = match safety(cfg, &mut con, timeout).await {
                    Ok(s) => s,
                    Err(e) => return Err(format!("SENTINEL query failed: {e}")),
                };
                judge(kind, mode, &ping, None, Some(safety.names_master))?;
                failover_safe(&safety)
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

/// Why an unlinked replica cannot link at all: its master runs a newer version, whose RDB it
/// cannot load, so every full sync fails and it retries for ever (README, "Valkey"). Decided by
/// the version rule (our `INFO server` against the master's), not by the server's log: the
/// probe is a separate process that never sees that log, the line's wording is the server's
/// own, and the versions name the cause before a sync is even tried. None: the versions do not
/// explain it (or the master does not answer: then the link is the news).
async fn version_block(
    cfg: &Config,
    con: &mut redis::aio::MultiplexedConnection,
    repl: &str,
    timeout: Duration,
) -> Option<String> {
    let master = redisio::Repl::parse(repl)?.master?;
    // A share of the probe's time: the plain "link down" answer must still fit in it.
    let t = (timeout / 3).min(Duration::from_secs(1));
    let own: String = redisio::query(con, redis::cmd("INFO").arg("server"), t)
        .await
        .ok()?;
    let mine = ServerVersion::parse(&own)?;
    let theirs = ServerVersion::parse(&redisio::info(&cfg.conn, &master, "server", t).await.ok()?)?;
    blocked_by_version(&mine, &master.to_string(), &theirs)
}

/// The version rule's answer for an unlinked replica (pure; see version_block).
pub fn blocked_by_version(
    mine: &ServerVersion,
    master: &str,
    theirs: &ServerVersion,
) -> Option<String> {
    (!mine.can_follow(theirs)).then(|| {
        format!(
            "replica: cannot sync from its master {master} ({theirs}): our {mine} cannot load its newer RDB format (version rule); the full sync fails and is retried for ever"
        )
    })
}

/// What sentinel readiness looks at: could the cluster lose its master now and recover?
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Safety {
    pub names_master: bool,
    /// The sentinel sees the master it names down (s_down or o_down).
    pub master_down: bool,
    pub quorum: u32,
    /// Other sentinels known, and those of them not down.
    pub sentinels_known: usize,
    pub sentinels_up: usize,
    /// Replicas a failover could promote (up, linked, priority > 0).
    pub promotable: Vec<Endpoint>,
    /// When this pod's data node is a replica: its address and whether its link is up.
    pub own_replica: Option<(Endpoint, bool)>,
}

/// Readiness of the sentinel = failover-safe: it names a master it sees up, it knows at least
/// quorum − 1 other live sentinels (so it can agree a failover), and it knows a replica it could
/// promote; on a replica pod, it knows this pod's own replica and that replica's link is up. A
/// Kubernetes rolling update waits for Ready before it stops the next pod, so it never stops a
/// pod while the cluster could not take over. A lone first pod (no peer, no replica known) is
/// ready: there is nothing to hand over to, and the next pods wait for it.
pub fn failover_safe(s: &Safety) -> Result<(), String> {
    if !s.names_master {
        return Err("sentinel names no master for the group".into());
    }
    if s.master_down {
        return Err("sentinel sees the master down".into());
    }
    if s.sentinels_known == 0 && s.promotable.is_empty() && s.own_replica.is_none() {
        return Ok(());
    }
    let need = s.quorum.saturating_sub(1) as usize;
    if s.sentinels_up < need {
        return Err(format!(
            "knows {} live other sentinels, a failover needs {need} (quorum {} − 1)",
            s.sentinels_up, s.quorum
        ));
    }
    if let Some((addr, link_up)) = &s.own_replica {
        if !s.promotable.contains(addr) {
            return Err(format!(
                "this pod's replica {addr} is not known to its sentinel as promotable yet"
            ));
        }
        if !link_up {
            return Err(format!(
                "this pod's replica {addr} has its master link down"
            ));
        }
    }
    if s.promotable.is_empty() {
        return Err("knows no replica it could promote".into());
    }
    Ok(())
}

pub(crate) async fn safety(
    cfg: &Config,
    con: &mut redis::aio::MultiplexedConnection,
    t: Duration,
) -> redis::RedisResult<Safety> {
    let Some(master) = redisio::sentinel_master_on(con, &cfg.group, t).await? else {
        return Ok(Safety::default());
    };
    let sentinels = redisio::sentinel_peers_on(con, &cfg.group, t).await?;
    let replicas = redisio::sentinel_replicas_on(con, &cfg.group, t).await?;
    let own_replica = match redisio::repl(&cfg.conn, &cfg.own(Server::Redis), t).await {
        Ok(r) if !r.is_master => Some((cfg.own(Server::Redis), r.link_up)),
        _ => None,
    };
    Ok(Safety {
        names_master: true,
        master_down: master.is_down(),
        // Never above the configured one: the cleanup raises our sentinel's quorum out of reach
        // for a second after a reset so that it cannot lead a failover; the others still can.
        quorum: master.quorum.map_or(cfg.quorum, |q| q.min(cfg.quorum)),
        sentinels_known: sentinels.len(),
        sentinels_up: sentinels.iter().filter(|p| p.is_up()).count(),
        // Typed from their `ip`/`port` fields so that they compare with this pod's own address
        // whatever the family.
        promotable: replicas
            .into_iter()
            .filter(ReplicaView::is_promotable)
            .map(|r| r.addr)
            .collect(),
        own_replica,
    })
}

fn classify(e: &redis::RedisError) -> Ping {
    match e.code() {
        Some(code) => Ping::Error(code.to_string()),
        None if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_refusal()
            || e.is_connection_dropped() =>
        {
            Ping::Unreachable(e.to_string())
        }
        None => Ping::Unreachable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNCED: &str = "role:slave\r\nmaster_link_status:up\r\nmaster_sync_in_progress:0\r\n";
    const LINK_DOWN: &str =
        "role:slave\r\nmaster_link_status:down\r\nmaster_sync_in_progress:0\r\n";
    const SYNCING: &str = "role:slave\r\nmaster_link_status:down\r\nmaster_sync_in_progress:1\r\n";

    #[test]
    fn table() {
        use Mode::*;
        use Server::*;
        let err = |c: &str| Ping::Error(c.into());
        let down = Ping::Unreachable("refused".into());
        type Row<'a> = (Server, Mode, Ping, Option<&'a str>, Option<bool>, bool);
        let rows: Vec<Row> = vec![
            (Redis, Live, Ping::Pong, None, None, true),
            (Redis, Live, err("LOADING"), None, None, true),
            (Redis, Live, err("MASTERDOWN"), None, None, true),
            (Redis, Live, err("NOAUTH"), None, None, false),
            (Redis, Live, down.clone(), None, None, false),
            (Redis, Ready, err("LOADING"), None, None, false),
            (
                Redis,
                Ready,
                Ping::Pong,
                Some("role:master\r\n"),
                None,
                true,
            ),
            (Redis, Ready, Ping::Pong, Some(SYNCED), None, true),
            (Redis, Ready, Ping::Pong, Some(LINK_DOWN), None, false),
            (Redis, Ready, Ping::Pong, Some(SYNCING), None, false),
            (Sentinel, Live, Ping::Pong, None, None, true),
            (Sentinel, Ready, Ping::Pong, None, Some(true), true),
            (Sentinel, Ready, Ping::Pong, None, Some(false), false),
            (Sentinel, Ready, down, None, None, false),
        ];
        for (k, m, p, info, names, ok) in rows {
            let got = judge(k, m, &p, info, names);
            assert_eq!(got.is_ok(), ok, "{k:?} {m:?} {p:?} {info:?}: {got:?}");
            if let Err(e) = got {
                assert!(!e.contains('\n'));
            }
        }
    }

    fn ep(s: &str) -> Endpoint {
        Endpoint::parse(s).expect("test address")
    }

    #[test]
    fn an_older_replica_names_the_version_rule() {
        let v = |i: &str| ServerVersion::parse(i).expect("parses");
        let redis70 = v("redis_version:7.0.15\r\n");
        let valkey8 = v("redis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n");
        assert_eq!(
            blocked_by_version(&redis70, "10.0.0.1:6379", &valkey8).as_deref(),
            Some("replica: cannot sync from its master 10.0.0.1:6379 (valkey 8.0.1): our redis 7.0.15 cannot load its newer RDB format (version rule); the full sync fails and is retried for ever")
        );
        // Same or newer than the master: the link itself is the news.
        assert_eq!(
            blocked_by_version(&valkey8, "10.0.0.1:6379", &redis70),
            None
        );
        assert_eq!(
            blocked_by_version(&redis70, "10.0.0.1:6379", &redis70),
            None
        );
    }

    #[test]
    fn failover_safety_table() {
        let base = Safety {
            names_master: true,
            master_down: false,
            quorum: 2,
            sentinels_known: 2,
            sentinels_up: 2,
            promotable: vec![ep("10.0.0.2:6379"), ep("10.0.0.3:6379")],
            own_replica: None,
        };
        let rows: Vec<(&str, Safety, bool)> = vec![
            ("steady master pod", base.clone(), true),
            (
                "names no master",
                Safety {
                    names_master: false,
                    ..base.clone()
                },
                false,
            ),
            (
                "master down",
                Safety {
                    master_down: true,
                    ..base.clone()
                },
                false,
            ),
            (
                "lone first pod",
                Safety {
                    sentinels_known: 0,
                    sentinels_up: 0,
                    promotable: vec![],
                    ..base.clone()
                },
                true,
            ),
            (
                "no other sentinel up",
                Safety {
                    sentinels_up: 0,
                    ..base.clone()
                },
                false,
            ),
            (
                "knows no replica",
                Safety {
                    promotable: vec![],
                    ..base.clone()
                },
                false,
            ),
            (
                "replica pod, own replica known and linked",
                Safety {
                    own_replica: Some((ep("10.0.0.2:6379"), true)),
                    ..base.clone()
                },
                true,
            ),
            (
                "replica pod, own replica unknown to its sentinel",
                Safety {
                    own_replica: Some((ep("10.0.0.9:6379"), true)),
                    ..base.clone()
                },
                false,
            ),
            (
                "replica pod, link down",
                Safety {
                    own_replica: Some((ep("10.0.0.2:6379"), false)),
                    ..base.clone()
                },
                false,
            ),
        ];
        for (name, s, ok) in rows {
            let got = failover_safe(&s);
            assert_eq!(got.is_ok(), ok, "{name}: {got:?}");
        }
    }

    /// The promotable replicas of a `SENTINEL REPLICAS` reply, as `safety` takes them.
    fn promotable(reply: &[std::collections::HashMap<String, String>]) -> Vec<Endpoint> {
        reply
            .iter()
            .filter_map(ReplicaView::parse)
            .filter(ReplicaView::is_promotable)
            .map(|r| r.addr)
            .collect()
    }

    /// Issue 27: on an IPv6 replica pod, the sentinel lists the replica with a bare `ip`
    /// (`fd88::22`) and the pod knows itself as `[fd88::22]:6379`; it must count as promotable.
    #[test]
    fn ipv6_replica_pod_is_ready() {
        let entry = |ip: &str, port: &str, flags: &str, link: &str, prio: &str| {
            [
                ("ip", ip.to_string()),
                ("port", port.to_string()),
                ("flags", flags.to_string()),
                ("master-link-status", link.to_string()),
                ("slave-priority", prio.to_string()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<std::collections::HashMap<_, _>>()
        };
        let reply = vec![
            entry("fd88::22", "6379", "slave", "ok", "100"),
            entry("fd88::23", "6379", "slave", "ok", "100"),
            entry("fd88::24", "6379", "s_down,slave", "ok", "100"),
            entry("fd88::25", "6379", "slave", "err", "100"),
            entry("fd88::26", "6379", "slave", "ok", "0"),
        ];
        let p = promotable(&reply);
        assert_eq!(p, vec![ep("[fd88::22]:6379"), ep("fd88::23:6379")]);
        let s = |own: &str, link| Safety {
            names_master: true,
            master_down: false,
            quorum: 2,
            sentinels_known: 2,
            sentinels_up: 2,
            promotable: p.clone(),
            own_replica: Some((ep(own), link)),
        };
        assert_eq!(failover_safe(&s("[fd88::22]:6379", true)), Ok(()));
        assert_eq!(failover_safe(&s("[fd88:0::22]:6379", true)), Ok(()));
        for (own, link) in [
            ("[fd88::24]:6379", true),
            ("[fd88::26]:6379", true),
            ("[fd88::22]:6380", true),
            ("[fd88::22]:6379", false),
        ] {
            assert!(failover_safe(&s(own, link)).is_err(), "{own} {link}");
        }
    }
}
