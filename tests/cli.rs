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
        ("REDISHA_MAXMEMORY", s("1.5GiB")),
        ("REDISHA_MAXMEMORY", s("512")),
        ("REDISHA_MASTER_PROXY_PORT", s("6379")),
        ("REDISHA_MASTER_PROXY_PORT", s("yes")),
        ("REDISHA_MASTER_PROXY_MAX_CONNS", s("0")),
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

/// The variables of the README's configuration table: the binary's own table (config::VARS) is
/// checked against it by a unit test, so this list cannot fall behind the code.
fn documented_vars() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let section = readme
        .split("## Configuration")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README has a Configuration section")
        .to_string();
    let mut names = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap_or("");
        for name in first.split('`').skip(1).step_by(2) {
            if !name.starts_with("--") && !names.iter().any(|n| n == name) {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// Every variable we read, fed empty, hostile (a newline and a directive), huge and non-UTF-8.
/// HOME only matters without a state directory, which `run` always sets: see the next test.
#[test]
fn every_variable_rejects_hostile_values() {
    let vars = documented_vars();
    assert!(
        vars.len() >= 38,
        "the README table lists our variables: {vars:?}"
    );
    let huge = "7".repeat(120 * 1024);
    let values: Vec<(&str, &OsStr)> = vec![
        ("empty", s("")),
        ("hostile", s("1\nrequirepass \"\"\nbind 0.0.0.0")),
        ("huge", s(&huge)),
        ("non-utf8", OsStr::from_bytes(b"\xff\xfe")),
    ];
    for var in vars.iter().map(String::as_str) {
        for (what, val) in &values {
            if var == "HOME" {
                continue;
            }
            let mut vars = vec![(s("REDIS_MASTER_SERVICE_HOST"), s("127.0.0.1"))];
            vars.push((s(var), val));
            let args: &[&str] = if var == "REDISHA_ROLE" {
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

/// Locally the default state directory is under HOME, which then ends up in the rendered files:
/// it is checked like any path (it once broke redis.conf with a newline).
#[test]
fn hostile_home_is_refused_when_it_names_the_state_directory() {
    for (what, home) in [
        ("hostile", s("/tmp/x\nbind 0.0.0.0")),
        ("non-utf8", OsStr::from_bytes(b"/tmp/\xff")),
    ] {
        let out = Command::new(BIN)
            .args(["render", "--role", "master"])
            .env_clear()
            .env("HOME", home)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{what}: {err}");
        assert!(
            err.contains("HOME") && err.lines().count() == 1,
            "{what}: {err}"
        );
        assert!(out.stdout.is_empty(), "{what}: nothing rendered");
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
        "maxmemory-policy noeviction",
        "# memory: ",
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

/// `REDISHA_ROLE=ordinal`: the first-boot role from a StatefulSet pod's name (no sentinel
/// answers here, so the rule decides); a name without an ordinal is a config error.
#[test]
fn ordinal_role_from_the_pod_name() {
    for (pod, role) in [
        ("redis-0", "master"),
        ("redis-1", "replica"),
        ("redis-12", "replica"),
    ] {
        let vars = [
            (s("REDISHA_ROLE"), s("ordinal")),
            (s("REDISHA_POD_NAME"), s(pod)),
            // Another address than this node's own, so a replica follows it.
            (s("REDIS_MASTER_SERVICE_HOST"), s("127.0.0.2")),
            (s("REDISHA_SENTINELS"), s("127.0.0.1:1")),
        ];
        let (code, out, err, started) = run(&["render"], &vars);
        assert_eq!(code, 0, "{pod}: {err}");
        assert!(!started, "render must not start or write anything");
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("# role: {role} "))),
            "{pod} not rendered as {role}:\n{out}"
        );
    }
    let (code, _, err, started) = run(
        &[],
        &[
            (s("REDISHA_ROLE"), s("ordinal")),
            (s("REDISHA_POD_NAME"), s("redis-primary")),
            (s("REDIS_MASTER_SERVICE_HOST"), s("127.0.0.1")),
        ],
    );
    assert_eq!((code, started), (78, false), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("REDISHA_POD_NAME") && err.contains("ordinal"),
        "{err}"
    );
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

/// Issue 28: with state kept, the seed layout's two Service names cannot count a majority after
/// an outage (Services balance over pods): refused with one line, exit 78, nothing started.
#[test]
fn short_sentinel_list_with_state_is_refused() {
    let dir = tempdir();
    let state = dir.path().join("kept");
    std::fs::create_dir_all(state.join("sentinel")).expect("mkdir");
    std::fs::write(
        state.join("sentinel/sentinel.conf"),
        "sentinel monitor mymaster 10.1.0.5 6379 2\n\
         sentinel config-epoch mymaster 1\n\
         sentinel known-sentinel mymaster 10.1.0.5 26379 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n\
         sentinel known-sentinel mymaster 10.1.0.6 26379 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n",
    )
    .expect("write");
    let vars = [
        (s("MY_POD_IP"), s("10.1.0.4")),
        (s("REDIS_MASTER_SERVICE_HOST"), s("127.0.0.1")),
        (s("REDISHA_SENTINELS"), s("127.0.0.1:9,127.0.0.2:9")),
        (s("ALLOW_EMPTY_PASSWORD"), s("yes")),
        (s("REDISHA_STATE_DIR"), state.as_os_str()),
    ];
    let (code, _, err, _) = run(&["--role", "replica"], &vars);
    assert_eq!(code, 78, "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("redisha-init: "))
        .unwrap_or("");
    assert!(
        line.contains("REDISHA_SENTINELS lists 2") && line.contains("knew 3"),
        "{err}"
    );
}

#[test]
fn metrics_port_taken_exits_71_with_nothing_started() {
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let (code, _, err, started) = run(
        &[],
        &[
            (s("REDISHA_ROLE"), s("master")),
            (s("REDISHA_METRICS_PORT"), s(&port)),
        ],
    );
    assert_eq!(code, 71, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("REDISHA_METRICS_PORT"), "{err}");
    assert!(!started, "nothing may start when the metrics port is taken");
}
