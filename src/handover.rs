//! Graceful stop of a master: hand the role to a caught-up replica before redis stops, so no
//! acknowledged write is lost and clients wait about a second instead of down-after.
//!
//! Steps, each bounded by one overall deadline: pause writes (`CLIENT PAUSE .. WRITE`); wait until
//! a healthy replica has processed everything the master acknowledged; `SENTINEL FAILOVER` on a
//! sentinel that outlives this pod; wait until a replica answers as master (or Sentinel names the
//! new master); relay the promotion to every sentinel (`relay::tell`); wait until they name it; make
//! this node its replica (`REPLICAOF`, so clients that were paused get READONLY and go back to
//! Sentinel); unpause. On any failure: unpause and stop
//! anyway. `SENTINEL FAILOVER` alone loses the writes acknowledged while the replica lags
//! (bitnami/charts#12598); the pause and the offset check are what prevent that.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Server;
use crate::config::{Config, Endpoint};
use crate::redisio::{self, healthy, replicas};
use crate::sentinel::{Flag, ReplicaView};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done {
        new_master: Endpoint,
        took_ms: u64,
        /// What the cluster-wide finish saw (every sentinel names it, replicas linked), or what
        /// was still missing when the budget ran out.
        cluster: String,
    },
    Skipped(String),
    Failed(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Done {
                new_master,
                took_ms,
                cluster,
            } => write!(f, "done in {took_ms} ms: {new_master} is master; {cluster}"),
            Outcome::Skipped(why) => write!(f, "skipped: {why}"),
            Outcome::Failed(why) => write!(f, "failed, stopping anyway: {why}"),
        }
    }
}

const STEP: Duration = Duration::from_millis(20);
/// How long a caught-up replica may take to answer "are you master yet?" during the failover:
/// short, since it is asked every STEP and a slow one must not hide a fast Sentinel answer.
const PROMOTED_CHECK: Duration = Duration::from_millis(200);

/// Who takes part in a handover: the master to move, the sentinel asked to fail it over, and,
/// for `switchover --to`, the one replica that may be promoted (the others were given priority 0
/// by the caller, who restores them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub master: Endpoint,
    pub sentinel: Endpoint,
    pub only: Option<Endpoint>,
    /// The sentinel stops with the master's pod (the SIGTERM path), so it may forget the group
    /// once the other sentinels name the new master (see `clients_told`).
    pub leaving: bool,
}

impl Plan {
    /// The SIGTERM path: this pod's own data node and its own sentinel.
    pub fn local(cfg: &Config) -> Plan {
        Plan {
            master: cfg.own(Server::Redis),
            sentinel: cfg.own(Server::Sentinel),
            only: None,
            leaving: true,
        }
    }
}

/// The SIGTERM path: hand this pod's master role over (see the module header).
pub async fn run(cfg: &Config, budget: Duration) -> Outcome {
    let plan = Plan::outliving(cfg).await;
    run_on(cfg, &plan, budget).await
}

impl Plan {
    /// The SIGTERM path with the failover led by another pod's sentinel, which outlives this
    /// pod: a leader that dies with the pod (a SIGKILL right after SIGTERM, a short grace, a
    /// node shutting down) leaves its promotion for the others to undo or redo after down-after
    /// (issue 30 measured 6.1-6.6 s of writes and a second failover in 2 of 3 runs). A surviving
    /// leader names the new master in `SENTINEL MASTERS` only when its failover ends; `relay::tell`
    /// tells it, and the others, at the promotion. The peer must name this node master at the
    /// epoch our own sentinel knows (a peer that lags would refuse or race), settled and not in
    /// TILT (it would act 30 s later). None fits (a single pod, peers down): our own sentinel.
    pub async fn outliving(cfg: &Config) -> Plan {
        let local = Plan::local(cfg);
        let t = Duration::from_millis(300);
        let ours = crate::discover::ask(cfg, &local.sentinel, &cfg.group, t)
            .await
            .ok()
            .flatten();
        let peers = match redisio::up_sentinels(&cfg.conn, &local.sentinel, &cfg.group, t).await {
            Ok((up, _)) => up,
            Err(_) => Vec::new(),
        };
        for p in peers {
            let fits = match crate::discover::ask(cfg, &p, &cfg.group, t).await {
                Ok(Some(a)) => {
                    a.master == local.master
                        && !a.unsettled
                        && ours
                            .as_ref()
                            .map_or(true, |o| a.config_epoch >= o.config_epoch)
                }
                _ => false,
            };
            if fits && matches!(redisio::sentinel_tilt(&cfg.conn, &p, t).await, Ok(false)) {
                tracing::info!(sentinel = %p, "handover: led by another pod's sentinel, which outlives this pod");
                return Plan {
                    sentinel: p,
                    ..local
                };
            }
        }
        tracing::info!("handover: no other pod's sentinel can lead; our own does");
        local
    }

    /// The sentinel that stops with the master's pod (the SIGTERM path), or the leader.
    fn own_sentinel(&self, cfg: &Config) -> Endpoint {
        if self.leaving {
            cfg.own(Server::Sentinel)
        } else {
            self.sentinel.clone()
        }
    }
}

