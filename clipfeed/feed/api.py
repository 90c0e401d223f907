"""Placeholder router; filled in by the social/search/feed work."""

from fastapi import APIRouter

router = APIRouter()
