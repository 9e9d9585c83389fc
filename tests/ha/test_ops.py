"""Operator tools against the three-pod harness: `redisha-init status` in every state (healthy, a
pod unreachable, a replica down, the master down before and during the failover, two masters
made on purpose), and `redisha-init switchover` (rounds with the writer running; refusals;
an interrupted switchover restores what it changed).

    REDISHA_OPS_ROUNDS (default 3)  switchover rounds here; benches/switchover.py does 10
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import time

import pytest

import harness
from harness import (DOWN_AFTER, REDIS_PORT, SENTINEL_PORT, GROUP, Writer, addr, client, log,
                     record)
from harness import cold_start
from rhtest import finish_apps, start_apps
from ops import (switchover_until_taken, laptop_status, manifest_min_ready, priorities, rolling_update, run_cli,
                 sentinel_knobs, status, switchover_round, wait_ready, wait_status)

EXIT = {"healthy": 0, "degraded": 1, "split": 2, "no_master": 2}
STATUS_BUDGET = 2.0  # s: the whole command, a pod unreachable included


@pytest.fixture(autouse=True, scope="module")
def leave_clean(cluster):
    """Other modules expect pods they can start: leave none running and no state behind."""
    yield
    for p in cluster.pods:
        if p.alive:
            cluster.kill_pod(p.idx)
        shutil.rmtree(p.state_dir, ignore_errors=True)


def check(r, health: str, master: str | None) -> dict:
    """The verdict of one status run: its health, the master it names, the exit code that goes
    with the health, and the whole command within the budget."""
    j = r.json
    v = j["verdict"]
    assert v["health"] == health, f"want {health}: {v}"
    assert r.code == EXIT[health] == j["exit_code"], f"exit {r.code} for {v}"
    want = addr(master, REDIS_PORT) if master else None
    assert v["master"] == want, f"master {v['master']}, want {want}: {v}"
    assert r.took < STATUS_BUDGET, f"status took {r.took:.2f}s"
    return v


def test_status_healthy(healthy):
    c = healthy
    m, _, _ = c.settle(60)
    for p in c.live():
        r = wait_status(c, p, 0, 20)
        v = check(r, "healthy", m)
        assert v["failover_safe"] and not v["reasons"], v
        j = r.json
        assert sorted(n["addr"] for n in j["nodes"]) == sorted(
            addr(x.ip, REDIS_PORT) for x in c.live())
        assert sorted(s["addr"] for s in j["sentinels"]) == sorted(
            addr(x.ip, SENTINEL_PORT) for x in c.live())
    # The human table: every node, every sentinel, the verdict line.
    r = run_cli(c, c.pods[0], "status")
    assert r.code == 0, r.out + r.err
    assert r.out.splitlines()[-1].startswith(f"verdict: healthy, master {m}:{REDIS_PORT}"), r.out
    for x in c.live():
        assert addr(x.ip, REDIS_PORT) in r.out and addr(x.ip, SENTINEL_PORT) in r.out, r.out
    log("status table:\n" + r.out)
    # A laptop: one sentinel address is enough; the rest is learnt from it.
    replica = next(x for x in c.live() if x.ip != m)
    r = laptop_status(c, replica.ip)
    check(r, "healthy", m)
    assert len(r.json["nodes"]) == 3 and len(r.json["sentinels"]) == 3, r.json


def test_status_bounded_with_a_pod_cut_off(healthy):
    c = healthy
    m, _, _ = c.settle(60)
    mp = c.pod_by_ip(m)
    cut = next(p for p in c.live() if p.ip != m)
    c.set_link(cut.idx, False)
    try:
        for where in (mp, None):
            r = status(c, where) if where else laptop_status(c, m)
            v = check(r, "degraded", m)
            assert any(cut.ip in x for x in v["reasons"]), v
            log(f"status with {cut.name} cut off: {r.took:.2f}s, {v['reasons']}")
    finally:
        c.set_link(cut.idx, True)
    c.settle(60, "the cut-off replica back")


def test_status_replica_down(healthy):
    c = healthy
    m, _, _ = c.settle(60)
    gone = next(p for p in c.live() if p.ip != m)
    old_ip = gone.ip
    c.kill_pod(gone.idx)
    r = status(c, c.pod_by_ip(m))
    v = check(r, "degraded", m)
    text = " ".join(v["reasons"])
    assert gone.name in text or old_ip in text, v
    assert v["failover_safe"], v  # one replica and two sentinels left: a failover still works


def test_status_master_down_then_failover(healthy):
    c = healthy
    m, _, _ = c.settle(60)
    mp = c.pod_by_ip(m)
    watcher = next(p for p in c.live() if p.ip != m)
    c.kill_pod(mp.idx)
    t0 = time.monotonic()
    samples = []
    deadline = t0 + 40
    while time.monotonic() < deadline:
        ts = time.monotonic() - t0
        r = status(c, watcher, "--timeout-ms", "300")
        v = r.json["verdict"]
        samples.append((ts, r.code, v["health"], v["master"], v["failover_running"], v["reasons"]))
        assert r.code == EXIT[v["health"]], v
        assert r.took < STATUS_BUDGET, f"status took {r.took:.2f}s"
        new = c.current_master()
        if new and v["master"] == addr(new, REDIS_PORT) and not v["failover_running"] \
                and v["health"] == "degraded" and ts > DOWN_AFTER:
            break
    for s in samples:
        log(f"  {s[0]:5.2f}s exit {s[1]} {s[2]} master={s[3]} failover={s[4]} {s[5][:2]}")
    first = samples[0]
    assert first[0] < DOWN_AFTER and first[2] == "no_master", first
    assert any(m in x and "does not answer" in x for x in first[5]), first
    # The failover in progress, when a sample falls inside it. With the leader pod's relay it
    # lasts a few hundred ms and may end between two samples (a sample takes ~0.35 s, longer on
    # a loaded machine): then the samples on either side must be close, so that no long
    # failover went unreported.
    seen = any(s[4] for s in samples)
    if not seen:
        switch = next(i for i, s in enumerate(samples) if s[2] != "no_master")
        assert switch > 0 and samples[switch][0] - samples[switch - 1][0] < 1.5, \
            f"no sample saw the failover in progress, and it was not between two close samples: {samples}"
    last = samples[-1]
    new = c.current_master()
    assert new and new != m and last[3] == addr(new, REDIS_PORT) and last[1] == 1, last
    record(f"OPS status after master kill: {len(samples)} samples, "
           f"no_master until {max(s[0] for s in samples if s[2] == 'no_master'):.2f}s, "
           f"failover seen {sum(1 for s in samples if s[4])}x, degraded with {new} at {last[0]:.2f}s")


def test_status_two_masters(healthy):
    """A replica made master by hand (REPLICAOF NO ONE) while nothing may undo it: every sentinel
    waits 4 x publish-period before converting a replica that claims to be master (raised to
    60 s here), and the pod's own companion is frozen (SIGSTOP of its PID 1)."""
    c = healthy
    m, _, _ = c.settle(60)
    rogue = next(p for p in c.live() if p.ip != m)
    pid1 = rogue.init_pid()
    assert pid1
    ips = [p.ip for p in c.live()]
    try:
        for ip in ips:
            with client(ip, SENTINEL_PORT) as s:
                s.execute_command("SENTINEL", "DEBUG", "publish-period", 60000)
        os.kill(pid1, signal.SIGSTOP)
        with client(rogue.ip, REDIS_PORT) as r:
            r.execute_command("REPLICAOF", "NO", "ONE")
        # Sentinel notices the role in the next INFO (1 s) but must not act on it.
        r = status(c, c.pod_by_ip(m))
        v = check(r, "split", None)
        text = " ".join(v["reasons"])
        assert "2 nodes answer as master" in text and m in text and rogue.ip in text, v
        assert not v["failover_safe"], v
        log(f"two masters: {v['reasons']}")
    finally:
        with client(rogue.ip, REDIS_PORT) as r:
            r.execute_command("REPLICAOF", m, REDIS_PORT)
        for ip in ips:
            with client(ip, SENTINEL_PORT) as s:
                s.execute_command("SENTINEL", "DEBUG", "publish-period", 500)
        os.kill(pid1, signal.SIGCONT)
    c.settle(60, "one master again")


