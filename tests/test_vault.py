"""The key vault (DESIGN.md section 2): envelope encryption, binding, tamper detection, rotation, shredding,
refusal of a wrong master key, and the generated master key file."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import logging
import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings
from bot.master_key import load_master_key
from bot.secret import Credentials
from bot.vault import CredentialUnreadable, MasterKeyMismatch, Vault, kek_id_of
from storage import store as store_module

VENUE = "binance"
UPDATE_DEK = {
    "wrapped": "UPDATE deks SET wrapped = ? WHERE id = ?",
    "nonce": "UPDATE deks SET nonce = ? WHERE id = ?",
}
CREDS = Credentials("vmKey" + "A1b2C3d4" * 8, "vmSecret" + "Z9y8X7w6" * 8)


def _rows(path: Path, sql: str, params=()) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def _write(path: Path, sql: str, params=()) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(sql, params)


def keystore_snapshot(path: Path) -> tuple[list[tuple], list[tuple]]:
    """Every key-store row, as bytes, in a stable order."""
    deks = _rows(path, "SELECT id, kek_id, nonce, wrapped, created_at FROM deks ORDER BY id")
    check = _rows(path, "SELECT kek_id, nonce, sealed FROM kek_check")
    return deks, check


def file_family(path: Path) -> dict[str, bytes]:
    """The database file and its -wal/-shm companions, by name."""
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir()) if p.name.startswith(path.name)}


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    changed = bytearray(data)
    changed[index] ^= mask
    return bytes(changed)


@pytest.fixture
def keystore_path(tmp_path) -> Path:
    return tmp_path / "keys" / "keystore.db"


@pytest.fixture
def master_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
async def vault(keystore_path, master_key):
    opened = await Vault.open(keystore_path, master_key)
    yield opened
    await opened.close()


async def test_a_sealed_credential_round_trips(vault):
    sealed = await vault.seal(user_id=1, account_id=10, venue=VENUE, credentials=CREDS)

    opened = await vault.unseal(sealed, user_id=1, venue=VENUE)

    assert opened == CREDS
    assert opened.api_key.reveal() == CREDS.api_key.reveal()
    assert opened.secret.reveal() == CREDS.secret.reveal()
    assert CREDS.secret.reveal().encode() not in sealed.ciphertext


async def test_each_credential_gets_its_own_data_key_and_nonce(vault):
    first = await vault.seal(user_id=1, account_id=10, venue=VENUE, credentials=CREDS)
    second = await vault.seal(user_id=1, account_id=10, venue=VENUE, credentials=CREDS)

    assert first.dek_id != second.dek_id
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext
    assert await vault.dek_ids() == {first.dek_id, second.dek_id}


@pytest.mark.parametrize(
    ("user_id", "account_id", "venue"),
    [(2, 10, VENUE), (1, 11, VENUE), (1, 10, "binanceusdm"), (1, 10, "kraken")],
    ids=["other-user", "other-account", "other-venue", "kraken"],
)
async def test_a_ciphertext_moved_to_another_user_account_or_venue_does_not_decrypt(
    vault, user_id, account_id, venue
):
    sealed = await vault.seal(user_id=1, account_id=10, venue=VENUE, credentials=CREDS)
    moved = dataclasses.replace(sealed, account_id=account_id)

    with pytest.raises(CredentialUnreadable):
        await vault.unseal(moved, user_id=user_id, venue=venue)


async def test_swapping_two_accounts_ciphertexts_is_detected(vault):
    mine = await vault.seal(user_id=1, account_id=10, venue=VENUE, credentials=CREDS)
    theirs = await vault.seal(
        user_id=2, account_id=20, venue=VENUE, credentials=Credentials("other-key-123", "other-secret-456")
    )

    with pytest.raises(CredentialUnreadable):  # their row, my data key
        await vault.unseal(dataclasses.replace(theirs, dek_id=mine.dek_id), user_id=2, venue=VENUE)
    with pytest.raises(CredentialUnreadable):  # their ciphertext under my account id
        await vault.unseal(dataclasses.replace(theirs, account_id=10), user_id=1, venue=VENUE)


async def test_every_flipped_bit_in_ciphertext_or_nonce_is_detected(vault):
    sealed = await vault.seal(user_id=1, account_id=10, venue=VENUE, credentials=CREDS)

    for field in ("ciphertext", "nonce"):
        data = getattr(sealed, field)
        for index in range(len(data)):
            for mask in (0x01, 0x80):
                tampered = dataclasses.replace(sealed, **{field: flip(data, index, mask)})
                with pytest.raises(CredentialUnreadable):
                    await vault.unseal(tampered, user_id=1, venue=VENUE)

    assert await vault.unseal(sealed, user_id=1, venue=VENUE) == CREDS


@pytest.mark.parametrize(
    "mangle",
    [lambda b: b[:-1], lambda b: b + b"\0", lambda b: b"", lambda b: b[:4]],
    ids=["truncated", "extended", "empty", "four-bytes"],
)
@pytest.mark.parametrize("field", ["ciphertext", "nonce"])
async def test_a_truncated_or_extended_field_is_reported_not_crashing(vault, field, mangle):
    sealed = await vault.seal(user_id=1, account_id=10, venue=VENUE, credentials=CREDS)
    tampered = dataclasses.replace(sealed, **{field: mangle(getattr(sealed, field))})

    with pytest.raises(CredentialUnreadable):
        await vault.unseal(tampered, user_id=1, venue=VENUE)


async def test_every_flipped_byte_of_a_wrapped_data_key_or_its_nonce_is_detected(vault, keystore_path):
    sealed = await vault.seal(user_id=1, account_id=10, venue=VENUE, credentials=CREDS)
    [(nonce, wrapped)] = _rows(
        keystore_path, "SELECT nonce, wrapped FROM deks WHERE id = ?", (sealed.dek_id,)
    )

    for column, original in (("wrapped", wrapped), ("nonce", nonce)):
        for index in range(len(original)):
            _write(keystore_path, UPDATE_DEK[column], (flip(original, index), sealed.dek_id))
            with pytest.raises(CredentialUnreadable):
                await vault.unseal(sealed, user_id=1, venue=VENUE)
        _write(keystore_path, UPDATE_DEK[column], (original, sealed.dek_id))

    assert await vault.unseal(sealed, user_id=1, venue=VENUE) == CREDS


async def test_a_mangled_wrapped_key_row_is_reported_not_crashing(vault, keystore_path):
    sealed = await vault.seal(user_id=1, account_id=10, venue=VENUE, credentials=CREDS)
    _write(keystore_path, "UPDATE deks SET nonce = ?, wrapped = ? WHERE id = ?", (b"", b"x", sealed.dek_id))

    with pytest.raises(CredentialUnreadable):
        await vault.unseal(sealed, user_id=1, venue=VENUE)


async def test_rotation_rewraps_every_data_key_and_keeps_every_credential_readable(
    vault, keystore_path, master_key
):
    sealed = [
        await vault.seal(
            user_id=u, account_id=a, venue=VENUE, credentials=Credentials(f"key-{a}-xyz", f"sec-{a}-xyz")
        )
        for u, a in ((1, 10), (1, 11), (2, 20))
    ]
    before_deks, before_check = keystore_snapshot(keystore_path)
    new_key = os.urandom(32)

    assert await vault.rotate(new_key) == 3

    after_deks, after_check = keystore_snapshot(keystore_path)
    assert [row[0] for row in after_deks] == [row[0] for row in before_deks]  # same data keys, re-wrapped
    for old, new in zip(before_deks, after_deks, strict=True):
        assert old[1] == kek_id_of(master_key) and new[1] == kek_id_of(new_key)
        assert new[2] != old[2]  # fresh wrapping nonce
        assert new[3] != old[3]  # different wrapped bytes
    assert after_check != before_check
    assert vault.kek_id == kek_id_of(new_key)
    for item, user in zip(sealed, (1, 1, 2), strict=True):
        assert (
            await vault.unseal(item, user_id=user, venue=VENUE)
        ).api_key.reveal() == f"key-{item.account_id}-xyz"
    await vault.close()

    with pytest.raises(MasterKeyMismatch):
        await Vault.open(keystore_path, master_key)
    reopened = await Vault.open(keystore_path, new_key)
    try:
        for item, user in zip(sealed, (1, 1, 2), strict=True):
            assert (await reopened.unseal(item, user_id=user, venue=VENUE)).secret.reveal().startswith("sec-")
    finally:
        await reopened.close()


async def test_rotation_leaves_no_key_wrapped_under_the_old_master_key_in_the_files(vault, keystore_path):
    await vault.seal(user_id=1, account_id=10, venue=VENUE, credentials=CREDS)
    [(old_wrapped,)] = _rows(keystore_path, "SELECT wrapped FROM deks")

    await vault.rotate(os.urandom(32))

    assert all(old_wrapped not in data for data in file_family(keystore_path).values())


async def test_a_failure_mid_rotation_leaves_the_key_store_unchanged(vault, keystore_path, master_key):
    sealed = [
        await vault.seal(
            user_id=1, account_id=a, venue=VENUE, credentials=Credentials(f"key-{a}-xyz", "secret-xyz")
        )
        for a in (10, 11, 12)
    ]
    # Corrupt the data key rotation reaches last: the others get re-wrapped before it fails.
    [(last_id, last_wrapped)] = _rows(
        keystore_path, "SELECT id, wrapped FROM deks ORDER BY rowid DESC LIMIT 1"
    )
    _write(keystore_path, "UPDATE deks SET wrapped = ? WHERE id = ?", (flip(last_wrapped, 0), last_id))
    before = keystore_snapshot(keystore_path)
    new_key = os.urandom(32)

    with pytest.raises(CredentialUnreadable):
        await vault.rotate(new_key)

    assert keystore_snapshot(keystore_path) == before
    assert vault.kek_id == kek_id_of(master_key)
    readable = [s for s in sealed if s.dek_id != last_id]
    for item in readable:
        assert (await vault.unseal(item, user_id=1, venue=VENUE)).secret.reveal() == "secret-xyz"
    await vault.close()
    with pytest.raises(MasterKeyMismatch):
        await Vault.open(keystore_path, new_key)
    reopened = await Vault.open(keystore_path, master_key)
    await reopened.close()


async def test_a_wrong_master_key_refuses_to_open_and_changes_no_byte(keystore_path, master_key):
    first = await Vault.open(keystore_path, master_key)
    await first.seal(user_id=1, account_id=10, venue=VENUE, credentials=CREDS)
    await first.close()
    before = file_family(keystore_path)
    wrong = os.urandom(32)

    with pytest.raises(MasterKeyMismatch) as caught:
        await Vault.open(keystore_path, wrong)

    assert file_family(keystore_path) == before
    message = str(caught.value)
    assert "master key" in message.lower() and str(keystore_path) in message
    for key in (wrong, master_key):
        for form in (base64.b64encode(key).decode(), key.hex()):
            assert form not in message
    reopened = await Vault.open(keystore_path, master_key, expect_existing=True)
    await reopened.close()


async def test_a_wrong_master_key_is_refused_even_with_no_credentials_stored(keystore_path):
    created = await Vault.open(keystore_path, os.urandom(32))
    await created.close()

    with pytest.raises(MasterKeyMismatch):
        await Vault.open(keystore_path, os.urandom(32))


@pytest.mark.parametrize("existing_file", [False, True], ids=["missing", "empty-file"])
async def test_expecting_existing_keys_refuses_an_empty_key_store(keystore_path, master_key, existing_file):
    if existing_file:
        keystore_path.parent.mkdir(parents=True)
        keystore_path.touch()

    with pytest.raises(MasterKeyMismatch, match="STRATA_KEYSTORE_PATH"):
        await Vault.open(keystore_path, master_key, expect_existing=True)

    # Nothing was created or initialised: no file at a wrong path, no check value sealed with this key.
    if existing_file:
        assert keystore_path.read_bytes() == b""
    else:
        assert not keystore_path.exists()


async def test_a_shredded_credential_is_unrecoverable_even_from_an_old_main_database_copy(
    tmp_path, keystore_path, master_key
):
    main_path = tmp_path / "data" / "strata.db"
    store = await store_module.Store.open(main_path)
    vault = await Vault.open(keystore_path, master_key)
    try:
        await store.users.upsert(1, 1)
        async with store.db.transaction() as tx:
            account_id = await store.accounts.create(tx, user_id=1, venue=VENUE, label=VENUE)
            sealed = await vault.seal(user_id=1, account_id=account_id, venue=VENUE, credentials=CREDS)
            await store.accounts.store_credential(tx, sealed)
        await store.close()
        backup_path = tmp_path / "backup.db"
        shutil.copyfile(main_path, backup_path)
        [(wrapped,)] = _rows(keystore_path, "SELECT wrapped FROM deks WHERE id = ?", (sealed.dek_id,))

        store = await store_module.Store.open(main_path)
        await vault.shred(sealed.dek_id)
        async with store.db.transaction() as tx:
            await store.accounts.delete(tx, account_id)

        assert await store.accounts.credential(account_id) is None
        assert sealed.dek_id not in await vault.dek_ids()
        # Not even the key store's pages or WAL keep a copy of the wrapped data key.
        assert all(wrapped not in data for data in file_family(keystore_path).values())
        backup = await store_module.Store.open(backup_path)
        try:
            old = await backup.accounts.credential(account_id)
            assert old is not None and old.ciphertext == sealed.ciphertext
            with pytest.raises(CredentialUnreadable):
                await vault.unseal(old, user_id=1, venue=VENUE)
        finally:
            await backup.close()
    finally:
        await store.close()
        await vault.close()
    assert all(wrapped not in data for data in file_family(keystore_path).values())


async def test_prune_shreds_only_data_keys_no_credential_refers_to(vault):
    kept = await vault.seal(user_id=1, account_id=10, venue=VENUE, credentials=CREDS)
    orphan = await vault.seal(user_id=1, account_id=11, venue=VENUE, credentials=CREDS)

    assert await vault.prune({kept.dek_id}) == 1

    assert await vault.unseal(kept, user_id=1, venue=VENUE) == CREDS
    with pytest.raises(CredentialUnreadable):
        await vault.unseal(orphan, user_id=1, venue=VENUE)
    assert await vault.prune({kept.dek_id}) == 0


def test_vault_repr_shows_only_the_key_id(master_key):
    class _NoDb:
        pass

    vault = Vault(_NoDb(), master_key)  # type: ignore[arg-type]
    text = repr(vault)
    assert kek_id_of(master_key) in text
    assert base64.b64encode(master_key).decode() not in text and master_key.hex() not in text


# --- the master key file generated when none is configured ---


def test_a_missing_master_key_is_generated_once_as_a_private_file_with_a_warning(tmp_path, caplog):
    data_dir = tmp_path / "data"
    settings = load_settings({"STRATA_DATA_DIR": str(data_dir)}, dotenv=False)

    with caplog.at_level(logging.WARNING, logger="bot.master_key"):
        key = load_master_key(settings)

    key_file = data_dir / "master.key"
    assert len(key) == 32
    assert base64.b64decode(key_file.read_text().strip()) == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "another volume" in warnings[0].getMessage() and str(key_file) in warnings[0].getMessage()
    assert base64.b64encode(key).decode() not in caplog.text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="bot.master_key"):
        assert load_master_key(settings) == key
    assert caplog.records == []


def test_a_configured_master_key_is_used_and_nothing_is_generated(tmp_path):
    key = os.urandom(32)
    settings = load_settings(
        {"STRATA_DATA_DIR": str(tmp_path / "data"), "STRATA_MASTER_KEY": base64.b64encode(key).decode()},
        dotenv=False,
    )

    assert load_master_key(settings) == key
    assert not (tmp_path / "data").exists()


def test_without_create_a_missing_master_key_is_an_error_not_a_new_key(tmp_path):
    settings = load_settings({"STRATA_DATA_DIR": str(tmp_path / "data")}, dotenv=False)

    with pytest.raises(ConfigError, match="STRATA_MASTER_KEY"):
        load_master_key(settings, create=False)
    assert not (tmp_path / "data" / "master.key").exists()


async def test_no_master_key_for_an_existing_key_store_is_an_error_and_no_key_is_generated(tmp_path):
    data_dir = tmp_path / "data"
    settings = load_settings({"STRATA_DATA_DIR": str(data_dir)}, dotenv=False)
    created = await Vault.open(settings.keystore_path, os.urandom(32))
    await created.close()
    before = file_family(settings.keystore_path)

    with pytest.raises(ConfigError) as caught:
        load_master_key(settings)

    assert "STRATA_MASTER_KEY" in str(caught.value) and "STRATA_MASTER_KEY_FILE" in str(caught.value)
    assert not (data_dir / "master.key").exists()
    assert file_family(settings.keystore_path) == before


async def test_fingerprints_are_keyed_per_purpose_and_survive_a_master_key_rotation(vault, keystore_path, master_key):
    api_key = "k" * 64
    first = await vault.fingerprint("api-key:binance", api_key)
    assert first == await vault.fingerprint("api-key:binance", api_key)
    assert first != await vault.fingerprint("api-key:kraken", api_key)
    assert first != await vault.fingerprint("api-key:binance", "j" * 64)
    assert api_key not in first and hashlib.sha256(api_key.encode()).hexdigest() != first  # never a plain hash
    new_key = os.urandom(32)
    await vault.rotate(new_key)
    await vault.close()
    reopened = await Vault.open(keystore_path, new_key)
    try:
        assert await reopened.fingerprint("api-key:binance", api_key) == first  # the duplicate check still holds
    finally:
        await reopened.close()
    with pytest.raises(MasterKeyMismatch):
        await Vault.open(keystore_path, master_key)
