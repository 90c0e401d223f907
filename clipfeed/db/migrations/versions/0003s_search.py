"""search indexes (SQLite FTS5 / PostgreSQL tsvector + pg_trgm), kept in sync by triggers;
videos (owner_id, published_at, id) index for the Following feed

Only ready, public videos are indexed: a document appears when a video becomes ready and public,
follows caption / hashtag / sound / handle changes and disappears when the video is hidden or
deleted, all inside the transaction that made the change (no job, no lag).

Revision ID: 0003s
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003s'
down_revision = '0002'
branch_labels = None
depends_on = None

FTS_OPTIONS = "tokenize='unicode61 remove_diacritics 2', prefix='2 3'"

# ---------------------------------------------------------------------------------------------
# SQLite: a plain documents table per index, an external-content FTS5 table over it and an
# fts5vocab view of its terms (prefix checks and typo candidates).
# ---------------------------------------------------------------------------------------------

SQLITE_VIDEO_DOC_SELECT = """
SELECT v.id, v.owner_id, s.id, v.caption,
       COALESCE((SELECT group_concat(h.tag, ' ') FROM video_hashtags vh
                 JOIN hashtags h ON h.id = vh.hashtag_id WHERE vh.video_id = v.id), ''),
       COALESCE(s.title, ''), COALESCE(u.handle, '')
