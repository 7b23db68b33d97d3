"""The OTLP receiver component: gRPC and HTTP listeners in front of one `Consumer`.

Lifecycle as in the Collector's `otlp.go`: `start()` binds every enabled listener and
returns once they serve (or raises a CoralError naming the endpoint, having released what it
had bound); `stop()` refuses new requests and lets in-flight ones finish.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from coral_ebpf.consumer import BodyBudget, Consumer
from coral_ebpf.errors import ConfigError, CoralError
from coral_ebpf.otlp.export import Exporter
from coral_ebpf.otlp.grpc_server import GrpcTransport
from coral_ebpf.otlp.http_server import HttpTransport
from coral_ebpf.otlp.settings import OtlpSettings
from coral_ebpf.otlp.signals import SIGNALS
from coral_ebpf.otlp.stats import ReceiverStats
from coral_ebpf.state import PartState
from coral_ebpf.units import parse_endpoint


class OtlpReceiver:
    name = "otlp"

    def __init__(self, settings: OtlpSettings, consumer: Consumer) -> None:
        self.settings = settings
        self._stats = ReceiverStats(("grpc", "http"), tuple(signal.name for signal in SIGNALS))
        exporter = Exporter(consumer, self._stats, settings.retry_after, settings.caps)
        self._grpc = (
            GrpcTransport(
                settings.grpc_endpoint,
                settings.max_body_bytes,
                exporter,
                limits=settings.limits,
                retry_after_floor=settings.retry_after,
            )
            if settings.grpc_endpoint
            else None
        )
        self._http = (
            HttpTransport(
                settings.http_endpoint,
                settings.max_body_bytes,
                exporter,
                self._stats,
                settings.retry_after,
                limits=settings.limits,
                body_budget=consumer if isinstance(consumer, BodyBudget) else None,
            )
            if settings.http_endpoint
            else None
        )
        self._state = PartState.STOPPED
        self._since = time.time()

    @property
    def grpc_address(self) -> str | None:
        """The bound gRPC `host:port` while serving (the real port when port 0 was configured)."""
        return self._grpc.address if self._grpc is not None and self._state == PartState.RUNNING else None

    @property
    def http_address(self) -> str | None:
        """The bound HTTP `host:port` while serving."""
        return self._http.address if self._http is not None and self._state == PartState.RUNNING else None

    def start(self) -> None:
        if self._state == PartState.RUNNING:
            return
        endpoints = {"grpc_endpoint": self.settings.grpc_endpoint, "http_endpoint": self.settings.http_endpoint}
        for key, endpoint in endpoints.items():
            if endpoint:
                try:
                    parse_endpoint(endpoint)
                except ValueError as exc:
                    raise ConfigError(f"otlp.{key}: {exc}") from None
        if self.settings.max_body_bytes <= 0:
            raise ConfigError("otlp.max_body_bytes must be more than 0")
        if self._grpc is not None:
            self._grpc.start()
        if self._http is not None:
            try:
                self._http.start()
            except CoralError:
                if self._grpc is not None:
                    self._grpc.finish_stop(self._grpc.begin_stop(0), 1.0)
                raise
        self._set_state(PartState.RUNNING)

    def stop(self, timeout: float) -> None:
        if self._state != PartState.RUNNING:
            return
        self._set_state(PartState.STOPPING)
        deadline = time.monotonic() + timeout
        grpc_stopped = self._grpc.begin_stop(timeout) if self._grpc is not None else None
        if self._http is not None:
            self._http.stop(timeout)
        if self._grpc is not None:
            self._grpc.finish_stop(grpc_stopped, max(0.0, deadline - time.monotonic()))
        self._set_state(PartState.STOPPED)

    def status(self) -> dict[str, Any]:
        transports: dict[str, Any] = {}
        for name, transport, endpoint in (
            ("grpc", self._grpc, self.settings.grpc_endpoint),
            ("http", self._http, self.settings.http_endpoint),
        ):
            transports[name] = {
                "enabled": transport is not None,
                "endpoint": endpoint,
                "address": transport.address if transport is not None and self._state == PartState.RUNNING else None,
                "signals": self._stats.snapshot(name),
            }
        return {
            "state": self._state,
            "since": self._since,
            "max_body_bytes": self.settings.max_body_bytes,
            "limits": dataclasses.asdict(self.settings.limits),
            "request_caps": dataclasses.asdict(self.settings.caps),
            **transports,
        }

    def _set_state(self, state: PartState) -> None:
        self._state = state
        self._since = time.time()
