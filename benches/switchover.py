#!/usr/bin/env python3
"""`redisha-init switchover` in a loop with a writer running: N rounds (default 10) on the
three-pod harness of tests/ha (network and PID namespaces, a writer through redis-py's Sentinel
client, ~100 RPUSH/s of an increasing counter). Each round waits until `status` says healthy,
then runs the switchover from a random pod (`kubectl exec` style: the pod's namespace and env)
or from the host with `--sentinels` (a laptop), with `--to` a random replica in two rounds of
three and Sentinel's own pick in the third.

Per round: exit code, old -> new master, `--to` honoured, the command's run time, the write gap
(longest interval without an acknowledged write from the last write before the command until 1 s
after it returned), +switch-master lines logged per sentinel since the start (1 each = exactly
one failover), every replica-priority and the leader's Sentinel settings back afterwards. At the
end: acknowledged writes missing from the final master.

Also captures one `status` table and one switchover's output (for README.md).

    .venv/bin/python benches/switchover.py [--rounds 10] [--seed N]

Needs root and `scripts/setup bench` (matplotlib in .venv). The binary: REDISHA_BIN, else
target/release/redisha-init. Timings: those of tests/ha (down-after 2000; a switchover does not
depend on them).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "ha"))
import harness  # noqa: E402
from harness import Cluster, Writer, log  # noqa: E402
from ops import run_cli, switchover_round, wait_status  # noqa: E402

MAX_GAP = 2.0
LOCK_WAIT_S = 900


def setup_waiting(cluster: Cluster) -> None:
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            cluster.setup()
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            log(f"{harness.LOCK_PATH} is held by another run: waiting")
            time.sleep(5)


def plot(rows, acks, path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7.5))
    xs = [r.rnd for r in rows]
    colors = ["tab:green" if not r.problems else "tab:red" for r in rows]
    ax1.bar(xs, [r.gap for r in rows], color=colors)
    ax1.axhline(MAX_GAP, color="grey", linestyle="--", linewidth=1, label=f"{MAX_GAP:.0f} s")
    for r in rows:
        ax1.annotate("--to" if r.wanted else "pick", (r.rnd, r.gap), ha="center",
                     va="bottom", fontsize=7)
    ax1.set_xlabel("round (label: --to a replica, or Sentinel's pick; red: a problem)")
    ax1.set_ylabel("write gap around the switchover (s)")
    ax1.set_xticks(xs)
    ax1.legend(loc="upper right")
    ax1.set_title(title)

    worst = max(rows, key=lambda r: r.gap)
    # Until the end of this round's watch (1 s after the command returned): the next round
    # starts soon after.
    lo, hi = -1.0, worst.took + 1.0
    nb = int((hi - lo) / 0.1)
    counts = [0] * nb
    for t in acks:
        i = math.floor((t - worst.t0 - lo) / 0.1)
        if 0 <= i < nb:
            counts[i] += 1
    ax2.bar([lo + 0.1 * i for i in range(nb)], counts, width=0.1, align="edge", color="tab:blue")
    ax2.axvline(0, color="tab:red", label="switchover started")
    ax2.axvline(worst.took, color="tab:orange", linestyle="--", label="switchover returned")
    ax2.set_xlim(lo, hi)
    ax2.set_xlabel("seconds from the start of the switchover")
    ax2.set_ylabel("acknowledged writes / 100 ms")
    ax2.set_title(f"worst round {worst.rnd}: gap {worst.gap:.2f} s, {worst.old_master} -> "
                  f"{worst.new_master}, +switch-master {list(worst.switch_master.values())}")
    ax2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS-switchover.md")))
    ap.add_argument("--png", default=str(ROOT / "benches" / "img" / "switchover.png"))
    a = ap.parse_args()
    binary = os.environ.get("REDISHA_BIN") or str(ROOT / "target" / "release" / "redisha-init")
    assert Path(binary).exists(), f"build first: {binary}"
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    print(f"seed={seed} rounds={a.rounds} binary={binary}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="rh-switchover-"))
    c = Cluster(binary, tmp)
    rows = []
    samples = {}
    try:
        setup_waiting(c)
        c.start_pods(list(range(harness.NPODS)))
        c.settle(90, "a healthy cluster")
        wait_status(c, c.pods[0], 0, 60)
        samples["status"] = run_cli(c, c.pods[1], "status").out
        w = Writer(c, "bench-switchover")
        w.start()
        try:
            for i in range(a.rounds):
                r = switchover_round(c, w, i + 1, rng, use_to=(i % 3 != 2))
                rows.append(r)
                if "switchover" not in samples and r.wanted and r.code == 0:
                    samples["switchover"] = r.out
        finally:
            res = w.finish()
        final, _, _ = c.settle(60, "after the switchovers")
        lost = w.count_lost(res, final)
        samples["status-after"] = run_cli(c, c.pods[0], "status").out
    finally:
        c.teardown()
        shutil.rmtree(tmp, ignore_errors=True)

    gaps = [r.gap for r in rows]
    tooks = [r.took for r in rows]
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), "?")
    head = (f"Machine: {os.cpu_count()} cores (shared with other jobs), {cpu}, Linux "
            f"{platform.release()}, {time.strftime('%Y-%m-%d')}; {a.rounds} rounds, seed {seed}.\n"
            f"Command (after `scripts/setup bench`; needs root): `.venv/bin/python "
            f"benches/switchover.py --rounds {a.rounds} --seed {seed}`\n")
    ok = [r for r in rows if not r.problems]
    summary = [
        "| moves done | --to honoured | exactly one failover | write gap s (median / max) "
        "| command s (median / max) | acked writes lost |",
        "|---|---|---|---|---|---|",
        f"| {sum(r.code == 0 and r.new_master not in (None, r.old_master) for r in rows)} / "
        f"{len(rows)} | {sum(r.new_master == r.wanted for r in rows if r.wanted)} / "
        f"{sum(1 for r in rows if r.wanted)} | "
        f"{sum(all(v == 1 for v in r.switch_master.values()) for r in rows)} / {len(rows)} | "
        f"{statistics.median(gaps):.2f} / {max(gaps):.2f} | "
        f"{statistics.median(tooks):.2f} / {max(tooks):.2f} | {len(lost)} of {len(res.acked)} |",
    ]
    per_round = [
        "| round | run from | --to | old -> new master | exit | command s | gap s "
        "| +switch-master per sentinel |",
        "|---|---|---|---|---|---|---|---|",
    ] + [
        f"| {r.rnd} | {r.from_pod} | {r.wanted or 'Sentinel picks'} | {r.old_master} -> "
        f"{r.new_master} | {r.code} | {r.took:.2f} | {r.gap:.2f} | "
        f"{', '.join(str(v) for v in r.switch_master.values())} |"
        for r in rows
    ]
    table = head + "\n" + "\n".join(summary) + "\n\n" + "\n".join(per_round) + "\n"
    problems = [f"round {r.rnd}: {p}" for r in rows for p in r.problems]
    if problems:
        table += "\nProblems:\n" + "\n".join(f"- {p}" for p in problems) + "\n"
    for k, v in samples.items():
        table += f"\n`{k}` output:\n\n```\n{v.rstrip()}\n```\n"
    print()
    print(table)
    Path(a.out).write_text(table)
    plot(rows, [t for _, t in res.acked], Path(a.png),
         f"redisha-init switchover with a writer ({a.rounds} rounds, seed {seed})")
    print(f"wrote {a.out} and {a.png}")
    print(f"{len(ok)} of {len(rows)} rounds without a problem")


if __name__ == "__main__":
    main()
