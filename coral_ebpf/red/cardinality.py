"""`SegmentCap`: at most N distinct words at each position of a service's routes.

This is what Beyla's `unmatched: low-cardinality` adds to its heuristic (a per-service path trie
with `max_path_segment_cardinality`, 10 by default): the heuristic turns what looks like an
identifier into `*`, but words it cannot tell from route names (`/p/blue-shoes`,
`/wiki/Main_Page`) would still make one route each. Here the first N distinct words under the same
parent keep their name; any further word at that position becomes `*`, and so does everything
after it that was learnt under that `*`.
"""

from __future__ import annotations

WILDCARD_SEGMENT = "*"


class _Node:
    __slots__ = ("children",)

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}


class SegmentCap:
    """Routes of one service, learnt segment by segment with a cap on distinct words per position."""

    def __init__(self, max_per_segment: int) -> None:
        if max_per_segment < 1:
            raise ValueError("max_per_segment must be at least 1")
        self._max = max_per_segment
        self._root = _Node()
        self.capped = 0  # segments replaced by * because their position was full

    def admit(self, route: str, learn: bool = True) -> str:
        """`route` with every segment past its position's cap replaced by `*`, learning the rest.

        With `learn` false (the service's route table is full, so the route will not be kept) nothing
        new is remembered, which bounds the trie by the routes kept: an unknown word is `*`.
        """
        if not route.startswith("/"):
            return route  # "*" (OPTIONS *) and the like have no segments
        node: _Node | None = self._root
        out: list[str] = []
        for word in route.split("/")[1:]:
            segment = word
            child = node.children.get(segment) if node is not None else None
            if child is None and node is not None:
                literal = sum(1 for name in node.children if name != WILDCARD_SEGMENT)
                if segment != WILDCARD_SEGMENT and (literal >= self._max or not learn):
                    if literal >= self._max:
                        self.capped += 1
                    segment = WILDCARD_SEGMENT
                    child = node.children.get(segment)
                if child is None and learn:
                    child = node.children[segment] = _Node()
            elif node is None:
                segment = WILDCARD_SEGMENT
            out.append(segment)
            node = child
        return "/" + "/".join(out)
