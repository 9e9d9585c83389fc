//! After a full outage: a returning majority whose last master never comes back elects one of
//! its members (issue 28).
//!
//! Every pod that waits with state runs its sentinel early (discover::Patience::Forever); that
//! sentinel also monitors a *claim group* whose name carries what the pod knew: the config epoch
//! of its last master, the replication offset its data node last reached, and the address it
//! served under. The other pods read the claims with `SENTINEL MASTERS`, so no new port or
//! protocol is needed. Once claims from a majority of the pods name the same missing master for
//! `REDISHA_OUTAGE_ELECT_MS`, the pod with the best claim (epoch, then offset, then the lowest
//! address) asks every sentinel for its vote at a new epoch (`SENTINEL IS-MASTER-DOWN-BY-ADDR`,
//! one vote per sentinel and epoch, persisted by Sentinel): with a majority of the votes it
//! becomes master claiming that epoch, and the others follow it by the usual rules.

use std::fmt;
use std::time::Duration;

use crate::config::{Config, Endpoint, Server};
use crate::redisio;
use crate::redisio::resolved_all;
use crate::sentinel::Answer;
use crate::state::Prior;

const CLAIM: &str = "~claim~";
const ELECTED: &str = "~elected~";

/// What a waiting pod tells the others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The config epoch of the last master it knew.
    pub epoch: u64,
    /// The replication offset its data node last reached (recorded once a second while it ran;
    /// 0 when unknown).
    pub offset: u64,
    /// The address its data node served under then: who it was.
    pub pod: Endpoint,
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (epoch {}, offset {})",
            self.pod, self.epoch, self.offset
        )
    }
}

/// The claim group's name: `<group>~claim~<epoch>~<offset>~<host>~<port>` (Sentinel accepts any
/// name without spaces; '~' appears in no group name we render nor in any address).
pub fn claim_group(group: &str, c: &Claim) -> String {
    format!(
        "{group}{CLAIM}{}~{}~{}~{}",
        c.epoch, c.offset, c.pod.host, c.pod.port
    )
}

pub fn parse_claim(group: &str, name: &str) -> Option<Claim> {
    let rest = name.strip_prefix(group)?.strip_prefix(CLAIM)?;
    let w: Vec<&str> = rest.split('~').collect();
    let [epoch, offset, host, port] = w.as_slice() else {
        return None;
    };
    Some(Claim {
        epoch: epoch.parse().ok()?,
        offset: offset.parse().ok()?,
        pod: Endpoint {
            host: crate::config::parse_host("claim", host).ok()?,
            port: crate::config::parse_port("claim", port).ok()?,
        },
    })
}

/// Lines that make a sentinel carry a marker group. It monitors a port nothing listens on, so it
/// never meets an instance or sends a hello there, and with an unreachable quorum and the longest
/// down-after it never votes or fails anything over for it.
fn marker_lines(name: &str) -> String {
    format!(
        "sentinel monitor {name} 127.0.0.1 1 255\n\
         sentinel down-after-milliseconds {name} 2000000000\n\
         sentinel failover-timeout {name} 2000000000\n"
    )
}

/// The early sentinel's file with this pod's claim.
pub fn with_claim(sentinel_conf: &str, group: &str, c: &Claim) -> String {
    format!("{sentinel_conf}{}", marker_lines(&claim_group(group, c)))
}

/// The elected master's sentinel keeps `<group>~elected~<epoch>~<offset>`: a lost master that
/// returns later reads from it how far behind its own history the election started.
pub fn with_elected(sentinel_conf: &str, group: &str, epoch: u64, offset: u64) -> String {
    format!(
        "{sentinel_conf}{}",
        marker_lines(&format!("{group}{ELECTED}{epoch}~{offset}"))
    )
}

pub fn parse_elected(group: &str, name: &str) -> Option<(u64, u64)> {
    let rest = name.strip_prefix(group)?.strip_prefix(ELECTED)?;
    let (e, o) = rest.split_once('~')?;
    Some((e.parse().ok()?, o.parse().ok()?))
}

