//! Pure decisions of the supervisor: what to do when a child exits, what code to exit with.

use std::time::Duration;

pub use crate::config::RestartPolicy;

/// How a process ended, as the reaper saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// The shell's convention: the code, or 128 + the signal number.
    pub fn as_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExit {
    /// Start it again after `delay`; `attempt` is the restart count after this one.
    Restart { delay: Duration, attempt: u32 },
    /// Budget spent: stop everything and exit with `code`.
    GiveUp { code: i32 },
}

/// `restarts` counts restarts since the last stable period; the budget resets only when the child
/// ran for `stable_after` (resetting at each start would never give up: Horust#318).
pub fn on_unexpected_exit(p: &RestartPolicy, restarts: u32, uptime: Duration, how: Exit) -> OnExit {
    let restarts = if uptime >= p.stable_after {
        0
    } else {
        restarts
    };
    if restarts >= p.budget {
        // A child that gave up with status 0 still ended the pod unexpectedly.
        let code = match how.as_code() {
            0 => 1,
            c => c,
        };
        return OnExit::GiveUp { code };
    }
    let factor = 1u32.checked_shl(restarts).unwrap_or(u32::MAX);
    let delay = p.initial_backoff.saturating_mul(factor).min(p.max_backoff);
    OnExit::Restart {
        delay,
        attempt: restarts + 1,
    }
}

/// Exit code of PID 1 once every child is gone.
pub fn final_code(stop_requested: bool, killed_at_deadline: bool, gave_up: Option<i32>) -> i32 {
    match (gave_up, stop_requested, killed_at_deadline) {
        (Some(c), _, _) => c,
        (None, true, false) => crate::exit::OK,
        (None, true, true) => crate::exit::KILLED,
        // Both children gone without a stop request and without giving up cannot happen (each
        // exit schedules a restart); report it as a failure rather than success.
        (None, false, _) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn backoff_table() {
        let p = RestartPolicy::default();
        let cases = [
            (
                0,
                1_000,
                Exit::Code(1),
                OnExit::Restart {
                    delay: MS(500),
                    attempt: 1,
                },
            ),
            (
                1,
                1_000,
                Exit::Code(1),
                OnExit::Restart {
                    delay: MS(1_000),
                    attempt: 2,
                },
            ),
            (
                2,
                1_000,
                Exit::Signal(9),
                OnExit::Restart {
                    delay: MS(2_000),
                    attempt: 3,
                },
            ),
            (
                4,
                1_000,
                Exit::Code(1),
                OnExit::Restart {
                    delay: MS(8_000),
                    attempt: 5,
                },
            ),
            (5, 1_000, Exit::Code(3), OnExit::GiveUp { code: 3 }),
            (5, 1_000, Exit::Signal(9), OnExit::GiveUp { code: 137 }),
            (5, 1_000, Exit::Code(0), OnExit::GiveUp { code: 1 }),
            // ran long enough: budget back
            (
                5,
                60_000,
                Exit::Code(1),
                OnExit::Restart {
                    delay: MS(500),
                    attempt: 1,
                },
            ),
            (5, 59_999, Exit::Code(1), OnExit::GiveUp { code: 1 }),
        ];
        for (restarts, up, how, want) in cases {
            assert_eq!(
                on_unexpected_exit(&p, restarts, MS(up), how),
                want,
                "restarts={restarts} up={up}"
            );
        }
    }

    #[test]
    fn backoff_is_capped() {
        let p = RestartPolicy {
            budget: 100,
            ..Default::default()
        };
        assert_eq!(
            on_unexpected_exit(&p, 40, MS(0), Exit::Code(1)),
            OnExit::Restart {
                delay: Duration::from_secs(30),
                attempt: 41
            }
        );
    }

    #[test]
    fn final_codes() {
        assert_eq!(final_code(true, false, None), 0);
        assert_eq!(final_code(true, true, None), 137);
        assert_eq!(final_code(false, false, Some(3)), 3);
        assert_eq!(final_code(true, false, Some(3)), 3);
        assert_eq!(final_code(false, false, None), 1);
    }
}
