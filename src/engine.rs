//! Which server a data node runs (Redis or Valkey, and its version), read from `INFO server`
//! in this one place, and the version rule of a rolling upgrade: a replica can full-sync only
//! from a master whose RDB format it can load, i.e. one that is not newer than itself (Redis 7.0
//! writes RDB 10, Redis 7.2 and Valkey 8 write 11; an older node refuses a newer RDB).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::{Config, Server};
use crate::redisio;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Redis,
    Valkey,
}

/// `major.minor.patch`; a missing part counts as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let mut it = s.trim().split('.');
        let mut part = || -> Option<u32> {
            match it.next() {
                None => Some(0),
                Some(p) => p.parse().ok(),
            }
        };
        let v = Version(part()?, part()?, part()?);
        Some(v)
    }
    /// RDB formats change with minor releases only, so patch releases rank equal.
    fn line(self) -> (u32, u32) {
        (self.0, self.1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Redis => "redis",
            Engine::Valkey => "valkey",
        })
    }
}

/// What a data node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerVersion {
    pub engine: Engine,
    /// `valkey_version` on Valkey, `redis_version` on Redis.
    pub version: Version,
    /// `redis_version`: on Valkey, the Redis release it stays compatible with (7.2.4 for every
    /// Valkey so far), which places it on Redis's line of RDB formats.
    pub compat: Version,
}

impl ServerVersion {
    /// From `INFO server` (any reply that holds its fields).
    pub fn parse(info: &str) -> Option<ServerVersion> {
        let f = |k| redisio::info_field(info, k);
        let compat = Version::parse(f("redis_version")?)?;
        match (f("server_name"), f("valkey_version")) {
            (Some("valkey"), Some(v)) | (None, Some(v)) => Some(ServerVersion {
                engine: Engine::Valkey,
                version: Version::parse(v)?,
                compat,
            }),
            _ => Some(ServerVersion {
                engine: Engine::Redis,
                version: compat,
                compat,
            }),
        }
    }

    /// The total order of "newer RDB format": first the Redis line it is compatible with, then
    /// Valkey after Redis on the same line (Valkey 8 reads Redis 7.2's files, not the other way
    /// round), then its own release. Sound for the upgrade paths that exist (Redis → newer
    /// Redis, Redis ≤ 7.2 → Valkey, Valkey → newer Valkey); Redis ≥ 7.4 and Valkey have diverged
    /// and must not be mixed in one group.
    pub fn key(&self) -> ((u32, u32), Engine, (u32, u32)) {
        (self.compat.line(), self.engine, self.version.line())
    }

    /// Whether a replica running `self` can load a full sync from `master`.
    pub fn can_follow(&self, master: &ServerVersion) -> bool {
        self.key() >= master.key()
    }
}

/// `{"engine": "valkey", "version": "8.0.1"}` (status --json).
impl serde::Serialize for ServerVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("engine", &self.engine)?;
        m.serialize_entry("version", &self.version.to_string())?;
        m.end()
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.engine, self.version)
    }
}

/// Added to a replica's `replica-priority` while it runs a newer version than its master (a
/// rolling upgrade is half done): Sentinel promotes the lowest priority, so a failover, a
/// handover and a switchover all pick a replica of the master's version when one is up, and
/// the replicas that stay behind can still full-sync from it. An ahead replica remains
/// promotable (better than no master) when it is the only one left.
pub const AHEAD_PENALTY: u32 = 100;

/// The `replica-priority` a data node should have. `base` is the configured one; 0 (never
/// promote) stays 0.
pub fn guarded_priority(base: u32, own: &ServerVersion, master: Option<&ServerVersion>) -> u32 {
    match master {
        Some(m) if base > 0 && m.key() < own.key() => base.saturating_add(AHEAD_PENALTY),
        _ => base,
    }
}

/// The next priority to set, if any: only a value we set ourselves (base or base + penalty) is
/// changed, so a 0 put by `switchover --to` for its duration, or an operator's `CONFIG SET`,
/// is left alone.
pub fn priority_change(base: u32, current: u32, want: u32) -> Option<u32> {
    let ours = current == base || current == base.saturating_add(AHEAD_PENALTY);
    (ours && current != want).then_some(want)
}

