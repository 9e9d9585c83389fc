"""HA under races: a graceful stop (SIGTERM, the handover) or a SIGKILL of the master pod fired
EARLY (0.5 s after the cluster first answers, from a cold start with fresh state dirs: the
sentinels may not know every replica and peer yet) and in STEADY state (after settle()).

first_answering = one node role:master and every other pod its linked, synced replica (what a
readiness probe sees); failover-safe = every live sentinel also knows every replica and every
other sentinel (Cluster.failover_safe). The gap between the two is the race window.

Each test collects every failed expectation and asserts them together at the end, so a failure
names all its numbers; each writes `RACE ...` lines to tests/ha/results.txt (harness.record).

    REDISHA_RACE_ROUNDS (default 5)  rounds of test_graceful_stop_repeated
    REDISHA_RACE_SEED                its RNG seed (printed and recorded; random by default)

test_graceful_stop_of_master ends with settle() on the two pods left (the stopped pod stays
down): one master, the other pod its replica, both sentinels agree and have dropped the stopped
pod's address (the stale-entry cleanup). Restarting the pod instead costs one more sentinel
reset round (~10 s per variant) and its rejoin is scenario 3/6's subject. The SIGKILL tests end
at the failover (test_scenarios.py covers the rest).
"""

from __future__ import annotations

import os
import random
import shutil
import time

import pytest

import harness
from harness import (DOWN_AFTER, Writer, cold_start, info_replication, record, stop_gap,
                     stop_master_and_watch)
from rhtest import finish_apps, start_apps, wait_until

EARLY_OFFSET = 0.5   # s after first_answering: "early" (the issue: within 1 s)
MAX_GAP = 2.0        # s without an acknowledged write around a graceful stop
# Failed requests an application meets in a graceful stop, by its retry policy
# (tests/app/appwriter.py): with redis-py's default (master_for retries nothing) and with its
# documented one retry (which goes back to the old address, redis-py #3874) the write in flight
# when the master is demoted fails, one per connection, a floor no server can lift; a retry that
# asks Sentinel again reaches the new master, which the handover has every sentinel name before
# it demotes the old one: nothing fails.
APP_FAILED_MAX = {"default": 1, "retry1": 1, "rediscover": 0}
FAILOVER_MARGIN = 2.0  # s beyond down-after for a SIGKILL failover
REPLICAS_FOLLOW = 2.0  # s from the sentinels naming the new master to every replica linked to it
ASYNC_LOSS_MAX = 5   # writes a SIGKILL may lose from the asynchronous-replication window
FAILOVER_SAFE_MAX = 3.0  # s from first answer to failover-safe (issue target 2 s; CI margin)
STOP_OFFSET_MAX = 15.0   # s: random SIGTERM offsets of the repeated test are uniform in [0, 15]


@pytest.fixture(autouse=True, scope="module")
def leave_clean(cluster):
    """Other modules expect pods they can start: leave none running and no state behind."""
    yield
    for p in cluster.pods:
        if p.alive:
            cluster.kill_pod(p.idx)
        shutil.rmtree(p.state_dir, ignore_errors=True)


def start_and_reach(c, when: str, key: str) -> tuple[Writer, float]:
    """Cold start, writer started at the first answer, then wait for the moment `when`
    ("early": EARLY_OFFSET after the first answer; "steady": settle() and 1 s of writes).
    Returns (writer, monotonic time of the first answer)."""
    t_fa = cold_start(c)
    w = Writer(c, key)
    w.start()
    if when == "early":
        time.sleep(max(0.0, t_fa + EARLY_OFFSET - time.monotonic()))
    else:
        c.settle(60, "a settled cluster (steady state)")
        time.sleep(1.0)
    return w, t_fa


def lost_on(c, w: Writer, res, ip: str | None) -> list[int] | None:
    """Acknowledged writes missing on `ip` (the final master); None if there is none."""
    if ip is None:
        return None
    try:
        return w.count_lost(res, ip)
    except Exception as e:
        harness.log(f"could not read the writes back from {ip}: {e}")
        return None


def switch_problems(counts: dict[str, int]) -> list[str]:
    return [f"{name}'s sentinel logged +switch-master {n} times after the stop (want 1)"
            for name, n in counts.items() if n != 1]


