//! The binary's contract on bad input: one line naming what is wrong, a documented exit code,
//! and nothing started or written.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::Command;

use common::*;

/// Runs the binary with a clean environment plus `vars`; a marker script stands in for
/// redis-server so we can tell whether anything was started.
fn run(args: &[&str], vars: &[(&OsStr, &OsStr)]) -> (i32, String, String, bool) {
    let dir = tempdir();
    let marker = dir.path().join("started");
    let exe = script(
        dir.path(),
        "redis-server",
        &format!("touch '{}'; sleep 5", marker.display()),
    );
    let state = dir.path().join("state");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .env("REDISHA_REDIS_SERVER", &exe)
        .env("REDISHA_STATE_DIR", &state);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run");
    let started = marker.exists() || state.exists();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started,
    )
}

fn s(v: &str) -> &OsStr {
    OsStr::new(v)
}

#[test]
fn bad_environment_exits_78_naming_the_variable() {
    // execve refuses a single string over 128 KiB (MAX_ARG_STRLEN); the 1 MiB case is a unit
    // test of the config layer (config::tests::long_values_are_cut_in_errors).
    let long = "9".repeat(120 * 1024);
    let non_utf8 = OsStr::from_bytes(b"10.0.0.\xff");
    let cases: Vec<(&str, &OsStr)> = vec![
        ("MY_POD_IP", s("10.0.0.256")),
        ("MY_POD_IP", non_utf8),
        ("MY_POD_IP", s("")),
        ("MASTER_ANNOUNCE_PORT", s("70000")),
        ("MASTER_ANNOUNCE_PORT", s(&long)),
        ("SENTINEL_ANNOUNCE_PORT", s("0")),
        ("REDISHA_QUORUM", s("x")),
        ("REDISHA_DOWN_AFTER_MS", s("1e3")),
        (
            "REDISHA_FAILOVER_TIMEOUT_MS",
            s("10000\nsentinel monitor evil 1.2.3.4 1 1"),
        ),
        ("REDISHA_PARALLEL_SYNCS", s("")),
        ("REDISHA_LOG_FORMAT", s("yaml")),
        ("REDISHA_STOP_GRACE_MS", s("soon")),
        ("REDISHA_MASTER_GROUP", s("a\nb")),
        ("REDISHA_ROLE", s("primary")),
        (
            "REDIS_MASTER_SERVICE_HOST",
            s("redis-primary\nreplicaof 6.6.6.6 1"),
        ),
        ("REDIS_MASTER_SERVICE_PORT", s("-1")),
        ("REDISHA_SENTINELS", s("redis-primary")),
    ];
    for (var, val) in cases {
        let mut vars = vec![(s("REDIS_MASTER_SERVICE_HOST"), s("redis-primary"))];
        vars.push((s(var), val));
        let args: &[&str] = if var == "REDISHA_ROLE" {
            &[]
        } else {
            &["--role", "replica"]
        };
        let (code, stdout, stderr, started) = run(args, &vars);
        assert_eq!(code, 78, "{var}: exit code; stderr={stderr}");
        assert_eq!(stderr.lines().count(), 1, "{var}: one line: {stderr:?}");
        assert!(stderr.contains(var), "{var}: error names it: {stderr}");
        assert!(
            stderr.len() < 400,
            "{var}: error is short ({} bytes)",
            stderr.len()
        );
        assert!(stdout.is_empty(), "{var}: nothing on stdout");
        assert!(!started, "{var}: nothing may start or be written");
    }
}

