//! The promotion relay: once a failover's promoted replica answers as master, every sentinel is
//! told at once what the failover's leader tells them only later.
//!
//! Why: Sentinel's leader notices the promotion at its next INFO of the replica (a fixed period
//! of one second during a failover, sentinel.c `sentinelSendPeriodicCommands`), then publishes
//! the new configuration; until its failover ends it lists the old address in `SENTINEL MASTERS`
//! (what redis-py reads) and, before it noticed, in `GET-MASTER-ADDR-BY-NAME` too (what Jedis and
//! go-redis read). When the old master is still alive (a handover) or was alive until moments
//! ago (a pod killed mid-handover), clients are sent there for one to two seconds. A hello from a
//! sentinel they know naming a newer config epoch makes a sentinel switch at once
//! (`sentinelProcessHelloMessage`: `+config-update-from`, `+switch-master`), the leader too (its
//! failover waited for exactly this promotion). The claim is the leader's own: the replica it
//! promoted, at the epoch it won, sent only after the replica answers as master.
//!
//! Two places relay: the handover of a leaving master (handover.rs, from the epoch the leader
//! publishes while it answers `SENTINEL FAILOVER`), and the pod whose own sentinel leads a
//! failover (`Tracker`, fed our sentinel's events by `Watcher`), which also covers a master pod
//! killed before its own relay and every crash failover. The hello ends the leader's failover
//! before it re-points the other replicas, so that pod re-points them itself.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use crate::config::Server;
use crate::config::{Config, Endpoint};
use crate::redisio;

/// Our sentinel's events the tracker reads (`Watcher` subscribes to them).
pub const EVENTS: &[&str] = &[
    "+new-epoch",
    "+vote-for-leader",
    "+failover-state-wait-promotion",
];

/// The relay's own subscription to our sentinel's events, in a task of its own. Not the follow
/// companion's: its looks ask every sentinel and wait out a dead one's timeout, and a failover
/// is exactly when a pod has just died. Measured under a CPU hog (SIGKILL 0.1 s after SIGTERM):
/// the look running when the master pod died held `+failover-state-wait-promotion` for a second,
/// so the relay came after the leader's own INFO round, the write gap grew from 0.6 to 1.6-2.6 s.
/// Aborted when dropped, with the relays in flight; the follow companion owns it, so it ends
/// with the companion (a handover stops that first and relays for itself).
pub struct Watcher {
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    pub fn spawn(cfg: Config) -> Watcher {
        Watcher {
            task: tokio::spawn(watch(cfg)),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(cfg: Config) {
    let local = cfg.own(Server::Sentinel);
    let mut relays = tokio::task::JoinSet::new();
    loop {
        let ps =
            redisio::subscribe_until_up(&cfg.conn, &local, Server::Sentinel, EVENTS, "relay").await;
        // Fed every event of our sentinel, in order, from this subscription on.
        let mut tracker = Tracker::new(own_id(&cfg, &local).await);
        let mut stream = ps.into_on_message();
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(m) => {
                        let payload: String = m.get_payload().unwrap_or_default();
                        if let Some(p) = tracker.on_event(&cfg.group, m.get_channel_name(), &payload) {
                            let cfg = cfg.clone();
                            relays.spawn(async move { on_promotion(&cfg, &p).await });
                        }
                    }
                    // Our sentinel went away (restart): subscribe again once it is back.
                    None => break,
                },
                Some(_) = relays.join_next(), if !relays.is_empty() => {}
            }
        }
    }
}

/// Our sentinel's run id; None (no relay) when it does not say.
async fn own_id(cfg: &Config, local: &Endpoint) -> Option<String> {
    let t = Duration::from_millis(300);
    let mut con = redisio::connect(&cfg.conn, local, Server::Sentinel, t)
        .await
        .ok()?;
    redisio::sentinel_myid_on(&mut con, t).await.ok()
}

/// A failover our own sentinel leads reached "wait for the promotion".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub epoch: u64,
    pub promoted: Endpoint,
}

/// What our sentinel's events say about the failover it leads. Pure: fed every event in order.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    /// Our sentinel's run id (`SENTINEL MYID`); without it nothing is relayed.
    own_id: Option<String>,
    /// The newest epoch our sentinel has reported (its current epoch).
    newest: u64,
    /// The epoch at which our sentinel last voted for itself: the epoch of a failover it leads.
    self_vote: Option<u64>,
}

