"""TWS socket framing and field codec (server version 178).

Every message is a 4-byte big-endian length followed by fields that each end in NUL.
The client splits on NUL and drops the last element, so a missing final NUL silently
loses the last field: `encode` always terminates every field. Incoming fields are read
through `FieldReader`, which names the field and position when a value is malformed, so
a layout mistake shows up as a clear `ProtocolError` instead of a silent client timeout.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable

SERVER_VERSION = 178
MIN_CLIENT_VERSION = 157

UNSET_DOUBLE = 1.7976931348623157e308  # IB's "no value" double (sys.float_info.max)
UNSET_INTEGER = 2**31 - 1  # IB's "no value" int
UNSET_DOUBLE_WIRE = "1.7976931348623157E308"

_LEN = struct.Struct(">I")
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # a sanity bound: TWS messages are tiny


class ProtocolError(ValueError):
    """A request that does not follow the TWS layout the simulator speaks."""


def fmt(value: object) -> str:
    """One field as the TWS wire writes it: ints as digits, bools 1/0, None/NaN as ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value == math.inf:
            return "Infinite"
        return str(value)
    return str(value)


def encode(fields: Iterable[object]) -> bytes:
    """One framed message: length prefix + every field NUL-terminated."""
    payload = "".join(fmt(f) + "\0" for f in fields).encode()
    return _LEN.pack(len(payload)) + payload


def frame(payload: bytes) -> bytes:
    """Length-prefix an already encoded payload."""
    return _LEN.pack(len(payload)) + payload


class Framer:
    """Splits a byte stream into messages (lists of fields)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[list[str]]:
        """Append bytes and return every complete message."""
        self.push(data)
        return self.messages()

    def push(self, data: bytes) -> None:
        self._buf += data

    def messages(self) -> list[list[str]]:
        out: list[list[str]] = []
        while len(self._buf) >= 4:
            (size,) = _LEN.unpack_from(self._buf, 0)
            if size > MAX_MESSAGE_BYTES:
                raise ProtocolError(f"message length {size} exceeds {MAX_MESSAGE_BYTES} bytes")
            if len(self._buf) < 4 + size:
                break
            payload = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            fields = payload.decode(errors="backslashreplace").split("\0")
            fields.pop()  # the terminator of the last field
            out.append(fields)
        return out

    def take_frame(self) -> bytes | None:
        """One framed payload as raw bytes (the version offer has no NUL terminator)."""
        if len(self._buf) < 4:
            return None
        (size,) = _LEN.unpack_from(self._buf, 0)
        if size > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"message length {size} exceeds {MAX_MESSAGE_BYTES} bytes")
        if len(self._buf) < 4 + size:
            return None
        payload = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        return payload

    def take_raw(self, n: int) -> bytes | None:
        """The first `n` raw bytes (used for the un-framed b"API\\0" greeting)."""
        if len(self._buf) < n:
            return None
        head = bytes(self._buf[:n])
        del self._buf[:n]
        return head


class FieldReader:
    """Sequential, typed access to one message's fields with precise error messages."""

    __slots__ = ("_fields", "_i", "name")

    def __init__(self, fields: list[str], name: str = "message") -> None:
        self._fields = fields
        self._i = 0
        self.name = name

    @property
    def remaining(self) -> int:
        return len(self._fields) - self._i

    @property
    def position(self) -> int:
        return self._i

    def _next(self, what: str) -> str:
        if self._i >= len(self._fields):
            raise ProtocolError(
                f"{self.name}: field {self._i} ({what}) is missing; the message has only "
                f"{len(self._fields)} fields"
            )
        value = self._fields[self._i]
        self._i += 1
        return value

    def text(self, what: str = "str") -> str:
        return self._next(what)

    def skip(self, n: int = 1, what: str = "skipped") -> None:
        for _ in range(n):
            self._next(what)

    def integer(self, what: str = "int", default: int = 0) -> int:
        raw = self._next(what)
        if raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise ProtocolError(
                f"{self.name}: field {self._i - 1} ({what}) must be an integer, got {raw!r}"
            ) from None

    def number(self, what: str = "float") -> float | None:
        """A double; '' and IB's UNSET value become None, 'Infinite' becomes inf."""
        raw = self._next(what)
        if raw == "":
            return None
        if raw == "Infinite":
            return math.inf
        try:
            value = float(raw)
        except ValueError:
            raise ProtocolError(
                f"{self.name}: field {self._i - 1} ({what}) must be a number, got {raw!r}"
            ) from None
        return None if value >= UNSET_DOUBLE else value

    def flag(self, what: str = "bool") -> bool:
        raw = self._next(what)
        if raw in ("", "0", "false", "False"):
            return False
        if raw in ("1", "true", "True"):
            return True
        raise ProtocolError(f"{self.name}: field {self._i - 1} ({what}) must be 0/1, got {raw!r}")

    def done(self) -> None:
        """Every field must have been consumed: leftovers mean the layout is wrong."""
        if self._i != len(self._fields):
            extra = self._fields[self._i :]
            raise ProtocolError(
                f"{self.name}: {len(extra)} unexpected trailing field(s) {extra[:5]!r} "
                f"after position {self._i}"
            )
