//! Stale-address cleanup: this pod's sentinel forgets replicas and sentinels that have been down
//! for a long time (a pod's old IP), with `SENTINEL RESET <group>` on its OWN sentinel only.
//!
//! Sentinels never forget an address (Redis's Sentinel documentation: "Sentinels never
//! forget already seen Sentinels"). Stale entries make `SENTINEL REPLICAS` lie and
//! raise the number of votes a failover needs. But a careless reset causes outages: resetting
//! while the master is down can abort a failover for good, resetting often prevents failovers.
//! So a reset happens only when all of this holds, checked on a slow timer:
//!
//! - some entry has been `s_down` for longer than `stale_after` (far beyond down-after);
//! - our sentinel sees the master up and not failing over (flags exactly `master`);
//! - more than half of the sentinels we know are up, and every one of them answers us, names the
//!   same master, sees it up, and is itself complete: it knows every live sentinel and replica
//!   we know (a sentinel that has just reset is still rediscovering and is not complete, so two
//!   resets never overlap);
//! - every live sentinel also sees each stale entry down (or has forgotten it already);
//! - among the live sentinels that still hold stale entries, ours has the lowest run id (one at
//!   a time, without any lock: the others wait their turn).
//!
//! After a reset we wait, bounded, until our sentinel has rediscovered every live sentinel and
//! replica it knew before, and only then go back to the timer.
//!
//! Polling: every `REDISHA_CLEANUP_INTERVAL_MS` (default 30 s, ±25 % jitter so pods do not tick
//! together; 0 turns the cleanup off) a few `SENTINEL` queries to our own sentinel and to the
//! live peers. An entry is stale after `REDISHA_STALE_AFTER_MS` (default 60 s) in `s_down`.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use crate::config::Server;
use crate::config::{Config, Endpoint};
use crate::redisio;
use crate::sentinel::{self, FlagSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// 0: no cleanup.
    pub interval_ms: u64,
    pub stale_after_ms: u64,
}

impl Settings {
    /// From the validated configuration (REDISHA_CLEANUP_INTERVAL_MS, REDISHA_STALE_AFTER_MS).
    pub fn from_config(cfg: &Config) -> Settings {
        Settings {
            interval_ms: cfg.cleanup_interval_ms,
            stale_after_ms: cfg.stale_after_ms,
        }
    }
}

/// A replica or sentinel as one sentinel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// As announced.
    pub addr: Endpoint,
    pub run_id: String,
    /// Milliseconds in `s_down`; `None` when up.
    pub down_ms: Option<u64>,
}

impl Entry {
    fn up(&self) -> bool {
        self.down_ms.is_none()
    }
}

/// What one sentinel knows of the group's members (SENTINEL MYID/MASTER/REPLICAS/SENTINELS),
/// for the stale-entry decision; `discover::Answer` is its answer to "who is master?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub run_id: String,
    /// The master it monitors.
    pub master: Endpoint,
    /// Flags exactly `master` and the master reports role master: up, no failover running.
    pub master_ok: bool,
    pub replicas: Vec<Entry>,
    pub sentinels: Vec<Entry>,
}

impl View {
    fn stale(&self, after_ms: u64) -> Vec<&Entry> {
        self.replicas
            .iter()
            .chain(&self.sentinels)
            .filter(|e| e.down_ms.is_some_and(|d| d >= after_ms))
            .collect()
    }

    fn live_sentinel_ids(&self) -> HashSet<&str> {
        self.sentinels
            .iter()
            .filter(|e| e.up())
            .map(|e| e.run_id.as_str())
            .chain([self.run_id.as_str()])
            .collect()
    }

    fn live_replicas(&self) -> HashSet<&Endpoint> {
        self.replicas
            .iter()
            .filter(|e| e.up())
            .map(|e| &e.addr)
            .collect()
    }

    /// Whether this view knows (as up) every live sentinel and replica that `other` knows.
    fn covers(&self, other: &View) -> bool {
        self.live_sentinel_ids()
            .is_superset(&other.live_sentinel_ids())
            && self.live_replicas().is_superset(&other.live_replicas())
    }
}

