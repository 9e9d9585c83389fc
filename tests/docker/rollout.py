"""The StatefulSet controller's rolling update, played on the compose cluster (issue 16).

Shared by tests/docker/test_docker_4_rollout.py (one rollout, asserted) and benches/rollout.py
(several rollouts at random moments, printed as a table). For each ordinal from the highest to
0, as the controller does with `podManagementPolicy: OrderedReady` and `RollingUpdate`: stop the
pod (`docker stop`: SIGTERM, SIGKILL after the container's stop timeout), start it again from the
"new" image (`docker-compose up --no-deps` recreates the container: same name, address and data
volume, as a pod keeps its name, its stable DNS name and its PVC), wait until its readiness probe
passes (`docker exec ... redisha-init probe sentinel --ready`, the manifests' readinessProbe),
wait minReadySeconds, go on. Meanwhile a writer goes through Sentinel as an application does and
every node's ROLE is sampled every 100 ms.

Per restarted pod it also times when every sentinel has learned it again ("relearned"): every
live sentinel, its own included, lists its sentinel as a peer and its data node as a linked
replica (or as the master), each heard from since the restart — the time minReadySeconds must
cover."""

from __future__ import annotations

import concurrent.futures
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field

import docker_helpers as h
from rhtest import AckWriter
from docker_resp import RespError, call, pairs

GROUP = "mymaster"
REDIS_PORT = 6379
SENTINEL_PORT = 26379
# Compose service of each StatefulSet ordinal: redis-primary plays redis-0 (the master at first
# boot), redis-secondary-1 and -2 play redis-1 and redis-2.
ORDINALS = {0: "redis-primary", 1: "redis-secondary-1", 2: "redis-secondary-2"}
NEW_SUFFIX = "-rollout-new"


def new_images(images: dict[str, str]) -> str:
    """Makes the "new" image of each target: the built one plus a label, so it has an image ID of
    its own (compose recreates a container only when the image changed, like a StatefulSet
    changes a pod only when the template changed). Returns the tag to give compose."""
    for ref in images.values():
        repo, tag = ref.rsplit(":", 1)
        new = f"{repo}:{tag}{NEW_SUFFIX}"
        r = subprocess.run(["docker", "build", "-q", "-t", new, "--label", "io.redisha.rollout=new", "-"],
                           input=f"FROM {ref}\n", capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"docker build of {new}: {r.stderr[-2000:]}"
    return f"{h.TAG}{NEW_SUFFIX}"


class Writer(AckWriter):
    """rhtest.AckWriter asking a fixed set of sentinels (the compose cluster's addresses do not
    change: a recreated container keeps its address)."""

    def __init__(self, sentinels: list[tuple[str, int]], key: str, rate: float = 100):
        super().__init__(lambda: sentinels, key, rate)


def role_of(ip: str, timeout: float) -> str | None:
    """'master', 'master-paused', 'master-demoted', 'slave', or None when the node does not
    answer.

    'master-paused': answers ROLE as master but its writes are paused — the old master inside
    its handover, between Sentinel promoting a replica and its own REPLICAOF. `CLIENT PAUSE
    WRITE` blocks PUBLISH too, so a PUBLISH (to a channel nobody reads: no data, nothing to
    clean) that gets no answer tells it from a master that accepts writes."""
    try:
        r = call(ip, REDIS_PORT, "ROLE", timeout=timeout)
    except (OSError, RespError, ConnectionError):
        return None
    role = r[0] if isinstance(r, list) and r else None
    if role != "master":
        return role
    try:
        call(ip, REDIS_PORT, "PUBLISH", "redisha-rollout-sampler", "1", timeout=timeout)
    except ConnectionError as e:
        # call() reports a timeout as ConnectionError("Timeout reading ..."): the PUBLISH waits
        # in the pause. (Caught as TimeoutError before, which call() never raises: a paused
        # master read as "no answer", and a sample could show no master at all.)
        return "master-paused" if "imeout" in str(e) else None
    except (OSError, RespError):
        return None
    # A PUBLISH held by the pause runs when the pause lifts, which the handover does right after
    # its REPLICAOF: the node that said master may be a replica by now (seen: ROLE master, then
    # the held PUBLISH answered after the demotion, counted as a second writable master). A
    # writable master only if it still says so; else 'master-demoted': it was master when the
    # sample began (its first ROLE) and a replica by the time its PUBLISH came back — the old
    # master inside its handover's last milliseconds. The handover demotes within milliseconds of
    # the promotion now, so a sample can ask the promoted replica just before its promotion and
    # this node just after its demotion: read as "no master" it would be the sample's skew, not
    # the cluster's state.
    try:
        r = call(ip, REDIS_PORT, "ROLE", timeout=timeout)
    except (OSError, RespError, ConnectionError):
        return None
    again = r[0] if isinstance(r, list) and r else None
    return "master" if again == "master" else "master-demoted"


class RoleSampler(threading.Thread):
    """Every 100 ms asks each node's ROLE, all nodes at once (a stopped container's address
    answers nothing, so each ask is bounded by a short timeout instead of delaying the others)."""

    def __init__(self, ips: dict[str, str], period: float = 0.1, timeout: float = 0.25):
        super().__init__(daemon=True)
        self.ips = ips
        self.period = period
        self.timeout = timeout
        self.samples: list[tuple[float, dict[str, str | None]]] = []
        self.stop_ev = threading.Event()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(ips))

    def run(self) -> None:
        while not self.stop_ev.is_set():
            t = time.monotonic()
            futs = {n: self.pool.submit(role_of, ip, self.timeout) for n, ip in self.ips.items()}
            self.samples.append((t, {n: f.result() for n, f in futs.items()}))
            self.stop_ev.wait(max(0.0, self.period - (time.monotonic() - t)))

    def finish(self) -> None:
        self.stop_ev.set()
        self.join(timeout=10)
        self.pool.shutdown(wait=True)
        assert not self.is_alive(), "sampler did not stop"

    def masters_per_sample(self) -> list[int]:
        """Nodes answering as master per sample, write-paused ones included."""
        return [sum(1 for v in r.values() if v in ("master", "master-paused", "master-demoted"))
                for _, r in self.samples]

    def bad_samples(self) -> list[tuple[float, dict]]:
        """Samples that break "one master": two masters accepting writes, or no node answering
        as master at all. A write-paused old master beside the promoted one (the handover's
        last milliseconds, before its REPLICAOF) accepts nothing and is counted apart
        (`paused_overlap_samples`); so is one demoted while its sample ran."""
        bad = []
        for t, r in self.samples:
            vals = list(r.values())
            writable = vals.count("master")
            held = vals.count("master-paused") + vals.count("master-demoted")
            if writable > 1 or writable + held == 0:
                bad.append((t, r))
        return bad

    def most_silent(self) -> int:
        """The most nodes that did not answer in one sample (one pod at a time: at most 1)."""
        return max((sum(1 for v in r.values() if v is None) for _, r in self.samples), default=0)

    def paused_overlap_samples(self) -> int:
        return sum(1 for _, r in self.samples
                   if list(r.values()).count("master") == 1
                   and ("master-paused" in r.values() or "master-demoted" in r.values()))