/// `replica-priority` of the operator's base file, else Redis's default.
pub fn base_priority(base_conf: &str) -> u32 {
    base_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            matches!(w.next(), Some("replica-priority" | "slave-priority"))
                .then(|| w.next()?.parse().ok())
                .flatten()
        })
        .next_back()
        .unwrap_or(100)
}

/// Our data node's master, as one look found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Master {
    /// Our node is the master.
    None,
    /// Configured, but its INFO could not be read: it may be dying with a failover coming.
    Silent,
    Answers(String, ServerVersion),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    /// What to say (once, while it lasts); None: nothing remarkable.
    pub state: Option<String>,
    /// Our node cannot full-sync from its master: said at error level.
    pub cannot_sync: bool,
    /// The replica-priority our node should have.
    pub priority: u32,
}

/// The version rule applied to one look. None: change nothing, least of all a raised
/// priority while the master does not answer (a failover is what the raise is for).
pub fn judge(base: u32, own: &ServerVersion, master: &Master) -> Option<Judgement> {
    let (addr, mv) = match master {
        Master::Silent => return None,
        Master::None => {
            return Some(Judgement {
                state: None,
                cannot_sync: false,
                priority: base,
            })
        }
        Master::Answers(a, v) => (a, v),
    };
    let priority = guarded_priority(base, own, Some(mv));
    let cannot_sync = !own.can_follow(mv);
    let state = if cannot_sync {
        Some(format!(
            "our {own} replicates from a newer master {addr} ({mv}): a full sync from it will fail (its RDB format is newer); only a partial resync can keep this replica current"
        ))
    } else if priority != base {
        Some(format!(
            "mixed versions: our {own} replicates from {addr} ({mv}); replica-priority raised by {AHEAD_PENALTY} while it is ahead of its master"
        ))
    } else {
        None
    };
    Some(Judgement {
        state,
        cannot_sync,
        priority,
    })
}