/// What the stale-entry check decides this round (`plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing stale.
    Clean,
    /// Stale entries, but not now; the string says why.
    Wait(String),
    /// Reset our own sentinel now; the string lists what goes.
    Reset(String),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Clean => f.write_str("nothing stale"),
            Step::Wait(w) => write!(f, "wait: {w}"),
            Step::Reset(r) => write!(f, "reset: {r}"),
        }
    }
}

/// The pure decision. `peers`: one (address, view) per sentinel that `me` lists as up; the view
/// is `None` when that sentinel did not answer.
pub fn plan(me: &View, peers: &[(Endpoint, Option<View>)], stale_after_ms: u64) -> Step {
    let stale = me.stale(stale_after_ms);
    if stale.is_empty() {
        return Step::Clean;
    }
    if !me.master_ok {
        return Step::Wait("the master is down or a failover is running".into());
    }
    let known = me.sentinels.len() + 1;
    let live = me.sentinels.iter().filter(|e| e.up()).count() + 1;
    if live * 2 <= known {
        return Step::Wait(format!(
            "only {live} of {known} known sentinels are up (we may be the partitioned side)"
        ));
    }
    let mut turn = me.run_id.as_str();
    for (addr, view) in peers {
        let Some(v) = view else {
            return Step::Wait(format!("sentinel {addr} does not answer"));
        };
        if v.master != me.master || !v.master_ok {
            return Step::Wait(format!(
                "sentinel {addr} does not see master {} up and settled",
                me.master
            ));
        }
        if !v.covers(me) {
            return Step::Wait(format!(
                "sentinel {addr} has not (re)discovered every live peer yet"
            ));
        }
        for e in &stale {
            let seen_up = v
                .replicas
                .iter()
                .chain(&v.sentinels)
                .any(|x| x.addr == e.addr && x.up());
            if seen_up {
                return Step::Wait(format!("sentinel {addr} still sees {} up", e.addr));
            }
        }
        if !v.stale(stale_after_ms).is_empty() && v.run_id.as_str() < turn {
            turn = v.run_id.as_str();
        }
    }
    if turn != me.run_id {
        return Step::Wait(format!("sentinel {turn} resets first"));
    }
    let list: Vec<String> = stale.iter().map(|e| e.addr.to_string()).collect();
    Step::Reset(format!(
        "down longer than {stale_after_ms} ms: {}",
        list.join(" ")
    ))
}

impl Entry {
    /// Down means `s_down` here, measured: see sentinel.rs's table test for why the cleanup's
    /// rule differs from `is_down`.
    fn of(addr: &Endpoint, run_id: &Option<String>, flags: &FlagSet, s_down: Option<u64>) -> Entry {
        Entry {
            addr: addr.clone(),
            run_id: run_id.clone().unwrap_or_default(),
            down_ms: sentinel::stale_for_ms(flags, s_down),
        }
    }
}

/// Queries one sentinel: `SENTINEL MYID`, `MASTER`, `REPLICAS`, `SENTINELS`.
async fn view(cfg: &Config, s: &Endpoint, timeout: Duration) -> redis::RedisResult<View> {
    let mut con = redisio::connect(&cfg.conn, s, Server::Sentinel, timeout).await?;
    let run_id = redisio::sentinel_myid_on(&mut con, timeout).await?;
    let master = redisio::sentinel_master_view_on(&mut con, &cfg.group, timeout).await?;
    let replicas = redisio::sentinel_replicas_on(&mut con, &cfg.group, timeout).await?;
    let sentinels = redisio::sentinel_peers_on(&mut con, &cfg.group, timeout).await?;
    Ok(View {
        run_id,
        master_ok: master.is_settled(),
        master: master.addr,
        replicas: replicas
            .iter()
            .map(|r| Entry::of(&r.addr, &r.run_id, &r.flags, r.s_down_ms))
            .collect(),
        sentinels: sentinels
            .iter()
            .map(|p| Entry::of(&p.addr, &p.run_id, &p.flags, p.s_down_ms))
            .collect(),
    })
}

