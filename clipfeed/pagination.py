"""Opaque keyset cursors: stable while new rows arrive, unlike OFFSET."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from clipfeed.errors import ValidationFailed


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, row_id = json.loads(raw)
        return datetime.fromisoformat(created), str(row_id)
    except (ValueError, TypeError) as exc:
        raise ValidationFailed("cursor is not valid", field="cursor") from exc


def encode_offset_cursor(offset: int) -> str:
    """An opaque offset cursor, for ranked lists (search, trending) where no stable key orders
    the rows: pages may shift if the ranking changes between requests."""
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def decode_offset_cursor(cursor: str | None, *, max_offset: int = 10_000) -> int:
    if not cursor:
        return 0
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        offset = json.loads(raw)["o"]
    except (ValueError, TypeError, KeyError) as exc:
        raise ValidationFailed("cursor is not valid", field="cursor") from exc
    if type(offset) is not int or not 0 <= offset <= max_offset:
        raise ValidationFailed("cursor is not valid", field="cursor")
    return offset
