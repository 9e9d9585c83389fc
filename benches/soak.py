#!/usr/bin/env python3
"""A seeded random fault soak of the three-pod cluster of tests/ha (issue 14), with invariants
checked continuously and after every quiet period.

    .venv/bin/python benches/soak.py --profile ci                 # 3 min, seed 14
    .venv/bin/python benches/soak.py --profile bench --seed 7     # 30 min and >= 100 faults
    .venv/bin/python benches/soak.py --seed 7 --print-schedule    # the schedule only

Topology: tests/ha/harness.py (each pod is redisha-init as PID 1 of its own PID and network
namespace), run with its own name prefix and subnet (REDISHA_HA_PREFIX / REDISHA_HA_SUBNET,
default here "rhsk" on 10.78.0) so it can run beside the HA suite. A writer goes through
redis-py's Sentinel client (~100 acknowledged RPUSHes/s); a probe SETs a marker directly on every
node every 100 ms; an observer samples every node's INFO replication and every sentinel's view
every 250 ms; a "kubelet" restarts a pod whose PID 1 exited on its own (as Kubernetes would).

Schedule: random.Random(seed) draws episodes; an episode is one fault, or two overlapping ones
(the second at a random moment of the first, so during its failover), then a quiet period. The
schedule is printed as it runs and stored in the JSON; the same seed gives the same schedule.
Which pod "master" / "replicaK" means is resolved when the fault fires.

Faults: sigterm_master (graceful stop, back on its address), sigkill_pod (back on its address),
kill_child (SIGKILL of one redis-server or sentinel), link_down (1-15 s), freeze (SIGSTOP of
every process of the pod for longer than down-after, then SIGCONT), new_ip (pod gone, back with a
new address), sentinels_restart (all sentinels SIGKILLed together; the supervisors restart
them), overlap (two of those).

Invariants (a violation makes the exit code 1):
 1. no acknowledged write lost. Redis's asynchronous-replication windows are counted per fault,
    not violations: (a) writes acknowledged by a cut-off master from 1 s before the cut until
    min-replicas-max-lag + 1.5 s after it; (b) writes acknowledged by a master in the second
    before it was SIGKILLed (pod or redis-server) or frozen, reported with the replication lag
    sampled just before the fault; and a third, counted apart: (c) writes acknowledged by a
    master in the down-after after it came back from a freeze or a cut, while a failover that
    Sentinel started meanwhile was still moving its replicas away (the zombie master: Sentinel
    does not abort a started failover when the master returns, and the old master keeps a
    "good" replica until that replica is reconfigured);
 2. never two nodes acknowledging the marker SET of the same 100 ms probe round (the zombie
    master of window (c) doing so is counted in that window, not as a violation);
 3. convergence within 2 x down-after + 2 s of the episode's last action: one role:master, every
    sentinel names it, every other node its replica with the link up and no sync running, and
    every pod ready by its own readiness probe (`redisha-init probe sentinel --ready` run with
    nsenter inside the pod's PID, network and mount namespaces, with the pod's environment).
    Sentinel's own hold-offs stretch that: a sentinel whose process stalled (a freeze) is in
    TILT and acts on nothing (30 s by Sentinel's default; PID 1 sets it to down-after); a running failover waits up to failover-timeout for a
    dead replica; an aborted failover is retried after 2 x failover-timeout. When one was seen
    during the episode the bound runs from its end, and the episode is counted as "late after
    a hold-off" (not a violation; the raw convergence times are reported as they are). Our own
    supervisor's restart backoff (a child crashed several times within a minute) counts too;
 4. at every quiet point: no zombie and no process beyond redis-server and its sentinel under a
    PID 1 (seen twice, 1 s apart), and at the end each PID 1's RSS within +-10 % of its value
    once warm (first quiet point >= 20 s after its start).

Output: the seed, the schedule, per fault detect / failover / converge / write gap and the
windows' losses, each violation with the pod logs written during its episode; a JSON file; for
--png a timeline. Exit 0: no violation; 1: violations; 2: the soak itself failed.
"""

from __future__ import annotations

import argparse
import calendar
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("REDISHA_HA_PREFIX", "rhsk")
os.environ.setdefault("REDISHA_HA_SUBNET", "10.78.0")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "ha"))
import redis  # noqa: E402

import harness  # noqa: E402
from harness import (GROUP, REDIS_PORT, SENTINEL_PORT, Cluster, client,  # noqa: E402
                     log, stop_gap)

DA = harness.DOWN_AFTER
CONVERGE_BOUND = 2 * DA + 2
CONVERGE_GIVE_UP = 90.0   # s: not converged by then = stuck; the soak stops there
MAX_LAG = harness.MIN_REPLICAS_MAX_LAG
WINDOW_B = 1.0            # s before a SIGKILL/freeze of a master: writes not yet replicated
WINDOW_A_AFTER = MAX_LAG + 1.5  # s after a master's cut: it may still accept (lag checked per s)
FAILOVER_TIMEOUT = int(harness.TIMINGS["REDISHA_FAILOVER_TIMEOUT_MS"]) / 1000
ZOMBIE_S = DA             # s after a frozen/cut master is back: window (c), see open_windows
PROBE_PERIOD = 0.1
WRITES_KEY = "soak:writes"
OBSERVE_PERIOD = 0.25
LOCK_WAIT_S = 1200.0      # s: another run with the same prefix holds the harness lock
RSS_WARM_S = 20.0
RSS_TOLERANCE = 0.10
PROFILES = {
    "ci": {"seed": 14, "duration": 180.0, "min_faults": 0, "max_faults": 1000},
    "bench": {"seed": None, "duration": 1800.0, "min_faults": 100, "max_faults": 1000},
}
SIMPLE = ["sigterm_master", "sigkill_pod", "kill_child", "link_down", "freeze", "new_ip",
          "sentinels_restart"]
KIND_WEIGHTS = {"sigterm_master": 2, "sigkill_pod": 2, "kill_child": 2, "link_down": 2,
                "freeze": 2, "new_ip": 1, "sentinels_restart": 1, "overlap": 2}


# ---------------------------------------------------------------- the schedule (pure, seeded)

def draw_target(rng: random.Random) -> str:
    """"master" half the time, else one of the two replicas (resolved when the fault fires)."""
    return "master" if rng.random() < 0.5 else f"replica{rng.randrange(2)}"


def draw_fault(rng: random.Random, kind: str) -> dict:
    f: dict = {"kind": kind}
    if kind == "sigterm_master":
        f.update(target="master", back_after=round(rng.uniform(0.5, 4.0), 2))
    elif kind == "sigkill_pod":
        f.update(target=draw_target(rng), back_after=round(rng.uniform(0.5, 5.0), 2))
    elif kind == "kill_child":
        f.update(target=draw_target(rng), child=rng.choice(["redis", "sentinel"]))
    elif kind == "link_down":
        f.update(target=draw_target(rng), duration=round(rng.uniform(1.0, 15.0), 2))
    elif kind == "freeze":
        f.update(target=draw_target(rng), duration=round(DA + rng.uniform(0.5, 4.0), 2))
    elif kind == "new_ip":
        f.update(target=draw_target(rng), how=rng.choice(["sigkill", "sigterm"]),
                 back_after=round(rng.uniform(0.5, 4.0), 2))
    elif kind == "sentinels_restart":
        f.update(target="all")
    else:
        raise ValueError(kind)
    return f


