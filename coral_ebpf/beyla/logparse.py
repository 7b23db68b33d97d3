"""Beyla's log lines, read from its stdout and stderr.

Beyla logs with Go's `slog` to stdout. Until its configuration is loaded it uses the text
handler (`time=... level=ERROR msg="can't start Beyla" error="..."`), so every fatal start-up
error is text even when `BEYLA_LOG_FORMAT=json`; after that, JSON lines. stderr carries what
the Go runtime writes (panics, `fatal error:`), and the exec wrapper's own messages.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

_LEVELS = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING, "ERROR": logging.ERROR}
# key=value or "quoted key"="quoted value"; slog quotes anything with spaces, quotes or '='.
_LOGFMT_PAIR = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^\s=]+))=(?:"((?:[^"\\]|\\.)*)"|(\S*))')


@dataclass(frozen=True)
class LogLine:
    level: str  # DEBUG | INFO | WARN | ERROR
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    stream: str = "stdout"
    raw: str = ""

    @property
    def python_level(self) -> int:
        return _LEVELS.get(self.level, logging.INFO)

    @property
    def error(self) -> str:
        value = self.fields.get("error", self.fields.get("err", ""))
        return str(value) if value is not None else ""


def _unquote(text: str) -> str:
    try:
        return str(json.loads(f'"{text}"'))
    except json.JSONDecodeError:
        return text.replace('\\"', '"')


def parse_logfmt(line: str) -> dict[str, str] | None:
    """slog's text format as a dict, or None when the line is not key=value pairs."""
    fields: dict[str, str] = {}
    position = 0
    text = line.rstrip("\n")
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _LOGFMT_PAIR.match(text, position)
        if not match or match.end() == position:
            return None
        quoted_key, bare_key, quoted_value, bare_value = match.groups()
        key = _unquote(quoted_key) if quoted_key is not None else bare_key
        value = _unquote(quoted_value) if quoted_value is not None else (bare_value or "")
        fields[key] = value
        position = match.end()
    return fields if "msg" in fields or "level" in fields else None


def _normal_level(value: Any, default: str) -> str:
    text = str(value or default).upper()
    if text.startswith("WARN"):
        return "WARN"
    if text.startswith("ERR"):
        return "ERROR"
    if text.startswith("DEBUG"):
        return "DEBUG"
    return text if text in _LEVELS else default


def parse_line(raw: str, stream: str = "stdout") -> LogLine:
    """Parse one line: JSON first, then slog text, else the raw text (stderr text counts as ERROR)."""
    line = raw.rstrip("\r\n")
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except json.JSONDecodeError:
            document = None
        if isinstance(document, dict):
            level = _normal_level(document.pop("level", None), "INFO")
            message = str(document.pop("msg", ""))
            document.pop("time", None)
            return LogLine(level, message, document, stream, line)
    fields = parse_logfmt(stripped)
    if fields is not None:
        level = _normal_level(fields.pop("level", None), "INFO")
        message = fields.pop("msg", "")
        fields.pop("time", None)
        return LogLine(level, message, dict(fields), stream, line)
    default = "ERROR" if stream == "stderr" else "INFO"
    return LogLine(default, stripped, {}, stream, line)
