"""Servers the real-Beyla VM suite instruments: run as `python -m tests.helpers.beyla_vm_apps <kind>`.

Each binds 127.0.0.1 on an ephemeral port, prints the port on its first line of stdout, and appends
one line per request it served to the file named by $CORAL_TRUTH_FILE: `<route> <status> <seconds>`,
the server-side truth the test compares Beyla's numbers with (seconds from the request's first byte
parsed to the response written).

Kinds:
  shop  HTTP/1.1 (http.server, keep-alive) that queries PostgreSQL ($CORAL_PG_DSN, psycopg2, plain-text
        queries over TCP, autocommit):
          GET /items/<id>   SELECT ... FROM items       -> 200
          POST /items       INSERT INTO items           -> 201
          GET /broken       SELECT ... FROM no_such_table (fails: 42P01) -> 500
          GET /fail         no SQL                      -> 500
          GET /slow?ms=N    sleeps N ms, no SQL         -> 200
  grpc  gRPC (grpcio, no generated code): unary `/shop.Items/Get`; the request bytes are the key,
        `missing...` aborts with NOT_FOUND, anything else answers OK.

psycopg2 is Debian's python3-psycopg2, installed in the VM image only (tests/vm/build-rootfs.sh), so it
is imported by name at run time.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc

GRPC_METHOD = "/shop.Items/Get"
_truth_lock = threading.Lock()


def record(route: str, status: int | str, seconds: float) -> None:
    path = os.environ.get("CORAL_TRUTH_FILE")
    if not path:
        return
    with _truth_lock, open(path, "a", encoding="utf-8") as truth:
        truth.write(f"{route} {status} {seconds:.6f}\n")


class _Database:
    """One autocommit connection shared by the handler threads (a lock keeps one query at a time)."""

    def __init__(self, dsn: str) -> None:
        self._psycopg2: Any = importlib.import_module("psycopg2")
        self._connection = self._psycopg2.connect(dsn)
        self._connection.autocommit = True
        self._lock = threading.Lock()

    def run(self, statement: str, args: tuple[Any, ...] = ()) -> bool:
        """True when the statement succeeded; a database error (e.g. an unknown table) is False."""
        with self._lock, self._connection.cursor() as cursor:
            try:
                cursor.execute(statement, args)
            except self._psycopg2.Error:
                return False
            if cursor.description is not None:
                cursor.fetchall()
            return True


class _ShopHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    database: _Database

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, route: str, started: float, status: int, body: bytes = b"ok") -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        record(route, status, time.perf_counter() - started)

    def do_GET(self) -> None:
        started = time.perf_counter()
        url = urlsplit(self.path)
        if url.path.startswith("/items/"):
            found = self.database.run("SELECT id, name FROM items WHERE id = %s", (int(url.path.rsplit("/", 1)[1]),))
            self._reply("/items/*", started, 200 if found else 500)
        elif url.path == "/broken":
            self.database.run("SELECT id FROM no_such_table")
            self._reply("/broken", started, 500, b"broken")
        elif url.path == "/fail":
            self._reply("/fail", started, 500, b"boom")
        elif url.path == "/slow":
            time.sleep(float(parse_qs(url.query).get("ms", ["0"])[0]) / 1000.0)
            self._reply("/slow", started, 200)
        else:
            self._reply(url.path, started, 404, b"no")

    def do_POST(self) -> None:
        started = time.perf_counter()
        length = int(self.headers.get("Content-Length", "0"))
        name = self.rfile.read(length).decode() if length else "item"
        ok = self.database.run("INSERT INTO items (name) VALUES (%s)", (name,))
        self._reply("/items", started, 201 if ok else 500)


def run_shop() -> None:
    _ShopHandler.database = _Database(os.environ["CORAL_PG_DSN"])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ShopHandler)
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()


def _get(request: bytes, context: grpc.ServicerContext) -> bytes:
    started = time.perf_counter()
    if request.startswith(b"missing"):
        record(GRPC_METHOD, "NOT_FOUND", time.perf_counter() - started)
        context.abort(grpc.StatusCode.NOT_FOUND, "no such item")
    record(GRPC_METHOD, "OK", time.perf_counter() - started)
    return b"item:" + request


def run_grpc() -> None:
    handler = grpc.method_handlers_generic_handler("shop.Items", {"Get": grpc.unary_unary_rpc_method_handler(_get)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def main(argv: list[str]) -> int:
    kinds = {"shop": run_shop, "grpc": run_grpc}
    if len(argv) != 1 or argv[0] not in kinds:
        print(f"usage: python -m tests.helpers.beyla_vm_apps {{{'|'.join(kinds)}}}", file=sys.stderr)
        return 2
    kinds[argv[0]]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
