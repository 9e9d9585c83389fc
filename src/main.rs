//! redisha-init: PID 1 of a Redis + Sentinel pod. See README.md for the architecture.

mod cleanup;
mod config;
mod discover;
mod follow;
mod handover;
mod logs;
mod probe;
mod redisio;
mod render;
mod state;
mod supervise;

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use config::{Config, Flags, RawEnv, EXIT_CONFIG};

/// EX_USAGE: the command line itself is malformed.
const EXIT_USAGE: i32 = 64;
/// EX_TEMPFAIL: the sentinels are there but refuse us; an orchestrator's restart may succeed.
const EXIT_TEMPFAIL: i32 = 75;

#[derive(Parser, Debug)]
#[command(
    name = "redisha-init",
    version,
    about = "PID 1 for a Redis + Sentinel pod: discover the role, render the configs, supervise both"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Decide the role, render the configs, start redis and sentinel and supervise them (default).
    Run,
    /// Print what `run` would start (both files, both argument lists); start and write nothing.
    Render,
    /// Health check for Kubernetes exec probes and Docker HEALTHCHECK: exit 0 healthy, 1 not.
    Probe(ProbeArgs),
    /// Operator override for a pod that waits for a majority that will never come back: make it
    /// master with what it holds, accepting that newer writes elsewhere are lost. Needs --force.
    Promote {
        /// I accept losing acknowledged writes that only the absent pods hold
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args, Debug)]
struct ProbeArgs {
    /// Which server of this pod to check
    #[arg(value_enum)]
    server: ProbeServer,
    /// Liveness: PONG, LOADING and MASTERDOWN count as alive
    #[arg(long, conflicts_with = "ready", required_unless_present = "ready")]
    live: bool,
    /// Readiness: PONG and, on a replica, master link up and no initial sync; a sentinel must name a master
    #[arg(long)]
    ready: bool,
    /// Give up after this long
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ProbeServer {
    Redis,
    Sentinel,
}

#[derive(Args, Debug, Default)]
struct Opts {
    /// master or replica (env REDISHA_ROLE). The sentinels' answer wins when they know a master.
    #[arg(long, global = true)]
    role: Option<String>,
    /// Sentinels asked at boot, host:port,... (env REDISHA_SENTINELS)
    #[arg(long, global = true)]
    sentinels: Option<String>,
    /// Where rendered files, Sentinel's state and the data live (env REDISHA_STATE_DIR)
    #[arg(long, global = true)]
    state_dir: Option<String>,
    /// Directory with your own redis-master.conf, redis-replica.conf, sentinel.conf (env REDISHA_CONF_DIR)
    #[arg(long, global = true)]
    conf_dir: Option<String>,
    /// Sentinel master group name (env REDISHA_MASTER_GROUP, default mymaster)
    #[arg(long, global = true)]
    master_group: Option<String>,
    /// Sentinel quorum (env REDISHA_QUORUM, default 2)
    #[arg(long, global = true)]
    quorum: Option<String>,
    /// env REDISHA_DOWN_AFTER_MS, default 5000
    #[arg(long, global = true)]
    down_after_ms: Option<String>,
    /// env REDISHA_FAILOVER_TIMEOUT_MS, default 10000
    #[arg(long, global = true)]
    failover_timeout_ms: Option<String>,
    /// env REDISHA_PARALLEL_SYNCS, default 1
    #[arg(long, global = true)]
    parallel_syncs: Option<String>,
    /// env REDISHA_MIN_REPLICAS_TO_WRITE, default 1 in a pod, 0 locally
    #[arg(long, global = true)]
    min_replicas_to_write: Option<String>,
    /// env REDISHA_MIN_REPLICAS_MAX_LAG, default 10
    #[arg(long, global = true)]
    min_replicas_max_lag: Option<String>,
    /// text or json (env REDISHA_LOG_FORMAT)
    #[arg(long, global = true)]
    log_format: Option<String>,
    /// Time from SIGTERM to SIGKILL of what is left (env REDISHA_STOP_GRACE_MS, default 8000)
    #[arg(long, global = true)]
    stop_grace_ms: Option<String>,
    /// redis-server executable (env REDISHA_REDIS_SERVER, default from PATH)
    #[arg(long, global = true)]
    redis_server: Option<String>,
    /// Hand the master role over before stopping: yes/no (env REDISHA_HANDOVER, default yes)
    #[arg(long, global = true)]
    handover: Option<String>,
}

impl Opts {
    fn flags(self) -> Flags {
        Flags {
            role: self.role,
            sentinels: self.sentinels,
            state_dir: self.state_dir,
            conf_dir: self.conf_dir,
            master_group: self.master_group,
            quorum: self.quorum,
            down_after_ms: self.down_after_ms,
            failover_timeout_ms: self.failover_timeout_ms,
            parallel_syncs: self.parallel_syncs,
            min_replicas_to_write: self.min_replicas_to_write,
            min_replicas_max_lag: self.min_replicas_max_lag,
            log_format: self.log_format,
            stop_grace_ms: self.stop_grace_ms,
            redis_server: self.redis_server,
            handover: self.handover,
        }
    }
}

fn fail(code: i32, msg: impl std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "redisha-init: {msg}");
    ExitCode::from(code as u8)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let env = match RawEnv::from_os(std::env::vars_os()) {
        Ok(e) => e,
        Err(e) => return fail(EXIT_CONFIG, format_args!("config error: {e}")),
    };
    let cmd = cli.cmd.unwrap_or(Cmd::Run);
    let mut flags = cli.opts.flags();
    // A probe checks this pod's servers by port; the role does not matter to it.
    if matches!(cmd, Cmd::Probe(_)) && flags.role.is_none() && env.redisha_role.is_none() {
        flags.role = Some("master".into());
    }
    let cfg = match config::build(&flags, &env) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_CONFIG, format_args!("config error: {e}")),
    };
    let bases = match render::Bases::load(cfg.conf_dir.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            return fail(
                EXIT_CONFIG,
                format_args!("config error: REDISHA_CONF_DIR: cannot read base files: {e}"),
            )
        }
    };
    // One thread: the supervisor is one event loop; log forwarding has its own small threads.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(71, format_args!("cannot start the runtime: {e}")),
    };
    let code = match cmd {
        Cmd::Probe(p) => rt.block_on(run_probe(&cfg, &p)),
        Cmd::Render => rt.block_on(print_render(&cfg, &bases)),
        Cmd::Promote { force } => rt.block_on(promote(&cfg, force)),
        Cmd::Run => rt.block_on(run(cfg, bases)),
    };
    // A getaddrinfo still running on a blocking thread (a Service name while DNS is down) must
    // not hold up the exit of PID 1: its answer is no longer wanted.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::from(code.clamp(0, 255) as u8)
}

