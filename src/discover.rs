//! Who is master? Ask the sentinels before starting redis; decide with a pure function.
//!
//! The rule: the sentinels' answer wins over `--role` (a pod that comes back, with the same or a
//! new address, joins the master they name); `--role` decides only when no sentinel answers (first
//! boot of the cluster). A named master that is another pod is used only once it answers as a
//! master; while it does not (a failover is under way), we wait, bounded.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::config::{Config, Endpoint, Host, Role};
use crate::redisio;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub role: Role,
    pub master: Endpoint,
    pub reason: String,
}

/// One sentinel's view of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub master: Endpoint,
    pub config_epoch: u64,
    /// The master is objectively down or a failover has not promoted anyone yet: the answer may
    /// change. (Once the promoted replica answers as master, `master` names it and this is false.)
    pub unsettled: bool,
    /// How many other sentinels this sentinel knows (`num-other-sentinels`).
    pub known_sentinels: u64,
}

/// The master the sentinels agree on: the highest config epoch wins (it is the latest failover);
/// among equals, the address most sentinels give.
pub fn pick(answers: &[Answer]) -> Option<&Answer> {
    let top = answers.iter().map(|a| a.config_epoch).max()?;
    let mut votes: HashMap<&Endpoint, usize> = HashMap::new();
    for a in answers.iter().filter(|a| a.config_epoch == top) {
        *votes.entry(&a.master).or_default() += 1;
    }
    let (best, _) = votes.into_iter().max_by(|a, b| {
        a.1.cmp(&b.1)
            .then_with(|| b.0.to_string().cmp(&a.0.to_string()))
    })?;
    answers
        .iter()
        .find(|a| a.config_epoch == top && &a.master == best)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Decided(Decision),
    /// Ask again later; the string says why.
    Retry(String),
}

/// The pure decision. `master_is_up`: whether the picked master (if another pod) answered
/// `role:master` just now; `None` when it was not asked.
pub fn verdict(
    cfg_role: Role,
    me: &Endpoint,
    fallback_master: Option<&Endpoint>,
    answers: &[Answer],
    master_is_up: Option<bool>,
    refused: Option<&str>,
) -> Verdict {
    let Some(a) = pick(answers) else {
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
        return Verdict::Decided(Decision {
            role: Role::Master,
            master: me.clone(),
            reason: format!(
                "sentinels name this pod ({me}) as master (epoch {})",
                a.config_epoch
            ),
        });
    }
    match master_is_up {
        Some(true) => Verdict::Decided(Decision {
            role: Role::Replica,
            master: a.master.clone(),
            reason: format!(
                "sentinels name {} as master (epoch {}) and it answers as master",
                a.master, a.config_epoch
            ),
        }),
        _ => Verdict::Retry(format!(
            "sentinels name {} as master but it does not answer as master yet",
            a.master
        )),
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
        },
        (Role::Replica, Some(m)) => Decision {
            role,
            master: m.clone(),
            reason: format!("{why}; --role replica of {m}"),
        },
        _ => Decision {
            role: Role::Master,
            master: me.clone(),
            reason: format!("{why}; --role master"),
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
            let r = redisio::sentinel_master(&cfg, &s, &group, timeout).await;
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

/// Resolves a Service name to an address once, so Sentinel never mixes names and IPs.
async fn resolved(e: &Endpoint) -> Endpoint {
    if let Host::Name(n) = &e.host {
        if let Ok(Ok(mut it)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::lookup_host((n.as_str(), e.port)),
        )
        .await
        {
            if let Some(sa) = it.next() {
                return Endpoint {
                    host: Host::Ip(sa.ip()),
                    port: e.port,
                };
            }
        }
    }
    e.clone()
}

/// Decides the role. `include_local`: also ask this pod's own sentinel (it runs when a crashed
/// data node is restarted, and it is the best-informed one then).
/// Err when sentinels are reachable but refuse us for the whole budget (wrong password or TLS
/// settings): starting with a guessed role could make a second master.
pub async fn decide(cfg: &Config, include_local: bool) -> Result<Decision, String> {
    let me = cfg.self_redis();
    let mut sentinels = cfg.sentinels.clone();
    if include_local {
        sentinels.insert(0, cfg.local(cfg.sentinel_port));
    }
    let fallback = match &cfg.master_service {
        Some(m) => Some(resolved(m).await),
        None => None,
    };
    if sentinels.is_empty() {
        return Ok(follow_role(
            cfg.role,
            &me,
            fallback.as_ref(),
            "no sentinels configured",
        ));
    }
    let started = tokio::time::Instant::now();
    let budget = Duration::from_millis(cfg.discovery_timeout_ms);
    let per_try = Duration::from_millis(1000);
    // With nobody answering, a few quick rounds are enough: this is a first boot (or every
    // sentinel is down, and then nothing better than the configured role is known).
    let mut silent_rounds = 0;
    for round in 0u32..600 {
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
        let check = match pick(&answers) {
            Some(a) if a.master != me => Some(redisio::is_master(cfg, &a.master, per_try).await),
            _ => None,
        };
        match verdict(
            cfg.role,
            &me,
            fallback.as_ref(),
            &answers,
            check,
            refused.as_deref(),
        ) {
            Verdict::Decided(d) => return Ok(d),
            // Somebody answered or refused all along: this is no first boot, and --role could
            // make a second master (we may be cut off from the master they name, or a failover
            // of this very pod may be retrying). Give up instead; an orchestrator's restart or
            // the supervisor's backoff asks again later.
            Verdict::Retry(why) if started.elapsed() >= budget => {
                return Err(format!("gave up after {} ms: {why}", budget.as_millis()));
            }
            Verdict::Retry(why) => tracing::info!(round, reason = %why, "role not decided yet"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err("discovery rounds exhausted without a decision".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        crate::config::parse_endpoint("t", s).expect("endpoint")
    }

    fn ans(m: &str, epoch: u64, unsettled: bool) -> Answer {
        Answer {
            master: ep(m),
            config_epoch: epoch,
            unsettled,
            known_sentinels: 2,
        }
    }

    #[test]
    fn pick_prefers_latest_epoch_then_majority() {
        let a = [
            ans("10.0.0.1:6379", 1, false),
            ans("10.0.0.2:6379", 2, false),
            ans("10.0.0.1:6379", 1, false),
        ];
        assert_eq!(
            pick(&a).map(|a| a.master.to_string()),
            Some("10.0.0.2:6379".into())
        );
        let b = [
            ans("10.0.0.1:6379", 3, false),
            ans("10.0.0.2:6379", 3, false),
            ans("10.0.0.2:6379", 3, false),
        ];
        assert_eq!(
            pick(&b).map(|a| a.master.to_string()),
            Some("10.0.0.2:6379".into())
        );
        assert_eq!(pick(&[]), None);
    }

    #[test]
    fn replica_whose_master_address_is_itself_is_master() {
        let me = ep("10.0.0.9:6379");
        match verdict(Role::Replica, &me, Some(&me), &[], None, None) {
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
            None,
            Some("10.0.0.2:26379: WRONGPASS"),
        );
        assert!(
            matches!(v, Verdict::Retry(ref why) if why.contains("WRONGPASS")),
            "{v:?}"
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
            let got = verdict(role, &me, Some(&svc), &answers, up, None);
            match (got, want) {
                (Verdict::Decided(d), Ok((r, m))) => {
                    assert_eq!((d.role, &d.master), (r, m), "{answers:?}")
                }
                (Verdict::Retry(_), Err(())) => {}
                (g, w) => panic!("{answers:?} up={up:?}: got {g:?}, want {w:?}"),
            }
        }
    }
}