FROM videos v
LEFT JOIN users u ON u.id = v.owner_id
LEFT JOIN sounds s ON s.id = COALESCE(v.sound_id, json_extract(v.artifacts, '$.sound_id'))
WHERE v.status = 'ready' AND v.visibility = 'public'
"""

SQLITE_VIDEO_DOC_INSERT = ("INSERT INTO search_video_docs(video_id, owner_id, sound_id, caption, hashtags, sound, creator) "
                           + SQLITE_VIDEO_DOC_SELECT)

SQLITE_HASHTAGS_OF = ("COALESCE((SELECT group_concat(h.tag, ' ') FROM video_hashtags vh "
                      "JOIN hashtags h ON h.id = vh.hashtag_id WHERE vh.video_id = {vid}), '')")

SQLITE_UP = [
    """CREATE TABLE search_video_docs (
        doc_id INTEGER PRIMARY KEY,
        video_id VARCHAR(16) NOT NULL UNIQUE,
        owner_id VARCHAR(16) NOT NULL,
        sound_id VARCHAR(16),
        caption TEXT NOT NULL DEFAULT '',
        hashtags TEXT NOT NULL DEFAULT '',
        sound TEXT NOT NULL DEFAULT '',
        creator TEXT NOT NULL DEFAULT '')""",
    "CREATE INDEX ix_search_video_docs_owner ON search_video_docs(owner_id)",
    "CREATE INDEX ix_search_video_docs_sound ON search_video_docs(sound_id)",
    f"""CREATE VIRTUAL TABLE search_videos_fts USING fts5(caption, hashtags, sound, creator,
        content='search_video_docs', content_rowid='doc_id', {FTS_OPTIONS})""",
    "CREATE VIRTUAL TABLE search_videos_vocab USING fts5vocab(search_videos_fts, row)",
    # Column weights for bm25 (hashtags count most, then the creator's handle).
    "INSERT INTO search_videos_fts(search_videos_fts, rank) VALUES ('rank', 'bm25(1.0, 2.0, 0.8, 1.5)')",
    """CREATE TRIGGER search_video_docs_ai AFTER INSERT ON search_video_docs BEGIN
        INSERT INTO search_videos_fts(rowid, caption, hashtags, sound, creator)
        VALUES (new.doc_id, new.caption, new.hashtags, new.sound, new.creator);
    END""",
    """CREATE TRIGGER search_video_docs_ad AFTER DELETE ON search_video_docs BEGIN
        INSERT INTO search_videos_fts(search_videos_fts, rowid, caption, hashtags, sound, creator)
        VALUES ('delete', old.doc_id, old.caption, old.hashtags, old.sound, old.creator);
    END""",
    """CREATE TRIGGER search_video_docs_au AFTER UPDATE ON search_video_docs BEGIN
        INSERT INTO search_videos_fts(search_videos_fts, rowid, caption, hashtags, sound, creator)
        VALUES ('delete', old.doc_id, old.caption, old.hashtags, old.sound, old.creator);
        INSERT INTO search_videos_fts(rowid, caption, hashtags, sound, creator)
        VALUES (new.doc_id, new.caption, new.hashtags, new.sound, new.creator);
    END""",
    # Source tables -> documents.
    f"""CREATE TRIGGER search_videos_ai AFTER INSERT ON videos
        WHEN new.status = 'ready' AND new.visibility = 'public' BEGIN
        {SQLITE_VIDEO_DOC_INSERT} AND v.id = new.id;
    END""",
    f"""CREATE TRIGGER search_videos_au AFTER UPDATE OF status, visibility, caption, sound_id, owner_id, artifacts ON videos
        WHEN old.status IS NOT new.status OR old.visibility IS NOT new.visibility OR old.caption IS NOT new.caption
          OR old.sound_id IS NOT new.sound_id OR old.owner_id IS NOT new.owner_id
          OR json_extract(old.artifacts, '$.sound_id') IS NOT json_extract(new.artifacts, '$.sound_id') BEGIN
        DELETE FROM search_video_docs WHERE video_id = new.id;
        {SQLITE_VIDEO_DOC_INSERT} AND v.id = new.id;
    END""",
    """CREATE TRIGGER search_videos_ad AFTER DELETE ON videos BEGIN
        DELETE FROM search_video_docs WHERE video_id = old.id;
    END""",
    f"""CREATE TRIGGER search_video_hashtags_ai AFTER INSERT ON video_hashtags BEGIN
        UPDATE search_video_docs SET hashtags = {SQLITE_HASHTAGS_OF.format(vid='new.video_id')}
        WHERE video_id = new.video_id;
    END""",
    f"""CREATE TRIGGER search_video_hashtags_ad AFTER DELETE ON video_hashtags BEGIN
        UPDATE search_video_docs SET hashtags = {SQLITE_HASHTAGS_OF.format(vid='old.video_id')}
        WHERE video_id = old.video_id;
    END""",
    """CREATE TRIGGER search_sounds_au AFTER UPDATE OF title ON sounds WHEN old.title IS NOT new.title BEGIN
        UPDATE search_video_docs SET sound = new.title WHERE sound_id = new.id;
    END""",
    """CREATE TRIGGER search_sounds_ad AFTER DELETE ON sounds BEGIN
        UPDATE search_video_docs SET sound = '', sound_id = NULL WHERE sound_id = old.id;
    END""",
    # Users.
    """CREATE TABLE search_user_docs (
        doc_id INTEGER PRIMARY KEY,
        user_id VARCHAR(16) NOT NULL UNIQUE,
        handle TEXT NOT NULL DEFAULT '',
        handle_compact TEXT NOT NULL DEFAULT '',
        display_name TEXT NOT NULL DEFAULT '')""",
    f"""CREATE VIRTUAL TABLE search_users_fts USING fts5(handle, handle_compact, display_name,
        content='search_user_docs', content_rowid='doc_id', {FTS_OPTIONS})""",
    "CREATE VIRTUAL TABLE search_users_vocab USING fts5vocab(search_users_fts, row)",
    "INSERT INTO search_users_fts(search_users_fts, rank) VALUES ('rank', 'bm25(2.0, 1.5, 1.0)')",
    """CREATE TRIGGER search_user_docs_ai AFTER INSERT ON search_user_docs BEGIN
        INSERT INTO search_users_fts(rowid, handle, handle_compact, display_name)
        VALUES (new.doc_id, new.handle, new.handle_compact, new.display_name);
    END""",
    """CREATE TRIGGER search_user_docs_ad AFTER DELETE ON search_user_docs BEGIN
        INSERT INTO search_users_fts(search_users_fts, rowid, handle, handle_compact, display_name)
        VALUES ('delete', old.doc_id, old.handle, old.handle_compact, old.display_name);
    END""",
    """CREATE TRIGGER search_user_docs_au AFTER UPDATE ON search_user_docs BEGIN
        INSERT INTO search_users_fts(search_users_fts, rowid, handle, handle_compact, display_name)
        VALUES ('delete', old.doc_id, old.handle, old.handle_compact, old.display_name);
        INSERT INTO search_users_fts(rowid, handle, handle_compact, display_name)
        VALUES (new.doc_id, new.handle, new.handle_compact, new.display_name);
    END""",
    """CREATE TRIGGER search_users_ai AFTER INSERT ON users BEGIN
        INSERT INTO search_user_docs(user_id, handle, handle_compact, display_name)
        VALUES (new.id, new.handle, replace(replace(new.handle, '_', ''), '.', ''), new.display_name);
    END""",
    """CREATE TRIGGER search_users_au AFTER UPDATE OF handle, display_name ON users
        WHEN old.handle IS NOT new.handle OR old.display_name IS NOT new.display_name BEGIN
        UPDATE search_user_docs SET handle = new.handle, display_name = new.display_name,
               handle_compact = replace(replace(new.handle, '_', ''), '.', '')
        WHERE user_id = new.id;
        UPDATE search_video_docs SET creator = new.handle WHERE owner_id = new.id AND old.handle IS NOT new.handle;
    END""",
    """CREATE TRIGGER search_users_ad AFTER DELETE ON users BEGIN
        DELETE FROM search_user_docs WHERE user_id = old.id;
    END""",
    # Backfill what exists.
    SQLITE_VIDEO_DOC_INSERT,
    """INSERT INTO search_user_docs(user_id, handle, handle_compact, display_name)
       SELECT id, handle, replace(replace(handle, '_', ''), '.', ''), display_name FROM users""",
]

SQLITE_DOWN = [
    *[f"DROP TRIGGER IF EXISTS {name}" for name in (
        "search_users_ad", "search_users_au", "search_users_ai", "search_sounds_ad", "search_sounds_au",
        "search_video_hashtags_ad", "search_video_hashtags_ai", "search_videos_ad", "search_videos_au",
        "search_videos_ai")],
    "DROP TABLE IF EXISTS search_users_vocab",
    "DROP TABLE IF EXISTS search_users_fts",
    "DROP TABLE IF EXISTS search_user_docs",
    "DROP TABLE IF EXISTS search_videos_vocab",
    "DROP TABLE IF EXISTS search_videos_fts",
    "DROP TABLE IF EXISTS search_video_docs",
]

# ---------------------------------------------------------------------------------------------
# PostgreSQL: documents tables with a weighted tsvector (GIN), a vocabulary of their terms with a
# trigram index (typo candidates), plpgsql triggers. pg_trgm lives in `public` and is always
# referenced schema-qualified, so a deployment confined to its own schema (search_path) works.
# ---------------------------------------------------------------------------------------------

PG_VIDEO_DOC_INSERT = """
INSERT INTO search_video_docs(video_id, owner_id, sound_id, caption, hashtags, sound, creator)
SELECT v.id, v.owner_id, s.id, v.caption,
       COALESCE((SELECT string_agg(h.tag, ' ') FROM video_hashtags vh
                 JOIN hashtags h ON h.id = vh.hashtag_id WHERE vh.video_id = v.id), ''),
       COALESCE(s.title, ''), COALESCE(u.handle, '')
