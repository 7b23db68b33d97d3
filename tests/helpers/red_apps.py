"""Servers the RED engine tests and benches trace: run as `python -m tests.helpers.red_apps <kind>`.

Each binds 127.0.0.1 on an ephemeral port and prints the port on its first line of stdout.
Routes (both HTTP servers):
  /fail -> 500, /missing... -> 404 (any path starting with /missing), anything else -> 200 "ok";
  any GET with a query `ms=N` first sleeps N ms (e.g. /slow?ms=120);
  POST /upload -> reads the body (Content-Length), 201, /drop -> closes without a response
  (http.server only).
Kinds: `python` (http.server ThreadingHTTPServer, HTTP/1.1 keep-alive), `uvicorn` (a tiny ASGI app),
`echo` (a raw TCP echo server: not HTTP).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def _delay(query: str) -> float:
    values = parse_qs(query).get("ms", ["0"])
    return float(values[0]) / 1000.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"ok") -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/drop":
            self.close_connection = True
            return
        time.sleep(_delay(url.query))
        if url.path == "/fail":
            self._reply(500, b"boom")
        elif url.path.startswith("/missing"):
            self._reply(404, b"no")
        else:
            self._reply(200)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 65536))
            if not chunk:
                break
            remaining -= len(chunk)
        self._reply(201, str(length).encode())


class _Server(ThreadingHTTPServer):
    def server_bind(self) -> None:
        # Accepted sockets inherit TCP_NODELAY: without it headers and body, written apart, wait
        # for the client's delayed ACK (40 ms), as in a badly tuned server.
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().server_bind()


def run_python() -> None:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


async def _asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    status, body = 200, b"ok"
    if scope["method"] == "POST":
        length = 0
        more = True
        while more:
            message = await receive()
            length += len(message.get("body", b""))
            more = message.get("more_body", False)
        status, body = 201, str(length).encode()
    else:
        await asyncio.sleep(_delay(scope.get("query_string", b"").decode()))
    if path == "/fail":
        status, body = 500, b"boom"
    elif path.startswith("/missing"):
        status, body = 404, b"no"
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def run_uvicorn() -> None:
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(_asgi_app, log_level="warning", access_log=False, lifespan="off")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


def run_echo() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, sock=listener)
        await server.serve_forever()

    asyncio.run(main())


if __name__ == "__main__":
    {"python": run_python, "uvicorn": run_uvicorn, "echo": run_echo}[sys.argv[1]]()
