//! Prometheus metrics of what PID 1 does (issue 33): `GET /metrics` on `REDISHA_METRICS_PORT`.
//!
//! Everything is a static of plain atomics, set by one-line hooks where the supervisor and its
//! companion already learn a value (a handover's outcome, an exit, a fence, the offset
//! recorder's `INFO replication` each second, our sentinel's answer after each of its events).
//! Nothing here polls. Two gauges need a fresh read and get it only when scraped: failover-safe
//! (the readiness judge, probe.rs, over our own sentinel's `SENTINEL MASTER/SENTINELS/REPLICAS`)
//! and TILT (`INFO sentinel` on the same connection): a handful of loopback queries per scrape,
//! less than the exec probe the kubelet already forks every few seconds.
//!
//! The responder is a bare HTTP/1.0 one on PID 1's runtime, one connection at a time, each
//! bounded in size and time: a metrics crate and an HTTP server would cost PID 1 more text (and
//! so resident memory) than the whole of this file.
//!
//! Counters survive a restart of PID 1 with the state directory (`<state>/metrics-counters`,
//! written at exit, read at start): the events that end a pod (its handover, a spent restart
//! budget) would otherwise never be scraped.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::config::{Config, Server};
use crate::supervise::policy::Exit;

type Counter = AtomicU64;

pub static FAILOVERS: Counter = AtomicU64::new(0);
/// done, skipped, failed.
pub static HANDOVERS: [Counter; 3] = [const { AtomicU64::new(0) }; 3];
/// stall, vote.
pub static FENCES: [Counter; 2] = [const { AtomicU64::new(0) }; 2];
pub static PAUSED_MS: Counter = AtomicU64::new(0);
pub static SENTINEL_RESETS: Counter = AtomicU64::new(0);
pub static STALE_SENTINEL_REPAIRS: Counter = AtomicU64::new(0);
/// [child][reason]: redis, sentinel × exit, signal, oom.
static RESTARTS: [[Counter; 3]; 2] = [const { [const { AtomicU64::new(0) }; 3] }; 2];
static OOM_KILLS: [Counter; 2] = [const { AtomicU64::new(0) }; 2];
/// An OOM kill noted for the exit being handled: the restart that follows is counted as one.
static OOM_PENDING: [AtomicBool; 2] = [const { AtomicBool::new(false) }; 2];
static BUDGET_SPENT: [Counter; 2] = [const { AtomicU64::new(0) }; 2];
/// Handover durations: bucket counts (non-cumulative), sum in ms, count.
const BUCKETS_S: [f64; 7] = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0];
static HANDOVER_BUCKETS: [Counter; 8] = [const { AtomicU64::new(0) }; 8];
static HANDOVER_SUM_MS: Counter = AtomicU64::new(0);

/// The data node as the offset recorder last saw it: 0 unknown or down, 1 master, 2 replica.
static ROLE: AtomicU8 = AtomicU8::new(0);
/// Replica: link up 1/0; master or unknown: -1 (not exported).
static LINK_UP: AtomicI64 = AtomicI64::new(-1);
/// Master: the largest lag of its online replicas in bytes; replica or unknown: -1.
static LAG_BYTES: AtomicI64 = AtomicI64::new(-1);
/// Master with enough good replicas for `min-replicas-to-write`.
static WRITABLE: AtomicBool = AtomicBool::new(false);
/// Our fence holds the data node's writes.
static PAUSED: AtomicBool = AtomicBool::new(false);
/// Our sentinel's config epoch; u64::MAX until it first answered.
static EPOCH: AtomicU64 = AtomicU64::new(u64::MAX);
/// The master our sentinel names (what our data node follows); empty when none.
static MASTER: Mutex<String> = Mutex::new(String::new());
static MIN_REPLICAS: AtomicU64 = AtomicU64::new(0);
static HANDOVER_START: Mutex<Option<Instant>> = Mutex::new(None);

fn started() -> &'static (Instant, f64) {
    static S: OnceLock<(Instant, f64)> = OnceLock::new();
    S.get_or_init(|| {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        (Instant::now(), unix)
    })
}

