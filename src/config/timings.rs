//! Every duration derived from the configured down-after and failover timeout, in one place and
//! with its reason. The raw values are Sentinel's own settings (rendered into sentinel.conf);
//! what PID 1 waits for is computed here only.

use std::time::Duration;

use super::Config;

/// What PID 1 derives from `down_after_ms` and `failover_timeout_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// Sentinel's TILT period as PID 1 sets it (follow::tune): one down-after, so that after it
    /// every live instance has answered again and the usual rule holds; at least 3 s (a TILT
    /// shorter than Sentinel's own 2 s stall threshold would end before the next check) and at
    /// most Sentinel's default 30 s.
    pub tilt_period: Duration,
    /// How long a master that stopped uncleanly waits for the sentinels to fail it over before
    /// it takes the role back with what its AOF holds (discover): the time a failover takes
    /// (s_down after down-after, o_down and an election within another down-after, then the
    /// failover timeout), and at least Sentinel's TILT default (30 s: a sentinel whose process
    /// was stalled acts on nothing for that long).
    pub unclean_master_wait: Duration,
    /// How long the cleanup waits, after a `SENTINEL RESET`, for its sentinel to rediscover its
    /// peers: sentinels come back through hello messages, replicas through the master's INFO;
    /// four down-afters (a peer slow enough to be near s_down still answers within that) and at
    /// least 20 s.
    pub rediscovery_bound: Duration,
}

impl Timings {
    pub fn of(down_after_ms: u64, failover_timeout_ms: u64) -> Timings {
        Timings {
            tilt_period: Duration::from_millis(tilt_period_ms(down_after_ms)),
            unclean_master_wait: Duration::from_millis(
                (2 * down_after_ms + failover_timeout_ms).max(30_000),
            ),
            rediscovery_bound: Duration::from_millis((down_after_ms * 4).max(20_000)),
        }
    }
}

/// See `Timings::tilt_period`.
pub fn tilt_period_ms(down_after_ms: u64) -> u64 {
    down_after_ms.clamp(3_000, 30_000)
}

/// The default of `REDISHA_MIN_REPLICAS_MAX_LAG`: an isolated master must stop accepting writes
/// no later than the majority starts a failover (down-after): writes it takes after that are
/// lost when it is demoted. Redis counts the lag in whole seconds, so one second less; at least
/// 2 s (a replica acknowledges every second) and at most an hour.
pub fn default_max_lag_s(down_after_ms: u64) -> u64 {
    (down_after_ms / 1000).saturating_sub(1).clamp(2, 3600)
}

/// The default of `REDISHA_OUTAGE_ELECT_MS`: the time Sentinel itself gives a dead master
/// (down-after) plus a failover's own bound: a master that comes back within it is followed as
/// before, no election happens.
pub fn default_outage_elect_ms(down_after_ms: u64, failover_timeout_ms: u64) -> u64 {
    down_after_ms + failover_timeout_ms
}

impl Config {
    /// The derived durations of this configuration.
    pub fn timings(&self) -> Timings {
        Timings::of(self.down_after_ms, self.failover_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values the modules computed each for itself before they were gathered here.
    #[test]
    fn derived_from_down_after_and_failover_timeout() {
        let s = Duration::from_secs;
        // (down-after, failover-timeout) -> (tilt, unclean wait, rediscovery, max lag, elect)
        let table = [
            ((5_000, 10_000), (s(5), s(30), s(20), 4, 15_000)),
            ((1_000, 3_000), (s(3), s(30), s(20), 2, 4_000)),
            ((30_000, 60_000), (s(30), s(120), s(120), 29, 90_000)),
            ((100, 1_000), (s(3), s(30), s(20), 2, 1_100)),
        ];
        for ((d, f), want) in table {
            let t = Timings::of(d, f);
            let got = (
                t.tilt_period,
                t.unclean_master_wait,
                t.rediscovery_bound,
                default_max_lag_s(d),
                default_outage_elect_ms(d, f),
            );
            assert_eq!(got, want, "down-after {d}, failover-timeout {f}");
        }
    }
}
