"""Deterministic client order ids that every venue accepts, so an intent can be found again after a crash.

The engine writes an order intent with its client order id *before* sending it; on restart it asks the
venue for that id. The id must therefore be a pure function of (strategy, tag) and valid everywhere:

- Binance (spot and USD-M): `newClientOrderId` matches `^[.A-Z:/a-z0-9_-]{1,36}$`.
- Kraken: `cl_ord_id` is a long UUID (36 chars with dashes), a short UUID (32 hex chars, no dashes) or free
  text of at most 18 ASCII characters.

A UUIDv5 of the strategy id and tag in its 32-hex-digit form satisfies both: it is a valid Kraken short
UUID and a valid Binance id, and collisions are as unlikely as SHA-1 prefixes. Each venue's rule is its
adapter's (`VenueAdapter.is_valid_client_order_id`); a new venue must accept these ids too.
"""

from __future__ import annotations

import uuid

from bot.exchanges.venues import find

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://strata.invalid/client-order-id")


def client_order_id_for(venue: str, strategy_id: int | str, tag: str) -> str:
    """The client order id for `strategy_id`'s order `tag` (e.g. its time slot and leg), valid on `venue`.

    The venue is accepted for the callers' clarity and checked, but does not change the id: the same
    (strategy, tag) always maps to the same 32 lowercase hex characters.
    """
    value = uuid.uuid5(_NAMESPACE, f"{strategy_id}:{tag}").hex
    if not is_valid_client_order_id(venue, value):  # pragma: no cover - guarded by tests for every venue
        raise ValueError(f"client order id not valid on {venue}")
    return value


def is_valid_client_order_id(venue: str, value: str) -> bool:
    """Whether `value` is accepted as a client order id by `venue` (its adapter's rule)."""
    known = find(venue)
    if known is None:
        raise ValueError(f"unknown venue {venue!r}")
    return known.is_valid_client_order_id(value)
