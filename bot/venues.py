"""Venue ids (ccxt's) and the human names shown on keyboards and in messages."""

from __future__ import annotations

VENUE_NAMES = {
    "binance": "Binance Spot",
    "binanceusdm": "Binance Futures",
    "kraken": "Kraken",
}
CONNECTABLE = ("binance", "binanceusdm", "kraken")

KEY_GUIDES = {
    "binance": (
        "On binance.com open Account → API Management → Create API → <b>System generated</b> (HMAC).\n"
        "Tick <b>Enable Spot &amp; Margin Trading</b>; leave <b>Enable Withdrawals</b> OFF.\n"
        "Restrict access to trusted IPs (your server's address): Binance disables trading on unrestricted keys "
        "after a while."
    ),
    "binanceusdm": (
        "On binance.com open Account → API Management → Create API → <b>System generated</b> (HMAC).\n"
        "Tick <b>Enable Futures</b> (and reading); leave <b>Enable Withdrawals</b> OFF.\n"
        "Restrict access to trusted IPs (your server's address)."
    ),
    "kraken": (
        "On kraken.com open Settings → API → Create API key.\n"
        "Allow <b>Query Funds</b>, <b>Query Open/Closed Orders &amp; Trades</b>, <b>Create &amp; Modify Orders</b>, "
        "<b>Cancel/Close Orders</b>; leave <b>Withdraw Funds</b> OFF.\n"
        "Kraken shows an API key and a <b>private key</b>: you will send both."
    ),
}


def venue_name(venue: str) -> str:
    return VENUE_NAMES.get(venue, venue)


def next_label(venue: str, taken: set[str]) -> str:
    """The first account on a venue is labelled with the venue id, later ones `<venue>-2`, `-3`, …."""
    if venue not in taken:
        return venue
    n = 2
    while f"{venue}-{n}" in taken:
        n += 1
    return f"{venue}-{n}"
