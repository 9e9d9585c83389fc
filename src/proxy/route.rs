//! The proxy's pure decisions: which master the sentinels name (and so where a connection goes),
//! and whether the last confirmation of it is recent enough to let bytes through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Endpoint;
use crate::sentinel::Answer;

/// Where connections go right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// No master can be named (no majority of the sentinels answers, nothing asked yet): new
    /// connections are refused at once, open ones are closed. The string says why.
    Refuse(String),
    /// A failover runs or the sentinels disagree at their highest epoch: new connections wait
    /// (bounded) for a master; open ones stay with the master they have (a paused master
    /// answers once the failover is through, or the change closes them).
    Wait(String),
    /// The master the sentinels name.
    Master(Endpoint),
}

/// The sentinels' decision, as `follow::judge` reads it: the answers of a majority of the
/// `known` sentinels (ours included, up or down), none of them in a failover, agreeing at their
/// highest config epoch. A node's own claim to be master is not asked: a zombie that still says
/// `role:master` is routed to only while the sentinels name it.
pub fn decide(answers: &[Answer], known: usize) -> Route {
    if answers.len() * 2 <= known {
        return Route::Refuse(format!(
            "only {} of {known} sentinels answer: no majority",
            answers.len()
        ));
    }
    if answers.iter().any(|a| a.unsettled) {
        return Route::Wait("a failover is running".into());
    }
    let Some(top) = answers.iter().map(|a| a.config_epoch).max() else {
        return Route::Refuse("no sentinel answers".into());
    };
    let at_top: Vec<&Endpoint> = answers
        .iter()
        .filter(|a| a.config_epoch == top)
        .map(|a| &a.master)
        .collect();
    let votes = |m: &Endpoint| at_top.iter().filter(|x| **x == m).count();
    // All at the top epoch agree (the latest failover, even if only some have heard of it), or,
    // when they do not, a majority of all known sentinels names one: a lone sentinel stuck at
    // the majority's epoch with another master (follow::own_sentinel_stale) does not stop the
    // traffic.
    match at_top
        .iter()
        .find(|m| votes(m) == at_top.len() || votes(m) * 2 > known)
    {
        Some(m) => Route::Master((*m).clone()),
        None if at_top.is_empty() => Route::Refuse("no sentinel answers".into()),
        None => Route::Wait(format!("the sentinels disagree at epoch {top}")),
    }
}

/// What an open connection to `mine` does when the route changes: `true` closes it.
/// A wait keeps it (a handover's paused master, a failover deciding); anything that names no
/// master or another one closes it, so no client writes to a demoted or fenced node through us.
pub fn must_close(route: &Route, mine: &Endpoint) -> bool {
    match route {
        Route::Master(m) => m != mine,
        Route::Wait(_) => false,
        Route::Refuse(_) => true,
    }
}

/// Until when bytes may flow to and from the current master: a confirmation by a majority of the
/// sentinels, started at `t`, holds until `t + lease`. A proxy that stalled (its pod frozen,
/// its process stopped) or is cut off from the majority lets nothing through once that has
/// passed, until a new look confirms the master or names another: the sentinels cannot name
/// another master sooner than down-after after the old one went silent, and the lease is half
/// of that. The clock is monotonic, so a freeze counts as time passed.
#[derive(Debug)]
pub struct Lease {
    origin: Instant,
    /// Milliseconds since `origin`; 0: never confirmed.
    until_ms: AtomicU64,
}

impl Lease {
    pub fn new(origin: Instant) -> Lease {
        Lease {
            origin,
            until_ms: AtomicU64::new(0),
        }
    }

    /// A look that started at `started` confirmed the master; it holds for `len`.
    pub fn renew(&self, started: Instant, len: Duration) {
        let until = (started + len).saturating_duration_since(self.origin);
        self.until_ms
            .fetch_max(until.as_millis() as u64, Ordering::Relaxed);
    }

    /// The route changed: nothing flows until the next confirmation.
    pub fn revoke(&self) {
        self.until_ms.store(0, Ordering::Relaxed);
    }

    pub fn valid_at(&self, now: Instant) -> bool {
        let now = now.saturating_duration_since(self.origin).as_millis() as u64;
        now < self.until_ms.load(Ordering::Relaxed)
    }
}

/// The lease for a down-after: half of it, at least 500 ms (a look every `look_every` renews it).
pub fn lease_len(down_after_ms: u64) -> Duration {
    Duration::from_millis((down_after_ms / 2).max(500))
}

