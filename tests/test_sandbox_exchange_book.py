"""The venue-neutral exchange book: balances, matching, fees, candles, futures positions, faults."""

from __future__ import annotations

from decimal import Decimal

import pytest

from bot.sandbox.exchange_book import BookError, ExchangeBook, MarketSpec

DAY = 86_400_000
NOW = 1_700_000_000_000  # a fixed clock keeps candle timestamps deterministic


def spot_book() -> ExchangeBook:
    market = MarketSpec(
        symbol="BTC/USDT",
        venue_symbol="BTCUSDT",
        base="BTC",
        quote="USDT",
        tick_size=Decimal("0.01"),
        amount_step=Decimal("0.00001"),
        min_amount=Decimal("0.00001"),
        min_cost=Decimal("10"),
        maker_fee=Decimal("0.001"),
        taker_fee=Decimal("0.002"),
        fee_decimals=8,
    )
    book = ExchangeBook("test", [market], clock=lambda: NOW)
    book.add_key("k", "s", balances={"USDT": "1000"})
    book.set_price("BTC/USDT", "20000")
    return book


def futures_book() -> ExchangeBook:
    market = MarketSpec(
        symbol="BTC/USDT:USDT",
        venue_symbol="BTCUSDT",
        base="BTC",
        quote="USDT",
        tick_size=Decimal("0.1"),
        amount_step=Decimal("0.001"),
        min_amount=Decimal("0.001"),
        min_cost=Decimal("10"),
        maker_fee=Decimal("0.0002"),
        taker_fee=Decimal("0.0005"),
    )
    book = ExchangeBook("testusdm", [market], futures=True, clock=lambda: NOW)
    book.add_key("k", "s", balances={"USDT": "1000"})
    book.set_price("BTC/USDT:USDT", "20000")
    return book


def candles(n: int, start_close: int = 100) -> list[list[float]]:
    return [
        [i * DAY, start_close + i, start_close + i + 5, start_close + i - 5, start_close + i + 1, 10] for i in range(n)
    ]


# ----------------------------------------------------------------------------------------------- spot
def test_market_buy_by_quote_cost_rounds_the_amount_down_and_charges_the_taker_fee_in_quote():
    book = spot_book()
    order = book.place_order("k", "BTC/USDT", "buy", "market", quote_cost="50.005")
    assert (order.status, order.amount, order.cost) == ("closed", Decimal("0.00250"), Decimal("50.00000"))
    assert order.fee == Decimal("0.1")
    account = book.keys["k"]
    assert account.total("USDT") == Decimal("949.9") and account.total("BTC") == Decimal("0.0025")
    assert account.free("USDT") == account.total("USDT")


def test_a_resting_limit_buy_locks_its_worst_case_cost_and_cancel_releases_it():
    book = spot_book()
    order = book.place_order("k", "BTC/USDT", "buy", "limit", amount="0.01", price="19000", client_order_id="c1")
    account = book.keys["k"]
    assert account.free("USDT") == Decimal(1000) - Decimal("190") * Decimal("1.002")
    book.cancel_order("k", "BTC/USDT", client_order_id="c1")
    assert order.status == "canceled" and account.free("USDT") == Decimal(1000)
    with pytest.raises(BookError) as err:
        book.cancel_order("k", "BTC/USDT", order.id)
    assert err.value.kind == "order_not_open"


def test_a_crossing_price_fills_resting_orders_as_maker_in_time_order_within_liquidity():
    book = spot_book()
    first = book.place_order("k", "BTC/USDT", "buy", "limit", amount="0.001", price="19000")
    second = book.place_order("k", "BTC/USDT", "buy", "limit", amount="0.001", price="19500")
    assert book.set_price("BTC/USDT", "19600") == []
    book.set_liquidity("BTC/USDT", "0.0015")
    fills = book.set_price("BTC/USDT", "18000")
    assert [(t.order_id, t.amount, t.price, t.maker) for t in fills] == [
        (first.id, Decimal("0.001"), Decimal("19000"), True),
        (second.id, Decimal("0.0005"), Decimal("19500"), True),
    ]
    assert first.status == "closed" and (second.status, second.filled) == ("open", Decimal("0.0005"))
    assert fills[0].fee == Decimal("0.019")  # maker 0.1 % of 19