def make_schedule(seed: int, n: int) -> list[dict]:
    """`n` episodes drawn from random.Random(seed): the same seed, the same list."""
    rng = random.Random(seed)
    kinds = list(KIND_WEIGHTS)
    weights = [KIND_WEIGHTS[k] for k in kinds]
    eps = []
    for i in range(n):
        kind = rng.choices(kinds, weights)[0]
        if kind == "overlap":
            a, b = rng.sample(SIMPLE, 2)
            faults = [draw_fault(rng, a), draw_fault(rng, b)]
            faults[0]["at"] = 0.0
            faults[1]["at"] = round(rng.uniform(0.2, DA + 3.0), 2)
        else:
            faults = [draw_fault(rng, kind)]
            faults[0]["at"] = 0.0
        eps.append({"episode": i, "kind": kind, "faults": faults,
                    "idle": round(rng.uniform(0.5, 4.0), 2)})
    return eps


def describe(f: dict) -> str:
    extra = {k: v for k, v in f.items() if k not in ("kind", "target", "at")}
    args = " ".join(f"{k}={v}" for k, v in extra.items())
    return f"{f['kind']}({f['target']}{' ' + args if args else ''}) at +{f['at']:.2f}s"


def percentile(xs: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(1, math.ceil(p / 100 * len(s)))
    return s[k - 1]


# ---------------------------------------------------------------- background observers

class SoakWriter(harness.Writer):
    """harness.Writer that also remembers which node acknowledged each value."""

    def __init__(self, cluster: Cluster, key: str, rate: float = 100):
        super().__init__(cluster, key, rate)
        self.hosts: list[str] = []

    def on_ack(self, n: int, host: str) -> None:
        super().on_ack(n, host)
        self.hosts.append(host)


class MarkerProbe:
    """Every 100 ms (round k at t0 + k*0.1) one thread per pod SETs a marker on that pod's node
    directly. acks[k] = {ip: ack time}: two ips in one round = two masters accepting writes.
    status[idx] = [(t, status)] on change, for the timeline."""

    def __init__(self, cluster: Cluster, t0: float):
        self.cluster = cluster
        self.t0 = t0
        self.acks: dict[int, dict[str, float]] = {}
        self.status: dict[int, list[tuple[float, str]]] = {p.idx: [] for p in cluster.pods}
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, args=(p.idx,), daemon=True)
                        for p in cluster.pods]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _set_status(self, idx: int, st: str) -> None:
        hist = self.status[idx]
        if not hist or hist[-1][1] != st:
            hist.append((time.monotonic(), st))

    def _loop(self, idx: int) -> None:
        pod = self.cluster.pods[idx]
        conn, conn_ip = None, None
        while not self.stop_ev.is_set():
            k = math.floor((time.monotonic() - self.t0) / PROBE_PERIOD) + 1
            self.stop_ev.wait(max(0.0, self.t0 + k * PROBE_PERIOD - time.monotonic()))
            ip = pod.ip
            if not pod.alive or not ip:
                self._set_status(idx, "down")
                continue
            if conn is None or conn_ip != ip:
                if conn is not None:
                    conn.close()
                conn, conn_ip = client(ip, REDIS_PORT, 0.09), ip
            try:
                conn.set("soak:marker", f"{idx}:{k}")
            except redis.ReadOnlyError:
                self._set_status(idx, "replica")
                continue
            except redis.ResponseError as e:
                self._set_status(idx, "refusing" if "NOREPLICAS" in str(e) else "error")
                continue
            except (redis.RedisError, OSError):
                self._set_status(idx, "down")
                conn.close()
                conn = None
                continue
            t = time.monotonic()
            self._set_status(idx, "master")
            with self.lock:
                self.acks.setdefault(k, {})[ip] = t

    def double_masters(self, since_round: int = 0) -> list[tuple[int, dict[str, float]]]:
        with self.lock:
            return [(k, dict(v)) for k, v in sorted(self.acks.items())
                    if k >= since_round and len(v) > 1]

    def stop(self) -> None:
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=5)


class Observer(threading.Thread):
    """Every 250 ms: INFO replication of every live node, and from every live sentinel the
    master it names, that master's flags and its replicas' flags. samples: (t, nodes, sents),
    nodes {idx: (ip, info|None)}, sents {idx: (ip, {named, flags, replicas}|None)}."""

    def __init__(self, cluster: Cluster):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.samples: list[tuple[float, dict, dict]] = []
        self.stop_ev = threading.Event()
        self._conns: dict[tuple[str, int], redis.Redis] = {}

    def _c(self, ip: str, port: int) -> redis.Redis:
        key = (ip, port)
        if key not in self._conns:
            self._conns[key] = client(ip, port, 0.2)
        return self._conns[key]

    def sample(self) -> tuple[float, dict, dict]:
        nodes, sents = {}, {}
        for p in self.cluster.pods:
            ip = p.ip
            if not p.alive or not ip:
                continue
            try:
                c = self._c(ip, REDIS_PORT)
                info = c.info("replication")
                if info.get("role") == "slave":
                    # The newest value this replica holds (the list only grows at its tail):
                    # what a SIGKILLed master had already sent to a replica.
                    last = c.lindex(WRITES_KEY, -1)
                    info["soak_last"] = int(last) if last is not None else 0
                nodes[p.idx] = (ip, info)
            except (redis.RedisError, OSError, ValueError):
                nodes[p.idx] = (ip, None)
            try:
                c = self._c(ip, SENTINEL_PORT)
                addr = c.sentinel_get_master_addr_by_name(GROUP)
                m = c.sentinel_master(GROUP)
                reps = c.sentinel_slaves(GROUP)
                tilt = str(c.info("sentinel").get("sentinel_tilt", "0")) == "1"
                sents[p.idx] = (ip, {"named": addr[0] if addr else None,
                                     "flags": m.get("flags", ""),
                                     "replicas": {r["ip"]: r["flags"] for r in reps},
                                     "tilt": tilt})
            except (redis.RedisError, OSError):
                sents[p.idx] = (ip, None)
        return time.monotonic(), nodes, sents

    def run(self) -> None:
        while not self.stop_ev.is_set():
            t = time.monotonic()
            self.samples.append(self.sample())
            self.stop_ev.wait(max(0.0, OBSERVE_PERIOD - (time.monotonic() - t)))

    def latest(self):
        return self.samples[-1] if self.samples else None

    def between(self, a: float, b: float):
        return [s for s in self.samples if a <= s[0] <= b]

    def finish(self) -> None:
        self.stop_ev.set()
        self.join(timeout=10)
        for c in self._conns.values():
            c.close()