/// Every variable we read, fed empty, hostile (a newline and a directive), huge and non-UTF-8.
#[test]
fn every_variable_rejects_hostile_values() {
    const VARS: &[&str] = &[
        "MY_POD_IP",
        "MASTER_ANNOUNCE_PORT",
        "SENTINEL_ANNOUNCE_PORT",
        "REDIS_MASTER_SERVICE_HOST",
        "REDIS_MASTER_SERVICE_PORT",
        "REDISHA_ROLE",
        "REDISHA_SENTINELS",
        "REDISHA_STATE_DIR",
        "REDISHA_CONF_DIR",
        "REDISHA_MASTER_GROUP",
        "REDISHA_QUORUM",
        "REDISHA_DOWN_AFTER_MS",
        "REDISHA_FAILOVER_TIMEOUT_MS",
        "REDISHA_PARALLEL_SYNCS",
        "REDISHA_MIN_REPLICAS_TO_WRITE",
        "REDISHA_MIN_REPLICAS_MAX_LAG",
        "REDISHA_LOG_FORMAT",
        "REDISHA_STOP_GRACE_MS",
        "REDISHA_REDIS_SERVER",
        "REDISHA_HANDOVER",
        "REDISHA_DURABILITY",
        "REDISHA_DISCOVERY_TIMEOUT_MS",
        "REDISHA_RESTART_BACKOFF_MS",
        "REDISHA_RESTART_BUDGET",
        "REDISHA_RESTART_STABLE_MS",
        "REDIS_PASSWORD",
        "REDIS_PASSWORD_FILE",
        "REDIS_SENTINEL_PASSWORD",
        "REDIS_SENTINEL_PASSWORD_FILE",
        "ALLOW_EMPTY_PASSWORD",
        "REDISHA_TLS_CERT_FILE",
        "REDISHA_TLS_KEY_FILE",
        "REDISHA_TLS_CA_FILE",
        "REDISHA_CLEANUP_INTERVAL_MS",
        "REDISHA_STALE_AFTER_MS",
    ];
    let huge = "7".repeat(120 * 1024);
    let values: Vec<(&str, &OsStr)> = vec![
        ("empty", s("")),
        ("hostile", s("1\nrequirepass \"\"\nbind 0.0.0.0")),
        ("huge", s(&huge)),
        ("non-utf8", OsStr::from_bytes(b"\xff\xfe")),
    ];
    for var in VARS {
        for (what, val) in &values {
            let mut vars = vec![(s("REDIS_MASTER_SERVICE_HOST"), s("127.0.0.1"))];
            vars.push((s(var), val));
            let args: &[&str] = if *var == "REDISHA_ROLE" {
                &[]
            } else {
                &["--role", "replica"]
            };
            let (code, _, stderr, started) = run(args, &vars);
            assert_eq!(code, 78, "{var} {what}: exit code; stderr={stderr}");
            assert!(
                stderr.contains(var),
                "{var} {what}: error names it: {stderr}"
            );
            assert_eq!(stderr.lines().count(), 1, "{var} {what}: one line");
            assert!(stderr.len() < 400, "{var} {what}: short error");
            assert!(!started, "{var} {what}: nothing started");
        }
    }
}

#[test]
fn unknown_role_flag_and_missing_master_host() {
    let (code, _, err, started) = run(&["--role", "leader"], &[]);
    assert_eq!((code, started), (78, false), "{err}");
    assert!(err.contains("--role") && err.contains("leader"), "{err}");
    let (code, _, err, _) = run(&["--role", "replica"], &[]);
    assert_eq!(code, 78);
    assert!(err.contains("REDIS_MASTER_SERVICE_HOST"), "{err}");
    let (code, _, err, _) = run(&["--no-such-flag"], &[]);
    assert_eq!(code, 64, "usage errors are EX_USAGE: {err}");
}

