"""/chart: a live strategy's value since it started, its fills, and buy & hold, as a PNG photo with a caption.

Where every figure comes from:

- **The strategy's value at a time t** = its unspent budget plus what it holds at the price of t, net of every
  fee: budget + realised + unrealised of its fills up to t (`bot.engine.pnl.running`, the one P&L replay), with
  each asset at its last known price at t — a candle's close, or a fill's own price when the fill is newer.
- **Prices over time**: the venue's public candles (`gateway.fetch_ohlcv`: no key, no signed request, cached and
  charged to the user's fair share like any public call), one timeframe chosen so that the strategy's life fits
  in at most `MAX_POINTS` candles. Each closed candle is a point at its close time.
- **Now**: the last point is `Figures.value` from `StrategyService.figures` — the very figures `/status` shows
  (last price; futures: the mark price), so the chart never disagrees with `/status`.
- **Buy & hold**: the strategy's budget put into its base at the start price (the open of the candle the
  strategy started in, or its first fill's price when it filled at once), paying the venue's taker fee once, so
  both lines are net of fees. A rebalance holds its target weights from the start instead (the quote's own
  weight stays in cash).

Ownership is checked in SQL (`get_owned`): another user's strategy gets the same answer as a missing one.
Rendering happens in a worker thread (`bot.charts.render_png_async`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import escape
from typing import Any

from bot.charts import ChartFill, ValueChart, render_png_async
from bot.engine.figures import Figures
from bot.engine.pnl import Pnl, is_contract, running
from bot.exchanges.errors import ExchangeFailure
from bot.exchanges.market_data import Candle, timeframe_ms
from bot.exchanges.rate_budget import charged_to
from bot.exchanges.venues import adapter
from bot.formatting import money, percent
from bot.services.errors import UserError
from bot.services.positions import mark_price
from bot.strategies.naming import list_label
from bot.strategies.params import ParamError, parse_weights
from bot.venues import venue_name
from storage.models import Account, Strategy
from storage.orders import StrategyFill

logger = logging.getLogger(__name__)

ZERO = Decimal(0)
HUNDRED = Decimal(100)
#: Timeframes every venue serves (Kraken's OHLC intervals are a subset of Binance's), shortest first.
TIMEFRAMES = ("1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w")
#: At most this many candles per chart: one request on every venue (Kraken serves 720, Binance 1,000), and a
#: line a phone shows sharply.
MAX_POINTS = 720
CAPTION_LIMIT = 1024  # Telegram's caption limit: the title is clipped so the caption stays far within it
NO_SUCH_STRATEGY = "No such strategy. See /status for yours."
STATES = {"active": "running", "paused": "paused", "finished": "finished", "stopped": "stopped"}


# --- pure steps ------------------------------------------------------------------------------------------


def pick_timeframe(start: datetime, now: datetime) -> tuple[str, int]:
    """The shortest timeframe whose candles from `start` to `now` number at most MAX_POINTS, and how many to
    ask for (the candle `start` falls in, every one after it, and the one still open)."""
    span_ms = max(0, int((now - start).total_seconds() * 1000))
    for timeframe in TIMEFRAMES:
        count = span_ms // timeframe_ms(timeframe) + 2
        if count <= MAX_POINTS:
            return timeframe, count
    return TIMEFRAMES[-1], MAX_POINTS


def price_path(
    candles: Sequence[Candle], timeframe: str, start: datetime, now: datetime
) -> list[tuple[datetime, Decimal]]:
    """The closes of the candles that closed after `start` and by `now`, at their close times, oldest first."""
    length = timeframe_ms(timeframe)
    start_ms, now_ms = _ms(start), _ms(now)
    return [
        (_at(c.timestamp_ms + length), c.close)
        for c in candles
        if start_ms < c.timestamp_ms + length <= now_ms
    ]


def start_price(
    candles: Sequence[Candle], timeframe: str, start: datetime, first_fill: StrategyFill | None = None
) -> Decimal | None:
    """The price when the strategy started: its first fill's when that came within the candle it started in (a
    DCA buys at once: buy & hold then starts at the same price), else the open of that candle (else of the first
    one after)."""
    length, start_ms = timeframe_ms(timeframe), _ms(start)
    if first_fill is not None and _ms(first_fill.fill.at) < (start_ms // length + 1) * length:
        return first_fill.fill.price
    containing = [c for c in candles if c.timestamp_ms <= start_ms < c.timestamp_ms + length]
    later = [c for c in candles if c.timestamp_ms > start_ms]
    chosen = containing[-1] if containing else (later[0] if later else None)
    return None if chosen is None else chosen.open


@dataclass(frozen=True)
class BuyAndHold:
    """What buy & hold holds: units of each asset bought at the start, and the quote it kept."""

    units: Mapping[str, Decimal]
    cash: Decimal = ZERO

    def value(self, prices: Mapping[str, Decimal]) -> Decimal:
        return self.cash + sum((units * prices[asset] for asset, units in self.units.items()), ZERO)


def buy_and_hold(budget: Decimal, weights: Mapping[str, Decimal], prices: Mapping[str, Decimal],
                 taker_fee: Decimal) -> BuyAndHold:
    """`budget` split by `weights` (percent per asset; what no asset takes stays in cash), each part put into its
    asset at its start price, paying `taker_fee` (a rate) on the buy."""
    units = {asset: budget * weight / HUNDRED * (1 - taker_fee) / prices[asset] for asset, weight in weights.items()}
    cash = budget * (HUNDRED - sum(weights.values(), ZERO)) / HUNDRED
    return BuyAndHold(units, cash)


@dataclass(frozen=True)
class Series:
    times: list[datetime]
    values: list[Decimal]
    hold: list[Decimal]
    fills: list[ChartFill]


def value_series(
    *,
    budget: Decimal,
    quote: str,
    start: datetime,
    fills: Sequence[StrategyFill],
    paths: Mapping[str, Sequence[tuple[datetime, Decimal]]],
    start_prices: Mapping[str, Decimal],
    hold: BuyAndHold,
    fill_points: bool = True,
) -> Series:
    """The strategy's value and buy & hold's at the start and at every price point, and each fill's marker.

    Pure: fills (oldest first), price paths per asset and the start prices in; the series out. The value at a
    point is budget + realised + unrealised of the fills up to it, every asset at its last known price (a fill's
    price counts as known from its time on). `fill_points`: each fill is a point of the lines too, so the value
    line passes through its markers (leave it off for thousands of fills: markers only).
    """
    events: list[tuple[datetime, int, Any]] = [(start, 0, None)]
    events += [(at, 1, (asset, price)) for asset, path in paths.items() for at, price in path]
    events += [(item.fill.at, 2, item) for item in fills]
    events.sort(key=lambda e: (e[0], e[1]))
    prices = dict(start_prices)
    snapshots: Iterator[Pnl] = running(fills, quote)
    pnl: Pnl | None = None
    series = Series([], [], [], [])
    for at, kind, payload in events:
        if kind == 2:
            pnl = next(snapshots)
            prices[payload.symbol.split("/")[0]] = payload.fill.price
            value = _value(budget, pnl, prices)
            if value is not None:
                series.fills.append(ChartFill(at, payload.fill.side, value))
            if not fill_points:
                continue
        elif kind == 1:
            asset, price = payload
            prices[asset] = price
        value = budget if pnl is None else _value(budget, pnl, prices)
        if value is None or any(asset not in prices for asset in hold.units):
            continue
        if series.times and series.times[-1] == at:  # two assets' candles close together: one point
            series.values[-1], series.hold[-1] = value, hold.value(prices)
            continue
        series.times.append(at)
        series.values.append(value)
        series.hold.append(hold.value(prices))
    return series


def _value(budget: Decimal, pnl: Pnl, prices: Mapping[str, Decimal]) -> Decimal | None:
    unrealised = pnl.unrealised(prices)
    return None if unrealised is None else budget + pnl.realised + unrealised


# --- the service -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategyChart:
    """One strategy's chart: the PNG, its caption (HTML, within Telegram's 1,024 characters) and the figures."""

    strategy_id: int
    png: bytes
    caption: str
    value: Decimal  # now, as /status: Figures.value
    hold: Decimal  # buy & hold now
    budget: Decimal
    quote: str
    timeframe: str
    points: int
    render_seconds: float


@dataclass(frozen=True)
class ChartChoice:
    id: int
    label: str


class ChartService:
    def __init__(self, store: Any, strategies: Any, gateway: Any, clock) -> None:
        self._store = store
        self._strategies = strategies  # StrategyService: the figures /status shows
        self._gateway = gateway
        self._clock = clock

    async def choices(self, user_id: int) -> list[ChartChoice]:
        """Every strategy of the user (stopped ones too: their history), oldest first."""
        return [ChartChoice(s.id, _label(s)) for s in await self._store.strategies.list_for_user(user_id)]

    async def chart(self, user_id: int, strategy_id: int) -> StrategyChart:
        """The chart of one of the user's strategies; another user's id is answered as a missing one."""
        strategy = await self._store.strategies.get_owned(user_id, int(strategy_id))
        if strategy is None:
            raise UserError(NO_SUCH_STRATEGY)
        account = await self._store.accounts.get(strategy.account_id)
        if account is None:
            raise UserError("This strategy's account is gone, so its prices cannot be read.")
        with charged_to(f"user:{user_id}"):
            return await self._chart(strategy, account)

    async def _chart(self, strategy: Strategy, account: Account) -> StrategyChart:
        now = self._clock()
        fills = await self._store.orders.fills_for_strategy(strategy.id)
        start = min([strategy.created_at, *(f.fill.at for f in fills)])
        timeframe, count = pick_timeframe(start, now)
        markets = _markets(strategy, account.venue)
        figures = await self._strategies.figures(strategy, account)
        paths, starts, last, taker = {}, {}, {}, ZERO
        for asset, symbol in markets.items():
            try:
                candles = (await self._gateway.fetch_ohlcv(account.venue, symbol, timeframe, count)).closed
                # (the open candle is left out: the last point is now, at /status's own price)
                info = await self._gateway.market(account.venue, symbol)
            except ExchangeFailure:
                raise UserError(f"Could not read {symbol.split(':')[0]}'s prices from {venue_name(account.venue)} "
                                "now; try again in a minute.") from None
            taker = max(taker, info.taker_fee or ZERO)
            paths[asset] = price_path(candles, timeframe, start, now)
            last[asset] = figures.prices.get(asset) or await self._last_price(account.venue, symbol)
            first = next((f for f in fills if f.symbol.split("/")[0] == asset), None)
            starts[asset] = start_price(candles, timeframe, start, first) or last[asset]
            if starts[asset] is None or last[asset] is None:
                raise UserError(f"Could not read {symbol.split(':')[0]}'s price from {venue_name(account.venue)} "
                                "now; try again in a minute.")
        if figures.value is None:
            raise UserError("Could not read the price of what this strategy holds now; try again in a minute.")
        hold = buy_and_hold(strategy.budget, _weights(strategy, markets), starts, taker)
        series = value_series(budget=strategy.budget, quote=strategy.quote, start=start, fills=fills, paths=paths,
                              start_prices=starts, hold=hold, fill_points=len(fills) <= MAX_POINTS)
        at_now = max(now, series.times[-1]) if series.times else now
        series.times.append(at_now)
        series.values.append(figures.value)
        series.hold.append(hold.value(last))
        chart = ValueChart(
            title=_label(strategy), quote=strategy.quote, times=series.times, values=series.values, hold=series.hold,
            budget=strategy.budget, fills=series.fills,
            subtitle=f"{venue_name(account.venue)}, {timeframe} candles, {_state(strategy)}",
        )
        began = time.perf_counter()
        png = await render_png_async(chart)
        seconds = time.perf_counter() - began
        logger.debug("chart of strategy %s: %d points, %d fills, rendered in %.3f s",
                     strategy.id, len(series.times), len(fills), seconds)
        hold_now = series.hold[-1]
        return StrategyChart(
            strategy_id=strategy.id, png=png,
            caption=caption_text(strategy, figures, hold_now, start, fills, venue_name(account.venue), timeframe),
            value=figures.value, hold=hold_now, budget=strategy.budget, quote=strategy.quote, timeframe=timeframe,
            points=len(series.times), render_seconds=seconds,
        )

    async def _last_price(self, venue: str, symbol: str) -> Decimal | None:
        """The price /status values a holding at: the last trade (futures: the venue's mark price)."""
        if is_contract(symbol):
            return await mark_price(self._gateway, venue, symbol)
        try:
            return (await self._gateway.fetch_ticker(venue, symbol)).last
        except ExchangeFailure:
            return None

    async def summary_chart(self, user_id: int) -> StrategyChart | None:
        """The daily summary's chart: the user's running (or paused) strategy with the largest budget."""
        candidates = await self._store.strategies.list_for_user(user_id, ("active", "paused"))
        if not candidates:
            return None
        chosen = max(candidates, key=lambda s: (s.budget, -s.id))
        return await self.chart(user_id, chosen.id)


def caption_text(strategy: Strategy, figures: Figures, hold_now: Decimal, start: datetime,
                 fills: Sequence[StrategyFill], venue: str, timeframe: str) -> str:
    """The photo's caption: the strategy, its value now, its P&L net of fees against buy & hold (HTML)."""
    q = escape(strategy.quote)
    budget = strategy.budget
    net = figures.value - budget
    hold_net = hold_now - budget
    buys = sum(1 for f in fills if f.fill.side == "buy")
    title = escape(_clip(_label(strategy), 120))
    lines = [
        f"📈 <b>{title}</b> — {escape(_state(strategy))}, since "
        f"{start.astimezone(UTC):%Y-%m-%d %H:%M} UTC",
        f"Value now {money(figures.value, q)} (budget {money(budget, q)}: unspent budget plus holdings at the "
        "last price)",
        f"P&amp;L net of fees: {money(net, q, signed=True)} ({percent(_pct(net, budget))}), fees "
        f"{money(figures.fees, q)}",
        f"Buy &amp; hold: {money(hold_net, q, signed=True)} ({percent(_pct(hold_net, budget))}): "
        f"{_against(net - hold_net, q)}",
        f"{len(fills)} fill{'' if len(fills) == 1 else 's'} ({buys} buy{'' if buys == 1 else 's'}, "
        f"{len(fills) - buys} sell{'' if len(fills) - buys == 1 else 's'}) · {escape(venue)} {timeframe} candles",
    ]
    if not fills:
        lines[-1] = f"No fills yet: the value stays at the budget · {escape(venue)} {timeframe} candles"
    return "\n".join(lines)


def _against(difference: Decimal, quote: str) -> str:
    """"the strategy did 5.92 USDT better" (or worse, or the same) than buy & hold."""
    shown = money(abs(difference), quote)
    if shown == money(ZERO, quote):
        return "the strategy did the same"
    return f"the strategy did {shown} {'better' if difference > 0 else 'worse'}"


def _markets(strategy: Strategy, venue: str) -> dict[str, str]:
    """Each asset the strategy trades → its venue market (ccxt symbol)."""
    venue_adapter = adapter(venue)
    if strategy.kind == "rebalance":
        quote = strategy.quote
        return {a: venue_adapter.market_symbol(f"{a}/{quote}") for a in _rebalance_weights(strategy) if a != quote}
    base = strategy.symbol.split("/")[0]
    return {base: venue_adapter.market_symbol(strategy.symbol)}


def _weights(strategy: Strategy, markets: Mapping[str, str]) -> dict[str, Decimal]:
    if strategy.kind == "rebalance":
        weights = _rebalance_weights(strategy)
        return {asset: weights[asset] for asset in markets}
    return {asset: HUNDRED for asset in markets}


def _rebalance_weights(strategy: Strategy) -> dict[str, Decimal]:
    raw = strategy.params.get("weights")
    if isinstance(raw, Mapping):
        return {str(k).upper(): Decimal(str(v)) for k, v in raw.items()}
    try:
        return parse_weights(str(raw))
    except ParamError:
        raise UserError("This strategy's weights cannot be read, so it cannot be charted.") from None


def _state(strategy: Strategy) -> str:
    return STATES.get(strategy.status, strategy.status)


def _label(strategy: Strategy) -> str:
    return list_label(strategy.kind, strategy.id, strategy.symbol, strategy.params, strategy.name)


def _pct(value: Decimal, budget: Decimal) -> Decimal | None:
    return None if not budget else value / budget * HUNDRED


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _at(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
