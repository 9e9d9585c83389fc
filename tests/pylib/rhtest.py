"""Helpers shared by the Python test suites (tests/ha, tests/docker) and the benches: logging,
bounded commands, bounded waits, finding PID 1 under `unshare`, and the Sentinel-aware writer
that records acknowledged writes. Importers put this directory on sys.path (as the benches do
with tests/ha): `sys.path.insert(0, str(ROOT / "tests" / "pylib"))`.

Only the writer needs redis-py; the rest is standard library, because benches/pid1.py runs under
the system python3, which has no redis-py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

try:
    import redis
    from redis.sentinel import MasterNotFoundError, Sentinel
except ImportError:  # the system python3 of benches/pid1.py: no writer there, see above
    redis = None

# What wait_until keeps polling through by default: a node that does not answer yet.
RETRY_ON: tuple[type[BaseException], ...] = (OSError,) + ((redis.RedisError,) if redis else ())
# For predicates that shell out (docker, ip): a failing command, a timeout, a parse error of an
# answer that is not complete yet all mean "not yet".
ANY_ERROR: tuple[type[BaseException], ...] = (Exception,)


def log(msg: str, tag: str = "", err: bool = False) -> None:
    """One timestamped line, flushed at once (runs last minutes; a crash must not eat it)."""
    prefix = f"[{time.strftime('%H:%M:%S')}]" + (f" [{tag}]" if tag else "")
    print(f"{prefix} {msg}", file=sys.stderr if err else sys.stdout, flush=True)


def run(cmd: list[str], timeout: float = 10, check: bool = True, env: dict | None = None,
        cwd: Path | None = None, quiet: bool = False) -> subprocess.CompletedProcess:
    """A bounded command, output captured. With `check`, a non-zero exit fails with the output
    (the assertion message is all a CI log shows); without it, a non-zero exit is logged unless
    `quiet` (for commands expected to fail, such as removing what may not exist)."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if check and r.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {r.returncode}\n--- stdout\n{r.stdout[-4000:]}"
            f"\n--- stderr\n{r.stderr[-4000:]}")
    if not quiet and r.returncode != 0:
        log(f"{' '.join(cmd[:4])} ... exited {r.returncode}: {r.stderr.strip()[-500:]}", err=True)
    return r


def poll(pred: Callable, timeout: float, interval: float = 0.1):
    """Calls `pred` until it returns a truthy value, which is returned; None after `timeout`.
    Exceptions propagate. For measurements that decide themselves what a timeout means."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def wait_until(pred: Callable, timeout: float, interval: float = 0.1, what: str = "condition",
               retry_on: tuple[type[BaseException], ...] = RETRY_ON):
    """Polls `pred` until it returns a truthy value and returns it; bounded by time (and so by
    count). An exception in `retry_on` counts as "not yet"; others propagate. Fails naming
    `what` and the last error or value."""
    last: list = [None, None]  # value, error of the last call

    def attempt():
        try:
            last[0], last[1] = pred(), None
        except retry_on as e:
            last[0], last[1] = None, e
        return last[0]

    v = poll(attempt, timeout, interval)
    if v:
        return v
    detail = f"last error: {last[1]!r}" if last[1] is not None else f"last: {last[0]!r}"
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} ({detail})")


# ---- processes under `unshare --pid --fork`

def children(pid: int) -> list[int]:
    """Children of every thread of `pid` (zombies included: they stay listed until reaped).
    Plain os/open on purpose: benches/pid1.py polls this every millisecond while timing."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    kids: list[int] = []
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                kids.extend(int(x) for x in f.read().split())
        except (OSError, ValueError):
            pass
    return kids


def pid1_under(unshare_pid: int) -> int | None:
    """Host pid of the PID 1 of the namespace `unshare --fork` (pid `unshare_pid`) made: its
    only child. None while it has not forked yet, or once it is gone."""
    kids = children(unshare_pid)
    return kids[0] if kids else None


# ---- an application writing through Sentinel

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
    gap_at: float  # seconds from the writer's creation to the start of max_gap
    lost: list[int] = field(default_factory=list)