#[test]
fn render_prints_both_files_and_argvs_and_writes_nothing() {
    let vars = [
        (s("MY_POD_IP"), s("10.1.0.4")),
        (s("REDIS_MASTER_SERVICE_HOST"), s("127.0.0.1")),
        // nobody listens there: discovery falls back to the role quickly
        (s("REDISHA_SENTINELS"), s("127.0.0.1:9")),
        (s("ALLOW_EMPTY_PASSWORD"), s("yes")),
    ];
    let (code, out, err, started) = run(&["render", "--role", "replica"], &vars);
    assert_eq!(code, 0, "{err}");
    assert!(!started, "render must not start or write anything");
    for want in [
        "replicaof 127.0.0.1 6379",
        "replica-announce-ip 10.1.0.4",
        "sentinel monitor mymaster 127.0.0.1 6379 2",
        "sentinel announce-ip 10.1.0.4",
        "protected-mode no",
        "appendonly yes",
        "--sentinel",
    ] {
        assert!(out.contains(want), "render lacks {want:?}:\n{out}");
    }
    assert!(!out.contains("cluster-announce"));
}

#[test]
fn missing_or_non_executable_redis_server() {
    let dir = tempdir();
    let state = dir.path().join("st");
    let out = Command::new(BIN)
        .args([
            "--role",
            "master",
            "--redis-server",
            "/nonexistent/redis-server",
        ])
        .env_clear()
        .env("REDISHA_STATE_DIR", &state)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    assert!(
        !state.exists(),
        "nothing written when the executable is missing"
    );

    let f = dir.path().join("redis-server");
    std::fs::write(&f, "#!/bin/sh\n").expect("write");
    let out = Command::new(BIN)
        .args(["--role", "master"])
        .env_clear()
        .env("REDISHA_REDIS_SERVER", &f)
        .env("REDISHA_STATE_DIR", &state)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(126));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not executable"));

    // Found through PATH by name.
    let out = Command::new(BIN)
        .args(["--role", "master"])
        .env_clear()
        .env("PATH", "/nonexistent")
        .env("REDISHA_STATE_DIR", &state)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(127));
}

/// The operator commands against nothing at all: bounded, the documented "no master" and
/// "refused" exit codes, one line saying why; bad flags are usage errors (64).
#[test]
fn operator_tools_without_a_cluster() {
    let port = free_port();
    let sentinels = format!("127.0.0.1:{port}");
    let t0 = std::time::Instant::now();
    let (code, out, err, started) = run(&["status", "--sentinels", &sentinels], &[]);
    assert_eq!(code, 2, "status: stdout={out} stderr={err}");
    assert!(
        out.lines()
            .last()
            .is_some_and(|l| l.starts_with("verdict: no master: no sentinel answers")),
        "{out}"
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(2));
    assert!(!started, "status started something");
    let (code, out, _, _) = run(&["status", "--json", "--sentinels", &sentinels], &[]);
    assert_eq!(code, 2);
    assert!(
        out.contains("\"health\": \"no_master\"") && out.contains("\"exit_code\": 2"),
        "{out}"
    );
    let (code, out, err, started) = run(&["switchover", "--sentinels", &sentinels], &[]);
    assert_eq!(code, 3, "switchover: stdout={out} stderr={err}");
    assert!(
        out.contains("refused: the cluster is not failover-safe"),
        "{out}"
    );
    assert!(!started);
    for bad in [
        &["switchover", "--timeout", "0"][..],
        &["switchover", "--timeout", "soon"][..],
        &["switchover", "--to", "not an address"][..],
        &["status", "--timeout-ms", "x"][..],
    ] {
        let (code, out, err, _) = run(bad, &[]);
        assert_eq!(code, 64, "{bad:?}: stdout={out} stderr={err}");
    }
}

/// Every exit code of the operator commands has its row in the README's table.
#[test]
fn operator_exit_codes_are_in_the_readme() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let rows = [
        ("status", 0),
        ("status", 1),
        ("status", 2),
        ("switchover", 0),
        ("switchover", 1),
        ("switchover", 3),
        ("switchover", 4),
        ("switchover", 5),
        ("switchover", 130),
    ];
    for (cmd, code) in rows {
        let row = format!("| `{cmd}` | {code} |");
        assert!(readme.contains(&row), "README.md lacks the row {row}");
    }
}
