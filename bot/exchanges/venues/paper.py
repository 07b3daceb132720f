"""Paper (`paper:<source>`): a simulated account that trades on a real venue's public prices, with no key.

A Paper account is funded by Strata (10,000 in the source's quote unless the user says otherwise) and its
orders are filled by `bot.exchanges.paper` against the source venue's live public ticker, read through the
same market-data cache as every live strategy (so a Paper account adds no requests of its own), with the
source's taker fee, precision and minimums. No signed request is ever sent for it.

One adapter per price source (`paper:binance`, `paper:kraken`): everything a strategy asks of a venue (its
markets on buttons, its quote for rebalances, its fee for the risk gate, the strategies it refuses) is the
source's. The stored venue id carries the source, so an account's prices survive restarts; its labels are
`paper`, `paper-2`… whatever the source, and the chat names it "Paper (Binance Spot prices)".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from bot.exchanges.venues.base import VenueAdapter

#: The family of every simulated venue id (`paper:binance`) and the base of their account labels.
PAPER = "paper"
#: What a new Paper account holds, in the source's quote currency, unless the user names an amount.
DEFAULT_FUNDS = Decimal(10_000)
#: The most a Paper account can be funded with (a typo of ten zeros would make every figure unreadable).
MAX_FUNDS = Decimal(10_000_000)
#: How every Paper message is marked, so nobody mistakes it for real money.
MARK = "📝 Paper"

_CLIENT_ID = re.compile(r"^[\x21-\x7e]{1,64}$")


@dataclass(frozen=True, kw_only=True)
class Paper(VenueAdapter):
    #: The asset a new account is funded in (the source's valuation quote: USDT on Binance, USD on Kraken).
    funding_asset: str = "USDT"

    def is_valid_client_order_id(self, value: str) -> bool:
        return bool(_CLIENT_ID.match(value))


def paper_id(source: str) -> str:
    return f"{PAPER}:{source}"


def paper_of(source: VenueAdapter) -> Paper:
    """The Paper venue trading on `source`'s public prices: the source's market knowledge, none of its keys."""
    return Paper(
        id=paper_id(source.id),
        name=f"{MARK} ({source.name} prices)",
        key_guide="",
        key_names=("", ""),
        connectable=False,
        simulated=True,
        price_source=source.id,
        label_base=PAPER,
        futures=False,
        can_short=False,
        order_types=("market", "limit"),
        entry_taker_fee=source.entry_taker_fee,
        unsupported=dict(source.unsupported),
        ccxt_id=source.ccxt_id,
        owner_family=paper_id(source.id),
        owner_name="Paper",
        names_owner=False,
        # Everything is local: one call lists every open order, closed orders too, and an order carries its fee.
        open_orders_per_symbol=False,
        closed_orders_in_one_call=True,
        fills_by_trade=False,
        cost_buy_needs_amount=False,
        client_id_param="clientOrderId",
        rebalance_quotes=source.rebalance_quotes,
        default_markets=source.default_markets,
        valuation_quote=source.valuation_quote,
        funding_asset=source.valuation_quote,
    )