def test_switchover_refusals(healthy):
    c = healthy
    m, _, _ = c.settle(60)
    a, b = [p for p in c.live() if p.ip != m]
    wait_status(c, a, 0, 30)
    r = run_cli(c, a, "switchover", "--to", addr(m, REDIS_PORT))
    assert r.code == 5 and "it is the master" in r.out, r.out + r.err
    r = run_cli(c, a, "switchover", "--to", addr(harness.address(249), REDIS_PORT))
    assert r.code == 5 and "not a healthy replica" in r.out, r.out + r.err
    try:
        with client(a.ip, REDIS_PORT) as x:
            x.config_set("replica-priority", 0)
        harness.wait_until(lambda: all(
            str(e["slave-priority"]) == "0" or e["ip"] != a.ip
            for p in c.live() for e in client(p.ip, SENTINEL_PORT).sentinel_slaves(GROUP)),
            10, 0.2, "the sentinels see priority 0")
        r = run_cli(c, b, "switchover", "--to", addr(a.ip, REDIS_PORT))
        assert r.code == 5 and "replica-priority is 0" in r.out, r.out + r.err
        with client(b.ip, REDIS_PORT) as x:
            x.config_set("replica-priority", 0)
        harness.wait_until(lambda: not status(c, a).json["verdict"]["failover_safe"], 10, 0.2,
                           "not failover-safe")
        r = run_cli(c, None, "switchover", "--sentinels", addr(b.ip, SENTINEL_PORT))
        assert r.code == 3 and "not failover-safe" in r.out, r.out + r.err
    finally:
        for p in (a, b):
            with client(p.ip, REDIS_PORT) as x:
                x.config_set("replica-priority", 100)
    assert c.current_master() == m, "a refusal changed the master"
    # A failover already running (forced through one sentinel, no pause: no writer here).
    # The sentinels read the restored priorities from their next INFO (once a second); `status`
    # healthy does not wait for that, and SENTINEL FAILOVER before it answers NOGOODSLAVE (seen
    # once in CI).
    harness.wait_until(lambda: all(
        str(e["slave-priority"]) != "0"
        for p in c.live() for e in client(p.ip, SENTINEL_PORT).sentinel_slaves(GROUP)),
        10, 0.2, "the sentinels see the priorities restored")
    wait_status(c, a, 0, 30)
    with client(a.ip, SENTINEL_PORT) as s:
        s.execute_command("SENTINEL", "FAILOVER", GROUP)
    r = run_cli(c, b, "switchover")
    assert r.code == 4 and "already running" in r.out, r.out + r.err
    harness.wait_until(lambda: c.current_master() not in (None, m), 20, 0.1,
                       "the forced failover's new master")
    new, _, _ = c.settle(60, "after the forced failover")
    assert new != m


