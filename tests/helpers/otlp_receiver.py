"""A running OTLP receiver in front of a `consumertest.Sink`, for tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from coral_ebpf.otlp.receiver import OtlpReceiver
from coral_ebpf.otlp.settings import ConnectionLimits, OtlpSettings
from tests.helpers.consumertest import Sink


@contextlib.contextmanager
def running_receiver(
    consumer: Sink | None = None,
    *,
    grpc_endpoint: str | None = "127.0.0.1:0",
    http_endpoint: str | None = "127.0.0.1:0",
    max_body_bytes: int = 4 * 1024 * 1024,
    retry_after: float = 1.0,
    limits: ConnectionLimits | None = None,
) -> Iterator[tuple[OtlpReceiver, Sink]]:
    consumer = consumer or Sink()
    settings = OtlpSettings(
        grpc_endpoint=grpc_endpoint,
        http_endpoint=http_endpoint,
        max_body_bytes=max_body_bytes,
        retry_after=retry_after,
        limits=limits or ConnectionLimits(),
    )
    receiver = OtlpReceiver(settings, consumer)
    receiver.start()
    try:
        yield receiver, consumer
    finally:
        receiver.stop(5.0)
