"""Profit and loss of a strategy from its own fills, per asset, by the average-cost method, net of fees.

Pure: recorded fills in, figures out. A buy adds its amount (less a fee paid in the asset itself) at its cost
plus a fee paid in quote; a sell realises proceeds (less a fee paid in quote) minus the average cost of what
it sold. Used by /status (realised and unrealised P&L, average buy price) and /stop's summary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from storage.orders import StrategyFill

ZERO = Decimal(0)


@dataclass(frozen=True)
class AssetPnl:
    asset: str
    held: Decimal
    average_cost: Decimal | None  # quote per unit held, fees included
    average_buy_price: Decimal | None  # plain average price of all buys
    realised: Decimal


@dataclass(frozen=True)
class Pnl:
    assets: Mapping[str, AssetPnl]
    invested: Decimal  # quote paid for buys, quote fees included
    returned: Decimal  # quote received from sells, quote fees deducted
    fees: Decimal  # every fee valued in quote
    realised: Decimal

    def unrealised(self, prices: Mapping[str, Decimal]) -> Decimal | None:
        """Value of what is held at `prices` (per asset) minus its average cost; None if a price is missing."""
        total = ZERO
        for asset in self.assets.values():
            if asset.held == 0:
                continue
            price = prices.get(asset.asset)
            if price is None or asset.average_cost is None:
                return None
            total += asset.held * (price - asset.average_cost)
        return total


def compute(fills: Iterable[StrategyFill], quote: str) -> Pnl:
    held: dict[str, Decimal] = {}
    cost: dict[str, Decimal] = {}
    bought: dict[str, Decimal] = {}
    bought_value: dict[str, Decimal] = {}
    realised_by: dict[str, Decimal] = {}
    invested = returned = fees = ZERO
    for item in fills:
        fill = item.fill
        asset = item.symbol.split("/")[0]
        quote_fee = fill.fee if fill.fee_currency == quote else ZERO
        asset_fee = fill.fee if fill.fee_currency == asset else ZERO
        fees += item.fee_quote
        if fill.side == "buy":
            paid = fill.cost + quote_fee
            invested += paid
            held[asset] = held.get(asset, ZERO) + fill.amount - asset_fee
            cost[asset] = cost.get(asset, ZERO) + paid
            bought[asset] = bought.get(asset, ZERO) + fill.amount
            bought_value[asset] = bought_value.get(asset, ZERO) + fill.cost
        else:
            proceeds = fill.cost - quote_fee
            returned += proceeds
            units = held.get(asset, ZERO)
            average = cost.get(asset, ZERO) / units if units > 0 else ZERO
            sold = fill.amount + asset_fee
            basis = average * min(sold, max(units, ZERO))
            realised_by[asset] = realised_by.get(asset, ZERO) + proceeds - basis
            held[asset] = units - sold
            cost[asset] = max(ZERO, cost.get(asset, ZERO) - basis)
    assets = {}
    for asset in set(held) | set(realised_by):
        units = held.get(asset, ZERO)
        assets[asset] = AssetPnl(
            asset=asset,
            held=units,
            average_cost=cost.get(asset, ZERO) / units if units > 0 else None,
            average_buy_price=bought_value[asset] / bought[asset] if bought.get(asset) else None,
            realised=realised_by.get(asset, ZERO),
        )
    return Pnl(assets, invested, returned, fees, sum(realised_by.values(), ZERO))
