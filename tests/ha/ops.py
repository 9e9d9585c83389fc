"""`redisha-init status` and `redisha-init switchover` run as an operator would: inside a pod (the
pod's network namespace, hosts file and environment: `kubectl exec`) or from the host with
`--sentinels` (a laptop). Shared by tests/ha/test_ops.py and benches/switchover.py."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from dataclasses import dataclass, field

import harness
from harness import REDIS_PORT, SENTINEL_PORT, Cluster, Pod, Writer, log, stop_gap


@dataclass
class Run:
    code: int
    out: str
    err: str
    took: float

    @property
    def json(self) -> dict:
        return json.loads(self.out)


def laptop_env(cluster: Cluster) -> dict:
    """The host's view: no MY_POD_IP (local mode), only the password."""
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if cluster.password:
        e["REDIS_PASSWORD"] = cluster.password
    return e


def run_cli(cluster: Cluster, pod: Pod | None, *args: str, timeout: float = 60,
            popen: bool = False):
    """The binary in `pod` (ip netns exec with the pod's env) or on the host (pod None)."""
    if pod is None:
        argv, env = [cluster.binary, *args], laptop_env(cluster)
    else:
        argv, env = ["ip", "netns", "exec", pod.ns, cluster.binary, *args], pod.env()
    if popen:
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    t0 = time.monotonic()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    return Run(r.returncode, r.stdout, r.stderr, time.monotonic() - t0)


def status(cluster: Cluster, pod: Pod | None, *extra: str) -> Run:
    r = run_cli(cluster, pod, "status", "--json", *extra, timeout=20)
    assert r.code in (0, 1, 2), f"status exit {r.code}: {r.err}{r.out}"
    return r


def laptop_status(cluster: Cluster, sentinel_ip: str, *extra: str) -> Run:
    return status(cluster, None, "--sentinels", f"{sentinel_ip}:{SENTINEL_PORT}", *extra)


def wait_status(cluster: Cluster, pod: Pod, code: int, timeout: float = 60) -> Run:
    """Polls `status` from `pod` until it exits `code`; bounded."""
    last: list[Run] = []

    def ok():
        r = status(cluster, pod)
        last[:] = [r]
        return r if r.code == code else None
    try:
        return harness.wait_until(ok, timeout, 0.3, f"status exit {code}")
    except AssertionError:
        r = last[0] if last else None
        raise AssertionError(f"status never exited {code} within {timeout}s; last: "
                             f"{r.code if r else None} {r.json['verdict'] if r else ''}")


def priorities(cluster: Cluster) -> dict[str, str]:
    out = {}
    for p in cluster.live():
        with cluster.client(p.ip, REDIS_PORT) as c:
            out[p.ip] = c.config_get("replica-priority")["replica-priority"]
    return out


def sentinel_knobs(cluster: Cluster) -> dict[str, tuple]:
    """What the switchover changes on its leading sentinel for the duration, per sentinel:
    (parallel-syncs, info-period, slave-reconf-timeout); (1, 1000, 10000) with the pods' settings."""
    out = {}
    for p in cluster.live():
        with cluster.client(p.ip, SENTINEL_PORT) as c:
            m = c.sentinel_master(harness.GROUP)
            d = c.execute_command("SENTINEL", "DEBUG")
        d = dict(zip(d[::2], d[1::2]))
        out[p.ip] = (int(m["parallel-syncs"]), int(d["INFO-PERIOD"]),
                     int(d["SLAVE-RECONF-TIMEOUT"]))
    return out


@dataclass
class RoundResult:
    rnd: int
    code: int
    old_master: str
    wanted: str | None
    new_master: str | None
    took: float
    gap: float
    switch_master: dict[str, int]
    priorities: dict[str, str]
    from_pod: str
    out: str = ""
    problems: list[str] = field(default_factory=list)
    t0: float = 0.0  # monotonic start of the command


def switchover_round(cluster: Cluster, w: Writer, rnd: int, rng: random.Random,
                     use_to: bool, watch: float = 1.0) -> RoundResult:
    """One planned move with the writer running: from a random pod (or the host), to a random
    replica with --to (or Sentinel's pick). Waits until `status` says healthy first. Measures:
    the exit code, the new master, the write gap from the command's start to `watch` s after it
    returns, +switch-master lines per sentinel since the start (1 = exactly one failover), and
    every node's replica-priority afterwards. Collects problems; the caller asserts."""
    pods = cluster.live()
    wait_status(cluster, pods[0], 0, 60)
    old = cluster.current_master()
    assert old, "no single master before the round"
    replicas = [p.ip for p in pods if p.ip != old]
    wanted = rng.choice(replicas) if use_to else None
    where = rng.choice(pods + [None])
    args = ["switchover", "--timeout", "10"]
    if wanted:
        args += ["--to", f"{wanted}:{REDIS_PORT}"]
    if where is None:
        args += ["--sentinels", f"{rng.choice(pods).ip}:{SENTINEL_PORT}"]
    marks = cluster.log_marks()
    t0 = time.monotonic()
    r = run_cli(cluster, where, *args, timeout=40)
    t1 = time.monotonic()
    time.sleep(watch)
    gap = stop_gap(list(w.acked), t0, time.monotonic())
    new = cluster.current_master()
    counts = cluster.count_switch_master(pods, since=marks)
    prio = priorities(cluster)
    res = RoundResult(rnd, r.code, old, wanted, new, t1 - t0, gap, counts, prio,
                      where.name if where else "host", r.out + r.err, t0=t0)
    if r.code != 0:
        res.problems.append(f"exit {r.code}: {r.out.strip()} {r.err.strip()}")
    if new is None or new == old:
        res.problems.append(f"master still {old} (now {new})")
    if wanted and new != wanted:
        res.problems.append(f"--to {wanted} not honoured: {new} is master")
    bad = {k: v for k, v in counts.items() if v != 1}
    if bad:
        res.problems.append(f"+switch-master per sentinel not exactly 1: {counts}")
    if any(v != "100" for v in prio.values()):
        res.problems.append(f"replica-priority not restored: {prio}")
    knobs = sentinel_knobs(cluster)
    if any(k != (1, 1000, 10000) for k in knobs.values()):
        res.problems.append(f"sentinel settings not put back: {knobs}")
    if gap >= 2.0:
        res.problems.append(f"write gap {gap:.2f}s >= 2 s")
    times = [t for _, t in w.acked if t >= t0 - 2]
    worst = max(zip(times, times[1:]), key=lambda ab: ab[1] - ab[0], default=(t0, t0))
    log(f"switchover round {rnd} from {res.from_pod}: exit {r.code} {old} -> {new} "
        f"(wanted {wanted}) in {res.took:.2f}s, gap {gap:.2f}s "
        f"(from {worst[0] - t0:+.2f}s to {worst[1] - t0:+.2f}s of the start), "
        f"+switch-master {counts}\n{r.out.rstrip()}"
        + (f"\n{r.err.rstrip()}" if res.problems else ""))
    return res
