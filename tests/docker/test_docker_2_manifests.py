"""Manifests and binary cannot drift apart: the binary is run with exactly the environment each
workload in k8s/ (and each service in docker/compose.yml) declares, the way its pod would see it,
and what it renders is checked line by line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import docker_helpers as h

# Variables a manifest may declare before the binary reads them (name -> the issue adding them).
# Empty: every declared variable must be read.
PENDING: dict[str, str] = {}
PASSWORD = "drift-test-password"
# Worst time, over every pod restart of benches/rollout.py, from a pod's start until every
# sentinel lists it again (BENCHMARKS.md, "Rolling update of the one StatefulSet").
MEASURED_RELEARN_S = 3


@pytest.fixture(scope="module")
def binary() -> Path:
    """The binary as built on the host (`cargo build`), or REDISHA_TEST_BINARY."""
    given = os.environ.get("REDISHA_TEST_BINARY")
    if given:
        return Path(given)
    target = os.environ.get("CARGO_TARGET_DIR", "/tmp/target-docker")
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    h.run(["cargo", "build", "--quiet", "--bin", "redisha-init"], timeout=600, env=env, cwd=h.REPO)
    return Path(target) / "debug" / "redisha-init"


def k8s_docs() -> list[tuple[Path, dict]]:
    out = []
    for p in sorted(h.K8S_DIR.rglob("*.yaml")):
        for d in yaml.safe_load_all(p.read_text()):
            if d and "kind" in d and not str(d.get("apiVersion", "")).startswith("kustomize"):
                out.append((p, d))
    return out


def workloads():
    """(id, doc, pod spec, container, pod name) for every container of every Deployment, and of
    every pod of every StatefulSet (its pods differ by name only, and the name's ordinal decides
    the first-boot role of REDISHA_ROLE=ordinal)."""
    out = []
    for p, d in k8s_docs():
        if d["kind"] not in ("Deployment", "StatefulSet"):
            continue
        spec = d["spec"]["template"]["spec"]
        name = d["metadata"]["name"]
        pods = ([f"{name}-{i}" for i in range(d["spec"].get("replicas", 1))]
                if d["kind"] == "StatefulSet" else [None])
        for c in spec["containers"]:
            for pod in pods:
                wid = f"{p.parent.name}/{d['kind']}/{name}" + (f"/{pod}" if pod else "")
                out.append((wid, d, spec, c, pod))
    return out


WORKLOADS = workloads()
IDS = [w[0] for w in WORKLOADS]


def first_boot_role(env: dict, pod_name: str | None) -> str:
    """The role a pod takes when no sentinel answers, as the binary decides it."""
    role = env["REDISHA_ROLE"]
    if role != "ordinal":
        return role
    assert pod_name, "REDISHA_ROLE=ordinal needs the pod's name"
    return "master" if pod_name.rsplit("-", 1)[1] == "0" else "replica"


def pod_env(doc: dict, spec: dict, container: dict, pod_ip: str, tmp: Path,
            pod_name: str | None = None) -> dict:
    """The environment the container gets, as a kubelet would build it."""
    assert not container.get("envFrom"), "envFrom hides variables from review; declare each one"
    assert spec.get("enableServiceLinks") is False, (
        "enableServiceLinks must be false: Kubernetes would inject <SERVICE>_SERVICE_HOST variables, "
        "and a Service named redis-master would silently set REDIS_MASTER_SERVICE_HOST")
    env = {}
    for e in container.get("env", []):
        name = e["name"]
        if "value" in e:
            env[name] = str(e["value"])
            continue
        ref = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        assert ref in ("status.podIP", "metadata.name"), (
            f"{name}: only literal values, status.podIP and metadata.name are expected")
        if ref == "metadata.name":
            assert pod_name, f"{name}: metadata.name in a workload whose pod names are not known"
            env[name] = pod_name
        else:
            env[name] = pod_ip
    # A Secret mounted as a file: the harness supplies the file where the pod would have it.
    for name, path in list(env.items()):
        if name.endswith("_FILE"):
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            mount = next((m for m in mounts if path.startswith(m.rstrip("/") + "/")), None)
            assert mount, f"{name}={path} is not inside any volumeMount of the container"
            vol = next(v for v in spec["volumes"] if v["name"] == mounts[mount])
            assert "secret" in vol, f"{name}: {mount} should be a Secret volume"
            f = tmp / name.lower()
            f.write_text(PASSWORD)
            f.chmod(0o400)
            env[name] = str(f)
    return env


def run_render(binary: Path, args: list[str], env: dict) -> subprocess.CompletedProcess:
    assert args[:1] == ["run"], f"container args should start with the run subcommand: {args}"
    return subprocess.run([str(binary), "render", *args[1:]], env=env, capture_output=True,
                          text=True, timeout=60)


def expected_lines(env: dict, pod_ip: str, role: str) -> list[str]:
    port = env.get("MASTER_ANNOUNCE_PORT", "6379")
    sport = env.get("SENTINEL_ANNOUNCE_PORT", "26379")
    want = [
        f"port {port}",
        f"port {sport}",
        "bind * -::*",
        "protected-mode no",
        f"replica-announce-ip {pod_ip}",
        f"replica-announce-port {port}",
        f"sentinel announce-ip {pod_ip}",
        f"sentinel announce-port {sport}",
        "sentinel resolve-hostnames yes",
    ]
    if role == "master":
        want.append(f"sentinel monitor mymaster {pod_ip} {port} 2")
    else:
        host, mport = env["REDIS_MASTER_SERVICE_HOST"], env.get("REDIS_MASTER_SERVICE_PORT", "6379")
        # No sentinel answers and the Service name does not resolve on the test host, so the
        # replica follows the declared master Service, by name, as on a pod's first boot.
        want += [f"replicaof {host} {mport}", f"sentinel monitor mymaster {host} {mport} 2"]
    if "REDISHA_DOWN_AFTER_MS" in env:
        want.append(f"sentinel down-after-milliseconds mymaster {env['REDISHA_DOWN_AFTER_MS']}")
    return want


def check_render(binary: Path, args: list[str], env: dict, pod_ip: str, pod_name: str | None = None) -> str:
    r = run_render(binary, args, env)
    assert r.returncode == 0, f"render exited {r.returncode}: {r.stderr}"
    lines = r.stdout.splitlines()
    role = first_boot_role(env, pod_name)
    assert any(l.startswith(f"# role: {role} ") for l in lines), f"not rendered as {role}:\n{r.stdout}"
    for want in expected_lines(env, pod_ip, role):
        assert want in lines, f"render lacks {want!r}:\n{r.stdout}"
    if role == "master":
        assert not any(l.startswith("replicaof") for l in lines), r.stdout
    assert "cluster-announce" not in r.stdout
    assert PASSWORD not in r.stdout, "the password from the Secret file appears in render output"
    return r.stdout


@pytest.mark.parametrize("wid,doc,spec,container,pod", WORKLOADS, ids=IDS)
def test_manifest_env_renders(binary, tmp_path, wid, doc, spec, container, pod):
    pod_ip = f"10.244.{IDS.index(wid) + 1}.7"
    env = pod_env(doc, spec, container, pod_ip, tmp_path, pod)
    check_render(binary, container.get("args", ["run"]), env, pod_ip, pod)


@pytest.mark.parametrize("wid,doc,spec,container,pod", WORKLOADS, ids=IDS)
def test_manifest_shape(wid, doc, spec, container, pod):
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    role = env["REDISHA_ROLE"]
    # ordinal: one image for every pod, the one whose built-in role is the safe one (k8s/README.md).
    assert container["image"].split("/")[-1].startswith(f"{'master' if role == 'master' else 'replica'}-sentinel:")
    assert doc["metadata"]["namespace"] == "web"
    grace_ms = int(env["REDISHA_STOP_GRACE_MS"])
    # The kubelet must not SIGKILL before redisha-init's own bounded stop is over.
    assert spec["terminationGracePeriodSeconds"] * 1000 >= grace_ms + 4000
    ports = {p["containerPort"] for p in container["ports"]}
    # The master proxy (issue 32) runs in every pod of every layout.
    want = {int(env["MASTER_ANNOUNCE_PORT"]), int(env["SENTINEL_ANNOUNCE_PORT"]),
            int(env["REDISHA_MASTER_PROXY_PORT"])}
    assert {p["name"] for p in container["ports"]} >= {"redis", "sentinel", "proxy"}
    # issue 33: PID 1's Prometheus endpoint, on a port named for the PodMonitor (k8s/monitoring)
    metrics = int(env["REDISHA_METRICS_PORT"])
    assert {p["name"]: p["containerPort"] for p in container["ports"]}.get("metrics") == metrics
    assert ports == want | {metrics}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    sentinels = env["REDISHA_SENTINELS"].split(",")
    if wid.startswith("seed/"):
        # The endpoints the seed's clients use.
        assert sentinels == ["redis-primary:26379", "redis-secondary:26379"]
    else:
        assert doc["kind"] == "StatefulSet" and doc["spec"]["volumeClaimTemplates"]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["affinity"]["podAntiAffinity"]
        assert "REDIS_PASSWORD" not in env, "the password comes from a file, never from env"
        assert env.get("REDIS_PASSWORD_FILE")
    probes = {k: container[k]["exec"]["command"] for k in ("readinessProbe", "livenessProbe", "startupProbe")}
    # Ready = failover-safe (the sentinel's readiness), so rolling updates wait for it.
    assert probes["readinessProbe"] == ["redisha-init", "probe", "sentinel", "--ready"]
    assert probes["livenessProbe"] == ["redisha-init", "probe", "redis", "--live"]
    assert probes["startupProbe"][:3] == ["redisha-init", "probe", "sentinel"]


def test_production_has_pdb_and_headless_service():
    kinds = {(d["kind"], d["metadata"]["name"]) for p, d in k8s_docs() if p.parent.name == "production"}
    assert ("PodDisruptionBudget", "redis-ha") in kinds
    headless = [d for p, d in k8s_docs() if p.parent.name == "production" and d["kind"] == "Service"
                and d["spec"].get("clusterIP") == "None"]
    assert headless and headless[0]["spec"]["publishNotReadyAddresses"] is True
    for p, d in k8s_docs():
        if p.parent.name == "production" and d["kind"] == "StatefulSet":
            assert d["spec"]["serviceName"] == headless[0]["metadata"]["name"]


def production(kind: str) -> list[dict]:
    return [d for p, d in k8s_docs() if p.parent.name == "production" and d["kind"] == kind]


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_production_is_one_rolling_sequence():
    """Issue 16: one StatefulSet for the three nodes, so one controller rolls them one at a time
    (two StatefulSets would each stop a pod at once: two of three voters down)."""
    sets = production("StatefulSet")
    assert [d["metadata"]["name"] for d in sets] == ["redis"], "one StatefulSet for all three nodes"
    assert not production("Deployment")
    spec = sets[0]["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    assert spec["updateStrategy"].get("rollingUpdate", {}).get("partition", 0) == 0
    # Not the alpha maxUnavailable: one pod at a time is the default and the point.
    assert "maxUnavailable" not in spec["updateStrategy"].get("rollingUpdate", {})
    # The time every sentinel needs to learn a restarted pod again, measured (BENCHMARKS.md);
    # test_docker_4_rollout checks on the compose cluster that it covers what it measures there.
    assert spec["minReadySeconds"] >= MEASURED_RELEARN_S
    c = spec["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["REDISHA_ROLE"]["value"] == "ordinal"
    assert env["REDISHA_POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    svc = spec["serviceName"]
    names = [f"redis-{i}.{svc}" for i in range(spec["replicas"])]
    assert env["REDIS_MASTER_SERVICE_HOST"]["value"] == names[0], "the first-boot master is ordinal 0"
    assert env["REDISHA_SENTINELS"]["value"].split(",") == [f"{n}:26379" for n in names]


def test_production_services_and_pdb():
    labels = production("StatefulSet")[0]["spec"]["template"]["metadata"]["labels"]
    services = {d["metadata"]["name"]: d for d in production("Service")}
    headless = services["redis-headless"]
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert production("StatefulSet")[0]["spec"]["serviceName"] == "redis-headless"
    # The seed's client endpoints still answer, and select every pod: all sentinels say the same.
    for name in ("redis-primary", "redis-secondary"):
        s = services[name]["spec"]
        assert [(p["port"], p["targetPort"]) for p in s["ports"]] == [(26379, "sentinel")], name
        assert selects(s["selector"], labels), f"{name} does not select the StatefulSet's pods"
        assert s["publishNotReadyAddresses"] is True
    # Clients that do not speak Sentinel: 6379 of redis-master is every pod's master proxy.
    m = services["redis-master"]["spec"]
    assert [(p["port"], p["targetPort"]) for p in m["ports"]] == [(6379, "proxy")]
    assert selects(m["selector"], labels)
    pdbs = production("PodDisruptionBudget")
    assert [d["metadata"]["name"] for d in pdbs] == ["redis-ha"]
    assert pdbs[0]["spec"]["maxUnavailable"] == 1
    assert selects(pdbs[0]["spec"]["selector"]["matchLabels"], labels)


def test_migration_overlay(tmp_path):
    """k8s/migration (the first step from two StatefulSets to one, k8s/README.md): rendered by
    kustomize, valid under --strict, no pod at first, and the new pods ask the old sentinels."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed (its kustomize renders the overlay)")
    r = h.run([kubectl, "kustomize", str(h.K8S_DIR / "migration")], timeout=60)
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    sts = [d for d in docs if d["kind"] == "StatefulSet"]
    assert [d["metadata"]["name"] for d in sts] == ["redis"]
    assert sts[0]["spec"]["replicas"] == 0
    env = {e["name"]: e.get("value") for e in sts[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    sentinels = env["REDISHA_SENTINELS"].split(",")
    for old in ("redis-primary-0", "redis-secondary-0", "redis-secondary-1", "redis-0", "redis-1", "redis-2"):
        assert f"{old}.redis-headless:26379" in sentinels, old
    assert env["REDISHA_ROLE"] == "ordinal"
    # Up to six pods side by side: required anti-affinity would strand them on three machines.
    anti = sts[0]["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert list(anti) == ["preferredDuringSchedulingIgnoredDuringExecution"], anti
    out = tmp_path / "migration-rendered.yaml"
    out.write_text(r.stdout)
    v = h.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "--no-warn", "-k", "1.33.0",
               str(out)], timeout=120, check=False)
    assert v.returncode == 0, v.stdout + v.stderr
    assert v.stdout.count("passed for resource") == len(docs), v.stdout


def test_valkey_overlay(tmp_path):
    """k8s/valkey (production with the component k8s/components/valkey): rendered by kustomize,
    valid under --strict, and differing from production in the image tag only."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed (its kustomize renders the overlay)")
    prod = [d for d in yaml.safe_load_all(
        h.run([kubectl, "kustomize", str(h.K8S_DIR / "production")], timeout=60).stdout) if d]
    r = h.run([kubectl, "kustomize", str(h.K8S_DIR / "valkey")], timeout=60)
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    images = [c["image"] for d in docs if d["kind"] == "StatefulSet"
              for c in d["spec"]["template"]["spec"]["containers"]]
    assert images == ["redisha/replica-sentinel:0.1.0-valkey"], images
    for d in docs:
        if d["kind"] == "StatefulSet":
            for c in d["spec"]["template"]["spec"]["containers"]:
                c["image"] = c["image"].removesuffix("-valkey")
    assert docs == prod
    out = tmp_path / "valkey-rendered.yaml"
    out.write_text(r.stdout)
    v = h.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "--no-warn", "-k", "1.33.0",
               str(out)], timeout=120, check=False)
    assert v.returncode == 0, v.stdout + v.stderr


def test_compose_runs_either_engine():
    """REDIS_IMAGE and REDISHA_TAG select the engine of docker/compose.yml (docker/README.md)."""
    env = dict(os.environ, REDIS_IMAGE="redisha-local/valkey:8-bookworm", REDISHA_TAG="valkey")
    r = h.run([*h.compose_cmd(), "-f", str(h.COMPOSE_FILE), "config"], timeout=60, env=env)
    cfg = yaml.safe_load(r.stdout)
    for name, svc in cfg["services"].items():
        assert svc["image"].endswith(":valkey"), (name, svc["image"])
        assert svc["build"]["args"]["REDIS_IMAGE"] == "redisha-local/valkey:8-bookworm", name


def test_every_declared_variable_is_read_by_the_binary(binary):
    """A variable the binary never reads is a typo or a feature that does not exist (yet)."""
    blob = binary.read_bytes()
    declared = {e["name"] for _, _, _, c, _ in WORKLOADS for e in c.get("env", [])}
    compose = yaml.safe_load(h.COMPOSE_FILE.read_text())
    for svc in compose["services"].values():
        declared |= set(svc["environment"])
    unknown = sorted(v for v in declared if v.encode() not in blob)
    pending = [v for v in unknown if v in PENDING]
    assert [v for v in unknown if v not in PENDING] == [], f"declared but never read: {unknown}"
    if pending:
        h.record("env_pending_in_binary", {v: PENDING[v] for v in pending})


def test_probe_commands_exist(binary):
    for _, _, _, c, _ in WORKLOADS:
        for k in ("readinessProbe", "livenessProbe", "startupProbe"):
            cmd = c[k]["exec"]["command"]
            r = subprocess.run([str(binary), *cmd[1:], "--help"], capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, f"{cmd}: {r.stderr}"


def test_password_file_reaches_the_config(binary, tmp_path):
    """Production: the Secret file's password ends up in the rendered files (redacted in output)."""
    wid, doc, spec, c, pod = next(w for w in WORKLOADS if w[0].startswith("production/") and w[4].endswith("-0"))
    env = pod_env(doc, spec, c, "10.244.9.9", tmp_path, pod)
    out = check_render(binary, c["args"], env, "10.244.9.9", pod)
    assert re.search(r"^requirepass ", out, re.M), out
    assert re.search(r"^sentinel auth-pass mymaster ", out, re.M), out


def compose_services():
    doc = yaml.safe_load(h.COMPOSE_FILE.read_text())
    return list(doc["services"].items())


@pytest.mark.parametrize("name,svc", compose_services(), ids=[n for n, _ in compose_services()])
def test_compose_env_renders(binary, name, svc):
    prefix = "172.28.53"
    env = {}
    for k, v in svc["environment"].items():
        # ${VAR:-default} -> default, as compose does with nothing set.
        env[k] = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v))
    pod_ip = env["MY_POD_IP"]
    assert pod_ip.startswith(prefix)
    assert svc["networks"]["redisha"]["ipv4_address"].endswith(pod_ip.rsplit(".", 1)[1])
    target = svc["build"]["target"]
    env.setdefault("REDISHA_ROLE", "master" if target == "master-sentinel" else "replica")
    check_render(binary, ["run"], env, pod_ip)
    grace = int(env["REDISHA_STOP_GRACE_MS"])
    period = svc["stop_grace_period"]
    assert period.endswith("s") and int(period[:-1]) * 1000 >= grace + 2000


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
def test_acl_overlay_renders_users(binary, tmp_path):
    """k8s/acl (ACL users): the StatefulSet built by kustomize reads REDISHA_ACL_DIR from the
    Secret volume, no shared password is left, and every pod renders the users."""
    r = subprocess.run(["kubectl", "kustomize", str(h.K8S_DIR / "acl")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    sts = next(d for d in yaml.safe_load_all(r.stdout) if d and d.get("kind") == "StatefulSet")
    spec = sts["spec"]["template"]["spec"]
    c = spec["containers"][0]
    names = {e["name"] for e in c["env"]}
    assert "REDISHA_ACL_DIR" in names and not names & {"REDIS_PASSWORD", "REDIS_PASSWORD_FILE"}
    acl_dir = next(e["value"] for e in c["env"] if e["name"] == "REDISHA_ACL_DIR")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    vol = next(v for v in spec["volumes"] if v["name"] == mounts[acl_dir])
    keys = {i["key"] for i in vol["secret"]["items"]}
    assert keys == {"redisha", "replication", "sentinel", "app"}, keys
    secret = tmp_path / "acl"
    secret.mkdir()
    for k in keys:
        (secret / k).write_text(f"{PASSWORD}-{k}\n")
    for i in range(sts["spec"]["replicas"]):
        pod = f"{sts['metadata']['name']}-{i}"
        env = pod_env(sts, spec, c, f"10.244.20.{i + 1}", tmp_path, pod)
        env["REDISHA_ACL_DIR"] = str(secret)
        out = check_render(binary, c["args"], env, f"10.244.20.{i + 1}", pod)
        for want in ("user default reset off", "user redisha ", "user app ", "masteruser replication",
                     "sentinel auth-user mymaster sentinel", "sentinel sentinel-user sentinel"):
            assert re.search(rf"^{re.escape(want)}", out, re.M), f"{pod}: no {want!r}"
        assert not re.search(r"^requirepass ", out, re.M), out
