"""video_content_feature_failures: when a content-feature refresh of a video may be tried again

Revision ID: 0012
Revises: 0011
"""
import sqlalchemy as sa
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'video_content_feature_failures',
        sa.Column('video_id', sa.String(length=16), sa.ForeignKey('videos.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('names_version', sa.Integer(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_error', sa.String(length=500), nullable=False),
        sa.Column('retry_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('failed_at', sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('video_content_feature_failures')
