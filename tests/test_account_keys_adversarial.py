"""Keys at the edges, tried as an attacker or an unlucky user would (review of the rejected/replaced keys work).

Through the real bot, the fake Telegram and the fake exchanges (real PTB, real ccxt signing).
"""

from __future__ import annotations

import asyncio
import inspect
from datetime import timedelta
from decimal import Decimal

from storage.orders import LIVE
from tests.chat_helpers import (
    OTHER,
    USER,
    connect_with_key,
    list_accounts,
    make_keypair,
    register,
    send_key_pair,
    start_connect,
)
from tests.databases import rows
from tests.test_chat_strategies import allocate_one_line, open_orders, wait_for_open_orders
from tests.test_connect import assert_no_leak, deleted_ids, keystore_deks, stored_accounts


async def test_a_key_typed_after_connect_in_a_group_is_deleted(strata, fake_exchanges):
    api_key, _ = register(fake_exchanges, "binance")
    group = -100777
    strata.tg.add_group(group)
    typed = await strata.send(USER, f"/connect {api_key}", chat_id=group, chat_type="group")
    note = await strata.next_reply(group, contains="revoke")
    assert "private chat" in note.text
    assert typed["message_id"] in deleted_ids(strata, group)


async def test_a_key_and_secret_pasted_together_outside_connect_are_deleted(strata, fake_exchanges):
    api_key, secret = register(fake_exchanges, "binance")
    group = -100778
    strata.tg.add_group(group)
    pasted = await strata.send(USER, f"{api_key}\n{secret}", chat_id=group, chat_type="group")
    await strata.next_reply(group, contains="revoke")
    assert pasted["message_id"] in deleted_ids(strata, group)
    mention = await strata.send(USER, f"@strata_test_bot {api_key}", chat_id=group, chat_type="group")
    await strata.next_reply(group, contains="revoke")  # a privacy-mode group shows the bot only such messages
    assert mention["message_id"] in deleted_ids(strata, group)
    private = await strata.send(USER, f"{api_key} {secret}")
    await strata.next_reply(USER, contains="revoke")
    assert private["message_id"] in deleted_ids(strata, USER)
    assert_no_leak(strata, api_key, secret)


async def test_a_kraken_key_of_another_account_cannot_replace_one_whose_first_orders_were_never_confirmed(
    strata, fake_exchanges
):
    # The proof looked at the account's first three live orders only; when those had no exchange id (their
    # sends timed out), a key of any Kraken account "saw" them all and replaced the key.
    book = fake_exchanges.books["kraken"]
    book.set_price("BTC/USD", "65000")
    account, old_key = await connect_with_key(strata, fake_exchanges, "kraken", balances={"USD": Decimal(5000)})
    book.inject("server_error", count=3, path="AddOrder")
    await allocate_one_line(strata, "/allocate kraken grid 500 BTC/USD low=60000 high=70000 levels=10")
    await wait_for_open_orders(fake_exchanges, "kraken", old_key)
    await strata.runtime.engine.settle()  # every buy sent: under load the last ones were still on their way
    book.revoke_key(old_key)
    await strata.next_reply(USER, contains="was rejected", timeout=15)
    live = await strata.runtime.store.orders.in_states(LIVE, account_id=account.id)
    assert [o.exchange_order_id for o in live[:3]] == [None, None, None]
    assert any(o.exchange_order_id for o in live)

    stranger_key, stranger_secret = register(fake_exchanges, "kraken")
    await strata.send(USER, "/connect replace kraken")
    await strata.next_reply(USER, contains="New key for kraken")
    await send_key_pair(strata, stranger_key, stranger_secret)
    refusal = await strata.next_reply(USER, contains="Nothing was", timeout=15)
    assert "cannot see" in refusal.text
    assert (await strata.runtime.store.accounts.get(account.id)).status == "key_rejected"