def sample_master(sample) -> str | None:
    """The single node answering role:master in an observer sample, else None."""
    ms = [ip for ip, info in sample[1].values() if info and info.get("role") == "master"]
    return ms[0] if len(ms) == 1 else None


def converged_view(sample, npods: int) -> str | None:
    """Invariant 3 without the readiness probes: every pod up, one master, every other node its
    linked, synced replica, every sentinel naming it. Returns the master's address."""
    _, nodes, sents = sample
    if len(nodes) != npods or len(sents) != npods:
        return None
    m = sample_master(sample)
    if m is None:
        return None
    for ip, info in nodes.values():
        if ip == m:
            continue
        if not info or info.get("role") != "slave" or info.get("master_host") != m \
                or info.get("master_link_status") != "up" \
                or str(info.get("master_sync_in_progress")) != "0":
            return None
    for _, s in sents.values():
        if not s or s["named"] != m:
            return None
    return m


def repl_lag(info: dict) -> dict:
    """Bytes the best replica is behind and its `lag` (s since its last ACK), from a master's
    INFO replication."""
    off = int(info.get("master_repl_offset", 0))
    reps = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
    if not reps:
        return {"bytes": None, "lag_s": None, "replicas": 0}
    best = max(int(r.get("offset", 0)) for r in reps)
    return {"bytes": off - best, "lag_s": min(int(r.get("lag", 0)) for r in reps),
            "replicas": len(reps)}


# ---------------------------------------------------------------- the soak