/// A pseudo-random factor in [0.75, 1.25): enough to keep the pods' timers apart.
pub fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let mix = (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) % 1000;
    d.mul_f64(0.75 + f64::from(mix) / 2000.0)
}

/// What a reset leaves to do: wait for the rediscovery and give the quorum back (`rediscover`).
pub struct Reset {
    before: View,
    con: redis::aio::MultiplexedConnection,
}

/// One round: look, decide, maybe reset. Never returns an error: anything unexpected means "not
/// this time". Some(the reset's follow-up), which the caller runs *beside* its event loop: the
/// wait lasts up to 20 s, and a companion blocked in it could not re-point our redis when the
/// master died meanwhile (scenario 8d: a replica unlinked for 12 s, writes refused with
/// NOREPLICAS for 15 s after a 3.4 s failover).
pub async fn tick(cfg: &Config, st: Settings, local: &Endpoint) -> Option<Reset> {
    let timeout = Duration::from_millis(1000);
    let me = match view(cfg, local, timeout).await {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e, "cleanup: own sentinel not answering");
            return None;
        }
    };
    if me.stale(st.stale_after_ms).is_empty() {
        return None;
    }
    let mut peers = Vec::new();
    for e in me.sentinels.iter().filter(|e| e.up()) {
        let v = view(cfg, &e.addr, timeout).await.ok();
        peers.push((e.addr.clone(), v));
    }
    let decision = plan(&me, &peers, st.stale_after_ms);
    let Step::Reset(why) = &decision else {
        tracing::info!(decision = %decision, "cleanup: stale sentinel entries kept for now");
        return None;
    };
    // Re-check our own sentinel right before the reset: a failover may have begun meanwhile.
    match view(cfg, local, timeout).await {
        Ok(v) if v.master_ok && v.master == me.master => {}
        _ => {
            tracing::info!("cleanup: master state changed; reset postponed");
            return None;
        }
    }
    // A reset sentinel knows no replica until the master's next INFO. Should the master die
    // in that moment, it could start a failover, win the election, abort it with
    // `-failover-abort-no-good-slave`, and every sentinel that voted would hold off for
    // 2 × failover-timeout (seen once in the soak: a 13 s write gap). So until it knows a
    // replica again its quorum is out of reach: it never judges the master objectively down
    // by itself and never starts a failover, but it still tells the others the master is down
    // (that answer follows its own down-after, not the quorum) and votes for a failover one of
    // them starts, which knows the replicas.
    let mut con = match redisio::connect(&cfg.conn, local, Server::Sentinel, timeout).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cleanup: own sentinel not answering; reset postponed");
            return None;
        }
    };
    let unreachable = me.sentinels.len() as u64 + 2;
    if let Err(e) = set_quorum(cfg, &mut con, unreachable, timeout).await {
        tracing::warn!(error = %e, "cleanup: could not raise the quorum for the reset; reset postponed");
        return None;
    }
    let reset = redisio::query::<i64>(
        &mut con,
        redis::cmd("SENTINEL").arg("RESET").arg(&cfg.group),
        timeout,
    )
    .await;
    match reset {
        Ok(n) => {
            crate::metrics::sentinel_reset();
            tracing::info!(reason = %why, groups = n, "cleanup: SENTINEL RESET of our own sentinel")
        }
        Err(e) => {
            tracing::warn!(error = %e, "cleanup: SENTINEL RESET failed");
            restore_quorum(cfg, &mut con, timeout).await;
            return None;
        }
    }
    Some(Reset { before: me, con })
}

async fn set_quorum(
    cfg: &Config,
    con: &mut redis::aio::MultiplexedConnection,
    quorum: u64,
    timeout: Duration,
) -> redis::RedisResult<()> {
    redisio::sentinel_set_on(con, &cfg.group, "quorum", quorum, timeout).await
}

