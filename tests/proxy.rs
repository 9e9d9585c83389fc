//! The master proxy as PID 1's third child, with the real redis-server and sentinel: it forwards
//! to the master the sentinel names, is restarted when it dies, and is gone after a stop.

mod common;

use std::time::Duration;

use common::*;

fn proxy_pid(init: i32) -> Option<i32> {
    children_of(init)
        .into_iter()
        .find(|p| cmdline(*p).split(' ').nth(1) == Some("proxy"))
}

#[test]
fn pid1_runs_the_proxy_as_a_third_child_and_restarts_it() {
    let dir = tempdir();
    let port = free_port();
    let proxy = loop {
        let p = free_port();
        if p != port && p != port + 1 {
            break p;
        }
    };
    let mut env = base_env(&dir.path().join("state"), port);
    env.insert("REDISHA_ROLE".into(), "master".into());
    env.insert("REDISHA_MASTER_PROXY_PORT".into(), proxy.to_string());
    let mut init = Init::start(&[], &env, &[], dir.path().join("log"));
    // Through the proxy: the node the sentinel names (ours), whose port is `port`.
    let through = || info_field(proxy, "server", "tcp_port");
    assert_eq!(
        wait_for(Duration::from_secs(15), through).as_deref(),
        Some(port.to_string().as_str()),
        "{}",
        init.output()
    );
    assert_eq!(redis_str(proxy, &["SET", "k", "v"]).as_deref(), Some("OK"));
    assert_eq!(redis_str(port, &["GET", "k"]).as_deref(), Some("v"));
    let kids = children_of(init.pid);
    assert_eq!(kids.len(), 3, "redis, sentinel and the proxy: {kids:?}");
    let first = proxy_pid(init.pid).expect("a proxy child");

    // Killed: PID 1 starts another one (backoff 0.5 s), redis and sentinel untouched.
    unsafe {
        libc::kill(first, libc::SIGKILL);
    }
    let second = wait_for(Duration::from_secs(10), || {
        proxy_pid(init.pid).filter(|p| *p != first && through().is_some())
    });
    assert!(second.is_some(), "proxy not restarted: {}", init.output());
    assert_eq!(children_of(init.pid).len(), 3);

    init.signal(libc::SIGTERM);
    let st = init.wait(Duration::from_secs(15)).expect("stops");
    assert_eq!(st.code(), Some(0), "{}", init.output());
    for k in kids.iter().chain(second.iter()) {
        assert!(
            !std::path::Path::new(&format!("/proc/{k}")).exists(),
            "child {k} left behind"
        );
    }
    assert!(!ping(proxy), "the proxy still answers after the stop");
}

#[test]
fn proxy_without_its_port_is_a_config_error() {
    let out = std::process::Command::new(BIN)
        .arg("proxy")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("REDISHA_MASTER_PROXY_PORT"), "{err}");
}
