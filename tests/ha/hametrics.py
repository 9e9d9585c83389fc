"""Scrapes of the pods' Prometheus endpoints (issue 33), parsed with prometheus_client's text
parser, so that the tests read the exposition the way Prometheus does."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from hanet import addr

METRICS_PORT = 9379  # REDISHA_METRICS_PORT of every pod (hacluster.Pod.env), as in k8s/ and docker/


def scrape_text(ip: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(f"http://{addr(ip, METRICS_PORT)}/metrics",
                                timeout=timeout) as r:
        assert r.status == 200, r.status
        assert r.headers.get("Content-Type", "").startswith("text/plain; version=0.0.4"), r.headers
        return r.read().decode()


class Sample(dict):
    """{(sample name, sorted label items): value} of one scrape."""

    def get_value(self, name: str, **labels) -> float | None:
        return self.get((name, tuple(sorted(labels.items()))))

    def v(self, name: str, **labels) -> float:
        """The value, 0 when the series is absent (a counter never exported counts nothing)."""
        x = self.get_value(name, **labels)
        return 0.0 if x is None else x


def parse(text: str) -> Sample:
    out = Sample()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(ip: str, timeout: float = 2.0) -> Sample:
    return parse(scrape_text(ip, timeout))


def scrape_all(pods) -> dict[str, Sample]:
    """pod name -> its scrape, for every live pod (a pod that does not answer fails the test)."""
    return {p.name: scrape(p.ip) for p in pods}
