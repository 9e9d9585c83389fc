//! Supervision as PID 1, with real processes and real signals. Where a child must behave in one
//! precise way (trap signals, spawn orphans, crash at once) a shell script stands in for
//! redis-server; everything about redis itself is tested against the real redis-server.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;

const PID1: &[&str] = &["unshare", "--pid", "--fork", "--mount-proc"];

/// The redisha-init process inside `unshare --fork`: the only child of unshare.
fn init_pid(wrapper: i32) -> i32 {
    wait_for(Duration::from_secs(5), || {
        children_of(wrapper)
            .into_iter()
            .find(|p| cmdline(*p).contains("redisha-init"))
    })
    .expect("redisha-init running under unshare")
}

fn fake_env(dir: &std::path::Path, exe: &std::path::Path) -> HashMap<String, String> {
    let mut env = base_env(&dir.join("state"), free_port());
    env.insert("REDISHA_REDIS_SERVER".into(), exe.display().to_string());
    env.insert("REDISHA_ROLE".into(), "master".into());
    env
}

#[test]
fn orphans_are_reaped_as_pid1() {
    let dir = tempdir();
    // 100 grandchildren orphaned at once (SIGCHLDs coalesce), then the child lives on.
    let exe = script(
        dir.path(),
        "fake",
        "for i in $(seq 100); do (sleep 0.3 &) ; done; exec sleep 60",
    );
    let mut init = Init::start(
        &[],
        &fake_env(dir.path(), &exe),
        PID1,
        dir.path().join("log"),
    );
    let pid1 = init_pid(init.pid);
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid1}/status"))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("NSpid:")).map(|l| l
                .split_whitespace()
                .last()
                .unwrap_or("")
                .to_string())),
        Some("1".to_string()),
        "redisha-init is PID 1 of its namespace"
    );
    // Orphans appear as direct children of PID 1, run 0.3 s, and must be reaped, not left as Z.
    let settled = wait_for(Duration::from_secs(10), || {
        let kids = children_of(pid1);
        let zombies = kids
            .iter()
            .filter(|p| proc_field(**p, "State").is_some_and(|s| s.starts_with('Z')))
            .count();
        let sleepers = kids
            .iter()
            .filter(|p| cmdline(**p).starts_with("sleep 0.3"))
            .count();
        (zombies == 0 && sleepers == 0 && kids.len() == 2).then_some(())
    });
    assert!(
        settled.is_some(),
        "orphans left: {:?}",
        children_of(pid1)
            .iter()
            .map(|p| (cmdline(*p), proc_field(*p, "State")))
            .collect::<Vec<_>>()
    );
    // unshare does not forward signals: signal PID 1 itself, as a container runtime would.
    unsafe {
        libc::kill(pid1, libc::SIGTERM);
    }
    assert!(init.wait(Duration::from_secs(10)).is_some(), "stopped");
}

#[test]
fn signals_are_forwarded_and_children_start_clean() {
    let dir = tempdir();
    let body = r#"
name=redis; [ "$2" = "--sentinel" ] && name=sentinel
for s in HUP USR1 USR2 WINCH QUIT; do trap "echo got-$s-$name" $s; done
trap 'echo bye-$name; exit 0' TERM
echo ready-$name
grep -E '^Sig(Blk|Ign)' /proc/$$/status | tr '\t' ' ' | sed "s/^/$name-/"
while :; do sleep 0.05; done"#;
    let exe = script(dir.path(), "fake", body);
    let mut init = Init::start(
        &[],
        &fake_env(dir.path(), &exe),
        &[],
        dir.path().join("log"),
    );
    assert!(wait_for(Duration::from_secs(5), || (init
        .output()
        .contains("ready-redis")
        && init.output().contains("ready-sentinel"))
    .then_some(()))
    .is_some());
    for sig in [
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGWINCH,
        libc::SIGQUIT,
    ] {
        init.signal(sig);
        std::thread::sleep(Duration::from_millis(150));
    }
    let got = wait_for(Duration::from_secs(5), || {
        let out = init.output();
        ["HUP", "USR1", "USR2", "WINCH", "QUIT"]
            .iter()
            .all(|s| {
                out.contains(&format!("[redis] got-{s}-redis"))
                    && out.contains(&format!("[sentinel] got-{s}-sentinel"))
            })
            .then_some(())
    });
    assert!(
        got.is_some(),
        "every signal reaches both children:\n{}",
        init.output()
    );
    let out = init.output();
    for name in ["redis", "sentinel"] {
        assert!(
            out.contains(&format!("{name}-SigBlk: 0000000000000000")),
            "{name} starts with an empty mask:\n{out}"
        );
        assert!(
            out.contains(&format!("{name}-SigIgn: 0000000000000000")),
            "{name} starts ignoring nothing:\n{out}"
        );
    }
    init.signal(libc::SIGTERM);
    let st = init
        .wait(Duration::from_secs(10))
        .expect("exits after TERM");
    assert_eq!(
        st.code(),
        Some(0),
        "requested clean stop exits 0:\n{}",
        init.output()
    );
}

