//! A real cgroup v1 memory limit (issue 18): redisha-init inside a memory cgroup made for the
//! test, with the real redis-server. Under the derived maxmemory a full redis refuses writes
//! with its OOM error and nothing is killed, an AOF rewrite included; without maxmemory
//! (REDISHA_MAXMEMORY=0) the kernel OOM-kills redis and the log names it. Needs root and the
//! cgroup v1 memory controller (our machines; tests/docker covers `docker run --memory`).

mod common;

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use common::*;

const MIB: u64 = 1 << 20;

/// A memory cgroup under this process's own, with a limit and no swap; removed on drop (declare
/// it before the `Init` that runs in it, so the processes are gone first).
struct TestCgroup {
    dir: PathBuf,
}

impl TestCgroup {
    fn new(name: &str, limit: u64) -> TestCgroup {
        let own = fs::read_to_string("/proc/self/cgroup")
            .expect("/proc/self/cgroup")
            .lines()
            .find_map(|l| {
                let mut p = l.splitn(3, ':');
                let (_, ctrl, path) = (p.next()?, p.next()?, p.next()?);
                ctrl.split(',')
                    .any(|c| c == "memory")
                    .then(|| path.trim_start_matches('/').to_string())
            })
            .expect("this test needs the cgroup v1 memory controller (/proc/self/cgroup has no memory line)");
        let dir = PathBuf::from("/sys/fs/cgroup/memory")
            .join(own)
            .join(format!("{name}-{}", std::process::id()));
        fs::create_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot create {} (needs root and cgroup v1): {e}",
                dir.display()
            )
        });
        let cg = TestCgroup { dir };
        cg.write("memory.limit_in_bytes", &limit.to_string());
        // Without swap, as in Kubernetes: the limit is where the OOM killer acts.
        let _ = fs::write(
            cg.dir.join("memory.memsw.limit_in_bytes"),
            limit.to_string(),
        );
        cg
    }

    fn write(&self, file: &str, v: &str) {
        fs::write(self.dir.join(file), v).unwrap_or_else(|e| panic!("{file}: {e}"));
    }

    fn read(&self, file: &str) -> String {
        fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    fn oom_kills(&self) -> u64 {
        self.read("memory.oom_control")
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .expect("memory.oom_control has an oom_kill field on this kernel")
    }

    /// The prefix that moves the process into the cgroup before redisha-init is exec'd.
    fn wrap(&self) -> Vec<String> {
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "echo $$ > {}/cgroup.procs && exec \"$@\"",
                self.dir.display()
            ),
            "sh".into(),
        ]
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn start(cg: &TestCgroup, dir: &std::path::Path, port: u16, extra: &[(&str, &str)]) -> Init {
    let mut env = base_env(&dir.join("state"), port);
    env.insert("REDISHA_ROLE".into(), "master".into());
    for (k, v) in extra {
        env.insert((*k).into(), (*v).into());
    }
    let wrap = cg.wrap();
    let wrap: Vec<&str> = wrap.iter().map(String::as_str).collect();
    let init = Init::start(&[], &env, &wrap, dir.join("log"));
    assert!(
        wait_for(Duration::from_secs(15), || ping(port).then_some(())).is_some(),
        "redis never answered:\n{}",
        init.output()
    );
    init
}

/// Writes 64 KiB of 1 KiB values per batch (pipelined) until redis refuses or the connection
/// breaks; bounded by `max_batches`. Returns (batches written, the first error).
fn fill(port: u16, max_batches: usize) -> (usize, Option<String>) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("client");
    let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(5)) else {
        return (0, Some("cannot connect".into()));
    };
    let _ = con.set_read_timeout(Some(Duration::from_secs(10)));
    let val = vec![b'v'; 1024];
    for b in 0..max_batches {
        let mut p = redis::pipe();
        for i in 0..64 {
            p.cmd("SET").arg(format!("k:{b}:{i}")).arg(&val).ignore();
        }
        if let Err(e) = p.query::<()>(&mut con) {
            return (b, Some(e.to_string()));
        }
    }
    (max_batches, None)
}

