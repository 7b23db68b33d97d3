"""Plain-text tables that stay readable at any width: one line per row, numbers never split.

Layout rules (the query and status commands print through here):
- Columns are separated by two spaces; numbers are right-aligned and never shortened.
- When the table is wider than the output, only the columns marked `shrink` give way: the
  widest of them loses a character at a time, down to its `min_width`. A `MIDDLE` column is
  shortened in the middle, by whole path segments when it can (`/api/v1/…/items/{id}`), an
  `END` column at its end (`a long text…`). If the table still does not fit, lines are longer
  than the output rather than wrapped.
- The width: `--wide` means no limit; a terminal's own width (COLUMNS wins when set); piped
  output has no limit unless COLUMNS is set, so a script sees the same stable layout whatever
  the terminal that started it.
- `--format tsv` prints the raw cells with tabs, no shortening (`print_tsv`).
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, TextIO

ELLIPSIS = "…"
GAP = "  "


class Shrink(Enum):
    NEVER = "never"
    MIDDLE = "middle"  # paths and names whose both ends matter
    END = "end"  # free text


@dataclass(frozen=True)
class Column:
    header: str
    numeric: bool = False  # right-aligned, never shortened
    shrink: Shrink = Shrink.NEVER
    min_width: int = 12
    drop_order: int | None = None  # dropped (lowest first) when shrinking is not enough; --wide shows it


def number(header: str, *, drop_order: int | None = None) -> Column:
    return Column(header, numeric=True, drop_order=drop_order)


def text(header: str, *, shrink: Shrink = Shrink.END, min_width: int = 12, drop_order: int | None = None) -> Column:
    return Column(header, shrink=shrink, min_width=min_width, drop_order=drop_order)


def output_width(*, wide: bool = False, stream: TextIO | None = None) -> int | None:
    """Columns available to a table on `stream` (stdout), or None for no limit (see the module doc)."""
    if wide:
        return None
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    target = sys.stdout if stream is None else stream
    if not target.isatty():
        return None
    return shutil.get_terminal_size().columns


def shorten_middle(value: str, width: int) -> str:
    """`value` in at most `width` characters, its middle replaced by `…` (whole path segments first)."""
    if len(value) <= width:
        return value
    if width <= 1:
        return ELLIPSIS[:width]
    segments = value.split("/")
    if len(segments) > 3:
        head, tail = segments[:1], segments[-1:]
        middle = segments[1:-1]
        # Take segments alternately from the front and the back while `head/…/tail` fits.
        front = True
        while middle:
            trial_head = [*head, middle[0]] if front else head
            trial_tail = tail if front else [middle[-1], *tail]
            if len("/".join([*trial_head, ELLIPSIS, *trial_tail])) > width:
                break
            head, tail = trial_head, trial_tail
            middle.pop(0 if front else -1)
            front = not front
        shortened = "/".join([*head, ELLIPSIS, *tail])
        if len(shortened) <= width and len(head) + len(tail) > 2:
            return shortened
    keep = width - 1
    front_chars = (keep + 1) // 2
    return value[:front_chars] + ELLIPSIS + value[len(value) - (keep - front_chars) :]


def shorten_end(value: str, width: int) -> str:
    if len(value) <= width:
        return value
    return value[: max(width - 1, 0)] + ELLIPSIS if width >= 1 else ""


def _cell(value: Any) -> str:
    return "" if value is None else " ".join(str(value).split("\n"))


def fit_widths(columns: Sequence[Column], natural: Sequence[int], width: int | None) -> list[int]:
    """Column widths: the natural ones, with shrinkable columns narrowed until the line fits `width`."""
    widths = list(natural)
    if width is None:
        return widths
    excess = sum(widths) + len(GAP) * (len(widths) - 1) - width
    while excess > 0:
        candidates = [
            i
            for i, c in enumerate(columns)
            if c.shrink is not Shrink.NEVER and widths[i] > min(c.min_width, natural[i])
        ]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: widths[i])
        widths[widest] -= 1
        excess -= 1
    return widths


def render(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Any]],
    *,
    width: int | None,
    title: str | None = None,
    footer: str | None = None,
) -> list[str]:
    """The table as lines (see the module doc); title and footer are wrapped at spaces, never mid-word."""
    cells = [[_cell(value) for value in row] for row in rows]
    columns = list(columns)
    hidden: list[str] = []
    while True:
        natural = [max([len(c.header), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
        widths = fit_widths(columns, natural, width)
        droppable = [i for i, c in enumerate(columns) if c.drop_order is not None]
        if width is None or sum(widths) + len(GAP) * (len(widths) - 1) <= width or not droppable:
            break
        index = min(droppable, key=lambda i: columns[i].drop_order or 0)
        hidden.append(columns.pop(index).header)
        cells = [row[:index] + row[index + 1 :] for row in cells]
    lines: list[str] = []
    if title:
        lines += wrap_text(title, width)

    def line(values: Sequence[str]) -> str:
        parts = []
        for column, value, size in zip(columns, values, widths, strict=True):
            shown = value
            if len(value) > size:
                shown = (shorten_middle if column.shrink is Shrink.MIDDLE else shorten_end)(value, size)
            parts.append(shown.rjust(size) if column.numeric else shown.ljust(size))
        return GAP.join(parts).rstrip()

    lines.append(line([c.header for c in columns]))
    lines.append(GAP.join("─" * size for size in widths))
    lines += [line(row) for row in cells]
    if hidden:
        lines += wrap_text(f"({', '.join(hidden)} hidden at this width; --wide shows every column)", width)
    if footer:
        for paragraph in footer.split("\n"):
            lines += wrap_text(paragraph, width)
    return lines


def wrap_text(value: str, width: int | None) -> list[str]:
    """`value` as lines of at most `width` (None: one line), broken at spaces only."""
    if width is None or len(value) <= width:
        return [value]
    return textwrap.wrap(value, width, break_long_words=False, break_on_hyphens=False) or [""]


def print_grid(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Any]],
    *,
    width: int | None,
    title: str | None = None,
    footer: str | None = None,
) -> None:
    sys.stdout.write("\n".join(render(columns, rows, width=width, title=title, footer=footer)) + "\n")
    sys.stdout.flush()


def print_tsv(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Tab-separated values for scripts: a header line, then every cell in full (tabs/newlines as spaces)."""

    def clean(value: Any) -> str:
        return " ".join(_cell(value).replace("\t", " ").split(" ")) if value is not None else ""

    lines = ["\t".join(headers), *("\t".join(clean(value) for value in row) for row in rows)]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
