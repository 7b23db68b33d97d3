"""Which Beyla release a binary is, read from its own start-up line.

Beyla has no `--version` flag. Every release logs one line at start:

    level=INFO msg="Grafana Beyla" Version=v3.35.0 Revision=1a2b3c4 "OpenTelemetry SDK Version"=1.38.0

(text before its config is read in older releases, in the configured format after it in newer
ones). The agent starts the binary with a tiny config, in a private network namespace and with
no capabilities at all, and reads until that line. The config sets `enforce_sys_caps: true`,
so a current Beyla stops by itself right after the line, at its capability check, before it
loads any eBPF program or contacts anything; an older one is stopped by the agent as soon as the
line appears. The result is cached per (path, inode, mtime, size), in memory and in
`<state_dir>/beyla/version-cache.json`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from coral_ebpf.beyla import process
from coral_ebpf.beyla.diagnosis import Diagnosis, diagnose_line
from coral_ebpf.beyla.dialect import BeylaVersion
from coral_ebpf.beyla.logparse import LogLine, parse_line
from coral_ebpf.errors import CoralError

log = logging.getLogger(__name__)

VERSION_MESSAGE = "Grafana Beyla"
PROBE_CONFIG = """\
# coral-ebpf version probe: Beyla runs with no capabilities and stops at its capability check.
enforce_sys_caps: true
log_level: INFO
open_port: 1
otel_traces_export:
  endpoint: http://127.0.0.1:9
