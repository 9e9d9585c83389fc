//! Shared helpers of the integration tests: start redisha-init for real, wait with bounds, clean up.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_redisha-init");

/// A port nobody listens on. Ports are handed out from a per-process counter offset by the pid so
/// parallel tests (and parallel test binaries) do not collide, then checked to be free.
pub fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    for _ in 0..2000 {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let p = 20000 + ((std::process::id() as u16).wrapping_mul(97) % 20000 + n * 7) % 25000;
        if TcpListener::bind(("127.0.0.1", p)).is_ok()
            && TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port found");
}

/// Polls `f` every 50 ms until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("redisha-test-")
        .tempdir()
        .expect("tempdir")
}

/// Writes an executable shell script standing in for redis-server where a test needs a child
/// that behaves in a precise way (traps signals, spawns orphans, exits at once).
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

/// A running redisha-init; killed (whole process group) on drop so a failing test leaves nothing.
pub struct Init {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub pid: i32,
}

pub fn base_env(state: &Path, port: u16) -> HashMap<String, String> {
    HashMap::from([
        ("REDISHA_STATE_DIR".into(), state.display().to_string()),
        ("MASTER_ANNOUNCE_PORT".into(), port.to_string()),
        ("SENTINEL_ANNOUNCE_PORT".into(), (port + 1).to_string()),
    ])
}

/// The environment of node `i` of a loopback cluster on `ports` (node 0 starts as master; every
/// node knows every sentinel, at port + 1).
pub fn node_env(dir: &Path, ports: &[u16], i: usize) -> HashMap<String, String> {
    let sentinels = ports
        .iter()
        .map(|p| format!("127.0.0.1:{}", p + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut env = base_env(&dir.join(format!("n{i}")), ports[i]);
    env.insert(
        "REDISHA_ROLE".into(),
        if i == 0 { "master" } else { "replica" }.into(),
    );
    env.insert("REDIS_MASTER_SERVICE_HOST".into(), "127.0.0.1".into());
    env.insert("REDIS_MASTER_SERVICE_PORT".into(), ports[0].to_string());
    env.insert("REDISHA_SENTINELS".into(), sentinels);
    env
}

impl Init {
    /// `wrap`: a prefix such as `unshare --pid --fork --mount-proc` to run it as PID 1.
    pub fn start(
        args: &[&str],
        env: &HashMap<String, String>,
        wrap: &[&str],
        log: PathBuf,
    ) -> Init {
        let out = fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("dup");
        let mut argv: Vec<&str> = wrap.to_vec();
        argv.push(BIN);
        argv.extend_from_slice(args);
        let mut cmd = Command::new(argv[0]);
        cmd.args(&argv[1..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd.envs(env).stdin(Stdio::null()).stdout(out).stderr(err);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("spawn redisha-init");
        let pid = child.id() as i32;
        Init {
            child: Some(child),
            log,
            pid,
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe {
            libc::kill(self.pid, sig);
        }
    }

    /// Waits for exit, bounded; None when it is still running after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let r = wait_for(timeout, || child.try_wait().ok().flatten());
        if r.is_some() {
            self.child = None;
        }
        r
    }

    pub fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        // Descendants first, while the tree is intact: once redisha-init is gone its children
        // are reparented and can no longer be found from it.
        kill_tree(self.pid);
        if let Some(mut c) = self.child.take() {
            unsafe {
                libc::kill(-(c.id() as i32), libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }
}

/// Pids whose parent is `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if proc_field(p, "PPid").and_then(|v| v.parse::<i32>().ok()) == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

pub fn descendants(pid: i32) -> Vec<i32> {
    let mut all = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children_of(p) {
            all.push(c);
            todo.push(c);
        }
    }
    all
}

pub fn kill_tree(pid: i32) {
    for p in descendants(pid) {
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
}

pub fn proc_field(pid: i32, key: &str) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

pub fn redis_cmd(port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    con.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(&mut con)
}

pub fn redis_str(port: u16, args: &[&str]) -> Option<String> {
    match redis_cmd(port, args).ok()? {
        redis::Value::SimpleString(s) => Some(s),
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        redis::Value::Okay => Some("OK".into()),
        redis::Value::Int(i) => Some(i.to_string()),
        redis::Value::VerbatimString { text, .. } => Some(text),
        _ => None,
    }
}

pub fn ping(port: u16) -> bool {
    redis_str(port, &["PING"]).as_deref() == Some("PONG")
}

pub fn info_field(port: u16, section: &str, key: &str) -> Option<String> {
    let info = redis_str(port, &["INFO", section])?;
    info.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}
