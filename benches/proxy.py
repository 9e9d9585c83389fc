#!/usr/bin/env python3
"""Issue 32: the master proxy's cost, through it vs straight to the master, in one run.

Starts a redis-server, a sentinel monitoring it and `redisha-init proxy` (the release binary,
which PID 1 runs as its third child in a pod) on loopback; then, for SET and GET, 1 and 50
clients, pipelining 1 and 16, runs redis-benchmark against the master and against the proxy,
alternating (direct, proxy, direct, proxy, ...) for --rounds rounds so that drift of a shared
machine hits both alike; reports the median ops/s and p99 of each. Then the proxy's RSS with
--idle idle client connections open (each also holds one connection to the master).

Usage: benches/proxy.py [--bin target/release/redisha-init] [--rounds 3] [--requests 100000]
       [--idle 1000] [--out benches/proxy-results.json] [--png benches/img/proxy.png]
Everything it starts is killed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REDIS, SENTINEL, PROXY = 17379, 27379, 17380


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answers PING on port {port}")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """utime + stime of a running process, in seconds."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def bench(port: int, test: str, clients: int, pipeline: int, requests: int,
          pids: dict[str, int]) -> dict:
    """One redis-benchmark run; besides its numbers, the CPU each process spent per request
    (the benchmark client from this process's reaped children)."""
    before = {k: cpu_s(p) for k, p in pids.items()}
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(["redis-benchmark", "-p", str(port), "-t", test, "-c", str(clients),
                        "-P", str(pipeline), "-n", str(requests), "-r", "100000", "-d", "64",
                        "--csv"], capture_output=True, text=True, timeout=600, check=True)
    ru2 = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = {k: cpu_s(p) - before[k] for k, p in pids.items()}
    used["client"] = (ru2.ru_utime + ru2.ru_stime) - (ru.ru_utime + ru.ru_stime)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    row = rows[0]
    out = {"rps": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
           "p99_ms": float(row["p99_latency_ms"])}
    for k, v in used.items():
        out[f"us_per_op_{k}"] = v * 1e6 / requests
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target/release/redisha-init"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--idle", type=int, default=1000)
    ap.add_argument("--out", default=str(ROOT / "benches/proxy-results.json"))
    ap.add_argument("--png", default=str(ROOT / "benches/img/proxy.png"))
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pxbench-"))
    (tmp / "s.conf").write_text(f"port {SENTINEL}\nsentinel monitor mymaster 127.0.0.1 {REDIS} 1\n")
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(REDIS), "--save", "", "--appendonly", "no",
             "--maxclients", "20000", "--dir", str(tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(["redis-server", str(tmp / "s.conf"), "--sentinel"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_port(REDIS)
        wait_port(SENTINEL)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "REDISHA_ROLE": "master",
               "MASTER_ANNOUNCE_PORT": str(REDIS), "SENTINEL_ANNOUNCE_PORT": str(SENTINEL),
               "REDISHA_SENTINELS": f"127.0.0.1:{SENTINEL}", "REDISHA_STATE_DIR": str(tmp / "st"),
               "REDISHA_MASTER_PROXY_PORT": str(PROXY)}
        proxy = subprocess.Popen([a.bin, "proxy"], env=env, stdout=subprocess.DEVNULL,
                                 stderr=open(tmp / "proxy.log", "wb"))
        procs.append(proxy)
        wait_port(PROXY)
        pids = {"redis": procs[0].pid, "proxy": proxy.pid}
        results = []
        for test in ("set", "get"):
            for clients in (1, 50):
                for pipeline in (1, 16):
                    runs = {"direct": [], "proxy": []}
                    for _ in range(a.rounds):
                        for kind, port in (("direct", REDIS), ("proxy", PROXY)):
                            runs[kind].append(bench(port, test, clients, pipeline, a.requests,
                                                    pids))
                    row = {"test": test.upper(), "clients": clients, "pipeline": pipeline}
                    for kind, rs in runs.items():
                        row[kind] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                    row["ratio"] = row["proxy"]["rps"] / row["direct"]["rps"]
                    row["p99_added_ms"] = row["proxy"]["p99_ms"] - row["direct"]["p99_ms"]
                    results.append(row)
                    print(f"{row['test']:4} c={clients:<3} P={pipeline:<3} "
                          f"direct {row['direct']['rps']:>10.0f} ops/s p99 {row['direct']['p99_ms']:.3f} ms | "
                          f"proxy {row['proxy']['rps']:>10.0f} ops/s p99 {row['proxy']['p99_ms']:.3f} ms | "
                          f"{row['ratio'] * 100:.1f} %  p99 +{row['p99_added_ms']:.3f} ms | "
                          f"CPU us/op direct: client {row['direct']['us_per_op_client']:.2f} "
                          f"redis {row['direct']['us_per_op_redis']:.2f}; proxied: client "
                          f"{row['proxy']['us_per_op_client']:.2f} redis "
                          f"{row['proxy']['us_per_op_redis']:.2f} proxy "
                          f"{row['proxy']['us_per_op_proxy']:.2f}", flush=True)
        rss_before = rss_kib(proxy.pid)
        socks = []
        for _ in range(a.idle):
            s = socket.create_connection(("127.0.0.1", PROXY), timeout=5)
            socks.append(s)
        # Every connection is through: one round trip on the last ones shows the master answers.
        for s in socks[-10:]:
            s.sendall(b"PING\r\n")
            assert s.recv(16).startswith(b"+PONG")
        time.sleep(0.5)
        rss_idle = rss_kib(proxy.pid)
        for s in socks:
            s.close()
        print(f"proxy RSS: {rss_before} KiB after the runs, {rss_idle} KiB with {a.idle} idle "
              f"connections ({(rss_idle - rss_before) * 1024 / a.idle:.0f} B per connection)")
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
        out = {"commit": commit, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
               "cpus": os.cpu_count(), "rounds": a.rounds, "requests": a.requests,
               "results": results, "rss_kib": {"after_runs": rss_before, "idle": rss_idle,
                                               "idle_connections": a.idle}}
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
        plot(results, a.png, commit)
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait(timeout=10)
    return 0


def plot(results: list[dict], png: str, commit: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    labels = [f"{r['test']}\nc={r['clients']} P={r['pipeline']}" for r in results]
    x = range(len(results))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7))
    w = 0.4
    ax1.bar([i - w / 2 for i in x], [r["direct"]["rps"] for r in results], w, label="direct")
    ax1.bar([i + w / 2 for i in x], [r["proxy"]["rps"] for r in results], w, label="through the proxy")
    ax1.set_ylabel("ops/s (median)")
    ax1.set_xticks(list(x), labels, fontsize=8)
    ax1.legend()
    ax1.set_title(f"redis-benchmark, direct vs redisha-init proxy ({commit})")
    ax2.bar([i - w / 2 for i in x], [r["direct"]["p99_ms"] for r in results], w, label="direct")
    ax2.bar([i + w / 2 for i in x], [r["proxy"]["p99_ms"] for r in results], w, label="through the proxy")
    ax2.set_ylabel("p99 latency, ms")
    ax2.set_xticks(list(x), labels, fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    print(f"plot: {png}")


if __name__ == "__main__":
    sys.exit(main())