async def test_a_kraken_key_that_cannot_read_its_orders_is_not_revived_every_five_minutes(strata, fake_exchanges):
    # Kraken's "Query Funds" and "Query Open Orders & Trades" are separate permissions: a key that reads its
    # balance but not its orders passes the checks of /connect, yet every poll of its orders is refused. The
    # retry revived it ("works again"), the next poll rejected it again: two alerts every five minutes, forever.
    book = fake_exchanges.books["kraken"]
    book.set_price("BTC/USD", "65000")
    account, api_key = await connect_with_key(strata, fake_exchanges, "kraken", balances={"USD": Decimal(5000)})
    await allocate_one_line(strata, "/allocate kraken grid 500 BTC/USD low=60000 high=70000 levels=5")
    await wait_for_open_orders(fake_exchanges, "kraken", api_key)
    book.keys[api_key].can_query_orders = False  # the user edited the key on Kraken
    await strata.next_reply(USER, contains="was rejected", timeout=15)

    engine, store = strata.runtime.engine, strata.runtime.store
    assert await engine.retry_rejected_keys() == 0
    assert (await store.accounts.get(account.id)).status == "key_rejected"
    await engine.poll_once()
    alerts = [m.text for m in strata.tg.sent if m.chat_id == USER and m.text]
    assert not any("works again</b>" in t for t in alerts)
    assert sum("was rejected" in t for t in alerts) == 1

    book.keys[api_key].can_query_orders = True  # fixed on Kraken: now it does work again
    assert await engine.retry_rejected_keys() == 1
    await strata.next_reply(USER, contains="works again", timeout=10)


async def test_a_revoked_key_with_many_orders_left_open_can_still_be_disconnected(strata, fake_exchanges):
    # The confirmation (and the final answer) list every order left on the exchange, one line each: a grid of
    # 100 levels made them longer than Telegram's 4,096 characters, the message was refused, and the account
    # could not be disconnected at all — stranded again.
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "65000")
    account, api_key = await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal(5000)})
    await allocate_one_line(strata, "/allocate binance grid 3000 BTC/USDT low=60000 high=70000 levels=100")
    deadline = asyncio.get_running_loop().time() + 20
    while len(open_orders(fake_exchanges, "binance", api_key)) < 49:
        assert asyncio.get_running_loop().time() < deadline, "the grid did not place its buys"
        await asyncio.sleep(0.1)
    resting = open_orders(fake_exchanges, "binance", api_key)
    book.revoke_key(api_key)
    await strata.next_reply(USER, contains="was rejected", timeout=15)

    await strata.send(USER, "/disconnect binance")
    confirm = await strata.next_reply(USER, contains="Disconnect", timeout=10)
    assert "cancel them there" in confirm.text
    while not confirm.reply_markup:  # a long list follows in more messages, the buttons on the last one
        confirm = await strata.next_reply(USER)
    await strata.press(USER, confirm, "Confirm disconnect")
    await strata.next_reply(USER, contains="destroyed", timeout=15)
    assert await strata.runtime.store.accounts.get(account.id) is None
    shown = "\n".join(m.text for m in strata.tg.sent if m.chat_id == USER and m.text)
    for order in resting:  # every order left open is named to the user, so they can cancel it there
        assert f"order id {order.id}" in shown


