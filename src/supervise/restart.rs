//! Unexpected exits while serving: the restart budget (policy.rs decides), the backoff, and the
//! data node's role decision before each restart (Sentinel may have promoted someone else while
//! it was down; a crashed master is failed over first).

use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::time::Instant;

use super::machine::Input;
use super::policy::Exit;
use super::slot::{self, Decided, Next, Start};
use super::{child, Event, Server, SlotState, Supervisor};
use crate::discover::{self, Decision, Patience, Undecided};
use crate::state::Prior;
use crate::{handover, state};

impl Supervisor {
    pub(super) fn on_child_exit(&mut self, i: usize, pid: Pid, how: Exit) {
        let which = self.slots[i].which;
        if which == Server::Redis && how.as_code() == 0 {
            // A clean shutdown: its AOF holds every write it acknowledged. But a master stopped
            // without a handover may be failed over in its absence, so the next boot must know.
            if self.stop.stopping() && !self.handed_over {
                if let Err(e) = state::mark_stopped_without_handover(&self.cfg) {
                    tracing::warn!(error = %e, "cannot record in the state directory that the data node stopped without a handover");
                }
            } else {
                state::clear_data_node_running(&self.cfg);
            }
        }
        let uptime = match self.slots[i].state {
            SlotState::Running { since, .. } => since.elapsed(),
            _ => Duration::ZERO,
        };
        let reconfiguring = which == Server::Sentinel && self.sentinel_rerender;
        let restarts = self.slots[i].restarts;
        let next = slot::on_exit(
            self.kind(which),
            self.stop.stopping(),
            reconfiguring,
            restarts,
            uptime,
            how,
            &self.policy,
        );
        if next == Next::Stopped {
            tracing::info!(
                child = which.name(),
                pid = pid.as_raw(),
                status = how.as_code(),
                "child stopped"
            );
            self.slots[i].state = SlotState::Done;
            self.step(Input::Exited(which), Some(pid));
            return;
        }
        child::signal_group(pid, Some(Signal::SIGKILL));
        self.note_oom_kill(which, pid, how);
        if next == Next::RespawnNow {
            self.sentinel_rerender = false;
            // A deliberate reconfiguration, not a failure; and the new monitor line comes from the
            // decision, not from what the old sentinel wrote.
            self.slots[i].restarts = 0;
            tracing::info!(
                pid = pid.as_raw(),
                "sentinel stopped for its new configuration; starting it again"
            );
            self.slots[i].state = SlotState::Done;
            self.spawn_now(Server::Sentinel);
            return;
        }
        let Some((delay, attempt, fail_over_first)) = self.count(which, how, next) else {
            return;
        };
        tracing::warn!(
            child = which.name(),
            pid = pid.as_raw(),
            status = how.as_code(),
            uptime_ms = uptime.as_millis() as u64,
            restart_in_ms = delay.as_millis() as u64,
            attempt,
            "child exited unexpectedly; restarting"
        );
        if fail_over_first {
            // A crashed master is failed over first (handover::after_crash), during the
            // backoff; the restart then follows the usual role decision.
            self.decide_redis_after_crash(delay);
        } else {
            self.slots[i].state = SlotState::Backoff {
                at: Instant::now() + delay,
            };
        }
    }

    /// The slot rules' kind of a child (slot.rs).
    fn kind(&self, which: Server) -> slot::Kind {
        slot::Kind {
            decides_role: which == Server::Redis,
            fails_over_on_crash: which == Server::Redis && !self.cfg.strict_durability,
        }
    }

    /// Carries out a failure's verdict: the restart count kept, or the pod stopped when the
    /// budget is spent. Some((backoff, attempt, fail over first)) to restart after.
    fn count(&mut self, which: Server, how: Exit, next: Next) -> Option<(Duration, u32, bool)> {
        let i = which as usize;
        match next {
            Next::Restart {
                delay,
                attempt,
                fail_over_first,
            } => {
                crate::metrics::restart(which, how);
                self.slots[i].restarts = attempt;
                Some((delay, attempt, fail_over_first))
            }
            Next::GiveUp { code } => {
                crate::metrics::budget_spent(which);
                tracing::error!(
                    child = which.name(),
                    status = how.as_code(),
                    "restart budget spent; stopping the pod"
                );
                self.slots[i].state = SlotState::Done;
                self.gave_up = Some(code);
                self.step(Input::GaveUp, None);
                None
            }
            Next::Stopped | Next::RespawnNow => None,
        }
    }

    /// A start that failed before a process ran counts like an immediate exit with `code`.
    pub(super) fn spawn_failed(&mut self, which: Server, code: i32) {
        let how = Exit::Code(code);
        let next = slot::on_failure(
            self.slots[which as usize].restarts,
            Duration::ZERO,
            how,
            &self.policy,
        );
        if let Some((delay, attempt, _)) = self.count(which, how, next) {
            tracing::info!(
                child = which.name(),
                restart_in_ms = delay.as_millis() as u64,
                attempt,
                "restarting"
            );
            self.slots[which as usize].state = SlotState::Backoff {
                at: Instant::now() + delay,
            };
        }
    }

