"""The HA harness's pods and cluster: three "pods" on one machine, each running redisha-init as
PID 1 of its own PID namespace inside its own network namespace (see hanet for the layout), and
the control an orchestrator has over them: start, SIGKILL, graceful stop, partition. The cluster's
security (password, TLS) is its state: the pods' env and every client helper of the cluster
follow it. The invariants are in hachecks (a mixin of Cluster), the writer in hawriter.

Every wait is bounded by a deadline; every helper that talks to redis uses short socket timeouts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import redis

import hanet
from hachecks import Checks
from hanet import NPODS, REDIS_PORT, SENTINEL_PORT
from rhtest import children, log, pid1_under, wait_until

POD_EXIT_TIMEOUT = 15.0  # the orchestrator's grace after SIGTERM (manifests: 15 s)

# Short timings so the suite fits in minutes. The partition of scenario 4 is longer than both
# down-after (so a failover happens) and min-replicas-max-lag (so the isolated master refuses).
# The stop grace is the binary's default: a handover waits until every sentinel has learnt the
# new master, which can take a couple of seconds on its own. Read-only: a test that needs more
# (REDISHA_DURABILITY, ...) changes its cluster's `timings`, a copy.
TIMINGS = MappingProxyType({
    "REDISHA_DOWN_AFTER_MS": "2000",
    "REDISHA_FAILOVER_TIMEOUT_MS": "6000",
    "REDISHA_STOP_GRACE_MS": "8000",
    "REDISHA_DISCOVERY_TIMEOUT_MS": "15000",
    "REDISHA_CLEANUP_INTERVAL_MS": "2000",
    "REDISHA_STALE_AFTER_MS": "6000",
    # The master proxy runs in every pod, as in the k8s and compose layouts (test_proxy.py).
    "REDISHA_MASTER_PROXY_PORT": "6380",
    # Low enough for test_proxy to reach the per-client half (200) with a few hundred sockets.
    "REDISHA_MASTER_PROXY_MAX_CONNS": "400",
})
DOWN_AFTER = int(TIMINGS["REDISHA_DOWN_AFTER_MS"]) / 1000
MIN_REPLICAS_MAX_LAG = 2  # the binary's default for down-after 2000 (down-after/1000 - 1, at least 2)
# Optional: run the pods with a password (REDIS_PASSWORD; sentinels use the same one). Without
# it the pods run open, which the binary refuses on a pod network unless told so.
PASSWORD = os.environ.get("REDISHA_HA_PASSWORD") or None
# Optional: run every scenario with ACL users instead (REDISHA_ACL_DIR): the harness's own
# clients log in as `redisha` (what an operator's tooling would use), the writer as `app`.
ACL_ON = os.environ.get("REDISHA_HA_ACL") not in (None, "", "0")
ACL_USERS = ("redisha", "replication", "sentinel", "app")


@dataclass(frozen=True)
class Acl:
    """A password directory as a mounted Secret: one file per user, first line sent, every line
    accepted. Read at each use, so a test rotates by rewriting the files (as a Secret update)."""
    dir: Path

    def pw(self, user: str) -> str:
        return (self.dir / user).read_text().splitlines()[0]

    def write(self, user: str, *passwords: str) -> None:
        tmp = self.dir / f".{user}.tmp"
        tmp.write_text("".join(f"{p}\n" for p in passwords))
        tmp.replace(self.dir / user)


def make_acl(d: Path, tag: str = "v1") -> Acl:
    d.mkdir(parents=True, exist_ok=True)
    a = Acl(d)
    for u in ACL_USERS:
        a.write(u, f"{u}-{tag}-pw")
    return a


@dataclass(frozen=True)
class Tls:
    """Certificate files for the pods (REDISHA_TLS_*); clients verify the servers against `ca`."""
    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class Security:
    """What the pods run with and the clients speak: a password (None: open) and TLS (None:
    plaintext)."""
    password: str | None = PASSWORD
    tls: Tls | None = None
    acl: Acl | None = None

    def client_kwargs(self, user: str = "redisha") -> dict:
        """Password and TLS options for redis.Redis / Sentinel; with ACL users, `user`'s."""
        kw: dict = {"password": self.password}
        if self.acl is not None:
            kw = {"username": user, "password": self.acl.pw(user)}
        if self.tls is not None:
            # No client certificate: tls-auth-clients optional, the password authenticates.
            kw.update(ssl=True, ssl_ca_certs=str(self.tls.ca), ssl_cert_reqs="required",
                      ssl_check_hostname=True)
        return kw

    def app_kwargs(self) -> dict:
        """What the application (the writer) speaks: the `app` user with ACL users on."""
        return self.client_kwargs("app")


