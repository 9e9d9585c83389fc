//! The pod's companion while it serves: its data node always follows the master the sentinels
//! name, not only at boot; its sentinel learns replicas and peers within a second; stale entries
//! are cleaned on a slow timer (cleanup.rs).
//!
//! Why: a sentinel that exits (or never knew a replica) leaves replicas pointing at a dead or
//! demoted master; Sentinel re-points only the replicas it knows, one at a time, and a replica no
//! sentinel knows is never re-pointed (measured: a replica dialled a dead address for > 90 s and
//! the new master refused writes for want of a replica). So each pod watches its own sentinel's
//! events (`+switch-master`, `+convert-to-slave`, `-sdown`, `+failover-end`, …) and, within
//! ~100 ms of one, asks every sentinel it knows and re-points its own redis when a majority names
//! another master at the highest config epoch. Events, not polling: in the steady state the
//! subscription is silent and nothing wakes up but the cleanup timer.
//!
//! Sentinel periods: a fresh sentinel learns replicas only from the master's INFO (every 10 s)
//! and peers from hello messages (every 2 s); a master lost in the first ten seconds was
//! promoted from the one replica its leader happened to know, and a forced failover answered
//! NOGOODSLAVE. `SENTINEL DEBUG info-period 1000 publish-period 500` on our own sentinel, each
//! time we (re)connect to it, makes it learn a linked replica within a second, and peers and a
//! new configuration within half a second (measured: a graceful stop at 0–13 s after boot went
//! from NOGOODSLAVE and a 26 s gap to 0.5–1.4 s). Replica selection stays valid: an INFO reply
//! counts for 3 × info-period (3 s) and arrives every second. The cost is Sentinel's own traffic
//! (one INFO per node per second, a hello per peer every 500 ms); Sentinel's timer runs ten
//! times a second either way. `render` can not set these (they are not
//! config directives), so they are applied at runtime.
//!
//! TILT: a sentinel whose timer ran more than 2 s late (its pod frozen, its process stalled)
//! acts on nothing for `tilt-period`, 30 s by default, and answers "not down" to the others: with
//! one of two surviving sentinels in TILT the quorum cannot be reached, and the soak (seed
//! 20261206) saw a master kill cost 22 s of writes. TILT exists because every down judgement
//! (no valid reply for down-after) is meaningless right after a time jump; pings go on during
//! TILT, so after one down-after every live instance has answered again and the usual rule holds.
//! So the period is down-after (at least 3 s: three pings; at most Sentinel's 30 s).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use crate::cleanup;
use crate::config::Server;
use crate::config::{Config, Endpoint};
use crate::redisio::{self, Repl};
use crate::sentinel::Answer;

/// Sentinel's INFO period (default 10 000 ms): how soon a linked replica becomes promotable.
pub const INFO_PERIOD_MS: u64 = 1000;
/// Sentinel's hello period (default 2 000 ms): how soon peers and new configurations spread.
pub const PUBLISH_PERIOD_MS: u64 = 500;

/// Sentinel's TILT period for a down-after: see the module header and config::Timings.
#[cfg(test)]
use crate::config::tilt_period_ms;
/// Events are often several in a row (`+switch-master` then `+slave` lines): one check for all.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// How often the companion looks at the clock: a tick that comes much later than due means the
/// whole pod stalled (frozen, SIGSTOPped, its VM paused), and a master that stalls longer than
/// down-after is a zombie the others are replacing. One wake-up a second, like tini's.
const STALL_TICK: Duration = Duration::from_secs(1);
/// A tick this much later than due is a stall (a busy machine delays a timer by milliseconds).
const STALL_MIN: Duration = Duration::from_millis(750);

/// Sentinel events after which the master may have changed or a node may point elsewhere.
const EVENTS: &[&str] = &[
    "+switch-master",
    "+convert-to-slave",
    "+failover-end",
    "+failover-end-for-timeout",
    "-odown",
    "-sdown",
    "+slave",
    "+role-change",
    "+fix-slave-config",
    "+reset-master",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do; the string says why.
    Keep(String),
    /// Not now (no majority, a failover deciding, the named master not answering); why.
    Wait(String),
    /// `REPLICAOF master`.
    Follow { master: Endpoint, why: String },
}

