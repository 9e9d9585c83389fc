"""The three-pod topology over TLS with a password, certificates from a throwaway CA made here.

Asserts: replication up over TLS, every sentinel names the same master and knows the two other
sentinels and the two replicas, a plaintext client refused on every redis and sentinel port, an
unauthenticated TLS client answered NOAUTH, and a failover (master pod SIGKILLed) within
down-after + margin with the Sentinel-aware writer (TLS, password) losing no acknowledged write.
Prints and records one line `SCENARIO tls: write_gap=... lost=...`.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import redis

import harness
from harness import DOWN_AFTER, GROUP, REDIS_PORT, SENTINEL_PORT, Writer, record, wait_until
from ops import run_cli, wait_status

TLS_PASSWORD = "tls-ha-pw"
# Every address Cluster.fresh_ip may hand out (10.77.0.10 up to its assert at .249), loopback (a
# pod asks its own sentinel on 127.0.0.1), and the names the pods use for each other
# (REDISHA_SENTINELS=redis-N:26379, REDIS_MASTER_SERVICE_HOST=redis-primary): redisha-init's
# client verifies the server certificate against the host it dials, name or IP.
SAN_IPS = ["127.0.0.1"] + [f"{harness.SUBNET}.{i}" for i in range(10, 250)]
SAN_NAMES = ["localhost", "redis-primary", "redis-secondary"] + [
    n for i in range(harness.NPODS) for n in (f"redis-{i}", f"redis-{i}.redis-headless")]
FAILOVER_MARGIN = 6.0  # s beyond down-after: odown, election, promotion (scenario 2: ~1.4 s)


def openssl(cwd: Path, *args: str) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"openssl {' '.join(args)}: {r.stderr}"


def make_certs(d: Path) -> harness.Tls:
    """A throwaway CA and one node certificate (server and client use) for every pod."""
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(d, "req", "-x509", *ec, "-days", "1", "-subj", "/CN=rhat-throwaway-ca",
            "-keyout", "ca.key", "-out", "ca.crt")
    openssl(d, "req", *ec, "-subj", "/CN=rhat-node", "-keyout", "node.key", "-out", "node.csr")
    sans = ",".join([f"IP:{ip}" for ip in SAN_IPS] + [f"DNS:{n}" for n in SAN_NAMES])
    (d / "ext.cnf").write_text(f"subjectAltName={sans}\n"
                               "extendedKeyUsage=serverAuth,clientAuth\n")
    openssl(d, "x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "ext.cnf", "-out", "node.crt")
    return harness.Tls(cert=d / "node.crt", key=d / "node.key", ca=d / "ca.crt")


def stop_all_and_wipe(c) -> None:
    for p in c.pods:
        if p.alive:
            c.kill_pod(p.idx)
        shutil.rmtree(p.state_dir, ignore_errors=True)


@pytest.fixture
def tls_cluster(cluster):
    """The session's cluster, emptied, switched to TLS + password; switched back and emptied
    again afterwards (later scenarios restart their pods in plaintext through `healthy`)."""
    stop_all_and_wipe(cluster)
    tls = make_certs(cluster.tmp / "tls")
    cluster.set_security(tls=tls, password=TLS_PASSWORD)
    try:
        yield cluster
    finally:
        try:
            stop_all_and_wipe(cluster)
        finally:
            cluster.set_security()


def plaintext_outcome(ip: str, port: int) -> str:
    """What a plaintext client (with the right password) gets: must be a refusal, no reply."""
    c = redis.Redis(host=ip, port=port, password=TLS_PASSWORD, socket_timeout=1,
                    socket_connect_timeout=1, retry_on_timeout=False)
    try:
        return f"answered {c.ping()!r}"
    except redis.AuthenticationError as e:  # a reply from the server: not a refusal
        return f"answered {e}"
    except (redis.ConnectionError, redis.TimeoutError) as e:
        return f"refused: {type(e).__name__}"
    except redis.ResponseError as e:
        return f"answered {e}"
    finally:
        c.close()


def unauthenticated_tls_reply(ip: str, port: int, ca: Path) -> str:
    """One PING over a verified TLS connection (no client certificate, no AUTH): the raw reply."""
    ctx = ssl.create_default_context(cafile=str(ca))  # verifies the chain and the IP SAN
    with socket.create_connection((ip, port), timeout=2) as raw:
        with ctx.wrap_socket(raw, server_hostname=ip) as s:
            s.sendall(b"PING\r\n")
            buf = b""
            while not buf.endswith(b"\r\n") and len(buf) < 512:
                chunk = s.recv(512)
                if not chunk:
                    break
                buf += chunk
            return buf.decode(errors="replace").strip()


def named_master(c, ips) -> str | None:
    """The master the given sentinels all name, if they agree."""
    names = set()
    for ip in ips:
        with c.client(ip, SENTINEL_PORT, 0.3) as cl:
            a = cl.sentinel_get_master_addr_by_name(GROUP)
        names.add(a[0] if a else None)
    return names.pop() if len(names) == 1 else None


def test_tls_three_pods(tls_cluster):
    c = tls_cluster
    t0 = time.monotonic()
    c.start_pods([0, 1, 2])
    ips = [p.ip for p in c.pods]
    assert all(ip in SAN_IPS for ip in ips), f"pod addresses {ips} outside the certificate"
    m, snap, _ = c.settle(45, "the three pods over TLS")
    boot_s = time.monotonic() - t0
    assert m == c.pods[0].ip, f"master is {m}, expected redis-0"

    # Replication up over TLS (clients here verify each server's certificate and IP SAN).
    for ip, n in snap["nodes"].items():
        if ip != m:
            assert n.get("master_host") == m and n.get("master_link_status") == "up", (ip, n)
    with c.client(m, REDIS_PORT, 1) as cl:
        assert cl.info("replication").get("connected_slaves") == 2
        assert cl.config_get("tls-replication") == {"tls-replication": "yes"}
    # Every sentinel: the same master, the two other sentinels, the two replicas.
    for sip, s in snap["sentinels"].items():
        assert s["master"] == m, (sip, s)
        assert sorted(r[0] for r in s["replicas"]) == sorted(set(ips) - {m}), (sip, s)
        assert sorted(x[0] for x in s["sentinels"]) == sorted(set(ips) - {sip}), (sip, s)

    # The operator tools speak TLS and the password as the pod does (they take its env). The
    # per-server budget is raised: a debug build's TLS handshakes under a CPU hog took longer
    # than the default 600 ms for 20 s once (tests/ha under two busy loops); what this checks is
    # TLS, not speed.
    r = wait_status(c, c.pods[1], 0, 20, "--timeout-ms", "2000")
    assert r.json["verdict"]["master"] == f"{m}:{REDIS_PORT}", r.json["verdict"]

    # Plaintext refused on every port; TLS without AUTH gets NOAUTH on every port.
    for p in c.pods:
        for port in (REDIS_PORT, SENTINEL_PORT):
            out = plaintext_outcome(p.ip, port)
            assert out.startswith("refused"), f"plaintext client on {p.ip}:{port}: {out}"
            reply = unauthenticated_tls_reply(p.ip, port, c.tls.ca)
            assert reply.startswith("-NOAUTH"), f"unauthenticated TLS on {p.ip}:{port}: {reply!r}"

    # Failover: the master pod SIGKILLed while the Sentinel-aware writer runs over TLS.
    old = c.pod_by_ip(m)
    w = Writer(c, "ha:tls")
    w.start()
    try:
        wait_until(lambda: len(w.acked) >= 50, 10, 0.1, "the TLS writer acknowledged")
        time.sleep(1)
        t_kill = time.monotonic()
        c.kill_pod(old.idx)
        survivors = [p.ip for p in c.live()]
        bound = DOWN_AFTER + FAILOVER_MARGIN

        def promoted():
            n = named_master(c, survivors)
            if n in (None, m):
                return None
            return n if c.info_replication(n, 0.3).get("role") == "master" else None
        new = wait_until(promoted, bound, 0.1, f"a promoted master named by {survivors}")
        failover_s = time.monotonic() - t_kill
        m2, _, settle_s = c.settle(60, "invariants over TLS after the master was killed")
        wait_until(lambda: any(t > t_kill + failover_s for _, t in w.acked), 10, 0.1,
                   "the TLS writer writing to the new master")
        time.sleep(1)
    finally:
        res = w.finish()
    lost = w.count_lost(res, m2)
    after = sum(1 for _, t in res.acked if t > t_kill)
    record(f"SCENARIO tls: write_gap={res.max_gap:.2f}s lost={len(lost)} "
           f"boot_to_settled={boot_s:.1f}s failover={failover_s:.1f}s (bound {bound:.0f}s) "
           f"settled_after_failover={settle_s:.1f}s acked={len(res.acked)} "
           f"acked_after_kill={after} errors={res.errors}")
    assert m2 == new and m2 != m
    assert after > 0, "no write acknowledged by the new master"
    assert not lost, f"acknowledged writes lost across the TLS failover: {lost[:20]}"

    # A switchover over TLS, back to the surviving replica (not right before the SIGKILL above:
    # Sentinel starts no failover of a master within 2 x failover-timeout of the last one).
    other = next(p for p in c.live() if p.ip != m2)
    r = run_cli(c, other, "switchover", "--to", f"{other.ip}:{REDIS_PORT}")
    assert r.code == 0, r.out + r.err
    r = wait_status(c, c.pod_by_ip(m2), 1, 20, "--timeout-ms", "2000")  # degraded: a pod is gone
    assert r.json["verdict"]["master"] == f"{other.ip}:{REDIS_PORT}", r.json["verdict"]
