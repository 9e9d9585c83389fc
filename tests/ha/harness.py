"""The HA harness: three "pods" on one machine (network namespaces on a private bridge, each
running redisha-init as PID 1 of its own PID namespace), plus a writer that goes through
Sentinel like an application. Split by concern; this module gathers them so that tests and
benches keep `import harness` / `from harness import ...`:

    hanet      namespace and network plumbing: names, addresses, bridge, veths, hosts files
    hacluster  the pods and the cluster: spawn, kill, graceful stop, partition, security, timings
    hachecks   invariants and observations (a mixin of Cluster), RoleSampler
    hawriter   the application: the Sentinel-aware writer recording acknowledged writes
    rhtest     (tests/pylib) log, run, wait_until, PID 1 under unshare, the writer itself

and keeps the results file of the HA scenarios (record).
"""

from __future__ import annotations

import sys
from pathlib import Path

# rhtest lives in tests/pylib, shared with tests/docker and the benches.
_PYLIB = str(Path(__file__).resolve().parents[1] / "pylib")
if _PYLIB not in sys.path:
    sys.path.insert(0, _PYLIB)

from hachecks import RoleSampler  # noqa: E402
from hacluster import (ACL_ON, DEFAULT_SECURITY, Acl, make_acl, DOWN_AFTER, MIN_REPLICAS_MAX_LAG, PASSWORD,  # noqa: E402
                       POD_EXIT_TIMEOUT, TIMINGS, Cluster, Pod, Security, StopOutcome, Tls,
                       client, client_kwargs, cold_start, info_replication,
                       stop_master_and_watch)
from hanet import (FAMILY, GROUP, LOCK_PATH, NPODS, PREFIX, REDIS_PORT,  # noqa: E402
                   SENTINEL_PORT, SUBNET, addr, address)
from hawriter import PROXY_PORT, ProxyWriter, Writer  # noqa: E402
from rhtest import WriteResult, log, run, stop_gap, wait_until  # noqa: E402

__all__ = [
    "ACL_ON", "Acl", "make_acl",
    "DEFAULT_SECURITY", "DOWN_AFTER", "FAMILY", "GROUP", "LOCK_PATH", "MIN_REPLICAS_MAX_LAG",
    "NPODS", "PASSWORD", "POD_EXIT_TIMEOUT", "PREFIX", "PROXY_PORT", "ProxyWriter", "RECORDED",
    "REDIS_PORT", "RESULTS",
    "SENTINEL_PORT", "SUBNET", "TIMINGS", "Cluster", "Pod", "RoleSampler", "Security",
    "StopOutcome", "Tls", "WriteResult", "Writer", "addr", "address", "client", "client_kwargs",
    "cold_start", "info_replication", "log", "record", "run", "stop_gap",
    "stop_master_and_watch", "wait_until",
]

RESULTS = Path(__file__).with_name("results.txt")
# This session's lines, shown again in pytest's terminal summary (conftest). Append-only.
RECORDED: list[str] = []


def record(line: str) -> None:
    RECORDED.append(line)
    print(line, flush=True)
    with open(RESULTS, "a") as f:
        f.write(line + "\n")