#[test]
fn child_ignoring_term_is_killed_after_grace() {
    let dir = tempdir();
    let exe = script(
        dir.path(),
        "fake",
        "trap '' TERM; echo up; while :; do sleep 0.05; done",
    );
    let mut env = fake_env(dir.path(), &exe);
    env.insert("REDISHA_STOP_GRACE_MS".into(), "1500".into());
    let mut init = Init::start(&[], &env, PID1, dir.path().join("log"));
    let pid1 = init_pid(init.pid);
    assert!(wait_for(Duration::from_secs(5), || (init
        .output()
        .matches("] up")
        .count()
        == 2)
        .then_some(()))
    .is_some());
    let t = Instant::now();
    unsafe {
        libc::kill(pid1, libc::SIGTERM);
    }
    let st = init
        .wait(Duration::from_secs(10))
        .expect("killed after grace");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert_eq!(
        st.code(),
        Some(137),
        "a stop that needed SIGKILL is not clean:\n{}",
        init.output()
    );
}

#[test]
fn restart_budget_spent_stops_the_pod_with_the_childs_code() {
    let dir = tempdir();
    // The data node fails at once every time; the sentinel would run forever.
    let exe = script(
        dir.path(),
        "fake",
        r#"[ "$2" = "--sentinel" ] && exec sleep 60; echo crash; exit 3"#,
    );
    let mut env = fake_env(dir.path(), &exe);
    env.insert("REDISHA_RESTART_BACKOFF_MS".into(), "50".into());
    env.insert("REDISHA_RESTART_BUDGET".into(), "3".into());
    let mut init = Init::start(&[], &env, &[], dir.path().join("log"));
    let st = init.wait(Duration::from_secs(15)).expect("gives up");
    let out = init.output();
    assert_eq!(st.code(), Some(3), "{out}");
    assert_eq!(
        out.matches("[redis] crash").count(),
        4,
        "1 start + 3 restarts:\n{out}"
    );
    assert!(out.contains("restart budget spent"), "{out}");
}

#[test]
fn log_lines_of_two_children_never_mix() {
    let dir = tempdir();
    // Both children write 20k long lines as fast as they can, in pieces (printf of a line is
    // not one write), to stdout and stderr.
    let body = r#"
name=r; [ "$2" = "--sentinel" ] && name=s
pad=$(printf '%0300d' 0)
i=0; while [ $i -lt 5000 ]; do echo "$name-$i-$pad-end"; echo "$name-$i-$pad-err" >&2; i=$((i+1)); done
exec sleep 60"#;
    let exe = script(dir.path(), "fake", body);
    let mut init = Init::start(
        &[],
        &fake_env(dir.path(), &exe),
        &[],
        dir.path().join("log"),
    );
    let want = 4 * 5000;
    let done = wait_for(Duration::from_secs(30), || {
        (init
            .output()
            .lines()
            .filter(|l| l.contains("-end") || l.contains("-err"))
            .count()
            >= want)
            .then_some(())
    });
    init.signal(libc::SIGTERM);
    init.wait(Duration::from_secs(10));
    assert!(done.is_some(), "all lines forwarded");
    let pad = "0".repeat(300);
    let mut n = 0;
    for line in init
        .output()
        .lines()
        .filter(|l| l.starts_with("[redis] ") || l.starts_with("[sentinel] "))
    {
        if !line.contains("-end") && !line.contains("-err") {
            continue;
        }
        let (tag, rest) = line.split_once("] ").expect("tag");
        let who = if tag == "[redis" { "r" } else { "s" };
        let parts: Vec<&str> = rest.split('-').collect();
        assert_eq!(parts.len(), 4, "broken line: {line}");
        assert_eq!(parts[0], who, "line tagged with the wrong child: {line}");
        assert!(
            parts[1].parse::<u32>().is_ok() && parts[2] == pad,
            "broken line: {line}"
        );
        n += 1;
    }
    assert_eq!(n, want, "no line lost");
}

#[test]
fn json_log_format_is_one_object_per_line() {
    let dir = tempdir();
    let exe = script(
        dir.path(),
        "fake",
        r#"echo "1:M 26 Nov 2026 00:00:00.000 # hello \"quoted\""; exec sleep 60"#,
    );
    let mut env = fake_env(dir.path(), &exe);
    env.insert("REDISHA_LOG_FORMAT".into(), "json".into());
    let mut init = Init::start(&[], &env, &[], dir.path().join("log"));
    assert!(wait_for(Duration::from_secs(5), || (init
        .output()
        .matches("hello")
        .count()
        == 2)
        .then_some(()))
    .is_some());
    init.signal(libc::SIGTERM);
    init.wait(Duration::from_secs(10)).expect("stops");
    let out = init.output();
    let mut sources = std::collections::HashSet::new();
    for line in out.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for k in ["time", "source", "message"] {
            assert!(v.get(k).is_some(), "{k} missing: {line}");
        }
        if v["message"] == "hello \"quoted\"" {
            assert_eq!(v["level"], "warning");
        }
        sources.insert(v["source"].as_str().unwrap_or("").to_string());
    }
    for s in ["redisha-init", "redis", "sentinel"] {
        assert!(sources.contains(s), "no line from {s}:\n{out}");
    }
}

