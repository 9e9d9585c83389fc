"""Issue 33: the Prometheus endpoint PID 1 serves (REDISHA_METRICS_PORT; every pod of the
harness runs with it). A live scrape of every pod parses with prometheus_client's parser and
passes `promtool check metrics`; the alert rules of k8s/monitoring pass `promtool check rules`
and their unit tests (`promtool test rules`: each alert firing and not firing); a graceful stop
of the master counts one handover (outcome done) on the old master's pod and a rise of the
config epoch on every pod; a switchover run inside a pod is counted there, refused or done. The
other counters are asserted where their fault already happens (test_scenarios.py: 2 failovers,
7/7b restarts, 8c the stall fence). ~20 s."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

import harness
import ops
from hametrics import parse, scrape, scrape_all, scrape_text
from harness import record, wait_until

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "k8s" / "monitoring"
RULE_TESTS = MONITORING / "prometheus-rules.test.yml"


def promtool() -> str:
    p = shutil.which("promtool")
    if p is None:
        pytest.skip("promtool not installed (scripts/setup test installs it: Debian's "
                    "prometheus package)")
    return p


def test_alert_rules_check_and_unit_tests(tmp_path):
    """No cluster needed: the PrometheusRule's rule groups are valid and every alert's unit
    tests (firing and not firing) pass. promtool reads plain rule files: the manifest's `spec`
    is one, written next to a copy of the tests."""
    pt = promtool()
    doc = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert doc["kind"] == "PrometheusRule"
    (tmp_path / "redisha.rules.yml").write_text(yaml.safe_dump(doc["spec"]))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    r = subprocess.run([pt, "check", "rules", "redisha.rules.yml"], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([pt, "test", "rules", RULE_TESTS.name], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    alerts = {x["alert"] for g in doc["spec"]["groups"] for x in g["rules"] if "alert" in x}
    tests = RULE_TESTS.read_text()
    for a in alerts:
        assert f"alertname: {a}" in tests, f"{a} has no unit test"


def test_live_scrape_of_every_pod(healthy):
    """Every pod answers; the exposition parses; one master, writable; replicas linked; every
    sentinel names the same master at the same epoch and is failover-safe; promtool is happy.
    The gauges follow the cluster within a second or so (the role from the offset recorder's
    look each second, the epoch after the sentinel's events): polled, bounded."""
    c = healthy

    def problems() -> list[str]:
        master = c.current_master()
        s = scrape_all(c.live())
        out = []
        if len({x.v("redisha_config_epoch") for x in s.values()}) != 1:
            out.append("epochs differ")
        for p in c.live():
            x, is_master = s[p.name], p.ip == master
            want = {
                ("redisha_role", ("role", "master")): 1 if is_master else 0,
                ("redisha_role", ("role", "replica")): 0 if is_master else 1,
                ("redisha_writable", None): 1 if is_master else 0,
                ("redisha_master_info", ("master", harness.addr(master or "?",
                                                                harness.REDIS_PORT))): 1,
                ("redisha_failover_safe", None): 1,
                ("redisha_sentinel_up", None): 1,
                ("redisha_sentinel_tilt", None): 0,
            }
            if not is_master:
                want[("redisha_replication_link_up", None)] = 1
            for (name, label), v in want.items():
                got = x.v(name, **dict([label])) if label else x.v(name)
                if got != v:
                    out.append(f"{p.name}: {name}{label or ''} = {got}, want {v}")
            if is_master and x.get_value("redisha_replication_lag_bytes") is None:
                out.append(f"{p.name}: no lag gauge on the master")
            if not 0 < x.v("process_resident_memory_bytes") < 64 << 20:
                out.append(f"{p.name}: RSS {x.v('process_resident_memory_bytes')}")
        return out
    try:
        wait_until(lambda: not problems(), 30, 0.5, "every pod's scrape as the cluster is")
    except AssertionError as e:
        raise AssertionError(f"{e}: {problems()}") from None
    text = scrape_text(c.live()[0].ip)
    parse(text)
    pt = promtool()
    r = subprocess.run([pt, "check", "metrics"], input=text, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # and no lint finding printed either
    assert not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def test_graceful_stop_counts_one_handover_and_the_epoch_on_every_pod(healthy):
    """SIGTERM of the master: its pod counts handovers{outcome="done"} once (kept in its state
    directory across the restart of PID 1, since the pod exits right after); every pod's epoch
    rises, and the survivors count a failover."""
    c = healthy
    before = scrape_all(c.live())
    out = harness.stop_master_and_watch(c, watch=1)
    assert out.exit_code == 0 and out.new_master, out
    old = next(p for p in c.pods if p.name == out.pod)
    ep = "redisha_config_epoch"
    for p in c.live():
        b = before[p.name]
        wait_until(lambda p=p, b=b: (lambda a: a.v(ep) > b.v(ep)
                                     and a.v("redisha_failovers_total")
                                     > b.v("redisha_failovers_total"))(scrape(p.ip)),
                   10, 0.2, f"{p.name} counts the failover and the new epoch")
    c.start_pods([old.idx], new_ip=True)
    c.settle(60, "the old master back as a replica")
    b = before[old.name]
    a = wait_until(lambda: (lambda x: x if x.v(ep) > b.v(ep) else None)(scrape(old.ip)),
                   15, 0.2, f"{old.name} back at the new epoch")
    done = a.v("redisha_handovers_total", outcome="done") - b.v("redisha_handovers_total",
                                                                outcome="done")
    others = sum(a.v("redisha_handovers_total", outcome=o) - b.v("redisha_handovers_total",
                                                                  outcome=o)
                 for o in ("skipped", "failed"))
    hist = (a.v("redisha_handover_duration_seconds_count")
            - b.v("redisha_handover_duration_seconds_count"))
    took = (a.v("redisha_handover_duration_seconds_sum")
            - b.v("redisha_handover_duration_seconds_sum"))
    record(f"METRICS graceful-stop: handovers_done+={done:.0f} other+={others:.0f} "
           f"duration={took:.2f}s exit={out.exit_s:.2f}s epoch={b.v(ep):.0f}->{a.v(ep):.0f}")
    assert done == 1 and others == 0 and hist == 1, (done, others, hist)
    assert 0 < took <= out.exit_s, (took, out.exit_s)


def test_switchover_from_a_pod_is_counted_there(healthy):
    """`redisha-init switchover` run inside a pod (as `kubectl exec` would): a refusal and a move
    each counted once on that pod, by outcome; every pod counts the move's failover. ~5 s."""
    c = healthy
    master = c.current_master()
    where = next(p for p in c.live() if p.ip != master)
    # A pod that came back on a new address (the previous test) gets its stale sentinel entries
    # reset by the others a few seconds later, and a resetting sentinel holds an out-of-reach
    # quorum until it knows the replicas again: not failover-safe meanwhile (exit 3). Both that
    # and "no candidate" (5) are refusals; each one is counted.
    assert c.time_to_failover_safe(30) is not None, "not failover-safe within 30 s"
    before = scrape_all(c.live())
    sw = "redisha_switchovers_total"
    refused = ops.run_cli(c, where, "switchover", "--to", harness.addr(master, harness.REDIS_PORT))
    assert refused.code in (3, 5), (refused.code, refused.err)
    n_refused = 1
    for _ in range(30):
        moved = ops.run_cli(c, where, "switchover", "--timeout", "10", timeout=40)
        if moved.code != 3:
            break
        n_refused += 1
        time.sleep(1)
    assert moved.code == 0, (moved.code, moved.out, moved.err)
    a = scrape(where.ip)
    b = before[where.name]
    assert (a.v(sw, outcome="refused") - b.v(sw, outcome="refused"),
            a.v(sw, outcome="done") - b.v(sw, outcome="done"),
            a.v(sw, outcome="failed") - b.v(sw, outcome="failed")) == (n_refused, 1, 0)
    for p in c.live():
        n = before[p.name].v("redisha_failovers_total")
        wait_until(lambda p=p, n=n: scrape(p.ip).v("redisha_failovers_total") > n, 10, 0.2,
                   f"{p.name} counts the switchover's failover")
    record(f"METRICS switchover: from {where.name} counted refused+{n_refused} done+1 in "
           f"{moved.took:.2f}s")
