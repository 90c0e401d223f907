"""Comments: one level of replies, cursor pages, deletes that keep the counters exact.

Rules:
- Text is 1-1,000 characters after stripping whitespace; it is stored as typed (escaping is the
  renderer's job).
- A reply's ``parent_id`` must name a comment on the same video. Replying to a reply attaches
  the new comment to that reply's top-level comment (one level, as on TikTok); the author of
  the comment that was replied to is the one notified ("reply").
- Comments switched off by the owner: nobody can comment (403 ``comments_disabled``); existing
  comments stay listed.
- A user blocked by (or blocking) the creator does not see the video at all (404); replying to
  a comment whose author blocked you is 403.
- Top-level comments are listed newest first; replies oldest first (read as a conversation).
  Comments by users blocked with the viewer are left out of both lists.
- The author or the video's owner may delete a comment; deleting a top-level comment deletes its
  replies. ``videos.comment_count`` counts comments and replies; ``comments.reply_count`` counts
  a comment's replies. The parent row is locked before a delete counts its replies and a reply
  locks its parent with the reply_count increment, so a concurrent reply is either counted and
  deleted or refused.
- Notifications: "comment" to the video's owner, "reply" to the replied-to author, "mention" to
  each @mentioned existing user (not blocked with the author either way; one notification per
  user per comment, whoever already got a comment/reply notification is not mentioned again).
"""

from __future__ import annotations

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.errors import Forbidden, NotFound, ValidationFailed
from clipfeed.media import service as media
from clipfeed.pagination import decode_cursor, encode_cursor
from clipfeed.social import graph, notifications
from clipfeed.social.interactions import bump, record_event, visible_video
from clipfeed.social.models import Comment
from clipfeed.social.text import parse_mentions

MAX_COMMENT = 1000


def validate_text(text: str | None) -> str:
    text = (text or "").strip()
    if not text:
        raise ValidationFailed("text is empty", field="text")
    if len(text) > MAX_COMMENT:
        raise ValidationFailed(f"text is longer than {MAX_COMMENT} characters", field="text")
    return text


def author_out(user_id: str, handle: str, display_name: str) -> dict:
    return {"id": user_id, "handle": handle, "display_name": display_name}


def comment_out(comment: Comment, author: User | dict) -> dict:
    if isinstance(author, User):
        author = author_out(author.id, author.handle, author.display_name)
    return {
        "id": comment.id,
        "video_id": comment.video_id,
        "parent_id": comment.parent_id,
        "text": comment.text,
        "reply_count": comment.reply_count or 0,
        "created_at": comment.created_at.isoformat(),
        "author": author,
    }


async def create_comment(session: AsyncSession, video_id: str, author: User, *, text: str | None,
                         parent_id: str | None) -> dict:
    video = await visible_video(session, video_id, author)
    text = validate_text(text)
    if not video.comments_enabled:
        raise Forbidden("the creator turned comments off for this video", code="comments_disabled")
    replied_to: Comment | None = None
    top_id: str | None = None
    if parent_id:
        replied_to = await session.get(Comment, parent_id)
        if replied_to is None or replied_to.video_id != video.id:
            raise ValidationFailed("parent_id does not name a comment on this video", field="parent_id")
        if await graph.is_blocked(session, author.id, replied_to.author_id):
            raise Forbidden("you can't reply to this comment", code="blocked")
        top_id = replied_to.parent_id or replied_to.id
        # Locks the parent row: a concurrent delete either runs first (then this finds nothing)
        # or waits and counts this reply.
        locked = await session.scalar(
            update(Comment).where(Comment.id == top_id, Comment.parent_id.is_(None))
            .values(reply_count=Comment.reply_count + 1).returning(Comment.id)
            .execution_options(synchronize_session=False))
        if locked is None:
            raise ValidationFailed("the comment you replied to was deleted", field="parent_id")
    comment = Comment(video_id=video.id, author_id=author.id, parent_id=top_id, text=text, reply_count=0)
    session.add(comment)
    await session.flush()
    await bump(session, video.id, "comment_count", 1)
    record_event(session, "comment", video, author)

    snippet = text[:120]
    notified = {author.id}
    if video.owner_id not in notified:
        await notifications.notify(session, video.owner_id, "comment", actor_id=author.id, video_id=video.id,
                                   comment_id=comment.id, text=snippet)
        notified.add(video.owner_id)
    if replied_to is not None and replied_to.author_id not in notified:
        await notifications.notify(session, replied_to.author_id, "reply", actor_id=author.id,
                                   video_id=video.id, comment_id=comment.id, text=snippet)
        notified.add(replied_to.author_id)
    await notify_mentions(session, text, author, video_id=video.id, comment_id=comment.id, skip=notified,
                          audience=video)
    return comment_out(comment, author)


