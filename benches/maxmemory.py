#!/usr/bin/env python3
"""How much memory beyond `maxmemory` does a full redis need? (issue 18: the maxmemory fraction)

A real redis-server (7.0, the conf/redis-master.conf base: AOF with an RDB preamble, a
disk-backed full sync; `--sync diskless` for the former mode) runs inside a cgroup v1 memory cgroup of its own, made for this run under this
process's memory cgroup, without a limit (we measure, we do not constrain). It is filled with
1 KiB values up to 97 % of `maxmemory` (trimmed to 92 % before each round); then, per round, one of:

  aof     BGREWRITEAOF while a writer (redis-benchmark, pipelined) overwrites random keys (same
          size, so the dataset stays at maxmemory) as fast as it can: the fork child's copy-on-write
          pages appear as the parent writes.
  resync  a fresh replica (outside the cgroup: it is another pod) does a full sync from the
          master while the same writer runs: the full sync's fork child (copy-on-write)
          plus the replica's output buffer (writes queued during the transfer).

Each scenario runs with two writers: `max` (redis-benchmark, 2 connections with pipelines of
16: as fast as redis takes them) and `moderate` (1 connection, one request at a time). Before
each round the cgroup's memory is let settle (what the last round freed is purged). The writer
starts at a random moment 0-0.5 s before the fork (seeded). The cgroup's memory.stat
is sampled every 10 ms: `rss` (anonymous memory, which the OOM killer cannot reclaim; a page
shared by parent and child after fork is counted once) and `rss + cache` (page cache of the AOF
is charged to the cgroup too, but the kernel reclaims it before it kills); memory.max_usage_in_bytes
is the kernel's own high-water mark of rss + cache. The anonymous peak is reported relative to
redis's used_memory when the round starts (the dataset; kept just under maxmemory so that the
overwrites are accepted): a dataset at maxmemory needs the same ratio, so the container limit
must hold ratio × maxmemory, i.e. maxmemory <= limit / ratio.

    .venv/bin/python benches/maxmemory.py --rounds 5 --maxmemory-mb 256 [--seed 18] [--png benches/img/maxmemory.png]

Needs root (cgroup v1 memory controller at /sys/fs/cgroup/memory, as on our machines),
redis-server, redis-py. Prints a Markdown table for BENCHMARKS.md and the worst round.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
V1_MEMORY = Path("/sys/fs/cgroup/memory")
VALUE_SIZE = 1024
MASTER_PORT = 7479
REPLICA_PORT = 7480


def own_memory_cgroup() -> Path:
    """This process's memory cgroup directory (v1): /proc/self/cgroup names it under the mount."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return V1_MEMORY / path.lstrip("/")
    raise SystemExit("no cgroup v1 memory controller for this process (this bench needs cgroup v1)")


class Cgroup:
    """A memory cgroup made for the run; removed at the end (after its processes are gone)."""

    def __init__(self) -> None:
        self.dir = own_memory_cgroup() / f"redisha-bench-maxmemory-{os.getpid()}"
        self.dir.mkdir()

    def stat(self) -> dict[str, int]:
        out = {}
        for line in (self.dir / "memory.stat").read_text().splitlines():
            k, v = line.split()
            out[k] = int(v)
        return out

    def reset_max_usage(self) -> None:
        (self.dir / "memory.max_usage_in_bytes").write_text("0")

    def max_usage(self) -> int:
        return int((self.dir / "memory.max_usage_in_bytes").read_text())

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.dir.rmdir()
                return
            except OSError:
                time.sleep(0.1)


class Sampler(threading.Thread):
    """Samples the cgroup's anonymous and total memory every 10 ms until stopped."""

    def __init__(self, cg: Cgroup) -> None:
        super().__init__(daemon=True)
        self.cg, self.stop_ev, self.samples = cg, threading.Event(), []
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop_ev.is_set():
            try:
                s = self.cg.stat()
                self.samples.append((time.monotonic() - self.t0, s["rss"], s["rss"] + s["cache"]))
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.01)

    def peaks(self) -> tuple[int, int]:
        return max(s[1] for s in self.samples), max(s[2] for s in self.samples)


