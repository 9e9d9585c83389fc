#!/usr/bin/env python3
"""Make the base images docker/Dockerfile needs, on a machine that can pull nothing.

    python3 docker/local-base/make_local_bases.py            # all three, skipped when present
    python3 docker/local-base/make_local_bases.py --force    # rebuild them
    python3 docker/local-base/make_local_bases.py --only valkey

Each is a root filesystem assembled from this host (Debian 12) and loaded with `docker import`:

  redisha-local/redis:7-bookworm  stands in for redis:7-bookworm. Debian's redis-server and
      redis-cli in /usr/local/bin (where the official image has them), their shared libraries
      (the `ldd` closure), a `redis` user and group with uid/gid 999 like the official image,
      /data owned by it. No shell, no package manager: nothing else runs in it.
  redisha-local/valkey:8-bookworm stands in for valkey/valkey:8.0-bookworm: the same, assembled
      from Debian's valkey-server 8.0.1 of bookworm-backports (`scripts/setup valkey` installs it):
      valkey-server, valkey-cli, the valkey-sentinel link, uid/gid 999 (`valkey` in the official
      image). No redis-server in it: redisha-init finds valkey-server by itself.
  redisha-local/rust:1-bookworm   stands in for rust:1-bookworm. The host's stable Rust toolchain
      (without its docs) in /usr/local/rust, gcc/binutils/libc6-dev for linking a static glibc
      binary, dash + coreutils for RUN lines, CA certificates so cargo reaches crates.io.

Needs: docker, dpkg, ldd, the packages named below installed, and a rustup stable toolchain
(RUST_TOOLCHAIN_DIR overrides where it is looked for).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

REDIS_TAG = "redisha-local/redis:7-bookworm"
VALKEY_TAG = "redisha-local/valkey:8-bookworm"
RUST_TAG = "redisha-local/rust:1-bookworm"
# Bumped whenever the recipe changes, so a stale cached image is rebuilt.
RECIPE = "2"

BUILDER_PACKAGES = [
    "dash", "coreutils", "grep", "sed", "findutils", "tar", "gzip",
    "gcc-12", "cpp-12", "gcc-12-base", "libgcc-12-dev", "binutils", "binutils-x86-64-linux-gnu",
    "binutils-common", "libbinutils", "libctf0", "libctf-nobfd0", "libgprofng0", "libjansson4",
    "libc6", "libc6-dev", "libc-bin", "libcrypt-dev", "libcrypt1", "linux-libc-dev",
    "libisl23", "libmpc3", "libmpfr6", "libgmp10", "zlib1g", "libzstd1", "libstdc++6",
    "libgcc-s1", "ca-certificates", "libselinux1", "libpcre2-8-0", "libacl1", "libattr1",
]

PASSWD = """root:x:0:0:root:/root:/usr/sbin/nologin
redis:x:999:999:redis:/data:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUP = """root:x:0:
redis:x:999:
nogroup:x:65534:
"""
NSSWITCH = """passwd: files
group: files
hosts: files dns
"""


def log(msg: str) -> None:
    print(f"[make_local_bases] {msg}", file=sys.stderr, flush=True)


def image_recipe(tag: str) -> str | None:
    r = subprocess.run(
        ["docker", "image", "inspect", "-f", '{{index .Config.Labels "redisha.recipe"}}', tag],
        capture_output=True, text=True,
    )
    return r.stdout.strip() if r.returncode == 0 else None


def ldd_closure(paths: list[str]) -> set[str]:
    """Every shared library the given ELF files load, as absolute host paths."""
    libs: set[str] = set()
    todo = list(paths)
    seen: set[str] = set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        r = subprocess.run(["ldd", p], capture_output=True, text=True)
        if r.returncode != 0:
            continue  # static or not an ELF
        for line in r.stdout.splitlines():
            m = re.search(r"(/\S+) \(0x", line)
            if m and os.path.exists(m.group(1)):
                lib = m.group(1)
                if lib not in libs:
                    libs.add(lib)
                    todo.append(lib)
    return libs