def test_a_sell_limit_fills_when_the_price_rises_and_pays_quote_minus_fee():
    book = spot_book()
    book.keys["k"].balances["BTC"] = Decimal("0.01")
    order = book.place_order("k", "BTC/USDT", "sell", "limit", amount="0.01", price="21000")
    assert book.keys["k"].free("BTC") == 0
    book.set_price("BTC/USDT", "21000")
    assert order.status == "closed"
    assert book.keys["k"].total("USDT") == Decimal("1000") + Decimal("210") - Decimal("0.21")
    assert book.keys["k"].total("BTC") == 0


def test_a_marketable_limit_fills_at_once_as_taker_at_the_last_price():
    book = spot_book()
    order = book.place_order("k", "BTC/USDT", "buy", "limit", amount="0.001", price="25000")
    assert (order.status, order.average, order.fee) == ("closed", Decimal("20000"), Decimal("0.04"))
    [trade] = book.trades("k", "BTC/USDT")
    assert trade.maker is False


def test_fill_partially_fills_a_resting_order_on_demand():
    book = spot_book()
    order = book.place_order("k", "BTC/USDT", "buy", "limit", amount="0.002", price="19000")
    trade = book.fill_partially(order.id, "0.0005")
    assert (trade.amount, trade.price, order.filled, order.status) == (
        Decimal("0.0005"),
        Decimal("19000"),
        Decimal("0.0005"),
        "open",
    )


@pytest.mark.parametrize(
    ("kwargs", "kind", "field"),
    [
        ({"type": "limit", "amount": "0.001", "price": "19000.001"}, "precision", "price"),
        ({"type": "limit", "amount": "0.000011", "price": "19000"}, "precision", "amount"),
        ({"type": "market", "amount": "0.0001"}, "min_notional", None),
        ({"type": "market", "amount": "1"}, "insufficient_funds", None),
        ({"type": "limit", "amount": "0.001", "price": "25000", "post_only": True}, "post_only", None),
    ],
)
def test_invalid_orders_are_refused_with_a_kind(kwargs, kind, field):
    book = spot_book()
    with pytest.raises(BookError) as err:
        book.place_order("k", "BTC/USDT", "buy", **kwargs)
    assert (err.value.kind, err.value.field) == (kind, field)
    assert book.all_orders("k") == []


def test_a_client_order_id_is_unique_among_open_orders_only():
    book = spot_book()
    book.place_order("k", "BTC/USDT", "buy", "limit", amount="0.001", price="19000", client_order_id="x")
    with pytest.raises(BookError, match="duplicate_client_id"):
        book.place_order("k", "BTC/USDT", "buy", "limit", amount="0.001", price="19000", client_order_id="x")
    book.cancel_order("k", "BTC/USDT", client_order_id="x")
    again = book.place_order("k", "BTC/USDT", "buy", "limit", amount="0.001", price="19000", client_order_id="x")
    assert book.get_order("k", "BTC/USDT", client_order_id="x") is again


def test_keys_authenticate_until_revoked_and_read_only_keys_cannot_trade():
    book = spot_book()
    assert book.authenticate("k").api_key == "k"
    book.add_key("ro", "s", can_trade=False)
    with pytest.raises(BookError, match="permission"):
        book.place_order("ro", "BTC/USDT", "buy", "market", amount="0.001")
    book.revoke_key("k")
    with pytest.raises(BookError, match="revoked"):
        book.authenticate("k")
    with pytest.raises(BookError, match="unknown_key"):
        book.authenticate("nobody")


# ----------------------------------------------------------------------------------------------- candles
def test_candles_are_rebased_so_the_open_one_is_the_current_period():
    book = spot_book()
    book.load_candles("BTC/USDT", "1d", candles(10), start=4)
    rows = book.candles("BTC/USDT", "1d")
    assert len(rows) == 5
    assert rows[-1].timestamp_ms == NOW - NOW % DAY
    assert [r.timestamp_ms for r in rows] == [rows[-1].timestamp_ms - (4 - i) * DAY for i in range(5)]
    assert book.price("BTC/USDT") == Decimal(105)  # the open candle's close
    assert [r.close for r in rows[:-1]] == [Decimal(101), Decimal(102), Decimal(103), Decimal(104)]