DEFAULT_SECURITY = Security(acl=make_acl(
    Path("/tmp") / f"{os.environ.get('REDISHA_HA_PREFIX', 'rhat')}-acl") if ACL_ON else None)


def client_kwargs(security: Security = DEFAULT_SECURITY) -> dict:
    return security.client_kwargs()


def client(ip: str, port: int, timeout: float = 0.5,
           security: Security = DEFAULT_SECURITY, user: str = "redisha") -> redis.Redis:
    """A client with short timeouts. Outside a cluster's security (TLS test), use
    Cluster.client, which speaks what the cluster's pods run with."""
    return redis.Redis(
        host=ip,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        retry_on_timeout=False,
        **security.client_kwargs(user),
    )


def info_replication(ip: str, timeout: float = 0.5,
                     security: Security = DEFAULT_SECURITY) -> dict:
    with client(ip, REDIS_PORT, timeout, security) as c:
        return c.info("replication")


@dataclass
class Pod:
    idx: int
    cluster: "Cluster"
    ip: str | None = None
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    generation: int = 0
    log_path: Path | None = None
    last_exit: tuple[float, int | None] | None = None

    @property
    def name(self) -> str:
        return f"redis-{self.idx}"

    @property
    def ns(self) -> str:
        return hanet.pod_ns(self.idx)

    @property
    def port_veth(self) -> str:
        return hanet.pod_port(self.idx)

    @property
    def state_dir(self) -> Path:
        return self.cluster.tmp / f"pod{self.idx}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def create_network(self, ip: str) -> None:
        hanet.create_pod_net(self.idx, ip)
        self.ip = ip

    def delete_network(self) -> None:
        hanet.delete_pod_net(self.idx)
        self.ip = None

    def env(self) -> dict:
        sentinels = ",".join(f"redis-{i}:{SENTINEL_PORT}" for i in range(NPODS))
        e = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "MY_POD_IP": self.ip,
            "REDIS_MASTER_SERVICE_HOST": "redis-primary",
            "REDISHA_SENTINELS": sentinels,
            "REDISHA_STATE_DIR": str(self.state_dir),
            "REDISHA_ROLE": "master" if self.idx == 0 else "replica",
            # tests scrape every pod (hametrics.py, issue 33)
            "REDISHA_METRICS_PORT": "9379",
        }
        if self.cluster.security.acl is not None:
            e["REDISHA_ACL_DIR"] = str(self.cluster.security.acl.dir)
        elif self.cluster.password:
            e["REDIS_PASSWORD"] = self.cluster.password
        else:
            e["ALLOW_EMPTY_PASSWORD"] = "yes"
        if self.cluster.tls is not None:
            e["REDISHA_TLS_CERT_FILE"] = str(self.cluster.tls.cert)
            e["REDISHA_TLS_KEY_FILE"] = str(self.cluster.tls.key)
            e["REDISHA_TLS_CA_FILE"] = str(self.cluster.tls.ca)
        e.update(self.cluster.timings)
        server = self.cluster.servers.get(self.idx)
        if server:
            e["REDISHA_REDIS_SERVER"] = server
        return e

    @property
    def server_name(self) -> str:
        """The basename of the server binary the pod runs (its processes' titles start with it)."""
        return Path(self.cluster.servers.get(self.idx) or "redis-server").name

    def spawn(self) -> None:
        """Starts redisha-init as PID 1 of a new PID namespace inside the pod's netns. `ip netns
        exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts: the pod's cluster DNS."""
        assert self.ip, "network first"
        self.generation += 1
        self.log_path = self.cluster.logdir / f"{self.name}.gen{self.generation}.log"
        logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            # --kill-child: if unshare itself dies (harness killed), its PID 1 and with it the
            # whole PID namespace die too, instead of lingering as orphans.
            ["ip", "netns", "exec", self.ns, "unshare", "--pid", "--fork", "--mount-proc",
             "--kill-child=SIGKILL", self.cluster.binary, "run"],
            env=self.env(), stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        logf.close()
        self.started_at = time.monotonic()

    def init_pid(self) -> int | None:
        """Host pid of the pod's PID 1: the only child of `unshare --fork`."""
        if not self.alive:
            return None
        return pid1_under(self.proc.pid)

    def descendants(self) -> list[tuple[int, str]]:
        """(pid, cmdline) of every process under the pod's PID 1."""
        root = self.init_pid()
        if root is None:
            return []
        out, todo = [], [root]
        while todo and len(out) < 100:
            for k in children(todo.pop()):
                try:
                    cmd = Path(f"/proc/{k}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                out.append((k, cmd))
                todo.append(k)
        return out

    def child_pid(self, kind: str) -> int:
        """The pod's redis-server (kind "redis") or sentinel (kind "sentinel") process."""
        def find():
            for pid, cmd in self.descendants():
                is_sentinel = "sentinel" in cmd
                if cmd.startswith(self.server_name) and is_sentinel == (kind == "sentinel"):
                    return pid
            return None
        return wait_until(find, 10, what=f"{self.name}'s {kind} process")

    def kill(self) -> None:
        """SIGKILL of the pod's PID 1: the kernel kills every process of its PID namespace."""
        if self.proc is None:
            return
        pid = self.init_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def terminate(self, timeout: float = POD_EXIT_TIMEOUT) -> tuple[float, int | None]:
        """A graceful stop as Kubernetes does it: SIGTERM to the pod's PID 1, then wait (bounded
        by `timeout`, the orchestrator's grace) for the pod to exit; SIGKILL if it has not.
        Returns (seconds from SIGTERM to exit, exit code of PID 1; -9 if it had to be killed)."""
        assert self.proc is not None, f"{self.name} is not running"
        pid = wait_until(self.init_pid, 5, 0.02, f"{self.name}'s PID 1")
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not exit within {timeout:.0f}s of SIGTERM: SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
            code = -signal.SIGKILL
        took = time.monotonic() - t0
        self.proc = None
        self.last_exit = (took, code)
        return took, code

    def freeze(self) -> list[int]:
        """SIGSTOP of the pod's PID 1 (first: it cannot spawn anything then) and every process
        under it; returns the pids in that order, for `thaw` ([] when the pod has no PID 1)."""
        init = self.init_pid()
        if init is None:
            return []
        os.kill(init, signal.SIGSTOP)
        stopped = [init]
        for pid, _ in self.descendants():
            try:
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
            except ProcessLookupError:
                pass
        return stopped

    @staticmethod
    def thaw(pids: list[int]) -> None:
        """SIGCONT of what `freeze` stopped, children first and PID 1 last."""
        for pid in reversed(pids):
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def log_tail(self, n: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


class Cluster(Checks):
    def __init__(self, binary: str, tmp: Path):
        self.binary = binary
        self.tmp = tmp
        self.logdir = tmp / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.pods = [Pod(i, self) for i in range(NPODS)]
        self.next_ip = 10
        self._lock_fd = None
        # The pods' env: TIMINGS, plus whatever a test sets for a while (and removes again).
        self.timings: dict[str, str] = dict(TIMINGS)
        self.security = DEFAULT_SECURITY
        # REDISHA_REDIS_SERVER per pod index (e.g. "valkey-server"); a pod without an entry runs
        # the binary's default, redis-server. Read at spawn, so a rolling upgrade changes an
        # entry and restarts that pod.
        self.servers: dict[int, str] = {}

    # ---- security (the pods' env and every client helper of the cluster follow it) ----
    @property
    def tls(self) -> Tls | None:
        return self.security.tls

    @property
    def password(self) -> str | None:
        return self.security.password

    def set_security(self, tls: Tls | None = None, password: str | None = PASSWORD,
                     acl: Acl | None = DEFAULT_SECURITY.acl) -> None:
        """TLS, password and ACL users for pods spawned from now on and for every client helper
        of the cluster; call with no argument to go back to the defaults. Running pods keep what
        they were started with."""
        self.security = Security(password, tls, acl)

    def client(self, ip: str, port: int, timeout: float = 0.5,
               user: str = "redisha") -> redis.Redis:
        """`user` matters with ACL users only: `redisha` for the cluster's state, `app` to read
        the data."""
        return client(ip, port, timeout, self.security, user)

    def info_replication(self, ip: str, timeout: float = 0.5) -> dict:
        return info_replication(ip, timeout, self.security)

    # ---- network ----
    def setup(self) -> None:
        self._lock_fd = hanet.lock()
        hanet.cleanup_everything()
        hanet.create_bridge()

    def teardown(self) -> list[str]:
        """Kills the pods and removes everything with our prefix; returns the namespaces still
        there afterwards (checked before the lock is released: then they are ours)."""
        left: list[str] = []
        for p in self.pods:
            try:
                p.kill()
            except Exception as e:  # keep tearing down whatever fails
                log(f"teardown: kill {p.name}: {e}")
        # Only the run that holds the lock owns the namespaces: a run whose setup() found the
        # lock taken must not sweep away the other run's cluster (it did: a second soak with
        # the same prefix killed the first one's pods).
        if self._lock_fd is not None:
            hanet.cleanup_everything()
            left = hanet.our_netns()
            os.close(self._lock_fd)
            self._lock_fd = None
        return left

    def fresh_ip(self) -> str:
        ip = hanet.address(self.next_ip)
        self.next_ip += 1
        assert self.next_ip < 250, "address pool exhausted"
        return ip

    def write_hosts(self) -> None:
        """Cluster DNS: pod names and Services to the current addresses of live pods."""
        records = [(p.ip, f"{p.name} {p.name}.redis-headless") for p in self.pods if p.ip]
        if self.pods[0].ip:
            records.append((self.pods[0].ip, "redis-primary"))
        if self.pods[1].ip:
            records.append((self.pods[1].ip, "redis-secondary"))
        hanet.write_hosts(records, [p.idx for p in self.pods])

    # ---- pods ----
    def start_pods(self, idxs: list[int], new_ip: bool = True) -> None:
        """Creates the networks first, then spawns the processes back to back ("same moment")."""
        for i in idxs:
            p = self.pods[i]
            assert not p.alive, f"{p.name} already running"
            if p.ip is None or new_ip:
                p.delete_network()
                p.create_network(self.fresh_ip())
        self.write_hosts()
        for i in idxs:
            self.pods[i].spawn()
        log("started " + ", ".join(f"{self.pods[i].name}@{self.pods[i].ip}" for i in idxs))

    def kill_pod(self, i: int, keep_ip: bool = False) -> None:
        """The pod is gone: processes SIGKILLed, its address and DNS records removed. With
        `keep_ip` the network namespace, the address and the DNS record stay (nothing answers
        there: connections are refused) so that `start_pods(new_ip=False)` brings the pod back
        on the same address, like a pod whose node rebooted."""
        p = self.pods[i]
        old = p.ip
        p.kill()
        if not keep_ip:
            p.delete_network()
            self.write_hosts()
        log(f"killed pod {p.name} (was {old}{', address kept' if keep_ip else ''})")

    def stop_pod_gracefully(self, i: int, timeout: float = POD_EXIT_TIMEOUT
                            ) -> tuple[float, int | None]:
        """SIGTERM to the pod's PID 1 (as Kubernetes does), wait for its exit (SIGKILL after
        `timeout`), then its address and DNS records go as in kill_pod. Returns
        (seconds from SIGTERM to exit, exit code)."""
        p = self.pods[i]
        old = p.ip
        took, code = p.terminate(timeout)
        p.delete_network()
        self.write_hosts()
        log(f"stopped pod {p.name} (was {old}) gracefully: exit {code} after {took:.2f}s")
        return took, code

    def live(self) -> list[Pod]:
        return [p for p in self.pods if p.alive and p.ip]

    def live_ips(self) -> set[str]:
        return {p.ip for p in self.live()}

    def sentinel_addrs(self) -> list[tuple[str, int]]:
        return [(p.ip, SENTINEL_PORT) for p in self.live()]

    def pod_by_ip(self, ip: str) -> Pod | None:
        return next((p for p in self.pods if p.ip == ip), None)

    def set_link(self, i: int, up: bool) -> None:
        """Cuts (or restores) a pod's only link: its bridge port goes down, the pod keeps its
        address, connections hang as on a real partition."""
        hanet.set_port(i, up)

# ---- shared by tests/ha/test_races.py and benches/race.py ----

def cold_start(cluster: Cluster, timeout: float = 60) -> float:
    """Every pod killed, every state dir wiped, all three started at the same moment with fresh
    addresses; returns the monotonic time of the cluster's first answer (first_answering)."""
    for p in cluster.pods:
        if p.alive:
            cluster.kill_pod(p.idx)
        shutil.rmtree(p.state_dir, ignore_errors=True)
    cluster.start_pods(list(range(NPODS)), new_ip=True)
    return cluster.first_answering(timeout)


@dataclass
class StopOutcome:
    old_master: str
    pod: str
    t_stop: float                  # monotonic time of the SIGTERM
    exit_s: float | None           # SIGTERM -> the pod's exit
    exit_code: int | None
    new_master: str | None         # what the surviving sentinels name at the end of the watch
    named_s: float | None          # SIGTERM -> surviving sentinels first agree on a new master
    switch_master: dict[str, int]  # +switch-master lines per surviving pod since the SIGTERM
    survivors: list[str]           # pod names
    marks: dict[Path, int]         # log sizes at the SIGTERM: count_switch_master(since=marks)


def stop_master_and_watch(cluster: Cluster, watch: float | None = None,
                          name_timeout: float = 20,
                          ignore_from: tuple[str, ...] = ()) -> StopOutcome:
    """SIGTERM of the master pod (stop_pod_gracefully, in a thread) while the surviving
    sentinels are polled until they agree on a new master (bounded by `name_timeout`); then
    `watch` seconds more (default down-after + 3 s: long enough for a second failover to show),
    then the `+switch-master` lines of the surviving sentinels since the SIGTERM are counted.
    Measures only: the caller asserts."""
    watch = DOWN_AFTER + 3 if watch is None else watch
    m = cluster.current_master()
    assert m, f"no single master to stop: {cluster.roles()}"
    pod = cluster.pod_by_ip(m)
    survivors = [p for p in cluster.live() if p is not pod]
    sips = [p.ip for p in survivors]
    marks = cluster.log_marks()
    result: dict = {}

    def stop():
        try:
            result["exit"] = cluster.stop_pod_gracefully(pod.idx)
        except Exception as e:  # reported through result; the main thread goes on measuring
            result["error"] = e

    th = threading.Thread(target=stop, daemon=True)
    t_stop = time.monotonic()
    th.start()
    named_s = None
    deadline = t_stop + name_timeout
    while time.monotonic() < deadline:
        n = cluster.named_master(sips)
        if n and n != m:
            named_s = time.monotonic() - t_stop
            break
        time.sleep(0.05)
    th.join(POD_EXIT_TIMEOUT + 20)
    assert not th.is_alive(), "the graceful stop did not return"
    if "error" in result:
        raise result["error"]
    exit_s, code = result["exit"]
    time.sleep(watch)
    new = cluster.named_master(sips)
    counts = cluster.count_switch_master(survivors, since=marks, ignore_from=ignore_from,
                                         unless_to=new if new != m else None)
    log(f"stop of {pod.name}@{m}: exit {code} after {exit_s:.2f}s, survivors name {new} "
        f"(first after {named_s}s), +switch-master {counts}")
    return StopOutcome(m, pod.name, t_stop, exit_s, code, new if new != m else None, named_s,
                       counts, [p.name for p in survivors], marks)
