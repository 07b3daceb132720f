"""Words shown for strategies: one label per strategy (rebalances by their weights, the user's name), plurals,
no repeated 'finished:', no '(default: required)'."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from bot.engine.alerts import finished_text, strategy_name
from bot.services.strategies import StrategyService
from bot.strategies.grid import Grid
from bot.strategies.grid import _status as grid_status
from bot.strategies.naming import MAX_NAME, clean_name, list_label, strategy_label
from handlers.render import catalogue_text
from storage.models import Strategy


def strategy(**changes) -> Strategy:
    fields = dict(
        id=3, user_id=1, account_id=1, kind="rebalance", symbol="USDT", quote="USDT", budget=Decimal(500),
        params={"weights": "BTC:50,ETH:50", "band": "5", "every": "1h"}, state={}, status="finished",
        pause_reason=None, spent=Decimal("499.5"), received=Decimal(0), fees=Decimal("0.5"), last_slot=None,
        next_run=None, alerts="on", created_at=datetime(2026, 12, 4, tzinfo=UTC),
    )
    fields.update(changes)
    return Strategy(**fields)


def test_two_rebalances_are_told_apart_by_their_weights():
    assert strategy_name(strategy()) == "Rebalance #3 BTC 50 / ETH 50"
    other = strategy(id=4, params={"weights": "BTC:80,SOL:20"})
    assert list_label("rebalance", 4, "USDT", other.params, None) == "#4 Rebalance BTC 80 / SOL 20"
    assert strategy_label("dca", 1, "BTC/USDT", {}, "stack") == "DCA #1 BTC/USDT “stack”"


def test_names_are_bounded_single_line_text():
    assert clean_name("  my   stack ") == "my stack"
    for bad in ("", " ", "x" * (MAX_NAME + 1), "a\u200b\x07b"):
        with pytest.raises(ValueError):
            clean_name(bad)


def test_a_finished_alert_does_not_say_finished_twice():
    text = finished_text(strategy(kind="dca", symbol="BTC/USDT", params={}), "finished: the budget is used")
    assert "finished: finished" not in text and "has finished: the budget is used" in text


def test_one_round_trip_is_singular():
    grid = Grid()
    params = grid.parse_params({"low": "100", "high": "200", "levels": "5"})
    state = grid.initial_state(params, datetime(2026, 12, 4, tzinfo=UTC))
    def status(round_trips: int) -> str:
        return grid_status(replace(state, round_trips=round_trips), Decimal(150), params["low"], params["high"],
                           "A/B", None)

    assert "1 round trip," in status(1) and "2 round trips," in status(2)
    assert "0 buys below, 0 sells above" in status(0)


def test_required_parameters_say_required_not_a_default():
    text = catalogue_text(StrategyService(None, None).strategies_catalogue())
    assert "default: required" not in text
    assert "<code>low</code> — lowest grid price (required)" in text
