#!/usr/bin/env python3
"""Graceful stops racing the cluster's start: N rounds (default 20) of "cold start of three pods
from fresh state, SIGTERM of the master pod at a random offset uniform in 0-15 s after the
cluster first answers" for redisha-init (the harness of tests/ha: network and PID namespaces).

Per round: the write gap around the stop (longest interval without an acknowledged write, from
the last write before the SIGTERM until 1 s after the watch), the requests an application saw
fail from the SIGTERM on (redis-py 8.2's master_for: with its defaults, with its documented one
retry, and with one retry that asks Sentinel again; tests/app/appwriter.py), acknowledged writes
missing from the
new master, +switch-master lines logged by each surviving sentinel after the SIGTERM (1 = one
failover), the pod's exit code and time to exit, and the time from the first answer to
failover-safe (every sentinel knows every replica and peer; measured until it holds or the
SIGTERM comes, whichever is first: "—" when the stop came first).

Prints one line per round, then Markdown tables (for BENCHMARKS.md; also written to --out) and
draws --png: gap per round (with each round's failed requests per retry policy), and
acknowledged writes per 100 ms around the stop of the worst round, its failed requests marked.

    .venv/bin/python benches/race.py [--rounds 20] [--seed N] [--timings defaults|test]
                                     [--engines redis,valkey] [--keep DIR]

--keep: each round's pod logs are copied to DIR/round-N (the cluster's own files go with it).

--engines: the pods' server (redis-server, valkey-server); with two, the rounds alternate
between them (same offsets drawn in the same order) and the summary has a row per engine.

Needs root and `scripts/setup bench` (matplotlib in .venv). The binary: REDISHA_BIN, else
target/release/redisha-init. Timings: `defaults` = the binary's own (down-after 5000,
failover-timeout 10000, grace 8000); `test` = those of tests/ha (down-after 2000).
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
from harness import Cluster, Writer, cold_start, log, stop_gap, stop_master_and_watch  # noqa: E402
from rhtest import finish_apps, start_apps  # noqa: E402

MAX_GAP = 2.0
LOCK_WAIT_S = 900  # another harness run holds the lock: wait for it, bounded


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


ENGINES = {"redis": "redis-server", "valkey": "valkey-server"}
# tests/app/appwriter.py's retry policies, with the marker each one's failures get in the plot
APP_MODES = {"default": "x", "retry1": "+", "rediscover": "o"}


def app_counts(r: dict) -> str:
    return "/".join(str(len(r["app_failed"][m])) for m in APP_MODES)
TIMINGS: dict[str, str] | None = None  # None: the tests' (harness.TIMINGS)
KEEP: Path | None = None  # --keep: where each round's pod logs go


def one_round(binary: str, rnd: int, offset: float, watch: float, engine: str = "redis") -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="rh-race-"))
    cluster = Cluster(binary, tmp)
    cluster.servers.update({i: ENGINES[engine] for i in range(3)})
    if TIMINGS is not None:
        cluster.timings = dict(TIMINGS)
    try:
        setup_waiting(cluster)
        t_fa = cold_start(cluster, 90)
        w = Writer(cluster, f"race:{rnd}")
        w.start()
        # The application as users run it: redis-py's master_for in its own venv, once per
        # retry policy; its failed requests from the SIGTERM on are what an application logs.
        apps = start_apps(cluster.sentinel_addrs, f"race:{rnd}:app", APP_MODES,
                          password=cluster.security.password)
        try:
            left = t_fa + offset - time.monotonic()
            tfs = cluster.time_to_failover_safe(left, t0=t_fa) if left > 0 else None
            time.sleep(max(0.0, t_fa + offset - time.monotonic()))
            out = stop_master_and_watch(cluster, watch=watch)
            time.sleep(1.0)
            t_end = time.monotonic()
        finally:
            res = w.finish()
            app_res = finish_apps(apps)
        app_failed = {m: [f[1] - out.t_stop for f in r.failed_between(out.t_stop, t_end)]
                      for m, r in app_res.items()}
        app_gap = {m: stop_gap(r.acked, out.t_stop, t_end) for m, r in app_res.items()}
        lost = None
        if out.new_master:
            try:
                lost = len(w.count_lost(res, out.new_master))
            except Exception as e:
                log(f"round {rnd}: cannot read back from {out.new_master}: {e}")
        return {
            "round": rnd, "engine": engine, "offset": offset, "gap": stop_gap(res.acked, out.t_stop, t_end),
            "lost": lost, "switch": out.switch_master, "tfs": tfs, "exit": out.exit_code,
            "exit_s": out.exit_s, "named_s": out.named_s,
            # acknowledged writes relative to the SIGTERM, for the timeline
            "acks": [t - out.t_stop for _, t in res.acked], "t_end": t_end - out.t_stop,
            "errors": res.errors,
            # per retry policy: when each failed request failed, s from the SIGTERM
            "app_failed": app_failed,
            # the application's own write gap: a write held in the pause counts in full
            "app_gap": app_gap,
        }
    finally:
        cluster.teardown()
        if KEEP is not None:
            shutil.copytree(cluster.logdir, KEEP / f"round-{rnd}", dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)


def failovers(r: dict) -> int:
    """One failover if every surviving sentinel logged exactly one +switch-master."""
    vals = list(r["switch"].values())
    return vals[0] if vals and len(set(vals)) == 1 else max(vals, default=0)


def ok(r: dict) -> bool:
    return r["lost"] == 0 and r["gap"] < MAX_GAP and all(v == 1 for v in r["switch"].values())


def fmt_s(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def med_max(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} / {max(xs):.2f}" if xs else "—"


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worst = max(rows, key=lambda r: r["gap"])
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7.5))
    xs = [r["round"] for r in rows]
    colors = ["tab:green" if ok(r) else "tab:red" for r in rows]
    ax1.bar(xs, [r["gap"] for r in rows], color=colors)
    ax1.axhline(MAX_GAP, color="grey", linestyle="--", linewidth=1, label=f"{MAX_GAP:.0f} s")
    for r in rows:
        ax1.annotate(f"{r['offset']:.1f}", (r["round"], r["gap"]), ha="center",
                     va="bottom", fontsize=7)
    for r in rows:
        ax1.annotate(app_counts(r), (r["round"], 0), ha="center", va="bottom", fontsize=7,
                     color="white")
    ax1.set_xlabel("round (above: SIGTERM offset after first answer, s; in the bar: app requests "
                   f"failed, {'/'.join(APP_MODES)};\nred: lost writes, ≠1 failover or gap ≥ 2 s)")
    ax1.set_ylabel("write gap around the stop (s)")
    ax1.set_xticks(xs)
    ax1.legend(loc="upper right")
    ax1.set_title(title)

    lo, hi = -2.0, max(8.0, min(worst["t_end"], 20.0))
    nb = int((hi - lo) / 0.1)
    counts = [0] * nb
    for t in worst["acks"]:
        i = math.floor((t - lo) / 0.1)
        if 0 <= i < nb:
            counts[i] += 1
    ax2.bar([lo + 0.1 * i for i in range(nb)], counts, width=0.1, align="edge",
            color="tab:blue")
    ax2.axvline(0, color="tab:red", label="SIGTERM")
    top = max(counts, default=1) or 1
    for k, (m, marker) in enumerate(APP_MODES.items()):
        ts = worst["app_failed"][m]
        ax2.scatter(ts, [top * (1.05 + 0.07 * k)] * len(ts), marker=marker, color="black",
                    label=f"app request failed ({m}): {len(ts)}")
    if worst["exit_s"] is not None:
        ax2.axvline(worst["exit_s"], color="tab:orange", linestyle="--", label="pod exited")
    if worst["named_s"] is not None:
        ax2.axvline(worst["named_s"], color="tab:green", linestyle=":",
                    label="survivors name the new master")
    ax2.set_xlim(lo, hi)
    ax2.set_xlabel("seconds from SIGTERM")
    ax2.set_ylabel("acknowledged writes / 100 ms")
    ax2.set_title(f"worst round {worst['round']}: offset {worst['offset']:.2f} s, gap "
                  f"{worst['gap']:.2f} s, lost {worst['lost']}, +switch-master "
                  f"{list(worst['switch'].values())}")
    ax2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-offset", type=float, default=15.0)
    ap.add_argument("--timings", choices=["defaults", "test"], default="defaults")
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS-race.md")))
    ap.add_argument("--png", default=str(Path(__file__).with_name("RESULTS-race.png")))
    ap.add_argument("--engines", default="redis", help="comma-separated: redis, valkey")
    ap.add_argument("--keep", default=None, help="copy each round's pod logs to KEEP/round-N")
    a = ap.parse_args()
    engines = a.engines.split(",")
    assert all(e in ENGINES for e in engines), f"--engines: {a.engines}"
    global TIMINGS, KEEP
    KEEP = Path(a.keep) if a.keep else None
    binary = os.environ.get("REDISHA_BIN") or str(ROOT / "target" / "release" / "redisha-init")
    assert Path(binary).exists(), f"build first: {binary}"
    if a.timings == "defaults":
        TIMINGS = {"REDISHA_STOP_GRACE_MS": "8000"}
        down_after = 5.0
    else:
        down_after = harness.DOWN_AFTER
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    print(f"seed={seed} rounds={a.rounds} timings={a.timings} binary={binary}", flush=True)
    rows = []
    for rnd in range(a.rounds):
        offset = rng.uniform(0.0, a.max_offset)
        eng = engines[rnd % len(engines)]
        r = one_round(binary, rnd, offset, watch=down_after + 3, engine=eng)
        print(f"round {rnd} ({eng}): offset={offset:.2f}s gap={r['gap']:.2f}s lost={r['lost']} "
              f"switch_master={r['switch']} failover_safe={fmt_s(r['tfs'])} exit={r['exit']} "
              f"exit_after={r['exit_s']:.2f}s app_failed({'/'.join(APP_MODES)})={app_counts(r)} "
              f"app_gap={'/'.join(format(r['app_gap'][m], '.2f') for m in APP_MODES)}s "
              f"writer_errors={r['errors']}",
              flush=True)
        rows.append(r)

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    head = (f"Machine: {os.cpu_count()} cores, {cpu}, Linux {platform.release()}, "
            f"{time.strftime('%Y-%m-%d')}; {a.rounds} rounds, seed {seed}, timings "
            f"{a.timings} (down-after {down_after:.0f} s), SIGTERM offset uniform in "
            f"0–{a.max_offset:.0f} s after the first answer.\n"
            f"Command (after `scripts/setup bench`; needs root): `.venv/bin/python "
            f"benches/race.py --rounds {a.rounds} --seed {seed} --timings {a.timings}"
            f"{f' --engines {a.engines}' if a.engines != 'redis' else ''}`\n")
    summary = [
        "| engine | write gap s (median / max) | rounds with gap ≥ 2 s | acked writes lost (rounds with loss) "
        "| rounds with ≠ 1 failover | time to failover-safe s (median / max) "
        + "".join(f"| app requests failed, {m} (median / max per round) " for m in APP_MODES)
        + "| app write gap s, rediscover (median / max) |",
        "|---|---|---|---|---|---|" + "---|" * (len(APP_MODES) + 1),
    ]
    for eng in engines:
        er = [r for r in rows if r["engine"] == eng]
        gaps = [r["gap"] for r in er]
        tfss = [r["tfs"] for r in er if r["tfs"] is not None]
        lost_rounds = [r for r in er if r["lost"]]
        no_master = sum(r["lost"] is None for r in er)
        bad_fo = [r for r in er if any(v != 1 for v in r["switch"].values())]
        summary.append(
            f"| {ENGINES[eng]} | {med_max(gaps)} | {sum(g >= MAX_GAP for g in gaps)} / {len(er)} | "
            f"{sum(r['lost'] or 0 for r in er)} ({len(lost_rounds)}"
            f"{f', {no_master} without a new master' if no_master else ''}) | "
            f"{len(bad_fo)} / {len(er)} | {med_max(tfss)} "
            f"({len(er) - len(tfss)} rounds stopped before it) | "
            + "".join(f"{statistics.median([len(r['app_failed'][m]) for r in er]):.0f} / "
                      f"{max(len(r['app_failed'][m]) for r in er)} | " for m in APP_MODES)
            + f"{med_max([r['app_gap']['rediscover'] for r in er])} |")
    per_round = [
        "| round | engine | SIGTERM offset s | gap s | lost | +switch-master per survivor | "
        f"failover-safe s | exit code / s | app failed ({'/'.join(APP_MODES)}) | app gap s (rediscover) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ] + [
        f"| {r['round']} | {r['engine']} | {r['offset']:.2f} | {r['gap']:.2f} | "
        f"{'no new master' if r['lost'] is None else r['lost']} | "
        f"{', '.join(str(v) for v in r['switch'].values())} | "
        f"{fmt_s(r['tfs'])} | "
        f"{r['exit']} / {r['exit_s']:.2f} | {app_counts(r)} | {r['app_gap']['rediscover']:.2f} |"
        for r in rows
    ]
    table = head + "\n" + "\n".join(summary) + "\n\n" + "\n".join(per_round) + "\n"
    print()
    print(table)
    Path(a.out).write_text(table)
    plot(rows, Path(a.png), f"redisha-init: SIGTERM of the master 0–{a.max_offset:.0f} s after "
         f"first answer ({a.rounds} rounds, seed {seed})")
    print(f"wrote {a.out} and {a.png}")


if __name__ == "__main__":
    main()
