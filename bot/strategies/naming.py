"""How a strategy is called in every message (status, pickers, alerts, summaries): one function, one wording.

"DCA #1 BTC/USDT", "Rebalance #3 BTC 50 / ETH 50" (a rebalance's symbol is only its quote asset, which would
make two rebalances read alike), and with the user's optional name: "DCA #1 BTC/USDT “stack sats”".
Plain text: callers escape it for HTML.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KIND_TITLES = {"dca": "DCA", "grid": "Grid", "rebalance": "Rebalance", "trend": "Trend"}
MAX_NAME = 32  # characters of a strategy's name: fits a button and a line of an alert


def market_label(kind: str, symbol: str, params: Mapping[str, Any]) -> str:
    """What the strategy trades: its market, or a rebalance's target weights ("BTC 50 / ETH 50")."""
    weights = params.get("weights") if kind == "rebalance" else None
    if isinstance(weights, str) and weights:
        pairs = [part.split(":", 1) for part in weights.split(",") if ":" in part]
        if pairs:
            return " / ".join(f"{asset.strip()} {weight.strip()}" for asset, weight in pairs)
    return symbol


def strategy_label(kind: str, strategy_id: int, symbol: str, params: Mapping[str, Any], name: str | None) -> str:
    """`DCA #1 BTC/USDT`, with the user's name after it in quotes when there is one."""
    label = f"{KIND_TITLES.get(kind, kind)} #{strategy_id} {market_label(kind, symbol, params)}"
    return f"{label} “{name}”" if name else label


def list_label(kind: str, strategy_id: int, symbol: str, params: Mapping[str, Any], name: str | None) -> str:
    """The same words led by the number, for lists and pickers: `#1 DCA BTC/USDT “stack”`."""
    label = f"#{strategy_id} {KIND_TITLES.get(kind, kind)} {market_label(kind, symbol, params)}"
    return f"{label} “{name}”" if name else label


def clean_name(text: str) -> str:
    """A user's strategy name as stored: printable, single-spaced, at most MAX_NAME characters; ValueError if not."""
    name = " ".join(text.split())
    if not name:
        raise ValueError("name= needs some text, e.g. name=savings")
    if len(name) > MAX_NAME:
        raise ValueError(f"a name is at most {MAX_NAME} characters")
    if not name.isprintable():
        raise ValueError("a name must be plain text")
    return name
