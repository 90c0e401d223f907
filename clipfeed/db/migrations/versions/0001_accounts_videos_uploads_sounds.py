"""accounts, videos, uploads, sounds

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 18:37:01.879892
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('login_attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('scope', sa.String(length=80), nullable=False),
    sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_attempts'))
    )
    with op.batch_alter_table('login_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_login_attempts_scope_at', ['scope', 'attempted_at'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('handle', sa.String(length=24), nullable=False),
    sa.Column('display_name', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('birth_date', sa.Date(), nullable=True),
    sa.Column('bio', sa.String(length=280), nullable=False),
    sa.Column('region', sa.String(length=8), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('handle', name=op.f('uq_users_handle'))
    )
    op.create_table('session_tokens',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_session_tokens_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_session_tokens'))
    )
    with op.batch_alter_table('session_tokens', schema=None) as batch_op:
        batch_op.create_index('ix_session_tokens_user_id', ['user_id'], unique=False)

    op.create_table('videos',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('owner_id', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('progress', sa.Float(), nullable=False),
    sa.Column('caption', sa.Text(), nullable=False),
    sa.Column('visibility', sa.String(length=16), nullable=False),
    sa.Column('sound_id', sa.String(length=16), nullable=True),
    sa.Column('original_filename', sa.String(length=255), nullable=False),
    sa.Column('source_key', sa.String(length=255), nullable=True),
    sa.Column('source_bytes', sa.BigInteger(), nullable=False),
    sa.Column('rejection_code', sa.String(length=40), nullable=True),
    sa.Column('rejection_reason', sa.Text(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('fps', sa.Float(), nullable=True),
    sa.Column('bitrate', sa.Integer(), nullable=True),
    sa.Column('has_audio', sa.Boolean(), nullable=True),
    sa.Column('features', sa.JSON(), nullable=False),
    sa.Column('renditions', sa.JSON(), nullable=False),
    sa.Column('artifacts', sa.JSON(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_videos_owner_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_videos'))
    )
    with op.batch_alter_table('videos', schema=None) as batch_op:
        batch_op.create_index('ix_videos_owner_created', ['owner_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_videos_status_heartbeat', ['status', 'heartbeat_at'], unique=False)

    op.create_table('sounds',
    sa.Column('id', sa.String(length=16), nullable=False),
    sa.Column('owner_id', sa.String(length=16), nullable=False),
    sa.Column('source_video_id', sa.String(length=16), nullable=True),
    sa.Column('title', sa.String(length=120), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('blob_key', sa.String(length=255), nullable=False),
    sa.Column('use_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_sounds_owner_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['source_video_id'], ['videos.id'], name=op.f('fk_sounds_source_video_id_videos'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sounds')),
    sa.UniqueConstraint('source_video_id', name=op.f('uq_sounds_source_video_id'))
    )
    op.create_table('uploads',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('video_id', sa.String(length=16), nullable=False),
    sa.Column('owner_id', sa.String(length=16), nullable=False),
    sa.Column('length', sa.BigInteger(), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('blob_key', sa.String(length=255), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('lock_token', sa.String(length=32), nullable=True),
    sa.Column('lock_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], name=op.f('fk_uploads_owner_id_users'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['video_id'], ['videos.id'], name=op.f('fk_uploads_video_id_videos'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_uploads'))
    )
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.create_index('ix_uploads_expires_at', ['expires_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.drop_index('ix_uploads_expires_at')

    op.drop_table('uploads')
    op.drop_table('sounds')
    with op.batch_alter_table('videos', schema=None) as batch_op:
        batch_op.drop_index('ix_videos_status_heartbeat')
        batch_op.drop_index('ix_videos_owner_created')

    op.drop_table('videos')
    with op.batch_alter_table('session_tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_session_tokens_user_id')

    op.drop_table('session_tokens')
    op.drop_table('users')
    with op.batch_alter_table('login_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_login_attempts_scope_at')

    op.drop_table('login_attempts')
