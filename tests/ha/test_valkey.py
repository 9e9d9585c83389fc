"""Valkey as the engine (issue 31): the three pods on valkey-server (cold start, master pod
killed with a writer, graceful stop of the master), and a rolling upgrade from redis-server 7.0
to valkey-server 8 pod by pod, StatefulSet order (ordinal 2, 1, 0), each pod back on Valkey and
gated by its own readiness probe, with a writer going, from two starting masters: ordinal 0
(SIGKILLed mid-rollout: the version rule decides the crash failover), and ordinal 1 (moved there
by a switchover: the version rule decides the handover).

The version rule (src/engine.rs): a replica must run the same or a newer version than its master
(Redis 7.0 cannot load Valkey 8's RDB). After every step: every replica linked and synced,
`status` names each node's engine and is not degraded by a replica older than its master, and
no acknowledged write is lost. During the rolling upgrade a watcher samples every pod's master
4 times a second: at no moment may a Redis replica follow a Valkey master (the master pod being
stopped is counted apart: the handover's failover makes it a replica of the new master for the
moment before it exits, harmless as it leaves); after the first pod
is upgraded, and after every change of master that leaves a Redis replica, that replica is forced
into a full resync (SIGKILLed, its state removed, started again on Redis) and must sync; each
handover's write gap is measured. test_valkey_stale_first: test_outage's stale-first order on
Valkey. Lines `VALKEY ...` go to tests/ha/results.txt.

REDISHA_HA_VALKEY_NO_RULE=1 (a demonstration, not CI): the pods run with the test knob
REDISHA_TEST_NO_VERSION_RULE=1 (src/engine.rs: priorities left as configured), the priority
check is skipped, and the rolling-upgrade test shows what fails without the rule.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

import harness
from harness import DOWN_AFTER, NPODS, REDIS_PORT, Writer, cold_start, record, stop_gap, \
    stop_master_and_watch
from hanet import addr
from ops import run_cli, status, switchover_until_taken, wait_status
from test_races import ASYNC_LOSS_MAX, FAILOVER_MARGIN, lost_on
import test_outage

VALKEY = "valkey-server"
REDIS = "redis-server"
READY_TIMEOUT = 60      # s for a restarted pod's readiness probe (failover-safe) to pass
AHEAD = 100             # engine::AHEAD_PENALTY
# A write gap around a handover: 0.4-1.9 s measured on the shared 2-core box (test_races asserts
# 2 s on its own); a handover that failed and left the failover to Sentinel's timeout costs
# down-after and a promotion (2.6-3.3 s measured), which this bound still catches.
HANDOVER_GAP = DOWN_AFTER + 0.5
MIN_READY = 3.0         # s after ready before the next pod, as k8s/production's minReadySeconds
NO_RULE = os.environ.get("REDISHA_HA_VALKEY_NO_RULE") == "1"


@pytest.fixture(autouse=True, scope="module")
def valkey_installed(cluster):
    if shutil.which(VALKEY) is None:
        pytest.skip("valkey-server not installed (scripts/setup test installs it)")
    yield
    # Other modules expect redis-server pods they can start, and no state behind.
    for p in cluster.pods:
        if p.alive:
            cluster.kill_pod(p.idx)
        shutil.rmtree(p.state_dir, ignore_errors=True)
    cluster.servers.clear()


def ip_of(a: str) -> str:
    """The host of `ip:port` / `[ip]:port` as status prints it."""
    return a.rsplit(":", 1)[0].strip("[]")


def engines(j: dict) -> dict[str, tuple[str, str]]:
    """(engine, version) per data node of a `status --json` (the binary's own parse)."""
    return {ip_of(n["addr"]): (n.get("engine"), n.get("version")) for n in j["nodes"]}


def check_step(c, what: str) -> tuple[str, dict]:
    """Every replica linked and synced (settle); `status` not degraded by a replica older than
    its master; every replica's replica-priority by the version rule (base 100, + 100 while it
    runs Valkey under a Redis master: the lever a crash failover obeys too), given the pods'
    companions a bounded while to set it. Returns (master ip, engines)."""
    m, _, _ = c.settle(60, f"every replica synced after {what}")
    last: list = []

    def by_rule():
        j = status(c, c.pod_by_ip(m)).json
        eng = engines(j)
        older = [r for r in j["verdict"]["reasons"] if "older than the master" in r and not NO_RULE]
        want = {ip: 100 + AHEAD * (e[0] == "valkey" and eng[m][0] == "redis" and not NO_RULE)
                for ip, e in eng.items() if ip != m}
        got = {ip_of(n["addr"]): n.get("priority") for n in j["nodes"] if n.get("priority")}
        last[:] = [f"{older}; replica-priority want {want} got {got}"]
        return eng if not older and got == want else None
    try:
        eng = harness.wait_until(by_rule, 20, 0.5, f"the version rule after {what}")
    except AssertionError as e:
        raise AssertionError(f"{what}: {last[0] if last else e}") from None
    return m, eng


def wait_ready(c, pod) -> float:
    """The pod's own readiness probe (`probe sentinel --ready`, failover-safe) run inside it until
    it passes, bounded; then MIN_READY more. Returns seconds from the pod's start to ready."""
    harness.wait_until(lambda: run_cli(c, pod, "probe", "sentinel", "--ready",
                                       timeout=10).code == 0,
                       READY_TIMEOUT, 0.5, f"{pod.name} ready")
    took = time.monotonic() - pod.started_at
    time.sleep(MIN_READY)
    return took


def kill_master(c, m: str) -> tuple[str, float]:
    """SIGKILL of the master pod at `m`; returns (the master the survivors name, seconds)."""
    survivors = [p.ip for p in c.live() if p.ip != m]
    c.kill_pod(c.pod_by_ip(m).idx)
    t_kill = time.monotonic()

    def new_named():
        n = c.named_master(survivors)
        return n if n and n != m else None
    new = harness.wait_until(new_named, 30, 0.05, "a new master after the kill")
    return new, time.monotonic() - t_kill


def test_valkey_cluster(cluster):
    """All three pods on valkey-server: cold start, SIGKILL of the master pod with a writer
    (failover within down-after + margin), the pod back, then a graceful stop of the master (the
    handover): no acknowledged write lost beyond a SIGKILL's replication window, gap < 2 s."""
    c = cluster
    c.servers.update({i: VALKEY for i in range(NPODS)})
    cold_start(c)
    m, eng = check_step(c, "the cold start")
    assert set(eng.values()) == {("valkey", eng[m][1])}, eng
    assert c.pod_by_ip(m).idx == 0, f"cold start master {m}"
    w = Writer(c, "valkey:kill")
    w.start()
    fails: list[str] = []
    try:
        time.sleep(1.0)
        new, failover_s = kill_master(c, m)
        new_m, _, _ = c.settle(40, "the two pods left after the kill")
        time.sleep(0.5)
    finally:
        res = w.finish()
    lost = lost_on(c, w, res, new_m)
    record(f"VALKEY kill: failover={failover_s:.2f}s gap={res.max_gap:.2f}s "
           f"lost={'?' if lost is None else len(lost)} acked={len(res.acked)} errors={res.errors}")
    if failover_s > DOWN_AFTER + FAILOVER_MARGIN + 4:  # + the generous margin of a loaded box
        fails.append(f"failover took {failover_s:.2f}s")
    if lost is None or len(lost) > ASYNC_LOSS_MAX:
        fails.append(f"lost {lost}")
    assert new == new_m, (new, new_m)
    dead = next(p.idx for p in c.pods if not p.alive)
    c.start_pods([dead], new_ip=True)
    check_step(c, "the killed pod's return")
    w = Writer(c, "valkey:stop")
    w.start()
    try:
        time.sleep(1.0)
        out = stop_master_and_watch(c, watch=0)
        m2, _, _ = c.settle(40, "the two pods left after the stop")
        t_end = time.monotonic()
    finally:
        res = w.finish()
    gap = stop_gap(res.acked, out.t_stop, t_end)
    lost = lost_on(c, w, res, m2)
    record(f"VALKEY graceful-stop: gap={gap:.2f}s lost={'?' if lost is None else len(lost)} "
           f"exit={out.exit_code} exit_after={out.exit_s:.2f}s acked={len(res.acked)}")
    if out.exit_code != 0:
        fails.append(f"exit {out.exit_code}")
    if lost is None or lost:
        fails.append(f"graceful stop lost {lost}")
    if gap >= HANDOVER_GAP:
        fails.append(f"graceful stop gap {gap:.2f}s")
    # The stopped pod back, then `switchover` (Sentinel's FAILOVER, as on Redis) from its pod.
    stopped = next(p.idx for p in c.pods if not p.alive)
    c.start_pods([stopped], new_ip=True)
    m3, _ = check_step(c, "the stopped pod's return")
    assert c.time_to_failover_safe(30) is not None, "not failover-safe 30 s after the return"
    runs = [switchover_until_taken(c, c.pods[stopped])]
    m4, eng = check_step(c, "the switchover")
    # Healthy once the sentinels have reconnected to the new roles (a few seconds).
    try:
        j = wait_status(c, c.pods[stopped], 0, 30).json
    except AssertionError as e:
        j = status(c, c.pods[stopped]).json
        fails.append(str(e))
    record(f"VALKEY switchover: exit={runs[0].code} {m3} -> {m4} status={j['verdict']['health']}")
    if runs[0].code != 0 or m4 == m3:
        fails.append(f"switchover exit {runs[0].code}: {runs[0].err.strip()} (master {m3} -> {m4})")
    if j["verdict"]["health"] != "healthy" or {e for e, _ in eng.values()} != {"valkey"}:
        fails.append(f"status after the switchover: {j['verdict']} {eng}")
    assert not fails, "; ".join(fails)


def test_valkey_stale_first(cluster):
    """test_outage's stale-first order on Valkey: the old master back alone first after a full
    outage never answers role:master, then one master, nothing acknowledged lost."""
    cluster.servers.update({i: VALKEY for i in range(NPODS)})
    test_outage.test_outage_then_return(cluster, "stale-first")


def test_older_replica_is_named(cluster):
    """A Redis 7.0 replica of a Valkey 8 master (ordinals 0 and 1 on Valkey, 2 on Redis, from a
    cold start): its full sync fails for ever ("Can't handle RDB format version"). It must not
    be left retrying silently: its readiness is false and its probe names the version rule, its
    PID 1 logs it at error level, and `status` names it."""
    c = cluster
    c.servers.clear()
    c.servers.update({0: VALKEY, 1: VALKEY, 2: REDIS})
    # cold_start() without its wait: this cluster never answers with every replica linked.
    for p in c.pods:
        if p.alive:
            c.kill_pod(p.idx)
        shutil.rmtree(p.state_dir, ignore_errors=True)
    c.start_pods(list(range(NPODS)), new_ip=True)
    old = c.pods[2]
    want_probe = "cannot load its newer RDB format (version rule)"
    last: list = []

    def named():
        pr = run_cli(c, old, "probe", "redis", "--ready", timeout=10)
        st = status(c, c.pods[0]).json
        reasons = [r for r in st["verdict"]["reasons"] if r.startswith(f"replica {addr(old.ip, REDIS_PORT)} ")]
        logged = "version rule: our redis" in old.log_path.read_text(errors="replace")
        last[:] = [pr.code, pr.err.strip() or pr.out.strip(), reasons, logged]
        return (pr.code == 1 and want_probe in last[1] and logged
                and any("its full sync fails" in r for r in reasons))
    try:
        harness.wait_until(named, 40, 1.0, "the older replica named by probe, log and status")
    finally:
        record(f"VALKEY older replica: probe exit={last[0] if last else '?'} "
               f"'{last[1] if last else ''}' status={last[2] if last else ''} logged={last[3] if last else ''}")
    sentinel = run_cli(c, old, "probe", "sentinel", "--ready", timeout=10)
    assert sentinel.code == 1, sentinel.out + sentinel.err
    line = next(l for l in old.log_path.read_text(errors="replace").splitlines()
                if "version rule: our redis" in l)
    assert "ERROR" in line or '"level":"ERROR"' in line, line


class VersionWatch(threading.Thread):
    """Samples every live pod 4 times a second: a pod on Redis whose configured master runs
    Valkey is a replica older than its master (the pods' engines from cluster.servers)."""

    def __init__(self, c):
        super().__init__(daemon=True)
        self.c = c
        self.halt = threading.Event()
        self.samples = 0
        self.older: list[str] = []
        # Pods being stopped: Sentinel's failover (the handover) makes the old master a replica
        # of the new one for the moment before it exits; counted apart, not a violation.
        self.leaving: set[int] = set()
        self.older_leaving = 0

    def run(self):
        while not self.halt.wait(0.25):
            pods = {p.ip: p for p in self.c.live()}
            eng = {ip: self.c.servers.get(p.idx, REDIS) for ip, p in pods.items()}
            for ip, p in pods.items():
                try:
                    r = self.c.info_replication(ip, 0.3)
                except Exception:
                    continue
                self.samples += 1
                mh = r.get("master_host")
                if r.get("role") == "slave" and eng[ip] == REDIS and eng.get(mh) == VALKEY:
                    if p.idx in self.leaving:
                        self.older_leaving += 1
                        continue
                    self.older.append(f"{p.name}(redis) -> {pods[mh].name}(valkey) "
                                      f"link={r.get('master_link_status')}")

    def finish(self) -> list[str]:
        self.halt.set()
        self.join(5)
        return self.older


def force_full_resync(c, pod) -> str:
    """A Redis replica's data removed: SIGKILL, its state dir gone, back on the same server at a
    new address; it must sync from scratch (a full sync). Returns a line for the record."""
    assert c.servers.get(pod.idx, REDIS) == REDIS, pod.name
    c.kill_pod(pod.idx)
    shutil.rmtree(pod.state_dir, ignore_errors=True)
    c.start_pods([pod.idx], new_ip=True)
    ready_s = wait_ready(c, pod)
    m, eng = check_step(c, f"{pod.name} forced into a full resync")
    info = c.info_replication(pod.ip, 1.0)
    assert info.get("role") == "slave" and info.get("master_link_status") == "up", info
    return f"{pod.name}(redis) full resync from {c.pod_by_ip(m).name}:{eng[m][0]} ready {ready_s:.1f}s"


@pytest.mark.parametrize("first_master", [0, 1])
def test_rolling_upgrade_redis_to_valkey(cluster, first_master):
    """Three pods on redis-server 7.0, a writer going; ordinal 2, 1, 0 each stopped (SIGTERM: the
    master hands over), started again on valkey-server, its readiness probe awaited. With the
    master at ordinal 1, the handover must pick ordinal 0 (Redis) over the upgraded ordinal 2:
    otherwise ordinal 0 would have to follow a newer master. With the master at ordinal 0, it is
    SIGKILLed once ordinal 2 runs Valkey: the crash failover must pick ordinal 1 (Redis). After
    ordinal 2's step, and after every change of master that leaves a Redis replica, that replica
    is forced into a full resync and must sync. A watcher checks that no Redis replica ever
    follows a Valkey master."""
    c = cluster
    c.servers.clear()
    if NO_RULE:
        c.timings["REDISHA_TEST_NO_VERSION_RULE"] = "1"
    try:
        rolling_upgrade(c, first_master)
    finally:
        c.timings.pop("REDISHA_TEST_NO_VERSION_RULE", None)


def rolling_upgrade(c, first_master: int) -> None:
    cold_start(c)
    m, eng = check_step(c, "the cold start on redis-server")
    assert {e for e, _ in eng.values()} == {"redis"}, eng
    if first_master != 0:
        # A switchover refuses (exit 3) until every sentinel could fail over.
        assert c.time_to_failover_safe(30) is not None, "not failover-safe 30 s after start"
        to = c.pods[first_master].ip
        r = switchover_until_taken(c, c.pods[0], "--to", addr(to, REDIS_PORT))
        assert r.code == 0, r.err + r.out
        m, _ = check_step(c, "the switchover")
        assert m == to
    w = Writer(c, f"valkey:roll:{first_master}")
    watch = VersionWatch(c)
    w.start()
    watch.start()
    steps: list[str] = []
    fails: list[str] = []
    handovers: list[tuple[str, float, float]] = []  # (pod, t_stop, t_settled)
    crashed = False
    stopped = None  # why the sequence stopped early (a failed step), recorded with the rest

    def resync_old_replica(m: str, why: str) -> None:
        """Forces the Redis replicas left into a full resync (the master `m` is theirs)."""
        for p in c.live():
            if p.ip != m and c.servers.get(p.idx, REDIS) == REDIS:
                try:
                    steps.append(f"{why}: " + force_full_resync(c, p))
                except AssertionError as e:
                    pr = run_cli(c, p, "probe", "redis", "--ready", timeout=10)
                    raise AssertionError(f"{p.name} (redis) forced into a full resync {why} did "
                                         f"not sync: {str(e).splitlines()[0]}; its probe: "
                                         f"{(pr.err or pr.out).strip()}") from None
    try:
        time.sleep(1.0)
        try:
            for idx in (2, 1, 0):
                pod = c.pods[idx]
                if c.servers.get(idx) == VALKEY:
                    continue  # came back on Valkey after the crash below
                was_master = pod.ip == c.current_master()
                t_stop = time.monotonic()
                watch.leaving.add(idx)
                took, code = c.stop_pod_gracefully(idx)
                watch.leaving.discard(idx)
                if code != 0:
                    fails.append(f"{pod.name} exit {code}")
                c.servers[idx] = VALKEY
                c.start_pods([idx], new_ip=True)
                ready_s = wait_ready(c, pod)
                m, eng = check_step(c, f"{pod.name} back on valkey")
                if was_master:
                    handovers.append((pod.name, t_stop, time.monotonic()))
                steps.append(f"{pod.name}{'(master)' if was_master else ''}: stop {took:.2f}s "
                             f"ready {ready_s:.1f}s master={c.pod_by_ip(m).name}:{eng[m][0]}")
                if was_master and idx == 1 and first_master == 1:
                    # The version rule: ordinal 2 already runs Valkey, ordinal 0 still Redis.
                    if c.pod_by_ip(m).idx != 0:
                        fails.append(f"the handover of {pod.name} promoted {m} ({eng[m]}), not the "
                                     f"Redis replica {c.pods[0].name}")
                if idx == 2 or was_master:
                    # Mid-way: a Redis replica's data removed; it must full-sync from the master.
                    resync_old_replica(m, f"after {pod.name}'s step")
                if idx == 2 and first_master == 0:
                    # A crash mid-rollout: the Redis master pod SIGKILLed while ordinal 2 already
                    # runs Valkey. Sentinel must promote ordinal 1 (Redis, the lower priority);
                    # the pod comes back on the new version, as its controller would recreate it.
                    new, failover_s = kill_master(c, m)
                    crashed = True
                    if c.pod_by_ip(new).idx != 1:
                        fails.append(f"the crash failover promoted {new}, not the Redis replica "
                                     f"{c.pods[1].name}")
                    c.servers[0] = VALKEY
                    c.start_pods([0], new_ip=True)
                    ready_s = wait_ready(c, c.pods[0])
                    m, eng = check_step(c, "redis-0 killed and back on valkey")
                    steps.append(f"redis-0(master) killed: failover {failover_s:.2f}s to "
                                 f"{c.pod_by_ip(new).name}, back ready {ready_s:.1f}s")
                    resync_old_replica(m, "after the crash failover")
        except AssertionError as e:
            # Recorded with the rest below (what fails without the rule, REDISHA_HA_VALKEY_NO_RULE).
            stopped = str(e).splitlines()[0]
            fails.append(f"stopped: {stopped}")
        time.sleep(1.0)
    finally:
        res = w.finish()
        older = watch.finish()
    lost = lost_on(c, w, res, c.current_master() if stopped else m)
    if not stopped:
        left = {e for e, _ in engines(status(c, c.live()[0]).json).values()}
        if left != {"valkey"}:
            fails.append(f"engines at the end: {left}")
    # Each handover's own window (stop_gap counts every later write too).
    gaps = [(n, stop_gap([a for a in res.acked if a[1] <= t1], t0, t1)) for n, t0, t1 in handovers]
    record(f"VALKEY rolling redis->valkey from ordinal {first_master}"
           f"{' NO_RULE' if NO_RULE else ''}: {'; '.join(steps)}; "
           f"handover_gaps={','.join(f'{n}:{g:.2f}s' for n, g in gaps)} "
           f"max_gap={res.max_gap:.2f}s lost={'?' if lost is None else len(lost)} "
           f"acked={len(res.acked)} errors={res.errors} older_samples={len(older)}/{watch.samples} "
           f"(stopping old master demoted by its handover: {watch.older_leaving})"
           f"{f' first_older={older[0]}' if older else ''}{f' STOPPED: {stopped}' if stopped else ''}")
    if older:
        fails.append(f"a replica older than its master in {len(older)} of {watch.samples} "
                     f"samples, first: {older[0]}")
    # A SIGKILL may lose its replication window (test_races); the graceful steps lose nothing.
    if lost is None or len(lost) > (ASYNC_LOSS_MAX if crashed else 0):
        fails.append(f"lost {lost}")
    for n, g in gaps:
        if g >= HANDOVER_GAP:
            fails.append(f"handover of {n}: write gap {g:.2f}s")
    # The crash's gap is down-after and the failover; the handovers' is what HANDOVER_GAP bounds.
    if res.max_gap >= (DOWN_AFTER + FAILOVER_MARGIN + 4 if crashed else HANDOVER_GAP):
        fails.append(f"write gap {res.max_gap:.2f}s")
    assert not fails, "; ".join(fails)
