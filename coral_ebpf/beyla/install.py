"""`coral-ebpf beyla install`: fetch a Beyla release tarball, verify its SHA-256, install `beyla`.

The release asset is `beyla-linux-{amd64,arm64}-<tag>.tar.gz` from GitHub releases (base URL
overridable with $CORAL_EBPF_BEYLA_BASE_URL, e.g. a mirror or a test server). The checksum
comes from `beyla/checksums.txt`; a release without a known checksum is refused unless the user
passes `--sha256`. Only the archive's top-level `beyla` file is extracted, and an archive with
any absolute or `..` member is refused whole. The binary is installed root-owned, mode 0755.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import platform
import re
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from coral_ebpf.beyla.binary import check_directory_safe
from coral_ebpf.errors import CoralError
from coral_ebpf.resources import beyla_dir

DEFAULT_BASE_URL = "https://github.com/grafana/beyla/releases/download"
BASE_URL_ENV = "CORAL_EBPF_BEYLA_BASE_URL"
DEFAULT_DEST = Path("/usr/local/bin")
MAX_TARBALL_BYTES = 256 * 1024 * 1024
MAX_BINARY_BYTES = 512 * 1024 * 1024
ARCHES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_ASSET_RE = re.compile(r"^beyla-linux-(amd64|arm64)-(v\d+\.\d+\.\d+[0-9A-Za-z.\-]*)\.tar\.gz$")
_CHUNK = 1024 * 1024


class InstallError(CoralError):
    pass


@dataclass(frozen=True)
class InstallResult:
    path: Path
    tag: str
    asset: str
    sha256: str
    source: str  # URL or file path
    checksum_source: str  # "beyla/checksums.txt" | "--sha256"


def pinned_version() -> str:
    return (beyla_dir() / "VERSION").read_text(encoding="ascii").strip()


def known_checksums() -> dict[str, str]:
    found: dict[str, str] = {}
    for raw in (beyla_dir() / "checksums.txt").read_text(encoding="utf-8").splitlines():
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        digest, _, asset = entry.partition("  ")
        found[asset.strip().lstrip("*")] = digest.strip().lower()
    return found


def release_arch(machine: str | None = None) -> str:
    name = (machine or platform.machine()).lower()
    if name not in ARCHES:
        raise InstallError(f"Beyla publishes Linux binaries for amd64 and arm64 only, not {name}")
    return ARCHES[name]


def normalise_tag(version: str) -> str:
    tag = version.strip()
    if not re.fullmatch(r"v?\d+\.\d+\.\d+[0-9A-Za-z.\-]*", tag):
        raise InstallError(f"{version!r} is not a Beyla release tag (e.g. v3.35.0)")
    return tag if tag.startswith("v") else f"v{tag}"


def asset_name(tag: str, arch: str) -> str:
    return f"beyla-linux-{arch}-{tag}.tar.gz"


def _check_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    loopback = host == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(host).is_loopback
    if parts.scheme == "http" and loopback:
        return
    raise InstallError(
        f"refusing to download Beyla from {url}: only https (or http on loopback) is allowed",
        f"check ${BASE_URL_ENV}",
    )


def _download(url: str, into: Path) -> str:
    """Stream `url` into `into`, returning the SHA-256; bounded by MAX_TARBALL_BYTES."""
    _check_url(url)
    digest = hashlib.sha256()
    total = 0
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(into, "wb") as out:
            _check_url(response.geturl())  # after redirects
            while chunk := response.read(_CHUNK):
                total += len(chunk)
                if total > MAX_TARBALL_BYTES:
                    raise InstallError(f"{url} is larger than {MAX_TARBALL_BYTES} bytes; refusing it")
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise InstallError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise InstallError(f"download of {url} failed: {exc}", "check the network, or use --from FILE") from exc
    return digest.hexdigest()


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _beyla_member(archive: tarfile.TarFile, label: str) -> tarfile.TarInfo:
    found: tarfile.TarInfo | None = None
    for member in archive.getmembers():
        path = PurePosixPath(member.name)
        if path.is_absolute() or ".." in path.parts:
            raise InstallError(f"{label} contains the unsafe path {member.name!r}; refusing the whole archive")
        parts = [p for p in path.parts if p != "."]
        if parts == ["beyla"]:
            if not member.isfile():
                raise InstallError(f"{label}: 'beyla' in the archive is not a regular file")
            if member.size > MAX_BINARY_BYTES:
                raise InstallError(f"{label}: 'beyla' is {member.size} bytes, more than a Beyla binary can be")
            found = member
    if found is None:
        raise InstallError(f"{label} has no top-level 'beyla' file; is it a Beyla release tarball?")
    return found


def _extract_binary(tarball: Path, label: str, dest_dir: Path) -> Path:
    target = dest_dir / "beyla"
    temporary = dest_dir / f".beyla.{os.getpid()}.tmp"
    temporary.unlink(missing_ok=True)  # left by an install that was killed half-way
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            member = _beyla_member(archive, label)
            source = archive.extractfile(member)
            if source is None:
                raise InstallError(f"{label}: cannot read 'beyla' from the archive")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o700)
            with os.fdopen(fd, "wb") as out:
                _copy_bounded(source, out, member.size)
                os.fchown(out.fileno(), 0, 0)
                os.fchmod(out.fileno(), 0o755)
                out.flush()
                os.fsync(out.fileno())
    except (tarfile.TarError, EOFError) as exc:
        temporary.unlink(missing_ok=True)
        raise InstallError(f"{label} is not a readable .tar.gz: {exc}") from exc
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, target)
    return target


def _copy_bounded(source: IO[bytes], out: IO[bytes], size: int) -> None:
    remaining = size
    while remaining > 0:
        chunk = source.read(min(_CHUNK, remaining))
        if not chunk:
            raise InstallError("the archive ended before the end of 'beyla'")
        out.write(chunk)
        remaining -= len(chunk)


def install(
    *,
    version: str | None = None,
    source_file: Path | None = None,
    sha256: str | None = None,
    dest_dir: Path = DEFAULT_DEST,
    environ: Mapping[str, str] | None = None,
    machine: str | None = None,
) -> InstallResult:
    """Install Beyla into `dest_dir` from the release URL or `source_file`, verifying its SHA-256."""
    env = os.environ if environ is None else environ
    if os.geteuid() != 0:
        raise InstallError("installing Beyla needs root (the binary is installed root-owned)", "run it with sudo")
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise InstallError(f"--sha256 {sha256!r} is not 64 hexadecimal digits")
    arch = release_arch(machine)
    if source_file is not None and version is None:
        match = _ASSET_RE.match(source_file.name)
        version = match.group(2) if match else None
    tag = normalise_tag(version) if version else (pinned_version() if source_file is None else "")
    asset = asset_name(tag, arch) if tag else source_file.name if source_file else ""
    expected = known_checksums().get(asset) if tag else None
    given = sha256.lower() if sha256 else None
    if expected and given and expected != given:
        raise InstallError(f"--sha256 {given} differs from the published checksum of {asset} ({expected})")
    want = expected or given
    if want is None:
        raise InstallError(
            f"no published checksum is known for {asset or source_file}; the agent will not install an "
            "unverified Beyla",
            "pass --sha256 with the asset's digest from a source you trust (the release page lists it), or "
            f"install the pinned {pinned_version()}",
        )
    dest_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    check_directory_safe(dest_dir)
    with tempfile.TemporaryDirectory(prefix="coral-ebpf-beyla-install-") as scratch:
        if source_file is not None:
            if not source_file.is_file():
                raise InstallError(f"--from {source_file}: no such file")
            tarball, label = source_file, str(source_file)
            actual = _hash_file(source_file)
        else:
            base = env.get(BASE_URL_ENV, DEFAULT_BASE_URL).rstrip("/")
            label = f"{base}/{tag}/{asset}"
            tarball = Path(scratch) / asset
            actual = _download(label, tarball)
        if actual != want:
            raise InstallError(
                f"SHA-256 mismatch for {label}: got {actual}, expected {want}; nothing was installed",
                "the download is corrupt or not the published release; try again or check the source",
            )
        path = _extract_binary(tarball, label, dest_dir)
    return InstallResult(
        path=path,
        tag=tag or "(unknown)",
        asset=asset,
        sha256=actual,
        source=label,
        checksum_source="beyla/checksums.txt" if expected else "--sha256",
    )
