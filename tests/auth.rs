//! Auth on: unauthenticated clients are refused, and the secret appears in no argument list, no
//! environment of a child, no log line, no `render` output; rendered files are 0600 in 0700.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::*;

const PW: &str = "Very$ecret pass\"word";

fn auth_str(port: u16, pw: &str, args: &[&str]) -> Result<String, String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    redis::cmd("AUTH")
        .arg(pw)
        .query::<()>(&mut con)
        .map_err(|e| e.to_string())?;
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query::<redis::Value>(&mut con)
        .map(|v| format!("{v:?}"))
        .map_err(|e| e.to_string())
}

#[test]
fn password_is_required_and_never_visible() {
    let dir = tempdir();
    let port = free_port();
    let state = dir.path().join("state");
    let mut env = base_env(&state, port);
    env.insert("REDISHA_ROLE".into(), "master".into());
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, format!("{PW}\n")).expect("pw");
    env.insert("REDIS_PASSWORD_FILE".into(), pwfile.display().to_string());
    let mut init = Init::start(&[], &env, &[], dir.path().join("log"));
    assert!(
        wait_for(Duration::from_secs(10), || auth_str(
            port + 1,
            PW,
            &["PING"]
        )
        .ok())
        .is_some(),
        "{}",
        init.output()
    );
    assert!(
        wait_for(Duration::from_secs(10), || auth_str(port, PW, &["PING"])
            .ok())
        .is_some()
    );

    for p in [port, port + 1] {
        let e = redis_cmd(p, &["PING"]).expect_err("unauthenticated PING refused");
        assert_eq!(e.code(), Some("NOAUTH"), "port {p}: {e}");
        assert!(
            auth_str(p, "wrong", &["PING"]).is_err(),
            "wrong password refused on {p}"
        );
    }
    // The sentinel reaches its master with the password.
    let linked = wait_for(Duration::from_secs(5), || {
        let m = auth_str(port + 1, PW, &["SENTINEL", "MASTER", "mymaster"]).ok()?;
        (!m.contains("s_down") && !m.contains("disconnected") && m.contains("master")).then_some(())
    });
    assert!(
        linked.is_some(),
        "sentinel linked to its master with the password"
    );

    let kids = descendants(init.pid);
    assert_eq!(kids.len(), 2);
    for pid in kids.iter().copied().chain([init.pid]) {
        assert!(
            !cmdline(pid).contains("ecret"),
            "cmdline of {pid}: {}",
            cmdline(pid)
        );
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&environ).contains("ecret"),
            "environ of {pid}"
        );
    }
    for (path, mode) in [
        (state.clone(), 0o700),
        (state.join("redis"), 0o700),
        (state.join("sentinel"), 0o700),
        (state.join("redis/redis.conf"), 0o600),
        (state.join("sentinel/sentinel.conf"), 0o600),
    ] {
        let m = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, mode, "{}", path.display());
    }

    // render shows everything but the secret.
    let out = Command::new(BIN)
        .arg("render")
        .env_clear()
        .envs(&env)
        .output()
        .expect("render");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text.contains("requirepass \"<redacted>\"")
            && text.contains("sentinel auth-pass mymaster \"<redacted>\""),
        "{text}"
    );
    assert!(
        !text.contains("ecret") && !text.contains("x24ecret"),
        "render leaks:\n{text}"
    );

    init.signal(libc::SIGTERM);
    assert_eq!(
        init.wait(Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
    let log = init.output();
    assert!(!log.contains("ecret"), "a log line holds the password");
}

#[test]
fn pod_address_without_password_is_refused() {
    let out = Command::new(BIN)
        .args(["--role", "master"])
        .env_clear()
        .env("MY_POD_IP", "10.9.9.9")
        .env("REDISHA_STATE_DIR", "/nonexistent/never-created")
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("REDIS_PASSWORD") && err.contains("ALLOW_EMPTY_PASSWORD"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}

#[test]
fn sentinels_that_refuse_us_are_not_a_first_boot() {
    let dir = tempdir();
    let port = free_port();
    let mut env = base_env(&dir.path().join("a"), port);
    env.insert("REDISHA_ROLE".into(), "master".into());
    env.insert("REDIS_PASSWORD".into(), "right-password".into());
    let mut first = Init::start(&[], &env, &[], dir.path().join("a.log"));
    assert!(wait_for(Duration::from_secs(10), || auth_str(
        port + 1,
        "right-password",
        &["PING"]
    )
    .ok())
    .is_some());

    // A second pod with the wrong password must not guess its role from --role master.
    let other = free_port();
    let mut env2 = base_env(&dir.path().join("b"), other);
    env2.insert("REDISHA_ROLE".into(), "master".into());
    env2.insert("REDIS_PASSWORD".into(), "wrong-password".into());
    env2.insert(
        "REDISHA_SENTINELS".into(),
        format!("127.0.0.1:{}", port + 1),
    );
    env2.insert("REDISHA_DISCOVERY_TIMEOUT_MS".into(), "1500".into());
    let mut second = Init::start(&[], &env2, &[], dir.path().join("b.log"));
    let st = second.wait(Duration::from_secs(15)).expect("gives up");
    let out = second.output();
    assert_eq!(st.code(), Some(75), "{out}");
    assert!(out.contains("refuses us"), "{out}");
    assert!(!out.contains("spawned"), "nothing started:\n{out}");
    assert!(
        !out.contains("wrong-password") && !out.contains("right-password"),
        "{out}"
    );
    first.signal(libc::SIGTERM);
    first.wait(Duration::from_secs(10)).expect("stops");
}
