//! The one parsed form of what a sentinel answers (`SENTINEL MASTER`, `REPLICAS`, `SENTINELS`)
//! and the rules on it. redisio asks and hands the reply here; every other module reads these
//! views and asks these predicates, so a change to what "down" or "promotable" means is one edit
//! here, and where two rules differ on purpose the table test at the bottom says so and why.
//!
//! Pure: no I/O. Flag names are Sentinel's own (`sentinel.c`, `addReplySentinelRedisInstance`).

use std::collections::HashMap;

use crate::config::Endpoint;

/// One flag Sentinel may put on an instance it monitors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Master,
    Slave,
    Sentinel,
    /// Subjectively down: no valid reply within down-after (this sentinel's own view).
    SDown,
    /// Objectively down: the quorum agrees. Only a master entry is ever flagged so.
    ODown,
    /// The link to the instance is (momentarily) not established.
    Disconnected,
    MasterDown,
    FailoverInProgress,
    Promoted,
    ReconfSent,
    ReconfInprog,
    ReconfDone,
    ForceFailover,
    ScriptKillSent,
    MasterReboot,
}

const NAMES: &[(Flag, &str)] = &[
    (Flag::Master, "master"),
    (Flag::Slave, "slave"),
    (Flag::Sentinel, "sentinel"),
    (Flag::SDown, "s_down"),
    (Flag::ODown, "o_down"),
    (Flag::Disconnected, "disconnected"),
    (Flag::MasterDown, "master_down"),
    (Flag::FailoverInProgress, "failover_in_progress"),
    (Flag::Promoted, "promoted"),
    (Flag::ReconfSent, "reconf_sent"),
    (Flag::ReconfInprog, "reconf_inprog"),
    (Flag::ReconfDone, "reconf_done"),
    (Flag::ForceFailover, "force_failover"),
    (Flag::ScriptKillSent, "script_kill_sent"),
    (Flag::MasterReboot, "master_reboot"),
];

impl Flag {
    fn bit(self) -> u32 {
        1 << (self as u32)
    }

    fn from_name(s: &str) -> Option<Flag> {
        NAMES.iter().find(|(_, n)| *n == s).map(|(f, _)| *f)
    }
}

/// The flags of one entry: a set of the known ones, plus every name as Sentinel gave it (what
/// `status` shows; a flag a newer Sentinel adds is kept there and ignored by the rules).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlagSet {
    bits: u32,
    names: Vec<String>,
}

impl FlagSet {
    /// The `flags` field: names separated by commas.
    pub fn parse(s: &str) -> FlagSet {
        FlagSet::of(s.split(',').filter(|n| !n.is_empty()))
    }

    pub fn of<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> FlagSet {
        let names: Vec<String> = names.into_iter().map(|n| n.as_ref().to_string()).collect();
        let bits = names
            .iter()
            .filter_map(|n| Flag::from_name(n))
            .fold(0, |b, f| b | f.bit());
        FlagSet { bits, names }
    }

    pub fn has(&self, f: Flag) -> bool {
        self.bits & f.bit() != 0
    }

    /// Every name as given, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Down as far as this sentinel can tell: subjectively or objectively down, or without a
    /// link. The rule for "may I count on it now" (readiness, status, the live-peer counts of
    /// the fence, the handover and the split-vote breaker).
    pub fn is_down(&self) -> bool {
        self.has(Flag::SDown) || self.has(Flag::ODown) || self.has(Flag::Disconnected)
    }
}

/// A field of a reply entry, as text.
fn text<'a>(m: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    m.get(k).map(String::as_str)
}

fn num<T: std::str::FromStr>(m: &HashMap<String, String>, k: &str) -> Option<T> {
    text(m, k).and_then(|v| v.parse().ok())
}

/// The address of an entry (`ip`, `port`).
pub fn endpoint(m: &HashMap<String, String>) -> Option<Endpoint> {
    Endpoint::from_fields(text(m, "ip")?, text(m, "port")?)
}

/// Milliseconds in `s_down` (`s-down-time`), `None` when not `s_down`.
fn s_down_ms(m: &HashMap<String, String>, flags: &FlagSet) -> Option<u64> {
    flags
        .has(Flag::SDown)
        .then(|| num(m, "s-down-time").unwrap_or(0))
}