/// The pure decision. `node`: our data node (None: not answering); `answers`: the sentinels that
/// answered; `known`: every sentinel known (ours included), up or down; `named`: the replication
/// state of the master the answers name, when it answered.
pub fn judge(
    me: &Endpoint,
    node: Option<&Repl>,
    answers: &[Answer],
    known: usize,
    named: Option<&Repl>,
) -> Action {
    let Some(node) = node else {
        return Action::Wait("our redis does not answer".into());
    };
    if answers.len() * 2 <= known {
        return Action::Wait(format!(
            "only {} of {known} sentinels answer: no majority",
            answers.len()
        ));
    }
    if answers.iter().any(|a| a.unsettled) {
        return Action::Wait("a failover is deciding".into());
    }
    let Some(top) = answers.iter().map(|a| a.config_epoch).max() else {
        return Action::Wait("no answer".into());
    };
    let mut at_top = answers.iter().filter(|a| a.config_epoch == top);
    let Some(first) = at_top.next() else {
        return Action::Wait("no answer".into());
    };
    let m = &first.master;
    if at_top.any(|a| &a.master != m) {
        return Action::Wait(format!("sentinels disagree at epoch {top}"));
    }
    if m == me {
        // Promoting or demoting ourselves is Sentinel's job, never ours.
        return Action::Keep(format!("sentinels name this node (epoch {top})"));
    }
    if !node.is_master && node.master.as_ref() == Some(m) {
        return Action::Keep(format!("following {m} (epoch {top})"));
    }
    let Some(named) = named.filter(|n| n.is_master) else {
        return Action::Wait(format!("{m} does not answer as master yet"));
    };
    // Our history descends from the named master's: we were promoted from it (a failover whose
    // news has not reached every sentinel yet). Following it would erase what we took since.
    if node.second_offset >= 0 && !node.replid2.is_empty() && named.replid == node.replid2 {
        return Action::Wait(format!(
            "{m} is what this node was promoted from (its replid {} is our previous one): not following an older history",
            named.replid
        ));
    }
    let what = match &node.master {
        _ if node.is_master => "this node is a master the sentinels no longer name".to_string(),
        Some(o) => format!("this node replicates from {o}"),
        None => "this node has no master".to_string(),
    };
    Action::Follow {
        master: m.clone(),
        why: format!("{what}; the sentinels name {m} (epoch {top})"),
    }
}

/// Whether our own sentinel is stuck on a configuration the others have left: a majority of the
/// known sentinels (ours not counted) agree on another master at their highest epoch, none of
/// them is in a failover, and ours names something else at that epoch or an older one. Some(the
/// majority's master).
/// Why: Sentinel adopts a configuration only from a hello with a *higher* epoch. A sentinel that
/// holds the majority's epoch with another master (the soak froze the leader of a failover while
/// the others failed over again: after the thaw it named its own, demoted node at the same epoch
/// for > 90 s) never converges by itself, sends clients to a replica, and blocks `judge`, which
/// needs the answers at the top epoch to agree. A higher epoch of ours wins and spreads by
/// itself, so that case is left to Sentinel.
///
/// How long to wait before acting (`Stale::wait`): behind the majority, Sentinel catches up by
/// itself within a hello period, so only after the failover timeout; at the majority's epoch it
/// never will (a hello must name a *higher* epoch), so after a short confirmation. The soak's
/// seed-14 run under a CPU hog met the second: a failover's leader whose failover stayed open took
/// the others' next epoch from a hello naming the address its own entry still showed (Sentinel
/// then only raises the epoch), ended its failover naming its own promoted replica at that epoch,
/// and the cluster converged only 12 s later, past the 6 s bound.
pub fn own_sentinel_stale(own: Option<&Answer>, others: &[Answer], known: usize) -> Option<Stale> {
    let own = own.filter(|a| !a.unsettled)?;
    if others.iter().any(|a| a.unsettled) {
        return None;
    }
    let top = others.iter().map(|a| a.config_epoch).max()?;
    let at_top: Vec<&Answer> = others.iter().filter(|a| a.config_epoch == top).collect();
    let m = &at_top.first()?.master;
    let agree = at_top.iter().all(|a| &a.master == m);
    (agree && at_top.len() * 2 > known && own.config_epoch <= top && &own.master != m).then(|| {
        Stale {
            master: m.clone(),
            same_epoch: own.config_epoch == top,
        }
    })
}

/// Our sentinel names another master than the majority (`own_sentinel_stale`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    /// The majority's master.
    pub master: Endpoint,
    /// Ours is at the majority's epoch: Sentinel never converges it.
    pub same_epoch: bool,
}

/// A same-epoch disagreement must be seen this long (two looks) before our sentinel is restarted.
const SAME_EPOCH_CONFIRM: Duration = Duration::from_secs(2);

impl Stale {
    /// How long the disagreement must last before our sentinel is restarted.
    pub fn wait(&self, failover_timeout: Duration) -> Duration {
        if self.same_epoch {
            SAME_EPOCH_CONFIRM.min(failover_timeout)
        } else {
            failover_timeout
        }
    }
}

/// Whether our data node, thawed after a stall, must stop acknowledging writes at once: it is a
/// master and the other pods' sentinels are failing it over or name another master at their
/// highest epoch. Our own sentinel does not count: it stalled with us and knows nothing newer.
/// Why at once: its replicas' REPLCONF ACKs, queued in TCP during the stall, read as fresh, so
/// `min-replicas-max-lag` lets it take writes, and Sentinel demotes it only after its next
/// hello/INFO round (measured by the soak: 12-115 acknowledged writes lost per frozen master).
pub fn fence_after_stall(me: &Endpoint, node: Option<&Repl>, peers: &[Answer]) -> Option<String> {
    if !node?.is_master {
        return None;
    }
    if let Some(a) = peers.iter().find(|a| &a.master == me && a.unsettled) {
        return Some(format!(
            "a sentinel is failing this node over (epoch {})",
            a.config_epoch
        ));
    }
    let top = peers.iter().map(|a| a.config_epoch).max()?;
    peers
        .iter()
        .find(|a| a.config_epoch == top && &a.master != me)
        .map(|a| format!("the sentinels name {} at epoch {top}", a.master))
}