def test_switchover_rounds(healthy):
    c = healthy
    c.settle(60)
    rounds = int(os.environ.get("REDISHA_OPS_ROUNDS", "3"))
    seed = int(os.environ.get("REDISHA_OPS_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    w = Writer(c, "ops-switchover")
    w.start()
    results = []
    try:
        for i in range(rounds):
            results.append(switchover_round(c, w, i + 1, rng, use_to=(i % 3 != 2)))
    finally:
        res = w.finish()
    final, _, _ = c.settle(60, "after the switchovers")
    lost = w.count_lost(res, final)
    for x in results:
        record(f"OPS switchover {x.rnd}/{rounds} seed={seed} from={x.from_pod} exit={x.code} "
               f"{x.old_master}->{x.new_master} to={x.wanted} took={x.took:.2f}s "
               f"gap={x.gap:.2f}s switch_master={x.switch_master}")
    record(f"OPS switchover total: {rounds} rounds, acked={len(res.acked)} lost={len(lost)} "
           f"worst gap={max(x.gap for x in results):.2f}s")
    problems = [f"round {x.rnd}: {p}" for x in results for p in x.problems]
    if lost:
        problems.append(f"{len(lost)} acknowledged writes lost: {lost[:10]}")
    assert not problems, problems


def frozen_leader_switchover(c, interrupt: bool, timeout: str = "10"):
    """A switchover --to from replica pod `a` to replica `b`, whose chosen sentinel (pod a's own)
    is frozen (SIGSTOP) once the other replica's priority is 0, so the wait for the sentinel's
    view cannot end on its own; with `interrupt` a SIGINT follows. Returns (exit code, output,
    master before). The sentinel is thawed before returning."""
    m, _, _ = c.settle(60)
    a, b = [p for p in c.live() if p.ip != m]
    # A sentinel frozen by the previous test stays in TILT mode for 30 s (status: degraded).
    wait_status(c, a, 0, 60)
    sentinel_pid = a.child_pid("sentinel")
    proc = run_cli(c, a, "switchover", "--to", addr(b.ip, REDIS_PORT), "--timeout", timeout,
                   popen=True)
    out = []
    stopped = False
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            out.append(line)
            if "replica-priority 0 on" in line:
                os.kill(sentinel_pid, signal.SIGSTOP)
                stopped = True
                time.sleep(0.3)
                if interrupt:
                    proc.send_signal(signal.SIGINT)
                break
        rest, err = proc.communicate(timeout=30)
        out.extend([rest, err])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        if stopped:
            os.kill(sentinel_pid, signal.SIGCONT)
    text = "".join(out)
    assert stopped, text
    return proc.returncode, text, m


def check_put_back(c, text: str, m: str) -> None:
    assert "restored replica-priority 100" in text, text
    assert set(priorities(c).values()) == {"100"}, priorities(c)
    if "sees the new priorities" not in text:  # the failover was never asked for
        assert c.current_master() == m
    # The leader's settings: put back, also by a restore that reached the frozen sentinel's
    # socket and ran when it was thawed.
    harness.wait_until(lambda: all(k == (1, 1000, 10000) for k in sentinel_knobs(c).values()),
                       10, 0.2, "the leading sentinel's settings back")
    c.settle(60, "after the failed switchover")


def test_switchover_interrupted_restores(healthy):
    """SIGINT while the others' priorities are 0 and the sentinel's view is awaited: exit 130,
    every priority and setting back, the master unchanged."""
    code, text, m = frozen_leader_switchover(healthy, interrupt=True)
    assert code == 130, f"exit {code}: {text}"
    check_put_back(healthy, text, m)


def test_switchover_timeout_restores(healthy):
    """The same without SIGINT and with --timeout 4: the view never comes (2 s, half the
    timeout), exit 1, everything put back."""
    t0 = time.monotonic()
    code, text, m = frozen_leader_switchover(healthy, interrupt=False, timeout="4")
    assert code == 1 and "did not see the new priorities in time" in text, f"exit {code}: {text}"
    assert time.monotonic() - t0 < 30
    # Frozen for more than 2 s: Sentinel's TILT mode, which status reports (and which a
    # switchover never picks to lead: it would accept SENTINEL FAILOVER and sit on it).
    r = harness.wait_until(
        lambda: (lambda r: r if any("TILT" in x for x in r.json["verdict"]["reasons"]) else None)(
            status(healthy, None, "--sentinels", addr(m, SENTINEL_PORT))),
        5, 0.2, "status reporting the thawed sentinel in TILT mode")
    assert r.code == 1, r.json["verdict"]
    check_put_back(healthy, text, m)


@pytest.mark.parametrize("first_master", [0, 1, 2])
def test_rolling_update_moves_the_master_once(cluster, first_master):
    """Issue 30: a readiness-gated rolling update (ordinal 2, 1, 0, each pod back on a new
    address) moves the master once when the master is not the first pod replaced, twice when it
    is (the minimum: the first handover can only go to a pod not yet replaced). The handover
    steers Sentinel to the replica that started last, i.e. the one the rollout already replaced.
    A writer runs throughout: 0 acknowledged writes lost."""
    c = cluster
    cold_start(c)
    if first_master != 0:
        assert c.time_to_failover_safe(30) is not None, "not failover-safe 30 s after start"
        to = c.pods[first_master].ip
        r = switchover_until_taken(c, c.pods[0], "--to", addr(to, REDIS_PORT))
        assert r.code == 0, r.err + r.out
    m, _, _ = c.settle(60, f"the master at ordinal {first_master}")
    assert c.pod_by_ip(m).idx == first_master, f"master {m}, want ordinal {first_master}"
    wait_ready(c, c.live(), 60)
    w = Writer(c, f"ops:roll:{first_master}")
    w.start()
    # The application as users run it: redis-py 8.2's master_for with its defaults (no retry),
    # and with one retry that asks Sentinel again (tests/app/appwriter.py, `rediscover`).
    apps = start_apps(c.sentinel_addrs, f"ops:roll:{first_master}:app", ("default", "rediscover"),
                      password=c.security.password)
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        steps = rolling_update(c, w, manifest_min_ready(), 60)
        m, _, _ = c.settle(60, "one master after the rollout")
    finally:
        res = w.finish()
        app_res = finish_apps(apps)
    t_end = time.monotonic()
    lost = w.count_lost(res, m)
    app_lost = {mode: w.lost_on(m, r.acked, key=r.key) for mode, r in app_res.items()}
    failed = {mode: r.failed_between(t0, t_end) for mode, r in app_res.items()}
    moves = sum(s.was_master for s in steps)
    want = 2 if first_master == len(c.pods) - 1 else 1
    record(f"OPS rollout from ordinal {first_master}: moves={moves} (want {want}) lost={len(lost)} "
           + " ".join(f"app(redis-py {r.redis_py}, {mode}): failed={len(failed[mode])} "
                      f"lost={len(app_lost[mode])} {[f[2][:40] for f in failed[mode][:4]]}"
                      for mode, r in app_res.items()) + " "
           + ", ".join(f"{s.pod}{'(master)' if s.was_master else ''}: stop {s.stop_s:.2f}s "
                       f"ready {s.ready_s:.2f}s gap {s.gap_s:.2f}s" for s in steps)
           + f" acked={len(res.acked)} errors={res.errors}")
    assert not lost, f"acknowledged writes lost: {lost[:10]}"
    assert all(s.exit_code == 0 for s in steps), steps
    assert moves == want, f"the master moved {moves} times, want {want}: {steps}"
    for mode in app_res:
        assert not app_lost[mode], f"app({mode}): acknowledged writes lost: {app_lost[mode][:10]}"
    # One failed request per move is the floor for a client that retries nothing: the write in
    # flight on the old master when it is demoted (test_races, graceful stop). A retry that asks
    # Sentinel again meets none.
    assert len(failed["default"]) <= moves, \
        f"app(default): {len(failed['default'])} failed requests for {moves} moves: {failed['default'][:4]}"
    assert not failed["rediscover"], \
        f"app(rediscover): {len(failed['rediscover'])} failed requests: {failed['rediscover'][:4]}"
