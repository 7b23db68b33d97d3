"""Reading the verifier's log (and BCC's output around it): the reason a program was refused.

The verifier ends its log with a "processed N insns" summary (after "verification time" and
"stack depth" lines with BPF_LOG_STATS). Its reason sits just before the summary, after the
trace of instructions and register states it walked; clang and BCC say what they refuse in
lines of their own.
"""

from __future__ import annotations

import re

# Lines of the verifier's trace (instructions, register states, source lines), not its verdict.
_TRACE = re.compile(r"^(\d+: |R\d+_?\w*=|; |from \d+ to \d+|last_idx |regs=|parent )")
_SUMMARY = ("processed ", "verification time", "stack depth")


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def verifier_reason(log: str, keep: int = 3) -> list[str]:
    """The verifier's last `keep` lines of reason before its summary; [] when the log holds none.

    Without a summary (a log cut short) the reason is looked for at the end of the log. When the
    line before the summary is itself part of the trace, that line is the best the log offers.
    """
    lines = _lines(log)
    end = len(lines)
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("processed ") and " insns" in lines[index]:
            end = index
            break
    while end > 0 and lines[end - 1].startswith(_SUMMARY):
        end -= 1
    reason: list[str] = []
    for line in reversed(lines[:end]):
        if _TRACE.match(line):
            break
        reason.insert(0, line)
    return reason[-keep:] or lines[end - 1 : end]


def has_summary(output: str) -> bool:
    return any(line.startswith("processed ") and " insns" in line for line in _lines(output))


def kernel_verdict(output: str) -> tuple[str, str]:
    """Who refused the program and why, from BCC's output: ("the verifier", its last words before
    its "processed N insns" summary), ("clang", its errors), or ("BCC", its last line)."""
    if has_summary(output):
        return "the verifier", " / ".join(verifier_reason(output))
    lines = _lines(output)
    errors = [line for line in lines if " error: " in line or line.startswith("error:")]
    if errors:
        return "clang", " / ".join(errors[:3])
    return ("BCC", lines[-1]) if lines else ("", "")


def last_log_line(log: str) -> str:
    """The verifier's last line of reason, for one-line reports ("" for an empty log)."""
    reason = verifier_reason(log, keep=1)
    return reason[-1] if reason else ""
