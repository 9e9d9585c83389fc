//! Who is master? Ask the sentinels before starting redis; decide with a pure function.
//!
//! The rule: the sentinels' answer wins over `--role` (a pod that comes back, with the same or a
//! new address, joins the master they name); `--role` decides only when no sentinel answers (first
//! boot of the cluster). A named master that is another pod is used only once it answers as a
//! master; while it does not (a failover is under way), we wait, bounded.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::config::Server;
use crate::config::{Config, Endpoint, Role};
use crate::redisio;
use crate::redisio::{resolved, resolved_all};
use crate::sentinel::{judge_entry, Answer};
use crate::state::Prior;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub role: Role,
    pub master: Endpoint,
    pub reason: String,
    /// A config epoch this pod's sentinel must claim (a forced promotion outranks every epoch
    /// seen, so the others follow it).
    pub claim_epoch: Option<u64>,
}

/// `SENTINEL MASTER <group>` on the sentinel at `s`, judged.
pub async fn ask(
    cfg: &Config,
    s: &Endpoint,
    group: &str,
    timeout: Duration,
) -> redis::RedisResult<Option<Answer>> {
    Ok(redisio::sentinel_master(&cfg.conn, s, group, timeout)
        .await?
        .as_ref()
        .map(judge_entry))
}

/// `ask` on an open connection.
pub async fn ask_on(
    con: &mut redis::aio::MultiplexedConnection,
    group: &str,
    timeout: Duration,
) -> redis::RedisResult<Option<Answer>> {
    Ok(redisio::sentinel_master_on(con, group, timeout)
        .await?
        .as_ref()
        .map(judge_entry))
}

/// The master the sentinels agree on: the highest config epoch wins (it is the latest failover);
/// among equals, one that answers as master (a pod back with a new address is named at its old
/// address by sentinels that have not seen it yet), then the address most sentinels give.
pub fn pick<'a>(answers: &'a [Answer], up: &[Endpoint]) -> Option<&'a Answer> {
    let top = answers.iter().map(|a| a.config_epoch).max()?;
    let mut votes: HashMap<&Endpoint, usize> = HashMap::new();
    for a in answers.iter().filter(|a| a.config_epoch == top) {
        *votes.entry(&a.master).or_default() += 1;
    }
    let (best, _) = votes.into_iter().max_by(|a, b| {
        up.contains(a.0)
            .cmp(&up.contains(b.0))
            .then(a.1.cmp(&b.1))
            .then_with(|| b.0.to_string().cmp(&a.0.to_string()))
    })?;
    answers
        .iter()
        .find(|a| a.config_epoch == top && &a.master == best)
}