class Writer(threading.Thread):
    """Overwrites random existing keys with same-size values as fast as it can: redis-benchmark
    (C, 2 connections, pipelines of 16), so the writes are not limited by a Python client. Its
    keys are `key:<12 digits>` below `nkeys`, which is how `fill` names them. redis-benchmark
    exits at the first error reply (an OOM refusal): it is started again until the round ends."""

    # max: 2 connections with pipelines of 16 (as fast as redis takes them, ~20-30k SET/s here);
    # moderate: 1 connection, one request at a time (a few thousand SET/s).
    PROFILES = {"max": ["-c", "2", "-P", "16"], "moderate": ["-c", "1", "-P", "1"]}

    def __init__(self, port: int, nkeys: int, profile: str) -> None:
        super().__init__(daemon=True)
        self.cmd = ["redis-benchmark", "-p", str(port), "-t", "set", "-r", str(nkeys), "-d",
                    str(VALUE_SIZE), *self.PROFILES[profile], "-n", "2000000000", "-q"]
        self.stop_ev, self.lock, self.proc, self.restarts = threading.Event(), threading.Lock(), None, 0
        self.start()

    def run(self) -> None:
        while not self.stop_ev.is_set():
            with self.lock:
                if self.stop_ev.is_set():
                    return
                self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL)
            self.proc.wait()
            if not self.stop_ev.is_set():
                self.restarts += 1
                time.sleep(0.01)

    def stop(self) -> None:
        with self.lock:
            self.stop_ev.set()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
        self.join(10)


def start_redis(conf: Path, cg: Cgroup | None) -> subprocess.Popen:
    # The process joins the cgroup before exec, so everything it allocates (and every fork child)
    # is charged there from the first byte.
    def join() -> None:
        if cg is not None:
            (cg.dir / "cgroup.procs").write_text(str(os.getpid()))

    return subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=join)


