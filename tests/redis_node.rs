//! redisha-init with the real redis-server: start, crash, restart, stop.

mod common;

use std::time::Duration;

use common::*;

fn start_master(dir: &std::path::Path, port: u16, log: &str) -> Init {
    let mut env = base_env(&dir.join("state"), port);
    env.insert("REDISHA_ROLE".into(), "master".into());
    Init::start(&[], &env, &[], dir.join(log))
}

fn redis_pid(port: u16) -> Option<i32> {
    info_field(port, "server", "process_id")?.parse().ok()
}

#[test]
fn local_master_serves_and_stops_cleanly() {
    let dir = tempdir();
    let port = free_port();
    let mut init = start_master(dir.path(), port, "log");
    assert!(
        wait_for(Duration::from_secs(10), || (ping(port) && ping(port + 1))
            .then_some(()))
        .is_some(),
        "{}",
        init.output()
    );
    assert_eq!(redis_str(port, &["SET", "k", "v"]).as_deref(), Some("OK"));
    let master = redis_cmd(
        port + 1,
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"],
    )
    .expect("sentinel answers");
    assert_eq!(
        format!("{master:?}").matches(&port.to_string()).count(),
        1,
        "sentinel monitors our redis: {master:?}"
    );
    let kids = descendants(init.pid);
    assert_eq!(kids.len(), 2, "two children: {kids:?}");
    // The sentinel's config is written into the state dir, owner-only.
    let meta =
        std::fs::metadata(dir.path().join("state/sentinel/sentinel.conf")).expect("sentinel.conf");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    init.signal(libc::SIGTERM);
    let st = init.wait(Duration::from_secs(10)).expect("stops");
    assert_eq!(st.code(), Some(0), "{}", init.output());
    for k in kids {
        assert!(
            !std::path::Path::new(&format!("/proc/{k}")).exists(),
            "child {k} left behind"
        );
    }
}

#[test]
fn crashed_data_node_comes_back_with_its_data() {
    let dir = tempdir();
    let port = free_port();
    let mut init = start_master(dir.path(), port, "log");
    assert!(wait_for(Duration::from_secs(10), || ping(port).then_some(())).is_some());
    for i in 0..100 {
        assert_eq!(
            redis_str(port, &["SET", &format!("k{i}"), &format!("v{i}")]).as_deref(),
            Some("OK")
        );
    }
    let old = redis_pid(port).expect("pid");
    unsafe {
        libc::kill(old, libc::SIGKILL);
    }
    let new = wait_for(Duration::from_secs(15), || {
        redis_pid(port).filter(|p| *p != old)
    });
    assert!(new.is_some(), "restarted:\n{}", init.output());
    for i in 0..100 {
        assert_eq!(
            redis_str(port, &["GET", &format!("k{i}")]),
            Some(format!("v{i}")),
            "acknowledged write k{i} survived the crash"
        );
    }
    assert!(init.output().contains("restarting"), "{}", init.output());
    init.signal(libc::SIGTERM);
    assert_eq!(
        init.wait(Duration::from_secs(10)).and_then(|s| s.code()),
        Some(0)
    );
}

#[test]
fn sentinel_identity_survives_restarts() {
    let dir = tempdir();
    let port = free_port();
    let sport = port + 1;
    let myid = |p: u16| redis_str(p, &["SENTINEL", "MYID"]);
    let mut init = start_master(dir.path(), port, "log1");
    let id1 = wait_for(Duration::from_secs(10), || myid(sport)).expect("myid");
    // Sentinel process killed: restarted by the supervisor with the same identity.
    let spid: i32 = wait_for(Duration::from_secs(5), || {
        info_field(sport, "server", "process_id")?.parse().ok()
    })
    .expect("pid");
    unsafe {
        libc::kill(spid, libc::SIGKILL);
    }
    let id2 = wait_for(Duration::from_secs(15), || {
        let p: i32 = info_field(sport, "server", "process_id")?.parse().ok()?;
        (p != spid).then(|| myid(sport)).flatten()
    })
    .expect("sentinel back");
    assert_eq!(id1, id2, "myid kept across a sentinel restart");
    init.signal(libc::SIGTERM);
    init.wait(Duration::from_secs(10)).expect("stops");
    // Whole container restarted with the same state directory.
    let mut init = start_master(dir.path(), port, "log2");
    let id3 = wait_for(Duration::from_secs(10), || myid(sport)).expect("myid");
    assert_eq!(id1, id3, "myid kept across a restart of redisha-init");
    let conf =
        std::fs::read_to_string(dir.path().join("state/sentinel/sentinel.conf")).expect("conf");
    assert_eq!(conf.matches("sentinel monitor").count(), 1, "{conf}");
    init.signal(libc::SIGTERM);
    init.wait(Duration::from_secs(10)).expect("stops");
}

#[test]
fn laptop_replica_replicates_from_laptop_master() {
    let dir = tempdir();
    let mport = free_port();
    let rport = free_port();
    let mut master = start_master(dir.path(), mport, "master.log");
    let mut env = base_env(&dir.path().join("replica"), rport);
    env.insert("REDIS_MASTER_SERVICE_HOST".into(), "127.0.0.1".into());
    env.insert("REDIS_MASTER_SERVICE_PORT".into(), mport.to_string());
    env.insert(
        "REDISHA_SENTINELS".into(),
        format!("127.0.0.1:{}", mport + 1),
    );
    assert!(wait_for(Duration::from_secs(10), || ping(mport + 1).then_some(())).is_some());
    assert_eq!(
        redis_str(mport, &["SET", "before", "1"]).as_deref(),
        Some("OK")
    );
    let mut replica = Init::start(
        &["--role", "replica"],
        &env,
        &[],
        dir.path().join("replica.log"),
    );
    let up = wait_for(Duration::from_secs(15), || {
        (info_field(rport, "replication", "master_link_status").as_deref() == Some("up"))
            .then_some(())
    });
    assert!(up.is_some(), "replica linked:\n{}", replica.output());
    assert_eq!(redis_str(rport, &["GET", "before"]).as_deref(), Some("1"));
    assert!(
        replica.output().contains("sentinels name 127.0.0.1:"),
        "role came from the sentinel:\n{}",
        replica.output()
    );
    for i in [&mut replica, &mut master] {
        i.signal(libc::SIGTERM);
        let code = i.wait(Duration::from_secs(10)).and_then(|s| s.code());
        assert_eq!(code, Some(0), "{}", i.output());
    }
}
