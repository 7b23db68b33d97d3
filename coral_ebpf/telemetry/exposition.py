"""Metric families and their two text formats: Prometheus 0.0.4 and OpenMetrics 1.0.0.

Written here rather than through `prometheus_client`: a scrape of 5,000 histogram series is
~90,000 lines, and rendering them straight from our own cumulative counts (label text cached
per label set) keeps a scrape well under 100 ms (`bench/scrape.py`).

The formats differ in a few places, all handled in `render`:
- counters: OpenMetrics names the family without `_total` in `# TYPE`/`# HELP` and the sample
  with it; Prometheus 0.0.4 uses the sample's name everywhere;
- info metrics: OpenMetrics type `info` (family `x`, sample `x_info`); 0.0.4 a gauge `x_info`;
- OpenMetrics has `# UNIT` lines and ends with `# EOF`.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Labels = tuple[tuple[str, str], ...]

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class MetricType(enum.Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"
    INFO = "info"


@dataclass(frozen=True)
class Sample:
    """One value of a counter, gauge or info family."""

    labels: Labels
    value: float


@dataclass(frozen=True)
class Histogram:
    """One cumulative histogram series: `cumulative[i]` counts observations <= `bounds[i]`;
    the last entry (one more than `bounds`) is the `+Inf` bucket and equals `count`."""

    labels: Labels
    bounds: tuple[float, ...]
    cumulative: Sequence[int]
    sum: float

    @property
    def count(self) -> int:
        return int(self.cumulative[-1]) if self.cumulative else 0


@dataclass(frozen=True)
class MetricFamily:
    """A named metric. `name` is the family name: without `_total` for a counter and without
    `_info` for an info metric (render adds the suffix); histograms carry `histograms`, the
    others `samples`."""

    name: str
    help: str
    type: MetricType
    unit: str = ""
    samples: Sequence[Sample] = field(default_factory=tuple)
    histograms: Sequence[Histogram] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.type is MetricType.COUNTER and self.name.endswith("_total"):
            raise ValueError(f"counter family {self.name!r}: give the name without _total")
        if self.unit and not self.name.endswith("_" + self.unit):
            raise ValueError(f"family {self.name!r}: a name with unit {self.unit!r} must end in _{self.unit}")


def wants_openmetrics(accept: str) -> bool:
    """True when the `Accept` header asks for OpenMetrics (Prometheus does, by preference)."""
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        if media.lower() == "application/openmetrics-text":
            q = next((p.split("=", 1)[1] for p in params if p.startswith("q=")), "1")
            try:
                if float(q) > 0:
                    return True
            except ValueError:
                continue
    return False


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


@functools.lru_cache(maxsize=65536)
def label_text(labels: Labels) -> str:
    """`a="1",b="2"` for the labels (empty values left out, as Prometheus treats them as absent)."""
    return ",".join(f'{name}="{_escape_value(value)}"' for name, value in labels if value != "")


def format_number(value: float) -> str:
    """Go's float formatting as Prometheus clients use it: integers without a fraction."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


@functools.lru_cache(maxsize=1024)
def _le_text(bound: float) -> str:
    # The `le` label always as a float (`1.0`, not `1`): OpenMetrics requires the canonical form,
    # and one spelling in both formats keeps `sum by (le)` across format changes.
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _series(name: str, labels: str, value: str) -> str:
    return f"{name}{{{labels}}} {value}\n" if labels else f"{name} {value}\n"


@functools.lru_cache(maxsize=256)
def _histogram_template(name: str, bounds: tuple[float, ...]) -> str:
    """One `str.format` template for all lines of a series: {0} is `name_bucket{labels,` (or
    `name_bucket{`), {1} the label text for `_sum`/`_count`, then the bucket values, sum, count.
    One C-level format call per series instead of one per line keeps a 5,000-series scrape fast."""
    # Plain concatenation: in a template a literal brace is written twice ("}}").
    lines = ['{0}le="' + _le_text(bound) + '"}} {' + str(index + 2) + "}\n" for index, bound in
             enumerate((*bounds, math.inf))]  # fmt: skip
    last = len(bounds) + 3
    lines.append(name + "_sum{1} {" + str(last) + "}\n" + name + "_count{1} {" + str(last + 1) + "}\n")
    return "".join(lines)


def _render_histograms(name: str, histograms: Iterable[Histogram], out: list[str]) -> None:
    bucket = f"{name}_bucket{{"
    for histogram in histograms:
        labels = label_text(histogram.labels)
        template = _histogram_template(name, tuple(histogram.bounds))
        out.append(
            template.format(
                bucket + labels + "," if labels else bucket,
                "{" + labels + "}" if labels else "",
                *histogram.cumulative,
                format_number(histogram.sum),
                histogram.count,
            )
        )


def render(families: Iterable[MetricFamily], *, openmetrics: bool = False) -> str:
    """The exposition of `families` in OpenMetrics 1.0.0 or the Prometheus 0.0.4 text format."""
    out: list[str] = []
    for family in families:
        kind = family.type
        sample_name = family.name
        if kind is MetricType.COUNTER:
            sample_name += "_total"
        elif kind is MetricType.INFO:
            sample_name += "_info"
        if openmetrics:
            declared, type_name = family.name, kind.value
        else:
            declared = sample_name
            type_name = "gauge" if kind is MetricType.INFO else kind.value
        out.append(f"# HELP {declared} {_escape_help(family.help)}\n")
        out.append(f"# TYPE {declared} {type_name}\n")
        if openmetrics and family.unit:
            out.append(f"# UNIT {declared} {family.unit}\n")
        if kind is MetricType.HISTOGRAM:
            _render_histograms(family.name, family.histograms, out)
            continue
        for sample in family.samples:
            out.append(_series(sample_name, label_text(sample.labels), format_number(sample.value)))
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out)
