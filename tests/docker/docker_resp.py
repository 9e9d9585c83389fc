"""Asking redis and sentinel what they think, with hard timeouts: redis-py underneath, with its
reply callbacks off so every command returns the reply as sent (strings, ints, flat lists), and
its errors mapped to two kinds the tests tell apart: RespError (an error reply) and
ConnectionError (unreachable, timed out)."""

from __future__ import annotations

import redis


class RespError(Exception):
    """An error reply (-ERR ..., -LOADING ..., -READONLY ...)."""


def call(host: str, port: int, *args, timeout: float = 1.0):
    """One command on a fresh connection. Raises ConnectionError when unreachable, RespError on
    an error reply."""
    r = redis.Redis(host=host, port=port, socket_timeout=timeout, socket_connect_timeout=timeout,
                    decode_responses=True, retry_on_timeout=False)
    # Raw replies: SENTINEL MASTER as the flat list the server sends, INFO as its text.
    r.response_callbacks.clear()
    try:
        return r.execute_command(*[str(a) for a in args])
    except redis.ResponseError as e:
        raise RespError(str(e)) from None
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise ConnectionError(str(e)) from None
    finally:
        r.close()


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
