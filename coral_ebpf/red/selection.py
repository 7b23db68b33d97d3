"""Which RED engine serves the host: Beyla, or the built-in BCC probe where Beyla cannot run."""

from __future__ import annotations

from enum import StrEnum

from coral_ebpf.errors import ConfigError
from coral_ebpf.red.settings import ENGINES


class Engine(StrEnum):
    BEYLA = "beyla"
    BCC = "bcc"


def choose_engine(
    setting: str, beyla_verdict_ok: bool, beyla_binary_found: bool, beyla_enabled: bool = True
) -> tuple[Engine, str]:
    """Return (engine, reason) for `red.engine` = `setting`.

    `beyla_verdict_ok`: the capability probe says Beyla's application mode can run on this kernel.
    `beyla_binary_found`: a usable Beyla binary is installed.
    `beyla_enabled`: `beyla.enabled` in the config.
    """
    if setting == "beyla":
        caveats = []
        if not beyla_verdict_ok:
            caveats.append("the probe says Beyla cannot run on this kernel")
        if not beyla_binary_found:
            caveats.append("no Beyla binary was found")
        suffix = f" (although {' and '.join(caveats)})" if caveats else ""
        return Engine.BEYLA, f"red.engine is beyla{suffix}"
    if setting == "bcc":
        return Engine.BCC, "red.engine is bcc"
    if setting == "auto":
        if not beyla_enabled:
            return Engine.BCC, "beyla.enabled is false: using the built-in BCC probe"
        if not beyla_verdict_ok:
            return Engine.BCC, "Beyla cannot run on this kernel (capability probe): using the built-in BCC probe"
        if not beyla_binary_found:
            return Engine.BCC, "no Beyla binary found: using the built-in BCC probe"
        return Engine.BEYLA, "Beyla can run and is installed"
    raise ConfigError(f"red.engine: {setting!r} is not one of {', '.join(ENGINES)}", "use auto, beyla or bcc")
