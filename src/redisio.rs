//! The few Redis/Sentinel requests we make, each bounded by a timeout. Protocol by the `redis` crate.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncConnectionConfig;

use crate::config::{Conn, Endpoint, Host, Server};
use crate::sentinel::{Flag, MasterView, PeerView, ReplicaView};

pub fn client(conn: &Conn, e: &Endpoint, target: Server) -> redis::RedisResult<redis::Client> {
    let host = e.host.to_string();
    let addr = match &conn.tls {
        None => redis::ConnectionAddr::Tcp(host, e.port),
        Some(_) => redis::ConnectionAddr::TcpTls {
            host,
            port: e.port,
            insecure: false,
            tls_params: None,
        },
    };
    let mut settings = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
    let secret = match target {
        Server::Redis => conn.auth.redis.as_ref(),
        Server::Sentinel => conn.auth.sentinel.as_ref(),
    };
    if let Some(pw) = secret {
        settings = settings.set_password(pw.expose());
        if let Some(u) = &conn.auth.user {
            settings = settings.set_username(u);
        }
    }
    let info = redis::IntoConnectionInfo::into_connection_info(addr)?.set_redis_settings(settings);
    match &conn.tls {
        None => redis::Client::open(info),
        Some(t) => {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| {
                    redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "cannot read TLS file",
                        e.to_string(),
                    ))
                })
            };
            let certs = redis::TlsCertificates {
                client_tls: Some(redis::ClientTlsConfig {
                    client_cert: read(&t.cert)?,
                    client_key: read(&t.key)?,
                }),
                root_cert: Some(read(&t.ca)?),
            };
            redis::Client::build_with_tls(info, certs)
        }
    }
}

/// A subscription to `channels` of a local server (our own sentinel), asked again after a
/// backoff (50 ms, doubling to 2 s) until it answers: it is starting or restarting, and the
/// caller has nothing to do until it is back. `who` names the caller in the debug log.
pub async fn subscribe_until_up(
    conn: &Conn,
    local: &Endpoint,
    target: Server,
    channels: &[&str],
    who: &str,
) -> redis::aio::PubSub {
    let mut backoff = Duration::from_millis(50);
    loop {
        match subscribe(conn, local, target, channels).await {
            Ok(ps) => return ps,
            Err(e) => {
                tracing::debug!(error = %e, "{who}: own {target:?} not answering yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn subscribe(
    conn: &Conn,
    e: &Endpoint,
    target: Server,
    channels: &[&str],
) -> redis::RedisResult<redis::aio::PubSub> {
    let client = client(conn, e, target)?;
    let mut ps = tokio::time::timeout(Duration::from_secs(1), client.get_async_pubsub())
        .await
        .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "connect timed out")))??;
    for ch in channels {
        ps.subscribe(*ch).await?;
    }
    Ok(ps)
}

pub async fn connect(
    conn: &Conn,
    e: &Endpoint,
    target: Server,
    timeout: Duration,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let client = client(conn, e, target)?;
    let conf = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    match tokio::time::timeout(
        timeout * 2,
        client.get_multiplexed_async_connection_with_config(&conf),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "connect timed out",
        ))),
    }
}

async fn bounded<T>(
    timeout: Duration,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(timeout, f).await {
        Ok(r) => r,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "request timed out",
        ))),
    }
}

/// `SENTINEL MASTER <group>`: Ok(None) when the sentinel answers but does not know the group.
pub async fn sentinel_master(
    conn: &Conn,
    s: &Endpoint,
    group: &str,
    timeout: Duration,
) -> redis::RedisResult<Option<MasterView>> {
    let mut con = connect(conn, s, Server::Sentinel, timeout).await?;
    sentinel_master_on(&mut con, group, timeout).await
}

