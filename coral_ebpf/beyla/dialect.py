"""Which YAML a given Beyla release understands.

Beyla parses its YAML without strict mode, so a key an older release does not know is silently
ignored. The agent therefore chooses the keys by version and refuses, with the version named,
any agent setting the detected release cannot carry.

- legacy (v1.0-v2.4): services by top-level `open_port` (ports only; nothing else can be
  excluded because only the listed ports are instrumented); Beyla's default metric features; no /healthz.
- v2 (v2.5-v2.x): `discovery.instrument` / `discovery.exclude_instrument` globs;
  `otel_metrics_export.features`; no /healthz.
- v3 (v3.0-v3.19): as v2, with `metrics.features`; no /healthz.
- v3.20 (v3.20 and later): as v3, with `health_check.port` (/healthz on loopback), and the agent's
  pid excluded with a `target_pids` selector as well (a key Beyla would ignore if it did not know it).

Sources: beyla-facts.md §2 (`discovery.instrument` absent in v2.2.4, present in v2.5.1;
`otel_metrics_export.features` deprecated in v3 for `metrics.features`; `health_check`
present from about v3.20, absent in v3.10). The rpc metric renames of v3.23 change no config
key, only what the transform must accept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

_VERSION_RE = re.compile(r"v?(\d+)\.(\d+)\.(\d+)(?:[-+]([0-9A-Za-z.\-]+))?")


@total_ordering
@dataclass(frozen=True)
class BeylaVersion:
    major: int
    minor: int
    patch: int
    suffix: str = ""  # pre-release or build text, e.g. "rc.1" or "12-gabcdef0"

    @classmethod
    def parse(cls, text: str) -> BeylaVersion:
        match = _VERSION_RE.search(text.strip())
        if not match:
            raise ValueError(f"{text!r} is not a Beyla version (e.g. v3.35.0)")
        major, minor, patch, suffix = match.groups()
        return cls(int(major), int(minor), int(patch), suffix or "")

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}" + (f"-{self.suffix}" if self.suffix else "")

    def _key(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, BeylaVersion):
            return NotImplemented
        return self._key() < other._key()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BeylaVersion):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


MINIMUM_VERSION = BeylaVersion(1, 0, 0)


@dataclass(frozen=True)
class Dialect:
    name: str
    instrument_globs: bool  # discovery.instrument / exclude_instrument (else top-level open_port)
    features_key: str | None  # where `features: [application]` goes; None: leave Beyla's default
    health_check: bool
    selector_pids: bool = False  # `target_pids` inside a selector (in the v3.31 schema; assumed from v3.20)

    @property
    def description(self) -> str:
        return DIALECT_NOTES[self.name]


LEGACY = Dialect("legacy", instrument_globs=False, features_key=None, health_check=False)
V2 = Dialect("v2", instrument_globs=True, features_key="otel_metrics_export", health_check=False)
V3 = Dialect("v3", instrument_globs=True, features_key="metrics", health_check=False)
V3_20 = Dialect("v3.20", instrument_globs=True, features_key="metrics", health_check=True, selector_pids=True)
DIALECTS = (LEGACY, V2, V3, V3_20)

DIALECT_NOTES = {
    "legacy": "Beyla v1.0-v2.4: top-level open_port, no exclusion list, no /healthz",
    "v2": "Beyla v2.5-v2.x: discovery.instrument globs, otel_metrics_export.features, no /healthz",
    "v3": "Beyla v3.0-v3.19: discovery.instrument globs, metrics.features, no /healthz",
    "v3.20": "Beyla v3.20 and later: discovery.instrument globs, metrics.features, /healthz",
}


class UnsupportedVersionError(ValueError):
    pass


def dialect_for(version: BeylaVersion | None) -> Dialect:
    """The dialect for `version`; an unknown version (None) gets the newest dialect."""
    if version is None:
        return V3_20
    if version < MINIMUM_VERSION:
        raise UnsupportedVersionError(f"Beyla {version} is older than the oldest supported release ({MINIMUM_VERSION})")
    if version < BeylaVersion(2, 5, 0):
        return LEGACY
    if version < BeylaVersion(3, 0, 0):
        return V2
    if version < BeylaVersion(3, 20, 0):
        return V3
    return V3_20
