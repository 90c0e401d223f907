"""users.interests: the topics (hashtags) a user chose, proposed by the For You feed before their swipes

Revision ID: 0011
Revises: 0010
"""
import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (no batch rebuild on SQLite, so the search triggers of 0003s stay).
    op.add_column('users', sa.Column('interests', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    op.execute('ALTER TABLE users DROP COLUMN interests')
