"""Where the agent finds the files it ships: BPF sources and the Beyla pins.

A wheel carries them inside the package (`coral_ebpf/_data/`); an editable install or a
checkout reads them from the repository's top-level `bpf/` and `beyla/` directories.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    packaged = _PACKAGE_DIR / "_data" / name
    if packaged.is_dir():
        return packaged
    checkout = _PACKAGE_DIR.parent / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"coral-ebpf data directory {name!r} is missing from {packaged} and {checkout}")


def bpf_dir() -> Path:
    """Directory holding the BPF C: `<probe>/<probe>.bpf.c` and the headers."""
    return _data_dir("bpf")


def beyla_dir() -> Path:
    """Directory holding the pinned Beyla version, checksums and config defaults."""
    return _data_dir("beyla")
