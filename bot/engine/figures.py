"""A strategy's budget and P&L figures, computed in one place and worded in one place.

The fill alert, `/status`, `/status <id>`, `/stop`'s summary and the daily summary all build a `Figures` with
`figures_of` and print it with the texts below, so one figure never reads two ways (issue 18: an alert said
"left 333.58" while /status said "left 0.25", because one of them ignored the resting orders).

The words, as the README's glossary and /help define them:

- invested: quote paid for buys, fees included (futures: margin put up at 1x, plus fees);
- returned: quote received from sales, fees deducted (futures: margin released plus the P&L of closing);
- used: invested − returned, what the budget has in the market now (negative once sales brought back more
  than the buys cost, so a spot strategy shows invested and returned instead);
- reserved: budget held by resting orders (their worst case, fees included, less what they already spent);
- left: budget − used − reserved, what the strategy may still commit (realised profit included);
- realised: P&L booked by sales (futures: by reducing the position), net of every fee;
- unrealised: what closing what is held would realise at the last price (futures: the venue's mark price);
- fees: every fee paid, valued in the quote; net: realised + unrealised;
- average entry: the average cost of what is still held, fees included (futures: the venue's entry price).

`invested`, `returned` and so `used` and `left` are the budget ledger's, as the risk gate reads them; the P&L
figures come from the strategy's fills (`bot.engine.pnl`), which the ledger books alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from html import escape

from bot.engine.pnl import AssetPnl, Pnl
from bot.formatting import amount, money, price

ZERO = Decimal(0)

#: The words every figure is shown with, defined once: /help lists them and the README's glossary repeats them
#: word for word (a test keeps the two alike).
GLOSSARY: tuple[tuple[str, str], ...] = (
    ("invested", "what the buys cost, fees included"),
    ("returned", "what the sales brought back, fees deducted"),
    ("used", "invested minus returned: the part of the budget in the market now. It turns negative once sales "
             "bring back more than the buys cost, so spot strategies show invested and returned instead"),
    ("margin", "futures: the open position's size at its entry price (1x leverage)"),
    ("reserved", "budget held by resting orders: their worst-case cost, fees included"),
    ("left", "budget minus used minus reserved: what the strategy may still commit, realised profit included"),
    ("realised", "P&L booked by sales (futures: by reducing the position), net of every fee"),
    ("unrealised", "what selling what is held (futures: closing the position) at the last price (futures: the "
                   "exchange's mark price) would add"),
    ("fees", "every fee paid, valued in the quote currency"),
    ("net", "realised plus unrealised"),
    ("average entry", "what the coins still held cost each, fees included (futures: the venue's entry price)"),
)


@dataclass(frozen=True)
class Precision:
    """A market's steps, to show its amounts and prices as the venue does (None: unknown)."""

    amount_step: Decimal | None = None
    price_tick: Decimal | None = None


UNKNOWN_PRECISION = Precision()


@dataclass(frozen=True)
class Figures:
    budget: Decimal
    quote: str
    invested: Decimal
    returned: Decimal
    reserved: Decimal
    realised: Decimal
    fees: Decimal
    unrealised: Decimal | None  # None: a price is missing
    futures: bool
    assets: Mapping[str, AssetPnl] = field(default_factory=dict)
    precision: Mapping[str, Precision] = field(default_factory=dict)  # per base asset
    prices: Mapping[str, Decimal] = field(default_factory=dict)  # what each held asset is valued at (futures: mark)

    @property
    def used(self) -> Decimal:
        return self.invested - self.returned

    @property
    def left(self) -> Decimal:
        return max(ZERO, self.budget - self.used - self.reserved)

    @property
    def net(self) -> Decimal | None:
        return None if self.unrealised is None else self.realised + self.unrealised

    @property
    def value(self) -> Decimal | None:
        """What the strategy is worth now: its unspent budget (budget − used) plus what it holds at the last
        price (futures: its margin plus the unrealised P&L at the mark), net of every fee — that is, budget + net.
        /chart's last point and caption read it; None when a price is missing."""
        return None if self.net is None else self.budget + self.net

    @property
    def margin(self) -> Decimal:
        """Futures: the margin of the open position at 1x (used plus the realised P&L it was lowered by)."""
        return self.used + self.realised

    @property
    def held(self) -> dict[str, AssetPnl]:
        """The assets still held (futures: open positions), by asset."""
        return {a.asset: a for a in self.assets.values() if a.held > 0 or (a.contract and a.held != 0)}

    def precision_of(self, asset: str) -> Precision:
        return self.precision.get(asset, UNKNOWN_PRECISION)


def figures_of(
    *,
    budget: Decimal,
    quote: str,
    spent: Decimal,
    received: Decimal,
    reserved: Decimal,
    pnl: Pnl,
    prices: Mapping[str, Decimal] | None = None,
    futures: bool = False,
    precision: Mapping[str, Precision] | None = None,
) -> Figures:
    """The figures of a strategy from its ledger (`spent`/`received`), reservations, fills' P&L and prices."""
    return Figures(
        budget=budget, quote=quote, invested=spent, returned=received, reserved=reserved, realised=pnl.realised,
        fees=pnl.fees, unrealised=pnl.unrealised(prices or {}), futures=futures, assets=dict(pnl.assets),
        precision=dict(precision or {}), prices=dict(prices or {}),
    )


# --- texts (HTML-safe: asset codes and digits only; the caller escapes what it adds) ---------------------


def budget_text(f: Figures) -> str:
    """"budget 500.00 USDT: invested …, returned …, reserved …, left …" (futures: used, the margin at 1x within)."""
    q = f.quote
    if f.futures:
        # The margin alone would not add up to the budget: losses and fees booked also took from it.
        flows = f"used {money(f.used, q)} (margin {money(f.margin, q)} at 1x, less realised P&amp;L)"
    else:
        flows = f"invested {money(f.invested, q)}, returned {money(f.returned, q)}"
    return f"budget {money(f.budget, q)}: {flows}, reserved {money(f.reserved, q)}, left {money(f.left, q)}"


def pnl_text(f: Figures) -> str:
    """"P&L net of fees: realised +3.11 USDT, unrealised -0.40 USDT, fees 0.52 USDT" (HTML-escaped &)."""
    q = f.quote
    return (
        f"P&amp;L net of fees: realised {money(f.realised, q, signed=True)}, "
        f"unrealised {money(f.unrealised, q, signed=True)}, fees {money(f.fees, q)}"
    )


def holding_text(f: Figures, held: AssetPnl) -> str:
    """One asset held, with the average entry of what is still held: "0.00150 BTC, average entry 60,000.00 USDT";
    a futures position: "long 0.003 BTC at entry 45,000.00 USDT"."""
    p = f.precision_of(held.asset)
    size = amount(abs(held.held) if held.contract else held.held, held.asset, p.amount_step, held=True)
    if held.contract:
        entry = "" if held.entry_price is None else f" at entry {price(held.entry_price, f.quote, p.price_tick)}"
        return f"{held.side} {size}{entry}"
    if held.average_cost is None:
        return size
    return f"{size}, average entry {price(held.average_cost, f.quote, p.price_tick)}"


def fee_text(fee: Decimal, currency: str, quote: str) -> str:
    """A fee in its own currency: money when paid in the quote ("0.12 USDT"), else an amount of the coin."""
    return money(fee, escape(quote)) if currency == quote else amount(fee, escape(currency))


def holdings_text(f: Figures) -> str | None:
    """Everything held, or None when nothing is."""
    held = f.held
    if not held:
        return None
    return "; ".join(holding_text(f, a) for a in held.values())
