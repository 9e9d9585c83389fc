"""The images, for real: docker/compose.yml's three nodes on a user-defined network.

The tests run in file order and share one cluster (pytest -x stops at the first failure):
replication and agreement → `docker stop` of the master → `docker start` of it again →
`docker kill` of the master → `docker stop` of a replica. Every wait is bounded; the cluster,
its network and volumes are removed even when a test fails (images stay cached). The whole
sequence runs twice: on the Redis images, then on the Valkey ones (same Dockerfile, Valkey base;
docker/README.md), each node checked to run the engine its image holds."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

import docker_helpers as h
from docker_resp import info, pairs, try_call, try_info

DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
# Sentinel needs down-after to call the master subjectively down, then the quorum's agreement
# (objectively down), a leader election and the promotion: about a second or two beyond it.
FAILOVER_MARGIN_S = 4.0
GROUP = "mymaster"
NODES = ("redis-primary", "redis-secondary-1", "redis-secondary-2")


class Cluster:
    def __init__(self, project: str, prefix: str, images: dict[str, str], engine: str = "redis"):
        self.project = project
        self.engine = engine
        self.prefix = prefix
        self.ip = {"redis-primary": f"{prefix}.11", "redis-secondary-1": f"{prefix}.12",
                   "redis-secondary-2": f"{prefix}.13"}
        self.env = dict(
            os.environ,
            REDISHA_SUBNET_PREFIX=prefix,
            REDISHA_IMAGE_PREFIX=h.IMAGE_PREFIX,
            REDISHA_TAG=h.engine_tag(engine),
            REDISHA_DOWN_AFTER_MS=str(DOWN_AFTER_MS),
            REDISHA_FAILOVER_TIMEOUT_MS=str(FAILOVER_TIMEOUT_MS),
        )
        self.compose = [*h.compose_cmd(), "-p", project, "-f", str(h.COMPOSE_FILE)]
        self.ids: dict[str, str] = {}

    def dc(self, *args, timeout: float = 120, check: bool = True):
        return h.run([*self.compose, *args], timeout=timeout, check=check, env=self.env)

    def up(self) -> None:
        self.t_up = time.monotonic()
        self.dc("up", "-d", "--no-build", timeout=180)
        for n in NODES:
            cid = self.dc("ps", "-q", n).stdout.strip()
            assert cid, f"no container for {n}"
            self.ids[n] = cid

    def down(self) -> None:
        self.dc("down", "-v", "--remove-orphans", "-t", "2", timeout=120, check=False)
        # Belt and braces: whatever still carries the project label goes too.
        label = f"label=com.docker.compose.project={self.project}"
        left = h.run(["docker", "ps", "-aq", "--filter", label], timeout=30, check=False).stdout.split()
        if left:
            h.run(["docker", "rm", "-f", "-v", *left], timeout=60, check=False)
        nets = h.run(["docker", "network", "ls", "-q", "--filter", label], timeout=30, check=False).stdout.split()
        if nets:
            h.run(["docker", "network", "rm", *nets], timeout=60, check=False)
        vols = h.run(["docker", "volume", "ls", "-q", "--filter", label], timeout=30, check=False).stdout.split()
        if vols:
            h.run(["docker", "volume", "rm", "-f", *vols], timeout=60, check=False)

    def logs(self) -> str:
        r = self.dc("logs", "--no-color", "--tail", "60", timeout=60, check=False)
        return r.stdout[-12000:]

    def inspect(self, node: str, fmt: str) -> str:
        return h.run(["docker", "inspect", "-f", fmt, self.ids[node]], timeout=30).stdout.strip()

    def running(self, node: str) -> bool:
        return self.inspect(node, "{{.State.Running}}") == "true"

    # What the nodes say.
    def role(self, node: str) -> dict | None:
        return try_info(self.ip[node], 6379)

    def sentinel_master(self, node: str) -> str | None:
        r = try_call(self.ip[node], 26379, "SENTINEL", "get-master-addr-by-name", GROUP)
        return f"{r[0]}:{r[1]}" if isinstance(r, list) and len(r) == 2 else None

    def node_of(self, addr: str | None) -> str | None:
        return next((n for n, ip in self.ip.items() if addr == f"{ip}:6379"), None)

    def masters(self, nodes) -> list[str]:
        return [n for n in nodes if (self.role(n) or {}).get("role") == "master"]

    def agreed_master(self, nodes) -> str | None:
        """The node every listed sentinel names, if they all name the same one."""
        named = {self.sentinel_master(n) for n in nodes}
        if len(named) == 1 and None not in named:
            return self.node_of(named.pop())
        return None


def rec(c: Cluster, key: str, value) -> None:
    """A measurement, suffixed _valkey on the Valkey run (BENCHMARKS.md compares the two)."""
    h.record(key if c.engine == "redis" else f"{key}_{c.engine}", value)


@pytest.fixture(scope="module", params=["redis", "valkey"])
def engine(request):
    """Module scope: every test below runs in file order on one engine, then on the other."""
    return request.param


@pytest.fixture(scope="module")
def engine_refs(request, engine):
    return request.getfixturevalue("images" if engine == "redis" else "valkey_images")


@pytest.fixture(scope="module")
def cluster(engine, engine_refs):
    c = Cluster(f"redishatest{os.getpid()}{engine[0]}", h.free_subnet_prefix(), engine_refs, engine)
    c.down()  # a leftover of a crashed earlier run with the same pid
    try:
        t0 = time.monotonic()
        c.up()
        rec(c, "compose_up_s", round(time.monotonic() - t0, 1))
        yield c
    except BaseException:
        h.log("cluster logs:\n" + c.logs())
        raise
    finally:
        c.down()


@pytest.fixture(autouse=True)
def logs_on_failure(request, cluster):
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        h.log("cluster logs:\n" + cluster.logs())


def settled(c: Cluster, master: str, replicas: list[str]):
    """True when `master` is the one master, each replica is linked to it, and every live
    sentinel names it."""
    mi = c.role(master) or {}
    if mi.get("role") != "master":
        return False
    for r in replicas:
        ri = c.role(r) or {}
        if ri.get("role") != "slave" or ri.get("master_host") != c.ip[master] or ri.get("master_link_status") != "up":
            return False
        if ri.get("master_sync_in_progress") not in (None, "0"):
            return False
    if int(mi.get("connected_slaves", "0")) < len(replicas):
        return False
    return c.agreed_master([master, *replicas]) == master


@pytest.mark.timeout(1500)
def test_images_built(engine, engine_refs):
    for target, ref in engine_refs.items():
        cfg = h.run(["docker", "image", "inspect", "-f",
                     "{{.Config.User}}|{{json .Config.Entrypoint}}|{{.Config.StopSignal}}|{{json .Config.Volumes}}|{{json .Config.Healthcheck.Test}}",
                     ref], timeout=30).stdout.strip()
        user, entry, stopsig, vols, health = cfg.split("|")
        assert user not in ("", "0", "root", "0:0"), f"{ref} runs as root"
        assert "redisha-init" in entry and stopsig == "SIGTERM" and "/data" in vols, cfg
        assert "probe" in health, cfg
        role = h.run(["docker", "image", "inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", ref],
                     timeout=30).stdout
        assert f"REDISHA_ROLE={'master' if target.startswith('master') else 'replica'}" in role
    # The server the image's redisha-init runs: found on PATH (a Valkey base has no redis-server).
    out = h.run(["docker", "run", "--rm", "-e", "ALLOW_EMPTY_PASSWORD=yes", engine_refs["master-sentinel"],
                 "render"], timeout=60).stdout
    server = "valkey-server" if engine == "valkey" else "redis-server"
    assert f"# redis argv: {server} " in out and f"# sentinel argv: {server} " in out, out[:400]


def test_replication_and_sentinels_agree(cluster):
    c = cluster
    h.wait_until(what="one master, two linked replicas, three sentinels naming redis-primary",
                 pred=lambda: settled(c, "redis-primary", ["redis-secondary-1", "redis-secondary-2"]),
                 timeout=60, retry_on=h.ANY_ERROR)
    # From `compose up` until the nodes are running, replicating and agreed.
    rec(c, "up_to_settled_cluster_s", round(time.monotonic() - c.t_up, 1))
    # Each node runs the engine its image holds (INFO server, as redisha-init reads it).
    for n in NODES:
        srv = info(c.ip[n], 6379, "server", timeout=2)
        assert (srv.get("server_name") == "valkey") == (c.engine == "valkey"), (n, srv.get("server_name"))
    h.record(f"engine_{c.engine}", srv.get("valkey_version") or srv.get("redis_version"))
    # A write on the master reaches both replicas.
    m = c.ip["redis-primary"]
    assert try_call(m, 6379, "SET", "canary", "before-failover", timeout=2) == "OK"
    assert try_call(m, 6379, "WAIT", "2", "2000", timeout=4) == 2
    for r in ("redis-secondary-1", "redis-secondary-2"):
        # WAIT confirmed both replicas have it; a busy 2-core CI box may still be slow to answer.
        h.wait_until(what=f"{r} serves the canary",
                     pred=lambda r=r: try_call(c.ip[r], 6379, "GET", "canary", timeout=2) == "before-failover",
                     timeout=10, retry_on=h.ANY_ERROR)
    # The master proxy (issue 32, REDISHA_MASTER_PROXY_PORT=6380 in compose): every node's
    # proxy reaches the master, replicas' included.
    for n in NODES:
        h.wait_until(what=f"{n}'s master proxy serving the master",
                     pred=lambda n=n: try_call(c.ip[n], 6380, "GET", "canary", timeout=2) == "before-failover"
                     and "role:master" in str(try_call(c.ip[n], 6380, "INFO", "replication", timeout=2)),
                     timeout=10, retry_on=h.ANY_ERROR)
    # Each sentinel knows the two replicas and the two other sentinels.
    for n in NODES:
        mst = pairs(try_call(c.ip[n], 26379, "SENTINEL", "MASTER", GROUP))
        h.wait_until(what=f"sentinel {n} to know 2 replicas and 2 peers",
                     pred=lambda n=n: (lambda d: d.get("num-slaves") == "2" and d.get("num-other-sentinels") == "2")(
                         pairs(try_call(c.ip[n], 26379, "SENTINEL", "MASTER", GROUP) or [])), timeout=30, retry_on=h.ANY_ERROR)
        assert mst.get("ip") == m
    # Docker's HEALTHCHECK (the binary's probe) reports healthy on every node.
    h.wait_until(what="every container healthy",
                 pred=lambda: all(c.inspect(n, "{{.State.Health.Status}}") == "healthy" for n in NODES),
                 timeout=45, interval=0.5, retry_on=h.ANY_ERROR)


def test_docker_stop_master_exits_0_and_a_replica_takes_over(cluster):
    c = cluster
    stop_timeout = int(c.inspect("redis-primary", "{{.Config.StopTimeout}}"))
    t0 = time.monotonic()
    h.run(["docker", "stop", c.ids["redis-primary"]], timeout=stop_timeout + 30)
    stop_s = time.monotonic() - t0
    rec(c, "docker_stop_master_s", round(stop_s, 2))
    code = c.inspect("redis-primary", "{{.State.ExitCode}}")
    assert code == "0", f"master container exited {code}"
    # Well before Docker's SIGKILL: redisha-init finished by itself, inside its own grace.
    assert stop_s < stop_timeout - 4, f"docker stop took {stop_s:.1f} s of its {stop_timeout} s"
    rest = ["redis-secondary-1", "redis-secondary-2"]
    new = h.wait_until(what="a replica promoted and named by both remaining sentinels",
                       pred=lambda: (lambda m: m in rest and c.masters(rest) == [m] and m)(c.agreed_master(rest)),
                       timeout=DOWN_AFTER_MS / 1000 + 20, retry_on=h.ANY_ERROR)
    rec(c, "docker_stop_master_to_new_master_s", round(time.monotonic() - t0, 2))
    other = [n for n in rest if n != new][0]
    h.wait_until(what="the other replica following the new master", pred=lambda: settled(c, new, [other]), timeout=30, retry_on=h.ANY_ERROR)
    assert try_call(c.ip[new], 6379, "GET", "canary") == "before-failover"


def test_docker_start_old_master_rejoins_as_replica(cluster):
    c = cluster
    rest = ["redis-secondary-1", "redis-secondary-2"]
    master = c.agreed_master(rest)
    assert master in rest
    t0 = time.monotonic()
    h.run(["docker", "start", c.ids["redis-primary"]], timeout=60)
    # Sampled while it boots: never a second master.
    deadline = time.monotonic() + 45
    while True:
        masters = c.masters(NODES)
        assert len(masters) <= 1, f"two masters at once: {masters}"
        if settled(c, master, [n for n in NODES if n != master]):
            break
        assert time.monotonic() < deadline, (
            f"old master did not rejoin as a replica of {master}: {c.role('redis-primary')}")
        time.sleep(0.1)
    rec(c, "docker_start_to_rejoined_s", round(time.monotonic() - t0, 2))
    assert try_call(c.ip["redis-primary"], 6379, "GET", "canary") == "before-failover"


def test_docker_kill_master_fails_over_within_down_after(cluster):
    c = cluster
    master = c.agreed_master(list(NODES))
    assert master, "sentinels disagree before the kill"
    rest = [n for n in NODES if n != master]
    h.wait_until(what="both replicas fully synced", pred=lambda: settled(c, master, rest), timeout=30, retry_on=h.ANY_ERROR)
    t0 = time.monotonic()
    h.run(["docker", "kill", c.ids[master]], timeout=30)
    new = h.wait_until(what="a new master after docker kill",
                       pred=lambda: (lambda m: m in rest and c.masters(rest) == [m] and m)(c.agreed_master(rest)),
                       timeout=DOWN_AFTER_MS / 1000 + 30, interval=0.05, retry_on=h.ANY_ERROR)
    failover_s = time.monotonic() - t0
    rec(c, "docker_kill_master_failover_s", round(failover_s, 2))
    h.record("down_after_ms", DOWN_AFTER_MS)
    assert failover_s <= DOWN_AFTER_MS / 1000 + FAILOVER_MARGIN_S, (
        f"failover took {failover_s:.2f} s (down-after {DOWN_AFTER_MS} ms)")
    assert c.inspect(master, "{{.State.ExitCode}}") == "137"
    assert try_call(c.ip[new], 6379, "GET", "canary") == "before-failover"


def test_docker_stop_replica_is_quick(cluster):
    c = cluster
    alive = [n for n in NODES if c.running(n)]
    masters = c.masters(alive)
    assert len(masters) == 1, masters
    replica = [n for n in alive if n != masters[0]][0]
    t0 = time.monotonic()
    h.run(["docker", "stop", c.ids[replica]], timeout=60)
    stop_s = time.monotonic() - t0
    rec(c, "docker_stop_replica_s", round(stop_s, 2))
    assert c.inspect(replica, "{{.State.ExitCode}}") == "0"
    assert stop_s < 2.0, f"docker stop of a replica took {stop_s:.2f} s"
