"""/connect end to end: real python-telegram-bot against the fake Telegram, real ccxt against the fake exchanges."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets

import pytest

from tests.chat_helpers import OTHER, USER, connect_account, list_accounts, register, send_key_pair, start_connect
from tests.databases import rows


def deleted_ids(s, chat_id: int) -> set[int]:
    return {d.message_id for d in s.tg.deleted if d.chat_id == chat_id}


def assert_no_leak(s, *secrets_: str) -> None:
    blob = s.files_bytes()
    log = s.log.getvalue()
    for value in (*secrets_, s.tg.token):
        for form in (value.encode(), value.encode().hex().encode(), base64.b64encode(value.encode())):
            assert form not in blob, "a secret reached a file in the data folder"
            assert form.decode() not in log, "a secret reached the logs"


async def stored_accounts(s) -> list[tuple]:
    return await rows(s.settings.database, "SELECT venue, label, user_id FROM accounts ORDER BY id")


async def keystore_deks(s) -> int:
    return (await rows(s.settings.keystore, "SELECT count(*) FROM deks"))[0][0]


@pytest.mark.parametrize(
    ("venue", "button"), [("binance", "Binance Spot"), ("binanceusdm", "Binance Futures"), ("kraken", "Kraken")]
)
async def test_full_connect_deletes_both_messages_stores_sealed_key_and_leaks_nothing(
    strata, fake_exchanges, venue, button
):
    api_key, secret = register(fake_exchanges, venue)
    await start_connect(strata, button)
    key_msg, secret_msg = await send_key_pair(strata, api_key, secret)
    done = await strata.next_reply(USER, contains="Connected")
    assert venue in done.text  # the account label
    assert {key_msg["message_id"], secret_msg["message_id"]} <= deleted_ids(strata, USER)
    signed = [r for r in fake_exchanges.books[venue].requests if r.api_key == api_key]
    assert signed and all(r.signature_valid for r in signed)
    _, listing = await list_accounts(strata)
    assert venue in listing.text and "active" in listing.text
    assert await stored_accounts(strata) == [(venue, venue, USER)]
    assert await keystore_deks(strata) == 1
    assert_no_leak(strata, api_key, secret)


async def test_second_account_on_a_venue_gets_its_own_label(strata, fake_exchanges):
    for expected in ("binance", "binance-2"):
        api_key, secret = register(fake_exchanges, "binance")
        await start_connect(strata, "Binance Spot")
        await send_key_pair(strata, api_key, secret)
        done = await strata.next_reply(USER, contains="Connected")
        assert expected in done.text
    assert [row[1] for row in await stored_accounts(strata)] == ["binance", "binance-2"]


async def test_withdraw_enabled_key_is_refused_and_nothing_is_stored(strata, fake_exchanges):
    api_key, secret = register(fake_exchanges, "binance", can_withdraw=True)
    await start_connect(strata, "Binance Spot")
    key_msg, secret_msg = await send_key_pair(strata, api_key, secret)
    refusal = await strata.next_reply(USER, contains="withdraw")
    assert "nothing was stored" in refusal.text.lower()
    assert {key_msg["message_id"], secret_msg["message_id"]} <= deleted_ids(strata, USER)
    assert await stored_accounts(strata) == [] and await keystore_deks(strata) == 0
    assert_no_leak(strata, api_key, secret)


async def test_kraken_key_that_can_withdraw_is_refused(strata, fake_exchanges):
    api_key, secret = register(fake_exchanges, "kraken", can_withdraw=True)
    await start_connect(strata, "Kraken")
    await send_key_pair(strata, api_key, secret)
    refusal = await strata.next_reply(USER, contains="withdraw")
    assert "nothing was stored" in refusal.text.lower()
    assert await stored_accounts(strata) == []


async def test_wrong_secret_is_refused_with_a_plain_answer(strata, fake_exchanges):
    api_key, _ = register(fake_exchanges, "binance")
    await start_connect(strata, "Binance Spot")
    await send_key_pair(strata, api_key, secrets.token_hex(32))
    refusal = await strata.next_reply(USER, contains="nothing was stored")
    assert "key" in refusal.text.lower()
    assert await stored_accounts(strata) == []


async def test_malformed_key_is_rejected_before_any_network_call(strata, fake_exchanges):
    await start_connect(strata, "Binance Spot")
    bad = await strata.send(USER, "not a key at all")
    hint = await strata.next_reply(USER, contains="again")
    assert "deleted" in hint.text.lower()
    assert bad["message_id"] in deleted_ids(strata, USER)
    assert not [r for r in fake_exchanges.books["binance"].requests if r.api_key]


async def test_pem_secret_gets_the_hmac_hint(strata, fake_exchanges):
    api_key, _ = register(fake_exchanges, "binance")
    await start_connect(strata, "Binance Spot")
    await strata.send(USER, api_key)
    await strata.next_reply(USER, contains="Now send")
    await strata.send(USER, "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIGx\n-----END PRIVATE KEY-----")
    hint = await strata.next_reply(USER, contains="HMAC")
    assert "deleted" in hint.text.lower()


async def test_exchange_timeout_gives_a_clear_message_and_stores_nothing(strata, fake_exchanges):
    api_key, secret = register(fake_exchanges, "binance")
    book = fake_exchanges.books["binance"]
    book.hang_seconds = 12  # longer than the bot's 10 s request timeout
    book.inject("timeout", count=20, path="/api/v3/account")
    await start_connect(strata, "Binance Spot")
    await send_key_pair(strata, api_key, secret)
    answer = await strata.next_reply(USER, contains="nothing was stored", timeout=60)
    assert "try again" in answer.text.lower()
    assert await stored_accounts(strata) == []


async def test_cancel_mid_intake_keeps_deleting_and_stores_nothing(strata, fake_exchanges):
    api_key, _ = register(fake_exchanges, "kraken")
    await start_connect(strata, "Kraken")
    key_msg = await strata.send(USER, api_key)
    await strata.next_reply(USER, contains="Now send")
    await strata.send(USER, "/cancel")
    await strata.next_reply(USER, contains="Cancelled")
    assert key_msg["message_id"] in deleted_ids(strata, USER)
    assert strata.runtime.intakes.get(USER) is None
    # After the flow ended, a pasted secret is still deleted, with a warning.
    stray = await strata.send(USER, base64.b64encode(os.urandom(64)).decode())
    await strata.next_reply(USER, contains="revoke")
    assert stray["message_id"] in deleted_ids(strata, USER)
    assert await stored_accounts(strata) == []


async def test_intake_times_out_and_forgets_the_key(strata, fake_exchanges):
    strata.runtime.intakes.timeout = 0.5
    api_key, _ = register(fake_exchanges, "binance")
    await start_connect(strata, "Binance Spot")
    key_msg = await strata.send(USER, api_key)
    await strata.next_reply(USER, contains="Now send")
    await strata.next_reply(USER, contains="timed out", timeout=5)
    assert key_msg["message_id"] in deleted_ids(strata, USER)
    assert strata.runtime.intakes.get(USER) is None


async def test_failed_deletion_tells_the_user_to_delete_and_revoke(strata, fake_exchanges):
    api_key, _ = register(fake_exchanges, "binance")
    await start_connect(strata, "Binance Spot")
    strata.tg.make_delete_fail(USER)
    await strata.send(USER, api_key)
    warning = await strata.next_reply(USER, contains="could not delete")
    assert "revoke" in warning.text.lower()
    assert strata.runtime.intakes.get(USER) is None


async def test_connect_in_a_group_is_refused_and_key_messages_there_are_deleted(strata):
    group = -100500
    strata.tg.add_group(group)
    await strata.send(USER, "/connect", chat_id=group, chat_type="group")
    refusal = await strata.next_reply(group, contains="private chat")
    assert refusal.reply_markup is None or "Binance" not in str(refusal.reply_markup)
    leaked = await strata.send(USER, secrets.token_hex(32), chat_id=group, chat_type="group")
    await strata.next_reply(group, contains="revoke")
    assert leaked["message_id"] in deleted_ids(strata, group)


async def test_disconnect_shreds_the_key_and_removes_the_account(strata, fake_exchanges):
    account = await connect_account(strata, fake_exchanges)
    assert await keystore_deks(strata) == 1
    await strata.send(USER, "/disconnect")
    menu = await strata.next_reply(USER, contains="Which account")
    await strata.press(USER, menu, 0)
    confirm = await strata.next_reply(USER, contains="Disconnect")
    await strata.press(USER, confirm, "Confirm disconnect")
    await strata.next_reply(USER, contains="destroyed")
    assert await keystore_deks(strata) == 0
    assert await strata.runtime.store.accounts.get(account.id) is None
    await strata.send(USER, "/accounts")
    assert "no connected accounts" in (await strata.next_reply(USER, contains="account")).text


async def test_forged_callback_for_another_users_account_changes_nothing(strata, fake_exchanges):
    victim = await connect_account(strata, fake_exchanges, user=OTHER)
    # The attacker owns an account too, so they get a real disconnect menu to tamper with.
    await connect_account(strata, fake_exchanges, user=USER)
    await strata.send(USER, "/disconnect")
    menu = await strata.next_reply(USER, contains="Which account")
    strata.tg.press_callback_data(USER, menu, f"disc:yes:{victim.id}")
    answer = await strata.next_reply(USER, contains="not")
    assert "no longer" in answer.text or "not" in answer.text
    assert await strata.runtime.store.accounts.get(victim.id) is not None
    assert await keystore_deks(strata) == 2


async def test_allowlisted_deployment_refuses_others_politely(make_strata, fake_exchanges):
    async with make_strata(STRATA_ALLOWED_USERS=str(OTHER)) as s:
        await s.send(USER, "/connect")
        refusal = await s.next_reply(USER)
        assert "private" in refusal.text.lower()
        assert "Which exchange" not in refusal.text
        await s.send(OTHER, "/start")
        welcome = await s.next_reply(OTHER)
        assert "Strata" in welcome.text


async def test_start_and_help_and_the_command_menu(strata):
    await strata.send(USER, "/start")
    welcome = await strata.next_reply(USER)
    assert "withdraw" in welcome.text.lower() and "/connect" in welcome.text
    await strata.send(USER, "/help")
    help_text = (await strata.next_reply(USER)).text
    for command in ("/connect", "/accounts", "/disconnect", "/allocate", "/status", "/panic", "/cancel"):
        assert command in help_text
    await asyncio.sleep(0)
    assert {c["command"] for c in strata.tg.commands} >= {"start", "help", "connect", "allocate", "panic"}


async def test_key_and_secret_pasted_in_one_message_are_both_taken(strata, fake_exchanges):
    api_key, secret = register(fake_exchanges, "binance")
    await start_connect(strata, "Binance Spot")
    both = await strata.send(USER, f"{api_key}\n{secret}")
    done = await strata.next_reply(USER, contains="Connected")
    assert "binance" in done.text
    assert both["message_id"] in deleted_ids(strata, USER)
    assert_no_leak(strata, api_key, secret)


async def test_accounts_can_be_renamed_but_never_to_another_venues_id(strata, fake_exchanges):
    await connect_account(strata, fake_exchanges, "binance")
    await strata.send(USER, "/accounts rename binance kraken")
    assert "another exchange" in (await strata.next_reply(USER)).text
    await strata.send(USER, "/accounts rename binance main")
    assert "Renamed" in (await strata.next_reply(USER)).text
    assert [row[1] for row in await stored_accounts(strata)] == ["main"]


async def test_key_and_secret_sent_back_to_back_are_taken_in_order(strata, fake_exchanges):
    api_key, secret = register(fake_exchanges, "kraken")
    await start_connect(strata, "Kraken")
    await strata.send(USER, api_key)
    await strata.send(USER, secret)  # without waiting for the bot's answer to the key
    done = await strata.next_reply(USER, contains="Connected")
    assert "kraken" in done.text
    assert_no_leak(strata, api_key, secret)


async def test_a_slow_key_check_is_not_cut_short_by_the_intake_timeout(strata, fake_exchanges):
    strata.runtime.intakes.timeout = 1.0
    api_key, secret = register(fake_exchanges, "binance")
    book = fake_exchanges.books["binance"]
    book.hang_seconds = 2  # the exchange answers slowly, but within the bot's request timeout
    book.inject("timeout", count=1, path="/api/v3/account")
    await start_connect(strata, "Binance Spot")
    await send_key_pair(strata, api_key, secret)
    await strata.next_reply(USER, contains="Connected", timeout=20)
    said = [m.text for m in strata.tg.sent if m.chat_id == USER]
    assert not any("timed out" in text for text in said)


async def test_a_message_sent_while_the_key_is_checked_is_deleted_too(strata, fake_exchanges):
    api_key, secret = register(fake_exchanges, "binance")
    book = fake_exchanges.books["binance"]
    book.hang_seconds = 1.5
    book.inject("timeout", count=1, path="/api/v3/account")
    await start_connect(strata, "Binance Spot")
    await send_key_pair(strata, api_key, secret)
    await strata.next_reply(USER, contains="Checking the key")
    oops = await strata.send(USER, "oops, my secret was wrong, it is abc")
    await strata.next_reply(USER, contains="Connected", timeout=20)
    await strata.next_reply(USER, contains="arrived while", timeout=10)
    assert oops["message_id"] in deleted_ids(strata, USER)


async def test_money_commands_in_a_group_point_to_the_private_chat_and_never_reroute_alerts(strata, fake_exchanges):
    await connect_account(strata, fake_exchanges, "binance")
    group = -100777
    strata.tg.add_group(group)
    for command in ("/settings", "/status", "/accounts", "/allocate binance dca 100 BTC/USDT", "/panic"):
        await strata.send(USER, command, chat_id=group, chat_type="group")
        answer = await strata.next_reply(group)
        assert "private chat" in answer.text, (command, answer.text)
    user = await strata.runtime.store.users.get(USER)
    assert user.chat_id == USER
