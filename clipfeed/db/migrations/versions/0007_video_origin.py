"""videos.origin: uploads and live replays get different limits

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch rebuild on SQLite, so the search triggers of 0003s stay).
    op.add_column('videos', sa.Column('origin', sa.String(length=16), nullable=False, server_default='upload'))


def downgrade() -> None:
    # SQLite >= 3.35 drops a column in place; PostgreSQL always does.
    op.execute('ALTER TABLE videos DROP COLUMN origin')
