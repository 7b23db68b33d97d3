"""How long `probe()` takes on this machine (run as root). Last line: `probe duration: median <ms> ms`.

The first call includes one-time costs (importing BCC, preparing the merged headers tree in a
fresh state dir); the figure is the median of the calls after it. The machine is shared by
several engineers, so the figure is indicative.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from coral_ebpf.capabilities.kernel_probe import probe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-bcc", action="store_true", help="skip the BCC compile (the slow part)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="coral-probe-bench-") as state:
        started = time.perf_counter()
        first = probe(Path(state), include_bcc=not args.no_bcc)
        cold_ms = (time.perf_counter() - started) * 1000
        if not first.complete:
            print("probe could not run its trials (run as root)", file=sys.stderr)
            return 1
        durations = [probe(Path(state), include_bcc=not args.no_bcc).duration_ms for _ in range(args.runs)]
    compile_detail = first.features["bcc_compile"].detail
    print(f"first call (cold, fresh state dir): {cold_ms:.0f} ms; bcc_compile: {compile_detail}")
    print(f"runs: {', '.join(f'{d:.0f}' for d in durations)} ms")
    spread = f"min {min(durations):.0f}, max {max(durations):.0f}"
    print(f"probe duration: median {statistics.median(durations):.0f} ms ({spread})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
