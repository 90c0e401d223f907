import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine

from clipfeed.db.base import Base
import clipfeed.db.models  # noqa: F401  (registers every table)

config = context.config
target_metadata = Base.metadata


def _include_object(obj, name, type_, reflected, compare_to) -> bool:
    # The search index tables (FTS5 / tsvector) are managed by raw SQL in their migration.
    return not (type_ == "table" and reflected and name and name.startswith("search_"))


def _configure_and_run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_object=_include_object,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs batch ALTERs
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    schema = config.attributes.get("database_schema")
    connect_args = {"server_settings": {"search_path": schema}} if schema else {}
    engine = create_async_engine(config.attributes["database_url"], poolclass=pool.NullPool,
                                 connect_args=connect_args)
    async with engine.connect() as connection:
        await connection.run_sync(_configure_and_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.attributes["database_url"], target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
