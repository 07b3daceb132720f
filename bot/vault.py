"""Envelope encryption of exchange credentials (DESIGN.md section 2).

Each credential is sealed with its own random 256-bit data key (DEK) using AES-256-GCM, with associated data
binding the ciphertext to (user, account, venue) so rows cannot be swapped. DEKs are wrapped by the master key
(KEK) and live in a separate SQLite database, the key store; the main database holds ciphertext only.
Deleting a DEK makes its ciphertext unrecoverable forever (crypto-shredding), whatever backups exist.

The key store also holds one random fingerprint key, wrapped like a DEK (so `rotate` re-wraps it and
fingerprints stay stable across master-key rotations). `fingerprint` is HMAC-SHA256 under it: the main
database can tell "this API key is already connected" without holding the key or a plain, guessable hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bot.secret import Credentials
from storage.keystore import KeyStoreRows, keystore_exists
from storage.models import SealedCredential, to_iso, utcnow

logger = logging.getLogger(__name__)

_CHECK_PLAINTEXT = b"strata key store check v1"
_CHECK_AAD = b"strata:kek-check"
_FINGERPRINT_AAD = b"strata:fingerprint-key:v1"


class VaultError(Exception):
    """Base class of key-vault failures; messages never contain key material."""


class MasterKeyMismatch(VaultError):
    """The master key does not open this key store: start-up must stop and change nothing."""


class CredentialUnreadable(VaultError):
    """A sealed credential failed authentication (tampered, moved to another row, or its DEK is gone)."""


def kek_id_of(master_key: bytes) -> str:
    """A short public identifier of a master key (a hash prefix; reveals nothing usable)."""
    return hashlib.sha256(b"strata-kek-id:" + master_key).hexdigest()[:16]


def associated_data(user_id: int, account_id: int, venue: str) -> bytes:
    return f"strata:credential:v1:{user_id}:{account_id}:{venue}".encode()


@dataclass(frozen=True)
class _Key:
    """The master key with its id; repr shows only the id."""

    material: bytes
    id: str

    def __repr__(self) -> str:
        return f"MasterKey(id={self.id})"


class Vault:
    """Seal, open, shred and re-wrap credentials; the only holder of the master key in the process."""

    def __init__(self, keystore: KeyStoreRows, master_key: bytes) -> None:
        self._rows = keystore
        self._kek = _Key(master_key, kek_id_of(master_key))
        self._fingerprint_key: bytes | None = None

    @classmethod
    async def open(cls, keystore: Path | str, master_key: bytes, *, expect_existing: bool = False) -> Vault:
        """Open the key store (a SQLite path or a database URL) and prove the master key opens it; a new key
        store gets a check value.

        `expect_existing` is true when the main database already holds credentials: an empty or missing key
        store then means a wrong STRATA_KEYSTORE_PATH/URL, and we refuse rather than start with keys we cannot
        read.
        """
        existed = keystore_exists(keystore)
        if expect_existing and existed is False:  # refuse before creating a file at a wrong path
            raise _no_keys(keystore)
        rows = await KeyStoreRows.open(keystore)
        try:
            async with rows.transaction() as tx:
                row = await rows.check(tx)
                if row is None:
                    if expect_existing:
                        raise _no_keys(keystore)
                    nonce = os.urandom(12)
                    sealed = AESGCM(master_key).encrypt(nonce, _CHECK_PLAINTEXT, _CHECK_AAD)
                    await rows.insert_check(tx, kek_id_of(master_key), nonce, sealed)
                    if not existed:
                        logger.info("Created a new key store at %s", where(keystore))
                else:
                    _verify_check(master_key, row["kek_id"], row["nonce"], row["sealed"], keystore)
        except BaseException:
            await rows.close()
            raise
        return cls(rows, master_key)

    @property
    def kek_id(self) -> str:
        return self._kek.id

    async def seal(self, *, user_id: int, account_id: int, venue: str, credentials: Credentials) -> SealedCredential:
        """Encrypt a key pair under a fresh data key, storing the wrapped data key in the key store."""
        dek = AESGCM.generate_key(bit_length=256)
        dek_id = secrets.token_hex(16)
        payload = json.dumps({"k": credentials.api_key.reveal(), "s": credentials.secret.reveal()}).encode()
        nonce = os.urandom(12)
        ciphertext = AESGCM(dek).encrypt(nonce, payload, associated_data(user_id, account_id, venue))
        del payload
        wrap_nonce = os.urandom(12)
        wrapped = AESGCM(self._kek.material).encrypt(wrap_nonce, dek, _dek_aad(dek_id))
        await self._rows.insert_dek(dek_id, self._kek.id, wrap_nonce, wrapped, to_iso(utcnow()))
        return SealedCredential(account_id=account_id, dek_id=dek_id, nonce=nonce, ciphertext=ciphertext)

    async def unseal(self, sealed: SealedCredential, *, user_id: int, venue: str) -> Credentials:
        """Decrypt a credential; any mismatch (tamper, swap, shredded key) raises CredentialUnreadable."""
        dek = await self._unwrap(sealed.dek_id)
        try:
            payload = AESGCM(dek).decrypt(
                sealed.nonce, sealed.ciphertext, associated_data(user_id, sealed.account_id, venue)
            )
        except (InvalidTag, ValueError, TypeError):  # ValueError/TypeError: a nonce or column mangled
            raise CredentialUnreadable(
                f"The stored credential of account {sealed.account_id} failed its integrity check."
            ) from None
        data = json.loads(payload)
        return Credentials(data["k"], data["s"])

    async def fingerprint(self, purpose: str, value: str) -> str:
        """A keyed fingerprint of `value` (HMAC-SHA256 under the key store's fingerprint key), hex.

        `purpose` separates domains ("api-key:binance", "owner:binance"…), so equal values of different kinds
        never compare equal. The fingerprint reveals nothing about `value` without the key store.
        """
        key = await self._load_fingerprint_key()
        return hmac.new(key, f"{purpose}\x00{value}".encode(), hashlib.sha256).hexdigest()

    async def _load_fingerprint_key(self) -> bytes:
        if self._fingerprint_key is None:
            async with self._rows.transaction() as tx:
                row = await self._rows.fingerprint_key(tx)
                if row is None:
                    nonce = os.urandom(12)
                    wrapped = AESGCM(self._kek.material).encrypt(nonce, os.urandom(32), _FINGERPRINT_AAD)
                    await self._rows.insert_fingerprint_key(tx, self._kek.id, nonce, wrapped)
                    row = await self._rows.fingerprint_key(tx)  # ours, or another process's that won the race
                key = self._unwrap_fingerprint_key(row["nonce"], row["wrapped"])
            self._fingerprint_key = key
        return self._fingerprint_key

    def _unwrap_fingerprint_key(self, nonce: bytes, wrapped: bytes) -> bytes:
        try:
            return AESGCM(self._kek.material).decrypt(nonce, wrapped, _FINGERPRINT_AAD)
        except (InvalidTag, ValueError, TypeError):
            raise CredentialUnreadable("The key store's fingerprint key failed its integrity check.") from None

    async def shred(self, dek_id: str) -> None:
        """Delete a data key: its ciphertext can never be opened again, in any copy of the main database."""
        await self._rows.delete_dek(dek_id)
        await self._rows.flush()

    async def dek_ids(self) -> set[str]:
        return await self._rows.dek_ids()

    async def prune(self, keep: set[str]) -> int:
        """Delete data keys no credential refers to (left by a crash between the two databases' commits)."""
        orphans = await self.dek_ids() - keep
        for dek_id in orphans:
            await self.shred(dek_id)
        return len(orphans)

    async def empty(self) -> int:
        """Destroy every data key and the fingerprint key (the service is closing: `wind-down`); returns how many
        data keys went. Every sealed credential, in any copy of the main database, is unreadable for good."""
        async with self._rows.transaction() as tx:
            count = await self._rows.delete_every_key(tx)
        self._fingerprint_key = None
        await self._rows.flush()
        return count

    async def rotate(self, new_master_key: bytes) -> int:
        """Re-wrap every data key and the check value under a new master key, in one key-store transaction."""
        new_id = kek_id_of(new_master_key)
        async with self._rows.transaction() as tx:
            rows = await self._rows.all_deks(tx)
            for row in rows:
                dek = self._unwrap_row(row["id"], row["nonce"], row["wrapped"])
                nonce = os.urandom(12)
                wrapped = AESGCM(new_master_key).encrypt(nonce, dek, _dek_aad(row["id"]))
                await self._rows.update_dek(tx, row["id"], new_id, nonce, wrapped)
            row = await self._rows.fingerprint_key(tx)
            if row is not None:
                key = self._unwrap_fingerprint_key(row["nonce"], row["wrapped"])
                nonce = os.urandom(12)
                await self._rows.update_fingerprint_key(
                    tx, new_id, nonce, AESGCM(new_master_key).encrypt(nonce, key, _FINGERPRINT_AAD)
                )
            nonce = os.urandom(12)
            sealed = AESGCM(new_master_key).encrypt(nonce, _CHECK_PLAINTEXT, _CHECK_AAD)
            await self._rows.update_check(tx, new_id, nonce, sealed)
        self._kek = _Key(new_master_key, new_id)
        await self._rows.flush()
        return len(rows)

    async def close(self) -> None:
        await self._rows.close()

    async def _unwrap(self, dek_id: str) -> bytes:
        row = await self._rows.dek(dek_id)
        if row is None:
            raise CredentialUnreadable("The data key of this credential is gone (the account was disconnected).")
        return self._unwrap_row(dek_id, row["nonce"], row["wrapped"])

    def _unwrap_row(self, dek_id: str, nonce: bytes, wrapped: bytes) -> bytes:
        try:
            return AESGCM(self._kek.material).decrypt(nonce, wrapped, _dek_aad(dek_id))
        except (InvalidTag, ValueError, TypeError):
            raise CredentialUnreadable(f"The wrapped data key {dek_id} failed its integrity check.") from None

    def __repr__(self) -> str:
        return f"Vault(kek_id={self._kek.id})"


def where(keystore: Path | str) -> str:
    """The key store named for an operator, without the password a database URL may carry."""
    if isinstance(keystore, str) and "://" in keystore:
        scheme, rest = keystore.split("://", 1)
        return f"{scheme}://{rest.rsplit('@', 1)[-1]}"
    return str(keystore)


def _no_keys(keystore: Path | str) -> MasterKeyMismatch:
    return MasterKeyMismatch(
        f"The key store {where(keystore)} holds no keys, but the main database has stored credentials: "
        "check STRATA_KEYSTORE_PATH / STRATA_KEYSTORE_URL (nothing was changed)."
    )


def _dek_aad(dek_id: str) -> bytes:
    return f"strata:dek:v1:{dek_id}".encode()


def _verify_check(master_key: bytes, kek_id: str, nonce: bytes, sealed: bytes, keystore: Path | str) -> None:
    try:
        plain = AESGCM(master_key).decrypt(nonce, sealed, _CHECK_AAD)
    except (InvalidTag, ValueError, TypeError):
        plain = b""
    if plain != _CHECK_PLAINTEXT:
        raise MasterKeyMismatch(
            f"The master key (id {kek_id_of(master_key)}) does not open the key store {where(keystore)} "
            f"(it was sealed with key id {kek_id}). Set STRATA_MASTER_KEY or STRATA_MASTER_KEY_FILE to the "
            "right key; nothing was changed."
        )
