"""Users' time zones: IANA names checked with `zoneinfo`, and the zones offered as buttons in /settings.

Zone data comes from the system (Debian's `tzdata`, priority required, is in every installation) through
`zoneinfo`. UTC never depends on it: a user without a zone (everyone before zones existed) keeps UTC even on a
system whose zone data is missing.
"""

from __future__ import annotations

import functools
from datetime import UTC, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

DEFAULT_ZONE = "UTC"
#: Offered as buttons; any other IANA name works through `/settings tz <name>`.
COMMON_ZONES = (
    "UTC", "Europe/London", "Europe/Berlin", "Europe/Moscow", "Asia/Dubai", "Asia/Kolkata", "Asia/Singapore",
    "Asia/Tokyo", "Australia/Sydney", "America/New_York", "America/Chicago", "America/Los_Angeles",
    "America/Sao_Paulo",
)
MAX_NAME = 64  # the longest IANA name is 32 characters


class UnknownZone(ValueError):
    """The text names no IANA time zone."""


def zone(name: str | None) -> tzinfo:
    """The zone of a stored name; UTC for none (or one this system no longer knows, rather than no summary)."""
    if not name or name == DEFAULT_ZONE:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return UTC


def canonical(text: str) -> str:
    """The IANA name the user meant ("europe/berlin" → "Europe/Berlin"); `UnknownZone` when there is none."""
    name = text.strip()
    if not name or len(name) > MAX_NAME:
        raise UnknownZone(name)
    if name.upper() in ("UTC", "GMT", "Z"):
        return DEFAULT_ZONE
    # Only listed zones: a bare lookup would also open "Europe" (a folder) or "zone.tab" (not a zone file).
    exact = _by_lower().get(name.lower())
    if exact is None:
        raise UnknownZone(name)
    return exact


@functools.cache
def _by_lower() -> dict[str, str]:
    return {name.lower(): name for name in available_timezones()}
