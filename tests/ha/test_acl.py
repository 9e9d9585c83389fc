"""The three pods with ACL users (issue 34): REDISHA_ACL_DIR instead of one shared password.

Asserts: the pods settle (replication as `replication`, Sentinel as `sentinel`, PID 1 as
`redisha`); the application user is refused every HA command on every data node and every
state-changing SENTINEL command on every sentinel, and runs its data commands; a graceful stop of
the master, a SIGKILLed master and a switchover with the Sentinel-aware writer logged in as `app`
lose no acknowledged write; `status` works as `redisha`; and no internal user was ever refused a
command (ACL LOG of every server holds only the app's refusals, no NOPERM in any pod's log).
Records `SCENARIO acl: ...`.

Opt-in (REDISHA_HA_ACL_ROTATION=1, ~50 s): a password rotation of every user during a
writer's run, through three readiness-gated rolling updates (add the new password, send it,
drop the old one): no write refused for auth, none lost; `status` names the one pod restarted
with the new Secret as the one whose ACL differs.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
import redis

import harness  # noqa: F401 (puts tests/pylib on sys.path)
from hacluster import ACL_USERS
from harness import (DOWN_AFTER, GROUP, REDIS_PORT, SENTINEL_PORT, Writer,
                     make_acl, record, stop_master_and_watch, wait_until)
from ops import rolling_update, run_cli, status, wait_ready, wait_status

# Each can break failover, stop a node or lock redisha-init out.
HOSTILE = [
    ["REPLICAOF", "NO", "ONE"], ["SLAVEOF", "NO", "ONE"], ["CONFIG", "SET", "maxmemory", "1"],
    ["CONFIG", "GET", "requirepass"], ["SHUTDOWN", "NOSAVE"], ["DEBUG", "SLEEP", "0"],
    ["ACL", "SETUSER", "redisha", "off"], ["ACL", "LIST"], ["CLIENT", "PAUSE", "10", "WRITE"],
    ["CLIENT", "KILL", "TYPE", "normal"], ["FAILOVER"], ["MONITOR"], ["MODULE", "LIST"],
    ["SCRIPT", "KILL"], ["FUNCTION", "KILL"], ["BGSAVE"], ["FLUSHALL"],
]
HOSTILE_SENTINEL = [
    ["SENTINEL", "SET", GROUP, "quorum", "1"], ["SENTINEL", "FAILOVER", GROUP],
    ["SENTINEL", "RESET", "*"], ["SENTINEL", "REMOVE", GROUP],
    ["SENTINEL", "MONITOR", "evil", "127.0.0.1", "1", "1"],
    ["SENTINEL", "CONFIG", "SET", "resolve-hostnames", "no"], ["SENTINEL", "FLUSHCONFIG"],
    ["SHUTDOWN"], ["ACL", "LIST"],
]
INTERNAL = ("redisha", "replication", "sentinel")


def stop_all_and_wipe(c) -> None:
    for p in c.pods:
        if p.alive:
            c.kill_pod(p.idx)
        shutil.rmtree(p.state_dir, ignore_errors=True)


@pytest.fixture
def acl_cluster(cluster):
    """The session's cluster, emptied, switched to ACL users; switched back and emptied again."""
    stop_all_and_wipe(cluster)
    acl = make_acl(cluster.tmp / "acl-secret")
    cluster.set_security(password=None, acl=acl)
    try:
        yield cluster
    finally:
        try:
            stop_all_and_wipe(cluster)
        finally:
            cluster.set_security()


def as_user(c, ip: str, port: int, user: str, password: str | None = None):
    kw = c.security.client_kwargs(user)
    if password is not None:
        kw["password"] = password
    return redis.Redis(host=ip, port=port, socket_timeout=2, socket_connect_timeout=1,
                       decode_responses=True, retry_on_timeout=False, **kw)


def refused(cl, cmd) -> str | None:
    """None when refused (NOPERM, or DEBUG/MODULE off before the ACL is asked); else what ran."""
    try:
        return f"ran: {cl.execute_command(*cmd)!r}"
    except redis.exceptions.NoPermissionError:
        return None
    except redis.ResponseError as e:
        return None if "command not allowed" in str(e) else f"error {e}"


