//! `redisha-init status`: one look at the whole cluster, like `patronictl list`.
//!
//! Thin I/O gathers what every sentinel and every data node says (all at once, each server
//! bounded by its own timeout, the whole look by one deadline); a pure `verdict` judges it. The
//! servers come from the pod's own configuration (the sentinels of `REDISHA_SENTINELS` /
//! `--sentinels`, the data nodes on the same hosts, this pod's own two servers) and from what
//! the servers report (the master and replicas the sentinels name, their peers, the replicas the
//! master lists), so a laptop needs only one reachable sentinel.
//!
//! Exit codes: 0 healthy, 1 degraded, 2 split or no master.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::Server;
use crate::config::{Config, Endpoint, Host};
use crate::engine::ServerVersion;
use crate::probe;
use crate::redisio;
use crate::sentinel::{self, FlagSet, PeerView, ReplicaView};

/// A replica whose last acknowledgement is older than this is lagging (Redis's `lag=` counts
/// seconds since the replica's last REPLCONF ACK, sent every second).
const MAX_LAG_S: u64 = 2;

/// One entry of `SENTINEL REPLICAS` / `SENTINEL SENTINELS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Entry {
    pub addr: String,
    pub flags: Vec<String>,
    /// Replicas: `slave-priority`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Replicas: `master-link-status` is ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_ok: Option<bool>,
    /// Sentinels: `runid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl Entry {
    pub fn down(&self) -> bool {
        FlagSet::of(&self.flags).is_down()
    }
}

/// What one sentinel said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SentinelObs {
    pub addr: String,
    /// Why it said nothing (unreachable, timeout, refused, does not know the group).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `GET-MASTER-ADDR-BY-NAME`: the promoted replica as soon as it answers as master.
    pub master: Option<String>,
    pub master_flags: Vec<String>,
    pub config_epoch: u64,
    pub failover_state: String,
    pub quorum: u32,
    pub replicas: Vec<Entry>,
    pub sentinels: Vec<Entry>,
    /// `INFO server` run_id: the same sentinel reached under two addresses (a Service, a
    /// port-forward) is one sentinel.
    #[serde(skip)]
    pub run_id: String,
    /// TILT mode (`INFO sentinel`: `sentinel_tilt:1`): after a time jump (the process was
    /// stopped, the clock moved) a sentinel only watches, for 30 s: it starts no failover and
    /// does not advance one it was asked for.
    pub tilt: bool,
}

impl SentinelObs {
    pub fn answered(&self) -> bool {
        self.error.is_none()
    }

    pub fn failover_running(&self) -> bool {
        sentinel::failover_running(&FlagSet::of(&self.master_flags), &self.failover_state)
    }

    /// It answers, and it would act: not in TILT mode.
    pub fn can_act(&self) -> bool {
        self.answered() && !self.tilt
    }

    pub fn sees_master_down(&self) -> bool {
        FlagSet::of(&self.master_flags).is_down()
    }
}

/// One replica as the master lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub addr: String,
    pub online: bool,
    pub offset: u64,
    pub lag_s: u64,
}

/// What one data node said (`INFO replication`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct NodeObs {
    pub addr: String,
    /// `INFO server` run_id (see SentinelObs::run_id).
    #[serde(skip)]
    pub run_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `master` or `replica`.
    pub role: String,
    /// A replica's configured master.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    pub link_up: bool,
    pub sync_in_progress: bool,
    /// `master_repl_offset` of a master, `slave_repl_offset` of a replica.
    pub offset: u64,
    /// `slave_priority` of a replica.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Its engine and version (`INFO server`): `"engine"`, `"version"` in JSON.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerVersion>,
    /// A master's replicas as it lists them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Listed>,
}

