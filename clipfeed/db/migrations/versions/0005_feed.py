"""For You: impression log and not-interested marks

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # New tables only: no batch rebuild of videos/users, so the search triggers stay.
    op.create_table(
        'feed_impressions',
        sa.Column('user_id', sa.String(16), nullable=False),
        sa.Column('video_id', sa.String(16), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('user_id', 'video_id', name='pk_feed_impressions'),
    )
    op.create_index('ix_feed_impressions_user_at', 'feed_impressions', ['user_id', 'created_at'])
    op.create_table(
        'feed_not_interested',
        sa.Column('user_id', sa.String(16), nullable=False),
        sa.Column('video_id', sa.String(16), nullable=False),
        sa.Column('creator_id', sa.String(16), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('user_id', 'video_id', name='pk_feed_not_interested'),
    )


def downgrade() -> None:
    op.drop_table('feed_not_interested')
    op.drop_index('ix_feed_impressions_user_at', table_name='feed_impressions')
    op.drop_table('feed_impressions')