/// The distinct masters named at the highest epoch: the ones worth asking whether they are up.
pub fn top_candidates(answers: &[Answer]) -> Vec<Endpoint> {
    let Some(top) = answers.iter().map(|a| a.config_epoch).max() else {
        return Vec::new();
    };
    let mut out: Vec<Endpoint> = Vec::new();
    for a in answers.iter().filter(|a| a.config_epoch == top) {
        if !out.contains(&a.master) {
            out.push(a.master.clone());
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Decided(Decision),
    /// Ask again later; the string says why.
    Retry(String),
    /// This pod was master and stopped uncleanly while a replica is up: the sentinels should
    /// fail it over (it is down: it has not started its data node). Ask again later, and
    /// `force_failover_due` says when to make them.
    AwaitFailover(String),
}

/// This pod, as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct Pod<'a> {
    pub role: Role,
    pub me: &'a Endpoint,
    /// The master Service, for a first boot's replica.
    pub fallback: Option<&'a Endpoint>,
    pub prior: Option<&'a Prior>,
    pub known: usize,
    /// Another pod's data node answers as a replica: it may hold writes this pod lacks.
    pub replica_up: bool,
    /// An unclean master has waited long enough for the sentinels to fail it over.
    pub unclean_wait_over: bool,
}

/// The pure decision. `up`: the masters named at the highest epoch that answered `role:master`
/// just now; `prior`: what this pod knew before (None: an empty state directory); `known`: how
/// many sentinels the cluster has (the configured list, or more if this pod knew more).
pub fn verdict(pod: &Pod, answers: &[Answer], up: &[Endpoint], refused: Option<&str>) -> Verdict {
    let Pod {
        role: cfg_role,
        me,
        fallback: fallback_master,
        prior,
        known,
        replica_up,
        unclean_wait_over,
    } = *pod;
    // A master killed or crashed may have acknowledged writes its AOF lacks but a replica holds
    // (appendfsync everysec). Coming back as master, it would make every replica resync from its
    // shorter copy and drop them. And a master back on a new address is, to the sentinels, still
    // the dead old one: they fail that over whatever this pod decides, so taking the role here
    // makes a second master whose writes the failover then discards (the soak: 4 writes lost).
    // While a replica is up, the sentinels should fail it over instead; bounded, since they may
    // be unable to (no quorum, TILT).
    // `named_old`: the sentinels name this pod by the address it had as master.
    let hold_master = |why: String, named_old: bool| -> Option<Verdict> {
        let p = prior?;
        let moved = named_old && p.old_self.as_ref().is_some_and(|o| o != me);
        let reason = match (p.unclean_stop, moved) {
            (Some(u), _) => u.why(),
            (None, true) => {
                "this pod was master at another address, which the sentinels will \
                              fail over"
            }
            (None, false) => return None,
        };
        (p.was_master() && replica_up && !unclean_wait_over).then(|| {
            Verdict::AwaitFailover(format!(
                "{why}, but {reason}; waiting for the sentinels to fail it over"
            ))
        })
    };
    if let Some(p) = prior {
        // A pod that never had a peer (a laptop, a single node): its own state is the whole
        // cluster's; with its sentinel silent, what it was is what it is.
        if known <= 1 && answers.is_empty() && refused.is_none() {
            return Verdict::Decided(if p.was_master() {
                Decision {
                    role: Role::Master,
                    master: me.clone(),
                    reason: format!("no peer was ever known and this pod was {p}"),
                    claim_epoch: None,
                }
            } else {
                follow_role(cfg_role, me, Some(&p.master), "no peer was ever known")
            });
        }
        // A pod with state is never on a first boot, and never decides on a minority: the
        // sentinels that answer may all be as stale as it is (a full outage, this pod back first).
        if answers.len() * 2 <= known {
            return Verdict::Retry(format!(
                "this pod has state ({p}); {} of {known} sentinels answer: waiting for a majority before deciding",
                answers.len()
            ));
        }
    }
    let Some(a) = pick(answers, up) else {
        // Somebody is there but will not talk to us: this is not a first boot, and guessing the
        // role from --role could make a second master.
        if let Some(why) = refused {
            return Verdict::Retry(format!(
                "a sentinel accepts connections but refuses us ({why}); check REDIS_SENTINEL_PASSWORD and the TLS settings"
            ));
        }
        return Verdict::Decided(follow_role(
            cfg_role,
            me,
            fallback_master,
            "no sentinel knows the group (first boot)",
        ));
    };
    if let Some(p) = prior {
        // Higher epoch wins: what this pod saw last is newer than anything that answers, so the
        // master they name holds an older history; following it would erase the newer writes.
        if a.config_epoch < p.epoch {
            return Verdict::Retry(format!(
                "sentinels name {} at epoch {}, but this pod saw epoch {}: not following an older history",
                a.master, a.config_epoch, p.epoch
            ));
        }
        // The master of the newest epoch is this very pod, known by its address of that time.
        let top_claims_us = answers.iter().any(|x| {
            x.config_epoch == a.config_epoch
                && p.epoch == a.config_epoch
                && p.was_master()
                && Some(&x.master) == p.old_self.as_ref()
        });
        if top_claims_us && !up.iter().any(|u| u != me) && !answers.iter().any(|x| x.unsettled) {
            if let Some(v) = hold_master(
                format!("the sentinels name this pod at epoch {}", p.epoch),
                true,
            ) {
                return v;
            }
            return Verdict::Decided(Decision {
                role: Role::Master,
                master: me.clone(),
                reason: format!(
                    "this pod was master at epoch {} (as {}), the newest epoch a majority of sentinels knows",
                    p.epoch, p.master
                ),
                // Back on a new address: the others' sentinels hold the old one at this epoch and
                // adopt another configuration only from a higher one (issue 28).
                claim_epoch: p.old_self.as_ref().filter(|o| *o != me).map(|_| p.epoch + 1),
            });
        }
        // The sentinels name this pod's old address at an epoch newer than it wrote down: it was
        // promoted and died before its sentinel recorded it, and is back on a new address. Its
        // data node runs nowhere, so the sentinels must fail that address over; while the other
        // pods wait with their early sentinels (failovers held off) the quorum is out of reach,
        // and this pod is the one that knows the address is dead (the soak, seed 20261206,
        // episode 116: a handover's new master SIGKILLed 0.4 s after its promotion; every pod
        // waited for the dead address for > 90 s). It makes a sentinel fail it over.
        let named_old_newer = a.config_epoch > p.epoch
            && p.old_self
                .as_ref()
                .is_some_and(|o| o != me && *o == a.master);
        if named_old_newer && replica_up {
            return Verdict::AwaitFailover(format!(
                "the sentinels name {} at epoch {}, this pod's old address (it knew epoch {}): it \
                 was promoted and is gone from there; waiting for the sentinels to fail it over",
                a.master, a.config_epoch, p.epoch
            ));
        }
    }
    if &a.master == me {
        // Any sentinel naming us that is failing us over counts, not only the picked answer
        // (only the leader flags failover_in_progress): starting as master would race it.
        let unsettled = answers
            .iter()
            .any(|x| &x.master == me && x.config_epoch == a.config_epoch && x.unsettled);
        if unsettled {
            return Verdict::Retry(format!(
                "sentinels name this pod ({me}) but are failing it over; waiting for them to settle"
            ));
        }
        if let Some(v) = hold_master(format!("sentinels name this pod ({me})"), false) {
            return v;
        }
        return Verdict::Decided(Decision {
            role: Role::Master,
            master: me.clone(),
            reason: format!(
                "sentinels name this pod ({me}) as master (epoch {})",
                a.config_epoch
            ),
            claim_epoch: None,
        });
    }
    if up.contains(&a.master) {
        Verdict::Decided(Decision {
            role: Role::Replica,
            master: a.master.clone(),
            reason: format!(
                "sentinels name {} as master (epoch {}) and it answers as master",
                a.master, a.config_epoch
            ),
            claim_epoch: None,
        })
    } else {
        Verdict::Retry(format!(
            "sentinels name {} as master (epoch {}) but it does not answer as master yet",
            a.master, a.config_epoch
        ))
    }
}

fn follow_role(role: Role, me: &Endpoint, fallback: Option<&Endpoint>, why: &str) -> Decision {
    match (role, fallback) {
        // The master Service is this very pod (a StatefulSet's pod 0 behind its own name): a
        // replica of itself makes no sense; it is the first master.
        (Role::Replica, Some(m)) if m == me => Decision {
            role: Role::Master,
            master: me.clone(),
            reason: format!("{why}; the master address {m} is this pod"),
            claim_epoch: None,
        },
        (Role::Replica, Some(m)) => Decision {
            role,
            master: m.clone(),
            reason: format!("{why}; --role replica of {m}"),
            claim_epoch: None,
        },
        _ => Decision {
            role: Role::Master,
            master: me.clone(),
            reason: format!("{why}; --role master"),
            claim_epoch: None,
        },
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (master {}): {}", self.role, self.master, self.reason)
    }
}

/// One round's replies: how many sentinels answered, their answers, and the errors of sentinels
/// that accept connections but refuse us (TLS handshake, password): those are not "nobody home".
struct Round {
    reached: usize,
    answers: Vec<Answer>,
    refused: Vec<String>,
}

/// Queries every sentinel in parallel, one bounded round.
async fn ask_all(cfg: &Config, sentinels: &[Endpoint], timeout: Duration) -> Round {
    let mut set = tokio::task::JoinSet::new();
    for s in sentinels {
        let (s, group, cfg) = (s.clone(), cfg.group.clone(), cfg.clone());
        set.spawn(async move {
            let r = ask(&cfg, &s, &group, timeout).await;
            // A failed query to a port that accepts TCP is a refusal, not an absence.
            let refused = match &r {
                Err(e) if redisio::tcp_reachable(&s, timeout).await => Some(format!("{s}: {e}")),
                _ => None,
            };
            (r, refused)
        });
    }
    let mut round = Round {
        reached: 0,
        answers: Vec::new(),
        refused: Vec::new(),
    };
    while let Some(r) = set.join_next().await {
        match r {
            Ok((Ok(Some(a)), _)) => {
                round.reached += 1;
                round.answers.push(a);
            }
            Ok((Ok(None), _)) => round.reached += 1,
            Ok((Err(_), Some(why))) => round.refused.push(why),
            Ok((Err(_), None)) | Err(_) => {}
        }
    }
    round
}

/// How long `decide` may look before it reports back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// Boot, before anything runs: a few rounds. A pod with state that cannot decide by then
    /// gets `Undecided::NeedsOwnSentinel`: it must start its sentinel so the other pods can see
    /// what it knows (in a full outage every pod waits for the others' sentinels).
    Boot,
    /// The discovery budget (a restart of the data node): give up after it (exit 75 / backoff).
    Budget,
    /// A pod with state whose sentinel runs first: wait for a majority as long as it takes.
    Forever,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undecided {
    /// Sentinels are there but no decision was possible within the budget: exit 75.
    GaveUp(String),
    /// A pod with state could not decide at boot; start the sentinel first, then decide.
    NeedsOwnSentinel(String),
}

impl fmt::Display for Undecided {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Undecided::GaveUp(w) | Undecided::NeedsOwnSentinel(w) => f.write_str(w),
        }
    }
}

