"""Where Beyla should send OTLP, derived from the agent's `otlp:` listeners."""

from __future__ import annotations

from coral_ebpf.beyla.settings import BeylaSettings
from coral_ebpf.errors import ConfigError
from coral_ebpf.otlp.settings import OtlpSettings
from coral_ebpf.units import parse_endpoint

_ANY_ADDRESS = {"", "0.0.0.0", "::", "[::]", "*"}


def otlp_endpoint_url(otlp: OtlpSettings, beyla: BeylaSettings) -> str:
    """`http://127.0.0.1:4318` (or the gRPC listener for otlp_protocol grpc), loopback if bound to all."""
    grpc = beyla.otlp_protocol == "grpc"
    listener = otlp.grpc_endpoint if grpc else otlp.http_endpoint
    if not listener:
        key = "otlp.grpc_endpoint" if grpc else "otlp.http_endpoint"
        raise ConfigError(
            f"beyla.otlp_protocol is {beyla.otlp_protocol} but {key} is disabled, so Beyla would have nowhere "
            "to send its data",
            f"enable {key}, or set beyla.otlp_protocol to the other protocol",
        )
    host, port = parse_endpoint(listener)
    if host in _ANY_ADDRESS:
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def agent_ports(otlp: OtlpSettings) -> tuple[int, ...]:
    """The agent's own listening ports, which Beyla must never instrument."""
    ports = []
    for listener in (otlp.grpc_endpoint, otlp.http_endpoint):
        if listener:
            ports.append(parse_endpoint(listener)[1])
    return tuple(sorted({p for p in ports if p}))