/// The configured quorum back; retried, since a sentinel left without one would never lead a
/// failover again (a pod restart renders it afresh).
async fn restore_quorum(
    cfg: &Config,
    con: &mut redis::aio::MultiplexedConnection,
    timeout: Duration,
) {
    for attempt in 1..=5u32 {
        match set_quorum(cfg, con, u64::from(cfg.quorum), timeout).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(attempt, error = %e, "cleanup: could not restore the quorum yet");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                if let Ok(c) = redisio::connect(
                    &cfg.conn,
                    &cfg.own(Server::Sentinel),
                    Server::Sentinel,
                    timeout,
                )
                .await
                {
                    *con = c;
                }
            }
        }
    }
    tracing::error!(
        quorum = cfg.quorum,
        "cleanup: our sentinel keeps the reset's out-of-reach quorum; restart the pod to render it afresh"
    );
}

/// After a reset: wait, bounded, until our sentinel knows again every peer it knew before, and
/// give it back the configured quorum as soon as it knows a live replica again (it can then
/// lead a failover) or the wait is over.
pub async fn rediscover(cfg: Config, reset: Reset) {
    let timeout = Duration::from_millis(1000);
    let local = cfg.own(Server::Sentinel);
    let (cfg, local) = (&cfg, &local);
    let Reset { before, mut con } = reset;
    let (me, con) = (&before, &mut con);
    // Sentinels come back through hello messages, replicas through the master's INFO.
    let bound = cfg.timings().rediscovery_bound;
    let started = tokio::time::Instant::now();
    let mut held = true;
    // A replica is listed as soon as the master's INFO names it, and promotable once its own
    // INFO reply is in (Sentinel asks within a few of its 100 ms timer ticks): some slack.
    let mut replicas_known_at = None;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(v) = view(cfg, local, timeout).await {
            // One replica it can promote is all a failover it leads needs.
            let known = !v.live_replicas().is_empty() || me.live_replicas().is_empty();
            let since =
                known.then(|| *replicas_known_at.get_or_insert_with(tokio::time::Instant::now));
            if held && since.is_some_and(|t| t.elapsed() >= Duration::from_millis(500)) {
                restore_quorum(cfg, con, timeout).await;
                held = false;
                tracing::info!(
                    after_ms = started.elapsed().as_millis() as u64,
                    "cleanup: own sentinel knows a live replica again: quorum restored"
                );
            }
            // A failover since the reset: the peers it knew before are no longer the measure.
            if !held && v.master != me.master {
                tracing::info!(
                    after_ms = started.elapsed().as_millis() as u64,
                    master = %v.master,
                    "cleanup: the master changed since the reset; rediscovery done"
                );
                break;
            }
            if v.master_ok && v.covers(me) {
                tracing::info!(
                    after_ms = started.elapsed().as_millis() as u64,
                    "cleanup: own sentinel rediscovered every live peer"
                );
                break;
            }
        }
        if started.elapsed() >= bound {
            tracing::warn!(
                waited_ms = bound.as_millis() as u64,
                "cleanup: own sentinel has not rediscovered every live peer yet"
            );
            break;
        }
    }
    if held {
        restore_quorum(cfg, con, timeout).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(addr: &str) -> Endpoint {
        crate::config::parse_endpoint("test", addr).expect("test address")
    }

    fn e(addr: &str, id: &str, down: Option<u64>) -> Entry {
        Entry {
            addr: ep(addr),
            run_id: id.into(),
            down_ms: down,
        }
    }

    /// Three pods; pod "a" (10.0.0.1) died long ago and pods b, c remain, c master.
    fn view_of(id: &str, sentinels: Vec<Entry>, replicas: Vec<Entry>) -> View {
        View {
            run_id: id.into(),
            master: ep("10.0.0.3:6379"),
            master_ok: true,
            replicas,
            sentinels,
        }
    }

    fn b() -> View {
        view_of(
            "b",
            vec![
                e("10.0.0.1:26379", "a", Some(90_000)),
                e("10.0.0.3:26379", "c", None),
            ],
            vec![
                e("10.0.0.1:6379", "", Some(90_000)),
                e("10.0.0.2:6379", "", None),
            ],
        )
    }

    fn c() -> View {
        view_of(
            "c",
            vec![
                e("10.0.0.1:26379", "a", Some(90_000)),
                e("10.0.0.2:26379", "b", None),
            ],
            vec![
                e("10.0.0.1:6379", "", Some(90_000)),
                e("10.0.0.2:6379", "", None),
            ],
        )
    }

    #[test]
    fn lowest_run_id_resets_first_then_the_next() {
        let p = plan(&b(), &[(ep("10.0.0.3:26379"), Some(c()))], 60_000);
        assert!(matches!(p, Step::Reset(_)), "{p}");
        let p = plan(&c(), &[(ep("10.0.0.2:26379"), Some(b()))], 60_000);
        assert_eq!(p, Step::Wait("sentinel b resets first".into()));
        // b reset and has rediscovered c and the live replica: c's turn.
        let b_done = view_of(
            "b",
            vec![e("10.0.0.3:26379", "c", None)],
            vec![e("10.0.0.2:6379", "", None)],
        );
        let p = plan(&c(), &[(ep("10.0.0.2:26379"), Some(b_done))], 60_000);
        assert!(matches!(p, Step::Reset(_)), "{p}");
    }

    #[test]
    fn waits_while_a_peer_is_rediscovering() {
        let b_fresh = view_of("b", vec![], vec![]);
        let p = plan(&c(), &[(ep("10.0.0.2:26379"), Some(b_fresh))], 60_000);
        assert!(
            matches!(p, Step::Wait(ref w) if w.contains("discovered every live peer")),
            "{p}"
        );
    }

    #[test]
    fn never_while_the_master_is_down_or_failing_over() {
        let mut me = b();
        me.master_ok = false;
        assert!(matches!(
            plan(&me, &[(ep("10.0.0.3:26379"), Some(c()))], 60_000),
            Step::Wait(_)
        ));
        let mut peer = c();
        peer.master_ok = false;
        assert!(matches!(
            plan(&b(), &[(ep("10.0.0.3:26379"), Some(peer))], 60_000),
            Step::Wait(_)
        ));
        let mut peer = c();
        peer.master = ep("10.0.0.2:6379");
        assert!(matches!(
            plan(&b(), &[(ep("10.0.0.3:26379"), Some(peer))], 60_000),
            Step::Wait(_)
        ));
    }

    #[test]
    fn never_without_a_majority_or_a_silent_peer() {
        // Partitioned: both peers down from here.
        let me = view_of(
            "a",
            vec![
                e("10.0.0.2:26379", "b", Some(90_000)),
                e("10.0.0.3:26379", "c", Some(90_000)),
            ],
            vec![],
        );
        assert!(matches!(plan(&me, &[], 60_000), Step::Wait(ref w) if w.contains("1 of 3")));
        assert!(matches!(
            plan(&b(), &[(ep("10.0.0.3:26379"), None)], 60_000),
            Step::Wait(ref w) if w.contains("does not answer")
        ));
    }

    #[test]
    fn not_stale_yet_or_seen_up_elsewhere() {
        assert_eq!(
            plan(&b(), &[(ep("10.0.0.3:26379"), Some(c()))], 120_000),
            Step::Clean
        );
        let mut peer = c();
        peer.replicas[0].down_ms = None;
        assert!(matches!(
            plan(&b(), &[(ep("10.0.0.3:26379"), Some(peer))], 60_000),
            Step::Wait(ref w) if w.contains("still sees")
        ));
    }

    /// An entry as `view` makes it from the model's parse.
    fn entry(m: &std::collections::HashMap<String, String>) -> Option<Entry> {
        let p = sentinel::PeerView::parse(m)?;
        Some(Entry::of(&p.addr, &p.run_id, &p.flags, p.s_down_ms))
    }

    #[test]
    fn entries_parse() {
        let m: std::collections::HashMap<String, String> = [
            ("ip", "10.0.0.1"),
            ("port", "6379"),
            ("runid", "x"),
            ("flags", "s_down,slave,disconnected"),
            ("s-down-time", "1234"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(entry(&m), Some(e("10.0.0.1:6379", "x", Some(1234))));
    }
}
