"""Parsing of the human units used in config files and CLI flags: durations, sizes, endpoints."""

from __future__ import annotations

import re

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d)\s*$")
_DURATION_FACTORS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}
_COMPOUND_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|KiB|MB|MiB|GB|GiB|k|K|M|G)?\s*$")
_SIZE_FACTORS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "k": 1024,
    "K": 1024,
    "KiB": 1024,
    "M": 1024**2,
    "MiB": 1024**2,
    "G": 1024**3,
    "GiB": 1024**3,
}


def parse_duration(value: str | int | float) -> float:
    """Return seconds for `value`: a number of seconds, or text such as `500ms`, `15m`, `1h30m`, `7d`.

    Raises ValueError with an example of the accepted form.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (e.g. 500ms, 30s, 15m, 1h, 7d)")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative; a duration must be >= 0")
        return float(value)
    text = value.strip()
    match = _DURATION_RE.match(text)
    if match:
        return float(match.group(1)) * _DURATION_FACTORS[match.group(2)]
    parts = _COMPOUND_RE.findall(text)
    if parts and "".join(n + u for n, u in parts) == text.replace(" ", ""):
        return sum(float(n) * _DURATION_FACTORS[u] for n, u in parts)
    raise ValueError(f"{value!r} is not a duration (e.g. 500ms, 30s, 15m, 1h, 7d)")


def format_duration(seconds: float) -> str:
    """Compact text for a duration, the inverse of parse_duration for whole units."""
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds >= 1:
        return f"{seconds:g}s"
    return f"{seconds * 1000:g}ms"


def parse_size(value: str | int) -> int:
    """Return bytes for `value`: an integer, or text such as `16MiB`, `512k`, `2GB`."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size (e.g. 4194304, 512KiB, 16MiB)")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is negative; a size must be >= 0")
        return value
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size (e.g. 4194304, 512KiB, 16MiB)")
    return int(float(match.group(1)) * _SIZE_FACTORS[match.group(2)])


def parse_endpoint(value: str) -> tuple[str, int]:
    """Split `host:port` (IPv6 as `[::1]:4317`) into host and port; raise ValueError otherwise."""
    text = value.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{value!r} is not host:port (IPv6 is written [::1]:4317)")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:4317)")
        if ":" in host:
            raise ValueError(f"{value!r}: write an IPv6 address in brackets, e.g. [::1]:4317")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r}: port must be a number from 0 to 65535")
    return host, int(port_text)


def is_loopback_host(host: str) -> bool:
    """True when `host` names only the loopback interface."""
    return host in {"localhost", "::1"} or host.startswith("127.")
