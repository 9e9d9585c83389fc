//! redisha-init: PID 1 of a Redis + Sentinel pod. See README.md for the architecture.

mod cleanup;
mod config;
mod discover;
mod engine;
mod exit;
mod follow;
mod handover;
mod logs;
mod memory;
mod metrics;
mod outage;
mod probe;
mod proxy;
mod redisio;
mod relay;
mod render;
mod render_acl;
mod sentinel;
mod splitvote;
mod state;
mod status;
mod status_acl;
mod supervise;
mod switchover;

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use config::Server;
use config::{Config, Flags, RawEnv};

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
    /// The cluster at a glance: every data node and sentinel, and a verdict. Exit 0 healthy,
    /// 1 degraded, 2 split or no master. From a laptop: --sentinels host:port,...
    Status {
        /// The same data as JSON
        #[arg(long)]
        json: bool,
        /// Per-server budget (connect and every query); the whole look takes at most 3 times it
        #[arg(long, default_value_t = 600)]
        timeout_ms: u64,
    },
    /// A planned master move through Sentinel, without stopping anything (the SIGTERM
    /// handover: pause writes, replicas catch up, failover, unpause). Exit 0 done, 1 failed,
    /// 3 not failover-safe, 4 a failover is running, 5 --to is not a healthy replica.
    Switchover {
        /// The replica to promote (HOST:PORT); the others get replica-priority 0 meanwhile
        #[arg(long, value_name = "HOST:PORT")]
        to: Option<String>,
        /// Give up (and undo every change) after this many seconds
        #[arg(long, value_name = "S", default_value_t = 10.0)]
        timeout: f64,
    },
    /// The master proxy (PID 1 starts it when REDISHA_MASTER_PROXY_PORT is set): forwards every
    /// connection on that port to the master the sentinels name.
    Proxy,
}

