//! Starting a child and signalling it. Exit statuses are NOT collected here: the reaper owns them.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::logs::{self, LogSink};

/// Spawns `argv` in its own process group with stdin from /dev/null and stdout/stderr piped to the
/// log forwarder. Returns the pid, which is also the process group id.
pub fn spawn(
    name: &'static str,
    argv: &[OsString],
    sink: &LogSink,
    env_remove: &[&str],
) -> io::Result<Pid> {
    let (exe, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let mut cmd = Command::new(exe);
    let raw = sink.format == crate::config::LogFormat::Raw;
    let out = || {
        if raw {
            Stdio::inherit()
        } else {
            Stdio::piped()
        }
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out())
        .stderr(out())
        .process_group(0);
    for v in env_remove {
        cmd.env_remove(v);
    }
    // SAFETY: only async-signal-safe calls (rt_sigaction, sigprocmask) between fork and exec.
    // std already clears the mask; dispositions the parent *ignored* survive exec, so every
    // signal is set back to its default. The raw syscall reaches the real-time signals glibc
    // reserves (32, 33) too; an all-zero kernel sigaction is SIG_DFL with no flags.
    unsafe {
        cmd.pre_exec(|| {
            let dfl = [0u64; 4];
            for sig in 1..=64 {
                if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                    libc::syscall(
                        libc::SYS_rt_sigaction,
                        sig,
                        dfl.as_ptr(),
                        std::ptr::null_mut::<u64>(),
                        8usize,
                    );
                }
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            // Not PID 1 (a laptop, a test): if redisha-init is killed, its children get SIGTERM
            // (a clean shutdown with its save) instead of living on as orphans that hold the
            // ports. The spawning thread is the main thread, which lives as long as we do.
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            );
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    if let Some(out) = child.stdout.take() {
        logs::pump(name, "stdout", out.into(), *sink);
    }
    if let Some(err) = child.stderr.take() {
        logs::pump(name, "stderr", err.into(), *sink);
    }
    // Dropping std's Child neither waits nor kills: the reaper collects the status.
    drop(child);
    Ok(pid)
}

/// Signals a live child's main process. Callers guarantee the pid is not reaped yet (a zombie
/// still holds its pid, so it cannot have been reused).
pub fn signal_pid(pid: Pid, sig: Signal) {
    match kill(pid, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid = pid.as_raw(), signal = %sig, error = %e, "signal failed"),
    }
}

/// Signals every process of a group; returns false when the group is empty.
pub fn signal_group(pgid: Pid, sig: Option<Signal>) -> bool {
    match killpg(pgid, sig) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(e) => {
            tracing::warn!(pgid = pgid.as_raw(), error = %e, "group signal failed");
            true
        }
    }
}

/// The server executable to run: the configured one; when that is the default `redis-server`
/// and PATH has none, `valkey-server` (a Valkey image ships no redis-server). The engine is
/// detected, not configured: the first `INFO server` says which one runs.
pub fn find_server(
    exe: &Path,
    path_var: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, (i32, String)> {
    match check_executable(exe, path_var) {
        Err((code, msg)) if code == crate::exit::NOTFOUND && exe == Path::new("redis-server") => {
            check_executable(Path::new("valkey-server"), path_var)
                .map(|_| PathBuf::from("valkey-server"))
                .map_err(|_| (code, msg))
        }
        found => found.map(|_| exe.to_path_buf()),
    }
}

/// How the executable failed a pre-flight check: (exit code, message).
pub fn check_executable(
    exe: &Path,
    path_var: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, (i32, String)> {
    use std::os::unix::ffi::OsStrExt;
    let candidates: Vec<PathBuf> = if exe.as_os_str().as_bytes().contains(&b'/') {
        vec![exe.to_path_buf()]
    } else {
        std::env::split_paths(path_var.unwrap_or_default())
            .map(|d| d.join(exe))
            .collect()
    };
    let mut not_exec = None;
    for c in candidates {
        if let Ok(meta) = std::fs::metadata(&c) {
            if meta.is_file() && nix::unistd::access(&c, nix::unistd::AccessFlags::X_OK).is_ok() {
                return Ok(c);
            }
            not_exec.get_or_insert(c);
        }
    }
    match not_exec {
        Some(c) => Err((
            crate::exit::NOEXEC,
            format!("{} is not executable (REDISHA_REDIS_SERVER)", c.display()),
        )),
        None => {
            Err((
                crate::exit::NOTFOUND,
                format!(
                "{} not found (set REDISHA_REDIS_SERVER or install redis-server; searched PATH={})",
                exe.display(),
                path_var.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default()
            ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn finds_valkey_server_when_redis_server_is_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().as_os_str().to_owned();
        let exe = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, "#!/bin/sh\n").expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        };
        let redis = Path::new("redis-server");
        // Neither: the redis-server error, as before.
        let e = find_server(redis, Some(&path)).expect_err("nothing there");
        assert_eq!(e.0, crate::exit::NOTFOUND);
        assert!(e.1.starts_with("redis-server not found"), "{}", e.1);
        exe("valkey-server");
        assert_eq!(find_server(redis, Some(&path)), Ok("valkey-server".into()));
        // An explicit other name is never replaced.
        let e = find_server(Path::new("redis-server-7.0"), Some(&path)).expect_err("absent");
        assert_eq!(e.0, crate::exit::NOTFOUND);
        exe("redis-server");
        assert_eq!(find_server(redis, Some(&path)), Ok("redis-server".into()));
    }
}
