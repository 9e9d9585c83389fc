//! The master proxy (`redisha-init proxy`): one address that always reaches the master the
//! sentinels name, for clients that do not speak Sentinel (redis-cli, connection strings, cache
//! backends of frameworks, older drivers).
//!
//! PID 1 starts it as a third child when `REDISHA_MASTER_PROXY_PORT` is set (child.rs). It
//! accepts TCP on that port and copies each connection's bytes to and from the master (TLS and
//! AUTH pass through untouched: the client talks to redis end to end). The master is the one a
//! majority of the sentinels names at their highest epoch (route.rs), learnt from our own
//! sentinel's events and confirmed with every sentinel on a short period (track.rs):
//! - the route changes: every connection to the old master is closed at once, new ones go to the
//!   new master; no client keeps writing to a demoted or fenced node through us;
//! - a failover runs (a planned handover pauses the old master's writes, then the sentinels name
//!   another): new connections wait up to `WAIT_FOR_MASTER` instead of being refused;
//! - no master known (no majority answers): connections are refused at once, so a client's
//!   reconnect loop goes on rather than hanging;
//! - bytes flow only under a lease from the last confirmation (route::Lease): a proxy that was
//!   frozen or cut off from the majority forwards nothing, either way, until it has asked again.
//!
//! The copy is a plain read/write per chunk with a user-space buffer (on the stack while a chunk
//! is copied, so an idle connection holds none): the lease is checked per chunk, which splice(2)
//! would not let us do without the same syscalls. BENCHMARKS.md has the numbers.
//!
//! Connections are bounded (`REDISHA_MASTER_PROXY_MAX_CONNS`, default 10 000; a client address
//! gets at most half): one client holding thousands of connections, or sending garbage (redis
//! closes it) or half-closing, does not stop the proxy from serving the others.

pub mod child;
pub mod route;
pub mod track;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{ConfigError, Endpoint, Host, RawEnv};
use route::{Lease, Route};

/// `REDISHA_MASTER_PROXY_*`, checked with the rest of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub port: u16,
    pub max_conns: u32,
}

pub const DEFAULT_MAX_CONNS: u32 = 10_000;

/// How long a new connection waits for a master while a failover runs.
pub const WAIT_FOR_MASTER: Duration = Duration::from_secs(5);
/// Connecting to the master: a dead pod's address must not hold the client for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A chunk read while the lease had lapsed waits this long for a confirmation, then the
/// connection is closed.
const LEASE_WAIT: Duration = Duration::from_secs(2);
const BUF: usize = 32 * 1024;

/// `None`: the proxy is off (the variable unset, `0` or `off`).
pub fn settings(
    env: &RawEnv,
    redis_port: u16,
    sentinel_port: u16,
) -> Result<Option<Settings>, ConfigError> {
    let bad = |name: &str, v: &str, why: &str| ConfigError {
        name: name.into(),
        value: Some(v.into()),
        reason: why.into(),
    };
    let port = match env.get("REDISHA_MASTER_PROXY_PORT") {
        None | Some("0" | "off") => None,
        Some(v) => {
            let p = crate::config::parse_port("REDISHA_MASTER_PROXY_PORT", v)?;
            if p == redis_port || p == sentinel_port {
                return Err(bad(
                    "REDISHA_MASTER_PROXY_PORT",
                    v,
                    "same as the redis or the sentinel port",
                ));
            }
            Some(p)
        }
    };
    let max_conns = match env.get("REDISHA_MASTER_PROXY_MAX_CONNS") {
        None => DEFAULT_MAX_CONNS,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (2..=1_000_000).contains(n) && !v.starts_with('+'))
            .ok_or_else(|| {
                bad(
                    "REDISHA_MASTER_PROXY_MAX_CONNS",
                    v,
                    "not an integer in 2..=1000000",
                )
            })?,
    };
    Ok(port.map(|port| Settings { port, max_conns }))
}

/// The connection bound: in all, and per client address (half of it), so one client cannot take
/// every slot.
struct Limits {
    max: u32,
    per_ip: u32,
    by_ip: Mutex<(u32, HashMap<IpAddr, u32>)>,
}

