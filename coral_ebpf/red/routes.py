"""`http.route` from a raw request target: configured patterns first, else a low-cardinality rule.

Patterns (`red.routes`), first match wins, the pattern text is the route:
- `{name}` or `:name` matches exactly one path segment;
- `*` matches one segment, or, as the last segment, everything that follows (one or more segments);
- any other segment matches itself.
Unmatched paths (`red.unmatched_routes`):
- `heuristic` (default): segments that look like identifiers become `*` — decimal numbers, UUIDs,
  hex strings of 8+ characters with a digit, long tokens mixing letters and digits, e-mail-like,
  and base64-padded values;
- `path`: the path itself; `wildcard`: `/**` for every path.
- `low-cardinality`: the heuristic, then at most `max_path_segment_cardinality` distinct words
  per position of the path (per service, like Beyla's mode of that name): further ones become `*`.
A 404 answer whose path no pattern matches becomes `/**` (`fold_not_found`): a scanner probing
random URLs makes one route, not one per URL, and does not take the place of real routes.
Either way a service keeps at most `max_routes_per_service` distinct routes; further ones become
`/**`, so a scanner walking random URLs cannot blow up the number of series.
`red.ignored_routes` (same pattern syntax) are paths not measured at all (health checks).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from coral_ebpf.red.cardinality import SegmentCap

WILDCARD_ROUTE = "/**"
_PLACEHOLDER = re.compile(r"^(\{[^/{}]+\}|:[A-Za-z_][A-Za-z0-9_]*)$")
_NUMBER = re.compile(r"^[+-]?\d+([.,]\d+)?$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^(0x)?[0-9a-fA-F]{8,}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-.~]{16,}$")
_CACHE_SIZE = 4096
NOT_FOUND = 404


def normalize_target(target: str) -> str:
    """The path of a request target: absolute-form reduced to its path, no query or fragment."""
    if target.startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else "/"
    for stop in ("?", "#"):
        cut = target.find(stop)
        if cut >= 0:
            target = target[:cut]
    if target == "*":
        return target
    return target if target.startswith("/") else "/" + target


def looks_like_id(segment: str) -> bool:
    if not segment:
        return False
    if _NUMBER.match(segment) or _UUID.match(segment):
        return True
    if _HEX.match(segment) and any(ch.isdigit() for ch in segment):
        return True
    if "@" in segment or segment.endswith("="):
        return True
    return bool(_TOKEN.match(segment) and any(ch.isdigit() for ch in segment) and any(ch.isalpha() for ch in segment))


def heuristic_route(path: str, truncated: bool = False) -> str:
    if path == "*":
        return path
    segments = path.split("/")
    if truncated and len(segments) > 1:
        segments[-1] = "*"  # a segment cut by the capture limit says nothing
    return "/".join("*" if looks_like_id(segment) else segment for segment in segments) or "/"


@dataclass(frozen=True)
class RoutePattern:
    text: str
    segments: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> RoutePattern:
        if not text.startswith("/"):
            raise ValueError(f"route pattern {text!r} must start with /")
        segments = tuple(text.split("/")[1:])
        for index, segment in enumerate(segments):
            if ("{" in segment or "}" in segment) and not _PLACEHOLDER.match(segment):
                raise ValueError(f"route pattern {text!r}: {segment!r} must be a whole segment like {{id}}")
            if "*" in segment and segment != "*":
                raise ValueError(f"route pattern {text!r}: * must be a whole segment")
            if segment == "" and index != len(segments) - 1:
                raise ValueError(f"route pattern {text!r} has an empty segment (//)")
        return cls(text, segments)

    def matches(self, segments: list[str]) -> bool:
        for index, want in enumerate(self.segments):
            if want == "*" and index == len(self.segments) - 1:
                return len(segments) > index
            if index >= len(segments):
                return False
            if want == "*" or _PLACEHOLDER.match(want):
                if segments[index] == "":
                    return False
                continue
            if want != segments[index]:
                return False
        return len(segments) == len(self.segments)


class IgnoredRoutes:
    """`red.ignored_routes`: paths whose requests are neither measured nor traced."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self._patterns = [RoutePattern.parse(text) for text in patterns]

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def matches(self, path: str) -> bool:
        segments = path.split("/")[1:]
        return any(pattern.matches(segments) for pattern in self._patterns)


class RouteResolver:
    """Route for each path of one service, with the per-service cap on distinct routes."""

    def __init__(
        self,
        patterns: tuple[str, ...],
        unmatched: str,
        max_routes: int,
        *,
        fold_not_found: bool = True,
        max_segment_cardinality: int = 10,
    ) -> None:
        self._patterns = [RoutePattern.parse(text) for text in patterns]
        self._unmatched = unmatched
        self._max_routes = max_routes
        self._fold_not_found = fold_not_found
        self._segments = SegmentCap(max_segment_cardinality) if unmatched == "low-cardinality" else None
        self._routes: set[str] = set()
        self._cache: OrderedDict[tuple[str, bool], str] = OrderedDict()
        self.overflowed = 0

    @property
    def route_count(self) -> int:
        return len(self._routes)

    @property
    def segments_capped(self) -> int:
        """Path segments `low-cardinality` turned into `*` because their position was full."""
        return self._segments.capped if self._segments is not None else 0

    def route(self, target: str, truncated: bool = False, status: int = 0) -> str:
        """The route of a request; `status` is its response's (0: none), which folds unmatched 404s."""
        if status == NOT_FOUND and self._fold_not_found:
            path = normalize_target(target)
            matched = self._match(path)
            if matched is None:
                # Learnt nowhere (not the segment cap); /** is one route, the one overflow goes to anyway.
                self._routes.add(WILDCARD_ROUTE)
                return WILDCARD_ROUTE
            return self._admit(matched)
        key = (target, truncated)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        route = self._admit(self._resolve(normalize_target(target), truncated))
        self._cache[key] = route
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return route

    def _match(self, path: str) -> str | None:
        segments = path.split("/")[1:]
        for pattern in self._patterns:
            if pattern.matches(segments):
                return pattern.text
        return None

    def _resolve(self, path: str, truncated: bool) -> str:
        matched = self._match(path)
        if matched is not None:
            return matched
        if self._unmatched == "wildcard":
            return WILDCARD_ROUTE
        if self._unmatched == "path":
            return path + ("*" if truncated else "")
        route = heuristic_route(path, truncated)
        if self._segments is None:
            return route
        return self._segments.admit(route, learn=len(self._routes) < self._max_routes)

    def _admit(self, route: str) -> str:
        if route in self._routes:
            return route
        if len(self._routes) >= self._max_routes:
            self.overflowed += 1
            return WILDCARD_ROUTE
        self._routes.add(route)
        return route
