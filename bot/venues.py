"""Venue ids (ccxt's) and the human names shown on keyboards and in messages."""

from __future__ import annotations

from decimal import Decimal

VENUE_NAMES = {
    "binance": "Binance Spot",
    "binanceusdm": "Binance Futures",
    "kraken": "Kraken",
}
CONNECTABLE = ("binance", "binanceusdm", "kraken")
#: The leverage Strata trades futures at: the engine sets it on a market before its first order there, so a
#: position's margin is its full size (within the strategy's budget) and every view says "1x".
FUTURES_LEVERAGE = 1

# The taker fee of each venue's entry tier (the most a regular account pays per order), as the venues publish
# it: Binance Spot 0.10 % (VIP 0, no BNB discount), Binance USD-M futures 0.05 % (VIP 0 taker; maker 0.02 %),
# Kraken 0.40 % (Kraken Pro under 10,000 USD of 30-day volume; maker 0.25 %). The risk gate reserves at least
# this much, because the fee a market advertises can be lower than what a small account pays: Kraken's
# AssetPairs, and so ccxt, still say 0.26 %.
ENTRY_TAKER_FEE = {
    "binance": Decimal("0.001"),
    "binanceusdm": Decimal("0.0005"),
    "kraken": Decimal("0.004"),
}

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
