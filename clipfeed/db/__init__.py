"""Database: async engine, session factory and the declarative Base shared by every domain."""

from clipfeed.db.base import Base, new_id, utcnow
from clipfeed.db.engine import Database, commit, on_commit

__all__ = ["Base", "Database", "commit", "new_id", "on_commit", "utcnow"]
