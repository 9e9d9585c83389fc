"""The HA harness's application: rhtest.AckWriter (the Sentinel-aware writer that records
acknowledged writes) bound to a harness cluster: it asks the cluster's live sentinels and speaks
the cluster's security (password, TLS)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import redis

from rhtest import AckWriter, WriteResult, stop_gap

if TYPE_CHECKING:
    from hacluster import Cluster

__all__ = ["PROXY_PORT", "ProxyWriter", "Writer", "WriteResult", "stop_gap"]

# REDISHA_MASTER_PROXY_PORT of the pods (hacluster.TIMINGS).
PROXY_PORT = 6380


class Writer(AckWriter):
    def __init__(self, cluster: Cluster, key: str, rate: float = 100):
        # The security is taken now: a writer outlives no set_security (the TLS test starts
        # its writers after switching).
        super().__init__(cluster.sentinel_addrs, key, rate, cluster.security.app_kwargs())
        self.cluster = cluster


class ProxyWriter(Writer):
    """A client that does not speak Sentinel: a plain redis-py connection to a pod's master proxy
    (REDISHA_MASTER_PROXY_PORT). `pods`: the pod indexes it may use, in turn after each failure
    (as a Service picks another ready pod); None: every live pod. Acknowledged writes are
    recorded as by Writer, with the proxy's address as the host."""

    def __init__(self, cluster: Cluster, key: str, pods: list[int] | None = None,
                 rate: float = 100):
        super().__init__(cluster, key, rate)
        self.pods = pods
        self.turn = 0

    def addrs(self) -> list[tuple[str, int]]:
        pods = ([self.cluster.pods[i] for i in self.pods] if self.pods is not None
                else self.cluster.live())
        return [(p.ip, PROXY_PORT) for p in pods if p.ip]

    def run(self) -> None:
        n, conn, host = 1, None, None
        while not self.stop_ev.is_set():
            t = time.monotonic()
            if conn is None:
                addrs = self.addrs()
                if not addrs:
                    self.stop_ev.wait(0.05)
                    continue
                host, port = addrs[self.turn % len(addrs)]
                self.turn += 1
                conn = self.connect(host, port, 0.5)
            try:
                conn.rpush(self.key, n)
                self.on_ack(n, host)
                n += 1
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, OSError) as e:
                self._err(e)
                conn.close()
                conn = None
                continue
            except redis.ResponseError as e:
                self._err(e)
                conn.close()
                conn = None
                self.stop_ev.wait(0.05)
                continue
            self.stop_ev.wait(max(0.0, self.period - (time.monotonic() - t)))
