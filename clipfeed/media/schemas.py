from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class VideoPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    caption: str | None = Field(default=None, max_length=2200)
    visibility: str | None = Field(default=None, max_length=16)
    comments_enabled: bool | None = None
