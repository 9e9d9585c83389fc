"""`redisha-init status` and `redisha-init switchover` run as an operator would: inside a pod (the
pod's network namespace, hosts file and environment: `kubectl exec`) or from the host with
`--sentinels` (a laptop); the readiness probe as the kubelet runs it, and the StatefulSet
controller's readiness-gated rolling update. Shared by tests/ha/test_ops.py, test_ipv6.py and
benches/switchover.py."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import harness
from harness import REDIS_PORT, SENTINEL_PORT, Cluster, Pod, Writer, addr, log, stop_gap

MANIFEST = Path(__file__).resolve().parents[2] / "k8s" / "production" / "redis.yaml"


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
    if cluster.security.acl is not None:
        e["REDISHA_ACL_DIR"] = str(cluster.security.acl.dir)
    elif cluster.password:
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


def switchover_until_taken(cluster: Cluster, pod: Pod, *args: str, within: float = 30) -> Run:
    """`switchover` from `pod`, asked again (once a second, bounded) while it is refused with
    nothing changed: 3 (not failover-safe yet, e.g. right after a start) or 5 (a sentinel has not
    seen the target's link up yet). The last run is returned; its exit code is the caller's to
    judge."""
    runs: list[Run] = []

    def taken():
        runs[:] = [run_cli(cluster, pod, "switchover", *args, timeout=30)]
        return runs[0].code not in (3, 5)
    harness.wait_until(taken, within, 1.0, "a switchover that is not refused")
    return runs[0]


def status(cluster: Cluster, pod: Pod | None, *extra: str) -> Run:
    r = run_cli(cluster, pod, "status", "--json", *extra, timeout=20)
    assert r.code in (0, 1, 2), f"status exit {r.code}: {r.err}{r.out}"
    return r


def laptop_status(cluster: Cluster, sentinel_ip: str, *extra: str) -> Run:
    return status(cluster, None, "--sentinels", addr(sentinel_ip, SENTINEL_PORT), *extra)


def wait_status(cluster: Cluster, pod: Pod, code: int, timeout: float = 60, *extra: str) -> Run:
    """Polls `status` from `pod` (with `extra` arguments) until it exits `code`; bounded."""
    last: list[Run] = []

    def ok():
        r = status(cluster, pod, *extra)
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
        args += ["--to", addr(wanted, REDIS_PORT)]
    if where is None:
        args += ["--sentinels", addr(rng.choice(pods).ip, SENTINEL_PORT)]
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


# ---- readiness and the rolling update (the kubelet's and the StatefulSet controller's part) ----

def probe_ready(cluster: Cluster, pod: Pod) -> Run:
    """The manifests' readinessProbe, `probe sentinel --ready` (failover-safe), run in the pod."""
    return run_cli(cluster, pod, "probe", "sentinel", "--ready", "--timeout-ms", "1000",
                   timeout=10)


def wait_ready(cluster: Cluster, pods: list[Pod], timeout: float = 60) -> float:
    """Polls the readiness probe of `pods` until every one passes in the same round; returns the
    seconds it took. Fails naming each pod's last refusal (issue 27: a replica pod on IPv6 was
    never ready, "... is not known to its sentinel as promotable yet")."""
    t0 = time.monotonic()
    last: dict[str, str] = {}

    def all_ready() -> bool:
        for p in pods:
            r = probe_ready(cluster, p)
            last[p.name] = "ready" if r.code == 0 else f"exit {r.code}: {(r.out + r.err).strip()}"
        return all(v == "ready" for v in last.values())
    try:
        harness.wait_until(all_ready, timeout, 0.3, "every pod's readiness probe")
    except AssertionError:
        raise AssertionError(f"not every pod ready within {timeout:.0f}s: {last}") from None
    return time.monotonic() - t0


def manifest_min_ready() -> float:
    """minReadySeconds of k8s/production's StatefulSet (no YAML parser needed for one key)."""
    m = re.search(r"^\s*minReadySeconds:\s*(\d+)\s*$", MANIFEST.read_text(), re.M)
    assert m, f"no minReadySeconds in {MANIFEST}"
    return float(m.group(1))


@dataclass
class RollStep:
    pod: str
    was_master: bool
    stop_s: float        # SIGTERM -> exit
    exit_code: int | None
    ready_s: float       # start -> its readiness probe passes
    gap_s: float         # longest write gap from the SIGTERM to the end of minReadySeconds


def rolling_update(cluster: Cluster, w: Writer, min_ready: float,
                   ready_timeout: float = 60) -> list[RollStep]:
    """The StatefulSet controller's RollingUpdate with OrderedReady: from the highest ordinal to
    0, the pod is stopped (SIGTERM, the grace), recreated with its state (its PVC) on a new
    address (a new pod IP), and the controller goes on only once the new pod's readiness probe
    passes and minReadySeconds are over. A pod that never gets ready stops the rollout (the
    controller would wait for good): AssertionError after `ready_timeout`."""
    steps = []
    for i in reversed(range(len(cluster.pods))):
        pod = cluster.pods[i]
        was_master = pod.ip == cluster.current_master()
        t0 = time.monotonic()
        stop_s, code = cluster.stop_pod_gracefully(i)
        cluster.start_pods([i], new_ip=True)
        wait_ready(cluster, [pod], ready_timeout)
        ready_s = time.monotonic() - pod.started_at
        time.sleep(min_ready)
        step = RollStep(pod.name, was_master, stop_s, code, ready_s,
                        stop_gap(list(w.acked), t0, time.monotonic()))
        log(f"rollout: {step}")
        steps.append(step)
    return steps
