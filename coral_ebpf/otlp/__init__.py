"""OTLP receiver (gRPC and HTTP) in front of a `coral_ebpf.consumer.Consumer`; see docs/otlp.md.

Public names are resolved lazily (as in `coral_ebpf.config`): the config schema imports
`otlp.settings` while it is being built, and must not pull in the receiver and grpcio with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coral_ebpf.otlp.receiver import OtlpReceiver
    from coral_ebpf.otlp.settings import OtlpSettings

_EXPORTS = {
    "OtlpReceiver": "coral_ebpf.otlp.receiver",
    "OtlpSettings": "coral_ebpf.otlp.settings",
}

__all__ = [
    "OtlpReceiver",
    "OtlpSettings",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'coral_ebpf.otlp' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
