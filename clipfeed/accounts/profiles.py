"""Profile edits: display name, bio, region and interests. Text is stored as given (trimmed,
checked for length and control characters) and never interpreted: clients render it as text."""

from __future__ import annotations

import unicodedata

from sqlalchemy.ext.asyncio import AsyncSession

from clipfeed.accounts.models import User
from clipfeed.errors import ValidationFailed

MAX_DISPLAY_NAME = 64
MAX_BIO = 280
MAX_INTERESTS = 10

# ISO 3166-1 alpha-2, officially assigned codes.
REGIONS = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV
BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES
ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE
IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY
MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU
NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM
SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE
VG VI VN VU WF WS YE YT ZA ZM ZW
""".split())


def _check_text(value: str, field: str, limit: int, *, multiline: bool) -> str:
    value = value.strip()
    if len(value) > limit:
        raise ValidationFailed(f"{field} is longer than {limit} characters", field=field)
    allowed = {"\n", "\t"} if multiline else set()
    if any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in value):
        raise ValidationFailed(f"{field} contains control characters", field=field)
    return value


def normalize_region(region: str | None) -> str | None:
    if region is None or not region.strip():
        return None
    code = region.strip().upper()
    if code not in REGIONS:
        raise ValidationFailed("region must be an ISO 3166-1 alpha-2 country code (e.g. FR) or null", field="region")
    return code


def normalize_interests(interests: list[str] | None) -> list[str]:
    """Topics as stored: each a hashtag in its stored form ('#' optional), duplicates dropped,
    order kept, at most MAX_INTERESTS; a value that is not a hashtag is refused by name."""
    from clipfeed.social.text import normalize_tag

    out: list[str] = []
    for raw in interests or []:
        tag = normalize_tag(raw) if isinstance(raw, str) else None
        if tag is None:
            raise ValidationFailed(f"interest {str(raw)[:40]!r} is not a hashtag (letters, digits, _; not only digits)",
                                   field="interests")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_INTERESTS:
        raise ValidationFailed(f"at most {MAX_INTERESTS} interests", field="interests")
    return out


async def update_profile(session: AsyncSession, user: User, changes: dict) -> User:
    """Apply the given fields (keys present in `changes`: display_name, bio, region, interests)."""
    if "display_name" in changes:
        name = _check_text(changes["display_name"] or "", "display_name", MAX_DISPLAY_NAME, multiline=False)
        if not name:
            raise ValidationFailed("display_name cannot be empty", field="display_name")
        user.display_name = name
    if "bio" in changes:
        user.bio = _check_text(changes["bio"] or "", "bio", MAX_BIO, multiline=True)
    if "region" in changes:
        user.region = normalize_region(changes["region"])
    if "interests" in changes:
        user.interests = normalize_interests(changes["interests"])
    await session.flush()
    return user