/// The handover's steps for any master and sentinel: the SIGTERM path (`run`) and the
/// operator's `switchover` (switchover.rs) both come here.
pub async fn run_on(cfg: &Config, plan: &Plan, budget: Duration) -> Outcome {
    let started = Instant::now();
    let deadline = started + budget;
    let me = plan.master.clone();
    let t = Duration::from_millis(1000);
    // A replica that is listed but not yet online (its link just came up, or it reconnects) gets
    // up to a second to become healthy; a master with no replica at all stops at once.
    let settle_until = started + Duration::from_millis(1000).min(budget / 4);
    // A stop that lands while a failover runs: wait for it to settle first (this node may be the
    // replica being promoted, and would then hand over rather than stop as a fresh master).
    let sentinel = plan.sentinel.clone();
    let failover_until = started + budget / 2;
    loop {
        match crate::discover::ask(cfg, &sentinel, &cfg.group, t).await {
            Ok(Some(a)) if a.unsettled && Instant::now() < failover_until => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(Some(a)) if a.unsettled => {
                tracing::warn!("handover: a failover is still deciding; going on");
                break;
            }
            _ => break,
        }
    }
    if started.elapsed() > Duration::from_millis(50) {
        tracing::info!(
            waited_ms = started.elapsed().as_millis() as u64,
            "handover: waited for a running failover to settle"
        );
    }
    loop {
        let info = match redisio::info(&cfg.conn, &me, "replication", t).await {
            Ok(i) => i,
            Err(e) => return Outcome::Skipped(format!("redis {me} does not answer: {e}")),
        };
        if redisio::info_field(&info, "role") != Some("master") {
            return Outcome::Skipped("this node is a replica".into());
        }
        let listed = replicas(&info);
        if listed.iter().any(healthy) {
            break;
        }
        if listed.is_empty() || Instant::now() >= settle_until {
            let seen: Vec<String> = listed
                .iter()
                .map(|r| format!("{} online={} lag={}", r.addr, r.online, r.lag))
                .collect();
            return Outcome::Skipped(format!(
                "no healthy replica to hand over to (listed: [{}])",
                seen.join(", ")
            ));
        }
        tokio::time::sleep(STEP).await;
    }
    // Our sentinel must know the replicas, with a fresh INFO of each, before it is asked to
    // promote one (a fresh sentinel learns them from the master's INFO, once a second with the
    // periods follow.rs sets); otherwise SENTINEL FAILOVER answers NOGOODSLAVE while writes are
    // paused. Waiting here, before the pause, costs clients nothing.
    let learn_until = Instant::now() + Duration::from_millis(1500).min(budget / 4);
    loop {
        let listed: Vec<Endpoint> = match redisio::info(&cfg.conn, &me, "replication", t).await {
            Ok(i) => replicas(&i)
                .into_iter()
                .filter(healthy)
                .map(|r| r.addr)
                .filter(|a| plan.only.as_ref().map_or(true, |o| o == a))
                .collect(),
            Err(_) => Vec::new(),
        };
        let known = sentinel_replicas(cfg, &sentinel, t)
            .await
            .unwrap_or_default();
        let unknown: Vec<String> = listed
            .iter()
            .filter(|r| !known.contains(r))
            .map(|r| r.to_string())
            .collect();
        if unknown.is_empty() {
            break;
        }
        if Instant::now() >= learn_until {
            tracing::warn!(unknown = %unknown.join(","), "handover: our sentinel cannot promote every healthy replica yet; going on");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One move per rollout (issue 30): Sentinel is steered to the replica that started last.
    let steered = match &plan.only {
        None => {
            steer(
                cfg,
                &me,
                &sentinel,
                Instant::now() + Duration::from_millis(1500).min(budget / 4),
            )
            .await
        }
        Some(_) => None,
    };
    let outcome = pause_and_move(cfg, plan, &me, started, deadline, budget).await;
    if let Some((node, was)) = steered {
        if let Err(e) = set_priority(cfg, &node, was, Duration::from_millis(500)).await {
            tracing::warn!(replica = %node, replica_priority = was, error = %e, "handover: could not set replica-priority back; a restart of that pod renders it again");
        }
    }
    outcome
}

/// The pause, the failover and the demotion (see the module header); `run_on` around it.
async fn pause_and_move(
    cfg: &Config,
    plan: &Plan,
    me: &Endpoint,
    started: Instant,
    deadline: Instant,
    budget: Duration,
) -> Outcome {
    let me = me.clone();
    let t = Duration::from_millis(1000);
    let pause_ms = budget.as_millis().max(1000) as u64;
    let mut con = match redisio::connect(&cfg.conn, &me, Server::Redis, t).await {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("connect to redis {me}: {e}")),
    };
    if let Err(e) = redisio::query::<()>(
        &mut con,
        redis::cmd("CLIENT").arg("PAUSE").arg(pause_ms).arg("WRITE"),
        t,
    )
    .await
    {
        return Outcome::Failed(format!("CLIENT PAUSE: {e}"));
    }
    tracing::info!(pause_ms, "handover: writes paused");
    // While paused this node takes no write, but redis checks min-replicas-to-write before the
    // pause: once its replicas follow the new master, a write sent here would get NOREPLICAS
    // (an error in the application) instead of waiting in the pause for the move to finish.
    // Lifted only while paused; set back before the pause lifts, whatever happened.
    let fence = cfg.min_replicas_to_write;
    let lifted = fence > 0 && set_min_replicas(&mut con, 0, t).await.is_ok();
    let accepted = AtomicBool::new(false);
    // Every step is bounded by the one deadline, in-flight requests included.
    let result =
        match tokio::time::timeout_at(deadline, steps(cfg, plan, deadline, &accepted)).await {
            Ok(r) => r,
            Err(_) => Err("handover budget spent".into()),
        };
    let unpause_limit = Duration::from_millis(300);
    if lifted {
        if let Err(e) = set_min_replicas(&mut con, fence, unpause_limit).await {
            tracing::error!(error = %e, min_replicas_to_write = fence, "handover: could not set min-replicas-to-write back; writes stay paused until redis stops");
            return Outcome::Failed(format!("min-replicas-to-write not restored: {e}"));
        }
    }
    // A step that failed before the failover was asked (a replica that never caught up) may
    // still find this node replaced: the sentinels fail a paused master over after down-after
    // (their hello PUBLISH waits in the pause, their PINGs behind it). Writes taken now would
    // be lost: it stays paused, as after an accepted failover.
    if result.is_err() && !accepted.load(Ordering::SeqCst) {
        if let Ok(Some(a)) = crate::discover::ask(cfg, &plan.sentinel, &cfg.group, t).await {
            if let Some(why) = moved_on(&me, &a) {
                tracing::warn!(reason = %why, "handover: this node was failed over meanwhile");
                accepted.store(true, Ordering::SeqCst);
            }
        }
    }
    if result.is_ok() || !accepted.load(Ordering::SeqCst) {
        // On success clients get READONLY and follow Sentinel at once; before any failover the
        // master simply serves again until redis stops.
        if let Err(e) =
            redisio::query::<()>(&mut con, redis::cmd("CLIENT").arg("UNPAUSE"), unpause_limit).await
        {
            tracing::warn!(error = %e, "handover: CLIENT UNPAUSE failed");
        }
    } else {
        // Sentinel is promoting someone: writes taken here now would be lost when this node is
        // converted; it stays paused until redis stops.
        tracing::warn!("handover: failover under way, writes stay paused until redis stops");
    }
    match result {
        Ok((new_master, caught_up, peers)) => {
            let cluster = finish(
                cfg,
                &plan.sentinel,
                peers,
                &new_master,
                &caught_up,
                deadline,
            )
            .await;
            Outcome::Done {
                new_master,
                took_ms: started.elapsed().as_millis() as u64,
                cluster,
            }
        }
        Err(why) => Outcome::Failed(why),
    }
}

async fn set_min_replicas(
    con: &mut redis::aio::MultiplexedConnection,
    n: u32,
    t: Duration,
) -> redis::RedisResult<()> {
    redisio::config_set_on(con, "min-replicas-to-write", n, t).await
}

/// A caught-up replica as the rollout preference sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub addr: Endpoint,
    /// `replica-priority` (0: never promoted; lower wins in Sentinel's choice).
    pub priority: u32,
    /// Its data node's uptime: a pod the rollout already replaced started after the others.
    pub uptime_s: u64,
}