fn inc(c: &Counter) {
    c.fetch_add(1, Relaxed);
}

fn child(which: Server) -> usize {
    match which {
        Server::Redis => 0,
        Server::Sentinel => 1,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    Stall,
    Vote,
}

// ---- hooks -------------------------------------------------------------------------------

pub fn sentinel_reset() {
    inc(&SENTINEL_RESETS);
}

pub fn stale_sentinel_repaired() {
    inc(&STALE_SENTINEL_REPAIRS);
}

pub fn handover_started() {
    if let Ok(mut s) = HANDOVER_START.lock() {
        *s = Some(Instant::now());
    }
}

pub fn handover_done(o: &crate::handover::Outcome) {
    use crate::handover::Outcome;
    let i = match o {
        Outcome::Done { .. } => 0,
        Outcome::Skipped(_) => 1,
        Outcome::Failed(_) => 2,
    };
    inc(&HANDOVERS[i]);
    let took = HANDOVER_START.lock().ok().and_then(|mut s| s.take());
    if let Some(t) = took {
        let d = t.elapsed();
        let b = BUCKETS_S
            .iter()
            .position(|&b| d.as_secs_f64() <= b)
            .unwrap_or(BUCKETS_S.len());
        inc(&HANDOVER_BUCKETS[b]);
        HANDOVER_SUM_MS.fetch_add(d.as_millis() as u64, Relaxed);
    }
}

/// An unexpected exit (or a failed start) that will be restarted; an OOM kill noted just before
/// for this child is its reason.
pub fn restart(which: Server, how: Exit) {
    let oom = OOM_PENDING[child(which)].swap(false, Relaxed);
    let reason = match how {
        _ if oom => 2,
        Exit::Code(_) => 0,
        Exit::Signal(_) => 1,
    };
    inc(&RESTARTS[child(which)][reason]);
}

pub fn oom_kill(which: Server) {
    inc(&OOM_KILLS[child(which)]);
    OOM_PENDING[child(which)].store(true, Relaxed);
}

pub fn budget_spent(which: Server) {
    inc(&BUDGET_SPENT[child(which)]);
}

/// Our sentinel's answer, wherever the companion got one: the epoch, the master it names, and a
/// failover observed when the epoch rose.
pub fn own_sentinel(a: Option<&crate::sentinel::Answer>) {
    let Some(a) = a else {
        return;
    };
    let before = EPOCH.swap(a.config_epoch, Relaxed);
    if before != u64::MAX && a.config_epoch > before {
        inc(&FAILOVERS);
    }
    if let Ok(mut m) = MASTER.lock() {
        let now = a.master.to_string();
        if *m != now {
            *m = now;
        }
    }
}

/// The offset recorder's `INFO replication` of our data node, or None when it did not answer.
pub fn replication(info: Option<&str>) {
    let r = info.map(parse_replication).unwrap_or_default();
    ROLE.store(r.role, Relaxed);
    LINK_UP.store(r.link_up, Relaxed);
    LAG_BYTES.store(r.lag, Relaxed);
    let min = MIN_REPLICAS.load(Relaxed);
    WRITABLE.store(r.role == 1 && r.good.map_or(true, |g| g >= min), Relaxed);
}

/// Writes paused by our fence: counted, and the pause timed until the guard is dropped (also
/// when the fence's task is aborted).
pub struct Fenced(Instant);

impl Fenced {
    pub fn begin(kind: Fence) -> Fenced {
        inc(&FENCES[kind as usize]);
        PAUSED.store(true, Relaxed);
        Fenced(Instant::now())
    }
}

impl Drop for Fenced {
    fn drop(&mut self) {
        PAUSED.store(false, Relaxed);
        PAUSED_MS.fetch_add(self.0.elapsed().as_millis() as u64, Relaxed);
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct ReplView {
    role: u8,
    link_up: i64,
    lag: i64,
    good: Option<u64>,
}

fn parse_replication(info: &str) -> ReplView {
    let f = |k| crate::redisio::info_field(info, k);
    let offset = f("master_repl_offset").and_then(|v| v.parse::<i64>().ok());
    match f("role") {
        Some("master") => {
            // slaveN:ip=..,port=..,state=online,offset=..,lag=..
            let lag = info
                .lines()
                .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                .filter_map(|l| {
                    l.split(',')
                        .find_map(|kv| kv.strip_prefix("offset="))
                        .and_then(|v| v.parse::<i64>().ok())
                })
                .map(|o| offset.unwrap_or(0).saturating_sub(o).max(0))
                .max()
                .unwrap_or(0);
            ReplView {
                role: 1,
                link_up: -1,
                lag,
                good: f("min_slaves_good_slaves").and_then(|v| v.parse().ok()),
            }
        }
        Some("slave") => ReplView {
            role: 2,
            link_up: i64::from(f("master_link_status") == Some("up")),
            lag: -1,
            good: None,
        },
        _ => ReplView {
            role: 0,
            link_up: -1,
            lag: -1,
            good: None,
        },
    }
}

// ---- persistence of the counters across restarts of PID 1 --------------------------------

fn counters_path(cfg: &Config) -> PathBuf {
    cfg.state_dir.join("metrics-counters")
}

fn all_counters() -> Vec<(String, &'static Counter)> {
    let mut v: Vec<(String, &'static Counter)> = vec![
        ("failovers".into(), &FAILOVERS),
        ("paused_ms".into(), &PAUSED_MS),
        ("sentinel_resets".into(), &SENTINEL_RESETS),
        ("stale_sentinel_repairs".into(), &STALE_SENTINEL_REPAIRS),
        ("handover_sum_ms".into(), &HANDOVER_SUM_MS),
    ];
    for (i, o) in OUTCOMES.iter().enumerate() {
        v.push((format!("handovers_{o}"), &HANDOVERS[i]));
    }
    for (i, k) in FENCE_KINDS.iter().enumerate() {
        v.push((format!("fences_{k}"), &FENCES[i]));
    }
    for (i, b) in HANDOVER_BUCKETS.iter().enumerate() {
        v.push((format!("handover_bucket_{i}"), b));
    }
    for (c, name) in CHILDREN.iter().enumerate() {
        for (r, reason) in REASONS.iter().enumerate() {
            v.push((format!("restarts_{name}_{reason}"), &RESTARTS[c][r]));
        }
        v.push((format!("oom_kills_{name}"), &OOM_KILLS[c]));
        v.push((format!("budget_spent_{name}"), &BUDGET_SPENT[c]));
    }
    v
}

/// At start: the counters the previous PID 1 of this pod saved, and what the scrape needs of
/// the configuration. A missing or unreadable file starts from zero.
pub fn load(cfg: &Config) {
    started();
    MIN_REPLICAS.store(u64::from(cfg.min_replicas_to_write), Relaxed);
    let Ok(text) = std::fs::read_to_string(counters_path(cfg)) else {
        return;
    };
    let all = all_counters();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        if let (Some(k), Some(Ok(n))) = (w.next(), w.next().map(str::parse::<u64>)) {
            if let Some((_, c)) = all.iter().find(|(name, _)| name == k) {
                c.store(n, Relaxed);
            }
        }
    }
}

/// At exit (and only with the endpoint on): the counters for the next PID 1 of this pod.
pub fn save(cfg: &Config) {
    if cfg.metrics_port.is_none() {
        return;
    }
    let mut text = String::new();
    for (k, c) in all_counters() {
        let _ = writeln!(text, "{k} {}", c.load(Relaxed));
    }
    if let Err(e) = crate::state::write_conf(&counters_path(cfg), &text) {
        tracing::warn!(error = %e, "cannot save the metrics counters in the state directory");
    }
}

/// The `switchover` command run inside a pod (`kubectl exec`: MY_POD_IP set) leaves one line per
/// run in that pod's state directory; its PID 1 counts them when scraped. Nothing from a laptop.
pub fn record_switchover(cfg: &Config, code: i32) {
    use std::io::Write;
    let outcome = match code {
        0 => "done",
        crate::exit::NOT_SAFE | crate::exit::IN_PROGRESS | crate::exit::BAD_CANDIDATE => "refused",
        _ => "failed",
    };
    if cfg.pod_ip.is_none() || !cfg.state_dir.is_dir() {
        return;
    }
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(cfg.state_dir.join("switchovers"));
    if let Ok(mut f) = f {
        let _ = writeln!(f, "{outcome}");
    }
}

fn switchovers(cfg: &Config) -> [u64; 3] {
    let mut n = [0; 3];
    let Ok(f) = std::fs::File::open(cfg.state_dir.join("switchovers")) else {
        return n;
    };
    let mut text = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::Read::take(f, 1 << 20), &mut text);
    for l in text.lines() {
        if let Some(i) = SWITCHOVER_OUTCOMES.iter().position(|o| *o == l) {
            n[i] += 1;
        }
    }
    n
}

// ---- the exposition ------------------------------------------------------------------------

const OUTCOMES: [&str; 3] = ["done", "skipped", "failed"];
const SWITCHOVER_OUTCOMES: [&str; 3] = ["done", "refused", "failed"];
const FENCE_KINDS: [&str; 2] = ["stall", "vote"];
const CHILDREN: [&str; 2] = ["redis", "sentinel"];
const REASONS: [&str; 3] = ["exit", "signal", "oom"];

/// What the scrape reads fresh from our sentinel.
#[derive(Debug, Default)]
pub struct Fresh {
    pub sentinel_up: bool,
    pub failover_safe: bool,
    pub tilt: Option<bool>,
    pub rss_bytes: Option<u64>,
    pub switchovers: [u64; 3],
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn one(out: &mut String, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
    head(out, name, kind, help);
    let _ = writeln!(out, "{name} {v}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn b(v: bool) -> u8 {
    u8::from(v)
}

/// The text exposition (format 0.0.4) of the statics and a fresh look.
pub fn render(fresh: &Fresh) -> String {
    let mut o = String::with_capacity(6 * 1024);
    let (t0, unix0) = *started();
    let _ = writeln!(
        o,
        "# HELP redisha_build_info The redisha-init version serving.\n# TYPE redisha_build_info gauge\nredisha_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    head(
        &mut o,
        "redisha_role",
        "gauge",
        "The data node's role as it last answered (1 for the current one; both 0 while it does not answer).",
    );
    let role = ROLE.load(Relaxed);
    let _ = writeln!(o, "redisha_role{{role=\"master\"}} {}", b(role == 1));
    let _ = writeln!(o, "redisha_role{{role=\"replica\"}} {}", b(role == 2));
    one(
        &mut o,
        "redisha_writable",
        "gauge",
        "1 when the data node is a master that acknowledges writes: enough good replicas for min-replicas-to-write and no write fence.",
        b(WRITABLE.load(Relaxed) && !PAUSED.load(Relaxed) && role == 1),
    );
    let link = LINK_UP.load(Relaxed);
    if link >= 0 {
        one(
            &mut o,
            "redisha_replication_link_up",
            "gauge",
            "On a replica: 1 when its link to the master is up.",
            link,
        );
    }
    let lag = LAG_BYTES.load(Relaxed);
    if lag >= 0 {
        one(
            &mut o,
            "redisha_replication_lag_bytes",
            "gauge",
            "On a master: bytes of its replication stream its furthest online replica has not acknowledged.",
            lag,
        );
    }
    let epoch = EPOCH.load(Relaxed);
    let master = MASTER.lock().map(|m| m.clone()).unwrap_or_default();
    one(
        &mut o,
        "redisha_master_named",
        "gauge",
        "1 when this pod's sentinel has named a master for the group.",
        b(!master.is_empty()),
    );
    if !master.is_empty() {
        head(
            &mut o,
            "redisha_master_info",
            "gauge",
            "The master this pod's sentinel names, which its data node follows (address as a label).",
        );
        let _ = writeln!(o, "redisha_master_info{{master=\"{}\"}} 1", escape(&master));
    }
    if epoch != u64::MAX {
        one(
            &mut o,
            "redisha_config_epoch",
            "gauge",
            "The config epoch of this pod's sentinel for the group.",
            epoch,
        );
    }
    one(
        &mut o,
        "redisha_sentinel_up",
        "gauge",
        "1 when this pod's sentinel answered the scrape.",
        b(fresh.sentinel_up),
    );
    one(
        &mut o,
        "redisha_failover_safe",
        "gauge",
        "1 when this pod's sentinel could fail the master over now (the readiness probe's judge).",
        b(fresh.failover_safe),
    );
    if let Some(t) = fresh.tilt {
        one(
            &mut o,
            "redisha_sentinel_tilt",
            "gauge",
            "1 while this pod's sentinel is in TILT mode (acts on nothing).",
            b(t),
        );
    }
    one(
        &mut o,
        "redisha_failovers_total",
        "counter",
        "Failovers observed: rises of this pod's sentinel's config epoch.",
        FAILOVERS.load(Relaxed),
    );
    head(
        &mut o,
        "redisha_handovers_total",
        "counter",
        "Handovers of the master role at a graceful stop, by outcome.",
    );
    for (i, k) in OUTCOMES.iter().enumerate() {
        let _ = writeln!(
            o,
            "redisha_handovers_total{{outcome=\"{k}\"}} {}",
            HANDOVERS[i].load(Relaxed)
        );
    }
    head(
        &mut o,
        "redisha_handover_duration_seconds",
        "histogram",
        "Time from the start of a handover to its outcome.",
    );
    let mut cum = 0;
    for (i, c) in HANDOVER_BUCKETS.iter().enumerate() {
        cum += c.load(Relaxed);
        let le = BUCKETS_S
            .get(i)
            .map_or("+Inf".to_string(), |b| b.to_string());
        let _ = writeln!(
            o,
            "redisha_handover_duration_seconds_bucket{{le=\"{le}\"}} {cum}"
        );
    }
    let _ = writeln!(
        o,
        "redisha_handover_duration_seconds_sum {}\nredisha_handover_duration_seconds_count {cum}",
        HANDOVER_SUM_MS.load(Relaxed) as f64 / 1000.0
    );
    head(
        &mut o,
        "redisha_switchovers_total",
        "counter",
        "Runs of `redisha-init switchover` inside this pod, by outcome.",
    );
    for (i, k) in SWITCHOVER_OUTCOMES.iter().enumerate() {
        let _ = writeln!(
            o,
            "redisha_switchovers_total{{outcome=\"{k}\"}} {}",
            fresh.switchovers[i]
        );
    }
    head(
        &mut o,
        "redisha_write_fences_total",
        "counter",
        "Write fences on this pod's data node (CLIENT PAUSE WRITE), by cause: a stall of the pod, or a vote on its failover.",
    );
    for (i, k) in FENCE_KINDS.iter().enumerate() {
        let _ = writeln!(
            o,
            "redisha_write_fences_total{{kind=\"{k}\"}} {}",
            FENCES[i].load(Relaxed)
        );
    }
    one(
        &mut o,
        "redisha_write_fence_paused_seconds_total",
        "counter",
        "Time this pod's data node had its writes paused by a fence.",
        PAUSED_MS.load(Relaxed) as f64 / 1000.0,
    );
    one(
        &mut o,
        "redisha_sentinel_resets_total",
        "counter",
        "SENTINEL RESETs of this pod's sentinel by the stale-entry cleanup.",
        SENTINEL_RESETS.load(Relaxed),
    );
    one(
        &mut o,
        "redisha_stale_sentinel_repairs_total",
        "counter",
        "Restarts of this pod's sentinel because it alone named another master than the majority.",
        STALE_SENTINEL_REPAIRS.load(Relaxed),
    );
    head(
        &mut o,
        "redisha_child_restarts_total",
        "counter",
        "Restarts of a child after an unexpected exit, by child and reason (exit: a status or a failed start; signal; oom: the kernel's OOM killer).",
    );
    for (c, name) in CHILDREN.iter().enumerate() {
        for (r, reason) in REASONS.iter().enumerate() {
            let _ = writeln!(
                o,
                "redisha_child_restarts_total{{child=\"{name}\",reason=\"{reason}\"}} {}",
                RESTARTS[c][r].load(Relaxed)
            );
        }
    }
    head(
        &mut o,
        "redisha_oom_kills_total",
        "counter",
        "Children killed by the kernel's OOM killer (the container's memory limit).",
    );
    for (c, name) in CHILDREN.iter().enumerate() {
        let _ = writeln!(
            o,
            "redisha_oom_kills_total{{child=\"{name}\"}} {}",
            OOM_KILLS[c].load(Relaxed)
        );
    }
    head(
        &mut o,
        "redisha_restart_budget_spent_total",
        "counter",
        "Times a child used up its restart budget, which stops the pod.",
    );
    for (c, name) in CHILDREN.iter().enumerate() {
        let _ = writeln!(
            o,
            "redisha_restart_budget_spent_total{{child=\"{name}\"}} {}",
            BUDGET_SPENT[c].load(Relaxed)
        );
    }
    if let Some(rss) = fresh.rss_bytes {
        one(
            &mut o,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of PID 1 (redisha-init itself, not its children).",
            rss,
        );
    }
    one(
        &mut o,
        "process_start_time_seconds",
        "gauge",
        "Start time of PID 1 since the Unix epoch.",
        unix0.floor(),
    );
    one(
        &mut o,
        "redisha_uptime_seconds",
        "gauge",
        "Time since PID 1 started.",
        format_args!("{:.3}", t0.elapsed().as_secs_f64()),
    );
    o
}

// ---- I/O: the scrape-time look and the responder -------------------------------------------

fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

async fn fresh(cfg: &Config) -> Fresh {
    let t = Duration::from_millis(300);
    let mut f = Fresh {
        rss_bytes: rss_bytes(),
        switchovers: switchovers(cfg),
        ..Fresh::default()
    };
    let local = cfg.own(Server::Sentinel);
    let look = async {
        let mut con = crate::redisio::connect(&cfg.conn, &local, Server::Sentinel, t).await?;
        let info: String =
            crate::redisio::query(&mut con, redis::cmd("INFO").arg("sentinel"), t).await?;
        let tilt = crate::redisio::info_field(&info, "sentinel_tilt").map(|v| v == "1");
        let safe = crate::probe::safety(cfg, &mut con, t)
            .await
            .is_ok_and(|s| s.names_master && crate::probe::failover_safe(&s).is_ok());
        Ok::<_, redis::RedisError>((tilt, safe))
    };
    if let Ok(Ok((tilt, safe))) = tokio::time::timeout(Duration::from_secs(1), look).await {
        f.sentinel_up = true;
        f.tilt = tilt;
        f.failover_safe = safe;
    }
    f
}

/// Binds the endpoint: every address of a pod (`[::]`, or `0.0.0.0` where IPv6 is off), only
/// loopback in local mode, like the servers.
pub fn bind(cfg: &Config) -> std::io::Result<Option<std::net::TcpListener>> {
    let Some(port) = cfg.metrics_port else {
        return Ok(None);
    };
    started();
    let l = if cfg.pod_ip.is_some() {
        std::net::TcpListener::bind(("::", port))
            .or_else(|_| std::net::TcpListener::bind(("0.0.0.0", port)))?
    } else {
        std::net::TcpListener::bind(("127.0.0.1", port))?
    };
    l.set_nonblocking(true)?;
    Ok(Some(l))
}

/// Serves scrapes for as long as PID 1 lives: one connection at a time, the request read within
/// a second (at most 2 KiB), the answer written within a second.
pub async fn serve(cfg: Config, l: std::net::TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(l) = tokio::net::TcpListener::from_std(l) else {
        tracing::error!("metrics: cannot register the listener; no metrics");
        return;
    };
    let limit = Duration::from_secs(1);
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            // Out of descriptors and the like: do not spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut req = [0u8; 2048];
        let mut n = 0;
        let read = tokio::time::timeout(limit, async {
            while n < req.len() {
                match s.read(&mut req[n..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
                if req[..n].windows(4).any(|w| w == b"\r\n\r\n")
                    || req[..n].windows(2).any(|w| w == b"\n\n")
                {
                    break;
                }
            }
        })
        .await;
        if read.is_err() {
            continue;
        }
        let resp = respond(&req[..n], || fresh(&cfg)).await;
        let _ = tokio::time::timeout(limit, s.write_all(resp.as_bytes())).await;
        let _ = tokio::time::timeout(limit, s.shutdown()).await;
    }
}

async fn respond<F, Fut>(req: &[u8], look: F) -> String
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Fresh>,
{
    let line = req.split(|&c| c == b'\n').next().unwrap_or_default();
    let mut w = line.split(|&c| c == b' ');
    let (method, path) = (w.next().unwrap_or_default(), w.next().unwrap_or_default());
    let path = path.split(|&c| c == b'?').next().unwrap_or_default();
    let (status, ctype, body) = match (method, path) {
        (b"GET", b"/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render(&look().await),
        ),
        (b"GET", _) => (
            "404 Not Found",
            "text/plain",
            "only /metrics here\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET /metrics\n".to_string(),
        ),
    };
    format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_views() {
        let master = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nmin_slaves_good_slaves:1\r\nslave0:ip=10.0.0.2,port=6379,state=online,offset=900,lag=0\r\nslave1:ip=10.0.0.3,port=6379,state=online,offset=1000,lag=1\r\nslave2:ip=10.0.0.4,port=6379,state=wait_bgsave,offset=0,lag=0\r\nmaster_replid:abc\r\nmaster_repl_offset:1000\r\n";
        assert_eq!(
            parse_replication(master),
            ReplView {
                role: 1,
                link_up: -1,
                lag: 100,
                good: Some(1)
            }
        );
        let alone = "role:master\r\nconnected_slaves:0\r\nmaster_repl_offset:5\r\n";
        assert_eq!(parse_replication(alone).lag, 0);
        assert_eq!(parse_replication(alone).good, None);
        let up =
            "role:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\nmaster_link_status:up\r\n";
        assert_eq!(
            parse_replication(up),
            ReplView {
                role: 2,
                link_up: 1,
                lag: -1,
                good: None
            }
        );
        let down = up.replace("status:up", "status:down");
        assert_eq!(parse_replication(&down).link_up, 0);
        assert_eq!(parse_replication("garbage").role, 0);
    }

    #[test]
    fn exposition_is_well_formed_and_bounded() {
        let text = render(&Fresh {
            sentinel_up: true,
            failover_safe: true,
            tilt: Some(false),
            rss_bytes: Some(2 << 20),
            switchovers: [1, 0, 0],
        });
        let mut typed = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(typed.insert(name.to_string()), "{name} typed twice");
                continue;
            }
            if l.starts_with('#') {
                continue;
            }
            let (series, value) = l.rsplit_once(' ').expect("name value");
            assert!(value.parse::<f64>().is_ok(), "{l}");
            let name = series.split('{').next().unwrap_or_default();
            assert!(
                typed.iter().any(|t| name == t
                    || name
                        .strip_prefix(t.as_str())
                        .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))),
                "{name} has no TYPE"
            );
            if name.ends_with("_total") {
                assert!(text.contains(&format!("# TYPE {name} counter")), "{name}");
            }
        }
        assert!(text.len() < 8 * 1024, "{} bytes", text.len());
        assert!(text.contains("redisha_switchovers_total{outcome=\"done\"} 1"));
        assert!(text.contains("redisha_handover_duration_seconds_bucket{le=\"+Inf\"}"));
    }

    #[test]
    fn requests_get_one_answer_each() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let ask = |req: &'static [u8]| rt.block_on(respond(req, || async { Fresh::default() }));
        let ok = ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
        let (head, body) = ok.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(ask(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 200"));
        assert!(ask(b"GET / HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 404"));
        assert!(ask(b"POST /metrics HTTP/1.0\r\n\r\n").starts_with("HTTP/1.0 405"));
        assert!(ask(b"").starts_with("HTTP/1.0 405"));
    }
}