def is_elf(p: str) -> bool:
    try:
        with open(p, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


class RootFs:
    """A tar stream of a root filesystem, written straight into `docker import`."""

    def __init__(self, out):
        self.tar = tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT)
        self.names: set[str] = set()

    def _parents(self, arc: str) -> None:
        parts = arc.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            self.dir("/".join(parts[:i]))

    def dir(self, arc: str, mode: int = 0o755, uid: int = 0) -> None:
        arc = arc.strip("/")
        if not arc or arc in self.names:
            return
        self._parents(arc)
        ti = tarfile.TarInfo(arc)
        ti.type, ti.mode, ti.uid, ti.gid = tarfile.DIRTYPE, mode, uid, uid
        self.tar.addfile(ti)
        self.names.add(arc)

    def symlink(self, arc: str, target: str) -> None:
        arc = arc.strip("/")
        if arc in self.names:
            return
        self._parents(arc)
        ti = tarfile.TarInfo(arc)
        ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o777
        self.tar.addfile(ti)
        self.names.add(arc)

    def text(self, arc: str, data: str, mode: int = 0o644) -> None:
        arc = arc.strip("/")
        self._parents(arc)
        raw = data.encode()
        ti = tarfile.TarInfo(arc)
        ti.size, ti.mode, ti.mtime = len(raw), mode, int(time.time())
        self.tar.addfile(ti, io.BytesIO(raw))
        self.names.add(arc)

    def host(self, src: str, arc: str | None = None) -> None:
        """Adds a host file (or symlink) at `arc` (default: the same path). /lib, /bin, ... are
        symlinks into /usr on Debian 12, so paths are kept as they are and those links are made
        once in `usrmerge()`."""
        arc = (arc or src).strip("/")
        if arc in self.names:
            return
        if os.path.islink(src):
            self.symlink(arc, os.readlink(src))
            return
        if os.path.isdir(src):
            self.dir(arc)
            return
        if not os.path.isfile(src):
            return
        self._parents(arc)
        st = os.stat(src)
        ti = tarfile.TarInfo(arc)
        ti.size, ti.mode, ti.mtime = st.st_size, st.st_mode & 0o7777, int(st.st_mtime)
        with open(src, "rb") as f:
            self.tar.addfile(ti, f)
        self.names.add(arc)

    def host_lib(self, path: str) -> None:
        """A shared library by the path ldd printed: the file it resolves to, plus the link."""
        real = os.path.realpath(path)
        canon = usr_path(path)
        self.host(real, usr_path(real))
        if canon != usr_path(real):
            self.symlink(canon, os.path.relpath(usr_path(real), os.path.dirname(canon)))

    def usrmerge(self) -> None:
        for d in ("bin", "sbin", "lib", "lib64"):
            self.dir(f"usr/{d}")
            self.symlink(d, f"usr/{d}")

    def close(self) -> None:
        self.tar.close()


def usr_path(p: str) -> str:
    """/lib/x/y -> /usr/lib/x/y (merged /usr)."""
    for d in ("/bin/", "/sbin/", "/lib/", "/lib64/"):
        if p.startswith(d):
            return "/usr" + p
    return p


def common(fs: RootFs, user: str = "redis") -> None:
    fs.usrmerge()
    fs.text("etc/passwd", PASSWD.replace("redis:", f"{user}:"))
    fs.text("etc/group", GROUP.replace("redis:", f"{user}:"))
    fs.text("etc/nsswitch.conf", NSSWITCH)
    fs.text("etc/os-release", Path("/etc/os-release").read_text())
    fs.dir("tmp", 0o1777)
    fs.dir("root", 0o700)
    fs.dir("etc/ssl")
    # The dynamic loader must be at its ABI path.
    fs.host_lib("/lib64/ld-linux-x86-64.so.2")


def docker_import(tag: str, changes: list[str], fill) -> None:
    cmd = ["docker", "import"]
    for c in changes + [f"LABEL redisha.recipe={RECIPE}"]:
        cmd += ["--change", c]
    cmd += ["-", tag]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    fs = RootFs(proc.stdin)
    try:
        fill(fs)
        fs.close()
    finally:
        proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit(f"docker import {tag} failed")


def fill_redis(fs: RootFs) -> None:
    common(fs)
    server = os.path.realpath("/usr/bin/redis-server")
    cli = os.path.realpath("/usr/bin/redis-cli")
    fs.host(server, "usr/local/bin/redis-server")
    fs.host(cli, "usr/local/bin/redis-cli")
    fs.symlink("usr/local/bin/redis-sentinel", "redis-server")
    for lib in sorted(ldd_closure([server, cli])):
        fs.host_lib(lib)
    fs.dir("data", 0o755, uid=999)


