"""The HA harness's invariants and observations: what the nodes and sentinels say, whether the
cluster is settled (one master, every replica linked, every sentinel agreeing and listing exactly
the live pods), whether a failover could pick any replica, and what the pods' logs say about
failovers. Checks only observe: the caller asserts.

`Checks` is a mixin of `hacluster.Cluster`: it needs the cluster's `pods`, `live()`,
`live_ips()`, `pod_by_ip()`, and its security-aware `client()` / `info_replication()`.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from hanet import GROUP, REDIS_PORT, SENTINEL_PORT
from rhtest import wait_until

if TYPE_CHECKING:  # hacluster imports this module: no import at run time
    from hacluster import Cluster, Pod


class Checks:
    def roles(self) -> dict[str, str]:
        out = {}
        for p in self.live():
            try:
                out[p.ip] = self.info_replication(p.ip, 0.3).get("role", "?")
            except (redis.RedisError, OSError):
                out[p.ip] = "down"
        return out

    def sentinel_master(self, ip: str) -> dict:
        with self.client(ip, SENTINEL_PORT) as c:
            return c.sentinel_master(GROUP)

    def observe(self) -> dict:
        """Everything the invariants look at, in one pass."""
        snap = {"nodes": {}, "sentinels": {}}
        for p in self.live():
            try:
                snap["nodes"][p.ip] = self.info_replication(p.ip)
            except (redis.RedisError, OSError) as e:
                snap["nodes"][p.ip] = {"error": str(e)}
            try:
                with self.client(p.ip, SENTINEL_PORT) as c:
                    addr = c.sentinel_get_master_addr_by_name(GROUP)
                    reps = c.sentinel_slaves(GROUP)
                    sens = c.sentinel_sentinels(GROUP)
                    master = c.sentinel_master(GROUP)
                snap["sentinels"][p.ip] = {
                    "master": addr[0] if addr else None,
                    "replicas": [(r["ip"], int(r["port"]), r["flags"]) for r in reps],
                    "sentinels": [(s["ip"], int(s["port"]), s["flags"]) for s in sens],
                    "epoch": int(master.get("config-epoch", 0)),
                    "flags": master.get("flags"),
                }
            except (redis.RedisError, OSError) as e:
                snap["sentinels"][p.ip] = {"error": str(e)}
        return snap

    def problems(self, snap: dict) -> list[str]:
        live = self.live_ips()
        probs = []
        nodes = snap["nodes"]
        masters = [ip for ip, n in nodes.items() if n.get("role") == "master"]
        if len(masters) != 1:
            probs.append(f"{len(masters)} nodes report role:master: {masters}")
            return probs
        m = masters[0]
        for ip, n in nodes.items():
            if ip == m:
                continue
            if n.get("role") != "slave":
                probs.append(f"{ip}: role {n.get('role')} {n.get('error', '')}")
            elif n.get("master_host") != m or n.get("master_link_status") != "up" \
                    or n.get("master_sync_in_progress") not in (0, "0"):
                probs.append(f"{ip}: replica of {n.get('master_host')} link "
                             f"{n.get('master_link_status')} sync {n.get('master_sync_in_progress')}")
        for sip, s in snap["sentinels"].items():
            if "error" in s:
                probs.append(f"sentinel {sip}: {s['error']}")
                continue
            if s["master"] != m:
                probs.append(f"sentinel {sip} names {s['master']}, node {m} is master")
            rep_ips = [r[0] for r in s["replicas"]]
            dead = [r for r in s["replicas"] if r[0] not in live]
            if dead:
                probs.append(f"sentinel {sip} lists dead replicas {dead}")
            for ip in live - {m}:
                if rep_ips.count(ip) != 1:
                    probs.append(f"sentinel {sip} lists replica {ip} {rep_ips.count(ip)} times")
            sen_ips = [x[0] for x in s["sentinels"]]
            dead = [x for x in s["sentinels"] if x[0] not in live]
            if dead:
                probs.append(f"sentinel {sip} lists dead sentinels {dead}")
            for ip in live - {sip}:
                if sen_ips.count(ip) != 1:
                    probs.append(f"sentinel {sip} lists sentinel {ip} {sen_ips.count(ip)} times")
        return probs

    def settle(self, timeout: float = 60, what: str = "invariants") -> tuple[str, dict, float]:
        """Waits (bounded) until every invariant holds; returns (master ip, snapshot, seconds).
        Fails with the remaining problems and each pod's log tail otherwise."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        probs: list[str] = []
        while time.monotonic() < deadline:
            snap = self.observe()
            probs = self.problems(snap)
            if not probs:
                m = next(ip for ip, n in snap["nodes"].items() if n.get("role") == "master")
                return m, snap, time.monotonic() - t0
            time.sleep(0.5)
        tails = "\n".join(f"--- {p.name} ({p.log_path}) ---\n{p.log_tail(25)}" for p in self.pods)
        raise AssertionError(f"{what} not reached within {timeout:.0f}s: {probs}\n{tails}")

    def named_master(self, ips) -> str | None:
        """The master address the sentinels at `ips` all name, if they answer and agree."""
        names = set()
        for ip in ips:
            try:
                with self.client(ip, SENTINEL_PORT, 0.3) as c:
                    a = c.sentinel_get_master_addr_by_name(GROUP)
                names.add(a[0] if a else None)
            except (redis.RedisError, OSError):
                return None
        return names.pop() if len(names) == 1 else None

    def current_master(self) -> str | None:
        """The address of the only live node answering role:master, if exactly one does."""
        masters = [ip for ip, r in self.roles().items() if r == "master"]
        return masters[0] if len(masters) == 1 else None

    def first_answering(self, timeout: float = 60) -> float:
        """Waits (bounded) until the cluster first answers: exactly one live node role:master
        and every other live node its replica, link up, no sync in progress. Sentinels are not
        asked (they may not know everything yet: see failover_safe). Returns the monotonic time
        at which that was first seen."""
        def answering():
            live = self.live()
            if not live:
                return None
            infos = {p.ip: self.info_replication(p.ip, 0.3) for p in live}
            masters = [ip for ip, i in infos.items() if i.get("role") == "master"]
            if len(masters) != 1:
                return None
            for ip, i in infos.items():
                if ip != masters[0] and not (
                        i.get("role") == "slave" and i.get("master_host") == masters[0]
                        and i.get("master_link_status") == "up"
                        and str(i.get("master_sync_in_progress")) == "0"):
                    return None
            return time.monotonic()
        return wait_until(answering, timeout, 0.05, "the cluster's first answer")

    def failover_safe(self, snap: dict) -> bool:
        """True when a failover could pick any replica: exactly one node is role:master, every
        live sentinel answers and names it, lists every live non-master pod in SENTINEL REPLICAS
        and every other live sentinel in SENTINEL SENTINELS, none of them flagged s_down, o_down
        or disconnected."""
        live = self.live_ips()
        masters = [ip for ip, n in snap["nodes"].items() if n.get("role") == "master"]
        if len(masters) != 1 or set(snap["sentinels"]) != live:
            return False
        m = masters[0]
        bad = ("s_down", "o_down", "disconnected")

        def ok(entries, ip):
            return any(e[0] == ip and not any(b in e[2] for b in bad) for e in entries)
        for sip, s in snap["sentinels"].items():
            if "error" in s or s["master"] != m:
                return False
            if not all(ok(s["replicas"], ip) for ip in live - {m}):
                return False
            if not all(ok(s["sentinels"], ip) for ip in live - {sip}):
                return False
        return True

    def time_to_failover_safe(self, timeout: float = 30, t0: float | None = None,
                              interval: float = 0.1) -> float | None:
        """Seconds from `t0` (default: now) until failover_safe holds; None if it did not
        within `timeout` (from now). The caller asserts: this only measures."""
        t0 = time.monotonic() if t0 is None else t0
        deadline = time.monotonic() + timeout
        while True:
            if self.failover_safe(self.observe()):
                return time.monotonic() - t0
            if time.monotonic() >= deadline:
                return None
            time.sleep(interval)

    # ---- pod logs ----
    def pod_logs(self, pod: Pod) -> list[Path]:
        """Every log file the pod had (one per spawn: <name>.gen<N>.log), oldest first."""
        def gen(path: Path) -> int:
            m = re.search(r"\.gen(\d+)\.log$", path.name)
            return int(m.group(1)) if m else 0
        return sorted(self.logdir.glob(f"{pod.name}.gen*.log"), key=gen)

    def log_marks(self) -> dict[Path, int]:
        """The size of every pod log file now: pass it as `since` to count only later lines."""
        return {path: path.stat().st_size for p in self.pods for path in self.pod_logs(p)}

    def count_switch_master(self, pods=None, since: dict[Path, int] | None = None,
                            since_gen: int | None = None,
                            ignore_from: tuple[str, ...] = (),
                            unless_to: str | None = None) -> dict[str, int]:
        """Lines of the sentinel (`[sentinel] ...`, or a JSON line with source sentinel) that
        contain `+switch-master`, per pod name. `pods`: Pod objects, names or indices (default
        all). Which text counts: with `since` (from log_marks()), what each of the pod's log
        files got after the mark (files created later count whole; a stopped pod's log
        included); with `since_gen`, whole log files of generation >= since_gen; with neither,
        the pod's current log file. `ignore_from`: switches away from these (earlier) master
        addresses do not count (a leader logs +switch-master only when its failover ends, which
        can be after a later stop began). With `unless_to`, such a switch still counts when it
        goes straight to that address: the earlier failover's leader never logged its own
        switch, this one covers both (seen: the leader of a kill's failover still moving
        replicas when the stop of its promoted master began)."""
        sel = []
        for x in (self.pods if pods is None else pods):
            if isinstance(x, int):
                sel.append(self.pods[x])
            elif isinstance(x, str):
                sel.append(next(p for p in self.pods if p.name == x or p.ip == x))
            else:
                sel.append(x)  # a Pod
        out = {}
        for p in sel:
            n = 0
            for path in self.pod_logs(p):
                start = 0
                if since is not None:
                    start = since.get(path, 0)
                elif since_gen is not None:
                    g = int(re.search(r"\.gen(\d+)\.log$", path.name).group(1))
                    if g < since_gen:
                        continue
                elif path != p.log_path:
                    continue
                with open(path, "rb") as f:
                    if start:
                        # A line cut by the mark was (partly) there before it: skip it.
                        f.seek(start - 1)
                        if f.read(1) != b"\n":
                            f.readline()
                    data = f.read()
                n += sum(1 for line in data.splitlines()
                         if _is_switch_master(line)
                         and (_switch_from(line) not in ignore_from
                              or (unless_to is not None and _switch_to(line) == unless_to)))
            out[p.name] = n
        return out

    def master_pod(self) -> Pod:
        m, _, _ = self.settle(60, "a settled cluster")
        pod = self.pod_by_ip(m)
        assert pod is not None
        return pod

    def time_to_safety(self, pod: Pod, timeout: float = 40) -> float:
        """Seconds from the pod's start until its data node is a replica with the link up and no
        sync in progress: from then on it can be promoted."""
        def safe():
            i = self.info_replication(pod.ip, 0.3)
            return (i.get("role") == "slave" and i.get("master_link_status") == "up"
                    and str(i.get("master_sync_in_progress")) == "0")
        wait_until(safe, timeout, 0.05, f"{pod.name} synced")
        return time.monotonic() - pod.started_at