def sentinel_entries(ip: str, what: str, timeout: float = 0.5) -> list[dict]:
    """SENTINEL SENTINELS|REPLICAS <group> of the sentinel at `ip`, as dicts ([] when silent)."""
    try:
        r = call(ip, SENTINEL_PORT, "SENTINEL", what, GROUP, timeout=timeout)
    except (OSError, RespError, ConnectionError):
        return []
    return [pairs(e) for e in r] if isinstance(r, list) else []


def sentinel_master(ip: str, timeout: float = 0.5) -> dict:
    try:
        return pairs(call(ip, SENTINEL_PORT, "SENTINEL", "MASTER", GROUP, timeout=timeout) or [])
    except (OSError, RespError, ConnectionError):
        return {}


def fresh(entry: dict, field_ms: str, since_ms: float) -> bool:
    """The entry's `field_ms` (milliseconds ago) happened after the restart, `since_ms` ago."""
    try:
        return int(entry.get(field_ms, "-1")) >= 0 and int(entry[field_ms]) < since_ms
    except ValueError:
        return False


def relearned(ips: dict[str, str], node: str, live: list[str], started: float) -> str | None:
    """None once every live sentinel (the restarted node's own included) knows `node` again since
    its restart at `started` — its sentinel as a peer (hello and ping reply since), its data node
    as a linked replica with INFO since (or as the master) — else what is still missing."""
    since_ms = (time.monotonic() - started) * 1000
    ip = ips[node]
    for other in live:
        oip = ips[other]
        m = sentinel_master(oip)
        if not m or "master" not in m.get("flags", "").split(","):
            return f"{other}'s sentinel names no master it sees up: {m.get('flags')}"
        if other == node:
            want = len(live) - 1
            if int(m.get("num-other-sentinels", "0")) < want:
                return f"{node}'s own sentinel knows {m.get('num-other-sentinels')} peers, not {want}"
            continue
        peer = next((e for e in sentinel_entries(oip, "SENTINELS") if e.get("ip") == ip), None)
        if peer is None:
            return f"{other}'s sentinel does not list {node}'s sentinel"
        if peer.get("flags") != "sentinel":
            return f"{other}'s sentinel lists {node}'s sentinel as {peer.get('flags')}"
        if not (fresh(peer, "last-hello-message", since_ms) and fresh(peer, "last-ok-ping-reply", since_ms)):
            return f"{other}'s sentinel has not heard {node}'s sentinel since the restart"
        if m.get("ip") == ip:
            if not fresh(m, "info-refresh", since_ms):
                return f"{other}'s sentinel has no INFO of master {node} since the restart"
            continue
        rep = next((e for e in sentinel_entries(oip, "REPLICAS") if e.get("ip") == ip), None)
        if rep is None:
            return f"{other}'s sentinel does not list {node} as a replica"
        if rep.get("flags") != "slave" or rep.get("master-link-status") != "ok":
            return f"{other}'s sentinel lists {node} as {rep.get('flags')}, link {rep.get('master-link-status')}"
        if rep.get("master-host") != m.get("ip"):
            return f"{other}'s sentinel sees {node} replicating from {rep.get('master-host')}, not {m.get('ip')}"
        if not fresh(rep, "info-refresh", since_ms):
            return f"{other}'s sentinel has no INFO of {node} since the restart"
    return None