class AckWriter(threading.Thread):
    """An application: asks Sentinel for the master, RPUSHes an increasing counter ~`rate`/s,
    reconnects (asking Sentinel again) on connection errors, timeouts, READONLY and refusals
    (NOREPLICAS, LOADING, MASTERDOWN). A value counts only once acknowledged; it is retried until
    then, so a value may appear twice but an acknowledged one must never be missing.

    `sentinels()` is asked at every reconnect (pods come and go); `client_kwargs` (password,
    TLS) is used for the sentinels and the master alike."""

    GROUP = "mymaster"
    REDIS_PORT = 6379

    def __init__(self, sentinels: Callable[[], list[tuple[str, int]]], key: str,
                 rate: float = 100, client_kwargs: dict | None = None):
        super().__init__(daemon=True)
        self.sentinels = sentinels
        self.key = key
        self.period = 1.0 / rate
        self.client_kwargs = dict(client_kwargs or {})
        self.acked: list[tuple[int, float]] = []
        self.errors: dict[str, int] = {}
        self.stop_ev = threading.Event()
        self.t0 = time.monotonic()

    def connect(self, host: str, port: int, timeout: float) -> "redis.Redis":
        return redis.Redis(host=host, port=port, socket_timeout=timeout,
                           socket_connect_timeout=timeout, decode_responses=True,
                           retry_on_timeout=False, **self.client_kwargs)

    def on_ack(self, n: int, host: str) -> None:
        """Value `n` was acknowledged by the master at `host` (subclasses remember more)."""
        self.acked.append((n, time.monotonic()))

    def _err(self, e: Exception) -> None:
        k = type(e).__name__
        if isinstance(e, redis.ReadOnlyError):
            k = "READONLY"  # redis-py strips the code from the message
        elif isinstance(e, redis.ResponseError) and str(e):
            k = str(e).split()[0]
        self.errors[k] = self.errors.get(k, 0) + 1

    def run(self) -> None:
        n, conn, host = 1, None, None
        while not self.stop_ev.is_set():
            t = time.monotonic()
            if conn is None:
                try:
                    s = Sentinel(self.sentinels(), socket_timeout=0.3,
                                 sentinel_kwargs={**self.client_kwargs, "socket_timeout": 0.3,
                                                  "socket_connect_timeout": 0.3})
                    host, port = s.discover_master(self.GROUP)
                    conn = self.connect(host, port, 0.5)
                # ValueError: a sentinel's reply that redis-py cannot parse (seen in the soak).
                except (MasterNotFoundError, redis.RedisError, OSError, ValueError) as e:
                    self._err(e)
                    self.stop_ev.wait(0.05)
                    continue
            try:
                conn.rpush(self.key, n)
                self.on_ack(n, host)
                n += 1
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, OSError) as e:
                self._err(e)
                conn.close()
                conn = None
                continue
            except redis.ResponseError as e:
                # A refusal (NOREPLICAS, LOADING, ...): ask again after a pause, not in a loop.
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

    def gaps_during(self, t0: float, t1: float) -> float:
        """The longest interval without an acknowledged write that overlaps [t0, t1]."""
        times = [t for _, t in self.acked]
        worst = 0.0
        for a, b in zip(times, times[1:]):
            if b >= t0 and a <= t1:
                worst = max(worst, b - a)
        return worst

    def lost_on(self, ip: str, acked: list[tuple[int, float]] | None = None,
                key: str | None = None) -> list[int]:
        """Acknowledged values (default: all so far) missing from node `ip` (the final master,
        or a synced replica); `key`: another writer's list (AppWriter), read the same way."""
        with self.connect(ip, self.REDIS_PORT, 5) as c:
            present = {int(v) for v in c.lrange(key or self.key, 0, -1)}
        return [v for v, _ in (self.acked if acked is None else acked) if v not in present]

    def count_lost(self, res: WriteResult, ip: str) -> list[int]:
        """lost_on for the values of `res` (what finish() returned)."""
        return self.lost_on(ip, res.acked)


APP_PYTHON = Path(__file__).resolve().parents[2] / ".venv-app" / "bin" / "python"
APP_SCRIPT = Path(__file__).resolve().parents[1] / "app" / "appwriter.py"


