//! Following the sentinels' decision: the events of our own sentinel trigger a look at once, and
//! a look every `route::look_every` confirms the master with every sentinel known (ours, the
//! peers it lists, the configured ones), as `follow` asks them. Each confirmation renews the
//! lease under which bytes flow (route.rs says why).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::route::{self, Lease, Route};
use crate::config::{Config, Endpoint, Server};

/// Events come in bursts (`+switch-master` then `+slave` lines): one look for the burst.
const DEBOUNCE: Duration = Duration::from_millis(10);
/// The budget of one question to one sentinel.
const ASK: Duration = Duration::from_millis(300);

/// One look: who the sentinels name. Pure apart from the questions (route::decide decides).
pub async fn look(cfg: &Config) -> Route {
    let local = cfg.own(Server::Sentinel);
    let (mut all, known) =
        match crate::redisio::up_sentinels(&cfg.conn, &local, &cfg.group, ASK).await {
            Ok((up, known)) => (up, known),
            Err(_) => (Vec::new(), 0),
        };
    for s in crate::redisio::resolved_all(&cfg.sentinels)
        .await
        .into_iter()
        .chain([local])
    {
        if !all.contains(&s) {
            all.push(s);
        }
    }
    let known = known.max(cfg.sentinels.len()).max(1);
    let answers = crate::follow::answers(cfg, &all, ASK).await;
    route::decide(&answers, known)
}

async fn subscribe(cfg: &Config) -> redis::RedisResult<redis::aio::PubSub> {
    let local = cfg.own(Server::Sentinel);
    let client = crate::redisio::client(&cfg.conn, &local, Server::Sentinel)?;
    let mut ps = tokio::time::timeout(Duration::from_secs(1), client.get_async_pubsub())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
    // Every event: a proxy must hear `+odown` and `+try-failover` (wait) as well as
    // `+switch-master` (move); the sentinel publishes a few a minute when nothing happens.
    ps.psubscribe("*").await?;
    Ok(ps)
}

/// Runs for the life of the proxy; publishes every route change on `tx`.
pub async fn run(cfg: Config, tx: watch::Sender<Route>, lease: Arc<Lease>) {
    let every = route::look_every(cfg.down_after_ms);
    let len = route::lease_len(cfg.down_after_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events: Option<redis::aio::PubSubStream> = None;
    let mut resubscribe_at = Instant::now();
    let mut pending: Option<Instant> = None;
    let mut last_logged: Option<Route> = None;
    loop {
        if events.is_none() && Instant::now() >= resubscribe_at {
            match subscribe(&cfg).await {
                Ok(ps) => {
                    events = Some(ps.into_on_message());
                    pending = Some(Instant::now());
                }
                Err(_) => resubscribe_at = Instant::now() + Duration::from_millis(500),
            }
        }
        tokio::select! {
            biased;
            m = next_event(&mut events) => match m {
                Some(()) => {
                    pending.get_or_insert(Instant::now() + DEBOUNCE);
                }
                None => {
                    events = None;
                    resubscribe_at = Instant::now() + Duration::from_millis(200);
                }
            },
            _ = sleep_until_opt(pending) => pending = None,
            _ = tick.tick() => {}
        }
        if pending.is_some() {
            continue;
        }
        let started = Instant::now();
        let r = look(&cfg).await;
        apply(&tx, &lease, r, started, len, &mut last_logged);
    }
}

/// Publishes a look's result: a confirmed master renews the lease; another master (or none)
/// revokes it first, so nothing flows to the old one while its connections are being closed.
fn apply(
    tx: &watch::Sender<Route>,
    lease: &Lease,
    r: Route,
    started: Instant,
    len: Duration,
    last_logged: &mut Option<Route>,
) {
    let same = *tx.borrow() == r;
    match &r {
        Route::Master(_) if same => lease.renew(started, len),
        Route::Master(_) => {
            lease.revoke();
            tx.send_replace(r.clone());
            lease.renew(started, len);
        }
        // A wait keeps the lease running out on its own: a paused master gets no new bytes
        // once it lapses, and a handover is over long before.
        Route::Wait(_) => {
            if !same {
                tx.send_replace(r.clone());
            }
        }
        Route::Refuse(_) => {
            lease.revoke();
            if !same {
                tx.send_replace(r.clone());
            }
        }
    }
    if last_logged.as_ref() != Some(&r) {
        match &r {
            Route::Master(m) => {
                tracing::info!(master = %m, "proxy: routing to the master the sentinels name")
            }
            Route::Wait(why) => tracing::info!(reason = %why, "proxy: new connections wait"),
            Route::Refuse(why) => {
                tracing::warn!(reason = %why, "proxy: no master known; refusing connections")
            }
        }
        *last_logged = Some(r);
    }
}

async fn next_event(s: &mut Option<redis::aio::PubSubStream>) -> Option<()> {
    match s {
        Some(s) => s.next().await.map(|_| ()),
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// For logs and tests: the master of a route.
pub fn master_of(r: &Route) -> Option<&Endpoint> {
    match r {
        Route::Master(m) => Some(m),
        _ => None,
    }
}
