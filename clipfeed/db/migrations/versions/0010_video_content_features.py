"""video_content_features: each processed video's content-feature vector (visual and audio)

Revision ID: 0010
Revises: 0009
"""
import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Videos processed before this revision have no row: the content index embeds their caption
    # and hashtags alone (re-processing a video adds its row).
    op.create_table(
        'video_content_features',
        sa.Column('video_id', sa.String(length=16), sa.ForeignKey('videos.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('names_version', sa.Integer(), nullable=False),
        sa.Column('vector', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('video_content_features')
