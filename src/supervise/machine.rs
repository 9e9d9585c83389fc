//! The stop sequence of PID 1 as a pure state machine (Horust's move, in this project's style):
//! one `Phase`, one function `on(input, now, kids) -> actions`. `mod.rs` owns the processes and
//! carries the actions out; nothing here touches a process, a clock or a socket, so every order
//! of signals, exits and timers is a table test.
//!
//! The order it enforces: hand the master role over first (if asked and possible), then stop the
//! data node, then the sentinel (it keeps voting while redis saves; at half the grace at the
//! latest), TERM repeated every second (redis sometimes refuses a shutdown and does not retry),
//! and SIGKILL of every process group when the grace is over. A second TERM/INT skips what is
//! left: the handover, or the wait for redis before the sentinel.

use std::time::Duration;

use tokio::time::Instant;

use super::Server;

/// Redis refuses a shutdown now and then (e.g. "Writing initial AOF, can't exit") and does not
/// retry by itself, so TERM is repeated until it exits or the grace ends.
pub const TERM_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No stop yet: children are supervised and restarted.
    Serving,
    /// The handover task runs; both children keep serving.
    HandingOver,
    /// The data node has TERM; the sentinel waits for it to exit (or half the grace).
    StoppingRedis,
    /// Both have TERM (or only the sentinel was left).
    StoppingSentinel,
    /// The grace is over: every process group got SIGKILL.
    Killing,
}

/// Which children run right now, as `mod.rs` sees them (after the exit being reported, if any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kids {
    pub redis: bool,
    pub sentinel: bool,
}

