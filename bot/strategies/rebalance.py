"""Rebalance: hold a basket at target weights, trading back whenever one drifts more than `band` points.

The allocation's symbol is the quote asset (e.g. USDT); each other weighted asset trades on `<ASSET>/<QUOTE>`
(the quote asset itself may carry a weight: that share stays in cash). The first run buys the basket with the
budget. Every `every` (slots `start + k*every`, a late run catching up once, like DCA) it measures the weights
over the strategy's own holdings plus its unspent budget; when any listed asset is more than `band`
percentage points off target it trades all of them back. Sells go first and alone; the buys follow once the
sells have ended, sized from the fresh budget, so buys are never funded by proceeds not yet received. A trade
below the market's minimum is skipped, not an error. Tags: `rebalance:<slot>:<sell|buy>:<ASSET>`.

Snapshot: `symbol` is the quote asset (its `price` is unused: pass 1), `prices` and `markets` hold each
`<ASSET>/<QUOTE>` of `symbols(...)`, and `holdings` the assets this allocation bought (net of fees).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from bot.strategies.base import (
    AMOUNT_STEP,
    QUOTE_STEP,
    ZERO,
    Budget,
    Decision,
    DesiredOrder,
    Fill,
    FillUpdate,
    MarketSnapshot,
    Params,
    Strategy,
    floor_to,
    slot_index,
)
from bot.strategies.params import ParamError, ParamSpec, format_value

Phase = Literal["idle", "selling"]
POLL = timedelta(minutes=1)


@dataclass(frozen=True)
class RebalanceState:
    start: datetime
    last_slot: int = -1
    phase: Phase = "idle"
    pending: tuple[str, ...] = ()  # sells still open in the "selling" phase
    rebalances: int = 0


@dataclass(frozen=True)
class _Leg:
    asset: str
    symbol: str
    price: Decimal
    held: Decimal
    target_value: Decimal
    minimum: Decimal

    @property
    def delta(self) -> Decimal:
        """Quote to buy (positive) or sell (negative) to reach the target."""
        return self.target_value - self.held * self.price


class Rebalance(Strategy):
    name = "rebalance"
    title = "Rebalance"
    description = (
        "Buys a basket at target weights, then trades it back to them whenever an asset's weight "
        "drifts more than the band."
    )
    example = "/allocate binance rebalance 500 USDT weights=BTC:50,ETH:50 band=5 every=1h"
    param_specs = (
        ParamSpec("weights", "weights", "target percent per asset, summing to 100, e.g. BTC:50,ETH:50",
                  required=True),
        ParamSpec("band", "decimal", "allowed drift in percentage points before trading back", default=Decimal(5),
                  minimum=ZERO, strict_minimum=True, maximum=Decimal(50)),
        ParamSpec("every", "duration", "how often the weights are checked", default=timedelta(hours=1),
                  minimum=timedelta(minutes=1), maximum=timedelta(weeks=52)),
    )

    def check_allocation(self, symbol: str, budget: Decimal, params: Params) -> None:
        if "/" in symbol:
            raise ParamError(f"rebalance takes the quote asset as its symbol (e.g. USDT), not a pair like {symbol}")
        if not [asset for asset in params["weights"] if asset != symbol.upper()]:
            raise ParamError(f"weights must name at least one asset other than {symbol}")

    def symbols(self, symbol: str, params: Params) -> tuple[str, ...]:
        quote = symbol.upper()
        return tuple(f"{asset}/{quote}" for asset in params["weights"] if asset != quote)

    def initial_state(self, params: Params, now: datetime) -> RebalanceState:
        return RebalanceState(start=now)

    def decide(
        self, snapshot: MarketSnapshot, state: RebalanceState, budget: Budget, params: Params
    ) -> Decision:
        quote = snapshot.symbol.upper()
        if state.phase == "selling":
            if state.pending and slot_index(state.start, params["every"], snapshot.now) <= state.last_slot:
                return Decision((), state, "rebalancing: waiting for the sells to fill")
            # Sells ended (or a whole period passed without news): buy what is now missing.
            legs = self._legs(snapshot, budget, params, quote)
            if legs is None:
                return Decision((), state, "waiting: a price is missing")
            buys = self._buys(legs, budget, state.last_slot)
            done = replace(state, phase="idle", pending=())
            return Decision(buys, done, f"rebalancing: {len(buys)} buys after the sells")
        slot = slot_index(state.start, params["every"], snapshot.now)
        if slot <= state.last_slot:
            return Decision((), state, "waiting for the next check")
        legs = self._legs(snapshot, budget, params, quote)
        if legs is None:
            return Decision((), state, "waiting: a price is missing")
        state = replace(state, last_slot=slot)
        if state.rebalances > 0:
            drift = self._max_drift(legs, budget, params, quote)
            if drift <= params["band"]:
                return Decision((), state, f"within band: largest drift {_pp(drift)} points")
        state = replace(state, rebalances=state.rebalances + 1)
        sells = self._sells(legs, slot)
        if sells:
            selling = replace(state, phase="selling", pending=tuple(order.tag for order in sells))
            return Decision(sells, selling, f"rebalancing: {len(sells)} sells first")
        buys = self._buys(legs, budget, slot)
        return Decision(buys, state, f"rebalancing: {len(buys)} buys")

    @staticmethod
    def _legs(snapshot: MarketSnapshot, budget: Budget, params: Params, quote: str) -> list[_Leg] | None:
        weights: Mapping[str, Decimal] = params["weights"]
        priced: list[tuple[str, str, Decimal]] = []
        for asset in weights:
            if asset == quote:
                continue
            symbol = f"{asset}/{quote}"
            price = snapshot.price_of(symbol)
            if price is None or price <= 0:
                return None
            priced.append((asset, symbol, price))
        total = budget.remaining + sum(
            (snapshot.holdings.get(asset, ZERO) * price for asset, _, price in priced), ZERO
        )
        legs = []
        for asset, symbol, price in priced:
            market = snapshot.markets.get(symbol)
            legs.append(_Leg(
                asset=asset, symbol=symbol, price=price, held=snapshot.holdings.get(asset, ZERO),
                target_value=total * weights[asset] / 100,
                minimum=market.min_cost(price) if market else ZERO,
            ))
        return legs

    @staticmethod
    def _max_drift(legs: list[_Leg], budget: Budget, params: Params, quote: str) -> Decimal:
        total = budget.remaining + sum((leg.held * leg.price for leg in legs), ZERO)
        if total <= 0:
            return ZERO
        weights: Mapping[str, Decimal] = params["weights"]
        drifts = [abs(leg.held * leg.price * 100 / total - weights[leg.asset]) for leg in legs]
        if quote in weights:
            drifts.append(abs(budget.remaining * 100 / total - weights[quote]))
        return max(drifts)

    @staticmethod
    def _sells(legs: list[_Leg], slot: int) -> tuple[DesiredOrder, ...]:
        orders = []
        for leg in legs:
            if leg.delta >= 0 or -leg.delta < leg.minimum:
                continue
            amount = min(leg.held, floor_to(-leg.delta / leg.price, AMOUNT_STEP))
            if amount <= 0 or amount * leg.price < leg.minimum:
                continue
            orders.append(DesiredOrder(leg.symbol, "sell", "market", f"rebalance:{slot}:sell:{leg.asset}",
                                       amount=amount))
        return tuple(orders)

    @staticmethod
    def _buys(legs: list[_Leg], budget: Budget, slot: int) -> tuple[DesiredOrder, ...]:
        wanted = {leg.asset: leg.delta for leg in legs if leg.delta > 0}
        total = sum(wanted.values(), ZERO)
        room = budget.spendable
        scale = min(Decimal(1), room / total) if total > 0 else ZERO
        orders = []
        for leg in legs:
            if leg.asset not in wanted:
                continue
            cost = floor_to(wanted[leg.asset] * scale, QUOTE_STEP)
            if cost <= 0 or cost < leg.minimum or cost > room:
                continue  # too small to place: skipped, not an error
            room -= cost
            orders.append(DesiredOrder(leg.symbol, "buy", "market", f"rebalance:{slot}:buy:{leg.asset}", cost=cost))
        return tuple(orders)

    def on_fill(self, state: RebalanceState, fill: Fill, params: Params) -> FillUpdate:
        if fill.closed and fill.tag in state.pending:
            return FillUpdate(replace(state, pending=tuple(t for t in state.pending if t != fill.tag)))
        return FillUpdate(state)

    def next_run(self, state: RebalanceState, params: Params, now: datetime) -> datetime | None:
        if state.phase == "selling":
            return now + POLL
        return state.start + (state.last_slot + 1) * params["every"]

    def dump_state(self, state: RebalanceState) -> dict[str, Any]:
        return {
            "start": state.start.isoformat(),
            "last_slot": state.last_slot,
            "phase": state.phase,
            "pending": list(state.pending),
            "rebalances": state.rebalances,
        }

    def load_state(self, data: Mapping[str, Any]) -> RebalanceState:
        return RebalanceState(
            start=datetime.fromisoformat(data["start"]),
            last_slot=int(data["last_slot"]),
            phase=data["phase"],
            pending=tuple(data["pending"]),
            rebalances=int(data["rebalances"]),
        )


def _pp(value: Decimal) -> str:
    return format_value("decimal", value.quantize(Decimal("0.01")))


REBALANCE = Rebalance()
