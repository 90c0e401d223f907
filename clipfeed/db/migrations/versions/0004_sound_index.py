"""index videos.sound_id for sound pages

Revision ID: 0004
Revises: 0003s
"""
from alembic import op

revision = '0004'
down_revision = '0003s'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain CREATE INDEX (no batch rebuild): a rebuilt SQLite table would lose the search triggers.
    op.create_index('ix_videos_sound_id', 'videos', ['sound_id'])


def downgrade() -> None:
    op.drop_index('ix_videos_sound_id', table_name='videos')
