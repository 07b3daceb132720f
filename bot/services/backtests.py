"""/backtest: replay a strategy over a venue's public candles and answer with a chart and its figures.

`/backtest <strategy> <budget> <symbol> [param=value …] [days=N] [venue=binance|kraken]` (days 1–365, 30 by
default; Binance Spot by default). No account is needed: candles are public (`bot.backtest.candles`, cached on
disk), the market's precision, minimums and fees come from the venue's market list, and the replay runs the
live engine's own decision core (`bot.backtest.replay`). The answer is a PNG (`bot.charts`) and a caption with
the P&L net of fees, the fees, the number of trades, the max drawdown and buy & hold over the same candles.

The timeframe follows the strategy: trend replays its own candles (with its slow average's warm-up before the
range); DCA and grid replay hourly candles (a DCA every 15 minutes, 15-minute ones), coarser when the range would
need more than `MAX_CANDLES`. Replay and drawing run in worker threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import html
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from bot.backtest.candles import CandleStore, utc_ms
from bot.backtest.replay import Replay, replay, terms_for
from bot.backtest.replay import max_drawdown as drawdown_of
from bot.charts import ChartFill, ValueChart, render_png_async
from bot.engine.risk import smallest_buy_cost
from bot.exchanges.errors import ExchangeFailure
from bot.exchanges.rate_budget import charged_to
from bot.exchanges.venues import adapter
from bot.formatting import amount as fmt_amount
from bot.formatting import money, number, percent
from bot.services.errors import UserError
from bot.strategies import STRATEGIES
from bot.strategies.params import TIMEFRAMES, ParamError, parse_budget, shown, split_assignments
from bot.venues import venue_name

ZERO = Decimal(0)
HUNDRED = Decimal(100)
DEFAULT_DAYS, MAX_DAYS = 30, 365
DEFAULT_VENUE = "binance"
VENUES = ("binance", "kraken")
#: The most candles one replay reads (a year of hours is 8,760).
MAX_CANDLES = 9000
#: Timeframes a replay may use, finest first.
REPLAY_TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")
#: Quotes Kraken prices to 5 cost decimals.
FIAT_LIKE = frozenset({"USD", "EUR", "GBP", "CAD", "AUD", "CHF", "JPY", "USDT", "USDC", "DAI"})
#: Strategies a backtest cannot replay yet, with why.
UNSUPPORTED = {"rebalance": "rebalance trades several markets at once; /backtest replays one market"}
#: The longest parameter line the caption repeats.
MAX_PARAMS_SHOWN = 160
#: How long a "Start this strategy" button stays usable, and how many are kept at most (the oldest go first).
START_TTL = timedelta(hours=6)
MAX_KEPT = 2000
#: Backtests replayed and drawn at once (each a worker thread); more wait their turn.
CONCURRENT = 2
#: Ready lines offered by the guided /backtest (grid's range is set around the price when offered).
EXAMPLES = {
    "dca": ("dca", "1000", "BTC/USDT", "every=1d", "amount=50", "days=90"),
    "trend": ("trend", "1000", "BTC/USDT", "timeframe=1h", "fast=9", "slow=21", "days=30"),
}
USAGE = (
    "Usage: /backtest <strategy> <budget> <symbol> [param=value …] [days=N] [venue=binance|kraken], "
    "e.g. /backtest dca 1000 BTC/USDT every=1d amount=50 days=90"
)


@dataclass(frozen=True)
class BacktestRequest:
    kind: str
    budget: Decimal
    symbol: str  # as typed until resolved on the venue
    params: Mapping[str, str]
    days: int
    venue: str


@dataclass(frozen=True)
class BacktestFigures:
    """The caption's figures, also what tests recompute from the fills."""

    final_value: Decimal
    pnl: Decimal
    pnl_percent: Decimal
    fees: Decimal
    trades: int
    max_drawdown_percent: Decimal
    hold_pnl: Decimal
    hold_percent: Decimal


@dataclass(frozen=True)
class BacktestReport:
    request: BacktestRequest
    symbol: str
    timeframe: str
    start: datetime
    end: datetime
    candles: int
    figures: BacktestFigures
    caption: str
    png: bytes
    #: The token of its "Start this strategy" button.
    token: str
    replay: Replay = field(repr=False)


