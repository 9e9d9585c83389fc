//! The serving side of one supervised child as pure rules, like the stop machine (machine.rs):
//! what to do when it exits, when it is due to start, and when the role decision it waited for
//! arrives. restart.rs carries the answers out (signals, tasks, timers, state files); nothing
//! here touches a process, a clock or a socket.
//!
//! A slot runs, exits, and is restarted after a backoff until its budget is spent (given up,
//! the pod stops). Two traits of the child shape that: whether its start waits for a role
//! decision after a failure (the data node: Sentinel may have promoted someone else while it
//! was down), and whether a crash is failed over first, during the backoff (a data node that
//! may have been master, unless strict durability keeps the role for its AOF). A child with
//! neither trait (the sentinel, or any further child) is simply restarted.

use std::time::Duration;

use super::policy::{self, Exit, RestartPolicy};

/// What kind of child a slot holds, for these rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kind {
    /// A restart waits for a role decision (which may fail: a failed start).
    pub decides_role: bool,
    /// A crash is failed over during the backoff before the decision (handover::after_crash).
    pub fails_over_on_crash: bool,
}

/// What the slot does after its process exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The pod is stopping: the exit belongs to the stop sequence (machine.rs).
    Stopped,
    /// It was stopped on purpose for a new configuration: start it again at once, with its
    /// whole budget (a reconfiguration is no failure).
    RespawnNow,
    /// A failure within the budget: restart after `delay`; `attempt` is the new restart count.
    Restart {
        delay: Duration,
        attempt: u32,
        /// Fail the crashed node over and decide its role during the backoff.
        fail_over_first: bool,
    },
    /// The budget is spent: the pod stops and PID 1 exits with `code`.
    GiveUp { code: i32 },
}

/// The slot's process exited. `restarts`: failures counted since it last ran stably.
pub fn on_exit(
    kind: Kind,
    stopping: bool,
    reconfiguring: bool,
    restarts: u32,
    uptime: Duration,
    how: Exit,
    p: &RestartPolicy,
) -> Next {
    if stopping {
        return Next::Stopped;
    }
    if reconfiguring {
        return Next::RespawnNow;
    }
    match on_failure(restarts, uptime, how, p) {
        Next::Restart { delay, attempt, .. } => Next::Restart {
            delay,
            attempt,
            fail_over_first: kind.fails_over_on_crash,
        },
        other => other,
    }
}

/// A failure counted against the budget: an exit, or a start that failed before a process ran
/// (uptime zero; a failed start is never failed over, nothing ran).
pub fn on_failure(restarts: u32, uptime: Duration, how: Exit, p: &RestartPolicy) -> Next {
    match policy::on_unexpected_exit(p, restarts, uptime, how) {
        policy::OnExit::Restart { delay, attempt } => Next::Restart {
            delay,
            attempt,
            fail_over_first: false,
        },
        policy::OnExit::GiveUp { code } => Next::GiveUp { code },
    }
}

/// What a start that is due does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The pod is stopping: nothing starts any more.
    Nothing,
    /// Decide the role first; the decision arrives as an event (`on_decided`).
    DecideFirst,
    Spawn,
}

pub fn on_start(kind: Kind, stopping: bool, restarts: u32) -> Start {
    match (stopping, kind.decides_role && restarts > 0) {
        (true, _) => Start::Nothing,
        (false, true) => Start::DecideFirst,
        (false, false) => Start::Spawn,
    }
}

/// What a role decision that arrives does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decided {
    /// The slot no longer waits for one (a stop cancelled it): drop it.
    Ignore,
    /// No decision: counts as a failed start.
    Failed,
    /// Start with it.
    Spawn,
}

pub fn on_decided(waiting: bool, decided: bool) -> Decided {
    match (waiting, decided) {
        (false, _) => Decided::Ignore,
        (true, false) => Decided::Failed,
        (true, true) => Decided::Spawn,
    }
}

/// Whether a running child may be stopped now to start again with a new configuration: never
/// while the pod stops, while it still runs its pre-decision configuration (that one is
/// replaced once the role is decided anyway), or while such a restart is under way.
pub fn may_reconfigure(running: bool, stopping: bool, early: bool, reconfiguring: bool) -> bool {
    running && !stopping && !early && !reconfiguring
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kind from its two traits: (decides_role, fails_over_on_crash).
    fn kind(t: (bool, bool)) -> Kind {
        Kind {
            decides_role: t.0,
            fails_over_on_crash: t.1,
        }
    }

    fn restart(delay_ms: u64, attempt: u32, fail_over_first: bool) -> Next {
        let delay = Duration::from_millis(delay_ms);
        Next::Restart {
            delay,
            attempt,
            fail_over_first,
        }
    }

    #[test]
    fn exits() {
        let p = RestartPolicy::default();
        let (data, strict, plain) = ((true, true), (true, false), (false, false));
        let (crash, clean, failed) = (Exit::Signal(9), Exit::Code(0), Exit::Code(1));
        // (kind, stopping, reconfiguring, restarts, uptime s, how) -> next
        let table = [
            (data, true, false, 0, 5, crash, Next::Stopped),
            (plain, true, true, 4, 5, crash, Next::Stopped),
            (plain, false, true, 4, 5, clean, Next::RespawnNow),
            (data, false, false, 0, 5, crash, restart(500, 1, true)),
            (strict, false, false, 0, 5, crash, restart(500, 1, false)),
            (plain, false, false, 2, 5, failed, restart(2000, 3, false)),
            // ran stably: the whole budget again
            (plain, false, false, 5, 60, failed, restart(500, 1, false)),
            (data, false, false, 5, 5, crash, Next::GiveUp { code: 137 }),
            (plain, false, false, 5, 5, clean, Next::GiveUp { code: 1 }),
        ];
        for (i, (k, stopping, reconf, restarts, up_s, how, want)) in table.into_iter().enumerate() {
            let uptime = Duration::from_secs(up_s);
            let got = on_exit(kind(k), stopping, reconf, restarts, uptime, how, &p);
            assert_eq!(got, want, "row {i}");
        }
        // A failed start is never failed over.
        let got = on_failure(0, Duration::ZERO, Exit::Code(127), &p);
        assert_eq!(got, restart(500, 1, false));
    }

    #[test]
    fn starts_decisions_and_reconfiguration() {
        let (data, strict, plain) = ((true, true), (true, false), (false, false));
        // (kind, stopping, restarts) -> start
        for (k, stopping, restarts, want) in [
            (data, false, 0, Start::Spawn),
            (data, false, 1, Start::DecideFirst),
            (strict, false, 3, Start::DecideFirst),
            (plain, false, 3, Start::Spawn),
            (data, true, 1, Start::Nothing),
            (plain, true, 0, Start::Nothing),
        ] {
            assert_eq!(
                on_start(kind(k), stopping, restarts),
                want,
                "{k:?} {stopping} {restarts}"
            );
        }
        // (waiting, decided) -> what the decision does
        for (waiting, decided, want) in [
            (false, true, Decided::Ignore),
            (false, false, Decided::Ignore),
            (true, false, Decided::Failed),
            (true, true, Decided::Spawn),
        ] {
            assert_eq!(on_decided(waiting, decided), want);
        }
        // (running, stopping, early, reconfiguring): only a plain running child
        assert!(may_reconfigure(true, false, false, false));
        for (r, s, e, c) in [
            (false, false, false, false),
            (true, true, false, false),
            (true, false, true, false),
            (true, false, false, true),
        ] {
            assert!(!may_reconfigure(r, s, e, c), "{r} {s} {e} {c}");
        }
    }
}