impl NodeObs {
    pub fn is_master(&self) -> bool {
        self.error.is_none() && self.role == "master"
    }
    pub fn is_replica(&self) -> bool {
        self.error.is_none() && self.role == "replica"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Degraded,
    Split,
    NoMaster,
}

impl Health {
    pub fn exit_code(self) -> i32 {
        match self {
            Health::Healthy => crate::exit::OK,
            Health::Degraded => crate::exit::DEGRADED,
            Health::Split | Health::NoMaster => crate::exit::SPLIT,
        }
    }
    fn word(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Split => "split",
            Health::NoMaster => "no master",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub health: Health,
    /// The master the sentinels name at the highest epoch, when it answers as master.
    pub master: Option<String>,
    pub epoch: u64,
    /// Why it is not healthy (degraded, split: who disagrees, no master: what is missing).
    pub reasons: Vec<String>,
    pub failover_running: bool,
    pub failover_safe: bool,
    /// Why a failover could not happen now.
    pub unsafe_because: Vec<String>,
}

impl Verdict {
    pub fn line(&self) -> String {
        let mut s = format!("verdict: {}", self.health.word());
        if let Some(m) = &self.master {
            let _ = write!(s, ", master {m} (epoch {})", self.epoch);
        }
        if !self.reasons.is_empty() {
            let _ = write!(s, ": {}", self.reasons.join("; "));
        }
        if self.failover_safe {
            s.push_str("; failover-safe");
        } else {
            let _ = write!(s, "; not failover-safe: {}", self.unsafe_because.join("; "));
        }
        s
    }
}

/// The pure judgement over what was gathered. `quorum`: the configured quorum, used when no
/// sentinel reports one.
pub fn verdict(sentinels: &[SentinelObs], nodes: &[NodeObs], quorum: u32) -> Verdict {
    let answering: Vec<&SentinelObs> = sentinels.iter().filter(|s| s.answered()).collect();
    let failover_running = answering.iter().any(|s| s.failover_running());
    let epoch = answering.iter().map(|s| s.config_epoch).max().unwrap_or(0);
    let m = match one_master(&answering, nodes, epoch, failover_running) {
        Ok(m) => m,
        Err(v) => return v,
    };
    let master = nodes
        .iter()
        .find(|n| n.addr == m)
        .cloned()
        .unwrap_or_default();
    // From here on there is one master; everything else only degrades.
    let mut reasons = Vec::new();
    if failover_running {
        reasons.push(format!(
            "failover in progress ({})",
            failover_states(&answering)
        ));
    }
    sentinel_reasons(sentinels, m, epoch, &mut reasons);
    let replicas: Vec<&NodeObs> = nodes.iter().filter(|n| n.addr != m).collect();
    replica_reasons(&replicas, &master, &mut reasons);
    view_reasons(&answering, &replicas, &mut reasons);
    let unsafe_because = unsafe_reasons(&answering, m, epoch, quorum, failover_running);
    let failover_safe = unsafe_because.is_empty();
    if !failover_safe && reasons.is_empty() {
        reasons.push("not failover-safe".into());
    }
    Verdict {
        health: if reasons.is_empty() {
            Health::Healthy
        } else {
            Health::Degraded
        },
        master: Some(m.to_string()),
        epoch,
        reasons,
        failover_running,
        failover_safe,
        unsafe_because,
    }
}

/// A verdict without a master: split (someone serves writes the sentinels do not send clients
/// to, or the sentinels disagree) or none at all.
fn masterless(health: Health, epoch: u64, reasons: Vec<String>, failover_running: bool) -> Verdict {
    let why = match health {
        Health::Split => "the cluster is split",
        _ => "there is no master",
    };
    Verdict {
        health,
        master: None,
        epoch,
        reasons,
        failover_running,
        failover_safe: false,
        unsafe_because: vec![why.into()],
    }
}

/// The one master the sentinels name at the highest epoch and that answers as master, or the
/// split / no-master verdict that stands instead.
fn one_master<'a>(
    answering: &[&'a SentinelObs],
    nodes: &'a [NodeObs],
    epoch: u64,
    failover_running: bool,
) -> Result<&'a str, Verdict> {
    let masters_up: Vec<&NodeObs> = nodes.iter().filter(|n| n.is_master()).collect();
    let split = |r| masterless(Health::Split, epoch, r, failover_running);
    let none = |r| masterless(Health::NoMaster, epoch, r, failover_running);
    // The masters named at the highest epoch (the latest failover), and by whom.
    let mut named: Vec<(&str, Vec<&str>)> = Vec::new();
    for s in answering.iter().filter(|s| s.config_epoch == epoch) {
        let Some(m) = s.master.as_deref() else {
            continue;
        };
        match named.iter_mut().find(|(x, _)| *x == m) {
            Some((_, by)) => by.push(&s.addr),
            None => named.push((m, vec![&s.addr])),
        }
    }
    if masters_up.len() >= 2 {
        let mut r = vec![format!(
            "{} nodes answer as master: {}",
            masters_up.len(),
            masters_up
                .iter()
                .map(|n| n.addr.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )];
        r.extend(named_by(&named));
        return Err(split(r));
    }
    if named.len() >= 2 {
        let mut r = vec![format!("sentinels disagree at epoch {epoch}")];
        r.extend(named_by(&named));
        return Err(split(r));
    }
    let Some(m) = named.first().map(|(m, _)| *m) else {
        let why = if answering.is_empty() {
            "no sentinel answers".to_string()
        } else {
            "no sentinel names a master for the group".to_string()
        };
        let mut r = vec![why];
        if let Some(n) = masters_up.first() {
            r.push(format!("{} answers as master", n.addr));
        }
        return Err(none(r));
    };
    let other = match nodes.iter().find(|n| n.addr == m) {
        Some(n) if n.is_master() => return Ok(m),
        other => other,
    };
    let what = match other {
        Some(NodeObs { error: Some(e), .. }) => format!("does not answer ({e})"),
        Some(n) => format!(
            "answers as {} of {}",
            n.role,
            n.master.as_deref().unwrap_or("nothing")
        ),
        None => "was not asked".to_string(),
    };
    let mut r = vec![format!("the sentinels name {m}, which {what}")];
    if failover_running {
        r.push(format!(
            "failover in progress ({})",
            failover_states(answering)
        ));
    } else if answering.iter().any(|s| s.sees_master_down()) {
        r.push("the sentinels see it down; a failover follows once it is objectively down".into());
    }
    if let Some(other) = masters_up.first() {
        if !failover_running {
            // A node serves writes that the sentinels do not send clients to.
            r.push(format!("{} answers as master", other.addr));
            return Err(split(r));
        }
        r.push(format!("{} answers as master (being promoted)", other.addr));
    }
    Err(none(r))
}

/// What each sentinel's own answer degrades: silent, behind, in TILT, seeing the master down.
fn sentinel_reasons(sentinels: &[SentinelObs], m: &str, epoch: u64, reasons: &mut Vec<String>) {
    for s in sentinels {
        match &s.error {
            Some(e) => reasons.push(format!("sentinel {}: {e}", s.addr)),
            None if s.config_epoch < epoch || s.master.as_deref() != Some(m) => {
                reasons.push(format!(
                    "sentinel {} still names {} (epoch {} < {epoch})",
                    s.addr,
                    s.master.as_deref().unwrap_or("nothing"),
                    s.config_epoch
                ))
            }
            None if s.tilt => reasons.push(format!(
                "sentinel {} is in TILT mode (takes no action for up to 30 s)",
                s.addr
            )),
            None if s.sees_master_down() => reasons.push(format!(
                "sentinel {} sees the master {}",
                s.addr,
                s.master_flags.join(",")
            )),
            None => {}
        }
    }
}

/// What each other data node degrades: silent, too old, following another, syncing, unlinked,
/// not listed online by the master, lagging.
fn replica_reasons(replicas: &[&NodeObs], master: &NodeObs, reasons: &mut Vec<String>) {
    let m = master.addr.as_str();
    for n in replicas {
        if let Some(e) = &n.error {
            reasons.push(format!("node {}: {e}", n.addr));
            continue;
        }
        if n.role != "replica" {
            continue; // a second master was handled above
        }
        if let (Some(rv), Some(mv)) = (n.server, master.server) {
            if !rv.can_follow(&mv) && n.master.as_deref() == Some(m) && !n.link_up {
                // Not linked to a master it cannot load: the full sync is what fails, for ever.
                reasons.push(format!(
                    "replica {} runs {rv}, older than the master's {mv}: its full sync fails (its RDB format is newer) and is retried for ever; not ready",
                    n.addr
                ));
                continue;
            }
            if !rv.can_follow(&mv) {
                reasons.push(format!(
                    "replica {} runs {rv}, older than the master's {mv}: a full sync from it fails (its RDB format is newer)",
                    n.addr
                ));
            }
        }
        if n.master.as_deref() != Some(m) {
            reasons.push(format!(
                "replica {} follows {}, not the master",
                n.addr,
                n.master.as_deref().unwrap_or("nothing")
            ));
        } else if n.sync_in_progress {
            reasons.push(format!("replica {}: initial sync in progress", n.addr));
        } else if !n.link_up {
            reasons.push(format!("replica {}: master link down", n.addr));
        } else {
            match master.replicas.iter().find(|l| l.addr == n.addr) {
                None => reasons.push(format!("the master does not list replica {}", n.addr)),
                Some(l) if !l.online => {
                    reasons.push(format!("the master lists replica {} not online", n.addr))
                }
                Some(l) if l.lag_s > MAX_LAG_S => reasons.push(format!(
                    "replica {} last acknowledged {} s ago",
                    n.addr, l.lag_s
                )),
                Some(_) => {}
            }
        }
    }
}

/// What the sentinels' lists degrade: entries down or unlinked, live servers they do not know.
fn view_reasons(answering: &[&SentinelObs], replicas: &[&NodeObs], reasons: &mut Vec<String>) {
    let live_replicas: Vec<&str> = replicas
        .iter()
        .filter(|n| n.is_replica())
        .map(|n| n.addr.as_str())
        .collect();
    let sentinel_addrs: Vec<&str> = answering.iter().map(|s| s.addr.as_str()).collect();
    for s in answering {
        let listed = |what: &str, e: &Entry| {
            let flags = e.flags.join(",");
            format!("sentinel {} lists {what} {} as {flags}", s.addr, e.addr)
        };
        let unknown = |what: &str, a: &str| format!("sentinel {} does not know {what} {a}", s.addr);
        for r in &s.replicas {
            if r.down() {
                reasons.push(listed("replica", r));
            } else if r.link_ok == Some(false) {
                // Its last INFO of the replica (1 s old at most) says the link is down: this
                // sentinel would not promote it.
                reasons.push(format!(
                    "sentinel {} sees replica {} with its master link down",
                    s.addr, r.addr
                ));
            }
        }
        for r in &live_replicas {
            if !s.replicas.iter().any(|e| e.addr == *r) {
                reasons.push(unknown("replica", r));
            }
        }
        for p in s.sentinels.iter().filter(|p| p.down()) {
            reasons.push(listed("sentinel", p));
        }
        for p in sentinel_addrs.iter().filter(|p| **p != s.addr) {
            if !s.sentinels.iter().any(|e| e.addr == *p) {
                reasons.push(unknown("sentinel", p));
            }
        }
    }
}

/// Failover-safe: a majority of the sentinels answers and names this master, and at least
/// `quorum` of them each pass the probe's own test (probe::failover_safe: sees the master up,
/// knows quorum − 1 live peers, knows a replica it could promote). Empty when safe.
fn unsafe_reasons(
    answering: &[&SentinelObs],
    m: &str,
    epoch: u64,
    quorum: u32,
    failover_running: bool,
) -> Vec<String> {
    let mut unsafe_because = Vec::new();
    if failover_running {
        unsafe_because.push("a failover is already running".into());
    }
    let quorum = answering
        .iter()
        .map(|s| s.quorum)
        .find(|q| *q > 0)
        .unwrap_or(quorum);
    let naming: Vec<&&SentinelObs> = answering
        .iter()
        .filter(|s| s.master.as_deref() == Some(m) && s.config_epoch == epoch)
        .collect();
    // Sentinel's own rule: a leader needs max(quorum, a majority of the sentinels it knows).
    let voters = naming
        .iter()
        .map(|s| s.sentinels.len() + 1)
        .max()
        .unwrap_or(0);
    let need = (quorum as usize).max(voters / 2 + 1);
    if naming.len() < need {
        unsafe_because.push(format!(
            "{} sentinels answer and name the master, electing a leader needs {need} of {voters}",
            naming.len()
        ));
    }
    let mut safe_ones = 0;
    let mut last_why = String::new();
    for s in naming.iter().filter(|s| !s.tilt) {
        let safety = probe::Safety {
            names_master: true,
            master_down: s.sees_master_down(),
            quorum,
            sentinels_known: s.sentinels.len(),
            sentinels_up: s.sentinels.iter().filter(|e| !e.down()).count(),
            promotable: s
                .replicas
                .iter()
                .filter(|r| promotable(r))
                .filter_map(|r| Endpoint::parse(&r.addr))
                .collect(),
            own_replica: None,
        };
        match probe::failover_safe(&safety) {
            Ok(()) if safety.promotable.is_empty() => {
                last_why = format!("sentinel {} knows no replica it could promote", s.addr)
            }
            Ok(()) => safe_ones += 1,
            Err(why) => last_why = format!("sentinel {}: {why}", s.addr),
        }
    }
    if safe_ones < quorum as usize {
        unsafe_because.push(if last_why.is_empty() {
            format!("{safe_ones} sentinels could fail over, quorum is {quorum}")
        } else {
            format!("{safe_ones} sentinels could fail over, quorum is {quorum} ({last_why})")
        });
    }
    unsafe_because
}

/// A replica Sentinel could promote: up, linked, priority above 0.
pub fn promotable(r: &Entry) -> bool {
    sentinel::promotable(&FlagSet::of(&r.flags), r.link_ok, r.priority)
}

fn named_by(named: &[(&str, Vec<&str>)]) -> Vec<String> {
    named
        .iter()
        .map(|(m, by)| format!("{} name {m}", by.join(", ")))
        .collect()
}

fn failover_states(answering: &[&SentinelObs]) -> String {
    answering
        .iter()
        .filter(|s| s.failover_running())
        .map(|s| format!("{}: {}", s.addr, s.failover_state))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One server reached under two addresses (a Service name or ClusterIP in `REDISHA_SENTINELS`,
/// a data node guessed on the same host) is one server: of the observations with the same run
/// id, the one at the address the cluster itself uses (listed as a peer, named as master, listed
/// as a replica) stays, the others go. Counting a Service as a fourth sentinel or a second master
/// would turn a healthy cluster into a "split" one.
pub fn dedup(sentinels: &mut Vec<SentinelObs>, nodes: &mut Vec<NodeObs>) {
    let peer_addrs: Vec<String> = sentinels
        .iter()
        .flat_map(|s| s.sentinels.iter().map(|e| e.addr.clone()))
        .collect();
    let node_addrs: Vec<String> = sentinels
        .iter()
        .flat_map(|s| {
            s.master
                .iter()
                .cloned()
                .chain(s.replicas.iter().map(|e| e.addr.clone()))
        })
        .chain(nodes.iter().flat_map(|n| {
            n.replicas
                .iter()
                .map(|l| l.addr.clone())
                .chain(n.master.clone())
        }))
        .collect();
    keep_one(sentinels, |s| &s.run_id, |s| &s.addr, &peer_addrs);
    keep_one(nodes, |n| &n.run_id, |n| &n.addr, &node_addrs);
}

fn keep_one<T>(
    items: &mut Vec<T>,
    id: impl Fn(&T) -> &str,
    addr: impl Fn(&T) -> &str,
    known: &[String],
) {
    let mut drop = vec![false; items.len()];
    for i in 0..items.len() {
        let rid = id(&items[i]);
        if rid.is_empty() || drop[i] {
            continue;
        }
        let same: Vec<usize> = (0..items.len()).filter(|j| id(&items[*j]) == rid).collect();
        if same.len() < 2 {
            continue;
        }
        let best = same
            .iter()
            .copied()
            .find(|j| known.iter().any(|k| k == addr(&items[*j])))
            .unwrap_or(same[0]);
        for j in same {
            drop[j] = j != best;
        }
    }
    let mut k = 0;
    items.retain(|_| {
        k += 1;
        !drop[k - 1]
    });
}

/// Everything one look gathered, and its verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub group: String,
    pub verdict: Verdict,
    pub exit_code: i32,
    pub nodes: Vec<NodeObs>,
    pub sentinels: Vec<SentinelObs>,
    /// While the data nodes run different versions (a rolling upgrade): which runs what.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mixed_versions: Option<String>,
    pub took_ms: u64,
    /// Pods waiting with state after a full outage, and when they elect (outage::describe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outage: Option<String>,
    /// With ACL users: who exists, and which server's ACL differs (status_acl.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl: Option<crate::status_acl::AclReport>,
}

/// `redis 7.0.15 on a, b; valkey 8.0.1 on c` when the nodes that answered differ (oldest first),
/// else None.
pub fn mixed_versions(nodes: &[NodeObs]) -> Option<String> {
    let mut by: Vec<(ServerVersion, Vec<&str>)> = Vec::new();
    for n in nodes {
        let Some(v) = n.server else { continue };
        match by.iter_mut().find(|(x, _)| *x == v) {
            Some((_, a)) => a.push(&n.addr),
            None => by.push((v, vec![&n.addr])),
        }
    }
    if by.len() < 2 {
        return None;
    }
    by.sort_by_key(|(v, _)| (v.key(), v.version));
    let parts: Vec<String> = by
        .iter()
        .map(|(v, a)| format!("{v} on {}", a.join(", ")))
        .collect();
    Some(parts.join("; "))
}

impl Report {
    pub fn new(
        group: &str,
        sentinels: Vec<SentinelObs>,
        nodes: Vec<NodeObs>,
        quorum: u32,
        took: Duration,
    ) -> Report {
        let verdict = verdict(&sentinels, &nodes, quorum);
        Report {
            mixed_versions: mixed_versions(&nodes),
            group: group.to_string(),
            exit_code: verdict.health.exit_code(),
            verdict,
            nodes,
            sentinels,
            took_ms: took.as_millis() as u64,
            outage: None,
            acl: None,
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let master = self.verdict.master.as_deref();
        let master_offset = master
            .and_then(|m| self.nodes.iter().find(|n| n.addr == m))
            .map(|n| n.offset);
        let listed = |a: &str| {
            master
                .and_then(|m| self.nodes.iter().find(|n| n.addr == m))
                .and_then(|n| n.replicas.iter().find(|l| l.addr == a))
        };
        let named: Vec<&str> = self
            .sentinels
            .iter()
            .filter_map(|s| s.master.as_deref())
            .collect();
        let mut rows = vec![vec![
            "DATA NODE".to_string(),
            "ROLE".into(),
            "NAMED".into(),
            "FOLLOWS".into(),
            "LINK".into(),
            "OFFSET".into(),
            "LAG B".into(),
            "LAG S".into(),
            "PRIO".into(),
            "SERVER".into(),
        ]];
        for n in &self.nodes {
            if let Some(e) = &n.error {
                rows.push(vec![
                    n.addr.clone(),
                    "-".into(),
                    yes(named.contains(&n.addr.as_str())),
                    format!("unreachable: {e}"),
                ]);
                continue;
            }
            let is_named = named.contains(&n.addr.as_str());
            let (lag_b, lag_s) = match (n.role.as_str(), master_offset, listed(&n.addr)) {
                ("replica", Some(mo), l) => (
                    mo.saturating_sub(n.offset).to_string(),
                    l.map(|l| l.lag_s.to_string()).unwrap_or("-".into()),
                ),
                _ => ("-".into(), "-".into()),
            };
            rows.push(vec![
                n.addr.clone(),
                n.role.clone(),
                yes(is_named),
                n.master.clone().unwrap_or("-".into()),
                if n.role == "master" {
                    "-".into()
                } else if n.sync_in_progress {
                    "sync".into()
                } else if n.link_up {
                    "up".into()
                } else {
                    "down".into()
                },
                n.offset.to_string(),
                lag_b,
                lag_s,
                n.priority.map(|p| p.to_string()).unwrap_or("-".into()),
                n.server.map(|v| v.to_string()).unwrap_or("-".into()),
            ]);
        }
        let mut out = format!("cluster {}\n", self.group);
        out.push_str(&columns(&rows));
        let mut rows = vec![vec![
            "SENTINEL".to_string(),
            "MASTER".into(),
            "EPOCH".into(),
            "FLAGS".into(),
            "REPLICAS (UP/KNOWN)".into(),
            "PEERS (UP/KNOWN)".into(),
            "FAILOVER".into(),
        ]];
        for s in &self.sentinels {
            if let Some(e) = &s.error {
                rows.push(vec![s.addr.clone(), format!("unreachable: {e}")]);
                continue;
            }
            let up =
                |l: &[Entry]| format!("{}/{}", l.iter().filter(|e| !e.down()).count(), l.len());
            rows.push(vec![
                s.addr.clone(),
                s.master.clone().unwrap_or("-".into()),
                s.config_epoch.to_string(),
                if s.tilt {
                    format!("{},TILT", s.master_flags.join(","))
                } else {
                    s.master_flags.join(",")
                },
                up(&s.replicas),
                up(&s.sentinels),
                if s.failover_running() {
                    s.failover_state.clone()
                } else {
                    "no".into()
                },
            ]);
        }
        out.push('\n');
        out.push_str(&columns(&rows));
        out.push('\n');
        if let Some(m) = &self.mixed_versions {
            let _ = writeln!(
                out,
                "versions: mixed ({m}); a replica ahead of its master ranks last for promotion"
            );
        }
        // Before the verdict, which stays the last line (or the outage's, after it).
        if let Some(a) = &self.acl {
            out.push_str(&a.lines());
        }
        out.push_str(&self.verdict.line());
        out.push('\n');
        if let Some(o) = &self.outage {
            out.push_str(o);
            out.push('\n');
        }
        out
    }
}

fn yes(b: bool) -> String {
    if b { "yes" } else { "-" }.to_string()
}

/// Left-aligned columns; a short row's last cell runs on (an error message).
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut w = vec![0; n];
    for r in rows.iter().filter(|r| r.len() == n) {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<width$}  ", width = w[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

// ---- I/O ----

/// Parses one data node's `INFO replication`.
pub fn parse_node(addr: &str, info: &str) -> NodeObs {
    let f = |k| redisio::info_field(info, k);
    let num = |k| f(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let role = match f("role") {
        Some("master") => "master",
        Some("slave") => "replica",
        _ => {
            return NodeObs {
                addr: addr.into(),
                error: Some("unexpected INFO replication".into()),
                ..NodeObs::default()
            }
        }
    };
    let master = match (f("master_host"), f("master_port")) {
        (Some(h), Some(p)) if role == "replica" => canonical(h, p),
        _ => None,
    };
    NodeObs {
        addr: addr.into(),
        run_id: f("run_id").unwrap_or("").to_string(),
        error: None,
        role: role.into(),
        master,
        link_up: f("master_link_status") == Some("up"),
        sync_in_progress: f("master_sync_in_progress").is_some_and(|v| v != "0"),
        offset: if role == "master" {
            num("master_repl_offset")
        } else {
            num("slave_repl_offset")
        },
        priority: f("slave_priority").and_then(|v| v.parse().ok()),
        server: ServerVersion::parse(info),
        replicas: redisio::replicas(info)
            .into_iter()
            .map(|r| Listed {
                addr: r.addr.to_string(),
                online: r.online,
                offset: r.offset,
                lag_s: r.lag,
            })
            .collect(),
    }
}

/// The address a reply gives in two fields, as `Endpoint` prints it: every address string in
/// this module is that Display, so comparing two of them compares endpoints (issue 27: IPv6 is
/// bare in Sentinel's fields and bracketed in ours). A value that is no address is dropped
/// rather than kept in a form nothing else could equal.
fn canonical(host: &str, port: &str) -> Option<String> {
    Endpoint::from_fields(host, port).map(|e| e.to_string())
}

impl Entry {
    fn of(addr: &Endpoint, flags: &FlagSet, run_id: &Option<String>) -> Entry {
        Entry {
            addr: addr.to_string(),
            flags: flags.names().to_vec(),
            run_id: run_id.clone(),
            ..Entry::default()
        }
    }
}

impl From<&ReplicaView> for Entry {
    fn from(r: &ReplicaView) -> Entry {
        Entry {
            priority: r.priority,
            link_ok: r.link_ok,
            ..Entry::of(&r.addr, &r.flags, &r.run_id)
        }
    }
}

impl From<&PeerView> for Entry {
    fn from(p: &PeerView) -> Entry {
        Entry::of(&p.addr, &p.flags, &p.run_id)
    }
}

async fn ask_sentinel(cfg: &Config, e: &Endpoint, t: Duration) -> redis::RedisResult<SentinelObs> {
    let mut con = redisio::connect(&cfg.conn, e, Server::Sentinel, t).await?;
    let m = redisio::sentinel_master_view_on(&mut con, &cfg.group, t).await?;
    let named = redisio::master_addr_on(&mut con, &cfg.group, t).await?;
    let replicas = redisio::sentinel_replicas_on(&mut con, &cfg.group, t).await?;
    let sentinels = redisio::sentinel_peers_on(&mut con, &cfg.group, t).await?;
    let server: String = redisio::query(
        &mut con,
        redis::cmd("INFO").arg("server").arg("sentinel"),
        t,
    )
    .await?;
    Ok(SentinelObs {
        run_id: redisio::info_field(&server, "run_id")
            .unwrap_or("")
            .to_string(),
        tilt: redisio::info_field(&server, "sentinel_tilt") == Some("1"),
        addr: e.to_string(),
        error: None,
        master: named.map(|n| n.to_string()),
        master_flags: m.flags.names().to_vec(),
        config_epoch: m.config_epoch,
        failover_state: m.failover_state,
        quorum: m.quorum.unwrap_or(0),
        replicas: replicas.iter().map(Entry::from).collect(),
        sentinels: sentinels.iter().map(Entry::from).collect(),
    })
}

async fn ask_node(cfg: &Config, e: &Endpoint, t: Duration) -> NodeObs {
    let addr = e.to_string();
    match redisio::connect(&cfg.conn, e, Server::Redis, t).await {
        Ok(mut con) => {
            match redisio::query::<String>(
                &mut con,
                redis::cmd("INFO").arg("server").arg("replication"),
                t,
            )
            .await
            {
                Ok(i) => parse_node(&addr, &i),
                Err(err) => failed_node(addr, &err),
            }
        }
        Err(err) => failed_node(addr, &err),
    }
}

fn failed_node(addr: String, e: &redis::RedisError) -> NodeObs {
    NodeObs {
        addr,
        error: Some(short(e)),
        ..NodeObs::default()
    }
}

fn short(e: &redis::RedisError) -> String {
    let s = e.to_string();
    let s = s.lines().next().unwrap_or("").to_string();
    if s.chars().count() > 120 {
        s.chars().take(120).collect::<String>() + "…"
    } else {
        s
    }
}

/// A name resolved once (an address stays as it is); an error says why not.
async fn resolve(e: &Endpoint, t: Duration) -> Result<Endpoint, String> {
    let Host::Name(n) = &e.host else {
        return Ok(e.clone());
    };
    match tokio::time::timeout(t, tokio::net::lookup_host((n.as_str(), e.port))).await {
        Ok(Ok(mut it)) => match it.next() {
            Some(sa) => Ok(Endpoint {
                host: Host::Ip(sa.ip()),
                port: e.port,
            }),
            None => Err("cannot resolve: no address".into()),
        },
        Ok(Err(err)) => Err(format!("cannot resolve: {err}")),
        Err(_) => Err("cannot resolve: timed out".into()),
    }
}

enum Got {
    Resolved(Endpoint, Result<Endpoint, String>, bool),
    Sentinel(SentinelObs),
    Node(NodeObs),
}

/// Asks every server it learns of, all at once; each is bounded by `per_server`, the whole look
/// by `overall` (a server still silent then is reported as such).
pub async fn gather(
    cfg: &Config,
    per_server: Duration,
    overall: Duration,
) -> (Vec<SentinelObs>, Vec<NodeObs>) {
    let deadline = Instant::now() + overall;
    let mut set: JoinSet<Got> = JoinSet::new();
    // Seeds: the configured sentinels and the data nodes on the same hosts, this pod's own two.
    let mut seeds: Vec<(Endpoint, bool)> = Vec::new();
    for s in &cfg.sentinels {
        seeds.push((s.clone(), true));
        seeds.push((
            Endpoint {
                host: s.host.clone(),
                port: cfg.redis_port,
            },
            false,
        ));
    }
    // In a pod, its own two servers; on a machine with nothing configured (local mode,
    // `scripts/run`), the ones on loopback.
    if cfg.pod_ip.is_some() || cfg.sentinels.is_empty() {
        seeds.push((cfg.own(Server::Sentinel), true));
        seeds.push((cfg.own(Server::Redis), false));
    }
    let mut asked: Vec<String> = Vec::new();
    let mut pending: HashMap<String, bool> = HashMap::new();
    let mut sentinels: Vec<SentinelObs> = Vec::new();
    let mut nodes: Vec<NodeObs> = Vec::new();
    for (e, is_sentinel) in seeds {
        set.spawn(async move {
            let r = resolve(&e, per_server).await;
            Got::Resolved(e, r, is_sentinel)
        });
    }
    let spawn_ask = |set: &mut JoinSet<Got>,
                     asked: &mut Vec<String>,
                     pending: &mut HashMap<String, bool>,
                     e: Endpoint,
                     is_sentinel: bool| {
        let key = format!("{}{}", if is_sentinel { "s" } else { "n" }, e);
        if asked.contains(&key) {
            return;
        }
        asked.push(key);
        pending.insert(e.to_string(), is_sentinel);
        let cfg = cfg.clone();
        set.spawn(async move {
            if is_sentinel {
                let r = tokio::time::timeout(per_server, ask_sentinel(&cfg, &e, per_server)).await;
                Got::Sentinel(match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(err)) => SentinelObs {
                        addr: e.to_string(),
                        error: Some(short(&err)),
                        ..SentinelObs::default()
                    },
                    Err(_) => SentinelObs {
                        addr: e.to_string(),
                        error: Some(format!("no answer within {} ms", per_server.as_millis())),
                        ..SentinelObs::default()
                    },
                })
            } else {
                let r = tokio::time::timeout(per_server, ask_node(&cfg, &e, per_server)).await;
                Got::Node(r.unwrap_or_else(|_| NodeObs {
                    addr: e.to_string(),
                    error: Some(format!("no answer within {} ms", per_server.as_millis())),
                    ..NodeObs::default()
                }))
            }
        });
    };
    let learned = Endpoint::parse;
    loop {
        let next = match tokio::time::timeout_at(deadline, set.join_next()).await {
            Ok(Some(Ok(g))) => g,
            Ok(Some(Err(_))) => continue,
            Ok(None) | Err(_) => break,
        };
        match next {
            Got::Resolved(_, Ok(e), is_sentinel) => {
                spawn_ask(&mut set, &mut asked, &mut pending, e, is_sentinel);
            }
            Got::Resolved(orig, Err(why), is_sentinel) => {
                // A configured pod that no longer resolves (its DNS record is gone) is reported
                // under its name.
                let key = format!("{}{}", if is_sentinel { "s" } else { "n" }, orig);
                if !asked.contains(&key) {
                    asked.push(key);
                    if is_sentinel {
                        sentinels.push(SentinelObs {
                            addr: orig.to_string(),
                            error: Some(why),
                            ..SentinelObs::default()
                        });
                    } else {
                        nodes.push(NodeObs {
                            addr: orig.to_string(),
                            error: Some(why),
                            ..NodeObs::default()
                        });
                    }
                }
            }
            Got::Sentinel(s) => {
                pending.remove(&s.addr);
                let mut more: Vec<(Endpoint, bool)> = Vec::new();
                for a in s.master.iter() {
                    more.extend(learned(a).map(|e| (e, false)));
                }
                for r in &s.replicas {
                    more.extend(learned(&r.addr).map(|e| (e, false)));
                }
                for p in &s.sentinels {
                    more.extend(learned(&p.addr).map(|e| (e, true)));
                }
                for (e, is_s) in more {
                    spawn_ask(&mut set, &mut asked, &mut pending, e, is_s);
                }
                sentinels.push(s);
            }
            Got::Node(n) => {
                pending.remove(&n.addr);
                for r in &n.replicas {
                    if let Some(e) = learned(&r.addr) {
                        spawn_ask(&mut set, &mut asked, &mut pending, e, false);
                    }
                }
                if let Some(m) = n.master.as_deref().and_then(learned) {
                    spawn_ask(&mut set, &mut asked, &mut pending, m, false);
                }
                nodes.push(n);
            }
        }
    }
    set.abort_all();
    for (addr, is_sentinel) in pending {
        let error = Some(format!("no answer within {} ms", overall.as_millis()));
        if is_sentinel {
            sentinels.push(SentinelObs {
                addr,
                error,
                ..SentinelObs::default()
            });
        } else {
            nodes.push(NodeObs {
                addr,
                error,
                ..NodeObs::default()
            });
        }
    }
    dedup(&mut sentinels, &mut nodes);
    sentinels.sort_by(|a, b| a.addr.cmp(&b.addr));
    nodes.sort_by(|a, b| a.addr.cmp(&b.addr));
    (sentinels, nodes)
}

/// The command: gather, judge, print; returns the exit code.
pub async fn run(cfg: &Config, json: bool, per_server: Duration) -> i32 {
    let started = Instant::now();
    let (sentinels, nodes) = gather(cfg, per_server, per_server * 3).await;
    // Waiting pods' sentinels carry claims (outage.rs): one more bounded look, only when no
    // data node answers as master.
    let answering: Vec<Endpoint> = sentinels
        .iter()
        .filter(|s| s.answered())
        .filter_map(|s| crate::config::parse_endpoint("status", &s.addr).ok())
        .collect();
    let outage = if nodes.iter().any(|n| n.is_master()) || answering.is_empty() {
        None
    } else {
        let seen = crate::outage::gather(cfg, &answering, per_server).await;
        // The pods a waiting sentinel knew (its file's peers) count, not every address tried.
        let knew = sentinels
            .iter()
            .filter(|s| s.answered())
            .map(|s| s.sentinels.len() + 1)
            .max()
            .unwrap_or(0);
        let known = cfg.sentinels.len().max(knew);
        crate::outage::describe(&seen.claims, known, cfg.outage_elect_ms)
    };
    let mut report = Report::new(&cfg.group, sentinels, nodes, cfg.quorum, started.elapsed());
    report.outage = outage;
    report.acl = crate::status_acl::gather_for(cfg, &report, per_server).await;
    let out = if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => s + "\n",
            Err(e) => format!("{{\"error\": \"{e}\"}}\n"),
        }
    } else {
        report.table()
    };
    use std::io::Write;
    let _ = std::io::stdout().write_all(out.as_bytes());
    report.exit_code
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Shape {
        Healthy,
        ReplicaDown,
        MasterDown,
        FailoverRunning,
        FailoverPromoted,
        TwoMasters,
        SentinelsDisagree,
        NoPromotable,
        ReplicaLinkDown,
        Priority0,
        NoSentinel,
        OneSentinelLeft,
        LaggingSentinel,
        Tilt,
    }

