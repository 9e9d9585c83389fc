#!/usr/bin/env python3
"""Rolling update of k8s/production's one StatefulSet, played N times (default 5) on the compose
cluster of docker/compose.yml with the binary's default timings (down-after 5000), as
tests/docker/test_docker_4_rollout.py does once (the controller's order: ordinal 2, 1, 0; stop,
recreate from the other image, readiness probe, minReadySeconds, next). Each round flips the
image (the built one <-> a relabelled copy) and starts every step after a seeded random pause of
0-3 s, so stops land at different moments of the sentinels' periods.

Per pod restart: `docker stop` time and exit code, start -> readiness probe passing, and
start -> "relearned" (every sentinel, its own included, lists the pod's sentinel as a peer and
its data node as a linked replica, each heard from since the restart: the time minReadySeconds
must cover). Per rollout: the longest write gap of a Sentinel-aware writer (~100 writes/s),
acknowledged writes missing afterwards, and ROLE samples every 100 ms of all three nodes
(samples with two masters accepting writes or none answering as master; samples where the old,
write-paused master still answered as master beside the new one).

Prints one line per round, then Markdown tables (for BENCHMARKS.md; also written to --out) and
draws --png: acknowledged writes per 100 ms through the worst round, stops marked.

    flock -w 3600 /tmp/redisha-suite.lock .venv/bin/python benches/rollout.py [--rounds 5] [--seed 16]

Needs root and a Docker engine (images are built as tests/docker does; REDISHA_TEST_PREBUILT=<a
static binary> skips the compile). --min-ready: the minReadySeconds to play (default: the value
in k8s/production/redis.yaml).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "docker"))
import docker_helpers as h  # noqa: E402
import rollout  # noqa: E402
import yaml  # noqa: E402
from test_docker_3_cluster import NODES, Cluster, settled  # noqa: E402


def manifest_min_ready() -> int:
    return int(yaml.safe_load((ROOT / "k8s" / "production" / "redis.yaml").read_text())["spec"]["minReadySeconds"])


def wait_steady(c: Cluster) -> str:
    master = h.wait_until(what="the sentinels agreeing on a master", pred=lambda: c.agreed_master(list(NODES)), timeout=60, retry_on=h.ANY_ERROR)
    h.wait_until(what="settled", pred=lambda: settled(c, master, [n for n in NODES if n != master]), timeout=90, retry_on=h.ANY_ERROR)
    for n in NODES:
        h.wait_until(what=f"{n} ready", pred=lambda n=n: rollout.probe_ready(c.ids[n])[0], timeout=60, interval=0.5, retry_on=h.ANY_ERROR)
    return master


def one_round(c: Cluster, rnd: int, tag: str, min_ready: float, rng: random.Random) -> dict:
    master0 = wait_steady(c)
    time.sleep(rng.uniform(0.0, 5.0))
    w = rollout.Writer([(ip, rollout.SENTINEL_PORT) for ip in c.ip.values()], key=f"bench-rollout-{rnd}")
    s = rollout.RoleSampler(c.ip)
    w.start()
    s.start()
    try:
        time.sleep(1.0)
        t_roll = time.monotonic()
        steps = rollout.roll(c, tag, min_ready, rng=rng, writer=w)
        time.sleep(1.0)
    finally:
        s.finish()
        res = w.finish()
        gap, gap_at = res.max_gap, res.gap_at
    master = wait_steady(c)
    lost = w.lost_on(c.ip[master])
    lost_replicas = sum(len(w.lost_on(c.ip[n])) for n in NODES if n != master)
    times = [t - w.t0 for _, t in w.acked]
    return {
        "round": rnd, "steps": steps, "gap": gap, "gap_at": gap_at, "lost": len(lost),
        "lost_replicas": lost_replicas, "acked": len(w.acked), "errors": dict(w.errors),
        "samples": len(s.samples), "bad": len(s.bad_samples()), "paused_overlap": s.paused_overlap_samples(),
        "max_masters": max(s.masters_per_sample(), default=0), "master_before": master0,
        "master_after": master, "times": times, "t_roll": t_roll - w.t0, "t0": w.t0,
    }


def draw(path: Path, r: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = r["times"]
    end = max(times) if times else 1.0
    n = int(end / 0.1) + 1
    counts = [0] * n
    for t in times:
        counts[min(n - 1, int(t / 0.1))] += 1
    fig, ax = plt.subplots(figsize=(10, 3.2))
    ax.bar([i * 0.1 for i in range(n)], counts, width=0.1, align="edge", color="#4477aa")
    for st in r["steps"]:
        at = st.t_stop - r["t0"]
        ax.axvline(at, color="#cc3311", lw=1)
        ax.text(at, max(counts or [1]) * 1.02, f"stop {st.node}", fontsize=7, color="#cc3311")
    ax.set_xlabel("seconds since the writer started")
    ax.set_ylabel("acked writes / 100 ms")
    ax.set_title(f"Rolling update, round {r['round']} (worst gap {r['gap']:.2f} s): writes never stop for long")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--min-ready", type=float, default=None)
    ap.add_argument("--out", default="/tmp/redisha-bench-rollout.md")
    ap.add_argument("--png", default=str(ROOT / "benches" / "img" / "rollout.png"))
    a = ap.parse_args()
    min_ready = manifest_min_ready() if a.min_ready is None else a.min_ready
    rng = random.Random(a.seed)
    images = h.build_images()
    new_tag = rollout.new_images(images)
    c = Cluster(f"redishabench{os.getpid()}", h.free_subnet_prefix(), images)
    c.env["REDISHA_DOWN_AFTER_MS"] = "5000"
    c.env["REDISHA_FAILOVER_TIMEOUT_MS"] = "10000"
    c.down()
    results = []
    try:
        c.up()
        for rnd in range(1, a.rounds + 1):
            tag = new_tag if rnd % 2 else h.TAG
            r = one_round(c, rnd, tag, min_ready, rng)
            results.append(r)
            print(f"round {rnd}: gap={r['gap']:.2f}s lost={r['lost']}+{r['lost_replicas']} acked={r['acked']} "
                  f"bad_samples={r['bad']}/{r['samples']} paused_overlap={r['paused_overlap']} "
                  f"master {r['master_before']}->{r['master_after']} steps="
                  + ", ".join(f"{st.node}: stop {st.stop_s:.2f}s exit {st.exit_code} ready {st.ready_s:.2f}s "
                              f"relearned {st.relearned_s:.2f}s gap {st.gap_s:.2f}s" for st in r["steps"]),
                  flush=True)
    except BaseException:
        print(c.logs(), file=sys.stderr)
        raise
    finally:
        c.down()

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    restarts = [st for r in results for st in r["steps"]]
    lines = [
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}, "
        f"{time.strftime('%Y-%m-%d')}; commit {commit}; {a.rounds} rollouts x 3 pods; seed {a.seed}; "
        f"minReadySeconds played: {min_ready:g}",
        "",
        "| round | write gap s (worst) | acked | lost (master + replicas) | ROLE samples | two writable or no master | old paused master beside new | docker stop s (2 / 1 / 0) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        stops = " / ".join(f"{st.stop_s:.2f}" for st in r["steps"])
        lines.append(f"| {r['round']} | {r['gap']:.2f} | {r['acked']} | {r['lost']} + {r['lost_replicas']} | "
                     f"{r['samples']} | {r['bad']} | {r['paused_overlap']} | {stops} |")
    lines += [
        "",
        "| per pod restart (n = %d) | median s | worst s |" % len(restarts),
        "|---|---|---|",
    ]
    for label, key in (("start -> readiness probe passes", "ready_s"),
                       ("start -> every sentinel lists it again", "relearned_s")):
        vals = [getattr(st, key) for st in restarts]
        lines.append(f"| {label} | {statistics.median(vals):.2f} | {max(vals):.2f} |")
    after = [st.relearned_s - st.ready_s for st in restarts]
    lines.append(f"| readiness -> every sentinel lists it | {statistics.median(after):.2f} | {max(after):.2f} |")
    worst_relearn = max(st.relearned_s for st in restarts)
    lines += ["", f"Worst start -> relearned: {worst_relearn:.2f} s; rounded up: {math.ceil(worst_relearn)} s. "
              f"Worst write gap: {max(r['gap'] for r in results):.2f} s; "
              f"lost: {sum(r['lost'] + r['lost_replicas'] for r in results)}; "
              f"bad samples: {sum(r['bad'] for r in results)}; exit codes: "
              f"{sorted({st.exit_code for st in restarts})}."]
    text = "\n".join(lines)
    print(text)
    Path(a.out).write_text(text + "\n")
    if a.png:
        worst = max(results, key=lambda r: r["gap"])
        draw(Path(a.png), worst)
        print(f"(png: {a.png})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
