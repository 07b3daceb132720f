"""The key store's tables: wrapped data keys, the master-key check value and the fingerprint key.

A separate database from the main one (DESIGN.md section 2), SQLite or PostgreSQL like it. Only `bot/vault.py`
uses this module; it holds the cryptography, this module only the rows (all of them ciphertext).

Shredding must leave no copy of a deleted data key behind in the database's own files: on SQLite the key store
runs with `secure_delete` (deleted pages are zeroed) and `flush()` empties the WAL; on PostgreSQL `flush()`
rewrites the two tables (`VACUUM FULL`), so the old row versions leave the table files. (PostgreSQL's WAL
segments and any backups keep them until recycled: host the key store with short WAL retention.)
"""

from __future__ import annotations

from pathlib import Path

from storage.db import Database, Transaction, connect, is_postgres, sqlite_path

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS kek_check (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        kek_id  TEXT NOT NULL,
        nonce   BLOB NOT NULL,
        sealed  BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS deks (
        id          TEXT PRIMARY KEY,
        kek_id      TEXT NOT NULL,
        nonce       BLOB NOT NULL,
        wrapped     BLOB NOT NULL,
        created_at  TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS fingerprint_key (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        kek_id   TEXT NOT NULL,
        nonce    BLOB NOT NULL,
        wrapped  BLOB NOT NULL
    )""",
)


def keystore_exists(target: str | Path) -> bool | None:
    """Whether a SQLite key store file exists with content; None for PostgreSQL (ask the check row instead)."""
    if is_postgres(target):
        return None
    path = sqlite_path(target)
    return path.exists() and path.stat().st_size > 0


class KeyStoreRows:
    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    async def open(cls, target: str | Path) -> KeyStoreRows:
        db = await connect(target)
        try:
            if db.backend == "sqlite":
                # Zero deleted rows' pages, so a shredded or re-wrapped data key leaves no copy in the file.
                await db.fetchone("PRAGMA secure_delete = ON")
            async with db.transaction() as tx:
                if tx.backend == "postgresql":  # two processes creating the tables at once
                    await tx.execute("SELECT pg_advisory_xact_lock(?)", (0x5354524154_01,))
                for statement in _SCHEMA:
                    await tx.execute(statement)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    def transaction(self):
        return self.db.transaction()

    async def check(self, tx: Transaction):
        return await tx.fetchone("SELECT kek_id, nonce, sealed FROM kek_check WHERE id = 1")

    async def insert_check(self, tx: Transaction, kek_id: str, nonce: bytes, sealed: bytes) -> None:
        await tx.execute(
            "INSERT INTO kek_check (id, kek_id, nonce, sealed) VALUES (1, ?, ?, ?)", (kek_id, nonce, sealed)
        )

    async def update_check(self, tx: Transaction, kek_id: str, nonce: bytes, sealed: bytes) -> None:
        await tx.execute(
            "UPDATE kek_check SET kek_id = ?, nonce = ?, sealed = ? WHERE id = 1", (kek_id, nonce, sealed)
        )

    async def insert_dek(self, dek_id: str, kek_id: str, nonce: bytes, wrapped: bytes, created_at: str) -> None:
        await self.db.execute(
            "INSERT INTO deks (id, kek_id, nonce, wrapped, created_at) VALUES (?, ?, ?, ?, ?)",
            (dek_id, kek_id, nonce, wrapped, created_at),
        )

    async def dek(self, dek_id: str):
        return await self.db.fetchone("SELECT nonce, wrapped FROM deks WHERE id = ?", (dek_id,))

    async def all_deks(self, tx: Transaction):
        return await tx.fetchall("SELECT id, nonce, wrapped FROM deks ORDER BY id")

    async def update_dek(self, tx: Transaction, dek_id: str, kek_id: str, nonce: bytes, wrapped: bytes) -> None:
        await tx.execute(
            "UPDATE deks SET kek_id = ?, nonce = ?, wrapped = ? WHERE id = ?", (kek_id, nonce, wrapped, dek_id)
        )

    async def delete_dek(self, dek_id: str) -> None:
        await self.db.execute("DELETE FROM deks WHERE id = ?", (dek_id,))

    async def dek_ids(self) -> set[str]:
        return {row["id"] for row in await self.db.fetchall("SELECT id FROM deks")}

    async def delete_every_key(self, tx: Transaction) -> int:
        """Delete every data key and the fingerprint key (the service is closing); how many data keys went."""
        count = await tx.execute("DELETE FROM deks")
        await tx.execute("DELETE FROM fingerprint_key")
        return count

    async def fingerprint_key(self, tx: Transaction):
        return await tx.fetchone("SELECT nonce, wrapped FROM fingerprint_key WHERE id = 1")

    async def insert_fingerprint_key(self, tx: Transaction, kek_id: str, nonce: bytes, wrapped: bytes) -> None:
        # ON CONFLICT: two processes creating it at once; the caller re-reads the winner's row.
        await tx.execute(
            "INSERT INTO fingerprint_key (id, kek_id, nonce, wrapped) VALUES (1, ?, ?, ?) ON CONFLICT DO NOTHING",
            (kek_id, nonce, wrapped),
        )

    async def update_fingerprint_key(self, tx: Transaction, kek_id: str, nonce: bytes, wrapped: bytes) -> None:
        await tx.execute(
            "UPDATE fingerprint_key SET kek_id = ?, nonce = ?, wrapped = ? WHERE id = 1", (kek_id, nonce, wrapped)
        )

    async def flush(self) -> None:
        """Make deleted and re-wrapped rows gone from the database's files (see the module docstring)."""
        if self.db.backend == "sqlite":
            await self.db.fetchone("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            async with self.db.connection() as conn:  # VACUUM cannot run inside a transaction
                await conn.execute("VACUUM FULL deks, fingerprint_key")

    async def close(self) -> None:
        await self.db.close()
