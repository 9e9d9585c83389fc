"""The application a user runs (issue 30): redis-py's Sentinel client as its documentation shows
it, `Sentinel(...).master_for(...)` with only timeouts set, . READONLY from a demoted master becomes a
connection error and a fresh question to Sentinel. It RPUSHes an increasing counter at a fixed
rate; a request that raises counts as failed and its value is not acknowledged.

Run in its own venv (.venv-app, tests/app/requirements.txt), under the harness's control:
    appwriter.py OUT.json KEY RATE MODE HOST:PORT [HOST:PORT ...]   (or @FILE of them)
MODE says what retries a failed request, with the data connection's timeouts the same in each:
- `default`: master_for with only timeouts. redis-py 8.2 then retries nothing: its pool's
  connections get Retry(NoBackoff(), 0) (the 10-retry policy of a plain Redis() does not reach
  them), so every failed attempt is a failed request. The write in flight when a master is
  demoted fails (READONLY, which redis-py turns into a ConnectionError): one per move and
  connection, a floor no server can lift for a client that retries nothing.
- `retry1`: the same with `retry=Retry(NoBackoff(), 1)`, as redis-py documents. Its retry does
  not ask Sentinel again: the connection reconnects through `connect_check_health` to the address
  it had (redis-py issue #3874, open), gets READONLY from the demoted master again and fails.
- `rediscover`: `retry1` with that issue's workaround, a connection class whose reconnect inside a
  command goes through the Sentinel-aware `connect()`. Its retry reaches what the sentinels name.
(Giving master_for the 10-retry exponential policy explicitly left a request stuck in connect for
over 12 s in a graceful stop: not measured here.)
It writes until SIGTERM or stdin closes, then writes OUT.json: acked [[n, monotonic]], failed
[[n, monotonic, error]], and the redis-py version. CLOCK_MONOTONIC is the machine's, so the
harness compares the times with its own."""

import faulthandler
import json
import os
import signal
import sys
import threading
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

MODES = ("default", "retry1", "rediscover")


class Rediscovering(SentinelManagedConnection):
    """redis-py #3874's workaround: a connection closed by a failed attempt reconnects through
    the Sentinel-aware `connect()` (which asks Sentinel for the master) rather than through
    `connect_check_health` to the address it had."""

    def send_packed_command(self, command, check_health=True):
        if not self._sock:
            self.connect()
        return super().send_packed_command(command, check_health)


def main() -> int:
    out, key, rate, mode = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    if mode not in MODES:
        print(f"MODE {mode!r}: one of {', '.join(MODES)} (see the module header)", file=sys.stderr)
        return 2

    def sentinels() -> list[tuple[str, int]]:
        # `@FILE`: the addresses a headless Service's DNS name would give now (pods come back on
        # new addresses in a rollout); read again at each question to Sentinel, as a client
        # given the Service's name resolves it at each connect.
        args = sys.argv[5:]
        if len(args) == 1 and args[0].startswith("@"):
            with open(args[0][1:]) as f:
                args = f.read().split()
        return [(h, int(p)) for h, _, p in (a.rpartition(":") for a in args)]

    password = os.environ.get("APP_REDIS_PASSWORD") or None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    # A paused write must be able to wait out a handover (~1-2 s) instead of timing out: the
    # data connection waits up to 2 s, the questions to Sentinel 0.5 s (a dead one is skipped).
    timeouts = {"socket_timeout": 0.5, "socket_connect_timeout": 0.5}
    data_timeouts = {"socket_timeout": 2.0, "socket_connect_timeout": 0.5}

    class Resolving(Sentinel):
        """Asks the sentinels the name resolves to now; one still listed keeps its connection
        (and its place: redis-py moves the one that answered to the front)."""

        def discover_master(self, service_name):
            try:
                now = sentinels()
            except (OSError, ValueError):
                now = []
            if now:
                have = {(c.connection_pool.connection_kwargs["host"],
                         c.connection_pool.connection_kwargs["port"]): c for c in self.sentinels}
                kept = [c for a, c in have.items() if a in now]
                self.sentinels = kept + [redis.Redis(h, p, **self.sentinel_kwargs)
                                         for h, p in now if (h, p) not in have]
            return super().discover_master(service_name)

    def client(addrs):
        s = Resolving(addrs, sentinel_kwargs={**timeouts, "password": password},
                      password=password, **data_timeouts)
        extra: dict = {}
        if mode != "default":
            extra["retry"] = Retry(NoBackoff(), 1)
        if mode == "rediscover":
            extra["connection_class"] = Rediscovering
        return s.master_for("mymaster", password=password, **data_timeouts, **extra)

    master = client(sentinels())
    acked, failed = [], []
    inflight = [None]  # (n, start) of the request under way

    def write() -> None:
        period, n = 1.0 / rate, 1
        while not stop.is_set():
            t = time.monotonic()
            inflight[0] = (n, t)
            try:
                master.rpush(key, n)
                acked.append([n, time.monotonic()])
            except (redis.RedisError, OSError) as e:
                failed.append([n, time.monotonic(), type(e).__name__ + ": " + str(e)[:120]])
            inflight[0] = None
            n += 1
            stop.wait(max(0.0, period - (time.monotonic() - t)))

    worker = threading.Thread(target=write, daemon=True)
    worker.start()
    print("ready", flush=True)
    while not stop.wait(0.1):
        pass
    # A request still retrying is reported, not waited for without end.
    worker.join(timeout=3)
    if worker.is_alive():
        faulthandler.dump_traceback(all_threads=True)
    with open(out + ".tmp", "w") as f:
        json.dump({"acked": list(acked), "failed": list(failed), "redis_py": redis.__version__,
                   "inflight": inflight[0]}, f)
    os.replace(out + ".tmp", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