/// Whether a pod awaiting its own failover (`Verdict::AwaitFailover`) should make a sentinel
/// start it now. Left alone, the sentinels fail a dead master over within about down-after + 2 s
/// of its death (s_down, the quorum's o_down, an election), and while they do, some of them flag
/// it o_down or failing over. Once this pod has waited that long and none does, they cannot: a
/// sentinel in TILT (after any stall of its process; 30 s unless PID 1 set its period) makes the quorum unreachable, and an
/// aborted failover is retried only after 2 × failover-timeout. Forcing earlier could race their
/// own failover with a second one. Again at most once per failover-timeout (a forced failover can
/// be aborted too).
pub fn force_failover_due(
    awaiting: Duration,
    since_forced: Option<Duration>,
    down_after: Duration,
    failover_timeout: Duration,
    answers: &[Answer],
) -> bool {
    !answers.iter().any(|a| a.unsettled)
        && awaiting >= down_after + Duration::from_secs(2)
        && since_forced.map_or(true, |d| d >= failover_timeout)
}

/// `SENTINEL FAILOVER` on the first other pod's sentinel not in TILT (one in TILT accepts the
/// command and acts on it 30 s later). Safe without the quorum because the master it fails over
/// is this pod's data node, which is not running. Never this pod's own early sentinel: it is
/// restarted as soon as the role is decided, and a leader restarted before its failover ends
/// leaves the promoted replica for the others to turn back into a replica, with its writes.
async fn force_failover(
    cfg: &Config,
    sentinels: &[Endpoint],
    local: &Endpoint,
    named: Option<&Endpoint>,
) -> (bool, String) {
    let t = Duration::from_millis(500);
    let mut why = Vec::new();
    for s in sentinels.iter().filter(|s| *s != local) {
        match redisio::sentinel_tilt(&cfg.conn, s, t).await {
            Ok(false) => {}
            Ok(true) => {
                why.push(format!("{s} is in TILT"));
                continue;
            }
            Err(e) => {
                why.push(format!("{s}: {e}"));
                continue;
            }
        }
        match redisio::sentinel_group_cmd(&cfg.conn, s, "FAILOVER", &cfg.group, t).await {
            Ok(()) => return (true, format!("{s} started a failover")),
            Err(e) if e.code() == Some("INPROG") => {
                let failing = redisio::sentinel_master(&cfg.conn, s, &cfg.group, t)
                    .await
                    .ok()
                    .flatten()
                    .map(|m| m.addr);
                if inprog_is_ours(failing.as_ref(), named) {
                    return (true, format!("{s} is already failing over"));
                }
                why.push(format!(
                    "{s} is finishing the failover of another master ({})",
                    failing.map_or("?".into(), |f| f.to_string())
                ));
            }
            Err(e) => why.push(format!("{s}: {e}")),
        }
    }
    (
        false,
        format!("no sentinel could start a failover ({})", why.join("; ")),
    )
}

/// Whether a sentinel's INPROG answer is the failover of the address this pod awaits (`named`)
/// or one it is still finishing of an earlier master (its entry keeps the OLD master's address
/// until that failover ends). The soak (seed 20261207, episode 82): a crash failover's leader,
/// its promoted replica SIGKILLed, stayed "in progress" for 37 s; the returning pod asked only
/// it and got INPROG each time (34 s without a master). An earlier failover there says nothing
/// about ours, so the next sentinel is asked; when in doubt (no answer), it counts as ours.
fn inprog_is_ours(failing: Option<&Endpoint>, named: Option<&Endpoint>) -> bool {
    match (failing, named) {
        (Some(f), Some(n)) => f == n,
        _ => true,
    }
}

/// Whether another pod's data node (the configured pods' hosts on the redis port) answers as a
/// replica right now.
async fn any_replica_up(
    cfg: &Config,
    me: &Endpoint,
    old_self: Option<&Endpoint>,
    timeout: Duration,
) -> bool {
    for s in resolved_all(&cfg.sentinels).await {
        let e = Endpoint {
            host: s.host,
            port: cfg.redis_port,
        };
        if &e == me || Some(&e) == old_self {
            continue;
        }
        if matches!(redisio::repl(&cfg.conn, &e, timeout).await, Ok(r) if !r.is_master) {
            return true;
        }
    }
    false
}

