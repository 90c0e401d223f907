"""social graph, interactions, hashtags, notifications, trending

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 19:30:13.668287
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('hashtags',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('tag', sa.String(length=100), nullable=False),
    sa.Column('video_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hashtags')),
    sa.UniqueConstraint('tag', name=op.f('uq_hashtags_tag'))
    )
    op.create_table('interaction_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.String(length=16), nullable=True),
    sa.Column('video_id', sa.String(length=16), nullable=True),
    sa.Column('creator_id', sa.String(length=16), nullable=True),
    sa.Column('watch_ms', sa.Integer(), nullable=False),
    sa.Column('completed', sa.Boolean(), nullable=False),
    sa.Column('replay', sa.Boolean(), nullable=False),
    sa.Column('region', sa.String(length=8), nullable=True),
    sa.Column('viewer_key', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_interaction_events'))
    )
    with op.batch_alter_table('interaction_events', schema=None) as batch_op:
        batch_op.create_index('ix_events_kind_at', ['kind', 'created_at'], unique=False)
        batch_op.create_index('ix_events_user_at', ['user_id', 'created_at'], unique=False)
        batch_op.create_index('ix_events_video_kind_at', ['video_id', 'kind', 'created_at'], unique=False)

    op.create_table('trending_entries',
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('region', sa.String(length=8), nullable=False),
    sa.Column('item_id', sa.String(length=100), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('score', sa.Double(), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('kind', 'region', 'item_id', name=op.f('pk_trending_entries'))
    )
    with op.batch_alter_table('trending_entries', schema=None) as batch_op:
        batch_op.create_index('ix_trending_kind_region_rank', ['kind', 'region', 'rank'], unique=False)

    op.create_table('blocks',
    sa.Column('blocker_id', sa.String(length=16), nullable=False),
    sa.Column('blocked_id', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['blocked_id'], ['users.id'], name=op.f('fk_blocks_blocked_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['blocker_id'], ['users.id'], name=op.f('fk_blocks_blocker_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('blocker_id', 'blocked_id', name=op.f('pk_blocks'))
    )
    with op.batch_alter_table('blocks', schema=None) as batch_op:
        batch_op.create_index('ix_blocks_blocked', ['blocked_id'], unique=False)

    op.create_table('follows',
    sa.Column('follower_id', sa.String(length=16), nullable=False),
    sa.Column('followee_id', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['followee_id'], ['users.id'], name=op.f('fk_follows_followee_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['follower_id'], ['users.id'], name=op.f('fk_follows_follower_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('follower_id', 'followee_id', name=op.f('pk_follows'))
    )
    with op.batch_alter_table('follows', schema=None) as batch_op:
        batch_op.create_index('ix_follows_followee_created', ['followee_id', 'created_at'], unique=False)
        batch_op.create_index('ix_follows_follower_created', ['follower_id', 'created_at'], unique=False)

    op.create_table('comments',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('video_id', sa.String(length=16), nullable=False),
    sa.Column('author_id', sa.String(length=16), nullable=False),
    sa.Column('parent_id', sa.String(length=16), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('reply_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_comments_author_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parent_id'], ['comments.id'], name=op.f('fk_comments_parent_id_comments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_comments_video_id_videos'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_comments'))
    )
    with op.batch_alter_table('comments', schema=None) as batch_op:
        batch_op.create_index('ix_comments_video_parent_created', ['video_id', 'parent_id', 'created_at', 'id'], unique=False)

    op.create_table('likes',
    sa.Column('user_id', sa.String(length=16), nullable=False),
    sa.Column('video_id', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_likes_user_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_likes_video_id_videos'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('user_id', 'video_id', name=op.f('pk_likes'))
    )
    with op.batch_alter_table('likes', schema=None) as batch_op:
        batch_op.create_index('ix_likes_video_created', ['video_id', 'created_at'], unique=False)

    op.create_table('shares',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('video_id', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.String(length=16), nullable=True),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_shares_user_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_shares_video_id_videos'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shares'))
    )
    with op.batch_alter_table('shares', schema=None) as batch_op:
        batch_op.create_index('ix_shares_video_created', ['video_id', 'created_at'], unique=False)

    op.create_table('video_hashtags',
    sa.Column('video_id', sa.String(length=16), nullable=False),
    sa.Column('hashtag_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['hashtag_id'], ['hashtags.id'], name=op.f('fk_video_hashtags_hashtag_id_hashtags'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_video_hashtags_video_id_videos'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('video_id', 'hashtag_id', name=op.f('pk_video_hashtags'))
    )
    with op.batch_alter_table('video_hashtags', schema=None) as batch_op:
        batch_op.create_index('ix_video_hashtags_hashtag', ['hashtag_id', 'video_id'], unique=False)

    op.create_table('notifications',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=24), nullable=False),
    sa.Column('actor_id', sa.String(length=16), nullable=True),
    sa.Column('video_id', sa.String(length=16), nullable=True),
    sa.Column('comment_id', sa.String(length=16), nullable=True),
    sa.Column('text', sa.String(length=280), nullable=False),
    sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], name=op.f('fk_notifications_actor_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['comment_id'], ['comments.id'], name=op.f('fk_notifications_comment_id_comments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_notifications_user_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_notifications_video_id_videos'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notifications'))
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index('ix_notifications_user_created', ['user_id', 'created_at', 'id'], unique=False)

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('follower_count', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('following_count', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('video_count', sa.Integer(), nullable=False, server_default='0'))

    with op.batch_alter_table('videos', schema=None) as batch_op:
        batch_op.add_column(sa.Column('view_count', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('like_count', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('comment_count', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('share_count', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('comments_enabled', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column('sound_volume', sa.Float(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('videos', schema=None) as batch_op:
        batch_op.drop_column('sound_volume')
        batch_op.drop_column('comments_enabled')
        batch_op.drop_column('share_count')
        batch_op.drop_column('comment_count')
        batch_op.drop_column('like_count')
        batch_op.drop_column('view_count')

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('video_count')
        batch_op.drop_column('following_count')
        batch_op.drop_column('follower_count')

    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index('ix_notifications_user_created')

    op.drop_table('notifications')
    with op.batch_alter_table('video_hashtags', schema=None) as batch_op:
        batch_op.drop_index('ix_video_hashtags_hashtag')

    op.drop_table('video_hashtags')
    with op.batch_alter_table('shares', schema=None) as batch_op:
        batch_op.drop_index('ix_shares_video_created')

    op.drop_table('shares')
    with op.batch_alter_table('likes', schema=None) as batch_op:
        batch_op.drop_index('ix_likes_video_created')

    op.drop_table('likes')
    with op.batch_alter_table('comments', schema=None) as batch_op:
        batch_op.drop_index('ix_comments_video_parent_created')

    op.drop_table('comments')
    with op.batch_alter_table('follows', schema=None) as batch_op:
        batch_op.drop_index('ix_follows_follower_created')
        batch_op.drop_index('ix_follows_followee_created')

    op.drop_table('follows')
    with op.batch_alter_table('blocks', schema=None) as batch_op:
        batch_op.drop_index('ix_blocks_blocked')

    op.drop_table('blocks')
    with op.batch_alter_table('trending_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_trending_kind_region_rank')

    op.drop_table('trending_entries')
    with op.batch_alter_table('interaction_events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_video_kind_at')
        batch_op.drop_index('ix_events_user_at')
        batch_op.drop_index('ix_events_kind_at')

    op.drop_table('interaction_events')
    op.drop_table('hashtags')