impl Kids {
    fn running(self, w: Server) -> bool {
        match w {
            Server::Redis => self.redis,
            Server::Sentinel => self.sentinel,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// SIGTERM or SIGINT.
    StopSignal,
    /// The restart budget of a child is spent: stop the pod without a handover.
    GaveUp,
    /// The handover task reported (done, skipped or failed: the stop goes on either way).
    HandoverDone,
    /// A child exited while stopping.
    Exited(Server),
    /// A deadline from `next_deadline` passed.
    Tick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Stop the follow companion: it must not re-point or reset anything during a handover.
    AbortCompanion,
    /// Abort the running task (a role decision, a crash failover, or the handover).
    AbortTask,
    /// Children waiting for a restart (backoff, role decision) will not be started.
    CancelPending,
    StartHandover {
        budget: Duration,
    },
    /// SIGTERM to the child's process group.
    Term(Server),
    /// SIGTERM again to the child's main process (the group already had one).
    TermAgain(Server),
    /// SIGKILL to every running child's process group.
    KillAll,
    /// The child that just exited: what its leftover process group gets.
    SignalExitedGroup {
        kill: bool,
    },
}

#[derive(Debug, Clone)]
pub struct StopMachine {
    phase: Phase,
    grace: Duration,
    handover: bool,
    deadline: Instant,
    sentinel_by: Instant,
    retry_term_at: Instant,
}

impl StopMachine {
    /// `grace`: the whole stop's budget; `handover`: REDISHA_HANDOVER.
    pub fn new(grace: Duration, handover: bool, now: Instant) -> StopMachine {
        StopMachine {
            phase: Phase::Serving,
            grace,
            handover,
            deadline: now,
            sentinel_by: now,
            retry_term_at: now,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn stopping(&self) -> bool {
        self.phase != Phase::Serving
    }

    /// Every child is gone and nothing is left to wait for.
    pub fn finished(&self, kids: Kids) -> bool {
        !matches!(self.phase, Phase::Serving | Phase::HandingOver) && !kids.redis && !kids.sentinel
    }

    /// The next moment `Tick` must be fed in, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Serving | Phase::Killing => None,
            Phase::HandingOver => Some(self.deadline),
            Phase::StoppingRedis => {
                Some(self.deadline.min(self.sentinel_by).min(self.retry_term_at))
            }
            Phase::StoppingSentinel => Some(self.deadline.min(self.retry_term_at)),
        }
    }

    pub fn on(&mut self, input: Input, now: Instant, kids: Kids) -> Vec<Action> {
        use Phase::*;
        match (self.phase, input) {
            (Serving, Input::StopSignal) => self.begin(true, now, kids),
            (Serving, Input::GaveUp) => self.begin(false, now, kids),
            (Serving, _) => Vec::new(),
            // Already stopping: the running sequence (and its clock) stays.
            (_, Input::GaveUp) => Vec::new(),
            (HandingOver, Input::StopSignal) => {
                let mut a = vec![Action::AbortTask];
                a.extend(self.stop_children(kids));
                a
            }
            (HandingOver, Input::HandoverDone) => {
                self.retry_term_at = now + TERM_RETRY;
                self.stop_children(kids)
            }
            (Killing, Input::StopSignal) => {
                vec![Action::Term(Server::Redis), Action::Term(Server::Sentinel)]
            }
            (StoppingRedis | StoppingSentinel, Input::StopSignal) => {
                self.phase = StoppingSentinel;
                vec![Action::Term(Server::Redis), Action::Term(Server::Sentinel)]
            }
            (_, Input::HandoverDone) => Vec::new(),
            (phase, Input::Exited(which)) => {
                let mut a = vec![Action::SignalExitedGroup {
                    kill: phase == Killing,
                }];
                // The data node is safe on disk: the sentinel may go now.
                if phase == StoppingRedis && which == Server::Redis {
                    a.extend(self.term_sentinel());
                }
                a
            }
            (Killing, Input::Tick) => Vec::new(),
            (_, Input::Tick) if now >= self.deadline => {
                self.phase = Killing;
                vec![Action::AbortTask, Action::KillAll]
            }
            (HandingOver, Input::Tick) => Vec::new(),
            (phase, Input::Tick) => {
                let mut a = Vec::new();
                if now >= self.retry_term_at {
                    self.retry_term_at = now + TERM_RETRY;
                    for w in [Server::Redis, Server::Sentinel] {
                        if kids.running(w) && (w == Server::Redis || phase == StoppingSentinel) {
                            a.push(Action::TermAgain(w));
                        }
                    }
                }
                if self.phase == StoppingRedis && now >= self.sentinel_by {
                    a.extend(self.term_sentinel());
                }
                a
            }
        }
    }

    fn begin(&mut self, requested: bool, now: Instant, kids: Kids) -> Vec<Action> {
        self.deadline = now + self.grace;
        self.sentinel_by = now + self.grace / 2;
        self.retry_term_at = now + TERM_RETRY;
        let mut a = vec![
            Action::AbortCompanion,
            Action::CancelPending,
            Action::AbortTask,
        ];
        // The handover task finds out at once whether this node is a master with a healthy
        // replica; on a replica it returns within a millisecond.
        if requested && self.handover && kids.redis {
            self.phase = Phase::HandingOver;
            // Most of the grace; what is left is for redis's shutdown save.
            a.push(Action::StartHandover {
                budget: self.grace.mul_f64(0.7),
            });
        } else {
            a.extend(self.stop_children(kids));
        }
        a
    }

    /// Data node first: the sentinel keeps answering clients and voting while redis saves, so
    /// the cluster loses one voter only after this pod's data is safe.
    fn stop_children(&mut self, kids: Kids) -> Vec<Action> {
        if kids.redis {
            self.phase = Phase::StoppingRedis;
            vec![Action::Term(Server::Redis)]
        } else {
            self.term_sentinel()
        }
    }

    fn term_sentinel(&mut self) -> Vec<Action> {
        self.phase = Phase::StoppingSentinel;
        vec![Action::Term(Server::Sentinel)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Input::*;

    const BOTH: Kids = Kids {
        redis: true,
        sentinel: true,
    };
    const SENTINEL_ONLY: Kids = Kids {
        redis: false,
        sentinel: true,
    };
    const NONE: Kids = Kids {
        redis: false,
        sentinel: false,
    };
    const GRACE: Duration = Duration::from_secs(10);

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    /// Feeds (input, ms since start, kids) in order; checks the actions and phase after each.
    fn run(handover: bool, steps: &[(Input, u64, Kids, &[Action], Phase)]) {
        let t0 = Instant::now();
        let mut m = StopMachine::new(GRACE, handover, t0);
        for (i, (input, at, kids, want, phase)) in steps.iter().enumerate() {
            let got = m.on(*input, ms(t0, *at), *kids);
            assert_eq!(&got[..], *want, "step {i}: {input:?} at {at} ms");
            assert_eq!(m.phase(), *phase, "step {i}: phase after {input:?}");
        }
    }

    const BEGIN: [Action; 3] = [AbortCompanion, CancelPending, AbortTask];

    fn with(prefix: &[Action], rest: &[Action]) -> Vec<Action> {
        prefix.iter().chain(rest).copied().collect()
    }

    #[test]
    fn plain_stop_redis_then_sentinel() {
        let begin = with(&BEGIN, &[Term(Server::Redis)]);
        run(
            false,
            &[
                (StopSignal, 0, BOTH, &begin, Phase::StoppingRedis),
                (
                    Exited(Server::Redis),
                    300,
                    SENTINEL_ONLY,
                    &[SignalExitedGroup { kill: false }, Term(Server::Sentinel)],
                    Phase::StoppingSentinel,
                ),
                (
                    Exited(Server::Sentinel),
                    400,
                    NONE,
                    &[SignalExitedGroup { kill: false }],
                    Phase::StoppingSentinel,
                ),
            ],
        );
    }

    #[test]
    fn handover_then_stop() {
        let begin = with(
            &BEGIN,
            &[StartHandover {
                budget: GRACE.mul_f64(0.7),
            }],
        );
        run(
            true,
            &[
                (StopSignal, 0, BOTH, &begin, Phase::HandingOver),
                // Nothing is signalled while the handover runs, not even at half the grace.
                (Tick, 5_000, BOTH, &[], Phase::HandingOver),
                (
                    HandoverDone,
                    5_100,
                    BOTH,
                    &[Term(Server::Redis)],
                    Phase::StoppingRedis,
                ),
                // TERM is repeated one second after the handover, not after the stop began.
                (
                    Tick,
                    5_200,
                    BOTH,
                    &[Term(Server::Sentinel)],
                    Phase::StoppingSentinel,
                ),
                (
                    Tick,
                    6_100,
                    BOTH,
                    &[TermAgain(Server::Redis), TermAgain(Server::Sentinel)],
                    Phase::StoppingSentinel,
                ),
            ],
        );
    }

    #[test]
    fn no_handover_without_a_running_data_node() {
        let begin = with(&BEGIN, &[Term(Server::Sentinel)]);
        run(
            true,
            &[(
                StopSignal,
                0,
                SENTINEL_ONLY,
                &begin,
                Phase::StoppingSentinel,
            )],
        );
    }

    #[test]
    fn second_term_during_the_handover_skips_it() {
        let begin = with(
            &BEGIN,
            &[StartHandover {
                budget: GRACE.mul_f64(0.7),
            }],
        );
        run(
            true,
            &[
                (StopSignal, 0, BOTH, &begin, Phase::HandingOver),
                (
                    StopSignal,
                    200,
                    BOTH,
                    &[AbortTask, Term(Server::Redis)],
                    Phase::StoppingRedis,
                ),
                // A handover result already queued changes nothing.
                (HandoverDone, 250, BOTH, &[], Phase::StoppingRedis),
            ],
        );
    }

    #[test]
    fn second_term_while_stopping_redis_stops_both() {
        let begin = with(&BEGIN, &[Term(Server::Redis)]);
        run(
            false,
            &[
                (StopSignal, 0, BOTH, &begin, Phase::StoppingRedis),
                (
                    StopSignal,
                    100,
                    BOTH,
                    &[Term(Server::Redis), Term(Server::Sentinel)],
                    Phase::StoppingSentinel,
                ),
            ],
        );
    }

    #[test]
    fn deadline_mid_handover_kills() {
        let begin = with(
            &BEGIN,
            &[StartHandover {
                budget: GRACE.mul_f64(0.7),
            }],
        );
        run(
            true,
            &[
                (StopSignal, 0, BOTH, &begin, Phase::HandingOver),
                (Tick, 10_000, BOTH, &[AbortTask, KillAll], Phase::Killing),
                (
                    Exited(Server::Redis),
                    10_010,
                    SENTINEL_ONLY,
                    &[SignalExitedGroup { kill: true }],
                    Phase::Killing,
                ),
                (Tick, 11_000, SENTINEL_ONLY, &[], Phase::Killing),
            ],
        );
    }

    #[test]
    fn redis_refusing_to_shut_down_gets_term_again_then_kill() {
        let begin = with(&BEGIN, &[Term(Server::Redis)]);
        run(
            false,
            &[
                (StopSignal, 0, BOTH, &begin, Phase::StoppingRedis),
                (
                    Tick,
                    1_000,
                    BOTH,
                    &[TermAgain(Server::Redis)],
                    Phase::StoppingRedis,
                ),
                (
                    Tick,
                    2_000,
                    BOTH,
                    &[TermAgain(Server::Redis)],
                    Phase::StoppingRedis,
                ),
                // Half the grace: the sentinel goes, redis or not.
                (
                    Tick,
                    5_000,
                    BOTH,
                    &[TermAgain(Server::Redis), Term(Server::Sentinel)],
                    Phase::StoppingSentinel,
                ),
                (Tick, 10_000, BOTH, &[AbortTask, KillAll], Phase::Killing),
            ],
        );
    }

    #[test]
    fn giving_up_during_a_stop_keeps_the_clock() {
        let t0 = Instant::now();
        let mut m = StopMachine::new(GRACE, false, t0);
        m.on(StopSignal, t0, BOTH);
        let before = m.next_deadline();
        assert_eq!(m.on(GaveUp, ms(t0, 3_000), BOTH), vec![]);
        assert_eq!(m.next_deadline(), before);
        assert_eq!(m.phase(), Phase::StoppingRedis);
    }

    #[test]
    fn giving_up_stops_without_handover() {
        let begin = with(&BEGIN, &[Term(Server::Redis)]);
        run(true, &[(GaveUp, 0, BOTH, &begin, Phase::StoppingRedis)]);
    }

    #[test]
    fn crash_during_the_handover_waits_for_its_result() {
        let begin = with(
            &BEGIN,
            &[StartHandover {
                budget: GRACE.mul_f64(0.7),
            }],
        );
        run(
            true,
            &[
                (StopSignal, 0, BOTH, &begin, Phase::HandingOver),
                (
                    Exited(Server::Redis),
                    100,
                    SENTINEL_ONLY,
                    &[SignalExitedGroup { kill: false }],
                    Phase::HandingOver,
                ),
                (
                    HandoverDone,
                    200,
                    SENTINEL_ONLY,
                    &[Term(Server::Sentinel)],
                    Phase::StoppingSentinel,
                ),
            ],
        );
    }

    #[test]
    fn sentinel_crash_while_stopping_redis_does_not_stop_the_wait() {
        let begin = with(&BEGIN, &[Term(Server::Redis)]);
        let redis_only = Kids {
            redis: true,
            sentinel: false,
        };
        run(
            false,
            &[
                (StopSignal, 0, BOTH, &begin, Phase::StoppingRedis),
                (
                    Exited(Server::Sentinel),
                    100,
                    redis_only,
                    &[SignalExitedGroup { kill: false }],
                    Phase::StoppingRedis,
                ),
                (
                    Tick,
                    1_000,
                    redis_only,
                    &[TermAgain(Server::Redis)],
                    Phase::StoppingRedis,
                ),
            ],
        );
    }

    #[test]
    fn deadlines_follow_the_phase() {
        let t0 = Instant::now();
        let mut m = StopMachine::new(GRACE, true, t0);
        assert_eq!(m.next_deadline(), None);
        assert!(!m.finished(NONE), "serving is never finished");
        m.on(StopSignal, t0, BOTH);
        assert_eq!(
            m.next_deadline(),
            Some(ms(t0, 10_000)),
            "handover: only the grace"
        );
        assert!(!m.finished(NONE), "a handover still running");
        m.on(HandoverDone, ms(t0, 2_000), BOTH);
        assert_eq!(
            m.next_deadline(),
            Some(ms(t0, 3_000)),
            "TERM again 1 s after"
        );
        m.on(Tick, ms(t0, 10_000), BOTH);
        assert_eq!(m.next_deadline(), None);
        assert!(m.finished(NONE));
        assert!(!m.finished(SENTINEL_ONLY));
    }
}