def test_failover_safe_after_cold_start(cluster):
    """Time from the first answer to failover-safe on a cold start (target 2 s)."""
    c = cluster
    t_fa = cold_start(c)
    tfs = c.time_to_failover_safe(30, t0=t_fa)
    record(f"RACE failover-safe cold-start: time_to_failover_safe="
           f"{'never(>30s)' if tfs is None else f'{tfs:.2f}s'} (target 2 s, asserted "
           f"<= {FAILOVER_SAFE_MAX} s)")
    assert tfs is not None, "the sentinels never came to know every replica and peer in 30 s"
    assert tfs <= FAILOVER_SAFE_MAX, f"failover-safe {tfs:.2f}s after the first answer"


@pytest.mark.parametrize("when", ["early", "steady"])
def test_graceful_stop_of_master(cluster, when):
    """SIGTERM of the master pod: 0 acknowledged writes lost, one +switch-master per surviving
    sentinel, write gap < 2 s; then every invariant on the two pods left."""
    c = cluster
    w, t_fa = start_and_reach(c, when, f"race:stop:{when}")
    fails: list[str] = []
    m = None
    # The application as users run it (issue 30): redis-py 8.2's Sentinel client as documented,
    # with timeouts and the library's defaults (tests/app/appwriter.py).
    apps = start_apps(c.sentinel_addrs, f"race:stop:{when}:app", APP_FAILED_MAX,
                      password=c.security.password)
    try:
        # No extra watch: settle() below outlasts it, and the lines are counted after it.
        out = stop_master_and_watch(c, watch=0)
        try:
            m, _, settle_s = c.settle(40, "invariants with the two pods left after the stop")
        except AssertionError as e:
            fails.append(str(e).split("\n")[0])
            m, settle_s = c.current_master(), None
        t_end = time.monotonic()
    finally:
        res = w.finish()
        app = finish_apps(apps)
    for mode, r in app.items():
        failed = r.failed_between(out.t_stop, t_end)
        app_gap = stop_gap(r.acked, out.t_stop, t_end)
        try:
            app_lost = None if m is None else w.lost_on(m, r.acked, key=r.key)
        except Exception as e:
            harness.log(f"could not read the app's writes back from {m}: {e}")
            app_lost = None
        record(f"RACE graceful-stop {when} app(redis-py {r.redis_py}, {mode}): "
               f"gap={app_gap:.2f}s failed={len(failed)} "
               f"lost={'?' if app_lost is None else len(app_lost)} acked={len(r.acked)} "
               f"inflight_for={'-' if r.inflight is None else f'{t_end - r.inflight[1]:.1f}s'} "
               f"failures_at={[(round(f[1] - out.t_stop, 2), f[2][:40]) for f in failed[:8]]}")
        if app_lost:
            fails.append(f"app(retry={mode}): {len(app_lost)} acknowledged writes lost: "
                         f"{app_lost[:10]}")
        # More than the floor means the application was sent to the old master after the pause
        # lifted, or its retry found the sentinels still naming it.
        if len(failed) > APP_FAILED_MAX[mode]:
            fails.append(f"app({mode}): {len(failed)} failed requests during the stop (> "
                         f"{APP_FAILED_MAX[mode]}): {[f[2] for f in failed[:4]]}")
        if r.inflight is not None and t_end - r.inflight[1] > MAX_GAP:
            fails.append(f"app: a request still under way after {t_end - r.inflight[1]:.1f}s")
        if app_gap >= MAX_GAP:
            fails.append(f"app: write gap {app_gap:.2f}s >= {MAX_GAP}s")
    counts = c.count_switch_master(out.survivors, since=out.marks)  # up to the end of settle
    gap = stop_gap(res.acked, out.t_stop, t_end)
    lost = lost_on(c, w, res, m)
    record(f"RACE graceful-stop {when}: stop_at={out.t_stop - t_fa:.2f}s gap={gap:.2f}s "
           f"lost={'?' if lost is None else len(lost)} switch_master={counts} "
           f"exit={out.exit_code} exit_after={out.exit_s:.2f}s named_after="
           f"{'never' if out.named_s is None else f'{out.named_s:.2f}s'} "
           f"settled={'no' if settle_s is None else f'{settle_s:.1f}s'} acked={len(res.acked)} "
           f"errors={res.errors}")
    if out.new_master is None:
        fails.append("the surviving sentinels never named a new master")
    if lost is None:
        fails.append("no master to read the writes back from")
    elif lost:
        fails.append(f"{len(lost)} acknowledged writes lost: {lost[:10]}")
    fails += switch_problems(counts)
    if gap >= MAX_GAP:
        fails.append(f"write gap {gap:.2f}s >= {MAX_GAP}s")
    assert not fails, "; ".join(fails)


