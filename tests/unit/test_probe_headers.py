"""The kernel headers resolver on fixture trees laid out like Debian's packages."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from coral_ebpf.probes.headers import (
    STAMP_NAME,
    HeadersTree,
    NoKernelHeadersError,
    find_headers,
    prepare_headers,
    resolve_headers,
)

NO_ENV: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _no_user_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BCC_KERNEL_SOURCE", raising=False)


def resolver(root: Path) -> Callable[[Path, str], HeadersTree]:
    def resolve(state: Path, release: str) -> HeadersTree:
        return resolve_headers(state, release, usr_src=root / "usr/src", lib_modules=root / "none", machine="x86_64")

    return resolve


def _write(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def debian_split(
    root: Path,
    abi: str,
    *,
    uts: str | None = None,
    arch: str = "x86",
    common: str | None = None,
    makefile_include: bool = True,
) -> tuple[Path, Path]:
    """`linux-headers-<abi>` + its `-common` dir under root/usr/src, like dpkg installs them."""
    usr_src = root / "usr" / "src"
    common_name = common or f"linux-headers-{abi.rsplit('-', 1)[0]}-common"
    arch_dir = usr_src / f"linux-headers-{abi}"
    common_dir = usr_src / common_name
    _write(arch_dir / ".config", "CONFIG_X86_64=y\n")
    _write(arch_dir / ".kernelvariables", f"override ARCH = {arch}\noverride KERNELRELEASE = {abi}\n")
    _write(arch_dir / "Makefile", f"include {common_dir}/Makefile\n" if makefile_include else "# arch makefile\n")
    _write(arch_dir / "include" / "generated" / "autoconf.h", "#define CONFIG_X86_64 1\n")
    _write(arch_dir / "include" / "generated" / "utsrelease.h", f'#define UTS_RELEASE "{uts or abi}"\n')
    _write(arch_dir / "include" / "config" / "kernel.release", "6.1.192\n")
    _write(arch_dir / "arch" / arch / "include" / "generated" / "asm" / "syscalls_64.h", "/* generated */\n")
    kbuild = root / "usr" / "lib" / "linux-kbuild-6.1" / "scripts"
    _write(kbuild / "Makefile.build", "# kbuild\n")
    (arch_dir / "scripts").symlink_to("../../lib/linux-kbuild-6.1/scripts")
    _write(common_dir / "Makefile", "# common makefile\n")
    _write(common_dir / "include" / "linux" / "kconfig.h", "/* kconfig */\n")
    _write(common_dir / "include" / "linux" / "sched.h", "/* sched */\n")
    _write(common_dir / "arch" / arch / "include" / "asm" / "ptrace.h", "/* ptrace */\n")
    _write(common_dir / "arch" / "arm64" / "include" / "asm" / "ptrace.h", "/* arm64 */\n")
    return arch_dir, common_dir


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            stat = path.lstat()
            found[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return found


def test_prefers_the_running_kernels_build_dir(tmp_path: Path) -> None:
    debian_split(tmp_path, "6.1.0-56-amd64")
    lib_modules = tmp_path / "lib" / "modules"
    (lib_modules / "6.1.0-56-amd64" / "build" / "include").mkdir(parents=True)
    source = find_headers("6.1.0-56-amd64", usr_src=tmp_path / "usr/src", lib_modules=lib_modules, environ=NO_ENV)
    assert source.kind == "build" and source.exact
    tree = prepare_headers(source, tmp_path / "state", "6.1.0-56-amd64")
    assert tree.kernel_source_env is None and tree.path is None
    assert not (tmp_path / "state").exists()  # nothing to prepare, nothing written


def test_dangling_build_link_is_ignored(tmp_path: Path) -> None:
    debian_split(tmp_path, "6.1.0-56-amd64")
    build = tmp_path / "lib" / "modules" / "6.1.0-56-amd64" / "build"
    build.parent.mkdir(parents=True)
    build.symlink_to(tmp_path / "nowhere")
    source = find_headers(
        "6.1.0-56-amd64", usr_src=tmp_path / "usr/src", lib_modules=tmp_path / "lib/modules", environ=NO_ENV
    )
    assert source.kind == "split" and source.exact


def test_split_install_is_found_with_its_common_dir(tmp_path: Path) -> None:
    arch_dir, common_dir = debian_split(tmp_path, "6.1.0-56-amd64")
    source = find_headers(
        "6.18.44-fc", usr_src=tmp_path / "usr/src", lib_modules=tmp_path / "none", machine="x86_64", environ=NO_ENV
    )
    assert source.kind == "split"
    assert source.dirs == (common_dir, arch_dir)
    assert source.release == "6.1.0-56-amd64"  # from UTS_RELEASE, not include/config/kernel.release
    assert not source.exact
    assert "running 6.18.44-fc" in source.describe("6.18.44-fc")


@pytest.mark.parametrize(
    ("running", "expected"),
    [
        ("6.18.44-fc", "6.12.117+deb12-amd64"),
        ("6.2.0-1", "6.1.0-56-amd64"),
        ("5.15.0-91-generic", "5.10.0-46-amd64"),
        ("6.1.0-56-amd64", "6.1.0-56-amd64"),
        ("6.12.117+deb12-amd64", "6.12.117+deb12-amd64"),
    ],
)
def test_nearest_version_wins_exact_first(tmp_path: Path, running: str, expected: str) -> None:
    debian_split(tmp_path, "5.10.0-46-amd64")
    debian_split(tmp_path, "6.1.0-56-amd64")
    debian_split(tmp_path, "6.12.117+deb12-amd64", common="linux-headers-6.12.117+deb12-common")
    source = find_headers(
        running, usr_src=tmp_path / "usr/src", lib_modules=tmp_path / "none", machine="x86_64", environ=NO_ENV
    )
    assert source.release == expected
    assert source.exact is (running == expected)


def test_other_architectures_are_skipped(tmp_path: Path) -> None:
    debian_split(tmp_path, "6.1.0-56-arm64", arch="arm64")
    with pytest.raises(NoKernelHeadersError):
        find_headers("6.1.0-56-amd64", usr_src=tmp_path / "usr/src", lib_modules=tmp_path / "none", machine="x86_64")
    found = find_headers(
        "6.1.0-56-arm64", usr_src=tmp_path / "usr/src", lib_modules=tmp_path / "none", machine="aarch64"
    )
    assert found.exact


def test_rt_flavour_without_include_line_finds_common_rt(tmp_path: Path) -> None:
    arch_dir, common_dir = debian_split(
        tmp_path, "6.1.0-56-rt-amd64", common="linux-headers-6.1.0-56-common-rt", makefile_include=False
    )
    source = find_headers(
        "6.1.0-56-rt-amd64", usr_src=tmp_path / "usr/src", lib_modules=tmp_path / "none", machine="x86_64"
    )
    assert source.dirs == (common_dir, arch_dir)


def test_no_headers_says_which_package(tmp_path: Path) -> None:
    (tmp_path / "usr/src").mkdir(parents=True)
    with pytest.raises(NoKernelHeadersError) as info:
        find_headers(
            "6.1.0-56-amd64", usr_src=tmp_path / "usr/src", lib_modules=tmp_path / "none", distro_id="debian",
            machine="x86_64", environ=NO_ENV,
        )  # fmt: skip
    assert "no kernel headers found" in info.value.message
    assert "apt-get install linux-headers-6.1.0-56-amd64" in info.value.hint
    assert "linux-headers-amd64" in info.value.hint
    with pytest.raises(NoKernelHeadersError) as info:
        find_headers("4.18.0-553.el8_10.x86_64", usr_src=tmp_path / "absent", distro_id="rhel", environ=NO_ENV)
    assert "dnf install kernel-devel-4.18.0-553.el8_10.x86_64" in info.value.hint


def test_merged_tree_resolves_like_cp_rs_and_writes_only_in_state_dir(tmp_path: Path) -> None:
    debian_split(tmp_path, "6.1.0-56-amd64")
    before = snapshot(tmp_path / "usr")
    state = tmp_path / "state"
    tree = resolve_headers(
        state, "6.18.44-fc", usr_src=tmp_path / "usr/src", lib_modules=tmp_path / "none", machine="x86_64"
    )
    assert snapshot(tmp_path / "usr") == before  # the installed packages are untouched
    assert tree.path == state / "kernel-headers" / "6.1.0-56-amd64"
    assert tree.kernel_source_env == str(tree.path)
    assert not tree.exact and "prepared" in tree.description
    merged = tree.path
    assert (merged / "include/linux/kconfig.h").read_text() == "/* kconfig */\n"
    assert (merged / "include/generated/autoconf.h").is_file()
    assert (merged / "arch/x86/include/asm/ptrace.h").is_file()
    assert (merged / "arch/x86/include/generated/asm/syscalls_64.h").is_file()
    assert (merged / "Makefile").read_text().startswith("include ")  # the arch package wins conflicts
    assert (merged / "scripts/Makefile.build").is_file()  # relative kbuild link still resolves
    # Directories only one package has are single links, so the tree stays small.
    assert (merged / "include/linux").is_symlink()
    assert len(list(merged.rglob("*"))) < 40
    for path in merged.rglob("*"):
        assert state in path.parents


def test_tree_is_reused_until_a_package_changes(tmp_path: Path) -> None:
    arch_dir, _ = debian_split(tmp_path, "6.1.0-56-amd64")
    state = tmp_path / "state"
    resolve = resolver(tmp_path)
    first = resolve(state, "6.18.44-fc")
    assert first.path is not None
    stamp_inode = (first.path / STAMP_NAME).stat().st_ino
    second = resolve(state, "6.18.44-fc")
    assert "reused" in second.description
    assert (first.path / STAMP_NAME).stat().st_ino == stamp_inode
    _write(arch_dir / "new-file", "x")  # an upgrade changes the directory
    third = resolve(state, "6.18.44-fc")
    assert "prepared" in third.description
    assert (first.path / "new-file").is_symlink()


def test_switching_headers_removes_the_old_tree(tmp_path: Path) -> None:
    debian_split(tmp_path, "6.1.0-56-amd64")
    state = tmp_path / "state"
    resolve = resolver(tmp_path)
    old = resolve(state, "6.1.0-56-amd64")
    debian_split(tmp_path, "6.12.117+deb12-amd64", common="linux-headers-6.12.117+deb12-common")
    new = resolve(state, "6.12.117+deb12-amd64")
    assert new.exact and new.path != old.path
    assert old.path is not None and not old.path.exists()


def test_incomplete_tree_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    _, common_dir = debian_split(tmp_path, "6.1.0-56-amd64")
    (common_dir / "include/linux/kconfig.h").unlink()
    state = tmp_path / "state"
    with pytest.raises(NoKernelHeadersError, match=r"kconfig\.h"):
        resolve_headers(state, "6.1.0-56-amd64", usr_src=tmp_path / "usr/src", lib_modules=tmp_path / "none")
    assert [p.name for p in (state / "kernel-headers").iterdir()] == [".lock"]


def test_bcc_kernel_source_override_but_not_our_own_tree(tmp_path: Path) -> None:
    debian_split(tmp_path, "6.1.0-56-amd64")
    custom = tmp_path / "custom-headers"
    (custom / "include").mkdir(parents=True)
    usr_src, none = tmp_path / "usr/src", tmp_path / "none"
    source = find_headers(
        "6.1.0-56-amd64", usr_src=usr_src, lib_modules=none, environ={"BCC_KERNEL_SOURCE": str(custom)}
    )
    assert source.kind == "env" and source.dirs == (custom,)
    ours = resolver(tmp_path)(tmp_path / "state", "6.1.0-56-amd64")
    again = find_headers(
        "6.1.0-56-amd64", usr_src=usr_src, lib_modules=none, environ={"BCC_KERNEL_SOURCE": str(ours.path)}
    )
    assert again.kind == "split"
