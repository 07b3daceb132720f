"""How a strategy is called in every message (status, pickers, alerts, summaries): one function, one wording.

"DCA #1 BTC/USDT", "Rebalance #3 BTC 50 / ETH 50" (a rebalance's symbol is only its quote asset, which would
make two rebalances read alike), and with the user's optional name: "DCA #1 BTC/USDT “stack sats”".
Plain text: callers escape it for HTML.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bot.exchanges.venues import find

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


#: Appended to the name of a strategy that trades on a Paper account, so no message about it reads as real money.
PAPER_MARK = "📝 Paper"


def strategy_label(
    kind: str, strategy_id: int, symbol: str, params: Mapping[str, Any], name: str | None, *, paper: bool = False
) -> str:
    """`DCA #1 BTC/USDT`, with the user's name after it in quotes when there is one (and the Paper mark)."""
    label = f"{KIND_TITLES.get(kind, kind)} #{strategy_id} {market_label(kind, symbol, params)}"
    label = f"{label} “{name}”" if name else label
    return f"{label} · {PAPER_MARK}" if paper else label


def list_label(
    kind: str, strategy_id: int, symbol: str, params: Mapping[str, Any], name: str | None, *, paper: bool = False
) -> str:
    """The same words led by the number, for lists and pickers: `#1 DCA BTC/USDT “stack”`."""
    label = f"#{strategy_id} {KIND_TITLES.get(kind, kind)} {market_label(kind, symbol, params)}"
    label = f"{label} “{name}”" if name else label
    return f"{label} · {PAPER_MARK}" if paper else label


def title(strategy: Any) -> str:
    """`strategy_label` of a stored strategy (`storage.models.Strategy`), marked when it trades on Paper."""
    return strategy_label(
        strategy.kind, strategy.id, strategy.symbol, strategy.params, strategy.name, paper=_on_paper(strategy)
    )


def list_title(strategy: Any) -> str:
    """`list_label` of a stored strategy, marked when it trades on Paper."""
    return list_label(
        strategy.kind, strategy.id, strategy.symbol, strategy.params, strategy.name, paper=_on_paper(strategy)
    )


def _on_paper(strategy: Any) -> bool:
    known = find(getattr(strategy, "venue", None))
    return known is not None and known.simulated


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
