from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field


class RegisterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    handle: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    display_name: str | None = Field(default=None, max_length=64)
    birth_date: date | None = None
    # Topics to start the For You feed with (hashtags, at most 10); PATCH /me changes them later.
    interests: list[str] | None = Field(default=None, max_length=50)


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    handle: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    handle: str
    display_name: str
    bio: str
    interests: list[str] = []
    created_at: datetime


class AuthOut(BaseModel):
    user: UserOut
    token: str
