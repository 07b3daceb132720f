"""One run of one strategy: load → market snapshot → decide → risk gate → intents (committed) → send.

The decision's new state and its orders' intents commit in ONE transaction, so after a crash the strategy
never decides the same slot again without its intents existing, and the intents are sent (or found) by the
start-up reconciliation. A gate refusal for `funds` pauses the strategy and keeps the old state (nothing of
the decision is stored: on resume the strategy owes the same slot); a refusal for `budget` or `minimum`
skips that order quietly and tells the strategy it closed unfilled and refused (`Fill.refused`), so the
strategy re-plans instead of asking for the same refused order on every run.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from bot.engine.actions import pause_strategy, reject_key
from bot.engine.context import EngineContext
from bot.engine.core import Gated, budget_of, fold_refusals, gate_decision, holdings_of
from bot.engine.crash_hook import crash_point
from bot.engine.intents import OrderDesk, client_order_id
from bot.engine.risk import Ledger, MarketRules, Refused
from bot.exchanges.errors import Action, ExchangeFailure
from bot.exchanges.rate_budget import decision_read
from bot.exchanges.venues import adapter
from bot.strategies import STRATEGIES
from bot.strategies.base import Candle, DesiredOrder, MarketInfo, MarketSnapshot
from bot.venues import FUTURES_LEVERAGE
from storage.models import Account, Order, Strategy, dumps
from storage.orders import ZERO, outstanding
from storage.strategies import ACTIVE

logger = logging.getLogger(__name__)

CANDLE_LIMIT = 200
T = TypeVar("T")
#: Decisions tried per run when fills keep changing the strategy while its balance is read (then: retry later).
DECIDE_ATTEMPTS = 4
#: `_decide_locked`'s answer when its decision places orders and it has no balance to gate them with.
NEED_BALANCE = object()


@dataclass(frozen=True)
class RunResult:
    """What a run decided about the schedule: when to run next (None: only after fills or never)."""

    next_run: datetime | None
    placed: int = 0
    retry_later: bool = False


@dataclass(frozen=True)
class _MarketData:
    """One run's market reads (rules, prices, candles): taken before the strategy's lock, used under it."""

    needs: tuple[tuple[str, ...], str | None]
    rules: dict[str, MarketRules]
    markets: dict[str, MarketInfo]
    prices: dict[str, Decimal]
    candles: tuple[Candle, ...]
    futures: bool

    def snapshot(
        self, strategy: Strategy, now: datetime, owned: dict[str, Decimal]
    ) -> tuple[MarketSnapshot, dict[str, MarketRules]]:
        price = self.prices.get(strategy.symbol, Decimal(1) if "/" not in strategy.symbol else ZERO)
        snapshot = MarketSnapshot(
            now=now, symbol=strategy.symbol, price=price, candles=self.candles, markets=self.markets,
            prices=self.prices, holdings=owned, futures=self.futures,
        )
        return snapshot, self.rules


class StrategyRunner:
    def __init__(self, ctx: EngineContext, desk: OrderDesk) -> None:
        self.ctx = ctx
        self.desk = desk
        desk.prepare = self._prepare_order
        self._futures_ready: set[tuple[int, str]] = set()
        self._notes: dict[int, str | None] = {}  # the status line last stored per strategy
        self._round = 0
        self._parsed_cache: dict[int, tuple[dict, dict, Any, Any]] = {}

    async def run(self, strategy_id: int) -> RunResult:
        """Run a strategy once if it is active; exchange trouble is acted on, never raised."""
        store = self.ctx.store
        decided = await self._decide(strategy_id)
        if isinstance(decided, RunResult):
            return decided
        _, account, next_run, order_ids = decided
        if order_ids:
            crash_point("after_intent")
            for order_id in order_ids:
                order = await store.orders.get(order_id)
                if order is not None:
                    await self.desk.send(order, account)
        return RunResult(next_run, placed=len(order_ids))

    async def _decide(self, strategy_id: int) -> tuple[Strategy, Account, datetime | None, list[int]] | RunResult:
        """Decide under the strategy's lock and commit the state with the intents; return their row ids.

        Recording a fill takes the same lock, so nothing here asks the venue anything while holding it (a streamed
        fill would wait behind a REST call queued on the IP's weight): the market data is read before the lock,
        and a decision that places orders releases it to read the balance, then decides again on the state of
        that moment. A balance read while a fill of the strategy was being recorded is read again, so the gate
        never judges a sell against a balance from before the fill that bought its coins.
        """
        found = await self._active(strategy_id)
        if isinstance(found, RunResult):
            return found
        strategy, account = found
        market: _MarketData | None = None
        balance: tuple[Strategy, dict[str, Decimal]] | None = None  # free per asset, and the row it was read for
        try:
            for _ in range(DECIDE_ATTEMPTS):
                needs = self._needs(strategy)
                if market is None or market.needs != needs:
                    market = await self._market_data(strategy, account, needs)
                async with self.ctx.lock(strategy_id):
                    found = await self._active(strategy_id, keep_note=True)
                    if isinstance(found, RunResult):
                        return found
                    strategy, account = found
                    if self._needs(strategy) != market.needs:
                        continue  # edited meanwhile: its markets are read again
                    free = balance[1] if balance is not None and balance[0] == strategy else None
                    decided = await self._decide_locked(strategy, account, market, free)
                    if decided is not NEED_BALANCE:
                        return decided
                read_for = strategy
                creds = await self.ctx.credentials(account)
                with decision_read():  # the order waits on it: ahead of the engine's background reads
                    lines = await self.ctx.gateway.fetch_balance(account.venue, creds)
                balance = read_for, {asset: line.free for asset, line in lines.items()}
        except ExchangeFailure as failure:
            return await self._on_failure(strategy, account, failure)
        logger.info("strategy %s: its fills kept changing it while deciding; retrying later", strategy_id)
        return RunResult(None, retry_later=True)

    async def _active(self, strategy_id: int, *, keep_note: bool = False) -> tuple[Strategy, Account] | RunResult:
        """The strategy and its account, if both are active (`keep_note`: remember its stored status line)."""
        found = await self.ctx.strategy_reader.get(strategy_id)  # batched per round
        if found is None or found[0].status != ACTIVE:
            return RunResult(None)
        strategy = found[0]
        if keep_note:
            self._notes[strategy_id] = found[1]
        account = await self.ctx.account(strategy.account_id, batched=True)
        if account is None or account.status != "active" or not self.ctx.owns(account.id):
            return RunResult(None)  # (an account another worker runs now: it schedules the strategy)
        return strategy, account

    def _needs(self, strategy: Strategy) -> tuple[tuple[str, ...], str | None]:
        """The markets and candle timeframe a decision of the strategy reads."""
        kind = STRATEGIES[strategy.kind]
        params, _ = self._parsed(strategy)
        return kind.symbols(strategy.symbol, params), kind.timeframe(params)

    async def _decide_locked(
        self, strategy: Strategy, account: Account, market: _MarketData, free: dict[str, Decimal] | None
    ) -> tuple[Strategy, Account, datetime | None, list[int]] | RunResult | object:
        """Decide from what is recorded now; `NEED_BALANCE` when the decision places orders and `free` is None."""
        store = self.ctx.store
        kind = STRATEGIES[strategy.kind]
        params, state = self._parsed(strategy)
        snapshot, rules = market.snapshot(strategy, self.ctx.clock(), await holdings(self.ctx, strategy.id))
        live = await self.ctx.live_orders(strategy.id)
        reserved = sum((outstanding(o) for o in live), ZERO)
        net_spent = strategy.spent - strategy.received
        budget = budget_of(strategy.budget, net_spent, reserved, rules.values())
        decision = kind.decide(snapshot, state, budget, params)

        gated = Gated()
        if decision.orders:
            if free is None:
                return NEED_BALANCE
            # Already written by an earlier run: never twice.
            placed = {d.tag for d in decision.orders if await store.orders.tag_exists(strategy.id, d.tag)}
            ledger = Ledger(budget=strategy.budget, spent=net_spent, reserved=reserved)
            gated = gate_decision(decision.orders, rules, snapshot.price_of, ledger, free, placed=placed.__contains__)
            if gated.halted is not None:
                # Nothing of this decision is stored: on resume the strategy owes the same orders.
                await pause_strategy(self.ctx, strategy.id, _refusal_message(*gated.halted))
                return RunResult(None)
            for desired, why in gated.skipped:
                logger.info("strategy %s: %s skipped (%s)", strategy.id, desired.tag, why)
        approved = gated.approved

        new_state, note = fold_refusals(kind, decision.state, decision.status, gated.skipped, params)
        now = self.ctx.clock()
        next_run = kind.next_run(new_state, params, now)
        finished = decision.finished and not approved and not live
        dumped = kind.dump_state(new_state)
        if not approved and not finished and self._unchanged(strategy, dumped, next_run, note):
            return strategy, account, next_run, []  # a run that changes nothing writes nothing
        order_ids: list[int] = []
        if approved:
            self.ctx.orders_changed(strategy.id)
        async with store.db.transaction() as tx:
            for desired, verdict in approved:
                order_ids.append(await store.orders.insert_intent(
                    tx, strategy_id=strategy.id, account_id=account.id,
                    client_order_id=client_order_id(account.venue, strategy, desired.tag), tag=desired.tag,
                    symbol=desired.symbol, side=desired.side, type=desired.type, amount=verdict.amount,
                    price=verdict.price, cost=verdict.cost, reserved=verdict.reserve,
                    reduce_only=desired.reduce_only,
                ))
            self.ctx.orders_changed(strategy.id)
            await store.strategies.save_run(
                tx, strategy.id, state=dumped, next_run=next_run, note=note,
                ran_at=now if approved else None, finished=finished,
            )
            if finished:
                await self._finished_alert(tx, strategy, note)
        self._notes[strategy.id] = note
        if finished:
            self.ctx.wake_notifier()
        return strategy, account, next_run, order_ids

    def _parsed(self, strategy: Strategy) -> tuple[Any, Any]:
        """Parameters and state as the strategy's objects, parsed again only when their stored JSON changed."""
        cached = self._parsed_cache.get(strategy.id)
        if cached is not None and cached[0] == strategy.params and cached[1] == strategy.state:
            return cached[2], cached[3]
        kind = STRATEGIES[strategy.kind]
        params, state = kind.parse_params(strategy.params), kind.load_state(strategy.state)
        self._parsed_cache[strategy.id] = (strategy.params, strategy.state, params, state)
        return params, state

    def _unchanged(self, strategy: Strategy, state: dict, next_run: datetime | None, note: str | None) -> bool:
        """Whether storing this run would write what the database already holds."""
        if self._notes.get(strategy.id, "\0") != note or json.loads(dumps(state)) != strategy.state:
            return False
        # A stored next run that is earlier than the new one only makes a restart run the strategy sooner,
        # which is harmless (it decides from its state): skip the write unless the schedule would be lost.
        if strategy.next_run is None or next_run is None:
            return strategy.next_run == next_run
        return strategy.next_run <= next_run

    async def _market_data(
        self, strategy: Strategy, account: Account, needs: tuple[tuple[str, ...], str | None]
    ) -> _MarketData:
        """What the venue says about the strategy's markets (read before its lock: these are REST calls)."""
        symbols, timeframe = needs
        gateway = self.ctx.gateway
        venue = account.venue
        # One ticker request per key per round: a run that started in an earlier second and reaches the cache
        # after a newer round began is served that round's ticker (the cache keeps the newest round id).
        self._round = max(self._round, int(time.time()))
        round_id = self._round
        infos = await _each(gateway.market(venue, s) for s in symbols)
        tickers = await _each(gateway.fetch_ticker(venue, s, round_id) for s in symbols)
        rules = {info.symbol: MarketRules.from_info(info) for info in infos}
        markets = {
            info.symbol: MarketInfo(info.symbol, info.base, info.quote, info.min_amount, info.min_cost,
                                    amount_step=info.amount_step)
            for info in infos
        }
        prices = {t.symbol: t.last for t in tickers if t.last is not None}
        candles: tuple[Candle, ...] = ()
        if timeframe is not None:
            data = await gateway.fetch_ohlcv(venue, strategy.symbol, timeframe, CANDLE_LIMIT)
            candles = tuple(
                Candle(datetime.fromtimestamp(c.timestamp_ms / 1000, tz=UTC), c.open, c.high, c.low, c.close,
                       c.volume)
                for c in data.closed
            )
        return _MarketData(needs, rules, markets, prices, candles, adapter(venue).futures)

    async def _prepare_order(self, order: Order, account: Account) -> bool:
        """The desk's hook before any send: futures orders need one-way mode and leverage 1 first."""
        if not adapter(account.venue).futures:
            return True
        if (account.id, order.symbol) in self._futures_ready:
            return True
        strategy = await self.ctx.store.strategies.get(order.strategy_id)
        return strategy is not None and await self._prepare_futures(strategy, account, order.symbol)

    async def _prepare_futures(self, strategy: Strategy, account: Account, symbol: str) -> bool:
        """Before the first futures order: refuse hedge mode, set leverage 1 (once per process and market).

        On a passing failure the intent stays unsent; the resolver sends it later, through this check again.
        """
        key = (account.id, symbol)
        if key in self._futures_ready:
            return True
        creds = await self.ctx.credentials(account)
        try:
            if await self.ctx.gateway.fetch_position_mode(account.venue, creds):
                reason = (
                    "Your Binance Futures account is in hedge (dual-side) position mode; Strata trades one-way "
                    "mode only. Switch to one-way mode in Binance's futures settings, then resume."
                )
                await self._abandon_intents(strategy, reason)
                await pause_strategy(self.ctx, strategy.id, reason)
                return False
            await self.ctx.gateway.set_leverage(account.venue, creds, symbol, FUTURES_LEVERAGE)
        except ExchangeFailure as failure:
            await self._on_failure(strategy, account, failure)
            return False
        self._futures_ready.add(key)
        return True

    async def _abandon_intents(self, strategy: Strategy, reason: str) -> None:
        for order in await self.ctx.store.orders.in_states(("intent",), strategy_id=strategy.id):
            await self.desk.record(order.id, status="canceled", fill=None, error=reason[:300])

    async def _on_failure(self, strategy: Strategy, account: Account, failure: ExchangeFailure) -> RunResult:
        if failure.action is Action.AUTH:
            await reject_key(self.ctx, account.id, failure.user_message)
            return RunResult(None)
        if failure.action in (Action.FUNDS, Action.INVALID_ORDER):
            await pause_strategy(self.ctx, strategy.id, failure.user_message)
            return RunResult(None)
        logger.warning("strategy %s: run failed (%s); retrying later", strategy.id, failure)
        return RunResult(None, retry_later=True)

    async def _finished_alert(self, tx, strategy: Strategy, note: str | None) -> None:
        from bot.engine.alerts import finished_text

        fresh = await self.ctx.store.strategies.get(strategy.id, tx)
        chat_id = await self.ctx.store.users.chat_of(strategy.user_id, tx)
        if fresh is not None and chat_id is not None:
            await self.ctx.store.outbox.enqueue(
                tx, user_id=strategy.user_id, chat_id=chat_id, kind="info", text=finished_text(fresh, note)
            )


async def holdings(ctx: EngineContext, strategy_id: int) -> dict[str, Decimal]:
    """What the strategy owns from its own fills, per base asset, net of fees paid in that asset.

    Kept in memory per strategy and dropped whenever a fill of the strategy is recorded.
    """
    cached = ctx.holdings_cache.get(strategy_id)
    if cached is not None:
        return dict(cached)
    result = holdings_of((item.symbol, item.fill) for item in await ctx.fills_reader.get(strategy_id) or ())
    ctx.holdings_cache[strategy_id] = result
    return dict(result)


async def _each(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Await several calls together; one (most strategies trade one symbol) directly: `gather` would wrap it in
    a task, which costs more than the cached answer it waits for."""
    calls = list(calls)
    if len(calls) == 1:
        return [await calls[0]]
    return list(await asyncio.gather(*calls))


def _refusal_message(order: DesiredOrder, refused: Refused) -> str:
    return f"The {order.side} order on {order.symbol} could not be placed: {refused.reason}."
