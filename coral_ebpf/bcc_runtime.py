"""Compile and load the programs in `bpf/` with BCC: one place for headers, tracefs and flags.

Every probe (discovery, the RED engine, the capability checks) goes through `load_program`,
so headers resolution and error reporting are the same everywhere.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from coral_ebpf.capabilities.headers import HeadersTree, resolve_headers
from coral_ebpf.capabilities.mounts import ensure_tracefs
from coral_ebpf.errors import CoralError
from coral_ebpf.resources import bpf_dir

_ENV_LOCK = threading.Lock()


class BccUnavailableError(CoralError):
    pass


class BpfCompileError(CoralError):
    pass


def import_bcc() -> Any:
    """Import Debian's BCC module, or explain how to get it."""
    try:
        import bcc
    except ImportError as exc:
        raise BccUnavailableError(
            f"BCC's Python module cannot be imported: {exc}",
            "apt-get install python3-bpfcc, and run from a venv created with --system-site-packages "
            "(the PyPI package named 'bcc' is unrelated; uninstall it if present)",
        ) from exc
    if not hasattr(bcc, "BPF"):
        raise BccUnavailableError(
            f"the 'bcc' module at {getattr(bcc, '__file__', '?')} is not BCC (no BPF class)",
            "pip uninstall bcc (an unrelated PyPI project) and use Debian's python3-bpfcc",
        )
    return bcc


def program_source(name: str) -> str:
    """Text of `bpf/<name>.bpf.c`."""
    path = bpf_dir() / f"{name}.bpf.c"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BpfCompileError(f"BPF program {name!r} not found at {path}") from None


@contextlib.contextmanager
def _kernel_source(headers: HeadersTree) -> Iterator[None]:
    if headers.kernel_source_env is None:
        yield
        return
    with _ENV_LOCK:
        previous = os.environ.get("BCC_KERNEL_SOURCE")
        os.environ["BCC_KERNEL_SOURCE"] = headers.kernel_source_env
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("BCC_KERNEL_SOURCE", None)
            else:
                os.environ["BCC_KERNEL_SOURCE"] = previous


def load_program(
    name: str,
    state_dir: Path,
    defines: Mapping[str, int | str] | None = None,
    text: str | None = None,
) -> Any:
    """Compile `bpf/<name>.bpf.c` (or `text`) with `-D` defines and return the loaded `bcc.BPF`.

    Probes are attached by the caller. Raises BccUnavailableError or BpfCompileError with a hint.
    """
    bcc = import_bcc()
    ensure_tracefs()
    headers = resolve_headers(state_dir)
    source = text if text is not None else program_source(name)
    cflags = [f"-D{key}={value}" for key, value in (defines or {}).items()]
    cflags.append("-Wno-unused-command-line-argument")
    cflags.append(f"-I{bpf_dir()}")  # lets programs share headers in bpf/ (#include "x.h")
    with _kernel_source(headers):
        try:
            return bcc.BPF(text=source.encode(), cflags=cflags)
        except Exception as exc:  # BCC raises bare Exception on compile/load failures
            raise BpfCompileError(
                f"BPF program {name!r} failed to compile or load: {exc}",
                f"headers used: {headers.description}; run 'coral-ebpf probe' for what this kernel allows",
            ) from exc