#[derive(Args, Debug)]
struct ProbeArgs {
    /// Which server of this pod to check
    #[arg(value_enum)]
    server: Server,
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

/// The global flags, one per flagged variable of `config::VARS`: name, help and default come from
/// that table, so a new setting is declared in one place.
#[derive(Debug, Default)]
struct Opts(Flags);

impl clap::FromArgMatches for Opts {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut f = Flags::default();
        for v in config::VARS {
            if let Some(flag) = v.flag {
                if let Some(x) = m.get_one::<String>(&flag[2..]) {
                    f.set(v.name, x.clone());
                }
            }
        }
        Ok(Opts(f))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for Opts {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        config::VARS.iter().fold(cmd, |cmd, v| match v.flag {
            Some(flag) => cmd.arg(
                clap::Arg::new(&flag[2..])
                    .long(&flag[2..])
                    .global(true)
                    .value_name("VALUE")
                    .help(format!("{} (env {}, default {})", v.doc, v.name, v.default)),
            ),
            None => cmd,
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

fn fail(code: i32, msg: impl std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "redisha-init: {msg}");
    ExitCode::from(code as u8)
}

fn main() -> ExitCode {
    // One malloc arena for every thread: the log pumps and the appender's worker would each get
    // their own (glibc makes one per thread, up to 8 per core), each with pages touched for a few
    // small allocations; PID 1 allocates little and rarely, so there is no contention to avoid.
    // SAFETY: mallopt only sets a malloc tunable; no thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let mut env = match RawEnv::from_os(std::env::vars_os()) {
        Ok(e) => e,
        Err(e) => return fail(exit::CONFIG, format_args!("config error: {e}")),
    };
    env.hostname = config::kernel_hostname();
    let cmd = cli.cmd.unwrap_or(Cmd::Run);
    let mut flags = cli.opts.0;
    // A probe checks this pod's servers by port, the operator tools the whole cluster; the role
    // does not matter to them.
    if matches!(
        cmd,
        Cmd::Probe(_) | Cmd::Status { .. } | Cmd::Switchover { .. } | Cmd::Proxy
    ) && flags.get("REDISHA_ROLE").is_none()
        && env.get("REDISHA_ROLE").is_none()
    {
        flags.set("REDISHA_ROLE", "master");
    }
    let mut cfg = match config::build(&flags, &env) {
        Ok(c) => c,
        Err(e) => return fail(exit::CONFIG, format_args!("config error: {e}")),
    };
    if matches!(cmd, Cmd::Run | Cmd::Render) {
        cfg.memory = memory::detect();
    }
    let bases = match render::Bases::load(cfg.conf_dir.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            return fail(
                exit::CONFIG,
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
        Err(e) => return fail(exit::OSERR, format_args!("cannot start the runtime: {e}")),
    };
    let code = match cmd {
        Cmd::Probe(p) => rt.block_on(run_probe(&cfg, &p)),
        Cmd::Render => rt.block_on(print_render(&cfg, &bases)),
        Cmd::Promote { force } => rt.block_on(promote(&cfg, force)),
        Cmd::Status { json, timeout_ms } => rt.block_on(status::run(
            &cfg,
            json,
            std::time::Duration::from_millis(timeout_ms.clamp(50, 60_000)),
        )),
        Cmd::Switchover { to, timeout } => {
            if !(timeout.is_finite() && (1.0..=600.0).contains(&timeout)) {
                return fail(
                    exit::USAGE,
                    format_args!("switchover: --timeout {timeout}: expected 1..600 seconds"),
                );
            }
            // The handover's steps log through tracing: the operator sees them on stderr.
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_ansi(false)
                .try_init();
            let code = rt.block_on(switchover::run(
                &cfg,
                to.as_deref(),
                std::time::Duration::from_secs_f64(timeout),
            ));
            metrics::record_switchover(&cfg, code);
            code
        }
        Cmd::Run => rt.block_on(run(cfg, bases)),
        Cmd::Proxy => rt.block_on(proxy::run(cfg)),
    };
    // A getaddrinfo still running on a blocking thread (a Service name while DNS is down) must
    // not hold up the exit of PID 1: its answer is no longer wanted.
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::from(code.clamp(0, 255) as u8)
}

async fn run_probe(cfg: &Config, p: &ProbeArgs) -> i32 {
    let (kind, name) = (p.server, p.server.name());
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
        return exit::USAGE;
    }
    let t = std::time::Duration::from_millis(500);
    if redisio::repl(&cfg.conn, &cfg.own(Server::Redis), t)
        .await
        .is_ok()
    {
        let _ = writeln!(
            std::io::stderr(),
            "redisha-init promote: this pod's redis is running, so no role decision is waiting; nothing to promote"
        );
        return exit::REFUSED;
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
            exit::CANTCREAT
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
            return exit::TEMPFAIL;
        }
    };
    let prior = state::read_prior_sentinel(cfg);
    // The argument lists `run` would use (valkey-server where PATH has no redis-server); a PATH
    // lookup only, nothing started. Nothing found: the configured name, as `run` would refuse.
    let mut found = cfg.clone();
    if let Ok(exe) =
        supervise::child::find_server(&cfg.redis_server, std::env::var_os("PATH").as_deref())
    {
        found.redis_server = exe;
    }
    let cfg = &found;
    let plan = render::render(cfg, d.role, &d.master, bases, prior.as_deref());
    let argv = |a: &[std::ffi::OsString]| {
        a.iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut out = String::new();
    out.push_str(&format!("# role: {d}\n"));
    out.push_str(&format!("# memory: {}; {}\n", cfg.memory, plan.maxmemory));
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
            return exit::OSERR;
        }
    };
    let _log_guard = logs::init_tracing(cfg.log_format);
    tracing::info!(memory = %cfg.memory, "container memory");
    let cleanup_settings = cleanup::Settings::from_config(&cfg);
    // Owner-only for everything we and the children create: rendered configs hold secrets, and
    // Sentinel rewrites its file with the process umask.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut cfg = cfg;
    match supervise::child::find_server(&cfg.redis_server, std::env::var_os("PATH").as_deref()) {
        Ok(exe) => cfg.redis_server = exe,
        Err((code, msg)) => {
            let _ = writeln!(std::io::stderr(), "redisha-init: {msg}");
            return code;
        }
    }
    // Bound before anything starts: a port taken is one line and nothing half started.
    let metrics = match metrics::bind(&cfg) {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "redisha-init: REDISHA_METRICS_PORT: cannot listen: {e}"
            );
            return exit::OSERR;
        }
    };
    if let Err(e) = state::prepare(&cfg) {
        let _ = writeln!(
            std::io::stderr(),
            "redisha-init: cannot create state directory {}: {e} (REDISHA_STATE_DIR)",
            cfg.state_dir.display()
        );
        return exit::CANTCREAT;
    }
    metrics::load(&cfg);
    // Not PID 1 (a laptop): become a subreaper so orphaned grandchildren are still ours to reap.
    if std::process::id() != 1 {
        let _ = nix::sys::prctl::set_child_subreaper(true);
    }
    let mut chan = chan;
    // What this pod knew before (Sentinel's own file): with it, this is no first boot.
    let mut prior = state::read_prior(&cfg);
    if let Some(p) = prior.as_mut() {
        // With `appendfsync always` the AOF holds every acknowledged write whatever the stop;
        // a master that was not handed over may be being failed over whatever its AOF holds.
        p.unclean_stop = state::data_node_last_stop(&cfg)
            .filter(|u| !cfg.strict_durability || *u == state::UncleanStop::NotHandedOver);
        tracing::info!(prior = %p, "the state directory holds what this pod knew; it decides only with a majority of the sentinels");
        let mut listed: Vec<&config::Endpoint> = Vec::new();
        for s in &cfg.sentinels {
            if !listed.contains(&s) {
                listed.push(s);
            }
        }
        // A container restarted inside the same pod keeps its address and its emptyDir (the
        // seed layout keeps no state across pods, but does across a PID 1 restart: a liveness
        // kill, a spent restart budget); it decides with the majority it can reach, as before.
        // Only state carried to a new address (a volume, a rescheduled pod) is refused.
        let same_pod = p.old_self.as_ref() == Some(&cfg.own(Server::Redis));
        if let Some(msg) = outage::short_list(listed.len(), p).filter(|_| !same_pod) {
            tracing::error!(reason = %msg, "refusing to start");
            logs::drain(std::time::Duration::from_millis(200));
            let _ = writeln!(std::io::stderr(), "redisha-init: {msg}");
            return exit::CONFIG;
        }
    }
    if let Some(l) = metrics {
        tokio::spawn(metrics::serve(cfg.clone(), l));
    }
    let boot = tokio::select! {
        d = discover::decide(&cfg, false, discover::Patience::Boot, prior.as_ref()) => match (d, prior) {
            (Ok(d), p) => {
                tracing::info!(role = %d.role, master = %d.master, reason = %d.reason, "role decided");
                if let Some(p) = p.as_ref() {
                    outage::report_dropped_tail(&cfg, p, d.role, &d.master).await;
                }
                supervise::Boot::Decided(d)
            }
            (Err(discover::Undecided::NeedsOwnSentinel(why)), Some(p)) => {
                tracing::warn!(reason = %why, "role not decided; starting the sentinel first so the other pods see what this one knew");
                supervise::Boot::SentinelFirst(p)
            }
            (Err(why), _) => {
                tracing::error!(reason = %why, "cannot decide the role; nothing was started");
                return exit::TEMPFAIL;
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
    // The replica base file: a data node's priority matters only while it is a replica.
    let base_priority = engine::base_priority(&bases.redis_replica);
    let tx = chan.0.clone();
    let cleanup = tokio::spawn(follow::run(
        cfg.clone(),
        cleanup_settings,
        base_priority,
        Box::new(move |master| {
            let _ = tx.send(supervise::Event::SentinelStale(master));
        }),
    ));
    // What an election after a full outage compares (outage.rs): lives as long as PID 1.
    tokio::spawn(outage::record_offsets(cfg.clone()));
    // A first boot: the sentinel gets every configured pod's data node as a known replica
    // (render::with_known_replicas says why).
    let first_boot_replicas = match &boot {
        supervise::Boot::Decided(d) if state::read_prior_sentinel(&cfg).is_none() => {
            let me = cfg.own(Server::Redis);
            redisio::resolved_all(&cfg.sentinels)
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
    let cfg_for_save = cfg.clone();
    let code = supervise::Supervisor::new(cfg, bases, boot, chan)
        .with_first_boot_replicas(first_boot_replicas)
        .with_companion(cleanup)
        .run()
        .await;
    metrics::save(&cfg_for_save);
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
