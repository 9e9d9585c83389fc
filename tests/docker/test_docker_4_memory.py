"""`docker run --memory`: maxmemory derived from the container's limit (issue 18).

A master-sentinel container (local mode: loopback only, the client is redis-cli inside it) with a
256 MiB limit and no swap: the rendered maxmemory is 30 % of the limit; filling redis past it gets
Redis's OOM error, an AOF rewrite at that size fits, and nothing is killed (same redis process,
the container still running, not OOM-killed, no restart in the log). Then the same with
REDISHA_MAXMEMORY=0 and a 64 MiB limit: the kernel OOM-kills redis and the log says so in one
line. Every container is removed, also when a test fails."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

import docker_helpers as h

MIB = 1 << 20
LIMIT = 256 * MIB
FRACTION_PERCENT = 30  # src/memory.rs DEFAULT_PERCENT; README "Memory"
# Each line adds 1 MiB: 1024 keys of 1 KiB, in one EVAL (one fsync under appendfsync always).
# The script is checked against maxmemory once, when it starts, so a batch may overshoot by 1 MiB.
FILL_LINE = ("EVAL \"for i=1,1024 do redis.call('SET', ARGV[1] .. ':' .. i, string.rep('x', 1024)) "
             "end return 1\" 0 {batch}\n")


class Container:
    def __init__(self, image: str, memory: int, env: dict[str, str]):
        self.name = f"redisha-mem-{os.getpid()}-{int(time.monotonic() * 1000) % 100000}"
        args = ["docker", "run", "-d", "--name", self.name, f"--memory={memory}",
                f"--memory-swap={memory}", "--stop-timeout", "12"]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        h.run([*args, image], timeout=60)

    def exec(self, *cmd: str, stdin: str | None = None, timeout: float = 60) -> str:
        r = subprocess.run(["docker", "exec", "-i", self.name, *cmd], input=stdin,
                           capture_output=True, text=True, timeout=timeout)
        return r.stdout + r.stderr

    def cli(self, *args: str) -> str:
        return self.exec("redis-cli", *args).strip()

    def info(self, section: str) -> dict[str, str]:
        out = {}
        for line in self.cli("INFO", section).splitlines():
            k, _, v = line.strip().partition(":")
            if v:
                out[k] = v
        return out

    def inspect(self, fmt: str) -> str:
        return h.run(["docker", "inspect", "-f", fmt, self.name], timeout=30).stdout.strip()

    def logs(self) -> str:
        r = h.run(["docker", "logs", self.name], timeout=30, check=False)
        return r.stdout + r.stderr

    def remove(self) -> None:
        h.run(["docker", "rm", "-f", "-v", self.name], timeout=60, check=False)


@pytest.fixture
def container(request, images):
    made: list[Container] = []

    def make(memory: int, env: dict[str, str] | None = None) -> Container:
        c = Container(images["master-sentinel"], memory, env or {})
        made.append(c)
        h.wait_until(what="redis answers PONG", pred=lambda: c.cli("PING") == "PONG", timeout=30, retry_on=h.ANY_ERROR)
        return c

    yield make
    rep = getattr(request.node, "rep_call", None)
    for c in made:
        if rep is not None and rep.failed:
            h.log(f"logs of {c.name}:\n{c.logs()[-6000:]}")
        c.remove()


def test_render_shows_the_limit_and_the_maxmemory(images):
    r = h.run(["docker", "run", "--rm", f"--memory={LIMIT}", f"--memory-swap={LIMIT}",
               images["master-sentinel"], "render"], timeout=60)
    want = LIMIT * FRACTION_PERCENT // 100
    head = next(line for line in r.stdout.splitlines() if line.startswith("# memory:"))
    assert f"limit {LIMIT} " in head and f"maxmemory {want} " in head, head
    assert f"\nmaxmemory {want}\n" in r.stdout, r.stdout[-3000:]
    assert "\nmaxmemory-policy noeviction\n" in r.stdout


def test_full_redis_refuses_writes_and_nothing_is_killed(container):
    c = container(LIMIT)
    want = LIMIT * FRACTION_PERCENT // 100
    assert c.cli("CONFIG", "GET", "maxmemory").split() == ["maxmemory", str(want)]
    assert c.cli("CONFIG", "GET", "maxmemory-policy").split() == ["maxmemory-policy", "noeviction"]
    pid = c.info("server")["process_id"]
    # Twice maxmemory's worth of batches, in one redis-cli session: the refusals must come first.
    batches = 2 * want // MIB
    t0 = time.monotonic()
    out = c.exec("redis-cli", stdin="".join(FILL_LINE.format(batch=i) for i in range(batches)),
                 timeout=240)
    h.record("memory_fill_s", round(time.monotonic() - t0, 1))
    accepted = out.count("(integer) 1") + sum(1 for line in out.splitlines() if line.strip() == "1")
    assert "OOM command not allowed" in out, out[-2000:]
    assert 0 < accepted < batches, f"{accepted} of {batches} batches accepted"
    mem = c.info("memory")
    used, rss = int(mem["used_memory"]), int(mem["used_memory_rss"])
    h.record("memory_full_used_mb", round(used / MIB, 1))
    h.record("memory_full_rss_mb", round(rss / MIB, 1))
    assert used <= want + 2 * MIB, f"used_memory {used} beyond maxmemory {want}"
    # A fork at that size (the AOF rewrite) fits in the rest of the limit.
    assert "Background append only file rewriting" in c.cli("BGREWRITEAOF")
    h.wait_until(what="the AOF rewrite to end",
                 pred=lambda: (p := c.info("persistence")).get("aof_rewrite_in_progress") == "0"
                 and p.get("aof_rewrite_scheduled") == "0", timeout=120, retry_on=h.ANY_ERROR)
    assert c.info("persistence")["aof_last_bgrewrite_status"] == "ok"
    assert c.cli("SET", "one-more", "x" * 1024).startswith("OOM"), "still refusing at maxmemory"
    assert c.info("server")["process_id"] == pid, "the same redis process"
    assert c.inspect("{{.State.Running}} {{.State.OOMKilled}}") == "true false"
    logs = c.logs()
    assert "exited unexpectedly" not in logs and "OOM killer" not in logs, logs[-4000:]


def test_an_oom_kill_is_named_in_the_log(container):
    limit = 64 * MIB
    c = container(limit, {"REDISHA_MAXMEMORY": "0"})
    assert c.cli("CONFIG", "GET", "maxmemory").split() == ["maxmemory", "0"]
    # Without maxmemory redis grows until the kernel kills it (bounded: 4 x the limit).
    c.exec("redis-cli", stdin="".join(FILL_LINE.format(batch=i) for i in range(4 * limit // MIB)),
           timeout=240)
    line = h.wait_until(what="the OOM line in the log",
                        pred=lambda: next((x for x in c.logs().splitlines() if "OOM killer" in x), None),
                        timeout=30, retry_on=h.ANY_ERROR)
    assert 'child="redis"' in line and "limit=64.0 MiB" in line and "REDISHA_MAXMEMORY=0" in line, line
    # The restart policy applies as for any crash, and PID 1 itself was not the one killed.
    h.wait_until(what="the restart", pred=lambda: "exited unexpectedly; restarting" in c.logs(), timeout=30, retry_on=h.ANY_ERROR)
    assert c.inspect("{{.State.Running}}") == "true"