def test_set_price_moves_the_open_candle_and_advance_opens_the_next():
    book = spot_book()
    book.load_candles("BTC/USDT", "1d", candles(10), start=4)
    book.set_price("BTC/USDT", "200")
    live = book.candles("BTC/USDT", "1d")[-1]
    assert (live.open, live.high, live.close) == (Decimal(104), Decimal(200), Decimal(200))
    assert book.advance("BTC/USDT") is True
    assert book.price("BTC/USDT") == Decimal(106)
    assert len(book.candles("BTC/USDT", "1d")) == 6
    assert book.advance(steps=10) is False  # the feed ends; its last candle stays open


def test_advance_fills_orders_the_new_price_crosses():
    book = spot_book()
    book.keys["k"].balances["USDT"] = Decimal(100000)
    book.load_candles("BTC/USDT", "1d", [[0, 10, 10, 10, 10, 1], [DAY, 9, 9, 9, 9, 1]], start=0)
    order = book.place_order("k", "BTC/USDT", "buy", "limit", amount="2", price="9.5")
    book.advance()
    assert order.status == "closed"


def test_history_is_served_before_the_feed_and_longer_candles_aggregate_both():
    hour, minute = 3_600_000, 60_000
    book = spot_book()
    feed = [[2 * hour + i * minute, 50 + i, 60 + i, 40 + i, 51 + i, 1] for i in range(120)]  # 2 hours of minutes
    book.load_candles("BTC/USDT", "1m", feed, start=59, rebase=False)
    book.load_history("BTC/USDT", "1h", [[0, 10, 20, 5, 15, 7], [hour, 15, 30, 10, 25, 7]])
    hours = book.candles("BTC/USDT", "1h")
    assert [(h.timestamp_ms, h.open, h.close) for h in hours] == [
        (0, 10, 15), (hour, 15, 25), (2 * hour, 50, 110)  # recorded, recorded, the minutes so far (open)
    ]
    assert hours[-1].high == 119 and hours[-1].low == 40 and hours[-1].volume == 60
    two_hours = book.candles("BTC/USDT", "2h")
    assert [(c.open, c.high, c.close) for c in two_hours] == [(10, 30, 25), (50, 119, 110)]
    book.advance("BTC/USDT", steps=60)  # the third hour closed, the fourth opened (minute 119)
    assert len(book.candles("BTC/USDT", "1h")) == 4 and book.price("BTC/USDT") == 170
    book.replay_from("BTC/USDT", 0)
    assert book.price("BTC/USDT") == 51 and len(book.candles("BTC/USDT", "1h")) == 3
    book.load_candles("BTC/USDT", "1d", candles(3), rebase=False)  # a new series replaces feed and history
    assert book.candles("BTC/USDT", "1h") == [] and len(book.candles("BTC/USDT", "1d")) == 2
    with pytest.raises(BookError, match="longer"):
        book.load_history("BTC/USDT", "1h", [[0, 1, 1, 1, 1, 1]])


def test_since_limit_and_aggregation_of_a_longer_timeframe():
    book = spot_book()
    book.load_candles("BTC/USDT", "1d", candles(21), start=20, rebase=False)
    assert [r.timestamp_ms for r in book.candles("BTC/USDT", "1d", since=18 * DAY)] == [18 * DAY, 19 * DAY, 20 * DAY]
    assert len(book.candles("BTC/USDT", "1d", limit=2)) == 2
    weeks = book.candles("BTC/USDT", "1w")
    # weeks open on Mondays: days 0-3 (Thursday to Sunday) make a short first week
    assert [w.timestamp_ms for w in weeks] == [-3 * DAY, 4 * DAY, 11 * DAY, 18 * DAY]
    assert (weeks[0].open, weeks[0].close, weeks[0].volume) == (Decimal(100), Decimal(104), Decimal(40))
    assert (weeks[1].high, weeks[1].low) == (Decimal(115), Decimal(99))
    assert book.candles("BTC/USDT", "1h") == []  # nothing shorter than the data is invented


