"""Compile and load the programs in `bpf/` with BCC: one place for headers, tracefs and flags.

Every probe (discovery's, the RED engine's, the capability checks) goes through `load_program`,
so headers resolution and error reporting are the same everywhere. Program `<name>` lives in
`bpf/<name>/<name>.bpf.c`; `#include "common/x.h"` and `#include "<name>/x.h"` resolve against
`bpf/`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from coral_ebpf.errors import CoralError
from coral_ebpf.probes.headers import HeadersTree, resolve_headers
from coral_ebpf.probes.linux.mount import ensure_tracefs
from coral_ebpf.probes.verifier import kernel_verdict
from coral_ebpf.resident import release_after_compile, release_before_compile
from coral_ebpf.resources import bpf_dir
from coral_ebpf.safe_paths import UnsafePathError, open_private

_log = logging.getLogger(__name__)
_ENV_LOCK = threading.Lock()
_LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
_STDERR_LOCK = threading.Lock()
_REPLAY_LIMIT = 64 * 1024
_T = TypeVar("_T")


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
    """Text of `bpf/<name>/<name>.bpf.c` with its headers from `bpf/` inlined (see `inline_includes`)."""
    relative = f"{name}/{name}.bpf.c"
    try:
        return inline_includes(relative, bpf_dir())
    except FileNotFoundError as exc:
        raise BpfCompileError(f"BPF program {name!r}: {exc.strerror}: {exc.filename}") from None


def inline_includes(relative: str, root: Path, seen: set[str] | None = None) -> str:
    """The file `root/relative` with each `#include "x.h"` of a file under `root` replaced by its text.

    BCC rewrites map calls (`events.ringbuf_reserve(...)`) only in the file it compiles: in an
    included header they stay indirect calls the verifier refuses. Inlined, a header's helpers
    can use maps. `#line` directives keep clang's messages pointing at the real file and line;
    each header is inlined once (like `#pragma once`). System headers (`<...>`) are left to clang.
    """
    seen = set() if seen is None else seen
    seen.add(relative)
    path = root / relative
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise FileNotFoundError(exc.errno, "not found", str(path)) from None
    out: list[str] = []
    for number, line in enumerate(lines, start=1):
        match = _LOCAL_INCLUDE.match(line)
        if match is None or not (root / match.group(1)).is_file():
            out.append(line)
            continue
        header = match.group(1)
        if header not in seen:
            out.append(f'#line 1 "{header}"')
            out.append(inline_includes(header, root, seen).rstrip("\n"))
        out.append(f'#line {number + 1} "{relative}"')
    return "\n".join(out) + "\n"


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


class _Captured:
    text = ""


@contextlib.contextmanager
def _stderr_captured() -> Iterator[_Captured]:
    """Send fd 2 to a temporary file while BCC compiles or loads.

    BCC prints clang's warnings there and, when the verifier rejects a program, the verifier's
    whole log: hundreds of thousands of lines on older kernels, which would bury the agent's own
    log. What other threads write meanwhile is captured too and handed back by the caller.
    """
    captured = _Captured()
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode("utf-8", errors="replace")


def _replay(text: str) -> None:
    """Hand captured output (clang warnings, other threads' lines) back to stderr, bounded."""
    if not text:
        return
    if len(text) > _REPLAY_LIMIT:
        text = text[:_REPLAY_LIMIT] + f"\n[... {len(text) - _REPLAY_LIMIT} more bytes of BCC output not shown]\n"
    sys.stderr.write(text)
    sys.stderr.flush()


def split_bcc_output(text: str) -> tuple[str, str]:
    """(the agent's own log lines other threads wrote meanwhile, what BCC and clang printed).

    The agent's lines start with `ts=` (logfmt) or `{"ts":` (json); everything else is compiler output
    (clang's multi-line warnings with their source excerpts, `N warnings generated.`)."""
    agent: list[str] = []
    compiler: list[str] = []
    for line in text.splitlines(keepends=True):
        (agent if line.startswith(("ts=", '{"ts":')) else compiler).append(line)
    return "".join(agent), "".join(compiler)


def compiler_warnings(output: str) -> list[str]:
    """clang's warning messages in BCC's output (without the source excerpts), in order."""
    return [line.split(" warning: ", 1)[1].strip() for line in output.splitlines() if " warning: " in line]


def _write_bpf_log(state_dir: Path, name: str, text: str) -> Path | None:
    """Write `text` to `state_dir/bpf-<name>.log` (0600); None when it cannot be written.

    The state dir is prepared (and checked) by the agent; the log never follows a planted symlink."""
    log_path = state_dir / f"bpf-{name}.log"
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = open_private(log_path, os.O_WRONLY | os.O_CREAT, 0o600, "BPF log")
        os.ftruncate(fd, 0)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
    except (OSError, UnsafePathError):
        return None
    return log_path


def _log_compiled(name: str, what: str, state_dir: Path, compiler_output: str) -> None:
    """One line in the agent's log per program; clang's output goes to `state_dir/bpf-<name>.log`."""
    fields: dict[str, Any] = {"program": name}
    if compiler_output.strip():
        warnings = compiler_warnings(compiler_output)
        fields["warnings"] = len(warnings)
        if warnings:
            fields["first_warning"] = warnings[0]
        log_path = _write_bpf_log(state_dir, name, compiler_output)
        fields["bpf_log"] = str(log_path) if log_path else "not written"
    _log.info(
        "BPF program %s", "compiled" if what.startswith("failed to compile") else "loaded", extra={"fields": fields}
    )


def _with_bcc_output(name: str, what: str, state_dir: Path, hint: str, action: Callable[[], _T]) -> _T:
    """Run a BCC compile or load with its output captured; a failure becomes a BpfCompileError that
    quotes the kernel's verdict and keeps the full output in `state_dir/bpf-<name>.log` (0600)."""
    failure: Exception | None = None
    result: _T | None = None
    with _stderr_captured() as captured:
        try:
            result = action()
        except Exception as exc:  # BCC raises bare Exception on compile/load failures
            failure = exc
    if failure is None:
        agent_lines, compiler_output = split_bcc_output(captured.text)
        _replay(agent_lines)
        _log_compiled(name, what, state_dir, compiler_output)
        return result  # type: ignore[return-value]
    who, verdict = kernel_verdict(captured.text)
    message = f"BPF program {name!r} {what}: {failure}"
    if verdict:
        message += f"; {who} said: {verdict}"
    log_path = _write_bpf_log(state_dir, name, captured.text)
    if log_path is not None:
        hint = f"{hint}; BCC's full output: {log_path}"
    raise BpfCompileError(message, hint) from failure


def load_program(
    name: str,
    state_dir: Path,
    defines: Mapping[str, int | str] | None = None,
    text: str | None = None,
) -> Any:
    """Compile `bpf/<name>/<name>.bpf.c` (or `text`) with `-D` defines and return the loaded `bcc.BPF`.

    Probes are attached by the caller. Raises BccUnavailableError or BpfCompileError with a hint.
    """
    bcc = import_bcc()
    ensure_tracefs()
    headers = resolve_headers(state_dir)
    source = text if text is not None else program_source(name)
    cflags = [f"-D{key}={value}" for key, value in (defines or {}).items()]
    cflags.append("-Wno-unused-command-line-argument")
    cflags.append(f"-I{bpf_dir()}")  # #include "common/event_channel.h", "http_red/http_red.h", ...
    hint = f"headers used: {headers.description}; run 'coral-ebpf probe' for what this kernel allows"
    release_before_compile()  # what start-up alone touched is not counted again on top of the compile's peak
    try:
        with _kernel_source(headers):
            return _with_bcc_output(
                name, "failed to compile or load", state_dir, hint, lambda: bcc.BPF(text=source.encode(), cflags=cflags)
            )
    finally:
        # The compiler is done: its heap and LLVM's pages (~100 MiB of RSS) are not needed until the next compile.
        dropped = release_after_compile()
        _log.debug("compiler memory released", extra={"fields": {"program": name, "dropped_bytes": dropped}})


def load_function(bpf: Any, program: str, function: str, prog_type: int, state_dir: Path) -> Any:
    """`bpf.load_func(function, prog_type)` (e.g. a tail-call target), failures reported like load_program's."""
    return _with_bcc_output(
        program,
        f"function {function} failed to load",
        state_dir,
        "run 'coral-ebpf probe' for what this kernel allows",
        lambda: bpf.load_func(function.encode(), prog_type),
    )
