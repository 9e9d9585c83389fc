//! The container's memory limit and the `maxmemory` derived from it (README, "Memory").
//!
//! Without `maxmemory` a growing dataset grows until the kernel's cgroup OOM killer SIGKILLs
//! redis, which comes back, loads the same AOF and is killed again. With it, redis refuses
//! writes with its OOM error instead. Parsing and the choice are pure functions; `detect` and
//! `oom_kills` are the thin I/O around them.

use std::fmt;
use std::path::{Path, PathBuf};

/// `maxmemory` = this share of the container's limit, in percent. The rest is for what
/// `maxmemory` does not count: the fork child's copy-on-write pages during an AOF rewrite or a
/// replica's full sync, the replica's output buffer, allocator fragmentation. benches/maxmemory.py
/// measured the worst anonymous peak at 3.12 × used_memory (a replica's full sync, retried,
/// under a saturating writer; BENCHMARKS.md "maxmemory"): at 30 % that is 94 % of the limit,
/// and every AOF rewrite and every round with a moderate writer stays under 74 %.
pub const DEFAULT_PERCENT: u8 = 30;

/// cgroup v1 writes "no limit" as LONG_MAX rounded down to the page size
/// (9223372036854771712); nothing at or above 2^62 bytes (4 EiB) is a real limit.
const V1_UNLIMITED_FROM: u64 = 1 << 62;

/// Redis warns below 1 MB and refuses almost every write: such a value is a forgotten unit.
const MIN_MAXMEMORY: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The memory cgroup this process is in, as a directory of its control files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    pub version: Version,
    pub dir: PathBuf,
}

impl Cgroup {
    fn limit_file(&self) -> PathBuf {
        self.dir.join(match self.version {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        })
    }

    /// Both files hold an `oom_kill <n>` line: v2's memory.events, v1's memory.oom_control.
    fn oom_file(&self) -> PathBuf {
        self.dir.join(match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        })
    }
}

/// What `detect` found at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detected {
    pub cgroup: Option<Cgroup>,
    /// `None`: no limit ("max", v1's unlimited value) or nothing readable.
    pub limit: Option<u64>,
    /// Why nothing was found, when something was expected (shown by `render` and logged).
    pub note: Option<String>,
}

/// `REDISHA_MAXMEMORY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Setting {
    /// Unset: derived from the limit, unless the base file sets `maxmemory`.
    #[default]
    Auto,
    /// `0`: render nothing (Redis's default: no limit), whatever the container's limit.
    Off,
    Bytes(u64),
    /// `40%`: this share of the container's limit instead of DEFAULT_PERCENT.
    Percent(u8),
}

/// What the rendered redis.conf gets, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// REDISHA_MAXMEMORY set to a size.
    Operator(u64),
    /// A share of the container's limit: DEFAULT_PERCENT, or REDISHA_MAXMEMORY=<n>%.
    Derived { bytes: u64, limit: u64, percent: u8 },
    /// The operator's base file (REDISHA_CONF_DIR) sets maxmemory: it wins over a derived value.
    BaseFile,
    /// REDISHA_MAXMEMORY=0.
    Off,
    /// No limit found and nothing asked for.
    NoLimit,
}

impl Choice {
    /// The value of the `maxmemory` line we render, if any.
    pub fn line(self) -> Option<u64> {
        match self {
            Choice::Operator(b) | Choice::Derived { bytes: b, .. } => Some(b),
            _ => None,
        }
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::Operator(b) => write!(f, "maxmemory {b} ({}, REDISHA_MAXMEMORY)", human(*b)),
            Choice::Derived { bytes, percent, .. } => write!(
                f,
                "maxmemory {bytes} ({}, {percent} % of the limit)",
                human(*bytes)
            ),
            Choice::BaseFile => f.write_str("maxmemory from the base file"),
            Choice::Off => f.write_str("no maxmemory (REDISHA_MAXMEMORY=0)"),
            Choice::NoLimit => f.write_str("no maxmemory (no memory limit found)"),
        }
    }
}