impl Tracker {
    pub fn new(own_id: Option<String>) -> Tracker {
        Tracker {
            own_id,
            ..Tracker::default()
        }
    }

    /// `Some` when our sentinel, leading a failover of `group`, has just sent the promotion: the
    /// replica it promotes and the failover's epoch. That epoch is the one our sentinel voted for
    /// itself at (`+vote-for-leader <own id> <epoch>`, which a leader always logs for its own
    /// failover's epoch), and only while no newer epoch has been seen since: a vote at a newer
    /// epoch, or a newer configuration, means the failover is not that one, and nothing is said.
    /// `+vote-for-leader` does not name the group: one group per deployment, as here.
    pub fn on_event(&mut self, group: &str, channel: &str, payload: &str) -> Option<Promotion> {
        let words: Vec<&str> = payload.split_whitespace().collect();
        match channel {
            "+new-epoch" => {
                if let Some(e) = words.first().and_then(|w| w.parse().ok()) {
                    self.newest = self.newest.max(e);
                }
                None
            }
            "+vote-for-leader" => {
                if let [id, epoch] = words.as_slice() {
                    if let Ok(e) = epoch.parse::<u64>() {
                        self.newest = self.newest.max(e);
                        if self.own_id.as_deref() == Some(*id) {
                            self.self_vote = Some(e);
                        }
                    }
                }
                None
            }
            "+failover-state-wait-promotion" => {
                // `slave <name> <ip> <port> @ <group> <master ip> <master port>`
                let ["slave", _, ip, port, "@", g, ..] = words.as_slice() else {
                    return None;
                };
                let epoch = self.self_vote.filter(|e| *e == self.newest)?;
                if *g != group {
                    return None;
                }
                let promoted = Endpoint::from_fields(ip, port)?;
                // One relay per failover.
                self.self_vote = None;
                Some(Promotion { epoch, promoted })
            }
            _ => None,
        }
    }
}

/// How long the promoted replica may take to answer as master: Sentinel sent `REPLICAOF NO ONE`
/// just before its event; past this the leader's own INFO round does the job.
const PROMOTION_WAIT: Duration = Duration::from_millis(2000);
const PROMOTION_STEP: Duration = Duration::from_millis(10);

/// Our sentinel leads a failover and has sent the promotion: once the replica answers as master,
/// tell every sentinel. Bounded by `PROMOTION_WAIT` plus the sends' timeouts.
async fn on_promotion(cfg: &Config, p: &Promotion) {
    let started = Instant::now();
    let until = started + PROMOTION_WAIT;
    let t = Duration::from_millis(300);
    let own = cfg.own(Server::Sentinel);
    // The failed master's other replicas, read before the hello resets our sentinel's entry (it
    // then lists the old master among the replicas, which is not ours to demote).
    let others: Vec<Endpoint> = redisio::sentinel_replicas(&cfg.conn, &own, &cfg.group, t)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.addr != p.promoted && !r.flags.is_down())
        .map(|r| r.addr)
        .collect();
    loop {
        if redisio::is_master(&cfg.conn, &p.promoted, Duration::from_millis(200)).await {
            break;
        }
        if Instant::now() >= until {
            tracing::info!(promoted = %p.promoted, epoch = p.epoch, "relay: the promoted replica did not answer as master in time; the leader's own hello follows");
            return;
        }
        tokio::time::sleep(PROMOTION_STEP).await;
    }
    let waited_ms = started.elapsed().as_millis() as u64;
    let told = tell(cfg, &own, p.epoch, &p.promoted, true).await;
    tracing::info!(promoted = %p.promoted, waited_ms, told = %told, "relay: our sentinel's failover promoted a replica; the sentinels are told");
    let repointed = repoint(cfg, &others, &p.promoted, t).await;
    if !repointed.is_empty() {
        tracing::info!(promoted = %p.promoted, replicas = %repointed.join(", "), "relay: re-pointed the failed master's replicas at the promoted one");
    }
}

