"""Users: a Telegram user id, the private chat alerts go to, and whether Telegram still delivers to them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from storage.db import Database, Transaction
from storage.models import User, dumps, to_iso, utcnow

#: A user's access (STRATA_ACCESS=approval): waiting for an admin, let in, or shut out by an admin.
PENDING, APPROVED, BLOCKED = "pending", "approved", "blocked"


@dataclass(frozen=True)
class UserAccess:
    """One line of /users: who, their access, and how much of theirs the bot runs."""

    id: int
    chat_id: int
    name: str
    access: str
    accounts: int
    strategies: int  # running or paused


class UserRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert(self, user_id: int, chat_id: int) -> User:
        """Register a user (or refresh their chat) and mark them active again, as /start does."""
        await self._db.execute(
            "INSERT INTO users (id, chat_id, active, created_at) VALUES (?, ?, 1, ?) "
            "ON CONFLICT(id) DO UPDATE SET chat_id = excluded.chat_id, active = 1",
            (user_id, chat_id, to_iso(utcnow())),
        )
        return User(id=user_id, chat_id=chat_id, active=True, settings=(await self.get(user_id)).settings)

    async def all_ids(self) -> list[int]:
        """Every user ever registered, active or not (the wind-down tells and reports to each)."""
        rows = await self._db.fetchall("SELECT id FROM users ORDER BY id")
        return [row["id"] for row in rows]

    async def get(self, user_id: int) -> User | None:
        row = await self._db.fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
        return _user(row) if row else None

    async def chat_of(self, user_id: int, tx: Transaction | None = None) -> int | None:
        """The private chat a user's alerts go to (None: no such user)."""
        sql, params = "SELECT chat_id FROM users WHERE id = ?", (user_id,)
        row = await (tx.fetchone(sql, params) if tx is not None else self._db.fetchone(sql, params))
        return row["chat_id"] if row else None

    async def settings_of(self, user_id: int, tx: Transaction | None = None) -> dict | None:
        """A user's settings (None: no such user), inside the caller's transaction when given."""
        sql, params = "SELECT settings FROM users WHERE id = ?", (user_id,)
        row = await (tx.fetchone(sql, params) if tx is not None else self._db.fetchone(sql, params))
        return json.loads(row["settings"]) if row else None

    async def set_active(self, user_id: int, active: bool, tx: Transaction | None = None) -> None:
        sql, params = "UPDATE users SET active = ? WHERE id = ?", (int(active), user_id)
        if tx is not None:
            await tx.execute(sql, params)
        else:
            await self._db.execute(sql, params)

    async def merge_settings(self, user_id: int, changes: dict) -> None:
        """Set some settings (None removes one) in one statement, keeping the rest as stored now.

        Unlike a read-modify-write of the whole object, this cannot undo a daily summary claimed meanwhile
        (which would send it twice).
        """
        async with self._db.transaction() as tx:
            settings = await self._settings_for_update(tx, user_id)
            if settings is None:
                return
            for key, value in changes.items():
                if value is None:
                    settings.pop(key, None)
                else:
                    settings[key] = value
            await tx.execute("UPDATE users SET settings = ? WHERE id = ?", (dumps(settings), user_id))

    async def access_of(self, user_id: int) -> str | None:
        """PENDING, APPROVED or BLOCKED; None for a user who never wrote /start."""
        row = await self._db.fetchone("SELECT access FROM users WHERE id = ?", (user_id,))
        return row["access"] if row else None

    async def request_access(self, tx: Transaction, user_id: int, chat_id: int, name: str) -> bool:
        """Register a new user as pending; False (nothing changed) when they already have a state."""
        return await tx.execute(
            "INSERT INTO users (id, chat_id, active, created_at, access, name) VALUES (?, ?, 1, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (user_id, chat_id, to_iso(utcnow()), PENDING, name),
        ) == 1

    async def set_access(self, tx: Transaction, user_id: int, access: str, *, only_from: tuple[str, ...]) -> bool:
        """Change a user's access if it is one of `only_from` now (two admins pressing at once: one wins)."""
        marks = ", ".join("?" for _ in only_from)
        return await tx.execute(
            f"UPDATE users SET access = ? WHERE id = ? AND access IN ({marks})",  # noqa: S608 - only placeholders
            (access, user_id, *only_from),
        ) == 1

    async def access_list(self) -> list[UserAccess]:
        """Every user with their access and counts, oldest first."""
        rows = await self._db.fetchall(f"{_ACCESS_SELECT} ORDER BY u.created_at, u.id")
        return [_access(r) for r in rows]

    async def access_one(self, user_id: int) -> UserAccess | None:
        row = await self._db.fetchone(f"{_ACCESS_SELECT} WHERE u.id = ?", (user_id,))
        return _access(row) if row else None

    async def with_daily_summary(self) -> list[User]:
        """Active users who asked for a daily summary."""
        users = [_user(r) for r in await self._db.fetchall("SELECT * FROM users WHERE active = 1 ORDER BY id")]
        return [u for u in users if u.settings.get("summary") == 1]

    async def claim_daily_summary(self, tx: Transaction, user_id: int, day: str, at: datetime) -> bool:
        """Mark the summary of `day` (the user's local date) as taken at `at`, once: False when already claimed.

        `at` is where the next summary's "since the last summary" starts.
        """
        settings = await self._settings_for_update(tx, user_id)
        if settings is None or settings.get("last_summary") == day:
            return False
        settings.update(last_summary=day, last_summary_at=to_iso(at))
        await tx.execute("UPDATE users SET settings = ? WHERE id = ?", (dumps(settings), user_id))
        return True

    @staticmethod
    async def _settings_for_update(tx: Transaction, user_id: int) -> dict | None:
        """A user's settings, locked until the transaction ends: settings are read, changed and written back
        whole, so a concurrent change (a claimed summary, a /settings tap) must wait rather than be undone."""
        row = await tx.fetchone_for_update("SELECT settings FROM users WHERE id = ?", (user_id,))
        return json.loads(row["settings"]) if row else None


_ACCESS_SELECT = (
    "SELECT u.id, u.chat_id, u.name, u.access, "
    "(SELECT COUNT(*) FROM accounts a WHERE a.user_id = u.id) AS accounts, "
    "(SELECT COUNT(*) FROM strategies s WHERE s.user_id = u.id AND s.status IN ('active', 'paused')) AS strategies "
    "FROM users u"
)


def _access(row) -> UserAccess:
    return UserAccess(id=row["id"], chat_id=row["chat_id"], name=row["name"], access=row["access"],
                      accounts=row["accounts"], strategies=row["strategies"])


def _user(row) -> User:
    return User(id=row["id"], chat_id=row["chat_id"], active=bool(row["active"]), settings=json.loads(row["settings"]))