/// After a stall of the pod: fence our data node when it is a master being replaced
/// (`fence_after_stall`, asking the other pods' sentinels, not ours: it stalled with us).
async fn after_stall(cfg: &Config, stalled: Duration) {
    let t = Duration::from_millis(300);
    let me = cfg.own(Server::Redis);
    let local = cfg.own(Server::Sentinel);
    let peers: Vec<Endpoint> = crate::redisio::resolved_all(&cfg.sentinels)
        .await
        .into_iter()
        .filter(|s| *s != local)
        .collect();
    let (node, answers) = tokio::join!(redisio::repl(&cfg.conn, &me, t), answers(cfg, &peers, t));
    let Some(why) = fence_after_stall(&me, node.ok().as_ref(), &answers) else {
        tracing::info!(
            stalled_ms = stalled.as_millis() as u64,
            "this pod stalled; its data node is not a master being replaced"
        );
        return;
    };
    fence(
        cfg,
        crate::metrics::Fence::Stall,
        &format!(
            "this pod stalled for {} ms as master while {why}",
            stalled.as_millis()
        ),
    )
    .await;
}

/// Sentinel events that mean an election for a failover of the group's master is running: our
/// sentinel voted in one (it is asked whether or not it finds the master down) or started one.
const ELECTION_EVENTS: &[&str] = &["+vote-for-leader", "+try-failover"];

/// Our sentinel was not elected (splitvote.rs).
const NOT_ELECTED: &str = "-failover-abort-not-elected";

/// An election for a failover runs while our data node is master: fence it now. Why: Sentinel
/// fails over a master a quorum *finds* down, which is not always one that is down (a replica
/// pod cut off for just over down-after, a slow network), and such a master keeps acknowledging
/// writes until its pod hears of the promotion; those writes are lost (the soak's episode 164:
/// 80). The promotion comes after the vote, and replication goes on under a write pause, so the
/// promoted replica has every write the old master acknowledged. Forced failovers (handover,
/// switchover) hold no election and pause writes themselves.
async fn on_election(cfg: &Config, channel: &str, payload: &str) {
    let t = Duration::from_millis(300);
    let me = cfg.own(Server::Redis);
    if !redisio::repl(&cfg.conn, &me, t)
        .await
        .is_ok_and(|n| n.is_master)
    {
        return;
    }
    let local = cfg.own(Server::Sentinel);
    let ours = crate::discover::ask(cfg, &local, &cfg.group, t)
        .await
        .ok()
        .flatten();
    if !election_targets(channel, payload, &me, ours.as_ref()) {
        tracing::info!(
            event = channel,
            payload,
            "our sentinel reported an election that is not about this master (it made it, or is about another); no fence"
        );
        return;
    }
    fence(
        cfg,
        crate::metrics::Fence::Vote,
        &format!("our sentinel reported {channel}: a failover of this master is being elected"),
    )
    .await;
}

/// Whether an election event of our sentinel can be about failing over `me`, our data node,
/// which answers as master. `+try-failover` names the master it fails over (`master <group>
/// <ip> <port>`). `+vote-for-leader` gives only the leader's run id and the election's epoch:
/// an election at an epoch no newer than the one at which our sentinel already names `me`
/// master is the one that promoted it (its vote event can be handled after the promotion: the
/// 30-min bench paused fresh masters for up to 0.6 s in 17 of 21 fences), so it is not about
/// failing `me` over. Anything unreadable fences: a needless pause costs a slow write, a missing
/// one can lose writes.
pub fn election_targets(
    channel: &str,
    payload: &str,
    me: &Endpoint,
    ours: Option<&Answer>,
) -> bool {
    let words: Vec<&str> = payload.split_whitespace().collect();
    match channel {
        "+try-failover" => match words.as_slice() {
            ["master", _, ip, port, ..] => {
                Endpoint::from_fields(ip, port).map_or(true, |e| e == *me)
            }
            _ => true,
        },
        "+vote-for-leader" => {
            let epoch = words.last().and_then(|e| e.parse::<u64>().ok());
            match (epoch, ours) {
                (Some(epoch), Some(a)) => !(a.master == *me && epoch <= a.config_epoch),
                _ => true,
            }
        }
        _ => true,
    }
}

