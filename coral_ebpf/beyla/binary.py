"""Finding the Beyla executable and refusing one a non-root user could have replaced.

The agent runs Beyla as root. A binary, or any directory on the way to it, that a non-root
user can write would let that user run code as root, so the agent refuses it, naming the path
and the offending owner or mode. Lookup order: config `beyla.binary`, then the environment
variable `CORAL_EBPF_BEYLA_BIN`, then `PATH`.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from coral_ebpf.errors import CoralError

ENV_VAR = "CORAL_EBPF_BEYLA_BIN"
BINARY_NAME = "beyla"
_MAX_SYMLINKS = 40


class BeylaNotFoundError(CoralError):
    """No Beyla executable where the agent was told (or allowed) to look."""


class UnsafeBinaryError(CoralError):
    """A Beyla executable, or a directory on its path, that a non-root user can modify."""


@dataclass(frozen=True)
class ResolvedBinary:
    path: Path  # as found (may be a symlink)
    real_path: Path  # after resolving every symlink
    source: str  # "config beyla.binary" | "$CORAL_EBPF_BEYLA_BIN" | "PATH"


def _install_hint() -> str:
    return (
        "install the pinned release with 'sudo coral-ebpf beyla install', or set beyla.binary in the config "
        f"(or ${ENV_VAR}) to the beyla executable"
    )


def resolve_binary(configured: Path | None = None, environ: Mapping[str, str] | None = None) -> ResolvedBinary:
    """Find Beyla (config, then $CORAL_EBPF_BEYLA_BIN, then PATH) and check it is safe to run as root.

    An explicitly named binary that is missing is an error, never a silent fall-through to the
    next source, so a typo in the config cannot make the agent run a different Beyla.
    """
    env = os.environ if environ is None else environ
    if configured is not None:
        candidate, source = Path(configured), "config beyla.binary"
    elif env.get(ENV_VAR):
        candidate, source = Path(env[ENV_VAR]), f"${ENV_VAR}"
    else:
        found = shutil.which(BINARY_NAME, path=env.get("PATH", os.defpath))
        if found is None:
            raise BeylaNotFoundError(
                f"no '{BINARY_NAME}' executable: beyla.binary is not set, ${ENV_VAR} is not set, "
                f"and none is on PATH ({env.get('PATH', os.defpath)})",
                _install_hint(),
            )
        candidate, source = Path(found), "PATH"
    if not candidate.is_absolute():
        raise BeylaNotFoundError(f"{source} names a relative path {str(candidate)!r}", "give an absolute path")
    if not candidate.exists():
        raise BeylaNotFoundError(f"{source} names {candidate}, which does not exist", _install_hint())
    real = check_binary_safe(candidate)
    return ResolvedBinary(path=candidate, real_path=real, source=source)


def _describe_mode(mode: int) -> str:
    return f"mode {stat.S_IMODE(mode):04o}"


def _refuse(path: Path, checked: Path, problem: str) -> UnsafeBinaryError:
    what = "it" if path == checked else f"{checked}, on its path,"
    return UnsafeBinaryError(
        f"refusing to run {path} as root: {what} {problem}; a non-root user could replace what the agent "
        "executes as root",
        f"make it root-owned and not group/other-writable, e.g. 'chown root:root {checked} && chmod go-w {checked}'",
    )


def _check_entry(original: Path, entry: Path, st: os.stat_result, is_directory: bool) -> None:
    if st.st_uid != 0:
        raise _refuse(original, entry, f"is owned by uid {st.st_uid}, not root ({_describe_mode(st.st_mode)})")
    writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if not writable:
        return
    # A root-owned sticky directory (/tmp) is fine: others cannot rename or delete root's entries in it,
    # and the entry below it is checked in turn.
    if is_directory and st.st_mode & stat.S_ISVTX:
        return
    who = (
        "group and others"
        if writable == (stat.S_IWGRP | stat.S_IWOTH)
        else ("group" if writable & stat.S_IWGRP else "others")
    )
    raise _refuse(original, entry, f"is writable by {who} ({_describe_mode(st.st_mode)}, owner uid {st.st_uid})")


def _walk_safe(original: Path) -> Path:
    """Check `/` and every component of `original`, following symlinks; return the real path.

    Raises UnsafeBinaryError naming the first component a non-root user could modify.
    """
    pending: list[str] = list(Path(os.path.abspath(original)).parts[1:])
    current = Path("/")
    _check_entry(original, current, os.lstat(current), is_directory=True)
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = current.parent  # `current` has no symlinks left, so its lexical parent is the real one
            continue
        entry = current / part
        st = os.lstat(entry)
        if stat.S_ISLNK(st.st_mode):
            hops += 1
            if hops > _MAX_SYMLINKS:
                raise BeylaNotFoundError(f"{original}: too many symbolic links")
            target = Path(os.readlink(entry))
            if target.is_absolute():
                current = Path("/")
                pending = list(target.parts[1:]) + pending
            else:
                pending = list(target.parts) + pending
            continue
        last = not pending
        if not last and not stat.S_ISDIR(st.st_mode):
            raise BeylaNotFoundError(f"{original}: {entry} is not a directory")
        _check_entry(original, entry, st, is_directory=stat.S_ISDIR(st.st_mode))
        current = entry
    return current


def check_directory_safe(path: Path) -> Path:
    """A directory the agent may install Beyla into: root-owned and not group/other-writable all the way."""
    real = _walk_safe(Path(path))
    if not real.is_dir():
        raise BeylaNotFoundError(f"{path} is not a directory")
    mode = os.stat(real).st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _refuse(Path(path), real, f"is writable by group or others ({_describe_mode(mode)})")
    return real


def check_binary_safe(path: Path) -> Path:
    """Check a Beyla executable before the agent runs it as root; return its real path.

    Raises UnsafeBinaryError naming the first component (the file itself, a directory, or a
    symlink's target) that a non-root user could modify, and BeylaNotFoundError if the target
    is not an executable regular file.
    """
    original = Path(path)
    current = _walk_safe(original)
    final = os.stat(current)
    if not stat.S_ISREG(final.st_mode):
        raise BeylaNotFoundError(f"{original} is not a regular file")
    if not final.st_mode & stat.S_IXUSR:
        raise BeylaNotFoundError(f"{original} is not executable ({_describe_mode(final.st_mode)})", "chmod 0755 it")
    return current
