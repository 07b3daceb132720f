"""Profit and loss of a strategy from its own fills, per asset, net of fees: one computation for every figure.

Pure: recorded fills in, figures out. The fill alert, /status, /stop's summary and the daily summary all read
these figures, and the engine books a futures fill to the budget ledger from them, so they always agree.

Two kinds of position, told apart by the market symbol (ccxt names a contract `BTC/USDT:USDT`, a spot market
`BTC/USDT`):

- **Spot**, by the average-cost method. A buy adds its amount (less a fee paid in the asset itself) at its
  cost plus its fee; a sell realises its proceeds less its fee minus the average cost of what it sold.
- **Contracts** (USD-M futures), as the venue books them to the wallet. The position is signed (short < 0)
  with the venue's average entry price (fees not included). A fill that reduces the position realises
  (price − entry) × size for a long and (entry − price) × size for a short; one that opens or adds to it
  moves the entry; a fill that flips the side does both (the rest opens at the fill price). Every fee is
  realised when paid, as the venue takes it from the wallet: realised P&L net of fees = the wallet's change.

Fees paid in a third currency (e.g. BNB) count at their value in quote at the fill (`fee_quote`); a fee in
the quote is taken as reported and a spot fee in the base reduces the holdings, so no fee counts twice.

`invested`/`returned` are what the budget ledger books: spot — buys' cost plus fees / sales' proceeds less
fees; contracts — margin put up at 1x (entry × size opened) plus the fees of opening / margin released plus
the realised P&L of closing, less its fees. Either way `invested − returned` = money in the position − P&L.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from storage.orders import StrategyFill

ZERO = Decimal(0)
FEE_SHARE_STEP = Decimal("1e-12")


def is_contract(symbol: str) -> bool:
    """Whether a market is a contract (futures): ccxt writes its settle currency after a colon."""
    return ":" in symbol


@dataclass(frozen=True)
class AssetPnl:
    asset: str
    held: Decimal  # spot: units owned net of fees; contract: signed position (short < 0)
    average_cost: Decimal | None  # spot: quote per unit held, fees included; contract: the entry price
    average_buy_price: Decimal | None  # plain average price of all buys
    realised: Decimal
    contract: bool = False

    @property
    def entry_price(self) -> Decimal | None:
        """A contract position's average entry price, as the venue shows it (None when flat or spot)."""
        return self.average_cost if self.contract and self.held != 0 else None

    @property
    def side(self) -> str:
        return "long" if self.held > 0 else "short" if self.held < 0 else "flat"

    def unrealised(self, price: Decimal) -> Decimal | None:
        """What closing the position at `price` would realise before fees (None if its cost is unknown)."""
        if self.held == 0:
            return ZERO
        if self.average_cost is None:
            return None
        return self.held * (price - self.average_cost)


@dataclass(frozen=True)
class Pnl:
    assets: Mapping[str, AssetPnl]
    invested: Decimal  # what the ledger booked as spent (see the module docstring)
    returned: Decimal  # what the ledger booked as received
    fees: Decimal  # every fee valued in quote
    realised: Decimal

    @property
    def contract(self) -> bool:
        return any(a.contract for a in self.assets.values())

    def unrealised(self, prices: Mapping[str, Decimal]) -> Decimal | None:
        """P&L of what is held at `prices` (per asset; a mark price for contracts); None if a price is missing."""
        total = ZERO
        for asset in self.assets.values():
            if asset.held == 0:
                continue
            price = prices.get(asset.asset)
            value = None if price is None else asset.unrealised(price)
            if value is None:
                return None
            total += value
        return total


@dataclass
class _Book:
    """One asset's running figures while the fills are replayed."""

    held: Decimal = ZERO
    cost: Decimal = ZERO  # spot: cost of what is held; contract: entry price × |position|
    bought: Decimal = ZERO
    bought_value: Decimal = ZERO
    realised: Decimal = ZERO
    contract: bool = False


def compute(fills: Iterable[StrategyFill], quote: str) -> Pnl:
    last = deque(_replayed(fills, quote), maxlen=1)  # the books after the last fill
    return _snapshot(*last[0]) if last else _snapshot({}, ZERO, ZERO, ZERO)


def _replayed(
    fills: Iterable[StrategyFill], quote: str
) -> Iterator[tuple[dict[str, _Book], Decimal, Decimal, Decimal]]:
    """The books and the running invested, returned and fees after each fill (one replay, books shared)."""
    books: dict[str, _Book] = {}
    invested = returned = fees = ZERO
    for item in fills:
        spent, received, _ = _replay(books, item, quote)
        fees += item.fee_quote
        invested += spent
        returned += received
        yield books, invested, returned, fees


def _snapshot(books: dict[str, _Book], invested: Decimal, returned: Decimal, fees: Decimal) -> Pnl:
    """The `Pnl` of the books as they stand."""
    assets = {
        asset: AssetPnl(
            asset=asset,
            held=book.held,
            average_cost=_average_cost(book),
            average_buy_price=book.bought_value / book.bought if book.bought else None,
            realised=book.realised,
            contract=book.contract,
        )
        for asset, book in books.items()
    }
    return Pnl(assets, invested, returned, fees, sum((b.realised for b in books.values()), ZERO))


@dataclass(frozen=True)
class FillRealised:
    """What one fill realised, as `compute` books it; `reduced`: it sold holdings or reduced a contract position."""

    item: StrategyFill
    realised: Decimal
    reduced: bool


