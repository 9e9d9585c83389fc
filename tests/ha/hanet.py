"""Namespace and network plumbing of the HA harness: names, addresses, the bridge, one network
namespace per pod, the pods' /etc/hosts (their cluster DNS), partitions, and the cleanup of
whatever a crashed run left. No redis here.

Layout (all names start with PREFIX so a leftover of a crashed run is found and removed at start):

    host (10.77.0.1, the writer runs here; PREFIX and SUBNET: REDISHA_HA_PREFIX/_SUBNET)
      └─ veth rhat-host ── rhat-net netns: bridge rhat-br ── veth ── rhat-p0 netns (pod redis-0)
                                                          ├─ veth ── rhat-p1 netns (pod redis-1)
                                                          └─ veth ── rhat-p2 netns (pod redis-2)

The bridge lives in its own namespace on purpose: the host has br_netfilter on and a FORWARD DROP
policy (docker), which would drop bridged pod-to-pod traffic; an empty namespace has neither, and
the host's firewall is left untouched.

REDISHA_HA_FAMILY=6 makes every pod IPv6-only (issue 27): the same layout with the /64
fd88:<b>:<c>::/64 derived from SUBNET 10.<b>.<c> (in hex: 10.79.0 gives fd88:4f::/64, host
fd88:4f::1), no IPv4 address on any pod, hosts files mapping the names to IPv6 addresses. The
addresses are added `nodad`: duplicate address detection would leave them "tentative" (unusable)
for a second or more after every pod start.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import shutil
import signal
from pathlib import Path

from rhtest import run

# Every name (namespaces, bridge, veths, /etc/netns dirs, the lock) starts with PREFIX and every
# address is in SUBNET.0/24, so two runs with different values (e.g. benches/soak.py with "rhsk"
# on 10.78.0) can run at the same time as the suite without touching each other. PREFIX must be
# short: interface names ("<prefix>-host") are at most 15 bytes.
PREFIX = os.environ.get("REDISHA_HA_PREFIX") or "rhat"
SUBNET = os.environ.get("REDISHA_HA_SUBNET") or "10.77.0"
if not re.fullmatch(r"[a-z][a-z0-9]{0,7}", PREFIX):
    raise ValueError(f"REDISHA_HA_PREFIX={PREFIX!r}: want 1-8 lowercase letters/digits")
if not re.fullmatch(r"10\.(\d{1,3})\.(\d{1,3})", SUBNET) or \
        any(int(x) > 255 for x in SUBNET.split(".")[1:]):
    raise ValueError(f"REDISHA_HA_SUBNET={SUBNET!r}: want the first three octets of a 10.x.y.0/24")
FAMILY = os.environ.get("REDISHA_HA_FAMILY") or "4"
if FAMILY not in ("4", "6"):
    raise ValueError(f"REDISHA_HA_FAMILY={FAMILY!r}: want 4 or 6")
_NET6 = ipaddress.IPv6Network("fd88:{:x}:{:x}::/64".format(*map(int, SUBNET.split(".")[1:])))
PREFIX_LEN = 64 if FAMILY == "6" else 24


def address(n: int) -> str:
    """Host number `n` of the subnet, as Redis prints it (inet_ntop's compressed IPv6 form, the
    one INFO and Sentinel replies carry, so the harness can compare strings with them)."""
    if FAMILY == "6":
        return str(_NET6.network_address + n)
    return f"{SUBNET}.{n}"


def addr(ip: str, port: int) -> str:
    """`ip:port` as redisha-init prints and takes it: an IPv6 address in brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _addr_add(ip: str) -> list[str]:
    return ["addr", "add", f"{ip}/{PREFIX_LEN}"] + (["nodad"] if FAMILY == "6" else [])


HOST_IP = address(1)
NET_NS = f"{PREFIX}-net"
BRIDGE = f"{PREFIX}-br"
HOST_VETH = f"{PREFIX}-host"
HOST_PEER = f"{PREFIX}-hb"
LOCK_PATH = f"/tmp/{PREFIX}-harness.lock"
REDIS_PORT = 6379
SENTINEL_PORT = 26379
GROUP = "mymaster"  # the Sentinel master group
NPODS = 3


def pod_ns(idx: int) -> str:
    return f"{PREFIX}-p{idx}"


def pod_port(idx: int) -> str:
    """The pod's veth on the bridge side: taking it down cuts the pod off."""
    return f"{PREFIX}-h{idx}"