/// One sentinel's entry for the group (`SENTINEL MASTER`), plus the address
/// `GET-MASTER-ADDR-BY-NAME` gives, asked only while a failover runs: the two differ then (see
/// discover::judge_entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterView {
    pub addr: Endpoint,
    pub flags: FlagSet,
    /// `role-reported`: what the master itself last said it is.
    pub role_reported: String,
    pub failover_state: String,
    pub config_epoch: u64,
    /// `num-other-sentinels`.
    pub known_sentinels: u64,
    pub quorum: Option<u32>,
    pub parallel_syncs: Option<u64>,
    pub named: Option<Endpoint>,
}

impl MasterView {
    /// `None` without a usable `ip`/`port`.
    pub fn parse(m: &HashMap<String, String>) -> Option<MasterView> {
        Some(MasterView {
            addr: endpoint(m)?,
            flags: FlagSet::parse(text(m, "flags").unwrap_or("")),
            role_reported: text(m, "role-reported").unwrap_or("").to_string(),
            failover_state: text(m, "failover-state").unwrap_or("none").to_string(),
            config_epoch: num(m, "config-epoch").unwrap_or(0),
            known_sentinels: num(m, "num-other-sentinels").unwrap_or(0),
            quorum: num(m, "quorum"),
            parallel_syncs: num(m, "parallel-syncs"),
            named: None,
        })
    }

    pub fn is_down(&self) -> bool {
        self.flags.is_down()
    }

    /// Up and settled beyond doubt: flags exactly `master` (no s_down, no link trouble, no
    /// failover) and the master itself reports role master. Stricter than `!is_down()`: it is
    /// the condition for the one destructive act, the cleanup's `SENTINEL RESET`.
    pub fn is_settled(&self) -> bool {
        self.flags.names() == ["master"] && self.role_reported == "master"
    }
}

/// A failover of the group runs at this sentinel (Sentinel sets and clears the flag and the
/// state together; either one is enough). On its parts: status keeps them for its report.
pub fn failover_running(flags: &FlagSet, failover_state: &str) -> bool {
    flags.has(Flag::FailoverInProgress) || !matches!(failover_state, "none" | "")
}

/// A replica as one sentinel lists it (`SENTINEL REPLICAS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    pub addr: Endpoint,
    pub run_id: Option<String>,
    pub flags: FlagSet,
    pub s_down_ms: Option<u64>,
    /// `master-link-status` is `ok`; `None` when the field is missing.
    pub link_ok: Option<bool>,
    /// `slave-priority`.
    pub priority: Option<u32>,
    /// `info-refresh`: milliseconds since its last INFO reply.
    pub info_age_ms: Option<u64>,
}

/// Sentinel skips a replica whose INFO is older than 3 × info-period (1 s in the pods), and
/// answers NOGOODSLAVE when none is left: a replica it is about to be asked to promote must
/// have been heard from within 2 s.
pub const FRESH_INFO_MS: u64 = 2000;

impl ReplicaView {
    pub fn parse(m: &HashMap<String, String>) -> Option<ReplicaView> {
        // The fields every entry has are read as for a peer.
        let p = PeerView::parse(m)?;
        Some(ReplicaView {
            addr: p.addr,
            run_id: p.run_id,
            flags: p.flags,
            s_down_ms: p.s_down_ms,
            link_ok: text(m, "master-link-status").map(|v| v == "ok"),
            priority: num(m, "slave-priority"),
            info_age_ms: num(m, "info-refresh"),
        })
    }

    /// A failover could choose it: up, linked, priority above 0.
    pub fn is_promotable(&self) -> bool {
        promotable(&self.flags, self.link_ok, self.priority)
    }

    /// Promotable and heard from recently enough that Sentinel would pick it now.
    pub fn is_promotable_now(&self) -> bool {
        self.is_promotable() && self.info_age_ms.is_some_and(|ms| ms < FRESH_INFO_MS)
    }
}

/// The promotable rule on its parts (status keeps an entry's parts for its report).
pub fn promotable(flags: &FlagSet, link_ok: Option<bool>, priority: Option<u32>) -> bool {
    !flags.is_down() && link_ok == Some(true) && priority != Some(0)
}

