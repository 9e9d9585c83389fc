"""Shared helpers for tests/docker: running commands with bounds, building images, measurements."""

from __future__ import annotations

import atexit
import functools
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pylib"))
from rhtest import ANY_ERROR, log, run, wait_until  # noqa: E402,F401 - re-exported as h.*

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
K8S_DIR = REPO / "k8s"
COMPOSE_FILE = DOCKER_DIR / "compose.yml"
TAG = os.environ.get("REDISHA_TEST_TAG", "test")
IMAGE_PREFIX = os.environ.get("REDISHA_TEST_IMAGE_PREFIX", "redisha")
MEASUREMENTS: dict[str, object] = {}
MEASUREMENTS_FILE = Path(os.environ.get("REDISHA_TEST_MEASUREMENTS", "/tmp/redisha-docker-measurements.json"))

log = functools.partial(log, tag="tests/docker", err=True)


def record(key: str, value) -> None:
    MEASUREMENTS[key] = value
    try:
        MEASUREMENTS_FILE.write_text(json.dumps(MEASUREMENTS, indent=2, sort_keys=True))
    except OSError:
        pass


def docker_available() -> str | None:
    """None when a Docker engine answers, else why not."""
    if not shutil.which("docker"):
        return "docker CLI not installed"
    try:
        r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"],
                           capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "docker info timed out"
    return None if r.returncode == 0 else f"no Docker engine: {r.stderr.strip()[:200]}"


def compose_cmd() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=20)
    if r.returncode == 0:
        return ["docker", "compose"]
    raise AssertionError("neither docker-compose nor `docker compose` is installed")


def image_exists(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True,
                          timeout=30).returncode == 0


def image_size_mb(ref: str) -> float:
    r = run(["docker", "image", "inspect", "-f", "{{.Size}}", ref], timeout=30)
    return round(int(r.stdout.strip()) / 1e6, 1)


def base_images() -> tuple[str, str]:
    """The (RUST_IMAGE, REDIS_IMAGE) build arguments: given ones, or the locally made bases."""
    rust = os.environ.get("REDISHA_TEST_RUST_IMAGE")
    redis = os.environ.get("REDISHA_TEST_REDIS_IMAGE")
    if rust and redis:
        return rust, redis
    t0 = time.monotonic()
    run([sys.executable, str(DOCKER_DIR / "local-base" / "make_local_bases.py")], timeout=600)
    record("base_images_s", round(time.monotonic() - t0, 1))
    return rust or "redisha-local/rust:1-bookworm", redis or "redisha-local/redis:7-bookworm"


VALKEY_LOCAL_BASE = "redisha-local/valkey:8-bookworm"


def valkey_base() -> str | None:
    """The server base of the Valkey images: REDISHA_TEST_VALKEY_IMAGE, else the local base (made
    by base_images() from the host's bookworm-backports valkey-server); None when neither."""
    given = os.environ.get("REDISHA_TEST_VALKEY_IMAGE")
    if given:
        return given
    return VALKEY_LOCAL_BASE if image_exists(VALKEY_LOCAL_BASE) else None


def engine_tag(engine: str) -> str:
    """The tag of an engine's images: TAG for Redis, TAG-valkey for Valkey (as REDISHA_TAG)."""
    return TAG if engine == "redis" else f"{TAG}-{engine}"


def snapshot_context(dest: Path) -> Path:
    """Copies what the build context admits (see /.dockerignore) into `dest`, so that all three
    builds see one and the same tree even while files in the work tree change, and the image
    cache (keyed by content) is reused across runs."""
    # .cargo/config.toml and its wrapper make the plain `cargo build` static (README, "Static
    # build"); the Dockerfile builds the same way.
    for name in ("Cargo.toml", "Cargo.lock", "build.rs", ".dockerignore", ".cargo/config.toml",
                 "scripts/rustc-static", "scripts/link-ordered", "scripts/hot-symbols.txt"):
        if (REPO / name).exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    for d in ("src", "conf"):
        if (REPO / d).is_dir():
            shutil.copytree(REPO / d, dest / d)
    for rs in [*(REPO / "tests").rglob("*.rs"), *(REPO / "benches").rglob("*.rs")]:
        out = dest / rs.relative_to(REPO)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(rs, out)
    (dest / "docker").mkdir()
    shutil.copy2(DOCKER_DIR / "Dockerfile", dest / "docker" / "Dockerfile")
    return dest


