"""/settings use-cases: fill-alert mode per strategy, the daily summary, and alerts on trades Strata did not make,
without Telegram.

Pauses, errors and key problems are not configurable: they always go out, with sound. Alerts on trades Strata did
not make (`bot.engine.foreign`: someone else using the key, or the user trading by hand) are on by default; a user
who trades by hand on the same account may turn them off. The summary hour is the
user's local hour in their time zone (`tz`, an IANA name); a user without one — everyone who chose an hour
before zones existed, when hours were UTC — is in UTC, so their summary keeps its time. Every change is audited
("settings", with the new value in our words).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.services.audit import AuditLog
from bot.services.errors import UserError
from bot.strategies.naming import title
from bot.timezones import DEFAULT_ZONE, UnknownZone, canonical
from bot.timezones import zone as zone_of
from storage.foreign_trades import SETTING as FOREIGN_SETTING
from storage.models import from_iso

ALERT_MODES = ("on", "silent", "off")
DEFAULT_SUMMARY_HOUR = 8
MAX_ID = 2**63 - 1  # SQLite's INTEGER range


@dataclass(frozen=True)
class StrategyAlerts:
    id: int
    title: str
    alerts: str


@dataclass(frozen=True)
class UserSettings:
    strategies: tuple[StrategyAlerts, ...]
    summary: bool
    summary_hour: int  # local, in `timezone`
    timezone: str  # IANA name
    summary_chart: bool = False  # the summary comes with the chart of the largest running strategy (/chart)
    foreign_alerts: bool = True  # an alert for each burst of trades on a connected account Strata did not make


class SettingsService:
    def __init__(self, store) -> None:
        self._store = store
        self._audit = AuditLog(store)

    async def get(self, user_id: int) -> UserSettings:
        user = await self._store.users.get(user_id)
        settings = user.settings if user else {}
        strategies = await self._store.strategies.list_for_user(user_id, ("active", "paused", "finished"))
        return UserSettings(
            strategies=tuple(
                StrategyAlerts(s.id, title(s), s.alerts)
                for s in strategies
            ),
            summary=bool(settings.get("summary", False)),
            summary_hour=int(settings.get("summary_hour", DEFAULT_SUMMARY_HOUR)),
            timezone=settings.get("tz") or DEFAULT_ZONE,
            summary_chart=bool(settings.get("summary_chart", False)),
            foreign_alerts=bool(settings.get(FOREIGN_SETTING, True)),
        )

    async def set_alerts(self, user_id: int, strategy_id: int, mode: str) -> UserSettings:
        target = f"fill alerts of strategy #{strategy_id}" if 0 < strategy_id <= MAX_ID else "fill alerts"
        async with self._audit.attempt("settings", actor_id=user_id, user_id=user_id, target=target) as attempt:
            if mode not in ALERT_MODES:
                raise UserError("Fill alerts are on, silent or off.", reason="not a mode")
            if not 0 < strategy_id <= MAX_ID:  # SQLite refuses a larger integer with OverflowError
                raise UserError("No such strategy. See /status for yours.", reason="no such strategy")
            if not await self._store.strategies.set_alerts(user_id, strategy_id, mode):
                raise UserError("No such strategy. See /status for yours.", reason="no such strategy")
            await attempt.done(detail=mode)
        return await self.get(user_id)

    async def set_summary(
        self, user_id: int, *, enabled: bool | None = None, hour: int | None = None, chart: bool | None = None
    ) -> UserSettings:
        """Turn the daily summary on or off, set its local hour, and whether a chart comes with it."""
        async with self._audit.attempt(
            "settings", actor_id=user_id, user_id=user_id, target="daily summary"
        ) as attempt:
            await self._set_summary(user_id, enabled, hour, chart)
            words = [] if enabled is None else ["on" if enabled else "off"]
            words += [] if hour is None else [f"at {hour}:00 local time"]
            words += [] if chart is None else [f"chart {'on' if chart else 'off'}"]
            await attempt.done(detail=", ".join(words))
        return await self.get(user_id)

    async def _set_summary(self, user_id: int, enabled: bool | None, hour: int | None, chart: bool | None) -> None:
        user = await self._store.users.get(user_id)
        if user is None:
            raise UserError("Send /start first.", reason="not started")
        changes: dict = {}
        if enabled is not None:
            if enabled and not user.settings.get("summary"):
                # Turned on again: the first summary covers the last 24 hours, not the time it was off.
                changes["last_summary_at"] = None
            changes["summary"] = 1 if enabled else 0
        if hour is not None:
            if not isinstance(hour, int) or not 0 <= hour <= 23:
                raise UserError("The summary hour is 0–23 (your local time).", reason="not an hour")
            changes["summary_hour"] = hour
        if chart is not None:
            changes["summary_chart"] = 1 if chart else 0
        await self._store.users.merge_settings(user_id, changes)

    async def set_foreign_alerts(self, user_id: int, enabled: bool) -> UserSettings:
        """Turn alerts on trades Strata did not make on or off (accounts are watched for them only while on)."""
        async with self._audit.attempt(
            "settings", actor_id=user_id, user_id=user_id, target="alerts on trades Strata did not make"
        ) as attempt:
            if await self._store.users.get(user_id) is None:
                raise UserError("Send /start first.", reason="not started")
            await self._store.users.merge_settings(user_id, {FOREIGN_SETTING: 1 if enabled else 0})
            await attempt.done(detail="on" if enabled else "off")
        return await self.get(user_id)

    async def set_timezone(self, user_id: int, name: str) -> UserSettings:
        """Set the zone the summary hour is read in; `name` is an IANA name, in any letter case."""
        async with self._audit.attempt("settings", actor_id=user_id, user_id=user_id, target="time zone") as attempt:
            zone = await self._set_timezone(user_id, name)
            await attempt.done(detail=zone)  # a canonical IANA name, never the text as typed
        return await self.get(user_id)

    async def _set_timezone(self, user_id: int, name: str) -> str:
        user = await self._store.users.get(user_id)
        if user is None:
            raise UserError("Send /start first.", reason="not started")
        try:
            zone = canonical(name)
        except UnknownZone:
            raise UserError(
                f"“{name.strip()[:64]}” is not a time zone I know. Use an IANA name such as Europe/Berlin, "
                "America/New_York or Asia/Tokyo, e.g. /settings tz Europe/Paris.",
                reason="not a time zone",
            ) from None
        changes: dict = {"tz": zone}
        if sent := _instant(user.settings.get("last_summary_at")):
            # "Today's summary is sent" is a local date: re-read it in the new zone, or a move west could send
            # a second one the same evening.
            changes["last_summary"] = sent.astimezone(zone_of(zone)).date().isoformat()
        await self._store.users.merge_settings(user_id, changes)
        return zone


def _instant(text: object) -> datetime | None:
    try:
        return from_iso(text) if isinstance(text, str) else None
    except ValueError:
        return None
