//! Starting a child: its configuration rendered from the decision (and, for a restarted
//! sentinel, from what it last wrote), written, and the process spawned.

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::{child, Server, SlotState, Supervisor, EARLY_DOWN_AFTER_MS};
use crate::{outage, render, state};

impl Supervisor {
    pub(super) fn spawn_now(&mut self, which: Server) {
        let i = which as usize;
        let prior = state::read_prior_sentinel(&self.cfg);
        // The companion asked for this restart with the majority's master (restart_stale_sentinel).
        let asked = match which {
            Server::Sentinel => self.sentinel_monitor.take(),
            Server::Redis => None,
        };
        let master = match (which, asked) {
            (_, Some(m)) => m,
            // A restarted sentinel resumes from what it last wrote: it may have followed a
            // failover since this pod booted.
            (Server::Sentinel, None) if self.slots[i].restarts > 0 => prior
                .as_deref()
                .and_then(|p| render::prior_monitor(p, &self.cfg.group))
                .unwrap_or_else(|| self.decision.master.clone()),
            _ => self.decision.master.clone(),
        };
        // Before the decision the sentinel shows what this pod knew (monitor, epoch) and must not
        // fail anything over: an hour of down-after.
        let early_cfg;
        let (cfg, master) = match (&self.early, which) {
            (Some(p), Server::Sentinel) => {
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
        // After an outage: a waiting pod's sentinel shows the others its claim; an elected
        // master's sentinel keeps where the election started, for the lost master's log.
        match (&self.early, self.decision.claim_epoch) {
            (Some(p), _) => {
                let claim = outage::own_claim(&self.cfg, p);
                sentinel_conf = outage::with_claim(&sentinel_conf, &self.cfg.group, &claim);
            }
            (None, Some(claim)) => {
                if let Some((epoch, offset)) = outage::read_elected(&self.cfg) {
                    if epoch == claim {
                        sentinel_conf =
                            outage::with_elected(&sentinel_conf, &self.cfg.group, epoch, offset);
                    }
                }
            }
            (None, None) => {}
        }
        if prior.is_none() && !self.first_boot_replicas.is_empty() {
            sentinel_conf = render::with_known_replicas(
                &sentinel_conf,
                &self.cfg.group,
                &self.first_boot_replicas,
            );
        }
        let (path, text, argv) = match which {
            Server::Redis => (&plan.redis_conf_path, &plan.redis_conf, &plan.redis_argv),
            Server::Sentinel => (
                &plan.sentinel_conf_path,
                &sentinel_conf,
                &plan.sentinel_argv,
            ),
        };
        let result = state::write_conf(path, text)
            .and_then(|()| child::spawn(which.name(), argv, &self.sink, state::SECRET_VARS));
        match result {
            Ok(pid) => {
                if which == Server::Redis {
                    tracing::info!(child = which.name(), pid = pid.as_raw(), role = %self.decision.role, maxmemory = %plan.maxmemory, "spawned");
                } else {
                    tracing::info!(child = which.name(), pid = pid.as_raw(), role = %self.decision.role, "spawned");
                }
                // The baseline an exit is compared with: only a kill after this one is ours.
                if let Some(cg) = &self.cfg.memory.cgroup {
                    self.oom_kills = crate::memory::oom_kills(cg);
                }
                if which == Server::Redis {
                    if let Err(e) = state::write_identity(&self.cfg, &self.cfg.own(Server::Redis)) {
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
                    crate::exit::NOTFOUND
                } else {
                    crate::exit::NOEXEC
                };
                tracing::error!(child = which.name(), error = %e, "spawn failed");
                self.spawn_failed(which, code);
            }
        }
    }

    pub(super) fn term(&self, which: Server) {
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
