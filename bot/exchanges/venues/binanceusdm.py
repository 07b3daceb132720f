"""Binance USD-M futures (`binanceusdm`): Binance's rules (`binance.BinanceFamily`) on a futures account.

What differs from spot: positions instead of coins (shorts, reduce-only closes, no cost orders), ccxt symbols
`BTC/USDT:USDT`, a 2,400/min weight budget with ccxt costs at face value, the `enableFutures` permission, and
the uid read from the spot account endpoint (the futures account endpoints carry none).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bot.exchanges.failures import Action, ExchangeFailure
from bot.exchanges.keys import KeyRejected
from bot.exchanges.venues.base import OnceCall
from bot.exchanges.venues.binance import BinanceFamily, weight_rule

MSG_FUTURES_DISABLED = (
    "This key cannot trade futures. Edit it on Binance, tick 'Enable Futures', then send it again."
)


@dataclass(frozen=True, kw_only=True)
class BinanceFutures(BinanceFamily):
    def market_symbol(self, symbol: str) -> str:
        """USD-M futures markets are `BTC/USDT:USDT` in ccxt; users write `BTC/USDT`."""
        if ":" not in symbol and "/" in symbol:
            return f"{symbol}:{symbol.split('/')[1]}"
        return symbol

    def reduce_only_params(self, reduce_only: bool) -> dict[str, object] | None:
        return {"reduceOnly": True} if reduce_only else None

    async def explain_balance_rejection(self, once: OnceCall, failure: ExchangeFailure, *, testnet: bool) -> None:
        """A valid key without futures permission gets the same -2015 as a wrong key: ask `apiRestrictions`."""
        if failure.action is not Action.AUTH or testnet:
            return
        try:
            restrictions = await once(lambda ex: ex.sapi_get_account_apirestrictions())
        except ExchangeFailure:
            return
        if isinstance(restrictions, dict) and restrictions.get("enableFutures") is False:
            raise KeyRejected("futures_disabled", MSG_FUTURES_DISABLED)

    async def read_owner_id(self, once: OnceCall, balance_info: Any) -> str | None:
        # The futures balance carries no uid: always ask the spot account endpoint with the same key.
        return await super().read_owner_id(once, None)


ADAPTER = BinanceFutures(
    id="binanceusdm",
    name="Binance Futures",
    key_guide=(
        "On binance.com open Account → API Management → Create API → <b>System generated</b> (HMAC).\n"
        "Tick <b>Enable Futures</b> (and reading); leave <b>Enable Withdrawals</b> OFF.\n"
        "Restrict access to trusted IPs (your server's address)."
    ),
    futures=True,
    can_short=True,
    # VIP 0 taker (maker 0.02 %).
    entry_taker_fee=Decimal("0.0005"),
    unsupported={
        "rebalance": (
            "Rebalance needs spot holdings: it buys coins and sells them back to their target weights, and a "
            "Binance Futures account holds positions, not coins (its orders would open leveraged positions). "
            "Allocate it on a Binance Spot or Kraken account."
        ),
    },
    ccxt_id="binanceusdm",
    ccxt_options={"fetchCurrencies": False, "warnOnFetchOpenOrdersWithoutSymbol": False},
    # ccxt's USD-M costs are the venue's weights; two endpoints' ccxt cost understates it (ccxt 4.5.90).
    weight=weight_rule(
        limit_per_minute=2_400,
        weight_per_cost=1.0,
        overrides={("fapiPrivateV3", "account"): 5, ("fapiPrivateV3", "positionRisk"): 5},
    ),
    # GET /fapi/v1/openOrders: one symbol, all symbols.
    open_orders_weights=(1, 40),
    # listenKeys (`POST/PUT /fapi/v1/listenKey`) on the `/private` stream, several per connection.
    user_stream="binanceusdm-listenkey",
    stream_url="wss://fstream.binance.com/private/stream",
    stream_testnet_url="wss://fstream.binancefuture.com/private/stream",
    trading_permission="enableFutures",
    trading_refusal=("futures_disabled", MSG_FUTURES_DISABLED),
)