async def test_a_replaced_key_never_sends_a_paused_strategys_order_that_never_reached_the_exchange(
    strata, fake_exchanges
):
    # An order whose send timed out just before the key was revoked stays "unknown". Once a new key makes the
    # account active again, the resolver found it missing and sent it, for a strategy that stays paused.
    book = fake_exchanges.books["kraken"]
    book.set_price("BTC/USD", "65000")
    account, old_key = await connect_with_key(strata, fake_exchanges, "kraken", balances={"USD": Decimal(5000)})
    book.inject("server_error", count=1, path="AddOrder")
    await allocate_one_line(strata, "/allocate kraken grid 500 BTC/USD low=60000 high=70000 levels=10")
    await wait_for_open_orders(fake_exchanges, "kraken", old_key)
    await strata.runtime.engine.settle()  # every buy sent: under load the last ones were still on their way
    book.revoke_key(old_key)
    await strata.next_reply(USER, contains="was rejected", timeout=15)
    store = strata.runtime.store
    strategy = (await store.strategies.list_for_user(USER))[-1]
    unsent = [o for o in await store.orders.in_states(LIVE, account_id=account.id) if not o.exchange_order_id]
    assert len(unsent) == 1
    placed = len(book.all_orders(book.keys[old_key]))

    new_key, new_secret = make_keypair("kraken")
    book.add_key(new_key, new_secret, same_account_as=old_key)
    await strata.send(USER, "/connect replace kraken")
    await strata.next_reply(USER, contains="New key for kraken")
    await send_key_pair(strata, new_key, new_secret)
    await strata.next_reply(USER, contains="New key stored", timeout=15)
    strata.runtime.engine.desk.unknown_grace = timedelta(0)  # as if the replacement came a while later
    for _ in range(3):
        await strata.runtime.engine.poll_once()

    assert (await store.strategies.get(strategy.id)).status == "paused"
    assert len(book.all_orders(book.keys[new_key])) == placed  # nothing sent for the paused strategy
    assert await store.orders.in_states(LIVE, strategy_id=strategy.id) != []  # its resting orders still followed
    ended = await store.orders.get(unsent[0].id)
    assert ended.status not in LIVE


# --- one exchange account connected once (per venue) --------------------------------------------------------


async def test_a_second_key_of_a_connected_binance_account_is_refused_whoever_sends_it(strata, fake_exchanges):
    # Two keys of one Binance account (one uid) connected as two Strata accounts promised one balance to two
    # budgets. Refused only once the key passed the exchange checks: a wrong secret learns nothing.
    book = fake_exchanges.books["binance"]
    _, first_key = await connect_with_key(strata, fake_exchanges, "binance")
    await strata.send(USER, "/accounts rename binance main-spot")
    await strata.next_reply(USER, contains="Renamed")
    second_key, second_secret = make_keypair("binance")
    book.add_key(second_key, second_secret, same_account_as=first_key)
    await start_connect(strata, "Binance Spot")
    await send_key_pair(strata, second_key, second_secret)
    mine = await strata.next_reply(USER, contains="already connected", timeout=15)
    assert "/connect replace main-spot" in mine.text

    third_key, third_secret = make_keypair("binance")
    book.add_key(third_key, third_secret, same_account_as=first_key)
    await start_connect(strata, "Binance Spot", user=OTHER)
    await send_key_pair(strata, third_key, make_keypair("binance")[1], user=OTHER)
    wrong = await strata.next_reply(OTHER, contains="nothing was stored", timeout=15)
    assert "already connected" not in wrong.text
    await start_connect(strata, "Binance Spot", user=OTHER)
    await send_key_pair(strata, third_key, third_secret, user=OTHER)
    theirs = await strata.next_reply(OTHER, contains="already connected", timeout=15)
    assert "main-spot" not in theirs.text and "replace" not in theirs.text  # nothing about the other user

    assert await stored_accounts(strata) == [("binance", "main-spot", USER)]
    assert await keystore_deks(strata) == 1
    assert_no_leak(strata, second_key, second_secret, third_key, third_secret)


async def test_a_binance_uid_is_connected_once_per_venue_spot_and_futures_are_separate_wallets(
    strata, fake_exchanges
):
    spot, usdm = fake_exchanges.books["binance"], fake_exchanges.books["binanceusdm"]
    api_key, secret = make_keypair("binance")
    spot.add_key(api_key, secret)  # one Binance key with spot and futures enabled: one uid on both
    usdm.add_key(api_key, secret)
    for button in ("Binance Spot", "Binance Futures"):
        await start_connect(strata, button)
        await send_key_pair(strata, api_key, secret)
        await strata.next_reply(USER, contains="Connected", timeout=15)

    second_key, second_secret = make_keypair("binance")
    usdm.add_key(second_key, second_secret, same_account_as=api_key)  # USD-M reads the uid from spot's endpoint
    await start_connect(strata, "Binance Futures")
    await send_key_pair(strata, second_key, second_secret)
    refused = await strata.next_reply(USER, contains="already connected", timeout=15)
    assert "/connect replace binanceusdm" in refused.text
    assert await stored_accounts(strata) == [("binance", "binance", USER), ("binanceusdm", "binanceusdm", USER)]


