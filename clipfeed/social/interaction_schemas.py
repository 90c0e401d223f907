"""Request bodies of the interaction endpoints (likes, views, shares, comments)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ViewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    watch_ms: int = Field(ge=0, le=2_147_483_647)
    completed: bool = False
    replay: bool = False


class ShareIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str | None = Field(default=None, max_length=32)


class CommentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Checked again after stripping whitespace (1-1,000 characters); this bound only stops huge bodies.
    text: str = Field(max_length=4000)
    parent_id: str | None = Field(default=None, max_length=32)
