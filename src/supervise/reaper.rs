//! The one owner of exit statuses. Nothing else in this process may wait for a child: a
//! `waitpid(-1)` elsewhere would steal a status from it: the supervisor would then never learn
//! that its child exited (a second waiter gets the status, the first one ECHILD).

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::policy::Exit;

/// Drains every exited child, ours and reparented orphans alike. SIGCHLDs coalesce, so one signal
/// may stand for many exits: loop until nothing is left to collect.
pub fn reap_all() -> Vec<(Pid, Exit)> {
    let mut out = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => out.push((pid, Exit::Code(code))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => out.push((pid, Exit::Signal(sig as i32))),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            // Stop/continue reports are not requested (no WUNTRACED); keep draining.
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "waitpid failed");
                break;
            }
        }
    }
    out
}
