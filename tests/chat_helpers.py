"""Chat steps shared by the end-to-end tests: register a key on a fake venue, connect it through the bot."""

from __future__ import annotations

import base64
import os
import secrets
from decimal import Decimal

USER = 1001
OTHER = 2002


def make_keypair(venue: str) -> tuple[str, str]:
    if venue == "kraken":
        return base64.b64encode(os.urandom(42)).decode(), base64.b64encode(os.urandom(64)).decode()
    return secrets.token_hex(32), secrets.token_hex(32)


def register(fake_exchanges, venue: str, **flags) -> tuple[str, str]:
    api_key, secret = make_keypair(venue)
    quote = "USD" if venue == "kraken" else "USDT"
    balances = flags.pop("balances", None) or {quote: Decimal(5000), "BTC": Decimal("0.5")}
    fake_exchanges.books[venue].add_key(api_key, secret, balances=balances, **flags)
    return api_key, secret


async def start_connect(s, venue_button: str, user: int = USER):
    await s.send(user, "/connect")
    menu = await s.next_reply(user, contains="Which exchange")
    await s.press(user, menu, venue_button)
    await s.next_reply(user, contains="send the")
    return menu


async def send_key_pair(s, api_key: str, secret: str, user: int = USER) -> tuple[dict, dict]:
    key_msg = await s.send(user, api_key)
    await s.next_reply(user, contains="Now send")
    secret_msg = await s.send(user, secret)
    return key_msg, secret_msg


BUTTONS = {"binance": "Binance Spot", "binanceusdm": "Binance Futures", "kraken": "Kraken"}


async def connect_with_key(s, fake_exchanges, venue="binance", user=USER, **flags):
    """Connect a freshly registered key through the chat; return (account, api_key)."""
    api_key, secret = register(fake_exchanges, venue, **flags)
    await start_connect(s, BUTTONS[venue], user=user)
    await send_key_pair(s, api_key, secret, user=user)
    await s.next_reply(user, contains="Connected")
    rows = await s.runtime.store.accounts.list_for_user(user)
    return rows[-1], api_key


async def connect_account(s, fake_exchanges, venue="binance", user=USER, **flags):
    account, _ = await connect_with_key(s, fake_exchanges, venue, user=user, **flags)
    return account




async def list_accounts(s, user: int = USER, timeout: float = 15.0):
    """/accounts: the stored figures sent at once, then (returned second) that message edited with fresh ones."""
    await s.send(user, "/accounts")
    first = await s.next_reply(user, contains="Your accounts")
    fresh = await s.next_reply(user, contains="— updated", timeout=timeout)
    assert fresh.message_id == first.message_id and fresh.method == "editMessageText"
    return first, fresh
