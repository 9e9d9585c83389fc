//! `redisha-init switchover [--to HOST:PORT] [--timeout S]`: a planned master move, from any pod
//! or a laptop, without stopping anything. It is the SIGTERM handover (handover.rs: pause
//! writes, every healthy replica catches up, `SENTINEL FAILOVER`, every sentinel names the new
//! master, unpause) run against the master the sentinels name, through one sentinel.
//!
//! `--to`: Sentinel has no "promote this one"; it promotes the best replica by priority, so the
//! other replicas get `replica-priority 0` for the duration (a priority-0 replica is never
//! promoted) and their own values back afterwards, on success, failure, timeout and Ctrl-C alike.
//! Sentinel reads priorities from each replica's INFO (every info-period, 1 s here), so the
//! failover is asked for only once the chosen sentinel's view shows them.
//!
//! It refuses (nothing changed) when the cluster is not failover-safe, when a failover is
//! already running, or when the `--to` candidate is not a healthy replica.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Server;
use crate::config::{Config, Endpoint};
use crate::handover::{self, Outcome, Plan};
use crate::redisio;
use crate::sentinel::Flag;
use crate::status::{self, Health, NodeObs, SentinelObs, Verdict};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotSafe(String),
    InProgress(String),
    BadCandidate(String),
}

impl Refusal {
    pub fn exit_code(&self) -> i32 {
        match self {
            Refusal::NotSafe(_) => crate::exit::NOT_SAFE,
            Refusal::InProgress(_) => crate::exit::IN_PROGRESS,
            Refusal::BadCandidate(_) => crate::exit::BAD_CANDIDATE,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotSafe(w) => write!(f, "refused: the cluster is not failover-safe: {w}"),
            Refusal::InProgress(w) => write!(f, "refused: a failover is already running: {w}"),
            Refusal::BadCandidate(w) => write!(f, "refused: {w}"),
        }
    }
}

/// What the switchover will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub master: String,
    /// The sentinel asked to fail over (it leads the failover).
    pub sentinel: String,
    pub candidate: Option<String>,
    /// Replicas whose priority drops to 0 for the duration (`--to` only).
    pub others: Vec<String>,
}

/// The pure decision over one status look. `to`: the candidate (resolved to an address);
/// `prefer`: the sentinel to lead the failover if it can (this pod's own).
pub fn decide(
    sentinels: &[SentinelObs],
    nodes: &[NodeObs],
    v: &Verdict,
    to: Option<&str>,
    prefer: Option<&str>,
) -> Result<Choice, Refusal> {
    if v.failover_running {
        return Err(Refusal::InProgress(v.reasons.join("; ")));
    }
    let master = match (v.health, &v.master) {
        (Health::Split | Health::NoMaster, _) | (_, None) => {
            return Err(Refusal::NotSafe(v.reasons.join("; ")))
        }
        (_, Some(m)) => m.clone(),
    };
    if !v.failover_safe {
        return Err(Refusal::NotSafe(v.unsafe_because.join("; ")));
    }
    let usable = |s: &&SentinelObs| {
        s.can_act()
            && s.master.as_deref() == Some(master.as_str())
            && s.config_epoch == v.epoch
            && !s.sees_master_down()
    };
    let sentinel = sentinels
        .iter()
        .filter(usable)
        .find(|s| Some(s.addr.as_str()) == prefer)
        .or_else(|| sentinels.iter().find(usable))
        .ok_or_else(|| Refusal::NotSafe("no sentinel names the master and sees it up".into()))?;
    let Some(to) = to else {
        return Ok(Choice {
            master,
            sentinel: sentinel.addr.clone(),
            candidate: None,
            others: Vec::new(),
        });
    };
    let bad = |why: String| {
        Err(Refusal::BadCandidate(format!(
            "{to} is not a healthy replica: {why}"
        )))
    };
    if to == master {
        return bad("it is the master".into());
    }
    let Some(n) = nodes.iter().find(|n| n.addr == to) else {
        return bad("no data node at this address is known to the sentinels or configured".into());
    };
    if let Some(e) = &n.error {
        return bad(format!("it does not answer ({e})"));
    }
    if n.role != "replica" || n.master.as_deref() != Some(master.as_str()) {
        return bad(format!(
            "it is a {} following {}, the master is {master}",
            n.role,
            n.master.as_deref().unwrap_or("nothing")
        ));
    }
    if n.sync_in_progress || !n.link_up {
        return bad("its link to the master is not up".into());
    }
    if n.priority == Some(0) {
        return bad("its replica-priority is 0 (never promoted)".into());
    }
    let listed = nodes
        .iter()
        .find(|x| x.addr == master)
        .and_then(|m| m.replicas.iter().find(|l| l.addr == to));
    match listed {
        Some(l) if l.online && l.lag_s <= 2 => {}
        Some(l) => {
            return bad(format!(
                "the master lists it {} with lag {} s",
                if l.online { "online" } else { "not online" },
                l.lag_s
            ))
        }
        None => return bad("the master does not list it".into()),
    }
    match sentinel.replicas.iter().find(|r| r.addr == to) {
        Some(r) if status::promotable(r) => {}
        Some(r) => {
            return bad(format!(
                "sentinel {} could not promote it (flags {}, link {})",
                sentinel.addr,
                r.flags.join(","),
                if r.link_ok == Some(true) { "ok" } else { "err" }
            ))
        }
        None => return bad(format!("sentinel {} does not know it", sentinel.addr)),
    }
    // Every replica the sentinel could pick, and every replica of the master we can see.
    let mut others: Vec<String> = Vec::new();
    let replicas_seen = nodes
        .iter()
        .filter(|x| x.is_replica() && x.master.as_deref() == Some(master.as_str()))
        .map(|x| x.addr.clone())
        .chain(
            sentinel
                .replicas
                .iter()
                .filter(|r| !r.down())
                .map(|r| r.addr.clone()),
        );
    for r in replicas_seen {
        if r != to && r != master && !others.contains(&r) {
            others.push(r);
        }
    }
    Ok(Choice {
        master,
        sentinel: sentinel.addr.clone(),
        candidate: Some(to.to_string()),
        others,
    })
}

