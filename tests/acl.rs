//! ACL users (issue 34) with real servers: hostile rule files stop the pod before anything
//! starts; Redis 7.0 and Valkey 8 accept the rendered files; replication and Sentinel work as
//! their own users; the application user is refused every HA command on every pod and sentinel;
//! a user holds two passwords during a rotation; and redisha-init's own user may run every
//! command the source sends to a data node.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const USERS: &[&str] = &["redisha", "replication", "sentinel"];

/// A password directory as a mounted Secret would be: one file per user. The application user
/// holds two passwords (a rotation half done).
fn secrets(dir: &Path, tag: &str) -> PathBuf {
    let d = dir.join("acl");
    std::fs::create_dir_all(&d).expect("acl dir");
    for u in USERS {
        std::fs::write(d.join(u), format!("{u}-{tag}-Pw$1\n")).expect("pw");
    }
    std::fs::write(d.join("app"), format!("app-new-{tag}\napp-old-{tag}\n")).expect("pw");
    d
}

fn as_user(port: u16, user: &str, pw: &str, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    con.set_read_timeout(Some(Duration::from_secs(2)))?;
    redis::cmd("AUTH").arg(user).arg(pw).query::<()>(&mut con)?;
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(&mut con)
}

fn text(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        other => format!("{other:?}"),
    }
}

/// Commands an application must never run: each can break failover, stop a node or lock
/// redisha-init out.
const HOSTILE: &[&[&str]] = &[
    &["REPLICAOF", "NO", "ONE"],
    &["SLAVEOF", "NO", "ONE"],
    &["CONFIG", "SET", "maxmemory", "1"],
    &["CONFIG", "GET", "requirepass"],
    &["CONFIG", "REWRITE"],
    &["SHUTDOWN", "NOSAVE"],
    &["DEBUG", "SLEEP", "0"],
    &["ACL", "SETUSER", "redisha", "off"],
    &["ACL", "DELUSER", "redisha"],
    &["ACL", "LIST"],
    &["CLIENT", "PAUSE", "10", "WRITE"],
    &["CLIENT", "UNPAUSE"],
    &["CLIENT", "KILL", "TYPE", "normal"],
    &["FAILOVER"],
    &["MONITOR"],
    &["MODULE", "LIST"],
    &["SCRIPT", "KILL"],
    &["FUNCTION", "KILL"],
    &["SAVE"],
    &["BGSAVE"],
    &["BGREWRITEAOF"],
    &["FLUSHALL"],
    &["REPLCONF", "listening-port", "1"],
    &["PSYNC", "?", "-1"],
    &["SYNC"],
];

/// SENTINEL commands that change what the sentinels do.
const HOSTILE_SENTINEL: &[&[&str]] = &[
    &["SENTINEL", "SET", "mymaster", "quorum", "1"],
    &["SENTINEL", "FAILOVER", "mymaster"],
    &["SENTINEL", "RESET", "*"],
    &["SENTINEL", "REMOVE", "mymaster"],
    &["SENTINEL", "MONITOR", "evil", "127.0.0.1", "1", "1"],
    &["SENTINEL", "CONFIG", "SET", "resolve-hostnames", "no"],
    &["SENTINEL", "FLUSHCONFIG"],
    &["SENTINEL", "DEBUG"],
    &["SENTINEL", "SIMULATE-FAILURE", "crash-after-election"],
    &["SHUTDOWN"],
    &["ACL", "LIST"],
];

