"""Order intents and their fills: the engine's record of what it asked the exchange and what came of it.

An order row is written as an `intent`, with its deterministic client order id and the worst-case quote it
reserves, BEFORE the order is sent; its status then follows the exchange. A fill row is unique per
(order, trade key), so recording the same exchange trade twice is a no-op: a re-poll never doubles a fill.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from storage.db import Database, Transaction
from storage.models import Fill, Order, dec, from_iso, to_iso, utcnow

INTENT, SENT, OPEN, CLOSED, CANCELED, REJECTED, UNKNOWN = (
    "intent", "sent", "open", "closed", "canceled", "rejected", "unknown",
)
#: Orders the exchange may still act on (or that we have not confirmed yet): they hold a reservation.
LIVE = (INTENT, SENT, OPEN, UNKNOWN)
#: Orders whose existence on the exchange is not known yet: start-up reconciles them by client order id.
UNCONFIRMED = (INTENT, SENT, UNKNOWN)
FINAL = (CLOSED, CANCELED, REJECTED)
ZERO = Decimal(0)


@dataclass(frozen=True)
class NewFill:
    """One exchange trade (or cumulative-fill step) of an order, valued in quote for the ledger."""

    trade_key: str
    side: str
    amount: Decimal
    price: Decimal
    cost: Decimal
    fee: Decimal
    fee_currency: str | None
    fee_quote: Decimal
    at: datetime
    profit: Decimal | None = None


def outstanding(order: Order) -> Decimal:
    """The part of an order's reservation not yet turned into spending (0 once the order is final)."""
    if order.status not in LIVE:
        return ZERO
    charged = order.filled_cost + order.fee if order.side == "buy" else order.filled_cost
    return max(ZERO, order.reserved - charged)


class OrderRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def insert_intent(
        self,
        tx: Transaction,
        *,
        strategy_id: int,
        account_id: int,
        client_order_id: str,
        tag: str,
        symbol: str,
        side: str,
        type: str,
        amount: Decimal | None,
        price: Decimal | None,
        cost: Decimal | None,
        reserved: Decimal,
        reduce_only: bool = False,
    ) -> int:
        now = to_iso(utcnow())
        return await tx.insert(
            "INSERT INTO orders (strategy_id, account_id, client_order_id, tag, symbol, side, type, amount, price, "
            "cost, reserved, reduce_only, status, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'intent', ?, ?)",
            (strategy_id, account_id, client_order_id, tag, symbol, side, type, _text(amount), _text(price),
             _text(cost), str(reserved), int(reduce_only), now, now),
        )

    async def get(self, order_id: int, tx: Transaction | None = None) -> Order | None:
        sql, params = "SELECT * FROM orders WHERE id = ?", (order_id,)
        row = await (tx.fetchone(sql, params) if tx is not None else self._db.fetchone(sql, params))
        return _order(row) if row else None

    async def by_client_id(self, client_order_id: str) -> Order | None:
        row = await self._db.fetchone("SELECT * FROM orders WHERE client_order_id = ?", (client_order_id,))
        return _order(row) if row else None

    async def tag_exists(self, strategy_id: int, tag: str) -> bool:
        row = await self._db.fetchone(
            "SELECT 1 FROM orders WHERE strategy_id = ? AND tag = ?", (strategy_id, tag)
        )
        return row is not None

    async def set_status(
        self,
        tx: Transaction | None,
        order_id: int,
        status: str,
        *,
        exchange_order_id: str | None = None,
        error: str | None = None,
    ) -> None:
        sql = (
            "UPDATE orders SET status = ?, exchange_order_id = COALESCE(?, exchange_order_id), "
            "error = COALESCE(?, error), updated_at = ? WHERE id = ?"
        )
        params = (status, exchange_order_id, error, to_iso(utcnow()), order_id)
        if tx is not None:
            await tx.execute(sql, params)
        else:
            await self._db.execute(sql, params)

    async def add_progress(
        self, tx: Transaction, order_id: int, *, amount: Decimal, cost: Decimal, fee_quote: Decimal
    ) -> None:
        """Add one fill to the order's running totals (inside the fill's transaction)."""
        row = await tx.fetchone("SELECT filled, filled_cost, fee FROM orders WHERE id = ?", (order_id,))
        if row is None:
            return
        await tx.execute(
            "UPDATE orders SET filled = ?, filled_cost = ?, fee = ?, updated_at = ? WHERE id = ?",
            (
                str(Decimal(row["filled"]) + amount),
                str(Decimal(row["filled_cost"]) + cost),
                str(Decimal(row["fee"]) + fee_quote),
                to_iso(utcnow()),
                order_id,
            ),
        )

    async def in_states(
        self, statuses: Iterable[str], *, account_id: int | None = None, strategy_id: int | None = None
    ) -> list[Order]:
        states = list(statuses)
        sql = f"SELECT * FROM orders WHERE status IN ({', '.join('?' for _ in states)})"  # noqa: S608 - placeholders only
        params: list[Any] = list(states)
        if account_id is not None:
            sql += " AND account_id = ?"
            params.append(account_id)
        if strategy_id is not None:
            sql += " AND strategy_id = ?"
            params.append(strategy_id)
        rows = await self._db.fetchall(sql + " ORDER BY id", params)
        return [_order(r) for r in rows]

    async def for_strategy(self, strategy_id: int, tx: Transaction | None = None) -> list[Order]:
        sql, params = "SELECT * FROM orders WHERE strategy_id = ? ORDER BY id", (strategy_id,)
        rows = await (tx.fetchall(sql, params) if tx is not None else self._db.fetchall(sql, params))
        return [_order(r) for r in rows]

    async def live_for_strategy(self, strategy_id: int, tx: Transaction | None = None) -> list[Order]:
        states = ", ".join(f"'{s}'" for s in LIVE)
        sql = f"SELECT * FROM orders WHERE strategy_id = ? AND status IN ({states}) ORDER BY id"  # noqa: S608
        rows = await (tx.fetchall(sql, (strategy_id,)) if tx is not None else self._db.fetchall(sql, (strategy_id,)))
        return [_order(r) for r in rows]

    async def reserved_for(self, strategy_id: int, tx: Transaction | None = None) -> Decimal:
        """Quote held by the strategy's live orders (their worst case, less what their fills already spent)."""
        return sum((outstanding(o) for o in await self.live_for_strategy(strategy_id, tx)), ZERO)

    async def accounts_with_live_orders(self) -> list[int]:
        rows = await self._db.fetchall(
            "SELECT DISTINCT account_id FROM orders WHERE status IN ('open', 'unknown', 'sent') ORDER BY account_id"
        )
        return [r["account_id"] for r in rows]

    async def abandon_live(self, tx: Transaction, account_id: int, error: str) -> int:
        """End every live order of an account whose key cannot act on them any more (budgets released).

        They may still be open on the exchange: `error` says so, and the caller tells the user to cancel them there.
        """
        states = ", ".join(f"'{s}'" for s in LIVE)
        return await tx.rowcount(
            f"UPDATE orders SET status = '{CANCELED}', error = ?, updated_at = ? "  # noqa: S608 - constants only
            f"WHERE account_id = ? AND status IN ({states})",
            (error, to_iso(utcnow()), account_id),
        )

    async def latest_sent(self, account_id: int, limit: int) -> list[Order]:
        """The account's latest orders the exchange acknowledged (they carry an exchange order id)."""
        rows = await self._db.fetchall(
            "SELECT * FROM orders WHERE account_id = ? AND exchange_order_id IS NOT NULL ORDER BY id DESC LIMIT ?",
            (account_id, limit),
        )
        return [_order(r) for r in rows]

    # --- fills -------------------------------------------------------------------------------------------

    async def add_fill(self, tx: Transaction, order: Order, fill: NewFill) -> bool:
        """Record a fill once; False when this (order, trade key) was recorded before."""
        inserted = await tx.rowcount(
            "INSERT INTO fills (order_id, strategy_id, trade_key, side, amount, price, cost, fee, "
            "fee_currency, fee_quote, profit, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (order.id, order.strategy_id, fill.trade_key, fill.side, str(fill.amount), str(fill.price),
             str(fill.cost), str(fill.fee), fill.fee_currency, str(fill.fee_quote), _text(fill.profit),
             to_iso(fill.at)),
        )
        return inserted == 1

    async def set_fill_profit(self, tx: Transaction, order_id: int, trade_key: str, profit: Decimal) -> None:
        await tx.execute(
            "UPDATE fills SET profit = ? WHERE order_id = ? AND trade_key = ?", (str(profit), order_id, trade_key)
        )

    async def fee_native(self, order_id: int) -> Decimal:
        """The sum of an order's recorded fees, each in its own currency (cumulative reports' fee base)."""
        rows = await self._db.fetchall("SELECT fee FROM fills WHERE order_id = ?", (order_id,))
        return sum((Decimal(r["fee"]) for r in rows), ZERO)

    async def fill_keys(self, order_id: int) -> set[str]:
        rows = await self._db.fetchall("SELECT trade_key FROM fills WHERE order_id = ?", (order_id,))
        return {r["trade_key"] for r in rows}

    async def fills_for_strategy(self, strategy_id: int, tx: Transaction | None = None) -> list[StrategyFill]:
        sql = (
            "SELECT f.*, o.symbol AS symbol FROM fills f JOIN orders o ON o.id = f.order_id "
            "WHERE f.strategy_id = ? ORDER BY f.id"
        )
        rows = await (tx.fetchall(sql, (strategy_id,)) if tx is not None else self._db.fetchall(sql, (strategy_id,)))
        return [StrategyFill(fill=_fill(r), symbol=r["symbol"], fee_quote=Decimal(r["fee_quote"]),
                             profit=dec(r["profit"])) for r in rows]

    async def fills_for_strategies(self, strategy_ids: list[int]) -> dict[int, list[StrategyFill]]:
        """The fills of many strategies, in one read per 500 ids (a round of engine runs shares it)."""
        result: dict[int, list[StrategyFill]] = {strategy_id: [] for strategy_id in strategy_ids}
        for start in range(0, len(strategy_ids), 500):
            chunk = strategy_ids[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            sql = _FILLS_OF_STRATEGIES.format(marks=marks)
            rows = await self._db.fetchall(sql, chunk)
            for r in rows:
                result[r["strategy_id"]].append(StrategyFill(
                    fill=_fill(r), symbol=r["symbol"], fee_quote=Decimal(r["fee_quote"]), profit=dec(r["profit"])
                ))
        return result

    async def fills_for_user(
        self, user_id: int, *, strategy_id: int | None = None, limit: int, offset: int = 0
    ) -> list[StrategyFill]:
        """The user's fills (of one of their strategies, if given), newest first; ownership checked in SQL."""
        sql, params = _user_fills("SELECT f.*, o.symbol AS symbol", user_id, strategy_id)
        sql += " ORDER BY f.at DESC, f.id DESC LIMIT ? OFFSET ?"
        rows = await self._db.fetchall(sql, [*params, limit, offset])
        return [StrategyFill(fill=_fill(r), symbol=r["symbol"], fee_quote=Decimal(r["fee_quote"]),
                             profit=dec(r["profit"])) for r in rows]

    async def count_fills_for_user(self, user_id: int, *, strategy_id: int | None = None) -> int:
        sql, params = _user_fills("SELECT COUNT(*) AS n", user_id, strategy_id)
        row = await self._db.fetchone(sql, params)
        return row["n"] if row else 0

    async def count_fills(self, strategy_id: int | None = None) -> int:
        if strategy_id is None:
            row = await self._db.fetchone("SELECT COUNT(*) AS n FROM fills")
        else:
            row = await self._db.fetchone("SELECT COUNT(*) AS n FROM fills WHERE strategy_id = ?", (strategy_id,))
        return row["n"] if row else 0


_FILLS_OF_STRATEGIES = (
    "SELECT f.*, o.symbol AS symbol FROM fills f JOIN orders o ON o.id = f.order_id "
    "WHERE f.strategy_id IN ({marks}) ORDER BY f.id"
)


def _user_fills(select: str, user_id: int, strategy_id: int | None) -> tuple[str, list[Any]]:
    sql = (
        f"{select} FROM fills f JOIN orders o ON o.id = f.order_id "
        "JOIN strategies s ON s.id = f.strategy_id WHERE s.user_id = ?"
    )
    params: list[Any] = [user_id]
    if strategy_id is not None:
        sql += " AND f.strategy_id = ?"
        params.append(strategy_id)
    return sql, params


@dataclass(frozen=True)
class StrategyFill:
    """A recorded fill with its market and its fee valued in quote (for holdings and P&L)."""

    fill: Fill
    symbol: str
    fee_quote: Decimal
    profit: Decimal | None


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _order(row) -> Order:
    return Order(
        id=row["id"],
        strategy_id=row["strategy_id"],
        account_id=row["account_id"],
        client_order_id=row["client_order_id"],
        tag=row["tag"],
        symbol=row["symbol"],
        side=row["side"],
        type=row["type"],
        amount=dec(row["amount"]),
        price=dec(row["price"]),
        cost=dec(row["cost"]),
        reserved=Decimal(row["reserved"]),
        status=row["status"],
        exchange_order_id=row["exchange_order_id"],
        filled=Decimal(row["filled"]),
        filled_cost=Decimal(row["filled_cost"]),
        fee=Decimal(row["fee"]),
        error=row["error"],
        created_at=from_iso(row["created_at"]),
        reduce_only=bool(row["reduce_only"]),
    )


def _fill(row) -> Fill:
    return Fill(
        id=row["id"],
        order_id=row["order_id"],
        strategy_id=row["strategy_id"],
        trade_key=row["trade_key"],
        side=row["side"],
        amount=Decimal(row["amount"]),
        price=Decimal(row["price"]),
        cost=Decimal(row["cost"]),
        fee=Decimal(row["fee"]),
        fee_currency=row["fee_currency"],
        at=from_iso(row["at"]),
    )
