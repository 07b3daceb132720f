"""/settings use-cases: fill-alert mode per strategy and the daily summary, without Telegram.

Pauses, errors and key problems are not configurable: they always go out, with sound.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.services.errors import UserError
from bot.strategies.naming import strategy_label

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
    summary_hour: int  # UTC


class SettingsService:
    def __init__(self, store) -> None:
        self._store = store

    async def get(self, user_id: int) -> UserSettings:
        user = await self._store.users.get(user_id)
        settings = user.settings if user else {}
        strategies = await self._store.strategies.list_for_user(user_id, ("active", "paused", "finished"))
        return UserSettings(
            strategies=tuple(
                StrategyAlerts(s.id, strategy_label(s.kind, s.id, s.symbol, s.params, s.name), s.alerts)
                for s in strategies
            ),
            summary=bool(settings.get("summary", False)),
            summary_hour=int(settings.get("summary_hour", DEFAULT_SUMMARY_HOUR)),
        )

    async def set_alerts(self, user_id: int, strategy_id: int, mode: str) -> UserSettings:
        if mode not in ALERT_MODES:
            raise UserError("Fill alerts are on, silent or off.")
        if not 0 < strategy_id <= MAX_ID:  # SQLite refuses a larger integer with OverflowError
            raise UserError("No such strategy. See /status for yours.")
        if not await self._store.strategies.set_alerts(user_id, strategy_id, mode):
            raise UserError("No such strategy. See /status for yours.")
        return await self.get(user_id)

    async def set_summary(self, user_id: int, *, enabled: bool | None = None, hour: int | None = None) -> UserSettings:
        user = await self._store.users.get(user_id)
        if user is None:
            raise UserError("Send /start first.")
        settings = dict(user.settings)
        if enabled is not None:
            settings["summary"] = 1 if enabled else 0
        if hour is not None:
            if not isinstance(hour, int) or not 0 <= hour <= 23:
                raise UserError("The summary hour is 0–23 (UTC).")
            settings["summary_hour"] = hour
        await self._store.users.update_settings(user_id, settings)
        return await self.get(user_id)
