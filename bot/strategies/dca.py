"""DCA: buy a fixed quote amount at market every `every`, until the budget is used.

Slots are `start + k*every`. Each run buys at most once, for the latest slot owed, and records that slot:
a late, coalesced or missed run catches up exactly once (three missed slots → one buy, for the newest
slot, tagged `dca:slot:<k>`), so the schedule never bunches buys after an outage. The first buy is slot 0,
at once. The buy that leaves less than the market's minimum order is shrunk to what is left and is the last:
the strategy then finishes and says so.

A buy the engine's risk gate refuses (its amount, rounded to the venue's step, is below the market minimum at
today's price) is not a buy: it is not counted, the strategy does not finish because of it (unless it was the
last one: what is left cannot be bought), and the slot is missed rather than asked for again and again —
the next buy is the next slot's, and `/status` says why this one was not placed.
A buy the exchange rejects (funds, its rules) pauses the strategy with the exchange's reason; it was never
placed, so its slot stays owed: the buy is placed as soon as the user resumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from bot.strategies.base import (
    NOT_SENT,
    REJECTED_BY_VENUE,
    ZERO,
    Budget,
    Decision,
    DesiredOrder,
    Fill,
    FillUpdate,
    MarketSnapshot,
    Params,
    Strategy,
    slot_index,
)
from bot.strategies.params import ParamError, ParamSpec, format_value


@dataclass(frozen=True)
class DcaState:
    """When the schedule started, the last slot bought (-1: none yet), and whether it is done."""

    start: datetime
    last_slot: int = -1
    buys: int = 0
    finished: bool = False
    refused_slot: int = -1  # the last slot whose buy was refused (missed, not bought)
    refused_why: str = ""  # why: the gate's `minimum`/`budget`/`unpriced`, or the exchange's `rejected`
    retry_slot: int = -1  # the slot whose buy the exchange rejected (owed again: asked under a new tag)
    retries: int = 0  # how many times that slot's buy was rejected (its tag's suffix, so each try is new)


class Dca(Strategy):
    name = "dca"
    title = "DCA"
    description = (
        "Buys a fixed amount at market at a regular interval, the first buy at once, "
        "until the budget is used."
    )
    example = "/allocate binance dca 100 BTC/USDT every=1d amount=10"
    param_specs = (
        ParamSpec(
            "every",
            "duration",
            "time between buys",
            default=timedelta(days=1),
            minimum=timedelta(minutes=1),
            maximum=timedelta(weeks=52),
        ),
        ParamSpec(
            "amount",
            "decimal",
            "quote currency spent per buy",
            default=None,
            default_text="budget/10",
            minimum=ZERO,
            strict_minimum=True,
        ),
    )

    def check_allocation(self, symbol: str, budget: Decimal, params: Params) -> None:
        amount = params.get("amount")
        if amount is not None and amount > budget:
            raise ParamError(
                f"amount ({format_value('decimal', amount)}) is larger than the budget "
                f"({format_value('decimal', budget)})"
            )

    def initial_state(self, params: Params, now: datetime) -> DcaState:
        return DcaState(start=now)

    def decide(self, snapshot: MarketSnapshot, state: DcaState, budget: Budget, params: Params) -> Decision:
        if state.finished:
            return Decision((), state, "finished: the budget is used", finished=True)
        slot = slot_index(state.start, params["every"], snapshot.now)
        if slot <= state.last_slot:
            next_buy = self._slot_time(state, params, slot + 1)
            if state.refused_slot == state.last_slot:
                return Decision((), state, _missed(state, next_buy))
            return Decision((), state, f"waiting: next buy at {next_buy:%Y-%m-%d %H:%M:%S} UTC")
        per_buy: Decimal = params["amount"] or budget.total / 10
        market = snapshot.markets.get(snapshot.symbol)
        minimum = market.min_cost(snapshot.price) if market else ZERO
        available = budget.spendable
        if (available <= 0 or available < minimum) and budget.reserved > 0:
            # An earlier buy still holds part of the budget: the slot stays owed until it settles.
            return Decision((), state, "waiting: an earlier buy is still open")
        if available <= 0 or available < minimum:
            done = replace(state, last_slot=slot, finished=True)
            return Decision((), done, "finished: what is left of the budget is below the market minimum", True)
        cost = min(per_buy, available)
        left_after = available - cost
        last = left_after <= 0 or left_after < minimum
        new_state = replace(state, last_slot=slot, buys=state.buys + 1, finished=last)
        order = DesiredOrder(snapshot.symbol, "buy", "market", tag=_tag(state, slot), cost=cost)
        if last:
            status = "finished: last buy placed, the budget is used"
        else:  # /status says when it buys next from the moment this buy is placed, not only after its fill
            status = f"bought; next buy at {self._slot_time(new_state, params, slot + 1):%Y-%m-%d %H:%M:%S} UTC"
        return Decision((order,), new_state, status, finished=last)

    def on_fill(self, state: DcaState, fill: Fill, params: Params) -> FillUpdate:
        # DCA keeps no per-order state: the engine's ledger holds what was spent and bought. Only a buy that
        # was refused (by the gate, or by the exchange) undoes what `decide` counted for it.
        if fill.refused is None or fill.tag != _tag(state, state.last_slot):
            return FillUpdate(state)
        if fill.refused in (REJECTED_BY_VENUE, NOT_SENT):
            # The exchange refused it (funds, its rules), or a /pause or /stop came between deciding it and
            # sending it: the slot stays owed, as after the gate's refusal for funds: once resumed, the buy is
            # placed at once (under a new tag: the ended order keeps its own).
            retries = state.retries + 1 if state.retry_slot == state.last_slot else 1
            return FillUpdate(replace(state, last_slot=state.last_slot - 1, buys=max(0, state.buys - 1),
                                      finished=False, retry_slot=state.last_slot, retries=retries))
        undone = replace(state, buys=max(0, state.buys - 1), refused_slot=state.last_slot, refused_why=fill.refused)
        if undone.finished:
            return FillUpdate(undone, note="finished: what is left of the budget buys less than the market minimum")
        next_buy = self._slot_time(state, params, state.last_slot + 1)
        return FillUpdate(undone, note=_missed(undone, next_buy))

    def next_run(self, state: DcaState, params: Params, now: datetime) -> datetime | None:
        if state.finished:
            return None
        return self._slot_time(state, params, state.last_slot + 1)

    @staticmethod
    def _slot_time(state: DcaState, params: Params, slot: int) -> datetime:
        every: timedelta = params["every"]
        return state.start + max(slot, 0) * every

    def dump_state(self, state: DcaState) -> dict[str, Any]:
        return {
            "start": state.start.isoformat(),
            "last_slot": state.last_slot,
            "buys": state.buys,
            "finished": state.finished,
            "refused_slot": state.refused_slot,
            "refused_why": state.refused_why,
            "retry_slot": state.retry_slot,
            "retries": state.retries,
        }

    def load_state(self, data: Mapping[str, Any]) -> DcaState:
        return DcaState(
            start=datetime.fromisoformat(data["start"]),
            last_slot=int(data["last_slot"]),
            buys=int(data["buys"]),
            finished=bool(data["finished"]),
            refused_slot=int(data.get("refused_slot", -1)),
            refused_why=str(data.get("refused_why", "")),
            retry_slot=int(data.get("retry_slot", -1)),
            retries=int(data.get("retries", 0)),
        )


_REFUSALS = {
    "minimum": "below the market minimum at that price, once rounded to the exchange's step",
    "budget": "not enough budget left",
    "unpriced": "no price for the market",
    REJECTED_BY_VENUE: "the exchange rejected it",
}


def _tag(state: DcaState, slot: int) -> str:
    """The tag of a slot's buy; a slot asked again after the exchange rejected its buy gets a new one."""
    return f"dca:slot:{slot}:{state.retries}" if slot == state.retry_slot else f"dca:slot:{slot}"


def _missed(state: DcaState, next_buy: datetime) -> str:
    why = _REFUSALS.get(state.refused_why, state.refused_why or "refused")
    return (f"slot {state.refused_slot} missed: its buy was refused ({why}); "
            f"next buy at {next_buy:%Y-%m-%d %H:%M:%S} UTC")


DCA = Dca()
