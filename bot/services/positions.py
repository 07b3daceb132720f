"""A futures strategy's open position as a trader reads it: side, size, entry, mark, unrealised P&L, leverage.

One view for every place that shows a position (`/status`, `/balance`, `/profit`, and `/accounts` from the
venue's positionRisk rows: `stored_position_view`), rendered by one renderer (`handlers.render.position_text`),
so they never disagree. The size and the average entry come from the
strategy's own fills, replayed as the venue books them (`bot/engine/pnl.py`); Strata runs one strategy per
futures market and account, so they are the venue's own position. The mark is the venue's mark price
(Binance's premium index), which is what Binance values positions at: unrealised = size × (mark − entry),
signed, as its positionRisk `unRealizedProfit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bot.engine.figures import UNKNOWN_PRECISION, Precision
from bot.engine.pnl import AssetPnl, is_contract
from bot.exchanges.errors import ExchangeFailure
from bot.venues import FUTURES_LEVERAGE
from storage.models import StoredPosition


@dataclass(frozen=True)
class PositionView:
    """One open futures position; `mark` is None when the venue's mark price could not be read just now."""

    symbol: str  # the contract as ccxt names it: "BTC/USDT:USDT"
    asset: str  # "BTC"
    quote: str  # "USDT": entry, mark, notional and P&L are in it
    size: Decimal  # signed base amount: long > 0, short < 0
    entry: Decimal | None  # the position's average entry price, as the venue shows it (None: not reported)
    mark: Decimal | None
    leverage: int = FUTURES_LEVERAGE
    strategy_id: int | None = None  # the strategy whose position it is
    title: str = ""  # how lists name that strategy (/balance prefixes the position with it)
    precision: Precision = UNKNOWN_PRECISION  # the market's step and tick, to show it as the venue does
    venue_leverage: Decimal | None = None  # the leverage the venue's account shows (/accounts: said when not 1x)

    @property
    def side(self) -> str:
        return "long" if self.size > 0 else "short"

    @property
    def notional(self) -> Decimal | None:
        """The position's value at the mark price (size × mark)."""
        return None if self.mark is None else abs(self.size) * self.mark

    @property
    def unrealised(self) -> Decimal | None:
        """What closing at the mark would realise before fees: size × (mark − entry)."""
        return None if self.mark is None or self.entry is None else self.size * (self.mark - self.entry)

    @property
    def margin(self) -> Decimal | None:
        """The margin the position holds at 1x: its size at the entry price."""
        return None if self.entry is None else abs(self.size) * self.entry

    @property
    def equity(self) -> Decimal | None:
        """What the position is worth to the account now: its margin plus its unrealised P&L."""
        return None if self.margin is None or self.unrealised is None else self.margin + self.unrealised


def position_of(
    assets: Mapping[str, AssetPnl], symbol: str, quote: str, mark: Decimal | None, strategy_id: int | None = None,
    **extra: Any,
) -> PositionView | None:
    """The open position of a contract strategy whose P&L per asset is `assets` (`Pnl.assets`, `Figures.assets`),
    valued at `mark`; None when flat."""
    asset = assets.get(symbol.split("/")[0])
    entry = asset.entry_price if asset is not None else None  # None for spot holdings and a flat contract
    if asset is None or entry is None:
        return None
    return PositionView(symbol, asset.asset, quote, asset.held, entry, mark, strategy_id=strategy_id, **extra)


def stored_position_view(row: StoredPosition) -> PositionView:
    """A venue's position row, as /accounts stores it (unsigned size with its side), as the one view; its
    unrealised P&L is size × (mark − entry), the figure the venue's own row reports."""
    size = row.size if row.side == "long" else -row.size
    return PositionView(row.symbol, row.base, row.quote, size, row.entry, row.mark,
                        precision=Precision(row.step, row.tick), venue_leverage=row.leverage)


async def mark_price(gateway: Any, venue: str, symbol: str) -> Decimal | None:
    """The venue's mark price of a contract, or None if it cannot be read now (a view then shows "?")."""
    if not is_contract(symbol):
        return None
    try:
        return await gateway.fetch_mark_price(venue, symbol)
    except ExchangeFailure:
        return None
