"""OTLP `AnyValue`/`KeyValue` to Python values and JSON text.

JSON follows the OTLP/JSON conventions where JSON has no native form: bytes are base64,
non-finite doubles are the strings "NaN", "Infinity", "-Infinity".

`KeyValueCache` is the span hot path: attributes arrive as the raw bytes of each KeyValue
(see otlp/wire.py), and most of them repeat from span to span (method, route, scheme,
server address, ...), so each distinct KeyValue is decoded and JSON-encoded once.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def any_value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        if math.isfinite(number):
            return number
        return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    return {item.key: any_value(item.value) for item in value.kvlist_value.values}


def attributes_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {item.key: any_value(item.value) for item in attributes}


def to_json(value: Any) -> str:
    return _encode(value)


def json_or_none(mapping: Mapping[str, Any]) -> str | None:
    return _encode(mapping) if mapping else None


# A decoded attribute as the span hot path uses it: its JSON fragment ('"key":value', ready
# to join into an object) and, for attributes that feed a promoted span column, the
# (slot, rank, normalised value) triple, else None. Plain tuples: index access is the
# cheapest lookup in CPython.
CachedAttribute = tuple[str, "tuple[int, int, Any] | None"]


class KeyValueCache:
    """Decoded KeyValues by their serialized bytes, bounded so a flood of unique values cannot grow it."""

    def __init__(
        self,
        promoted: Mapping[str, tuple[tuple[str, ...], Callable[[Any], Any]]],
        max_entries: int = 50_000,
    ) -> None:
        self._slots: dict[str, tuple[int, int, Callable[[Any], Any]]] = {}
        for slot, (names, normalise) in enumerate(promoted.values()):
            for rank, name in enumerate(names):
                self._slots[name] = (slot, rank, normalise)
        self.slot_count = len(promoted)
        self._entries: dict[bytes, CachedAttribute] = {}
        self._max_entries = max_entries
        self.get = self._entries.get

    def decode(self, raw: bytes) -> CachedAttribute:
        """Decode `raw` (a serialized KeyValue) and remember it. Raises DecodeError on bad bytes."""
        item = KeyValue.FromString(raw)
        value = any_value(item.value)
        fragment = _encode(item.key) + ":" + _encode(value)
        promotion = None
        target = self._slots.get(item.key)
        if target is not None:
            slot, rank, normalise = target
            normalised = normalise(value)
            if normalised is not None:
                promotion = (slot, rank, normalised)
        entry = (fragment, promotion)
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[raw] = entry
        return entry