def internal_refusals(c) -> dict:
    """ACL LOG entries of our own users, per server: must stay empty."""
    out = {}
    for p in c.live():
        for port in (REDIS_PORT, SENTINEL_PORT):
            with as_user(c, p.ip, port, "redisha") as cl:
                entries = cl.execute_command("ACL", "LOG")
            bad = [e for e in entries if _field(e, "username") in INTERNAL]
            if bad:
                out[f"{p.name}:{port}"] = bad
    return out


def _field(entry, key):
    if isinstance(entry, dict):
        return entry.get(key)
    it = iter(entry)
    return dict(zip(it, it)).get(key)


def auth_errors(res) -> dict:
    return {k: v for k, v in res.errors.items()
            if "auth" in k.lower() or k in ("NOAUTH", "WRONGPASS", "NOPERM")}


def test_acl_three_pods(acl_cluster):
    c = acl_cluster
    t0 = time.monotonic()
    c.start_pods([0, 1, 2])
    m, _, _ = c.settle(45, "the three pods with ACL users")
    boot_s = time.monotonic() - t0

    # The application: data commands yes, HA commands no, on every pod and sentinel.
    with as_user(c, m, REDIS_PORT, "app") as cl:
        cl.set("acl:k", "v")
        cl.incr("acl:n")
        cl.publish("news", "x")
    for p in c.live():
        with as_user(c, p.ip, REDIS_PORT, "app") as cl:
            cl.ping()
            wait_until(lambda: cl.get("acl:k") == "v", 10, 0.1, f"{p.name} serves the app")
            bad = {" ".join(x): r for x in HOSTILE if (r := refused(cl, x))}
            assert not bad, f"{p.name}: the app may run {bad}"
        with as_user(c, p.ip, SENTINEL_PORT, "app") as cl:
            assert cl.sentinel_get_master_addr_by_name(GROUP)[0] == m
            bad = {" ".join(x): r for x in HOSTILE_SENTINEL if (r := refused(cl, x))}
            assert not bad, f"{p.name} sentinel: the app may run {bad}"
        for port in (REDIS_PORT, SENTINEL_PORT):
            with as_user(c, p.ip, port, "app", "wrong") as cl:
                with pytest.raises(redis.AuthenticationError):
                    cl.ping()

    w = Writer(c, "ha:acl")
    w.start()
    try:
        wait_until(lambda: len(w.acked) >= 50, 10, 0.1, "the app writer acknowledged")
        # Graceful stop of the master (handover as `redisha`), then the pod back.
        out = stop_master_and_watch(c)
        assert out.new_master, f"no new master after the graceful stop: {out}"
        stop_gap_s = w.gaps_during(out.t_stop, out.t_stop + (out.exit_s or 0))
        c.start_pods([int(out.pod.split("-")[1])])
        m2, _, _ = c.settle(60, "after the graceful stop")
        # The master SIGKILLed: Sentinel fails over as `sentinel`.
        t_kill = time.monotonic()
        c.kill_pod(c.pod_by_ip(m2).idx)
        survivors = [p.ip for p in c.live()]

        def promoted():
            n = c.named_master(survivors)
            return n if n not in (None, m2) else None
        wait_until(promoted, DOWN_AFTER + 8, 0.1, "a promoted master after the kill")
        failover_s = time.monotonic() - t_kill
        m3, _, _ = c.settle(60, "after the master was killed")
        kill_gap_s = w.gaps_during(t_kill, t_kill + failover_s)
        # A switchover as `redisha`, to the other live pod.
        other = next(p for p in c.live() if p.ip != m3)
        # Right after a failover Sentinel may still refuse a new one (exit 1 or 4): retried,
        # bounded.
        tries = []
        for _ in range(6):
            r = run_cli(c, other, "switchover", "--to", f"{other.ip}:{REDIS_PORT}")
            tries.append(r.code)
            if r.code == 0:
                break
            time.sleep(2)
        assert r.code == 0, f"switchover exits {tries}: {r.out}{r.err}"
        r = wait_status(c, other, 1, 20)  # degraded: one pod is gone
        assert r.json["verdict"]["master"] == f"{other.ip}:{REDIS_PORT}", r.json["verdict"]
        # status names the users and finds every live server in agreement.
        a = r.json["acl"]
        for kind in ("data_nodes", "sentinels"):
            assert {"app", "redisha", "sentinel"} <= set(a[kind]["users"]), a
            assert a[kind]["differ"] == [] and a[kind]["agree"] == 2, a
        m4 = other.ip
        wait_until(lambda: any(t > time.monotonic() - 0.5 for _, t in w.acked), 10, 0.1,
                   "the writer on the switched-to master")
        time.sleep(0.5)
    finally:
        res = w.finish()
    lost = w.count_lost(res, m4)
    refusals = internal_refusals(c)
    noperm = {p.name: p.log_tail(5) for p in c.pods if p.log_path and p.log_path.exists()
              and "NOPERM" in p.log_path.read_text(errors="replace")}
    record(f"SCENARIO acl: boot_to_settled={boot_s:.1f}s stop_gap={stop_gap_s:.2f}s "
           f"kill_failover={failover_s:.1f}s kill_gap={kill_gap_s:.2f}s "
           f"write_gap={res.max_gap:.2f}s lost={len(lost)} acked={len(res.acked)} "
           f"errors={res.errors}")
    assert not lost, f"acknowledged writes lost with ACL users: {lost[:20]}"
    assert not auth_errors(res), f"the app was refused for auth: {res.errors}"
    assert not refusals, f"an internal user was refused a command: {refusals}"
    assert not noperm, f"NOPERM in pod logs: {noperm}"


