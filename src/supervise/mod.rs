//! The event loop of PID 1: one task owns every child, every exit status and every timer.
//! Events (signals, decisions) arrive on one channel; timers are deadlines, never polling.

pub mod child;
pub mod machine;
pub mod policy;
pub mod reaper;
mod restart;
pub mod slot;
mod spawn;
mod stopping;

use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Config;
use crate::discover::{Decision, Patience, Undecided};
use crate::handover;
use crate::logs::LogSink;
use crate::render::Bases;
use crate::state::Prior;
use machine::{Input, Kids, Phase, StopMachine};
use policy::RestartPolicy;

pub use crate::config::Server;

#[derive(Debug)]
enum SlotState {
    Running {
        pid: Pid,
        since: Instant,
    },
    /// Waiting out a restart backoff.
    Backoff {
        at: Instant,
    },
    /// A role decision is running before a restart of the data node.
    Deciding,
    Done,
}

struct Slot {
    which: Server,
    state: SlotState,
    restarts: u32,
}

pub enum Event {
    Signal(i32),
    Decided(Result<Decision, Undecided>),
    HandoverDone(handover::Outcome),
    /// The companion found our sentinel alone naming another master than the majority for longer
    /// than the failover timeout: restart it monitoring this one (follow::own_sentinel_stale).
    SentinelStale(crate::config::Endpoint),
}

/// down-after of the sentinel that runs before the role is decided: no failover from it.
const EARLY_DOWN_AFTER_MS: u64 = 3_600_000;

/// How the pod starts: the role was decided before anything started, or (a pod with state that
/// could not decide alone) its sentinel starts first and the role is decided with it.
pub enum Boot {
    Decided(Decision),
    SentinelFirst(Prior),
}

/// Signals handed to both children unchanged.
pub const FORWARDED: &[i32] = &[
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGALRM,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGCONT,
];

pub struct Supervisor {
    cfg: Config,
    bases: Bases,
    sink: LogSink,
    policy: RestartPolicy,
    decision: Decision,
    /// Set while a pod with state runs its sentinel before the role is decided (a full outage:
    /// every pod waits for the others' sentinels). That sentinel monitors what this pod knew last
    /// and cannot start a failover (down-after of an hour); it is restarted with the real
    /// configuration once the role is decided.
    early: Option<Prior>,
    /// The sentinel is being restarted on purpose (new monitor line): respawn at once, no backoff.
    sentinel_rerender: bool,
    /// The master the next sentinel start monitors, when the companion asked for a restart.
    sentinel_monitor: Option<crate::config::Endpoint>,
    /// On a first boot: the other pods' data nodes, told to the sentinel as known replicas.
    first_boot_replicas: Vec<crate::config::Endpoint>,
    slots: [Slot; 2],
    /// Where the stop sequence is (machine.rs); `Serving` until a stop begins.
    stop: StopMachine,
    gave_up: Option<i32>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// A task that lives while we serve (the stale-entry cleanup); stopped when a stop begins so
    /// it cannot reset a sentinel in the middle of a handover's failover.
    companion: Option<tokio::task::JoinHandle<()>>,
    /// The cgroup's OOM-kill count when a child last started or exited: a rise since then that
    /// ends in a SIGKILL is the OOM killer (memory::oom_killed).
    oom_kills: Option<u64>,
    /// The stop's handover moved the master role to a replica (discover::UncleanStop).
    handed_over: bool,
    /// The master proxy, a third child with its own restart policy (proxy/child.rs).
    proxy: Option<crate::proxy::child::ProxyChild>,
}

/// Registers every signal we act on before anything starts: PID 1 ignores signals it has no
/// handler for, so a TERM arriving before this would be lost.
pub fn install_signals(
) -> std::io::Result<(mpsc::UnboundedSender<Event>, mpsc::UnboundedReceiver<Event>)> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = mpsc::unbounded_channel();
    let mut all = vec![libc::SIGTERM, libc::SIGINT, libc::SIGCHLD];
    all.extend_from_slice(FORWARDED);
    for sig in all {
        let mut stream = signal(SignalKind::from_raw(sig))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(Event::Signal(sig)).is_err() {
                    break;
                }
            }
        });
    }
    Ok((tx, rx))
}

impl Supervisor {
    pub fn new(
        cfg: Config,
        bases: Bases,
        boot: Boot,
        chan: (mpsc::UnboundedSender<Event>, mpsc::UnboundedReceiver<Event>),
    ) -> Supervisor {
        let (decision, early) = match boot {
            Boot::Decided(d) => (d, None),
            Boot::SentinelFirst(p) => (
                Decision {
                    role: crate::config::Role::Replica,
                    master: p.master.clone(),
                    reason: "not decided yet".into(),
                    claim_epoch: None,
                },
                Some(p),
            ),
        };
        let sink = LogSink {
            format: cfg.log_format,
        };
        let slot = |which| Slot {
            which,
            state: SlotState::Done,
            restarts: 0,
        };
        let stop = StopMachine::new(
            Duration::from_millis(cfg.stop_grace_ms),
            cfg.handover,
            Instant::now(),
        );
        Supervisor {
            proxy: crate::proxy::child::ProxyChild::new(&cfg),
            policy: cfg.restart,
            cfg,
            bases,
            sink,
            decision,
            early,
            sentinel_rerender: false,
            sentinel_monitor: None,
            first_boot_replicas: Vec::new(),
            slots: [slot(Server::Redis), slot(Server::Sentinel)],
            stop,
            gave_up: None,
            tx: chan.0,
            rx: chan.1,
            task: None,
            companion: None,
            oom_kills: None,
            handed_over: false,
        }
    }

