//! The event loop of PID 1: one task owns every child, every exit status and every timer.
//! Events (signals, decisions) arrive on one channel; timers are deadlines, never polling.

pub mod child;
pub mod policy;
pub mod reaper;

use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Config;
use crate::discover::{self, Decision, Patience, Prior, Undecided};
use crate::handover;
use crate::logs::LogSink;
use crate::render::{self, Bases};
use crate::state;
use policy::{Exit, OnExit, RestartPolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Redis = 0,
    Sentinel = 1,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Redis => "redis",
            Which::Sentinel => "sentinel",
        }
    }
}

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
    which: Which,
    state: SlotState,
    restarts: u32,
}

pub enum Event {
    Signal(i32),
    Decided(Result<Decision, Undecided>),
    HandoverDone(handover::Outcome),
}

struct Stopping {
    deadline: Instant,
    /// The sentinel is stopped after the data node, or at this point at the latest.
    sentinel_by: Instant,
    sentinel_termed: bool,
    killed: bool,
    handing_over: bool,
    /// Redis refuses a shutdown now and then (e.g. "Writing initial AOF, can't exit") and does
    /// not retry by itself, so TERM is repeated until it exits or the grace ends.
    retry_term_at: Instant,
}

const TERM_RETRY: Duration = Duration::from_secs(1);
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
    /// On a first boot: the other pods' data nodes, told to the sentinel as known replicas.
    first_boot_replicas: Vec<crate::config::Endpoint>,
    slots: [Slot; 2],
    stop: Option<Stopping>,
    gave_up: Option<i32>,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// A task that lives while we serve (the stale-entry cleanup); stopped when a stop begins so
    /// it cannot reset a sentinel in the middle of a handover's failover.
    companion: Option<tokio::task::JoinHandle<()>>,
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
        Supervisor {
            policy: cfg.restart,
            cfg,
            bases,
            sink,
            decision,
            early,
            sentinel_rerender: false,
            first_boot_replicas: Vec::new(),
            slots: [slot(Which::Redis), slot(Which::Sentinel)],
            stop: None,
            gave_up: None,
            tx: chan.0,
            rx: chan.1,
            task: None,
            companion: None,
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
            self.spawn_now(Which::Sentinel);
            self.decide_redis(Some(p), Patience::Forever);
        } else {
            for which in [Which::Redis, Which::Sentinel] {
                self.start(which);
            }
        }
        // Bounded by the stop deadline once a stop begins; unbounded while serving, by design.
        loop {
            if self.finished() {
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
        let killed = self.stop.as_ref().is_some_and(|s| s.killed);
        let code = policy::final_code(self.stop.is_some(), killed, self.gave_up);
        tracing::info!(code, "all children gone, exiting");
        code
    }

    fn finished(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| !s.handing_over)
            && self
                .slots
                .iter()
                .all(|s| matches!(s.state, SlotState::Done))
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut take = |t: Instant| d = Some(d.map_or(t, |x: Instant| x.min(t)));
        for s in &self.slots {
            if let SlotState::Backoff { at } = s.state {
                take(at);
            }
        }
        if let Some(st) = &self.stop {
            if !st.killed {
                take(st.deadline);
            }
            if !st.sentinel_termed && !st.handing_over {
                take(st.sentinel_by);
            }
            if !st.killed && !st.handing_over {
                take(st.retry_term_at);
            }
        }
        d
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Signal(libc::SIGCHLD) => self.reap(),
            Event::Signal(sig @ (libc::SIGTERM | libc::SIGINT)) => self.on_stop_signal(sig),
            Event::Signal(sig) => self.forward(sig),
            Event::Decided(d) => self.on_decided(d),
            Event::HandoverDone(outcome) => {
                tracing::info!(outcome = %outcome, "handover finished");
                if let Some(st) = &mut self.stop {
                    st.handing_over = false;
                    st.retry_term_at = Instant::now() + TERM_RETRY;
                }
                self.stop_children();
            }
        }
    }

    fn on_stop_signal(&mut self, sig: i32) {
        let name = signal_name(sig);
        match &mut self.stop {
            None => {
                tracing::info!(signal = name, "stop requested");
                self.begin_stop(true);
            }
            Some(st) if st.handing_over => {
                tracing::warn!(
                    signal = name,
                    "second stop signal: skipping the rest of the handover"
                );
                st.handing_over = false;
                if let Some(t) = self.task.take() {
                    t.abort();
                }
                self.stop_children();
            }
            Some(st) => {
                tracing::warn!(
                    signal = name,
                    "second stop signal: stopping both children now"
                );
                st.sentinel_termed = true;
                for which in [Which::Redis, Which::Sentinel] {
                    self.term(which);
                }
            }
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
            match slot {
                Some(i) => self.on_child_exit(i, pid, how),
                None => {
                    tracing::debug!(pid = pid.as_raw(), status = how.as_code(), "reaped orphan")
                }
            }
        }
    }

    fn on_child_exit(&mut self, i: usize, pid: Pid, how: Exit) {
        let which = self.slots[i].which;
        if which == Which::Redis && how.as_code() == 0 {
            // A clean shutdown: its AOF holds every write it acknowledged.
            state::clear_data_node_running(&self.cfg);
        }
        let uptime = match self.slots[i].state {
            SlotState::Running { since, .. } => since.elapsed(),
            _ => Duration::ZERO,
        };
        if let Some(st) = &self.stop {
            tracing::info!(
                child = which.name(),
                pid = pid.as_raw(),
                status = how.as_code(),
                "child stopped"
            );
            // What the main process left behind in its group dies with it.
            child::signal_group(
                pid,
                Some(if st.killed {
                    Signal::SIGKILL
                } else {
                    Signal::SIGTERM
                }),
            );
            self.slots[i].state = SlotState::Done;
            if which == Which::Redis && !st.sentinel_termed && !st.handing_over {
                self.term_sentinel();
            }
            return;
        }
        child::signal_group(pid, Some(Signal::SIGKILL));
        if which == Which::Sentinel && self.sentinel_rerender {
            self.sentinel_rerender = false;
            // A deliberate reconfiguration, not a failure; and the new monitor line comes from the
            // decision, not from what the old sentinel wrote.
            self.slots[i].restarts = 0;
            tracing::info!(
                pid = pid.as_raw(),
                "sentinel stopped for its new configuration; starting it again"
            );
            self.slots[i].state = SlotState::Done;
            self.spawn_now(Which::Sentinel);
            return;
        }
        match policy::on_unexpected_exit(&self.policy, self.slots[i].restarts, uptime, how) {
            OnExit::Restart { delay, attempt } => {
                tracing::warn!(
                    child = which.name(),
                    pid = pid.as_raw(),
                    status = how.as_code(),
                    uptime_ms = uptime.as_millis() as u64,
                    restart_in_ms = delay.as_millis() as u64,
                    attempt,
                    "child exited unexpectedly; restarting"
                );
                self.slots[i].restarts = attempt;
                if which == Which::Redis && !self.cfg.strict_durability {
                    // A crashed master is failed over first (handover::after_crash), during the
                    // backoff; the restart then follows the usual role decision.
                    self.decide_redis_after_crash(delay);
                } else {
                    self.slots[i].state = SlotState::Backoff {
                        at: Instant::now() + delay,
                    };
                }
            }
            OnExit::GiveUp { code } => {
                tracing::error!(
                    child = which.name(),
                    status = how.as_code(),
                    "restart budget spent; stopping the pod"
                );
                self.slots[i].state = SlotState::Done;
                self.gave_up = Some(code);
                self.begin_stop(false);
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
        let Some(st) = &mut self.stop else { return };
        if !st.killed && st.deadline <= now {
            st.killed = true;
            st.sentinel_termed = true;
            st.handing_over = false;
            if let Some(t) = self.task.take() {
                t.abort();
            }
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
            return;
        }
        if !st.handing_over && st.retry_term_at <= now {
            st.retry_term_at = now + TERM_RETRY;
            let sentinel_termed = st.sentinel_termed;
            for s in &self.slots {
                if let SlotState::Running { pid, .. } = s.state {
                    if s.which == Which::Redis || sentinel_termed {
                        child::signal_pid(pid, Signal::SIGTERM);
                    }
                }
            }
        }
        let Some(st) = &self.stop else { return };
        if !st.sentinel_termed && !st.handing_over && st.sentinel_by <= now {
            self.term_sentinel();
        }
    }

    /// Starts a child. The data node's role is decided again first (Sentinel may have promoted
    /// someone else while it was down); the decision arrives as an event, so signals stay live.
    fn start(&mut self, which: Which) {
        if self.stop.is_some() {
            return;
        }
        match which {
            Which::Redis if self.slots[0].restarts > 0 => {
                let prior = state::read_prior(&self.cfg);
                self.decide_redis(prior, Patience::Budget);
            }
            _ => self.spawn_now(which),
        }
    }

    /// A data node that crashed: fail it over if it was the master, wait out the rest of the
    /// backoff, then decide its role as for any restart.
    fn decide_redis_after_crash(&mut self, delay: Duration) {
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
    fn decide_redis(&mut self, prior: Option<Prior>, patience: Patience) {
        self.slots[0].state = SlotState::Deciding;
        let cfg = self.cfg.clone();
        let tx = self.tx.clone();
        self.task = Some(tokio::spawn(async move {
            let d = discover::decide(&cfg, true, patience, prior.as_ref()).await;
            let _ = tx.send(Event::Decided(d));
        }));
    }

    fn on_decided(&mut self, d: Result<Decision, Undecided>) {
        self.task = None;
        if !matches!(self.slots[0].state, SlotState::Deciding) {
            return;
        }
        let d = match d {
            Ok(d) => d,
            Err(why) => {
                // Counts as a failed start: back off and try again, give up when the budget is spent.
                tracing::error!(reason = %why, "cannot decide the role for the restart");
                self.spawn_failed(Which::Redis, 75);
                return;
            }
        };
        tracing::info!(role = %d.role, master = %d.master, reason = %d.reason, "role decided");
        self.decision = d;
        self.spawn_now(Which::Redis);
        // The sentinel that ran before the decision monitors what this pod knew last, with
        // failovers held off: restart it with the real configuration.
        if self.early.take().is_some() {
            if let SlotState::Running { .. } = self.slots[1].state {
                self.sentinel_rerender = true;
                self.term(Which::Sentinel);
            }
        }
    }

    fn spawn_now(&mut self, which: Which) {
        let i = which as usize;
        let prior = state::read_prior_sentinel(&self.cfg);
        let master = match which {
            // A restarted sentinel resumes from what it last wrote: it may have followed a
            // failover since this pod booted.
            Which::Sentinel if self.slots[i].restarts > 0 => prior
                .as_deref()
                .and_then(|p| render::prior_monitor(p, &self.cfg.group))
                .unwrap_or_else(|| self.decision.master.clone()),
            _ => self.decision.master.clone(),
        };
        // Before the decision the sentinel shows what this pod knew (monitor, epoch) and must not
        // fail anything over: an hour of down-after.
        let early_cfg;
        let (cfg, master) = match (&self.early, which) {
            (Some(p), Which::Sentinel) => {
                let mut c = self.cfg.clone();
                c.down_after_ms = EARLY_DOWN_AFTER_MS;
                early_cfg = c;
                (&early_cfg, p.master.clone())
            }
            _ => (&self.cfg, master),
        };
        let plan = render::render(
            cfg,
            self.decision.role,
            &master,
            &self.bases,
            prior.as_deref(),
        );
        let mut sentinel_conf = match self.decision.claim_epoch {
            Some(claim) if self.early.is_none() => {
                render::with_claimed_epoch(&plan.sentinel_conf, &self.cfg.group, claim)
            }
            _ => plan.sentinel_conf.clone(),
        };
        if prior.is_none() && !self.first_boot_replicas.is_empty() {
            sentinel_conf = render::with_known_replicas(
                &sentinel_conf,
                &self.cfg.group,
                &self.first_boot_replicas,
            );
        }
        let (path, text, argv) = match which {
            Which::Redis => (&plan.redis_conf_path, &plan.redis_conf, &plan.redis_argv),
            Which::Sentinel => (
                &plan.sentinel_conf_path,
                &sentinel_conf,
                &plan.sentinel_argv,
            ),
        };
        let result = state::write_conf(path, text)
            .and_then(|()| child::spawn(which.name(), argv, &self.sink, state::SECRET_VARS));
        match result {
            Ok(pid) => {
                tracing::info!(child = which.name(), pid = pid.as_raw(), role = %self.decision.role, "spawned");
                if which == Which::Redis {
                    if let Err(e) = state::write_identity(&self.cfg, &self.cfg.self_redis()) {
                        tracing::warn!(error = %e, "cannot record this pod's address in the state directory");
                    }
                    if let Err(e) = state::mark_data_node_running(&self.cfg) {
                        tracing::warn!(error = %e, "cannot record in the state directory that the data node runs");
                    }
                }
                self.slots[i].state = SlotState::Running {
                    pid,
                    since: Instant::now(),
                };
            }
            Err(e) => {
                // A failed spawn counts like an immediate exit: back off, and give up when the
                // budget is spent (exit 127 when the executable vanished).
                let code = if e.kind() == std::io::ErrorKind::NotFound {
                    127
                } else {
                    126
                };
                tracing::error!(child = which.name(), error = %e, "spawn failed");
                self.spawn_failed(which, code);
            }
        }
    }

    /// A start that failed before a process ran counts like an immediate exit with `code`: back
    /// off, and give up when the budget is spent.
    fn spawn_failed(&mut self, which: Which, code: i32) {
        let i = which as usize;
        match policy::on_unexpected_exit(
            &self.policy,
            self.slots[i].restarts,
            Duration::ZERO,
            Exit::Code(code),
        ) {
            OnExit::Restart { delay, attempt } => {
                self.slots[i].restarts = attempt;
                self.slots[i].state = SlotState::Backoff {
                    at: Instant::now() + delay,
                };
            }
            OnExit::GiveUp { code } => {
                self.slots[i].state = SlotState::Done;
                self.gave_up = Some(code);
                self.begin_stop(false);
            }
        }
    }

    fn begin_stop(&mut self, requested: bool) {
        if let Some(c) = self.companion.take() {
            c.abort();
        }
        let now = Instant::now();
        let grace = Duration::from_millis(self.cfg.stop_grace_ms);
        for s in &mut self.slots {
            if matches!(s.state, SlotState::Backoff { .. } | SlotState::Deciding) {
                s.state = SlotState::Done;
            }
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let redis_pid = match self.slots[0].state {
            SlotState::Running { pid, .. } => Some(pid),
            _ => None,
        };
        // The handover task itself finds out at once whether this node is a master with a
        // healthy replica; on a replica it returns within a millisecond.
        let handing_over = requested && self.cfg.handover && redis_pid.is_some();
        self.stop = Some(Stopping {
            deadline: now + grace,
            sentinel_by: now + grace / 2,
            sentinel_termed: false,
            killed: false,
            handing_over,
            retry_term_at: now + TERM_RETRY,
        });
        if handing_over {
            let cfg = self.cfg.clone();
            let tx = self.tx.clone();
            // The handover gets most of the grace; what is left is for redis's shutdown save.
            let budget = grace.mul_f64(0.7);
            self.task = Some(tokio::spawn(async move {
                let outcome = handover::run(&cfg, budget).await;
                let _ = tx.send(Event::HandoverDone(outcome));
            }));
        } else {
            self.stop_children();
        }
    }

    /// Data node first: the sentinel keeps answering clients and voting while redis saves, so the
    /// cluster loses one voter only after this pod's data is safe. The sentinel gets TERM when
    /// redis is gone, or at half the grace period at the latest.
    fn stop_children(&mut self) {
        let redis_running = matches!(self.slots[0].state, SlotState::Running { .. });
        if redis_running {
            self.term(Which::Redis);
        } else {
            self.term_sentinel();
        }
    }

    fn term_sentinel(&mut self) {
        if let Some(st) = &mut self.stop {
            st.sentinel_termed = true;
        }
        self.term(Which::Sentinel);
    }

    fn term(&self, which: Which) {
        if let SlotState::Running { pid, .. } = self.slots[which as usize].state {
            tracing::info!(
                child = which.name(),
                pid = pid.as_raw(),
                "sending SIGTERM to its process group"
            );
            child::signal_group(pid, Some(Signal::SIGTERM));
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