/// `1.0 GiB`, `256.0 MiB`: for log lines and `render`.
pub fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn choose(setting: Setting, limit: Option<u64>, base_sets_maxmemory: bool) -> Choice {
    let share = |limit: u64, percent: u8| Choice::Derived {
        // u128: a limit near 2^62 times the percentage does not fit u64.
        bytes: (u128::from(limit) * u128::from(percent) / 100) as u64,
        limit,
        percent,
    };
    match (setting, limit) {
        (Setting::Off, _) => Choice::Off,
        (Setting::Bytes(b), _) => Choice::Operator(b),
        (Setting::Percent(p), Some(limit)) => share(limit, p),
        (Setting::Percent(_), None) => Choice::NoLimit,
        (Setting::Auto, _) if base_sets_maxmemory => Choice::BaseFile,
        (Setting::Auto, None) => Choice::NoLimit,
        (Setting::Auto, Some(limit)) => share(limit, DEFAULT_PERCENT),
    }
}

/// Does a redis config text set `directive` itself? (Redis: case-insensitive, last one wins;
/// any occurrence means the operator chose.)
pub fn sets_directive(conf: &str, directive: &str) -> bool {
    conf.lines().any(|l| {
        l.split_whitespace()
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(directive))
    })
}

/// `REDISHA_MAXMEMORY`, in Redis's own units (`memtoll`): a plain number is bytes; `k`/`m`/`g`
/// are powers of 1000 and `kb`/`mb`/`gb` powers of 1024, any case; no fractions, like Redis.
/// `0` means "do not set"; `40%` is a share of the container's limit. Errors are the reason
/// only; the caller names the variable.
pub fn parse_setting(v: &str) -> Result<Setting, &'static str> {
    const WHY: &str =
        "not a size (bytes, or a whole number with k, kb, m, mb, g or gb, as in redis.conf; or 1%..100% of the memory limit; 0 = do not set)";
    if let Some(p) = v.strip_suffix('%') {
        return match p.parse::<u8>() {
            Ok(n @ 1..=100) if p.bytes().all(|b| b.is_ascii_digit()) => Ok(Setting::Percent(n)),
            _ => Err(WHY),
        };
    }
    let lower = v.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(digits_end);
    if num.is_empty() || num.len() > 20 {
        return Err(WHY);
    }
    let mul: u64 = match unit {
        "" | "b" => 1,
        "k" => 1_000,
        "kb" => 1 << 10,
        "m" => 1_000_000,
        "mb" => 1 << 20,
        "g" => 1_000_000_000,
        "gb" => 1 << 30,
        _ => return Err(WHY),
    };
    let n: u64 = num.parse().map_err(|_| WHY)?;
    let bytes = n.checked_mul(mul).ok_or("too large")?;
    match bytes {
        0 => Ok(Setting::Off),
        b if b < MIN_MAXMEMORY => {
            Err("below 1mb: redis would refuse nearly every write (a forgotten unit?)")
        }
        b => Ok(Setting::Bytes(b)),
    }
}

/// cgroup v2 `memory.max`: a byte count, or `max` for none.
pub fn parse_v2_max(text: &str) -> Result<Option<u64>, String> {
    match text.trim() {
        "max" => Ok(None),
        t => t
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("unexpected memory.max {:?}", shorten(t))),
    }
}

/// cgroup v1 `memory.limit_in_bytes`: a byte count, where "unlimited" is a huge number.
pub fn parse_v1_limit(text: &str) -> Result<Option<u64>, String> {
    let t = text.trim();
    match t.parse::<u64>() {
        Ok(n) if n >= V1_UNLIMITED_FROM => Ok(None),
        Ok(n) => Ok(Some(n)),
        // Written as -1 it reads back as the huge value; a negative read is as unlimited.
        Err(_)
            if t.len() > 1 && t.starts_with('-') && t[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(None)
        }
        Err(_) => Err(format!("unexpected memory.limit_in_bytes {:?}", shorten(t))),
    }
}

/// v1 `memory.stat` `hierarchical_memory_limit`: the smallest limit of this cgroup and its
/// ancestors (a limit set on a parent binds too). `None` when absent or unlimited.
pub fn parse_v1_hierarchical(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == "hierarchical_memory_limit")
            .then(|| parse_v1_limit(v).ok().flatten())
            .flatten()
    })
}

/// The `oom_kill <n>` count of v2 `memory.events` or v1 `memory.oom_control`.
pub fn parse_oom_kills(text: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("oom_kill"), Some(n), None) => n.parse().ok(),
            _ => None,
        }
    })
}