async def notify_mentions(session: AsyncSession, text: str, author: User, *, video_id: str | None,
                          comment_id: str | None = None, skip: set[str] = frozenset(),
                          audience=None) -> list[str]:
    """Send "mention" to every existing @handle in text that is not blocked with the author.
    ``audience`` (a video): only users who may see it are told about it. Returns the ids notified."""
    handles = parse_mentions(text)
    if not handles:
        return []
    users = (await session.scalars(select(User).where(
        User.handle.in_(handles), ~graph.blocked_clause(author.id, User.id)))).all()
    sent = []
    for user in users:
        if user.id in skip or user.id == author.id:
            continue
        if audience is not None and not await media.can_view(session, audience, user):
            continue
        await notifications.notify(session, user.id, "mention", actor_id=author.id, video_id=video_id,
                                   comment_id=comment_id, text=text[:120])
        sent.append(user.id)
    return sent


def _not_blocked_with(viewer: User | None):
    return None if viewer is None else ~graph.blocked_clause(viewer.id, Comment.author_id)


async def _page(session: AsyncSession, query, viewer: User | None, *, limit: int, cursor: str | None,
                newest_first: bool) -> tuple[list[dict], str | None]:
    query = query.join(User, User.id == Comment.author_id)
    hidden = _not_blocked_with(viewer)
    if hidden is not None:
        query = query.where(hidden)
    if cursor:
        created, last_id = decode_cursor(cursor)
        if newest_first:
            query = query.where(or_(Comment.created_at < created,
                                    and_(Comment.created_at == created, Comment.id < last_id)))
        else:
            query = query.where(or_(Comment.created_at > created,
                                    and_(Comment.created_at == created, Comment.id > last_id)))
    order = (Comment.created_at.desc(), Comment.id.desc()) if newest_first else (Comment.created_at, Comment.id)
    rows = (await session.execute(query.order_by(*order).limit(limit + 1))).all()
    items = [comment_out(c, author_out(c.author_id, handle, name)) for c, handle, name in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1][0]
        next_cursor = encode_cursor(last.created_at, last.id)
    return items, next_cursor


async def list_comments(session: AsyncSession, video_id: str, viewer: User | None, *, limit: int,
                        cursor: str | None) -> tuple[list[dict], str | None]:
    video = await visible_video(session, video_id, viewer)
    query = select(Comment, User.handle, User.display_name).where(
        Comment.video_id == video.id, Comment.parent_id.is_(None))
    return await _page(session, query, viewer, limit=limit, cursor=cursor, newest_first=True)


async def list_replies(session: AsyncSession, comment_id: str, viewer: User | None, *, limit: int,
                       cursor: str | None) -> tuple[list[dict], str | None]:
    comment = await session.get(Comment, comment_id)
    if comment is None:
        raise NotFound("comment not found")
    await visible_video(session, comment.video_id, viewer)
    query = select(Comment, User.handle, User.display_name).where(Comment.parent_id == comment.id)
    return await _page(session, query, viewer, limit=limit, cursor=cursor, newest_first=False)


async def delete_comment(session: AsyncSession, comment_id: str, user: User) -> None:
    comment = await session.get(Comment, comment_id)
    if comment is None:
        raise NotFound("comment not found")
    video = await visible_video(session, comment.video_id, user)
    if user.id not in (comment.author_id, video.owner_id):
        raise Forbidden("only the comment's author or the video's creator can delete it")
    # Lock the thread top-down (top-level comment first, so two deletes cannot deadlock) on
    # PostgreSQL; SQLite transactions are serialized already. Then count what goes.
    for row_id in ([comment.parent_id] if comment.parent_id else []) + [comment.id]:
        locked = await session.scalar(select(Comment.id).where(Comment.id == row_id).with_for_update())
        if locked is None:
            raise NotFound("comment not found")
    removed_replies = 0
    if comment.parent_id is None:
        removed_replies = len((await session.scalars(
            delete(Comment).where(Comment.parent_id == comment.id).returning(Comment.id)
            .execution_options(synchronize_session=False))).all())
    else:
        await session.execute(update(Comment).where(Comment.id == comment.parent_id)
                              .values(reply_count=Comment.reply_count - 1)
                              .execution_options(synchronize_session=False))
    gone = await session.scalar(delete(Comment).where(Comment.id == comment.id).returning(Comment.id)
                                .execution_options(synchronize_session=False))
    if gone is None:
        raise NotFound("comment not found")
    await bump(session, video.id, "comment_count", -(1 + removed_replies))
    session.expunge(comment)