fn engines() -> Vec<String> {
    ["redis-server", "valkey-server"]
        .iter()
        .filter(|e| {
            Command::new(e)
                .arg("--version")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .map(|e| e.to_string())
        .collect()
}

/// NOPERM, or refused before the ACL is even asked (DEBUG and MODULE are off in the base
/// files: `enable-debug-command`/`enable-module-command` default to no).
fn is_noperm(r: &redis::RedisResult<redis::Value>) -> bool {
    matches!(r, Err(e) if e.code() == Some("NOPERM") || e.to_string().contains("command not allowed"))
}

#[test]
fn users_replicate_fail_over_and_refuse_the_app_its_ha_commands() {
    for engine in engines() {
        one_engine(&engine);
    }
}

fn one_engine(engine: &str) {
    let dir = tempdir();
    let acl = secrets(dir.path(), "t");
    let pw = |u: &str| format!("{u}-t-Pw$1");
    let ports = [free_port(), free_port()];
    let mut inits = Vec::new();
    for i in 0..2 {
        let mut env = node_env(dir.path(), &ports, i);
        env.insert("REDISHA_ACL_DIR".into(), acl.display().to_string());
        env.insert("REDISHA_REDIS_SERVER".into(), engine.into());
        env.insert("REDISHA_DOWN_AFTER_MS".into(), "2000".into());
        env.insert("REDISHA_STALE_AFTER_MS".into(), "60000".into());
        inits.push(Init::start(
            &[],
            &env,
            &[],
            dir.path().join(format!("log{i}")),
        ));
        if i == 0 {
            // The replica's boot asks the master's sentinel: let it be up first.
            wait_for(Duration::from_secs(10), || {
                as_user(ports[0] + 1, "redisha", &pw("redisha"), &["PING"]).ok()
            });
        }
    }
    let logs = |inits: &[Init]| {
        inits
            .iter()
            .map(|i| i.output())
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    // The replica logs in to its master as `replication`.
    let linked = wait_for(Duration::from_secs(30), || {
        let v = as_user(
            ports[1],
            "redisha",
            &pw("redisha"),
            &["INFO", "replication"],
        )
        .ok()?;
        text(&v).contains("master_link_status:up").then_some(())
    });
    assert!(
        linked.is_some(),
        "{engine}: replica linked\n{}",
        logs(&inits)
    );
    // Both sentinels reach the master as `sentinel`, see the replica and each other.
    for p in ports {
        let ok = wait_for(Duration::from_secs(30), || {
            let v = as_user(
                p + 1,
                "redisha",
                &pw("redisha"),
                &["SENTINEL", "MASTER", "mymaster"],
            )
            .ok()?;
            let flat = format!("{v:?}");
            let m = match v {
                redis::Value::Array(a) => a.iter().map(text).collect::<Vec<_>>(),
                redis::Value::Map(m) => m.iter().flat_map(|(k, v)| [text(k), text(v)]).collect(),
                _ => return None,
            };
            let field = |k: &str| {
                m.iter()
                    .position(|x| x == k)
                    .and_then(|i| m.get(i + 1))
                    .cloned()
                    .unwrap_or_default()
            };
            (field("flags") == "master"
                && field("num-slaves") == "1"
                && field("num-other-sentinels") == "1")
                .then_some(flat)
        });
        assert!(
            ok.is_some(),
            "{engine}: sentinel {p} linked to master, replica and peer\n{}",
            logs(&inits)
        );
    }

    // No password, a wrong one, or the default user: nothing.
    for p in [ports[0], ports[0] + 1, ports[1], ports[1] + 1] {
        let e = redis_cmd(p, &["PING"]).expect_err("unauthenticated");
        assert_eq!(e.code(), Some("NOAUTH"), "{engine} {p}: {e}");
        assert!(as_user(p, "app", "wrong", &["PING"]).is_err());
        assert!(as_user(p, "default", "", &["PING"]).is_err());
    }

    // The app's data commands, with either of its two passwords (a rotation half done).
    let app = |p: u16, args: &[&str]| as_user(p, "app", "app-new-t", args);
    app(ports[0], &["SET", "k", "v"]).expect("SET as app");
    assert_eq!(
        text(&as_user(ports[0], "app", "app-old-t", &["GET", "k"]).expect("old password")),
        "v"
    );
    app(ports[0], &["INCR", "n"]).expect("INCR");
    app(ports[0], &["HSET", "h", "f", "1"]).expect("HSET");
    app(ports[0], &["PUBLISH", "news", "x"]).expect("PUBLISH");
    let got = wait_for(Duration::from_secs(10), || {
        let v = app(ports[1], &["GET", "k"]).ok()?;
        (text(&v) == "v").then_some(())
    });
    assert!(
        got.is_some(),
        "{engine}: the replica serves reads to the app"
    );
    // Discovery through the sentinels, as a client library does it.
    for p in ports {
        app(p + 1, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]).expect("discovery");
        app(p + 1, &["SENTINEL", "SENTINELS", "mymaster"]).expect("sentinels");
        app(p + 1, &["SENTINEL", "REPLICAS", "mymaster"]).expect("replicas");
    }

    // Every HA command refused on every pod, every state-changing SENTINEL on every sentinel.
    for p in ports {
        for cmd in HOSTILE {
            let r = app(p, cmd);
            assert!(is_noperm(&r), "{engine} {p}: {cmd:?} as app: {r:?}");
        }
        for cmd in HOSTILE_SENTINEL {
            let r = app(p + 1, cmd);
            assert!(is_noperm(&r), "{engine} {}: {cmd:?} as app: {r:?}", p + 1);
        }
    }

    // redisha-init and the servers never hit a refusal: every entry of ACL LOG is the app's.
    for p in [ports[0], ports[0] + 1, ports[1], ports[1] + 1] {
        let v = as_user(p, "redisha", &pw("redisha"), &["ACL", "LOG"]).expect("ACL LOG");
        for u in USERS {
            assert!(
                !mentions_user(&v, u),
                "{engine} {p}: {u} was refused something: {v:?}"
            );
        }
    }

    // Secrets: in no argument list of a child, in no log line.
    let all_logs = logs(&inits);
    for i in &inits {
        for kid in descendants(i.pid) {
            let argv = cmdline(kid);
            for u in USERS.iter().chain(&["app"]) {
                assert!(!argv.contains(&format!("{u}-t-")), "{argv}");
            }
        }
    }
    for u in USERS {
        assert!(
            !all_logs.contains(&pw(u)),
            "{engine}: a password in the logs"
        );
    }
    assert!(!all_logs.contains("app-new-t") && !all_logs.contains("app-old-t"));
    assert!(!all_logs.contains("NOPERM"), "{engine}: {all_logs}");
}

/// Whether an ACL LOG reply holds an entry for `user`.
fn mentions_user(v: &redis::Value, user: &str) -> bool {
    let redis::Value::Array(entries) = v else {
        return false;
    };
    entries.iter().any(|e| {
        let fields: Vec<String> = match e {
            redis::Value::Array(a) => a.iter().map(text).collect(),
            redis::Value::Map(m) => m.iter().flat_map(|(k, v)| [text(k), text(v)]).collect(),
            _ => Vec::new(),
        };
        fields
            .windows(2)
            .any(|w| w[0] == "username" && w[1] == user)
    })
}

/// `render` with ACL users, for the `user` lines of the data node.
fn rendered_users(dir: &Path, rules: Option<&str>) -> HashMap<String, String> {
    let acl = secrets(dir, "r");
    let mut cmd = Command::new(BIN);
    cmd.args(["render", "--role", "master"])
        .env_clear()
        .env("REDISHA_STATE_DIR", dir.join("state"))
        .env("REDISHA_ACL_DIR", &acl);
    if let Some(r) = rules {
        let f = dir.join("rules.acl");
        std::fs::write(&f, r).expect("rules");
        for u in r.lines().filter_map(|l| l.split_whitespace().nth(1)) {
            std::fs::write(acl.join(u), format!("{u}-pw\n")).expect("pw");
        }
        cmd.env("REDISHA_ACL_FILE", &f);
    }
    let out = cmd.output().expect("render");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("-r-Pw$1"), "render shows no password");
    let redis_part = text
        .split("sentinel.conf <==")
        .next()
        .unwrap_or("")
        .to_string();
    redis_part
        .lines()
        .filter_map(|l| l.strip_prefix("user "))
        .filter_map(|l| l.split_once(' '))
        .map(|(u, rules)| (u.to_string(), rules.to_string()))
        .collect()
}

/// A bare server with the rendered users loaded (passwords replaced by nopass), for ACL DRYRUN.
struct Bare {
    child: Child,
    port: u16,
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bare(engine: &str, users: &HashMap<String, String>) -> Bare {
    let port = free_port();
    let child = Command::new(engine)
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--bind", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server");
    let b = Bare { child, port };
    assert!(wait_for(Duration::from_secs(10), || ping(port).then_some(())).is_some());
    for (u, rules) in users.iter().filter(|(u, _)| *u != "default") {
        let mut args = vec!["ACL", "SETUSER", u.as_str()];
        args.extend(rules.split(' ').filter(|w| !w.starts_with('#')));
        args.push("nopass");
        redis_cmd(port, &args).unwrap_or_else(|e| panic!("{engine}: {u} {rules}: {e}"));
    }
    b
}

fn dryrun(port: u16, user: &str, cmd: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut args = vec!["ACL", "DRYRUN", user];
    args.extend_from_slice(cmd);
    redis_cmd(port, &args)
}

/// Every `redis::cmd("X")` of the source with its first literal `.arg("Y")` when X has
/// subcommands, minus what is sent to sentinels only.
fn commands_in_source() -> BTreeSet<(String, Option<String>)> {
    let mut out = BTreeSet::new();
    let mut stack = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("src").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().and_then(|x| x.to_str()) != Some("rs") {
                continue;
            }
            let src = std::fs::read_to_string(&p).expect("read");
            for (i, _) in src.match_indices("redis::cmd(\"") {
                let rest = &src[i + "redis::cmd(\"".len()..];
                let Some(end) = rest.find('"') else { continue };
                let name = rest[..end].to_ascii_uppercase();
                // SENTINEL, and PUBLISH (the handover's relayed hello, `redisio::sentinel_hello_on`),
                // go to sentinels only, where our user holds every command.
                if name == "SENTINEL" || name == "PUBLISH" {
                    continue;
                }
                let tail: String = rest[end..].chars().take(200).collect();
                let sub = tail.split_once(".arg(\"").and_then(|(before, a)| {
                    (!before.contains(';')).then(|| a.split('"').next().unwrap_or("").to_string())
                });
                let has_subs =
                    ["CONFIG", "CLIENT", "ACL", "SCRIPT", "FUNCTION"].contains(&name.as_str());
                out.insert((name, if has_subs { sub } else { None }));
            }
        }
    }
    out
}