def fill_valkey(fs: RootFs) -> None:
    common(fs, user="valkey")
    # Debian's valkey-server is a link to valkey-check-rdb (one binary that looks at its name):
    # copied under the name it is run by.
    server = "/usr/bin/valkey-server"
    cli = "/usr/bin/valkey-cli"
    if not os.path.exists(server):
        raise SystemExit("valkey-server is not installed: scripts/setup valkey (bookworm-backports)")
    fs.host(os.path.realpath(server), "usr/local/bin/valkey-server")
    fs.host(os.path.realpath(cli), "usr/local/bin/valkey-cli")
    fs.symlink("usr/local/bin/valkey-sentinel", "valkey-server")
    for lib in sorted(ldd_closure([os.path.realpath(server), os.path.realpath(cli)])):
        fs.host_lib(lib)
    fs.dir("data", 0o755, uid=999)


def toolchain_dir() -> Path:
    env = os.environ.get("RUST_TOOLCHAIN_DIR")
    if env:
        return Path(env).resolve()
    rustc = subprocess.run(["rustc", "+stable", "--print", "sysroot"], capture_output=True, text=True)
    if rustc.returncode == 0 and rustc.stdout.strip():
        return Path(rustc.stdout.strip()).resolve()
    return (Path.home() / ".rustup/toolchains/stable-x86_64-unknown-linux-gnu").resolve()


SKIP_IN_TOOLCHAIN = ("share/doc", "share/man", "share/zsh", "lib/rustlib/src", "etc/bash_completion.d")


def fill_rust(fs: RootFs) -> None:
    common(fs)
    files: list[str] = []
    for pkg in BUILDER_PACKAGES:
        r = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"package {pkg} is not installed: apt-get install {pkg}")
        files += [l for l in r.stdout.splitlines() if l and l != "/."]
    elves = []
    for f in files:
        if "/share/doc/" in f or "/share/man/" in f or "/share/locale/" in f or "/share/info/" in f:
            continue
        if os.path.isdir(f) and not os.path.islink(f):
            continue
        if not os.path.lexists(f):
            continue
        if f.startswith(("/lib/", "/lib64/", "/bin/", "/sbin/")) and not os.path.islink(f):
            fs.host(f, usr_path(f))
        else:
            fs.host(f, usr_path(f))
        if not os.path.islink(f) and is_elf(f):
            elves.append(f)
    # Debian reaches gcc and cc through /etc/alternatives; make the plain links.
    fs.symlink("usr/bin/gcc", "gcc-12")
    fs.symlink("usr/bin/cc", "gcc-12")
    fs.symlink("usr/bin/cpp", "cpp-12")
    fs.symlink("usr/bin/sh", "dash")
    # CA bundle (generated by update-ca-certificates, so not in dpkg -L).
    for root, _dirs, names in os.walk("/etc/ssl/certs"):
        for n in names:
            fs.host(os.path.join(root, n))
    tc = toolchain_dir()
    log(f"rust toolchain from {tc}")
    for root, dirs, names in os.walk(tc):
        rel_root = os.path.relpath(root, tc)
        dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(rel_root, d)) not in SKIP_IN_TOOLCHAIN]
        for n in names:
            src = os.path.join(root, n)
            rel = os.path.normpath(os.path.join(rel_root, n))
            fs.host(src, f"usr/local/rust/{rel}")
            if rel.startswith("bin/") and is_elf(src):
                elves.append(src)
    for lib in sorted(ldd_closure(elves)):
        if lib.startswith(str(tc)):
            continue
        fs.host_lib(lib)
    fs.dir("usr/local/cargo", 0o777)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--force", action="store_true", help="rebuild even when the image exists")
    ap.add_argument("--only", choices=["redis", "valkey", "rust"], help="make one of them")
    args = ap.parse_args()
    jobs = [
        ("redis", REDIS_TAG, fill_redis, [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "VOLUME /data", "WORKDIR /data", "EXPOSE 6379", 'CMD ["redis-server"]',
        ]),
        ("valkey", VALKEY_TAG, fill_valkey, [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "VOLUME /data", "WORKDIR /data", "EXPOSE 6379", 'CMD ["valkey-server"]',
        ]),
        ("rust", RUST_TAG, fill_rust, [
            "ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV CARGO_HOME=/usr/local/cargo",
            'CMD ["/bin/sh"]',
        ]),
    ]
    for name, tag, fill, changes in jobs:
        if args.only and args.only != name:
            continue
        if name == "valkey" and not os.path.exists("/usr/bin/valkey-server") and not args.only:
            # Optional: the Redis images need only the other two.
            log(f"valkey-server not installed (scripts/setup valkey); {tag} skipped")
            continue
        if not args.force and image_recipe(tag) == RECIPE:
            log(f"{tag} present (recipe {RECIPE}); skipped")
            continue
        t0 = time.monotonic()
        log(f"making {tag} ...")
        docker_import(tag, changes, fill)
        log(f"{tag} made in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
