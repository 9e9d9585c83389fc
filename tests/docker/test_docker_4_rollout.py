"""Issue 16: a rolling update of k8s/production's one StatefulSet, played on the compose cluster.

No Kubernetes runs here, so the StatefulSet controller's documented order (OrderedReady,
RollingUpdate: highest ordinal first, the next pod only once this one is Ready for
minReadySeconds) is played against docker/compose.yml with a writer going (tests/docker/
rollout.py). Readiness is the manifests' readinessProbe run in the container; minReadySeconds is
read from k8s/production/redis.yaml, so the test checks the value shipped. The cluster runs with
the binary's default timings (down-after 5000), as the manifests do."""

from __future__ import annotations

import os
import time

import pytest
import yaml

import docker_helpers as h
import rollout
from test_docker_3_cluster import NODES, Cluster, settled

MAX_GAP_S = 2.0


def manifest_min_ready_s() -> int:
    doc = yaml.safe_load((h.K8S_DIR / "production" / "redis.yaml").read_text())
    return int(doc["spec"]["minReadySeconds"])


@pytest.fixture(scope="module")
def roll_cluster(images):
    c = Cluster(f"redisharoll{os.getpid()}", h.free_subnet_prefix(), images)
    # The manifests' timings: the binary's defaults.
    c.env["REDISHA_DOWN_AFTER_MS"] = "5000"
    c.env["REDISHA_FAILOVER_TIMEOUT_MS"] = "10000"
    c.down()
    try:
        c.up()
        yield c
    except BaseException:
        h.log("cluster logs:\n" + c.logs())
        raise
    finally:
        c.down()


@pytest.mark.timeout(900)
def test_rolling_update_one_pod_at_a_time(roll_cluster, images):
    c = roll_cluster
    min_ready = manifest_min_ready_s()
    h.wait_until(what="one master, two linked replicas, three sentinels agreeing",
                 pred=lambda: settled(c, "redis-primary", ["redis-secondary-1", "redis-secondary-2"]), timeout=90, retry_on=h.ANY_ERROR)
    # A rollout starts from a cluster whose pods are all Ready.
    for n in NODES:
        h.wait_until(what=f"{n} ready", pred=lambda n=n: rollout.probe_ready(c.ids[n])[0], timeout=60, interval=0.5, retry_on=h.ANY_ERROR)
    new_tag = rollout.new_images(images)
    writer = rollout.Writer([(ip, rollout.SENTINEL_PORT) for ip in c.ip.values()], key="rollout")
    sampler = rollout.RoleSampler(c.ip)
    writer.start()
    sampler.start()
    try:
        time.sleep(2)
        steps = rollout.roll(c, new_tag, min_ready, writer=writer)
        time.sleep(1)
    except BaseException:
        h.log("cluster logs:\n" + c.logs())
        raise
    finally:
        sampler.finish()
        res = writer.finish()
        gap, gap_at = res.max_gap, res.gap_at

    master = h.wait_until(what="the sentinels agreeing on a master", pred=lambda: c.agreed_master(list(NODES)), timeout=30, retry_on=h.ANY_ERROR)
    others = [n for n in NODES if n != master]
    h.wait_until(what="the cluster settled after the rollout", pred=lambda: settled(c, master, others), timeout=60, retry_on=h.ANY_ERROR)
    lost = writer.lost_on(c.ip[master])
    lost_on_replicas = {n: len(writer.lost_on(c.ip[n])) for n in others}
    per_sample = sampler.masters_per_sample()
    bad = sampler.bad_samples()
    h.record("rollout_steps", [
        {"ordinal": s.ordinal, "node": s.node, "stop_s": round(s.stop_s, 2), "exit": s.exit_code,
         "start_to_ready_s": round(s.ready_s, 2), "start_to_relearned_s": round(s.relearned_s, 2),
         "write_gap_s": round(s.gap_s, 2), "probe_runs": s.probe_runs} for s in steps])
    h.record("rollout_write_gap_s", round(gap, 2))
    h.record("rollout_acked_writes", len(writer.acked))
    h.record("rollout_lost", len(lost))
    h.record("rollout_role_samples", len(per_sample))
    h.record("rollout_paused_overlap_samples", sampler.paused_overlap_samples())
    h.record("rollout_writer_errors", writer.errors)
    h.log(f"rollout: steps={[(s.node, round(s.ready_s, 1), round(s.relearned_s, 1), round(s.gap_s, 2)) for s in steps]} "
          f"gap={gap:.2f}s at {gap_at:.1f}s acked={len(writer.acked)} lost={len(lost)} samples={len(per_sample)} "
          f"bad_samples={len(bad)} paused_overlap={sampler.paused_overlap_samples()} errors={writer.errors}")

    assert [s.ordinal for s in steps] == [2, 1, 0]
    for s in steps:
        assert s.exit_code == "0", f"{s.node} exited {s.exit_code} on docker stop"
        assert s.image_new, f"{s.node} was not recreated from the new image"
        # minReadySeconds covers the time the other sentinels need to learn the pod again.
        assert s.relearned_s <= s.ready_s + min_ready, (
            f"{s.node}: relearned {s.relearned_s:.1f} s after its start, ready at {s.ready_s:.1f} s, "
            f"minReadySeconds {min_ready}")
    assert len(writer.acked) > 100, f"the writer hardly wrote: {len(writer.acked)} ({writer.errors})"
    assert not lost, f"acknowledged writes lost: {lost[:20]}"
    assert not any(lost_on_replicas.values()), f"a replica misses acknowledged writes: {lost_on_replicas}"
    assert len(per_sample) > 100, "the role sampler hardly sampled"
    # One master at every sample: never two accepting writes, never none answering as master.
    assert not bad, f"{len(bad)} of {len(per_sample)} samples did not show one master: {bad[:5]}"
    assert gap < MAX_GAP_S, f"write gap {gap:.2f} s at {gap_at:.1f} s"
    # One pod down at a time: never two nodes silent in the same sample.
    assert sampler.most_silent() <= 1, f"{sampler.most_silent()} nodes silent in one sample"
