"""Recording what happened to money and access, for the user (/history) and the host.

Every service that changes money or access (connect, replace key, disconnect, allocate, confirm, pause, resume,
stop, panic, settings, approvals, blocks, wind-down) calls `AuditLog.record` with who acted, on whose data,
what, and the outcome. Text passes through the log redactor first: a secret that reached a message by mistake
(a pasted key in an error text, say) is still never written to the database.
"""

from __future__ import annotations

from bot.redaction import redact
from storage.audit import AuditEntry
from storage.db import Transaction

#: Actions the log knows, so /history can word them and tests can check each is recorded.
ACTIONS = (
    "connect", "replace-key", "disconnect", "allocate", "confirm", "edit", "pause", "resume", "stop", "panic",
    "settings", "request-access", "approve", "block", "unblock", "wind-down",
)


class AuditLog:
    def __init__(self, store) -> None:
        self._store = store

    async def record(
        self, action: str, *, actor_id: int | None, user_id: int | None, target: str = "", outcome: str = "ok",
        detail: str = "", tx: Transaction | None = None,
    ) -> None:
        """Append one entry; inside `tx` when the action's own writes are in one, so both commit or neither."""
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        await self._store.audit.append(
            actor_id=actor_id, user_id=user_id, action=action, target=redact(target)[:200],
            outcome=redact(outcome)[:40], detail=redact(detail)[:500], tx=tx,
        )

    async def page(self, *, user_id: int | None, before_id: int | None = None, limit: int = 10) -> list[AuditEntry]:
        """Newest first; `user_id` None is everyone's (admins only: the caller checks)."""
        return await self._store.audit.page(user_id=user_id, before_id=before_id, limit=limit)
