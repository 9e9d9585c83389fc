"""Three "pods" on one machine: network namespaces on a private bridge, each running redisha-init
as PID 1 of its own PID namespace, plus a writer that goes through Sentinel like an application.

Layout (all names start with PREFIX so a leftover of a crashed run is found and removed at start):

    host (10.77.0.1, the writer runs here; PREFIX and SUBNET: REDISHA_HA_PREFIX/_SUBNET)
      └─ veth rhat-host ── rhat-net netns: bridge rhat-br ── veth ── rhat-p0 netns (pod redis-0)
                                                          ├─ veth ── rhat-p1 netns (pod redis-1)
                                                          └─ veth ── rhat-p2 netns (pod redis-2)

The bridge lives in its own namespace on purpose: the host has br_netfilter on and a FORWARD DROP
policy (docker), which would drop bridged pod-to-pod traffic; an empty namespace has neither, and
the host's firewall is left untouched.

Every wait is bounded by a deadline; every helper that talks to redis uses short socket timeouts.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from redis.sentinel import MasterNotFoundError, Sentinel

# Every name (namespaces, bridge, veths, /etc/netns dirs, the lock) starts with PREFIX and every
# address is in SUBNET.0/24, so two runs with different values (e.g. benches/soak.py with "rhsk"
# on 10.78.0) can run at the same time as the suite without touching each other. PREFIX must be
# short: interface names ("<prefix>-host") are at most 15 bytes.
PREFIX = os.environ.get("REDISHA_HA_PREFIX") or "rhat"
SUBNET = os.environ.get("REDISHA_HA_SUBNET") or "10.77.0"
if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", PREFIX):
    raise ValueError(f"REDISHA_HA_PREFIX={PREFIX!r}: want 1-8 lowercase letters/digits")
if not re.fullmatch(r"10\.(\d{1,3})\.(\d{1,3})", SUBNET) or \
        any(int(x) > 255 for x in SUBNET.split(".")[1:]):
    raise ValueError(f"REDISHA_HA_SUBNET={SUBNET!r}: want the first three octets of a 10.x.y.0/24")
HOST_IP = f"{SUBNET}.1"
NET_NS = f"{PREFIX}-net"
BRIDGE = f"{PREFIX}-br"
HOST_VETH = f"{PREFIX}-host"
HOST_PEER = f"{PREFIX}-hb"
REDIS_PORT = 6379
SENTINEL_PORT = 26379
GROUP = "mymaster"
NPODS = 3
POD_EXIT_TIMEOUT = 15.0  # the orchestrator's grace after SIGTERM (manifests: 15 s)
LOCK_PATH = f"/tmp/{PREFIX}-harness.lock"
RESULTS = Path(__file__).with_name("results.txt")

# Short timings so the suite fits in minutes. The partition of scenario 4 is longer than both
# down-after (so a failover happens) and min-replicas-max-lag (so the isolated master refuses).
# The stop grace is the binary's default: a handover waits until every sentinel has learnt the
# new master, which can take a couple of seconds on its own.
TIMINGS = {
    "REDISHA_DOWN_AFTER_MS": "2000",
    "REDISHA_FAILOVER_TIMEOUT_MS": "6000",
    "REDISHA_STOP_GRACE_MS": "8000",
    "REDISHA_DISCOVERY_TIMEOUT_MS": "15000",
    "REDISHA_CLEANUP_INTERVAL_MS": "2000",
    "REDISHA_STALE_AFTER_MS": "6000",
}
DOWN_AFTER = int(TIMINGS["REDISHA_DOWN_AFTER_MS"]) / 1000
MIN_REPLICAS_MAX_LAG = 2  # the binary's default for down-after 2000 (down-after/1000 - 1, at least 2)
# Optional: run the pods with a password (REDIS_PASSWORD; sentinels use the same one). Without
# it the pods run open, which the binary refuses on a pod network unless told so.
PASSWORD = os.environ.get("REDISHA_HA_PASSWORD") or None


@dataclass(frozen=True)
class Tls:
    """Certificate files for the pods (REDISHA_TLS_*); clients verify the servers against `ca`."""
    cert: Path
    key: Path
    ca: Path


# What the pods run with and every client helper speaks. Defaults: PASSWORD, no TLS; a test
# changes both for a while through Cluster.set_security (and puts them back).
SECURITY: dict = {"password": PASSWORD, "tls": None}


def client_kwargs() -> dict:
    """Password and TLS options of the current security, for redis.Redis / Sentinel."""
    kw: dict = {"password": SECURITY["password"]}
    tls = SECURITY["tls"]
    if tls is not None:
        # No client certificate: tls-auth-clients optional, the password authenticates.
        kw.update(ssl=True, ssl_ca_certs=str(tls.ca), ssl_cert_reqs="required",
                  ssl_check_hostname=True)
    return kw


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(*args: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args), check=check, timeout=timeout, capture_output=True, text=True
    )


def wait_until(pred, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Polls `pred` until it returns a truthy value; bounded by time (and so by count)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = pred()
        except (redis.RedisError, OSError) as e:
            last = None
            err = e
        else:
            err = None
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:.0f}s waiting for {what}"
                + (f" (last error: {err})" if err else "")
            )
        time.sleep(interval)


def client(ip: str, port: int, timeout: float = 0.5) -> redis.Redis:
    return redis.Redis(
        host=ip,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        retry_on_timeout=False,
        **client_kwargs(),
    )


def info_replication(ip: str, timeout: float = 0.5) -> dict:
    with client(ip, REDIS_PORT, timeout) as c:
        return c.info("replication")


def list_netns() -> list[str]:
    out = run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def cleanup_everything() -> None:
    """Removes whatever a previous (crashed) run or this run left: our processes (found through
    our namespaces only), namespaces, the host veth, hosts files. Idempotent."""
    for ns in list_netns():
        if not ns.startswith(PREFIX + "-"):
            continue
        pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
        for p in pids:
            try:
                os.kill(int(p), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        run("ip", "netns", "del", ns, check=False)
    run("ip", "link", "del", HOST_VETH, check=False)
    netns_etc = Path("/etc/netns")
    if netns_etc.is_dir():
        for d in netns_etc.glob(PREFIX + "-*"):
            shutil.rmtree(d, ignore_errors=True)
        try:
            netns_etc.rmdir()  # only if empty: it may hold other namespaces' files
        except OSError:
            pass


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
        return f"{PREFIX}-p{self.idx}"

    @property
    def port_veth(self) -> str:
        return f"{PREFIX}-h{self.idx}"

    @property
    def state_dir(self) -> Path:
        return self.cluster.tmp / f"pod{self.idx}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def create_network(self, ip: str) -> None:
        """A pod's network: its namespace, a veth into the bridge, one address."""
        self.ip = ip
        run("ip", "netns", "add", self.ns)
        run("ip", "-n", self.ns, "link", "set", "lo", "up")
        run("ip", "-n", NET_NS, "link", "add", self.port_veth, "type", "veth",
            "peer", "name", "eth0", "netns", self.ns)
        run("ip", "-n", NET_NS, "link", "set", self.port_veth, "master", BRIDGE, "up")
        run("ip", "-n", self.ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        run("ip", "-n", self.ns, "link", "set", "eth0", "up")
        Path(f"/etc/netns/{self.ns}").mkdir(parents=True, exist_ok=True)

    def delete_network(self) -> None:
        # The bridge-side veth first: deleting it is synchronous and takes its peer along, while
        # `ip netns del` leaves the pair to the kernel's asynchronous netns cleanup (seen still
        # present a moment later, and the next create_network then failed with "File exists").
        run("ip", "-n", NET_NS, "link", "del", self.port_veth, check=False)
        run("ip", "netns", "del", self.ns, check=False)
        shutil.rmtree(f"/etc/netns/{self.ns}", ignore_errors=True)
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
        }
        if self.cluster.password:
            e["REDIS_PASSWORD"] = self.cluster.password
        else:
            e["ALLOW_EMPTY_PASSWORD"] = "yes"
        if self.cluster.tls is not None:
            e["REDISHA_TLS_CERT_FILE"] = str(self.cluster.tls.cert)
            e["REDISHA_TLS_KEY_FILE"] = str(self.cluster.tls.key)
            e["REDISHA_TLS_CA_FILE"] = str(self.cluster.tls.ca)
        e.update(TIMINGS)
        return e

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
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
        except OSError:
            return None
        return int(kids[0]) if kids else None

    def descendants(self) -> list[tuple[int, str]]:
        """(pid, cmdline) of every process under the pod's PID 1."""
        root = self.init_pid()
        if root is None:
            return []
        out, todo = [], [root]
        while todo and len(out) < 100:
            pid = todo.pop()
            try:
                kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            for k in kids:
                try:
                    cmd = Path(f"/proc/{k}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                out.append((int(k), cmd))
                todo.append(int(k))
        return out

    def child_pid(self, kind: str) -> int:
        """The pod's redis-server (kind "redis") or sentinel (kind "sentinel") process."""
        def find():
            for pid, cmd in self.descendants():
                is_sentinel = "sentinel" in cmd
                if cmd.startswith("redis-server") and is_sentinel == (kind == "sentinel"):
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

    def log_tail(self, n: int = 40) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


class Cluster:
    def __init__(self, binary: str, tmp: Path):
        self.binary = binary
        self.tmp = tmp
        self.logdir = tmp / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.pods = [Pod(i, self) for i in range(NPODS)]
        self.next_ip = 10
        self._lock_fd = None

    # ---- security (the pods' env and every client helper follow it) ----
    @property
    def tls(self) -> Tls | None:
        return SECURITY["tls"]

    @property
    def password(self) -> str | None:
        return SECURITY["password"]

    def set_security(self, tls: Tls | None = None, password: str | None = PASSWORD) -> None:
        """TLS and password for pods spawned from now on and for every client helper; call with
        no argument to go back to the defaults. Running pods keep what they were started with."""
        SECURITY["tls"] = tls
        SECURITY["password"] = password

    # ---- network ----
    def setup(self) -> None:
        self._lock_fd = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RuntimeError(f"another HA harness run holds {LOCK_PATH}")
        cleanup_everything()
        run("ip", "netns", "add", NET_NS)
        run("ip", "-n", NET_NS, "link", "set", "lo", "up")
        run("ip", "-n", NET_NS, "link", "add", BRIDGE, "type", "bridge")
        run("ip", "-n", NET_NS, "link", "set", BRIDGE, "up")
        run("ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", HOST_PEER,
            "netns", NET_NS)
        run("ip", "addr", "add", f"{HOST_IP}/24", "dev", HOST_VETH)
        run("ip", "link", "set", HOST_VETH, "up")
        run("ip", "-n", NET_NS, "link", "set", HOST_PEER, "master", BRIDGE, "up")

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
            cleanup_everything()
            left = [ns for ns in list_netns() if ns.startswith(PREFIX + "-")]
            os.close(self._lock_fd)
            self._lock_fd = None
        return left

    def fresh_ip(self) -> str:
        ip = f"{SUBNET}.{self.next_ip}"
        self.next_ip += 1
        assert self.next_ip < 250, "address pool exhausted"
        return ip

    def write_hosts(self) -> None:
        """Cluster DNS: pod names and Services to the current addresses of live pods. Written in
        place (same inode): `ip netns exec` bind-mounted the file, a rename would not be seen."""
        lines = ["127.0.0.1 localhost"]
        for p in self.pods:
            if p.ip:
                lines.append(f"{p.ip} {p.name} {p.name}.redis-headless")
        if self.pods[0].ip:
            lines.append(f"{self.pods[0].ip} redis-primary")
        if self.pods[1].ip:
            lines.append(f"{self.pods[1].ip} redis-secondary")
        text = "\n".join(lines) + "\n"
        for p in self.pods:
            d = Path(f"/etc/netns/{p.ns}")
            if d.is_dir():
                with open(d / "hosts", "w") as f:
                    f.write(text)

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
        run("ip", "-n", NET_NS, "link", "set", self.pods[i].port_veth, "up" if up else "down")

    # ---- observations ----
    def roles(self) -> dict[str, str]:
        out = {}
        for p in self.live():
            try:
                out[p.ip] = info_replication(p.ip, 0.3).get("role", "?")
            except (redis.RedisError, OSError):
                out[p.ip] = "down"
        return out

    def sentinel_master(self, ip: str) -> dict:
        with client(ip, SENTINEL_PORT) as c:
            return c.sentinel_master(GROUP)

    def observe(self) -> dict:
        """Everything the invariants look at, in one pass."""
        snap = {"nodes": {}, "sentinels": {}}
        for p in self.live():
            try:
                snap["nodes"][p.ip] = info_replication(p.ip)
            except (redis.RedisError, OSError) as e:
                snap["nodes"][p.ip] = {"error": str(e)}
            try:
                with client(p.ip, SENTINEL_PORT) as c:
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
                with client(ip, SENTINEL_PORT, 0.3) as c:
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
            infos = {p.ip: info_replication(p.ip, 0.3) for p in live}
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
                            ignore_from: tuple[str, ...] = ()) -> dict[str, int]:
        """Lines of the sentinel (`[sentinel] ...`, or a JSON line with source sentinel) that
        contain `+switch-master`, per pod name. `pods`: Pod objects, names or indices (default
        all). Which text counts: with `since` (from log_marks()), what each of the pod's log
        files got after the mark (files created later count whole; a stopped pod's log
        included); with `since_gen`, whole log files of generation >= since_gen; with neither,
        the pod's current log file. `ignore_from`: switches away from these (earlier) master
        addresses do not count (a leader logs +switch-master only when its failover ends, which
        can be after a later stop began)."""
        sel = []
        for x in (self.pods if pods is None else pods):
            if isinstance(x, Pod):
                sel.append(x)
            elif isinstance(x, int):
                sel.append(self.pods[x])
            else:
                sel.append(next(p for p in self.pods if p.name == x or p.ip == x))
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
                         if _is_switch_master(line) and _switch_from(line) not in ignore_from)
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
            i = info_replication(pod.ip, 0.3)
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