def probe_ready(container: str) -> tuple[bool, str]:
    """The readiness probe of the manifests, run inside the container as the kubelet does."""
    try:
        r = subprocess.run(["docker", "exec", container, "redisha-init", "probe", "sentinel", "--ready"],
                           capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False, "probe timed out"
    return r.returncode == 0, (r.stdout + r.stderr).strip()


@dataclass
class PodStep:
    ordinal: int
    node: str
    t_stop: float = 0.0  # monotonic time of the docker stop
    stop_s: float = 0.0  # docker stop, SIGTERM to exit
    exit_code: str = ""
    ready_s: float = 0.0  # start of the new container to readiness probe passing
    relearned_s: float = 0.0  # start to every sentinel knowing it again
    gap_s: float = 0.0  # longest write gap from the stop to readiness + minReady
    probe_runs: int = 0
    image_new: bool = False
    notes: list[str] = field(default_factory=list)


def roll(cluster, new_tag: str, min_ready_s: float, rng: random.Random | None = None,
         writer: Writer | None = None, ready_timeout: float = 90.0) -> list[PodStep]:
    """One rolling update: ordinals 2, 1, 0. `cluster` is test_docker_3_cluster.Cluster (ips, ids,
    compose env). With `rng`, each step starts after a random pause of 0-3 s on top of
    minReadySeconds, so stops land at different moments of the sentinels' periods."""
    steps = []
    for ordinal in sorted(ORDINALS, reverse=True):
        node = ORDINALS[ordinal]
        st = PodStep(ordinal, node)
        if rng is not None:
            time.sleep(rng.uniform(0.0, 3.0))
        t_stop = st.t_stop = time.monotonic()
        stop_timeout = int(cluster.inspect(node, "{{.Config.StopTimeout}}"))
        h.run(["docker", "stop", cluster.ids[node]], timeout=stop_timeout + 30)
        st.stop_s = time.monotonic() - t_stop
        st.exit_code = cluster.inspect(node, "{{.State.ExitCode}}")
        # The controller creates the pod again from the new template: the same name, address and
        # volume, the new image.
        env = dict(cluster.env, REDISHA_TAG=new_tag)
        h.run([*cluster.compose, "up", "-d", "--no-deps", "--no-build", node], timeout=120, env=env)
        t_start = time.monotonic()
        cid = h.run([*cluster.compose, "ps", "-q", node], timeout=60, env=env).stdout.strip()
        assert cid, f"no container for {node} after recreation"
        cluster.ids[node] = cid
        st.image_new = "io.redisha.rollout" in h.run(
            ["docker", "inspect", "-f", "{{json .Config.Labels}}", cid], timeout=30).stdout
        live = list(ORDINALS.values())
        deadline = t_start + ready_timeout
        why = ""
        while True:
            ok, why = probe_ready(cid)
            st.probe_runs += 1
            if ok:
                st.ready_s = time.monotonic() - t_start
                break
            assert time.monotonic() < deadline, f"{node} not ready {ready_timeout:.0f} s after its start: {why}"
            time.sleep(0.2)
        # minReadySeconds after Ready, as the controller waits before the next pod. Meanwhile,
        # and beyond it if need be, time when every sentinel knows the pod again.
        t_ready = time.monotonic()
        missing = None
        while True:
            if not st.relearned_s:
                missing = relearned(cluster.ip, node, live, t_start)
                if missing is None:
                    st.relearned_s = time.monotonic() - t_start
            if time.monotonic() - t_ready >= min_ready_s and st.relearned_s:
                break
            assert time.monotonic() < deadline + 30, f"{node}: sentinels never relearned it: {missing}"
            time.sleep(0.1)
        if writer is not None:
            st.gap_s = writer.gaps_during(t_stop, time.monotonic())
        steps.append(st)
    return steps
