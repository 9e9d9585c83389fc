#!/usr/bin/env python3
"""Efficiency of PID 1, side by side in one run: redisha-init vs tini vs dumb-init vs supervisord.

Every init runs as PID 1 of its own PID namespace (`unshare --pid --fork --mount-proc`) and
supervises the same two processes (redis-server <conf> and redis-server <conf> --sentinel, or a
stand-in for a given measurement). tini and dumb-init start both through a small shell wrapper, as
a user would; supervisord gets a minimal config. Measured:

  memory   VmRSS/VmHWM of PID 1 after start-up (real redis + sentinel) and after the log flood
  size     stripped redisha-init (plain `cargo build --release`: static, non-PIE, see .cargo/config.toml)
           vs tini/dumb-init
  startup  exec -> redis answering +PONG, through each init vs redis-server as PID 1 directly
  logs     a child writes --flood-bytes of numbered fixed-size lines; a C consumer on the pipe of
           PID 1's stdout checks every line (prefix, sequence, payload, length): none broken/lost.
           Beside the inits: tagfwd (benches/helpers/tagfwd.c), a minimal C line-tagging forwarder
           as PID 1, the limit a forwarder that tags lines reaches on this machine, same run
  reaping  a child leaves --orphans grandchildren to PID 1 and releases them at once; time until
           PID 1 has no child left but the expected ones (zombies included), none missed
  idle     per-thread utime+stime and (non)voluntary context switches of PID 1 over
           --idle-seconds, sampled from /proc (reading /proc does not wake the process); also
           redisha-init with its Prometheus endpoint on (REDISHA_METRICS_PORT) and not scraped
           (no new periodic work), and scraped once a second (VmRSS at the end of the window)

Teardown: each init is PID 1 of its namespace, so SIGKILL to it makes the kernel kill everything
in the namespace; unshare runs with --kill-child in its own session, and every wait is bounded.
Usage: benches/pid1.py [--quick] [--out FILE] (see --help). Needs root, tini, dumb-init,
supervisor, redis-server, cc.
"""

import argparse
import datetime
import json
import os
import platform
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pylib"))
import rhtest  # noqa: E402 - stdlib only: this script runs under the system python3
from rhtest import children, pid1_under, poll  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
UNSHARE = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PEERS = ["redisha-init", "tini", "dumb-init", "supervisord"]
TAGFWD = "C tagging forwarder"  # flood only: the anchor of the tagged mode
LIVE = []  # every Ns started and not yet torn down


def log(*a):
    rhtest.log(" ".join(str(x) for x in a), tag="bench", err=True)


# ---------------------------------------------------------------------------------------------
# /proc helpers


def status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def kib(pid, key):
    v = status(pid).get(key, "")
    return int(v.split()[0]) if v else None


