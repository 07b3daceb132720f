"""What the services need from the engine, in one small interface, local or remote.

`EngineControl` is every engine operation `bot/services` uses: pause, resume, stop (with its closing sale),
cancel a strategy's orders, stop an account's strategies before /disconnect, run a strategy soon, and a few reads
(next run time, fill mode, poll interval, the clock, an account's credentials).

- `LocalControl(engine)`: the engine is in this process (`python -m bot run`, and a worker executing commands).
- `RemoteControl(store, vault, gateway, settings)`: the Telegram front (`python -m bot front`), which never
  touches an engine object. Each action is a command row (`storage/commands.py`) that the worker owning the
  account runs with `LocalControl`; the front waits for its outcome (so "stopped" still means stopped) up to a
  bound, then says honestly that it is still under way. Reads come from the database: the next run time is the
  strategy's `next_run` column, the poll interval the configured one.
- `CommandExecutor` (worker): claims the commands of the accounts it owns and runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from bot.engine.context import CredentialsMissing
from bot.engine.pnl import compute
from bot.engine.scheduler import SWEEP_SECONDS, UNCONFIRMED_ORDER, BelowMinimum, Cancellation
from bot.exchanges.errors import ExchangeFailure
from bot.exchanges.paper import PaperCredentials
from bot.exchanges.venues import adapter
from bot.redaction import register_secret
from bot.secret import Credentials
from bot.services.errors import UserError
from bot.strategies.base import DesiredOrder
from bot.vault import CredentialUnreadable
from storage.commands import FINISHED_CHANNEL, SUBMITTED_CHANNEL, Command
from storage.models import Account, Strategy, utcnow
from storage.orders import FINAL, LIVE
from storage.strategies import HOLDING, STOPPED

logger = logging.getLogger(__name__)

#: How long the front waits for a worker's answer before saying the action is still under way.
WAIT_SECONDS = 30.0
#: /disconnect waits for unconfirmed orders to be resolved (the venue's receive window and a little more).
DISCONNECT_WAIT_SECONDS = 90.0
#: Both sides poll this often besides LISTEN/NOTIFY (a lost notification, or SQLite, only delays).
POLL_SECONDS = 1.0
#: A command `running` this long was left by a worker that died: another runs it again.
STALE_AFTER = timedelta(minutes=5)


@dataclass(frozen=True)
class Stopped:
    """What stopping a strategy did: its orders' cancellation and, with a sale, what was sold (at what average
    price), what is pending (placed but not filled or not confirmed yet), the dust left, and the sale's errors."""

    cancellation: Cancellation = field(default_factory=Cancellation)
    sold: dict[str, Decimal] = field(default_factory=dict)
    sold_at: dict[str, Decimal] = field(default_factory=dict)
    pending: frozenset[str] = frozenset()
    dust: dict[str, Decimal] = field(default_factory=dict)
    errors: tuple[str, ...] = ()


class StillRunning(UserError):
    """The worker has not answered within the bound: the action may still complete (the user is told so)."""


class EngineControl(Protocol):
    """The engine as the services see it (see the module docstring)."""

    @property
    def gateway(self) -> Any: ...

    @property
    def effective_poll_interval(self) -> float: ...

    def clock(self) -> datetime: ...

    async def credentials(self, account: Account) -> Credentials: ...

    async def forget_credentials(self, account_id: int) -> None: ...

    @property
    def sweep_seconds(self) -> float: ...

    async def edit(self, preview: Any, apply: Callable[[Any, Any], Awaitable[Any]], *, free: Any = None) -> Any:
        """`apply(preview, free)` under the strategy's lock, where its engine runs (/edit's Confirm; `free`: the
        account's free quote, read before the lock)."""

    async def run_soon(self, strategy_id: int) -> None: ...

    async def pause(self, strategy_id: int, reason: str, *, by: str) -> bool: ...

    async def resume(self, strategy_id: int) -> None: ...

    async def cancel_orders(self, strategy_id: int, reason: str) -> Cancellation: ...

    async def stop(self, strategy_id: int, reason: str, *, sell: bool) -> Stopped | None: ...

    async def stop_account(self, account_id: int, reason: str, *, cancel: bool) -> dict[int, Cancellation]: ...

    def next_run_time(self, strategy: Strategy) -> datetime | None: ...

    def fill_mode(self, account: Account | None) -> str | None: ...