def parse_request(args: Sequence[str]) -> BacktestRequest:
    """The command's words as a request, or a `UserError` saying what is wrong with them."""
    if len(args) < 3:
        raise UserError(USAGE)
    kind_text, budget_text, symbol, *rest = args
    kind = kind_text.strip().lower()
    if kind not in STRATEGIES:
        raise UserError(f"Unknown strategy '{shown(kind_text)}'; choose one of: {', '.join(STRATEGIES)}.")
    if kind in UNSUPPORTED:
        raise UserError(f"No backtest for {kind} yet: {UNSUPPORTED[kind]}.")
    try:
        budget = parse_budget(budget_text)
        raw = split_assignments(rest)
    except ParamError as exc:
        raise UserError(exc.message) from None
    days_text = raw.pop("days", str(DEFAULT_DAYS))
    try:
        days = int(days_text)
    except ValueError:
        raise UserError(f"days must be a whole number from 1 to {MAX_DAYS}, not '{shown(days_text)}'.") from None
    if not 1 <= days <= MAX_DAYS:
        raise UserError(f"days must be from 1 to {MAX_DAYS} (you asked {days}).")
    venue = raw.pop("venue", DEFAULT_VENUE).strip().lower()
    if venue not in VENUES:
        raise UserError(f"venue must be one of: {', '.join(VENUES)} (not '{shown(venue)}').")
    strategy = STRATEGIES[kind]
    try:
        params = strategy.parse_params(raw)
        strategy.check_allocation(symbol, budget, params)
    except ParamError as exc:
        raise UserError(exc.message) from None
    return BacktestRequest(kind, budget, symbol, dict(raw), days, venue)


def choose_timeframe(kind: str, params: Mapping[str, Any], days: int) -> str:
    """The candles a replay uses: the strategy's own (trend), else hourly or the finest its schedule needs,
    coarser while the range would need more than `MAX_CANDLES`."""
    span = timedelta(days=days)
    own = STRATEGIES[kind].timeframe(params)
    if own is not None:
        if span / TIMEFRAMES[own] > MAX_CANDLES:
            raise UserError(
                f"{days} days of {own} candles is more than {_count(MAX_CANDLES)} candles: use fewer days or a longer "
                "timeframe."
            )
        return own
    every = params.get("every")
    finest = "1h"
    if isinstance(every, timedelta) and every < TIMEFRAMES["1h"]:
        finest = next(tf for tf in reversed(REPLAY_TIMEFRAMES) if TIMEFRAMES[tf] <= every and every % TIMEFRAMES[tf]
                      == timedelta(0))
    start = REPLAY_TIMEFRAMES.index(finest)
    for timeframe in REPLAY_TIMEFRAMES[start:]:
        if span / TIMEFRAMES[timeframe] <= MAX_CANDLES:
            return timeframe
    return REPLAY_TIMEFRAMES[-1]


