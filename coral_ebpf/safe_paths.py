"""Opening the agent's private paths so that another local user cannot redirect them.

The agent runs as root and writes into `state_dir` and the control socket's directory. When such
a path, or a directory above it, can be changed by another user, a symlink planted there could
make root truncate, chmod or overwrite a file of that user's choice. So:

- a private directory is opened with O_NOFOLLOW|O_DIRECTORY and checked on the open descriptor
  (not a symlink, a directory, owned by root or by the agent's own user), then chmod-ed 0700
  through that descriptor (`fchmod`), never by path;
- a private file is opened with O_NOFOLLOW|O_CLOEXEC and checked on the descriptor (a regular
  file owned by root or the agent's user) before it is read or written;
- the error names the path and its owner, and says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

from coral_ebpf.errors import CoralError


class UnsafePathError(CoralError):
    """A private path is a symlink, of the wrong type, or owned by another non-root user."""


def owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def trusted_owner(uid: int) -> bool:
    """Root, or the user the agent runs as."""
    return uid in (0, os.geteuid())


def _check_owner(path: Path, info: os.stat_result, what: str) -> None:
    if not trusted_owner(info.st_uid):
        raise UnsafePathError(
            f"{what} {path} is owned by {owner_name(info.st_uid)}, not by root or the agent's user: refusing to use it",
            f"remove it or give it to root (chown root: {path}), or choose a path under a root-owned directory",
        )


def _refuse_symlink(path: Path, what: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISLNK(os.lstat(path).st_mode):
            target = os.readlink(path)
            raise UnsafePathError(
                f"{what} {path} is a symbolic link (to {target}): refusing to follow it",
                f"remove the link, or configure the real path ({target}) instead",
            )


def check_ancestors(path: Path, what: str = "directory") -> None:
    """Refuse `path` when a directory above it can be changed by another user (owned by one, or
    group/world-writable without the sticky bit), since that user could swap what lies below."""
    for ancestor in Path(os.path.abspath(path)).parents:
        try:
            info = os.stat(ancestor)
        except FileNotFoundError:
            continue
        if not trusted_owner(info.st_uid):
            raise UnsafePathError(
                f"{what} {path} lies under {ancestor}, which is owned by {owner_name(info.st_uid)}: "
                "that user could replace it with a link of their choice",
                "choose a path under directories owned by root",
            )
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX:
            raise UnsafePathError(
                f"{what} {path} lies under {ancestor}, which other users may write (mode "
                f"{stat.S_IMODE(info.st_mode):o}, no sticky bit)",
                f"chmod go-w {ancestor}, or choose a path under directories only root may write",
            )


def prepare_private_dir(path: Path, what: str = "directory", *, chmod: bool = True) -> None:
    """Create `path` (0700, with missing parents 0700) or accept an existing one we may trust.

    With `chmod`, an existing directory of ours is narrowed to 0700 (through its descriptor).
    """
    check_ancestors(path, what)
    missing = []
    parent = path
    while not os.path.lexists(parent):
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)
    with open_dir(path, what) as fd:
        info = os.fstat(fd)
        if chmod and stat.S_IMODE(info.st_mode) != 0o700 and info.st_uid == os.geteuid():
            os.fchmod(fd, 0o700)


@contextlib.contextmanager
def open_dir(path: Path, what: str = "directory") -> Iterator[int]:
    """An O_NOFOLLOW descriptor of directory `path`, after checking its type and owner."""
    _refuse_symlink(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _refuse_symlink(path, what)
        if exc.errno == errno.ENOTDIR:
            raise UnsafePathError(f"{what} {path} is not a directory", "remove it or choose another path") from None
        raise
    try:
        _check_owner(path, os.fstat(fd), what)
        yield fd
    finally:
        os.close(fd)


def open_private(path: Path, flags: int, mode: int = 0o600, what: str = "file", *, dir_fd: int | None = None) -> int:
    """`os.open` with O_NOFOLLOW|O_CLOEXEC; the file must be regular and owned by root or the agent's user.

    With `dir_fd` (from `open_dir`), `path.name` is opened in that directory, whatever its path now leads to.
    """
    try:
        if dir_fd is None:
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        else:
            fd = os.open(path.name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            _refuse_symlink(path, what)
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(f"{what} {path} is not a regular file", "remove it or choose another path")
        _check_owner(path, info, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_private(path: Path, what: str = "file") -> str:
    fd = open_private(path, os.O_RDONLY, what=what)
    with os.fdopen(fd, "r", encoding="utf-8", errors="replace") as handle:
        return handle.read()


def refuse_symlink(path: Path, what: str = "file") -> None:
    """Raise UnsafePathError when `path` is a symlink (for paths a library opens by name, e.g. DuckDB)."""
    _refuse_symlink(path, what)


def chmod_private(path: Path, mode: int = 0o600) -> None:
    """chmod a regular file without following a symlink; missing files are skipped.

    Through an O_PATH descriptor: closing an ordinary descriptor of a file would drop every
    POSIX record lock this process holds on it (DuckDB's lock on its database, for one);
    closing an O_PATH one does not.
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.chmod(f"/proc/self/fd/{fd}", mode)
    finally:
        os.close(fd)