struct Permit {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Limits {
    fn new(max: u32) -> Limits {
        Limits {
            max,
            per_ip: max.div_ceil(2),
            by_ip: Mutex::new((0, HashMap::new())),
        }
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let mut g = self.by_ip.lock().ok()?;
        let (total, map) = &mut *g;
        let n = map.get(&ip).copied().unwrap_or(0);
        if *total >= self.max || n >= self.per_ip {
            return None;
        }
        *total += 1;
        map.insert(ip, n + 1);
        Some(Permit {
            limits: self.clone(),
            ip,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut g) = self.limits.by_ip.lock() {
            let (total, map) = &mut *g;
            *total = total.saturating_sub(1);
            if let Some(n) = map.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&self.ip);
                }
            }
        }
    }
}

struct Shared {
    route: watch::Receiver<Route>,
    lease: Arc<Lease>,
}

/// `redisha-init proxy`: runs until SIGTERM/SIGINT.
pub async fn run(cfg: crate::config::Config) -> i32 {
    // Lines as PID 1 writes its own (text or JSON), on the stdout PID 1 shares with us.
    let _log_guard = crate::logs::init_tracing(cfg.log_format);
    let Some(s) = cfg.proxy else {
        eprintln!("redisha-init proxy: config error: REDISHA_MASTER_PROXY_PORT: not set (the port to listen on)");
        return crate::exit::CONFIG;
    };
    let max = fit_to_fd_limit(s.max_conns);
    // In a pod the Service reaches us on the pod's address; locally only this machine may.
    let ip: IpAddr = match cfg.pod_ip {
        Some(IpAddr::V4(_)) => IpAddr::from([0u8; 4]),
        Some(IpAddr::V6(_)) => IpAddr::from([0u16; 8]),
        None => IpAddr::from([127, 0, 0, 1]),
    };
    let listener = match TcpListener::bind(SocketAddr::new(ip, s.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "redisha-init proxy: cannot listen on {ip} port {}: {e}",
                s.port
            );
            return crate::exit::OSERR;
        }
    };
    tracing::info!(port = s.port, max_conns = max, "proxy: listening");
    let lease = Arc::new(Lease::new(Instant::now()));
    let (tx, rx) = watch::channel(Route::Refuse("not asked the sentinels yet".into()));
    tokio::spawn(track::run(cfg.clone(), tx, lease.clone()));
    let sh = Arc::new(Shared { route: rx, lease });
    let limits = Arc::new(Limits::new(max));
    let stop = async {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
            }
            _ => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = accept_loop(listener, sh, limits) => 0,
        _ = stop => {
            tracing::info!("proxy: stopping");
            0
        }
    }
}