/// Another sentinel as one sentinel lists it (`SENTINEL SENTINELS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub addr: Endpoint,
    pub run_id: Option<String>,
    pub flags: FlagSet,
    pub s_down_ms: Option<u64>,
}

impl PeerView {
    pub fn parse(m: &HashMap<String, String>) -> Option<PeerView> {
        let flags = FlagSet::parse(text(m, "flags").unwrap_or(""));
        Some(PeerView {
            addr: endpoint(m)?,
            run_id: m.get("runid").cloned(),
            s_down_ms: s_down_ms(m, &flags),
            flags,
        })
    }

    pub fn is_up(&self) -> bool {
        !self.flags.is_down()
    }
}

/// The up sentinels among `peers`, and how many a sentinel knows in all (itself included).
pub fn up_peers(peers: &[PeerView]) -> (Vec<Endpoint>, usize) {
    let up = peers
        .iter()
        .filter(|p| p.is_up())
        .map(|p| p.addr.clone())
        .collect();
    (up, peers.len() + 1)
}

/// How long an entry has been `s_down`, for the cleanup's "stale" rule (see the table test for
/// why that rule ignores `disconnected`).
pub fn stale_for_ms(flags: &FlagSet, s_down_ms: Option<u64>) -> Option<u64> {
    flags.has(Flag::SDown).then(|| s_down_ms.unwrap_or(0))
}

/// One sentinel's view of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub master: Endpoint,
    pub config_epoch: u64,
    /// The master is objectively down or a failover has not promoted anyone yet: the answer may
    /// change. (Once the promoted replica answers as master, `master` names it and this is false.)
    pub unsettled: bool,
    /// How many other sentinels this sentinel knows (`num-other-sentinels`).
    pub known_sentinels: u64,
}

/// What one sentinel's entry means. Once the promoted replica answers as master
/// (`reconf_slaves`, `update_config`) the new master is chosen: GET-MASTER-ADDR-BY-NAME names it
/// although SENTINEL MASTER still shows the old address until the failover ends. Before that, or
/// while the master is objectively down and no failover runs yet, the answer may still change.
pub fn judge_entry(e: &MasterView) -> Answer {
    let running = e.flags.has(Flag::FailoverInProgress);
    let promoted =
        running && matches!(e.failover_state.as_str(), "reconf_slaves" | "update_config");
    let unsettled = !promoted && (e.flags.has(Flag::ODown) || running);
    let master = match (&e.named, promoted) {
        (Some(n), true) => n.clone(),
        _ => e.addr.clone(),
    };
    Answer {
        master,
        config_epoch: e.config_epoch,
        unsettled,
        known_sentinels: e.known_sentinels,
    }
}

/// The reply of `SENTINEL DEBUG` without arguments: name, value, name, value…; names lowercased
/// (Sentinel prints them in capitals), a value that is no number left out.
pub fn debug_params(reply: &[String]) -> HashMap<String, u64> {
    reply
        .chunks(2)
        .filter(|kv| kv.len() == 2)
        .filter_map(|kv| Some((kv[0].to_ascii_lowercase(), kv[1].parse().ok()?)))
        .collect()
}

/// A hello as Sentinel publishes it on `__sentinel__:hello` (sentinel.c `sentinelSendHello`):
/// `ip,port,runid,current_epoch,group,master_ip,master_port,master_config_epoch`, addresses
/// without brackets (Sentinel splits on `,`, never on `:`). A sentinel that receives one from a
/// sentinel it knows, naming a config epoch above its own, switches the group to that master at
/// once (`sentinelProcessHelloMessage`), failover in progress or not.
pub fn hello(from: &Endpoint, run_id: &str, epoch: u64, group: &str, master: &Endpoint) -> String {
    format!(
        "{},{},{run_id},{epoch},{group},{},{},{epoch}",
        from.host, from.port, master.host, master.port
    )
}

/// The epoch a failover started with, from the leader's `+new-epoch` event (its payload is the
/// bare number: sentinel.c formats it without the instance prefix).
pub fn new_epoch(payload: &str) -> Option<u64> {
    payload.trim().parse().ok()
}