class BacktestService:
    """Runs backtests for the chat; keeps each report's request a while for its "Start this strategy" button."""

    def __init__(
        self,
        gateway: Any,
        data_dir: Path,
        clock: Callable[[], datetime],
        resolve_market: Callable[[str, str], Awaitable[str]],
    ) -> None:
        self.gateway = gateway
        self.candles = CandleStore(gateway, data_dir / "candles")
        self.clock = clock
        self.resolve_market = resolve_market
        self._started: dict[str, tuple[datetime, int, BacktestRequest, str]] = {}
        self._busy: set[int] = set()
        self._slots = asyncio.Semaphore(CONCURRENT)

    async def run(self, user_id: int, args: Sequence[str]) -> BacktestReport:
        """Parse, check, replay and draw; one backtest per user at a time, `CONCURRENT` for everyone."""
        request = parse_request(args)
        if user_id in self._busy:
            raise UserError("Your previous backtest is still running: its chart comes in a moment.")
        self._busy.add(user_id)
        try:
            async with self._slots:
                with charged_to(f"user:{user_id}"):  # its candle pages count against this user's fair share
                    return await self._run(user_id, request)
        finally:
            self._busy.discard(user_id)

    async def _run(self, user_id: int, request: BacktestRequest) -> BacktestReport:
        strategy = STRATEGIES[request.kind]
        params = strategy.parse_params(request.params)
        symbol = await self.resolve_market(request.venue, request.symbol)
        name = venue_name(request.venue)
        try:
            info = await self.gateway.market(request.venue, symbol)
        except ExchangeFailure as failure:
            raise UserError(f"Could not read {symbol} on {name}: {failure.user_message}") from None
        timeframe = choose_timeframe(request.kind, params, request.days)
        step = TIMEFRAMES[timeframe]
        now = self.clock()
        warmup = int(params["slow"]) if request.kind == "trend" else 0
        until = utc_ms(now)
        since = utc_ms(now - timedelta(days=request.days)) - warmup * int(step.total_seconds() * 1000)
        try:
            candles = await self.candles.closed(request.venue, symbol, timeframe, since, until)
        except ExchangeFailure as failure:
            raise UserError(f"Could not read {symbol}'s candles on {name}: {failure.user_message}") from None
        start = min(warmup, len(candles))
        if len(candles) - start < 2:
            raise UserError(f"{name} has no {timeframe} candles of {symbol} for the last {request.days} days.")
        terms = terms_for(info, adapter(request.venue).entry_taker_fee, fee_step(request.venue, info.quote))
        first = candles[start].close
        minimum = max(info.min_cost or ZERO, smallest_buy_cost(terms.rules, first))
        if request.budget < minimum:
            raise UserError(
                f"A budget of {money(request.budget, info.quote)} is below {symbol}'s minimum order of "
                f"{money(minimum, info.quote)} at the start of the range."
            )
        per_buy = params.get("amount") or request.budget / 10 if request.kind == "dca" else None
        if per_buy is not None and per_buy < minimum:
            raise UserError(
                f"The amount per buy, {money(per_buy, info.quote)}, is below {symbol}'s minimum order of "
                f"{money(minimum, info.quote)} at the start of the range: use amount= at least that."
            )
        result = await asyncio.to_thread(
            replay, strategy, params, request.budget, symbol, terms, candles, step, start=start
        )
        figures = figures_of(result)
        begin, end = candles[start].ts, candles[-1].ts + step
        asked_from = now - timedelta(days=request.days)
        short = begin - asked_from > step * 2
        caption = caption_text(
            request, symbol, info.quote, info.base, timeframe, begin, end, len(candles) - start, figures, result,
            short=short, amount_step=info.amount_step,
        )
        chart = ValueChart(
            title=f"{strategy.title} on {symbol}: backtest",
            quote=info.quote, times=result.times, values=result.values, hold=result.hold, budget=request.budget,
            fills=[ChartFill(f.at, f.side, f.value) for f in result.fills],
            subtitle=f"{name}, {timeframe} candles, {begin:%Y-%m-%d} → {end:%Y-%m-%d}",
        )
        png = await render_png_async(chart)
        token = self._remember(user_id, request, symbol)
        return BacktestReport(request, symbol, timeframe, begin, end, len(candles) - start, figures, caption, png,
                              token, result)

    async def example(self, kind: str) -> list[str]:
        """A ready `/backtest` line for `kind` on BTC/USDT (a grid's range around today's price)."""
        if kind == "grid":
            try:
                ticker = await self.gateway.fetch_ticker(DEFAULT_VENUE, "BTC/USDT")
            except ExchangeFailure as failure:
                raise UserError(f"Could not read BTC/USDT's price: {failure.user_message}") from None
            last = ticker.last or Decimal(30000)
            low, high = (_hundreds(last * Decimal("0.9")), _hundreds(last * Decimal("1.1")))
            return ["grid", "1000", "BTC/USDT", f"low={low:f}", f"high={high:f}", "levels=10", "days=30"]
        return list(EXAMPLES[kind])

    def _remember(self, user_id: int, request: BacktestRequest, symbol: str) -> str:
        now = self.clock()
        for token in [t for t, kept in self._started.items() if kept[0] < now]:
            del self._started[token]
        while len(self._started) >= MAX_KEPT:  # oldest first: dicts keep insertion order
            del self._started[next(iter(self._started))]
        token = secrets.token_urlsafe(6)
        self._started[token] = (now + START_TTL, user_id, request, symbol)
        return token

    def started(self, token: str, user_id: int) -> tuple[BacktestRequest, str]:
        """The request behind a "Start this strategy" button (its own user's only), with its resolved market."""
        kept = self._started.get(token)
        if kept is None or kept[1] != user_id or kept[0] < self.clock():
            raise UserError("This backtest has expired. Run /backtest again.")
        return kept[2], kept[3]


