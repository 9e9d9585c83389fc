//! Sentinel's split vote, broken by exactly one sentinel.
//!
//! Why: two sentinels that reach o_down within the same moment each vote for themselves; neither
//! gets a majority, both abort (`-failover-abort-not-elected`) after the election timeout, and
//! Sentinel retries only after 2 × failover-timeout: 12–17 s without a master in about 2 of 45
//! master kills (issue 30). Each pod's PID 1 hears its own sentinel's abort. When its sentinel
//! still finds the master objectively down, sees a majority of every sentinel it knows up, and
//! none of those is failing over (another candidate may still be winning its own election; if it
//! too aborts, its pod runs this again), PID 1 asks ONE sentinel to fail over at once
//! (`SENTINEL FAILOVER`, which needs no votes): the up sentinel with the lowest run id, its own
//! or a peer's. Every pod that gets here asks the same sentinel, so one failover starts and the
//! others are answered INPROG; the sentinels that aborted hold off for 2 × failover-timeout and
//! learn the new configuration from its hello. A sentinel cut off into a minority never acts.
//!
//! The election timeout is lowered with the other periods (follow::tune) so that a split costs
//! about a second, not min(10 s, failover-timeout): votes travel in one round trip between
//! sentinels, and an election that takes longer now ends here instead of in a 2 × failover-timeout
//! hold-off.

use std::time::Duration;

use crate::config::{Config, Endpoint, Server};
use crate::redisio;
use crate::sentinel::{Flag, FlagSet};

/// Sentinel's election timeout as PID 1 sets it (default min(10 000, failover-timeout)).
pub const ELECTION_TIMEOUT_MS: u64 = 1000;

/// Another sentinel as ours reports it (`SENTINEL SENTINELS`), and whether it is failing the
/// master over (its own `SENTINEL MASTER`; false when it does not answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub run_id: String,
    pub addr: Endpoint,
    pub up: bool,
    pub failing_over: bool,
}

/// Which sentinel restarts the failover: `Ok(None)` ours, `Ok(Some(addr))` that peer's, or why
/// nobody should now. A pure function of what the sentinels report.
pub fn who_retries(
    own_id: &str,
    peers: &[Peer],
    master_flags: &[String],
) -> Result<Option<Endpoint>, String> {
    let flags = FlagSet::of(master_flags);
    if !flags.has(Flag::ODown) {
        return Err("our sentinel no longer finds the master objectively down".into());
    }
    if flags.has(Flag::FailoverInProgress) {
        return Err("our sentinel is failing over already".into());
    }
    let total = peers.len() + 1;
    let up: Vec<&Peer> = peers.iter().filter(|p| p.up).collect();
    if (up.len() + 1) * 2 <= total {
        return Err(format!(
            "{} of {total} sentinels up: a minority never fails over alone",
            up.len() + 1
        ));
    }
    if let Some(p) = up.iter().find(|p| p.failing_over) {
        return Err(format!("sentinel {} is failing over", p.addr));
    }
    match up.iter().min_by(|a, b| a.run_id.cmp(&b.run_id)) {
        Some(p) if p.run_id.as_str() < own_id => Ok(Some(p.addr.clone())),
        _ => Ok(None),
    }
}

/// Our sentinel aborted a failover it was not elected to lead: restart it (see the module
/// header). Bounded: a few requests of 500 ms each.
pub async fn on_abort(cfg: &Config) {
    let t = Duration::from_millis(500);
    let local = cfg.own(Server::Sentinel);
    let looked = async {
        let mut con = redisio::connect(&cfg.conn, &local, Server::Sentinel, t).await?;
        let own_id = redisio::sentinel_myid_on(&mut con, t).await?;
        let list = redisio::sentinel_peers_on(&mut con, &cfg.group, t).await?;
        let master = redisio::sentinel_master_on(&mut con, &cfg.group, t).await?;
        Ok::<_, redis::RedisError>((own_id, list, master))
    }
    .await;
    let (own_id, list, master) = match looked {
        Ok((id, l, Some(m))) => (id, l, m),
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, "split vote: cannot ask our sentinel; Sentinel retries by itself");
            return;
        }
    };
    let mut peers = Vec::new();
    for p in list {
        let up = p.is_up();
        let failing_over = up
            && matches!(
                redisio::sentinel_master(&cfg.conn, &p.addr, &cfg.group, t).await,
                Ok(Some(e)) if e.flags.has(Flag::FailoverInProgress)
            );
        peers.push(Peer {
            run_id: p.run_id.unwrap_or_default(),
            addr: p.addr,
            up,
            failing_over,
        });
    }
    let target = match who_retries(&own_id, &peers, master.flags.names()) {
        Ok(t) => t.unwrap_or(local),
        Err(why) => {
            tracing::info!(reason = %why, "split vote: nothing to restart from this pod");
            return;
        }
    };
    fence_if_alive(cfg, &master.addr).await;
    match redisio::sentinel_group_cmd(&cfg.conn, &target, "FAILOVER", &cfg.group, t).await {
        Ok(()) => tracing::warn!(
            master = %master.addr,
            sentinel = %target,
            "split vote: no sentinel was elected; the up sentinel with the lowest run id fails the master over now"
        ),
        Err(e) if e.code() == Some("INPROG") => {
            tracing::info!(sentinel = %target, "split vote: that sentinel is failing over already")
        }
        Err(e) => {
            tracing::warn!(sentinel = %target, error = %e, "split vote: SENTINEL FAILOVER refused; Sentinel retries by itself")
        }
    }
}

