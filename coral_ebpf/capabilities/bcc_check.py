"""Whether BCC imports, which kernel headers it would use, and whether it compiles and loads a program.

The compile goes through `probes.runtime.load_program`, the path every probe of the agent uses, with
`bpf/probe_bcc.bpf.c` (an empty sched:sched_process_exec tracepoint program). It is the slow part
of the probe (a clang compile), so the orchestrator runs it on its own thread.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from coral_ebpf.capabilities.report import Feature
from coral_ebpf.probes.headers import NoKernelHeadersError, find_headers, prepare_headers
from coral_ebpf.probes.runtime import BccUnavailableError, BpfCompileError, import_bcc, load_program

PROBE_PROGRAM = "probe_bcc"
_MAX_DETAIL = 400


@dataclass
class BccOutcome:
    features: dict[str, Feature] = field(default_factory=dict)
    hints: dict[str, str] = field(default_factory=dict)  # feature -> fix hint
    context: dict[str, str] = field(default_factory=dict)


def _shorten(text: str) -> str:
    """Clang and BCC errors run to pages: keep the error lines, within a table cell's worth."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines
    joined = " | ".join(errors[:3])
    return joined if len(joined) <= _MAX_DETAIL else joined[: _MAX_DETAIL - 3] + "..."


def headers_trial(state_dir: Path, distro_id: str, outcome: BccOutcome) -> bool:
    try:
        source = find_headers(distro_id=distro_id)
    except NoKernelHeadersError as exc:
        outcome.features["kernel_headers"] = Feature(False, exc.message)
        outcome.hints["kernel_headers"] = exc.hint
        outcome.context["kernel_headers"] = f"none: {exc.message}"
        return False
    outcome.context["kernel_headers"] = source.describe(platform.release())
    try:
        tree = prepare_headers(source, state_dir)
    except NoKernelHeadersError as exc:
        outcome.features["kernel_headers"] = Feature(False, exc.message)
        outcome.hints["kernel_headers"] = exc.hint
        return False
    except OSError as exc:
        where = state_dir / "kernel-headers"
        detail = f"found headers but could not prepare them in {where}: {exc}"
        outcome.features["kernel_headers"] = Feature(False, detail)
        outcome.hints["kernel_headers"] = f"make {state_dir} writable (run as root)"
        return False
    outcome.features["kernel_headers"] = Feature(True, tree.description)
    outcome.context["kernel_headers"] = tree.description
    return True


def try_bcc(state_dir: Path, distro_id: str = "", compile_program: bool = True) -> BccOutcome:
    """Features `bcc_import`, `kernel_headers` and `bcc_compile` (never raises)."""
    outcome = BccOutcome()
    try:
        bcc = import_bcc()
    except BccUnavailableError as exc:
        outcome.features["bcc_import"] = Feature(False, exc.message)
        outcome.hints["bcc_import"] = exc.hint
        bcc = None
    else:
        version = getattr(bcc, "__version__", "unknown version")
        outcome.features["bcc_import"] = Feature(True, f"BCC {version} from {Path(bcc.__file__).parent}")
        outcome.context["bcc"] = f"{version} ({Path(bcc.__file__).parent})"
    headers_ok = headers_trial(state_dir, distro_id, outcome)
    if bcc is None:
        outcome.features["bcc_compile"] = Feature(False, "not tried: BCC cannot be imported")
    elif not headers_ok:
        outcome.features["bcc_compile"] = Feature(False, "not tried: no usable kernel headers")
    elif not compile_program:
        outcome.features["bcc_compile"] = Feature(False, "not tried: BPF is not permitted for this process")
    else:
        outcome.features["bcc_compile"] = _compile(state_dir, outcome)
    return outcome


def _compile(state_dir: Path, outcome: BccOutcome) -> Feature:
    started = time.perf_counter()
    try:
        program = load_program(PROBE_PROGRAM, state_dir)
    except BpfCompileError as exc:
        outcome.hints["bcc_compile"] = exc.hint
        return Feature(False, _shorten(exc.message))
    except (BccUnavailableError, OSError) as exc:
        return Feature(False, _shorten(str(exc)))
    try:
        elapsed_ms = (time.perf_counter() - started) * 1000
        return Feature(
            True,
            f"compiled, loaded and attached bpf/{PROBE_PROGRAM}.bpf.c (a sched:sched_process_exec "
            f"tracepoint program) in {elapsed_ms:.0f} ms",
        )
    finally:
        program.cleanup()