/// The task that applies the version rule to our data node; aborted when dropped (a stop's
/// handover must not race a `CONFIG SET`).
pub struct Guard {
    kick: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Guard {
    pub fn spawn(cfg: Config, base: u32) -> Guard {
        let kick = Arc::new(Notify::new());
        let task = tokio::spawn(Guard::watch(cfg, base, kick.clone()));
        Guard { kick, task }
    }

    /// Look again soon; kicks during a look coalesce into one more look.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    async fn watch(cfg: Config, base: u32, kick: Arc<Notify>) {
        let mut seen = Seen::default();
        loop {
            kick.notified().await;
            // Our data node starts after the companion, and may be loading: look again each
            // second while it does not answer, a bounded number of times.
            for _ in 0..GUARD_RETRIES {
                if seen.check(&cfg, base).await {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(GUARD_RETRY) => {}
                    _ = kick.notified() => {}
                }
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `REDISHA_TEST_NO_VERSION_RULE=1`: a test knob, not a setting. The priorities stay as
/// configured, so a test can show what a rolling upgrade across versions does without the rule
/// (tests/ha/test_valkey.py, REDISHA_HA_VALKEY_NO_RULE). Read from the environment, not from
/// `Config`: nobody should run it in production.
fn rule_off() -> bool {
    std::env::var_os("REDISHA_TEST_NO_VERSION_RULE").is_some_and(|v| v == "1")
}

const GUARD_RETRY: Duration = Duration::from_secs(1);
const GUARD_RETRIES: u32 = 60;

/// What the last look found, so a state is logged once, not at every look.
#[derive(Debug, Default)]
struct Seen {
    last: Option<String>,
    engine: Option<ServerVersion>,
}

impl Seen {
    /// One look at our data node and its master: set our priority by the version rule, and say
    /// so loudly when our node cannot full-sync from its master. False: our data node did not
    /// answer (starting, loading): look again soon.
    async fn check(&mut self, cfg: &Config, base: u32) -> bool {
        let t = Duration::from_millis(500);
        let me = cfg.own(Server::Redis);
        let r = async {
            let mut con = redisio::connect(&cfg.conn, &me, Server::Redis, t).await?;
            let info: String = redisio::query(
                &mut con,
                redis::cmd("INFO").arg("server").arg("replication"),
                t,
            )
            .await?;
            let own = ServerVersion::parse(&info);
            let repl = redisio::Repl::parse(&info);
            let linked = repl.as_ref().is_some_and(|r| r.link_up);
            let master = match repl.and_then(|r| r.master) {
                Some(m) => match redisio::info(&cfg.conn, &m, "server", t).await {
                    Ok(i) => match ServerVersion::parse(&i) {
                        Some(v) => Master::Answers(m.to_string(), v),
                        None => Master::Silent,
                    },
                    Err(_) => Master::Silent,
                },
                None => Master::None,
            };
            let cur = redisio::config_get_on(&mut con, "replica-priority", t).await?;
            Ok::<_, redis::RedisError>((con, own, master, cur, linked))
        };
        let Ok((mut con, Some(own), master, cur, linked)) = r.await else {
            return false;
        };
        if self.engine != Some(own) {
            tracing::info!(server = %own, "data node engine");
            self.engine = Some(own);
        }
        let Some(mut v) = judge(base, &own, &master) else {
            return true;
        };
        if rule_off() {
            // Test knob: judge and say, but leave the priority alone (what failed before the rule).
            v.priority = base;
        }
        if v.cannot_sync && !linked {
            // Not a risk any more but the fact: said again (a new state) when the link drops.
            v.state = v
                .state
                .map(|s| format!("{s}; its link is down: the full sync is failing, readiness is false until it follows a master it can load"));
        }
        if v.state != self.last {
            match &v.state {
                Some(s) if v.cannot_sync => tracing::error!("version rule: {s}"),
                Some(s) => tracing::warn!("version rule: {s}"),
                None => {
                    tracing::info!(engine = %own, "version rule: not ahead of our master (or we are master)")
                }
            }
            self.last = v.state;
        }
        let Some(current) = cur.and_then(|v| v.parse::<u32>().ok()) else {
            return true;
        };
        if let Some(p) = priority_change(base, current, v.priority) {
            let set = redisio::config_set_on(&mut con, "replica-priority", p, t).await;
            match set {
                Ok(()) => {
                    tracing::info!(from = current, to = p, "version rule: replica-priority set")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "version rule: CONFIG SET replica-priority failed")
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDIS70: &str = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\nrun_id:abc\r\n";
    const REDIS72: &str = "redis_version:7.2.5\r\n";
    const VALKEY8: &str = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\nredis_mode:standalone\r\n";
    const VALKEY81: &str = "redis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.1\r\n";
    const VALKEY72: &str = "redis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:7.2.8\r\n";

    fn v(info: &str) -> ServerVersion {
        ServerVersion::parse(info).expect("parses")
    }

    #[test]
    fn parses_info_server() {
        type Want = Option<(Engine, Version, &'static str)>;
        let cases: &[(&str, Want)] = &[
            (
                REDIS70,
                Some((Engine::Redis, Version(7, 0, 15), "redis 7.0.15")),
            ),
            (
                VALKEY8,
                Some((Engine::Valkey, Version(8, 0, 1), "valkey 8.0.1")),
            ),
            (
                VALKEY72,
                Some((Engine::Valkey, Version(7, 2, 8), "valkey 7.2.8")),
            ),
            // Older Valkey builds name no server_name but give valkey_version.
            (
                "redis_version:7.2.4\nvalkey_version:8.0.0\n",
                Some((Engine::Valkey, Version(8, 0, 0), "valkey 8.0.0")),
            ),
            (
                "redis_version:6.2\n",
                Some((Engine::Redis, Version(6, 2, 0), "redis 6.2.0")),
            ),
            ("# Server\r\nrun_id:abc\r\n", None),
            ("redis_version:seven\r\n", None),
            (
                "server_name:valkey\r\nredis_version:7.2.4\r\nvalkey_version:x\r\n",
                None,
            ),
            ("", None),
        ];
        for (info, want) in cases {
            let got = ServerVersion::parse(info).map(|s| (s.engine, s.version, s.to_string()));
            let want = want.map(|(e, v, s)| (e, v, s.to_string()));
            assert_eq!(got, want, "{info:?}");
        }
    }

    #[test]
    fn judges_one_look() {
        let at = |i: &str| Master::Answers("10.0.0.1:6379".into(), v(i));
        // (own, master) -> (priority, cannot_sync, says something); None: change nothing
        type Want = Option<(u32, bool, bool)>;
        let cases: &[(&str, Master, Want)] = &[
            (VALKEY8, Master::None, Some((100, false, false))),
            (VALKEY8, Master::Silent, None),
            (REDIS70, Master::Silent, None),
            (VALKEY8, at(REDIS70), Some((200, false, true))),
            (REDIS70, at(REDIS70), Some((100, false, false))),
            (REDIS70, at(VALKEY8), Some((100, true, true))),
            (VALKEY8, at(VALKEY8), Some((100, false, false))),
            (
                "redis_version:7.0.11\n",
                at(REDIS70),
                Some((100, false, false)),
            ),
        ];
        for (own, master, want) in cases {
            let got =
                judge(100, &v(own), master).map(|j| (j.priority, j.cannot_sync, j.state.is_some()));
            assert_eq!(got, *want, "{own:?} <- {master:?}");
        }
        let j = judge(100, &v(REDIS70), &at(VALKEY8)).expect("judged");
        assert_eq!(
            j.state.as_deref(),
            Some("our redis 7.0.15 replicates from a newer master 10.0.0.1:6379 (valkey 8.0.1): a full sync from it will fail (its RDB format is newer); only a partial resync can keep this replica current")
        );
    }

    #[test]
    fn replica_follows_only_a_master_not_newer() {
        // (replica, master, can full-sync)
        let cases = [
            (REDIS70, REDIS70, true),
            (VALKEY8, REDIS70, true), // the upgrade: Valkey 8 loads Redis 7.0's RDB 10
            (REDIS70, VALKEY8, false), // Redis 7.0 cannot load RDB 11
            (REDIS72, REDIS70, true),
            (REDIS70, REDIS72, false),
            (VALKEY8, REDIS72, true),
            (REDIS72, VALKEY8, false),
            (VALKEY8, VALKEY8, true),
            (VALKEY81, VALKEY8, true),
            (VALKEY8, VALKEY81, false),
            (VALKEY72, REDIS72, true),
            (VALKEY8, VALKEY72, true),
            (VALKEY72, VALKEY8, false),
            // Patch releases share the format.
            ("redis_version:7.0.11\n", REDIS70, true),
            (REDIS70, "redis_version:7.0.11\n", true),
        ];
        for (replica, master, want) in cases {
            assert_eq!(
                v(replica).can_follow(&v(master)),
                want,
                "{replica:?} <- {master:?}"
            );
        }
    }

    #[test]
    fn an_ahead_replica_ranks_after_the_others() {
        // (base, own, master, want)
        let cases: &[(u32, &str, Option<&str>, u32)] = &[
            (100, VALKEY8, Some(REDIS70), 200),
            (100, REDIS70, Some(REDIS70), 100),
            (100, REDIS70, Some(VALKEY8), 100), // behind: cannot help it by ranking
            (100, VALKEY8, Some(VALKEY8), 100),
            (100, VALKEY8, None, 100), // a master, or its master does not answer
            (0, VALKEY8, Some(REDIS70), 0), // never promoted stays never promoted
            (10, VALKEY81, Some(VALKEY8), 110),
            (u32::MAX, VALKEY8, Some(REDIS70), u32::MAX),
        ];
        for &(base, own, master, want) in cases {
            let m = master.map(v);
            assert_eq!(
                guarded_priority(base, &v(own), m.as_ref()),
                want,
                "{own:?} <- {master:?}"
            );
        }
        // Only values the rule set are changed (switchover's temporary 0, an operator's value).
        let changes = [
            (100, 100, 200, Some(200)),
            (100, 200, 100, Some(100)),
            (100, 200, 200, None),
            (100, 0, 200, None),
            (100, 42, 100, None),
        ];
        for (base, cur, want, got) in changes {
            assert_eq!(priority_change(base, cur, want), got, "{base} {cur} {want}");
        }
        assert_eq!(base_priority("appendonly yes\n"), 100);
        assert_eq!(
            base_priority("replica-priority 10\n# replica-priority 5\n"),
            10
        );
        assert_eq!(base_priority("slave-priority 0\n"), 0);
    }
}
