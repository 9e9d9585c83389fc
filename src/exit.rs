//! Every exit code of redisha-init in one place. PID 1 returns these (or a child's own code when
//! a child fails beyond its restart budget); the subcommands too. The README's "Exit codes" table
//! lists the same numbers; a test below reads it, so neither can drift alone. sysexits.h numbers
//! where one fits.

/// A requested stop, both children gone within the grace; a probe that passes.
pub const OK: i32 = 0;
/// `promote --force` with nothing to promote (this pod's redis is running).
pub const REFUSED: i32 = 1;
/// Malformed command line (EX_USAGE).
pub const USAGE: i32 = 64;
/// The runtime or the signal handlers could not be set up (EX_OSERR).
pub const OSERR: i32 = 71;
/// The state directory cannot be created (EX_CANTCREAT).
pub const CANTCREAT: i32 = 73;
/// The role could not be decided within the discovery budget although sentinels are there
/// (EX_TEMPFAIL): starting with a guessed role could make a second master.
pub const TEMPFAIL: i32 = 75;
/// Invalid configuration; one line on stderr names the variable (EX_CONFIG).
pub const CONFIG: i32 = 78;
/// redis-server is there but not executable (the shell's convention).
pub const NOEXEC: i32 = 126;
/// redis-server not found (the shell's convention).
pub const NOTFOUND: i32 = 127;
/// A requested stop that needed SIGKILL at the end of the grace (128 + 9).
pub const KILLED: i32 = 128 + libc::SIGKILL;

// The operator commands (`status`, `switchover`): their own small codes, as patronictl has.
/// `status`: a master serves but something is down, lagging or not failover-safe.
pub const DEGRADED: i32 = 1;
/// `status`: two masters, sentinels disagreeing at one epoch, or no master.
pub const SPLIT: i32 = 2;
/// `switchover`: attempted and failed or timed out; every change undone.
pub const FAILED: i32 = 1;
/// `switchover` refused: the cluster is not failover-safe.
pub const NOT_SAFE: i32 = 3;
/// `switchover` refused: a failover is already running.
pub const IN_PROGRESS: i32 = 4;
/// `switchover` refused: the `--to` node is not a healthy replica.
pub const BAD_CANDIDATE: i32 = 5;
/// `switchover` interrupted (SIGINT/SIGTERM) before the failover was asked for (128 + 2).
pub const INTERRUPTED: i32 = 128 + libc::SIGINT;

/// Every code above, for the README check.
#[cfg(test)]
pub const ALL: &[i32] = &[
    OK,
    REFUSED,
    USAGE,
    OSERR,
    CANTCREAT,
    TEMPFAIL,
    CONFIG,
    NOEXEC,
    NOTFOUND,
    KILLED,
    DEGRADED,
    SPLIT,
    FAILED,
    NOT_SAFE,
    IN_PROGRESS,
    BAD_CANDIDATE,
    INTERRUPTED,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The code cells of the README's exit-code tables: the first cell, or the second where the
    /// first names an operator command; "126 / 127" is two codes.
    fn readme_codes() -> Vec<i32> {
        let readme = include_str!("../README.md");
        let section = readme
            .split("### Exit codes")
            .nth(1)
            .and_then(|s| s.split("\n## ").next())
            .expect("README has an Exit codes section");
        section
            .lines()
            .filter(|l| l.starts_with('|'))
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let first = cells.get(1)?;
                if first.starts_with('`') {
                    cells.get(2).copied()
                } else {
                    Some(*first)
                }
            })
            .flat_map(|cell| {
                cell.split('/')
                    .filter_map(|c| c.trim().parse::<i32>().ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn readme_table_lists_exactly_these_codes() {
        let mut documented = readme_codes();
        documented.sort_unstable();
        documented.dedup();
        let mut ours = ALL.to_vec();
        ours.sort_unstable();
        ours.dedup();
        assert_eq!(documented, ours, "README's Exit codes table vs src/exit.rs");
    }
}
