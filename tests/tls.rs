//! TLS on: three nodes (master + 2 replicas, each with its sentinel) with certificates from a
//! throwaway CA made by the test. Replication and sentinels work over TLS; a plaintext client is
//! refused; discovery and probes speak TLS.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let st = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        st.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&st.stderr)
    );
}

/// CA + one certificate for 127.0.0.1 (every node here listens on loopback).
fn make_certs(dir: &std::path::Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=redisha-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=redisha-node",
            "-keyout",
            "node.key",
            "-out",
            "node.csr",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("ext");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "node.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "node.crt",
        ],
    );
}

fn cli(dir: &std::path::Path, port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args([
            "--tls",
            "--cacert",
            "ca.crt",
            "--cert",
            "node.crt",
            "--key",
            "node.key",
            "-p",
            &port.to_string(),
            "--no-auth-warning",
            "-a",
            "tls-test-pw",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn probe(env: &std::collections::HashMap<String, String>, server: &str) -> i32 {
    Command::new(BIN)
        .args(["probe", server, "--ready"])
        .env_clear()
        .envs(env)
        .status()
        .expect("probe")
        .code()
        .unwrap_or(-1)
}

#[test]
fn three_nodes_over_tls() {
    let dir = tempdir();
    let d = dir.path();
    make_certs(d);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let proxy_port = free_port();
    let mut envs = Vec::new();
    let mut inits = Vec::new();
    for i in 0..ports.len() {
        let mut env = node_env(d, &ports, i);
        env.insert("REDIS_PASSWORD".into(), "tls-test-pw".into());
        for (k, f) in [
            ("REDISHA_TLS_CERT_FILE", "node.crt"),
            ("REDISHA_TLS_KEY_FILE", "node.key"),
            ("REDISHA_TLS_CA_FILE", "ca.crt"),
        ] {
            env.insert(k.into(), d.join(f).display().to_string());
        }
        if i == 2 {
            // The master proxy passes TLS through: the client talks TLS to the master.
            env.insert("REDISHA_MASTER_PROXY_PORT".into(), proxy_port.to_string());
        }
        inits.push(Init::start(&[], &env, &[], d.join(format!("n{i}.log"))));
        if i == 0 {
            assert!(
                wait_for(Duration::from_secs(10), || (probe(&env, "sentinel") == 0)
                    .then_some(()))
                .is_some(),
                "{}",
                inits[0].output()
            );
        }
        envs.push(env);
    }
    // Replicas linked over TLS (the probe itself speaks TLS and authenticates).
    for (i, env) in envs.iter().enumerate().skip(1) {
        let ok = wait_for(Duration::from_secs(20), || {
            (probe(env, "redis") == 0).then_some(())
        });
        assert!(
            ok.is_some(),
            "replica {i} ready over TLS:\n{}",
            inits[i].output()
        );
        assert!(
            inits[i].output().contains("it answers as master"),
            "discovery spoke TLS to the sentinel and the master:\n{}",
            inits[i].output()
        );
    }
    // Every sentinel names the same master and sees the two other sentinels.
    let agreed = wait_for(Duration::from_secs(20), || {
        ports
            .iter()
            .all(|p| {
                let m = cli(
                    d,
                    p + 1,
                    &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"],
                );
                let s = cli(d, p + 1, &["INFO", "sentinel"]);
                m.ends_with(&ports[0].to_string()) && s.contains("sentinels=3")
            })
            .then_some(())
    });
    assert!(agreed.is_some(), "sentinels agree over TLS");
    assert_eq!(
        cli(d, ports[0], &["INFO", "replication"])
            .matches("state=online")
            .count(),
        2
    );
    // Through node 2's master proxy, TLS end to end to the master (node 0).
    let through = wait_for(Duration::from_secs(10), || {
        cli(d, proxy_port, &["INFO", "server"])
            .contains(&format!("tcp_port:{}", ports[0]))
            .then_some(())
    });
    assert!(
        through.is_some(),
        "TLS through the proxy:\n{}",
        inits[2].output()
    );
    // Plaintext is refused on every port.
    for p in ports.iter().flat_map(|p| [*p, p + 1]) {
        assert!(
            redis_cmd(p, &["PING"]).is_err(),
            "plaintext PING on {p} must fail"
        );
    }
    for i in inits.iter_mut() {
        i.signal(libc::SIGTERM);
        assert_eq!(
            i.wait(Duration::from_secs(15)).and_then(|s| s.code()),
            Some(0),
            "{}",
            i.output()
        );
    }
}