    /// Starts a child. The data node's role is decided again first (Sentinel may have promoted
    /// someone else while it was down); the decision arrives as an event, so signals stay live.
    pub(super) fn start(&mut self, which: Server) {
        let restarts = self.slots[which as usize].restarts;
        match slot::on_start(self.kind(which), self.stop.stopping(), restarts) {
            Start::Nothing => {}
            Start::DecideFirst => {
                let prior = state::read_prior(&self.cfg);
                self.decide_redis(prior, Patience::Budget);
            }
            Start::Spawn => self.spawn_now(which),
        }
    }

    /// A data node that crashed: fail it over if it was the master, wait out the rest of the
    /// backoff, then decide its role as for any restart.
    pub(super) fn decide_redis_after_crash(&mut self, delay: Duration) {
        self.slots[0].state = SlotState::Deciding;
        let cfg = self.cfg.clone();
        let tx = self.tx.clone();
        let until = Instant::now() + delay;
        self.task = Some(tokio::spawn(async move {
            let what = handover::after_crash(&cfg).await;
            tracing::warn!(outcome = %what, "data node crashed");
            tokio::time::sleep_until(until).await;
            let prior = state::read_prior(&cfg);
            let d = discover::decide(&cfg, true, Patience::Budget, prior.as_ref()).await;
            let _ = tx.send(Event::Decided(d));
        }));
    }

    /// The data node waits for a role decision that runs as a task (asking our own sentinel
    /// too); the answer comes back as an event, so signals stay live meanwhile.
    pub(super) fn decide_redis(&mut self, prior: Option<Prior>, patience: Patience) {
        self.slots[0].state = SlotState::Deciding;
        let cfg = self.cfg.clone();
        let tx = self.tx.clone();
        self.task = Some(tokio::spawn(async move {
            let d = discover::decide(&cfg, true, patience, prior.as_ref()).await;
            let _ = tx.send(Event::Decided(d));
        }));
    }

    pub(super) fn on_decided(&mut self, d: Result<Decision, Undecided>) {
        self.task = None;
        let waiting = matches!(self.slots[0].state, SlotState::Deciding);
        let d = match (slot::on_decided(waiting, d.is_ok()), d) {
            (Decided::Ignore, _) => return,
            (Decided::Spawn, Ok(d)) => d,
            (_, Ok(_)) => return,
            (_, Err(why)) => {
                // Counts as a failed start: back off and try again, give up when the budget is spent.
                tracing::error!(reason = %why, "cannot decide the role for the restart");
                self.spawn_failed(Server::Redis, crate::exit::TEMPFAIL);
                return;
            }
        };
        tracing::info!(role = %d.role, master = %d.master, reason = %d.reason, "role decided");
        self.decision = d;
        self.spawn_now(Server::Redis);
        // The sentinel that ran before the decision monitors what this pod knew last, with
        // failovers held off: restart it with the real configuration.
        if self.early.take().is_some() {
            if let SlotState::Running { .. } = self.slots[1].state {
                self.sentinel_rerender = true;
                self.term(Server::Sentinel);
            }
        }
    }

    /// Our sentinel keeps a configuration the majority left (follow::own_sentinel_stale): stop
    /// it and start it again monitoring `master`. Its identity and epochs come from its own file
    /// (render::kept_state), so it rejoins as the same voter, at the majority's epoch.
    pub(super) fn restart_stale_sentinel(&mut self, master: crate::config::Endpoint) {
        let running = matches!(self.slots[1].state, SlotState::Running { .. });
        let stopping = self.stop.stopping();
        if !slot::may_reconfigure(
            running,
            stopping,
            self.early.is_some(),
            self.sentinel_rerender,
        ) {
            return;
        }
        tracing::warn!(master = %master, "restarting our sentinel to monitor the master the others name");
        crate::metrics::stale_sentinel_repaired();
        self.sentinel_monitor = Some(master);
        self.sentinel_rerender = true;
        self.term(Server::Sentinel);
    }

    /// One line when the kernel's OOM killer took a child: the limit and maxmemory are what the
    /// operator needs to act (raise the limit, or lower REDISHA_MAXMEMORY). The restart follows
    /// the usual policy.
    fn note_oom_kill(&mut self, which: Server, pid: Pid, how: Exit) {
        let Some(cg) = &self.cfg.memory.cgroup else {
            return;
        };
        let now = crate::memory::oom_kills(cg);
        let signal = match how {
            Exit::Signal(s) => Some(s),
            Exit::Code(_) => None,
        };
        if crate::memory::oom_killed(signal, self.oom_kills, now) {
            crate::metrics::oom_kill(which);
            let choice =
                crate::render::maxmemory_choice(&self.cfg, self.decision.role, &self.bases);
            let limit = self
                .cfg
                .memory
                .limit
                .map_or("none".to_string(), crate::memory::human);
            tracing::error!(
                child = which.name(),
                pid = pid.as_raw(),
                limit = %limit,
                maxmemory = %choice,
                oom_kills = now.unwrap_or(0),
                "child killed by the kernel's OOM killer: the container reached its memory limit"
            );
        }
        self.oom_kills = now;
    }
}
