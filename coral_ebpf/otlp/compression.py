"""Bounded decompression of OTLP/HTTP bodies (`Content-Encoding`).

The output is produced at most `limit + 1` bytes at a time, so a gzip bomb (1 GiB of zeros
in 1 MB) costs the receiver `limit` bytes of memory before it is refused, never its full size.
"""

from __future__ import annotations

import zlib

from coral_ebpf.otlp.errors import BodyTooLargeError, MalformedRequestError, UnsupportedMediaTypeError

SUPPORTED_ENCODINGS = ("gzip", "deflate", "identity")

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_ZLIB_WBITS = zlib.MAX_WBITS
_RAW_DEFLATE_WBITS = -zlib.MAX_WBITS


def normalise_encoding(header: str | None) -> str:
    """The one content coding of a request, or UnsupportedMediaTypeError naming what is accepted."""
    value = (header or "identity").strip().lower()
    if value in ("", "identity"):
        return "identity"
    if value in ("gzip", "x-gzip"):
        return "gzip"
    if value == "deflate":
        return "deflate"
    raise UnsupportedMediaTypeError(
        f"unsupported Content-Encoding {header!r}: use one of {', '.join(SUPPORTED_ENCODINGS)} (a single coding)"
    )


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Inflate `body` (already checked to be at most `limit` bytes) to at most `limit` bytes."""
    if encoding == "identity":
        return body
    if encoding == "gzip":
        return _inflate(body, _GZIP_WBITS, limit, "gzip")
    if encoding == "deflate":
        # HTTP `deflate` is the zlib format (RFC 9110 §8.4.1.2), but some clients send raw deflate.
        if len(body) >= 2 and (body[0] * 256 + body[1]) % 31 == 0 and body[0] & 0x0F == 8:
            return _inflate(body, _ZLIB_WBITS, limit, "deflate")
        return _inflate(body, _RAW_DEFLATE_WBITS, limit, "deflate")
    raise UnsupportedMediaTypeError(f"unsupported Content-Encoding {encoding!r}")


def _inflate(body: bytes, wbits: int, limit: int, name: str) -> bytes:
    out = bytearray()
    data = body
    # A gzip body may hold several members back to back (RFC 1952 §2.2); each gets its own decoder.
    while True:
        decoder = zlib.decompressobj(wbits)
        try:
            while data:
                out += decoder.decompress(data, limit + 1 - len(out))
                if len(out) > limit:
                    raise BodyTooLargeError(
                        f"{name} body inflates past the limit of {limit} bytes (otlp.max_body_bytes)"
                    )
                data = decoder.unconsumed_tail
                if decoder.eof:
                    break
            if not decoder.eof:
                out += decoder.flush()
                if not decoder.eof:
                    raise MalformedRequestError(f"{name} body is truncated: the compressed stream does not end")
        except zlib.error as exc:
            raise MalformedRequestError(f"{name} body is not valid {name} data: {exc}") from None
        data = decoder.unused_data
        if wbits != _GZIP_WBITS or not data:
            break
        if not data.strip(b"\0"):
            break  # trailing zero padding after the last member, which gzip(1) also ignores
    if len(out) > limit:
        raise BodyTooLargeError(f"{name} body inflates past the limit of {limit} bytes (otlp.max_body_bytes)")
    if data and wbits != _GZIP_WBITS:
        raise MalformedRequestError(f"{name} body has {len(data)} bytes of trailing garbage after the stream")
    return bytes(out)
