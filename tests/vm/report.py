"""Summarise the legs of a VM test run: one row per kernel from pytest's junit XML.

usage: python3 report.py RESULTS_DIR LEG...

Each RESULTS_DIR/<leg>/ holds `junit.xml` (pytest --junitxml), `rc` (the test command's exit
status, absent when the VM never reported one), `wall` (seconds, boot included) and, for a VM,
`cpu` (CPU seconds QEMU used: about the wall time the leg needs on an idle core) and `accel`
(kvm, tcg, or native for the host leg).
Prints a table and exits 0 only when every leg ran tests and passed.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Leg:
    name: str
    kernel: str
    accel: str
    rc: int | None
    tests: int
    failed: int
    errors: int
    skipped: int
    pytest_seconds: float | None
    wall_seconds: float | None
    cpu_seconds: float | None

    @property
    def passed(self) -> int:
        return self.tests - self.failed - self.errors - self.skipped

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.tests > 0 and self.failed == 0 and self.errors == 0

    @property
    def verdict(self) -> str:
        if self.rc is None:
            return "NO RESULT"
        if self.ok:
            return "ok"
        if self.rc == 5 or self.tests == 0:
            return "NO TESTS"
        if self.rc == 124:
            return "TIMEOUT"
        if self.rc == 2:
            return "INTERRUPTED (rc 2)"  # pytest's status for SIGINT, e.g. the VM's time budget
        return f"FAIL (rc {self.rc})"


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def load_leg(results: Path, name: str) -> Leg:
    leg_dir = results / name
    rc_text = _read_text(leg_dir / "rc")
    rc = int(rc_text) if rc_text and rc_text.lstrip("-").isdigit() else None
    kernel = _read_text(leg_dir / "kernel") or name
    accel = _read_text(leg_dir / "accel") or "-"
    tests = failed = errors = skipped = 0
    pytest_seconds: float | None = None
    try:
        root = ET.parse(leg_dir / "junit.xml").getroot()
    except (OSError, ET.ParseError):
        root = None
    if root is not None:
        suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
        for suite in suites:
            tests += int(suite.get("tests", 0))
            failed += int(suite.get("failures", 0))
            errors += int(suite.get("errors", 0))
            skipped += int(suite.get("skipped", 0))
            pytest_seconds = (pytest_seconds or 0.0) + float(suite.get("time", 0.0))
    wall = _float(_read_text(leg_dir / "wall"))
    cpu = _float(_read_text(leg_dir / "cpu"))
    return Leg(name, kernel, accel, rc, tests, failed, errors, skipped, pytest_seconds, wall, cpu)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render(legs: list[Leg]) -> str:
    header = ("leg", "kernel", "accel", "result", "passed", "failed", "skipped", "pytest", "wall", "vm cpu")
    rows = [
        (
            leg.name,
            leg.kernel,
            leg.accel,
            leg.verdict,
            str(leg.passed),
            str(leg.failed + leg.errors),
            str(leg.skipped),
            _seconds(leg.pytest_seconds),
            _seconds(leg.wall_seconds),
            _seconds(leg.cpu_seconds),
        )
        for leg in legs
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    results = Path(argv[1])
    legs = [load_leg(results, name) for name in argv[2:]]
    print(render(legs))
    total = sum(leg.tests for leg in legs)
    bad = [leg.name for leg in legs if not leg.ok]
    passed = sum(leg.passed for leg in legs)
    failed = sum(leg.failed + leg.errors for leg in legs)
    skipped = sum(leg.skipped for leg in legs)
    print(f"{total} tests over {len(legs)} kernels")
    # the plain closing line CI reads: "N passed, N failed, N skipped"
    print(f"vm-test: {passed} passed, {failed} failed, {skipped} skipped")
    if bad:
        print(f"vm-test: FAILED on {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
