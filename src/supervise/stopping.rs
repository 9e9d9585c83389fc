//! Carrying out the stop machine's actions (machine.rs decides; this only does): signals to
//! children, the handover task, aborting tasks.

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::time::Instant;

use super::machine::{Action, Input, Phase};
use super::{child, signal_name, Event, SlotState, Supervisor};
use crate::handover;

impl Supervisor {
    /// Feeds the stop machine and carries out what it asks; `exited` is the process just reaped
    /// when the input is an exit (its group gets what is left of the stop).
    pub(super) fn step(&mut self, input: Input, exited: Option<Pid>) {
        let actions = self.stop.on(input, Instant::now(), self.kids());
        for a in actions {
            match a {
                Action::AbortCompanion => {
                    if let Some(c) = self.companion.take() {
                        c.abort();
                    }
                }
                Action::AbortTask => {
                    if let Some(t) = self.task.take() {
                        t.abort();
                    }
                }
                Action::CancelPending => {
                    for s in &mut self.slots {
                        if matches!(s.state, SlotState::Backoff { .. } | SlotState::Deciding) {
                            s.state = SlotState::Done;
                        }
                    }
                }
                Action::StartHandover { budget } => {
                    crate::metrics::handover_started();
                    let cfg = self.cfg.clone();
                    let tx = self.tx.clone();
                    self.task = Some(tokio::spawn(async move {
                        let outcome = handover::run(&cfg, budget).await;
                        let _ = tx.send(Event::HandoverDone(outcome));
                    }));
                }
                Action::Term(which) => self.term(which),
                Action::TermAgain(which) => {
                    if let SlotState::Running { pid, .. } = self.slots[which as usize].state {
                        child::signal_pid(pid, Signal::SIGTERM);
                    }
                }
                Action::KillAll => {
                    for s in &self.slots {
                        if let SlotState::Running { pid, .. } = s.state {
                            tracing::warn!(
                                child = s.which.name(),
                                pid = pid.as_raw(),
                                "grace period over; killing its process group"
                            );
                            child::signal_group(pid, Some(Signal::SIGKILL));
                        }
                    }
                }
                Action::SignalExitedGroup { kill } => {
                    // What the main process left behind in its group dies with it.
                    if let Some(pid) = exited {
                        let sig = if kill {
                            Signal::SIGKILL
                        } else {
                            Signal::SIGTERM
                        };
                        child::signal_group(pid, Some(sig));
                    }
                }
            }
        }
    }

    pub(super) fn on_stop_signal(&mut self, sig: i32) {
        let name = signal_name(sig);
        match self.stop.phase() {
            Phase::Serving => tracing::info!(signal = name, "stop requested"),
            Phase::HandingOver => tracing::warn!(
                signal = name,
                "second stop signal: skipping the rest of the handover"
            ),
            _ => tracing::warn!(
                signal = name,
                "second stop signal: stopping both children now"
            ),
        }
        self.step(Input::StopSignal, None);
    }
}