/// How often the proxy confirms the master with every sentinel it knows (beside the events of
/// its own sentinel, which trigger a look at once): well inside the lease, at most once a second.
pub fn look_every(down_after_ms: u64) -> Duration {
    Duration::from_millis((down_after_ms / 5).clamp(200, 1_000))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Host;

    fn ep(n: u8) -> Endpoint {
        Endpoint {
            host: Host::Ip([10, 0, 0, n].into()),
            port: 6379,
        }
    }

    fn a(master: u8, epoch: u64, unsettled: bool) -> Answer {
        Answer {
            master: ep(master),
            config_epoch: epoch,
            unsettled,
            known_sentinels: 2,
        }
    }

    #[test]
    fn decide_table() {
        let cases: &[(&str, Vec<Answer>, usize, Route)] = &[
            (
                "all three agree",
                vec![a(1, 3, false), a(1, 3, false), a(1, 3, false)],
                3,
                Route::Master(ep(1)),
            ),
            (
                "two of three answer",
                vec![a(1, 3, false), a(1, 3, false)],
                3,
                Route::Master(ep(1)),
            ),
            (
                "the highest epoch wins over a lagging sentinel",
                vec![a(2, 4, false), a(1, 3, false), a(1, 3, false)],
                3,
                Route::Master(ep(2)),
            ),
            (
                "one of three: a minority (this pod cut off) refuses",
                vec![a(1, 3, false)],
                3,
                Route::Refuse("only 1 of 3 sentinels answer: no majority".into()),
            ),
            (
                "half is no majority",
                vec![a(1, 3, false), a(1, 3, false)],
                4,
                Route::Refuse("only 2 of 4 sentinels answer: no majority".into()),
            ),
            (
                "nothing answers",
                vec![],
                3,
                Route::Refuse("only 0 of 3 sentinels answer: no majority".into()),
            ),
            (
                "a failover running anywhere: wait",
                vec![a(1, 3, false), a(1, 3, true), a(1, 3, false)],
                3,
                Route::Wait("a failover is running".into()),
            ),
            (
                "disagreement at the top epoch: wait",
                vec![a(1, 4, false), a(2, 4, false), a(1, 3, false)],
                3,
                Route::Wait("the sentinels disagree at epoch 4".into()),
            ),
            (
                "a majority at the top epoch outvotes one stuck sentinel",
                vec![a(1, 4, false), a(2, 4, false), a(1, 4, false)],
                3,
                Route::Master(ep(1)),
            ),
            (
                "the top epoch alone, on one of three, wins while it agrees",
                vec![a(2, 5, false), a(1, 4, false), a(1, 4, false)],
                3,
                Route::Master(ep(2)),
            ),
        ];
        for (what, answers, known, want) in cases {
            assert_eq!(&decide(answers, *known), want, "{what}");
        }
    }

    #[test]
    fn must_close_table() {
        let mine = ep(1);
        assert!(!must_close(&Route::Master(ep(1)), &mine));
        assert!(must_close(&Route::Master(ep(2)), &mine));
        assert!(!must_close(&Route::Wait("x".into()), &mine));
        assert!(must_close(&Route::Refuse("x".into()), &mine));
    }

    #[test]
    fn lease_holds_from_the_look_start_and_is_revoked() {
        let t0 = Instant::now();
        let l = Lease::new(t0);
        assert!(!l.valid_at(t0), "never confirmed");
        l.renew(t0, Duration::from_millis(1000));
        assert!(l.valid_at(t0 + Duration::from_millis(999)));
        assert!(!l.valid_at(t0 + Duration::from_millis(1000)));
        // An older look finishing late does not shorten it.
        l.renew(t0 - Duration::from_millis(500), Duration::from_millis(1000));
        assert!(l.valid_at(t0 + Duration::from_millis(999)));
        l.revoke();
        assert!(!l.valid_at(t0));
    }

    #[test]
    fn lease_and_look_periods() {
        // The test cluster (down-after 2 s) and the default (5 s): several looks per lease.
        assert_eq!(lease_len(2_000), Duration::from_millis(1_000));
        assert_eq!(look_every(2_000), Duration::from_millis(400));
        assert_eq!(lease_len(5_000), Duration::from_millis(2_500));
        assert_eq!(look_every(5_000), Duration::from_millis(1_000));
        for d in [100, 1_000, 2_000, 5_000, 30_000, 600_000] {
            assert!(look_every(d) * 2 <= lease_len(d), "down-after {d}");
        }
    }
}
