"""Client order ids: deterministic per (strategy, tag) and valid on every venue."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.exchanges.client_ids import client_order_id_for, is_valid_client_order_id

VENUES = ("binance", "binanceusdm", "kraken")


def test_same_strategy_and_tag_give_the_same_id_on_every_call():
    assert client_order_id_for("binance", 42, "2024-05-01T00:00:buy") == client_order_id_for(
        "binance", 42, "2024-05-01T00:00:buy"
    )


def test_different_tags_or_strategies_give_different_ids():
    ids = {client_order_id_for("kraken", s, t) for s in range(50) for t in ("a", "b", "slot-1", "slot-2")}
    assert len(ids) == 200


@given(strategy_id=st.integers(min_value=0) | st.text(min_size=1, max_size=40), tag=st.text(max_size=80))
def test_every_id_is_valid_on_every_venue(strategy_id, tag):
    for venue in VENUES:
        value = client_order_id_for(venue, strategy_id, tag)
        assert all(is_valid_client_order_id(v, value) for v in VENUES)
        assert len(value) == 32


@pytest.mark.parametrize(
    ("venue", "value", "valid"),
    [
        ("binance", "x" * 36, True),
        ("binance", "x" * 37, False),
        ("binance", "has space", False),
        ("binanceusdm", "ok.A:/_-9", True),
        ("kraken", "6d1b345e-2821-40e2-ad83-4ecb18a06876", True),
        ("kraken", "da8e4ad59b78481c93e589746b0cf91f", True),
        ("kraken", "arb-20240509-00010", True),
        ("kraken", "arb-20240509-000100", False),  # free text is at most 18 characters
    ],
)
def test_venue_rules(venue: str, value: str, valid: bool):
    assert is_valid_client_order_id(venue, value) is valid
