//! PID 1's side of the proxy: one more child, `redisha-init proxy` (this same binary), started
//! with the other two and restarted on its own policy. The data path lives in that process, never
//! in PID 1's: a connection storm or a bug there costs the proxy, not the pod's supervisor (its
//! RSS guard stays as it is).
//!
//! Its restart policy is not the data node's: a proxy that keeps failing must not stop a pod whose
//! redis and sentinel serve, so it is restarted for as long as the pod lives, with the usual
//! doubling backoff capped at `MAX_BACKOFF`.

use std::ffi::OsString;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::time::Instant;

use crate::config::{Config, LogFormat};
use crate::logs::LogSink;
use crate::supervise::child;
use crate::supervise::policy::{self, Exit, OnExit, RestartPolicy};

const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// After the pod's other children are gone: how long the proxy gets to exit after SIGTERM.
const STOP_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    Running { pid: Pid, since: Instant },
    Backoff { at: Instant },
    Done,
}

pub struct ProxyChild {
    argv: Vec<OsString>,
    policy: RestartPolicy,
    state: State,
    restarts: u32,
}

impl ProxyChild {
    /// None when `REDISHA_MASTER_PROXY_PORT` is not set.
    pub fn new(cfg: &Config) -> Option<ProxyChild> {
        cfg.proxy.as_ref()?;
        Some(ProxyChild {
            // This very binary, even if its file was replaced or removed since we started.
            argv: vec!["/proc/self/exe".into(), "proxy".into()],
            policy: RestartPolicy {
                budget: u32::MAX,
                max_backoff: MAX_BACKOFF,
                ..cfg.restart
            },
            state: State::Idle,
            restarts: 0,
        })
    }

    pub fn start(&mut self) {
        if self.state == State::Done {
            return;
        }
        // The passwords stay in its environment: it asks the sentinels itself. Its output goes
        // straight to ours (it formats its lines as PID 1 does, one write each): no log pump
        // threads in PID 1 for it, whose stacks would count in PID 1's RSS.
        let sink = LogSink {
            format: LogFormat::Raw,
        };
        match child::spawn("proxy", &self.argv, &sink, &[]) {
            Ok(pid) => {
                tracing::info!(child = "proxy", pid = pid.as_raw(), "spawned");
                self.state = State::Running {
                    pid,
                    since: Instant::now(),
                };
            }
            Err(e) => {
                tracing::error!(child = "proxy", error = %e, "spawn failed");
                self.backoff(Duration::ZERO, Exit::Code(crate::exit::NOEXEC));
            }
        }
    }

    /// Whether `pid` was the proxy (then its exit is handled here). While the pod stops it is not
    /// restarted.
    pub fn on_exit(&mut self, pid: Pid, how: Exit, stopping: bool) -> bool {
        let State::Running { pid: p, since } = self.state else {
            return false;
        };
        if p != pid {
            return false;
        }
        child::signal_group(pid, Some(Signal::SIGKILL));
        if stopping {
            tracing::info!(
                child = "proxy",
                pid = pid.as_raw(),
                status = how.as_code(),
                "child stopped"
            );
            self.state = State::Done;
            return true;
        }
        self.backoff(since.elapsed(), how);
        true
    }

    fn backoff(&mut self, uptime: Duration, how: Exit) {
        match policy::on_unexpected_exit(&self.policy, self.restarts, uptime, how) {
            OnExit::Restart { delay, attempt } => {
                tracing::warn!(
                    child = "proxy",
                    status = how.as_code(),
                    uptime_ms = uptime.as_millis() as u64,
                    restart_in_ms = delay.as_millis() as u64,
                    attempt,
                    "child exited unexpectedly; restarting"
                );
                self.restarts = attempt;
                self.state = State::Backoff {
                    at: Instant::now() + delay,
                };
            }
            // Not reached with an unbounded budget; kept total.
            OnExit::GiveUp { .. } => self.state = State::Done,
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Backoff { at } => Some(at),
            _ => None,
        }
    }

    pub fn on_timer(&mut self, now: Instant, stopping: bool) {
        if let State::Backoff { at } = self.state {
            if stopping {
                self.state = State::Done;
            } else if at <= now {
                self.start();
            }
        }
    }

    /// After every other child is gone: SIGTERM, a short wait, SIGKILL. The reaper no longer
    /// runs, so the status is collected here.
    pub async fn stop(&mut self) {
        let State::Running { pid, .. } = self.state else {
            self.state = State::Done;
            return;
        };
        self.state = State::Done;
        child::signal_group(pid, Some(Signal::SIGTERM));
        let until = Instant::now() + STOP_WAIT;
        loop {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if Instant::now() < until => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Ok(WaitStatus::StillAlive) => {
                    child::signal_group(pid, Some(Signal::SIGKILL));
                    let _ = waitpid(pid, None);
                    break;
                }
                _ => break,
            }
        }
    }
}
