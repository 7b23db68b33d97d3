"""OTLP receiver (gRPC and HTTP) in front of a `Consumer`; see docs/otlp.md.

The public names are loaded lazily: `coral_ebpf.config` imports `otlp.settings` while it
assembles the schema, so `otlp.settings` can only be imported after `coral_ebpf.config`
(importing it first is circular); `OtlpSettings` here takes care of that order.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from coral_ebpf.otlp.consumer import Consumer, ConsumeResult, ConsumerUnavailableError, QueueFullError
    from coral_ebpf.otlp.receiver import OtlpReceiver
    from coral_ebpf.otlp.settings import OtlpSettings

_EXPORTS = {
    "Consumer": "coral_ebpf.otlp.consumer",
    "ConsumeResult": "coral_ebpf.otlp.consumer",
    "ConsumerUnavailableError": "coral_ebpf.otlp.consumer",
    "QueueFullError": "coral_ebpf.otlp.consumer",
    "OtlpReceiver": "coral_ebpf.otlp.receiver",
    "OtlpSettings": "coral_ebpf.otlp.settings",
}

__all__ = [
    "ConsumeResult",
    "Consumer",
    "ConsumerUnavailableError",
    "OtlpReceiver",
    "OtlpSettings",
    "QueueFullError",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        if name == "OtlpSettings":
            importlib.import_module("coral_ebpf.config")
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'coral_ebpf.otlp' has no attribute {name!r}")
