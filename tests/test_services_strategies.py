"""Strategy services against the fake venues: allocation validation, catalogue, status, ownership, pause and
resume, /stop with keep or sell (summary equal to the fake's own fills), and stopping an account's strategies."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from bot.services.errors import UserError
from tests.engine_world import ShiftedClock, open_world
from tests.test_engine_dca import wait_for

ALICE, BOB = 21, 22


@pytest.fixture
async def world(fake_exchanges, tmp_path):
    book = fake_exchanges.books["binance"]
    book.set_price("BTC/USDT", "50000")
    book.set_price("ETH/USDT", "2500")
    book.add_key("alice", "secret-a", balances={"USDT": "1000"})
    book.add_key("bob", "secret-b", balances={"USDT": "1000"})
    clock = ShiftedClock()
    world = await open_world(tmp_path, fake_exchanges.exchange_urls, clock=clock)
    world.clock = clock
    world.book = book
    await world.connect(ALICE, "binance", "alice", "secret-a")
    await world.connect(BOB, "binance", "bob", "secret-b")
    try:
        yield world
    finally:
        await world.close()


@pytest.mark.parametrize(
    ("label", "kind", "budget", "symbol", "params", "message"),
    [
        ("nosuch", "dca", "100", "BTC/USDT", {}, "no account labelled 'nosuch'"),
        ("binance", "moon", "100", "BTC/USDT", {}, "unknown strategy 'moon'"),
        ("binance", "dca", "-5", "BTC/USDT", {}, "greater than 0"),
        ("binance", "dca", "abc", "BTC/USDT", {}, "not a number"),
        ("binance", "dca", "100", "NOPE/USDT", {}, "NOPE/USDT is not traded on Binance Spot"),
        ("binance", "dca", "5000", "BTC/USDT", {"amount": "10"}, "at most 1000"),
        ("binance", "dca", "100", "BTC/USDT", {"every": "0m"}, "every"),
        ("binance", "dca", "100", "BTC/USDT", {"amount": "1"}, "below BTC/USDT's minimum order of 10"),
        ("binance", "dca", "100", "BTC/USDT", {"speed": "3"}, "no parameter 'speed'"),
        ("binance", "grid", "100", "BTC/USDT", {"low": "60000", "high": "50000"}, "must be below high"),
        ("binance", "rebalance", "100", "USDT", {"weights": "BTC:50,ETH:40"}, "sum to 100"),
    ],
)
async def test_allocation_refusals_explain_what_is_wrong(world, label, kind, budget, symbol, params, message):
    with pytest.raises(UserError) as refused:
        await world.service.allocate(ALICE, label, kind, budget, symbol, params)
    assert message in refused.value.message


async def test_the_budget_must_fit_the_free_balance_minus_other_unspent_budgets(world):
    await world.allocate(ALICE, "binance", "dca", "600", "BTC/USDT", every="1d", amount="20")
    await world.engine.settle()
    with pytest.raises(UserError) as refused:
        await world.service.allocate(ALICE, "binance", "dca", "500", "ETH/USDT", {"every": "1d", "amount": "20"})
    assert "promised to your other strategies" in refused.value.message
    preview = await world.service.allocate(ALICE, "binance", "dca", "400", "ETH/USDT", {"every": "1d", "amount": "20"})
    assert preview.available == Decimal(400)
    assert preview.params == {"every": "1d", "amount": "20"}


async def test_a_preview_is_confirmed_once(world):
    preview = await world.service.allocate(ALICE, "binance", "dca", "100", "BTC/USDT", {"amount": "20"})
    await world.service.confirm(preview)
    with pytest.raises(UserError):
        await world.service.confirm(preview)
    await world.engine.settle()
    assert len(world.book.all_orders("alice")) == 1


async def test_the_catalogue_lists_every_strategy_with_parameters_and_defaults(world):
    catalogue = {s.name: s for s in world.service.strategies_catalogue()}
    assert set(catalogue) == {"dca", "grid", "rebalance", "trend"}
    dca = {p.name: p.default for p in catalogue["dca"].params}
    assert dca == {"every": "1d", "amount": "budget/10"}
    assert catalogue["grid"].example.startswith("/allocate kraken grid")


async def test_status_shows_budget_use_holdings_and_pnl(world):
    strategy_id = await world.allocate(ALICE, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")

    async def filled() -> bool:
        return bool(await world.store.orders.fills_for_strategy(strategy_id))

    await wait_for(filled)
    await world.engine.settle()
    world.book.set_price("BTC/USDT", "55000")
    world.gateway.market_data.invalidate()  # the ticker cache keeps a price for one round
    [status] = await world.service.status(ALICE)
    assert status.status == "active" and status.open_orders == 0
    assert status.used == Decimal("20.02")  # 20 + 0.1 % fee, paid in USDT on the fake
    assert status.left == Decimal("79.98")
    assert status.holdings == {"BTC": Decimal("0.0004")}
    assert status.average_entry == Decimal("20.02") / Decimal("0.0004")  # what is held cost, fee included
    assert status.unrealised_pnl == Decimal("0.0004") * 55000 - Decimal("20.02")
    assert status.next_run is not None and status.fill_poll_seconds > 0
    assert await world.service.status(BOB) == []


async def test_pause_and_resume_check_ownership_and_resume_catches_up(world):
    strategy_id = await world.allocate(ALICE, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
    await world.engine.settle()
    with pytest.raises(UserError):
        await world.service.pause(BOB, strategy_id)
    assert (await world.service.pause(ALICE, strategy_id)).status == "paused"
    world.clock.offset = timedelta(days=2, seconds=1)
    await world.engine.run_strategy(strategy_id)  # paused: nothing happens
    assert len(world.book.all_orders("alice")) == 1
    with pytest.raises(UserError):
        await world.service.resume(BOB, strategy_id)
    await world.service.resume(ALICE, strategy_id)
    await world.engine.settle()
    assert len(world.book.all_orders("alice")) == 2  # one catch-up buy for the owed slot


async def test_stop_with_sell_cancels_sells_holdings_and_sums_the_fakes_own_fills(world):
    strategy_id = await world.allocate(ALICE, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
    await world.engine.settle()
    world.book.set_price("BTC/USDT", "52000")
    world.gateway.market_data.invalidate()
    with pytest.raises(UserError):
        await world.service.stop(BOB, strategy_id, sell=True)
    summary = await world.service.stop(ALICE, strategy_id, sell=True)
    trades = world.book.trades("alice")
    assert [t.side for t in trades] == ["buy", "sell"]
    buy, sell = trades
    assert summary.sold == {"BTC": buy.amount}
    assert summary.kept == {}
    assert summary.invested == buy.price * buy.amount + buy.fee
    assert summary.returned == sell.price * sell.amount - sell.fee
    assert summary.fees == buy.fee + sell.fee
    assert summary.realised_pnl == summary.returned - summary.invested
    assert world.book.open_orders("alice") == []
    assert (await world.store.strategies.get(strategy_id)).status == "stopped"
    # A stopped strategy's budget is released.
    preview = await world.service.allocate(ALICE, "binance", "dca", "900", "ETH/USDT", {"amount": "20"})
    assert preview.budget == Decimal(900)


async def test_stop_with_keep_leaves_the_holdings(world):
    strategy_id = await world.allocate(ALICE, "binance", "dca", "100", "BTC/USDT", every="1d", amount="20")
    await world.engine.settle()
    summary = await world.service.stop(ALICE, strategy_id, sell=False)
    assert summary.sold == {} and summary.kept == {"BTC": Decimal("0.0004")}
    assert summary.realised_pnl == 0
    assert [t.side for t in world.book.trades("alice")] == ["buy"]


async def test_stopping_an_accounts_strategies_cancels_their_open_orders(world):
    preview = await world.service.allocate(
        ALICE, "binance", "grid", "300", "BTC/USDT", {"low": "40000", "high": "60000", "levels": "5"}
    )
    strategy_id = (await world.service.confirm(preview)).strategy_id
    await world.engine.settle()
    # At 50,000: buys at 40,000 and 45,000, and sells at 55,000 and 60,000 of the coins bought at start.
    assert sorted((o.side, o.price) for o in world.book.open_orders("alice")) == [
        ("buy", 40000), ("buy", 45000), ("sell", 55000), ("sell", 60000)]
    account = await world.store.accounts.by_label(ALICE, "binance")
    assert len(await world.service.stop_account_strategies(account.id)) == 1
    assert world.book.open_orders("alice") == []
    assert (await world.store.strategies.get(strategy_id)).status == "stopped"


async def test_a_grid_budget_is_checked_against_every_order_of_the_grid_and_the_refusal_says_the_minimum(world):
    # At 50,000 a grid from 40,000 to 60,000 in 5 levels buys at 40,000 and 45,000, and buys at start the coins its
    # 50,000 and 55,000 levels sell one level up. Every level buys at its price sooner or later: at 55,000 the
    # smallest buy on the 0.00001 BTC step is 0.00019 BTC = 10.45 USDT (10 USDT minimum). The budget splits into
    # 2 + (50000/50000 + 50000/55000) × 1.02 (the gate's reserve on a market buy) = 3.94727… per-level shares,
    # plus the 0.1 % fee reserve: 10.45 × 3.94727… × 1.001 = 41.2902… → 41.30.
    with pytest.raises(UserError) as refused:
        await world.service.allocate(ALICE, "binance", "grid", "15", "BTC/USDT",
                                     {"low": "40000", "high": "60000", "levels": "5"})
    message = refused.value.message
    assert message == ("15.00 USDT over levels=5 (4 grids) is 3.79 USDT per grid, below BTC/USDT's minimum order at "
                       "those prices. The minimum budget is 41.3 USDT; or use levels=2.")
    with pytest.raises(UserError):
        await world.service.allocate(ALICE, "binance", "grid", "41.29", "BTC/USDT",
                                     {"low": "40000", "high": "60000", "levels": "5"})
    preview = await world.service.allocate(ALICE, "binance", "grid", "41.30", "BTC/USDT",
                                           {"low": "40000", "high": "60000", "levels": "5"})
    plan = preview.grid.plan
    assert (plan.buys, plan.sells) == ((0, 1), (2, 3))
    # 0.00020 BTC for the 50,000 level and 0.00019 BTC for the 55,000 one, bought at start.
    assert plan.start_amount == Decimal("0.00039") and plan.start_cost == Decimal("19.5")
    # From 45,000 to 65,000 at 50,000, one level buys and three sell: 15 USDT is far too little.
    with pytest.raises(UserError):
        await world.service.allocate(ALICE, "binance", "grid", "15", "BTC/USDT",
                                     {"low": "45000", "high": "65000", "levels": "5"})


async def test_a_grid_outside_its_range_is_checked_where_it_will_start(world):
    # Above the range the grid waits; once the price falls to 40,000 all four levels buy. The dearest smallest
    # buy is at 30,000: 0.00034 BTC = 10.20 USDT; 4 × 10.20 × 1.001 = 40.8408 → 40.85.
    with pytest.raises(UserError) as refused:
        await world.service.allocate(ALICE, "binance", "grid", "35", "BTC/USDT",
                                     {"low": "30000", "high": "40000", "levels": "5"})
    assert "minimum budget is 40.85 USDT; or use levels=4 or fewer" in refused.value.message
    preview = await world.service.allocate(ALICE, "binance", "grid", "40.85", "BTC/USDT",
                                           {"low": "30000", "high": "40000", "levels": "5"})
    assert not preview.grid.in_range and preview.grid.plan.price == 40000 and preview.grid.plan.sells == ()


async def test_a_geometric_grids_summary_names_the_prices_its_orders_then_rest_at(world):
    """Geometric levels fall between ticks (41,000 × (61/41)^(1/4) = 45,281.9…): the summary names each order's
    price as the venue gets it — a buy's rounded down to the 0.01 tick, a sell's up — and those are the prices
    resting on the fake Binance once confirmed."""
    from bot.formatting import price
    from handlers.render import preview_text

    preview = await world.service.allocate(ALICE, "binance", "grid", "300", "BTC/USDT",
                                           {"low": "41000", "high": "61000", "levels": "5", "spacing": "geo"})
    grid = preview.grid
    assert len(grid.buys_at) == 2 and len(grid.sells_at) == 2
    assert all(p == p.quantize(Decimal("0.01")) for p in grid.buys_at + grid.sells_at)
    text = preview_text(preview)
    at = [price(p, "USDT", Decimal("0.01")) for p in grid.buys_at + grid.sells_at]
    assert f"below the price ({at[0]}–{at[1]}) and 2 sell limits above it ({at[2]}–{at[3]})" in text, text
    assert at[1] == "45,281.45 USDT" and at[2] == "55,232.33 USDT"  # 45,281.452… down, 55,232.326… up
    await world.service.confirm(preview)
    await world.engine.settle()

    async def all_resting() -> bool:
        return len(world.book.open_orders("alice")) == 4

    await wait_for(all_resting)
    assert sorted(o.price for o in world.book.open_orders("alice")) == sorted(grid.buys_at + grid.sells_at)


async def test_a_dca_amount_that_rounding_pushes_below_the_minimum_is_refused_with_the_smallest_that_works(world):
    """At 109000, 10 USDT is above Binance's 10 USDT minimum but buys 0.00009 BTC on its 0.00001 step (9.81
    USDT); the smallest buy that meets the minimum, 0.0001 BTC, costs 10.90 — the refusal says so, and that
    amount is accepted."""
    world.book.set_price("BTC/USDT", "109000")
    with pytest.raises(UserError) as refused:
        await world.service.allocate(ALICE, "binance", "dca", "100", "BTC/USDT", {"every": "1d", "amount": "10"})
    assert "10.9 USDT" in refused.value.message and "amount=" in refused.value.message
    preview = await world.service.allocate(ALICE, "binance", "dca", "100", "BTC/USDT",
                                           {"every": "1d", "amount": "10.9"})
    await world.service.confirm(preview)
    await world.engine.settle()
    [order] = world.book.all_orders("alice")
    assert order.status == "closed" and order.filled * Decimal(109000) >= 10


@pytest.mark.parametrize("typed", ["BTC/USDT", "BTCUSDT", "btc-usdt", "BTC_USDT", "btc/usdt", " btc usdt "])
async def test_every_usual_way_of_writing_a_market_means_the_venues_market(world, typed):
    preview = await world.service.allocate(ALICE, "binance", "dca", "100", typed, {"amount": "20"})
    assert preview.symbol == "BTC/USDT"


async def test_an_unknown_market_gets_the_closest_listed_ones(world):
    with pytest.raises(UserError) as refused:
        await world.service.allocate(ALICE, "binance", "dca", "100", "BTC-USD", {"amount": "20"})
    assert "BTC/USD is not traded on Binance Spot. Did you mean BTC/USDT" in refused.value.message
    with pytest.raises(UserError) as refused:
        await world.service.allocate(ALICE, "binance", "dca", "100", "ETHUSTD", {"amount": "20"})
    assert "Did you mean ETH/USDT" in refused.value.message


def test_a_concatenated_symbol_is_split_only_by_the_listed_markets():
    from bot.services.strategies import market_names, pick_market

    markets = market_names(["BTC/USDT", "ETH/BTC", "AB/CD", "ABC/D", "BTC/USDT:USDT"], futures=False)
    assert markets == ["AB/CD", "ABC/D", "BTC/USDT", "ETH/BTC"]
    assert pick_market("ETHBTC", markets, "X") == "ETH/BTC"
    with pytest.raises(UserError) as refused:  # two pairs join alike: asked, never guessed
        pick_market("ABCD", markets, "X")
    assert "AB/CD" in refused.value.message and "ABC/D" in refused.value.message
    assert market_names(["BTC/USDT", "BTC/USDT:USDT"], futures=True) == ["BTC/USDT"]
    assert pick_market("btc/usdt:usdt".upper(), ["BTC/USDT"], "X") == "BTC/USDT"


async def test_kraken_markets_are_found_by_kraken_s_own_names_too(fake_exchanges, tmp_path):
    world = await open_world(tmp_path, fake_exchanges.exchange_urls)
    try:
        resolved = [await world.service.resolve_market("kraken", text)
                    for text in ("BTC/USD", "btcusd", "XBTUSD", "xbt/usd", "btc-usd", "XXBTZUSD")]
        assert resolved == ["BTC/USD"] * 6
    finally:
        await world.close()