@pytest.mark.parametrize("when", ["early", "steady"])
def test_master_killed(cluster, when):
    """SIGKILL of the master pod: the survivors name a new master within down-after + 2 s, every
    surviving replica follows it within 2 s, no acknowledged write lost (a loss from the
    asynchronous-replication window is a WARNING up to 5 writes)."""
    c = cluster
    w, t_fa = start_and_reach(c, when, f"race:kill:{when}")
    fails: list[str] = []
    failover_s = follow_s = None
    new = None
    try:
        old = c.current_master()
        assert old, f"no single master: {c.roles()}"
        pod = c.pod_by_ip(old)
        sips = [p.ip for p in c.live() if p is not pod]
        t_kill = time.monotonic()
        c.kill_pod(pod.idx)
        # Measured with wider bounds than asserted, so a failure still gives the number.
        deadline = t_kill + 20
        while time.monotonic() < deadline:
            n = c.named_master(sips)
            if n and n != old:
                new, failover_s = n, time.monotonic() - t_kill
                break
            time.sleep(0.05)
        if new:
            t_named = time.monotonic()
            reps = [ip for ip in sips if ip != new]

            def following(ip):
                try:
                    i = info_replication(ip, 0.3)
                except Exception:
                    return False
                return i.get("master_host") == new and i.get("master_link_status") == "up"
            while time.monotonic() < t_named + 10:
                if all(following(ip) for ip in reps):
                    follow_s = time.monotonic() - t_named
                    break
                time.sleep(0.05)
            time.sleep(1.0)  # writes resume on the new master
    finally:
        res = w.finish()
    lost = lost_on(c, w, res, new or c.current_master())
    record(f"RACE master-killed {when}: kill_at={t_kill - t_fa:.2f}s failover="
           f"{'never(>20s)' if failover_s is None else f'{failover_s:.2f}s'} replicas_follow="
           f"{'never' if follow_s is None else f'{follow_s:.2f}s'} "
           f"lost={'?' if lost is None else len(lost)} gap={stop_gap(res.acked, t_kill, time.monotonic()):.2f}s "
           f"acked={len(res.acked)} errors={res.errors}")
    if failover_s is None:
        fails.append("no failover: the survivors never named a new master within 20 s")
    elif failover_s > DOWN_AFTER + FAILOVER_MARGIN:
        fails.append(f"failover took {failover_s:.2f}s > down-after + {FAILOVER_MARGIN}s")
    if new and follow_s is None:
        fails.append("a surviving replica did not follow the new master within 10 s")
    elif follow_s is not None and follow_s > REPLICAS_FOLLOW:
        fails.append(f"replicas followed the new master after {follow_s:.2f}s "
                     f"> {REPLICAS_FOLLOW}s")
    if lost is None:
        fails.append("no master to read the writes back from")
    elif len(lost) > ASYNC_LOSS_MAX:
        fails.append(f"{len(lost)} acknowledged writes lost (> {ASYNC_LOSS_MAX}): {lost[:10]}")
    elif lost:
        print(f"WARNING race master-killed {when} lost acknowledged writes (asynchronous "
              f"replication window): {lost}")
    assert not fails, "; ".join(fails)


