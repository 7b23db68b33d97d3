"""Known data for the look-and-ask tests (MCP, web view): a real agent fed over OTLP/HTTP.

shop: the hour before now, 100 fast OK requests on GET /items; this hour, 100 slower ones of
which 10 answered 500; a slow trace (server span + a SQL child) and a failed one.
"""

from __future__ import annotations

import http.client
import os
import time

from google.protobuf.message import Message

from tests.helpers import beyla_otlp

SECOND_NS = beyla_otlp.SECOND_NS
MS = 1_000_000
NOW = time.time_ns()
SLOW_TRACE, FAILED_TRACE = os.urandom(16), os.urandom(16)


def post(address: str, path: str, message: Message) -> None:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=20)
    try:
        connection.request("POST", path, message.SerializeToString(), {"Content-Type": "application/x-protobuf"})
        response = connection.getresponse()
        assert response.status == 200, response.read()
    finally:
        connection.close()


def feed(address: str) -> None:
    """shop: the hour before, 100 fast OK requests on /items; this hour, 100 slower ones, 10 of them 500s."""
    shop = beyla_otlp.beyla_resource("shop", pid=77)
    histogram = beyla_otlp.CumulativeHistogram("http.server.request.duration", start_ns=NOW - 7000 * SECOND_NS)
    ok = beyla_otlp.http_server_attributes(shop, "GET", "/items", 200)
    failed = beyla_otlp.http_server_attributes(shop, "GET", "/items", 500)
    histogram.record(ok, 0.004, 100)
    post(address, "/v1/metrics", beyla_otlp.metrics_request(shop, [histogram.export(NOW - 5400 * SECOND_NS)]))
    histogram.record(ok, 0.2, 90)
    histogram.record(failed, 0.3, 10)
    post(address, "/v1/metrics", beyla_otlp.metrics_request(shop, [histogram.export(NOW - 60 * SECOND_NS)]))
    root = os.urandom(8)
    spans = [
        beyla_otlp.http_server_span(SLOW_TRACE, root, start_ns=NOW - 30 * SECOND_NS, duration_ns=900 * MS),
        beyla_otlp.sql_client_span(
            SLOW_TRACE, os.urandom(8), root, start_ns=NOW - 30 * SECOND_NS + 5 * MS, duration_ns=700 * MS
        ),
        beyla_otlp.http_server_span(
            FAILED_TRACE, os.urandom(8), start_ns=NOW - 20 * SECOND_NS, duration_ns=40 * MS, status=500
        ),
    ]
    post(address, "/v1/traces", beyla_otlp.trace_request(shop, spans))