def build_images(engine: str = "redis") -> dict[str, str]:
    """Builds master-sentinel and replica-sentinel from docker/Dockerfile; returns target -> ref.
    engine "valkey": the same targets on the Valkey base (tag TAG-valkey); the build stage is
    the Redis images' (cached), so call this after build_images().

    The binary is compiled inside the build stage unless REDISHA_TEST_PREBUILT names a static
    binary, which is then copied into the context (docker/dist/) and installed as is."""
    rust, redis = base_images()
    if engine == "valkey":
        redis = valkey_base()
        if redis is None:
            raise RuntimeError(f"no Valkey base: {VALKEY_LOCAL_BASE} is made from the host's "
                               "valkey-server (scripts/setup valkey), or set REDISHA_TEST_VALKEY_IMAGE")
    args = ["--build-arg", f"RUST_IMAGE={rust}", "--build-arg", f"REDIS_IMAGE={redis}"]
    return _build_all(args, session_context(), engine)


@functools.cache
def session_context() -> Path:
    """One snapshot per session: the Valkey images then reuse the Redis images' build stage
    (same content, same cache) even if the work tree changed in between. Removed at exit."""
    ctx = Path(tempfile.mkdtemp(prefix="redisha-docker-ctx-"))
    atexit.register(shutil.rmtree, ctx, True)
    return snapshot_context(ctx)


def _build_all(args: list[str], ctx: Path, engine: str = "redis") -> dict[str, str]:
    prebuilt = os.environ.get("REDISHA_TEST_PREBUILT")
    if prebuilt:
        dist = ctx / "docker" / "dist"
        dist.mkdir(parents=True, exist_ok=True)
        shutil.copy2(prebuilt, dist / "redisha-init")
        args = [*args, "--build-arg", "REDISHA_BINARY=docker/dist/redisha-init"]
    refs = {}
    started = int(time.time())
    # The build stage is tagged too: an untagged stage image would be pruned below, and with it the
    # cache of the compile step.
    targets = ("build", "master-sentinel", "replica-sentinel") if engine == "redis" else \
        ("master-sentinel", "replica-sentinel")
    sfx = "" if engine == "redis" else f"_{engine}"
    for target in targets:
        ref = f"{IMAGE_PREFIX}/{target}:{engine_tag(engine)}"
        t0 = time.monotonic()
        log(f"building {ref} (the first build compiles the binary: a minute or two)")
        run(["docker", "build", "-q", "-f", str(ctx / "docker" / "Dockerfile"), "--target", target,
             "-t", ref, *args, str(ctx)], timeout=1200)
        record(f"build_{target}{sfx}_s", round(time.monotonic() - t0, 1))
        if target != "build":
            record(f"image_{target}{sfx}_mb", image_size_mb(ref))
            refs[target] = ref
    # Images of earlier runs that lost their tag to this run's (a stage image is over 1 GB).
    run(["docker", "image", "prune", "-f", "--filter", "label=io.redisha.stage",
         "--filter", f"until={started}"], timeout=120, check=False)
    return refs


def used_subnets() -> list[ipaddress.IPv4Network]:
    ids = run(["docker", "network", "ls", "-q"], timeout=30).stdout.split()
    if not ids:
        return []
    r = run(["docker", "network", "inspect", *ids], timeout=30, check=False)
    nets = []
    try:
        for n in json.loads(r.stdout or "[]"):
            for c in (n.get("IPAM") or {}).get("Config") or []:
                try:
                    nets.append(ipaddress.ip_network(c.get("Subnet", ""), strict=False))
                except ValueError:
                    pass
    except json.JSONDecodeError:
        pass
    # Routes of the host itself (its own LAN, VPNs): a bridge there would shadow them.
    if shutil.which("ip"):
        r = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, timeout=10)
        for line in r.stdout.splitlines():
            dst = line.split()[0] if line.split() else ""
            if dst != "default":
                try:
                    nets.append(ipaddress.ip_network(dst, strict=False))
                except ValueError:
                    pass
    return nets


def free_subnet_prefix() -> str:
    """A /24 in 172.28.0.0/16 that no Docker network uses; returned as 'a.b.c'."""
    used = used_subnets()
    for third in range(60, 250):
        net = ipaddress.ip_network(f"172.28.{third}.0/24")
        if not any(net.overlaps(u) for u in used if u.version == 4):
            return f"172.28.{third}"
    raise AssertionError("no free /24 in 172.28.0.0/16 for the test network")
