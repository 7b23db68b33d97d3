"""One agent's pull API, from the colony's side: a gRPC channel with its TLS and token."""

from __future__ import annotations

import grpc

from coral_ebpf.colony.settings import AgentTarget
from coral_ebpf.pullapi._generated import agent_pb2 as pb
from coral_ebpf.pullapi._generated import agent_pb2_grpc as pb_grpc
from coral_ebpf.pullapi.security import read_token, token_metadata

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class AgentClient:
    def __init__(self, target: AgentTarget, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        key = f"agent {target.id}"
        token = read_token(target.token_file, f"{key} token_file") if target.token_file else None
        self._metadata = token_metadata(token)
        options: list[tuple[str, object]] = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
        if target.tls is not None:
            if target.tls.server_name:
                options.append(("grpc.ssl_target_name_override", target.tls.server_name))
            self._channel = grpc.secure_channel(target.address, target.tls.credentials(f"{key} tls"), options)
        else:
            self._channel = grpc.insecure_channel(target.address, options)
        self._stub = pb_grpc.AgentServiceStub(self._channel)

    def query(self, request: pb.QueryEbpfMetricsRequest) -> pb.QueryEbpfMetricsResponse:
        response: pb.QueryEbpfMetricsResponse = self._stub.QueryEbpfMetrics(
            request, timeout=self.timeout, metadata=self._metadata
        )
        return response

    def info(self) -> pb.AgentInfo:
        info: pb.AgentInfo = self._stub.GetAgentInfo(
            pb.GetAgentInfoRequest(), timeout=self.timeout, metadata=self._metadata
        )
        return info

    def close(self) -> None:
        self._channel.close()
