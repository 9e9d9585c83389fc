use super::*;

fn flags_role(r: &str) -> Flags {
    Flags::with(&[("REDISHA_ROLE", r)])
}

#[test]
fn local_master_needs_nothing() {
    let c = build_from_map(&flags_role("master"), &HashMap::from([("HOME", "/home/u")]))
        .expect("valid");
    assert_eq!(c.role, Role::Master);
    assert_eq!(c.redis_port, 6379);
    assert_eq!(c.sentinel_port, 26379);
    assert_eq!(c.announce_ip().to_string(), "127.0.0.1");
    assert_eq!(
        c.state_dir,
        PathBuf::from("/home/u/.local/state/redisha-init/master-6379")
    );
    assert_eq!(c.min_replicas_to_write, 0);
    assert!(c.sentinels.is_empty());
    assert_eq!(c.metrics_port, None, "metrics are off unless asked for");
}

#[test]
fn bad_values_name_the_variable() {
    let cases: &[(&str, &str, &str)] = &[
        ("MY_POD_IP", "10.0.0.300", "MY_POD_IP"),
        ("MY_POD_IP", "", "MY_POD_IP"),
        ("MY_POD_IP", "10.0.0.5,fd00::5", "MY_POD_IP"),
        ("MASTER_ANNOUNCE_PORT", "0", "MASTER_ANNOUNCE_PORT"),
        ("MASTER_ANNOUNCE_PORT", "65536", "MASTER_ANNOUNCE_PORT"),
        ("SENTINEL_ANNOUNCE_PORT", "x", "SENTINEL_ANNOUNCE_PORT"),
        ("REDISHA_QUORUM", "two", "REDISHA_QUORUM"),
        ("REDISHA_DOWN_AFTER_MS", "5s", "REDISHA_DOWN_AFTER_MS"),
        (
            "REDISHA_FAILOVER_TIMEOUT_MS",
            "-1",
            "REDISHA_FAILOVER_TIMEOUT_MS",
        ),
        (
            "REDISHA_PARALLEL_SYNCS",
            "1\nbind 0.0.0.0",
            "REDISHA_PARALLEL_SYNCS",
        ),
        ("REDISHA_MASTER_GROUP", "my master", "REDISHA_MASTER_GROUP"),
        (
            "REDISHA_MASTER_GROUP",
            "g\nsentinel monitor x",
            "REDISHA_MASTER_GROUP",
        ),
        ("REDISHA_LOG_FORMAT", "xml", "REDISHA_LOG_FORMAT"),
        ("REDISHA_STATE_DIR", "/tmp/a\"b", "REDISHA_STATE_DIR"),
        ("REDISHA_STATE_DIR", "/tmp/a\nb", "REDISHA_STATE_DIR"),
        ("REDISHA_ROLE", "leader", "REDISHA_ROLE"),
        ("REDISHA_SENTINELS", "a:1,b", "REDISHA_SENTINELS"),
        (
            "REDIS_MASTER_SERVICE_HOST",
            "redis primary",
            "REDIS_MASTER_SERVICE_HOST",
        ),
        (
            "REDIS_MASTER_SERVICE_HOST",
            "x\nslaveof 1.2.3.4 1",
            "REDIS_MASTER_SERVICE_HOST",
        ),
        ("REDISHA_HANDOVER", "maybe", "REDISHA_HANDOVER"),
        ("REDISHA_MAXMEMORY", "1.5gb", "REDISHA_MAXMEMORY"),
        ("REDISHA_MAXMEMORY", "512", "REDISHA_MAXMEMORY"),
        ("REDISHA_MAXMEMORY", "1gb\nmaxmemory 0", "REDISHA_MAXMEMORY"),
        ("REDISHA_METRICS_PORT", "0", "REDISHA_METRICS_PORT"),
        ("REDISHA_METRICS_PORT", "6379", "REDISHA_METRICS_PORT"),
        ("REDISHA_METRICS_PORT", "26379", "REDISHA_METRICS_PORT"),
    ];
    for (var, val, named) in cases {
        let mut m = HashMap::from([(*var, *val), ("REDIS_MASTER_SERVICE_HOST", "redis-primary")]);
        if *var == "REDIS_MASTER_SERVICE_HOST" {
            m.insert(var, val);
        }
        let flags = if *var == "REDISHA_ROLE" {
            Flags::default()
        } else {
            flags_role("replica")
        };
        let e = build_from_map(&flags, &m).expect_err(&format!("{var}={val:?} must be refused"));
        assert_eq!(e.name, *named, "{var}={val:?}: {e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }
}

/// A dual-stack pod: one address of either family is taken as the downward API's status.podIP
/// gives it; status.podIPs (a list) is refused with what to set instead.
#[test]
fn pod_ip_either_family_not_a_list() {
    for ip in ["10.1.2.3", "fd00::5", "2001:db8::7"] {
        let m = HashMap::from([("MY_POD_IP", ip), ("ALLOW_EMPTY_PASSWORD", "yes")]);
        let c = build_from_map(&flags_role("master"), &m).expect("one address");
        assert_eq!(c.pod_ip.map(|a| a.to_string()).as_deref(), Some(ip));
    }
    let m = HashMap::from([("MY_POD_IP", "10.1.2.3,fd00::5")]);
    let e = build_from_map(&flags_role("master"), &m).expect_err("a list");
    assert!(e.to_string().contains("not status.podIPs"), "{e}");
}

#[test]
fn replica_needs_master_host() {
    let e = build_from_map(&flags_role("replica"), &HashMap::new()).expect_err("missing host");
    assert_eq!(e.name, "REDIS_MASTER_SERVICE_HOST");
}

#[test]
fn flag_overrides_env() {
    let f = Flags::with(&[("REDISHA_ROLE", "master"), ("REDISHA_QUORUM", "3")]);
    let c = build_from_map(
        &f,
        &HashMap::from([("REDISHA_QUORUM", "2"), ("REDISHA_ROLE", "replica")]),
    )
    .expect("valid");
    assert_eq!(c.quorum, 3);
    assert_eq!(c.role, Role::Master);
}

#[test]
fn sentinel_default_is_master_service() {
    let c = build_from_map(
        &flags_role("replica"),
        &HashMap::from([
            ("REDIS_MASTER_SERVICE_HOST", "redis-primary"),
            ("MY_POD_IP", "10.1.2.3"),
            ("ALLOW_EMPTY_PASSWORD", "yes"),
        ]),
    )
    .expect("valid");
    assert_eq!(c.sentinels.len(), 1);
    assert_eq!(c.sentinels[0].to_string(), "redis-primary:26379");
    assert_eq!(c.min_replicas_to_write, 1);
    assert_eq!(c.min_replicas_max_lag, 4, "derived from down-after 5000");
    assert_eq!(c.state_dir, PathBuf::from("/data"));
}

#[test]
fn endpoints_parse() {
    assert_eq!(
        parse_endpoint("X", "a.b:1").map(|e| e.to_string()),
        Ok("a.b:1".into())
    );
    assert_eq!(
        parse_endpoint("X", "[::1]:26379").map(|e| e.to_string()),
        Ok("[::1]:26379".into())
    );
    assert!(parse_endpoint("X", "a.b").is_err());
    assert!(parse_endpoint("X", "a b:1").is_err());
    assert!(parse_endpoint("X", "a:0").is_err());
}

/// Every form an address arrives in, one string or two fields, and whether two of them are the
/// same endpoint. The IPv6 rows are issue 27: Sentinel's fields are bare (`fd88::22`), our Display
/// is bracketed, and a replica pod compared the two as strings.
#[test]
fn address_parsing_and_comparison_table() {
    // (one string, the endpoint it is, or None when refused)
    let strings: &[(&str, Option<&str>)] = &[
        ("10.0.0.2:6379", Some("10.0.0.2:6379")),
        ("[10.0.0.2]:6379", Some("10.0.0.2:6379")),
        ("[fd88::22]:6379", Some("[fd88::22]:6379")),
        ("fd88::22:6379", Some("[fd88::22]:6379")),
        ("[FD88:0:0:0:0:0:0:22]:6379", Some("[fd88::22]:6379")),
        ("[::1]:26379", Some("[::1]:26379")),
        ("::1:26379", Some("[::1]:26379")),
        ("redis-master:6379", Some("redis-master:6379")),
        (
            "redis-0.redis.default.svc.cluster.local.:26379",
            Some("redis-0.redis.default.svc.cluster.local.:26379"),
        ),
        ("fd88::22", None),
        ("[fd88::22]", None),
        ("[fd88::22]:", None),
        ("[fd88::22]:0", None),
        ("10.0.0.2", None),
        ("10.0.0.2:65536", None),
        ("red is:6379", None),
        ("", None),
    ];
    for (s, want) in strings {
        assert_eq!(
            Endpoint::parse(s).map(|e| e.to_string()).as_deref(),
            *want,
            "{s:?}"
        );
    }
    // (host field, port field, the endpoint): SENTINEL REPLICAS ip/port, INFO master_host,
    // slaveN ip=, GET-MASTER-ADDR-BY-NAME
    let fields: &[(&str, &str, Option<&str>)] = &[
        ("10.0.0.2", "6379", Some("10.0.0.2:6379")),
        ("fd88::22", "6379", Some("[fd88::22]:6379")),
        ("[fd88::22]", "6379", Some("[fd88::22]:6379")),
        ("::1", "16380", Some("[::1]:16380")),
        ("redis-master", "6379", Some("redis-master:6379")),
        ("fd88::22", "x", None),
        ("fd88::22", "0", None),
        ("?", "6379", None),
        ("", "6379", None),
    ];
    for (h, p, want) in fields {
        assert_eq!(
            Endpoint::from_fields(h, p)
                .map(|e| e.to_string())
                .as_deref(),
            *want,
            "{h:?} {p:?}"
        );
    }
    // Same endpoint whatever the form; different ports, families or names are different.
    let same: &[(&str, &str)] = &[
        ("[fd88::22]:6379", "fd88::22:6379"),
        ("[fd88::22]:6379", "[fd88:0::22]:6379"),
        ("10.0.0.2:6379", "[10.0.0.2]:6379"),
        ("redis-master:6379", "redis-master:6379"),
    ];
    for (a, b) in same {
        assert_eq!(Endpoint::parse(a), Endpoint::parse(b), "{a} vs {b}");
        assert!(Endpoint::parse(a).is_some());
    }
    assert_eq!(
        Endpoint::from_fields("fd88::22", "6379"),
        Endpoint::parse("[fd88::22]:6379")
    );
    let differ: &[(&str, &str)] = &[
        ("[fd88::22]:6379", "[fd88::22]:6380"),
        ("[fd88::22]:6379", "[fd88::23]:6379"),
        ("[::ffff:10.0.0.2]:6379", "10.0.0.2:6379"),
        ("redis-master:6379", "10.0.0.2:6379"),
    ];
    for (a, b) in differ {
        assert_ne!(Endpoint::parse(a), Endpoint::parse(b), "{a} vs {b}");
    }
}

#[test]
fn pod_without_password_is_refused_unless_allowed() {
    let e = build_from_map(
        &flags_role("master"),
        &HashMap::from([("MY_POD_IP", "10.1.2.3")]),
    )
    .expect_err("refused");
    assert_eq!(e.name, "REDIS_PASSWORD");
    assert!(e.to_string().contains("ALLOW_EMPTY_PASSWORD"), "{e}");
    let c = build_from_map(
        &flags_role("master"),
        &HashMap::from([("MY_POD_IP", "10.1.2.3"), ("REDIS_PASSWORD", "s3cret")]),
    )
    .expect("valid");
    assert_eq!(
        c.conn.auth.redis.as_ref().map(Secret::expose),
        Some("s3cret")
    );
    assert_eq!(
        c.conn.auth.sentinel.as_ref().map(Secret::expose),
        Some("s3cret"),
        "sentinel defaults to the same secret"
    );
    assert!(
        !format!("{c:?}").contains("s3cret"),
        "Debug of the config never shows a secret"
    );
}

#[test]
fn secret_errors_never_echo_the_value() {
    for (var, val) in [
        ("REDIS_PASSWORD", "abc\ndef"),
        ("REDIS_SENTINEL_PASSWORD", "x\u{7f}y"),
        ("REDIS_PASSWORD", ""),
    ] {
        let e = build_from_map(&flags_role("master"), &HashMap::from([(var, val)]))
            .expect_err("bad secret");
        assert_eq!(e.name, var);
        assert!(e.value.is_none());
        if !val.is_empty() {
            assert!(
                !e.to_string().contains(val) && !e.to_string().contains("abc"),
                "{e}"
            );
        }
    }
    let dir = std::env::temp_dir().join(format!("redisha-pw-{}", std::process::id()));
    std::fs::write(&dir, "from-file\n").expect("write");
    let path = dir.display().to_string();
    let c = build_from_map(
        &flags_role("master"),
        &HashMap::from([("REDIS_PASSWORD_FILE", path.as_str())]),
    )
    .expect("valid");
    assert_eq!(
        c.conn.auth.redis.as_ref().map(Secret::expose),
        Some("from-file")
    );
    let _ = std::fs::remove_file(&dir);
}

#[test]
fn non_utf8_secret_is_not_echoed() {
    use std::os::unix::ffi::OsStringExt;
    let bad = OsString::from_vec(b"hunter2\xff".to_vec());
    let e = RawEnv::from_os([(OsString::from("REDIS_PASSWORD"), bad)]).expect_err("refused");
    assert_eq!(e.name, "REDIS_PASSWORD");
    assert!(
        e.value.is_none() && !e.to_string().contains("hunter2"),
        "{e}"
    );
    let e = RawEnv::from_os([(
        OsString::from("MY_POD_IP"),
        OsString::from_vec(b"10.0.0.\xff".to_vec()),
    )])
    .expect_err("refused");
    assert!(
        e.to_string().contains("10.0.0."),
        "non-secrets are shown: {e}"
    );
}

#[test]
fn long_values_are_cut_in_errors() {
    let long = "x".repeat(1 << 20);
    let e = build_from_map(
        &flags_role("master"),
        &HashMap::from([("REDISHA_QUORUM", long.as_str())]),
    )
    .expect_err("bad");
    assert!(e.to_string().len() < 200, "{}", e.to_string().len());
}

#[test]
fn role_from_ordinal_table() {
    let no = "no ordinal: expected a StatefulSet pod name ending in -<number>";
    let cases: &[(&str, Result<Role, &str>)] = &[
        ("redis-0", Ok(Role::Master)),
        ("redis-1", Ok(Role::Replica)),
        ("redis-2", Ok(Role::Replica)),
        ("redis-10", Ok(Role::Replica)),
        ("my-redis-ha-0", Ok(Role::Master)),
        ("my-redis-ha-3", Ok(Role::Replica)),
        // The seed's and compose's names carry no StatefulSet ordinal of 0..: "-1" would be
        // read as one, so they are not for this rule (documented).
        ("redis-primary", Err(no)),
        ("redis", Err(no)),
        ("redis-", Err(no)),
        ("redis-00", Err(no)),
        ("redis-01", Err(no)),
        ("redis-0a", Err(no)),
        ("redis-9999999999", Err(no)),
        ("", Err(no)),
    ];
    for (name, want) in cases {
        assert_eq!(role_from_ordinal(name), *want, "{name:?}");
    }
}

#[test]
fn ordinal_role_from_pod_name_or_hostname() {
    let with = |pod: Option<&str>, host: Option<&str>| {
        let mut vars = HashMap::from([
            ("REDISHA_ROLE", "ordinal"),
            ("REDIS_MASTER_SERVICE_HOST", "redis-0.redis-headless"),
        ]);
        if let Some(p) = pod {
            vars.insert("REDISHA_POD_NAME", p);
        }
        let mut env = RawEnv::from_os(
            vars.iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        )
        .expect("env");
        env.hostname = host.map(str::to_string);
        super::build(&Flags::default(), &env)
    };
    // (REDISHA_POD_NAME, hostname, role or the variable the error names)
    type Case<'a> = (Option<&'a str>, Option<&'a str>, Result<Role, &'a str>);
    let cases: &[Case] = &[
        (Some("redis-0"), None, Ok(Role::Master)),
        (Some("redis-2"), None, Ok(Role::Replica)),
        // The variable wins over the hostname.
        (Some("redis-1"), Some("redis-0"), Ok(Role::Replica)),
        (None, Some("redis-0"), Ok(Role::Master)),
        (None, Some("redis-1"), Ok(Role::Replica)),
        (None, Some("laptop"), Err("REDISHA_ROLE")),
        (None, None, Err("REDISHA_ROLE")),
        (Some("redis-x"), Some("redis-0"), Err("REDISHA_POD_NAME")),
        (Some("Redis-0"), None, Err("REDISHA_POD_NAME")),
        (Some(""), None, Err("REDISHA_POD_NAME")),
    ];
    for (pod, host, want) in cases {
        let got = with(*pod, *host).map(|c| c.role).map_err(|e| e.name);
        assert_eq!(got, want.map_err(str::to_string), "{pod:?} {host:?}");
    }
    // --role wins over REDISHA_ROLE, as for every flag.
    let mut env = RawEnv::from_os([
        (OsString::from("REDISHA_ROLE"), OsString::from("ordinal")),
        (
            OsString::from("REDISHA_POD_NAME"),
            OsString::from("redis-1"),
        ),
    ])
    .expect("env");
    env.hostname = None;
    assert_eq!(
        super::build(&flags_role("master"), &env)
            .map(|c| c.role)
            .ok(),
        Some(Role::Master)
    );
}
