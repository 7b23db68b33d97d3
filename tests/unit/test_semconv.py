"""Semantic-convention mapping: every metric and attribute name Beyla has used, old and new."""

from __future__ import annotations

import pytest

from coral_ebpf.transform import semconv


@pytest.mark.parametrize(
    ("name", "table", "side"),
    [
        ("http.server.request.duration", "beyla_http_metrics", "server"),
        ("http.server.duration", "beyla_http_metrics", "server"),
        ("http.client.request.duration", "beyla_http_metrics", "client"),
        ("http.client.duration", "beyla_http_metrics", "client"),
        ("rpc.server.call.duration", "beyla_grpc_metrics", "server"),
        ("rpc.server.duration", "beyla_grpc_metrics", "server"),
        ("rpc.client.call.duration", "beyla_grpc_metrics", "client"),
        ("rpc.client.duration", "beyla_grpc_metrics", "client"),
        ("db.client.operation.duration", "beyla_sql_metrics", "client"),
        ("sql.client.duration", "beyla_sql_metrics", "client"),
        ("db.server.operation.duration", "beyla_sql_metrics", "server"),
        ("messaging.client.operation.duration", "beyla_messaging_metrics", "client"),
        ("messaging.publish.duration", "beyla_messaging_metrics", "producer"),
        ("messaging.process.duration", "beyla_messaging_metrics", "consumer"),
    ],
)
def test_every_duration_metric_name_is_routed(name: str, table: str, side: str) -> None:
    assert semconv.DURATION_METRICS[name] == semconv.MetricRoute(table, side)


def test_body_size_metrics_are_not_red_metrics() -> None:
    assert "http.server.request.body.size" not in semconv.DURATION_METRICS


def test_http_columns_new_names() -> None:
    columns = semconv.http_columns(
        {
            "http.request.method": "POST",
            "http.response.status_code": 503,
            "http.route": "/api/orders",
            "url.path": "/api/orders",
            "url.scheme": "https",
            "server.address": "shop",
            "server.port": 8443,
            "error.type": "503",
        }
    )
    assert columns == {
        "http_method": "POST",
        "http_route": "/api/orders",
        "http_status_code": 503,
        "url_scheme": "https",
        "server_address": "shop",
        "server_port": 8443,
        "error_type": "503",
    }


def test_http_columns_old_names_and_path_fallback() -> None:
    columns = semconv.http_columns(
        {"http.method": "GET", "http.status_code": "404", "http.target": "/x/1", "http.scheme": "http"}
    )
    assert columns["http_method"] == "GET"
    assert columns["http_status_code"] == 404
    assert columns["http_route"] == "/x/1"
    assert columns["url_scheme"] == "http"


def test_new_name_wins_over_old_when_both_present() -> None:
    columns = semconv.http_columns({"http.method": "GET", "http.request.method": "PUT"})
    assert columns["http_method"] == "PUT"


def test_grpc_columns_new_and_old_names() -> None:
    new = semconv.grpc_columns(
        {"rpc.method": "/shop.Cart/Add", "rpc.system.name": "grpc", "rpc.response.status_code": "UNAVAILABLE"}
    )
    old = semconv.grpc_columns({"rpc.method": "/shop.Cart/Add", "rpc.system": "grpc", "rpc.grpc.status_code": 14})
    for columns in (new, old):
        assert columns["grpc_method"] == "/shop.Cart/Add"
        assert columns["rpc_system"] == "grpc"
        assert columns["grpc_status_code"] == 14


def test_grpc_method_from_sdk_style_service_and_method() -> None:
    assert semconv.grpc_method({"rpc.service": "shop.Cart", "rpc.method": "Add"}) == "/shop.Cart/Add"


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (0, 0),
        ("0", 0),
        ("OK", 0),
        ("ok", 0),
        ("STATUS_CODE_NOT_FOUND", 5),
        ("canceled", 1),
        ("16", 16),
        ("UNAUTHENTICATED", 16),
        ("whatever", None),
        (None, None),
        (True, None),
        (99999, None),
    ],
)
def test_grpc_status_code(value: object, code: int | None) -> None:
    assert semconv.grpc_status_code(value) == code


def test_sql_columns_new_and_old_names() -> None:
    new = semconv.sql_columns(
        {
            "db.system.name": "postgresql",
            "db.operation.name": "SELECT",
            "db.collection.name": "users",
            "db.namespace": "shop",
            "error.type": "23505",
        }
    )
    old = semconv.sql_columns(
        {
            "db.system": "postgresql",
            "db.operation": "SELECT",
            "db.sql.table": "users",
            "db.name": "shop",
            "error.type": "23505",
        }
    )
    assert new == old
    assert new["sql_operation"] == "SELECT" and new["table_name"] == "users" and new["error_type"] == "23505"


def test_messaging_columns_new_and_old_names() -> None:
    columns = semconv.messaging_columns(
        {"messaging.system": "kafka", "messaging.destination": "orders", "messaging.operation": "publish"}
    )
    assert columns["messaging_system"] == "kafka"
    assert columns["destination"] == "orders"
    assert columns["operation"] == "publish"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(200, 200), ("200", 200), (" 7 ", 7), ("2xx", None), (40000, None), (200.0, 200), (False, None)],
)
def test_as_smallint(value: object, expected: int | None) -> None:
    assert semconv.as_smallint(value) == expected


def test_ports_out_of_range_are_dropped() -> None:
    assert semconv.as_port(70000) is None
    assert semconv.as_port("8080") == 8080