@pytest.mark.skipif(os.environ.get("REDISHA_HA_ACL_ROTATION") in (None, "", "0"),
                    reason="opt-in: REDISHA_HA_ACL_ROTATION=1 (three rolling updates, ~50 s)")
def test_acl_password_rotation_rolling(acl_cluster):
    c = acl_cluster
    acl = c.security.acl
    c.start_pods([0, 1, 2])
    c.settle(45, "the three pods with ACL users")
    old = {u: acl.pw(u) for u in ACL_USERS}
    new = {u: f"{u}-v2-pw" for u in ACL_USERS}
    w_old = Writer(c, "ha:acl-rot")  # logs in with the old app password
    w_old.start()
    steps = {}
    try:
        wait_until(lambda: len(w_old.acked) >= 50, 10, 0.1, "the writer acknowledged")
        # 1. Every server accepts both; everyone still sends the old one.
        for u in ACL_USERS:
            acl.write(u, old[u], new[u])
        # One pod restarted with the new Secret: `status` names it as the one that differs.
        odd = c.pods[2]
        c.stop_pod_gracefully(odd.idx)
        c.start_pods([odd.idx])
        wait_ready(c, [odd])
        r = status(c, c.pods[0])
        for kind, port in (("data_nodes", REDIS_PORT), ("sentinels", SENTINEL_PORT)):
            assert r.json["acl"][kind]["differ"] == [f"{odd.ip}:{port}"], r.json["acl"]
        steps["add"] = rolling_update(c, w_old, 2.0)
        # 2. Pods send the new one (the peers that have not rolled yet accept it since step 1).
        for u in ACL_USERS:
            acl.write(u, new[u], old[u])
        steps["send"] = rolling_update(c, w_old, 2.0)
        # The application moves to its new password (its own rollout), then the old one goes.
        w_new = Writer(c, "ha:acl-rot")
        w_new.start()
        wait_until(lambda: len(w_new.acked) >= 20, 10, 0.1, "the writer on the new password")
        res_old = w_old.finish()
        # 3. Only the new one.
        for u in ACL_USERS:
            acl.write(u, new[u])
        steps["drop"] = rolling_update(c, w_new, 2.0)
        m, _, _ = c.settle(60, "after the rotation")
    finally:
        if w_old.is_alive():
            res_old = w_old.finish()
        res_new = w_new.finish() if "w_new" in locals() else None
    assert res_new is not None, "the rotation stopped before the application moved"
    # Read back with the new password: the old one is gone by now.
    lost = w_new.lost_on(m, res_old.acked) + w_new.count_lost(res_new, m)
    with as_user(c, m, REDIS_PORT, "app", old["app"]) as cl:
        with pytest.raises(redis.AuthenticationError):
            cl.ping()
    refusals = internal_refusals(c)
    gaps = {k: round(max(s.gap_s for s in v), 2) for k, v in steps.items()}
    record(f"SCENARIO acl-rotation: lost={len(lost)} gaps={gaps} "
           f"errors_old={res_old.errors} errors_new={res_new.errors}")
    assert not lost, f"acknowledged writes lost in the rotation: {lost[:20]}"
    assert not auth_errors(res_old) and not auth_errors(res_new), (
        res_old.errors, res_new.errors)
    assert not refusals, refusals
