"""Who sent a batch, when the resource does not say.

Senders are named by `telemetry.sdk.name` (`beyla`, `coral-ebpf`, `opentelemetry`). Beyla also exports
a `target.info` stream whose resource is empty; only its instrumentation scope,
`go.opentelemetry.io/obi` (the OBI library Beyla is built on), shows where it comes from. Counting
that under an unnamed sender would make Beyla's data look like a stranger's.
"""

from __future__ import annotations

BEYLA = "beyla"
# Instrumentation scopes only Beyla (and the OBI code it embeds) uses.
BEYLA_SCOPES = ("go.opentelemetry.io/obi", "github.com/grafana/beyla")


def sender_name(sdk_name: str | None, scope_name: str | None) -> str:
    """The resource's sdk name, else `beyla` for Beyla's scopes, else "" (counted as `unknown`)."""
    if sdk_name:
        return sdk_name
    if scope_name and scope_name.startswith(BEYLA_SCOPES):
        return BEYLA
    return ""
