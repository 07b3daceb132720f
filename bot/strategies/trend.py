"""Trend: long while the fast simple moving average of closes is above the slow one, else flat or short.

Only closed candles count: a candle whose close time is after the snapshot's `now` is dropped, whatever the
engine passed, so the still-moving candle can never flip a position. Target: long when fast > slow;
otherwise flat on spot, short on futures. One order at a time: a flip first closes the position
(reduce-only on futures), and opens the other side once the close has ended, sized from the freed budget.
On spot a long opens as a market buy by cost; on futures amounts are cost / price (ccxt's buy-by-cost is
spot-only), rounded by the engine with `amount_to_precision`. The budget is the position's notional.
Evaluated at start and at each candle close (`next_run`). Tags: `trend:<seq>:<open-long|open-short|close>`.

Entry (`entry=`): `cross` (the default) takes no position on the signal it finds at start: it notes that signal
and waits for the averages to cross, so a trend started late in a move does not buy its top. `now` acts on the
current signal at once (long at start when fast > slow). A strategy stored before `entry` existed loads as
already entered, so upgrading never makes a running trend wait.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from bot.formatting import money, price
from bot.strategies.base import (
    ZERO,
    Budget,
    Candle,
    Decision,
    DesiredOrder,
    Fill,
    FillUpdate,
    MarketSnapshot,
    Params,
    Strategy,
    amount_for_cost,
)
from bot.strategies.params import TIMEFRAMES, ParamError, ParamSpec

Side = Literal["long", "short", "flat"]
POLL = timedelta(minutes=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class TrendState:
    position: Decimal = ZERO  # signed base amount: > 0 long, < 0 short
    pending: str | None = None  # tag of the order still open
    seq: int = 0
    entered: bool = True  # False: entry=cross, still waiting for the first crossing after start
    start_signal: str | None = None  # entry=cross: the signal seen at start, which it must not act on


def sma(values: Sequence[Decimal], length: int) -> Decimal:
    """Simple moving average of the last `length` values."""
    window = values[-length:]
    return sum(window, ZERO) / len(window)


def closed_candles(candles: Sequence[Candle], timeframe: timedelta, now: datetime) -> list[Candle]:
    """Keep the candles that have closed by `now` (close time = open time + timeframe)."""
    return [c for c in candles if c.ts + timeframe <= now]


def next_candle_close(now: datetime, timeframe: timedelta) -> datetime:
    """Return the first candle close strictly after `now` (candles are aligned to the Unix epoch)."""
    return _EPOCH + ((now - _EPOCH) // timeframe + 1) * timeframe


class Trend(Strategy):
    name = "trend"
    title = "Trend"
    description = (
        "Follows the trend with two simple moving averages of closed candles: long while the fast one is "
        "above the slow one, otherwise flat (spot) or short (futures)."
    )
    example = "/allocate binanceusdm trend 200 BTC/USDT timeframe=1h fast=9 slow=21"
    param_specs = (
        ParamSpec("timeframe", "timeframe", f"candle size: {', '.join(TIMEFRAMES)}", default="1h"),
        ParamSpec("fast", "int", "candles in the fast average", default=9, minimum=1, maximum=199),
        ParamSpec("slow", "int", "candles in the slow average", default=21, minimum=2, maximum=200),
        ParamSpec("entry", "choice", "cross: wait for the next crossing of the averages; now: act on the current "
                  "signal at start", default="cross", choices=("cross", "now")),
    )

    def check(self, params: Params) -> None:
        if params["fast"] >= params["slow"]:
            raise ParamError(f"fast ({params['fast']}) must be smaller than slow ({params['slow']})")

    def timeframe(self, params: Params) -> str | None:
        return params["timeframe"]

    def initial_state(self, params: Params, now: datetime) -> TrendState:
        return TrendState(entered=params.get("entry", "cross") == "now")

    def decide(self, snapshot: MarketSnapshot, state: TrendState, budget: Budget, params: Params) -> Decision:
        if state.pending is not None:
            return Decision((), state, "waiting: an order is still open")
        tf = TIMEFRAMES[params["timeframe"]]
        closes = [c.close for c in closed_candles(snapshot.candles, tf, snapshot.now)]
        slow_n, fast_n = params["slow"], params["fast"]
        if len(closes) < slow_n:
            return Decision((), state, f"waiting: {len(closes)} of {slow_n} closed candles")
        fast, slow = sma(closes, fast_n), sma(closes, slow_n)
        target: Side = "long" if fast > slow else ("short" if snapshot.futures else "flat")
        market = snapshot.markets.get(snapshot.symbol)
        minimum = market.min_cost(snapshot.price) if market else ZERO
        current = self._side(state.position, snapshot.price, minimum)
        quote = snapshot.symbol.split("/")[1].split(":")[0]
        averages = f"fast {price(fast, quote)} {'>' if fast > slow else '≤'} slow {price(slow, quote)}"
        if not state.entered:
            if state.start_signal is None or state.start_signal == target:
                waiting = replace(state, start_signal=target)
                return Decision((), waiting, f"waiting for the next crossing of the averages: {averages}")
            state = replace(state, entered=True, start_signal=None)  # crossed since start: trade from here on
        if current == target:
            return Decision((), state, f"{target}: {averages}")
        symbol, seq = snapshot.symbol, state.seq
        if current != "flat":
            tag = f"trend:{seq}:close"
            side = "sell" if current == "long" else "buy"
            order = DesiredOrder(symbol, side, "market", tag, amount=abs(state.position),
                                 reduce_only=snapshot.futures)
            return Decision((order,), replace(state, pending=tag, seq=seq + 1),
                            f"closing {current} to go {target}: {averages}")
        cost = budget.spendable
        if cost <= 0 or cost < minimum:
            return Decision((), state, f"waiting: budget left ({money(cost, quote)}) is below the market minimum")
        tag = f"trend:{seq}:open-{target}"
        if snapshot.futures:
            order = DesiredOrder(symbol, "buy" if target == "long" else "sell", "market", tag,
                                 amount=amount_for_cost(cost, snapshot.price))
        else:
            order = DesiredOrder(symbol, "buy", "market", tag, cost=cost)
        return Decision((order,), replace(state, pending=tag, seq=seq + 1), f"opening {target}: {averages}")

    @staticmethod
    def _side(position: Decimal, price: Decimal, minimum: Decimal) -> Side:
        """A position too small to trade counts as flat: it could not be closed anyway."""
        if position == 0 or abs(position) * price < minimum:
            return "flat"
        return "long" if position > 0 else "short"

    def on_fill(self, state: TrendState, fill: Fill, params: Params) -> FillUpdate:
        if fill.tag != state.pending:
            return FillUpdate(state)
        base = fill.symbol.split("/")[0]
        base_fee = fill.fee if fill.fee_currency == base else ZERO
        change = fill.amount if fill.side == "buy" else -fill.amount
        position = state.position + change - base_fee
        return FillUpdate(replace(state, position=position, pending=None if fill.closed else state.pending))

    def next_run(self, state: TrendState, params: Params, now: datetime) -> datetime | None:
        if state.pending is not None:
            return now + POLL
        return next_candle_close(now, TIMEFRAMES[params["timeframe"]])

    def dump_state(self, state: TrendState) -> dict[str, Any]:
        return {"position": str(state.position), "pending": state.pending, "seq": state.seq,
                "entered": state.entered, "start_signal": state.start_signal}

    def load_state(self, data: Mapping[str, Any]) -> TrendState:
        return TrendState(position=Decimal(data["position"]), pending=data["pending"], seq=int(data["seq"]),
                          entered=bool(data.get("entered", True)), start_signal=data.get("start_signal"))


TREND = Trend()
