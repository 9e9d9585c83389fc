"""A minimal RESP2 client: enough to ask redis and sentinel what they think, with hard timeouts."""

from __future__ import annotations

import socket


class RespError(Exception):
    """An error reply (-ERR ..., -LOADING ..., -READONLY ...)."""


def _read_line(f) -> bytes:
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed mid-reply")
    return line[:-2]


def _read(f):
    line = _read_line(f)
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RespError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        if len(data) != n + 2:
            raise ConnectionError("connection closed mid-reply")
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return None
        return [_read(f) for _ in range(n)]
    raise ConnectionError(f"bad reply {line!r}")


def call(host: str, port: int, *args, timeout: float = 1.0):
    """One command on a fresh connection. Raises OSError when unreachable, RespError on -ERR."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        parts = [b"*%d\r\n" % len(args)]
        for a in args:
            b = str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        s.sendall(b"".join(parts))
        with s.makefile("rb") as f:
            return _read(f)


def info(host: str, port: int, section: str = "replication", timeout: float = 1.0) -> dict:
    text = call(host, port, "INFO", section, timeout=timeout)
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def try_call(host: str, port: int, *args, timeout: float = 2.0):
    """Like call(), but None when the node is unreachable or answers an error."""
    try:
        return call(host, port, *args, timeout=timeout)
    except (OSError, RespError, ConnectionError):
        return None


def try_info(host: str, port: int, timeout: float = 2.0) -> dict | None:
    try:
        return info(host, port, timeout=timeout)
    except (OSError, RespError, ConnectionError):
        return None


def pairs(flat: list) -> dict:
    """SENTINEL MASTER / REPLICAS entries come as flat [k1, v1, k2, v2, ...] lists."""
    return dict(zip(flat[0::2], flat[1::2]))