    fn e(addr: &str) -> Entry {
        Entry {
            addr: addr.into(),
            flags: vec![if addr.ends_with(":26379") {
                "sentinel"
            } else {
                "slave"
            }
            .into()],
            priority: (!addr.ends_with(":26379")).then_some(100),
            link_ok: (!addr.ends_with(":26379")).then_some(true),
            run_id: None,
        }
    }

    fn sentinel(i: u8, master: &str, epoch: u64) -> SentinelObs {
        let me = format!("10.0.0.{i}:26379");
        SentinelObs {
            addr: me.clone(),
            error: None,
            master: Some(master.into()),
            master_flags: vec!["master".into()],
            config_epoch: epoch,
            failover_state: "none".into(),
            quorum: 2,
            replicas: (1..=3)
                .map(|j| format!("10.0.0.{j}:6379"))
                .filter(|a| a != master)
                .map(|a| e(&a))
                .collect(),
            sentinels: (1..=3)
                .map(|j| format!("10.0.0.{j}:26379"))
                .filter(|a| *a != me)
                .map(|a| e(&a))
                .collect(),
            run_id: String::new(),
            tilt: false,
        }
    }

    fn master(i: u8, replicas: &[u8], offset: u64) -> NodeObs {
        NodeObs {
            addr: format!("10.0.0.{i}:6379"),
            run_id: String::new(),
            error: None,
            role: "master".into(),
            master: None,
            link_up: false,
            sync_in_progress: false,
            offset,
            priority: None,
            server: None,
            replicas: replicas
                .iter()
                .map(|j| Listed {
                    addr: format!("10.0.0.{j}:6379"),
                    online: true,
                    offset,
                    lag_s: 0,
                })
                .collect(),
        }
    }