/// `CLIENT PAUSE <failover-timeout> WRITE` on our data node (writes wait, nothing is refused or
/// lost), then `check` until it follows the new master or the sentinels settle naming it again,
/// then `CLIENT UNPAUSE`. Bounded by the failover timeout, which is also the pause's own expiry.
async fn fence(cfg: &Config, kind: crate::metrics::Fence, why: &str) {
    let t = Duration::from_millis(300);
    let me = cfg.own(Server::Redis);
    let hold = Duration::from_millis(cfg.failover_timeout_ms);
    let paused = async {
        let mut con = redisio::connect(&cfg.conn, &me, Server::Redis, t).await?;
        redisio::query::<()>(
            &mut con,
            redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(hold.as_millis() as u64)
                .arg("WRITE"),
            t,
        )
        .await?;
        Ok::<_, redis::RedisError>(con)
    }
    .await;
    let mut con = match paused {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, reason = %why, "CLIENT PAUSE of our data node failed");
            return;
        }
    };
    tracing::warn!(reason = %why, "writes paused until our data node follows the new master or is named again");
    let _fenced = crate::metrics::Fenced::begin(kind);
    let until = Instant::now() + hold;
    let outcome = loop {
        match check(cfg).await {
            Action::Follow { master, .. } => break format!("following {master}"),
            Action::Keep(k) => break k,
            Action::Wait(w) if Instant::now() >= until => break format!("gave up waiting: {w}"),
            Action::Wait(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    // A paused node would also hold the new master's replication stream (only replicas'
    // connections are exempt), so the fence goes as soon as the role is settled.
    let lifted = redisio::query::<()>(
        &mut con,
        &mut redis::cmd("CLIENT").arg("UNPAUSE").clone(),
        t,
    )
    .await;
    tracing::warn!(outcome = %outcome, unpaused = lifted.is_ok(), "write fence lifted");
}

/// Every answer of `sentinels`, asked in parallel.
pub async fn answers(cfg: &Config, sentinels: &[Endpoint], t: Duration) -> Vec<Answer> {
    let mut set = tokio::task::JoinSet::new();
    for s in sentinels {
        let (s, cfg) = (s.clone(), cfg.clone());
        set.spawn(async move { crate::discover::ask(&cfg, &s, &cfg.group, t).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(Ok(Some(a))) = r {
            out.push(a);
        }
    }
    out
}

/// One look and, if needed, one `REPLICAOF`. Errors mean "not this time".
pub async fn check(cfg: &Config) -> Action {
    look(cfg).await.0
}

/// `check`, and the master a majority of the other sentinels name when our own sentinel alone
/// names another (`own_sentinel_stale`).
async fn look(cfg: &Config) -> (Action, Option<Stale>) {
    let t = Duration::from_millis(500);
    let local = cfg.own(Server::Sentinel);
    let me = cfg.own(Server::Redis);
    let (mut others, known) = match redisio::up_sentinels(&cfg.conn, &local, &cfg.group, t).await {
        Ok(p) => p,
        Err(e) => {
            return (
                Action::Wait(format!("own sentinel does not answer: {e}")),
                None,
            )
        }
    };
    // The configured list too: a pod whose sentinel knows no peer (it crowned itself on a first
    // boot while the others were away) must still hear the majority.
    for s in crate::redisio::resolved_all(&cfg.sentinels).await {
        if !others.contains(&s) && s != local {
            others.push(s);
        }
    }
    let known = known.max(cfg.sentinels.len());
    let (node, own, mut answers) = tokio::join!(
        redisio::repl(&cfg.conn, &me, t),
        crate::discover::ask(cfg, &local, &cfg.group, t),
        answers(cfg, &others, t)
    );
    let node = node.ok();
    let own = own.ok().flatten();
    crate::metrics::own_sentinel(own.as_ref());
    let stale = own_sentinel_stale(own.as_ref(), &answers, known);
    answers.extend(own);
    let named_addr = crate::discover::pick(&answers, &[]).map(|a| a.master.clone());
    let named = match named_addr {
        Some(m) if m != me => redisio::repl(&cfg.conn, &m, t).await.ok(),
        _ => None,
    };
    let action = judge(&me, node.as_ref(), &answers, known, named.as_ref());
    if let Action::Follow { master, why } = &action {
        match redisio::replicaof(&cfg.conn, &me, master, t).await {
            Ok(()) => {
                tracing::warn!(master = %master, reason = %why, "follow: re-pointed our redis")
            }
            Err(e) => tracing::warn!(master = %master, error = %e, "follow: REPLICAOF failed"),
        }
    }
    (action, stale)
}

/// Our sentinel is settled, knows as many peers as are configured, and our redis is the master
/// it names or replicates from it.
/// The two connections stay open between ticks (an idle connection costs no wake-up; a new one
/// costs several).
async fn looks_consistent(cfg: &Config, local: &Endpoint, cons: &mut Cons) -> bool {
    let t = Duration::from_millis(500);
    if cons.sentinel.is_none() {
        cons.sentinel = redisio::connect(&cfg.conn, local, Server::Sentinel, t)
            .await
            .ok();
    }
    if cons.redis.is_none() {
        cons.redis = redisio::connect(&cfg.conn, &cfg.own(Server::Redis), Server::Redis, t)
            .await
            .ok();
    }
    let (Some(sc), Some(rc)) = (cons.sentinel.as_mut(), cons.redis.as_mut()) else {
        return false;
    };
    let a = match crate::discover::ask_on(sc, &cfg.group, t).await {
        Ok(Some(a)) => a,
        Ok(None) => return false,
        Err(_) => {
            cons.sentinel = None;
            return false;
        }
    };
    crate::metrics::own_sentinel(Some(&a));
    let peers_ok = a.known_sentinels as usize + 1 >= cfg.sentinels.len();
    let node = match redisio::repl_on(rc, t).await {
        Ok(n) => n,
        Err(_) => {
            cons.redis = None;
            return false;
        }
    };
    let me = cfg.own(Server::Redis);
    let ours = if node.is_master {
        a.master == me
    } else {
        node.master.as_ref() == Some(&a.master)
    };
    !a.unsettled && peers_ok && ours
}

/// `SENTINEL DEBUG` on our own sentinel (see the module header). A sentinel that refuses
/// (older than 7.0) keeps its defaults: slower, not wrong.
async fn tune(cfg: &Config, local: &Endpoint) {
    let t = Duration::from_millis(500);
    let tilt = cfg.timings().tilt_period.as_millis() as u64;
    let r = async {
        let mut con = redisio::connect(&cfg.conn, local, Server::Sentinel, t).await?;
        redisio::query::<()>(
            &mut con,
            redis::cmd("SENTINEL")
                .arg("DEBUG")
                .arg("info-period")
                .arg(INFO_PERIOD_MS)
                .arg("publish-period")
                .arg(PUBLISH_PERIOD_MS)
                .arg("tilt-period")
                .arg(tilt)
                .arg("election-timeout")
                .arg(crate::splitvote::ELECTION_TIMEOUT_MS),
            t,
        )
        .await
    };
    match r.await {
        Ok(()) => tracing::info!(
            info_period_ms = INFO_PERIOD_MS,
            publish_period_ms = PUBLISH_PERIOD_MS,
            tilt_period_ms = tilt,
            election_timeout_ms = crate::splitvote::ELECTION_TIMEOUT_MS,
            "sentinel periods set"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "SENTINEL DEBUG refused; sentinel keeps its default periods")
        }
    }
}

#[derive(Default)]
struct Cons {
    sentinel: Option<redis::aio::MultiplexedConnection>,
    redis: Option<redis::aio::MultiplexedConnection>,
}

type BoxFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

async fn finish_opt(f: &mut Option<BoxFuture>) {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn sleep_until_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Runs for the life of the pod; dropped when a stop begins (a handover must not race it).
pub async fn run(
    cfg: Config,
    cleanup_settings: cleanup::Settings,
    base_priority: u32,
    restart_sentinel: RestartSentinel,
) {
    let local = cfg.own(Server::Sentinel);
    let every = (cleanup_settings.interval_ms > 0)
        .then(|| Duration::from_millis(cleanup_settings.interval_ms));
    let mut next_tick = every.map(|e| Instant::now() + cleanup::jitter(e));
    let mut watch = Watch {
        last: None,
        stale: None,
        restarted: None,
        restart_sentinel,
    };
    let mut cons = Cons::default();
    // The version rule (engine.rs) is looked at after every follow look and cleanup tick (the
    // moments a master changes, and a slow safety net), in a task of its own so that a master
    // that does not answer never delays the events here; it ends with this companion.
    let guard = crate::engine::Guard::spawn(cfg.clone(), base_priority);
    // The follow-up of a cleanup reset, run beside the events (cleanup::tick says why).
    let mut after_reset: Option<BoxFuture> = None;
    // The promotion relay (relay.rs) reads our sentinel's events on its own subscription, so
    // that a look here waiting on a dead sentinel never delays it; it ends with this companion.
    let _relay = crate::relay::Watcher::spawn(cfg.clone());
    let channels: Vec<&str> = EVENTS
        .iter()
        .chain(ELECTION_EVENTS)
        .copied()
        .chain([NOT_ELECTED])
        .collect();
    loop {
        let ps =
            redisio::subscribe_until_up(&cfg.conn, &local, Server::Sentinel, &channels, "follow")
                .await;
        tune(&cfg, &local).await;
        let mut pending = watch.look(&cfg).await;
        guard.kick();
        let mut stream = ps.into_on_message();
        let mut clock = tokio::time::interval(STALL_TICK);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        loop {
            tokio::select! {
                // First: after a stall, the fence must not wait behind the events that piled up.
                biased;
                _ = clock.tick() => {
                    let gap = last_tick.elapsed();
                    last_tick = Instant::now();
                    if gap >= STALL_TICK + STALL_MIN {
                        after_stall(&cfg, gap - STALL_TICK).await;
                        last_tick = Instant::now();
                    }
                }
                msg = stream.next() => match msg {
                    Some(m) => {
                        let channel = m.get_channel_name();
                        tracing::debug!(channel, "follow: sentinel event");
                        let payload: String = m.get_payload().unwrap_or_default();
                        if ELECTION_EVENTS.contains(&channel) {
                            // At once, not debounced: the promotion may follow within 100 ms.
                            on_election(&cfg, channel, &payload).await;
                            last_tick = Instant::now();
                        } else if channel == NOT_ELECTED {
                            crate::splitvote::on_abort(&cfg).await;
                            last_tick = Instant::now();
                        } else {
                            pending = earliest(pending, Some(Instant::now() + DEBOUNCE));
                        }
                    }
                    // Our sentinel went away (restart): subscribe again once it is back.
                    None => break,
                },
                _ = sleep_until_opt(pending) => {
                    pending = watch.look(&cfg).await;
                    guard.kick();
                }
                _ = finish_opt(&mut after_reset), if after_reset.is_some() => {
                    after_reset = None;
                }
                _ = sleep_until_opt(next_tick) => {
                    next_tick = every.map(|e| Instant::now() + cleanup::jitter(e));
                    if after_reset.is_none() {
                        if let Some(r) = cleanup::tick(&cfg, cleanup_settings, &local).await {
                            after_reset = Some(Box::pin(cleanup::rediscover(cfg.clone(), r)));
                        }
                    }
                    // The timer is only a safety net for a missed event: two requests when all
                    // is consistent, the full check (every sentinel) otherwise.
                    if !looks_consistent(&cfg, &local, &mut cons).await {
                        pending = earliest(pending, watch.look(&cfg).await);
                    }
                    guard.kick();
                }
            }
        }
    }
}

/// How the companion asks its owner (the supervisor, which owns the sentinel process) to restart
/// our sentinel monitoring the given master. A callback rather than the supervisor's event
/// type, so that this module does not import the one that runs it.
pub type RestartSentinel = Box<dyn Fn(Endpoint) + Send + Sync>;

/// What the companion remembers between looks.
struct Watch {
    /// The last wait logged (a wait is logged once, not at every event while it lasts).
    last: Option<String>,
    /// Since when our own sentinel has named another master than the majority, and which one
    /// the majority names.
    stale: Option<(Endpoint, Instant)>,
    /// When our sentinel was last restarted for it: at most once per failover timeout, so a
    /// restart that does not help cannot spend the restart budget.
    restarted: Option<Instant>,
    restart_sentinel: RestartSentinel,
}

impl Watch {
    /// One `look`; Some(when to look again) while our own sentinel disagrees with the majority.
    /// Sentinel corrects a lagging sentinel within a hello period; one that still disagrees
    /// after the failover timeout never will, nor one at the majority's epoch after a short
    /// confirmation (`own_sentinel_stale`, `Stale::wait`); either is restarted by the
    /// supervisor with the majority's master as its monitor line (its epochs and identity are
    /// kept). At most once per failover timeout.
    async fn look(&mut self, cfg: &Config) -> Option<Instant> {
        let (action, stale) = look(cfg).await;
        log_action(&action, &mut self.last);
        let Some(stale) = stale else {
            self.stale = None;
            return None;
        };
        let timeout = Duration::from_millis(cfg.failover_timeout_ms);
        let limit = stale.wait(timeout);
        let master = stale.master;
        let now = Instant::now();
        let since = match &self.stale {
            Some((m, since)) if *m == master => *since,
            _ => {
                tracing::info!(master = %master, "our sentinel names another master than the majority of the sentinels");
                self.stale = Some((master.clone(), now));
                now
            }
        };
        let may = self
            .restarted
            .map_or(true, |t| now.duration_since(t) >= timeout);
        if now.duration_since(since) >= limit && may {
            tracing::warn!(
                master = %master,
                stale_ms = now.duration_since(since).as_millis() as u64,
                "our sentinel alone still names another master: restarting it to monitor the majority's"
            );
            (self.restart_sentinel)(master.clone());
            self.restarted = Some(now);
            self.stale = Some((master, now));
        }
        Some(now + STALE_RECHECK)
    }
}

/// How often a disagreeing sentinel of ours is looked at again (only while it disagrees).
const STALE_RECHECK: Duration = Duration::from_secs(1);

/// Logs a wait once, not at every event or tick while it lasts.
fn log_action(a: &Action, last: &mut Option<String>) {
    match a {
        Action::Follow { .. } => *last = None,
        Action::Keep(why) => {
            tracing::debug!(reason = %why, "follow: nothing to do");
            *last = None;
        }
        Action::Wait(why) if last.as_deref() != Some(why.as_str()) => {
            tracing::info!(reason = %why, "follow: not now");
            *last = Some(why.clone());
        }
        Action::Wait(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentinel::fixtures::{ans, ep};

    fn master(replid: &str, replid2: &str, second: i64) -> Repl {
        Repl {
            is_master: true,
            replid: replid.into(),
            replid2: replid2.into(),
            second_offset: second,
            offset: 100,
            ..Default::default()
        }
    }

    fn replica_of(m: &str) -> Repl {
        Repl {
            is_master: false,
            master: Some(ep(m)),
            link_up: true,
            replid: "r1".into(),
            replid2: "0000".into(),
            second_offset: -1,
            offset: 100,
        }
    }

    /// Issue 14's soak: a master frozen longer than down-after and thawed took writes for up to
    /// a second while the failover the others started meanwhile went on.
    #[test]
    fn stalled_master_is_fenced_only_when_being_replaced() {
        let me = ep("10.0.0.2:6379");
        let other = "10.0.0.1:6379";
        let mine = "10.0.0.2:6379";
        let m = master("r1", "0000", -1);
        let r = replica_of(other);
        // (node, peers' answers) -> fence?
        let rows: Vec<(Option<&Repl>, Vec<Answer>, bool)> = vec![
            (
                Some(&m),
                vec![ans(mine, 3, false), ans(mine, 3, false)],
                false,
            ),
            (
                Some(&m),
                vec![ans(mine, 3, true), ans(mine, 3, false)],
                true,
            ),
            (
                Some(&m),
                vec![ans(other, 4, false), ans(mine, 3, true)],
                true,
            ),
            (Some(&m), vec![ans(other, 4, false)], true),
            // a stale peer at a lower epoch does not outvote the newest one naming us
            (
                Some(&m),
                vec![ans(mine, 4, false), ans(other, 3, false)],
                false,
            ),
            (Some(&m), vec![], false),
            (Some(&r), vec![ans(other, 4, false)], false),
            (None, vec![ans(other, 4, false)], false),
        ];
        for (i, (node, peers, want)) in rows.into_iter().enumerate() {
            assert_eq!(
                fence_after_stall(&me, node, &peers).is_some(),
                want,
                "row {i}"
            );
        }
    }

    /// Soak episode 173: the leader of a failover was frozen; after the thaw it named its own,
    /// demoted node at the epoch the others had reached with another master.
    #[test]
    fn own_sentinel_is_stale_only_when_alone_at_or_below_the_majority() {
        let (a, b) = ("10.0.0.1:6379", "10.0.0.2:6379");
        // (own answer, others' answers, sentinels known) -> Some(majority's master)?
        type Row = (Option<Answer>, Vec<Answer>, usize, Option<&'static str>);
        let rows: Vec<Row> = vec![
            // the episode: same epoch, another master
            (
                Some(ans(a, 86, false)),
                vec![ans(b, 86, false), ans(b, 86, false)],
                3,
                Some(b),
            ),
            // lagging behind (Sentinel normally catches up; still wrong after the timeout)
            (
                Some(ans(a, 85, false)),
                vec![ans(b, 86, false), ans(b, 86, false)],
                3,
                Some(b),
            ),
            // agreeing
            (
                Some(ans(b, 86, false)),
                vec![ans(b, 86, false), ans(b, 86, false)],
                3,
                None,
            ),
            // ours is newer: it wins and spreads by itself
            (
                Some(ans(a, 87, false)),
                vec![ans(b, 86, false), ans(b, 86, false)],
                3,
                None,
            ),
            // one other is no majority of three
            (Some(ans(a, 86, false)), vec![ans(b, 86, false)], 3, None),
            // the others disagree among themselves at their top epoch
            (
                Some(ans(a, 85, false)),
                vec![ans(b, 86, false), ans(a, 86, false)],
                3,
                None,
            ),
            // a stale other below the top does not count against the majority at the top
            (
                Some(ans(a, 85, false)),
                vec![
                    ans(b, 86, false),
                    ans(b, 86, false),
                    ans(b, 86, false),
                    ans(a, 80, false),
                ],
                5,
                Some(b),
            ),
            // a failover runs somewhere: the answers may change
            (
                Some(ans(a, 86, true)),
                vec![ans(b, 86, false), ans(b, 86, false)],
                3,
                None,
            ),
            (
                Some(ans(a, 85, false)),
                vec![ans(b, 86, true), ans(b, 86, false)],
                3,
                None,
            ),
            // our sentinel does not answer: nothing to restart on this evidence
            (None, vec![ans(b, 86, false), ans(b, 86, false)], 3, None),
        ];
        for (i, (own, others, known, want)) in rows.into_iter().enumerate() {
            let got = own_sentinel_stale(own.as_ref(), &others, known);
            assert_eq!(
                got.as_ref().map(|s| s.master.clone()),
                want.map(ep),
                "row {i}"
            );
            // Row 0 is the episode (same epoch: never converges), rows 1 and 6 lag behind.
            let same = match i {
                0 => Some(true),
                1 | 6 => Some(false),
                _ => None,
            };
            assert_eq!(got.map(|s| s.same_epoch), same, "row {i}");
        }
        let timeout = Duration::from_millis(6000);
        let stale = |same_epoch| Stale {
            master: ep(b),
            same_epoch,
        };
        assert_eq!(
            stale(false).wait(timeout),
            timeout,
            "behind: Sentinel catches up"
        );
        assert_eq!(
            stale(true).wait(timeout),
            Duration::from_secs(2),
            "same epoch: never"
        );
        assert_eq!(
            stale(true).wait(Duration::from_millis(1000)),
            Duration::from_millis(1000)
        );
    }

    #[test]
    fn table() {
        let me = ep("10.0.0.2:6379");
        let a = "10.0.0.1:6379";
        let c = "10.0.0.3:6379";
        let old = master("r1", "0000", -1);
        let promoted_from_r1 = master("r2", "r1", 101);
        type Row<'a> = (
            &'a str,
            Option<Repl>,
            Vec<Answer>,
            usize,
            Option<Repl>,
            char,
        );
        let rows: Vec<Row> = vec![
            ("redis down", None, vec![ans(c, 1, false)], 3, None, 'W'),
            (
                "no majority",
                Some(replica_of(a)),
                vec![ans(c, 1, false)],
                3,
                Some(promoted_from_r1.clone()),
                'W',
            ),
            (
                "failover deciding",
                Some(replica_of(a)),
                vec![ans(a, 0, true), ans(a, 0, false)],
                3,
                Some(old.clone()),
                'W',
            ),
            (
                "already following",
                Some(replica_of(c)),
                vec![ans(c, 1, false), ans(c, 1, false)],
                3,
                Some(promoted_from_r1.clone()),
                'K',
            ),
            (
                "orphaned replica of a dead master follows the new one",
                Some(replica_of(a)),
                vec![ans(c, 1, false), ans(a, 0, false)],
                3,
                Some(promoted_from_r1.clone()),
                'F',
            ),
            (
                "named master not answering as master",
                Some(replica_of(a)),
                vec![ans(c, 1, false), ans(c, 1, false)],
                3,
                Some(replica_of(a)),
                'W',
            ),
            (
                "disagreement at the top epoch",
                Some(replica_of(a)),
                vec![ans(c, 1, false), ans(a, 1, false)],
                3,
                Some(promoted_from_r1.clone()),
                'W',
            ),
            (
                "sentinels name this node",
                Some(replica_of(a)),
                vec![
                    ans("10.0.0.2:6379", 1, false),
                    ans("10.0.0.2:6379", 1, false),
                ],
                3,
                None,
                'K',
            ),
            (
                "old master after a partition: demoted",
                Some(old.clone()),
                vec![ans(c, 1, false), ans(c, 1, false)],
                3,
                Some(promoted_from_r1.clone()),
                'F',
            ),
            (
                // redis-ha#383: we were just promoted; sentinels not told yet still name our
                // predecessor. Never follow it.
                "freshly promoted master is not demoted to its predecessor",
                Some(promoted_from_r1.clone()),
                vec![ans(a, 0, false), ans(a, 0, false)],
                3,
                Some(old.clone()),
                'W',
            ),
        ];
        for (name, node, answers, known, named, want) in rows {
            let got = judge(&me, node.as_ref(), &answers, known, named.as_ref());
            let kind = match got {
                Action::Keep(_) => 'K',
                Action::Wait(_) => 'W',
                Action::Follow { .. } => 'F',
            };
            assert_eq!(kind, want, "{name}: {got:?}");
        }
    }

    #[test]
    fn tilt_lasts_one_down_after_within_sentinels_bounds() {
        for (down_after, want) in [
            (500, 3_000),
            (2_000, 3_000),
            (3_000, 3_000),
            (5_000, 5_000),
            (30_000, 30_000),
            (180_000, 30_000),
        ] {
            assert_eq!(
                super::tilt_period_ms(down_after),
                want,
                "down-after {down_after}"
            );
        }
    }

    #[test]
    fn election_events_fence_only_an_election_about_this_master() {
        let me = crate::config::parse_endpoint("t", "10.0.0.3:6379").unwrap();
        let me6 = crate::config::parse_endpoint("t", "[fd88::3]:6379").unwrap();
        let names = |m: &str, epoch| crate::sentinel::Answer {
            master: crate::config::parse_endpoint("t", m).unwrap(),
            config_epoch: epoch,
            unsettled: false,
            known_sentinels: 2,
        };
        let us5 = names("10.0.0.3:6379", 5);
        let other5 = names("10.0.0.1:6379", 5);
        let rows: Vec<(
            &str,
            &str,
            &Endpoint,
            Option<&crate::sentinel::Answer>,
            bool,
        )> = vec![
            (
                "+try-failover",
                "master mymaster 10.0.0.3 6379",
                &me,
                None,
                true,
            ),
            (
                "+try-failover",
                "master mymaster 10.0.0.1 6379",
                &me,
                None,
                false,
            ),
            (
                "+try-failover",
                "master mymaster fd88::3 6379",
                &me6,
                None,
                true,
            ),
            (
                "+try-failover",
                "master mymaster fd88::4 6379",
                &me6,
                None,
                false,
            ),
            ("+try-failover", "garbled", &me, None, true),
            // the election that made us master (epoch 5), handled after the promotion
            ("+vote-for-leader", "abc123 5", &me, Some(&us5), false),
            ("+vote-for-leader", "abc123 4", &me, Some(&us5), false),
            // a newer election while our sentinel names us: about failing us over
            ("+vote-for-leader", "abc123 6", &me, Some(&us5), true),
            // our sentinel names someone else (it has not seen our promotion): fence, to be safe
            ("+vote-for-leader", "abc123 5", &me, Some(&other5), true),
            ("+vote-for-leader", "abc123 5", &me, None, true),
            (
                "+vote-for-leader",
                "abc123 notanumber",
                &me,
                Some(&us5),
                true,
            ),
        ];
        for (i, (ch, payload, me, ours, want)) in rows.into_iter().enumerate() {
            assert_eq!(
                super::election_targets(ch, payload, me, ours),
                want,
                "row {i}: {ch} {payload}"
            );
        }
    }
}
