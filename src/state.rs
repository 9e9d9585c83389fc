//! The state directory: where rendered files live and what Sentinel wrote survives restarts.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::config::{Config, Endpoint};

/// Variables that hold secrets: removed from every child's environment.
pub const SECRET_VARS: &[&str] = &["REDIS_PASSWORD", "REDIS_SENTINEL_PASSWORD"];

/// Creates the state directory tree. The two directories that hold the rendered files (and so
/// the secrets) are owner-only; the top directory is made 0700 when we create it, but a mounted
/// volume we do not own (emptyDir/PVC owned by root, group via fsGroup) is left as it is: chmod
/// would fail there, and what needs protecting lives one level down.
pub fn prepare(cfg: &Config) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&cfg.state_dir)?;
    for d in [cfg.redis_dir(), cfg.sentinel_dir()] {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&d)?;
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Writes a config file atomically (a crash never leaves half a file for the next start) with
/// mode 0600.
pub fn write_conf(path: &Path, text: &str) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
    fs::rename(&tmp, path)
}

/// What Sentinel last wrote, if anything. When a handover made our sentinel forget the group
/// (handover::clients_told) the file lost its monitor line: what it held just before counts.
pub fn read_prior_sentinel(cfg: &Config) -> Option<String> {
    let live = fs::read_to_string(cfg.sentinel_conf_path()).ok();
    if live
        .as_deref()
        .is_some_and(|t| crate::render::prior_monitor(t, &cfg.group).is_some())
    {
        return live;
    }
    fs::read_to_string(before_forget_path(cfg)).ok().or(live)
}

/// sentinel.conf as it was before the handover's `SENTINEL REMOVE`.
pub fn before_forget_path(cfg: &Config) -> std::path::PathBuf {
    cfg.sentinel_dir().join("sentinel.conf.before-handover")
}

/// Keeps sentinel.conf aside before our sentinel forgets the group (read_prior_sentinel).
pub fn keep_before_forget(cfg: &Config) -> io::Result<()> {
    let text = fs::read_to_string(cfg.sentinel_conf_path())?;
    write_conf(&before_forget_path(cfg), &text)
}

/// `redisha-init promote --force` leaves this file; a role decision that waits for a majority
/// takes it (and removes it) as the operator's decision.
pub fn promotion_request_path(cfg: &Config) -> std::path::PathBuf {
    cfg.state_dir.join("promote.force")
}

pub fn request_promotion(cfg: &Config) -> io::Result<std::path::PathBuf> {
    let p = promotion_request_path(cfg);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    write_conf(&p, &format!("{stamp}\n"))?;
    Ok(p)
}

/// Takes a pending promotion request: true once, and the file is gone.
pub fn take_promotion_request(cfg: &Config) -> bool {
    fs::remove_file(promotion_request_path(cfg)).is_ok()
}

/// The address this pod's data node last served under (written each time it starts with a
/// decided role). A pod that restarts while it waits for a majority runs a sentinel under its new
/// address, and that sentinel rewrites `announce-ip`; this file keeps who the pod was.
fn identity_path(cfg: &Config) -> std::path::PathBuf {
    cfg.state_dir.join("served-as")
}

pub fn write_identity(cfg: &Config, addr: &crate::config::Endpoint) -> io::Result<()> {
    write_conf(&identity_path(cfg), &format!("{addr}\n"))
}

pub fn read_identity(cfg: &Config) -> Option<crate::config::Endpoint> {
    let t = fs::read_to_string(identity_path(cfg)).ok()?;
    crate::config::parse_endpoint("served-as", t.trim()).ok()
}

/// Present while this pod's data node runs, and after it stopped as master without handing the
/// role over: written when it starts, removed when it exits 0 as a replica or after a handover
/// (a clean shutdown writes and fsyncs its AOF). Found at boot, it says why the sentinels may
/// have a failover of this pod to make (UncleanStop).
fn data_node_marker_path(cfg: &Config) -> std::path::PathBuf {
    cfg.state_dir.join("data-node-running")
}

/// The marker's text after a clean stop that left the role where it was.
const NOT_HANDED_OVER: &str = "stopped-as-master-without-handover";

pub fn mark_data_node_running(cfg: &Config) -> io::Result<()> {
    write_conf(&data_node_marker_path(cfg), "running\n")
}