    fn replica(i: u8, of: u8, offset: u64) -> NodeObs {
        NodeObs {
            addr: format!("10.0.0.{i}:6379"),
            run_id: String::new(),
            error: None,
            role: "replica".into(),
            master: Some(format!("10.0.0.{of}:6379")),
            link_up: true,
            sync_in_progress: false,
            offset,
            priority: Some(100),
            server: None,
            replicas: Vec::new(),
        }
    }

    fn down(addr: &str) -> NodeObs {
        NodeObs {
            addr: addr.into(),
            error: Some("Connection refused".into()),
            ..NodeObs::default()
        }
    }

    fn flag(list: &mut [Entry], addr: &str, f: &str) {
        for x in list.iter_mut().filter(|x| x.addr == addr) {
            x.flags.push(f.into());
        }
    }

    pub(crate) fn cluster(shape: Shape) -> (Vec<SentinelObs>, Vec<NodeObs>) {
        let m1 = "10.0.0.1:6379";
        let mut s: Vec<SentinelObs> = (1..=3).map(|i| sentinel(i, m1, 1)).collect();
        let mut n = vec![
            master(1, &[2, 3], 500),
            replica(2, 1, 500),
            replica(3, 1, 480),
        ];
        match shape {
            Shape::Healthy => {}
            Shape::ReplicaDown => {
                n[2] = down("10.0.0.3:6379");
                n[0].replicas.truncate(1);
                s.truncate(2);
                s.push(SentinelObs {
                    addr: "10.0.0.3:26379".into(),
                    error: Some("Connection refused".into()),
                    ..SentinelObs::default()
                });
                for x in s.iter_mut().take(2) {
                    flag(&mut x.replicas, "10.0.0.3:6379", "s_down");
                    flag(&mut x.sentinels, "10.0.0.3:26379", "s_down");
                }
            }
            Shape::MasterDown => {
                n[0] = down(m1);
                for x in s.iter_mut() {
                    x.master_flags.push("s_down".into());
                }
                s[0] = SentinelObs {
                    addr: "10.0.0.1:26379".into(),
                    error: Some("Connection refused".into()),
                    ..SentinelObs::default()
                };
            }
            Shape::FailoverRunning => {
                n[0] = down(m1);
                s[0] = SentinelObs {
                    addr: "10.0.0.1:26379".into(),
                    error: Some("Connection refused".into()),
                    ..SentinelObs::default()
                };
                for x in s.iter_mut().skip(1) {
                    x.master_flags.extend(["s_down".into(), "o_down".into()]);
                }
                s[1].master_flags.push("failover_in_progress".into());
                s[1].failover_state = "wait_promotion".into();
            }
            Shape::FailoverPromoted => {
                // The leader (sentinel 2) names the promoted replica at the new epoch; sentinel 3
                // has not heard yet.
                n[0] = down(m1);
                n[1] = master(2, &[], 600);
                n[2].link_up = false;
                s[0] = SentinelObs {
                    addr: "10.0.0.1:26379".into(),
                    error: Some("Connection refused".into()),
                    ..SentinelObs::default()
                };
                s[1].master = Some("10.0.0.2:6379".into());
                s[1].config_epoch = 2;
                s[1].master_flags
                    .extend(["o_down".into(), "failover_in_progress".into()]);
                s[1].failover_state = "reconf_slaves".into();
                s[2].master_flags.extend(["s_down".into(), "o_down".into()]);
            }
            Shape::TwoMasters => {
                n[2] = master(3, &[], 480);
                n[0].replicas.truncate(1);
            }
            Shape::SentinelsDisagree => {
                s[2].master = Some("10.0.0.2:6379".into());
            }
            Shape::NoPromotable => {
                for x in s.iter_mut() {
                    for r in x.replicas.iter_mut() {
                        r.link_ok = Some(false);
                    }
                }
            }
            Shape::ReplicaLinkDown => {
                n[1].link_up = false;
            }
            Shape::Priority0 => {
                n[1].priority = Some(0);
                for x in s.iter_mut() {
                    for r in x.replicas.iter_mut().filter(|r| r.addr == "10.0.0.2:6379") {
                        r.priority = Some(0);
                    }
                }
            }
            Shape::NoSentinel => {
                for x in s.iter_mut() {
                    *x = SentinelObs {
                        addr: x.addr.clone(),
                        error: Some("Connection refused".into()),
                        ..SentinelObs::default()
                    };
                }
            }
            Shape::OneSentinelLeft => {
                for x in s.iter_mut().skip(1) {
                    *x = SentinelObs {
                        addr: x.addr.clone(),
                        error: Some("no answer within 600 ms".into()),
                        ..SentinelObs::default()
                    };
                }
                for x in s[0].sentinels.iter_mut() {
                    x.flags.push("s_down".into());
                }
            }
            Shape::Tilt => {
                s[0].tilt = true;
            }
            Shape::LaggingSentinel => {
                // After a switchover: two sentinels name the new master at epoch 2, one still
                // names the old one (now a replica) at epoch 1.
                n[0] = replica(1, 2, 500);
                n[1] = master(2, &[1, 3], 500);
                n[2].master = Some("10.0.0.2:6379".into());
                for x in s.iter_mut().take(2) {
                    x.master = Some("10.0.0.2:6379".into());
                    x.config_epoch = 2;
                    x.replicas = vec![e("10.0.0.1:6379"), e("10.0.0.3:6379")];
                }
            }
        }
        (s, n)
    }