def _is_switch_master(line: bytes) -> bool:
    """A Sentinel event line `+switch-master`, not a line of redisha-init naming the event."""
    if b"+switch-master" not in line:
        return False
    return line.startswith(b"[sentinel]") or b'"source":"sentinel"' in line


def _switch_from(line: bytes) -> str | None:
    """The old master's address of a `+switch-master <group> <old ip> <port> <new ip> <port>`."""
    words = line.split()
    try:
        i = words.index(b"+switch-master")
        return words[i + 2].decode()
    except (ValueError, IndexError):
        return None


def _switch_to(line: bytes) -> str | None:
    """The new master's address of a `+switch-master` line."""
    words = line.split()
    try:
        i = words.index(b"+switch-master")
        return words[i + 4].decode()
    except (ValueError, IndexError):
        return None


class RoleSampler(threading.Thread):
    """Samples every live node's role several times a second; remembers the worst sample."""

    def __init__(self, cluster: Cluster, period: float = 0.2, key: str | None = None):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.period = period
        self.key = key
        self.samples: list[tuple[float, dict]] = []
        self.llen: dict[str, list[int]] = {}
        self.stop_ev = threading.Event()

    def run(self) -> None:
        while not self.stop_ev.is_set():
            roles = self.cluster.roles()
            self.samples.append((time.monotonic(), roles))
            if self.key:
                for ip, r in roles.items():
                    if r == "slave":
                        try:
                            with self.cluster.client(ip, REDIS_PORT, 0.3, user="app") as c:
                                self.llen.setdefault(ip, []).append(c.llen(self.key))
                        except (redis.RedisError, OSError):
                            pass
            self.stop_ev.wait(self.period)

    def finish(self) -> None:
        self.stop_ev.set()
        self.join(timeout=10)

    def max_masters(self) -> int:
        return max((list(r.values()).count("master") for _, r in self.samples), default=0)

    def zero_master_samples(self) -> int:
        return sum(1 for _, r in self.samples if "master" not in r.values())


RECORDED: list[str] = []  # this session's lines, shown again in pytest's terminal summary
