//! Size guards of what ships (issue 11): `cargo build --release` gives a static binary under
//! 4 MiB stripped, and PID 1's memory after start-up (real redis-server and sentinel) is under
//! 3 MiB resident, under 1 MiB of it anonymous, with its Prometheus endpoint on and scraped
//! (issue 33). Sizes, not times, so a busy CI machine cannot
//! make them flaky. The release binary is built here (`cargo test` builds only the debug one);
//! REDISHA_RELEASE_BINARY names a prebuilt one instead. The throughput and the full memory table
//! are benches/pid1.py's (BENCHMARKS.md).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

const MAX_BINARY: u64 = 4 << 20;
const MAX_ANON_KIB: u64 = 1024;
const MAX_RSS_KIB: u64 = 3072;

/// target/release/redisha-init, built once per test process with the README's command.
fn release_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("REDISHA_RELEASE_BINARY") {
            return PathBuf::from(p);
        }
        // Cargo says where the binary is (a target dir set anywhere is honoured): the
        // compiler-artifact message of the redisha-init bin names its executable.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // Without what `cargo test` sets for this test process: ring's build depends on
        // CARGO_MANIFEST_DIR, so an inherited one would make this build differ from a plain
        // `cargo build --release` and each would rebuild everything after the other.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("CARGO_PKG_")
                || k.starts_with("CARGO_BIN_EXE_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "CARGO_BIN_NAME",
                    "CARGO_RUSTC_CURRENT_DIR",
                    "OUT_DIR",
                ]
                .contains(&k.as_ref())
            {
                cmd.env_remove(k.as_ref());
            }
        }
        let out = cmd
            .args([
                "build",
                "--release",
                "--bin",
                "redisha-init",
                "--quiet",
                "--message-format=json",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build --release");
        assert!(out.status.success(), "cargo build --release failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "redisha-init")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo names the redisha-init executable")
    })
}

/// The ELF program headers of `bin`: (type, flags) of each.
fn program_headers(bin: &Path) -> Vec<(u32, u32)> {
    let b = std::fs::read(bin).expect("read binary");
    assert!(
        b.len() > 64 && &b[..4] == b"\x7fELF" && b[4] == 2 && b[5] == 1,
        "ELF64 LE"
    );
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    let phoff = u64::from_le_bytes(b[32..40].try_into().expect("8 bytes")) as usize;
    let (size, count) = (u16_at(54), u16_at(56));
    (0..count)
        .map(|i| phoff + i * size)
        .map(|o| (u32_at(o), u32_at(o + 4)))
        .collect()
}

#[test]
fn release_binary_is_static_and_small() {
    let bin = release_binary();
    const PT_INTERP: u32 = 3;
    let ph = program_headers(bin);
    // Static: no program interpreter (ld.so). A static-pie keeps PT_DYNAMIC for its own
    // relocations; a dynamic executable has both.
    assert!(
        !ph.iter().any(|(t, _)| *t == PT_INTERP),
        "{} is dynamically linked (PT_INTERP); .cargo/config.toml makes `cargo build` static",
        bin.display()
    );
    // `strip = true` in the release profile: the file as built is the stripped size.
    let b = std::fs::read(bin).expect("read binary");
    let has_symtab = {
        let shoff = u64::from_le_bytes(b[40..48].try_into().expect("8 bytes")) as usize;
        let (size, count) = (
            u16::from_le_bytes([b[58], b[59]]) as usize,
            u16::from_le_bytes([b[60], b[61]]) as usize,
        );
        (0..count).any(|i| {
            let o = shoff + i * size;
            o + 8 <= b.len() && u32::from_le_bytes([b[o + 4], b[o + 5], b[o + 6], b[o + 7]]) == 2
        })
    };
    assert!(!has_symtab, "release binary is not stripped (SHT_SYMTAB)");
    let len = b.len() as u64;
    eprintln!(
        "release binary: {len} bytes ({:.2} MiB), program headers {:?}",
        len as f64 / (1 << 20) as f64,
        ph.iter().map(|p| p.0).collect::<Vec<_>>()
    );
    assert!(
        len < MAX_BINARY,
        "stripped release binary is {len} bytes, the limit is {MAX_BINARY} (4 MiB)"
    );
}

/// The release binary as PID 1 of its own PID namespace; the whole tree is killed on drop.
struct Pid1 {
    unshare: Child,
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        kill_tree(self.unshare.id() as i32);
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn kib(pid: i32, key: &str) -> u64 {
    proc_field(pid, key)
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or_else(|| panic!("{key} of pid {pid}"))
}

#[test]
fn pid1_anonymous_memory_after_start_up() {
    let bin = release_binary();
    let dir = tempdir();
    let port = free_port();
    let metrics = free_port();
    let log = std::fs::File::create(dir.path().join("log")).expect("log");
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"])
        .arg(bin)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(base_env(&dir.path().join("state"), port))
        .env("REDISHA_ROLE", "master")
        .env("REDISHA_LOG_FORMAT", "text")
        .env("REDISHA_METRICS_PORT", metrics.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log);
    let init = Pid1 {
        unshare: cmd.spawn().expect("spawn unshare"),
    };
    let output = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    let pid1 = wait_for(Duration::from_secs(5), || {
        children_of(init.unshare.id() as i32).into_iter().next()
    })
    .expect("PID 1 under unshare");
    assert!(
        wait_for(Duration::from_secs(15), || (ping(port) && ping(port + 1))
            .then_some(()))
        .is_some(),
        "redis and sentinel answer: {}",
        output()
    );
    // As benches/pid1.py measures it: settled, both children serving; and scraped, as
    // Prometheus does (a scrape builds the exposition and asks the sentinel).
    std::thread::sleep(Duration::from_secs(3));
    for _ in 0..5 {
        let body = scrape(metrics);
        assert!(
            body.starts_with("HTTP/1.0 200 OK\r\n")
                && body.contains("\nredisha_role{role=\"master\"} 1\n"),
            "scrape: {body}\n{}",
            output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (anon, file, rss) = (
        kib(pid1, "RssAnon"),
        kib(pid1, "RssFile"),
        kib(pid1, "VmRSS"),
    );
    eprintln!("PID 1 after start-up: VmRSS {rss} KiB = anon {anon} KiB + file {file} KiB");
    assert!(
        anon < MAX_ANON_KIB,
        "PID 1 RssAnon {anon} KiB after start-up, the limit is {MAX_ANON_KIB} KiB \
         (a preallocated buffer? tracing-appender's default queue was 4 MB; issue 11)\n{}",
        std::fs::read_to_string(format!("/proc/{pid1}/smaps_rollup")).unwrap_or_default()
    );
    // The file-backed part is the binary's text the kernel mapped (64 KiB around each fault): it
    // grows with the text, so a heavier dependency or a PIE/unwinding build shows up here.
    assert!(
        rss < MAX_RSS_KIB,
        "PID 1 VmRSS {rss} KiB after start-up, the limit is {MAX_RSS_KIB} KiB (3 MiB; issue 11)\n{}",
        std::fs::read_to_string(format!("/proc/{pid1}/smaps_rollup")).unwrap_or_default()
    );
}

/// One `GET /metrics` of PID 1's endpoint: the whole answer (status line, headers, body).
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("answer");
    out
}