def fee_step(venue: str, quote: str) -> Decimal:
    """How finely the venue reports a fill's fee: Binance to 8 decimals; Kraken to the pair's cost decimals
    (5 for fiat and stablecoin quotes, 10 for crypto ones, as its AssetPairs lists them)."""
    if venue == "kraken":
        return Decimal("1e-5") if quote in FIAT_LIKE else Decimal("1e-10")
    return Decimal("1e-8")


def figures_of(result: Replay) -> BacktestFigures:
    budget = result.budget
    final = result.values[-1]
    pnl = final - budget
    hold = result.hold[-1] - budget
    return BacktestFigures(
        final_value=final, pnl=pnl, pnl_percent=pnl / budget * HUNDRED,
        fees=sum((f.fee for f in result.fills), ZERO), trades=len(result.fills),
        max_drawdown_percent=drawdown_of(result.values) * HUNDRED,
        hold_pnl=hold, hold_percent=hold / budget * HUNDRED,
    )


def caption_text(
    request: BacktestRequest, symbol: str, quote: str, base: str, timeframe: str, begin: datetime, end: datetime,
    candles: int, figures: BacktestFigures, result: Replay, *, short: bool, amount_step: Decimal | None,
) -> str:
    """The photo's caption (HTML, well under Telegram's 1,024 characters)."""
    strategy = STRATEGIES[request.kind]
    name = venue_name(request.venue)
    shown_params = " ".join(f"{k}={v}" for k, v in request.params.items())
    if len(shown_params) > MAX_PARAMS_SHOWN:  # a caption holds 1,024 characters: the figures come first
        shown_params = shown_params[: MAX_PARAMS_SHOWN - 1] + "…"
    lines = [
        f"<b>Backtest: {strategy.title} on {symbol}</b> ({name})",
        f"{begin:%Y-%m-%d %H:%M} → {end:%Y-%m-%d %H:%M} UTC, {_count(candles)} {timeframe} candles",
        f"Budget {money(request.budget, quote)}" + (f" · <code>{_esc(shown_params)}</code>" if shown_params else ""),
        "",
        f"P&amp;L net of fees: <b>{money(figures.pnl, quote, signed=True)}</b> ({percent(figures.pnl_percent)})",
        f"Fees: {money(figures.fees, quote)} · Trades: {_count(figures.trades)}",
        f"Max drawdown: {percent(figures.max_drawdown_percent, signed=False)}",
        f"Buy &amp; hold: {money(figures.hold_pnl, quote, signed=True)} ({percent(figures.hold_percent)})",
        f"Ends with {fmt_amount(result.holdings.get(base, ZERO), base, amount_step, held=True)} and "
        f"{money(result.budget - result.net_spent, quote)} unspent"
        + (f" ({money(result.reserved, quote)} of it in open orders)" if result.reserved > 0 else ""),
    ]
    if short:
        lines.append(f"⚠️ {name} gave candles from {begin:%Y-%m-%d} only: fewer days than the {request.days} asked"
                     + (" (Kraken serves only its latest 720 candles)." if request.venue == "kraken" else "."))
    if result.paused:
        lines.append(f"⚠️ Stopped early: the strategy would have been paused ({_esc(result.paused)}).")
    lines.append("<i>Fills at the candle close (market) or at the limit when the candle crosses it; past results "
                 "do not predict future ones.</i>")
    return "\n".join(lines)


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


def _hundreds(value: Decimal) -> Decimal:
    return (value / 100).to_integral_value() * 100


def _count(value: int) -> str:
    return number(Decimal(value), 0)
