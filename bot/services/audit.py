"""Recording what happened to money and access, for the user (/history) and the host.

Every service that changes money or access (connect, replace key, disconnect, allocate, confirm, pause, resume,
stop, panic, settings, approvals, blocks, wind-down) records who acted, on whose data, what, and the outcome —
with `AuditLog.record`, or around the whole action with `AuditLog.attempt`, which also records a refusal
(`UserError`) or a failure (any other exception) in words of our own: never the exception's text, which can
quote a venue's answer or the user's typing. Text passes through the log redactor first: a secret that
reached a message by mistake is still never written to the database.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass

from bot.redaction import redact
from bot.services.errors import UserError
from bot.timezones import DEFAULT_ZONE
from storage.audit import AuditEntry
from storage.db import Transaction

logger = logging.getLogger(__name__)

#: Actions the log knows, so /history can word them and tests can check each is recorded.
ACTIONS = (
    "connect", "replace-key", "disconnect", "allocate", "confirm", "edit", "pause", "resume", "stop", "panic",
    "settings", "request-access", "approve", "block", "unblock", "wind-down",
)
OK, REFUSED, FAILED = "ok", "refused", "failed"
#: Entries per /history page: ten entries of at most ENTRY_CHARS stay far inside one Telegram message.
HISTORY_PER_PAGE = 10
#: A refusal that names the allocation step that can fix it (`UserError.step`), in words.
_STEP_WORDS = {"symbol": "the market was refused", "budget": "the budget was refused",
               "params": "the parameters were refused"}


@dataclass
class Attempt:
    """One action under way: what it is done on (filled in as it becomes known) and whether it was recorded."""

    log: AuditLog
    action: str
    actor_id: int | None
    user_id: int | None
    target: str = ""
    #: Why a refusal happened, in our words, when the `UserError` does not say (`UserError.reason`).
    reason: str = ""
    recorded: bool = False

    async def done(self, *, detail: str = "", outcome: str = OK, tx: Transaction | None = None) -> None:
        """Record the outcome (inside the action's transaction when given: last statement in it)."""
        await self.log.record(
            self.action, actor_id=self.actor_id, user_id=self.user_id, target=self.target, outcome=outcome,
            detail=detail, tx=tx,
        )
        self.recorded = True


@dataclass(frozen=True)
class HistoryPage:
    entries: tuple[AuditEntry, ...]
    #: Whose: a Telegram user id, or None for everyone's (admins only).
    subject: int | None
    has_older: bool
    has_newer: bool
    #: The viewer's time zone (IANA name): entries are shown in it.
    timezone: str = DEFAULT_ZONE


class AuditLog:
    def __init__(self, store) -> None:
        self._store = store

    async def record(
        self, action: str, *, actor_id: int | None, user_id: int | None, target: str = "", outcome: str = OK,
        detail: str = "", tx: Transaction | None = None,
    ) -> None:
        """Append one entry; inside `tx` when the action's own writes are in one, so both commit or neither."""
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        await self._store.audit.append(
            actor_id=actor_id, user_id=user_id, action=action, target=redact(target)[:200],
            outcome=redact(outcome)[:40], detail=redact(detail)[:500], tx=tx,
        )

    @asynccontextmanager
    async def attempt(
        self, action: str, *, actor_id: int | None, user_id: int | None, target: str = ""
    ) -> AsyncIterator[Attempt]:
        """Record the action once however it ends: what the body recorded (`Attempt.done`), else ok; a
        `UserError` as refused (its `reason`, or the attempt's); any other exception as failed (its type only)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        attempt = Attempt(self, action, actor_id, user_id, target)
        try:
            yield attempt
        except UserError as exc:
            if not attempt.recorded:
                why = exc.reason or attempt.reason or _STEP_WORDS.get(exc.step or "", "")
                await self._record_quietly(attempt, REFUSED, why)
            raise
        except Exception as exc:
            if not attempt.recorded:
                await self._record_quietly(attempt, FAILED, f"unexpected error ({type(exc).__name__})")
            raise
        if not attempt.recorded:
            await attempt.done()

    async def _record_quietly(self, attempt: Attempt, outcome: str, detail: str) -> None:
        """Record how an action ended badly without hiding why it did (the original error is re-raised)."""
        try:
            await attempt.done(outcome=outcome, detail=detail)
        except Exception:
            logger.warning("could not record the %s of a %s in the audit log", outcome, attempt.action, exc_info=True)

    async def page(
        self, *, user_id: int | None, before_id: int | None = None, after_id: int | None = None, limit: int = 10
    ) -> list[AuditEntry]:
        """Newest first; `user_id` None is everyone's (admins only: the caller checks)."""
        return await self._store.audit.page(user_id=user_id, before_id=before_id, after_id=after_id, limit=limit)

    async def history(
        self, viewer_id: int, subject: int | str | None, *, admins: Collection[int], before_id: int | None = None,
        after_id: int | None = None, per_page: int = HISTORY_PER_PAGE,
    ) -> HistoryPage:
        """A page of `subject`'s entries (None: the viewer's own; "all": everyone's), newest first.

        Only an admin sees another user's or everyone's; anyone else gets one refusal that says nothing about
        whether that user exists. A cursor beyond either end (a stale or forged button) shows the newest page.
        """
        if subject is None or subject == viewer_id:
            whose: int | None = viewer_id
        elif viewer_id in admins and (subject == "all" or isinstance(subject, int)):
            whose = None if subject == "all" else int(subject)
        else:
            raise UserError("You can only see your own history: send /history.")
        entries = await self.page(user_id=whose, before_id=before_id, after_id=after_id, limit=per_page)
        if not entries and (before_id is not None or after_id is not None):
            entries = await self.page(user_id=whose, limit=per_page)
        has_older = has_newer = False
        if entries:
            has_older = bool(await self.page(user_id=whose, before_id=entries[-1].id, limit=1))
            has_newer = bool(await self.page(user_id=whose, after_id=entries[0].id, limit=1))
        viewer = await self._store.users.get(viewer_id)
        timezone = (viewer.settings.get("tz") if viewer else None) or DEFAULT_ZONE
        return HistoryPage(tuple(entries), whose, has_older, has_newer, timezone)