/// `SENTINEL MASTER` on an open connection, with `named` filled in while a failover runs.
pub async fn sentinel_master_on(
    con: &mut redis::aio::MultiplexedConnection,
    group: &str,
    timeout: Duration,
) -> redis::RedisResult<Option<MasterView>> {
    let mut con = con.clone();
    let m = match master_reply_on(&mut con, group, timeout).await {
        Ok(m) => m,
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let Some(mut v) = MasterView::parse(&m) else {
        return Ok(None);
    };
    if v.flags.has(Flag::FailoverInProgress) {
        v.named = master_addr_on(&mut con, group, timeout).await?;
    }
    Ok(Some(v))
}

/// `SENTINEL MASTER` as it is: an unknown group is the server's error, an entry without an
/// address a parse error; `named` is not asked.
pub async fn sentinel_master_view_on(
    con: &mut redis::aio::MultiplexedConnection,
    group: &str,
    timeout: Duration,
) -> redis::RedisResult<MasterView> {
    let m = master_reply_on(con, group, timeout).await?;
    MasterView::parse(&m).ok_or_else(|| {
        redis::RedisError::from((
            redis::ErrorKind::Parse,
            "SENTINEL MASTER without a usable ip/port",
        ))
    })
}

async fn master_reply_on(
    con: &mut redis::aio::MultiplexedConnection,
    group: &str,
    timeout: Duration,
) -> redis::RedisResult<HashMap<String, String>> {
    query(
        con,
        redis::cmd("SENTINEL").arg("MASTER").arg(group),
        timeout,
    )
    .await
}

/// `SENTINEL REPLICAS <group>` or `SENTINEL SENTINELS <group>`, each entry parsed; an entry
/// without an address is left out.
async fn entries_on<T>(
    con: &mut redis::aio::MultiplexedConnection,
    list: &str,
    group: &str,
    timeout: Duration,
    parse: fn(&HashMap<String, String>) -> Option<T>,
) -> redis::RedisResult<Vec<T>> {
    let cmd = &mut redis::cmd("SENTINEL");
    let replies: Vec<HashMap<String, String>> =
        query(con, cmd.arg(list).arg(group), timeout).await?;
    Ok(replies.iter().filter_map(parse).collect())
}

/// `SENTINEL REPLICAS <group>`, parsed.
pub async fn sentinel_replicas_on(
    con: &mut redis::aio::MultiplexedConnection,
    group: &str,
    timeout: Duration,
) -> redis::RedisResult<Vec<ReplicaView>> {
    entries_on(con, "REPLICAS", group, timeout, ReplicaView::parse).await
}

/// `SENTINEL SENTINELS <group>`, parsed.
pub async fn sentinel_peers_on(
    con: &mut redis::aio::MultiplexedConnection,
    group: &str,
    timeout: Duration,
) -> redis::RedisResult<Vec<PeerView>> {
    entries_on(con, "SENTINELS", group, timeout, PeerView::parse).await
}

/// `SENTINEL REPLICAS` of the sentinel at `s`.
pub async fn sentinel_replicas(
    conn: &Conn,
    s: &Endpoint,
    group: &str,
    timeout: Duration,
) -> redis::RedisResult<Vec<ReplicaView>> {
    let mut con = connect(conn, s, Server::Sentinel, timeout).await?;
    sentinel_replicas_on(&mut con, group, timeout).await
}

/// The up sentinels the sentinel at `s` knows, and how many it knows in all (itself included).
pub async fn up_sentinels(
    conn: &Conn,
    s: &Endpoint,
    group: &str,
    timeout: Duration,
) -> redis::RedisResult<(Vec<Endpoint>, usize)> {
    let mut con = connect(conn, s, Server::Sentinel, timeout).await?;
    let peers = sentinel_peers_on(&mut con, group, timeout).await?;
    Ok(crate::sentinel::up_peers(&peers))
}

/// `SENTINEL MYID`.
pub async fn sentinel_myid_on(
    con: &mut redis::aio::MultiplexedConnection,
    timeout: Duration,
) -> redis::RedisResult<String> {
    query(con, redis::cmd("SENTINEL").arg("MYID"), timeout).await
}

/// What a data node reports about its replication (`INFO replication`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Repl {
    pub is_master: bool,
    /// The master a replica is configured to follow.
    pub master: Option<Endpoint>,
    pub link_up: bool,
    pub replid: String,
    pub replid2: String,
    pub offset: u64,
    /// Where the history under `replid2` ended (`second_repl_offset`); -1 when there is none.
    pub second_offset: i64,
}

