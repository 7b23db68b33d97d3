"""What the capability probe found: the typed result every other part reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class ProbeComponent(StrEnum):
    """A part of the agent (or Beyla mode) the capability probe judges; keys of `ProbeReport.components`."""

    AGENT_PROBES = "agent_probes"
    BCC_DISCOVERY = "bcc_discovery"
    RED_BCC = "red_bcc"
    BEYLA_APPLICATION = "beyla_application"
    BEYLA_NETWORK = "beyla_network"


@dataclass(frozen=True)
class Feature:
    """One kernel or environment feature, learned by trying it."""

    available: bool
    detail: str


@dataclass(frozen=True)
class Verdict:
    """Whether a component of the agent can work here, why, and how to fix it if not."""

    ok: bool
    reason: str
    fix: str = ""


@dataclass(frozen=True)
class ProbeReport:
    """The capability probe's answer: `kernel` facts, `features` it tried, `components` it judged.

    `context` holds what it read rather than tried (sysctls, mounts, capabilities, headers);
    `complete` is False when it could not try everything (not root).
    """

    kernel: dict[str, Any]
    features: dict[str, Feature]
    components: dict[ProbeComponent, Verdict]
    context: dict[str, Any] = field(default_factory=dict)
    duration_ms: float = 0.0
    complete: bool = True  # False when the probe could not run everything (e.g. not root)
    notes: tuple[str, ...] = ()  # what a person should know about the run itself (e.g. "not root: ...")

    def feature(self, name: str) -> bool:
        found = self.features.get(name)
        return bool(found and found.available)

    def verdict(self, component: ProbeComponent | str) -> Verdict:
        """The verdict on `component`; a name that is no ProbeComponent raises ValueError (a typo is no verdict)."""
        judged = ProbeComponent(component)
        found = self.components.get(judged)
        return found if found is not None else Verdict(False, f"the probe did not judge {judged.value!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kernel": self.kernel,
            "features": {name: asdict(value) for name, value in self.features.items()},
            "components": {str(name): asdict(value) for name, value in self.components.items()},
            "context": self.context,
            "duration_ms": round(self.duration_ms, 1),
            "complete": self.complete,
            "notes": list(self.notes),
        }
