//! `redisha-init probe redis|sentinel --live|--ready`: exec probes for Kubernetes and the Docker
//! HEALTHCHECK. Exit 0 or 1, one line on failure. Same environment as the pod, so the same
//! password and TLS settings.

use std::time::Duration;

use crate::config::Config;
use crate::redisio::{self, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Redis,
    Sentinel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Live,
    Ready,
}

/// What the server said to PING: the reply, or the error code (LOADING, MASTERDOWN, NOAUTH, …),
/// or that it could not be reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ping {
    Pong,
    Error(String),
    Unreachable(String),
}

/// The pure judgement. `info`: `INFO replication` (redis readiness); `names_master`: whether the
/// sentinel names a master (sentinel readiness).
pub fn judge(
    kind: Kind,
    mode: Mode,
    ping: &Ping,
    info: Option<&str>,
    names_master: Option<bool>,
) -> Result<(), String> {
    match (ping, mode) {
        (Ping::Unreachable(e), _) => return Err(format!("not reachable: {e}")),
        // Alive but busy: loading its data set, or a replica whose master is down. Restarting it
        // would only make that worse.
        (Ping::Error(code), Mode::Live) if code == "LOADING" || code == "MASTERDOWN" => {
            return Ok(())
        }
        (Ping::Error(code), Mode::Ready) if code == "LOADING" => {
            return Err("loading the data set".into())
        }
        (Ping::Error(code), _) => return Err(format!("PING answered {code}")),
        (Ping::Pong, Mode::Live) => return Ok(()),
        (Ping::Pong, Mode::Ready) => {}
    }
    match kind {
        Kind::Redis => {
            let info = info.ok_or("no INFO replication reply")?;
            if redisio::info_field(info, "role") == Some("slave") {
                // The link reads "down" during the initial sync too; name the more specific cause.
                if redisio::info_field(info, "master_sync_in_progress") != Some("0") {
                    return Err("replica: initial sync in progress".into());
                }
                if redisio::info_field(info, "master_link_status") != Some("up") {
                    return Err("replica: master link down".into());
                }
            }
            Ok(())
        }
        Kind::Sentinel => match names_master {
            Some(true) => Ok(()),
            _ => Err("sentinel names no master for the group".into()),
        },
    }
}

pub async fn run(cfg: &Config, kind: Kind, mode: Mode, timeout: Duration) -> Result<(), String> {
    let (port, target) = match kind {
        Kind::Redis => (cfg.redis_port, Target::Redis),
        Kind::Sentinel => (cfg.sentinel_port, Target::Sentinel),
    };
    let e = cfg.local(port);
    let work = async {
        let mut con = match redisio::connect(cfg, &e, target, timeout).await {
            Ok(c) => c,
            Err(err) => return judge(kind, mode, &classify(&err), None, None),
        };
        let ping = match redisio::query::<String>(&mut con, &mut redis::cmd("PING"), timeout).await
        {
            Ok(s) if s == "PONG" => Ping::Pong,
            Ok(s) => Ping::Error(s),
            Err(err) => classify(&err),
        };
        if ping != Ping::Pong || mode == Mode::Live {
            return judge(kind, mode, &ping, None, None);
        }
        match kind {
            Kind::Redis => {
                let info: Option<String> =
                    redisio::query(&mut con, redis::cmd("INFO").arg("replication"), timeout)
                        .await
                        .ok();
                judge(kind, mode, &ping, info.as_deref(), None)
            }
            Kind::Sentinel => {
                let addr: Option<(String, String)> = redisio::query(
                    &mut con,
                    redis::cmd("SENTINEL")
                        .arg("GET-MASTER-ADDR-BY-NAME")
                        .arg(&cfg.group),
                    timeout,
                )
                .await
                .ok()
                .flatten();
                judge(kind, mode, &ping, None, Some(addr.is_some()))
            }
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

fn classify(e: &redis::RedisError) -> Ping {
    match e.code() {
        Some(code) => Ping::Error(code.to_string()),
        None if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_refusal()
            || e.is_connection_dropped() =>
        {
            Ping::Unreachable(e.to_string())
        }
        None => Ping::Unreachable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYNCED: &str = "role:slave\r\nmaster_link_status:up\r\nmaster_sync_in_progress:0\r\n";
    const LINK_DOWN: &str =
        "role:slave\r\nmaster_link_status:down\r\nmaster_sync_in_progress:0\r\n";
    const SYNCING: &str = "role:slave\r\nmaster_link_status:down\r\nmaster_sync_in_progress:1\r\n";

    #[test]
    fn table() {
        use Kind::*;
        use Mode::*;
        let err = |c: &str| Ping::Error(c.into());
        let down = Ping::Unreachable("refused".into());
        type Row<'a> = (Kind, Mode, Ping, Option<&'a str>, Option<bool>, bool);
        let rows: Vec<Row> = vec![
            (Redis, Live, Ping::Pong, None, None, true),
            (Redis, Live, err("LOADING"), None, None, true),
            (Redis, Live, err("MASTERDOWN"), None, None, true),
            (Redis, Live, err("NOAUTH"), None, None, false),
            (Redis, Live, down.clone(), None, None, false),
            (Redis, Ready, err("LOADING"), None, None, false),
            (
                Redis,
                Ready,
                Ping::Pong,
                Some("role:master\r\n"),
                None,
                true,
            ),
            (Redis, Ready, Ping::Pong, Some(SYNCED), None, true),
            (Redis, Ready, Ping::Pong, Some(LINK_DOWN), None, false),
            (Redis, Ready, Ping::Pong, Some(SYNCING), None, false),
            (Sentinel, Live, Ping::Pong, None, None, true),
            (Sentinel, Ready, Ping::Pong, None, Some(true), true),
            (Sentinel, Ready, Ping::Pong, None, Some(false), false),
            (Sentinel, Ready, down, None, None, false),
        ];
        for (k, m, p, info, names, ok) in rows {
            let got = judge(k, m, &p, info, names);
            assert_eq!(got.is_ok(), ok, "{k:?} {m:?} {p:?} {info:?}: {got:?}");
            if let Err(e) = got {
                assert!(!e.contains('\n'));
            }
        }
    }
}
