"""The runtime's header inlining and the event channel's transport fallback, without a kernel."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from coral_ebpf.probes.channel import Transport, load_with_fallback
from coral_ebpf.probes.runtime import BpfCompileError, inline_includes, program_source


def test_local_headers_are_inlined_once_with_line_markers(tmp_path: Path) -> None:
    (tmp_path / "common").mkdir()
    (tmp_path / "demo").mkdir()
    (tmp_path / "common" / "a.h").write_text("int a;\n")
    (tmp_path / "demo" / "demo.h").write_text('#include "common/a.h"\nint b;\n')
    (tmp_path / "demo" / "demo.bpf.c").write_text(
        '#include <uapi/linux/ptrace.h>\n#include "demo/demo.h"\n#include "common/a.h"\nint main_fn;\n'
    )
    text = inline_includes("demo/demo.bpf.c", tmp_path)
    assert text.splitlines() == [
        "#include <uapi/linux/ptrace.h>",  # system headers are clang's
        '#line 1 "demo/demo.h"',
        '#line 1 "common/a.h"',
        "int a;",
        '#line 2 "demo/demo.h"',
        "int b;",
        '#line 3 "demo/demo.bpf.c"',
        '#line 4 "demo/demo.bpf.c"',  # common/a.h again: already inlined
        "int main_fn;",
    ]


def test_every_shipped_program_inlines_its_headers() -> None:
    for name in ("proc_events", "listen_events", "http_red", "probe_bcc"):
        text = program_source(name)
        assert '#include "' not in text, name


def test_a_missing_program_is_named() -> None:
    with pytest.raises(BpfCompileError, match="'nope'"):
        program_source("nope")


def _loader(refuse: set[Transport]) -> tuple[list[Transport], Callable[[Transport], str]]:
    tried: list[Transport] = []

    def load(transport: Transport) -> str:
        tried.append(transport)
        if transport in refuse:
            raise BpfCompileError(f"{transport.value} refused", "a hint")
        return f"loaded with {transport.value}"

    return tried, load


def test_auto_falls_back_to_perf_buffers_and_says_why() -> None:
    tried, load = _loader({Transport.RING_BUFFER})
    result, transport, why = load_with_fallback("auto", load)
    assert (result, transport, why) == ("loaded with perf_buffer", Transport.PERF_BUFFER, "ring_buffer refused")
    assert tried == [Transport.RING_BUFFER, Transport.PERF_BUFFER]


def test_auto_skips_the_ring_buffer_the_probe_found_missing() -> None:
    tried, load = _loader(set())
    assert load_with_fallback("auto", load, ringbuf_available=False)[1] is Transport.PERF_BUFFER
    assert tried == [Transport.PERF_BUFFER]


def test_when_both_fail_the_ring_buffer_error_comes_first() -> None:
    _tried, load = _loader({Transport.RING_BUFFER, Transport.PERF_BUFFER})
    with pytest.raises(BpfCompileError) as info:
        load_with_fallback("auto", load)
    assert info.value.message == "ring_buffer refused; with a perf buffer instead: perf_buffer refused"
    assert info.value.hint == "a hint"


def test_an_explicit_transport_does_not_fall_back() -> None:
    tried, load = _loader({Transport.RING_BUFFER})
    with pytest.raises(BpfCompileError, match="ring_buffer refused"):
        load_with_fallback("ring_buffer", load)
    assert tried == [Transport.RING_BUFFER]