impl Repl {
    pub fn parse(info: &str) -> Option<Repl> {
        let f = |k| info_field(info, k);
        let is_master = match f("role")? {
            "master" => true,
            "slave" => false,
            _ => return None,
        };
        let master = match (f("master_host"), f("master_port")) {
            (Some(h), Some(p)) if !is_master => Some(Endpoint::from_fields(h, p)?),
            _ => None,
        };
        Some(Repl {
            is_master,
            master,
            link_up: f("master_link_status") == Some("up"),
            replid: f("master_replid").unwrap_or("").to_string(),
            replid2: f("master_replid2").unwrap_or("").to_string(),
            offset: f("master_repl_offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            second_offset: f("second_repl_offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1),
        })
    }
}

/// One replica as the master lists it in `INFO replication`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    pub addr: Endpoint,
    pub online: bool,
    pub offset: u64,
    pub lag: u64,
}

/// Parses `slaveN:ip=..,port=..,state=online,offset=..,lag=..` lines.
pub fn replicas(info: &str) -> Vec<ReplicaInfo> {
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains(":ip="))
        .filter_map(|l| {
            let (_, kv) = l.split_once(':')?;
            let get = |k: &str| {
                kv.split(',')
                    .find_map(|p| p.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            };
            Some(ReplicaInfo {
                addr: Endpoint::from_fields(get("ip")?, get("port")?)?,
                online: get("state")? == "online",
                offset: get("offset")?.parse().ok()?,
                lag: get("lag").and_then(|v| v.parse().ok()).unwrap_or(u64::MAX),
            })
        })
        .collect()
}

/// A replica worth promoting: online and heard from within the last 2 s.
pub fn healthy(r: &ReplicaInfo) -> bool {
    r.online && r.lag <= 2
}

/// `INFO replication` of `e`, parsed.
pub async fn repl(conn: &Conn, e: &Endpoint, timeout: Duration) -> redis::RedisResult<Repl> {
    let mut con = connect(conn, e, Server::Redis, timeout).await?;
    repl_on(&mut con, timeout).await
}

/// `INFO replication` on an open connection, parsed.
pub async fn repl_on(
    con: &mut redis::aio::MultiplexedConnection,
    timeout: Duration,
) -> redis::RedisResult<Repl> {
    let i: String = bounded(
        timeout,
        redis::cmd("INFO").arg("replication").query_async(con),
    )
    .await?;
    Repl::parse(&i).ok_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::Parse, "unexpected INFO replication"))
    })
}

pub async fn info(
    conn: &Conn,
    e: &Endpoint,
    section: &str,
    timeout: Duration,
) -> redis::RedisResult<String> {
    let mut con = connect(conn, e, Server::Redis, timeout).await?;
    bounded(
        timeout,
        redis::cmd("INFO").arg(section).query_async(&mut con),
    )
    .await
}

