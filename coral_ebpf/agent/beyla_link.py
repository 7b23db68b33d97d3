"""Beyla's own path into the agent: a loopback OTLP listener on a port chosen at start.

Beyla never depends on the public OTLP ports (4317/4318), which another collector may hold or
which the operator may move or open up: the agent binds a private listener on 127.0.0.1:0 with
the protocol Beyla uses, renders Beyla's config with that address, and tells Beyla to leave the
port alone. `BeylaWithLink` runs the supervisor and that listener as the one `beyla` part:
the listener starts first and stops last, so Beyla's final flush at shutdown still lands.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from coral_ebpf.beyla.settings import BeylaSettings
from coral_ebpf.beyla.supervisor import BeylaSupervisor
from coral_ebpf.otlp.receiver import OtlpReceiver
from coral_ebpf.otlp.settings import OtlpSettings

LINK_ENDPOINT = "127.0.0.1:0"


def link_settings(public: OtlpSettings, beyla: BeylaSettings) -> OtlpSettings:
    """The public receiver's limits, on a free loopback port, for Beyla's protocol only."""
    grpc = beyla.otlp_protocol == "grpc"
    return replace(
        public,
        grpc_endpoint=LINK_ENDPOINT if grpc else None,
        http_endpoint=None if grpc else LINK_ENDPOINT,
    )


def bound(link: OtlpReceiver) -> OtlpSettings:
    """The link's settings with the port it actually bound."""
    return replace(link.settings, grpc_endpoint=link.grpc_address, http_endpoint=link.http_address)


class BeylaWithLink:
    """The `beyla` part: Beyla's supervisor and its private OTLP listener (a `Component`)."""

    name = "beyla"

    def __init__(self, supervisor: BeylaSupervisor, link: OtlpReceiver) -> None:
        self.supervisor = supervisor
        self.link = link

    def start(self) -> None:
        self.supervisor.start()  # the link already serves: the agent bound it to render Beyla's config

    def stop(self, timeout: float) -> None:
        try:
            self.supervisor.stop(timeout)
        finally:
            self.link.stop(min(timeout, 5.0))

    def status(self) -> dict[str, Any]:
        link = self.link.status()
        document = dict(self.supervisor.status())
        document["link"] = {
            "state": link.get("state"),
            **{
                transport: {"address": link[transport]["address"], "signals": link[transport]["signals"]}
                for transport in ("grpc", "http")
                if link.get(transport, {}).get("enabled")
            },
        }
        return document
