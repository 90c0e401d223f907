"""live streams and chat

Revision ID: 0006
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # New tables only: videos/users are referenced, never altered (a SQLite batch rebuild of
    # them would drop the search triggers of 0003s).
    op.create_table('live_streams',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('owner_id', sa.String(length=16), nullable=False),
    sa.Column('title', sa.String(length=140), nullable=False),
    sa.Column('visibility', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('stream_key_hash', sa.String(length=64), nullable=False),
    sa.Column('publishing', sa.Boolean(), nullable=False),
    sa.Column('publish_heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('peak_viewers', sa.Integer(), nullable=False),
    sa.Column('replay_video_id', sa.String(length=16), nullable=True),
    sa.Column('slow_mode_s', sa.Integer(), nullable=False),
    sa.Column('banned_words', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_live_streams_owner_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['replay_video_id'], ['videos.id'], name=op.f('fk_live_streams_replay_video_id_videos'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_live_streams')),
    sa.UniqueConstraint('stream_key_hash', name=op.f('uq_live_streams_stream_key_hash'))
    )
    op.create_index('ix_live_streams_owner_created', 'live_streams', ['owner_id', 'created_at'])
    op.create_index('ix_live_streams_status_started', 'live_streams', ['status', 'started_at', 'id'])

    op.create_table('live_moderators',
    sa.Column('channel_id', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['channel_id'], ['users.id'], name=op.f('fk_live_moderators_channel_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_live_moderators_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('channel_id', 'user_id', name=op.f('pk_live_moderators'))
    )
    op.create_table('live_chat_bans',
    sa.Column('channel_id', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.String(length=16), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('by_id', sa.String(length=16), nullable=True),
    sa.Column('reason', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['channel_id'], ['users.id'], name=op.f('fk_live_chat_bans_channel_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_live_chat_bans_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('channel_id', 'user_id', name=op.f('pk_live_chat_bans'))
    )
    op.create_table('live_emotes',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('channel_id', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('blob_key', sa.String(length=255), nullable=False),
    sa.Column('content_type', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['channel_id'], ['users.id'], name=op.f('fk_live_emotes_channel_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_live_emotes'))
    )
    op.create_index('uq_live_emotes_channel_name', 'live_emotes', ['channel_id', 'name'], unique=True)
    op.create_table('live_chat_messages',
    sa.Column('id', sa.String(length=26), nullable=False),
    sa.Column('stream_id', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.String(length=16), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('frame', sa.JSON(), nullable=False),
    sa.Column('deleted', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['stream_id'], ['live_streams.id'], name=op.f('fk_live_chat_messages_stream_id_live_streams'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_live_chat_messages_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_live_chat_messages'))
    )
    op.create_index('ix_live_chat_messages_stream_id', 'live_chat_messages', ['stream_id', 'id'])


def downgrade() -> None:
    op.drop_index('ix_live_chat_messages_stream_id', table_name='live_chat_messages')
    op.drop_table('live_chat_messages')
    op.drop_index('uq_live_emotes_channel_name', table_name='live_emotes')
    op.drop_table('live_emotes')
    op.drop_table('live_chat_bans')
    op.drop_table('live_moderators')
    op.drop_index('ix_live_streams_status_started', table_name='live_streams')
    op.drop_index('ix_live_streams_owner_created', table_name='live_streams')
    op.drop_table('live_streams')