/// This pod's claim: what it knew (Prior) and the offset it recorded.
pub fn own_claim(cfg: &Config, prior: &Prior) -> Claim {
    Claim {
        epoch: prior.epoch,
        offset: read_offset(cfg).unwrap_or(0),
        pod: prior
            .old_self
            .clone()
            .unwrap_or_else(|| cfg.own(Server::Redis)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Election {
    /// No election now; why.
    NotNow(String),
    /// An election is due, and another pod wins it.
    Others(Claim, String),
    /// An election is due and this pod has the best claim: it asks for votes at `epoch` over the
    /// `lost` master.
    Mine {
        epoch: u64,
        lost: Endpoint,
        why: String,
    },
}

/// The pure rule. `claims`: the claims the sentinels that answered carry (this pod's own among
/// them when its sentinel answered); `answers`: their `SENTINEL MASTER` answers; `up`: masters
/// named at the top epoch that answer as master; `known`: how many pods the cluster has.
pub fn elect(
    mine: &Claim,
    claims: &[Claim],
    answers: &[Answer],
    up: &[Endpoint],
    known: usize,
) -> Election {
    let mut pods: Vec<&Claim> = Vec::new();
    for c in claims {
        if !pods.iter().any(|p| p.pod == c.pod) {
            pods.push(c);
        }
    }
    let waiting = pods.len();
    let need = known / 2 + 1;
    if waiting < need {
        return Election::NotNow(format!(
            "{waiting} of {known} pods wait with state: {need} must wait together before they elect a master"
        ));
    }
    // A sentinel without a claim belongs to a pod that has decided: the usual rules apply.
    if answers.len() > claims.len() {
        return Election::NotNow(format!(
            "{} sentinels answer but only {} carry a claim: a pod has decided its role",
            answers.len(),
            claims.len()
        ));
    }
    if !up.is_empty() || answers.iter().any(|a| a.unsettled) {
        return Election::NotNow("a named master answers or a failover runs".into());
    }
    let Some(top) = answers.iter().map(|a| a.config_epoch).max() else {
        return Election::NotNow("no sentinel answers".into());
    };
    let mut named: Vec<&Endpoint> = Vec::new();
    for a in answers.iter().filter(|a| a.config_epoch == top) {
        if !named.contains(&&a.master) {
            named.push(&a.master);
        }
    }
    let [lost] = named.as_slice() else {
        return Election::NotNow(format!("the sentinels name several masters at epoch {top}"));
    };
    // The master of the newest epoch is among the waiting pods: it takes the role back itself.
    if let Some(c) = pods.iter().find(|c| &c.pod == *lost) {
        return Election::NotNow(format!("the master of epoch {top} is back ({c})"));
    }
    let Some(best) = pods.iter().filter(|c| c.epoch == top).max_by(|a, b| {
        a.offset
            .cmp(&b.offset)
            .then_with(|| b.pod.to_string().cmp(&a.pod.to_string()))
    }) else {
        return Election::NotNow(format!("no waiting pod knew epoch {top}"));
    };
    let why = format!(
        "{waiting} of {known} pods wait with state ({}) and the master of epoch {top} ({lost}) stays away",
        pods.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if best.pod == mine.pod {
        // Two above: a master that returns on a new address in the same instant claims one above
        // (discover::verdict) without an election; the elected one then outranks it instead of
        // tying with it, and Sentinel converges on the higher epoch.
        Election::Mine {
            epoch: top + 2,
            lost: (*lost).clone(),
            why,
        }
    } else {
        Election::Others((*best).clone(), why)
    }
}

/// Whether the votes make this pod the winner at `epoch`: a majority of the pods' sentinels
/// voted for it at exactly that epoch.
pub fn won(votes: &[(String, u64)], me: &str, epoch: u64, known: usize) -> bool {
    votes
        .iter()
        .filter(|(who, e)| who == me && *e == epoch)
        .count()
        * 2
        > known
}

/// The seed layout's short Sentinel list cannot count a majority after an outage: Services
/// balance over pods, so two names may reach the same pod twice and the pods behind one name
/// look like one. A pod whose state knew more sentinels than the list names refuses to start.
pub fn short_list(listed: usize, prior: &Prior) -> Option<String> {
    let knew = prior.known_sentinels + 1;
    // A laptop or a two-node pair counts its majority as before; only three or more pods need
    // every pod's sentinel listed.
    (knew >= 3 && listed < knew && listed < 3).then(|| {
        format!(
            "REDISHA_SENTINELS lists {listed} sentinel(s) but this pod's state knew {knew}: with state kept, list every pod's sentinel by a stable name (k8s/production) so a majority can be counted after an outage, or keep no state (k8s/seed)"
        )
    })
}

fn offset_path(cfg: &Config) -> std::path::PathBuf {
    cfg.state_dir.join("repl-offset")
}

/// The offset this pod's data node last reached, as recorded.
pub fn read_offset(cfg: &Config) -> Option<u64> {
    let t = std::fs::read_to_string(offset_path(cfg)).ok()?;
    t.split_whitespace().nth(1)?.parse().ok()
}

/// Records the data node's replication id and offset once a second while it changes. A data
/// node restarted from its AOF forgets its offset (Redis keeps it only in an RDB), and a pod
/// killed with the rest gets no chance to write it at the end: a second-old record is what an
/// election after a full outage can compare. One local INFO a second; the file is written only
/// when the offset moved.
pub async fn record_offsets(cfg: Config) {
    let me = cfg.own(Server::Redis);
    let t = Duration::from_millis(500);
    let mut last = None::<(String, u64)>;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // The same look feeds the metrics' role, link and lag gauges (metrics.rs).
        let info = redisio::info(&cfg.conn, &me, "replication", t).await.ok();
        crate::metrics::replication(info.as_deref());
        let Some(r) = info.as_deref().and_then(redisio::Repl::parse) else {
            continue;
        };
        // A node still loading or syncing reports 0: keep the last real record.
        if r.offset == 0 {
            continue;
        }
        let now = (r.replid, r.offset);
        if last.as_ref() != Some(&now) {
            let text = format!("{} {}\n", now.0, now.1);
            if crate::state::write_conf(&offset_path(&cfg), &text).is_ok() {
                last = Some(now);
            }
        }
    }
}

/// One bounded look at the claims (and elected markers) the sentinels carry.
pub async fn gather(cfg: &Config, sentinels: &[Endpoint], t: Duration) -> Seen {
    let mut set = tokio::task::JoinSet::new();
    for s in sentinels {
        let (s, conn) = (s.clone(), cfg.conn.clone());
        set.spawn(async move { redisio::sentinel_group_names(&conn, &s, t).await });
    }
    let mut seen = Seen::default();
    while let Some(r) = set.join_next().await {
        if let Ok(Ok(names)) = r {
            for n in names {
                if let Some(c) = parse_claim(&cfg.group, &n) {
                    seen.claims.push(c);
                } else if let Some(e) = parse_elected(&cfg.group, &n) {
                    seen.elected.push(e);
                }
            }
        }
    }
    seen
}

#[derive(Debug, Default)]
pub struct Seen {
    pub claims: Vec<Claim>,
    pub elected: Vec<(u64, u64)>,
}

/// Asks every sentinel for its vote at `epoch` for `candidate` as leader over `lost`.
pub async fn ask_votes(
    cfg: &Config,
    sentinels: &[Endpoint],
    lost: &Endpoint,
    epoch: u64,
    candidate: &str,
    t: Duration,
) -> Vec<(String, u64)> {
    let mut set = tokio::task::JoinSet::new();
    for s in sentinels {
        let (s, conn, lost, cand) = (
            s.clone(),
            cfg.conn.clone(),
            lost.clone(),
            candidate.to_string(),
        );
        set.spawn(async move { redisio::sentinel_vote(&conn, &s, &lost, epoch, &cand, t).await });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(Ok(v)) = r {
            out.push(v);
        }
    }
    out
}

/// One pod's election state across discovery rounds (discover::decide, while it waits with its
/// sentinel up).
#[derive(Debug, Default)]
pub struct Waiting {
    /// Since when an election has been due without a break.
    since: Option<tokio::time::Instant>,
    /// The highest epoch a vote was asked or seen at: a lost vote is never asked again there.
    floor: u64,
}

impl Waiting {
    /// One round: `Ok((epoch, why))` when this pod won an election at `epoch` (it becomes
    /// master and its sentinel claims that epoch), else what the wait is about (appended to the
    /// discovery's "role not decided" line).
    #[allow(clippy::too_many_arguments)]
    pub async fn round(
        &mut self,
        cfg: &Config,
        prior: &Prior,
        sentinels: &[Endpoint],
        answers: &[Answer],
        up: &[Endpoint],
        known: usize,
        me: &Endpoint,
    ) -> Result<(u64, String), String> {
        if cfg.outage_elect_ms == 0 {
            return Err("no election after an outage (REDISHA_OUTAGE_ELECT_MS=0)".into());
        }
        let t = Duration::from_millis(1000);
        let bound = Duration::from_millis(cfg.outage_elect_ms);
        let seen = gather(cfg, sentinels, t).await;
        let mine = own_claim(cfg, prior);
        let (epoch, lost, why) = match elect(&mine, &seen.claims, answers, up, known) {
            Election::NotNow(why) => {
                self.since = None;
                return Err(format!("no election: {why}"));
            }
            Election::Others(best, why) => {
                let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
                return Err(format!(
                    "{why}; {best} has the best claim: it becomes master {} ms after the majority met unless the master returns (waited {} ms)",
                    bound.as_millis(),
                    since.elapsed().as_millis()
                ));
            }
            Election::Mine { epoch, lost, why } => (epoch.max(self.floor + 1), lost, why),
        };
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() < bound {
            return Err(format!(
                "{why}; this pod has the best claim: master in {} ms unless the master returns",
                (bound - since.elapsed()).as_millis()
            ));
        }
        let id = me.to_string();
        let votes = ask_votes(cfg, sentinels, &lost, epoch, &id, t).await;
        self.floor = votes.iter().map(|v| v.1).fold(epoch, u64::max);
        if !won(&votes, &id, epoch, known) {
            // Someone else holds this epoch's votes: give it a whole bound to show up as master.
            self.since = Some(tokio::time::Instant::now());
            let mine = votes.iter().filter(|v| v.0 == id && v.1 == epoch).count();
            return Err(format!(
                "{why}; the vote at epoch {epoch} gave this pod {mine} of {known} sentinels: waiting again"
            ));
        }
        // Until this pod's sentinel answers at the new epoch, the voters' early sentinels still
        // name the lost master at the old one: a lost master returning right now would read that
        // as its own role. The marker on them says an election happened (`vetoed`).
        let marker = format!("{}{ELECTED}{epoch}~{}", cfg.group, mine.offset);
        for s in sentinels {
            if let Err(e) = redisio::sentinel_add_marker(&cfg.conn, s, &marker, t).await {
                tracing::info!(sentinel = %s, error = %e, "cannot mark the election on a sentinel");
            }
        }
        if let Err(e) = write_elected(cfg, epoch, mine.offset) {
            tracing::warn!(error = %e, "cannot record the election in the state directory");
        }
        let others: Vec<String> = seen
            .claims
            .iter()
            .filter(|c| c.pod != mine.pod)
            .map(|c| c.to_string())
            .collect();
        tracing::warn!(
            lost_master = %lost,
            waited_ms = since.elapsed().as_millis() as u64,
            this_pod = %mine,
            other_claims = %others.join(", "),
            claim_epoch = epoch,
            "elected master after the outage: writes only the lost master held are discarded; if it returns it follows this pod"
        );
        Ok((
            epoch,
            format!(
                "elected by a majority after the outage at epoch {epoch}: {why} for {} ms; this pod has the highest offset ({})",
                since.elapsed().as_millis(),
                mine.offset
            ),
        ))
    }
}

fn elected_path(cfg: &Config) -> std::path::PathBuf {
    cfg.state_dir.join("elected")
}

/// This pod won an election at `epoch` with `offset`: its sentinel carries the marker from now.
pub fn write_elected(cfg: &Config, epoch: u64, offset: u64) -> std::io::Result<()> {
    crate::state::write_conf(&elected_path(cfg), &format!("{epoch} {offset}\n"))
}

pub fn read_elected(cfg: &Config) -> Option<(u64, u64)> {
    let t = std::fs::read_to_string(elected_path(cfg)).ok()?;
    let mut w = t.split_whitespace();
    Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
}

/// What a pod that was master and now follows a master elected without it drops: the part of its
/// history past the offset the election started from. Pure: (its recorded offset, the
/// elected markers newer than its epoch) -> the line to log, if any.
pub fn dropped_tail(prior_epoch: u64, own: Option<u64>, elected: &[(u64, u64)]) -> Option<String> {
    let &(epoch, from) = elected
        .iter()
        .filter(|(e, _)| *e > prior_epoch)
        .max_by_key(|(e, _)| *e)?;
    Some(match own {
        Some(o) if o > from => format!(
            "the majority elected a master at epoch {epoch} from offset {from} while this pod was away; this pod's history reached offset {o}: its data node resyncs and drops the {} bytes of replication stream past {from} (writes no replica had received; both offsets recorded once a second, so up to a second of writes more or less)",
            o - from
        ),
        Some(o) => format!(
            "the majority elected a master at epoch {epoch} from offset {from} while this pod was away; this pod's history ended at offset {o}: it drops 0 bytes (offsets recorded once a second: up to a second of writes may differ)"
        ),
        None => format!(
            "the majority elected a master at epoch {epoch} from offset {from} while this pod was away; this pod recorded no offset: how much it drops is unknown"
        ),
    })
}

/// A Master decision of a pod with state is vetoed when a sentinel carries the marker of an
/// election above every epoch the answers show: the majority elected a master while this pod was
/// away, and that master is about to answer at the higher epoch. Pure.
pub fn veto(elected: &[(u64, u64)], answers: &[Answer]) -> Option<String> {
    let top = answers.iter().map(|a| a.config_epoch).max().unwrap_or(0);
    let (epoch, _) = elected.iter().filter(|(e, _)| *e > top).max()?;
    Some(format!(
        "a majority elected a master at epoch {epoch} (the sentinels still answer at epoch {top}): waiting for it"
    ))
}

/// `veto` after one look at the sentinels.
pub async fn vetoed(cfg: &Config, sentinels: &[Endpoint], answers: &[Answer]) -> Option<String> {
    let seen = gather(cfg, sentinels, Duration::from_millis(1000)).await;
    veto(&seen.elected, answers)
}

/// A pod that was master and now follows a master elected while it was away logs what it drops.
pub async fn report_dropped_tail(
    cfg: &Config,
    prior: &Prior,
    role: crate::config::Role,
    master: &Endpoint,
) {
    if !prior.was_master() || role != crate::config::Role::Replica {
        return;
    }
    let sentinels = resolved_all(&cfg.sentinels).await;
    let seen = gather(cfg, &sentinels, Duration::from_millis(1000)).await;
    if let Some(line) = dropped_tail(prior.epoch, read_offset(cfg), &seen.elected) {
        tracing::warn!(master = %master, "{line}");
    }
}

/// For `status`: one line on a cluster whose pods wait after an outage, from the claims seen.
pub fn describe(claims: &[Claim], known: usize, elect_ms: u64) -> Option<String> {
    if claims.is_empty() {
        return None;
    }
    let mut pods: Vec<&Claim> = Vec::new();
    for c in claims {
        if !pods.iter().any(|p| p.pod == c.pod) {
            pods.push(c);
        }
    }
    let need = known / 2 + 1;
    let list = pods
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let when = if elect_ms == 0 {
        "elections are off (REDISHA_OUTAGE_ELECT_MS=0): they wait for the lost master or `promote --force`".to_string()
    } else if pods.len() >= need {
        format!(
            "a majority waits: unless the lost master answers, the pod with the highest epoch, then offset, becomes master {} s after the majority met (REDISHA_OUTAGE_ELECT_MS)",
            elect_ms / 1000
        )
    } else {
        format!(
            "missing: {} more pod(s) with state; a minority never elects (a master comes back, or a majority of {need} waits for {} s)",
            need - pods.len(),
            elect_ms / 1000
        )
    };
    Some(format!(
        "outage: {} of {known} pods wait with state: {list}; {when}",
        pods.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        crate::config::parse_endpoint("test", s).expect("endpoint")
    }
    fn claim(pod: &str, epoch: u64, offset: u64) -> Claim {
        Claim {
            epoch,
            offset,
            pod: ep(pod),
        }
    }
    fn ans(m: &str, epoch: u64) -> Answer {
        Answer {
            master: ep(m),
            config_epoch: epoch,
            unsettled: false,
            known_sentinels: 2,
        }
    }

    #[test]
    fn claims_round_trip_through_group_names() {
        for c in [
            claim("10.0.0.3:6379", 7, 123456),
            claim("[fd00::1]:6380", 0, 0),
        ] {
            let name = claim_group("mymaster", &c);
            assert!(!name.contains(' '), "{name}");
            assert_eq!(parse_claim("mymaster", &name), Some(c.clone()));
            assert_eq!(parse_claim("other", &name), None);
        }
        assert_eq!(parse_claim("mymaster", "mymaster"), None);
        assert_eq!(
            parse_claim("mymaster", "mymaster~claim~x~1~10.0.0.1~1"),
            None
        );
        assert_eq!(parse_elected("g", "g~elected~4~99"), Some((4, 99)));
        assert_eq!(parse_elected("g", "g~claim~4~99~10.0.0.1~1"), None);
        let conf = with_claim("port 1\n", "g", &claim("10.0.0.3:6379", 1, 2));
        assert!(conf.contains("sentinel monitor g~claim~1~2~10.0.0.3~6379 127.0.0.1 1 255\n"));
    }

    /// Pods a (lost master of epoch 3), b and c (its replicas) and a stale d (epoch 2), as the
    /// table names them; `up`: a named master answers.
    #[test]
    fn election_table() {
        let lost = "10.0.0.1:6379";
        let b = claim("10.0.0.2:6379", 3, 900);
        let c = claim("10.0.0.3:6379", 3, 1000);
        let c_tie = claim("10.0.0.3:6379", 3, 900);
        let d = claim("10.0.0.4:6379", 2, 5000);
        let a_back = claim(lost, 3, 1200);
        let named = |n: usize| vec![ans(lost, 3); n];
        type Row = (
            &'static str,
            Claim,
            Vec<Claim>,
            Vec<Answer>,
            bool,
            usize,
            Result<Option<u64>, &'static str>,
        );
        // (case, mine, claims, answers, up, known) -> Ok(Some(epoch)): mine; Ok(None): others;
        // Err(why): not now
        let rows: Vec<Row> = vec![
            (
                "minority never elects",
                b.clone(),
                vec![b.clone()],
                named(1),
                false,
                3,
                Err("1 of 3 pods"),
            ),
            (
                "highest offset wins",
                c.clone(),
                vec![b.clone(), c.clone()],
                named(2),
                false,
                3,
                Ok(Some(5)),
            ),
            (
                "the other waits",
                b.clone(),
                vec![b.clone(), c.clone()],
                named(2),
                false,
                3,
                Ok(None),
            ),
            (
                "tie: the lowest address",
                b.clone(),
                vec![b.clone(), c_tie.clone()],
                named(2),
                false,
                3,
                Ok(Some(5)),
            ),
            (
                "tie seen from the other",
                c_tie.clone(),
                vec![b.clone(), c_tie.clone()],
                named(2),
                false,
                3,
                Ok(None),
            ),
            (
                "the lost master is back",
                c.clone(),
                vec![b.clone(), c.clone(), a_back.clone()],
                named(3),
                false,
                3,
                Err("is back"),
            ),
            (
                "a named master answers",
                c.clone(),
                vec![b.clone(), c.clone()],
                named(2),
                true,
                3,
                Err("answers"),
            ),
            (
                "a decided pod's sentinel",
                c.clone(),
                vec![b.clone(), c.clone()],
                named(3),
                false,
                3,
                Err("decided"),
            ),
            (
                "one pod's claim twice is one pod",
                c.clone(),
                vec![c.clone(), c.clone()],
                named(2),
                false,
                3,
                Err("1 of 3 pods"),
            ),
            // A stale pod's offset is of another history: only the newest epoch's pods compete.
            (
                "stale pod never wins",
                b.clone(),
                vec![b.clone(), d.clone()],
                vec![ans(lost, 3), ans("10.0.0.9:6379", 2)],
                false,
                3,
                Ok(Some(5)),
            ),
            (
                "five pods: three must wait",
                c.clone(),
                vec![b.clone(), c.clone()],
                named(2),
                false,
                5,
                Err("2 of 5 pods"),
            ),
            (
                "two masters named at the top epoch",
                c.clone(),
                vec![b.clone(), c.clone()],
                vec![ans(lost, 3), ans("10.0.0.8:6379", 3)],
                false,
                3,
                Err("several masters"),
            ),
        ];
        for (case, mine, claims, answers, up, known, want) in rows {
            let up: Vec<Endpoint> = if up { vec![ep(lost)] } else { vec![] };
            let got = elect(&mine, &claims, &answers, &up, known);
            match (&got, want) {
                (Election::Mine { epoch, .. }, Ok(Some(e))) => assert_eq!(*epoch, e, "{case}"),
                (Election::Others(..), Ok(None)) => {}
                (Election::NotNow(why), Err(w)) => assert!(why.contains(w), "{case}: {why}"),
                (g, w) => panic!("{case}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn votes_need_a_majority_at_exactly_the_epoch() {
        let v = |who: &str, e: u64| (who.to_string(), e);
        // (votes, known) -> won?
        type Row = (Vec<(String, u64)>, usize, bool);
        let rows: Vec<Row> = vec![
            (vec![v("me", 4), v("me", 4)], 3, true),
            (vec![v("me", 4)], 3, false),
            (vec![v("me", 4), v("other", 4)], 3, false),
            (vec![v("me", 4), v("me", 5)], 3, false),
            (vec![v("me", 4), v("me", 4)], 5, false),
            (vec![v("me", 4), v("me", 4), v("me", 4)], 5, true),
        ];
        for (i, (votes, known, want)) in rows.into_iter().enumerate() {
            assert_eq!(won(&votes, "me", 4, known), want, "row {i}");
        }
    }

    #[test]
    fn short_list_is_refused_only_with_more_pods_known() {
        let prior = |others| Prior {
            epoch: 1,
            master: ep("10.0.0.1:6379"),
            old_self: None,
            known_sentinels: others,
            unclean_stop: None,
        };
        // (listed, other sentinels known) -> refused?
        for (listed, others, want) in [
            (2, 2, true),
            (1, 2, true),
            (3, 2, false),
            (2, 1, false),
            (1, 0, false),
            (0, 0, false),
            (0, 1, false),
            (0, 2, true),
            (3, 4, false),
        ] {
            assert_eq!(
                short_list(listed, &prior(others)).is_some(),
                want,
                "{listed} listed, {others} known"
            );
        }
    }

    #[test]
    fn dropped_tail_names_the_bytes_past_the_election() {
        let el = [(4, 1000), (2, 10)];
        let line = dropped_tail(3, Some(1500), &el).expect("a line");
        assert!(
            line.contains("epoch 4") && line.contains("500 bytes"),
            "{line}"
        );
        assert!(dropped_tail(3, Some(900), &el)
            .expect("a line")
            .contains("drops 0 bytes"));
        assert!(dropped_tail(3, None, &el)
            .expect("a line")
            .contains("unknown"));
        // an election this pod already knew about is no news
        assert_eq!(dropped_tail(4, Some(1500), &el), None);
        assert_eq!(dropped_tail(3, Some(1500), &[]), None);
    }

    #[test]
    fn an_election_above_the_answers_vetoes_taking_the_role() {
        let at = |e| [ans("10.0.0.1:6379", e), ans("10.0.0.1:6379", e)];
        // (markers, answers' epoch) -> vetoed?
        type Row<'a> = (&'a [(u64, u64)], u64, bool);
        let rows: [Row; 4] = [
            (&[], 3, false),
            (&[(5, 100)], 3, true),
            (&[(5, 100)], 5, false),
            (&[(2, 100), (3, 1)], 3, false),
        ];
        for (i, (elected, epoch, want)) in rows.into_iter().enumerate() {
            assert_eq!(veto(elected, &at(epoch)).is_some(), want, "row {i}");
        }
    }

    #[test]
    fn status_line_says_what_is_missing_and_when() {
        let b = claim("10.0.0.2:6379", 3, 900);
        let c = claim("10.0.0.3:6379", 3, 1000);
        assert_eq!(describe(&[], 3, 8000), None);
        let one = describe(std::slice::from_ref(&b), 3, 8000).expect("line");
        assert!(
            one.contains("1 of 3") && one.contains("missing: 1 more"),
            "{one}"
        );
        let two = describe(&[b.clone(), c], 3, 8000).expect("line");
        assert!(
            two.contains("a majority waits") && two.contains("8 s"),
            "{two}"
        );
        let off = describe(&[b], 3, 0).expect("line");
        assert!(off.contains("elections are off"), "{off}");
    }
}
