"""The alert outbox: alerts written in the same transaction as the event they report, sent later.

An alert exists iff its event exists (the engine calls `enqueue` inside the transaction that records the fill
or the pause). The notifier is the only writer of `status` afterwards: `pending` → `sent` once Telegram
accepted the message, or `pending` → `undeliverable` when Telegram will never take it (user blocked the bot,
chat gone, message refused as malformed). Nothing is deleted here, so an undeliverable alert stays visible.

The notifier takes pending alerts by **claiming** them (`claimed_by` = its own id), never by reading past an id
cursor: on PostgreSQL, concurrent writers commit ids out of order, so a cursor would skip an alert whose
transaction committed after a higher id was read. A claim is `FOR UPDATE SKIP LOCKED` on PostgreSQL, so two
notifiers running by mistake never claim the same alert; one notifier is active per database anyway (the
notifier's leader lock), and when it takes over it releases the claims of the one before (`release_claims`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from storage.db import Database, Transaction
from storage.leader import OUTBOX_CHANNEL, notify
from storage.models import Alert, from_iso, to_iso, utcnow

KINDS = frozenset({"fill", "pause", "error", "summary", "info"})
PENDING, SENT, UNDELIVERABLE = "pending", "sent", "undeliverable"
ERROR_MAX_CHARS = 500


@dataclass(frozen=True)
class PendingAlert:
    """A pending alert as the notifier loads it, with whether its user is still reachable."""

    alert: Alert
    user_active: bool | None  # None: no users row for that user id


class OutboxRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def enqueue(
        self, tx: Transaction, *, user_id: int, chat_id: int, kind: str, text: str, silent: bool = False,
        photo: bytes | None = None, buttons: Sequence[Sequence[tuple[str, str]]] = (),
    ) -> int:
        """Queue an alert inside the caller's transaction: it commits (or not) with the event it reports.

        `photo`: PNG bytes sent with the alert, `text` being its caption (at most 1,024 characters).
        `buttons`: inline keyboard rows of (label, callback data) sent with it (an access request's Approve/Block).
        """
        if kind not in KINDS:
            raise ValueError(f"unknown alert kind {kind!r}; expected one of {sorted(KINDS)}")
        if not text:
            raise ValueError("an alert needs a text")
        alert_id = await tx.insert(
            "INSERT INTO outbox (user_id, chat_id, kind, text, silent, status, attempts, created_at, photo, buttons) "
            "VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
            (user_id, chat_id, kind, text, int(silent), to_iso(utcnow()), photo,
             json.dumps([[list(b) for b in row] for row in buttons]) if buttons else None),
        )
        await notify(tx, OUTBOX_CHANNEL)  # a notifier in another process sends it at once, not at its next poll
        return alert_id

    async def photo(self, alert_id: int) -> bytes | None:
        """The photo of a pending alert, read only when it is sent (the notifier holds thousands of alerts)."""
        row = await self._db.fetchone("SELECT photo FROM outbox WHERE id = ?", (alert_id,))
        return None if row is None or row["photo"] is None else bytes(row["photo"])

    async def claim_pending(self, claimer: str, limit: int = 1000) -> list[PendingAlert]:
        """Claim up to `limit` unclaimed pending alerts for `claimer`, oldest first, and return them."""
        async with self._db.transaction() as tx:
            unclaimed = "SELECT id FROM outbox WHERE status = 'pending' AND claimed_by IS NULL ORDER BY id LIMIT ?"
            rows = await tx.fetchall(unclaimed + tx.lock_suffix(skip_locked=True), (limit,))
            ids = [row["id"] for row in rows]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            await tx.execute(f"UPDATE outbox SET claimed_by = ? WHERE id IN ({marks})", (claimer, *ids))  # noqa: S608
            # Every column but the photo's bytes (whether there is one instead): alerts load by the thousand.
            rows = await tx.fetchall(
                "SELECT o.id, o.user_id, o.chat_id, o.kind, o.text, o.silent, o.status, o.attempts, o.created_at, "  # noqa: S608
                "o.sent_at, o.error, o.buttons, o.photo IS NOT NULL AS has_photo, u.active AS user_active "
                f"FROM outbox o LEFT JOIN users u ON u.id = o.user_id WHERE o.id IN ({marks}) ORDER BY o.id",
                tuple(ids),
            )
        return [PendingAlert(alert=_alert(row), user_active=_flag(row["user_active"])) for row in rows]

    async def release_claims(self, *, of: str | None = None, except_of: str | None = None) -> int:
        """Return claimed, still pending alerts to the pool: those of `of` (a notifier stopping), or every
        claim but `except_of`'s (a notifier taking over from one that died); return how many."""
        sql = "UPDATE outbox SET claimed_by = NULL WHERE status = 'pending' AND claimed_by IS NOT NULL"
        params: tuple = ()
        if of is not None:
            sql, params = sql + " AND claimed_by = ?", (of,)
        elif except_of is not None:
            sql, params = sql + " AND claimed_by != ?", (except_of,)
        return await self._db.execute(sql, params)

    async def mark_sent(self, alert_id: int) -> bool:
        """Record that Telegram accepted the alert; False if it was not pending any more."""
        async with self._db.transaction() as tx:
            changed = await tx.rowcount(
                "UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1, error = NULL, photo = NULL "
                "WHERE id = ? AND status = 'pending'",
                (to_iso(utcnow()), alert_id),
            )
        return changed == 1

    async def record_failure(self, alert_id: int, error: str) -> None:
        """Count a failed attempt that will be retried (network error, 5xx), keeping the last error."""
        await self._db.execute(
            "UPDATE outbox SET attempts = attempts + 1, error = ? WHERE id = ? AND status = 'pending'",
            (_clip(error), alert_id),
        )

    async def mark_undeliverable(self, alert_id: int, error: str) -> bool:
        """Give up on one alert Telegram refused for good (e.g. message too long); the chat carries on."""
        async with self._db.transaction() as tx:
            changed = await tx.rowcount(
                "UPDATE outbox SET status = 'undeliverable', attempts = attempts + 1, error = ? "
                "WHERE id = ? AND status = 'pending'",
                (_clip(error), alert_id),
            )
        return changed == 1

    async def mark_user_undeliverable(self, tx: Transaction, user_id: int, error: str) -> int:
        """Give up on every pending alert of a user Telegram no longer delivers to; return how many."""
        return await tx.rowcount(
            "UPDATE outbox SET status = 'undeliverable', error = ? WHERE user_id = ? AND status = 'pending'",
            (_clip(error), user_id),
        )

    async def still_pending(self, alert_ids: list[int]) -> int:
        """How many of these alerts are still waiting to be sent (a CLI waits for its own messages)."""
        pending = 0
        for start in range(0, len(alert_ids), 500):  # under every backend's parameter limit
            chunk = alert_ids[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            row = await self._db.fetchone(
                f"SELECT COUNT(*) AS n FROM outbox WHERE status = 'pending' AND id IN ({marks})",  # noqa: S608
                tuple(chunk),
            )
            pending += row["n"]
        return pending

    async def get(self, alert_id: int) -> Alert | None:
        row = await self._db.fetchone("SELECT * FROM outbox WHERE id = ?", (alert_id,))
        return _alert(row) if row else None

    async def list_for_chat(self, chat_id: int) -> list[Alert]:
        rows = await self._db.fetchall("SELECT * FROM outbox WHERE chat_id = ? ORDER BY id", (chat_id,))
        return [_alert(row) for row in rows]

    async def counts(self) -> dict[str, int]:
        """How many alerts are in each status (for /status-like reports, tests and benchmarks)."""
        rows = await self._db.fetchall("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")
        counts = {PENDING: 0, SENT: 0, UNDELIVERABLE: 0}
        counts.update({row["status"]: row["n"] for row in rows})
        return counts


def _flag(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _clip(error: str) -> str:
    return error if len(error) <= ERROR_MAX_CHARS else error[: ERROR_MAX_CHARS - 1] + "…"


def _alert(row) -> Alert:
    return Alert(
        id=row["id"],
        user_id=row["user_id"],
        chat_id=row["chat_id"],
        kind=row["kind"],
        text=row["text"],
        silent=bool(row["silent"]),
        status=row["status"],
        attempts=row["attempts"],
        created_at=from_iso(row["created_at"]),
        sent_at=from_iso(row["sent_at"]),
        error=row["error"],
        has_photo=bool(row["has_photo"]) if "has_photo" in row.keys() else row["photo"] is not None,
        buttons=tuple(tuple((label, data) for label, data in r) for r in json.loads(row["buttons"] or "[]")),
    )