/// A master that a quorum finds down may still take writes (a one-sided cut): pause them, as
/// the vote fence would have (no vote is held in a forced failover). Best effort; a master that
/// does not answer takes nothing. The pause ends by itself after failover-timeout.
async fn fence_if_alive(cfg: &Config, master: &Endpoint) {
    let t = Duration::from_millis(300);
    let Ok(mut con) = redisio::connect(&cfg.conn, master, Server::Redis, t).await else {
        return;
    };
    let paused = redisio::query::<()>(
        &mut con,
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(cfg.failover_timeout_ms)
            .arg("WRITE"),
        t,
    )
    .await;
    if paused.is_ok() {
        tracing::warn!(%master, "split vote: the master still answers; its writes are paused before the failover");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, up: bool, failing_over: bool) -> Peer {
        let n = match id {
            "aaa" => 1,
            "bbb" => 2,
            _ => 3,
        };
        Peer {
            run_id: id.into(),
            addr: crate::config::parse_endpoint("t", &format!("10.0.0.{n}:26379")).unwrap(),
            up,
            failing_over,
        }
    }

    #[test]
    fn exactly_one_sentinel_of_a_majority_restarts_the_failover() {
        let odown = vec!["master".to_string(), "s_down".into(), "o_down".into()];
        let sdown = vec!["master".to_string(), "s_down".into()];
        let running = vec![
            "master".to_string(),
            "o_down".into(),
            "failover_in_progress".into(),
        ];
        let a = Some(Some("10.0.0.1:26379"));
        let ours = Some(None);
        // (own id, peers, master flags) -> Some(the sentinel asked: None = ours) or None (nobody)
        type Row<'a> = (&'a str, Vec<Peer>, &'a Vec<String>, Option<Option<&'a str>>);
        let rows: Vec<Row> = vec![
            // the two survivors of a dead master pod: both ask the lower id's sentinel
            (
                "aaa",
                vec![peer("bbb", true, false), peer("ccc", false, false)],
                &odown,
                ours,
            ),
            (
                "bbb",
                vec![peer("aaa", true, false), peer("ccc", false, false)],
                &odown,
                a,
            ),
            // three up, a 1-1-1 split: every pod asks the lowest
            (
                "aaa",
                vec![peer("bbb", true, false), peer("ccc", true, false)],
                &odown,
                ours,
            ),
            (
                "ccc",
                vec![peer("aaa", true, false), peer("bbb", true, false)],
                &odown,
                a,
            ),
            // a dead sentinel with a lower id is not asked
            (
                "bbb",
                vec![peer("aaa", false, false), peer("ccc", true, false)],
                &odown,
                ours,
            ),
            // another candidate's election still runs: wait for its outcome
            (
                "aaa",
                vec![peer("bbb", true, true), peer("ccc", false, false)],
                &odown,
                None,
            ),
            // cut off into a minority: never
            (
                "aaa",
                vec![peer("bbb", false, false), peer("ccc", false, false)],
                &odown,
                None,
            ),
            // two known in all, one up: 1 of 2 is no majority
            ("aaa", vec![peer("bbb", false, false)], &odown, None),
            // the master is back (no o_down) or our sentinel fails over: nothing to break
            (
                "aaa",
                vec![peer("bbb", true, false), peer("ccc", false, false)],
                &sdown,
                None,
            ),
            (
                "aaa",
                vec![peer("bbb", true, false), peer("ccc", false, false)],
                &running,
                None,
            ),
        ];
        for (i, (own, peers, flags, want)) in rows.into_iter().enumerate() {
            let got = who_retries(own, &peers, flags);
            let got = got.ok().map(|t| t.map(|e| e.to_string()));
            let want = want.map(|t| t.map(String::from));
            assert_eq!(got, want, "row {i}");
        }
    }
}
