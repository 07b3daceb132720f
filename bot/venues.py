"""Venue names shown on keyboards and in messages, and account labels; what a venue is lives in its adapter
(`bot.exchanges.venues`)."""

from __future__ import annotations

from bot.exchanges.venues import adapters, find

#: The leverage Strata trades futures at: the engine sets it on a market before its first order there, so a
#: position's margin is its full size (within the strategy's budget) and every view says "1x".
FUTURES_LEVERAGE = 1


def venue_name(venue: str) -> str:
    known = find(venue)
    return known.name if known is not None else venue


def next_label(venue: str, taken: set[str]) -> str:
    """The first account on a venue is labelled with the venue id, later ones `<venue>-2`, `-3`, ….

    Paper accounts are `paper`, `paper-2`… whatever their price source (the adapter's `label`)."""
    known = find(venue)
    base = known.label if known is not None else venue
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def reserved_labels() -> set[str]:
    """Labels no account may take unless they are its own venue's: every venue's id and label base."""
    return {name for v in adapters() for name in (v.id, v.label)}


def is_paper(venue: str | None) -> bool:
    """Whether `venue` is simulated (Paper): every message about it is marked so."""
    known = find(venue)
    return known is not None and known.simulated
