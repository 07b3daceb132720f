"""Exchange accounts and their sealed credentials (ciphertext only; data keys live in the key store).

An account is `active`, `key_rejected` (the exchange refused its key; retried slowly, replaceable),
`key_unreadable` (its stored credential failed the integrity check; replaceable) or `key_unsafe` (its key was
allowed to withdraw after it was connected; checked again slowly, replaceable) or `key_removed` (the host closed
the service: its credential is gone, its history kept). Only active accounts trade.
`key_ref` and `owner_ref` are keyed fingerprints (never the values) of its API key and of the exchange account.
"""

from __future__ import annotations

from collections.abc import Sequence

from storage.db import Database, IntegrityError, Transaction
from storage.models import Account, SealedCredential, from_iso, to_iso, utcnow

ACTIVE, KEY_REJECTED, KEY_UNREADABLE, KEY_UNSAFE = "active", "key_rejected", "key_unreadable", "key_unsafe"
#: The host closed the service (`python -m bot wind-down`): the key is shredded for good, the history kept.
KEY_REMOVED = "key_removed"


class KeyAlreadyConnected(Exception):
    """Another account already holds this API key (its fingerprint is unique)."""


class OwnerAlreadyConnected(Exception):
    """Another account of the same venue already trades on this exchange account (same `owner_ref`)."""

    def __init__(self, holder: Account) -> None:
        super().__init__(f"exchange account already connected as account {holder.id}")
        self.holder = holder


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
        key_ref: str | None = None,
        owner_ref: str | None = None,
    ) -> int:
        """Insert an account inside the caller's transaction (its credential follows in the same one).

        Raises `KeyAlreadyConnected` when another account holds the same key fingerprint, and
        `OwnerAlreadyConnected` when an account of the same venue trades on the same exchange account (checked
        inside the transaction, so two concurrent /connect cannot both pass). Spot and USD-M of one Binance
        account are separate wallets: each venue is compared on its own.
        """
        if owner_ref is not None:
            row = await tx.fetchone(
                "SELECT * FROM accounts WHERE venue = ? AND owner_ref = ? ORDER BY id LIMIT 1", (venue, owner_ref)
            )
            if row is not None:
                raise OwnerAlreadyConnected(_account(row))
        try:
            return await tx.insert(
                "INSERT INTO accounts (user_id, venue, label, status, testnet, permissions, created_at, key_ref, "
                "owner_ref) VALUES (?, ?, ?, 'active', ?, ?, ?, ?, ?)",
                (user_id, venue, label, int(testnet), ",".join(permissions), to_iso(utcnow()), key_ref, owner_ref),
            )
        except IntegrityError as exc:
            if key_ref is not None and "key_ref" in str(exc):
                raise KeyAlreadyConnected from None
            raise

    async def replace_credential(
        self, tx: Transaction, sealed: SealedCredential, *, key_ref: str, owner_ref: str | None,
        permissions: tuple[str, ...],
    ) -> None:
        """Swap an account's credential for a new one and make the account active again (one transaction)."""
        await tx.execute(
            "UPDATE credentials SET dek_id = ?, nonce = ?, ciphertext = ?, created_at = ? WHERE account_id = ?",
            (sealed.dek_id, sealed.nonce, sealed.ciphertext, to_iso(utcnow()), sealed.account_id),
        )
        try:
            await tx.execute(
                "UPDATE accounts SET status = 'active', key_ref = ?, owner_ref = COALESCE(?, owner_ref), "
                "permissions = ? WHERE id = ?",
                (key_ref, owner_ref, ",".join(permissions), sealed.account_id),
            )
        except IntegrityError as exc:
            if "key_ref" in str(exc):
                raise KeyAlreadyConnected from None
            raise

    async def by_key_ref(self, key_ref: str) -> Account | None:
        row = await self._db.fetchone("SELECT * FROM accounts WHERE key_ref = ?", (key_ref,))
        return _account(row) if row else None

    async def without_key_ref(self) -> list[Account]:
        """Accounts connected before keys were fingerprinted (filled in at start-up)."""
        rows = await self._db.fetchall("SELECT * FROM accounts WHERE key_ref IS NULL ORDER BY id")
        return [_account(r) for r in rows]

    async def set_key_ref(self, account_id: int, key_ref: str) -> bool:
        """Record a legacy account's key fingerprint; False when another account already has it."""
        try:
            async with self._db.transaction() as tx:
                return bool(await tx.rowcount(
                    "UPDATE accounts SET key_ref = ? WHERE id = ? AND key_ref IS NULL", (key_ref, account_id)
                ))
        except IntegrityError:
            return False

    async def without_owner_ref(self, venues: Sequence[str]) -> list[Account]:
        """Active accounts on `venues` (those naming the account behind a key: Binance's uid) whose owner was
        never recorded (filled in at start-up)."""
        if not venues:
            return []
        marks = ", ".join("?" * len(venues))
        sql = f"SELECT * FROM accounts WHERE status = 'active' AND owner_ref IS NULL AND venue IN ({marks}) ORDER BY id"  # noqa: S608 - placeholders only
        rows = await self._db.fetchall(sql, tuple(venues))
        return [_account(r) for r in rows]

    async def set_owner_ref(self, account_id: int, owner_ref: str) -> None:
        """Record a legacy account's exchange account (never overwrites one already recorded)."""
        await self._db.execute(
            "UPDATE accounts SET owner_ref = ? WHERE id = ? AND owner_ref IS NULL", (owner_ref, account_id)
        )

    async def count_for_user(self, user_id: int) -> int:
        row = await self._db.fetchone("SELECT count(*) AS n FROM accounts WHERE user_id = ?", (user_id,))
        return row["n"]

    async def suspend(self, tx: Transaction, account_id: int, status: str) -> bool:
        """Take an active account out of trading (`key_rejected`, `key_unreadable`, `key_unsafe`); True if this call
        did."""
        return bool(await tx.rowcount(
            "UPDATE accounts SET status = ? WHERE id = ? AND status = 'active'", (status, account_id)
        ))

    async def reactivate(self, tx: Transaction, account_id: int, from_status: str) -> bool:
        """Make a suspended account active again (its key works again); True if this call did."""
        return bool(await tx.rowcount(
            "UPDATE accounts SET status = 'active' WHERE id = ? AND status = ?", (account_id, from_status)
        ))

    async def get_in(self, tx: Transaction, account_id: int) -> Account | None:
        row = await tx.fetchone("SELECT * FROM accounts WHERE id = ?", (account_id,))
        return _account(row) if row else None

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

    async def get_many(self, account_ids: list[int]) -> dict[int, Account]:
        """Many accounts by id, in one read per 500 ids (the strategies of a round share it); missing: absent."""
        result: dict[int, Account] = {}
        for start in range(0, len(account_ids), 500):
            chunk = account_ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            rows = await self._db.fetchall(f"SELECT * FROM accounts WHERE id IN ({marks})", chunk)  # noqa: S608 - placeholders only
            result.update({row["id"]: _account(row) for row in rows})
        return result

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
        return await self.with_status(ACTIVE)

    async def with_status(self, status: str) -> list[Account]:
        rows = await self._db.fetchall("SELECT * FROM accounts WHERE status = ? ORDER BY id", (status,))
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

    async def remove_key(self, tx: Transaction, account_id: int) -> None:
        """Delete the account's sealed credential and mark it `key_removed`, keeping the account and its history
        (the service is closing; its data key is shredded first). Idempotent."""
        await tx.execute("DELETE FROM credentials WHERE account_id = ?", (account_id,))
        await tx.execute("UPDATE accounts SET status = ? WHERE id = ?", (KEY_REMOVED, account_id))

    async def with_key(self) -> list[Account]:
        """Every account whose key was not removed by a wind-down (whatever its state), oldest first."""
        rows = await self._db.fetchall("SELECT * FROM accounts WHERE status <> ? ORDER BY id", (KEY_REMOVED,))
        return [_account(r) for r in rows]

    async def all_dek_ids(self) -> set[str]:
        """Every data key id a credential refers to (empty before the first migration)."""
        if not await self._db.has_table("credentials"):
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
        owner_ref=row["owner_ref"],
    )


def account_from_row(row) -> Account:
    """An `Account` from a row of `accounts` (for the repositories that select accounts joined with their own)."""
    return _account(row)