class Soak:
    def __init__(self, binary: str, seed: int, profile: str, duration: float, min_faults: int,
                 max_faults: int, tmp: Path):
        self.binary = binary
        self.seed = seed
        self.profile = profile
        self.duration = duration
        self.min_faults = min_faults
        self.max_faults = max_faults
        self.tmp = tmp
        self.cluster = Cluster(binary, tmp)
        self.ops = threading.RLock()   # cluster mutations (spawn, kill, networks, hosts files)
        self.held: set[int] = set()    # pods a fault owns (the kubelet leaves them alone)
        self.frozen: dict[int, list[int]] = {}
        self.events: list[dict] = []
        self.violations: list[dict] = []
        self.episodes: list[dict] = []
        self.rss: dict[str, list[tuple[float, int]]] = {}
        self.lost_seen: set[int] = set()
        self.loss_windows: list[dict] = []
        self.stop_ev = threading.Event()
        self.t0 = time.monotonic()

    def rel(self, t: float | None) -> float | None:
        return None if t is None else round(t - self.t0, 3)

    # ---- pods and faults ----
    def resolve(self, target: str, exclude: set[int]) -> int:
        """A pod index for "master" / "replicaK" now, avoiding pods other faults hold."""
        free = [p.idx for p in self.cluster.pods if p.idx not in exclude]
        m = self.cluster.current_master()
        mpod = self.cluster.pod_by_ip(m) if m else None
        if target == "master":
            if mpod is not None and mpod.idx in free:
                return mpod.idx
            return free[0]
        reps = [i for i in free if mpod is None or i != mpod.idx]
        k = int(target[len("replica"):]) if target.startswith("replica") else 0
        return reps[k % len(reps)] if reps else free[0]

    def spawn_back(self, idx: int, new_ip: bool) -> None:
        with self.ops:
            self.cluster.start_pods([idx], new_ip=new_ip)

    def init_pids(self, pod) -> list[int]:
        init = pod.init_pid()
        return ([init] if init else []) + [pid for pid, _ in pod.descendants()]

    def run_fault(self, f: dict, rec: dict) -> None:
        """Fires one fault (blocking until its last action); fills `rec`."""
        c = self.cluster
        kind = f["kind"]
        if kind == "sentinels_restart":
            rec["t_start"] = time.monotonic()
            with self.ops:
                pids = []
                for p in c.pods:
                    if p.alive and p.idx not in self.frozen:
                        try:
                            pids.append(p.child_pid("sentinel"))
                        except AssertionError:
                            pass
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            rec.update(pod="all", ip=None, was_master=False, t_last=time.monotonic(),
                       killed=len(pids))
            return
        with self.ops:
            idx = self.resolve(f["target"], self.held)
            self.held.add(idx)
        pod = c.pods[idx]
        try:
            ip = pod.ip
            m = c.current_master()
            rec.update(pod=pod.name, ip=ip, was_master=(ip is not None and ip == m))
            last = self.observer.latest()
            if rec["was_master"] and last and ip in [v[0] for v in last[1].values()]:
                info = next((i for x, i in last[1].values() if x == ip), None)
                if info:
                    rec["lag_before"] = repl_lag(info)
            rec["t_start"] = time.monotonic()
            if kind == "sigterm_master":
                if pod.alive:
                    took, code = pod.terminate()
                    rec.update(exit_code=code, exit_s=round(took, 3))
                time.sleep(f["back_after"])
                self.spawn_back(idx, new_ip=False)
            elif kind == "sigkill_pod":
                with self.ops:
                    c.kill_pod(idx, keep_ip=True)
                time.sleep(f["back_after"])
                self.spawn_back(idx, new_ip=False)
            elif kind == "new_ip":
                if f["how"] == "sigterm" and pod.alive:
                    took, code = pod.terminate()
                    rec.update(exit_code=code, exit_s=round(took, 3))
                with self.ops:
                    c.kill_pod(idx, keep_ip=False)
                time.sleep(f["back_after"])
                self.spawn_back(idx, new_ip=True)
                rec["new_ip"] = pod.ip
            elif kind == "kill_child":
                if pod.alive:
                    try:
                        pid = pod.child_pid(f["child"])
                        os.kill(pid, signal.SIGKILL)
                    except (AssertionError, ProcessLookupError) as e:
                        rec["note"] = f"no {f['child']} process to kill: {e}"
            elif kind == "link_down":
                c.set_link(idx, False)
                try:
                    time.sleep(f["duration"])
                finally:
                    c.set_link(idx, True)
            elif kind == "freeze":
                with self.ops:
                    stopped = pod.freeze()
                    self.frozen[idx] = stopped
                try:
                    time.sleep(f["duration"])
                finally:
                    self.thaw(idx)
            rec["t_last"] = time.monotonic()
        finally:
            with self.ops:
                self.held.discard(idx)

    def thaw(self, idx: int) -> None:
        with self.ops:
            harness.Pod.thaw(self.frozen.pop(idx, []))

    def kubelet(self) -> None:
        """Restarts a pod whose PID 1 exited on its own (restart budget spent, exit 75, ...)
        on its address after 1 s, as Kubernetes restarts a container; each one is an event."""
        while not self.stop_ev.wait(0.5):
            for p in self.cluster.pods:
                with self.ops:
                    if p.idx in self.held or p.proc is None or p.alive:
                        continue
                    code = p.proc.returncode
                    p.proc = None
                    self.held.add(p.idx)
                ev = {"t": self.rel(time.monotonic()), "pod": p.name,
                      "what": f"PID 1 exited on its own with {code}: restarted after 1 s",
                      "log_tail": p.log_tail(15)}
                self.events.append(ev)
                log(f"EVENT {p.name}: {ev['what']}")
                try:
                    time.sleep(1.0)
                    self.spawn_back(p.idx, new_ip=p.ip is None)
                finally:
                    with self.ops:
                        self.held.discard(p.idx)

    # ---- checks ----
    def probes_ready(self) -> tuple[bool, list[str]]:
        """Every pod's own readiness probe, run inside its namespaces with its environment."""
        procs = []
        for p in self.cluster.pods:
            init = p.init_pid()
            if init is None:
                return False, [f"{p.name}: no PID 1"]
            procs.append((p, subprocess.Popen(
                ["nsenter", "-t", str(init), "-n", "-m", "-p", "--", self.binary, "probe",
                 "sentinel", "--ready", "--timeout-ms", "1000"],
                env=p.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
        why = []
        for p, pr in procs:
            try:
                out, _ = pr.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                pr.kill()
                out, _ = pr.communicate()
            if pr.returncode != 0:
                why.append(f"{p.name}: {out.strip()[:200]}")
        return not why, why

    def wait_converged(self, t_last: float) -> tuple[float | None, str | None, list[str]]:
        """Seconds from `t_last` to invariant 3 (None: not within CONVERGE_GIVE_UP), the master,
        and the last reasons it did not hold."""
        deadline = t_last + CONVERGE_GIVE_UP
        why: list[str] = []
        seen = 0.0
        while time.monotonic() < deadline:
            s = self.observer.latest()
            if s and s[0] > seen and s[0] >= t_last:
                seen = s[0]
                m = converged_view(s, len(self.cluster.pods))
                if m is None:
                    why = [self.view_problems(s)]
                else:
                    ok, probe_why = self.probes_ready()
                    if ok:
                        # `why`: what held last before it converged (for a late convergence).
                        return s[0] - t_last, m, why
                    why = probe_why
            time.sleep(0.1)
        return None, None, why

    def view_problems(self, s) -> str:
        _, nodes, sents = s
        parts = []
        for idx, (ip, info) in sorted(nodes.items()):
            if not info:
                parts.append(f"redis-{idx}@{ip} no answer")
            else:
                parts.append(f"redis-{idx}@{ip} {info.get('role')}"
                             + (f"->{info.get('master_host')} {info.get('master_link_status')}"
                                if info.get("role") == "slave" else ""))
        for idx, (ip, sv) in sorted(sents.items()):
            parts.append(f"sentinel-{idx} names {sv['named'] if sv else 'no answer'}")
        return "; ".join(parts) + f" ({len(nodes)} pods up)"

    def check_procs(self) -> list[str]:
        """Invariant 4 at a quiet point: zombies and strays under every PID 1 (seen twice)."""
        # The master proxy (issue 32) is PID 1's third child where the pods' env turns it on.
        proxy_on = self.cluster.timings.get("REDISHA_MASTER_PROXY_PORT", "0") not in ("0", "off")

        def look() -> dict[str, str]:
            bad = {}
            for p in self.cluster.pods:
                kids = p.descendants()
                data = [pid for pid, cmd in kids if cmd.startswith("redis-server")
                        and "sentinel" not in cmd]
                sent = [pid for pid, cmd in kids if cmd.startswith("redis-server")
                        and "sentinel" in cmd]
                for pid, cmd in kids:
                    try:
                        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                    except (OSError, IndexError):
                        continue
                    if state == "Z":
                        bad[f"{p.name}:{pid}"] = f"{p.name}: zombie {pid} ({cmd.strip()})"
                proxies = [pid for pid, cmd in kids if cmd.split()[1:2] == ["proxy"]]
                # A server's own fork (a BGSAVE for a replica's full sync, an AOF rewrite) and a
                # process caught while it exits (no cmdline left; a zombie is caught above) are
                # not strays. The key names the strays, so two different transient ones a
                # second apart are not one violation.
                strays = sorted(pid for pid, cmd in kids
                                if pid not in data + sent + proxies and cmd.strip()
                                and not cmd.startswith(("redis-rdb", "redis-aof", "valkey-rdb",
                                                        "valkey-aof")))
                if (len(data) != 1 or len(sent) != 1 or len(proxies) != int(proxy_on)
                        or strays):
                    bad[f"{p.name}:procs:{strays}"] = (
                        f"{p.name}: processes under PID 1: "
                        f"{[(pid, cmd.strip()) for pid, cmd in kids]}")
            return bad
        first = look()
        if not first:
            return []
        time.sleep(1.0)
        second = look()
        return [v for k, v in second.items() if k in first]

    def sample_rss(self) -> None:
        now = time.monotonic()
        for p in self.cluster.pods:
            init = p.init_pid()
            if init is None or now - p.started_at < RSS_WARM_S:
                continue
            try:
                for line in Path(f"/proc/{init}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        kb = int(line.split()[1])
                        self.rss.setdefault(f"{p.name}.gen{p.generation}", []).append(
                            (self.rel(now), kb))
            except OSError:
                pass

    def check_losses(self, ep: dict, master: str) -> None:
        """Invariant 1 after a convergence: acknowledged values missing on the master; each is
        in a documented window of a fault (counted there) or a violation."""
        acked = list(self.writer.acked)
        hosts = list(self.writer.hosts)
        try:
            with client(master, REDIS_PORT, 10) as c:
                present = {int(v) for v in c.lrange(self.writer.key, 0, -1)}
        except (redis.RedisError, OSError) as e:
            self.violation(1, ep, f"cannot read the writes back from the master {master}: {e}")
            return
        missing = [(n, t, h) for (n, t), h in zip(acked, hosts)
                   if n not in present and n not in self.lost_seen]
        if not missing:
            return
        bad, replicated = [], []
        for n, t, h in missing:
            self.lost_seen.add(n)
            w = self.window_for(t, h)
            if w is None:
                bad.append((n, t, h))
            elif w.get("replicated_upto") is not None and n <= w["replicated_upto"]:
                # A replica held it after the fault: not Redis's window, lost by what followed
                # (a restart or rejoin that wiped the replicas).
                replicated.append((n, t, h))
            else:
                w["lost"].append(n)
        if bad:
            desc = ", ".join(f"{n} (acked by {h} at +{t - self.t0:.2f}s)" for n, t, h in bad[:10])
            self.violation(1, ep, f"{len(bad)} acknowledged writes missing on master {master} "
                           f"outside any documented window: {desc}")
        if replicated:
            desc = ", ".join(f"{n} (acked by {h} at +{t - self.t0:.2f}s)"
                             for n, t, h in replicated[:10])
            self.violation(1, ep, f"{len(replicated)} acknowledged writes missing on master "
                           f"{master} although a replica held them after the fault: {desc}")

    def window_for(self, t: float, host: str) -> dict | None:
        for w in self.loss_windows:
            if w["ip"] == host and w["from"] <= t <= w["to"]:
                return w
        return None

    def restart_backoffs(self, marks: dict, t_ep: float) -> list[tuple[float, float]]:
        """(monotonic time, delay s) of each "child exited unexpectedly; restarting" line the
        pods' PID 1 logged during the episode."""
        offset = time.monotonic() - time.time()
        out = []
        for p in self.cluster.pods:
            for path in self.cluster.pod_logs(p):
                try:
                    with open(path, "rb") as fh:
                        fh.seek(marks.get(path, 0))
                        data = fh.read().decode(errors="replace")
                except OSError:
                    continue
                for line in data.splitlines():
                    if "child exited unexpectedly" not in line or "restart_in_ms=" not in line:
                        continue
                    try:
                        stamp = line.split()[0].rstrip("Z")
                        wall = calendar.timegm(time.strptime(stamp.split(".")[0],
                                                             "%Y-%m-%dT%H:%M:%S"))
                        wall += float("0." + stamp.split(".")[1]) if "." in stamp else 0.0
                        ms = int(line.split("restart_in_ms=")[1].split()[0])
                    except (IndexError, ValueError):
                        continue
                    if wall + offset >= t_ep - 1:
                        out.append((wall + offset, ms / 1000))
        return out

    def failover_aborts(self, marks: dict, t_ep: float) -> list[float]:
        """Monotonic times of `-failover-abort-*` lines the pods' sentinels logged during the
        episode (the log lines carry wall-clock times)."""
        offset = time.monotonic() - time.time()
        out = []
        for p in self.cluster.pods:
            for path in self.cluster.pod_logs(p):
                try:
                    with open(path, "rb") as fh:
                        fh.seek(marks.get(path, 0))
                        data = fh.read().decode(errors="replace")
                except OSError:
                    continue
                for line in data.splitlines():
                    if "-failover-abort" not in line or not line.startswith("[sentinel]"):
                        continue
                    w = line.split()
                    try:
                        wall = time.mktime(time.strptime(" ".join(w[2:5]) + " " +
                                                         w[5].split(".")[0],
                                                         "%d %b %Y %H:%M:%S"))
                        wall += float("0." + w[5].split(".")[1])
                    except (IndexError, ValueError):
                        continue
                    if wall + offset >= t_ep - 1:
                        out.append(wall + offset)
        return out

    def open_windows(self, ep: dict, rec: dict, f: dict) -> None:
        if not rec.get("was_master") or rec.get("ip") is None:
            return
        t = rec["t_start"]
        kind = f["kind"]
        w = None
        if kind == "link_down":
            w = {"window": "a: cut-off master before min-replicas-max-lag",
                 "from": t - WINDOW_B, "to": t + WINDOW_A_AFTER}
        elif kind in ("sigkill_pod", "freeze") or (kind == "new_ip" and f["how"] == "sigkill") \
                or (kind == "kill_child" and f["child"] == "redis"):
            w = {"window": "b: acknowledged, not yet replicated when killed/frozen",
                 "from": t - WINDOW_B, "to": t + 0.05}
        if w:
            # The newest value any replica held from just before the fault until 1.5 s after it
            # (before any resync): writes up to it were replicated, not in window (b).
            held = [info.get("soak_last", 0)
                    for _, nodes, _ in self.observer.between(t - 0.3, t + 1.5)
                    for ip, info in nodes.values() if info and ip != rec["ip"]]
            w.update(ip=rec["ip"], episode=ep["episode"], fault=f["kind"], lost=[],
                     lag_before=rec.get("lag_before"),
                     replicated_upto=max(held) if held else None)
            self.loss_windows.append(w)
            rec["window"] = w
        if kind in ("link_down", "freeze"):
            # The zombie master (Jepsen 2013): Sentinel finishes a failover it started while
            # the master was unreachable even once the master is back; until the last replica
            # not yet moved away leaves it, the old master still has a "good" replica and
            # acknowledges writes the new master never gets. Redis behaviour, not ours: counted
            # in its own window, reported apart from (a) and (b).
            z = {"window": "c: zombie master back after a freeze/cut, failover still moving "
                           "its replicas", "from": rec["t_last"], "to": rec["t_last"] + ZOMBIE_S,
                 "ip": rec["ip"], "episode": ep["episode"], "fault": kind, "lost": [],
                 "lag_before": rec.get("lag_before")}
            self.loss_windows.append(z)
            rec["zombie_window"] = z

    def violation(self, inv: int, ep: dict | None, what: str) -> None:
        logs = {}
        marks = (ep or {}).get("_marks", {})
        for p in self.cluster.pods:
            for path in self.cluster.pod_logs(p):
                start = marks.get(path, 0)
                try:
                    with open(path, "rb") as fh:
                        fh.seek(start)
                        lines = fh.read().decode(errors="replace").splitlines()
                except OSError:
                    continue
                if lines:
                    logs[path.name] = lines[-60:]
        v = {"invariant": inv, "t": self.rel(time.monotonic()),
             "episode": (ep or {}).get("episode"), "what": what,
             "loadavg": os.getloadavg(), "logs": logs}
        self.violations.append(v)
        log(f"VIOLATION (invariant {inv}) episode {v['episode']}: {what}")

    # ---- episode ----
    def fault_timings(self, rec: dict, t_conv: float | None) -> None:
        """detect: first sample with a sentinel flagging the faulted master (or replica)
        s_down/o_down; failover: every answering sentinel names a master other than the old one."""
        if rec.get("ip") is None:
            return
        ip = rec["ip"]
        end = t_conv if t_conv is not None else time.monotonic()
        for t, _, sents in self.observer.between(rec["t_start"], end):
            views = [sv for _, sv in sents.values() if sv]
            if "detect_s" not in rec:
                for sv in views:
                    flags = sv["flags"] if sv["named"] == ip else sv["replicas"].get(ip, "")
                    if "s_down" in flags or "o_down" in flags:
                        rec["detect_s"] = round(t - rec["t_start"], 3)
                        break
            if rec["was_master"] and "failover_s" not in rec and views:
                named = {sv["named"] for sv in views}
                if len(named) == 1 and None not in named and ip not in named:
                    rec["failover_s"] = round(t - rec["t_start"], 3)
            if "detect_s" in rec and ("failover_s" in rec or not rec["was_master"]):
                break

    def run_episode(self, ep: dict) -> None:
        c = self.cluster
        ep["_marks"] = c.log_marks()
        ep["t_start"] = self.rel(time.monotonic())
        ep["loadavg"] = os.getloadavg()[0]
        k0 = math.floor((time.monotonic() - self.t0) / PROBE_PERIOD)
        log(f"episode {ep['episode']} ({ep['kind']}): "
            + " + ".join(describe(f) for f in ep["faults"]))
        recs: list[dict] = [{} for _ in ep["faults"]]
        errors: list[str] = []

        def fire(i: int, f: dict) -> None:
            try:
                self.run_fault(f, recs[i])
            except Exception as e:  # the soak reports it; the main thread goes on
                errors.append(f"{describe(f)}: {type(e).__name__}: {e}")
                recs[i].setdefault("t_last", time.monotonic())

        t_ep = time.monotonic()
        threads = []
        for i, f in enumerate(ep["faults"]):
            time.sleep(max(0.0, t_ep + f["at"] - time.monotonic()))
            th = threading.Thread(target=fire, args=(i, f), daemon=True)
            th.start()
            threads.append(th)
            # the window must be known before the loss check, and the fault's pod resolved
        for th in threads:
            th.join(timeout=120)
            if th.is_alive():
                errors.append("a fault did not finish within 120 s")
        if errors:
            raise RuntimeError("; ".join(errors))
        for f, rec in zip(ep["faults"], recs):
            self.open_windows(ep, rec, f)
        t_last = max(r["t_last"] for r in recs)
        conv_s, m, why = self.wait_converged(t_last)
        t_conv = t_last + conv_s if conv_s is not None else None
        for rec in recs:
            self.fault_timings(rec, t_conv)
            rec["write_gap_s"] = round(stop_gap(list(self.writer.acked), rec["t_start"],
                                                t_conv or time.monotonic()), 3)
        ep["faults_run"] = []
        for f, rec in zip(ep["faults"], recs):
            out = {k: v for k, v in rec.items() if k not in ("window", "t_start", "t_last")}
            out["t_start"] = self.rel(rec["t_start"])
            out["t_last"] = self.rel(rec["t_last"])
            out.pop("zombie_window", None)
            if "window" in rec:
                out["window"] = rec["window"]["window"]
                out["window_lost"] = rec["window"]["lost"]  # filled by check_losses below
            if "zombie_window" in rec:
                out["zombie_lost"] = rec["zombie_window"]["lost"]
            ep["faults_run"].append({**f, **out})
        ep["t_last"] = self.rel(t_last)
        ep["converge_s"] = None if conv_s is None else round(conv_s, 3)
        ep["write_gap_s"] = max(r["write_gap_s"] for r in recs)
        # Sentinel's own hold-offs, during which no bound after the last fault can hold: a
        # sentinel whose process stalled (a freeze, also an earlier one) is in TILT (down-after,
        # as PID 1 sets it) and acts on nothing; a failover in progress (flag failover_in_progress: the leader
        # reconfigures replicas, a dead one until failover-timeout); a failover aborted (e.g.
        # -failover-abort-no-good-slave) is retried only after 2 x failover-timeout. The bound
        # then runs from the end of the last hold-off seen, and the episode is counted as late.
        hold_until, holds = None, set()
        for t, _, sents in self.observer.between(t_ep, t_conv or time.monotonic()):
            for _, sv in sents.values():
                if sv and sv.get("tilt"):
                    hold_until = t
                    holds.add("tilt")
                elif sv and "failover_in_progress" in sv.get("flags", ""):
                    hold_until = t
                    holds.add("failover running")
        for t_abort in self.failover_aborts(ep["_marks"], t_ep):
            holds.add("failover aborted")
            end = t_abort + 2 * FAILOVER_TIMEOUT
            if t_conv is not None:
                end = min(end, t_conv)
            hold_until = max(hold_until or end, end)
        # Our own supervisor's restart backoff (0.5 s, 1 s, 2 s, ... per crash within 60 s of
        # the last; README "Supervision"): a child crashed again and again waits that long.
        for t_crash, delay in self.restart_backoffs(ep["_marks"], t_ep):
            holds.add("restart backoff")
            end = t_crash + delay
            if t_conv is not None:
                end = min(end, t_conv)
            hold_until = max(hold_until or end, end)
        ep["hold_s"] = None if hold_until is None else round(max(0.0, hold_until - t_last), 3)
        ep["holds"] = sorted(holds)
        if conv_s is None:
            self.violation(3, ep, f"not converged {CONVERGE_GIVE_UP:.0f}s after the last "
                           f"action: {why}")
        elif conv_s > CONVERGE_BOUND:
            late = t_conv - max(t_last, hold_until or t_last)
            if hold_until is not None and late <= CONVERGE_BOUND:
                ep["late_hold"] = True
                log(f"episode {ep['episode']}: converged {conv_s:.2f}s after the last action, "
                    f"{late:.2f}s after the last hold-off ({', '.join(sorted(holds))}): "
                    f"within the bound")
            else:
                self.violation(3, ep, f"converged {conv_s:.2f}s after the last action, "
                               f"{late:.2f}s after the last hold-off {sorted(holds)} "
                               f"(bound {CONVERGE_BOUND:.0f}s; load average "
                               f"{os.getloadavg()[0]:.2f}); last not converged: {why}")
        if m is not None:
            self.check_losses(ep, m)
        dbl = self.probe.double_masters(k0)
        for k, acks in dbl:
            if k in self.reported_rounds:
                continue
            self.reported_rounds.add(k)
            # The zombie master of window (c) also acknowledges the probe's marker next to the
            # new master: counted there, like its lost writes, not as a violation.
            z = next((w for ip, t in acks.items() for w in self.loss_windows
                      if w["window"].startswith("c:") and w["ip"] == ip
                      and w["from"] <= t <= w["to"]), None)
            if z is not None:
                z.setdefault("double_rounds", []).append(k)
                log(f"episode {ep['episode']}: probe round {k}: acknowledged by {sorted(acks)} "
                    f"(zombie master {z['ip']} after its {z['fault']}: window (c))")
                continue
            self.violation(2, ep, f"probe round {k} (+{k * PROBE_PERIOD:.1f}s): acknowledged "
                           f"by {sorted(acks)}")
        if m is not None:
            for what in self.check_procs():
                self.violation(4, ep, what)
            self.sample_rss()
        for fr, rec in zip(ep["faults_run"], recs):
            for key in ("window_lost", "zombie_lost"):
                if key in fr:
                    fr[key] = len(fr[key])
            if "zombie_window" in rec:
                fr["zombie_double_rounds"] = len(rec["zombie_window"].get("double_rounds", []))
        log(f"episode {ep['episode']}: converge={ep['converge_s']}s "
            + (f"(Sentinel hold-off {ep['holds']} until +{ep['hold_s']}s) "
               if ep.get("hold_s") is not None else "")
            + f"gap={ep['write_gap_s']:.2f}s " + " | ".join(
                f"{fr['kind']}@{fr.get('pod')}{' (master)' if fr.get('was_master') else ''} "
                f"detect={fr.get('detect_s')} failover={fr.get('failover_s')}"
                + (f" window_lost={fr['window_lost']} lag={fr.get('lag_before')}"
                   if "window_lost" in fr else "")
                + (f" zombie_lost={fr['zombie_lost']}" if fr.get("zombie_lost") else "")
                for fr in ep["faults_run"]))
        del ep["_marks"]
        self.episodes.append(ep)
        if conv_s is None:
            raise StuckError(f"episode {ep['episode']}: cluster stuck")
        time.sleep(ep["idle"])

    def n_faults(self) -> int:
        return sum(len(e["faults"]) for e in self.episodes)

    def run(self) -> None:
        c = self.cluster
        self.reported_rounds: set[int] = set()
        # Another run with the same prefix (a soak, or the HA suite run with it) holds the
        # harness lock: wait for it, bounded, rather than fail.
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                c.setup()
                break
            except RuntimeError as e:
                if time.monotonic() > deadline:
                    raise
                log(f"{e}: waiting")
                time.sleep(5)
        log(f"soak: prefix {harness.PREFIX} subnet {harness.SUBNET}.0/24, logs under {self.tmp}")
        c.start_pods(list(range(len(c.pods))), new_ip=True)
        c.settle(90, "a settled cluster before the soak")
        self.t0 = time.monotonic()
        self.observer = Observer(c)
        self.observer.start()
        self.probe = MarkerProbe(c, self.t0)
        self.probe.start()
        self.writer = SoakWriter(c, WRITES_KEY)
        self.writer.start()
        kube = threading.Thread(target=self.kubelet, daemon=True)
        kube.start()
        try:
            conv_s, m, why = self.wait_converged(time.monotonic())
            if conv_s is None:
                raise StuckError(f"the soak's cluster did not converge at start: {why}")
            time.sleep(2.0)
            for ep in make_schedule(self.seed, self.max_faults):
                elapsed = time.monotonic() - self.t0
                if self.n_faults() >= self.max_faults or (
                        elapsed >= self.duration and self.n_faults() >= self.min_faults):
                    break
                self.run_episode(ep)
        finally:
            self.stop_ev.set()
            kube.join(timeout=10)
            for idx in list(self.frozen):
                self.thaw(idx)
            self.end = time.monotonic()
            res = self.writer.finish()
            self.probe.stop()
            self.observer.finish()
            self.writer_errors = res.errors
        self.check_rss()

    def check_rss(self) -> None:
        for name, xs in self.rss.items():
            if len(xs) < 2:
                continue
            base = xs[0][1]
            worst = max(xs[1:], key=lambda x: abs(x[1] - base))
            if abs(worst[1] - base) > RSS_TOLERANCE * base:
                self.violation(4, None, f"{name} PID 1 RSS {base} kB when warm, {worst[1]} kB "
                               f"at +{worst[0]:.0f}s (> ±{RSS_TOLERANCE:.0%})")


class StuckError(Exception):
    pass


# ---------------------------------------------------------------- report

def summarize(soak: Soak) -> dict:
    kinds: dict[str, dict] = {}
    for ep in soak.episodes:
        fr = ep["faults_run"]
        if ep["kind"] == "overlap":
            keys = ["overlap"]
        else:
            keys = [fr[0]["kind"]]
        for k in keys:
            d = kinds.setdefault(k, {"episodes": 0, "faults": 0, "gap": [], "conv": [],
                                     "window_lost": 0, "zombie_lost": 0, "zombie_double": 0,
                                     "late_hold": 0,
                                     "violations": 0})
            d["episodes"] += 1
            d["faults"] += len(fr)
            d["gap"].append(ep["write_gap_s"])
            if ep["converge_s"] is not None:
                d["conv"].append(ep["converge_s"])
            d["window_lost"] += sum(f.get("window_lost", 0) for f in fr)
            d["zombie_lost"] += sum(f.get("zombie_lost", 0) for f in fr)
            d["zombie_double"] += sum(f.get("zombie_double_rounds", 0) for f in fr)
            d["late_hold"] += 1 if ep.get("late_hold") else 0
            d["violations"] += sum(1 for v in soak.violations if v["episode"] == ep["episode"])
    for d in kinds.values():
        for key in ("gap", "conv"):
            xs = d.pop(key)
            d[f"{key}_p50"] = percentile(xs, 50)
            d[f"{key}_p99"] = percentile(xs, 99)
            d[f"{key}_max"] = max(xs) if xs else None
    return kinds


def table(soak: Soak, kinds: dict) -> str:
    def f(x):
        return "—" if x is None else f"{x:.2f}"
    lines = ["| episode kind | episodes | faults | violations | write gap p50 / p99 (s) | "
             "converge p50 / p99 (s) | late after a hold-off | lost in windows (a)/(b) | "
             "window (c): lost / double-master rounds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k in list(KIND_WEIGHTS):
        d = kinds.get(k)
        if not d:
            continue
        lines.append(f"| {k} | {d['episodes']} | {d['faults']} | {d['violations']} | "
                     f"{f(d['gap_p50'])} / {f(d['gap_p99'])} | {f(d['conv_p50'])} / "
                     f"{f(d['conv_p99'])} | {d['late_hold']} | {d['window_lost']} | "
                     f"{d['zombie_lost']} / {d['zombie_double']} |")
    tot_e = sum(d["episodes"] for d in kinds.values())
    tot_f = sum(d["faults"] for d in kinds.values())
    lines.append(f"| **all** | {tot_e} | {tot_f} | {len(soak.violations)} | | | "
                 f"{sum(d['late_hold'] for d in kinds.values())} | "
                 f"{sum(d['window_lost'] for d in kinds.values())} | "
                 f"{sum(d['zombie_lost'] for d in kinds.values())} / "
                 f"{sum(d['zombie_double'] for d in kinds.values())} |")
    return "\n".join(lines)


def plot(soak: Soak, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = soak.end - soak.t0
    colors = {"master": "tab:green", "replica": "tab:blue", "refusing": "tab:orange",
              "down": "lightgrey", "error": "tab:purple"}
    kind_colors = dict(zip(list(KIND_WEIGHTS), plt.cm.tab10.colors))
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(14, 9), sharex=True,
                                        gridspec_kw={"height_ratios": [1.2, 1, 1]})
    for idx, hist in soak.probe.status.items():
        for j, (t, st) in enumerate(hist):
            t1 = hist[j + 1][0] if j + 1 < len(hist) else soak.end
            ax1.broken_barh([(t - soak.t0, t1 - t)], (idx - 0.4, 0.8),
                            facecolors=colors.get(st, "black"))
    for ep in soak.episodes:
        for fr in ep["faults_run"]:
            ax1.axvline(fr["t_start"], color=kind_colors[fr["kind"]], linewidth=0.6, alpha=0.7)
    for v in soak.violations:
        ax1.axvline(v["t"], color="red", linewidth=2)
    ax1.set_yticks(range(len(soak.cluster.pods)))
    ax1.set_yticklabels([p.name for p in soak.cluster.pods])
    ax1.set_title(f"soak seed {soak.seed} ({soak.profile}): marker probe per pod (green master, "
                  f"blue replica, orange refusing writes, grey down); lines: faults by kind; "
                  f"red: violations ({len(soak.violations)})", fontsize=9)
    acks = [t - soak.t0 for _, t in soak.writer.acked]
    nb = int(end) + 1
    counts = [0] * nb
    for t in acks:
        i = int(t)
        if 0 <= i < nb:
            counts[i] += 1
    ax2.plot(range(nb), counts, linewidth=0.6, color="tab:blue")
    ax2.set_ylabel("acknowledged writes / s")
    for k in KIND_WEIGHTS:
        xs = [ep["t_start"] for ep in soak.episodes if ep["kind"] == k
              or (ep["kind"] != "overlap" and ep["faults_run"][0]["kind"] == k)]
        ys = [ep["converge_s"] if ep["converge_s"] is not None else CONVERGE_GIVE_UP
              for ep in soak.episodes if ep["kind"] == k
              or (ep["kind"] != "overlap" and ep["faults_run"][0]["kind"] == k)]
        if xs:
            ax3.scatter(xs, ys, s=14, color=kind_colors[k], label=k)
    ax3.axhline(CONVERGE_BOUND, color="red", linestyle="--", linewidth=1,
                label=f"bound {CONVERGE_BOUND:.0f} s")
    ax3.set_ylabel("convergence after last action (s)")
    ax3.set_xlabel("seconds since the soak started")
    ax3.legend(fontsize=7, ncol=5, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=list(PROFILES), default="ci")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--duration", type=float, default=None, help="seconds of faults")
    ap.add_argument("--min-faults", type=int, default=None,
                    help="go on past --duration until this many faults")
    ap.add_argument("--max-faults", type=int, default=None)
    ap.add_argument("--print-schedule", action="store_true",
                    help="print the first --max-faults episodes (default 20) and exit")
    ap.add_argument("--json", default=None, help="result file (default: in the run's tmp dir)")
    ap.add_argument("--png", default=None, help="timeline picture (bench profile default: "
                    "benches/img/soak.png)")
    ap.add_argument("--table", default=None, help="Markdown table file")
    ap.add_argument("--keep", action="store_true", help="keep pod logs and state")
    a = ap.parse_args()
    prof = PROFILES[a.profile]
    seed = a.seed if a.seed is not None else prof["seed"]
    if seed is None:
        seed = random.SystemRandom().randrange(2**31)
    if a.print_schedule:
        for ep in make_schedule(seed, a.max_faults or 20):
            print(f"{ep['episode']:4d} {ep['kind']:18s} "
                  + " + ".join(describe(f) for f in ep["faults"]) + f" idle {ep['idle']}s")
        return 0
    duration = a.duration if a.duration is not None else prof["duration"]
    min_faults = a.min_faults if a.min_faults is not None else prof["min_faults"]
    max_faults = a.max_faults if a.max_faults is not None else prof["max_faults"]
    png = a.png if a.png is not None else (str(ROOT / "benches" / "img" / "soak.png")
                                           if a.profile == "bench" else None)
    binary = os.environ.get("REDISHA_BIN") or str(ROOT / "target" / "debug" / "redisha-init")
    if not os.access(binary, os.X_OK):
        print(f"soak: REDISHA_BIN={binary} is not an executable (cargo build first)",
              file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("soak: needs root (network and PID namespaces)", file=sys.stderr)
        return 2
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix=f"{harness.PREFIX}-soak-"))
    print(f"soak: seed={seed} profile={a.profile} duration={duration:.0f}s "
          f"min_faults={min_faults} max_faults={max_faults} commit={commit}"
          f"{' (src modified)' if dirty else ''} binary={binary} timings={harness.TIMINGS} "
          f"converge bound={CONVERGE_BOUND:.0f}s", flush=True)
    print(f"soak: replay with: benches/soak.py --profile {a.profile} --seed {seed}", flush=True)

    def on_term(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    soak = Soak(binary, seed, a.profile, duration, min_faults, max_faults, tmp)
    failure = None
    try:
        soak.run()
    except StuckError as e:
        failure = str(e)
    except (Exception, KeyboardInterrupt) as e:
        failure = f"{type(e).__name__}: {e}"
        log(f"soak failed: {failure}")
    finally:
        left = soak.cluster.teardown()
    if left:
        soak.violation(4, None, f"namespaces left after teardown: {left}")
    if not hasattr(soak, "end"):
        print(f"soak: did not start: {failure}", flush=True)
        return 2
    kinds = summarize(soak)
    result = {
        "seed": seed, "profile": a.profile, "commit": commit, "src_modified": bool(dirty),
        "binary": binary, "timings": harness.TIMINGS, "converge_bound_s": CONVERGE_BOUND,
        "duration_s": round(soak.end - soak.t0, 1), "faults": soak.n_faults(),
        "episodes": soak.episodes, "violations": soak.violations, "events": soak.events,
        "kinds": kinds, "rss_kb": soak.rss, "writer": {
            "acked": len(soak.writer.acked), "errors": soak.writer_errors},
        "failure": failure, "machine": {"cores": os.cpu_count(), "kernel": platform.release()},
    }
    out = Path(a.json) if a.json else tmp / "soak.json"
    out.write_text(json.dumps(result, indent=1, default=str))
    tbl = table(soak, kinds)
    print(f"\nsoak: seed {seed}, {soak.n_faults()} faults in {len(soak.episodes)} episodes, "
          f"{result['duration_s']:.0f}s, {len(soak.writer.acked)} acknowledged writes, "
          f"{len(soak.violations)} violations, {len(soak.events)} events; commit {commit}\n")
    print(tbl)
    rss = {k: (v[0][1], min(x for _, x in v), max(x for _, x in v)) for k, v in soak.rss.items()}
    print(f"\nPID 1 RSS kB (warm, min, max) per PID 1: {rss}")
    for ev in soak.events:
        print(f"event +{ev['t']}s {ev['pod']}: {ev['what']}")
    for v in soak.violations:
        print(f"\nVIOLATION invariant {v['invariant']} episode {v['episode']} at +{v['t']}s "
              f"(load {v['loadavg'][0]:.2f}): {v['what']}")
        for name, lines in v["logs"].items():
            print(f"--- {name} (written during the episode, last {len(lines)} lines)")
            print("\n".join(lines))
    if a.table:
        Path(a.table).write_text(tbl + "\n")
    if png:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            # The run's numbers matter more than its picture: finish, and say how to get it.
            print("soak: timeline picture skipped: matplotlib is not installed "
                  "(scripts/setup bench installs it)")
        else:
            plot(soak, Path(png))
            print(f"soak: timeline {png}")
    print(f"soak: result {out}")
    if failure:
        print(f"soak: FAILED: {failure} (logs kept under {tmp})")
        return 1 if soak.violations else 2
    if soak.violations:
        print(f"soak: {len(soak.violations)} violations (logs kept under {tmp})")
        return 1
    if not a.keep and not a.json:
        pass  # the JSON lives in tmp: keep the directory, drop the pods' state
    if not a.keep:
        for p in soak.cluster.pods:
            shutil.rmtree(p.state_dir, ignore_errors=True)
    print("soak: no violation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