async fn run_probe(cfg: &Config, p: &ProbeArgs) -> i32 {
    let (kind, name) = match p.server {
        ProbeServer::Redis => (probe::Kind::Redis, "redis"),
        ProbeServer::Sentinel => (probe::Kind::Sentinel, "sentinel"),
    };
    let mode = if p.ready {
        probe::Mode::Ready
    } else {
        probe::Mode::Live
    };
    match probe::run(
        cfg,
        kind,
        mode,
        std::time::Duration::from_millis(p.timeout_ms.max(1)),
    )
    .await
    {
        Ok(()) => 0,
        Err(why) => {
            let what = if p.ready { "not ready" } else { "not live" };
            let _ = writeln!(
                std::io::stderr(),
                "redisha-init probe: {name} {what}: {why}"
            );
            1
        }
    }
}

/// Leaves the request in the state directory, where the waiting role decision of this pod's
/// PID 1 picks it up (discover.rs); refuses when this pod's redis already runs (nothing waits).
async fn promote(cfg: &Config, force: bool) -> i32 {
    if !force {
        let _ = writeln!(
            std::io::stderr(),
            "redisha-init promote: this makes a waiting pod master with what it holds and discards acknowledged writes that only the absent pods have; run it again with --force if that is your decision"
        );
        return EXIT_USAGE;
    }
    let t = std::time::Duration::from_millis(500);
    if redisio::repl(cfg, &cfg.local(cfg.redis_port), t)
        .await
        .is_ok()
    {
        let _ = writeln!(
            std::io::stderr(),
            "redisha-init promote: this pod's redis is running, so no role decision is waiting; nothing to promote"
        );
        return 1;
    }
    match state::request_promotion(cfg) {
        Ok(path) => {
            let _ = writeln!(
                std::io::stdout(),
                "redisha-init promote: requested ({}); the waiting pod becomes master within a second and logs what it discards",
                path.display()
            );
            0
        }
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "redisha-init promote: cannot write the request into {}: {e}",
                cfg.state_dir.display()
            );
            state::EXIT_CANTCREAT
        }
    }
}