#[test]
fn redisha_may_run_what_the_source_sends_and_the_app_may_not() {
    let sent = commands_in_source();
    assert!(
        sent.contains(&("CLIENT".into(), Some("PAUSE".into())))
            && sent.contains(&("INFO".into(), None)),
        "the scan finds the commands: {sent:?}"
    );
    let dir = tempdir();
    let users = rendered_users(dir.path(), None);
    let dir2 = tempdir();
    // An operator's app user that asks for everything still gets no HA command.
    let custom = rendered_users(
        dir2.path(),
        Some("user orders ~* &* +@all\nuser frozen off ~* +get\n"),
    );
    // An operator's `off` stands: the user exists but cannot log in.
    let frozen: Vec<&str> = custom["frozen"].split(' ').collect();
    assert!(
        frozen.contains(&"off") && !frozen.contains(&"on"),
        "{frozen:?}"
    );
    for engine in engines() {
        let b = bare(&engine, &users);
        for (name, sub) in &sent {
            let mut cmd = vec![name.as_str()];
            let args: &[&str] = match (name.as_str(), sub.as_deref()) {
                ("CONFIG", Some("SET")) => &["replica-priority", "100"],
                ("CONFIG", Some("GET")) => &["replica-priority"],
                ("CLIENT", Some("PAUSE")) => &["1", "WRITE"],
                ("REPLICAOF", _) => &["NO", "ONE"],
                _ => &[],
            };
            if let Some(s) = sub {
                cmd.push(s);
            }
            cmd.extend_from_slice(args);
            let r = dryrun(b.port, "redisha", &cmd);
            assert!(
                r.is_ok(),
                "{engine}: the code sends {cmd:?}; user redisha may not: {r:?}"
            );
        }
        let b2 = bare(&engine, &custom);
        for cmd in HOSTILE {
            for (port, user) in [(b.port, "app"), (b2.port, "orders")] {
                let r = dryrun(port, user, cmd);
                let refused = matches!(&r, Ok(v) if text(v).contains("no permissions"))
                    || matches!(&r, Err(e) if e.to_string().contains("permission"));
                assert!(refused, "{engine}: {user} may run {cmd:?}: {r:?}");
            }
        }
        // Replication: the replica's commands only.
        for cmd in [
            &["PSYNC", "?", "-1"][..],
            &["REPLCONF", "capa", "eof"],
            &["PING"],
        ] {
            assert!(
                dryrun(b.port, "replication", cmd).is_ok(),
                "{engine} {cmd:?}"
            );
        }
        let r = dryrun(b.port, "replication", &["GET", "k"]);
        assert!(
            matches!(&r, Ok(v) if text(v).contains("no permissions")),
            "{r:?}"
        );
    }
}