#[test]
fn raw_log_format_passes_output_through_untagged() {
    let dir = tempdir();
    let exe = script(dir.path(), "fake", r#"echo "plain-line-$2"; exec sleep 60"#);
    let mut env = fake_env(dir.path(), &exe);
    env.insert("REDISHA_LOG_FORMAT".into(), "raw".into());
    let mut init = Init::start(&[], &env, &[], dir.path().join("log"));
    assert!(
        wait_for(Duration::from_secs(5), || (init
            .output()
            .matches("plain-line-")
            .count()
            == 2)
            .then_some(()))
        .is_some(),
        "{}",
        init.output()
    );
    init.signal(libc::SIGTERM);
    init.wait(Duration::from_secs(10)).expect("stops");
    let out = init.output();
    assert!(
        out.lines()
            .any(|l| l.starts_with("plain-line-") && l.ends_with("--sentinel")),
        "untagged:\n{out}"
    );
    assert!(!out.contains("] plain-line-"), "no tag in raw mode:\n{out}");
}

#[test]
fn last_lines_of_a_failing_child_are_not_lost() {
    let dir = tempdir();
    // The data node prints its reason and dies at once, every time; the pod gives up quickly.
    let exe = script(
        dir.path(),
        "fake",
        r#"[ "$2" = "--sentinel" ] && exec sleep 60; i=0; while [ $i -lt 200 ]; do echo "last-words-$i"; i=$((i+1)); done; exit 5"#,
    );
    let mut env = fake_env(dir.path(), &exe);
    env.insert("REDISHA_RESTART_BACKOFF_MS".into(), "10".into());
    env.insert("REDISHA_RESTART_BUDGET".into(), "0".into());
    let mut init = Init::start(&[], &env, &[], dir.path().join("log"));
    let st = init.wait(Duration::from_secs(10)).expect("gives up");
    assert_eq!(st.code(), Some(5));
    assert!(
        init.output().contains("[redis] last-words-199"),
        "the child's last line reached the log:\n{}",
        init.output()
    );
}

#[test]
fn sigterm_during_discovery_stops_at_once_with_nothing_started() {
    let dir = tempdir();
    // A "sentinel" that accepts connections and never answers: discovery waits on timeouts.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr");
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        silent.set_nonblocking(true).expect("nonblocking");
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok((c, _)) = silent.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let marker = dir.path().join("started");
    let exe = script(
        dir.path(),
        "fake",
        &format!("touch '{}'; exec sleep 60", marker.display()),
    );
    let mut env = fake_env(dir.path(), &exe);
    env.insert("REDISHA_SENTINELS".into(), addr.to_string());
    let mut init = Init::start(&[], &env, &[], dir.path().join("log"));
    std::thread::sleep(Duration::from_millis(700));
    let t = Instant::now();
    init.signal(libc::SIGTERM);
    let st = init
        .wait(Duration::from_secs(5))
        .expect("exits during discovery");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(st.code(), Some(0), "{}", init.output());
    assert!(!marker.exists(), "nothing was started");
    assert!(
        init.output().contains("stop requested before start"),
        "{}",
        init.output()
    );
    let _ = held.join();
}

#[test]
fn children_do_not_outlive_a_killed_supervisor() {
    let dir = tempdir();
    let exe = script(
        dir.path(),
        "fake",
        "trap 'exit 0' TERM; echo up; while :; do sleep 0.05; done",
    );
    let mut init = Init::start(
        &[],
        &fake_env(dir.path(), &exe),
        &[],
        dir.path().join("log"),
    );
    assert!(wait_for(Duration::from_secs(5), || (init
        .output()
        .matches("] up")
        .count()
        == 2)
        .then_some(()))
    .is_some());
    let kids = children_of(init.pid);
    assert_eq!(kids.len(), 2);
    init.signal(libc::SIGKILL);
    init.wait(Duration::from_secs(5)).expect("killed");
    let gone = wait_for(Duration::from_secs(5), || {
        kids.iter()
            .all(|k| !std::path::Path::new(&format!("/proc/{k}")).exists())
            .then_some(())
    });
    assert!(
        gone.is_some(),
        "children outlived their supervisor: {kids:?}"
    );
}
