"""OTLP receiver (gRPC and HTTP) in front of a `Consumer`; see docs/otlp.md.

Public names are resolved lazily (as in `coral_ebpf.config`): the config schema imports
`otlp.settings` while it is being built, and must not pull in the receiver and grpcio with it.
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
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'coral_ebpf.otlp' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