fn say(msg: impl fmt::Display) {
    let _ = writeln!(std::io::stdout(), "switchover: {msg}");
}

fn endpoint(s: &str) -> Result<Endpoint, String> {
    crate::config::parse_endpoint("address", s).map_err(|e| e.to_string())
}

async fn config_priority(
    cfg: &Config,
    node: &Endpoint,
    set: Option<&str>,
    t: Duration,
) -> Result<String, String> {
    let mut con = redisio::connect(&cfg.conn, node, Server::Redis, t)
        .await
        .map_err(|e| e.to_string())?;
    let old = redisio::config_get_on(&mut con, "replica-priority", t)
        .await
        .map_err(|e| format!("CONFIG GET replica-priority: {e}"))?
        .ok_or("CONFIG GET replica-priority: no value")?;
    if let Some(v) = set {
        redisio::config_set_on(&mut con, "replica-priority", v, t)
            .await
            .map_err(|e| format!("CONFIG SET replica-priority {v}: {e}"))?;
    }
    Ok(old)
}

/// Puts back every priority changed; each bounded, every one tried even when one fails.
async fn restore(cfg: &Config, saved: &[(Endpoint, String)]) -> bool {
    let t = Duration::from_millis(1000);
    let mut ok = true;
    for (node, old) in saved {
        // A node that just became a replica of the new master may be busy syncing for a moment.
        let mut last = String::new();
        let mut done = false;
        for _ in 0..3 {
            match config_priority(cfg, node, Some(old), t).await {
                Ok(_) => {
                    done = true;
                    break;
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if done {
            say(format_args!("restored replica-priority {old} on {node}"));
        } else {
            ok = false;
            say(format_args!(
                "could NOT restore replica-priority {old} on {node}: {last}; run: redis-cli -h {} -p {} CONFIG SET replica-priority {old}",
                node.host, node.port
            ));
        }
    }
    ok
}

/// Waits until the sentinel's view shows what the priorities now say: the others at 0, the
/// candidate promotable with a fresh INFO (Sentinel skips a replica whose INFO is older than
/// 3 × info-period).
async fn sentinel_sees(
    cfg: &Config,
    sentinel: &Endpoint,
    candidate: &str,
    others: &[String],
    until: Instant,
) -> Result<(), String> {
    let t = Duration::from_millis(500);
    let mut last;
    loop {
        match redisio::sentinel_replicas(&cfg.conn, sentinel, &cfg.group, t).await {
            Ok(list) => {
                let cand_ok = list
                    .iter()
                    .any(|r| r.addr.to_string() == candidate && r.is_promotable_now());
                let pending: Vec<String> = list
                    .iter()
                    .map(|r| (r.addr.to_string(), r.priority))
                    .filter(|(a, p)| others.contains(a) && *p != Some(0))
                    .map(|(a, _)| a)
                    .collect();
                if cand_ok && pending.is_empty() {
                    return Ok(());
                }
                last = format!(
                    "candidate promotable: {cand_ok}; priority not yet 0 in its view: [{}]",
                    pending.join(", ")
                );
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= until {
            return Err(format!(
                "sentinel {sentinel} did not see the new priorities in time ({last})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The leading sentinel's timing while the switchover runs (`SENTINEL DEBUG`), put back after.
///
/// - `info-period` 250 ms: Sentinel sees the lowered priorities only in a replica's INFO; at the
///   pods' 1 s the wait before `SENTINEL FAILOVER` was ~1 s, now ~0.25 s.
/// - `slave-reconf-timeout` 100 ms: after the promotion the leader sends `REPLICAOF` to each other
///   replica and ends its failover only once a later INFO (every 1 s during a failover, whatever
///   info-period says) shows it re-pointed. Until the end it still gives the OLD address in
///   `SENTINEL MASTERS`, which is what redis-py's Sentinel client reads: a client that asks the
///   leader first kept getting READONLY for up to another second (write gaps of 2.3 s measured).
///   With the timeout the leader counts a replica re-pointed 100 ms after sending `REPLICAOF`
///   (Sentinel's own rule for a slow replica: "Sentinels will detect the slave as misconfigured
///   and fix its configuration later"); the handover re-points and waits for every caught-up
///   replica itself anyway (handover::finish). Sentinel checks that timeout only while fewer
///   than `parallel-syncs` replicas are being reconfigured, so the leader's `parallel-syncs` is
///   raised by one for the duration too (`SENTINEL SET`, local to that sentinel).
///
/// 250 ms rather than less: Sentinel promotes only a replica whose last INFO is younger than
/// 3 × info-period, and on a loaded machine a reply can take longer than 300 ms (NOGOODSLAVE
/// while writes are paused).
const FAST_DEBUG: &[(&str, u64)] = &[("info-period", 250), ("slave-reconf-timeout", 100)];

/// `SENTINEL DEBUG` (no argument): the sentinel's current timing parameters.
async fn debug_params(
    cfg: &Config,
    sentinel: &Endpoint,
    t: Duration,
) -> Option<HashMap<String, u64>> {
    let mut con = redisio::connect(&cfg.conn, sentinel, Server::Sentinel, t)
        .await
        .ok()?;
    let v: Vec<String> = redisio::query(&mut con, redis::cmd("SENTINEL").arg("DEBUG"), t)
        .await
        .ok()?;
    Some(crate::sentinel::debug_params(&v))
}

/// The leader's `parallel-syncs` (`SENTINEL MASTER`), and a way to set it (`SENTINEL SET`).
async fn parallel_syncs(cfg: &Config, sentinel: &Endpoint, t: Duration) -> Option<u64> {
    let mut con = redisio::connect(&cfg.conn, sentinel, Server::Sentinel, t)
        .await
        .ok()?;
    redisio::sentinel_master_view_on(&mut con, &cfg.group, t)
        .await
        .ok()?
        .parallel_syncs
}

async fn set_parallel_syncs(
    cfg: &Config,
    sentinel: &Endpoint,
    n: u64,
    t: Duration,
) -> redis::RedisResult<()> {
    let mut con = redisio::connect(&cfg.conn, sentinel, Server::Sentinel, t).await?;
    redisio::sentinel_set_on(&mut con, &cfg.group, "parallel-syncs", n, t).await
}

async fn set_debug(
    cfg: &Config,
    sentinel: &Endpoint,
    params: &[(String, u64)],
    t: Duration,
) -> redis::RedisResult<()> {
    let mut con = redisio::connect(&cfg.conn, sentinel, Server::Sentinel, t).await?;
    let mut cmd = redis::cmd("SENTINEL");
    cmd.arg("DEBUG");
    for (k, v) in params {
        cmd.arg(k).arg(*v);
    }
    redisio::query(&mut con, &mut cmd, t).await
}

/// Waits until the leading sentinel's failover has ended (it has reconfigured the replicas and
/// switched its own configuration): from then on every sentinel gives the new address and a
/// next switchover is not refused as "a failover is running".
async fn failover_ended(cfg: &Config, sentinel: &Endpoint, until: Instant) -> Result<u64, String> {
    let t = Duration::from_millis(500);
    let t0 = Instant::now();
    let mut last;
    loop {
        let r = async {
            let mut con = redisio::connect(&cfg.conn, sentinel, Server::Sentinel, t).await?;
            redisio::sentinel_master_view_on(&mut con, &cfg.group, t).await
        }
        .await;
        match r {
            Ok(m) => {
                if !m.flags.has(Flag::FailoverInProgress) {
                    return Ok(t0.elapsed().as_millis() as u64);
                }
                last = m.failover_state;
            }
            Err(e) => last = e.to_string(),
        }
        if Instant::now() >= until {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Resolves `--to` (a name is looked up once, like every configured address).
async fn resolve_to(to: &str) -> Result<String, String> {
    let e = crate::config::parse_endpoint("--to", to).map_err(|e| e.to_string())?;
    let r = crate::redisio::resolved_all(std::slice::from_ref(&e)).await;
    match r.into_iter().next() {
        Some(Endpoint {
            host: crate::config::Host::Name(n),
            ..
        }) => Err(format!("--to: cannot resolve {n}")),
        Some(e) => Ok(e.to_string()),
        None => Err("--to: cannot resolve".into()),
    }
}

/// SIGINT and SIGTERM, taken over at the start so that neither can end the command between a
/// priority change and its restore.
struct Stops {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Stops {
    fn install() -> Stops {
        use tokio::signal::unix::{signal, SignalKind};
        Stops {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    async fn requested(&mut self) {
        let int = async {
            match &mut self.int {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        let term = async {
            match &mut self.term {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int => {}
            _ = term => {}
        }
    }
}

/// The command; returns the exit code.
pub async fn run(cfg: &Config, to: Option<&str>, timeout: Duration) -> i32 {
    let mut stops = Stops::install();
    let started = Instant::now();
    let deadline = started + timeout;
    let to = match to {
        Some(t) => match resolve_to(t).await {
            Ok(a) => Some(a),
            Err(e) => {
                say(e);
                return crate::exit::USAGE;
            }
        },
        None => None,
    };
    let per_server = Duration::from_millis(600);
    let (sentinels, nodes) = status::gather(cfg, per_server, per_server * 3).await;
    let v = status::verdict(&sentinels, &nodes, cfg.quorum);
    let prefer = cfg.pod_ip.map(|_| cfg.own(Server::Sentinel).to_string());
    let choice = match decide(&sentinels, &nodes, &v, to.as_deref(), prefer.as_deref()) {
        Ok(c) => c,
        Err(r) => {
            say(&r);
            return r.exit_code();
        }
    };
    let (Ok(master), Ok(sentinel)) = (endpoint(&choice.master), endpoint(&choice.sentinel)) else {
        say("refused: unexpected address in the sentinels' replies");
        return crate::exit::FAILED;
    };
    say(format_args!(
        "master {} -> {} (through sentinel {}, timeout {} s)",
        choice.master,
        choice
            .candidate
            .as_deref()
            .unwrap_or("the replica Sentinel picks"),
        choice.sentinel,
        timeout.as_secs_f64()
    ));
    let t = Duration::from_millis(500);
    // Only what we change is put back, to the values read just before.
    let restore: Vec<(String, u64)> = match debug_params(cfg, &sentinel, t).await {
        Some(now) => FAST_DEBUG
            .iter()
            .filter_map(|(k, fast)| {
                now.get(*k)
                    .filter(|v| *v > fast)
                    .map(|v| (k.to_string(), *v))
            })
            .collect(),
        None => Vec::new(),
    };
    let fast: Vec<(String, u64)> = FAST_DEBUG
        .iter()
        .filter(|(k, _)| restore.iter().any(|(r, _)| r == k))
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let restore = if fast.is_empty() {
        Vec::new()
    } else {
        match set_debug(cfg, &sentinel, &fast, t).await {
            Ok(()) => restore,
            Err(e) => {
                say(format_args!(
                    "sentinel {} keeps its timing ({e}); slower, not wrong",
                    choice.sentinel
                ));
                Vec::new()
            }
        }
    };
    let restore_syncs = match parallel_syncs(cfg, &sentinel, t).await {
        Some(n) => match set_parallel_syncs(cfg, &sentinel, n + 1, t).await {
            Ok(()) => Some(n),
            Err(e) => {
                say(format_args!(
                    "sentinel {} keeps its parallel-syncs ({e})",
                    choice.sentinel
                ));
                None
            }
        },
        None => None,
    };
    let mut code = switch(
        cfg,
        &choice,
        &sentinel,
        master,
        to.as_deref(),
        deadline,
        timeout,
        &mut stops,
    )
    .await;
    if let Some(n) = restore_syncs {
        if let Err(e) = set_parallel_syncs(cfg, &sentinel, n, t).await {
            say(format_args!(
                "could NOT put back parallel-syncs {n} on sentinel {}: {e}; run: SENTINEL SET {} parallel-syncs {n}",
                choice.sentinel, cfg.group
            ));
            code = if code == 0 { crate::exit::FAILED } else { code };
        }
    }
    if !restore.is_empty() {
        if let Err(e) = set_debug(cfg, &sentinel, &restore, t).await {
            say(format_args!(
                "could NOT put back SENTINEL DEBUG {restore:?} on sentinel {}: {e}",
                choice.sentinel
            ));
            code = if code == 0 { crate::exit::FAILED } else { code };
        }
    }
    code
}

/// Everything after the decision; the caller puts the leader's timing back.
#[allow(clippy::too_many_arguments)]
async fn switch(
    cfg: &Config,
    choice: &Choice,
    sentinel: &Endpoint,
    master: Endpoint,
    to: Option<&str>,
    deadline: Instant,
    timeout: Duration,
    stops: &mut Stops,
) -> i32 {
    let sentinel = sentinel.clone();
    // --to: the others out of the running, then wait for the sentinel to see it. Interruptible
    // (nothing is paused yet); every change is undone whatever happens.
    let mut saved: Vec<(Endpoint, String)> = Vec::new();
    let prepare = async {
        for o in &choice.others {
            let e = endpoint(o)?;
            let t = Duration::from_millis(1000);
            let old = config_priority(cfg, &e, None, t)
                .await
                .map_err(|err| format!("{o}: {err}"))?;
            // Recorded before the change: a stop that lands during CONFIG SET still restores.
            saved.push((e.clone(), old.clone()));
            config_priority(cfg, &e, Some("0"), t)
                .await
                .map_err(|err| format!("{o}: {err}"))?;
            say(format_args!("replica-priority 0 on {o} (was {old})"));
        }
        if let Some(c) = &choice.candidate {
            let until = Instant::now() + Duration::from_secs(5).min(timeout / 2);
            let t0 = Instant::now();
            sentinel_sees(cfg, &sentinel, c, &choice.others, until).await?;
            say(format_args!(
                "sentinel {} sees the new priorities after {} ms",
                choice.sentinel,
                t0.elapsed().as_millis()
            ));
        }
        Ok::<(), String>(())
    };
    let prepared = tokio::select! {
        r = prepare => r.map_err(|e| (crate::exit::FAILED, e)),
        _ = stops.requested() => Err((crate::exit::INTERRUPTED, "interrupted before the failover was asked for".to_string())),
    };
    if let Err((code, why)) = prepared {
        say(format_args!("failed: {why}; nothing was failed over"));
        restore(cfg, &saved).await;
        return code;
    }
    let plan = Plan {
        master: master.clone(),
        sentinel,
        only: to.map(endpoint).and_then(Result::ok),
        leaving: false,
    };
    let budget = deadline.saturating_duration_since(Instant::now());
    // The handover itself is not cancelled halfway (writes are paused, a failover may be under
    // way); a stop request is honoured when it returns, within --timeout.
    let handover = handover::run_on(cfg, &plan, budget);
    tokio::pin!(handover);
    let mut interrupted = false;
    let outcome = loop {
        tokio::select! {
            o = &mut handover => break o,
            _ = stops.requested(), if !interrupted => {
                interrupted = true;
                say("stop requested: finishing the handover (bounded by --timeout), then restoring");
            }
        }
    };
    let restored = restore(cfg, &saved).await;
    let code = match &outcome {
        Outcome::Done {
            new_master,
            took_ms,
            cluster,
        } => {
            let wanted = plan.only.as_ref().map_or(true, |c| c == new_master);
            if !wanted {
                say(format_args!(
                    "failed: Sentinel promoted {new_master}, not {}",
                    choice.candidate.as_deref().unwrap_or("?")
                ));
                crate::exit::FAILED
            } else if cluster.starts_with("budget spent") {
                say(format_args!(
                    "{new_master} is master after {took_ms} ms, but the cluster did not confirm it within --timeout: {cluster}"
                ));
                crate::exit::FAILED
            } else {
                match failover_ended(cfg, &plan.sentinel, deadline).await {
                    Ok(ms) => {
                        say(format_args!(
                            "done in {took_ms} ms: {new_master} is master (was {}); {cluster}; the leader's failover ended {ms} ms later",
                            choice.master
                        ));
                        0
                    }
                    Err(state) => {
                        say(format_args!(
                            "{new_master} is master after {took_ms} ms, but the leading sentinel {} had not ended its failover within --timeout ({state})",
                            plan.sentinel
                        ));
                        crate::exit::FAILED
                    }
                }
            }
        }
        Outcome::Skipped(why) => {
            say(format_args!("failed: {why}; nothing was failed over"));
            crate::exit::FAILED
        }
        Outcome::Failed(why) => {
            say(format_args!("failed: {why}"));
            crate::exit::FAILED
        }
    };
    if !restored {
        return crate::exit::FAILED;
    }
    if interrupted && code != 0 {
        return crate::exit::INTERRUPTED;
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::tests::{cluster, Shape};

    #[test]
    fn refusals_and_choices() {
        let ok = cluster(Shape::Healthy);
        let v = status::verdict(&ok.0, &ok.1, 2);
        type Row<'a> = (&'a str, Option<&'a str>, Result<(&'a str, usize), i32>);
        let rows: Vec<Row> = vec![
            ("any replica", None, Ok(("10.0.0.1:26379", 0))),
            (
                "named replica",
                Some("10.0.0.2:6379"),
                Ok(("10.0.0.1:26379", 1)),
            ),
            (
                "the master itself",
                Some("10.0.0.1:6379"),
                Err(crate::exit::BAD_CANDIDATE),
            ),
            (
                "unknown address",
                Some("10.0.0.9:6379"),
                Err(crate::exit::BAD_CANDIDATE),
            ),
        ];
        for (name, to, want) in rows {
            let got = decide(&ok.0, &ok.1, &v, to, Some("10.0.0.1:26379"));
            match (got, want) {
                (Ok(c), Ok((s, n))) => {
                    assert_eq!(c.sentinel, s, "{name}");
                    assert_eq!(c.others.len(), n, "{name}: {:?}", c.others);
                    assert_eq!(c.candidate.as_deref(), to, "{name}");
                }
                (Err(r), Err(code)) => assert_eq!(r.exit_code(), code, "{name}: {r}"),
                (g, w) => panic!("{name}: got {g:?}, want {w:?}"),
            }
        }
        // Refusals that depend on the cluster's state.
        let states: Vec<(&str, Shape, Option<&str>, i32)> = vec![
            (
                "failover running",
                Shape::FailoverRunning,
                None,
                crate::exit::IN_PROGRESS,
            ),
            ("split", Shape::TwoMasters, None, crate::exit::NOT_SAFE),
            ("no master", Shape::MasterDown, None, crate::exit::NOT_SAFE),
            (
                "no replica promotable",
                Shape::NoPromotable,
                None,
                crate::exit::NOT_SAFE,
            ),
            (
                "candidate link down",
                Shape::ReplicaLinkDown,
                Some("10.0.0.2:6379"),
                crate::exit::BAD_CANDIDATE,
            ),
            (
                "candidate priority 0",
                Shape::Priority0,
                Some("10.0.0.2:6379"),
                crate::exit::BAD_CANDIDATE,
            ),
        ];
        for (name, shape, to, code) in states {
            let (s, n) = cluster(shape);
            let v = status::verdict(&s, &n, 2);
            match decide(&s, &n, &v, to, None) {
                Err(r) => assert_eq!(r.exit_code(), code, "{name}: {r}"),
                Ok(c) => panic!("{name}: not refused: {c:?} (verdict {v:?})"),
            }
        }
    }

    #[test]
    fn prefers_own_sentinel_when_usable() {
        let (s, n) = cluster(Shape::Healthy);
        let v = status::verdict(&s, &n, 2);
        let c = decide(&s, &n, &v, None, Some("10.0.0.3:26379")).unwrap();
        assert_eq!(c.sentinel, "10.0.0.3:26379");
        let c = decide(&s, &n, &v, None, Some("10.0.0.9:26379")).unwrap();
        assert_eq!(c.sentinel, "10.0.0.1:26379");
        // A sentinel in TILT mode would accept SENTINEL FAILOVER and sit on it: never the leader.
        let (s, n) = cluster(Shape::Tilt);
        let v = status::verdict(&s, &n, 2);
        let c = decide(&s, &n, &v, None, Some("10.0.0.1:26379")).unwrap();
        assert_eq!(c.sentinel, "10.0.0.2:26379");
    }
}
