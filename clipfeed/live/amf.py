"""AMF0: the value encoding of RTMP command and data messages.

Only what RTMP publishers send is decoded (number, boolean, string, object, null, undefined,
ECMA array, strict array, date, long string). Decoding is bounded: nesting depth and the number
of values are capped, and any malformed byte raises ``AMFError`` — never an IndexError or a
runaway recursion — so a hostile client only ever loses its own connection.
"""

from __future__ import annotations

import struct
from typing import Any

NUMBER, BOOLEAN, STRING, OBJECT, NULL, UNDEFINED, ECMA_ARRAY, OBJECT_END, STRICT_ARRAY, DATE, LONG_STRING = (
    0x00, 0x01, 0x02, 0x03, 0x05, 0x06, 0x08, 0x09, 0x0A, 0x0B, 0x0C)

MAX_DEPTH = 16
MAX_VALUES = 4096


class AMFError(ValueError):
    """The bytes are not valid AMF0 (or exceed the decoder's limits)."""


class _Reader:
    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0
        self.values = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise AMFError("truncated AMF0 value")
        chunk = bytes(self.data[self.pos:end])
        self.pos = end
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def utf8(self, length: int) -> str:
        try:
            return self.take(length).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AMFError("AMF0 string is not UTF-8") from exc

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


def _read_value(r: _Reader, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise AMFError("AMF0 value nested too deeply")
    r.values += 1
    if r.values > MAX_VALUES:
        raise AMFError("too many AMF0 values")
    marker = r.u8()
    if marker == NUMBER:
        return struct.unpack(">d", r.take(8))[0]
    if marker == BOOLEAN:
        return r.u8() != 0
    if marker == STRING:
        return r.utf8(r.u16())
    if marker == LONG_STRING:
        return r.utf8(r.u32())
    if marker in (NULL, UNDEFINED):
        return None
    if marker == OBJECT:
        return _read_properties(r, depth)
    if marker == ECMA_ARRAY:
        r.take(4)  # advisory count; the list ends with the object-end marker like an object
        return _read_properties(r, depth)
    if marker == STRICT_ARRAY:
        count = r.u32()
        if count > MAX_VALUES:
            raise AMFError("AMF0 array too long")
        return [_read_value(r, depth + 1) for _ in range(count)]
    if marker == DATE:
        millis = struct.unpack(">d", r.take(8))[0]
        r.take(2)  # time zone, unused by the format's own spec
        return millis
    raise AMFError(f"unsupported AMF0 marker 0x{marker:02x}")


def _read_properties(r: _Reader, depth: int) -> dict[str, Any]:
    props: dict[str, Any] = {}
    while True:
        name = r.utf8(r.u16())
        if name == "":
            if r.u8() != OBJECT_END:
                raise AMFError("AMF0 object without its end marker")
            return props
        props[name] = _read_value(r, depth + 1)


def decode_all(data: bytes) -> list[Any]:
    """Every AMF0 value in ``data``, in order."""
    reader = _Reader(data)
    values = []
    while not reader.done:
        values.append(_read_value(reader, 0))
    return values


def _encode_value(value: Any) -> bytes:
    if value is None:
        return bytes([NULL])
    if isinstance(value, bool):
        return bytes([BOOLEAN, 1 if value else 0])
    if isinstance(value, (int, float)):
        return bytes([NUMBER]) + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            return bytes([LONG_STRING]) + struct.pack(">I", len(raw)) + raw
        return bytes([STRING]) + struct.pack(">H", len(raw)) + raw
    if isinstance(value, dict):
        out = bytearray([OBJECT])
        for key, item in value.items():
            name = str(key).encode("utf-8")
            out += struct.pack(">H", len(name)) + name + _encode_value(item)
        out += b"\x00\x00" + bytes([OBJECT_END])
        return bytes(out)
    if isinstance(value, (list, tuple)):
        return bytes([STRICT_ARRAY]) + struct.pack(">I", len(value)) + b"".join(_encode_value(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def encode(*values: Any) -> bytes:
    return b"".join(_encode_value(v) for v in values)