@pytest.mark.parametrize("when", ["early", "steady"])
def test_graceful_stop_after_failover(cluster, when):
    """The master pod SIGKILLed (early or in steady state), failover, the pod back with a new
    IP; as soon as it is a synced replica, SIGTERM of the NEW master: nothing acknowledged since
    the kill lost, gap < 2 s, one +switch-master per surviving sentinel."""
    c = cluster
    w, t_fa = start_and_reach(c, when, f"race:after:{when}")
    fails: list[str] = []
    out = None
    try:
        old = c.current_master()
        assert old, f"no single master: {c.roles()}"
        pod = c.pod_by_ip(old)
        sips = [p.ip for p in c.live() if p is not pod]
        t_kill = time.monotonic()
        c.kill_pod(pod.idx)
        failover_s = None
        while time.monotonic() < t_kill + 20:
            if c.named_master(sips) not in (None, old):
                failover_s = time.monotonic() - t_kill
                break
            time.sleep(0.05)
        if failover_s is None:
            record(f"RACE graceful-stop-after-failover {when}: kill_at={t_kill - t_fa:.2f}s "
                   f"failover=never(>20s): the graceful stop was not reached")
        assert failover_s is not None, "no failover within 20 s of the SIGKILL"
        c.start_pods([pod.idx], new_ip=True)
        tts = c.time_to_safety(pod, 40)
        # The stop's gap runs from the last write before the SIGTERM: a SIGTERM before the
        # writer found the new master measured the SIGKILL's failover too (2.9 s in CI, 4.6 s
        # locally, the SIGTERM 0.1 s after the sentinels named the new master).
        t_named = t_kill + failover_s
        wait_until(lambda: any(t > t_named for _, t in w.acked[-5:]), 15, 0.02,
                   "a write acknowledged by the new master")
        # The first failover's leader logs its +switch-master only when that failover ends,
        # possibly after this SIGTERM: it is not a second failover of this stop.
        out = stop_master_and_watch(c, ignore_from=(old,))
        time.sleep(0.5)
        t_end = time.monotonic()
    finally:
        res = w.finish()
    final = out.new_master or c.current_master()
    lost = lost_on(c, w, res, final)
    before = [v for v, t in res.acked if t <= t_kill]
    lost_before = [v for v in (lost or []) if v <= (before[-1] if before else 0)]
    lost_after = [v for v in (lost or []) if v not in set(lost_before)]
    counts = out.switch_master
    gap = stop_gap(res.acked, out.t_stop, t_end)
    record(f"RACE graceful-stop-after-failover {when}: kill_at={t_kill - t_fa:.2f}s "
           f"failover={failover_s:.2f}s rejoined_synced={tts:.2f}s gap={gap:.2f}s "
           f"lost_since_kill={'?' if lost is None else len(lost_after)} "
           f"lost_before_kill={'?' if lost is None else len(lost_before)} switch_master={counts} "
           f"exit={out.exit_code} exit_after={out.exit_s:.2f}s acked={len(res.acked)} "
           f"errors={res.errors}")
    if lost is None:
        fails.append("no master to read the writes back from")
    else:
        if lost_after:
            fails.append(f"{len(lost_after)} acknowledged writes lost: {lost_after[:10]}")
        if len(lost_before) > ASYNC_LOSS_MAX:
            fails.append(f"{len(lost_before)} writes acknowledged before the SIGKILL lost")
        elif lost_before:
            print(f"WARNING race {when}: the SIGKILL lost acknowledged writes (asynchronous "
                  f"replication window): {lost_before}")
    fails += switch_problems(counts)
    if gap >= MAX_GAP:
        fails.append(f"write gap {gap:.2f}s >= {MAX_GAP}s")
    assert not fails, "; ".join(fails)


def test_graceful_stop_repeated(cluster):
    """Rounds of: cold start, SIGTERM of the master at a random offset uniform in 0-15 s after
    the first answer. Every round: 0 lost, exactly one failover, gap < 2 s."""
    c = cluster
    rounds = int(os.environ.get("REDISHA_RACE_ROUNDS") or 5)
    seed = int(os.environ.get("REDISHA_RACE_SEED") or random.SystemRandom().randrange(2**31))
    rng = random.Random(seed)
    print(f"REDISHA_RACE_SEED={seed} rounds={rounds}", flush=True)
    record(f"RACE graceful-stop-repeated: seed={seed} rounds={rounds}")
    fails: list[str] = []
    for r in range(rounds):
        offset = rng.uniform(0.0, STOP_OFFSET_MAX)
        t_fa = cold_start(c)
        w = Writer(c, f"race:rep:{seed}:{r}")
        w.start()
        try:
            # Failover-safe is measured until it holds or the stop comes, whichever is first.
            left = t_fa + offset - time.monotonic()
            tfs = c.time_to_failover_safe(max(0.0, left), t0=t_fa) if left > 0 else None
            time.sleep(max(0.0, t_fa + offset - time.monotonic()))
            out = stop_master_and_watch(c)
            t_end = time.monotonic()
        finally:
            res = w.finish()
        lost = lost_on(c, w, res, out.new_master)
        gap = stop_gap(res.acked, out.t_stop, t_end)
        tfs_s = f"{tfs:.2f}s" if tfs is not None else f"not-before-stop(>{offset:.2f}s)"
        record(f"RACE round {r}: offset={offset:.2f}s gap={gap:.2f}s "
               f"lost={'?' if lost is None else len(lost)} switch_master={out.switch_master} "
               f"time_to_failover_safe={tfs_s} exit={out.exit_code} "
               f"exit_after={out.exit_s:.2f}s acked={len(res.acked)} errors={res.errors}")
        probs = []
        if lost is None:
            probs.append("no new master")
        elif lost:
            probs.append(f"{len(lost)} lost")
        probs += [f"{k} +switch-master x{n}" for k, n in out.switch_master.items() if n != 1]
        if gap >= MAX_GAP:
            probs.append(f"gap {gap:.2f}s")
        if probs:
            fails.append(f"round {r} (offset {offset:.2f}s): " + ", ".join(probs))
    assert not fails, f"seed {seed}: " + "; ".join(fails)


