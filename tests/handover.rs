//! SIGTERM on a master with healthy replicas: the role is handed over and no acknowledged write
//! is lost. Three redisha-init instances on loopback with real redis-server and sentinels.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn sentinel_master(sport: u16) -> Option<u16> {
    match redis_cmd(sport, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]).ok()? {
        redis::Value::Array(v) => match v.get(1)? {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn sigterm_on_master_hands_over_without_losing_writes() {
    let dir = tempdir();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut inits = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let mut env = node_env(dir.path(), &ports, i);
        env.insert("REDISHA_MIN_REPLICAS_TO_WRITE".into(), "1".into());
        env.insert("REDISHA_DOWN_AFTER_MS".into(), "3000".into());
        env.insert("REDISHA_STOP_GRACE_MS".into(), "8000".into());
        inits.push(Init::start(
            &[],
            &env,
            &[],
            dir.path().join(format!("n{i}.log")),
        ));
        if i == 0 {
            assert!(wait_for(Duration::from_secs(10), || ping(p + 1).then_some(())).is_some());
        }
    }
    // Settled: both replicas linked, every sentinel knows the two others.
    let settled = wait_for(Duration::from_secs(30), || {
        let linked = ports[1..]
            .iter()
            .all(|p| info_field(*p, "replication", "master_link_status").as_deref() == Some("up"));
        let peers = ports.iter().all(|p| {
            info_field(p + 1, "sentinel", "master0")
                .is_some_and(|m| m.contains("sentinels=3") && m.contains("slaves=2"))
        });
        (linked && peers).then_some(())
    });
    assert!(settled.is_some(), "cluster settled:\n{}", inits[0].output());

    // A writer appending increasing numbers to the master, recording what was acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, master) = (acked.clone(), stop.clone(), ports[0]);
        std::thread::spawn(move || {
            let client =
                redis::Client::open(format!("redis://127.0.0.1:{master}/")).expect("client");
            let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
                return;
            };
            let _ = con.set_read_timeout(Some(Duration::from_secs(10)));
            for n in 0u64..1_000_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let r: redis::RedisResult<i64> =
                    redis::cmd("RPUSH").arg("log").arg(n).query(&mut con);
                match r {
                    Ok(_) => acked.lock().expect("lock").push(n),
                    Err(_) => break,
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    inits[0].signal(libc::SIGTERM);
    let st = inits[0]
        .wait(Duration::from_secs(15))
        .expect("master pod exits");
    let stop_time = t.elapsed();
    stop.store(true, Ordering::SeqCst);
    let _ = writer.join();
    let out = inits[0].output();
    assert_eq!(st.code(), Some(0), "{out}");
    assert!(
        out.contains("handover finished") && out.contains("outcome=done"),
        "handover done:\n{out}"
    );
    assert!(
        stop_time < Duration::from_millis(7500),
        "stop took {stop_time:?}: must end inside the 8 s grace"
    );

    let new_master = wait_for(Duration::from_secs(10), || {
        let m = sentinel_master(ports[1] + 1)?;
        (m != ports[0] && info_field(m, "replication", "role").as_deref() == Some("master"))
            .then_some(m)
    })
    .expect("a replica is master");
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 10,
        "the writer wrote before the stop ({})",
        acked.len()
    );
    let have: Vec<u64> = match redis_cmd(new_master, &["LRANGE", "log", "0", "-1"]).expect("lrange")
    {
        redis::Value::Array(v) => v
            .into_iter()
            .filter_map(|x| match x {
                redis::Value::BulkString(b) => String::from_utf8_lossy(&b).parse().ok(),
                _ => None,
            })
            .collect(),
        other => panic!("{other:?}"),
    };
    let have: std::collections::HashSet<u64> = have.into_iter().collect();
    let lost: Vec<&u64> = acked.iter().filter(|n| !have.contains(n)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost (e.g. {:?})",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    eprintln!(
        "handover: stop took {stop_time:?}, {} acked writes, 0 lost, new master port {new_master}",
        acked.len()
    );

    for i in inits.iter_mut().skip(1) {
        i.signal(libc::SIGTERM);
        assert_eq!(
            i.wait(Duration::from_secs(10)).and_then(|s| s.code()),
            Some(0),
            "{}",
            i.output()
        );
    }
}

/// A master and one replica that Sentinel may not promote (`replica-priority 0`): SENTINEL
/// FAILOVER answers NOGOODSLAVE and the handover cannot finish. (It used to be enough to stop the
/// pair right after the replica linked, when Sentinel did not know the replica yet for up to
/// 10 s; our sentinels now learn it within a second.) Returns the master's Init and the replica's.
fn pair_that_cannot_hand_over(dir: &std::path::Path, grace_ms: &str) -> (Init, Init) {
    let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
    let mut inits = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let mut env = node_env(dir, &ports, i);
        env.insert("REDISHA_STOP_GRACE_MS".into(), grace_ms.into());
        inits.push(Init::start(&[], &env, &[], dir.join(format!("n{i}.log"))));
        if i == 0 {
            assert!(wait_for(Duration::from_secs(10), || ping(p + 1).then_some(())).is_some());
        }
    }
    let linked = wait_for(Duration::from_secs(10), || {
        (info_field(ports[1], "replication", "master_link_status").as_deref() == Some("up"))
            .then_some(())
    });
    assert!(linked.is_some(), "{}", inits[1].output());
    assert!(redis_str(ports[1], &["CONFIG", "SET", "replica-priority", "0"]).is_some());
    let replica = inits.pop().expect("replica");
    let master = inits.pop().expect("master");
    (master, replica)
}

#[test]
fn handover_that_cannot_finish_gives_up_inside_the_grace() {
    let dir = tempdir();
    let (mut master, mut replica) = pair_that_cannot_hand_over(dir.path(), "2000");
    let t = Instant::now();
    master.signal(libc::SIGTERM);
    let st = master.wait(Duration::from_secs(10)).expect("exits");
    let took = t.elapsed();
    let out = master.output();
    assert_eq!(st.code(), Some(0), "{out}");
    assert!(out.contains("outcome=failed, stopping anyway"), "{out}");
    assert!(
        took < Duration::from_millis(2000),
        "inside the grace: {took:?}"
    );
    replica.signal(libc::SIGTERM);
    replica
        .wait(Duration::from_secs(10))
        .expect("replica stops");
}

#[test]
fn second_sigterm_skips_the_rest_of_the_handover() {
    let dir = tempdir();
    let (mut master, mut replica) = pair_that_cannot_hand_over(dir.path(), "8000");
    master.signal(libc::SIGTERM);
    assert!(
        wait_for(Duration::from_secs(5), || master
            .output()
            .contains("handover: writes paused")
            .then_some(()))
        .is_some(),
        "{}",
        master.output()
    );
    let t = Instant::now();
    master.signal(libc::SIGTERM);
    let st = master.wait(Duration::from_secs(10)).expect("exits");
    let out = master.output();
    assert_eq!(st.code(), Some(0), "{out}");
    assert!(out.contains("skipping the rest of the handover"), "{out}");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "quick after the second TERM: {:?}",
        t.elapsed()
    );
    replica.signal(libc::SIGTERM);
    replica
        .wait(Duration::from_secs(10))
        .expect("replica stops");
}