/// Re-points each of `others` that still follows another master at `promoted`, all at once
/// (Sentinel does it one replica per INFO round, and its failover, so its `SENTINEL MASTERS`
/// answer, ends only once they are linked; min-replicas-to-write needs them too). Used by the
/// relay after a failover our sentinel leads and by the handover after its own. A node that
/// answers as master, or that is `promoted` itself, is left alone: demoting is Sentinel's job.
/// Returns one line per replica touched (`addr`, or `addr: error`), for the log.
pub async fn repoint(
    cfg: &Config,
    others: &[Endpoint],
    promoted: &Endpoint,
    t: Duration,
) -> Vec<String> {
    let mut set = tokio::task::JoinSet::new();
    for r in others.iter().filter(|r| *r != promoted) {
        let (conn, r, promoted) = (cfg.conn.clone(), r.clone(), promoted.clone());
        set.spawn(async move {
            match redisio::repl(&conn, &r, t).await {
                Ok(n) if !n.is_master && n.master.as_ref() != Some(&promoted) => {
                    match redisio::replicaof(&conn, &r, &promoted, t).await {
                        Ok(()) => Some(r.to_string()),
                        Err(e) => Some(format!("{r}: {e}")),
                    }
                }
                _ => None,
            }
        });
    }
    let mut done = Vec::new();
    while let Some(j) = set.join_next().await {
        if let Ok(Some(r)) = j {
            done.push(r);
        }
    }
    done
}

