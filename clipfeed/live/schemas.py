from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, max_length=400)
    visibility: str | None = Field(default=None, max_length=16)


class ModeratorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=32)


class ChatSettingsPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slow_mode_s: int | None = Field(default=None, ge=0, le=86400)
    banned_words: list[str] | None = Field(default=None, max_length=400)


class EmoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=32)
    # The image (PNG, GIF or WebP, <= 64 KB), base64-encoded.
    image_base64: str = Field(min_length=1, max_length=90_000)