/// What the tests of the modules that judge answers build them from.
#[cfg(test)]
pub mod fixtures {
    use super::*;

    pub fn ep(s: &str) -> Endpoint {
        crate::config::parse_endpoint("t", s).expect("endpoint")
    }

    pub fn ans(m: &str, epoch: u64, unsettled: bool) -> Answer {
        Answer {
            master: ep(m),
            config_epoch: epoch,
            unsettled,
            known_sentinels: 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Host;

    fn reply(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Every rule on one table. Where two rules answer differently for the same flags, it is on
    /// purpose:
    /// - `is_down` (readiness, status, fence, handover, split vote) counts `disconnected` as down:
    ///   those ask "can I count on it now", and a sentinel without a link to it cannot.
    /// - the cleanup's staleness counts only `s_down` with its duration: it forgets an entry for
    ///   good, so it needs a long, measured absence; `disconnected` has no duration and is
    ///   often a link being re-established.
    /// - `is_settled` (the cleanup's precondition for a reset) is stricter than `!is_down`: any
    ///   other flag (failover, reboot, a role the master does not confirm) postpones a reset.
    /// - `is_promotable_now` (handover, switchover) is stricter than `is_promotable` (readiness,
    ///   status): those two are about to ask Sentinel for a failover, which skips a replica
    ///   whose INFO is stale; readiness only asks whether one could be chosen at all.
    #[test]
    fn rules_on_flags_link_priority_and_info_age() {
        // (flags, link, priority, info-refresh) -> the rules that hold, one letter each:
        // d is_down, s stale (cleanup), p is_promotable, n is_promotable_now; '-' does not.
        let table = [
            ("slave", "ok", "100", "500", "--pn"),
            ("slave", "ok", "100", "2500", "--p-"),
            ("slave", "ok", "0", "500", "----"),
            ("slave", "err", "100", "500", "----"),
            ("slave,disconnected", "ok", "100", "500", "d---"),
            ("slave,s_down", "ok", "100", "500", "ds--"),
            ("s_down,slave,disconnected", "err", "100", "9000", "ds--"),
            ("slave,promoted,newflag", "ok", "100", "500", "--pn"),
        ];
        for (flags, link, prio, age, want) in table {
            let m = reply(&[
                ("ip", "fd88::24"),
                ("port", "6379"),
                ("flags", flags),
                ("master-link-status", link),
                ("slave-priority", prio),
                ("info-refresh", age),
                ("s-down-time", "7000"),
            ]);
            let r = ReplicaView::parse(&m).expect("parses");
            let rules = [
                ('d', r.flags.is_down()),
                ('s', stale_for_ms(&r.flags, r.s_down_ms).is_some()),
                ('p', r.is_promotable()),
                ('n', r.is_promotable_now()),
            ];
            let got: String = rules
                .iter()
                .map(|(c, b)| if *b { *c } else { '-' })
                .collect();
            assert_eq!(got, want, "{flags} link {link} prio {prio} age {age}");
            assert_eq!(r.flags.names().join(","), flags, "names kept as given");
        }
    }

    #[test]
    fn master_rules() {
        // (flags, role-reported, failover-state) -> (is_down, failover_running, is_settled)
        let table = [
            ("master", "master", "none", (false, false, true)),
            ("master", "slave", "none", (false, false, false)),
            ("master,s_down", "master", "none", (true, false, false)),
            (
                "master,s_down,o_down",
                "master",
                "none",
                (true, false, false),
            ),
            (
                "master,disconnected",
                "master",
                "none",
                (true, false, false),
            ),
            (
                "master,failover_in_progress",
                "master",
                "wait_start",
                (false, true, false),
            ),
            // A state without the flag: Sentinel never reports one, and the two rules read
            // different fields (status's "running" takes either; the cleanup reads the flags).
            ("master", "master", "select_slave", (false, true, true)),
            (
                "master,master_reboot",
                "master",
                "none",
                (false, false, false),
            ),
        ];
        for (flags, role, state, want) in table {
            let m = reply(&[
                ("ip", "10.0.0.1"),
                ("port", "6379"),
                ("flags", flags),
                ("role-reported", role),
                ("failover-state", state),
                ("config-epoch", "7"),
                ("num-other-sentinels", "2"),
                ("quorum", "2"),
            ]);
            let v = MasterView::parse(&m).expect("parses");
            assert_eq!(
                (
                    v.is_down(),
                    failover_running(&v.flags, &v.failover_state),
                    v.is_settled()
                ),
                want,
                "{flags} {role} {state}"
            );
            assert_eq!(
                (v.config_epoch, v.known_sentinels, v.quorum),
                (7, 2, Some(2))
            );
        }
        assert!(MasterView::parse(&reply(&[("flags", "master")])).is_none());
    }

    #[test]
    fn peers_up_and_known() {
        let p = |ip: &str, flags: &str| {
            PeerView::parse(&reply(&[("ip", ip), ("port", "26379"), ("flags", flags)]))
                .expect("parses")
        };
        let peers = [
            p("10.0.0.2", "sentinel"),
            p("10.0.0.3", "sentinel,disconnected"),
            p("10.0.0.4", "s_down,sentinel"),
            p("fd88::5", "sentinel"),
        ];
        let (up, known) = up_peers(&peers);
        let up: Vec<String> = up.iter().map(ToString::to_string).collect();
        assert_eq!(up, ["10.0.0.2:26379", "[fd88::5]:26379"]);
        assert_eq!(known, 5);
        assert_eq!(peers[2].s_down_ms, Some(0));
        assert_eq!(peers[1].s_down_ms, None);
    }

    #[test]
    fn entries_are_judged_by_flags_and_failover_state() {
        let ep = |p: u16| Endpoint {
            host: Host::Ip("10.0.0.1".parse().expect("ip")),
            port: p,
        };
        let entry = |flags: &str, state: &str, named: Option<u16>| MasterView {
            addr: ep(1),
            flags: FlagSet::parse(flags),
            role_reported: "master".into(),
            failover_state: state.into(),
            config_epoch: 7,
            known_sentinels: 2,
            quorum: None,
            parallel_syncs: None,
            named: named.map(ep),
        };
        // (flags, failover-state, GET-MASTER-ADDR-BY-NAME) -> (master port, unsettled)
        let table = [
            ("master", "none", None, 1, false),
            ("master,s_down", "none", None, 1, false),
            ("master,s_down,o_down", "none", None, 1, true),
            (
                "master,failover_in_progress",
                "wait_start",
                Some(1),
                1,
                true,
            ),
            (
                "master,failover_in_progress",
                "wait_promotion",
                Some(1),
                1,
                true,
            ),
            (
                "master,failover_in_progress",
                "reconf_slaves",
                Some(2),
                2,
                false,
            ),
            (
                "master,o_down,failover_in_progress",
                "update_config",
                Some(2),
                2,
                false,
            ),
            // Promoted, but the second query failed to name anyone: the old address, settled.
            (
                "master,failover_in_progress",
                "reconf_slaves",
                None,
                1,
                false,
            ),
        ];
        for (flags, state, named, port, unsettled) in table {
            let a = judge_entry(&entry(flags, state, named));
            assert_eq!(
                (
                    a.master.port,
                    a.unsettled,
                    a.config_epoch,
                    a.known_sentinels
                ),
                (port, unsettled, 7, 2),
                "{flags} {state} {named:?}"
            );
        }
    }

    #[test]
    fn hello_is_what_sentinel_publishes() {
        use fixtures::ep;
        let rows = [
            (
                ep("10.0.0.1:26379"),
                ep("10.0.0.2:6379"),
                "10.0.0.1,26379,abc,7,mymaster,10.0.0.2,6379,7",
            ),
            (
                ep("[fd00::1]:26379"),
                ep("[fd00::2]:6379"),
                "fd00::1,26379,abc,7,mymaster,fd00::2,6379,7",
            ),
            (
                ep("redis-0.redis:26379"),
                ep("redis-1.redis:6379"),
                "redis-0.redis,26379,abc,7,mymaster,redis-1.redis,6379,7",
            ),
        ];
        for (from, master, want) in rows {
            assert_eq!(hello(&from, "abc", 7, "mymaster", &master), want);
        }
        assert_eq!(new_epoch("12"), Some(12));
        assert_eq!(new_epoch("master mymaster 1.2.3.4 6379"), None);
    }
}