    #[test]
    fn verdict_table() {
        use Health::*;
        // (shape, health, master, failover-safe, words every reason line must contain)
        type Row<'a> = (Shape, Health, Option<&'a str>, bool, &'a [&'a str]);
        let rows: Vec<Row> = vec![
            (Shape::Healthy, Healthy, Some("10.0.0.1:6379"), true, &[]),
            (
                Shape::ReplicaDown,
                Degraded,
                Some("10.0.0.1:6379"),
                true,
                &["10.0.0.3:6379", "10.0.0.3:26379"],
            ),
            (
                Shape::MasterDown,
                NoMaster,
                None,
                false,
                &["10.0.0.1:6379", "does not answer", "down"],
            ),
            (
                Shape::FailoverRunning,
                NoMaster,
                None,
                false,
                &["failover in progress", "wait_promotion"],
            ),
            (
                Shape::FailoverPromoted,
                Degraded,
                Some("10.0.0.2:6379"),
                false,
                &[
                    "failover in progress",
                    "reconf_slaves",
                    "10.0.0.3:26379 still names 10.0.0.1:6379",
                ],
            ),
            (
                Shape::TwoMasters,
                Split,
                None,
                false,
                &["2 nodes answer as master", "10.0.0.1:6379", "10.0.0.3:6379"],
            ),
            (
                Shape::SentinelsDisagree,
                Split,
                None,
                false,
                &["disagree", "10.0.0.3:26379 name 10.0.0.2:6379"],
            ),
            (
                Shape::NoPromotable,
                Degraded,
                Some("10.0.0.1:6379"),
                false,
                &["not failover-safe"],
            ),
            (
                Shape::ReplicaLinkDown,
                Degraded,
                Some("10.0.0.1:6379"),
                true,
                &["10.0.0.2:6379: master link down"],
            ),
            (Shape::Priority0, Healthy, Some("10.0.0.1:6379"), true, &[]),
            (
                Shape::Tilt,
                Degraded,
                Some("10.0.0.1:6379"),
                true,
                &["sentinel 10.0.0.1:26379 is in TILT mode"],
            ),
            (
                Shape::NoSentinel,
                NoMaster,
                None,
                false,
                &["no sentinel answers", "10.0.0.1:6379 answers as master"],
            ),
            (
                Shape::OneSentinelLeft,
                Degraded,
                Some("10.0.0.1:6379"),
                false,
                &["10.0.0.2:26379"],
            ),
            (
                Shape::LaggingSentinel,
                Degraded,
                Some("10.0.0.2:6379"),
                true,
                &["10.0.0.3:26379 still names 10.0.0.1:6379 (epoch 1 < 2)"],
            ),
        ];
        for (shape, health, m, safe, words) in rows {
            let (s, n) = cluster(shape);
            let v = verdict(&s, &n, 2);
            let line = v.line();
            assert_eq!(v.health, health, "{shape:?}: {line}");
            assert_eq!(v.master.as_deref(), m, "{shape:?}: {line}");
            assert_eq!(v.failover_safe, safe, "{shape:?}: {line}");
            assert_eq!(
                v.health.exit_code(),
                match health {
                    Healthy => 0,
                    Degraded => 1,
                    Split | NoMaster => 2,
                }
            );
            for w in words {
                assert!(line.contains(w), "{shape:?}: {w:?} not in {line}");
            }
            assert!(!line.contains('\n'), "{shape:?}: one line: {line}");
        }
    }

    #[test]
    fn one_server_under_two_addresses_counts_once() {
        let (mut s, mut n) = cluster(Shape::Healthy);
        for (i, x) in s.iter_mut().enumerate() {
            x.run_id = format!("s{i}");
        }
        for (i, x) in n.iter_mut().enumerate() {
            x.run_id = format!("n{i}");
        }
        // A Service in front of the first pod: its sentinel and its data node (the master).
        let mut alias = s[0].clone();
        alias.addr = "10.96.0.10:26379".into();
        s.insert(0, alias);
        let mut alias = n[0].clone();
        alias.addr = "10.96.0.10:6379".into();
        n.push(alias);
        assert_eq!(verdict(&s, &n, 2).health, Health::Split);
        dedup(&mut s, &mut n);
        assert_eq!(s.len(), 3);
        assert_eq!(n.len(), 3);
        assert!(s.iter().all(|x| !x.addr.starts_with("10.96.")));
        assert!(n.iter().all(|x| !x.addr.starts_with("10.96.")));
        assert_eq!(verdict(&s, &n, 2).health, Health::Healthy);
    }

    #[test]
    fn parses_info_and_prints_a_table() {
        let info = "# Replication\r\nrole:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\nmaster_link_status:up\r\nmaster_sync_in_progress:0\r\nslave_repl_offset:470\r\nslave_priority:100\r\nmaster_repl_offset:470\r\n";
        let n = parse_node("10.0.0.2:6379", info);
        assert_eq!(n.role, "replica");
        assert_eq!(n.master.as_deref(), Some("10.0.0.1:6379"));
        assert_eq!((n.offset, n.priority, n.link_up), (470, Some(100), true));
        // IPv6: INFO's bare master_host comes out as every other address string here does.
        let v6 = info.replace("master_host:10.0.0.1", "master_host:fd88::21");
        let n6 = parse_node("[fd88::22]:6379", &v6);
        assert_eq!(n6.master.as_deref(), Some("[fd88::21]:6379"));
        let (s, nodes) = cluster(Shape::ReplicaDown);
        let r = Report::new("mymaster", s, nodes, 2, Duration::from_millis(12));
        let t = r.table();
        assert!(t.contains("10.0.0.1:6379  master"), "{t}");
        assert!(t.contains("unreachable: Connection refused"), "{t}");
        assert!(
            t.lines()
                .last()
                .unwrap()
                .starts_with("verdict: degraded, master 10.0.0.1:6379 (epoch 1)"),
            "{t}"
        );
        // The replica behind by 20 bytes.
        assert!(
            t.lines()
                .any(|l| l.starts_with("10.0.0.2:6379") && l.contains(" 0 ")),
            "{t}"
        );
        let j: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(j["verdict"]["health"], "degraded");
        assert_eq!(j["exit_code"], 1);
        assert_eq!(j["nodes"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn versions_are_shown_and_a_replica_older_than_its_master_degrades() {
        let redis = "# Server\r\nredis_version:7.0.15\r\n";
        let valkey =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n";
        let with = |info: &str, n: &mut NodeObs| n.server = ServerVersion::parse(info);
        // Master on Redis 7.0, one replica upgraded: mixed, still healthy (Valkey loads RDB 10).
        let (s, mut n) = cluster(Shape::Healthy);
        with(redis, &mut n[0]);
        with(redis, &mut n[1]);
        with(valkey, &mut n[2]);
        let r = Report::new("mymaster", s, n, 2, Duration::from_millis(1));
        assert_eq!(r.verdict.health, Health::Healthy, "{:?}", r.verdict);
        let t = r.table();
        assert!(t.contains("versions: mixed (redis 7.0.15 on 10.0.0.1:6379, 10.0.0.2:6379; valkey 8.0.1 on 10.0.0.3:6379)"), "{t}");
        assert!(
            t.lines()
                .any(|l| l.starts_with("10.0.0.3:6379") && l.ends_with("valkey 8.0.1")),
            "{t}"
        );
        let j: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(j["nodes"][2]["engine"], "valkey");
        assert_eq!(j["nodes"][2]["version"], "8.0.1");
        assert!(j["mixed_versions"].is_string());
        // The master upgraded first: the Redis 7.0 replicas cannot full-sync from it.
        let (s, mut n) = cluster(Shape::Healthy);
        with(valkey, &mut n[0]);
        with(redis, &mut n[1]);
        with(valkey, &mut n[2]);
        let v = verdict(&s, &n, 2);
        assert_eq!(v.health, Health::Degraded);
        assert_eq!(
            v.reasons,
            vec!["replica 10.0.0.2:6379 runs redis 7.0.15, older than the master's valkey 8.0.1: a full sync from it fails (its RDB format is newer)".to_string()]
        );
        // Its link down (the full sync failing): one reason, naming the cause, not the link.
        n[1].link_up = false;
        n[1].sync_in_progress = true;
        let v = verdict(&s, &n, 2);
        assert_eq!(v.health, Health::Degraded);
        assert_eq!(
            v.reasons,
            vec!["replica 10.0.0.2:6379 runs redis 7.0.15, older than the master's valkey 8.0.1: its full sync fails (its RDB format is newer) and is retried for ever; not ready".to_string()]
        );
        // One version everywhere: no line, no field.
        let (s, mut n) = cluster(Shape::Healthy);
        n.iter_mut().for_each(|x| with(valkey, x));
        let r = Report::new("mymaster", s, n, 2, Duration::from_millis(1));
        assert!(!r.table().contains("versions:"));
        assert!(serde_json::to_value(&r)
            .unwrap()
            .get("mixed_versions")
            .is_none());
    }
}
