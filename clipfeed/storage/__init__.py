"""Blob storage: the BlobStore protocol and its implementations."""

from clipfeed.storage.base import BlobInfo, BlobStore, InvalidKey, validate_key
from clipfeed.storage.local import LocalStore

__all__ = ["BlobInfo", "BlobStore", "InvalidKey", "LocalStore", "build_store", "validate_key"]


def build_store(settings) -> BlobStore:
    return LocalStore(settings.blob_root)