/// How much later the youngest replica must have started than every other one to be preferred:
/// uptime counts whole seconds, and pods started in the same second are not told apart. Any
/// caught-up replica is as good a master as another, so preferring the youngest costs nothing
/// when no rollout runs; when one runs, the youngest is a pod it already replaced.
pub const YOUNGER_BY_S: u64 = 1;

/// Which replica Sentinel should promote so that a rolling update moves the master once
/// (issue 30): the StatefulSet replaces pods from the highest ordinal down, so a replica that
/// started after the others was already replaced, and promoting a pod not yet replaced costs a
/// second move when its turn comes. Among the replicas Sentinel ranks first (lowest priority
/// above 0: the version rule of engine.rs keeps newer engines behind, and wins), the one that
/// started at least `YOUNGER_BY_S` after every other; None when none did (started together:
/// any choice costs the same) or when the priority has no room below.
pub fn prefer(cands: &[Candidate]) -> Option<&Candidate> {
    let best = cands
        .iter()
        .filter(|c| c.priority > 0)
        .map(|c| c.priority)
        .min()?;
    let group: Vec<&Candidate> = cands.iter().filter(|c| c.priority == best).collect();
    let youngest = group.iter().min_by_key(|c| c.uptime_s)?;
    let replaced = group.len() > 1
        && group
            .iter()
            .filter(|c| c.addr != youngest.addr)
            .all(|c| c.uptime_s >= youngest.uptime_s.saturating_add(YOUNGER_BY_S));
    (replaced && best > 1).then_some(*youngest)
}