/// Decides the role. `include_local`: also ask this pod's own sentinel (it runs when a crashed
/// data node is restarted, and when a pod with state started it to show what it knows).
pub async fn decide(
    cfg: &Config,
    include_local: bool,
    patience: Patience,
    prior: Option<&Prior>,
) -> Result<Decision, Undecided> {
    let me = cfg.own(Server::Redis);
    let fallback = match &cfg.master_service {
        Some(m) => Some(resolved(m).await),
        None => None,
    };
    if cfg.sentinels.is_empty() && !include_local && prior.is_none() {
        return Ok(follow_role(
            cfg.role,
            &me,
            fallback.as_ref(),
            "no sentinels configured",
        ));
    }
    // Every pod's sentinel counts for the majority, the ones that do not answer too.
    let known = cfg
        .sentinels
        .len()
        .max(prior.map_or(0, |p| p.known_sentinels + 1));
    let started = tokio::time::Instant::now();
    let budget = Duration::from_millis(cfg.discovery_timeout_ms);
    let per_try = Duration::from_millis(1000);
    // With nobody answering, a few quick rounds are enough: this is a first boot (or every
    // sentinel is down, and then nothing better than the configured role is known).
    let mut silent_rounds = 0;
    let mut last_log = None::<tokio::time::Instant>;
    let mut pacing = Forcing::default();
    let mut election = crate::outage::Waiting::default();
    for round in 0u32..u32::MAX {
        let mut sentinels = resolved_all(&cfg.sentinels).await;
        let local = cfg.own(Server::Sentinel);
        if include_local && !sentinels.contains(&local) {
            sentinels.insert(0, local.clone());
        }
        let Round {
            reached,
            answers,
            refused,
        } = ask_all(cfg, &sentinels, per_try).await;
        let refused = (!refused.is_empty()).then(|| refused.join("; "));
        if reached == 0 && refused.is_none() && silent_rounds < 2 {
            silent_rounds += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        let mut up = Vec::new();
        for c in top_candidates(&answers) {
            if c != me && redisio::is_master(&cfg.conn, &c, per_try).await {
                up.push(c);
            }
        }
        let unclean_wait_over = started.elapsed() >= cfg.timings().unclean_master_wait;
        let replica_up = replica_up(cfg, &me, prior, unclean_wait_over, per_try).await;
        let pod = Pod {
            role: cfg.role,
            me: &me,
            fallback: fallback.as_ref(),
            prior,
            known,
            replica_up,
            unclean_wait_over,
        };
        let v = verdict(&pod, &answers, &up, refused.as_deref());
        pacing
            .after(cfg, &v, patience, &answers, &up, &sentinels, &local)
            .await;
        if let Some(d) = forced_promotion(cfg, &v, prior, patience, &answers, &me) {
            return Ok(d);
        }
        let v = outage_rules(
            cfg,
            v,
            prior,
            patience,
            &mut election,
            &sentinels,
            &answers,
            &up,
            known,
            &me,
        )
        .await;
        if let Some(end) = settle(v, prior, patience, started, budget, round, &mut last_log) {
            return end;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(Undecided::GaveUp(
        "discovery rounds exhausted without a decision".into(),
    ))
}

/// Since when this pod has awaited its own failover, and when it last forced one.
#[derive(Default)]
struct Forcing {
    awaiting: Option<tokio::time::Instant>,
    forced: Option<tokio::time::Instant>,
}

impl Forcing {
    /// After a round's verdict: a pod awaiting its own failover makes a sentinel start it once
    /// the sentinels would have by themselves (`force_failover_due`).
    #[allow(clippy::too_many_arguments)]
    async fn after(
        &mut self,
        cfg: &Config,
        v: &Verdict,
        patience: Patience,
        answers: &[Answer],
        up: &[Endpoint],
        sentinels: &[Endpoint],
        local: &Endpoint,
    ) {
        if let Verdict::AwaitFailover(_) = v {
            let since = *self.awaiting.get_or_insert_with(tokio::time::Instant::now);
            if patience != Patience::Boot
                && force_failover_due(
                    since.elapsed(),
                    self.forced.map(|t| t.elapsed()),
                    Duration::from_millis(cfg.down_after_ms),
                    Duration::from_millis(cfg.failover_timeout_ms),
                    answers,
                )
            {
                // Spaced by failover-timeout only once one started (it can be aborted); an
                // attempt that found no sentinel able to start one (a peer pod down, TILT) is
                // tried again next round (the soak, seed 20261206: a 10 s wait after such an
                // attempt, a 15.6 s write gap).
                let named = pick(answers, up).map(|a| a.master.clone());
                let (started, outcome) =
                    force_failover(cfg, sentinels, local, named.as_ref()).await;
                if started {
                    self.forced = Some(tokio::time::Instant::now());
                }
                tracing::warn!(waited_ms = since.elapsed().as_millis() as u64, %outcome, "no sentinel fails this pod over by itself: forcing the failover");
            }
        } else {
            self.awaiting = None;
        }
    }
}

/// Whether a pod that knew a master role may have a replica promoted in its place.
async fn replica_up(
    cfg: &Config,
    me: &Endpoint,
    prior: Option<&Prior>,
    unclean_wait_over: bool,
    per_try: Duration,
) -> bool {
    match prior {
        // A pod back on a new address may have been promoted at its old one unknowingly.
        Some(p)
            if (p.was_master() && p.unclean_stop.is_some() && !unclean_wait_over)
                || p.old_self.as_ref().is_some_and(|o| o != me) =>
        {
            any_replica_up(cfg, me, p.old_self.as_ref(), per_try).await
        }
        _ => false,
    }
}

/// The operator's explicit choice (`promote --force`) for a majority that never returns.
fn forced_promotion(
    cfg: &Config,
    v: &Verdict,
    prior: Option<&Prior>,
    patience: Patience,
    answers: &[Answer],
    me: &Endpoint,
) -> Option<Decision> {
    if let (
        Verdict::Retry(why) | Verdict::AwaitFailover(why),
        Some(p),
        Patience::Budget | Patience::Forever,
    ) = (v, prior, patience)
    {
        if crate::state::take_promotion_request(cfg) {
            let seen: Vec<String> = answers
                .iter()
                .map(|a| format!("{} at epoch {}", a.master, a.config_epoch))
                .collect();
            let claim = answers
                .iter()
                .map(|a| a.config_epoch)
                .max()
                .unwrap_or(0)
                .max(p.epoch)
                + 1;
            tracing::warn!(
                this_pod_knew = %p,
                sentinels_answered = %seen.join(", "),
                waiting_for = %why,
                claim_epoch = claim,
                "promote --force: becoming master with this pod's data; writes only the absent pods hold are discarded"
            );
            return Some(Decision {
                role: Role::Master,
                master: me.clone(),
                reason: format!("operator forced promotion (promote --force) at epoch {claim}"),
                claim_epoch: Some(claim),
            });
        }
    }
    None
}

/// After a full outage: the majority's election, and the veto of an election seen elsewhere.
#[allow(clippy::too_many_arguments)]
async fn outage_rules(
    cfg: &Config,
    v: Verdict,
    prior: Option<&Prior>,
    patience: Patience,
    election: &mut crate::outage::Waiting,
    sentinels: &[Endpoint],
    answers: &[Answer],
    up: &[Endpoint],
    known: usize,
    me: &Endpoint,
) -> Verdict {
    // After a full outage whose last master stays away, the majority elects (outage.rs).
    let v = match (v, prior, patience) {
        (Verdict::Retry(why), Some(p), Patience::Forever) => {
            match election
                .round(cfg, p, sentinels, answers, up, known, me)
                .await
            {
                Ok((epoch, reason)) => {
                    return Verdict::Decided(Decision {
                        role: Role::Master,
                        master: me.clone(),
                        reason,
                        claim_epoch: Some(epoch),
                    })
                }
                Err(note) => Verdict::Retry(format!("{why}; {note}")),
            }
        }
        (v, _, _) => v,
    };
    // A master elected while this pod was away may not answer at its epoch yet (outage.rs).
    let v = match (v, prior) {
        (Verdict::Decided(d), Some(_)) if d.role == Role::Master => {
            match crate::outage::vetoed(cfg, sentinels, answers).await {
                Some(why) => Verdict::Retry(why),
                None => Verdict::Decided(d),
            }
        }
        (v, _) => v,
    };
    v
}

/// What a round's final verdict means for the wait: Some(the end of `decide`), or None to go on.
fn settle(
    v: Verdict,
    prior: Option<&Prior>,
    patience: Patience,
    started: tokio::time::Instant,
    budget: Duration,
    round: u32,
    last_log: &mut Option<tokio::time::Instant>,
) -> Option<Result<Decision, Undecided>> {
    match v {
        Verdict::Decided(d) => return Some(Ok(d)),
        Verdict::Retry(why) | Verdict::AwaitFailover(why)
            if prior.is_some() && patience == Patience::Boot =>
        {
            return Some(Err(Undecided::NeedsOwnSentinel(why)));
        }
        // A pod with state waits as long as it takes for enough of the cluster to be back:
        // it never guesses. The orchestrator sees it unready; SIGTERM ends the wait.
        Verdict::Retry(why) | Verdict::AwaitFailover(why) if patience == Patience::Forever => {
            if last_log.map_or(true, |t| t.elapsed() >= Duration::from_secs(5)) {
                *last_log = Some(tokio::time::Instant::now());
                tracing::warn!(round, waited_s = started.elapsed().as_secs(), reason = %why, "role not decided: waiting");
            }
        }
        // Somebody answered or refused all along: this is no first boot, and --role could
        // make a second master (we may be cut off from the master they name, or a failover
        // of this very pod may be retrying). Give up instead; an orchestrator's restart or
        // the supervisor's backoff asks again later.
        Verdict::Retry(why) | Verdict::AwaitFailover(why) if started.elapsed() >= budget => {
            return Some(Err(Undecided::GaveUp(format!(
                "gave up after {} ms: {why}",
                budget.as_millis()
            ))));
        }
        Verdict::Retry(why) | Verdict::AwaitFailover(why) => {
            tracing::info!(round, reason = %why, "role not decided yet")
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentinel::fixtures::{ans, ep};
    use crate::state::UncleanStop;

    #[allow(clippy::too_many_arguments)]
    fn verdict(
        role: Role,
        me: &Endpoint,
        fallback: Option<&Endpoint>,
        answers: &[Answer],
        up: &[Endpoint],
        refused: Option<&str>,
        prior: Option<&Prior>,
        known: usize,
    ) -> Verdict {
        let pod = Pod {
            role,
            me,
            fallback,
            prior,
            known,
            replica_up: false,
            unclean_wait_over: false,
        };
        super::verdict(&pod, answers, up, refused)
    }

    #[test]
    fn pick_prefers_latest_epoch_then_majority() {
        let a = [
            ans("10.0.0.1:6379", 1, false),
            ans("10.0.0.2:6379", 2, false),
            ans("10.0.0.1:6379", 1, false),
        ];
        assert_eq!(
            pick(&a, &[]).map(|a| a.master.to_string()),
            Some("10.0.0.2:6379".into())
        );
        let b = [
            ans("10.0.0.1:6379", 3, false),
            ans("10.0.0.2:6379", 3, false),
            ans("10.0.0.2:6379", 3, false),
        ];
        assert_eq!(
            pick(&b, &[]).map(|a| a.master.to_string()),
            Some("10.0.0.2:6379".into())
        );
        assert_eq!(pick(&[], &[]), None);
    }

    #[test]
    fn replica_whose_master_address_is_itself_is_master() {
        let me = ep("10.0.0.9:6379");
        match verdict(Role::Replica, &me, Some(&me), &[], &[], None, None, 3) {
            Verdict::Decided(d) => assert_eq!((d.role, d.master), (Role::Master, me)),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn refusing_sentinels_are_not_a_first_boot() {
        let me = ep("10.0.0.9:6379");
        let v = verdict(
            Role::Master,
            &me,
            None,
            &[],
            &[],
            Some("10.0.0.2:26379: WRONGPASS"),
            None,
            3,
        );
        assert!(
            matches!(v, Verdict::Retry(ref why) if why.contains("WRONGPASS")),
            "{v:?}"
        );
    }

    #[test]
    fn prior_parsed_from_sentinels_own_file() {
        let text = "port 26379\nsentinel announce-ip \"10.0.0.3\"\nsentinel monitor mymaster 10.0.0.3 6379 2\nsentinel config-epoch mymaster 4\nsentinel known-sentinel mymaster 10.0.0.1 26379 aaa\nsentinel known-sentinel mymaster 10.0.0.2 26379 bbb\n";
        let p = Prior::parse(text, "mymaster", 6379).expect("prior");
        assert_eq!(p.epoch, 4);
        assert!(p.was_master());
        assert_eq!(p.known_sentinels, 2);
        let r = Prior::parse(
            &text.replace("announce-ip \"10.0.0.3\"", "announce-ip 10.0.0.2"),
            "mymaster",
            6379,
        )
        .expect("prior");
        assert!(!r.was_master());
        assert_eq!(Prior::parse("port 1\n", "mymaster", 6379), None);
    }

    /// Issue 17's full outage: a (stale, master at epoch 0), b (replica, epoch 1), c (master at
    /// epoch 1); all back with new addresses, in every order.
    #[test]
    fn full_outage_return_orders() {
        let a_old = ep("10.0.0.1:6379");
        let c_old = ep("10.0.0.3:6379");
        let (a, b, c) = (
            ep("10.0.1.1:6379"),
            ep("10.0.1.2:6379"),
            ep("10.0.1.3:6379"),
        );
        let prior_a = Prior {
            epoch: 0,
            master: a_old.clone(),
            old_self: Some(a_old.clone()),
            known_sentinels: 2,
            unclean_stop: None,
        };
        let prior_b = Prior {
            epoch: 1,
            master: c_old.clone(),
            old_self: Some(ep("10.0.0.2:6379")),
            known_sentinels: 2,
            unclean_stop: None,
        };
        let prior_c = Prior {
            epoch: 1,
            master: c_old.clone(),
            old_self: Some(c_old.clone()),
            known_sentinels: 2,
            unclean_stop: None,
        };
        // what each pod's early sentinel answers
        let claim_a = ans("10.0.0.1:6379", 0, false);
        let claim_b = ans("10.0.0.3:6379", 1, false);
        let claim_c = ans("10.0.0.3:6379", 1, false);
        let decided = |v: Verdict| match v {
            Verdict::Decided(d) => Some((d.role, d.master)),
            Verdict::Retry(_) | Verdict::AwaitFailover(_) => None,
        };
        // a alone: never crowns itself, never falls back to --role
        let v = verdict(
            Role::Master,
            &a,
            None,
            std::slice::from_ref(&claim_a),
            &[],
            None,
            Some(&prior_a),
            3,
        );
        assert_eq!(decided(v), None);
        // a alone with an empty answer set (its sentinel not up yet): still waits
        let v = verdict(Role::Master, &a, None, &[], &[], None, Some(&prior_a), 3);
        assert_eq!(decided(v), None);
        // a and b: b's newer epoch wins, its master (c) is not back: both wait
        let two = [claim_a.clone(), claim_b.clone()];
        assert_eq!(
            decided(verdict(
                Role::Master,
                &a,
                None,
                &two,
                &[],
                None,
                Some(&prior_a),
                3
            )),
            None
        );
        assert_eq!(
            decided(verdict(
                Role::Replica,
                &b,
                None,
                &two,
                &[],
                None,
                Some(&prior_b),
                3
            )),
            None
        );
        // c arrives: it recognises itself as the master of epoch 1 by its old address
        let three = [claim_a.clone(), claim_b.clone(), claim_c.clone()];
        assert_eq!(
            decided(verdict(
                Role::Replica,
                &c,
                None,
                &three,
                &[],
                None,
                Some(&prior_c),
                3
            )),
            Some((Role::Master, c.clone()))
        );
        // ... also with only b's claim and its own (a still away)
        assert_eq!(
            decided(verdict(
                Role::Replica,
                &c,
                None,
                &[claim_b.clone(), claim_c.clone()],
                &[],
                None,
                Some(&prior_c),
                3
            )),
            Some((Role::Master, c.clone()))
        );
        // once c runs as master and its sentinel names it at its new address, a and b follow it
        let after = [
            claim_a.clone(),
            claim_b.clone(),
            ans("10.0.1.3:6379", 1, false),
        ];
        let up = [c.clone()];
        assert_eq!(
            decided(verdict(
                Role::Master,
                &a,
                None,
                &after,
                &up,
                None,
                Some(&prior_a),
                3
            )),
            Some((Role::Replica, c.clone()))
        );
        assert_eq!(
            decided(verdict(
                Role::Replica,
                &b,
                None,
                &after,
                &up,
                None,
                Some(&prior_b),
                3
            )),
            Some((Role::Replica, c.clone()))
        );
        // a stale master that crowned itself (epoch 0) is never followed by a pod that saw epoch 1
        let crowned = [
            ans("10.0.1.1:6379", 0, false),
            ans("10.0.1.1:6379", 0, false),
        ];
        assert_eq!(
            decided(verdict(
                Role::Replica,
                &b,
                None,
                &crowned,
                std::slice::from_ref(&a),
                None,
                Some(&prior_b),
                3
            )),
            None
        );
    }

    #[test]
    fn verdict_table() {
        let me = ep("10.0.0.9:6379");
        let svc = ep("10.0.0.1:6379");
        let other = ep("10.0.0.2:6379");
        type Row<'a> = (
            Role,
            Vec<Answer>,
            Option<bool>,
            Result<(Role, &'a Endpoint), ()>,
        );
        let rows: Vec<Row> = vec![
            // nobody knows: follow the role
            (Role::Master, vec![], None, Ok((Role::Master, &me))),
            (Role::Replica, vec![], None, Ok((Role::Replica, &svc))),
            // sentinels name this pod: master, whatever the role says
            (
                Role::Replica,
                vec![ans("10.0.0.9:6379", 4, false)],
                None,
                Ok((Role::Master, &me)),
            ),
            // sentinels name another pod that is up: replica, whatever the role says
            (
                Role::Master,
                vec![ans("10.0.0.2:6379", 4, false)],
                Some(true),
                Ok((Role::Replica, &other)),
            ),
            // ... that is not up: wait (the old-IP-comes-back case)
            (
                Role::Master,
                vec![ans("10.0.0.2:6379", 4, false)],
                Some(false),
                Err(()),
            ),
            // this pod named but reported down: wait for the sentinels to settle
            (
                Role::Master,
                vec![ans("10.0.0.9:6379", 4, true)],
                None,
                Err(()),
            ),
            // ... also when only one of the sentinels (the failover leader) says so
            (
                Role::Master,
                vec![
                    ans("10.0.0.9:6379", 4, false),
                    ans("10.0.0.9:6379", 4, false),
                    ans("10.0.0.9:6379", 4, true),
                ],
                None,
                Err(()),
            ),
        ];
        for (role, answers, up, want) in rows {
            let up: Vec<Endpoint> = match up {
                Some(true) => top_candidates(&answers),
                _ => Vec::new(),
            };
            let got = verdict(role, &me, Some(&svc), &answers, &up, None, None, 3);
            match (got, want) {
                (Verdict::Decided(d), Ok((r, m))) => {
                    assert_eq!((d.role, &d.master), (r, m), "{answers:?}")
                }
                (Verdict::Retry(_), Err(())) => {}
                (g, w) => panic!("{answers:?} up={up:?}: got {g:?}, want {w:?}"),
            }
        }
    }

    /// Issue 14's soak (30-min bench, episode 207): a master stopped cleanly without a handover
    /// and back on a new address, while the sentinels still named its old one at the newest
    /// epoch, took the role at once; they failed the dead old address over a second later and
    /// the 4 writes it had acknowledged meanwhile were gone. While a replica is up it waits.
    #[test]
    fn master_back_on_a_new_address_waits_for_the_failover_of_the_old_one() {
        let me = ep("10.0.0.9:6379");
        let old = ep("10.0.0.3:6379");
        let p = Prior {
            epoch: 5,
            master: old.clone(),
            old_self: Some(old.clone()),
            known_sentinels: 2,
            unclean_stop: None,
        };
        let names_old = [
            ans("10.0.0.3:6379", 5, false),
            ans("10.0.0.3:6379", 5, false),
        ];
        let names_me = [
            ans("10.0.0.9:6379", 5, false),
            ans("10.0.0.9:6379", 5, false),
        ];
        // (answers, a replica up, wait over) -> awaits the failover?
        let cases: [(&[Answer], bool, bool, bool); 4] = [
            (&names_old, true, false, true),
            (&names_old, false, false, false),
            (&names_old, true, true, false),
            // the sentinels already know the new address: nothing to fail over
            (&names_me, true, false, false),
        ];
        for (i, (answers, replica_up, over, waits)) in cases.into_iter().enumerate() {
            let pod = Pod {
                role: Role::Replica,
                me: &me,
                fallback: None,
                prior: Some(&p),
                known: 3,
                replica_up,
                unclean_wait_over: over,
            };
            let v = super::verdict(&pod, answers, &[], None);
            if waits {
                assert!(
                    matches!(&v, Verdict::AwaitFailover(w) if w.contains("another address")),
                    "case {i}: {v:?}"
                );
            } else {
                assert!(
                    matches!(&v, Verdict::Decided(d) if d.role == Role::Master && d.master == me),
                    "case {i}: {v:?}"
                );
            }
        }
    }

    /// Issue 14's soak: the master pod SIGKILLed and back while another pod's sentinel was in
    /// TILT waited 20-53 s for a failover nobody could start. The pod forces it, but only once the
    /// sentinels' own failover had its chance, never while one is deciding, and not again within
    /// a failover-timeout.
    #[test]
    fn forced_failover_only_once_the_sentinels_cannot() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let quiet = [
            ans("10.0.0.3:6379", 5, false),
            ans("10.0.0.3:6379", 5, false),
        ];
        let deciding = [
            ans("10.0.0.3:6379", 5, true),
            ans("10.0.0.3:6379", 5, false),
        ];
        // (awaiting, since last forced, answers) -> force now? (down-after 2 s, failover-timeout 6 s)
        let cases: [(Duration, Option<Duration>, &[Answer], bool); 8] = [
            (s(0), None, &quiet, false),
            (ms(3999), None, &quiet, false),
            (s(4), None, &quiet, true),
            (s(30), None, &quiet, true),
            (s(30), None, &deciding, false),
            (s(30), Some(s(1)), &quiet, false),
            (s(30), Some(ms(5999)), &quiet, false),
            (s(30), Some(s(6)), &quiet, true),
        ];
        for (i, (awaiting, since, answers, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                super::force_failover_due(awaiting, since, s(2), s(6), answers),
                want,
                "case {i}"
            );
        }
    }

    /// Issue 14's soak: the master pod SIGKILLed and back before any failover. Its AOF may lack
    /// writes a replica holds, so while a replica answers it waits for the sentinels to fail it
    /// over; once that wait is over, or with no replica up, or after a clean stop, it takes the
    /// role back as before.
    #[test]
    fn unclean_master_waits_for_a_failover_while_a_replica_is_up() {
        let me = ep("10.0.0.3:6379");
        let prior = |unclean_stop| Prior {
            epoch: 5,
            master: me.clone(),
            old_self: Some(me.clone()),
            known_sentinels: 2,
            unclean_stop,
        };
        let names_us = [
            ans("10.0.0.3:6379", 5, false),
            ans("10.0.0.3:6379", 5, false),
        ];
        let promoted = ep("10.0.0.1:6379");
        let after_failover = [
            ans("10.0.0.1:6379", 6, false),
            ans("10.0.0.1:6379", 6, false),
        ];
        let role = |v: Verdict| match v {
            Verdict::Decided(d) => Some((d.role, d.master)),
            Verdict::Retry(_) | Verdict::AwaitFailover(_) => None,
        };
        const C: Option<UncleanStop> = Some(UncleanStop::Crashed);
        const N: Option<UncleanStop> = Some(UncleanStop::NotHandedOver);
        // (unclean stop, a replica up, wait over, answers, masters up) -> decision
        type Case<'a> = (
            Option<UncleanStop>,
            bool,
            bool,
            &'a [Answer],
            &'a [Endpoint],
            Option<(Role, Endpoint)>,
        );
        let cases: [Case; 11] = [
            (C, true, false, &names_us, &[], None),
            // a master stopped cleanly but not handed over waits the same way (soak, seed 20261206)
            (N, true, false, &names_us, &[], None),
            (
                N,
                false,
                false,
                &names_us,
                &[],
                Some((Role::Master, me.clone())),
            ),
            (
                N,
                true,
                false,
                &after_failover,
                std::slice::from_ref(&promoted),
                Some((Role::Replica, promoted.clone())),
            ),
            (
                N,
                true,
                true,
                &names_us,
                &[],
                Some((Role::Master, me.clone())),
            ),
            (
                C,
                true,
                true,
                &names_us,
                &[],
                Some((Role::Master, me.clone())),
            ),
            (
                C,
                false,
                false,
                &names_us,
                &[],
                Some((Role::Master, me.clone())),
            ),
            (
                None,
                true,
                false,
                &names_us,
                &[],
                Some((Role::Master, me.clone())),
            ),
            (
                C,
                true,
                false,
                &after_failover,
                std::slice::from_ref(&promoted),
                Some((Role::Replica, promoted.clone())),
            ),
            // named at an epoch this pod never saw as master: the plain "names this pod" rule
            (
                C,
                true,
                false,
                &[
                    ans("10.0.0.3:6379", 7, false),
                    ans("10.0.0.3:6379", 7, false),
                ],
                &[],
                None,
            ),
            (
                C,
                false,
                false,
                &[
                    ans("10.0.0.3:6379", 7, false),
                    ans("10.0.0.3:6379", 7, false),
                ],
                &[],
                Some((Role::Master, me.clone())),
            ),
        ];
        for (i, (unclean, replica_up, over, answers, up, want)) in cases.into_iter().enumerate() {
            let p = prior(unclean);
            let pod = Pod {
                role: Role::Replica,
                me: &me,
                fallback: None,
                prior: Some(&p),
                known: 3,
                replica_up,
                unclean_wait_over: over,
            };
            let v = super::verdict(&pod, answers, up, None);
            if want.is_none() {
                assert!(
                    matches!(&v, Verdict::AwaitFailover(why) if unclean.is_some_and(|u| why.contains(u.why()))),
                    "case {i}: {v:?}"
                );
            }
            assert_eq!(role(v), want, "case {i}");
        }
    }

    /// Issue 28: the master of the newest epoch back on a new address claims the next epoch, so
    /// the sentinels that still hold its old address at that epoch adopt the new one; back on
    /// its old address it claims nothing.
    #[test]
    fn master_back_on_a_new_address_claims_the_next_epoch() {
        let old = ep("10.0.0.3:6379");
        let p = Prior {
            epoch: 1,
            master: old.clone(),
            old_self: Some(old.clone()),
            known_sentinels: 2,
            unclean_stop: None,
        };
        let names_old = [
            ans("10.0.0.3:6379", 1, false),
            ans("10.0.0.3:6379", 1, false),
        ];
        // (this pod's address now) -> claimed epoch
        for (now, want) in [("10.0.1.3:6379", Some(2)), ("10.0.0.3:6379", None)] {
            let me = ep(now);
            let pod = Pod {
                role: Role::Replica,
                me: &me,
                fallback: None,
                prior: Some(&p),
                known: 3,
                replica_up: false,
                unclean_wait_over: false,
            };
            match super::verdict(&pod, &names_old, &[], None) {
                Verdict::Decided(d) => {
                    assert_eq!((d.role, d.claim_epoch), (Role::Master, want), "{now}")
                }
                v => panic!("{now}: {v:?}"),
            }
        }
    }

    #[test]
    fn a_pod_promoted_unknowingly_at_its_old_address_awaits_that_failover() {
        // Its sentinel file says replica of .1 at epoch 63; it served as .4 (served-as); it is
        // back as .7; the sentinels name .4 at epoch 64.
        let me = ep("10.0.0.7:6379");
        let p = Prior {
            epoch: 63,
            master: ep("10.0.0.1:6379"),
            old_self: Some(ep("10.0.0.4:6379")),
            known_sentinels: 2,
            unclean_stop: None,
        };
        let names_old = [
            ans("10.0.0.4:6379", 64, false),
            ans("10.0.0.4:6379", 64, false),
        ];
        let names_other = [
            ans("10.0.0.2:6379", 64, false),
            ans("10.0.0.2:6379", 64, false),
        ];
        let pod = |replica_up| Pod {
            role: Role::Replica,
            me: &me,
            fallback: None,
            prior: Some(&p),
            known: 3,
            replica_up,
            unclean_wait_over: false,
        };
        let v = super::verdict(&pod(true), &names_old, &[], None);
        assert!(
            matches!(&v, Verdict::AwaitFailover(w) if w.contains("old address")),
            "{v:?}"
        );
        // No replica up: nothing to fail over to; it waits as before.
        let v = super::verdict(&pod(false), &names_old, &[], None);
        assert!(matches!(&v, Verdict::Retry(_)), "{v:?}");
        // Another pod named at the newer epoch: the plain rules (follow it once it answers).
        let v = super::verdict(&pod(true), &names_other, &[ep("10.0.0.2:6379")], None);
        assert!(
            matches!(&v, Verdict::Decided(d) if d.role == Role::Replica),
            "{v:?}"
        );
    }

    #[test]
    fn an_inprog_of_an_earlier_master_does_not_stop_the_forced_failover() {
        let a = ep("10.0.0.1:6379");
        let b = ep("10.0.0.2:6379");
        assert!(super::inprog_is_ours(Some(&a), Some(&a)));
        assert!(!super::inprog_is_ours(Some(&b), Some(&a)));
        assert!(super::inprog_is_ours(None, Some(&a)));
        assert!(super::inprog_is_ours(Some(&b), None));
    }
}
