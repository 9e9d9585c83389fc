"""Fixtures of the HA suite: the binary, the three-pod cluster (torn down even when a test fails)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import harness  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def pytest_terminal_summary(terminalreporter):
    """The per-scenario numbers, visible even when output is captured (-q)."""
    lines = [x for x in harness.RECORDED if not x.startswith("#")]
    if lines:
        terminalreporter.section("HA scenario results (also appended to tests/ha/results.txt)")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def binary() -> str:
    """REDISHA_BIN if given; else a debug build in its own target dir (so this build does not
    fight other builds of the tree for the lock on a 2-core machine)."""
    given = os.environ.get("REDISHA_BIN")
    if given:
        assert os.access(given, os.X_OK), f"REDISHA_BIN={given} is not executable"
        return given
    target = os.environ.get("CARGO_TARGET_DIR", "/tmp/target-ha")
    subprocess.run(
        ["cargo", "build", "--quiet"],
        cwd=ROOT, check=True, timeout=900,
        env={**os.environ, "CARGO_TARGET_DIR": target},
    )
    path = Path(target) / "debug" / "redisha-init"
    assert path.exists(), f"cargo built no {path}"
    return str(path)


@pytest.fixture(scope="session")
def cluster(binary):
    if os.geteuid() != 0:
        pytest.skip("the HA suite needs root (network and PID namespaces)")
    for tool in ("ip", "unshare", "redis-server"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    tmp = Path(tempfile.mkdtemp(prefix=f"{harness.PREFIX}-"))
    c = harness.Cluster(binary, tmp)
    try:
        c.setup()
        harness.log(f"cluster state and logs under {tmp}")
        harness.record(f"# run {time.strftime('%Y-%m-%d %H:%M:%S')} bin={binary} "
                       f"password={'yes' if harness.PASSWORD else 'no'} timings={c.timings}")
        yield c
    finally:
        c.teardown()
        if os.environ.get("REDISHA_HA_KEEP") is None:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def healthy(cluster):
    """A cluster with three running pods and every invariant true; restarts missing pods (a
    scenario run alone, or after another one left a pod down)."""
    missing = [p.idx for p in cluster.pods if not p.alive]
    if missing:
        cluster.start_pods(missing, new_ip=True)
    cluster.settle(90, "a healthy three-pod cluster before the scenario")
    return cluster


@pytest.fixture
def healthy_or_dead(cluster):
    """Scenario 3 needs the pod that scenario 2 killed: (cluster, that pod). Run alone, it kills
    the master pod itself first."""
    dead = [p for p in cluster.pods if not p.alive]
    if len(dead) != 1:
        if dead:
            cluster.start_pods([p.idx for p in dead], new_ip=True)
        m = cluster.master_pod()
        cluster.kill_pod(m.idx)
        dead = [m]
    cluster.settle(90, "two pods serving, one pod down")
    return cluster, dead[0]
