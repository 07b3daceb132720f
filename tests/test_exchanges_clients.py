"""Client pool: URL override, sandbox, shared markets, and credentials bound per call on shared instances."""

from __future__ import annotations

import asyncio
import base64
from decimal import Decimal
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async
import pytest

from bot.exchanges.clients import ClientPool, ExchangeSetupError, KeyNonces, override_api_urls
from bot.exchanges.gateway import ExchangeGateway
from bot.exchanges.rate_budget import RateBudgets
from bot.secret import Credentials

ORIGIN = "http://127.0.0.1:9001"


def leaves(urls):
    if isinstance(urls, str):
        yield urls
    elif isinstance(urls, dict):
        for value in urls.values():
            yield from leaves(value)


@pytest.mark.parametrize("venue", ["binance", "binanceusdm", "kraken"])
async def test_exchange_url_override_moves_every_api_url_and_keeps_its_path(venue: str):
    pool = ClientPool({venue: ORIGIN})
    real = getattr(ccxt_async, venue)()
    real.timeout_on_exit = 0
    try:
        moved = pool.new_exchange(venue)
        before, after = list(leaves(real.urls["api"])), list(leaves(moved.urls["api"]))
        assert len(after) == len(before) and len(after) >= 3
        for old, new in zip(before, after, strict=True):
            assert new.startswith(ORIGIN)
            assert urlsplit(new).path == urlsplit(old).path
        await moved.close()
    finally:
        await real.close()
        await pool.close()


def test_override_handles_nested_url_tables():
    urls = {"public": "https://a.example/api/v3", "nested": {"x": "https://b.example:8443/p/q?z=1", "n": 3}}
    assert override_api_urls(urls, ORIGIN) == {
        "public": f"{ORIGIN}/api/v3",
        "nested": {"x": f"{ORIGIN}/p/q?z=1", "n": 3},
    }


async def test_sandbox_uses_testnet_urls_but_an_override_wins_for_the_venue_it_names():
    pool = ClientPool({"binanceusdm": ORIGIN}, sandbox=True)
    try:
        spot = pool.new_exchange("binance")
        futures = pool.new_exchange("binanceusdm")
        assert spot.urls["api"]["public"].startswith("https://testnet.binance.vision")
        assert "sapi" not in spot.urls["api"]  # testnet has no sapi: the withdraw check cannot run
        assert futures.urls["api"]["fapiPrivate"] == f"{ORIGIN}/fapi/v1"
        assert pool.is_testnet("binance") and not pool.is_testnet("binanceusdm")
        await spot.close()
        await futures.close()
    finally:
        await pool.close()


def test_kraken_is_refused_in_sandbox_mode_with_a_clear_error():
    pool = ClientPool({}, sandbox=True)
    with pytest.raises(ExchangeSetupError, match="no testnet"):
        pool.check_venue("kraken")
    ClientPool({"kraken": ORIGIN}, sandbox=True).check_venue("kraken")  # pointed at a test server: allowed


def test_unknown_venue_is_refused():
    with pytest.raises(ExchangeSetupError):
        ClientPool().check_venue("bitmex")


def test_kraken_nonce_strictly_increases_per_key_even_within_one_millisecond():
    nonces = KeyNonces(clock_ms=lambda: 1_000)
    values = [nonces.next("k1") for _ in range(5)]
    assert values == [1_000, 1_001, 1_002, 1_003, 1_004]
    assert nonces.next("k2") == 1_000
    nonces.bump("k1", 500)
    assert nonces.next("k1") > 1_504


# ------------------------------------------------------------------------------------------ against the fakes
BINANCE_A = Credentials("a" * 64, "A" * 64)
BINANCE_B = Credentials("b" * 64, "B" * 64)
KRAKEN_A = Credentials("k" * 56, base64.b64encode(bytes(range(64))).decode())
KRAKEN_B = Credentials("K" * 56, base64.b64encode(bytes(range(64, 128))).decode())


