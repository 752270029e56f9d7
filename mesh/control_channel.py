"""Messages between the supervisor and its workers: length-prefixed JSON over a unix
socket pair. Rare (routing changes, start, stop), so plain JSON is cheap enough."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

_LEN = struct.Struct("!I")
_MAX = 64 * 1024 * 1024


def frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return _LEN.pack(len(body)) + body


async def read_message(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None when the other side is gone."""
    try:
        head = await reader.readexactly(_LEN.size)
        (size,) = _LEN.unpack(head)
        if size > _MAX:
            return None
        body = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    message: dict[str, Any] = json.loads(body)
    return message