/// A bad rule file or password directory: exit 78, one line naming it, nothing started.
#[test]
fn hostile_acl_input_exits_78_before_anything_starts() {
    let cases: &[(&str, Option<&str>, &[&str], &str)] = &[
        (
            "syntax",
            Some("user orders ~* +get\nthis is not a rule\n"),
            &[],
            "line 2",
        ),
        (
            "unknown command",
            Some("user orders ~* +gett\n"),
            &[],
            "+gett",
        ),
        (
            "built-in name",
            Some("user default ~* +get\n"),
            &[],
            "\"default\"",
        ),
        (
            "our own name",
            Some("user redisha ~* +@all\n"),
            &[],
            "\"redisha\"",
        ),
        (
            "lockout",
            Some("user orders ~* +acl|deluser\n"),
            &[],
            "lock redisha-init out",
        ),
        (
            "lockout category",
            Some("user orders ~* +@admin\n"),
            &[],
            "lock redisha-init out",
        ),
        (
            "inline password",
            Some("user orders ~* >secret +get\n"),
            &[],
            "password",
        ),
        (
            "missing password file",
            Some("user shop ~* +get\n"),
            &[],
            "REDISHA_ACL_DIR/shop",
        ),
        (
            "shared password too",
            None,
            &["REDIS_PASSWORD"],
            "REDIS_PASSWORD",
        ),
    ];
    for (what, rules, extra, want) in cases {
        let dir = tempdir();
        let acl = secrets(dir.path(), "h");
        std::fs::write(acl.join("orders"), "orders-pw\n").expect("pw");
        let marker = dir.path().join("started");
        let exe = script(
            dir.path(),
            "redis-server",
            &format!("touch '{}'; sleep 5", marker.display()),
        );
        let state = dir.path().join("state");
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--role", "master"])
            .env_clear()
            .env("REDISHA_REDIS_SERVER", &exe)
            .env("REDISHA_STATE_DIR", &state)
            .env("REDISHA_ACL_DIR", &acl);
        if let Some(r) = rules {
            let f = dir.path().join("rules.acl");
            std::fs::write(&f, r).expect("rules");
            cmd.env("REDISHA_ACL_FILE", &f);
        }
        for v in *extra {
            cmd.env(v, "secret-value");
        }
        let out = cmd.output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
        assert!(err.contains(want), "{what}: names it: {err}");
        assert!(!err.contains("secret"), "{what}: no secret echoed: {err}");
        assert!(
            !marker.exists() && !state.exists(),
            "{what}: nothing started"
        );
    }
}
