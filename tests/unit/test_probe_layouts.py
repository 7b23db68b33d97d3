"""Every probe's event layout in Python matches its C header, field by field.

The headers are compiled with the system C compiler and the same `-D` defines the loaders pass
to BCC; the program prints `offsetof` and `sizeof` of each field the Python mirror declares.
"""

from __future__ import annotations

import ctypes
import shutil
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from coral_ebpf.probes import channel
from coral_ebpf.probes.channel import Transport
from coral_ebpf.probes.http_red import layout as red_layout
from coral_ebpf.probes.http_red.loader import HttpRedConfig, HttpRedProbe
from coral_ebpf.probes.listen_events import layout as listen_layout
from coral_ebpf.probes.proc_events import layout as proc_layout
from coral_ebpf.resources import bpf_dir

CC = shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="needs a C compiler (cc)")

# The BPF side's integer types, as BCC's helpers define them.
PRELUDE = """\
#include <stddef.h>
#include <stdio.h>
typedef unsigned long long u64;
typedef long long s64;
typedef unsigned int u32;
typedef int s32;
typedef unsigned short u16;
typedef unsigned char u8;
"""


def _compile_and_run(source: str, defines: Mapping[str, int | str], tmp_path: Path) -> str:
    assert CC is not None
    program = tmp_path / "layout.c"
    binary = tmp_path / "layout"
    program.write_text(source, encoding="utf-8")
    flags = [f"-D{key}={value}" for key, value in defines.items()]
    built = subprocess.run(
        [CC, "-std=gnu11", "-Wall", "-Werror", f"-I{bpf_dir()}", *flags, "-o", str(binary), str(program)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout


def c_layout(
    header: str, struct_name: str, fields: list[str], defines: Mapping[str, int | str], tmp_path: Path
) -> dict[str, tuple[int, int]]:
    """name -> (offset, size) of each field of `struct struct_name` in `header`, and "" -> (0, sizeof)."""
    lines = [PRELUDE, f'#include "{header}"', "int main(void) {"]
    lines.append(f'    printf(" %zu %zu\\n", (size_t)0, sizeof(struct {struct_name}));')
    for field in fields:
        lines.append(
            f'    printf("{field} %zu %zu\\n", offsetof(struct {struct_name}, {field}), '
            f"sizeof(((struct {struct_name} *)0)->{field}));"
        )
    lines += ["    return 0;", "}"]
    out: dict[str, tuple[int, int]] = {}
    for line in _compile_and_run("\n".join(lines) + "\n", defines, tmp_path).splitlines():
        name, offset, size = line.rsplit(" ", 2)
        out[name.strip()] = (int(offset), int(size))
    return out


def python_layout(structure: type[ctypes.Structure]) -> dict[str, tuple[int, int]]:
    out = {"": (0, ctypes.sizeof(structure))}
    for name, *_ in structure._fields_:
        descriptor = getattr(structure, name)
        out[name] = (descriptor.offset, descriptor.size)
    return out


def _field_names(structure: type[ctypes.Structure]) -> list[str]:
    return [name for name, *_ in structure._fields_]


def test_proc_event(tmp_path: Path) -> None:
    record = proc_layout.ProcEventRecord
    found = c_layout("proc_events/proc_events.h", "proc_event", _field_names(record), proc_layout.defines(), tmp_path)
    assert found == python_layout(record)


def test_listen_event(tmp_path: Path) -> None:
    record = listen_layout.ListenEventRecord
    defines = listen_layout.defines()
    found = c_layout("listen_events/listen_events.h", "listen_event", _field_names(record), defines, tmp_path)
    assert found == python_layout(record)


def _red_defines(path_max: int) -> dict[str, int | str]:
    """Exactly what the loader hands BCC for this path_max."""
    probe = HttpRedProbe(Path("/nonexistent"), HttpRedConfig(path_max=path_max), lambda _records: None)
    return probe.defines(Transport.RING_BUFFER)


@pytest.mark.parametrize("path_max", [32, 128, 256])
def test_red_event(tmp_path: Path, path_max: int) -> None:
    header = red_layout.RedEventHeader
    fields = [*_field_names(header), "path"]
    found = c_layout("http_red/http_red.h", "red_event", fields, _red_defines(path_max), tmp_path)
    expected = python_layout(header)
    expected[""] = (0, red_layout.event_size(path_max))
    expected["path"] = (red_layout.PATH_START, path_max)
    assert found == expected
    # The decoder's one-call format reads the same header bytes.
    assert struct.calcsize(red_layout.HEADER_FORMAT) == red_layout.PATH_START
    assert (found["tgid"][0], found["path_len"][0]) == (red_layout.ATTRIBUTES_START, red_layout.PATH_LEN_OFFSET)


def test_red_connection_key(tmp_path: Path) -> None:
    key = red_layout.ConnKey
    found = c_layout("http_red/http_red.h", "conn_key", _field_names(key), _red_defines(128), tmp_path)
    assert found == python_layout(key)


def test_the_decoder_format_reads_what_the_c_layout_holds() -> None:
    header = red_layout.RedEventHeader(tgid=7, listen_fd=-1, status=503, path_len=3, method=2, flags=8, peer_port=80)
    values = struct.unpack(red_layout.HEADER_FORMAT, bytes(header))
    assert (values[5], values[6], values[7], values[9], values[10], values[11], values[12]) == (80, 7, -1, 503, 3, 2, 8)


@pytest.mark.parametrize(
    "header", ["http_red/http_red.h", "proc_events/proc_events.h", "listen_events/listen_events.h"]
)
def test_headers_take_their_constants_from_python(tmp_path: Path, header: str) -> None:
    """Without the loader's defines a header does not compile: the constants have one source."""
    assert CC is not None
    program = tmp_path / "bare.c"
    program.write_text(f'{PRELUDE}#include "{header}"\nint main(void) {{ return 0; }}\n', encoding="utf-8")
    built = subprocess.run(
        [CC, "-fsyntax-only", f"-I{bpf_dir()}", str(program)], capture_output=True, text=True, check=False
    )
    assert built.returncode != 0 and "come from" in built.stderr


def test_channel_header_takes_its_defines_from_python(tmp_path: Path) -> None:
    defines = channel.defines(Transport.PERF_BUFFER, 1 << 20)
    assert defines == {"CHANNEL_RINGBUF": 0, "CHANNEL_PAGES": 256, "CHANNEL_WAKEUP": 1}
    assert channel.pages_for(1 << 20, 3) == 64  # 85 pages each, rounded down to a power of two
    assert channel.pages_for(100) == 1