# --- accounts without a recorded exchange account (owner_ref) ---------------------------------------------


async def _owner_refs(database) -> dict[int, str | None]:
    return dict(await rows(database, "SELECT id, owner_ref FROM accounts"))


async def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (await result if inspect.isawaitable(result := condition()) else result):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_binance_account_without_its_owner_recorded_gets_it_at_start_up_best_effort(
    make_strata, fake_exchanges
):
    book = fake_exchanges.books["binance"]
    async with make_strata() as s:
        account, api_key = await connect_with_key(s, fake_exchanges, "binance")
        database = s.settings.database
    recorded = (await _owner_refs(database))[account.id]
    assert recorded is not None
    await rows(database, "UPDATE accounts SET owner_ref = NULL")  # connected before owners were recorded

    def uid_reads() -> int:
        return sum(r.path == "/api/v3/account" and r.api_key == api_key for r in book.requests)

    before = uid_reads()
    book.inject("server_error", count=1, path="/api/v3/account")
    async with make_strata() as s:  # the read fails: the bot starts anyway, the next start tries again
        await _wait_for(lambda: uid_reads() > before)
        await asyncio.sleep(0.3)
        assert (await _owner_refs(database))[account.id] is None
        await list_accounts(s)
    before = uid_reads()
    async with make_strata():
        async def recorded_again() -> bool:
            return (await _owner_refs(database))[account.id] is not None

        await _wait_for(recorded_again)
        assert (await _owner_refs(database))[account.id] == recorded
        assert uid_reads() == before + 1  # one weight-20 call for the account


async def test_a_binance_account_without_its_owner_recorded_is_not_given_any_key(make_strata, fake_exchanges):
    # With no uid recorded and no orders to prove the account, any Binance key replaced the account's key.
    book = fake_exchanges.books["binance"]
    async with make_strata() as s:
        account, old_key = await connect_with_key(s, fake_exchanges, "binance")
        database = s.settings.database
    book.revoke_key(old_key)
    await rows(database, "UPDATE accounts SET owner_ref = NULL, status = 'key_rejected'")
    ((before,),) = await rows(database, "SELECT ciphertext FROM credentials")

    async with make_strata() as s:
        stranger_key, stranger_secret = register(fake_exchanges, "binance")  # another Binance account
        await s.send(USER, "/connect replace binance")
        await s.next_reply(USER, contains="New key for binance")
        await send_key_pair(s, stranger_key, stranger_secret)
        refusal = await s.next_reply(USER, contains="Nothing was changed", timeout=15)
        assert "/disconnect binance" in refusal.text and "/connect" in refusal.text
        assert (await s.runtime.store.accounts.get(account.id)).status == "key_rejected"
    assert await rows(database, "SELECT ciphertext FROM credentials") == [(before,)]


async def test_a_rejected_key_alert_points_to_the_replacement_once(strata, fake_exchanges):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "65000")
    _, api_key = await connect_with_key(strata, fake_exchanges, "binance", balances={"USDT": Decimal(5000)})
    await allocate_one_line(strata, "/allocate binance grid 500 BTC/USDT low=60000 high=70000 levels=5")
    await wait_for_open_orders(fake_exchanges, "binance", api_key)
    book.revoke_key(api_key)
    alert = await strata.next_reply(USER, contains="was rejected", timeout=15)
    assert "reconnect" not in alert.text
    assert alert.text.count("/connect replace binance") == 1
    assert "/connect replace <" not in alert.text  # the alert names the label
