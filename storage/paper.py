"""The books of Paper accounts: balances, orders and fills that Strata keeps itself instead of an exchange.

`bot.exchanges.paper` decides what happens (fills, fees, reservations); this repository only reads a book and
writes one change to it atomically (`save`), so a crash leaves a Paper account either before or after an
order, never half way. Everything goes with its account (ON DELETE CASCADE). Amounts are decimal strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

from storage.db import Database, Transaction
from storage.models import PaperOrder, PaperTrade, dec

_ORDER_COLUMNS = (
    "account_id", "id", "client_order_id", "symbol", "side", "type", "amount", "price", "status", "filled", "cost",
    "average", "fee", "fee_currency", "reserved_asset", "reserved", "created_ms", "updated_ms",
)
_TRADE_COLUMNS = (
    "account_id", "id", "order_id", "symbol", "side", "price", "amount", "cost", "fee", "fee_currency", "maker",
    "at_ms",
)


class PaperRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def fund(self, tx: Transaction, account_id: int, asset: str, amount: Decimal) -> None:
        """Credit a new Paper account, inside the transaction that creates it."""
        await tx.execute(
            "INSERT INTO paper_balances (account_id, asset, free, used) VALUES (?, ?, ?, '0')",
            (account_id, asset, _text(amount)),
        )

    async def balances(self, account_id: int) -> dict[str, tuple[Decimal, Decimal]]:
        """Asset → (free, used)."""
        rows = await self._db.fetchall(
            "SELECT asset, free, used FROM paper_balances WHERE account_id = ?", (account_id,)
        )
        return {r["asset"]: (Decimal(r["free"]), Decimal(r["used"])) for r in rows}

    async def orders(
        self,
        account_id: int,
        *,
        statuses: Sequence[str] | None = None,
        client_order_id: str | None = None,
        order_id: str | None = None,
        newest: int | None = None,
    ) -> list[PaperOrder]:
        """The account's orders, oldest first; `newest`: only that many of the latest."""
        where, params = ["account_id = ?"], [account_id]
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            params += list(statuses)
        if client_order_id is not None:
            where.append("client_order_id = ?")
            params.append(client_order_id)
        if order_id is not None:
            where.append("id = ?")
            params.append(order_id)
        sql = f"SELECT * FROM paper_orders WHERE {' AND '.join(where)} ORDER BY created_ms DESC, id DESC"  # noqa: S608 - only placeholders
        if newest is not None:
            sql += f" LIMIT {int(newest)}"
        rows = await self._db.fetchall(sql, tuple(params))
        return [_order(r) for r in reversed(rows)]

    async def trades(self, account_id: int, *, since_ms: int | None = None) -> list[PaperTrade]:
        """The account's fills, oldest first."""
        rows = await self._db.fetchall(
            "SELECT * FROM paper_trades WHERE account_id = ? AND at_ms >= ? ORDER BY at_ms, id",
            (account_id, since_ms or 0),
        )
        return [_trade(r) for r in rows]

    async def save(
        self,
        account_id: int,
        balances: Mapping[str, tuple[Decimal, Decimal]],
        orders: Iterable[PaperOrder] = (),
        trades: Iterable[PaperTrade] = (),
    ) -> None:
        """Write one change of a book at once: the balances given (others unchanged), new or changed orders, fills."""
        async with self._db.transaction() as tx:
            for asset, (free, used) in balances.items():
                await tx.execute(
                    "INSERT INTO paper_balances (account_id, asset, free, used) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (account_id, asset) DO UPDATE SET free = excluded.free, used = excluded.used",
                    (account_id, asset, _text(free), _text(used)),
                )
            for order in orders:
                values = tuple(_column(getattr(order, c)) for c in _ORDER_COLUMNS)
                updates = ", ".join(f"{c} = excluded.{c}" for c in _ORDER_COLUMNS[2:])
                await tx.execute(
                    f"INSERT INTO paper_orders ({', '.join(_ORDER_COLUMNS)}) "  # noqa: S608 - fixed column names
                    f"VALUES ({', '.join('?' * len(_ORDER_COLUMNS))}) "
                    f"ON CONFLICT (account_id, id) DO UPDATE SET {updates}",
                    values,
                )
            for trade in trades:
                await tx.execute(
                    f"INSERT INTO paper_trades ({', '.join(_TRADE_COLUMNS)}) "  # noqa: S608 - fixed column names
                    f"VALUES ({', '.join('?' * len(_TRADE_COLUMNS))})",
                    tuple(_column(getattr(trade, c)) for c in _TRADE_COLUMNS),
                )


def _text(value: Decimal) -> str:
    return format(value, "f")


def _column(value):
    if isinstance(value, Decimal):
        return _text(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _order(row) -> PaperOrder:
    return PaperOrder(
        account_id=row["account_id"], id=row["id"], client_order_id=row["client_order_id"], symbol=row["symbol"],
        side=row["side"], type=row["type"], amount=Decimal(row["amount"]), price=dec(row["price"]),
        status=row["status"], filled=Decimal(row["filled"]), cost=Decimal(row["cost"]), average=dec(row["average"]),
        fee=Decimal(row["fee"]), fee_currency=row["fee_currency"], reserved_asset=row["reserved_asset"],
        reserved=Decimal(row["reserved"]), created_ms=row["created_ms"], updated_ms=row["updated_ms"],
    )


def _trade(row) -> PaperTrade:
    return PaperTrade(
        account_id=row["account_id"], id=row["id"], order_id=row["order_id"], symbol=row["symbol"], side=row["side"],
        price=Decimal(row["price"]), amount=Decimal(row["amount"]), cost=Decimal(row["cost"]),
        fee=Decimal(row["fee"]), fee_currency=row["fee_currency"], maker=bool(row["maker"]), at_ms=row["at_ms"],
    )