# --- local ----------------------------------------------------------------------------------------------------


class LocalControl:
    """The engine in this process."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    @property
    def gateway(self) -> Any:
        return self._engine.gateway

    @property
    def effective_poll_interval(self) -> float:
        return self._engine.effective_poll_interval

    def clock(self) -> datetime:
        return self._engine.ctx.clock()

    async def credentials(self, account: Account) -> Credentials:
        return await self._engine.ctx.credentials(account)

    async def forget_credentials(self, account_id: int) -> None:
        self._engine.ctx.forget_credentials(account_id)

    @property
    def sweep_seconds(self) -> float:
        return self._engine.sweep_seconds

    async def edit(self, preview: Any, apply: Callable[[Any, Any], Awaitable[Any]], *, free: Any = None) -> Any:
        async with self._engine.ctx.lock(preview.strategy_id):
            return await apply(preview, free)

    async def run_soon(self, strategy_id: int) -> None:
        self._engine.run_soon(strategy_id)

    async def pause(self, strategy_id: int, reason: str, *, by: str) -> bool:
        return await self._engine.pause(strategy_id, reason, alert=False, by=by)

    async def resume(self, strategy_id: int) -> None:
        await self._engine.resume(strategy_id)

    async def cancel_orders(self, strategy_id: int, reason: str) -> Cancellation:
        return await self._engine.cancel_orders(strategy_id, reason)

    async def stop(self, strategy_id: int, reason: str, *, sell: bool, again: bool = False) -> Stopped | None:
        """Stop, cancel its orders and (with `sell`) close what it holds; None if it was already stopped.

        `again`: this /stop ran before on a worker that died; the strategy may be stopped already, so the rest
        is done (the sale placed once: an earlier attempt's order is reported, not placed twice).
        Under the account's control lock, so a /disconnect of the same account waits for the sale."""
        engine = self._engine
        async with engine.account_control(await self._account_of(strategy_id)):
            strategy = await engine.store.strategies.get(strategy_id)
            if strategy is None or (strategy.status == STOPPED and not again):
                return None
            await engine.stop(strategy_id, reason)
            done = await engine.cancel_orders(strategy_id, reason, spare_closing=again)
            if not sell:
                return Stopped(done)
            return await self._sell_holdings(strategy, done)

    async def stop_account(self, account_id: int, reason: str, *, cancel: bool) -> dict[int, Cancellation]:
        """Stop every running or paused strategy of the account; with `cancel`, cancel their orders and wait
        until none is live (or the wait is over). Returns each cancellation by strategy; forgets the key."""
        engine = self._engine
        store = engine.store
        cancelled: dict[int, Cancellation] = {}
        async with engine.account_control(account_id):
            for strategy in await store.strategies.list_for_account(account_id):
                if strategy.status in HOLDING:
                    await engine.stop(strategy.id, reason)
            for strategy in await store.strategies.list_for_account(account_id) if cancel else ():
                if await store.orders.in_states(LIVE, strategy_id=strategy.id):
                    done = await engine.cancel_orders(strategy.id, "the account is being disconnected")
                    cancelled[strategy.id] = done
                    for error in done.errors:
                        logger.warning("account %s: order not cancelled: %s", account_id, error)
            if cancel:
                await engine.settle_account_orders(account_id)
        engine.ctx.forget_credentials(account_id)  # the key is about to be shredded: drop our copy
        return cancelled

    def next_run_time(self, strategy: Strategy) -> datetime | None:
        return self._engine.next_run_time(strategy.id)

    def fill_mode(self, account: Account | None) -> str | None:
        return self._engine.fill_mode(account)

    async def _account_of(self, strategy_id: int) -> int:
        strategy = await self._engine.store.strategies.get(strategy_id)
        return strategy.account_id if strategy is not None else -1

    async def _sell_holdings(self, strategy: Strategy, done: Cancellation) -> Stopped:
        """Sell (futures: close reduce-only) what a stopped strategy's fills hold, at market, within each market's
        minimums and step; spot sells no more than the account's free balance. Waits for the fills: what is
        reported sold is what the exchange filled, at the fills' average price; what is below the minimum (or
        the step leaves) is dust."""
        store = self._engine.store
        sold: dict[str, Decimal] = {}
        sold_at: dict[str, Decimal] = {}
        pending: set[str] = set()
        dust: dict[str, Decimal] = {}
        errors: list[str] = []

        def outcome() -> Stopped:
            return Stopped(done, sold, sold_at, frozenset(pending), dust, tuple(errors))

        account = await store.accounts.get(strategy.account_id)
        if account is None:
            errors.append("the account is gone")
            return outcome()
        if account.status != "active":  # its key can neither read the balance nor sell
            errors.append(f"nothing sold: the API key of {account.label} does not work (see /accounts)")
            return outcome()
        try:
            await self.credentials(account)
        except (CredentialUnreadable, CredentialsMissing):
            errors.append(f"nothing sold: the stored API key of {account.label} cannot be read (see /accounts)")
            return outcome()
        placed = []
        fills = await store.orders.fills_for_strategy(strategy.id)
        seen = {item.fill.id for item in fills}
        pnl = compute(fills, strategy.quote)
        futures = adapter(account.venue).futures
        # Closing orders an earlier attempt of this /stop placed (its worker died): what they filled is reported,
        # one still live is left to finish (never a second sale beside it); one that ended with part or nothing
        # filled is followed by a new one, under the next tag, for what is still held.
        closing: dict[str, list] = {}
        for order in await store.orders.in_states((*LIVE, *FINAL), strategy_id=strategy.id):
            if (name := _closed_asset(order.tag)) is not None:
                closing.setdefault(name, []).append(order)
        traded: dict[str, tuple[Decimal, Decimal]] = {}  # asset -> (amount, cost) closing orders filled: sold_at
        for asset_name, orders in sorted(closing.items()):
            amount = sum((o.filled for o in orders), Decimal(0))
            if amount:
                sold[asset_name] = sum((o.filled if o.side == "sell" else -o.filled for o in orders), Decimal(0))
                traded[asset_name] = (amount, sum((o.filled_cost for o in orders), Decimal(0)))
            if any(o.status in LIVE for o in orders):
                pending.add(asset_name)
                errors.append(f"{asset_name}: the order is placed but its fill is not confirmed yet (see /status)")
        for asset in sorted(pnl.assets.values(), key=lambda a: a.asset):
            if asset.held == 0 or asset.asset in pending:
                continue
            if (last := closing.get(asset.asset, [None])[-1]) is not None and last.filled >= last.amount:
                dust[asset.asset] = asset.held  # the earlier sale filled in full: what is left is its step's rest
                continue
            symbol = adapter(account.venue).market_symbol(f"{asset.asset}/{strategy.quote}")
            side = "sell" if asset.held > 0 else "buy"
            amount = abs(asset.held)
            if side == "sell" and not futures:
                amount = min(amount, await self._free(account, asset.asset))
            if amount <= 0:
                continue
            tag = _closing_tag(asset.asset, attempt=len(closing.get(asset.asset, ())))
            desired = DesiredOrder(symbol, side, "market", tag, amount=amount,
                                   reduce_only=futures)
            problem = await self._engine.place_now(strategy.id, desired)
            if problem is None:
                placed.append((asset, symbol))
            elif problem == UNCONFIRMED_ORDER:
                pending.add(asset.asset)
                errors.append(f"{asset.asset}: the {side} at market {problem}")
            elif isinstance(problem, BelowMinimum):
                dust[asset.asset] = asset.held
            else:
                errors.append(f"{asset.asset} kept: {problem}")
        if placed:
            # What the exchange sold (its step may leave dust), from the fills: not what was asked.
            fills = await store.orders.fills_for_strategy(strategy.id)
            after = compute(fills, strategy.quote).assets
            for asset, symbol in placed:
                moved = asset.held - after[asset.asset].held  # < 0: a short bought back
                if moved:
                    sold[asset.asset] = sold.get(asset.asset, Decimal(0)) + moved
                    new = [item.fill for item in fills if item.fill.id not in seen and item.symbol == symbol]
                    amount, cost = traded.get(asset.asset, (Decimal(0), Decimal(0)))
                    traded[asset.asset] = (amount + sum((f.amount for f in new), Decimal(0)),
                                           cost + sum((f.price * f.amount for f in new), Decimal(0)))
                    if after[asset.asset].held:
                        dust[asset.asset] = after[asset.asset].held
                else:
                    pending.add(asset.asset)
                    errors.append(f"{asset.asset}: the order is placed but its fill is not confirmed yet (see /status)")
        sold_at.update({name: cost / amount for name, (amount, cost) in traded.items() if amount})
        return outcome()

    async def _free(self, account: Account, asset: str) -> Decimal:
        try:
            balance = await self.gateway.fetch_balance(account.venue, await self.credentials(account))
        except ExchangeFailure:
            return Decimal(0)
        return balance[asset].free if asset in balance else Decimal(0)


def _closing_tag(asset: str, *, attempt: int = 0) -> str:
    """The tag of /stop's closing order of `asset`: one per strategy, asset and attempt (a re-run of the stop
    after an earlier closing order ended unfilled), so a retried send is never a second order."""
    return f"stop:{asset}:close" + (f":{attempt + 1}" if attempt else "")


def _closed_asset(tag: str) -> str | None:
    """The asset a /stop closing order's tag names (None: another order's tag)."""
    parts = tag.split(":")
    return parts[1] if len(parts) in (3, 4) and parts[0] == "stop" and parts[2] == "close" else None


# --- remote (the front) ----------------------------------------------------------------------------------------


class RemoteControl:
    """The engine in some worker process, reached through command rows. Keeps no engine cache."""

    def __init__(
        self, store: Any, vault: Any, gateway: Any, settings: Any, *, wait_seconds: float = WAIT_SECONDS,
        disconnect_wait_seconds: float = DISCONNECT_WAIT_SECONDS,
    ) -> None:
        self._store = store
        self._vault = vault
        self._gateway = gateway
        self._poll_interval = float(getattr(settings, "fill_poll_seconds", 10.0))
        self._streams = bool(getattr(settings, "streams", False))
        self.wait_seconds = wait_seconds
        self.disconnect_wait_seconds = disconnect_wait_seconds
        self._finished = asyncio.Event()
        self._listening: contextlib.AsyncExitStack | None = None

    async def start(self) -> None:
        """Listen for finished commands (PostgreSQL), so an answer wakes the waiting handler at once."""
        self._listening = contextlib.AsyncExitStack()
        await self._listening.enter_async_context(
            self._store.commands.listen(FINISHED_CHANNEL, lambda _payload: self._finished.set())
        )

    async def close(self) -> None:
        if self._listening is not None:
            await self._listening.aclose()
            self._listening = None

    @property
    def gateway(self) -> Any:
        return self._gateway

    @property
    def effective_poll_interval(self) -> float:
        return self._poll_interval

    def clock(self) -> datetime:
        return utcnow()

    async def credentials(self, account: Account) -> Credentials:
        """Unsealed for this one use (the front checks balances at /allocate); never cached here."""
        if adapter(account.venue).simulated:
            return PaperCredentials(account.id)
        sealed = await self._store.accounts.credential(account.id)
        if sealed is None:
            raise UserError(f"{account.label} has no stored key: connect it again with /connect.")
        creds = await self._vault.unseal(sealed, user_id=account.user_id, venue=account.venue)
        register_secret(creds.api_key)
        register_secret(creds.secret)
        return creds

    async def forget_credentials(self, account_id: int) -> None:
        await self._submit("forget_credentials", account_id, {}, wait=False)

    @property
    def sweep_seconds(self) -> float:
        return SWEEP_SECONDS

    async def edit(self, preview: Any, apply: Callable[[Any, Any], Awaitable[Any]], *, free: Any = None) -> Any:
        """The worker makes the change under its lock (`apply` is this process's, not run here)."""
        from bot.services.strategies import Edited, EditPreview

        payload = {"preview": preview.to_json(), "free": None if free is None else str(free)}
        result = await self._submit_for(preview.strategy_id, "edit", payload)
        return Edited(preview.strategy_id, EditPreview.from_json(result["checked"]))

    async def run_soon(self, strategy_id: int) -> None:
        await self._submit_for(strategy_id, "run_soon", {}, wait=False)

    async def pause(self, strategy_id: int, reason: str, *, by: str) -> bool:
        result = await self._submit_for(strategy_id, "pause", {"reason": reason, "by": by})
        return bool(result["changed"])

    async def resume(self, strategy_id: int) -> None:
        await self._submit_for(strategy_id, "run_soon", {}, wait=False)

    async def cancel_orders(self, strategy_id: int, reason: str) -> Cancellation:
        return _cancellation(await self._submit_for(strategy_id, "cancel_orders", {"reason": reason}))

    async def stop(self, strategy_id: int, reason: str, *, sell: bool) -> Stopped | None:
        result = await self._submit_for(strategy_id, "stop", {"reason": reason, "sell": sell})
        return _stopped(result)

    async def stop_account(self, account_id: int, reason: str, *, cancel: bool) -> dict[int, Cancellation]:
        result = await self._submit(
            "stop_account", account_id, {"reason": reason, "cancel": cancel}, wait_seconds=self.disconnect_wait_seconds
        )
        return {int(k): _cancellation(v) for k, v in result["cancelled"].items()}

    def next_run_time(self, strategy: Strategy) -> datetime | None:
        return strategy.next_run

    def fill_mode(self, account: Account | None) -> str | None:
        # Whether a stream is live right now is known only to the worker; the front says how fills are meant
        # to arrive (a stream that is down falls back to polling within seconds).
        if account is None or adapter(account.venue).simulated:
            return None
        return "streamed" if self._streams and adapter(account.venue).user_stream else "polled"

    async def _submit_for(self, strategy_id: int, kind: str, payload: dict, *, wait: bool = True) -> dict:
        strategy = await self._store.strategies.get(strategy_id)
        if strategy is None:
            raise UserError("No such strategy. See /status for yours.")
        return await self._submit(kind, strategy.account_id, {"strategy_id": strategy_id, **payload},
                                  user_id=strategy.user_id, wait=wait)

    async def _submit(
        self, kind: str, account_id: int, payload: dict, *, user_id: int | None = None, wait: bool = True,
        wait_seconds: float | None = None,
    ) -> dict:
        command_id = await self._store.commands.submit(
            account_id=account_id, user_id=user_id, kind=kind, payload=payload
        )
        if not wait:
            return {}
        command = await self._outcome(command_id, wait_seconds or self.wait_seconds)
        if command is None:
            raise StillRunning(
                "The engine has not finished this yet; it goes on in the background. Check /status in a minute."
            )
        result = command.result or {}
        if command.status != "done":
            if result.get("user_error"):
                raise UserError(result["user_error"], reason=result.get("reason"), step=result.get("step"))
            raise RuntimeError(f"command {command_id} ({kind}) failed on the worker")
        return result

    async def _outcome(self, command_id: int, seconds: float) -> Command | None:
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            command = await self._store.commands.get(command_id)
            if command is not None and command.finished:
                return command
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            self._finished.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left, POLL_SECONDS / 4)):
                    await self._finished.wait()