async fn print_render(cfg: &Config, bases: &render::Bases) -> i32 {
    let prior = state::read_prior(cfg);
    let d = match discover::decide(
        cfg,
        prior.is_some(),
        discover::Patience::Boot,
        prior.as_ref(),
    )
    .await
    {
        Ok(d) => d,
        Err(why) => {
            let _ = writeln!(
                std::io::stderr(),
                "redisha-init: cannot decide the role: {why}"
            );
            return EXIT_TEMPFAIL;
        }
    };
    let prior = state::read_prior_sentinel(cfg);
    let plan = render::render(cfg, d.role, &d.master, bases, prior.as_deref());
    let argv = |a: &[std::ffi::OsString]| {
        a.iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = String::new();
    out.push_str(&format!("# role: {d}\n"));
    out.push_str(&format!("# redis argv: {}\n", argv(&plan.redis_argv)));
    out.push_str(&format!("# sentinel argv: {}\n", argv(&plan.sentinel_argv)));
    out.push_str(&format!(
        "# ==> {} <==\n{}",
        plan.redis_conf_path.display(),
        render::redact(&plan.redis_conf)
    ));
    out.push_str(&format!(
        "# ==> {} <==\n{}",
        plan.sentinel_conf_path.display(),
        render::redact(&plan.sentinel_conf)
    ));
    let _ = std::io::stdout().write_all(out.as_bytes());
    0
}

async fn run(cfg: Config, bases: render::Bases) -> i32 {
    // Signals first: PID 1 ignores any signal it has no handler for.
    let chan = match supervise::install_signals() {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "redisha-init: cannot install signal handlers: {e}"
            );
            return 71;
        }
    };
    let _log_guard = logs::init_tracing(cfg.log_format);
    let cleanup_settings = match cleanup::Settings::from_env(&cfg) {
        Ok(st) => st,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "redisha-init: config error: {e}");
            return EXIT_CONFIG;
        }
    };
    // Owner-only for everything we and the children create: rendered configs hold secrets, and
    // Sentinel rewrites its file with the process umask.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    if let Err((code, msg)) =
        supervise::child::check_executable(&cfg.redis_server, std::env::var_os("PATH").as_deref())
    {
        let _ = writeln!(std::io::stderr(), "redisha-init: {msg}");
        return code;
    }
    if let Err(e) = state::prepare(&cfg) {
        let _ = writeln!(
            std::io::stderr(),
            "redisha-init: cannot create state directory {}: {e} (REDISHA_STATE_DIR)",
            cfg.state_dir.display()
        );
        return state::EXIT_CANTCREAT;
    }
    // Not PID 1 (a laptop): become a subreaper so orphaned grandchildren are still ours to reap.
    if std::process::id() != 1 {
        let _ = nix::sys::prctl::set_child_subreaper(true);
    }
    let mut chan = chan;
    // What this pod knew before (Sentinel's own file): with it, this is no first boot.
    let mut prior = state::read_prior(&cfg);
    if let Some(p) = prior.as_mut() {
        // With `appendfsync always` the AOF holds every acknowledged write whatever the stop.
        p.unclean_stop = !cfg.strict_durability && state::data_node_stopped_uncleanly(&cfg);
        tracing::info!(prior = %p, "the state directory holds what this pod knew; it decides only with a majority of the sentinels");
    }
    let boot = tokio::select! {
        d = discover::decide(&cfg, false, discover::Patience::Boot, prior.as_ref()) => match (d, prior) {
            (Ok(d), _) => {
                tracing::info!(role = %d.role, master = %d.master, reason = %d.reason, "role decided");
                supervise::Boot::Decided(d)
            }
            (Err(discover::Undecided::NeedsOwnSentinel(why)), Some(p)) => {
                tracing::warn!(reason = %why, "role not decided; starting the sentinel first so the other pods see what this one knew");
                supervise::Boot::SentinelFirst(p)
            }
            (Err(why), _) => {
                tracing::error!(reason = %why, "cannot decide the role; nothing was started");
                return EXIT_TEMPFAIL;
            }
        },
        sig = wait_stop(&mut chan.1) => {
            tracing::info!(signal = supervise::signal_name(sig), "stop requested before start; nothing was started");
            return 0;
        }
    };
    // The companion: our redis follows the master the sentinels name (on their events), our
    // sentinel's periods are tuned, stale entries are cleaned on a slow timer (follow.rs,
    // cleanup.rs). It lives as long as the supervisor serves.
    let cleanup = tokio::spawn(follow::run(cfg.clone(), cleanup_settings));
    // A first boot: the sentinel gets every configured pod's data node as a known replica
    // (render::with_known_replicas says why).
    let first_boot_replicas = match &boot {
        supervise::Boot::Decided(d) if state::read_prior_sentinel(&cfg).is_none() => {
            let me = cfg.self_redis();
            discover::resolved_all(&cfg.sentinels)
                .await
                .into_iter()
                .map(|s| config::Endpoint {
                    host: s.host,
                    port: cfg.redis_port,
                })
                .filter(|r| *r != d.master && !(d.role == config::Role::Master && *r == me))
                .collect()
        }
        _ => Vec::new(),
    };
    let code = supervise::Supervisor::new(cfg, bases, boot, chan)
        .with_first_boot_replicas(first_boot_replicas)
        .with_companion(cleanup)
        .run()
        .await;
    logs::drain(std::time::Duration::from_millis(500));
    code
}

/// Waits for TERM/INT while nothing runs yet (other signals have nobody to go to).
async fn wait_stop(rx: &mut tokio::sync::mpsc::UnboundedReceiver<supervise::Event>) -> i32 {
    while let Some(ev) = rx.recv().await {
        if let supervise::Event::Signal(sig @ (libc::SIGTERM | libc::SIGINT)) = ev {
            return sig;
        }
    }
    libc::SIGTERM
}
