"""OTLP message encodings: binary protobuf and OTLP/JSON, decoded and encoded in this one place.

OTLP/JSON is the proto3 JSON mapping with the differences the OTLP specification
(`specification/protocol/otlp.md`, "JSON Protobuf Encoding") lays down:
- `traceId`, `spanId` and `parentSpanId` (also in links, exemplars and log records) are
  case-insensitive **hex** strings, not base64 as proto3 JSON would have them;
- enum values may be integers (what senders must use) or names;
- field names are lowerCamelCase; unknown fields are ignored.
Everything else (int64 as string or number, `bytesValue` in base64) is plain proto3 JSON.
"""

from __future__ import annotations

import base64
import enum
import json
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from coral_ebpf.otlp.errors import MalformedRequestError, UnsupportedMediaTypeError
from coral_ebpf.otlp.wire import TraceSkeleton

M = TypeVar("M", bound=Message)

_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_ID_LENGTHS = {"traceId": 16, "trace_id": 16, "spanId": 8, "span_id": 8, "parentSpanId": 8, "parent_span_id": 8}


class Encoding(enum.Enum):
    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"

    @property
    def content_type(self) -> str:
        return self.value


def encoding_for_content_type(header: str | None) -> Encoding:
    """The encoding a `Content-Type` header names (parameters such as charset are ignored)."""
    media_type = (header or "").split(";", 1)[0].strip().lower()
    for candidate in Encoding:
        if media_type == candidate.value:
            return candidate
    shown = repr(header) if header else "missing"
    raise UnsupportedMediaTypeError(
        f"Content-Type {shown} is not supported: send application/x-protobuf or application/json"
    )


def decode(payload: bytes, message_type: type[M], encoding: Encoding) -> M:
    """Parse an export request; MalformedRequestError says what is wrong with it."""
    if encoding is Encoding.PROTOBUF:
        return decode_protobuf(payload, message_type)
    return decode_json(payload, message_type)


def decode_protobuf(payload: bytes, message_type: type[M]) -> M:
    try:
        return message_type.FromString(payload)
    except (DecodeError, RuntimeError, ValueError) as exc:
        # upb raises DecodeError for bad wire data and RuntimeError past its recursion limit.
        raise MalformedRequestError(
            f"body is not a valid protobuf {message_type.DESCRIPTOR.name} ({len(payload)} bytes): {exc}"
        ) from None


def decode_json(payload: bytes, message_type: type[M]) -> M:
    name = message_type.DESCRIPTOR.name
    try:
        document = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedRequestError(f"body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise MalformedRequestError(f"body must be a JSON object ({name}), not {type(document).__name__}")
    try:
        _hex_ids_to_base64(document, "")
        message = message_type()
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except MalformedRequestError:
        raise
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise MalformedRequestError(f"body is not a valid OTLP/JSON {name}: {exc}") from None
    return message


def trace_skeleton(payload: bytes) -> Any:
    """A protobuf ExportTraceServiceRequest's resource_spans/scope_spans/spans, the spans left undecoded."""
    try:
        return TraceSkeleton.FromString(payload)
    except (DecodeError, RuntimeError, ValueError):
        raise MalformedRequestError(
            f"body is not a valid protobuf ExportTraceServiceRequest ({len(payload)} bytes): wire format is corrupt"
        ) from None


def count_spans_serialized(payload: bytes) -> int:
    """The number of spans in a protobuf ExportTraceServiceRequest, without decoding the spans."""
    skeleton = trace_skeleton(payload)
    return sum(len(scope.spans) for resource in skeleton.resource_spans for scope in resource.scope_spans)


def encode(message: Message, encoding: Encoding) -> bytes:
    """Serialise a response in the request's encoding (OTLP/JSON ids are never in responses)."""
    if encoding is Encoding.PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode()


def _hex_ids_to_base64(node: Any, path: str) -> None:
    """Rewrite OTLP/JSON hex ids in place into the base64 that the proto3 JSON parser expects."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_FIELDS and isinstance(value, str):
                node[key] = _hex_to_base64(value, f"{path}.{key}" if path else key, _ID_LENGTHS[key])
            elif isinstance(value, dict | list):
                _hex_ids_to_base64(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            if isinstance(item, dict | list):
                _hex_ids_to_base64(item, f"{path}[{index}]")


def _hex_to_base64(value: str, where: str, length: int) -> str:
    if value == "":
        return ""
    if len(value) != 2 * length:
        raise MalformedRequestError(f"{where}: {value!r} must be {2 * length} hex digits ({length} bytes)")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise MalformedRequestError(f"{where}: {value!r} is not hex (OTLP/JSON ids are hex, not base64)") from None
    return base64.b64encode(raw).decode()


__all__ = [
    "Encoding",
    "count_spans_serialized",
    "decode",
    "decode_json",
    "decode_protobuf",
    "encode",
    "encoding_for_content_type",
]