/// A field of an INFO reply.
pub fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .map(str::trim)
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME`: the master a sentinel names (the promoted replica as soon
/// as it answers as master).
pub async fn master_addr(
    conn: &Conn,
    s: &Endpoint,
    group: &str,
    timeout: Duration,
) -> redis::RedisResult<Option<Endpoint>> {
    let mut con = connect(conn, s, Server::Sentinel, timeout).await?;
    master_addr_on(&mut con, group, timeout).await
}

pub async fn master_addr_on(
    con: &mut redis::aio::MultiplexedConnection,
    group: &str,
    timeout: Duration,
) -> redis::RedisResult<Option<Endpoint>> {
    let addr: Option<(String, String)> = bounded(
        timeout,
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(group)
            .query_async(con),
    )
    .await?;
    Ok(addr.and_then(|(h, p)| Endpoint::from_fields(&h, &p)))
}

/// Whether the sentinel at `s` is in TILT (`INFO sentinel`): it then acts on nothing, a failover
/// it is asked for included, until 30 s after its clock looked odd (any stall of its process).
pub async fn sentinel_tilt(
    conn: &Conn,
    s: &Endpoint,
    timeout: Duration,
) -> redis::RedisResult<bool> {
    let mut con = connect(conn, s, Server::Sentinel, timeout).await?;
    let info: String = query(&mut con, redis::cmd("INFO").arg("sentinel"), timeout).await?;
    Ok(info_field(&info, "sentinel_tilt") == Some("1"))
}

/// `SENTINEL SET group option value` on a connection to a sentinel. The change is that
/// sentinel's alone (Sentinel does not spread it) and lasts until it is set again or the
/// sentinel's file is rendered afresh.
pub async fn sentinel_set_on(
    con: &mut redis::aio::MultiplexedConnection,
    group: &str,
    option: &str,
    value: u64,
    timeout: Duration,
) -> redis::RedisResult<()> {
    query(
        con,
        redis::cmd("SENTINEL")
            .arg("SET")
            .arg(group)
            .arg(option)
            .arg(value),
        timeout,
    )
    .await
}

/// `SENTINEL <sub> <group>` on the sentinel at `s`, for the subcommands that answer OK:
/// `FAILOVER` (a failover without the quorum's agreement) and `REMOVE` (it stops monitoring the
/// group: handover.rs, on a sentinel that stops with its pod).
pub async fn sentinel_group_cmd(
    conn: &Conn,
    s: &Endpoint,
    sub: &str,
    group: &str,
    timeout: Duration,
) -> redis::RedisResult<()> {
    let mut con = connect(conn, s, Server::Sentinel, timeout).await?;
    query(
        &mut con,
        redis::cmd("SENTINEL").arg(sub).arg(group),
        timeout,
    )
    .await
}

/// `REPLICAOF master` on the data node at `node`.
pub async fn replicaof(
    conn: &Conn,
    node: &Endpoint,
    master: &Endpoint,
    timeout: Duration,
) -> redis::RedisResult<()> {
    let mut con = connect(conn, node, Server::Redis, timeout).await?;
    query::<()>(
        &mut con,
        redis::cmd("REPLICAOF")
            .arg(master.host.to_string())
            .arg(master.port),
        timeout,
    )
    .await
}

/// `CONFIG GET <name>` of one parameter: its value, `None` when the server has no such one.
pub async fn config_get_on(
    con: &mut redis::aio::MultiplexedConnection,
    name: &str,
    timeout: Duration,
) -> redis::RedisResult<Option<String>> {
    let got: std::collections::HashMap<String, String> =
        query(con, redis::cmd("CONFIG").arg("GET").arg(name), timeout).await?;
    Ok(got.get(name).cloned())
}

/// `CONFIG SET <name> <value>`.
pub async fn config_set_on(
    con: &mut redis::aio::MultiplexedConnection,
    name: &str,
    value: impl redis::ToRedisArgs,
    timeout: Duration,
) -> redis::RedisResult<()> {
    query(
        con,
        redis::cmd("CONFIG").arg("SET").arg(name).arg(value),
        timeout,
    )
    .await
}

pub async fn is_master(conn: &Conn, e: &Endpoint, timeout: Duration) -> bool {
    matches!(info(conn, e, "replication", timeout).await, Ok(i) if info_field(&i, "role") == Some("master"))
}

/// Resolves a Service name to an address once, so Sentinel never mixes names and IPs.
pub async fn resolved(e: &Endpoint) -> Endpoint {
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

/// The sentinels to ask, resolved (names to addresses) and without duplicates.
pub async fn resolved_all(list: &[Endpoint]) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for e in list {
        let r = resolved(e).await;
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// One command on an open connection, bounded.
pub async fn query<T: redis::FromRedisValue>(
    con: &mut redis::aio::MultiplexedConnection,
    cmd: &mut redis::Cmd,
    timeout: Duration,
) -> redis::RedisResult<T> {
    bounded(timeout, cmd.query_async(con)).await
}

/// Whether anything accepts TCP connections at `e` (tells "nobody there" from "refuses us").
pub async fn tcp_reachable(e: &Endpoint, timeout: Duration) -> bool {
    let addr = (e.host.to_string(), e.port);
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
    )
}

/// The names of every group a sentinel monitors (`SENTINEL MASTERS`): a waiting pod's sentinel
/// carries its outage claim in one of them (outage.rs).
pub async fn sentinel_group_names(
    conn: &Conn,
    s: &Endpoint,
    timeout: Duration,
) -> redis::RedisResult<Vec<String>> {
    let mut con = connect(conn, s, Server::Sentinel, timeout).await?;
    let all: Vec<HashMap<String, String>> =
        query(&mut con, redis::cmd("SENTINEL").arg("MASTERS"), timeout).await?;
    Ok(all
        .into_iter()
        .filter_map(|m| m.get("name").cloned())
        .collect())
}

/// `SENTINEL IS-MASTER-DOWN-BY-ADDR` with a candidate id: asks the sentinel for its vote at
/// `epoch` for the master it monitors at `master`. Sentinel gives one vote per epoch and
/// persists it; the reply is the leader it voted for and that vote's epoch.
pub async fn sentinel_vote(
    conn: &Conn,
    s: &Endpoint,
    master: &Endpoint,
    epoch: u64,
    candidate: &str,
    timeout: Duration,
) -> redis::RedisResult<(String, u64)> {
    let mut con = connect(conn, s, Server::Sentinel, timeout).await?;
    let (_down, leader, leader_epoch): (i64, String, u64) = query(
        &mut con,
        redis::cmd("SENTINEL")
            .arg("IS-MASTER-DOWN-BY-ADDR")
            .arg(master.host.to_string())
            .arg(master.port)
            .arg(epoch)
            .arg(candidate),
        timeout,
    )
    .await?;
    Ok((leader, leader_epoch))
}

/// `PUBLISH __sentinel__:hello <hello>` on a sentinel: it takes the message as a hello from the
/// peer it names (sentinel.c `sentinelPublishCommand`; handover.rs relays a failover's result
/// with it).
pub async fn sentinel_hello_on(
    con: &mut redis::aio::MultiplexedConnection,
    hello: &str,
    timeout: Duration,
) -> redis::RedisResult<()> {
    query::<i64>(
        con,
        redis::cmd("PUBLISH").arg("__sentinel__:hello").arg(hello),
        timeout,
    )
    .await
    .map(|_| ())
}

/// A stream of one of a sentinel's event channels (`+new-epoch`, ...): the payloads.
pub async fn sentinel_events(
    conn: &Conn,
    s: &Endpoint,
    channel: &str,
    timeout: Duration,
) -> redis::RedisResult<redis::aio::PubSubStream> {
    let client = client(conn, s, Server::Sentinel)?;
    let mut ps = bounded(timeout, async { client.get_async_pubsub().await }).await?;
    bounded(timeout, ps.subscribe(channel)).await?;
    Ok(ps.into_on_message())
}

/// Adds a marker group to a sentinel at run time (outage.rs): it monitors a closed port, with an
/// unreachable quorum and the longest down-after, so it never acts.
pub async fn sentinel_add_marker(
    conn: &Conn,
    s: &Endpoint,
    name: &str,
    timeout: Duration,
) -> redis::RedisResult<()> {
    let mut con = connect(conn, s, Server::Sentinel, timeout).await?;
    query::<()>(
        &mut con,
        redis::cmd("SENTINEL")
            .arg("MONITOR")
            .arg(name)
            .arg("127.0.0.1")
            .arg(1)
            .arg(255),
        timeout,
    )
    .await?;
    for opt in ["down-after-milliseconds", "failover-timeout"] {
        sentinel_set_on(&mut con, name, opt, 2_000_000_000, timeout).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replica_lines() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=10.0.0.2,port=6379,state=online,offset=420,lag=0\r\nslave1:ip=10.0.0.3,port=6379,state=wait_bgsave,offset=0,lag=5\r\nmaster_repl_offset:420\r\n";
        let r = replicas(info);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].addr.to_string(), "10.0.0.2:6379");
        assert!(healthy(&r[0]));
        assert!(!healthy(&r[1]));
        assert_eq!(r[0].offset, 420);
    }

    /// INFO writes IPv6 replicas bare (`ip=fd88::22,port=6379`); they come out as the same
    /// Endpoint this pod and Sentinel's fields give.
    #[test]
    fn parses_ipv6_replica_lines() {
        let info = "role:master\r\nslave0:ip=fd88::22,port=6379,state=online,offset=9,lag=0\r\n";
        let r = replicas(info);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].addr.to_string(), "[fd88::22]:6379");
        assert_eq!(
            Some(&r[0].addr),
            Endpoint::from_fields("fd88::22", "6379").as_ref()
        );
    }
}