async fn accept_loop(listener: TcpListener, sh: Arc<Shared>, limits: Arc<Limits>) {
    let mut refused_full = 0u64;
    loop {
        let (sock, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors or memory: let the running connections finish their work
                // instead of spinning on the error.
                tracing::warn!(error = %e, "proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if matches!(*sh.route.borrow(), Route::Refuse(_)) {
            reset(sock);
            continue;
        }
        let Some(permit) = limits.admit(peer.ip()) else {
            refused_full += 1;
            if refused_full.is_power_of_two() {
                tracing::warn!(client = %peer.ip(), refused = refused_full, "proxy: connection bound reached; refusing");
            }
            reset(sock);
            continue;
        };
        let sh = sh.clone();
        tokio::spawn(async move {
            serve(sock, &sh).await;
            drop(permit);
        });
    }
}

/// Closes with a reset: the client learns at once, and no TIME_WAIT stays here.
fn reset(sock: TcpStream) {
    let _ = sock.set_zero_linger();
    drop(sock);
}

/// The master for a new connection: at once, or after a running failover (bounded).
async fn master_for_new(rx: &mut watch::Receiver<Route>) -> Option<Endpoint> {
    let r = tokio::time::timeout(
        WAIT_FOR_MASTER,
        rx.wait_for(|r| !matches!(r, Route::Wait(_))),
    )
    .await;
    match r {
        Ok(Ok(r)) => track::master_of(&r).cloned(),
        _ => None,
    }
}

async fn dial(m: &Endpoint) -> io::Result<TcpStream> {
    let connect = async {
        match &m.host {
            Host::Ip(ip) => TcpStream::connect(SocketAddr::new(*ip, m.port)).await,
            Host::Name(n) => TcpStream::connect((n.as_str(), m.port)).await,
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

async fn serve(client: TcpStream, sh: &Shared) {
    let mut rx = sh.route.clone();
    let Some(master) = master_for_new(&mut rx).await else {
        reset(client);
        return;
    };
    let up = match dial(&master).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(master = %master, error = %e, "proxy: cannot reach the master");
            reset(client);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let guard = Guard {
        lease: &sh.lease,
        route: &sh.route,
        mine: &master,
    };
    let copy = async { tokio::try_join!(pump(&client, &up, &guard), pump(&up, &client, &guard)) };
    tokio::select! {
        _ = copy => {}
        // The master changed: close both ends now (dropping them), whatever is in flight.
        _ = rx.wait_for(|r| route::must_close(r, &master)) => {
            let _ = client.set_zero_linger();
        }
    }
}

/// What a chunk must pass before it is forwarded.
struct Guard<'a> {
    lease: &'a Lease,
    route: &'a watch::Receiver<Route>,
    mine: &'a Endpoint,
}

impl Guard<'_> {
    /// The lease had lapsed when the chunk arrived: wait (bounded) for a look that confirms
    /// this master; an error closes the connection.
    async fn confirmed(&self) -> io::Result<()> {
        let until = Instant::now() + LEASE_WAIT;
        loop {
            let now = Instant::now();
            if route::must_close(&self.route.borrow(), self.mine) || now >= until {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "master not confirmed",
                ));
            }
            if self.lease.valid_at(now)
                && matches!(&*self.route.borrow(), Route::Master(m) if m == self.mine)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

enum Step {
    Again,
    Eof,
    /// Bytes read that still have to be written; `true`: the lease must be confirmed first.
    Rest(Vec<u8>, bool),
}

/// One chunk, without awaiting: the buffer lives on the stack only here, so an idle connection
/// holds no buffer at all.
fn chunk(from: &TcpStream, to: &TcpStream, lease: &Lease) -> io::Result<Step> {
    let mut buf = [0u8; BUF];
    // A short read emptied the socket: its readiness is cleared now (by reporting WouldBlock to
    // tokio), which saves the read that would only return EAGAIN, a third of the syscalls of a
    // request. Data that arrives meanwhile raises a new edge, which tokio does not clear.
    let mut got = 0usize;
    let r = from.try_io(Interest::READABLE, || {
        // SAFETY: read(2) into a local buffer of its length, on a descriptor `from` owns.
        let n = unsafe { libc::read(from.as_raw_fd(), buf.as_mut_ptr().cast(), BUF) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        got = n as usize;
        if got > 0 && got < BUF {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    });
    let n = match (r, got) {
        (Ok(()), 0) => return Ok(Step::Eof),
        (_, n) if n > 0 => n,
        (Err(e), _) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Again),
        (Err(e), _) => return Err(e),
        (Ok(()), n) => n,
    };
    if !lease.valid_at(Instant::now()) {
        return Ok(Step::Rest(buf[..n].to_vec(), true));
    }
    let k = match to.try_write(&buf[..n]) {
        Ok(k) => k,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    Ok(if k == n {
        Step::Again
    } else {
        Step::Rest(buf[k..n].to_vec(), false)
    })
}

async fn pump(from: &TcpStream, to: &TcpStream, g: &Guard<'_>) -> io::Result<()> {
    loop {
        from.readable().await?;
        match chunk(from, to, g.lease)? {
            Step::Again => {}
            Step::Eof => {
                // Half-close passes through: the other direction goes on until its end closes.
                // SAFETY: shutdown(2) on a descriptor `to` owns and keeps open.
                unsafe {
                    libc::shutdown(to.as_raw_fd(), libc::SHUT_WR);
                }
                return Ok(());
            }
            Step::Rest(v, check) => {
                if check {
                    g.confirmed().await?;
                }
                write_all(to, &v).await?;
            }
        }
    }
}

async fn write_all(to: &TcpStream, mut b: &[u8]) -> io::Result<()> {
    while !b.is_empty() {
        to.writable().await?;
        match to.try_write(b) {
            Ok(k) => b = &b[k..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Two descriptors per connection: raises the soft limit to the hard one and lowers the bound
/// to what fits (with room for the sentinel connections and the listener).
fn fit_to_fd_limit(max: u32) -> u32 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return max;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    };
    let fits = (soft.saturating_sub(64) / 2).min(u32::MAX as u64) as u32;
    if fits < max {
        tracing::warn!(
            max_conns = max,
            open_files_limit = soft,
            "proxy: REDISHA_MASTER_PROXY_MAX_CONNS lowered to {fits} to fit the open files limit"
        );
        return fits.max(1);
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> RawEnv {
        RawEnv::from_os(
            pairs
                .iter()
                .map(|(k, v)| (std::ffi::OsString::from(k), std::ffi::OsString::from(v))),
        )
        .expect("utf-8")
    }

    #[test]
    fn settings_table() {
        let on = |port, max_conns| Ok(Some(Settings { port, max_conns }));
        type Case<'a> = (&'a [(&'a str, &'a str)], Result<Option<Settings>, &'a str>);
        let cases: &[Case] = &[
            (&[], Ok(None)),
            (
                &[("REDISHA_MASTER_PROXY_PORT", "")],
                Err("REDISHA_MASTER_PROXY_PORT=\"\": not a port in 1..=65535"),
            ),
            (&[("REDISHA_MASTER_PROXY_PORT", "0")], Ok(None)),
            (&[("REDISHA_MASTER_PROXY_PORT", "off")], Ok(None)),
            (
                &[("REDISHA_MASTER_PROXY_PORT", "6380")],
                on(6380, DEFAULT_MAX_CONNS).map_err(|_: ()| ""),
            ),
            (
                &[
                    ("REDISHA_MASTER_PROXY_PORT", "6380"),
                    ("REDISHA_MASTER_PROXY_MAX_CONNS", "100"),
                ],
                on(6380, 100).map_err(|_: ()| ""),
            ),
            (
                &[("REDISHA_MASTER_PROXY_PORT", "6379")],
                Err("REDISHA_MASTER_PROXY_PORT=\"6379\": same as the redis or the sentinel port"),
            ),
            (
                &[("REDISHA_MASTER_PROXY_PORT", "26379")],
                Err("REDISHA_MASTER_PROXY_PORT=\"26379\": same as the redis or the sentinel port"),
            ),
            (
                &[("REDISHA_MASTER_PROXY_PORT", "70000")],
                Err("REDISHA_MASTER_PROXY_PORT=\"70000\": not a port in 1..=65535"),
            ),
            (
                &[("REDISHA_MASTER_PROXY_PORT", "yes")],
                Err("REDISHA_MASTER_PROXY_PORT=\"yes\": not a port in 1..=65535"),
            ),
            (
                &[
                    ("REDISHA_MASTER_PROXY_PORT", "6380"),
                    ("REDISHA_MASTER_PROXY_MAX_CONNS", "1"),
                ],
                Err("REDISHA_MASTER_PROXY_MAX_CONNS=\"1\": not an integer in 2..=1000000"),
            ),
        ];
        for (vars, want) in cases {
            let got = settings(&env(vars), 6379, 26379).map_err(|e| e.to_string());
            let want = (*want).map_err(|e| e.to_string());
            assert_eq!(got, want, "{vars:?}");
        }
    }

    #[test]
    fn limits_bound_the_total_and_each_client() {
        let l = Arc::new(Limits::new(4));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let pa: Vec<Permit> = (0..2).filter_map(|_| l.admit(a)).collect();
        assert_eq!(pa.len(), 2);
        assert!(l.admit(a).is_none(), "one client gets at most half");
        let pb1 = l.admit(b).expect("another client is served");
        let _pb2 = l.admit(b).expect("up to its half");
        assert!(l.admit(b).is_none());
        drop(pb1);
        assert!(l.admit(b).is_some(), "a closed connection frees its slot");
        drop(pa);
        assert_eq!(
            l.by_ip.lock().map(|g| g.1.get(&a).copied()).ok().flatten(),
            None
        );
    }
}
