"""`coral-ebpf beyla install` against a loopback HTTP server serving test tarballs (never a real download)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from coral_ebpf.beyla import install as installer
from coral_ebpf.beyla.binary import UnsafeBinaryError
from coral_ebpf.beyla.install import InstallError, asset_name, install, known_checksums, release_arch
from coral_ebpf.cli import main
from tests.beyla_standin import install_standin

TAG = "v3.35.0"
ARCH = release_arch()
ASSET = asset_name(TAG, ARCH)


def make_tarball(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> str:
    """A gzip tarball like Beyla's release asset; returns its SHA-256."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            archive.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def release(tmp_path: Path) -> dict[str, Any]:
    """A release directory laid out like GitHub's: <base>/<tag>/<asset>, holding a stand-in `beyla`."""
    standin = install_standin(tmp_path / "standin-src")
    root = tmp_path / "releases"
    (root / TAG).mkdir(parents=True)
    digest = make_tarball(
        root / TAG / ASSET,
        {"beyla": standin.read_bytes(), "LICENSE": b"Apache-2.0\n", "NOTICE": b"n\n", "third_party_licenses.csv": b""},
    )
    return {"root": root, "digest": digest, "standin_dir": standin.parent}


@pytest.fixture
def server(release: dict[str, Any]) -> Iterator[str]:
    root = release["root"]

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    directory = tmp_path / "usr-local-bin"
    directory.mkdir(mode=0o755)
    return directory


def test_install_from_the_release_url_verifies_and_installs_root_owned_0755(
    release: dict[str, Any], server: str, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(installer, "known_checksums", lambda: {ASSET: release["digest"]})
    result = install(version=TAG, dest_dir=dest, environ={installer.BASE_URL_ENV: server})
    assert result.path == dest / "beyla"
    assert result.sha256 == release["digest"] and result.checksum_source == "beyla/checksums.txt"
    assert result.source == f"{server}/{TAG}/{ASSET}"
    st = os.stat(result.path)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o755)
    assert sorted(p.name for p in dest.iterdir()) == ["beyla"]  # nothing else from the archive


def test_a_bad_checksum_installs_nothing(
    release: dict[str, Any], server: str, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(installer, "known_checksums", lambda: {ASSET: "0" * 64})
    with pytest.raises(InstallError, match="SHA-256 mismatch") as caught:
        install(version=TAG, dest_dir=dest, environ={installer.BASE_URL_ENV: server})
    assert release["digest"] in caught.value.message and "nothing was installed" in caught.value.message
    assert list(dest.iterdir()) == []


def test_an_unknown_version_needs_sha256(release: dict[str, Any], server: str, dest: Path) -> None:
    environ = {installer.BASE_URL_ENV: server}
    with pytest.raises(InstallError, match=r"no published checksum is known for beyla-linux-\w+-v9\.9\.9\.tar\.gz"):
        install(version="9.9.9", dest_dir=dest, environ=environ)
    other = release["root"] / "v9.9.9"
    other.mkdir()
    (other / asset_name("v9.9.9", ARCH)).write_bytes((release["root"] / TAG / ASSET).read_bytes())
    result = install(version="9.9.9", sha256=release["digest"].upper(), dest_dir=dest, environ=environ)
    assert result.checksum_source == "--sha256" and result.tag == "v9.9.9"


def test_sha256_contradicting_the_pin_is_refused(dest: Path) -> None:
    with pytest.raises(InstallError, match="differs from the published checksum"):
        install(version=TAG, sha256="1" * 64, dest_dir=dest, environ={})


@pytest.mark.parametrize(
    ("members", "symlinks", "message"),
    [
        ({"../beyla": b"evil", "beyla": b"x"}, None, "unsafe path '../beyla'"),
        ({"/etc/cron.d/evil": b"evil", "beyla": b"x"}, None, "unsafe path '/etc/cron.d/evil'"),
        ({"bin/../../beyla": b"evil"}, None, "unsafe path 'bin/../../beyla'"),
        ({"LICENSE": b"x"}, None, "has no top-level 'beyla' file"),
        ({}, {"beyla": "/bin/sh"}, "'beyla' in the archive is not a regular file"),
    ],
    ids=["dotdot", "absolute", "nested-dotdot", "missing", "symlink"],
)
def test_unsafe_or_wrong_archives_are_refused_whole(
    tmp_path: Path, dest: Path, members: dict[str, bytes], symlinks: dict[str, str] | None, message: str
) -> None:
    tarball = tmp_path / asset_name("v9.9.9", ARCH)
    digest = make_tarball(tarball, members, symlinks)
    with pytest.raises(InstallError, match=message.replace("(", r"\(").replace(")", r"\)")):
        install(source_file=tarball, sha256=digest, dest_dir=dest)
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "beyla").exists()


