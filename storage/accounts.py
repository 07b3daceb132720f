"""Exchange accounts and their sealed credentials (ciphertext only; data keys live in the key store)."""

from __future__ import annotations

from storage.db import Database, Transaction
from storage.models import Account, SealedCredential, from_iso, to_iso, utcnow


class AccountRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        tx: Transaction,
        *,
        user_id: int,
        venue: str,
        label: str,
        testnet: bool = False,
        permissions: tuple[str, ...] = (),
    ) -> int:
        """Insert an account inside the caller's transaction (its credential follows in the same one)."""
        return await tx.execute(
            "INSERT INTO accounts (user_id, venue, label, status, testnet, permissions, created_at) "
            "VALUES (?, ?, ?, 'active', ?, ?, ?)",
            (user_id, venue, label, int(testnet), ",".join(permissions), to_iso(utcnow())),
        )

    async def store_credential(self, tx: Transaction, sealed: SealedCredential) -> None:
        await tx.execute(
            "INSERT INTO credentials (account_id, dek_id, nonce, ciphertext, created_at) VALUES (?, ?, ?, ?, ?)",
            (sealed.account_id, sealed.dek_id, sealed.nonce, sealed.ciphertext, to_iso(utcnow())),
        )

    async def credential(self, account_id: int) -> SealedCredential | None:
        row = await self._db.fetchone("SELECT * FROM credentials WHERE account_id = ?", (account_id,))
        if row is None:
            return None
        return SealedCredential(
            account_id=row["account_id"], dek_id=row["dek_id"], nonce=row["nonce"], ciphertext=row["ciphertext"]
        )

    async def get(self, account_id: int) -> Account | None:
        row = await self._db.fetchone("SELECT * FROM accounts WHERE id = ?", (account_id,))
        return _account(row) if row else None

    async def get_owned(self, user_id: int, account_id: int) -> Account | None:
        """The account if and only if it belongs to `user_id` (ownership is checked in SQL)."""
        row = await self._db.fetchone("SELECT * FROM accounts WHERE id = ? AND user_id = ?", (account_id, user_id))
        return _account(row) if row else None

    async def by_label(self, user_id: int, label: str) -> Account | None:
        row = await self._db.fetchone("SELECT * FROM accounts WHERE user_id = ? AND label = ?", (user_id, label))
        return _account(row) if row else None

    async def list_for_user(self, user_id: int) -> list[Account]:
        rows = await self._db.fetchall("SELECT * FROM accounts WHERE user_id = ? ORDER BY id", (user_id,))
        return [_account(r) for r in rows]

    async def labels_for_user(self, user_id: int) -> set[str]:
        rows = await self._db.fetchall("SELECT label FROM accounts WHERE user_id = ?", (user_id,))
        return {r["label"] for r in rows}

    async def list_active(self) -> list[Account]:
        rows = await self._db.fetchall("SELECT * FROM accounts WHERE status = 'active' ORDER BY id")
        return [_account(r) for r in rows]

    async def set_status(self, account_id: int, status: str) -> None:
        await self._db.execute("UPDATE accounts SET status = ? WHERE id = ?", (status, account_id))

    async def rename(self, user_id: int, account_id: int, label: str) -> None:
        await self._db.execute(
            "UPDATE accounts SET label = ? WHERE id = ? AND user_id = ?", (label, account_id, user_id)
        )

    async def delete(self, tx: Transaction, account_id: int) -> None:
        """Delete the account row; credentials, strategies and orders go with it (ON DELETE CASCADE)."""
        await tx.execute("DELETE FROM accounts WHERE id = ?", (account_id,))

    async def all_dek_ids(self) -> set[str]:
        """Every data key id a credential refers to (empty before the first migration)."""
        exists = await self._db.fetchone(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'credentials'"
        )
        if exists is None:
            return set()
        rows = await self._db.fetchall("SELECT dek_id FROM credentials")
        return {r["dek_id"] for r in rows}


def _account(row) -> Account:
    return Account(
        id=row["id"],
        user_id=row["user_id"],
        venue=row["venue"],
        label=row["label"],
        status=row["status"],
        testnet=bool(row["testnet"]),
        permissions=tuple(p for p in row["permissions"].split(",") if p),
        created_at=from_iso(row["created_at"]),
    )