    pub fn with_first_boot_replicas(mut self, r: Vec<crate::config::Endpoint>) -> Supervisor {
        self.first_boot_replicas = r;
        self
    }

    pub fn with_companion(mut self, h: tokio::task::JoinHandle<()>) -> Supervisor {
        self.companion = Some(h);
        self
    }

    /// Runs until both children are gone after a stop; returns PID 1's exit code.
    pub async fn run(mut self) -> i32 {
        if let Some(p) = self.early.clone() {
            self.spawn_now(Server::Sentinel);
            self.decide_redis(Some(p), Patience::Forever);
        } else {
            for which in [Server::Redis, Server::Sentinel] {
                self.start(which);
            }
        }
        if let Some(p) = self.proxy.as_mut() {
            p.start();
        }
        // Bounded by the stop deadline once a stop begins; unbounded while serving, by design.
        loop {
            if self.stop.finished(self.kids()) {
                break;
            }
            let deadline = self.next_deadline();
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.on_event(ev),
                    None => break,
                },
                _ = sleep_until_opt(deadline) => self.on_timer(),
            }
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(c) = self.companion.take() {
            c.abort();
        }
        if let Some(p) = self.proxy.as_mut() {
            p.stop().await;
        }
        let killed = self.stop.phase() == Phase::Killing;
        let code = policy::final_code(self.stop.stopping(), killed, self.gave_up);
        tracing::info!(code, "all children gone, exiting");
        code
    }

    fn kids(&self) -> Kids {
        let running = |i: usize| matches!(self.slots[i].state, SlotState::Running { .. });
        Kids {
            redis: running(0),
            sentinel: running(1),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let backoffs = self.slots.iter().filter_map(|s| match s.state {
            SlotState::Backoff { at } => Some(at),
            _ => None,
        });
        backoffs
            .chain(self.stop.next_deadline())
            .chain(self.proxy.as_ref().and_then(|p| p.deadline()))
            .min()
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Signal(libc::SIGCHLD) => self.reap(),
            Event::Signal(sig @ (libc::SIGTERM | libc::SIGINT)) => self.on_stop_signal(sig),
            Event::Signal(sig) => self.forward(sig),
            Event::Decided(d) => self.on_decided(d),
            Event::HandoverDone(outcome) => {
                tracing::info!(outcome = %outcome, "handover finished");
                crate::metrics::handover_done(&outcome);
                self.handed_over = matches!(outcome, handover::Outcome::Done { .. });
                self.step(Input::HandoverDone, None);
            }
            Event::SentinelStale(master) => self.restart_stale_sentinel(master),
        }
    }

    fn forward(&mut self, sig: i32) {
        let Ok(signal) = Signal::try_from(sig) else {
            return;
        };
        for s in &self.slots {
            if let SlotState::Running { pid, .. } = s.state {
                tracing::info!(
                    signal = signal_name(sig),
                    child = s.which.name(),
                    pid = pid.as_raw(),
                    "forwarding signal"
                );
                child::signal_pid(pid, signal);
            }
        }
    }

    fn reap(&mut self) {
        for (pid, how) in reaper::reap_all() {
            let slot = self
                .slots
                .iter()
                .position(|s| matches!(s.state, SlotState::Running { pid: p, .. } if p == pid));
            let stopping = self.stop.stopping();
            match slot {
                Some(i) => self.on_child_exit(i, pid, how),
                None if self
                    .proxy
                    .as_mut()
                    .is_some_and(|p| p.on_exit(pid, how, stopping)) => {}
                None => {
                    tracing::debug!(pid = pid.as_raw(), status = how.as_code(), "reaped orphan")
                }
            }
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        for i in 0..self.slots.len() {
            if let SlotState::Backoff { at } = self.slots[i].state {
                if at <= now {
                    let which = self.slots[i].which;
                    self.start(which);
                }
            }
        }
        if let Some(p) = self.proxy.as_mut() {
            p.on_timer(now, self.stop.stopping());
        }
        if self.stop.stopping() {
            self.step(Input::Tick, None);
        }
    }
}

async fn sleep_until_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

pub fn signal_name(sig: i32) -> &'static str {
    Signal::try_from(sig)
        .map(|s| s.as_str())
        .unwrap_or("unknown")
}