@dataclass
class AppResult:
    """What the application saw: acknowledged values and the requests that raised."""
    key: str
    acked: list[tuple[int, float]]
    failed: list[tuple[int, float, str]]
    redis_py: str
    inflight: tuple[int, float] | None = None  # a request still under way at the end

    def failed_between(self, t0: float, t1: float) -> list[tuple[int, float, str]]:
        return [f for f in self.failed if t0 <= f[1] <= t1]


class AppWriter:
    """tests/app/appwriter.py in its own process and venv (a current redis-py, its default retry
    policy): the failed requests an application meets, beside the harness's own writer."""

    def __init__(self, sentinels: Callable[[], list[tuple[str, int]]], key: str,
                 mode: str = "default", rate: float = 100, password: str | None = None,
                 workdir: Path | None = None):
        """`sentinels()` is what a headless Service's DNS name would resolve to now: written to a
        file every 0.2 s, which the application reads again whenever a request fails."""
        if not APP_PYTHON.exists():
            raise AssertionError(f"{APP_PYTHON} is missing: run scripts/setup test")
        self.key = key
        stem = f"app-{key.replace(':', '_')}-{mode}-{os.getpid()}"
        self.out = Path(workdir or "/tmp") / f"{stem}.json"
        self.addrs = Path(workdir or "/tmp") / f"{stem}.sentinels"
        self.out.unlink(missing_ok=True)
        self.sentinels = sentinels
        self._write_addrs()
        self.done = threading.Event()
        self.refresher = threading.Thread(target=self._refresh, daemon=True)
        self.refresher.start()
        env = dict(os.environ, APP_REDIS_PASSWORD=password or "")
        self.proc = subprocess.Popen(
            [str(APP_PYTHON), str(APP_SCRIPT), str(self.out), key, str(rate), mode,
             f"@{self.addrs}"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise AssertionError(f"app writer did not start: {line!r} {self.proc.stderr.read()[-2000:]}")

    def _write_addrs(self) -> None:
        tmp = self.addrs.with_suffix(".tmp")
        tmp.write_text(" ".join(f"{h}:{p}" for h, p in self.sentinels()))
        os.replace(tmp, self.addrs)

    def _refresh(self) -> None:
        while not self.done.wait(0.2):
            try:
                self._write_addrs()
            except OSError:
                pass

    def finish(self) -> AppResult:
        self.done.set()
        try:
            self.proc.send_signal(15)
            self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=5)
        assert self.out.exists(), f"app writer left no result: {self.proc.stderr.read()[-2000:]}"
        d = json.loads(self.out.read_text())
        self.out.unlink(missing_ok=True)
        if d.get("inflight"):
            log(f"app writer {self.key}: a request still under way; its threads:\n"
                f"{self.proc.stderr.read()[-6000:]}")
        return AppResult(self.key, [tuple(a) for a in d["acked"]], [tuple(f) for f in d["failed"]],
                         d["redis_py"], tuple(d["inflight"]) if d.get("inflight") else None)

    def close(self) -> None:
        """Teardown on failure: never leave the process behind."""
        self.done.set()
        self.addrs.unlink(missing_ok=True)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


def start_apps(sentinels: Callable[[], list[tuple[str, int]]], key: str, modes,
               password: str | None = None) -> dict[str, AppWriter]:
    """One AppWriter per retry policy (tests/app/appwriter.py's MODES), keys `key:mode`; on a
    failed start the ones already started are closed."""
    apps: dict[str, AppWriter] = {}
    try:
        for mode in modes:
            apps[mode] = AppWriter(sentinels, f"{key}:{mode}", mode, password=password)
    except BaseException:
        for a in apps.values():
            a.close()
        raise
    return apps


def finish_apps(apps: dict[str, AppWriter]) -> dict[str, AppResult]:
    """Finishes every AppWriter and closes each, also when one's finish fails."""
    out: dict[str, AppResult] = {}
    try:
        for mode, a in apps.items():
            out[mode] = a.finish()
    finally:
        for a in apps.values():
            a.close()
    return out

