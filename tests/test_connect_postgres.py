"""/connect with both databases on PostgreSQL: the key store is a database of its own, the main database holds
ciphertext only, and no table of either holds the key, the secret or the database password."""

from __future__ import annotations

import asyncpg

from tests.chat_helpers import USER, register, send_key_pair, start_connect
from tests.databases import fresh_postgres_database
from tests.test_connect import assert_no_leak


async def dump(url: str) -> str:
    """Every row of every table of the database, as text (bytea as hex, so encodings of a secret show too)."""
    conn = await asyncpg.connect(url)
    try:
        listed = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        tables = [r["tablename"] for r in listed]
        parts = [f"table {t}" for t in tables]
        for table in tables:
            parts += [r["row"] for r in await conn.fetch(f'SELECT t::text AS row FROM "{table}" t')]  # noqa: S608
        return "\n".join(parts)
    finally:
        await conn.close()


async def test_a_key_connected_on_postgresql_is_sealed_in_the_main_database_and_wrapped_in_the_key_store(
    make_strata, fake_exchanges, postgres_server
):
    main = await fresh_postgres_database(postgres_server, "connect_main")
    keys = await fresh_postgres_database(postgres_server, "connect_keys", migrated=False)
    api_key, secret = register(fake_exchanges, "binance")
    async with make_strata(STRATA_DATABASE_URL=main, STRATA_KEYSTORE_URL=keys) as s:
        await start_connect(s, "Binance Spot")
        await send_key_pair(s, api_key, secret)
        await s.next_reply(USER, contains="Connected")
        (account,) = await s.runtime.store.accounts.list_for_user(USER)
        assert await s.runtime.vault.dek_ids()  # the wrapped data key is in the PostgreSQL key store
        assert_no_leak(s, api_key, secret)  # logs and files
        main_rows, key_rows = await dump(main), await dump(keys)
    assert "table credentials" in main_rows and "table deks" not in main_rows
    assert "table deks" in key_rows and "table credentials" not in key_rows
    for value in (api_key, secret):
        for form in (value, value.encode().hex()):
            assert form not in main_rows and form not in key_rows
    assert account.label == "binance"