pub fn clear_data_node_running(cfg: &Config) {
    let _ = fs::remove_file(data_node_marker_path(cfg));
}

/// The data node exited 0 during a stop in which no handover moved the master role (failed, off,
/// or this pod was a replica: a replica's marker is never read, discover looks at it only when
/// this pod was master).
pub fn mark_stopped_without_handover(cfg: &Config) -> io::Result<()> {
    write_conf(&data_node_marker_path(cfg), &format!("{NOT_HANDED_OVER}\n"))
}

/// How the last data node of this pod ended, if that leaves a failover to make.
pub fn data_node_last_stop(cfg: &Config) -> Option<UncleanStop> {
    let text = fs::read_to_string(data_node_marker_path(cfg)).ok()?;
    Some(if text.trim() == NOT_HANDED_OVER {
        UncleanStop::NotHandedOver
    } else {
        UncleanStop::Crashed
    })
}

/// What this pod knew before, if anything (Prior).
pub fn read_prior(cfg: &Config) -> Option<Prior> {
    let text = read_prior_sentinel(cfg)?;
    let mut p = Prior::parse(&text, &cfg.group, cfg.redis_port)?;
    if let Some(id) = read_identity(cfg) {
        p.old_self = Some(id);
    }
    Some(p)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prior {
    pub epoch: u64,
    pub master: Endpoint,
    /// This pod's data node as the others knew it last time.
    pub old_self: Option<Endpoint>,
    /// Other sentinels it knew.
    pub known_sentinels: usize,
    /// How its data node ended last time, when that leaves the sentinels a failover to make
    /// (`None`: a clean stop, or a node that was handed over). Set at boot (main.rs); a restart
    /// of a crashed data node inside a running pod is handover::after_crash's.
    pub unclean_stop: Option<UncleanStop>,
}

/// Why a master that comes back must not take its role back while a replica is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UncleanStop {
    /// Killed or crashed, and the AOF is fsynced only every second: it may lack acknowledged
    /// writes its replicas hold.
    Crashed,
    /// Stopped cleanly as master but no handover moved the role (it failed, or is off). Its
    /// absence may already have started the others' failover of it, and Sentinel does not
    /// abort an elected failover because the master answers again: serving at once would
    /// acknowledge writes that failover then discards (the soak, seed 20261206: 94 lost).
    NotHandedOver,
}

impl UncleanStop {
    pub fn why(self) -> &'static str {
        match self {
            UncleanStop::Crashed => {
                "this pod stopped uncleanly as master: its AOF may lack acknowledged writes a \
                 live replica holds"
            }
            UncleanStop::NotHandedOver => {
                "this pod stopped as master without handing over: the sentinels may already be \
                 failing it over"
            }
        }
    }
}

impl Prior {
    /// `None` when the file holds no monitor line for the group: nothing was learned (first boot).
    pub fn parse(text: &str, group: &str, redis_port: u16) -> Option<Prior> {
        let master = crate::render::prior_monitor(text, group)?;
        let mut epoch = 0;
        let mut old_ip = None;
        let mut known = 0;
        for l in text.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["sentinel", "config-epoch", g, e] if *g == group => epoch = e.parse().unwrap_or(0),
                // Sentinel rewrites it quoted (sdscatrepr).
                ["sentinel", "announce-ip", ip] => old_ip = Some(ip.trim_matches('"')),
                ["sentinel", "known-sentinel", g, ..] if *g == group => known += 1,
                _ => {}
            }
        }
        let old_self = old_ip.and_then(|ip| {
            Some(Endpoint {
                host: crate::config::parse_host("sentinel.conf", ip).ok()?,
                port: redis_port,
            })
        });
        Some(Prior {
            epoch,
            master,
            old_self,
            known_sentinels: known,
            unclean_stop: None,
        })
    }

    pub fn was_master(&self) -> bool {
        self.old_self.as_ref() == Some(&self.master)
    }
}

impl fmt::Display for Prior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.was_master() {
            write!(f, "master at epoch {} (as {})", self.epoch, self.master)?;
            match self.unclean_stop {
                Some(UncleanStop::Crashed) => write!(f, ", stopped uncleanly")?,
                Some(UncleanStop::NotHandedOver) => write!(f, ", stopped without handing over")?,
                None => {}
            }
            Ok(())
        } else {
            write!(f, "replica of {} at epoch {}", self.master, self.epoch)
        }
    }
}