class StepClock:
    """Wall clock for the budget that jumps forward whenever a caller sleeps (no real waiting)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


@pytest.fixture
async def tight_pool(fake_exchanges):
    """One shared instance per venue and a weight budget so small that every request waits before signing.

    That wait is exactly where ccxt's own throttle suspends a call after the key is set and before
    `sign()`: the hazard the per-instance lock exists for.
    """
    clock = StepClock()
    budgets = RateBudgets(limits={"binance": 2, "binanceusdm": 2}, margin=1.0, clock=clock, sleep=clock.sleep)
    pool = ClientPool(fake_exchanges.origins, size=1, budgets=budgets)
    yield pool
    await pool.close()


async def test_two_users_orders_through_one_shared_instance_are_signed_with_their_own_keys(
    fake_exchanges, tight_pool
):
    book = fake_exchanges.books["binance"]
    for creds in (BINANCE_A, BINANCE_B):
        book.add_key(creds.api_key.reveal(), creds.secret.reveal(), balances={"USDT": "100000"})
    book.set_price("BTC/USDT", "50000")
    gateway = ExchangeGateway(tight_pool)

    async def place(creds: Credentials, n: int):
        return await gateway.create_order(
            "binance",
            creds,
            "BTC/USDT",
            "buy",
            "limit",
            amount=Decimal("0.01"),
            price=Decimal(str(1000 + n)),
            client_order_id=f"{creds.api_key.reveal()[0]}-{n}",
        )

    orders = await asyncio.gather(*(place(c, n) for n in range(8) for c in (BINANCE_A, BINANCE_B)))
    assert len(tight_pool.instances("binance")) == 2  # the keyless master + ONE shared signing instance
    assert (
        tight_pool.budgets.budgets()[("binance", urlsplit(fake_exchanges.origins["binance"]).netloc)].waits
        > 0
    )
    by_client_id = {o.client_order_id: o for o in book.open_orders(BINANCE_A.api_key.reveal())}
    by_client_id |= {o.client_order_id: o for o in book.open_orders(BINANCE_B.api_key.reveal())}
    assert len(orders) == len(by_client_id) == 16
    for client_id, order in by_client_id.items():
        owner = BINANCE_A if client_id.startswith("a") else BINANCE_B
        assert order.api_key == owner.api_key.reveal()
    signed = [r for r in book.requests if r.path == "/api/v3/order"]
    assert len(signed) == 16 and all(r.signature_valid for r in signed)


async def test_two_kraken_keys_share_instances_with_valid_signatures_and_increasing_nonces(fake_exchanges):
    book = fake_exchanges.books["kraken"]
    for creds in (KRAKEN_A, KRAKEN_B):
        book.add_key(creds.api_key.reveal(), creds.secret.reveal(), balances={"USDT": "1000"})
    pool = ClientPool(fake_exchanges.origins, size=2)
    gateway = ExchangeGateway(pool)
    try:
        results = await asyncio.gather(
            *(gateway.fetch_balance("kraken", c) for _ in range(6) for c in (KRAKEN_A, KRAKEN_B))
        )
    finally:
        await pool.close()
    assert all(r["USDT"].total == Decimal(1000) for r in results)
    private = [r for r in book.requests if r.path.endswith("/BalanceEx")]
    assert len(private) == 12 and all(r.signature_valid for r in private)
    for creds in (KRAKEN_A, KRAKEN_B):
        nonces = [int(r.params["nonce"]) for r in private if r.api_key == creds.api_key.reveal()]
        assert nonces == sorted(set(nonces)) and len(nonces) == 6


async def test_credentials_and_signed_request_are_wiped_from_the_instance_after_the_call(
    fake_exchanges, tight_pool
):
    book = fake_exchanges.books["binance"]
    book.add_key(BINANCE_A.api_key.reveal(), BINANCE_A.secret.reveal())
    async with tight_pool.bound("binance", BINANCE_A) as exchange:
        await exchange.fetch_balance()
        assert exchange.apiKey == BINANCE_A.api_key.reveal()
    assert exchange.apiKey == "" and exchange.secret == ""
    assert exchange.last_request_headers is None and exchange.last_request_url is None
    assert exchange.last_json_response is None


async def test_markets_load_once_per_venue_and_are_shared_by_reference(fake_exchanges):
    book = fake_exchanges.books["binance"]
    for creds in (BINANCE_A, BINANCE_B):
        book.add_key(creds.api_key.reveal(), creds.secret.reveal())
    pool = ClientPool(fake_exchanges.origins, size=3)
    gateway = ExchangeGateway(pool)
    try:
        gate, inside = asyncio.Event(), []

        async def hold(creds: Credentials):
            async with pool.bound("binance", creds) as exchange:
                inside.append(exchange)
                await gate.wait()

        holders = [asyncio.create_task(hold(c)) for c in (BINANCE_A, BINANCE_B, BINANCE_A)]
        while len(inside) < 3:
            await asyncio.sleep(0.01)
        assert len({id(exchange) for exchange in inside}) == 3  # busy instances are not shared
        gate.set()
        await asyncio.gather(*holders)
        await gateway.fetch_balance("binance", BINANCE_A)
        instances = pool.instances("binance")
        assert len(instances) == 4
        assert all(inst.markets is instances[0].markets for inst in instances)
        assert all(inst.session is instances[0].session for inst in instances)
        assert all(inst.ssl_context is instances[0].ssl_context for inst in instances)
        assert len([r for r in book.requests if r.path == "/api/v3/exchangeInfo"]) == 1
    finally:
        await pool.close()
    assert pool.instances("binance") == []


async def test_many_accounts_never_create_more_than_the_pool_size_of_instances(fake_exchanges):
    book = fake_exchanges.books["binance"]
    accounts = [Credentials(f"{i:064d}", f"s{i:063d}") for i in range(30)]
    for i, creds in enumerate(accounts):
        book.add_key(creds.api_key.reveal(), creds.secret.reveal(), balances={"USDT": str(100 + i)})
    pool = ClientPool(fake_exchanges.origins, size=4)
    gateway = ExchangeGateway(pool)
    try:
        balances = await asyncio.gather(*(gateway.fetch_balance("binance", c) for c in accounts))
        assert len(pool.instances("binance")) <= 1 + 4
    finally:
        await pool.close()
    assert [b["USDT"].total for b in balances] == [Decimal(100 + i) for i in range(30)]
