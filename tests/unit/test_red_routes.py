from __future__ import annotations

import pytest

from coral_ebpf.red.cardinality import SegmentCap
from coral_ebpf.red.routes import (
    WILDCARD_ROUTE,
    IgnoredRoutes,
    RoutePattern,
    RouteResolver,
    heuristic_route,
    normalize_target,
)


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/a/b?x=1", "/a/b"),
        ("/a#frag", "/a"),
        ("http://example.com:8080/x/y?z", "/x/y"),
        ("http://example.com", "/"),
        ("*", "*"),
        ("", "/"),
    ],
)
def test_normalize_target(target: str, path: str) -> None:
    assert normalize_target(target) == path


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/users/123", "/users/*"),
        ("/users/123/orders/9", "/users/*/orders/*"),
        ("/items/550e8400-e29b-41d4-a716-446655440000", "/items/*"),
        ("/blobs/deadbeef0042", "/blobs/*"),
        ("/sessions/aZ3kP9qL2mN8xV4t", "/sessions/*"),
        ("/people/bob@example.com", "/people/*"),
        ("/api/v1/health", "/api/v1/health"),
        ("/static/app.css", "/static/app.css"),
        ("/", "/"),
        ("/prices/-12.5", "/prices/*"),
    ],
)
def test_heuristic_replaces_identifiers(path: str, route: str) -> None:
    assert heuristic_route(path) == route


def test_truncated_path_drops_its_cut_segment() -> None:
    assert heuristic_route("/reports/monthly/summ", truncated=True) == "/reports/monthly/*"


def test_patterns_first_match_wins() -> None:
    resolver = RouteResolver(("/users/{id}", "/users/:id/orders", "/api/*", "/files/*/meta"), "heuristic", 100)
    assert resolver.route("/users/alice") == "/users/{id}"
    assert resolver.route("/users/alice/orders") == "/users/:id/orders"
    assert resolver.route("/api/a/b/c?q=1") == "/api/*"
    assert resolver.route("/api") == "/api"  # a trailing * needs at least one segment
    assert resolver.route("/files/x/meta") == "/files/*/meta"
    assert resolver.route("/files/x/y/meta") == "/files/x/y/meta"  # no pattern: the heuristic keeps words
    assert resolver.route("/users/") == "/users/"


def test_unmatched_modes() -> None:
    assert RouteResolver((), "path", 10).route("/users/42?x") == "/users/42"
    assert RouteResolver((), "wildcard", 10).route("/users/42") == WILDCARD_ROUTE


def test_cap_on_distinct_routes() -> None:
    resolver = RouteResolver((), "path", 3)
    routes = [resolver.route(f"/r{index}") for index in range(6)]
    assert routes == ["/r0", "/r1", "/r2", WILDCARD_ROUTE, WILDCARD_ROUTE, WILDCARD_ROUTE]
    assert resolver.route("/r1") == "/r1"
    assert resolver.route_count == 3
    assert resolver.overflowed == 3


@pytest.mark.parametrize("bad", ["users", "/a//b", "/a/{id", "/a/x*", "/a/{id}x"])
def test_bad_patterns_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        RoutePattern.parse(bad)


def test_unmatched_404s_fold_into_one_route_and_learn_nothing() -> None:
    resolver = RouteResolver(("/users/{id}",), "path", 3)
    routes = {resolver.route(f"/scan/{index}.php", status=404) for index in range(500)}
    assert routes == {WILDCARD_ROUTE}
    assert resolver.route_count == 1 and resolver.overflowed == 0  # /** only: the cap is left for real routes
    assert resolver.route("/users/999", status=404) == "/users/{id}"  # a pattern's 404 is that route's answer
    assert resolver.route("/scan/1.php", status=200) == "/scan/1.php"  # the same path answered 200 is a route


def test_fold_not_found_off_keeps_404_paths() -> None:
    resolver = RouteResolver((), "path", 10, fold_not_found=False)
    assert resolver.route("/nope", status=404) == "/nope"


def test_low_cardinality_caps_words_per_position() -> None:
    resolver = RouteResolver((), "low-cardinality", 1000, max_segment_cardinality=3)
    assert [resolver.route(f"/p/item-{name}") for name in ("a", "b", "c", "d", "e")] == [
        "/p/item-a",
        "/p/item-b",
        "/p/item-c",
        "/p/*",
        "/p/*",
    ]
    assert resolver.route("/p/item-a") == "/p/item-a"  # words learnt before the cap keep their route
    assert resolver.route("/p/42") == "/p/*"  # the heuristic's * does not use up a place
    assert resolver.route("/q/item-z") == "/q/item-z"  # each parent has its own places
    assert resolver.segments_capped == 2
    assert resolver.route_count == 5


def test_ignored_routes_match_whole_paths() -> None:
    ignored = IgnoredRoutes(("/health", "/internal/*"))
    assert ignored.matches("/health")
    assert ignored.matches("/internal/a/b")
    assert not ignored.matches("/health/deep")
    assert not ignored.matches("/healthz")
    assert not IgnoredRoutes(())


def test_low_cardinality_learns_nothing_once_the_route_table_is_full() -> None:
    cap = SegmentCap(10)
    assert cap.admit("/a/b") == "/a/b"
    assert cap.admit("/c/d", learn=False) == "/*/*"  # unknown words are *, and are not remembered
    assert cap.admit("/a/x", learn=False) == "/a/*"
    assert cap.admit("/a/b", learn=False) == "/a/b"
    assert cap.admit("/c/d") == "/c/d"  # learnt now, not before
    resolver = RouteResolver((), "low-cardinality", 2)
    assert [resolver.route(path) for path in ("/one", "/two", "/three", "/one")] == [
        "/one",
        "/two",
        WILDCARD_ROUTE,
        "/one",
    ]