/// Gives the preferred replica (see `prefer`) a priority one below the others' and waits until
/// our sentinel has read it (its INFO of the replica, once a second), before writes are paused.
/// Returns the node and the priority to put back, or None when nothing was changed.
async fn steer(
    cfg: &Config,
    me: &Endpoint,
    sentinel: &Endpoint,
    until: Instant,
) -> Option<(Endpoint, u32)> {
    let t = Duration::from_millis(500);
    let info = redisio::info(&cfg.conn, me, "replication", t).await.ok()?;
    let mut cands = Vec::new();
    for r in replicas(&info).into_iter().filter(healthy) {
        let Ok(server) = redisio::info(&cfg.conn, &r.addr, "server", t).await else {
            continue;
        };
        let Some(uptime_s) =
            redisio::info_field(&server, "uptime_in_seconds").and_then(|v| v.parse().ok())
        else {
            continue;
        };
        let Ok(priority) = get_priority(cfg, &r.addr, t).await else {
            continue;
        };
        cands.push(Candidate {
            addr: r.addr,
            priority,
            uptime_s,
        });
    }
    let Some(chosen) = prefer(&cands).cloned() else {
        let seen: Vec<String> = cands
            .iter()
            .map(|c| format!("{} priority {} up {} s", c.addr, c.priority, c.uptime_s))
            .collect();
        tracing::info!(replicas = %seen.join(", "), "handover: no replica the rollout replaced to steer Sentinel to");
        return None;
    };
    let want = chosen.priority - 1;
    if let Err(e) = set_priority(cfg, &chosen.addr, want, t).await {
        tracing::warn!(replica = %chosen.addr, error = %e, "handover: could not steer Sentinel to the replica the rollout replaced");
        return None;
    }
    let steered = Some((chosen.addr.clone(), chosen.priority));
    loop {
        if let Ok(list) = sentinel_replica_priorities(cfg, sentinel, t).await {
            if list.iter().any(|(a, p)| *a == chosen.addr && *p == want) {
                tracing::info!(replica = %chosen.addr, uptime_s = chosen.uptime_s, others = cands.len() - 1, "handover: Sentinel is steered to the replica the rollout replaced (it started last)");
                return steered;
            }
        }
        if Instant::now() >= until {
            tracing::warn!(replica = %chosen.addr, "handover: our sentinel did not read the steered priority in time; Sentinel chooses");
            let _ = set_priority(cfg, &chosen.addr, chosen.priority, t).await;
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn get_priority(cfg: &Config, node: &Endpoint, t: Duration) -> redis::RedisResult<u32> {
    let mut con = redisio::connect(&cfg.conn, node, Server::Redis, t).await?;
    redisio::config_get_on(&mut con, "replica-priority", t)
        .await?
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::Parse,
                "CONFIG GET replica-priority: no number",
            ))
        })
}

async fn set_priority(
    cfg: &Config,
    node: &Endpoint,
    p: u32,
    t: Duration,
) -> redis::RedisResult<()> {
    let mut con = redisio::connect(&cfg.conn, node, Server::Redis, t).await?;
    redisio::config_set_on(&mut con, "replica-priority", p, t).await
}

/// Every replica our sentinel lists, with the priority it last read from it.
async fn sentinel_replica_priorities(
    cfg: &Config,
    sentinel: &Endpoint,
    t: Duration,
) -> redis::RedisResult<Vec<(Endpoint, u32)>> {
    Ok(
        redisio::sentinel_replicas(&cfg.conn, sentinel, &cfg.group, t)
            .await?
            .into_iter()
            .filter_map(|r| Some((r.addr, r.priority?)))
            .collect(),
    )
}

/// Replicas our sentinel could promote right now: known, reachable, linked, priority > 0, and
/// with an INFO reply younger than 2 s (Sentinel skips a replica whose INFO is older than
/// 3 × info-period, and answers NOGOODSLAVE when none is left).
async fn sentinel_replicas(
    cfg: &Config,
    sentinel: &Endpoint,
    t: Duration,
) -> redis::RedisResult<Vec<Endpoint>> {
    Ok(
        redisio::sentinel_replicas(&cfg.conn, sentinel, &cfg.group, t)
            .await?
            .into_iter()
            .filter(ReplicaView::is_promotable_now)
            .map(|r| r.addr)
            .collect(),
    )
}