# ----------------------------------------------------------------------------------------------- futures
def test_a_futures_position_averages_its_entry_and_realizes_pnl_on_close():
    book = futures_book()
    book.place_order("k", "BTC/USDT:USDT", "buy", "market", amount="0.01")
    book.set_price("BTC/USDT:USDT", "22000")
    book.place_order("k", "BTC/USDT:USDT", "buy", "market", amount="0.01")
    [position] = book.positions("k")
    assert (position.amount, position.entry_price) == (Decimal("0.02"), Decimal("21000"))
    book.set_price("BTC/USDT:USDT", "23000")
    book.place_order("k", "BTC/USDT:USDT", "sell", "market", amount="0.02", reduce_only=True)
    assert position.amount == 0 and position.realized_pnl == Decimal(40)
    fees = Decimal("0.1") + Decimal("0.11") + Decimal("0.23")
    assert book.keys["k"].total("USDT") == Decimal(1000) + Decimal(40) - fees


def test_futures_margin_uses_leverage_and_refuses_what_it_cannot_cover():
    book = futures_book()
    account = book.keys["k"]
    book.set_leverage("k", "BTC/USDT:USDT", 2)
    with pytest.raises(BookError, match="margin_insufficient"):
        book.place_order("k", "BTC/USDT:USDT", "buy", "market", amount="0.1")  # 2,000 notional / 2 > 1,000
    book.place_order("k", "BTC/USDT:USDT", "buy", "limit", amount="0.05", price="19000")
    assert book.used_margin(account) == Decimal("475")
    assert book.available_margin(account) == Decimal(525)


def test_reduce_only_cannot_open_and_position_mode_needs_a_flat_account():
    book = futures_book()
    with pytest.raises(BookError, match="reduce_only"):
        book.place_order("k", "BTC/USDT:USDT", "sell", "market", amount="0.01", reduce_only=True)
    book.place_order("k", "BTC/USDT:USDT", "sell", "market", amount="0.01")
    with pytest.raises(BookError):
        book.set_dual_side("k", True)
    with pytest.raises(BookError):
        book.set_margin_type("k", "BTC/USDT:USDT", "isolated")


def test_hedge_mode_keeps_long_and_short_apart():
    book = futures_book()
    book.set_dual_side("k", True)
    book.place_order("k", "BTC/USDT:USDT", "buy", "market", amount="0.01", position_side="LONG")
    book.place_order("k", "BTC/USDT:USDT", "sell", "market", amount="0.02", position_side="SHORT")
    assert [(p.position_side, p.amount) for p in book.positions("k")] == [
        ("LONG", Decimal("0.01")),
        ("SHORT", Decimal("-0.02")),
    ]
    with pytest.raises(BookError, match="bad_request"):
        book.place_order("k", "BTC/USDT:USDT", "buy", "market", amount="0.01")


# ----------------------------------------------------------------------------------------------- faults and log
def test_injected_faults_are_consumed_per_matching_request():
    book = spot_book()
    book.inject("server_error", count=2, path="/order")
    book.inject("rate_limit")
    assert book.take_fault("/api/v3/account") == "rate_limit"
    assert book.take_fault("/api/v3/account") is None
    assert [book.take_fault("/api/v3/order") for _ in range(3)] == ["server_error", "server_error", None]
    with pytest.raises(ValueError, match="unknown fault"):
        book.inject("gremlins")


def test_a_hold_is_taken_apart_from_other_faults_and_only_by_its_method():
    book = spot_book()
    book.hang_seconds = 7.0
    book.inject("hold", path="/api/v3/order", method="post", seconds=2.5)
    book.inject("hold", path="/api/v3/order")
    assert book.take_fault("/api/v3/order", "POST") is None  # a hold is not an error fault
    assert book.take_hold("/api/v3/order", "GET") == 7.0  # the second hold has no method: any request
    assert book.take_hold("/api/v3/order", "DELETE") is None
    assert book.take_hold("/api/v3/order", "POST") == 2.5
    assert book.faults == []


def test_the_request_log_keeps_what_venues_record():
    book = spot_book()
    book.record_request("GET", "/api/v3/account", "k", True, {"timestamp": "1"}, 200)
    [record] = book.requests
    assert (record.method, record.path, record.api_key, record.signature_valid, record.status) == (
        "GET",
        "/api/v3/account",
        "k",
        True,
        200,
    )