def wait_for(what: str, fn, timeout: float, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = fn()
            if v:
                return v
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            pass
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def master_conf(d: Path, maxmemory: int, sync: str | None = None) -> Path:
    """The base file plus the per-node lines; `sync` overrides its full-sync mode (A/B runs)."""
    base = (ROOT / "conf" / "redis-master.conf").read_text()
    conf = d / "redis.conf"
    override = {None: "", "disk": "repl-diskless-sync no\n",
                # as conf/ had it before the disk sync (Redis 7 would wait 5 s)
                "diskless": "repl-diskless-sync yes\nrepl-diskless-sync-delay 0\n"}[sync]
    conf.write_text(base + f"\nport {MASTER_PORT}\nbind 127.0.0.1\ndir {d}\n"
                    f"maxmemory {maxmemory}\nmaxmemory-policy noeviction\n"
                    "min-replicas-to-write 0\n" + override)
    return conf


def fill(r: redis.Redis, maxmemory: int) -> int:
    """SETs 1 KiB values until used_memory reaches 97 % of maxmemory; returns the key count."""
    n = 0
    val = b"f" * VALUE_SIZE
    while r.info("memory")["used_memory"] < 0.97 * maxmemory:
        p = r.pipeline(transaction=False)
        for _ in range(1000):
            p.set(f"key:{n:012d}", val)
            n += 1
        p.execute()
    return n


def trim(r: redis.Redis, maxmemory: int, nkeys: int) -> int:
    """Deletes the highest keys until used_memory is below 92 % of maxmemory again (a replica's
    first sync allocates the replication backlog, which maxmemory counts), so that the writer's
    overwrites are accepted; returns the key count left."""
    while r.info("memory")["used_memory"] > 0.92 * maxmemory and nkeys > 1000:
        r.delete(*[f"key:{i:012d}" for i in range(nkeys - 1000, nkeys)])
        nkeys -= 1000
    return nkeys


def settle(cg: Cgroup) -> None:
    """Waits (at most 30 s) until the cgroup's anonymous memory stops falling: what the previous
    round freed (a replica's output buffer, a child's pages) is returned by jemalloc's background
    purge over ~10 s, and each round must start from the dataset alone."""
    last = cg.stat()["rss"]
    for _ in range(15):
        time.sleep(2)
        now = cg.stat()["rss"]
        if now > last * 0.99:
            return
        last = now


def writes_processed(r: redis.Redis) -> int:
    return r.info("stats")["total_commands_processed"]


def end_round(writer: "Writer", sampler: "Sampler") -> None:
    """Stops a round's writer and sampler, also when the round failed: a failed round must not
    leave redis-benchmark running (two that did wrote for 1.5 h into later runs)."""
    writer.stop()
    sampler.stop_ev.set()
    sampler.join(5)


def round_aof(r: redis.Redis, cg: Cgroup, nkeys: int, rng: random.Random, profile: str) -> dict:
    wait_for("no rewrite running", lambda: not r.info("persistence")["aof_rewrite_in_progress"], 120)
    cg.reset_max_usage()
    base_rss = cg.stat()["rss"]
    used = r.info("memory")["used_memory"]
    sampler = Sampler(cg)
    sampler.start()
    cmds0, rejected0 = writes_processed(r), r.info("stats")["total_error_replies"]
    writer = Writer(MASTER_PORT, nkeys, profile)
    try:
        time.sleep(rng.uniform(0, 0.5))
        t_fork = time.monotonic() - sampler.t0
        try:
            r.bgrewriteaof()
        except redis.ResponseError as e:
            # Redis's own auto-rewrite (the writer doubled the AOF) forked first: that fork,
            # under the same writer, is this round's.
            if "already in progress" not in str(e):
                raise
        wait_for("the rewrite to start", lambda: r.info("persistence")["aof_rewrite_in_progress"], 30)
        wait_for("the rewrite to end", lambda: not r.info("persistence")["aof_rewrite_in_progress"], 300)
        t_end = time.monotonic() - sampler.t0
        time.sleep(0.2)
    finally:
        end_round(writer, sampler)
    status = r.info("persistence")["aof_last_bgrewrite_status"]
    peak_rss, peak_total = sampler.peaks()
    return dict(scenario="aof", base_rss=base_rss, used=used, peak_rss=peak_rss, peak_total=peak_total,
                max_usage=cg.max_usage(), fork_s=t_end - t_fork, writes=writes_processed(r) - cmds0,
                write_errors=r.info("stats")["total_error_replies"] - rejected0,
                ok=status == "ok", samples=sampler.samples, t_fork=t_fork, t_end=t_end)


def round_resync(r: redis.Redis, cg: Cgroup, nkeys: int, rng: random.Random, tmp: Path, i: int,
                 profile: str) -> dict:
    d = tmp / f"replica{i}"
    d.mkdir()
    conf = d / "redis.conf"
    conf.write_text(f"port {REPLICA_PORT}\nbind 127.0.0.1\ndir {d}\nsave \"\"\nappendonly no\n"
                    f"replicaof 127.0.0.1 {MASTER_PORT}\nrepl-diskless-load disabled\n")
    wait_for("no rewrite running", lambda: not r.info("persistence")["aof_rewrite_in_progress"], 120)
    cg.reset_max_usage()
    base_rss = cg.stat()["rss"]
    used = r.info("memory")["used_memory"]
    sampler = Sampler(cg)
    sampler.start()
    cmds0, rejected0 = writes_processed(r), r.info("stats")["total_error_replies"]
    writer = Writer(MASTER_PORT, nkeys, profile)
    replica = None
    peak_buf = 0
    try:
        time.sleep(rng.uniform(0, 0.5))
        t_fork = time.monotonic() - sampler.t0
        replica = start_redis(conf, None)
        rr = redis.Redis(port=REPLICA_PORT, socket_timeout=10)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                peak_buf = max(peak_buf, r.info("memory").get("mem_clients_slaves", 0))
                if rr.info("replication").get("master_link_status") == "up":
                    break
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                pass
            time.sleep(0.02)
        else:
            raise RuntimeError("the replica never finished its full sync")
        t_end = time.monotonic() - sampler.t0
        time.sleep(0.2)
    finally:
        end_round(writer, sampler)
        if replica is not None:
            replica.send_signal(signal.SIGKILL)
            replica.wait(10)
        shutil.rmtree(d, ignore_errors=True)
    # The master notices the dead replica and frees its output buffer.
    wait_for("the replica to be gone", lambda: r.info("replication")["connected_slaves"] == 0, 30)
    peak_rss, peak_total = sampler.peaks()
    return dict(scenario="resync", base_rss=base_rss, used=used, peak_rss=peak_rss, peak_total=peak_total,
                max_usage=cg.max_usage(), fork_s=t_end - t_fork, writes=writes_processed(r) - cmds0,
                write_errors=r.info("stats")["total_error_replies"] - rejected0, ok=True,
                peak_replica_buffer=peak_buf,
                samples=sampler.samples, t_fork=t_fork, t_end=t_end)


def mib(n: float) -> str:
    return f"{n / 2**20:.0f}"


def plot(path: Path, worst: dict[str, dict], maxmemory: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    rows = (len(worst) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.6 * rows), squeeze=False)
    for ax, (name, rnd) in zip([a for row in axes for a in row], worst.items()):
        t = [s[0] for s in rnd["samples"]]
        ax.plot(t, [s[1] / 2**20 for s in rnd["samples"]], label="anonymous (rss)")
        ax.plot(t, [s[2] / 2**20 for s in rnd["samples"]], label="rss + page cache", alpha=0.6)
        ax.axhline(maxmemory / 2**20, color="k", linestyle="--", label="maxmemory")
        ax.axvspan(rnd["t_fork"], rnd["t_end"], color="orange", alpha=0.15, label="fork child alive")
        ax.set_title(f"{name}: worst round, peak rss {rnd['peak_rss'] / rnd['used']:.2f} x used_memory", fontsize=9)
        ax.set_xlabel("s")
        ax.set_ylabel("MiB in the cgroup")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--maxmemory-mb", type=int, default=256)
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--scenarios", default="aof,resync")
    ap.add_argument("--writers", default="max,moderate", help="writer profiles: max, moderate")
    ap.add_argument("--sync", choices=["disk", "diskless"],
                    help="override the base file's full-sync mode (default: as conf/ says)")
    ap.add_argument("--png", type=Path)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (a cgroup of its own)")
    rng = random.Random(a.seed)
    maxmemory = a.maxmemory_mb * 2**20
    tmp = Path(tempfile.mkdtemp(prefix="redisha-bench-maxmem-"))
    cg = Cgroup()
    master = None
    results: list[dict] = []
    try:
        master = start_redis(master_conf(tmp, maxmemory, a.sync), cg)
        r = redis.Redis(port=MASTER_PORT, socket_timeout=30)
        wait_for("the master", r.ping, 20)
        t0 = time.monotonic()
        nkeys = fill(r, maxmemory)
        wait_for("the initial AOF", lambda: not r.info("persistence")["aof_rewrite_in_progress"], 120)
        mem = r.info("memory")
        print(f"filled {nkeys} keys in {time.monotonic() - t0:.1f} s: used_memory "
              f"{mib(mem['used_memory'])} MiB, rss {mib(mem['used_memory_rss'])} MiB, "
              f"maxmemory {a.maxmemory_mb} MiB", file=sys.stderr)
        combos = [(sc, w) for w in a.writers.split(",") for sc in a.scenarios.split(",")]
        for i in range(a.rounds):
            for sc, w in combos:
                nkeys = trim(r, maxmemory, nkeys)
                settle(cg)
                res = round_aof(r, cg, nkeys, rng, w) if sc == "aof" else \
                    round_resync(r, cg, nkeys, rng, tmp, i, w)
                res["round"] = i + 1
                res["scenario"] = f"{sc}, {w} writer"
                results.append(res)
                print(f"round {i + 1} {res['scenario']}: base rss {mib(res['base_rss'])} MiB, used_memory {mib(res['used'])} MiB, peak rss {mib(res['peak_rss'])} MiB "
                      f"({res['peak_rss'] / res['used']:.2f}x used_memory), rss+cache {mib(res['peak_total'])} MiB, "
                      f"max_usage {mib(res['max_usage'])} MiB, fork {res['fork_s']:.2f} s, "
                      f"{res['writes']} commands, {res['write_errors']} refused", file=sys.stderr)
    finally:
        if master is not None:
            master.send_signal(signal.SIGKILL)
            master.wait(10)
        cg.remove()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nmaxmemory {a.maxmemory_mb} MiB, 1 KiB values, {a.rounds} rounds per scenario, seed {a.seed}\n")
    scenario_names = []
    for x in results:
        if x["scenario"] not in scenario_names:
            scenario_names.append(x["scenario"])
    print("| scenario | used_memory at the fork MiB | anonymous before the fork MiB, median | peak anonymous (rss) MiB, worst / median | × used_memory, worst | peak rss + page cache MiB, worst | max_usage_in_bytes MiB, worst | fork child alive s, worst | commands during the round, median (refused, worst) | replica output buffer MiB, worst |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    worst: dict[str, dict] = {}
    for sc in scenario_names:
        rs = [x for x in results if x["scenario"] == sc]
        if not rs:
            continue
        w = max(rs, key=lambda x: x["peak_rss"] / x["used"])
        worst[sc] = w
        med = sorted(x["peak_rss"] for x in rs)[len(rs) // 2]
        used = sorted(x["used"] for x in rs)[len(rs) // 2]
        writes = sorted(x["writes"] for x in rs)[len(rs) // 2]
        buf = max((x.get("peak_replica_buffer", 0) for x in rs), default=0)
        base = sorted(x["base_rss"] for x in rs)[len(rs) // 2]
        print(f"| {sc} | {mib(used)} | {mib(base)} | {mib(w['peak_rss'])} / {mib(med)} | {w['peak_rss'] / w['used']:.2f} | "
              f"{mib(max(x['peak_total'] for x in rs))} | {mib(max(x['max_usage'] for x in rs))} | "
              f"{max(x['fork_s'] for x in rs):.2f} | {writes} ({max(x['write_errors'] for x in rs)}) | "
              f"{mib(buf) if sc.startswith('resync') else '—'} |")
        assert all(x["ok"] for x in rs), f"{sc}: a rewrite failed"
    # A dataset at maxmemory itself needs the same ratio: the limit must hold ratio x maxmemory.
    ratio = max(w["peak_rss"] / w["used"] for w in worst.values())
    print(f"\nworst anonymous peak: {ratio:.2f} x used_memory -> maxmemory <= {100 / ratio:.0f} % of the limit without margin")
    if a.png:
        plot(a.png, worst, maxmemory)
        print(f"timeline of the worst rounds: {a.png}")
    if a.json:
        a.json.write_text(json.dumps([{k: v for k, v in x.items() if k != "samples"} for x in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