def test_install_from_a_file_on_disk(release: dict[str, Any], dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = release["root"] / TAG / ASSET
    # Version known from the file name: its pinned checksum applies (here: patched to the test tarball's).
    monkeypatch.setattr(installer, "known_checksums", lambda: {ASSET: release["digest"]})
    result = install(source_file=tarball, dest_dir=dest)
    assert result.checksum_source == "beyla/checksums.txt" and result.source == str(tarball)
    # Under another name, the version is unknown: --sha256 is required.
    renamed = tarball.with_name("beyla.tgz")
    renamed.write_bytes(tarball.read_bytes())
    with pytest.raises(InstallError, match="no published checksum is known"):
        install(source_file=renamed, dest_dir=dest)
    assert install(source_file=renamed, sha256=release["digest"], dest_dir=dest).tag == "(unknown)"


def test_only_https_or_loopback_http(dest: Path) -> None:
    environ = {installer.BASE_URL_ENV: "http://example.com/releases"}
    with pytest.raises(InstallError, match="only https"):
        install(version=TAG, dest_dir=dest, environ=environ)


def test_an_unsafe_destination_is_refused_before_downloading(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o775)
    with pytest.raises(UnsafeBinaryError, match="writable by group"):
        install(version=TAG, dest_dir=loose, environ={installer.BASE_URL_ENV: "http://127.0.0.1:9"})


def test_pinned_checksums_are_real_sha256_values() -> None:
    checksums = known_checksums()
    assert f"beyla-linux-amd64-{installer.pinned_version()}.tar.gz" in checksums
    assert f"beyla-linux-arm64-{installer.pinned_version()}.tar.gz" in checksums
    assert all(len(value) == 64 and int(value, 16) >= 0 for value in checksums.values())


def test_cli_install_then_version(
    release: dict[str, Any],
    server: str,
    dest: Path,
    *,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(installer.BASE_URL_ENV, server)
    # The real pin for TAG does not match the test tarball: refused, nothing installed.
    assert main(["beyla", "install", "--version", TAG, "--sha256", release["digest"], "--dest", str(dest)]) == 1
    assert "differs from the published checksum" in capsys.readouterr().err
    assert list(dest.iterdir()) == []
    # The same tarball published as an unpinned release, with its digest given.
    other = release["root"] / "v3.34.0"
    other.mkdir()
    (other / asset_name("v3.34.0", ARCH)).write_bytes((release["root"] / TAG / ASSET).read_bytes())
    code = main(
        ["beyla", "install", "--version", "v3.34.0", "--sha256", release["digest"], "--dest", str(dest), "--json"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"] == str(dest / "beyla") and summary["reports"] == TAG
    assert summary["note"] == f"the tarball was v3.34.0 but the binary says {TAG}"
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nbeyla:\n  binary: {dest / 'beyla'}\n")
    assert main(["beyla", "version", "--config", str(config), "--json"]) == 0
    version = json.loads(capsys.readouterr().out)
    assert (version["version"], version["dialect"], version["found_by"]) == (TAG, "v3.20", "config beyla.binary")
    # Failure: exit 1 with the reason.
    assert main(["beyla", "install", "--version", "v0.0.1", "--dest", str(dest)]) == 1
    assert "no published checksum" in capsys.readouterr().err


def test_cli_install_goes_where_the_config_says(
    release: dict[str, Any],
    server: str,
    *,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(installer.BASE_URL_ENV, server)
    monkeypatch.setattr(installer, "known_checksums", lambda: {ASSET: release["digest"]})
    target = tmp_path / "opt-beyla"
    target.mkdir(mode=0o755)
    config = tmp_path / "config.yaml"
    config.write_text(f"state_dir: {tmp_path / 'state'}\nbeyla:\n  binary: {target / 'beyla'}\n")
    assert main(["beyla", "install", "--version", TAG, "--config", str(config), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"] == str(target / "beyla") and summary["note"] == ""
    # A configured name the tarball does not use: installed in that directory, and the note says so.
    config.write_text(f"state_dir: {tmp_path / 'state'}\nbeyla:\n  binary: {target / 'beyla-pinned'}\n")
    assert main(["beyla", "install", "--version", TAG, "--config", str(config), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"] == str(target / "beyla")
    assert f"beyla.binary in the config is {target / 'beyla-pinned'}" in summary["note"]