/// From /proc/self/cgroup: the v1 memory controller's path, and the v2 (unified) path.
pub fn parse_proc_cgroup(text: &str) -> (Option<String>, Option<String>) {
    let mut v1 = None;
    let mut v2 = None;
    for l in text.lines() {
        let mut parts = l.splitn(3, ':');
        let (Some(id), Some(ctrl), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrl.is_empty() {
            v2 = Some(path.to_string());
        } else if ctrl.split(',').any(|c| c == "memory") {
            v1 = Some(path.to_string());
        }
    }
    (v1, v2)
}

/// One cgroup filesystem mount from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The path inside the hierarchy that is mounted (a container sees its own cgroup as "/"
    /// mounted from root "/docker/<id>" when it shares the host's cgroup namespace).
    pub root: String,
    pub point: PathBuf,
    pub version: Version,
}

/// The v1 memory mount and the cgroup2 mount, if any. mountinfo: `id parent dev root point
/// opts [optional...] - fstype source superopts`, with spaces escaped as `\040`.
pub fn parse_mountinfo(text: &str) -> (Option<Mount>, Option<Mount>) {
    let mut v1 = None;
    let mut v2 = None;
    for l in text.lines() {
        let Some((left, right)) = l.split_once(" - ") else {
            continue;
        };
        let f: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if f.len() < 5 || r.len() < 3 {
            continue;
        }
        let mount = |version| Mount {
            root: unescape(f[3]),
            point: PathBuf::from(unescape(f[4])),
            version,
        };
        match r[0] {
            "cgroup" if r[2].split(',').any(|o| o == "memory") => {
                v1.get_or_insert_with(|| mount(Version::V1));
            }
            "cgroup2" => {
                v2.get_or_insert_with(|| mount(Version::V2));
            }
            _ => {}
        }
    }
    (v1, v2)
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The directory of `path` (from /proc/self/cgroup) under a mount of its hierarchy. A path
/// outside the mounted root (a cgroup namespace shows "/" while the mount's root is the
/// container's cgroup, or the reverse) means the mount point itself is our cgroup.
pub fn resolve(mount: &Mount, path: &str) -> PathBuf {
    let root = mount.root.trim_end_matches('/');
    let rel = if root.is_empty() {
        Some(path)
    } else {
        path.strip_prefix(root)
            .filter(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    match rel.map(|r| r.trim_start_matches('/')) {
        Some(r) if !r.is_empty() && !r.split('/').any(|c| c == "..") => mount.point.join(r),
        _ => mount.point.clone(),
    }
}

/// Our memory cgroup: the v1 memory controller when it is mounted (hybrid hosts mount an empty
/// cgroup2 too), else the unified v2 hierarchy.
pub fn find_cgroup(mountinfo: &str, proc_cgroup: &str) -> Option<Cgroup> {
    let (m1, m2) = parse_mountinfo(mountinfo);
    let (p1, p2) = parse_proc_cgroup(proc_cgroup);
    if let (Some(m), Some(p)) = (&m1, &p1) {
        return Some(Cgroup {
            version: Version::V1,
            dir: resolve(m, p),
        });
    }
    match (&m2, &p2) {
        (Some(m), Some(p)) => Some(Cgroup {
            version: Version::V2,
            dir: resolve(m, p),
        }),
        _ => None,
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

/// Reads our cgroup's limit. Never fails: a host without cgroups, or unreadable files, give no
/// limit (with a note saying why).
pub fn detect() -> Detected {
    let read = |p: &Path| std::fs::read_to_string(p);
    let (Ok(mi), Ok(pc)) = (
        read(Path::new("/proc/self/mountinfo")),
        read(Path::new("/proc/self/cgroup")),
    ) else {
        return Detected {
            note: Some("cannot read /proc/self/mountinfo or /proc/self/cgroup".into()),
            ..Detected::default()
        };
    };
    let Some(cg) = find_cgroup(&mi, &pc) else {
        return Detected {
            note: Some("no memory cgroup mounted".into()),
            ..Detected::default()
        };
    };
    let limit = read(&cg.limit_file())
        .map_err(|e| format!("cannot read {}: {e}", cg.limit_file().display()))
        .and_then(|t| match cg.version {
            Version::V1 => parse_v1_limit(&t),
            Version::V2 => parse_v2_max(&t),
        });
    let (limit, note) = match limit {
        Ok(l) => (l, None),
        Err(e) => (None, Some(e)),
    };
    // v1: a parent's limit binds too, and it is visible here even when our own is unlimited.
    let limit = match cg.version {
        Version::V1 => {
            let h = read(&cg.dir.join("memory.stat"))
                .ok()
                .and_then(|s| parse_v1_hierarchical(&s));
            match (limit, h) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        Version::V2 => limit,
    };
    Detected {
        cgroup: Some(cg),
        limit,
        note,
    }
}

/// Was a child that died by `signal` killed by the OOM killer? Only a SIGKILL, and only when the
/// cgroup's count rose since the child started: the count alone could be a fork child of redis
/// (an AOF rewrite killed, redis itself alive), the signal alone an operator's `kill -9`.
pub fn oom_killed(signal: Option<i32>, before: Option<u64>, now: Option<u64>) -> bool {
    matches!((signal, before, now), (Some(libc::SIGKILL), Some(b), Some(n)) if n > b)
}

/// The cgroup's OOM-kill count now, if it can be read.
pub fn oom_kills(cg: &Cgroup) -> Option<u64> {
    std::fs::read_to_string(cg.oom_file())
        .ok()
        .and_then(|t| parse_oom_kills(&t))
}

impl fmt::Display for Detected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = |c: &Cgroup| match c.version {
            Version::V1 => "v1",
            Version::V2 => "v2",
        };
        match (&self.cgroup, self.limit) {
            (Some(c), Some(l)) => write!(
                f,
                "limit {l} ({}), cgroup {} {}",
                human(l),
                v(c),
                c.dir.display()
            )?,
            (Some(c), None) => write!(f, "no limit, cgroup {} {}", v(c), c.dir.display())?,
            (None, _) => f.write_str("no limit, no memory cgroup")?,
        }
        if let Some(n) = &self.note {
            write!(f, " ({n})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_max() {
        let cases: &[(&str, Result<Option<u64>, ()>)] = &[
            ("max\n", Ok(None)),
            ("1073741824\n", Ok(Some(1 << 30))),
            ("0\n", Ok(Some(0))),
            ("18446744073709551615", Ok(Some(u64::MAX))),
            ("", Err(())),
            ("12k", Err(())),
            ("max max", Err(())),
            ("-1", Err(())),
            ("\u{fffd}garbage", Err(())),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_v2_max(text).map_err(|_| ()), want, "{text:?}");
        }
    }

    #[test]
    fn v1_limit() {
        let cases: &[(&str, Result<Option<u64>, ()>)] = &[
            ("9223372036854771712\n", Ok(None)),
            ("9223372036854775807", Ok(None)),
            ("18446744073709551615", Ok(None)),
            ("4611686018427387904", Ok(None)),
            ("4611686018427387903", Ok(Some((1 << 62) - 1))),
            ("268435456\n", Ok(Some(1 << 28))),
            ("-1", Ok(None)),
            ("max", Err(())),
            ("99999999999999999999999", Err(())),
            ("", Err(())),
            ("-", Err(())),
            ("1 2", Err(())),
        ];
        for (text, want) in cases {
            assert_eq!(&parse_v1_limit(text).map_err(|_| ()), want, "{text:?}");
        }
    }

    #[test]
    fn v1_hierarchical_and_oom_counts() {
        let stat = "cache 0\nrss 4096\nhierarchical_memory_limit 536870912\ntotal_rss 4096\n";
        assert_eq!(parse_v1_hierarchical(stat), Some(1 << 29));
        assert_eq!(
            parse_v1_hierarchical("hierarchical_memory_limit 9223372036854771712\n"),
            None
        );
        assert_eq!(parse_v1_hierarchical("rss 1\n"), None);
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            Some(3)
        );
        assert_eq!(
            parse_oom_kills("low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n"),
            Some(2)
        );
        // Kernels before 4.13 have no oom_kill field in v1's oom_control.
        assert_eq!(parse_oom_kills("oom_kill_disable 0\nunder_oom 0\n"), None);
        assert_eq!(parse_oom_kills("oom_kill x\n"), None);
    }

    #[test]
    fn maxmemory_setting_in_redis_units() {
        let cases: &[(&str, Result<Setting, ()>)] = &[
            ("0", Ok(Setting::Off)),
            ("1048576", Ok(Setting::Bytes(1 << 20))),
            ("512mb", Ok(Setting::Bytes(512 << 20))),
            ("512MB", Ok(Setting::Bytes(512 << 20))),
            ("1gb", Ok(Setting::Bytes(1 << 30))),
            ("1G", Ok(Setting::Bytes(1_000_000_000))),
            ("2m", Ok(Setting::Bytes(2_000_000))),
            ("2048kb", Ok(Setting::Bytes(2 << 20))),
            ("3000k", Ok(Setting::Bytes(3_000_000))),
            ("2000000b", Ok(Setting::Bytes(2_000_000))),
            ("40%", Ok(Setting::Percent(40))),
            ("100%", Ok(Setting::Percent(100))),
            ("0%", Err(())),
            ("101%", Err(())),
            ("+40%", Err(())),
            ("40.5%", Err(())),
            ("%", Err(())),
            ("1.5gb", Err(())),
            ("1GiB", Err(())),
            ("100", Err(())),
            ("1kb", Err(())),
            ("", Err(())),
            ("mb", Err(())),
            ("-1", Err(())),
            (" 1gb", Err(())),
            ("1gb\nmaxmemory 0", Err(())),
            ("99999999999gb", Err(())),
            ("999999999999999999999", Err(())),
        ];
        for (v, want) in cases {
            assert_eq!(&parse_setting(v).map_err(|_| ()), want, "{v:?}");
        }
    }

    #[test]
    fn choice_table() {
        let gib = 1u64 << 30;
        let cases: &[(Setting, Option<u64>, bool, Choice)] = &[
            (
                Setting::Auto,
                Some(gib),
                false,
                Choice::Derived {
                    bytes: gib * 30 / 100,
                    limit: gib,
                    percent: DEFAULT_PERCENT,
                },
            ),
            (Setting::Auto, Some(gib), true, Choice::BaseFile),
            (Setting::Auto, None, false, Choice::NoLimit),
            (Setting::Auto, None, true, Choice::BaseFile),
            (Setting::Off, Some(gib), false, Choice::Off),
            (Setting::Off, Some(gib), true, Choice::Off),
            (
                Setting::Bytes(5 << 20),
                Some(gib),
                true,
                Choice::Operator(5 << 20),
            ),
            (
                Setting::Bytes(5 << 20),
                None,
                false,
                Choice::Operator(5 << 20),
            ),
            (
                Setting::Percent(40),
                Some(1000 << 20),
                true,
                Choice::Derived {
                    bytes: 400 << 20,
                    limit: 1000 << 20,
                    percent: 40,
                },
            ),
            (Setting::Percent(40), None, false, Choice::NoLimit),
            (
                Setting::Auto,
                Some((1 << 62) - 1),
                false,
                Choice::Derived {
                    bytes: (((1u128 << 62) - 1) * 30 / 100) as u64,
                    limit: (1 << 62) - 1,
                    percent: DEFAULT_PERCENT,
                },
            ),
        ];
        for (s, l, base, want) in cases {
            assert_eq!(choose(*s, *l, *base), *want, "{s:?} {l:?} {base}");
        }
        assert_eq!(Choice::Off.line(), None);
        assert_eq!(Choice::Operator(7).line(), Some(7));
    }

    #[test]
    fn base_file_directive() {
        assert!(sets_directive(
            "appendonly yes\nmaxmemory 100mb\n",
            "maxmemory"
        ));
        assert!(sets_directive("  MAXMEMORY 1gb\n", "maxmemory"));
        assert!(!sets_directive(
            "# maxmemory 1gb\nmaxmemory-policy allkeys-lru\n",
            "maxmemory"
        ));
        assert!(!sets_directive("", "maxmemory"));
    }

    #[test]
    fn proc_cgroup_lines() {
        let v1 = "9:name=systemd:/\n4:memory:/process_api/7618\n3:cpuset:/\n0::/\n";
        assert_eq!(
            parse_proc_cgroup(v1),
            (Some("/process_api/7618".into()), Some("/".into()))
        );
        assert_eq!(
            parse_proc_cgroup("5:cpuacct,memory:/docker/abc\n"),
            (Some("/docker/abc".into()), None)
        );
        assert_eq!(
            parse_proc_cgroup("0::/kubepods.slice/pod1/cri-x.scope\n"),
            (None, Some("/kubepods.slice/pod1/cri-x.scope".into()))
        );
        assert_eq!(parse_proc_cgroup("garbage\n\n::\n"), (None, None));
    }

    const MI_HOST_V1: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    // Docker on cgroup v1 (host cgroup namespace): the container's cgroup is bind-mounted.
    const MI_DOCKER_V1: &str = "\
620 612 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid,nodev,noexec,relatime master:16 - cgroup cgroup rw,memory
";
    const MI_V2: &str = "\
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn cgroup_directory_is_resolved() {
        let c = find_cgroup(MI_HOST_V1, "4:memory:/process_api/7618\n0::/\n").expect("v1");
        assert_eq!(c.version, Version::V1);
        assert_eq!(c.dir, Path::new("/sys/fs/cgroup/memory/process_api/7618"));
        let c = find_cgroup(MI_DOCKER_V1, "4:memory:/docker/abc\n").expect("docker v1");
        assert_eq!(c.dir, Path::new("/sys/fs/cgroup/memory"));
        // A private cgroup namespace: "/" inside, the mount's root is ours too.
        let c = find_cgroup(MI_DOCKER_V1, "4:memory:/\n").expect("cgroupns v1");
        assert_eq!(c.dir, Path::new("/sys/fs/cgroup/memory"));
        let c = find_cgroup(MI_V2, "0::/\n").expect("v2 in a container");
        assert_eq!(
            (c.version, c.dir.as_path()),
            (Version::V2, Path::new("/sys/fs/cgroup"))
        );
        let c = find_cgroup(MI_V2, "0::/user.slice/x.scope\n").expect("v2 on a host");
        assert_eq!(c.dir, Path::new("/sys/fs/cgroup/user.slice/x.scope"));
        // Paths that climb out of the mount stay at the mount point.
        let c = find_cgroup(MI_V2, "0::/../../etc\n").expect("v2");
        assert_eq!(c.dir, Path::new("/sys/fs/cgroup"));
        let c = find_cgroup(MI_DOCKER_V1, "4:memory:/docker/abcdef\n").expect("prefix only");
        assert_eq!(c.dir, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(find_cgroup("", "0::/\n"), None);
        assert_eq!(find_cgroup(MI_HOST_V1, ""), None);
        assert_eq!(find_cgroup("garbage\n - \n", "garbage"), None);
        let (m, _) =
            parse_mountinfo("1 2 0:3 / /sys/fs/cgroup/mem\\040ory rw - cgroup cgroup rw,memory\n");
        assert_eq!(
            m.map(|m| m.point),
            Some(PathBuf::from("/sys/fs/cgroup/mem ory"))
        );
    }

    #[test]
    fn oom_kill_attribution() {
        let k = Some(libc::SIGKILL);
        type Case = (Option<i32>, Option<u64>, Option<u64>, bool);
        let cases: &[Case] = &[
            (k, Some(0), Some(1), true),
            (k, Some(4), Some(6), true),
            (k, Some(1), Some(1), false),
            (k, None, Some(1), false),
            (k, Some(1), None, false),
            (Some(libc::SIGTERM), Some(0), Some(1), false),
            (Some(libc::SIGSEGV), Some(0), Some(1), false),
            (None, Some(0), Some(1), false),
        ];
        for (sig, before, now, want) in cases {
            assert_eq!(
                oom_killed(*sig, *before, *now),
                *want,
                "{sig:?} {before:?} {now:?}"
            );
        }
    }

    #[test]
    fn display_for_render() {
        assert_eq!(human(1 << 30), "1.0 GiB");
        assert_eq!(human(268_435_456), "256.0 MiB");
        assert_eq!(human(1000), "1000 B");
        let c = choose(Setting::Auto, Some(1 << 30), false);
        assert_eq!(
            c.to_string(),
            "maxmemory 322122547 (307.2 MiB, 30 % of the limit)"
        );
    }
}