/// The handover is finished when the cluster knows, not when our sentinel does: every other
/// caught-up replica is re-pointed at the new master at once (Sentinel does it one replica at a
/// time and may try a stale address first), then we wait until every reachable sentinel names
/// the new master (otherwise, once our sentinel exits, the others fail over a second time) and
/// the new master lists those replicas online (otherwise it refuses writes: min-replicas).
/// Bounded by the handover deadline; returns what it saw, for the log.
async fn finish(
    cfg: &Config,
    sentinel: &Endpoint,
    // Set when our sentinel forgot the group (clients_told): the others are asked instead.
    peers: Option<Vec<Endpoint>>,
    new_master: &Endpoint,
    caught_up: &[Endpoint],
    deadline: Instant,
) -> String {
    let t = Duration::from_millis(500);
    let started = Instant::now();
    let others: Vec<&Endpoint> = caught_up.iter().filter(|r| *r != new_master).collect();
    repointed(
        crate::relay::repoint(cfg, caught_up, new_master, t).await,
        new_master,
    );
    let sentinel = sentinel.clone();
    let mut missing = String::from("nothing checked");
    for _ in 0..10_000 {
        let sentinels = match &peers {
            Some(p) => p.clone(),
            None => {
                let mut up = match redisio::up_sentinels(&cfg.conn, &sentinel, &cfg.group, t).await
                {
                    Ok((up, _)) => up,
                    Err(_) => Vec::new(),
                };
                up.insert(0, sentinel.clone());
                up
            }
        };
        let mut lagging = Vec::new();
        for s in &sentinels {
            if redisio::master_addr(&cfg.conn, s, &cfg.group, t)
                .await
                .ok()
                .flatten()
                .as_ref()
                != Some(new_master)
            {
                lagging.push(s.to_string());
            }
        }
        let linked: Vec<Endpoint> =
            match redisio::info(&cfg.conn, new_master, "replication", t).await {
                Ok(i) => replicas(&i)
                    .into_iter()
                    .filter(|r| r.online)
                    .map(|r| r.addr)
                    .collect(),
                Err(_) => Vec::new(),
            };
        let unlinked: Vec<String> = others
            .iter()
            .filter(|r| !linked.contains(r))
            .map(|r| r.to_string())
            .collect();
        if lagging.is_empty() && unlinked.is_empty() {
            let ms = started.elapsed().as_millis() as u64;
            tracing::info!(
                sentinels = sentinels.len(),
                replicas = others.len(),
                waited_ms = ms,
                last_missing = %missing,
                "handover: every sentinel names the new master and its replicas are linked"
            );
            return format!(
                "{} sentinels name it, {} replicas linked after {ms} ms",
                sentinels.len(),
                others.len()
            );
        }
        missing = format!(
            "sentinels not yet naming it: [{}]; replicas not yet linked: [{}]",
            lagging.join(","),
            unlinked.join(",")
        );
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!(missing = %missing, "handover: budget spent before the cluster settled; stopping anyway");
    format!("budget spent: {missing}")
}

/// Logs what `relay::repoint` did for the handover.
fn repointed(lines: Vec<String>, new_master: &Endpoint) {
    if !lines.is_empty() {
        tracing::info!(new_master = %new_master, replicas = %lines.join(", "), "handover: re-pointed the caught-up replicas at the new master");
    }
}

/// How long the old master may stay paused after the promotion for the sentinels' answers to
/// catch up: Sentinel's failover leader names the new master in `SENTINEL MASTERS` only when its
/// failover ends (one or two of its fixed once-a-second INFO rounds), the others when its hello
/// reaches them. Past this the handover demotes anyway, trading a few READONLY rounds for a
/// shorter write gap (measured: with our leaving sentinel forgetting the group, the others name the
/// new master within this in most stops); a replica that is gone but not yet flagged down would hold the leader's
/// failover open until failover-timeout.
const CLIENTS_TOLD_CAP: Duration = Duration::from_millis(1500);

/// What `clients_told` saw.
struct Told {
    seen: String,
    /// Our leaving sentinel forgot the group (`SENTINEL REMOVE`).
    forgot: bool,
    /// The other sentinels that were up.
    peers: Vec<Endpoint>,
}

/// Waits until every reachable sentinel answers `SENTINEL MASTER` (the entry `SENTINEL MASTERS`
/// lists, which is what redis-py, Jedis and go-redis read; `GET-MASTER-ADDR-BY-NAME` names the
/// promoted replica earlier on the leader) with `new_master`, or until the cap.
///
/// Our sentinel leads the failover and names the new master there last, when its failover ends
/// (its INFO of every re-pointed replica, up to a second or two). On the SIGTERM path it stops
/// with this pod moments later anyway, so once every other sentinel names the new master (they
/// took the leader's new configuration from its hello: no second failover can follow) it forgets
/// the group: clients that ask it first find no entry and ask the next sentinel at once.
async fn clients_told(cfg: &Config, plan: &Plan, new_master: &Endpoint, deadline: Instant) -> Told {
    let t = Duration::from_millis(300);
    let started = Instant::now();
    let until = deadline.min(started + CLIENTS_TOLD_CAP);
    let own = &plan.own_sentinel(cfg);
    let peers = match redisio::up_sentinels(&cfg.conn, own, &cfg.group, t).await {
        Ok((up, _)) => up,
        Err(_) => Vec::new(),
    };
    let mut pending: Vec<Endpoint> = std::iter::once(own.clone())
        .chain(peers.iter().cloned())
        .collect();
    let told = |seen: String, forgot: bool, peers: &[Endpoint]| Told {
        seen,
        forgot,
        peers: peers.to_vec(),
    };
    loop {
        let mut set = tokio::task::JoinSet::new();
        for s in pending.iter().cloned() {
            let conn = cfg.conn.clone();
            let group = cfg.group.clone();
            set.spawn(async move {
                let entry = redisio::sentinel_master(&conn, &s, &group, t).await;
                (s, entry)
            });
        }
        let mut still = Vec::new();
        while let Some(joined) = set.join_next().await {
            let Ok((s, entry)) = joined else { continue };
            match entry {
                Ok(Some(e)) if &e.addr == new_master => {}
                // A sentinel that does not answer is not asked by clients either.
                Err(_) => {}
                _ => still.push(s),
            }
        }
        pending = still;
        let ms = started.elapsed().as_millis() as u64;
        if pending.is_empty() {
            return told(
                format!("every sentinel names it after {ms} ms"),
                false,
                &peers,
            );
        }
        if plan.leaving && !peers.is_empty() && pending.as_slice() == std::slice::from_ref(own) {
            // The next start reads what this pod knew from sentinel.conf, which loses its
            // monitor line here: it is kept aside first, or the group is not forgotten.
            if let Err(e) = crate::state::keep_before_forget(cfg) {
                return told(
                    format!("the other sentinels name it after {ms} ms; sentinel.conf could not be kept ({e}), ours keeps the group"),
                    false,
                    &peers,
                );
            }
            return match redisio::sentinel_group_cmd(&cfg.conn, own, "REMOVE", &cfg.group, t).await {
                Ok(()) => told(
                    format!("the other sentinels name it after {ms} ms; ours, which stops with this pod, forgot the group"),
                    true,
                    &peers,
                ),
                Err(e) => told(format!("the other sentinels name it after {ms} ms; ours could not forget the group: {e}"), false, &peers),
            };
        }
        if Instant::now() >= until {
            let names: Vec<String> = pending.iter().map(|e| e.to_string()).collect();
            return told(
                format!(
                    "after {ms} ms still naming the old master: [{}]",
                    names.join(",")
                ),
                false,
                &peers,
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Why the leader must not be asked to fail `me` over now: it names another master (the
/// sentinels replaced `me` already), or a failover of `me` is deciding. None: `me` is its settled
/// master.
pub fn moved_on(me: &Endpoint, a: &crate::sentinel::Answer) -> Option<String> {
    if &a.master != me {
        Some(format!(
            "the sentinels replaced this master meanwhile: the leader names {} at epoch {}",
            a.master, a.config_epoch
        ))
    } else if a.unsettled {
        Some(format!(
            "a failover of this master is deciding (epoch {})",
            a.config_epoch
        ))
    } else {
        None
    }
}

/// `accepted` is set once Sentinel accepted the failover: from then on this node must not take
/// writes again, even if a later step fails.
async fn steps(
    cfg: &Config,
    plan: &Plan,
    deadline: Instant,
    accepted: &AtomicBool,
) -> Result<(Endpoint, Vec<Endpoint>, Option<Vec<Endpoint>>), String> {
    let me = &plan.master;
    let t = Duration::from_millis(500);
    // 1. A replica has everything the master acknowledged. Writes are paused, so the master's
    //    offset now bounds every acknowledged write; each replica is asked for its own processed
    //    offset (the master's view of it is refreshed only once a second).
    let info = redisio::info(&cfg.conn, me, "replication", t)
        .await
        .map_err(|e| format!("INFO: {e}"))?;
    let target: u64 = redisio::info_field(&info, "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .ok_or("INFO lacks master_repl_offset")?;
    let candidates: Vec<Endpoint> = replicas(&info)
        .into_iter()
        .filter(healthy)
        .map(|r| r.addr)
        .collect();
    // Every healthy replica, not just one: Sentinel picks the replica to promote by priority and
    // by the offset it cached up to 10 s ago, so it may pick any of them.
    let mut behind: Vec<&Endpoint> = candidates.iter().collect();
    let catch_started = Instant::now();
    let mut last_seen = String::new();
    loop {
        let mut still = Vec::new();
        for r in behind {
            let caught = match redisio::info(&cfg.conn, r, "replication", t).await {
                Ok(i) => {
                    let off: u64 = redisio::info_field(&i, "slave_repl_offset")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let link = redisio::info_field(&i, "master_link_status");
                    last_seen = format!("{r} offset {off} link {}", link.unwrap_or("?"));
                    off >= target && link == Some("up")
                }
                Err(e) => {
                    last_seen = format!("{r}: {e}");
                    false
                }
            };
            if !caught {
                still.push(r);
            }
        }
        behind = still;
        if behind.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let names: Vec<String> = behind.iter().map(|e| e.to_string()).collect();
            return Err(format!(
                "replicas {} did not reach the master's offset {target} in time",
                names.join(", ")
            ));
        }
        tokio::time::sleep(STEP).await;
    }
    tracing::info!(
        replicas = candidates.len(),
        offset = target,
        waited_ms = catch_started.elapsed().as_millis() as u64,
        last_behind = %last_seen,
        "handover: every healthy replica caught up; asking sentinel to fail over"
    );
    // 2. Sentinel promotes a replica (it picks the one with the largest offset). NOGOODSLAVE can
    //    be transient (Sentinel has not refreshed a replica's INFO yet): retry until the deadline.
    let mut scon = redisio::connect(&cfg.conn, &plan.sentinel, Server::Sentinel, t)
        .await
        .map_err(|e| format!("connect to sentinel {}: {e}", plan.sentinel))?;
    // The failover's epoch, for `relay`: the leader publishes it as `+new-epoch` while it
    // answers SENTINEL FAILOVER. Without it nothing is relayed (the leader's own hello follows).
    let mut epochs = redisio::sentinel_events(&cfg.conn, &plan.sentinel, "+new-epoch", t)
        .await
        .ok();
    loop {
        // SENTINEL FAILOVER fails over whatever master the leader names now: if the sentinels
        // replaced this node meanwhile, it would fail over the new master (soak seed 20261206,
        // episode 169: a replica frozen under the catch-up wait kept the pause on for 4 s; the
        // sentinels' hello PUBLISH to a paused master waits, their PINGs behind it, so they found
        // it down and failed it over; the handover then failed over the new master, and two
        // nodes took writes). Such a node has been replaced: it stays paused until redis stops.
        let named = crate::discover::ask(cfg, &plan.sentinel, &cfg.group, t)
            .await
            .map_err(|e| format!("sentinel {} before SENTINEL FAILOVER: {e}", plan.sentinel))?;
        let named = named
            .ok_or_else(|| format!("sentinel {} does not monitor the group", plan.sentinel))?;
        if let Some(why) = moved_on(me, &named) {
            accepted.store(true, Ordering::SeqCst);
            return Err(why);
        }
        match redisio::query::<()>(
            &mut scon,
            redis::cmd("SENTINEL").arg("FAILOVER").arg(&cfg.group),
            t,
        )
        .await
        {
            Ok(()) => {
                accepted.store(true, Ordering::SeqCst);
                break;
            }
            // A failover of this master started after the look above: the same as a move.
            Err(e) if e.code() == Some("INPROG") => {
                accepted.store(true, Ordering::SeqCst);
                return Err(format!(
                    "SENTINEL FAILOVER: {e}: a failover of this node is under way"
                ));
            }
            Err(e) if Instant::now() < deadline && e.code() == Some("NOGOODSLAVE") => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("SENTINEL FAILOVER: {e}")),
        }
    }
    let epoch = match epochs.as_mut() {
        Some(ev) => {
            let next = tokio::time::timeout(
                Duration::from_millis(500),
                futures_util::StreamExt::next(ev),
            );
            match next.await {
                Ok(Some(m)) => m
                    .get_payload::<String>()
                    .ok()
                    .and_then(|p| crate::sentinel::new_epoch(&p)),
                _ => None,
            }
        }
        None => None,
    };
    drop(epochs);
    // 3. The new master: the replica that now answers as master, or the one Sentinel names. The
    //    promoted replica answers as master the moment Sentinel's REPLICAOF NO ONE lands, while
    //    Sentinel names it only after its next INFO of it (up to a second later); until this
    //    node is demoted, two nodes answer as master (this one paused), so the first sign wins.
    //    Only Sentinel can have promoted one of our caught-up replicas: the companion that
    //    re-points nodes is stopped, and none of them starts as master while we serve.
    let self_addr = me.clone();
    let new_master = 'found: loop {
        for c in &candidates {
            if redisio::is_master(&cfg.conn, c, PROMOTED_CHECK).await {
                break 'found c.clone();
            }
        }
        let named = redisio::master_addr_on(&mut scon, &cfg.group, t).await;
        if let Some(e) = named.ok().flatten() {
            if e != self_addr && redisio::is_master(&cfg.conn, &e, t).await {
                break 'found e;
            }
        }
        if Instant::now() >= deadline {
            return Err("sentinel did not name a new master in time".into());
        }
        tokio::time::sleep(STEP).await;
    };
    if let Some(epoch) = epoch {
        let from = plan.own_sentinel(cfg);
        let relayed = crate::relay::tell(cfg, &from, epoch, &new_master, false).await;
        tracing::info!(new_master = %new_master, relayed = %relayed, "handover: the promotion relayed to the sentinels");
    }
    // 4. The other caught-up replicas follow the new master now: Sentinel re-points them one
    //    INFO round at a time, and its failover (and so its SENTINEL MASTERS answer) ends only
    //    once they are linked.
    repointed(
        crate::relay::repoint(cfg, &candidates, &new_master, t).await,
        &new_master,
    );
    // 5. Stay paused, and master, until the sentinels clients ask name the new master (issue
    //    30): a client told the old address meanwhile waits in the pause instead of getting
    //    READONLY, asking again and being sent back here, a failed request each round. (Demoted,
    //    this node would answer READONLY at once: redis checks that before the pause.) Only
    //    while another replica keeps the new master above min-replicas-to-write: otherwise this
    //    node is its only replica and must link at once.
    let mut peers = None;
    if candidates.len() > 1 {
        let told = clients_told(cfg, plan, &new_master, deadline).await;
        tracing::info!(new_master = %new_master, told = %told.seen, "handover: what clients read");
        peers = told.forgot.then_some(told.peers);
    }
    // 6. Become its replica now rather than when Sentinel gets round to it (seconds later), so
    //    no client can write here once the pause lifts.
    redisio::replicaof(&cfg.conn, me, &new_master, t)
        .await
        .map_err(|e| format!("REPLICAOF: {e}"))?;
    tracing::info!(new_master = %new_master, "handover: this node is now a replica of the new master");
    Ok((new_master, candidates, peers))
}

/// The data node of this pod died unexpectedly (REDISHA_DURABILITY=replicated). If it was the
/// master, it must not come back as master: with `appendfsync everysec` its AOF may lack the
/// last second of acknowledged writes, and its replicas would then resync from the shortened
/// copy and lose them too. Our own sentinel (still running) fails it over at once, to the replica
/// Sentinel ranks first (priority, then replication offset: the most advanced), and the crashed
/// node is restarted afterwards by the usual role decision, which then names the new master.
/// Returns what happened, for the log. Bounded by about 6 s in all.
pub async fn after_crash(cfg: &Config) -> String {
    let t = Duration::from_millis(500);
    let sentinel = cfg.own(Server::Sentinel);
    let me = cfg.own(Server::Redis);
    match crate::discover::ask(cfg, &sentinel, &cfg.group, t).await {
        Ok(Some(a)) if a.master == me && !a.unsettled => {}
        Ok(Some(a)) if a.master == me => return "a failover of it is already deciding".into(),
        Ok(Some(_)) => return "it was a replica: restart in place".into(),
        _ => return "our sentinel does not answer: restart in place".into(),
    }
    let started = Instant::now();
    // NOGOODSLAVE while Sentinel's view of the replicas is not fresh (it refreshes every second):
    // a little patience, then restart in place (no replica could have had the data anyway).
    let ask_until = started + Duration::from_millis(2500);
    let mut scon = match redisio::connect(&cfg.conn, &sentinel, Server::Sentinel, t).await {
        Ok(c) => c,
        Err(e) => return format!("cannot reach our sentinel ({e}): restart in place"),
    };
    loop {
        match redisio::query::<()>(
            &mut scon,
            redis::cmd("SENTINEL").arg("FAILOVER").arg(&cfg.group),
            t,
        )
        .await
        {
            Ok(()) => break,
            Err(e) if e.code() == Some("INPROG") => break,
            Err(e) if e.code() == Some("NOGOODSLAVE") && Instant::now() < ask_until => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                return format!(
                    "SENTINEL FAILOVER: {e}: no replica can take over, restart in place"
                )
            }
        }
    }
    let wait_until = Instant::now() + Duration::from_millis(4000);
    let new_master = loop {
        if let Ok(Some(m)) = redisio::master_addr(&cfg.conn, &sentinel, &cfg.group, t).await {
            if m != me && redisio::is_master(&cfg.conn, &m, t).await {
                break m;
            }
        }
        if Instant::now() >= wait_until {
            return "the failover did not finish in 4 s; the role decision waits for the sentinels"
                .into();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let promoted_ms = started.elapsed().as_millis();
    let ended = hide_old_master_until_end(cfg, &mut scon, t).await;
    format!("failed over to {new_master} in {promoted_ms} ms; {ended}")
}

/// Down-after used while our sentinel, the failover's leader, still lists the crashed master.
const HIDE_DOWN_AFTER_MS: u64 = 200;

/// Our sentinel leads the failover, and until it ends (one to two of Sentinel's fixed
/// once-a-second INFO rounds after the promotion) `SENTINEL MASTERS` on it still names the crashed
/// node, while `GET-MASTER-ADDR-BY-NAME` and every other sentinel already name the new master.
/// Sentinel clients (redis-py, Jedis, go-redis) ask `SENTINEL MASTERS` and take the first sentinel
/// whose entry is neither s_down nor o_down, so they keep dialling the dead address for up to
/// another second. A short down-after flags that entry s_down within a few pings (the node is
/// dead: no reply since before the crash), so clients skip this sentinel and ask the next one.
/// The configured value is set back once the failover ends, and in any case after 6 s; a pod
/// restart renders it afresh. Set only after the promotion: replicas and peers inherit the
/// value, and an s_down replica cannot be chosen while Sentinel selects one.
async fn hide_old_master_until_end(
    cfg: &Config,
    scon: &mut redis::aio::MultiplexedConnection,
    t: Duration,
) -> String {
    const OPTION: &str = "down-after-milliseconds";
    if let Err(e) = redisio::sentinel_set_on(scon, &cfg.group, OPTION, HIDE_DOWN_AFTER_MS, t).await
    {
        return format!("could not shorten down-after ({e})");
    }
    let started = Instant::now();
    let until = started + Duration::from_millis(6000);
    let mut ended = false;
    while Instant::now() < until {
        // SENTINEL MASTER's own flags: the raw entry, not discover's judgement of it.
        if let Ok(Some(e)) = redisio::sentinel_master_on(scon, &cfg.group, t).await {
            if !e.flags.has(Flag::FailoverInProgress) {
                ended = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waited = started.elapsed().as_millis();
    // Restoring matters more than the wait: a 200 ms down-after on a healthy master would flag
    // it s_down at the first slow reply.
    let mut restored = Err(String::new());
    for _ in 0..5 {
        match redisio::sentinel_set_on(scon, &cfg.group, OPTION, cfg.down_after_ms, t).await {
            Ok(()) => {
                restored = Ok(());
                break;
            }
            Err(e) => restored = Err(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Err(e) = restored {
        tracing::error!(error = %e, down_after_ms = cfg.down_after_ms, "could not restore our sentinel's down-after; a pod restart renders it again");
    }
    if ended {
        format!("our sentinel ended the failover {waited} ms later")
    } else {
        format!("our sentinel had not ended the failover after {waited} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_is_asked_only_while_it_names_this_master_settled() {
        use crate::sentinel::fixtures::{ans, ep};
        let me = ep("10.0.0.1:6379");
        // (the leader's answer, asked?)
        let rows = [
            (ans("10.0.0.1:6379", 5, false), true),
            // soak episode 169: the sentinels failed this node over during the catch-up wait
            (ans("10.0.0.2:6379", 6, false), false),
            // a failover of this node is deciding (o_down, or promoting)
            (ans("10.0.0.1:6379", 5, true), false),
            (ans("10.0.0.2:6379", 6, true), false),
        ];
        for (i, (a, asked)) in rows.iter().enumerate() {
            assert_eq!(moved_on(&me, a).is_none(), *asked, "row {i}");
        }
    }

    fn cand(n: u8, priority: u32, uptime_s: u64) -> Candidate {
        Candidate {
            addr: Endpoint::from_fields(&format!("10.0.0.{n}"), "6379").expect("endpoint"),
            priority,
            uptime_s,
        }
    }

    #[test]
    fn prefers_the_replica_the_rollout_replaced() {
        // (candidates, the address expected, why)
        let rows: Vec<(Vec<Candidate>, Option<u8>, &str)> = vec![
            (
                vec![cand(2, 100, 20), cand(0, 100, 9000)],
                Some(2),
                "one replaced, one not",
            ),
            (
                vec![cand(1, 100, 15), cand(2, 100, 40)],
                Some(1),
                "both replaced: the youngest",
            ),
            (
                vec![cand(0, 100, 9000), cand(1, 100, 9000)],
                None,
                "started in the same second: Sentinel chooses",
            ),
            (
                vec![cand(0, 100, 8), cand(2, 100, 4)],
                Some(2),
                "a test's short lives: still the one started last",
            ),
            (
                vec![cand(2, 200, 20), cand(0, 100, 9000)],
                None,
                "the version rule ranks the young one behind",
            ),
            (
                vec![cand(2, 100, 20), cand(0, 0, 9000)],
                None,
                "the only promotable one: nothing to steer",
            ),
            (
                vec![cand(2, 1, 20), cand(0, 1, 9000)],
                None,
                "no room below priority 1",
            ),
            (vec![cand(2, 100, 20)], None, "a single replica"),
        ];
        for (cands, want, why) in rows {
            let got = prefer(&cands).map(|c| c.addr.to_string());
            let want = want.map(|n| format!("10.0.0.{n}:6379"));
            assert_eq!(got, want, "{why}");
        }
    }
}
