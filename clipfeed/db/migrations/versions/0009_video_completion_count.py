"""videos.completion_count: views that reached the end, counted beside view_count

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The For You ranker's completion rate is completions / views. view_count was on the row and
    # completions only in the feature store, which counts from its start: after a restart every
    # established video looked as if nobody had finished it. A plain ADD COLUMN (no batch rebuild
    # on SQLite, so the search triggers of 0003s stay).
    op.add_column('videos', sa.Column('completion_count', sa.BigInteger(), nullable=False, server_default='0'))
    # The existing completed views, from the event log (one pass over it, grouped; both
    # databases accept UPDATE ... FROM; the search triggers watch other columns).
    op.execute(
        "UPDATE videos SET completion_count = done.n"
        " FROM (SELECT video_id, count(*) AS n FROM interaction_events"
        "       WHERE kind = 'view' AND completed AND video_id IS NOT NULL GROUP BY video_id) AS done"
        " WHERE videos.id = done.video_id")


def downgrade() -> None:
    # SQLite >= 3.35 drops a column in place; PostgreSQL always does.
    op.execute('ALTER TABLE videos DROP COLUMN completion_count')
