"""Connect, list and disconnect exchange accounts — the product's security promise, without Telegram.

Connecting is fail-closed: a key is stored only after it authenticated and was proven unable to withdraw, and
it is stored only as ciphertext sealed by the vault. Disconnecting stops the account's strategies, then shreds
the data key before deleting the rows, so old backups of the main database become useless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

from bot.exchanges.key_check import KeyChecker, KeyRejected, check_api_key_format, check_format
from bot.exchanges.rate_budget import charged_to
from bot.secret import Credentials
from bot.services.errors import UserError
from bot.vault import CredentialUnreadable, Vault
from bot.venues import CONNECTABLE, next_label, venue_name
from storage.models import Account
from storage.orders import LIVE
from storage.store import Store

logger = logging.getLogger(__name__)

STABLE = {"USDT", "USDC", "USD", "ZUSD", "BUSD", "FDUSD", "DAI", "TUSD"}
BALANCE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class AssetValue:
    asset: str
    amount: Decimal
    value: Decimal | None  # in the venue's main stable quote, when known


@dataclass(frozen=True)
class AccountView:
    id: int
    venue: str
    venue_name: str
    label: str
    status: str
    testnet: bool
    permissions: tuple[str, ...]
    balances: tuple[AssetValue, ...] | None  # None: could not be fetched now
    note: str | None = None


@dataclass(frozen=True)
class Connected:
    account: AccountView
    warnings: tuple[str, ...]


class AccountService:
    def __init__(
        self,
        store: Store,
        vault: Vault,
        gateway,
        *,
        stop_account_strategies: Callable[[int], Awaitable[object]] | None = None,
        max_accounts: int | None = None,
    ) -> None:
        self._store = store
        self._max_accounts = max_accounts  # per user (STRATA_MAX_ACCOUNTS_PER_USER); None: no limit
        self._vault = vault
        self._gateway = gateway
        self._checker = KeyChecker(gateway)
        self._stop_strategies = stop_account_strategies

    @staticmethod
    def check_key_format(venue: str, api_key: str, secret: str | None = None) -> None:
        """Reject what can never be a valid key for `venue`, before any network call.

        Called with the API key alone as soon as it arrives (so a typo is caught before the secret is sent),
        then with both.
        """
        try:
            if secret is None:
                check_api_key_format(venue, api_key)
            else:
                check_format(venue, api_key, secret)
        except KeyRejected as exc:
            raise UserError(exc.user_message) from None

    async def connect(self, user_id: int, chat_id: int, venue: str, credentials: Credentials) -> Connected:
        """Validate the key against the exchange and store it sealed; nothing is stored on any doubt."""
        if venue not in CONNECTABLE:
            raise UserError("Pick one of the exchanges offered: Binance Spot, Binance Futures or Kraken.")
        self.check_key_format(venue, credentials.api_key.reveal(), credentials.secret.reveal())
        await self.check_room(user_id)
        try:
            check = await self._checker.check_key(venue, credentials)
        except KeyRejected as exc:
            raise UserError(exc.user_message) from None
        await self._store.users.upsert(user_id, chat_id)
        label = next_label(venue, await self._store.accounts.labels_for_user(user_id))
        async with self._store.db.transaction() as tx:
            account_id = await self._store.accounts.create(
                tx,
                user_id=user_id,
                venue=venue,
                label=label,
                testnet=check.testnet,
                permissions=tuple(check.permissions),
            )
            sealed = await self._vault.seal(
                user_id=user_id, account_id=account_id, venue=venue, credentials=credentials
            )
            await self._store.accounts.store_credential(tx, sealed)
        logger.info("user %s connected %s account %s (%s)", user_id, venue, account_id, label)
        account = await self._store.accounts.get(account_id)
        balances = await self._valued(venue, check.balances)
        return Connected(account=_view(account, balances), warnings=tuple(check.warnings))

    async def check_room(self, user_id: int) -> None:
        """Refuse another account past the per-user limit (each account's polling costs shared budget)."""
        if self._max_accounts is None:
            return
        if len(await self._store.accounts.labels_for_user(user_id)) >= self._max_accounts:
            raise UserError(
                f"You already have {self._max_accounts} connected accounts, the most this bot allows per user. "
                "/disconnect one first."
            )

    async def list_accounts(self, user_id: int, *, with_balances: bool = True) -> list[AccountView]:
        accounts = await self._store.accounts.list_for_user(user_id)
        if not with_balances:
            return [_view(a, None) for a in accounts]
        # One user's /accounts, however many accounts and however often, reads only within its fair share of
        # the venue's shared budget; a balance it cannot get in time shows as "unavailable right now".
        with charged_to(f"user:{user_id}"):
            return list(await asyncio.gather(*(self._view_with_balance(a) for a in accounts)))

    async def owned(self, user_id: int, account_id: int) -> Account:
        """The account if the caller owns it; the same answer for "not yours" and "does not exist"."""
        account = await self._store.accounts.get_owned(user_id, account_id)
        if account is None:
            raise UserError("That account is not (or no longer) connected.")
        return account

    async def by_label(self, user_id: int, label: str) -> Account | None:
        return await self._store.accounts.by_label(user_id, label)

    async def credentials(self, account: Account) -> Credentials:
        sealed = await self._store.accounts.credential(account.id)
        if sealed is None:
            raise CredentialUnreadable(f"account {account.id} has no stored credential")
        return await self._vault.unseal(sealed, user_id=account.user_id, venue=account.venue)

    async def rename(self, user_id: int, account_id: int, new_label: str) -> Account:
        account = await self.owned(user_id, account_id)
        label = new_label.strip()
        if not label or len(label) > 32 or not all(c.isalnum() or c in "-_" for c in label):
            raise UserError("A label is 1–32 letters, digits, '-' or '_'.")
        if label in CONNECTABLE and label != account.venue:
            raise UserError("A label cannot be another exchange's id.")
        if label in await self._store.accounts.labels_for_user(user_id) and label != account.label:
            raise UserError(f"You already have an account labelled {label}.")
        await self._store.accounts.rename(user_id, account_id, label)
        return await self.owned(user_id, account_id)

    async def disconnect(self, user_id: int, account_id: int) -> Account:
        """Stop the account's strategies (cancelling their orders), shred the data key, delete the rows."""
        account = await self.owned(user_id, account_id)
        if self._stop_strategies is not None:
            await self._stop_strategies(account.id)
        left = await self._store.orders.in_states(LIVE, account_id=account.id)
        if left:
            # Shredding the key now would leave these orders on the exchange, out of our reach for good.
            raise UserError(
                f"I could not cancel {len(left)} open order(s) on {account.label}: the exchange did not answer. "
                "Its strategies are stopped, but nothing was deleted: try /disconnect again in a moment (or cancel "
                "the orders on the exchange)."
            )
        sealed = await self._store.accounts.credential(account.id)
        if sealed is not None:
            await self._vault.shred(sealed.dek_id)
        async with self._store.db.transaction() as tx:
            await self._store.accounts.delete(tx, account.id)
        logger.info("user %s disconnected account %s", user_id, account.id)
        return account

    async def _view_with_balance(self, account: Account) -> AccountView:
        if account.status != "active":
            return _view(account, None, note="key rejected by the exchange: /disconnect it and connect a new key")
        try:
            creds = await self.credentials(account)
            balances = await asyncio.wait_for(
                self._gateway.fetch_balance(account.venue, creds), timeout=BALANCE_TIMEOUT_S
            )
        except CredentialUnreadable:
            return _view(account, None, note="stored key unreadable: /disconnect it and connect again")
        except Exception as exc:  # an outage must not break /accounts
            logger.info("balance of account %s unavailable: %s", account.id, type(exc).__name__)
            return _view(account, None, note="balance unavailable right now")
        totals = {asset: line.total for asset, line in balances.items()}
        return _view(account, await self._valued(account.venue, totals))

    async def _valued(self, venue: str, balances: dict[str, Decimal]) -> tuple[AssetValue, ...]:
        """Value the non-zero assets in the venue's stable quote; top 5 by value (unknown values last)."""
        items = [(a, amt) for a, amt in balances.items() if amt > 0]
        quote = "USD" if venue == "kraken" else "USDT"

        async def value(asset: str, amount: Decimal) -> AssetValue:
            if asset in STABLE:
                return AssetValue(asset, amount, amount)
            try:
                ticker = await asyncio.wait_for(self._gateway.fetch_ticker(venue, f"{asset}/{quote}"), 5)
                price = ticker.last
            except Exception:  # no such market, or an outage: show the amount without a value
                price = None
            return AssetValue(asset, amount, (amount * price).quantize(Decimal("0.01")) if price else None)

        valued = await asyncio.gather(*(value(a, amt) for a, amt in items))
        valued.sort(key=lambda v: (v.value is None, -(v.value or 0), v.asset))
        return tuple(valued[:5])


def _view(account: Account, balances, note: str | None = None) -> AccountView:
    return AccountView(
        id=account.id,
        venue=account.venue,
        venue_name=venue_name(account.venue),
        label=account.label,
        status=account.status,
        testnet=account.testnet,
        permissions=account.permissions,
        balances=balances,
        note=note or ("testnet: withdraw permission could not be checked" if account.testnet else None),
    )