# --- the worker's side -----------------------------------------------------------------------------------------


class CommandExecutor:
    """Runs the commands of the accounts this worker owns (`ownership.owns`), one task per command."""

    def __init__(self, store: Any, control: LocalControl, ownership: Any, *, strategies: Any = None) -> None:
        self._store = store
        self._control = control
        self._strategies = strategies  # the worker's StrategyService over `control` (for /edit's change)
        self._ownership = ownership
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="strata-commands")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._running:  # a command under way finishes (a stop half-done would be worse than a slow exit)
            await asyncio.gather(*self._running, return_exceptions=True)

    async def _loop(self) -> None:
        async with self._store.commands.listen(SUBMITTED_CHANNEL, lambda _payload: self._wake.set()):
            while True:
                try:
                    await self.run_pending()
                except Exception:
                    logger.exception("command loop failed; retrying at the next poll")
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_SECONDS):
                        await self._wake.wait()

    async def run_pending(self) -> int:
        """Claim and start every pending command of an owned account; how many were started."""
        commands = self._store.commands
        if orphaned := await commands.requeue_orphaned():
            logger.warning("commands %s were left running by a worker that is gone: run again", orphaned)
        await commands.requeue_stale(None, older_than=STALE_AFTER)
        started = 0
        held = getattr(self._ownership, "held", None)
        me = getattr(self._ownership, "worker_id", None)
        for waiting in await commands.pending(partitions=held):
            if not self._ownership.owns(waiting.account_id):
                continue
            command = await commands.claim(waiting.id, by=me)
            if command is None:
                continue
            task = asyncio.get_running_loop().create_task(self._execute(command), name=f"command:{command.id}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            started += 1
        return started

    async def _execute(self, command: Command) -> None:
        try:
            ok, result = True, await self._dispatch(command)
        except UserError as exc:
            ok, result = False, {"user_error": exc.message, "reason": exc.reason, "step": exc.step}
        except Exception:
            logger.exception("command %s (%s) failed", command.id, command.kind)
            ok, result = False, {"error": "internal"}
        if not await self._store.commands.finish(command.id, ok=ok, result=result, claims=command.claims):
            logger.warning("command %s (%s): another worker ran it again meanwhile; its outcome stands",
                           command.id, command.kind)

    async def _dispatch(self, command: Command) -> dict:
        control, payload = self._control, command.payload
        kind = command.kind
        if kind == "run_soon":
            await control.run_soon(payload["strategy_id"])
            return {}
        if kind == "forget_credentials":
            await control.forget_credentials(command.account_id)
            return {}
        if kind == "pause":
            return {"changed": await control.pause(payload["strategy_id"], payload["reason"], by=payload["by"])}
        if kind == "cancel_orders":
            return asdict(await control.cancel_orders(payload["strategy_id"], payload["reason"]))
        if kind == "stop":
            # Claimed before (a worker died running it): the strategy may be stopped already, its sale not done.
            stopped = await control.stop(
                payload["strategy_id"], payload["reason"], sell=bool(payload["sell"]), again=command.claims > 1
            )
            return {"stopped": None} if stopped is None else {"stopped": _stopped_json(stopped)}
        if kind == "edit":
            from bot.services.strategies import EditPreview

            # Under this worker's lock, without an audit entry of its own: the front records the outcome once.
            free = None if payload.get("free") is None else Decimal(payload["free"])
            edited = await control.edit(
                EditPreview.from_json(payload["preview"]), lambda p, f: self._strategies.apply_edit(p, free=f),
                free=free,
            )
            return {"checked": edited.preview.to_json()}
        if kind == "stop_account":
            cancelled = await control.stop_account(command.account_id, payload["reason"],
                                                   cancel=bool(payload["cancel"]))
            return {"cancelled": {str(k): asdict(v) for k, v in cancelled.items()}}
        raise ValueError(f"unknown command kind {kind!r}")


def _cancellation(data: dict) -> Cancellation:
    return Cancellation(
        canceled=int(data.get("canceled", 0)), filled=int(data.get("filled", 0)),
        unconfirmed=int(data.get("unconfirmed", 0)), errors=tuple(data.get("errors", ())),
    )


def _amounts(data: dict[str, Any]) -> dict[str, Decimal]:
    return {k: Decimal(v) for k, v in data.items()}


def _stopped_json(stopped: Stopped) -> dict:
    return {
        "cancellation": asdict(stopped.cancellation), "sold": {k: str(v) for k, v in stopped.sold.items()},
        "sold_at": {k: str(v) for k, v in stopped.sold_at.items()}, "pending": sorted(stopped.pending),
        "dust": {k: str(v) for k, v in stopped.dust.items()}, "errors": list(stopped.errors),
    }


def _stopped(result: dict) -> Stopped | None:
    data = result.get("stopped")
    if data is None:
        return None
    return Stopped(
        cancellation=_cancellation(data["cancellation"]), sold=_amounts(data["sold"]),
        sold_at=_amounts(data["sold_at"]), pending=frozenset(data["pending"]), dust=_amounts(data["dust"]),
        errors=tuple(data["errors"]),
    )