def tasks(pid):
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def task_sample(pid, tid):
    """(comm, utime+stime ticks, voluntary, nonvoluntary) of one thread, or None."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            stat = f.read()
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        vol = nonvol = 0
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches"):
                    vol = int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    nonvol = int(line.split()[1])
        return comm, ticks, vol, nonvol
    except (OSError, ValueError, IndexError):
        return None


def proc_ticks(pid):
    """utime+stime of the whole process (dead threads included) from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat[stat.rindex(")") + 2 :].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def free_port_pair():
    for _ in range(500):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p > 65000:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", p))
                b.bind(("127.0.0.1", p + 1))
            return p
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def pong(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# one init as PID 1 of its own namespace


class Ns:
    def __init__(self, argv, env, stdout, stderr, name):
        self.name = name
        self.popen = subprocess.Popen(
            UNSHARE + argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        LIVE.append(self)
        self.pid1 = None

    def find_pid1(self, timeout=10):
        """Host pid of the namespace's PID 1: the only child of unshare."""
        pid1 = poll(lambda: pid1_under(self.popen.pid), timeout, 0.0005)
        if not pid1:
            raise RuntimeError(f"{self.name}: PID 1 not found under unshare")
        self.pid1 = pid1
        return self.pid1

    def stop(self):
        if self in LIVE:
            LIVE.remove(self)
        if self.pid1 is None and self.popen.poll() is None:
            self.pid1 = pid1_under(self.popen.pid)
        for pid in [self.pid1] if self.pid1 else []:
            try:
                os.kill(pid, signal.SIGKILL)  # the kernel kills the whole namespace
            except OSError:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log(f"{self.name}: unshare did not exit within 10 s")


def teardown_all():
    for ns in list(LIVE):
        ns.stop()


# ---------------------------------------------------------------------------------------------
# setups: how each init starts "redis" and "sentinel"


class Bench:
    def __init__(self, args):
        self.a = args
        self.tmp = tempfile.mkdtemp(prefix="pid1-bench-")
        self.bin = args.binary
        self.redis = shutil.which("redis-server")
        self.n = 0

    def path(self, *p):
        return os.path.join(self.tmp, *p)

    def fresh(self, what):
        self.n += 1
        d = self.path(f"{what}-{self.n}")
        os.makedirs(d)
        return d

    def env(self, extra=None):
        e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": self.tmp}
        e.update(extra or {})
        return e

    def init_env(self, state, port, exe, extra=None):
        e = self.env(
            {
                "REDISHA_ROLE": "master",
                "REDISHA_STATE_DIR": state,
                "MASTER_ANNOUNCE_PORT": str(port),
                "SENTINEL_ANNOUNCE_PORT": str(port + 1),
                "REDISHA_REDIS_SERVER": exe,
                "REDISHA_LOG_FORMAT": "text",
            }
        )
        e.update(extra or {})
        return e

    def render(self, state, port):
        """The exact files redisha-init would write, for the peers: (redis.conf, sentinel.conf)."""
        out = subprocess.run(
            [self.bin, "render"],
            env=self.init_env(state, port, self.redis),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        files, cur = {}, None
        for line in out.splitlines(keepends=True):
            if line.startswith("# ==> ") and line.rstrip().endswith(" <=="):
                cur = line[len("# ==> ") : -len(" <==\n")].strip()
                files[cur] = ""
            elif cur is not None:
                files[cur] += line
        for p, text in files.items():
            os.makedirs(os.path.dirname(p), mode=0o700, exist_ok=True)
            with open(p, "w") as f:
                f.write(text)
        rc = [p for p in files if p.endswith("redis.conf")][0]
        sc = [p for p in files if p.endswith("sentinel.conf")][0]
        return rc, sc

    def script(self, d, name, body):
        p = os.path.join(d, name)
        with open(p, "w") as f:
            f.write("#!/bin/sh\n" + body + "\n")
        os.chmod(p, 0o755)
        return p

    def argv(self, peer, d, exe, rc, sc):
        """Command line of `peer` as PID 1 supervising `exe rc` and `exe sc --sentinel`."""
        if peer == "redisha-init":
            return [self.bin]
        if peer == TAGFWD:
            return [os.path.join(self.helpers, "tagfwd"), "redis", f'"{exe}" "{rc}"', "sentinel", f'"{exe}" "{sc}" --sentinel']
        wrapper = self.script(
            d,
            "start.sh",
            f'"{exe}" "{rc}" &\n"{exe}" "{sc}" --sentinel &\nwait\n',
        )
        if peer == "tini":
            return ["tini", "--", "/bin/sh", wrapper]
        if peer == "dumb-init":
            return ["dumb-init", "--", "/bin/sh", wrapper]
        if peer == "supervisord":
            conf = os.path.join(d, "supervisord.conf")
            prog = (
                "[program:{name}]\ncommand={cmd}\nautorestart=unexpected\nstartsecs=0\n"
                "redirect_stderr=true\nstdout_logfile=/dev/stdout\nstdout_logfile_maxbytes=0\n"
            )
            with open(conf, "w") as f:
                f.write(
                    f"[supervisord]\nnodaemon=true\nuser=root\nlogfile=/dev/null\n"
                    f"logfile_maxbytes=0\npidfile={d}/supervisord.pid\n\n"
                    + prog.format(name="redis", cmd=f"{exe} {rc}")
                    + prog.format(name="sentinel", cmd=f"{exe} {sc} --sentinel")
                )
            return ["supervisord", "-n", "-c", conf]
        if peer == "direct":
            return [exe, rc]
        raise ValueError(peer)

    def start(self, peer, d, port, exe, stdout, stderr, extra_env=None, rendered=None):
        state = os.path.join(d, "state")
        if peer == "redisha-init":
            rc = sc = None
            env = self.init_env(state, port, exe, extra_env)
        else:
            rc, sc = rendered or self.render(state, port)
            env = self.env(extra_env)
        return Ns(self.argv(peer, d, exe, rc, sc), env, stdout, stderr, peer)

    # -----------------------------------------------------------------------------------------

    def build(self):
        helpers = self.path("bin")
        os.makedirs(helpers)
        for h in ["loggen", "logcheck", "orphans", "tagfwd"]:
            subprocess.run(
                ["cc", "-O2", "-o", os.path.join(helpers, h), os.path.join(HERE, "helpers", h + ".c")],
                check=True,
                timeout=120,
            )
        self.helpers = helpers
        sizes = {}
        if not self.a.binary:
            # The README's build, nothing added (.cargo/config.toml makes it static); its own target
            # directory so the repository's target/release is left alone.
            target = os.environ.get("CARGO_TARGET_DIR_BENCH", "/tmp/target-bench")
            log(f"building redisha-init (cargo build --release) into {target} (cached after the first run)")
            env = {k: v for k, v in os.environ.items() if k not in ("RUSTFLAGS", "CARGO_BUILD_TARGET")}
            env["CARGO_TARGET_DIR"] = target
            subprocess.run(["cargo", "build", "--release"], cwd=REPO, env=env, check=True, timeout=1800)
            self.bin = os.path.join(target, "release", "redisha-init")
        os.makedirs(self.path("stripped"))
        stripped = self.path("stripped", "redisha-init")
        shutil.copy(self.bin, stripped)
        subprocess.run(["strip", stripped], check=True, timeout=60)
        self.bin = stripped  # the benchmark runs the stripped copy
        kind = subprocess.run(["file", "-b", stripped], capture_output=True, text=True).stdout
        sizes["redisha-init"] = (
            os.path.getsize(stripped),
            "static-pie" if "static-pie" in kind else ("static" if "statically" in kind else "dynamic"),
        )
        for peer, paths in [("tini", ["/usr/bin/tini", "/usr/bin/tini-static"]), ("dumb-init", ["/usr/bin/dumb-init"])]:
            for p in paths:
                if os.path.exists(p):
                    k = subprocess.run(["file", "-b", p], capture_output=True, text=True).stdout
                    sizes[peer + ("-static" if "static" in p else "")] = (
                        os.path.getsize(p),
                        "static" if "statically" in k or "static-pie" in k else "dynamic",
                    )
        return sizes

    # -----------------------------------------------------------------------------------------

    def startup(self):
        """exec -> +PONG from redis, each variant in turn (interleaved), N rounds."""
        variants = ["direct"] + PEERS
        res = {v: [] for v in variants}
        for r in range(self.a.startup_reps):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for v in order:
                d = self.fresh(f"start-{v}")
                port = free_port_pair()
                rendered = None if v == "redisha-init" else self.render(os.path.join(d, "state"), port)
                with open(os.path.join(d, "out"), "wb") as out:
                    t0 = time.monotonic()
                    ns = self.start(v, d, port, self.redis, out, subprocess.STDOUT, rendered=rendered)
                    try:
                        ok = poll(lambda: pong(port), 10, 0.0005)
                        t1 = time.monotonic()
                    finally:
                        ns.stop()
                if not ok:
                    raise RuntimeError(f"startup {v}: no PONG within 10 s (see {d}/out)")
                res[v].append((t1 - t0) * 1000)
        return res

    # -----------------------------------------------------------------------------------------

    def flood_one(self, peer, binary=None):
        a = self.a
        d = self.fresh(f"flood-{peer.replace(' ', '_')}")
        nlines = a.flood_bytes // a.line_bytes
        exe = self.script(
            d,
            "child.sh",
            f'if [ "$2" = "--sentinel" ] || [ -e "{d}/flooded" ]; then exec sleep 100000; fi\n'
            f': > "{d}/flooded"\nexec "{self.helpers}/loggen" {a.flood_bytes} {a.line_bytes}',
        )
        raw = peer == "redisha-init [raw]"
        prefix = "[redis] " if (peer.startswith("redisha-init") and not raw) or peer == TAGFWD else ""
        rfd, wfd = os.pipe()
        checker = subprocess.Popen(
            [os.path.join(self.helpers, "logcheck"), prefix, str(nlines), str(a.line_bytes)],
            stdin=rfd,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        os.close(rfd)
        port = free_port_pair()
        err = open(os.path.join(d, "stderr"), "wb")
        ns = None
        try:
            if raw:  # REDISHA_LOG_FORMAT=raw: children write to PID 1's stdout directly
                ns = self.start("redisha-init", d, port, exe, wfd, err, extra_env={"REDISHA_LOG_FORMAT": "raw"})
            elif binary:  # another build of redisha-init, compared in the same run
                saved, self.bin = self.bin, binary
                try:
                    ns = self.start("redisha-init", d, port, exe, wfd, err)
                finally:
                    self.bin = saved
            else:
                ns = self.start(peer, d, port, exe, wfd, err, rendered=None if peer == "redisha-init" else self.render(os.path.join(d, "state"), port))
            os.close(wfd)
            wfd = None
            ns.find_pid1()
            bound = 60 + a.flood_bytes / (5 << 20)  # >= 5 MiB/s or it counts as a failure
            ready, _, _ = select.select([checker.stdout], [], [], bound)
            done = checker.stdout.readline() if ready else ""
            mem = mem_of(ns.pid1)
        finally:
            if wfd is not None:
                os.close(wfd)
            if ns:
                ns.stop()
            err.close()
        try:
            final, _ = checker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(checker.pid, signal.SIGKILL)
            final, _ = checker.communicate(timeout=10)
        stats = parse_kv(final.strip().splitlines()[-1]) if final.strip() else {}
        first = parse_kv(done) if done else {}
        secs = first.get("t_last", 0) - first.get("t_first", 0)
        return {
            "done": bool(done),
            "mib_s": (nlines * a.line_bytes / (1 << 20)) / secs if done and secs > 0 else 0.0,
            "lines": int(stats.get("data", 0)),
            "expected": nlines,
            "lost": int(stats.get("lost", nlines)),
            "broken": int(stats.get("broken", 0)),
            "disorder": int(stats.get("disorder", 0)),
            "mem": mem,
        }

    def flood(self):
        extras = dict(self.a.extra_binary)
        res = {p: [] for p in PEERS + [TAGFWD, "redisha-init [raw]"] + [f"redisha-init [{n}]" for n in extras]}
        for r in range(self.a.flood_reps):
            group = ["redisha-init", TAGFWD, "redisha-init [raw]", "tini"] + [f"redisha-init [{n}]" for n in extras]
            group = group[r % len(group) :] + group[: r % len(group)]
            for p in group:
                log(f"flood {p} round {r + 1}")
                name = p[len("redisha-init [") : -1] if "[" in p else None
                res[p].append(self.flood_one(p, extras.get(name) if name and name != "raw" else None))
        for p in ["dumb-init", "supervisord"]:
            log(f"flood {p}")
            res[p].append(self.flood_one(p))
        return res

    # -----------------------------------------------------------------------------------------

    def reap_one(self, peer, timeout=None):
        a = self.a
        d = self.fresh(f"reap-{peer}")
        ready, fifo = os.path.join(d, "ready"), os.path.join(d, "go")
        os.mkfifo(fifo)
        exe = self.script(
            d,
            "child.sh",
            f'if [ "$2" = "--sentinel" ] || [ -e "{d}/forked" ]; then exec sleep 100000; fi\n'
            f': > "{d}/forked"\nexec "{self.helpers}/orphans" {a.orphans} "{ready}" "{fifo}"',
        )
        port = free_port_pair()
        out = open(os.path.join(d, "out"), "wb")
        ns = None
        try:
            ns = self.start(peer, d, port, exe, out, subprocess.STDOUT, rendered=None if peer == "redisha-init" else self.render(os.path.join(d, "state"), port))
            pid1 = ns.find_pid1()
            if not poll(lambda: os.path.exists(ready), 180, 0.01):
                raise RuntimeError(f"reap {peer}: orphans never ready")
            with open(ready) as f:
                if f.read().strip() != "1":
                    raise RuntimeError(f"reap {peer}: could not fork {a.orphans} grandchildren")
            # PID 1 must now hold the orphans plus its own children.
            base = 2 if peer in ("redisha-init", "supervisord") else 1
            if not poll(lambda: len(children(pid1)) >= base + a.orphans, 30, 0.01):
                raise RuntimeError(f"reap {peer}: {len(children(pid1))} children of PID 1, expected {base + a.orphans}")
            before = len(children(pid1))
            fd = os.open(fifo, os.O_WRONLY)
            os.write(fd, b"g")
            os.close(fd)
            t_done = poll(lambda: time.monotonic() if len(children(pid1)) <= base else None, timeout or a.reap_timeout, 0.001)
            left = children(pid1)
            zombies = sum(1 for k in left if status(k).get("State", "").startswith("Z"))
            time.sleep(0.5)  # still nothing left a moment later (no late, missed SIGCHLD)
            left_later = len(children(pid1))
            t0 = poll(lambda: read_float(ready + ".t0"), 5, 0.005)
        finally:
            if ns:
                ns.stop()
            out.close()
        return {
            "ms": (t_done - t0) * 1000 if t_done and t0 else None,
            "orphans_seen": before - base,
            "left": max(left_later - base, 0) if t_done else len(left) - base,
            "zombies": zombies,
        }

    def reaping(self):
        res = {p: [] for p in PEERS}
        fast = [p for p in PEERS if p != "supervisord"]
        for r in range(self.a.reap_reps):
            order = fast[r % 3 :] + fast[: r % 3]
            for p in order:
                log(f"reap {p} round {r + 1}")
                res[p].append(self.reap_one(p))
        # supervisord reaps at most 100 children per pass of its 1 s loop: one run, longer bound.
        log("reap supervisord (one run; expect about orphans/100 seconds)")
        res["supervisord"].append(self.reap_one("supervisord", max(self.a.reap_timeout, self.a.orphans / 50)))
        return res

    # -----------------------------------------------------------------------------------------

    def idle(self):
        """All inits started together with real redis + sentinel; memory after start-up, then
        per-thread CPU and context switches over the same idle window."""
        variants = PEERS + ["redisha-init (cleanup off)", METRICS_ON, METRICS_SCRAPED]
        nss = {}
        scraper = None
        try:
            for v in variants:
                d = self.fresh("idle-" + v.split()[0])
                port = free_port_pair()
                peer = v.split()[0]
                extra = {"REDISHA_CLEANUP_INTERVAL_MS": "0"} if "off" in v else None
                if "metrics" in v:
                    extra = {"REDISHA_METRICS_PORT": str(free_port())}
                out = open(os.path.join(d, "out"), "wb")
                ns = self.start(peer, d, port, self.redis, out, subprocess.STDOUT, extra_env=extra)
                ns.out, ns.port, ns.outpath = out, port, os.path.join(d, "out")
                ns.extra = extra or {}
                nss[v] = ns
            for v, ns in nss.items():
                ns.find_pid1()
                for p in (ns.port, ns.port + 1):
                    if not poll(lambda: pong(p), 30, 0.01):
                        raise RuntimeError(f"idle {v}: port {p} never answered")
            scraper = Scraper(int(nss[METRICS_SCRAPED].extra["REDISHA_METRICS_PORT"]))
            log(f"idle: all up; settling {self.a.settle} s")
            time.sleep(self.a.settle)
            mem = {v: mem_of(ns.pid1) for v, ns in nss.items()}
            lines0 = {v: count_lines(ns.outpath) for v, ns in nss.items()}
            # Sample every thread often: a thread that exits takes its counters with it.
            seen = {v: {} for v in nss}  # tid -> (comm, first sample, last sample)
            bursts = {v: {} for v in nss}  # tid -> [t of each sample where vol increased]
            ticks0 = {v: proc_ticks(ns.pid1) for v, ns in nss.items()}
            for v, ns in nss.items():
                for tid in tasks(ns.pid1):
                    s = task_sample(ns.pid1, tid)
                    if s:
                        seen[v][tid] = [s[0], s, s]
            t_start = time.monotonic()
            log(f"idle: measuring {self.a.idle_seconds} s")
            while True:
                now = time.monotonic() - t_start
                for v, ns in nss.items():
                    for tid in tasks(ns.pid1):
                        s = task_sample(ns.pid1, tid)
                        if not s:
                            continue
                        if tid not in seen[v]:  # born during the window: its counters start at 0
                            seen[v][tid] = [s[0], (s[0], 0, 0, 0), (s[0], 0, 0, 0)]
                        prev = seen[v][tid][2]
                        if s[2] > prev[2]:
                            bursts[v].setdefault(tid, []).append(round(now, 1))
                        seen[v][tid][2] = s
                if now >= self.a.idle_seconds:
                    break
                time.sleep(0.2)
            ticks1 = {v: proc_ticks(ns.pid1) for v, ns in nss.items()}
            mem_end = {v: mem_of(ns.pid1) for v, ns in nss.items()}
            scrapes = scraper.stop()
            lines1 = {v: count_lines(ns.outpath) for v, ns in nss.items()}
            res = {}
            for v in nss:
                threads = []
                for tid, (comm, first, last) in sorted(seen[v].items()):
                    threads.append(
                        {
                            "tid": tid,
                            "comm": comm,
                            "vol": last[2] - first[2],
                            "nonvol": last[3] - first[3],
                            "ticks": last[1] - first[1],
                            "wakes_at": bursts[v].get(tid, []),
                        }
                    )
                res[v] = {
                    "mem": mem[v],
                    "mem_end": mem_end[v],
                    "scrapes": scrapes if v == METRICS_SCRAPED else None,
                    "vol": sum(t["vol"] for t in threads),
                    "nonvol": sum(t["nonvol"] for t in threads),
                    "cpu_ms": (ticks1[v] - ticks0[v]) * 1000 / CLK_TCK,
                    "threads": threads,
                    "lines": lines1[v] - lines0[v],
                }
            return res
        finally:
            if scraper:
                scraper.stop()
            for ns in nss.values():
                ns.stop()
                ns.out.close()


METRICS_ON = "redisha-init (metrics on)"
METRICS_SCRAPED = "redisha-init (metrics scraped 1/s)"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Scraper:
    """GET /metrics once a second, as Prometheus would (faster than its usual 15-30 s)."""

    def __init__(self, port):
        import threading
        import urllib.request
        self.ok, self.failed, self.bytes = 0, 0, 0
        self.done = threading.Event()

        def run():
            while not self.done.wait(1.0):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                        self.bytes = len(r.read())
                        self.ok += 1
                except OSError:
                    self.failed += 1
        self.th = threading.Thread(target=run, daemon=True)
        self.th.start()

    def stop(self):
        self.done.set()
        self.th.join(5)
        return {"ok": self.ok, "failed": self.failed, "bytes": self.bytes}


def episodes(times):
    """Sample times with a wake-up, grouped into episodes (samples <= 0.5 s apart belong together);
    returns (episode start times, median gap between episodes)."""
    eps = []
    for t in times:
        if not eps or t - eps[-1][1] > 0.5:
            eps.append([t, t])
        else:
            eps[-1][1] = t
    starts = [e[0] for e in eps]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    return starts, (statistics.median(gaps) if gaps else None)


def mem_of(pid):
    return {k: kib(pid, k) for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}


def read_float(p):
    try:
        with open(p) as f:
            return float(f.read())
    except (OSError, ValueError):
        return None


def count_lines(p):
    try:
        with open(p, "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return 0


def parse_kv(line):
    out = {}
    for w in line.split()[1:]:
        k, _, v = w.partition("=")
        try:
            out[k] = float(v)
        except ValueError:
            pass
    return out


# ---------------------------------------------------------------------------------------------
# report


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def mib(k):
    return "–" if k is None else f"{k / 1024:.2f} MiB"


def commit():
    """The commit measured, and whether the build had uncommitted changes to what it compiles."""
    def git(*a):
        return subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True)
    head = git("rev-parse", "--short=12", "HEAD").stdout.strip() or "?"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src", "Cargo.toml", "Cargo.lock", ".cargo", "scripts/rustc-static").stdout.strip()
    return head + (" + uncommitted changes to src/Cargo" if dirty else "")


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "os": subprocess.run(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"], capture_output=True, text=True).stdout.strip(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "load": open("/proc/loadavg").read().split()[:3],
        "versions": {
            "redis-server": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2].replace("v=", ""),
            "tini": subprocess.run(["tini", "--version"], capture_output=True, text=True).stdout.split()[2],
            "dumb-init": subprocess.run(["dumb-init", "--version"], capture_output=True, text=True).stderr.split()[1],
            "supervisord": subprocess.run(["supervisord", "--version"], capture_output=True, text=True).stdout.strip(),
        },
    }


def report(a, m, sizes, st, fl, rp, idl, cmd):
    L = []
    w = L.append
    gib = a.flood_bytes / (1 << 30)
    w(f"Machine: {m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, {m['os']}; load average at start "
      f"{' '.join(m['load'])} (shared machine). Date: {m['date']}. Versions: redis-server {m['versions']['redis-server']}, "
      f"tini {m['versions']['tini']}, dumb-init {m['versions']['dumb-init']}, supervisord {m['versions']['supervisord']}.")
    w("")
    w(f"Commit measured: `{m['commit']}`. Command: `{cmd}`")
    w("")
    w("| measure | redisha-init | tini | dumb-init | supervisord | target | met |")
    w("|---|---|---|---|---|---|---|")

    def row(name, vals, target="", met=""):
        w(f"| {name} | " + " | ".join(vals) + f" | {target} | {met} |")

    sz = sizes["redisha-init"][0]
    tini_s = sizes.get("tini", (0,))[0]
    tini_st = sizes.get("tini-static", (None,))[0]
    row(
        "binary size, stripped",
        [
            f"{sz / (1 << 20):.2f} MiB ({sz} B, {sizes['redisha-init'][1]})",
            f"{tini_s / 1024:.0f} KiB dynamic" + (f"; tini-static {tini_st / 1024:.0f} KiB" if tini_st else ""),
            f"{sizes.get('dumb-init', (0,))[0] / 1024:.0f} KiB dynamic",
            "Python 3 + supervisor package",
        ],
        "< 4 MiB",
        "yes" if sz < 4 << 20 else "**no**",
    )
    def memrow(m):
        return f"{mib(m['VmRSS'])} (anon {m['RssAnon']} KiB + file {m['RssFile']} KiB)"

    if idl:
        r = {p: idl[p]["mem"] for p in PEERS}
        row("VmRSS of PID 1 after start-up (redis + sentinel running)", [memrow(r[p]) for p in PEERS], "< 3 MiB",
            "yes" if r["redisha-init"]["VmRSS"] < 3072 else "**no**")
        row("VmHWM of PID 1 after start-up", [mib(r[p]["VmHWM"]) for p in PEERS])
    if fl:
        def worst(p):  # the run with the largest RSS
            return max((x["mem"] for x in fl[p]), key=lambda m: m["VmRSS"] or 0)
        row(f"VmRSS of PID 1 right after the {gib:g} GiB log flood (largest run)", [memrow(worst(p)) for p in PEERS], "< 3 MiB",
            "yes" if (worst("redisha-init")["VmRSS"] or 1e9) < 3072 else "**no**")
        row("VmHWM of PID 1 after the log flood (largest run)", [mib(max((x["mem"]["VmHWM"] or 0) for x in fl[p])) for p in PEERS])
    if st:
        dm = med(st["direct"])
        vals = []
        for p in PEERS:
            m_ = med(st[p])
            vals.append(f"{m_:.1f} ms (×{m_ / dm:.2f}, +{m_ - dm:.1f} ms)")
        over = med(st["redisha-init"]) - dm
        row(f"exec → redis +PONG, median of {a.startup_reps} (redis-server as PID 1 directly: {dm:.1f} ms)", vals,
            "overhead < 20 ms", "yes" if over < 20 else "**no**")
    if fl:
        tm = med([x["mib_s"] for x in fl["tini"]])
        cm = med([x["mib_s"] for x in fl[TAGFWD]])
        vals = []
        for p in PEERS:
            xs = fl[p]
            v = med([x["mib_s"] for x in xs])
            lost = sum(x["lost"] for x in xs)
            broken = sum(x["broken"] + x["disorder"] for x in xs)
            okc = sum(1 for x in xs if x["done"])
            vals.append(f"{v:.0f} MiB/s ({v / tm * 100:.0f} % of tini), {len(xs)} run(s): "
                        f"{sum(x['lines'] for x in xs)}/{sum(x['expected'] for x in xs)} lines, {lost} lost, {broken} broken"
                        + ("" if okc == len(xs) else f", {len(xs) - okc} unfinished"))
        row(f"log forwarding, {gib:g} GiB of {a.line_bytes}-byte lines, median (redisha-init: tagged `[redis] `; "
            "the others pass the child's output through untagged)", vals)
        ri = fl["redisha-init"]
        ratio = med([x["mib_s"] for x in ri]) / cm
        per_round = [x["mib_s"] / y["mib_s"] for x, y in zip(ri, fl[TAGFWD]) if y["mib_s"]]
        clean = all(x["done"] and x["lost"] == 0 and x["broken"] == 0 and x["disorder"] == 0 for x in ri + fl[TAGFWD])
        row("tagged log forwarding vs its limit: redisha-init / the C tagging forwarder (`benches/helpers/tagfwd.c` "
            "as PID 1, same reads, pipes and writes), interleaved in the same run", [
                f"{med([x['mib_s'] for x in ri]):.0f} / {cm:.0f} MiB/s = **{ratio * 100:.0f} %** "
                f"(per round: {', '.join(f'{r * 100:.0f}' for r in per_round)} %); C forwarder "
                f"{sum(x['lost'] for x in fl[TAGFWD])} lost, {sum(x['broken'] + x['disorder'] for x in fl[TAGFWD])} broken",
                "", "", ""],
            "≥ 90 % of the C forwarder, no broken line",
            "yes" if ratio >= 0.9 and clean else ("**no** (throughput)" if clean else "**no** (lines)"))
        if fl.get("redisha-init [raw]"):
            xs = fl["redisha-init [raw]"]
            v = med([x["mib_s"] for x in xs])
            row("log forwarding, redisha-init `REDISHA_LOG_FORMAT=raw` (no tags, children write to PID 1's stdout)", [
                f"{v:.0f} MiB/s ({v / tm * 100:.0f} % of tini), {sum(x['lost'] for x in xs)} lost, "
                f"{sum(x['broken'] + x['disorder'] for x in xs)} broken", "", "", ""],
                "≥ 90 % of tini", "yes" if v / tm >= 0.9 else "**no**")
        for name, _ in a.extra_binary:
            xs = fl[f"redisha-init [{name}]"]
            v = med([x["mib_s"] for x in xs])
            row(f"log forwarding, other build `{name}`", [
                f"{v:.0f} MiB/s ({v / tm * 100:.0f} % of tini), {sum(x['lost'] for x in xs)} lost, "
                f"{sum(x['broken'] + x['disorder'] for x in xs)} broken; VmRSS after "
                f"{mib(max(x['mem']['VmRSS'] or 0 for x in xs))}", "", "", ""])
    if rp:
        vals = []
        for p in PEERS:
            xs = rp[p]
            v = med([x["ms"] for x in xs])
            missed = sum(x["left"] for x in xs)
            seen = min(x["orphans_seen"] for x in xs)
            vals.append(("–" if v is None else f"{v:.0f} ms") + f" (min orphans seen {seen}, {missed} missed, {len(xs)} runs)")
        row(f"reaping {a.orphans} orphans released at once → none left, median", vals)
    if idl:
        s = a.idle_seconds
        row(f"idle {s:g} s: voluntary / involuntary ctx switches, all threads",
            [f"{idl[p]['vol']} / {idl[p]['nonvol']}" for p in PEERS],
            "no wake-up HA does not need")
        row(f"idle {s:g} s: CPU (utime+stime)", [f"{idl[p]['cpu_ms']:.0f} ms" for p in PEERS])
        off = idl["redisha-init (cleanup off)"]
        row(f"idle {s:g} s, redisha-init with REDISHA_CLEANUP_INTERVAL_MS=0",
            [f"{off['vol']} / {off['nonvol']} switches, {off['cpu_ms']:.0f} ms CPU", "", "", ""])
        for v in (METRICS_ON, METRICS_SCRAPED):
            x = idl[v]
            sc = f", {x['scrapes']['ok']} scrapes ({x['scrapes']['failed']} failed, {x['scrapes']['bytes']} B each)" if x["scrapes"] else ""
            row(f"idle {s:g} s, {v}: VmRSS after start-up → end of the window; switches; CPU",
                [f"{memrow(x['mem'])} → {memrow(x['mem_end'])}; {x['vol']} / {x['nonvol']} switches, "
                 f"{x['cpu_ms']:.0f} ms CPU{sc}", "", "", ""], "< 3 MiB",
                "yes" if max(x["mem"]["VmRSS"], x["mem_end"]["VmRSS"]) < 3072 else "**no**")
        w("")
        w(f"Idle wake-ups of redisha-init by thread ({s:g} s; times in s since the window opened, sampled every 0.2 s; "
          "lines forwarded during the window: "
          f"{idl['redisha-init']['lines']} with cleanup, {off['lines']} without):")
        w("")
        w("| variant | thread | voluntary | involuntary | CPU ticks | wake-up episodes (s into the window) | median period |")
        w("|---|---|---|---|---|---|---|")
        for v in ["redisha-init", "redisha-init (cleanup off)", METRICS_ON, METRICS_SCRAPED, "tini", "dumb-init",
                  "supervisord"]:
            for t in idl[v]["threads"]:
                starts, gap = episodes(t["wakes_at"])
                shown = ", ".join(f"{x:g}" for x in starts[:8]) + (f", … ({len(starts)} in all)" if len(starts) > 8 else "")
                w(f"| {v} | {t['comm']} (tid {t['tid']}) | {t['vol']} | {t['nonvol']} | {t['ticks']} | "
                  f"{shown or '–'} | {'–' if gap is None else f'{gap:.1f} s'} |")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: 64 MiB flood, 2000 orphans, 10 s idle, 5 start-ups")
    ap.add_argument("--flood-bytes", type=int, default=1 << 30)
    ap.add_argument("--line-bytes", type=int, default=100, help="bytes per log line incl. newline (32..4096)")
    ap.add_argument("--flood-reps", type=int, default=9,
                    help="runs each of redisha-init (tagged, raw), the C tagging forwarder and tini (interleaved)")
    ap.add_argument("--startup-reps", type=int, default=15)
    ap.add_argument("--orphans", type=int, default=10000)
    ap.add_argument("--reap-reps", type=int, default=3)
    ap.add_argument("--reap-timeout", type=float, default=60)
    ap.add_argument("--idle-seconds", type=float, default=60)
    ap.add_argument("--settle", type=float, default=5, help="seconds after both answer PING before the idle window")
    ap.add_argument("--skip", default="", help="comma list of: startup,flood,reap,idle")
    ap.add_argument("--binary", help="use this redisha-init instead of building the static one")
    ap.add_argument("--extra-binary", action="append", default=[], metavar="NAME=PATH",
                    type=lambda v: tuple(v.split("=", 1)),
                    help="another redisha-init build whose log forwarding is measured in the same run (repeatable)")
    ap.add_argument("--out", help="also write the markdown here")
    ap.add_argument("--json", help="also write raw results here")
    a = ap.parse_args()
    if a.quick:
        for k, v in dict(flood_bytes=64 << 20, orphans=2000, idle_seconds=10, startup_reps=5, settle=2).items():
            if getattr(a, k) == ap.get_default(k):
                setattr(a, k, v)
    if os.geteuid() != 0:
        sys.exit("needs root (unshare --pid)")
    for t in ["unshare", "tini", "dumb-init", "supervisord", "redis-server", "cc", "strip"]:
        if not shutil.which(t):
            sys.exit(f"missing {t} (apt-get install -y tini dumb-init supervisor redis-server gcc binutils)")
    skip = set(filter(None, a.skip.split(",")))
    cmd = " ".join(["benches/pid1.py"] + sys.argv[1:])

    def on_signal(sig, _frm):
        raise KeyboardInterrupt(f"signal {sig}")

    signal.signal(signal.SIGTERM, on_signal)
    b = Bench(a)
    try:
        m = machine()
        sizes = b.build()
        st = fl = rp = idl = None
        t = time.monotonic()
        if "startup" not in skip:
            log("start-up")
            st = b.startup()
        if "flood" not in skip:
            fl = b.flood()
        if "reap" not in skip:
            rp = b.reaping()
        if "idle" not in skip:
            idl = b.idle()
        log(f"measurements took {time.monotonic() - t:.0f} s")
        md = report(a, m, sizes, st, fl, rp, idl, cmd)
        print(md)
        if a.out:
            with open(a.out, "w") as f:
                f.write(md + "\n")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"machine": m, "sizes": sizes, "startup": st, "flood": fl, "reap": rp, "idle": idl}, f, indent=1)
    finally:
        teardown_all()
        shutil.rmtree(b.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
