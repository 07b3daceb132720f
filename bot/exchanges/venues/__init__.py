"""The venue registry: one adapter per venue (`base.VenueAdapter`), one module per venue.

Everything outside this package asks `adapter(account.venue)` what a venue can do and how it behaves,
instead of comparing venue ids. Registering an adapter (`register`) is all it takes for /connect to offer it,
/allocate to accept its accounts and the engine to trade on it; its ccxt class and its fake do the rest.
"""

from __future__ import annotations

from bot.exchanges.venues import binance, binanceusdm, kraken, paper
from bot.exchanges.venues.base import KeyCounterRule, VenueAdapter, WeightRule

__all__ = [
    "KeyCounterRule",
    "UnknownVenue",
    "VenueAdapter",
    "WeightRule",
    "adapter",
    "adapters",
    "connectable",
    "find",
    "paper_venues",
    "register",
    "unregister",
]

_REGISTRY: dict[str, VenueAdapter] = {}


class UnknownVenue(KeyError):
    """No adapter is registered under this venue id."""


def register(venue: VenueAdapter) -> None:
    """Add (or replace) the adapter of `venue.id`; the order of registration is the order of the buttons."""
    _REGISTRY[venue.id] = venue


def unregister(venue_id: str) -> None:
    _REGISTRY.pop(venue_id, None)


def find(venue_id: str | None) -> VenueAdapter | None:
    """The adapter of `venue_id`, or None when no such venue is registered."""
    return _REGISTRY.get(venue_id) if venue_id is not None else None


def adapter(venue_id: str) -> VenueAdapter:
    """The adapter of `venue_id`; `UnknownVenue` if there is none."""
    try:
        return _REGISTRY[venue_id]
    except KeyError:
        raise UnknownVenue(venue_id) from None


def adapters() -> tuple[VenueAdapter, ...]:
    """Every registered adapter, in registration order."""
    return tuple(_REGISTRY.values())


def connectable() -> tuple[str, ...]:
    """The venue ids /connect offers, in button order."""
    return tuple(v.id for v in _REGISTRY.values() if v.connectable)


def paper_venues() -> tuple[VenueAdapter, ...]:
    """The simulated (Paper) venues /connect offers behind its "Paper" button, one per price source."""
    return tuple(v for v in _REGISTRY.values() if v.simulated)


for _module in (binance, binanceusdm, kraken):
    register(_module.ADAPTER)
for _source in (binance.ADAPTER, kraken.ADAPTER):
    register(paper.paper_of(_source))
