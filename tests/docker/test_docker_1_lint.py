"""Static checks: the Dockerfile passes hadolint, every manifest validates against the API schemas."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

import docker_helpers as h

K8S_VERSION = "1.33.0"  # a current Kubernetes; kubernetes-validate also knows newer ones


def manifest_files() -> list[Path]:
    """Every YAML file under k8s/ that holds Kubernetes objects (kustomization files excluded)."""
    out = []
    for p in sorted(h.K8S_DIR.rglob("*.y*ml")):
        docs = [d for d in yaml.safe_load_all(p.read_text()) if d]
        # k8s/monitoring: Prometheus Operator objects (no schema in kubernetes-validate) and plain
        # Prometheus rule files are checked by promtool (tests/ha/test_metrics.py).
        if docs and all("kind" in d and not str(d.get("apiVersion", "")).startswith(
                ("kustomize.config.k8s.io", "monitoring.coreos.com")) for d in docs):
            out.append(p)
    return out


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.fail(f"{name} not found: pip install -r tests/docker/requirements.txt")
    return found


def test_hadolint_passes():
    r = h.run([tool("hadolint"), str(h.DOCKER_DIR / "Dockerfile")], timeout=60, check=False)
    assert r.returncode == 0, f"hadolint:\n{r.stdout}{r.stderr}"


def test_manifests_found():
    names = {p.relative_to(h.K8S_DIR).as_posix() for p in manifest_files()}
    for want in ("seed/redis-primary.yaml", "seed/redis-secondary.yaml",
                 "production/redis.yaml",
                 "production/services.yaml", "production/pdb.yaml"):
        assert want in names, f"{want} missing from k8s/ ({sorted(names)})"


@pytest.mark.parametrize("version", [K8S_VERSION, "1.37.0"])
def test_kubernetes_validate_strict(version):
    files = [str(p) for p in manifest_files()]
    r = h.run([tool("kubernetes-validate"), "--strict", "--no-warn", "-k", version, *files],
              timeout=120, check=False)
    assert r.returncode == 0, f"kubernetes-validate --strict:\n{r.stdout}{r.stderr}"
    # Every object was checked against a schema (none skipped as unknown).
    passed = r.stdout.count("passed for resource")
    objects = sum(1 for f in files for d in yaml.safe_load_all(Path(f).read_text()) if d)
    assert passed == objects, r.stdout


def test_kubernetes_validate_rejects_unknown_fields(tmp_path):
    """The validator really is strict here: a misspelt field fails (a control for the test above)."""
    bad = tmp_path / "bad.yaml"
    doc = yaml.safe_load((h.K8S_DIR / "seed" / "namespace.yaml").read_text())
    doc["spec"] = {"finalizerz": []}
    bad.write_text(yaml.safe_dump(doc))
    r = h.run([tool("kubernetes-validate"), "--strict", "--no-warn", "-k", K8S_VERSION, str(bad)],
              timeout=60, check=False)
    assert r.returncode != 0, r.stdout