def stop_gap(acked: list[tuple[int, float]], t_stop: float, t_end: float) -> float:
    """The write-unavailability window of a stop at `t_stop`: the longest interval between
    consecutive acknowledged writes from the last one before `t_stop` (or `t_stop` itself) to
    `t_end` (counted as an interval too: writes that never resumed are a gap to the end)."""
    times = [t for _, t in acked]
    before = [t for t in times if t <= t_stop]
    pts = [before[-1] if before else t_stop] + [t for t in times if t > t_stop] + [t_end]
    return max((b - a for a, b in zip(pts, pts[1:])), default=0.0)


@dataclass
class WriteResult:
    acked: list[tuple[int, float]]
    errors: dict[str, int]
    max_gap: float
    gap_at: float
    lost: list[int] = field(default_factory=list)


class Writer(threading.Thread):
    """An application: asks Sentinel for the master, RPUSHes an increasing counter ~100/s,
    reconnects (asking Sentinel again) on connection errors, timeouts, READONLY and refusals
    (NOREPLICAS, LOADING, MASTERDOWN). A value counts only once acknowledged; it is retried until
    then, so a value may appear twice but an acknowledged one must never be missing."""

    def __init__(self, cluster: Cluster, key: str, rate: float = 100):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.key = key
        self.period = 1.0 / rate
        self.acked: list[tuple[int, float]] = []
        self.errors: dict[str, int] = {}
        self.stop_ev = threading.Event()
        self.t0 = time.monotonic()

    def _err(self, e: Exception) -> None:
        k = type(e).__name__
        if isinstance(e, redis.ReadOnlyError):
            k = "READONLY"  # redis-py strips the code from the message
        elif isinstance(e, redis.ResponseError):
            k = str(e).split()[0]
        self.errors[k] = self.errors.get(k, 0) + 1

    def run(self) -> None:
        n, conn = 1, None
        while not self.stop_ev.is_set():
            t = time.monotonic()
            if conn is None:
                try:
                    s = Sentinel(self.cluster.sentinel_addrs(), socket_timeout=0.3,
                                 sentinel_kwargs={**client_kwargs(),
                                                  "socket_timeout": 0.3,
                                                  "socket_connect_timeout": 0.3})
                    host, port = s.discover_master(GROUP)
                    conn = client(host, port, 0.5)
                except (MasterNotFoundError, redis.RedisError, OSError) as e:
                    self._err(e)
                    self.stop_ev.wait(0.05)
                    continue
            try:
                conn.rpush(self.key, n)
                self.acked.append((n, time.monotonic()))
                n += 1
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, OSError) as e:
                self._err(e)
                conn.close()
                conn = None
                continue
            except redis.ResponseError as e:
                self._err(e)
                conn.close()
                conn = None
                self.stop_ev.wait(0.05)
                continue
            self.stop_ev.wait(max(0.0, self.period - (time.monotonic() - t)))

    def finish(self) -> WriteResult:
        self.stop_ev.set()
        self.join(timeout=10)
        assert not self.is_alive(), "writer did not stop"
        times = [self.t0] + [t for _, t in self.acked]
        gaps = [(b - a, a) for a, b in zip(times, times[1:])]
        g, at = max(gaps) if gaps else (0.0, self.t0)
        return WriteResult(self.acked, dict(self.errors), g, at - self.t0)

    def count_lost(self, res: WriteResult, ip: str) -> list[int]:
        """Acknowledged values missing from node `ip` (the final master, or a synced replica)."""
        with client(ip, REDIS_PORT, 5) as c:
            present = {int(v) for v in c.lrange(self.key, 0, -1)}
        return [v for v, _ in res.acked if v not in present]


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
                            with client(ip, REDIS_PORT, 0.3) as c:
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


def record(line: str) -> None:
    RECORDED.append(line)
    print(line, flush=True)
    with open(RESULTS, "a") as f:
        f.write(line + "\n")


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
    counts = cluster.count_switch_master(survivors, since=marks, ignore_from=ignore_from)
    log(f"stop of {pod.name}@{m}: exit {code} after {exit_s:.2f}s, survivors name {new} "
        f"(first after {named_s}s), +switch-master {counts}")
    return StopOutcome(m, pod.name, t_stop, exit_s, code, new if new != m else None, named_s,
                       counts, [p.name for p in survivors], marks)