#[test]
fn full_redis_refuses_writes_and_nothing_is_killed() {
    let limit = 96 * MIB;
    let cg = TestCgroup::new("redisha-test-maxmemory", limit);
    let dir = tempdir();
    let port = free_port();
    let mut init = start(&cg, dir.path(), port, &[]);
    // src/memory.rs DEFAULT_PERCENT
    let want = limit * 30 / 100;
    assert_eq!(
        redis_cmd(port, &["CONFIG", "GET", "maxmemory"])
            .map(|v| format!("{v:?}"))
            .ok(),
        Some(format!(
            "{:?}",
            redis::Value::Array(vec![
                redis::Value::BulkString(b"maxmemory".to_vec()),
                redis::Value::BulkString(want.to_string().into_bytes()),
            ])
        )),
        "{}",
        init.output()
    );
    let log = init.output();
    assert!(
        log.contains(&format!("limit {limit}")) && log.contains(&format!("maxmemory {want}")),
        "the log names the limit and maxmemory:\n{log}"
    );
    let pid = redis_pid(port);
    let oom_before = cg.oom_kills();
    // Twice what maxmemory allows: the refusal must come first.
    let (batches, err) = fill(port, (2 * want / (64 * 1024)) as usize);
    let err = err.unwrap_or_else(|| panic!("{batches} batches accepted, no refusal"));
    assert!(err.contains("OOM"), "refused with Redis's OOM error: {err}");
    assert!(batches > 0, "something was written before the refusal");
    // At maxmemory, an AOF rewrite (a fork while full) fits in the rest of the limit.
    assert!(redis_str(port, &["BGREWRITEAOF"]).is_some());
    let done = wait_for(Duration::from_secs(60), || {
        (info_field(port, "persistence", "aof_rewrite_in_progress").as_deref() == Some("0")
            && info_field(port, "persistence", "aof_rewrite_scheduled").as_deref() == Some("0"))
        .then_some(())
    });
    assert!(done.is_some(), "the rewrite ended");
    assert_eq!(
        info_field(port, "persistence", "aof_last_bgrewrite_status").as_deref(),
        Some("ok")
    );
    assert_eq!(redis_pid(port), pid, "same redis process");
    assert_eq!(cg.oom_kills(), oom_before, "no OOM kill in the cgroup");
    let log = init.output();
    assert!(
        !log.contains("exited unexpectedly") && !log.contains("OOM killer"),
        "nothing was restarted:\n{log}"
    );
    init.signal(libc::SIGTERM);
    let st = init.wait(Duration::from_secs(15)).expect("stops");
    assert_eq!(st.code(), Some(0), "{}", init.output());
}

#[test]
fn an_oom_kill_is_named_in_the_log() {
    let limit = 64 * MIB;
    let cg = TestCgroup::new("redisha-test-oomkill", limit);
    let dir = tempdir();
    let port = free_port();
    let mut init = start(&cg, dir.path(), port, &[("REDISHA_MAXMEMORY", "0")]);
    assert!(
        !init.output().contains("maxmemory 0") && init.output().contains("REDISHA_MAXMEMORY=0"),
        "{}",
        init.output()
    );
    let before = cg.oom_kills();
    // No maxmemory: redis grows until the kernel kills it (bounded at 4 x the limit).
    let (_, err) = fill(port, (4 * limit / (64 * 1024)) as usize);
    assert!(err.is_some(), "redis took 4 x its limit without failing");
    let line = wait_for(Duration::from_secs(15), || {
        init.output()
            .lines()
            .find(|l| l.contains("OOM killer"))
            .map(String::from)
    })
    .unwrap_or_else(|| panic!("no OOM line in the log:\n{}", init.output()));
    assert!(cg.oom_kills() > before, "the kernel counted an OOM kill");
    for want in [
        "child=\"redis\"",
        &format!("limit={}", "64.0 MiB"),
        "REDISHA_MAXMEMORY=0",
    ] {
        assert!(line.contains(want), "{want:?} in {line:?}");
    }
    // The usual restart policy applies.
    assert!(
        wait_for(Duration::from_secs(10), || init
            .output()
            .contains("child exited unexpectedly; restarting")
            .then_some(()))
        .is_some(),
        "{}",
        init.output()
    );
    init.signal(libc::SIGTERM);
    assert!(
        init.wait(Duration::from_secs(15)).is_some(),
        "{}",
        init.output()
    );
}

fn redis_pid(port: u16) -> Option<String> {
    info_field(port, "server", "process_id")
}