"""
CACHE_FILE = "version-cache.json"


class VersionDetectionError(CoralError):
    def __init__(self, message: str, hint: str = "", diagnosis: Diagnosis | None = None) -> None:
        super().__init__(message, hint)
        self.diagnosis = diagnosis


@dataclass(frozen=True)
class VersionInfo:
    version: BeylaVersion
    text: str  # as Beyla printed it, e.g. "v3.35.0"
    revision: str
    line: str


def version_from_line(line: LogLine) -> VersionInfo | None:
    if line.message != VERSION_MESSAGE:
        return None
    text = str(line.fields.get("Version", ""))
    try:
        version = BeylaVersion.parse(text)
    except ValueError:
        return None
    return VersionInfo(version, text, str(line.fields.get("Revision", "")), line.raw)


_memory_cache: dict[tuple[str, int, int, int], VersionInfo] = {}
_cache_lock = threading.Lock()


def binary_identity(path: Path) -> tuple[str, int, int, int]:
    """(path, inode, mtime, size): a replaced or rewritten binary has another identity."""
    st = os.stat(path)
    return (str(path), st.st_ino, st.st_mtime_ns, st.st_size)


def _load_disk_cache(work_dir: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads((work_dir / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _store_disk_cache(work_dir: Path, key: tuple[str, int, int, int], info: VersionInfo) -> None:
    try:
        work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        entries = _load_disk_cache(work_dir)
        entries[key[0]] = {
            "ino": key[1],
            "mtime_ns": key[2],
            "size": key[3],
            "version": info.text,
            "revision": info.revision,
            "line": info.line,
        }
        temporary = work_dir / f".{CACHE_FILE}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entries, handle, indent=1)
        os.replace(temporary, work_dir / CACHE_FILE)
    except OSError as exc:
        log.debug("version cache not written: %s", exc)


def _cached(key: tuple[str, int, int, int], work_dir: Path | None) -> VersionInfo | None:
    with _cache_lock:
        if key in _memory_cache:
            return _memory_cache[key]
    if work_dir is None:
        return None
    entry = _load_disk_cache(work_dir).get(key[0])
    if not isinstance(entry, dict) or (entry.get("ino"), entry.get("mtime_ns"), entry.get("size")) != key[1:]:
        return None
    try:
        info = VersionInfo(
            BeylaVersion.parse(str(entry["version"])),
            str(entry["version"]),
            str(entry.get("revision", "")),
            str(entry.get("line", "")),
        )
    except (KeyError, ValueError):
        return None
    with _cache_lock:
        _memory_cache[key] = info
    return info


def detect_version(binary: Path, work_dir: Path | None = None, timeout: float = 20.0) -> VersionInfo:
    """The release of the (already safety-checked) Beyla at `binary`; VersionDetectionError if it will not say."""
    key = binary_identity(binary)
    cached = _cached(key, work_dir)
    if cached is not None:
        return cached
    info = _run_probe(binary, work_dir, timeout)
    with _cache_lock:
        _memory_cache[key] = info
    if work_dir is not None:
        _store_disk_cache(work_dir, key, info)
    return info


def _reader(stream: object, name: str, lines: queue.Queue[LogLine | None]) -> None:
    try:
        for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
            lines.put(parse_line(raw.decode("utf-8", "replace"), name))
    finally:
        lines.put(None)


def _run_probe(binary: Path, work_dir: Path | None, timeout: float) -> VersionInfo:
    import tempfile

    privileged = os.geteuid() == 0
    with tempfile.TemporaryDirectory(prefix="coral-ebpf-beyla-version-") as scratch:
        directory = Path(scratch)
        config = directory / "probe.yaml"
        config.write_text(PROBE_CONFIG, encoding="utf-8")
        os.chmod(config, 0o600)
        env = process.child_environment(directory, None)
        child = process.spawn(
            binary, ["-config", str(config)], env, cwd=directory, netns=privileged, drop_caps=privileged
        )
        lines: queue.Queue[LogLine | None] = queue.Queue()
        readers = [
            threading.Thread(target=_reader, args=(child.popen.stdout, "stdout", lines), daemon=True),
            threading.Thread(target=_reader, args=(child.popen.stderr, "stderr", lines), daemon=True),
        ]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + timeout
        first_error: LogLine | None = None
        first_lines: list[str] = []
        closed = 0
        found: VersionInfo | None = None
        try:
            while closed < len(readers) and found is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    line = lines.get(timeout=remaining)
                except queue.Empty:
                    break
                if line is None:
                    closed += 1
                    continue
                found = version_from_line(line)
                if len(first_lines) < 3 and line.raw.strip():
                    first_lines.append(line.raw.strip())
                if first_error is None and line.level == "ERROR":
                    first_error = line
            still_running = closed < len(readers)  # when no version line came: ran out of time, or exited
            if not still_running and found is None:
                # Its output ended: it is exiting. Let it, so its own exit status is reported, not our SIGTERM's.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.popen.wait(timeout=1.0)
        finally:
            process.terminate(child, 1.0)
            for reader in readers:
                reader.join(timeout=1.0)
            for stream in (child.popen.stdout, child.popen.stderr):
                with contextlib.suppress(OSError):
                    stream.close()  # type: ignore[union-attr]
    if found is not None:
        return found
    diagnosis = diagnose_line(first_error) if first_error is not None else None
    if diagnosis is not None:
        assert first_error is not None
        raise VersionDetectionError(
            f"{binary} did not print its version; it stopped with: {first_error.raw}", diagnosis.fix, diagnosis
        )
    raise not_beyla(binary, timeout, None if still_running else child.popen.returncode, first_lines)


NOT_BEYLA_FIX = (
    "point beyla.binary (or $CORAL_EBPF_BEYLA_BIN) at a Grafana Beyla executable, or install the pinned "
    "release with 'coral-ebpf beyla install'"
)


def not_beyla(binary: Path, timeout: float, status: int | None, first_lines: list[str]) -> VersionDetectionError:
    """Every Beyla release logs its `Grafana Beyla` line first thing; a binary that does not is not Beyla."""
    ended = f"it exited with status {status}" if status is not None else f"it printed none within {timeout:.0f}s"
    said = "; its output began: " + " | ".join(first_lines) if first_lines else "; it printed nothing"
    message = f"not a Beyla binary: {binary} printed no '{VERSION_MESSAGE}' version line ({ended}{said})"
    line = first_lines[0] if first_lines else ""
    return VersionDetectionError(message, NOT_BEYLA_FIX, Diagnosis("not_beyla", message, NOT_BEYLA_FIX, False, line))
