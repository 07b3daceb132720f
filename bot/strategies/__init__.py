"""The strategy registry: every strategy by its command name (`dca`, `grid`, `rebalance`, `trend`).

Strategies are pure (see `bot.strategies.base`); services look them up here to list them for
`/strategies`, parse `/allocate` parameters, and the engine to run them.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.strategies.base import Strategy
from bot.strategies.dca import DCA
from bot.strategies.grid import GRID
from bot.strategies.params import ParamError, shown
from bot.strategies.rebalance import REBALANCE
from bot.strategies.trend import TREND

STRATEGIES: Mapping[str, Strategy] = {s.name: s for s in (DCA, GRID, REBALANCE, TREND)}


def get_strategy(name: str) -> Strategy:
    """Return the strategy called `name` (case-insensitive), or raise `ParamError` listing the choices."""
    strategy = STRATEGIES.get(name.strip().lower())
    if strategy is None:
        raise ParamError(f"unknown strategy '{shown(name)}'; choose one of: {', '.join(STRATEGIES)}")
    return strategy


__all__ = ["STRATEGIES", "ParamError", "Strategy", "get_strategy"]
