"""A FUSE pass-through file system whose fsync fails with EIO on demand: real fault injection.

This kernel has no device-mapper (dm-flakey, dm-error, dm-dust) and no fail_make_request, and a
loop device over a full tmpfs drops writes without reporting them. So the failing "device" is a
FUSE file system (pyfuse3, Debian's python3-pyfuse3) that mirrors a directory: the agent's own
`fsync`/`fdatasync` system calls reach it through the kernel and get EIO back, exactly as from a
failing disk, while it is switched to fail. Writes keep succeeding (they land in the page cache of
a real disk too); only making them durable fails.

    with FaultyFs(source_dir, mountpoint) as fs:   # mounted by a child process (as root)
        fs.fail_syncs(True)    # fsync, fdatasync and directory fsync now fail with EIO
        fs.fail_syncs(False)   # the device recovered

The server runs as `python -m tests.helpers.faulty_fs SOURCE MOUNTPOINT SWITCH`: while the file
SWITCH exists, every fsync is answered EIO.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class FaultyFs:
    def __init__(self, source: Path, mountpoint: Path) -> None:
        self.source, self.mountpoint = source, mountpoint
        self.switch = source.parent / f".{source.name}.fail-syncs"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FaultyFs:
        self.source.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.mountpoint.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.switch.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.faulty_fs", str(self.source), str(self.mountpoint), str(self.switch)],
            cwd=ROOT,
        )
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the FUSE file system did not mount on {self.mountpoint}")
            time.sleep(0.05)
        return self

    def fail_syncs(self, failing: bool) -> None:
        if failing:
            self.switch.touch()
        else:
            self.switch.unlink(missing_ok=True)

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False)
        if self.process is not None:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _serve(source: Path, mountpoint: Path, switch: Path) -> None:  # pragma: no cover - runs in the child
    import pyfuse3
    import pyfuse3_asyncio

    pyfuse3_asyncio.enable()
    import asyncio

    class PassThrough(pyfuse3.Operations):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.paths: dict[int, str] = {pyfuse3.ROOT_INODE: str(source)}

        def _path(self, inode: int) -> str:
            try:
                return self.paths[inode]
            except KeyError:
                raise pyfuse3.FUSEError(errno.ENOENT) from None

        def _entry(self, path: str) -> Any:
            try:
                info = os.lstat(path)
            except OSError as exc:
                raise pyfuse3.FUSEError(exc.errno) from None
            inode = pyfuse3.ROOT_INODE if path == str(source) else info.st_ino
            self.paths.setdefault(inode, path)
            entry = pyfuse3.EntryAttributes()
            for name in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_rdev"):
                setattr(entry, name, getattr(info, name))
            entry.st_ino = inode
            entry.st_atime_ns, entry.st_mtime_ns, entry.st_ctime_ns = (
                info.st_atime_ns,
                info.st_mtime_ns,
                info.st_ctime_ns,
            )
            entry.st_blksize, entry.st_blocks = info.st_blksize, info.st_blocks
            entry.attr_timeout = entry.entry_timeout = 0
            return entry

        def _child(self, parent: int, name: bytes) -> str:
            return os.path.join(self._path(parent), os.fsdecode(name))

        def _check(self) -> None:
            if os.path.exists(switch):
                raise pyfuse3.FUSEError(errno.EIO)

        async def lookup(self, parent: int, name: bytes, ctx: Any = None) -> Any:
            return self._entry(self._child(parent, name))

        async def getattr(self, inode: int, ctx: Any = None) -> Any:
            return self._entry(self._path(inode))

        async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> Any:
            path = self._path(inode)
            try:
                if fields.update_size:
                    if fh is not None:
                        os.ftruncate(fh, attr.st_size)
                    else:
                        os.truncate(path, attr.st_size)
                if fields.update_mode:
                    os.chmod(path, stat.S_IMODE(attr.st_mode))
                if fields.update_uid or fields.update_gid:
                    os.chown(path, attr.st_uid if fields.update_uid else -1, attr.st_gid if fields.update_gid else -1)
            except OSError as exc:
                raise pyfuse3.FUSEError(exc.errno) from None
            return self._entry(path)

        async def forget(self, inode_list: Any) -> None:
            return None

        async def opendir(self, inode: int, ctx: Any) -> int:
            self._path(inode)
            return inode

        async def readdir(self, fh: int, start_id: int, token: Any) -> None:
            path = self._path(fh)
            names = sorted(os.listdir(path))
            for index, name in enumerate(names[start_id:], start=start_id + 1):
                if not pyfuse3.readdir_reply(token, os.fsencode(name), self._entry(os.path.join(path, name)), index):
                    break

        async def releasedir(self, fh: int) -> None:
            return None

        async def fsyncdir(self, fh: int, datasync: bool) -> None:
            self._check()
            descriptor = os.open(self._path(fh), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)

        async def mkdir(self, parent: int, name: bytes, mode: int, ctx: Any) -> Any:
            path = self._child(parent, name)
            try:
                os.mkdir(path, stat.S_IMODE(mode))
            except OSError as exc:
                raise pyfuse3.FUSEError(exc.errno) from None
            return self._entry(path)

        async def rmdir(self, parent: int, name: bytes, ctx: Any) -> None:
            try:
                os.rmdir(self._child(parent, name))
            except OSError as exc:
                raise pyfuse3.FUSEError(exc.errno) from None

        async def unlink(self, parent: int, name: bytes, ctx: Any) -> None:
            try:
                os.unlink(self._child(parent, name))
            except OSError as exc:
                raise pyfuse3.FUSEError(exc.errno) from None

        async def open(self, inode: int, flags: int, ctx: Any) -> Any:
            try:
                fd = os.open(self._path(inode), flags & ~(os.O_CREAT | os.O_EXCL))
            except OSError as exc:
                raise pyfuse3.FUSEError(exc.errno) from None
            return pyfuse3.FileInfo(fh=fd)

        async def create(self, parent: int, name: bytes, mode: int, flags: int, ctx: Any) -> Any:
            path = self._child(parent, name)
            try:
                fd = os.open(path, flags | os.O_CREAT, stat.S_IMODE(mode))
            except OSError as exc:
                raise pyfuse3.FUSEError(exc.errno) from None
            return pyfuse3.FileInfo(fh=fd), self._entry(path)

        async def read(self, fh: int, off: int, size: int) -> bytes:
            return os.pread(fh, size, off)

        async def write(self, fh: int, off: int, buf: bytes) -> int:
            try:
                return os.pwrite(fh, buf, off)
            except OSError as exc:
                raise pyfuse3.FUSEError(exc.errno) from None

        async def fsync(self, fh: int, datasync: bool) -> None:
            self._check()
            os.fsync(fh)

        async def flush(self, fh: int) -> None:
            return None

        async def release(self, fh: int) -> None:
            os.close(fh)

        async def statfs(self, ctx: Any) -> Any:
            info = os.statvfs(source)
            result = pyfuse3.StatvfsData()
            for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail"):
                setattr(result, name, getattr(info, name))
            result.f_namemax = info.f_namemax
            return result

    options = set(pyfuse3.default_options)
    options.add("fsname=coral-faulty")
    options.discard("default_permissions")
    pyfuse3.init(PassThrough(), str(mountpoint), options)
    try:
        asyncio.run(pyfuse3.main())
    finally:
        pyfuse3.close(unmount=False)


if __name__ == "__main__":
    _serve(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
