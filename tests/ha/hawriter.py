"""The HA harness's application: rhtest.AckWriter (the Sentinel-aware writer that records
acknowledged writes) bound to a harness cluster: it asks the cluster's live sentinels and speaks
the cluster's security (password, TLS)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rhtest import AckWriter, WriteResult, stop_gap

if TYPE_CHECKING:
    from hacluster import Cluster

__all__ = ["Writer", "WriteResult", "stop_gap"]


class Writer(AckWriter):
    def __init__(self, cluster: Cluster, key: str, rate: float = 100):
        # The security is taken now: a writer outlives no set_security (the TLS test starts
        # its writers after switching).
        super().__init__(cluster.sentinel_addrs, key, rate, cluster.security.app_kwargs())
        self.cluster = cluster
