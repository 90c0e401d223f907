"""Imports every domain's tables so Base.metadata (and Alembic) sees the whole schema."""

from clipfeed.accounts import models as accounts_models  # noqa: F401
from clipfeed.media import models as media_models  # noqa: F401
from clipfeed.social import models as social_models  # noqa: F401
from clipfeed.feed import models as feed_models  # noqa: F401
from clipfeed.live import models as live_models  # noqa: F401
