"""A gRPC unary call written frame by frame with h2, for messages grpcio's client cannot send.

grpcio compresses what it is given, so it cannot send an already-compressed gzip bomb; this
sends one length-prefixed message with the compressed flag set and returns the status.
"""

from __future__ import annotations

import socket
import struct

import h2.config
import h2.connection
import h2.events


def unary_call(
    address: str, path: str, message: bytes, *, gzip_compressed: bool, timeout: float = 30.0
) -> dict[str, str]:
    """Send `message` (already gzip-compressed when `gzip_compressed`); return response headers and trailers."""
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    try:
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        connection.initiate_connection()
        sock.sendall(connection.data_to_send())
        stream_id = connection.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", address),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-accept-encoding", "identity,gzip"),
        ]
        if gzip_compressed:
            headers.append(("grpc-encoding", "gzip"))
        connection.send_headers(stream_id, headers)
        sock.sendall(connection.data_to_send())

        frame = struct.pack(">BI", 1 if gzip_compressed else 0, len(message)) + message
        result: dict[str, str] = {}
        finished = False
        offset = 0
        while not finished:
            while offset < len(frame):
                window = min(connection.local_flow_control_window(stream_id), connection.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk = frame[offset : offset + window]
                offset += len(chunk)
                connection.send_data(stream_id, chunk, end_stream=offset == len(frame))
                sock.sendall(connection.data_to_send())
            data = sock.recv(65536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    result.update({str(k): str(v) for k, v in event.headers})
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset | h2.events.ConnectionTerminated):
                    finished = True
                    offset = max(offset, len(frame))  # the server answered before reading it all: stop sending
            sock.sendall(connection.data_to_send())
        return result
    finally:
        sock.close()
