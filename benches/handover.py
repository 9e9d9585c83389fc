#!/usr/bin/env python3
"""Rolling stops of the master pod, measured: the seed's start.sh (under sh as PID 1, and under
tini) against redisha-init without and with the handover; plus SIGKILL of the master pod.

Each round starts a fresh three-pod cluster (network namespaces, PID namespaces; the harness of
tests/ha), waits until it is settled, runs a Sentinel-aware writer (~100 writes/s), stops the
master pod as an orchestrator would (SIGTERM, SIGKILL after the grace period) and measures:
  - the write-unavailability window (longest gap between acknowledged writes),
  - acknowledged writes missing from the new master,
  - the time from SIGTERM to the pod's exit.

    python3 benches/handover.py --rounds 5 [--variants seed-sh,seed-tini,ours-off,ours] [--kill]
    python3 benches/handover.py --rounds 5 --variants ours --kill --engines redis,valkey

--engines: the server of redisha-init's pods (REDISHA_REDIS_SERVER: redis-server, valkey-server);
the rounds of the engines alternate (redis, valkey, redis, ...), so both see the same machine
load. The seed's variants run redis-server only.

Needs root; the binary comes from REDISHA_BIN or target/release/redisha-init. Every variant runs
with its own defaults: the seed with down-after 30000 / failover-timeout 180000 as the blog gives
them, redisha-init with its defaults (5000 / 10000, grace 8000 ms); the orchestrator's grace is
10 s (Docker's default stop timeout).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "ha"))
import harness  # noqa: E402
from harness import Cluster, Writer, client, info_replication, log  # noqa: E402
from rhtest import finish_apps, start_apps  # noqa: E402

ORCHESTRATOR_GRACE = 10.0
SEED_DIR = Path(__file__).resolve().parent / "seed"


def seed_spawn(pod, wrap: list[str]) -> None:
    """Starts the seed's start.sh in the pod, exactly as the blog's images would."""
    state = pod.state_dir
    state.mkdir(parents=True, exist_ok=True)
    role = "master" if pod.idx == 0 else "replica"
    for name in ("redis.conf", "redis-replicator.conf", "sentinel.conf"):
        text = (SEED_DIR / name).read_text().replace("@STATE@", str(state))
        (state / name).write_text(text)
    script = (SEED_DIR / f"start-{role}.sh").read_text().replace("@STATE@", str(state))
    (state / "start.sh").write_text(script)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "MY_POD_IP": pod.ip,
        "MASTER_ANNOUNCE_PORT": "6379",
        "SENTINEL_ANNOUNCE_PORT": "26379",
        "REDIS_MASTER_SERVICE_HOST": "redis-primary",
        "REDIS_MASTER_SERVICE_PORT": "6379",
    }
    pod.generation += 1
    pod.log_path = pod.cluster.logdir / f"{pod.name}.gen{pod.generation}.log"
    with open(pod.log_path, "wb") as logf:
        pod.proc = subprocess.Popen(
            ["ip", "netns", "exec", pod.ns, "unshare", "--pid", "--fork", "--mount-proc",
             *wrap, "sh", str(state / "start.sh")],
            env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True)
    pod.started_at = time.monotonic()


VARIANTS = {
    # name: (description, spawn override or None, extra env for redisha-init)
    "seed-sh": ("seed start.sh, sh as PID 1", lambda p: seed_spawn(p, []), {}),
    "seed-tini": ("seed start.sh under tini", lambda p: seed_spawn(p, ["tini", "--"]), {}),
    "ours-off": ("redisha-init, handover off", None, {"REDISHA_HANDOVER": "no"}),
    "ours": ("redisha-init, handover on", None, {}),
}


def ready(cluster: Cluster) -> bool:
    """One master, both replicas linked and synced, every sentinel knows 2 replicas and 2 peers
    (Sentinel learns replicas from the master's INFO every 10 s: until then it cannot promote)."""
    live = cluster.live()
    roles = {}
    for p in live:
        try:
            roles[p.ip] = info_replication(p.ip, 0.3)
        except Exception:
            return False
    masters = [ip for ip, i in roles.items() if i.get("role") == "master"]
    if len(masters) != 1:
        return False
    for ip, i in roles.items():
        if ip != masters[0] and (i.get("master_link_status") != "up"
                                 or str(i.get("master_sync_in_progress")) != "0"):
            return False
    for p in live:
        try:
            with client(p.ip, harness.SENTINEL_PORT, 0.3) as c:
                m = c.sentinel_master(harness.GROUP)
        except Exception:
            return False
        if m.get("ip") != masters[0] or int(m.get("num-slaves", 0)) != 2 \
                or int(m.get("num-other-sentinels", 0)) != 2:
            return False
    return True


def current_master(cluster: Cluster) -> str | None:
    for p in cluster.live():
        try:
            if info_replication(p.ip, 0.3).get("role") == "master":
                return p.ip
        except Exception:
            pass
    return None


def stop_pod(pod, hard: bool) -> float:
    """SIGTERM (or SIGKILL) to the pod's PID 1; SIGKILL after the orchestrator's grace."""
    pid = pod.init_pid()
    assert pid, f"{pod.name} has no PID 1"
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
    try:
        pod.proc.wait(timeout=ORCHESTRATOR_GRACE)
    except subprocess.TimeoutExpired:
        os.kill(pid, signal.SIGKILL)
        pod.proc.wait(timeout=10)
    took = time.monotonic() - t0
    pod.proc = None
    return took


ENGINES = {"redis": "redis-server", "valkey": "valkey-server"}
# tests/app/appwriter.py's retry policies
APP_MODES = ("default", "retry1", "rediscover")


def one_round(binary: str, variant: str, hard: bool, rnd: int, engine: str = "redis") -> dict:
    desc, spawn, extra = VARIANTS[variant]
    tmp = Path(tempfile.mkdtemp(prefix=f"rh-bench-{variant}-"))
    cluster = Cluster(binary, tmp)
    if spawn is None:
        cluster.servers.update({i: ENGINES[engine] for i in range(3)})
    # The binary's own timing defaults (not the tests' short ones): only the grace and the
    # variant's extra settings.
    cluster.timings = {"REDISHA_STOP_GRACE_MS": "8000", **extra}
    try:
        cluster.setup()
        if spawn is not None:
            for p in cluster.pods:
                p.spawn = (lambda p=p: spawn(p))
        cluster.start_pods([0, 1, 2])
        harness.wait_until(lambda: ready(cluster), 90, 0.5, f"{variant}: cluster settled")
        writer = Writer(cluster, f"bench:{variant}:{rnd}")
        writer.start()
        # The application as users run it: redis-py 8.2's master_for in its own venv, once per
        # retry policy (tests/app/appwriter.py); its failed requests are what an application logs.
        apps = start_apps(cluster.sentinel_addrs, f"bench:{variant}:{rnd}:app", APP_MODES,
                          password=cluster.security.password)
        time.sleep(2.0)
        t_stop = time.monotonic()
        master_ip = current_master(cluster)
        pod = cluster.pod_by_ip(master_ip)
        took = stop_pod(pod, hard)
        pod.delete_network()
        cluster.write_hosts()
        t_exit = time.monotonic()
        # Writes resumed: acknowledged by a node that is not the stopped pod (its exit is behind
        # us: anything acknowledged from now on came from another master), then 1 s more.
        def resumed():
            after = [t for _, t in writer.acked if t > t_exit]
            return bool(after) and time.monotonic() - after[0] > 1.0
        ok = True
        try:
            harness.wait_until(resumed, 120, 0.2, f"{variant}: writes resumed")
        except AssertionError:
            ok = False
        res = writer.finish()
        app_res = finish_apps(apps)
        t_end = time.monotonic()
        app_failed = "/".join(str(len(app_res[m].failed_between(t_stop, t_end))) for m in APP_MODES)
        new_master = current_master(cluster)
        lost = len(writer.count_lost(res, new_master)) if new_master else len(res.acked)
        return {"variant": variant, "hard": hard, "engine": engine,
                "gap": res.max_gap if ok else float("inf"),
                "lost": lost, "stop": took, "acked": len(res.acked), "app_failed": app_failed,
                # the harness's writer retries nothing and counts each failed attempt
                "attempts_failed": sum(res.errors.values())}
    finally:
        cluster.teardown()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def fmt(xs: list[float]) -> str:
    finite = [x for x in xs if x != float("inf")]
    if len(finite) < len(xs):
        return f"{statistics.median(xs):.2f} / never ({len(xs) - len(finite)} runs)"
    return f"{statistics.median(xs):.2f} / {max(xs):.2f}"


def versions(engines: list[str]) -> str:
    """`redis-server 7.0.15, valkey-server 8.0.1`: what the rounds ran."""
    out = []
    for e in engines:
        r = subprocess.run([ENGINES[e], "--version"], capture_output=True, text=True)
        v = next((w[2:] for w in r.stdout.split() if w.startswith("v=")), "?")
        out.append(f"{ENGINES[e]} {v}")
    return ", ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variants", default="seed-sh,seed-tini,ours-off,ours")
    ap.add_argument("--kill", action="store_true", help="also SIGKILL the master pod (seed-sh, ours)")
    ap.add_argument("--engines", default="redis",
                    help="comma-separated: redis, valkey (redisha-init's variants only)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS-handover.md")))
    a = ap.parse_args()
    engines = a.engines.split(",")
    assert all(e in ENGINES for e in engines), f"--engines: {a.engines}"
    binary = os.environ.get("REDISHA_BIN") or str(ROOT / "target" / "release" / "redisha-init")
    assert Path(binary).exists(), f"build first: {binary}"
    plan = [(v, False) for v in a.variants.split(",")]
    if a.kill:  # the SIGKILL rows of the variants asked for (seed-sh, ours)
        plan += [(v, True) for v in ("seed-sh", "ours") if v in a.variants.split(",")]
    rows = []
    for v, hard in plan:
        engs = engines if VARIANTS[v][1] is None else ["redis"]
        runs: dict[str, list] = {e: [] for e in engs}
        for r in range(a.rounds):
            for e in engs:  # alternating: both engines under the same load
                res = one_round(binary, v, hard, r, e)
                log(f"{v} {e} {'SIGKILL' if hard else 'SIGTERM'} round {r}: {res}")
                runs[e].append(res)
        rows += [(v, hard, e, runs[e]) for e in engs]
    lines = [
        "| variant | engine | stop | write gap s (median / max) | acked writes lost (per run) | SIGTERM→exit s (median / max) | "
        f"failed requests of an app, redis-py 8.2 master_for {' / '.join(APP_MODES)} (per run) | failed attempts, no-retry writer (per run) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v, hard, e, runs in rows:
        lines.append(f"| {VARIANTS[v][0]} | {ENGINES[e]} | {'SIGKILL' if hard else 'SIGTERM'} | "
                     f"{fmt([x['gap'] for x in runs])} | {', '.join(str(x['lost']) for x in runs)} | "
                     f"{fmt([x['stop'] for x in runs])} | "
                     f"{', '.join(str(x['app_failed']) for x in runs)} | "
                     f"{', '.join(str(x['attempts_failed']) for x in runs)} |")
    cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), '?')
    head = (f"Machine: {os.cpu_count()} cores, {cpu}, Linux {platform.release()}, "
            f"{time.strftime('%Y-%m-%d')}; {versions(engines)}; {a.rounds} rounds per variant.\n"
            f"Command (after `scripts/setup bench`; needs root): `.venv/bin/python benches/handover.py --rounds {a.rounds} --variants {a.variants}"
            f"{' --kill' if a.kill else ''}{f' --engines {a.engines}' if a.engines != 'redis' else ''}`\n")
    table = head + "\n" + "\n".join(lines) + "\n"
    print(table)
    Path(a.out).write_text(table)


if __name__ == "__main__":
    main()
