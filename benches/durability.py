#!/usr/bin/env python3
"""Durability without a 5x write cost, measured.

1. Write speed (`--speed`): redis-benchmark SET at 1 and 50 clients, side by side in one run,
   against (a) a plain redis-server master with AOF `appendfsync everysec` and a plain replica,
   (b) the same with `appendfsync always`, (c) a redisha-init master with its pod defaults
   (REDISHA_DURABILITY=replicated: everysec) and a redisha-init replica, (d) the same pair with
   REDISHA_DURABILITY=strict. All on loopback, one variant at a time, rounds interleaved; the
   median of the rounds is reported.
2. Crash safety (`--crash N`): the three-pod topology of tests/ha (network + PID namespaces), a
   Sentinel-aware writer (~100 RPUSH/s); N rounds of SIGKILL of the master's redis-server
   process only (pod and sentinel stay): acknowledged writes lost, the master's replication lag
   at the kill (bytes the best replica had not processed), write gap, whether a failover
   happened, and the most nodes answering role:master at one sample.

    .venv/bin/python benches/durability.py --speed --crash 20 [--mode replicated|strict]

Needs root (crash part), redis-server/redis-benchmark, the release binary (REDISHA_BIN or
target/release/redisha-init). Prints Markdown tables for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = os.environ.get("REDISHA_BIN", str(ROOT / "target" / "release" / "redisha-init"))


def wait_ping(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True)
        if r.stdout.strip() == "PONG":
            return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} does not answer")


def wait_link(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(["redis-cli", "-p", str(port), "info", "replication"],
                           capture_output=True, text=True)
        if "master_link_status:up" in r.stdout:
            return
        time.sleep(0.1)
    raise RuntimeError(f"replica on {port} never linked")


class Pair:
    """A master on 7379 and a replica on 7380 (their sentinels, for redisha-init, on 27379/27380)."""

    def __init__(self, kind: str, tmp: Path):
        self.kind, self.tmp, self.procs = kind, tmp, []

    def start(self) -> None:
        if self.kind.startswith("plain"):
            fsync = "always" if self.kind.endswith("always") else "everysec"
            for port, extra in ((7379, ""), (7380, "replicaof 127.0.0.1 7379\n")):
                d = self.tmp / f"plain{port}"
                d.mkdir(parents=True, exist_ok=True)
                conf = d / "redis.conf"
                conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {d}\nappendonly yes\n"
                                f"appendfsync {fsync}\nsave \"\"\n{extra}")
                self.procs.append(subprocess.Popen(["redis-server", str(conf)],
                                                   stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL))
        else:
            mode = "strict" if self.kind.endswith("strict") else "replicated"
            for role, port, sport in (("master", 7379, 27379), ("replica", 7380, 27380)):
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "MY_POD_IP": "127.0.0.1",
                    "ALLOW_EMPTY_PASSWORD": "yes",
                    "MASTER_ANNOUNCE_PORT": str(port),
                    "SENTINEL_ANNOUNCE_PORT": str(sport),
                    "REDIS_MASTER_SERVICE_HOST": "127.0.0.1",
                    "REDIS_MASTER_SERVICE_PORT": "7379",
                    "REDISHA_SENTINELS": "127.0.0.1:27379,127.0.0.1:27380",
                    "REDISHA_STATE_DIR": str(self.tmp / f"ours{port}"),
                    "REDISHA_DURABILITY": mode,
                    "REDISHA_LOG_FORMAT": "raw",
                }
                self.procs.append(subprocess.Popen([BIN, "--role", role], env=env,
                                                   stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL))
                wait_ping(port)
        wait_ping(7379)
        wait_link(7380)

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs = []


def bench_set(clients: int, n: int) -> float:
    out = ""
    for _ in range(3):  # bounded: a refused connection right after a start is retried
        p = subprocess.run(["redis-benchmark", "-p", "7379", "-t", "set", "-n", str(n), "-c",
                            str(clients), "-q", "-r", "100000"],
                           capture_output=True, text=True, timeout=300)
        out = p.stdout + p.stderr
        m = re.findall(r"SET: ([0-9.]+) requests per second", out)
        if m:
            return float(m[-1])
        time.sleep(1)
    raise RuntimeError(f"redis-benchmark said: {out!r}")


def speed(rounds: int) -> None:
    kinds = ["plain-everysec", "ours-replicated", "plain-always", "ours-strict"]
    res: dict[tuple[str, int], list[float]] = {}
    for r in range(rounds):
        for k in kinds:
            tmp = Path(tempfile.mkdtemp(prefix="rhdur-"))
            pair = Pair(k, tmp)
            try:
                pair.start()
                for c, n in ((1, 20000), (50, 200000)):
                    v = bench_set(c, n)
                    res.setdefault((k, c), []).append(v)
                    print(f"round {r} {k} clients={c}: {v:.0f} SET/s", flush=True)
            finally:
                pair.stop()
                shutil.rmtree(tmp, ignore_errors=True)
    med = {key: statistics.median(v) for key, v in res.items()}
    # The machine is shared: absolute rates swing 2x between rounds. Variants of one round ran
    # back to back, so the median of the per-round ratios is the comparison to read.
    def ratio(k: str, c: int) -> float:
        return statistics.median(a / b for a, b in zip(res[(k, c)], res[("plain-everysec", c)]))
    print("\n| variant | SET/s, 1 client (median) | vs plain everysec (median of per-round ratios) "
          "| SET/s, 50 clients (median) | vs plain everysec (median of per-round ratios) |")
    print("|---|---|---|---|---|")
    names = {"plain-everysec": "plain redis-server, `appendfsync everysec`",
             "ours-replicated": "**redisha-init default** (`REDISHA_DURABILITY=replicated`: everysec)",
             "plain-always": "plain redis-server, `appendfsync always`",
             "ours-strict": "redisha-init `REDISHA_DURABILITY=strict` (always)"}
    for k in kinds:
        print(f"| {names[k]} | {med[(k, 1)]:.0f} | {ratio(k, 1):.0%} | {med[(k, 50)]:.0f} | "
              f"{ratio(k, 50):.0%} |")


def crash(rounds: int, mode: str) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "ha"))
    from harness import Cluster, RoleSampler, Writer, wait_until
    c = Cluster(BIN, Path(tempfile.mkdtemp(prefix="rhat-")))
    c.timings["REDISHA_DURABILITY"] = mode
    # A redis is killed every ~12 s, each pod's every ~40 s: far more often than the restart
    # budget (5 crashes without 60 s of stable running) allows before a pod gives up on purpose.
    c.timings["REDISHA_RESTART_BUDGET"] = "100"
    rows = []
    try:
        c.setup()
        c.start_pods([0, 1, 2])
        for r in range(rounds):
            m0 = c.master_pod()
            key = f"crash:{r}"
            s = RoleSampler(c, 0.1)
            w = Writer(c, key)
            s.start()
            w.start()
            try:
                time.sleep(2 + (r % 5) * 0.37)
                pid = m0.child_pid("redis")
                info = c.info_replication(m0.ip)
                off = int(info.get("master_repl_offset", 0))
                best = max((int(v.get("offset", 0)) for k, v in info.items()
                            if re.fullmatch(r"slave\d+", k) and isinstance(v, dict)), default=0)
                os.kill(pid, signal.SIGKILL)

                def restarted() -> bool:
                    # The restart backs off (0.5, 1, 2, 4 s ...) when the same pod's redis is
                    # killed again within a minute; child_pid itself gives up after 10 s.
                    try:
                        return m0.child_pid("redis") != pid
                    except AssertionError:
                        return False
                wait_until(restarted, 60, 0.2, "redis restarted")
                m, _, _ = c.settle(60, "after the kill")
                time.sleep(1)
            finally:
                s.finish()
                res = w.finish()
            lost = w.count_lost(res, m)
            rows.append((r, res.max_gap, len(lost), off - best, m != m0.ip, s.max_masters()))
            print(f"round {r}: gap={res.max_gap:.2f}s lost={len(lost)} lag_at_kill={off - best}B "
                  f"failover={m != m0.ip} max_masters={s.max_masters()}", flush=True)
    finally:
        c.teardown()
    gaps = [x[1] for x in rows]
    print(f"\n| mode | rounds | write gap s (median / max) | acked writes lost (total; rounds with loss) "
          f"| failovers | most masters at one sample |")
    print("|---|---|---|---|---|---|")
    lost_rounds = [f"{x[2]} (lag {x[3]} B)" for x in rows if x[2]]
    print(f"| {mode} | {len(rows)} | {statistics.median(gaps):.2f} / {max(gaps):.2f} | "
          f"{sum(x[2] for x in rows)}; {', '.join(lost_rounds) or 'none'} | "
          f"{sum(1 for x in rows if x[4])}/{len(rows)} | {max(x[5] for x in rows)} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--speed-rounds", type=int, default=3)
    ap.add_argument("--crash", type=int, default=0)
    ap.add_argument("--mode", default="replicated", choices=["replicated", "strict"])
    a = ap.parse_args()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}, binary {BIN}")
    if a.speed:
        speed(a.speed_rounds)
    if a.crash:
        crash(a.crash, a.mode)


if __name__ == "__main__":
    main()
