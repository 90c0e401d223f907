"""videos.completion_count, skip_count: views that reached the end, views left within 2 s

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
    # The For You ranker's completion rate is completions / views that were not skips, as it was
    # trained from the event log. Only view_count (skips included) was on the row; completions
    # were counted by the feature store alone, from its start: after a restart every established
    # video looked as if nobody had finished it. Plain ADD COLUMNs (no batch rebuild on SQLite,
    # so the search triggers of 0003s stay).
    op.add_column('videos', sa.Column('completion_count', sa.BigInteger(), nullable=False, server_default='0'))
    op.add_column('videos', sa.Column('skip_count', sa.BigInteger(), nullable=False, server_default='0'))
    # The views already in the event log, in one grouped pass over it (both databases accept
    # UPDATE ... FROM; the search triggers watch other columns).
    op.execute(
        "UPDATE videos SET completion_count = seen.completed, skip_count = seen.skipped"
        " FROM (SELECT video_id,"
        "              sum(CASE WHEN kind = 'view' AND completed THEN 1 ELSE 0 END) AS completed,"
        "              sum(CASE WHEN kind = 'skip' THEN 1 ELSE 0 END) AS skipped"
        "       FROM interaction_events WHERE kind IN ('view', 'skip') AND video_id IS NOT NULL"
        "       GROUP BY video_id) AS seen"
        " WHERE videos.id = seen.video_id")


def downgrade() -> None:
    # SQLite >= 3.35 drops a column in place; PostgreSQL always does.
    op.execute('ALTER TABLE videos DROP COLUMN skip_count')
    op.execute('ALTER TABLE videos DROP COLUMN completion_count')
