//! Each probe outcome reproduced against a real redis-server: down, loading, master link down,
//! initial sync running, ready; and the sentinel's.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A bare redis-server (not through redisha-init) with extra config lines; killed on drop.
struct Redis(Child);

impl Redis {
    fn start(dir: &std::path::Path, port: u16, extra: &str) -> Redis {
        let d = dir.join(format!("r{port}"));
        std::fs::create_dir_all(&d).expect("dir");
        let conf = d.join("redis.conf");
        std::fs::write(&conf, format!("port {port}\nbind 127.0.0.1\ndir {}\nsave \"\"\nenable-debug-command yes\n{extra}\n", d.display())).expect("conf");
        let c = Command::new("redis-server")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        Redis(c)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn probe(port: u16, server: &str, mode: &str) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["probe", server, mode])
        .env_clear()
        // the port of the other server is irrelevant to this probe but must differ
        .env(
            "MASTER_ANNOUNCE_PORT",
            if server == "redis" { port } else { port ^ 1 }.to_string(),
        )
        .env(
            "SENTINEL_ANNOUNCE_PORT",
            if server == "redis" { port ^ 1 } else { port }.to_string(),
        )
        .output()
        .expect("probe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn expect(port: u16, server: &str, mode: &str, code: i32, why: &str) {
    let (c, err) = probe(port, server, mode);
    assert_eq!(c, code, "{server} {mode} on {port}: {err}");
    assert!(
        err.contains(why),
        "{server} {mode}: {err:?} should say {why:?}"
    );
    assert!(err.lines().count() <= 1);
}

#[test]
fn redis_probe_outcomes() {
    let dir = tempdir();
    // down
    let p = free_port();
    expect(p, "redis", "--live", 1, "not reachable");
    expect(p, "redis", "--ready", 1, "not reachable");

    // ready master
    let _m = Redis::start(dir.path(), p, "");
    assert!(wait_for(Duration::from_secs(5), || ping(p).then_some(())).is_some());
    expect(p, "redis", "--live", 0, "");
    expect(p, "redis", "--ready", 0, "");

    // replica whose master link is down (nobody at the master's port)
    let r = free_port();
    let dead = free_port();
    let _r = Redis::start(dir.path(), r, &format!("replicaof 127.0.0.1 {dead}"));
    assert!(wait_for(Duration::from_secs(5), || ping(r).then_some(())).is_some());
    expect(r, "redis", "--live", 0, "");
    expect(r, "redis", "--ready", 1, "master link down");

    // replica in its initial sync: the master produces its snapshot slowly (rdb-key-save-delay,
    // µs per key), so the transfer runs for seconds
    let m2 = free_port();
    let _m2 = Redis::start(
        dir.path(),
        m2,
        "repl-diskless-sync no\nrdb-key-save-delay 1500",
    );
    assert!(wait_for(Duration::from_secs(5), || ping(m2).then_some(())).is_some());
    assert!(redis_str(m2, &["DEBUG", "POPULATE", "3000"]).is_some());
    let s = free_port();
    let _s = Redis::start(dir.path(), s, &format!("replicaof 127.0.0.1 {m2}"));
    let syncing = wait_for(Duration::from_secs(4), || {
        (info_field(s, "replication", "master_sync_in_progress").as_deref() == Some("1"))
            .then_some(())
    });
    assert!(syncing.is_some(), "replica started its sync");
    expect(s, "redis", "--ready", 1, "initial sync in progress");
    let synced = wait_for(Duration::from_secs(15), || {
        (info_field(s, "replication", "master_link_status").as_deref() == Some("up")).then_some(())
    });
    assert!(synced.is_some());
    expect(s, "redis", "--ready", 0, "");

    // loading: a data set loaded slowly (key-load-delay, µs per key) after a restart
    let l = free_port();
    {
        let _a = Redis::start(dir.path(), l, "");
        assert!(wait_for(Duration::from_secs(5), || ping(l).then_some(())).is_some());
        assert!(redis_str(l, &["DEBUG", "POPULATE", "2000"]).is_some());
        assert!(redis_str(l, &["SAVE"]).is_some());
    }
    let _b = Redis::start(
        dir.path(),
        l,
        "dbfilename dump.rdb\nkey-load-delay 3000\nloading-process-events-interval-bytes 1024",
    );
    let loading = wait_for(Duration::from_secs(5), || {
        (info_field(l, "persistence", "loading").as_deref() == Some("1")).then_some(())
    })
    .or_else(|| {
        // INFO itself is refused while loading on some versions: LOADING from PING is the sign
        let e = redis_cmd(l, &["PING"]).err()?;
        (e.code() == Some("LOADING")).then_some(())
    });
    assert!(loading.is_some(), "server is loading");
    expect(l, "redis", "--live", 0, "");
    expect(l, "redis", "--ready", 1, "loading");
}

#[test]
fn sentinel_probe_outcomes() {
    let dir = tempdir();
    let p = free_port();
    expect(p, "sentinel", "--live", 1, "not reachable");
    let conf = dir.path().join("s.conf");
    std::fs::write(&conf, format!("port {p}\nbind 127.0.0.1\n")).expect("conf");
    let _s = Redis(
        Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .spawn()
            .expect("sentinel"),
    );
    assert!(wait_for(Duration::from_secs(5), || ping(p).then_some(())).is_some());
    expect(p, "sentinel", "--live", 0, "");
    expect(p, "sentinel", "--ready", 1, "names no master");
    // A monitored master that is not there: not failover-safe.
    assert!(redis_str(
        p,
        &["SENTINEL", "MONITOR", "mymaster", "127.0.0.1", "6", "2"]
    )
    .is_some());
    let down = wait_for(Duration::from_secs(5), || {
        (probe(p, "sentinel", "--ready").0 == 1).then_some(())
    });
    assert!(
        down.is_some(),
        "a sentinel whose master is unreachable is not ready"
    );
    expect(p, "sentinel", "--ready", 1, "master down");
    // A live master and nobody else yet (a lone first pod): ready.
    assert!(redis_str(p, &["SENTINEL", "REMOVE", "mymaster"]).is_some());
    let m = free_port();
    let _m = Redis::start(dir.path(), m, "");
    assert!(wait_for(Duration::from_secs(5), || ping(m).then_some(())).is_some());
    let ms = m.to_string();
    assert!(redis_str(
        p,
        &["SENTINEL", "MONITOR", "mymaster", "127.0.0.1", &ms, "2"]
    )
    .is_some());
    let up = wait_for(Duration::from_secs(5), || {
        (probe(p, "sentinel", "--ready").0 == 0).then_some(())
    });
    assert!(up.is_some(), "{:?}", probe(p, "sentinel", "--ready"));
    // ... with a replica that links: still ready once the sentinel has learned it; the quorum
    // of 2 needs another sentinel, which this one does not know: not failover-safe.
    let r = free_port();
    let _r = Redis::start(dir.path(), r, &format!("replicaof 127.0.0.1 {m}"));
    let unsafe_ = wait_for(Duration::from_secs(15), || {
        (probe(p, "sentinel", "--ready").0 == 1).then_some(())
    });
    assert!(
        unsafe_.is_some(),
        "a known replica but no peer sentinel for quorum 2"
    );
    expect(p, "sentinel", "--ready", 1, "quorum");
}