/// Tells every up sentinel that `from` lists the hello `from` would publish: `new_master` at
/// `epoch`, in `from`'s name, at the address each receiver lists for it (another address would
/// make it re-learn the address, `+sentinel-address-switch`; an unknown run id would add a
/// sentinel; one that does not list `from` is not told). With `also_from`, `from` itself is told
/// too, in the name of an up peer it lists (a sentinel never takes a hello in its own name: it
/// would add itself as a peer). Returns what happened, for the log.
pub async fn tell(
    cfg: &Config,
    from: &Endpoint,
    epoch: u64,
    new_master: &Endpoint,
    also_from: bool,
) -> String {
    let t = Duration::from_millis(300);
    let mut con = match redisio::connect(&cfg.conn, from, Server::Sentinel, t).await {
        Ok(c) => c,
        Err(e) => return format!("sentinel {from}: {e}"),
    };
    let run_id = match redisio::sentinel_myid_on(&mut con, t).await {
        Ok(id) => id,
        Err(e) => return format!("SENTINEL MYID on {from}: {e}"),
    };
    let to = match redisio::sentinel_peers_on(&mut con, &cfg.group, t).await {
        Ok(p) => p,
        Err(e) => return format!("SENTINEL SENTINELS on {from}: {e}"),
    };
    let mut told = Vec::new();
    if also_from {
        let name = to
            .iter()
            .find(|p| p.is_up() && p.run_id.is_some())
            .and_then(|p| Some((p.addr.clone(), p.run_id.clone()?)));
        match name {
            Some((addr, id)) => {
                let hello = crate::sentinel::hello(&addr, &id, epoch, &cfg.group, new_master);
                match redisio::sentinel_hello_on(&mut con, &hello, t).await {
                    Ok(()) => told.push(format!("{from} as {addr}")),
                    Err(e) => told.push(format!("{from}: {e}")),
                }
            }
            None => told.push(format!("{from}: lists no up peer to speak for")),
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for p in to.into_iter().filter(|p| p.is_up()) {
        let conn = cfg.conn.clone();
        let (run_id, group, new_master) = (run_id.clone(), cfg.group.clone(), new_master.clone());
        set.spawn(async move {
            let r = async {
                let mut con = redisio::connect(&conn, &p.addr, Server::Sentinel, t).await?;
                let known = redisio::sentinel_peers_on(&mut con, &group, t).await?;
                let Some(me) = known.iter().find(|k| k.run_id.as_deref() == Some(&run_id)) else {
                    return Ok(false);
                };
                let hello = crate::sentinel::hello(&me.addr, &run_id, epoch, &group, &new_master);
                redisio::sentinel_hello_on(&mut con, &hello, t).await?;
                Ok::<bool, redis::RedisError>(true)
            }
            .await;
            (p.addr, r)
        });
    }
    while let Some(j) = set.join_next().await {
        match j {
            Ok((s, Ok(true))) => told.push(s.to_string()),
            Ok((s, Ok(false))) => told.push(format!("{s}: does not list the sender")),
            Ok((s, Err(e))) => told.push(format!("{s}: {e}")),
            Err(_) => {}
        }
    }
    format!("epoch {epoch} as {from} to [{}]", told.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sentinel::fixtures::ep;

    const ME: &str = "8668d6d4603acefd74bb1fb8bb4268c84e28c83e";
    const PEER: &str = "52c2a6fc5e393cd0ac39eda224293eebf31a6dff";
    const WAIT: &str = "+failover-state-wait-promotion";
    const PROMO: &str = "slave 10.0.0.2:6379 10.0.0.2 6379 @ mymaster 10.0.0.1 6379";

    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<Promotion>);

    fn run(events: &[(&str, &str)]) -> Vec<Option<Promotion>> {
        let mut t = Tracker::new(Some(ME.into()));
        events
            .iter()
            .map(|(c, p)| t.on_event("mymaster", c, p))
            .collect()
    }

    fn promo(epoch: u64) -> Option<Promotion> {
        Some(Promotion {
            epoch,
            promoted: ep("10.0.0.2:6379"),
        })
    }

    #[test]
    fn relays_only_the_failover_our_sentinel_leads_at_the_newest_epoch() {
        let self_vote = format!("{ME} 4");
        let peer_vote = format!("{PEER} 4");
        let peer_vote5 = format!("{PEER} 5");
        // (case, events, what the last event yields)
        let cases: Vec<Case> = vec![
            (
                "our sentinel won epoch 4 and promotes",
                vec![
                    ("+new-epoch", "4"),
                    ("+vote-for-leader", &self_vote),
                    (WAIT, PROMO),
                ],
                promo(4),
            ),
            (
                "a forced failover: the self vote comes after the epoch",
                vec![("+vote-for-leader", &self_vote), (WAIT, PROMO)],
                promo(4),
            ),
            (
                "we voted for another: not our failover",
                vec![
                    ("+new-epoch", "4"),
                    ("+vote-for-leader", &peer_vote),
                    (WAIT, PROMO),
                ],
                None,
            ),
            (
                "a newer epoch since our vote: the failover may not be the one we won",
                vec![
                    ("+vote-for-leader", &self_vote),
                    ("+new-epoch", "5"),
                    (WAIT, PROMO),
                ],
                None,
            ),
            (
                "a vote for a peer at a newer epoch",
                vec![
                    ("+vote-for-leader", &self_vote),
                    ("+vote-for-leader", &peer_vote5),
                    (WAIT, PROMO),
                ],
                None,
            ),
            (
                "another group",
                vec![
                    ("+vote-for-leader", &self_vote),
                    (
                        WAIT,
                        "slave 10.0.0.2:6379 10.0.0.2 6379 @ other 10.0.0.1 6379",
                    ),
                ],
                None,
            ),
            (
                "one relay per failover",
                vec![
                    ("+vote-for-leader", &self_vote),
                    (WAIT, PROMO),
                    (WAIT, PROMO),
                ],
                None,
            ),
            (
                "an unreadable payload says nothing",
                vec![("+vote-for-leader", &self_vote), (WAIT, "slave garbage")],
                None,
            ),
            ("no vote at all", vec![(WAIT, PROMO)], None),
        ];
        for (case, events, want) in cases {
            let got = run(&events);
            assert_eq!(got.last().cloned().flatten(), want, "{case}");
            assert!(
                got[..got.len() - 1]
                    .iter()
                    .all(|g| g.is_none() || case == "one relay per failover"),
                "{case}: only wait-promotion relays"
            );
        }
    }

    #[test]
    fn ipv6_promotion_is_read() {
        let mut t = Tracker::new(Some(ME.into()));
        t.on_event("mymaster", "+vote-for-leader", &format!("{ME} 2"));
        let got = t.on_event(
            "mymaster",
            WAIT,
            "slave [fd88:4f::12]:6379 fd88:4f::12 6379 @ mymaster fd88:4f::11 6379",
        );
        assert_eq!(
            got,
            Some(Promotion {
                epoch: 2,
                promoted: ep("[fd88:4f::12]:6379")
            })
        );
    }

    #[test]
    fn without_our_run_id_nothing_is_relayed() {
        let mut t = Tracker::new(None);
        t.on_event("mymaster", "+vote-for-leader", &format!("{ME} 2"));
        assert_eq!(t.on_event("mymaster", WAIT, PROMO), None);
    }
}