def realised_by_fill(fills: Iterable[StrategyFill], quote: str) -> list[FillRealised]:
    """Each fill (oldest first) with the realised P&L it booked: /trades shows it, /profit sums it over a period.

    The same replay as `compute`, so the figures of all fills add up to `compute(...).realised`.
    """
    books: dict[str, _Book] = {}
    result = []
    for item in fills:
        asset = item.symbol.split("/")[0]
        before = books[asset].realised if asset in books else ZERO
        held = books[asset].held if asset in books else ZERO
        _, _, book = _replay(books, item, quote)
        change = item.fill.amount if item.fill.side == "buy" else -item.fill.amount
        reduced = (held != 0 and (held > 0) != (change > 0)) if book.contract else item.fill.side == "sell"
        result.append(FillRealised(item, book.realised - before, reduced))
    return result


def _replay(books: dict[str, _Book], item: StrategyFill, quote: str) -> tuple[Decimal, Decimal, _Book]:
    """Apply one fill to its asset's book; return what the ledger books (spent, received) and the book."""
    fill = item.fill
    asset = item.symbol.split("/")[0]
    book = books.setdefault(asset, _Book(contract=is_contract(item.symbol)))
    if fill.side == "buy":
        book.bought += fill.amount
        book.bought_value += fill.cost
    if book.contract:
        spent, received = _contract_fill(book, item)
    else:
        spent, received = _spot_fill(book, item, quote, asset)
    return spent, received, book


@dataclass(frozen=True)
class FillEffect:
    """What the last of a strategy's fills changed: the ledger's movements, the P&L it realised, the position."""

    spent: Decimal
    received: Decimal
    realised: Decimal
    total_realised: Decimal
    asset: AssetPnl
    held_before: Decimal = ZERO  # the position (signed) or holdings before these fills

    @property
    def action(self) -> str:
        """What these fills did to a contract position, as a trader says it (see `position_action`)."""
        return position_action(self.held_before, self.asset.held)


def effect_of_last(fills: Sequence[StrategyFill], quote: str, count: int = 1) -> FillEffect:
    """The effect of the last `count` fills (of one order) on a strategy whose fills are `fills`, oldest first."""
    before, after = compute(fills[:-count], quote), compute(fills, quote)
    asset = fills[-1].symbol.split("/")[0]
    return FillEffect(
        spent=after.invested - before.invested,
        received=after.returned - before.returned,
        realised=after.realised - before.realised,
        total_realised=after.realised,
        asset=after.assets[asset],
        held_before=before.assets[asset].held if asset in before.assets else ZERO,
    )


def position_action(before: Decimal, after: Decimal) -> str:
    """A signed position's change in a trader's words: "Opened long", "Added to short", "Reduced long", "Closed
    short", "Flipped to short"… ("Unchanged" when it did not move)."""
    side = "long" if after > 0 else "short"
    if before == 0:
        return f"Opened {side}" if after != 0 else "Unchanged"
    was = "long" if before > 0 else "short"
    if after == 0:
        return f"Closed {was}"
    if (before > 0) != (after > 0):
        return f"Flipped to {side}"
    if abs(after) > abs(before):
        return f"Added to {side}"
    return f"Reduced {side}" if abs(after) < abs(before) else "Unchanged"


def _spot_fill(book: _Book, item: StrategyFill, quote: str, asset: str) -> tuple[Decimal, Decimal]:
    fill = item.fill
    quote_fee = fill.fee if fill.fee_currency == quote else ZERO
    asset_fee = fill.fee if fill.fee_currency == asset else ZERO
    other_fee = item.fee_quote if fill.fee_currency not in (quote, asset, None) else ZERO
    if fill.side == "buy":
        paid = fill.cost + quote_fee + other_fee
        book.held += fill.amount - asset_fee
        book.cost += paid
        return paid, ZERO
    proceeds = fill.cost - quote_fee - other_fee
    units = book.held
    average = book.cost / units if units > 0 else ZERO
    sold = fill.amount + asset_fee
    basis = average * min(sold, max(units, ZERO))
    book.realised += proceeds - basis
    book.held = units - sold
    book.cost = max(ZERO, book.cost - basis)
    return ZERO, proceeds


def _contract_fill(book: _Book, item: StrategyFill) -> tuple[Decimal, Decimal]:
    fill = item.fill
    fee = item.fee_quote  # the venue takes a contract's fee from the wallet, whatever its currency
    change = fill.amount if fill.side == "buy" else -fill.amount
    old = book.held
    closing = min(fill.amount, abs(old)) if old != 0 and (old > 0) != (change > 0) else ZERO
    opening = fill.amount - closing
    entry = book.cost / abs(old) if old != 0 else ZERO
    gain = (fill.price - entry) * closing * (1 if old > 0 else -1)
    # A flip's fee is shared by its two parts pro rata (to 1e-12, so the ledger keeps short numbers).
    closing_fee = (fee * closing / fill.amount).quantize(FEE_SHARE_STEP) if fill.amount else ZERO
    book.realised += gain - fee
    book.held = old + change
    book.cost = entry * (abs(old) - closing) + fill.price * opening
    return fill.price * opening + fee - closing_fee, entry * closing + gain - closing_fee


def _average_cost(book: _Book) -> Decimal | None:
    if book.contract:
        return book.cost / abs(book.held) if book.held != 0 else None
    return book.cost / book.held if book.held > 0 else None


def running(fills: Iterable[StrategyFill], quote: str) -> Iterator[Pnl]:
    """The strategy's `Pnl` right after each fill (oldest first), in one replay: what `compute` would give on
    each prefix of `fills`, without replaying the prefix again (/chart values a strategy at every candle)."""
    for state in _replayed(fills, quote):
        yield _snapshot(*state)