def list_netns() -> list[str]:
    out = run(["ip", "netns", "list"], check=False, quiet=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def our_netns() -> list[str]:
    return [ns for ns in list_netns() if ns.startswith(PREFIX + "-")]


def cleanup_everything() -> None:
    """Removes whatever a previous (crashed) run or this run left: our processes (found through
    our namespaces only), namespaces, the host veth, hosts files. Idempotent."""
    for ns in our_netns():
        pids = run(["ip", "netns", "pids", ns], check=False, quiet=True).stdout.split()
        for p in pids:
            try:
                os.kill(int(p), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        run(["ip", "netns", "del", ns], check=False, quiet=True)
    run(["ip", "link", "del", HOST_VETH], check=False, quiet=True)
    netns_etc = Path("/etc/netns")
    if netns_etc.is_dir():
        for d in netns_etc.glob(PREFIX + "-*"):
            shutil.rmtree(d, ignore_errors=True)
        try:
            netns_etc.rmdir()  # only if empty: it may hold other namespaces' files
        except OSError:
            pass


def lock() -> int:
    """Takes the prefix's harness lock (without waiting); returns its fd. Only the run holding
    it owns the namespaces of PREFIX (see Cluster.teardown)."""
    fd = os.open(LOCK_PATH, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RuntimeError(f"another HA harness run holds {LOCK_PATH}")
    return fd


def create_bridge() -> None:
    """The bridge namespace, its bridge, and the host's veth into it (HOST_IP)."""
    run(["ip", "netns", "add", NET_NS])
    run(["ip", "-n", NET_NS, "link", "set", "lo", "up"])
    run(["ip", "-n", NET_NS, "link", "add", BRIDGE, "type", "bridge"])
    run(["ip", "-n", NET_NS, "link", "set", BRIDGE, "up"])
    run(["ip", "link", "add", HOST_VETH, "type", "veth", "peer", "name", HOST_PEER,
         "netns", NET_NS])
    run(["ip", *_addr_add(HOST_IP), "dev", HOST_VETH])
    run(["ip", "link", "set", HOST_VETH, "up"])
    run(["ip", "-n", NET_NS, "link", "set", HOST_PEER, "master", BRIDGE, "up"])


def create_pod_net(idx: int, ip: str) -> None:
    """A pod's network: its namespace, a veth into the bridge, one address."""
    ns, port = pod_ns(idx), pod_port(idx)
    run(["ip", "netns", "add", ns])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    run(["ip", "-n", NET_NS, "link", "add", port, "type", "veth",
         "peer", "name", "eth0", "netns", ns])
    run(["ip", "-n", NET_NS, "link", "set", port, "master", BRIDGE, "up"])
    run(["ip", "-n", ns, *_addr_add(ip), "dev", "eth0"])
    run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    Path(f"/etc/netns/{ns}").mkdir(parents=True, exist_ok=True)


def delete_pod_net(idx: int) -> None:
    # The bridge-side veth first: deleting it is synchronous and takes its peer along, while
    # `ip netns del` leaves the pair to the kernel's asynchronous netns cleanup (seen still
    # present a moment later, and the next create_pod_net then failed with "File exists").
    ns = pod_ns(idx)
    run(["ip", "-n", NET_NS, "link", "del", pod_port(idx)], check=False, quiet=True)
    run(["ip", "netns", "del", ns], check=False, quiet=True)
    shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def write_hosts(records: list[tuple[str, str]], idxs: list[int]) -> None:
    """Cluster DNS: `records` (address, names) become the hosts file of every pod namespace in
    `idxs` that exists. Written in place (same inode): `ip netns exec` bind-mounted the file, a
    rename would not be seen."""
    text = "\n".join(["127.0.0.1 localhost", "::1 localhost"]
                     + [f"{ip} {names}" for ip, names in records]) + "\n"
    for i in idxs:
        d = Path(f"/etc/netns/{pod_ns(i)}")
        if d.is_dir():
            with open(d / "hosts", "w") as f:
                f.write(text)


def set_port(idx: int, up: bool) -> None:
    """Cuts (or restores) a pod's only link: its bridge port goes down, the pod keeps its
    address, connections hang as on a real partition."""
    run(["ip", "-n", NET_NS, "link", "set", pod_port(idx), "up" if up else "down"])