KILL_GAP_MAX = 2.5  # s: write gap when the SIGKILL came after the failover was requested


# The handover ends 0.3-0.4 s after SIGTERM, so 0.1 and 0.3 s land inside it; 0.7 and 1.5 s (the
# issue's other two) land after it and run with REDISHA_RACE_TERMKILL=1 (CI's time budget).
@pytest.mark.parametrize("kill_after", [
    0.1, 0.3,
    *[pytest.param(k, marks=pytest.mark.skipif(not os.environ.get("REDISHA_RACE_TERMKILL"),
                                               reason="opt-in: REDISHA_RACE_TERMKILL=1"))
      for k in (0.7, 1.5)]])
def test_sigkill_during_the_handover(cluster, kill_after):
    """Issue 30 point 3: SIGTERM to the master pod, SIGKILL `kill_after` s later (a short
    terminationGracePeriodSeconds, a node shutting down, an OOM kill mid-handover). One failover
    (the survivors' config epoch +1, one +switch-master each), 0 acknowledged writes lost, and a
    write gap under 2.5 s whenever the pod had asked Sentinel to fail over before it died."""
    c = cluster
    w, _ = start_and_reach(c, "steady", f"race:termkill:{kill_after}")
    fails: list[str] = []
    new = None
    try:
        old = c.current_master()
        assert old, f"no single master: {c.roles()}"
        pod = c.pod_by_ip(old)
        survivors = [p for p in c.live() if p is not pod]
        sips = [p.ip for p in survivors]
        before = {p.name: int(c.sentinel_master(p.ip)["config-epoch"]) for p in survivors}
        marks = c.log_marks()
        log_path = pod.log_path
        t_stop = time.monotonic()
        exit_s, code = c.stop_pod_gracefully(pod.idx, timeout=kill_after)
        requested = log_path is not None and "asking sentinel to fail over" in \
            log_path.read_text(errors="replace")
        deadline = t_stop + 25
        while time.monotonic() < deadline:
            n = c.named_master(sips)
            if n and n != old:
                new = n
                break
            time.sleep(0.05)
        time.sleep(DOWN_AFTER + 3)  # a second failover would show by now
        new = c.named_master(sips) or new
        t_end = time.monotonic()
        after = {}
        for p in survivors:
            try:
                after[p.name] = int(c.sentinel_master(p.ip)["config-epoch"])
            except Exception as e:
                after[p.name] = f"? ({e})"
        counts = c.count_switch_master(survivors, since=marks)
    finally:
        res = w.finish()
    lost = lost_on(c, w, res, new)
    gap = stop_gap(res.acked, t_stop, t_end)
    record(f"RACE sigkill {kill_after}s after SIGTERM: exit={code} after {exit_s:.2f}s "
           f"requested={requested} new={new} epochs {before} -> {after} "
           f"switch_master={counts} gap={gap:.2f}s lost={'?' if lost is None else len(lost)} "
           f"acked={len(res.acked)} errors={res.errors}")
    if new is None or new == old:
        fails.append("the survivors never named a new master")
    bumped = {k: (before[k], v) for k, v in after.items() if v != before[k] + 1}
    if bumped:
        fails.append(f"config epoch not +1 on every survivor (one failover): {bumped}")
    fails += switch_problems(counts)
    if lost is None:
        fails.append("no master to read the writes back from")
    elif lost:
        fails.append(f"{len(lost)} acknowledged writes lost: {lost[:10]}")
    if requested and gap >= KILL_GAP_MAX:
        fails.append(f"write gap {gap:.2f}s >= {KILL_GAP_MAX}s after the failover was requested")
    assert not fails, "; ".join(fails)