FROM videos v
LEFT JOIN users u ON u.id = v.owner_id
LEFT JOIN sounds s ON s.id = COALESCE(v.sound_id, v.artifacts->>'sound_id')
WHERE v.status = 'ready' AND v.visibility = 'public'
"""

PG_UP = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public",
    """CREATE TABLE search_video_docs (
        video_id VARCHAR(16) PRIMARY KEY,
        doc_id BIGINT GENERATED ALWAYS AS IDENTITY,
        owner_id VARCHAR(16) NOT NULL,
        sound_id VARCHAR(16),
        caption TEXT NOT NULL DEFAULT '',
        hashtags TEXT NOT NULL DEFAULT '',
        sound TEXT NOT NULL DEFAULT '',
        creator TEXT NOT NULL DEFAULT '',
        document TSVECTOR NOT NULL)""",
    "CREATE INDEX ix_search_video_docs_document ON search_video_docs USING gin (document)",
    "CREATE INDEX ix_search_video_docs_owner ON search_video_docs (owner_id)",
    "CREATE INDEX ix_search_video_docs_sound ON search_video_docs (sound_id)",
    "CREATE INDEX ix_search_video_docs_doc_id ON search_video_docs (doc_id)",
    """CREATE TABLE search_user_docs (
        user_id VARCHAR(16) PRIMARY KEY,
        handle TEXT NOT NULL DEFAULT '',
        display_name TEXT NOT NULL DEFAULT '',
        document TSVECTOR NOT NULL)""",
    "CREATE INDEX ix_search_user_docs_document ON search_user_docs USING gin (document)",
    # scope: 'v' (video documents) or 'u' (users). Terms are added by the documents' triggers and
    # pruned by a daily job (a stale term only costs a missed typo correction).
    """CREATE TABLE search_terms (
        scope CHAR(1) NOT NULL,
        term TEXT COLLATE "C" NOT NULL,
        PRIMARY KEY (scope, term))""",
    "CREATE INDEX ix_search_terms_trgm ON search_terms USING gin (term public.gin_trgm_ops)",
    # ASCII punctuation becomes space before PostgreSQL's parser sees the text, so words split as
    # in SQLite's unicode61 tokenizer (the parser would otherwise drop "<tag>"s and keep
    # e-mails, hosts and paths whole).
    r"""CREATE FUNCTION search_words(t TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
        SELECT regexp_replace(t, '[!-/:-@\[-`{-~]+', ' ', 'g') $$""",
    """CREATE FUNCTION search_video_docs_tsv() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.document := setweight(to_tsvector('simple', search_words(NEW.hashtags)), 'A')
                     || setweight(to_tsvector('simple', search_words(NEW.creator)), 'B')
                     || setweight(to_tsvector('simple', search_words(NEW.caption)), 'B')
                     || setweight(to_tsvector('simple', search_words(NEW.sound)), 'C');
        INSERT INTO search_terms(scope, term)
        SELECT 'v', lexeme FROM unnest(NEW.document)
        WHERE length(lexeme) BETWEEN 3 AND 40 ORDER BY lexeme
        ON CONFLICT DO NOTHING;
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER search_video_docs_tsv BEFORE INSERT OR UPDATE ON search_video_docs
        FOR EACH ROW EXECUTE FUNCTION search_video_docs_tsv()""",
    """CREATE FUNCTION search_user_docs_tsv() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.document := setweight(to_tsvector('simple', search_words(NEW.handle)), 'A')
                     || setweight(to_tsvector('simple', replace(replace(NEW.handle, '_', ''), '.', '')), 'A')
                     || setweight(to_tsvector('simple', search_words(NEW.display_name)), 'B');
        INSERT INTO search_terms(scope, term)
        SELECT 'u', lexeme FROM unnest(NEW.document)
        WHERE length(lexeme) BETWEEN 3 AND 40 ORDER BY lexeme
        ON CONFLICT DO NOTHING;
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER search_user_docs_tsv BEFORE INSERT OR UPDATE ON search_user_docs
        FOR EACH ROW EXECUTE FUNCTION search_user_docs_tsv()""",
    f"""CREATE FUNCTION search_refresh_video(vid VARCHAR) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        DELETE FROM search_video_docs WHERE video_id = vid;
        {PG_VIDEO_DOC_INSERT} AND v.id = vid;
    END $$""",
    """CREATE FUNCTION search_videos_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            DELETE FROM search_video_docs WHERE video_id = OLD.id;
            RETURN OLD;
        END IF;
        PERFORM search_refresh_video(NEW.id);
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER search_videos_ai AFTER INSERT ON videos FOR EACH ROW
        WHEN (NEW.status = 'ready' AND NEW.visibility = 'public')
        EXECUTE FUNCTION search_videos_changed()""",
    """CREATE TRIGGER search_videos_au AFTER UPDATE OF status, visibility, caption, sound_id, owner_id, artifacts
        ON videos FOR EACH ROW
        WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.visibility IS DISTINCT FROM NEW.visibility
              OR OLD.caption IS DISTINCT FROM NEW.caption OR OLD.sound_id IS DISTINCT FROM NEW.sound_id
              OR OLD.owner_id IS DISTINCT FROM NEW.owner_id
              OR (OLD.artifacts->>'sound_id') IS DISTINCT FROM (NEW.artifacts->>'sound_id'))
        EXECUTE FUNCTION search_videos_changed()""",
    """CREATE TRIGGER search_videos_ad AFTER DELETE ON videos FOR EACH ROW
        EXECUTE FUNCTION search_videos_changed()""",
    """CREATE FUNCTION search_video_hashtags_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE vid VARCHAR;
    BEGIN
        IF TG_OP = 'DELETE' THEN vid := OLD.video_id; ELSE vid := NEW.video_id; END IF;
        UPDATE search_video_docs SET hashtags = COALESCE((SELECT string_agg(h.tag, ' ') FROM video_hashtags vh
               JOIN hashtags h ON h.id = vh.hashtag_id WHERE vh.video_id = vid), '')
        WHERE video_id = vid;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER search_video_hashtags_aid AFTER INSERT OR DELETE ON video_hashtags FOR EACH ROW
        EXECUTE FUNCTION search_video_hashtags_changed()""",
    """CREATE FUNCTION search_sounds_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            UPDATE search_video_docs SET sound = '', sound_id = NULL WHERE sound_id = OLD.id;
        ELSE
            UPDATE search_video_docs SET sound = NEW.title WHERE sound_id = NEW.id;
        END IF;
        RETURN NULL;
    END $$""",
    """CREATE TRIGGER search_sounds_au AFTER UPDATE OF title ON sounds FOR EACH ROW
        WHEN (OLD.title IS DISTINCT FROM NEW.title) EXECUTE FUNCTION search_sounds_changed()""",
    """CREATE TRIGGER search_sounds_ad AFTER DELETE ON sounds FOR EACH ROW
        EXECUTE FUNCTION search_sounds_changed()""",
    """CREATE FUNCTION search_users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'DELETE' THEN
            DELETE FROM search_user_docs WHERE user_id = OLD.id;
            RETURN OLD;
        ELSIF TG_OP = 'INSERT' THEN
            INSERT INTO search_user_docs(user_id, handle, display_name) VALUES (NEW.id, NEW.handle, NEW.display_name);
        ELSE
            UPDATE search_user_docs SET handle = NEW.handle, display_name = NEW.display_name WHERE user_id = NEW.id;
            IF OLD.handle IS DISTINCT FROM NEW.handle THEN
                UPDATE search_video_docs SET creator = NEW.handle WHERE owner_id = NEW.id;
            END IF;
        END IF;
        RETURN NEW;
    END $$""",
    """CREATE TRIGGER search_users_ai AFTER INSERT ON users FOR EACH ROW EXECUTE FUNCTION search_users_changed()""",
    """CREATE TRIGGER search_users_au AFTER UPDATE OF handle, display_name ON users FOR EACH ROW
        WHEN (OLD.handle IS DISTINCT FROM NEW.handle OR OLD.display_name IS DISTINCT FROM NEW.display_name)
        EXECUTE FUNCTION search_users_changed()""",
    """CREATE TRIGGER search_users_ad AFTER DELETE ON users FOR EACH ROW EXECUTE FUNCTION search_users_changed()""",
    PG_VIDEO_DOC_INSERT,
    "INSERT INTO search_user_docs(user_id, handle, display_name) SELECT id, handle, display_name FROM users",
]

PG_DOWN = [
    "DROP TRIGGER IF EXISTS search_users_ad ON users",
    "DROP TRIGGER IF EXISTS search_users_au ON users",
    "DROP TRIGGER IF EXISTS search_users_ai ON users",
    "DROP TRIGGER IF EXISTS search_sounds_ad ON sounds",
    "DROP TRIGGER IF EXISTS search_sounds_au ON sounds",
    "DROP TRIGGER IF EXISTS search_video_hashtags_aid ON video_hashtags",
    "DROP TRIGGER IF EXISTS search_videos_ad ON videos",
    "DROP TRIGGER IF EXISTS search_videos_au ON videos",
    "DROP TRIGGER IF EXISTS search_videos_ai ON videos",
    "DROP FUNCTION IF EXISTS search_users_changed()",
    "DROP FUNCTION IF EXISTS search_sounds_changed()",
    "DROP FUNCTION IF EXISTS search_video_hashtags_changed()",
    "DROP FUNCTION IF EXISTS search_videos_changed()",
    "DROP FUNCTION IF EXISTS search_refresh_video(VARCHAR)",
    "DROP TABLE IF EXISTS search_terms",
    "DROP TABLE IF EXISTS search_user_docs",
    "DROP TABLE IF EXISTS search_video_docs",
    "DROP FUNCTION IF EXISTS search_user_docs_tsv()",
    "DROP FUNCTION IF EXISTS search_video_docs_tsv()",
    "DROP FUNCTION IF EXISTS search_words(TEXT)",
    # pg_trgm stays: other schemas of the same database may use it.
]


def _check_pg_trgm_schema() -> None:
    schema = op.get_bind().execute(sa.text(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname = 'pg_trgm'")).scalar()
    if schema is not None and schema != "public":
        raise RuntimeError(f"pg_trgm is installed in schema {schema!r}; clipfeed expects it in 'public' "
                           "(ALTER EXTENSION pg_trgm SET SCHEMA public)")


def upgrade() -> None:
    with op.batch_alter_table('videos', schema=None) as batch_op:
        batch_op.create_index('ix_videos_owner_published', ['owner_id', 'published_at', 'id'], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        _check_pg_trgm_schema()
        statements = PG_UP
    else:
        statements = SQLITE_UP
    for statement in statements:
        op.execute(sa.text(statement))


def downgrade() -> None:
    statements = PG_DOWN if op.get_bind().dialect.name == "postgresql" else SQLITE_DOWN
    for statement in statements:
        op.execute(sa.text(statement))
    with op.batch_alter_table('videos', schema=None) as batch_op:
        batch_op.drop_index('ix_videos_owner_published')
