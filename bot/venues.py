"""Venue names shown on keyboards and in messages, and account labels; what a venue is lives in its adapter
(`bot.exchanges.venues`)."""

from __future__ import annotations

from bot.exchanges.venues import find

#: The leverage Strata trades futures at: the engine sets it on a market before its first order there, so a
#: position's margin is its full size (within the strategy's budget) and every view says "1x".
FUTURES_LEVERAGE = 1


def venue_name(venue: str) -> str:
    known = find(venue)
    return known.name if known is not None else venue


def next_label(venue: str, taken: set[str]) -> str:
    """The first account on a venue is labelled with the venue id, later ones `<venue>-2`, `-3`, …."""
    if venue not in taken:
        return venue
    n = 2
    while f"{venue}-{n}" in taken:
        n += 1
    return f"{venue}-{n}"
