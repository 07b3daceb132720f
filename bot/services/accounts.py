"""Connect, list and disconnect exchange accounts — the product's security promise, without Telegram.

Connecting is fail-closed: a key is stored only after it authenticated and was proven unable to withdraw, and
it is stored only as ciphertext sealed by the vault. Disconnecting stops the account's strategies, then shreds
the data key before deleting the rows, so old backups of the main database become useless.

One API key is connected once (compared by its keyed fingerprint, never by value), and so is one exchange
account per venue (its keyed `owner_ref`: two Strata accounts on one wallet would promise one balance to two
budgets; Binance spot and USD-M are separate wallets, so each may be connected once). An account whose key was
rejected (or whose stored key is unreadable) can get a new key that passes every check of /connect and is
shown to belong to the same exchange account — its strategies are kept — or be disconnected: its orders that
may still be open on the exchange are listed for the user to cancel there, and the key is shredded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from bot.exchanges.errors import Action, ExchangeFailure
from bot.exchanges.key_check import KeyCheck, KeyChecker, KeyRejected, check_api_key_format, check_format
from bot.exchanges.paper import PaperCredentials
from bot.exchanges.rate_budget import charged_to
from bot.exchanges.venues import adapter, adapters, connectable, find, paper_venues
from bot.exchanges.venues.paper import DEFAULT_FUNDS, MAX_FUNDS
from bot.formatting import money
from bot.redaction import register_secret
from bot.secret import Credentials
from bot.services.audit import Attempt, AuditLog
from bot.services.errors import UserError
from bot.services.positions import PositionView, stored_position_view
from bot.vault import CredentialUnreadable, Vault
from bot.venues import next_label, reserved_labels, venue_name
from storage.accounts import (
    ACTIVE,
    KEY_REJECTED,
    KEY_REMOVED,
    KEY_UNREADABLE,
    KEY_UNSAFE,
    KeyAlreadyConnected,
    OwnerAlreadyConnected,
)
from storage.models import Account, BalanceSnapshot, Order, StoredAsset, StoredPosition, utcnow
from storage.orders import LIVE, UNCONFIRMED
from storage.store import Store
from storage.strategies import PAUSED

logger = logging.getLogger(__name__)

STABLE = {"USDT", "USDC", "USD", "ZUSD", "BUSD", "FDUSD", "DAI", "TUSD"}
BALANCE_TIMEOUT_S = 10.0
#: The most one account's refresh (balance, prices, positions) may take in /accounts: a slow or failing venue
#: never holds the others longer, and its stored figures stay on screen with the reason.
REFRESH_TIMEOUT_S = 8.0
#: How many assets /accounts lists per account (the largest by value); /balance lists them all.
TOP_ASSETS = 5


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
    balances: tuple[AssetValue, ...] | None  # None: could not be fetched now (nor is any stored)
    note: str | None = None
    #: Futures accounts: the open positions as the venue reports them (None: not read).
    positions: tuple[PositionView, ...] | None = None
    #: When `balances` were fetched: None when fetched just now (or none are known).
    as_of: datetime | None = None
    #: Why fetching them now failed (the stored figures, if any, are shown instead).
    refresh_error: str | None = None


@dataclass(frozen=True)
class Connected:
    account: AccountView
    warnings: tuple[str, ...]
    #: After a key replacement: the account's strategies that stay paused until the user resumes them.
    paused: tuple[int, ...] = ()


@dataclass(frozen=True)
class LeftOpen:
    """An order of a disconnected account that may still be open on the exchange (the user must cancel it)."""

    symbol: str
    side: str
    type: str
    amount: Decimal | None
    price: Decimal | None
    client_order_id: str
    exchange_order_id: str | None


@dataclass(frozen=True)
class Disconnected:
    account: Account
    left_open: tuple[LeftOpen, ...]
    #: The stop summary of each strategy the disconnect stopped (a `StopSummary`, as /stop gives one).
    stopped: tuple = ()


#: The error of an order abandoned because the account's key could not cancel it (by the account's status).
ABANDONED = {
    KEY_REJECTED: "abandoned: key rejected, the account was disconnected (it may still be open on the exchange)",
    KEY_UNREADABLE: "abandoned: key unreadable, the account was disconnected (it may still be open on the exchange)",
}
#: How many of an account's orders the new key must see to prove it is the same exchange account.
_PROOF_ORDERS = 3
#: Start-up backfill of `owner_ref`: at most this many accounts per start (one weight-20 call each), spaced out.
OWNER_BACKFILL_LIMIT = 20
OWNER_BACKFILL_PAUSE_S = 1.0


async def _nothing_cached(account_id: int) -> None:
    """No engine in this process keeps credentials (tests of the service alone)."""


class AccountService:
    def __init__(
        self,
        store: Store,
        vault: Vault,
        gateway,
        *,
        stop_account_strategies: Callable[..., Awaitable[tuple]] | None = None,
        strategies_to_stop: Callable[[int], Awaitable[list[str]]] | None = None,
        forget_credentials: Callable[[int], Awaitable[None]] | None = None,
        max_accounts: int = 10,
    ) -> None:
        self._store = store
        self._vault = vault
        self._gateway = gateway
        self._checker = KeyChecker(gateway)
        self._stop_strategies = stop_account_strategies
        self._strategies_to_stop = strategies_to_stop
        self._forget_credentials = forget_credentials or _nothing_cached
        self.max_accounts = max_accounts
        self._audit = AuditLog(store)

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
            raise UserError(exc.user_message, reason=key_refusal(exc.reason)) from None

    async def connect(self, user_id: int, chat_id: int, venue: str, credentials: Credentials) -> Connected:
        """Validate the key against the exchange and store it sealed; nothing is stored on any doubt.

        Audited (connect, ok or refused with why), never with the key: the entry names the venue and the label.
        """
        async with self._audit.attempt(
            "connect", actor_id=user_id, user_id=user_id, target=f"{venue_name(venue)} account"
        ) as attempt:
            return await self._connect(attempt, user_id, chat_id, venue, credentials)

    async def _connect(
        self, attempt: Attempt, user_id: int, chat_id: int, venue: str, credentials: Credentials
    ) -> Connected:
        if venue not in connectable():
            *others, last = (venue_name(v) for v in connectable())
            raise UserError(
                f"Pick one of the exchanges offered: {', '.join(others)} or {last}.", reason="not an exchange offered"
            )
        await self.check_can_connect(user_id)
        self.check_key_format(venue, credentials.api_key.reveal(), credentials.secret.reveal())
        check = await self._check(venue, credentials)
        # Only after the key pair proved itself: nobody learns whether a key is connected without its secret.
        key_ref = await self._key_ref(venue, credentials)
        await self._refuse_connected_key(user_id, key_ref, None)
        owner_ref = await self._owner_ref(venue, check)
        await self._store.users.upsert(user_id, chat_id)
        label = next_label(venue, await self._store.accounts.labels_for_user(user_id))
        try:
            async with self._store.db.transaction() as tx:
                account_id = await self._store.accounts.create(
                    tx,
                    user_id=user_id,
                    venue=venue,
                    label=label,
                    testnet=check.testnet,
                    permissions=tuple(check.permissions),
                    key_ref=key_ref,
                    owner_ref=owner_ref,
                )
                sealed = await self._vault.seal(
                    user_id=user_id, account_id=account_id, venue=venue, credentials=credentials
                )
                await self._store.accounts.store_credential(tx, sealed)
                attempt.target = _account_target(label, venue)
                await attempt.done(detail=_permissions_words(check.permissions), tx=tx)
        except KeyAlreadyConnected:  # the same key connected meanwhile by a concurrent /connect
            raise UserError(_ALREADY_CONNECTED, reason=_KEY_CONNECTED) from None
        except OwnerAlreadyConnected as exc:  # checked only now: the key passed the exchange's checks
            raise UserError(_owner_connected_message(user_id, venue, exc.holder), reason=_OWNER_CONNECTED) from None
        logger.info("user %s connected %s account %s (%s)", user_id, venue, account_id, label)
        account = await self._store.accounts.get(account_id)
        balances = await self._valued(venue, check.balances)
        await self._store.balances.save(account.id, _stored(balances), None, utcnow())
        return Connected(account=_view(account, balances[:TOP_ASSETS]), warnings=tuple(check.warnings))

    async def connect_paper(self, user_id: int, chat_id: int, venue: str, funds: Decimal | None = None) -> Connected:
        """Open a Paper account on `venue`'s prices (`paper:binance`…), funded with `funds` of its quote.

        No key, so nothing to check or encrypt: the account and its opening balance are written in one
        transaction, and its orders are filled by `bot.exchanges.paper` from then on (audited as a connect)."""
        async with self._audit.attempt("connect", actor_id=user_id, user_id=user_id, target="Paper account") as attempt:
            return await self._connect_paper(attempt, user_id, chat_id, venue, funds)

    async def _connect_paper(
        self, attempt: Attempt, user_id: int, chat_id: int, venue: str, funds: Decimal | None
    ) -> Connected:
        known = find(venue)
        if known is None or not known.simulated:
            *others, last = (v.market_venue for v in paper_venues())
            raise UserError(
                f"Pick the prices a Paper account trades on: {', '.join(others)} or {last}.",
                reason="not a Paper price source",
            )
        await self.check_can_connect(user_id)
        funds = DEFAULT_FUNDS if funds is None else funds
        if not funds.is_finite() or not 0 < funds <= MAX_FUNDS:
            raise UserError(
                f"A Paper account starts with more than 0 and at most {money(MAX_FUNDS, known.funding_asset)}.",
                reason="funds out of range",
            )
        funds = funds.quantize(Decimal("0.01"))
        await self._store.users.upsert(user_id, chat_id)
        label = next_label(venue, await self._store.accounts.labels_for_user(user_id))
        async with self._store.db.transaction() as tx:
            account_id = await self._store.accounts.create(
                tx, user_id=user_id, venue=venue, label=label, permissions=("paper",)
            )
            await self._store.paper.fund(tx, account_id, known.funding_asset, funds)
            attempt.target = _account_target(label, venue)
            await attempt.done(detail=f"simulated {money(funds, known.funding_asset)}", tx=tx)
        logger.info("user %s opened paper account %s (%s) on %s", user_id, account_id, label, known.market_venue)
        account = await self._store.accounts.get(account_id)
        balances = await self._valued(venue, {known.funding_asset: funds})
        await self._store.balances.save(account.id, _stored(balances), None, utcnow())
        return Connected(account=_view(account, balances[:TOP_ASSETS]), warnings=())

    async def check_can_connect(self, user_id: int) -> None:
        """Refuse a new account beyond STRATA_MAX_ACCOUNTS_PER_USER (asked before the key is even sent)."""
        if await self._store.accounts.count_for_user(user_id) >= self.max_accounts:
            raise UserError(
                f"You already have {self.max_accounts} connected accounts, the most this bot allows. "
                "/disconnect one first, or give an existing account a new key with /connect replace <label>.",
                reason="account limit reached",
            )

    async def replace_key(self, user_id: int, account_id: int, credentials: Credentials) -> Connected:
        """Give an account a new key, keeping its strategies; nothing changes on any doubt.

        The new key passes every check of /connect (format, authentication, withdrawals off, trading allowed)
        and must belong to the same exchange account: on Binance the same uid as the account's (recorded at
        /connect); otherwise (Kraken, or an account connected before uids were recorded) it must see the
        account's own orders by their client ids, or the account has none. Then the key is sealed with a fresh
        data key, the old data key is shredded and the account is active again; its strategies stay paused.
        Audited (replace-key, ok or refused with why), never with the key.
        """
        async with self._audit.attempt(
            "replace-key", actor_id=user_id, user_id=user_id, target=f"account #{account_id}"
        ) as attempt:
            return await self._replace_key(attempt, user_id, account_id, credentials)

    async def _replace_key(
        self, attempt: Attempt, user_id: int, account_id: int, credentials: Credentials
    ) -> Connected:
        account = await self.owned(user_id, account_id)
        attempt.target = _account_target(account.label, account.venue)
        venue = account.venue
        self.check_key_format(venue, credentials.api_key.reveal(), credentials.secret.reveal())
        check = await self._check(venue, credentials)
        key_ref = await self._key_ref(venue, credentials)
        await self._refuse_connected_key(user_id, key_ref, account.id)
        owner_ref = await self._owner_ref(venue, check)
        await self._prove_same_owner(account, credentials, owner_ref)
        old = await self._store.accounts.credential(account.id)
        sealed = await self._vault.seal(user_id=user_id, account_id=account.id, venue=venue, credentials=credentials)
        try:
            async with self._store.db.transaction() as tx:
                if old is None:
                    await self._store.accounts.store_credential(tx, sealed)
                await self._store.accounts.replace_credential(
                    tx, sealed, key_ref=key_ref, owner_ref=owner_ref, permissions=tuple(check.permissions)
                )
                await attempt.done(detail=_permissions_words(check.permissions), tx=tx)
        except KeyAlreadyConnected:
            await self._vault.shred(sealed.dek_id)
            raise UserError(_ALREADY_CONNECTED, reason=_KEY_CONNECTED) from None
        except BaseException:
            await self._vault.shred(sealed.dek_id)
            raise
        if old is not None and old.dek_id != sealed.dek_id:
            await self._vault.shred(old.dek_id)  # the old key can never be opened again, in any backup
        await self._forget_credentials(account.id)
        paused = await self._store.strategies.list_for_account(account.id, (PAUSED,))
        logger.info("user %s replaced the key of account %s", user_id, account.id)
        fresh = await self._store.accounts.get(account.id)
        balances = await self._valued(venue, check.balances)
        await self._store.balances.save(account.id, _stored(balances), None, utcnow())
        return Connected(
            account=_view(fresh, balances[:TOP_ASSETS]), warnings=tuple(check.warnings),
            paused=tuple(s.id for s in paused),
        )

    async def left_open(self, user_id: int, account_id: int) -> tuple[LeftOpen, ...]:
        """The account's orders that may still be open on the exchange (shown before a suspended disconnect)."""
        account = await self.owned(user_id, account_id)
        return tuple(_left(o) for o in await self._store.orders.in_states(LIVE, account_id=account.id))

    async def disconnect_suspended(self, user_id: int, account_id: int) -> Disconnected:
        """Disconnect an account whose key is rejected or unreadable: shred the key, abandon its orders.

        Its key cannot cancel anything, so its live orders end here (`ABANDONED`), releasing their budget
        reservations, and are returned for the user to cancel on the exchange; the data key is shredded first,
        then the rows go. An account whose key works again takes the normal /disconnect instead. Audited
        (disconnect); the entry outlives the account.
        """
        async with self._audit.attempt(
            "disconnect", actor_id=user_id, user_id=user_id, target=f"account #{account_id}"
        ) as attempt:
            return await self._disconnect_suspended(attempt, user_id, account_id)

    async def _disconnect_suspended(self, attempt: Attempt, user_id: int, account_id: int) -> Disconnected:
        account = await self.owned(user_id, account_id)
        attempt.target = _account_target(account.label, account.venue)
        if account.status in (ACTIVE, KEY_UNSAFE):
            raise UserError(
                f"The key of {account.label} works again: send /disconnect {account.label} again to stop its "
                "strategies and cancel their orders first.",
                reason="the key works again",
            )
        stopped = () if self._stop_strategies is None else await self._stop_strategies(account.id, cancel=False)
        left = tuple(_left(o) for o in await self._store.orders.in_states(LIVE, account_id=account.id))
        await self._forget_credentials(account.id)
        sealed = await self._store.accounts.credential(account.id)
        if sealed is not None:
            await self._vault.shred(sealed.dek_id)
        error = ABANDONED.get(account.status, ABANDONED[KEY_REJECTED])
        async with self._store.db.transaction() as tx:
            await self._store.orders.abandon_live(tx, account.id, error)
            await self._store.accounts.delete(tx, account.id)
            await attempt.done(
                detail=f"the key did not work; {_stopped_words(len(stopped))}; key destroyed; "
                f"{len(left)} order(s) left on the exchange",
                tx=tx,
            )
        logger.info(
            "user %s disconnected suspended account %s; %d order(s) left on the exchange", user_id, account.id,
            len(left),
        )
        return Disconnected(account=account, left_open=left, stopped=tuple(stopped))

    async def remove_key(self, account_id: int, *, abandon: str | None = None) -> None:
        """The service is closing (`wind-down`): shred the account's data key and mark it `key_removed`, keeping
        the account, its strategies and its history. Its strategies are stopped and its orders settled first (the
        caller); `abandon`: its key cannot cancel, so its live orders end here with this error. Idempotent: the
        data key is shredded before the rows change, so an interruption leaves nothing readable behind."""
        await self._forget_credentials(account_id)
        sealed = await self._store.accounts.credential(account_id)
        if sealed is not None:
            await self._vault.shred(sealed.dek_id)
        async with self._store.db.transaction() as tx:
            if abandon is not None:
                await self._store.orders.abandon_live(tx, account_id, abandon)
            await self._store.accounts.remove_key(tx, account_id)
        logger.info("account %s: key removed (wind-down)", account_id)

    async def backfill_fingerprints(self) -> int:
        """Fingerprint the keys of accounts connected before fingerprints existed (start-up; cheap, local)."""
        done = 0
        for account in await self._store.accounts.without_key_ref():
            if adapter(account.venue).simulated:  # a Paper account has no key to fingerprint
                continue
            try:
                creds = await self.credentials(account)
            except CredentialUnreadable:
                continue  # the engine reports it to the owner
            if await self._store.accounts.set_key_ref(account.id, await self._key_ref(account.venue, creds)):
                done += 1
            else:
                logger.warning("account %s holds an API key another account also holds", account.id)
        return done

    async def backfill_owners(self) -> int:
        """Record the Binance account (uid) of active accounts connected before it was recorded (start-up).

        Without it a replacement key could not be tied to the account, nor a second connection of the same
        exchange account refused. Best effort: one weight-20 call per account, a few per start and spaced out;
        an account whose read fails keeps waiting for the next start.
        """
        done = 0
        pending = await self._store.accounts.without_owner_ref([v.id for v in adapters() if v.names_owner])
        for n, account in enumerate(pending[:OWNER_BACKFILL_LIMIT]):
            if n:
                await asyncio.sleep(OWNER_BACKFILL_PAUSE_S)
            try:
                creds = await self.credentials(account)
                uid = await asyncio.wait_for(self._checker.owner_id(account.venue, creds), BALANCE_TIMEOUT_S)
            except Exception as exc:  # unreadable, unreachable: the next start tries again
                logger.info("account %s: exchange account not recorded (%s)", account.id, type(exc).__name__)
                continue
            if uid is None:
                logger.info("account %s: exchange account could not be read; next start tries again", account.id)
                continue
            owner_ref = await self._vault.fingerprint(f"owner:{adapter(account.venue).owner_family}", uid)
            await self._store.accounts.set_owner_ref(account.id, owner_ref)
            done += 1
        return done

    async def _check(self, venue: str, credentials: Credentials) -> KeyCheck:
        try:
            check = await self._checker.check_key(venue, credentials)
        except KeyRejected as exc:
            raise UserError(exc.user_message, reason=key_refusal(exc.reason)) from None
        register_secret(credentials.api_key)  # a real key from now on: never forgotten by the log scrubber
        register_secret(credentials.secret)
        return check

    async def _key_ref(self, venue: str, credentials: Credentials) -> str:
        return await self._vault.fingerprint(f"api-key:{venue}", credentials.api_key.reveal().strip())

    async def _owner_ref(self, venue: str, check: KeyCheck) -> str | None:
        if check.owner_id is None:
            return None
        return await self._vault.fingerprint(f"owner:{adapter(venue).owner_family}", check.owner_id)

    async def _refuse_connected_key(self, user_id: int, key_ref: str, replacing: int | None) -> None:
        holder = await self._store.accounts.by_key_ref(key_ref)
        if holder is None or holder.id == replacing:
            return
        if holder.user_id == user_id:
            raise UserError(
                f"This API key is already connected as {holder.label}. One key can be connected once: "
                "use that account, or create a separate key on the exchange.",
                reason=_KEY_CONNECTED,
            )
        raise UserError(_ALREADY_CONNECTED, reason=_KEY_CONNECTED)

    async def _prove_same_owner(self, account: Account, credentials: Credentials, owner_ref: str | None) -> None:
        """Refuse a key of another exchange account (by uid, else by the account's own orders)."""
        name = adapter(account.venue).owner_name
        if account.owner_ref is not None:
            if owner_ref is None:
                raise UserError(
                    f"I could not read which {name} account this key belongs to. Nothing was changed; please "
                    "try again in a minute.",
                    reason=_OWNER_UNCHECKED,
                )
            if owner_ref != account.owner_ref:
                raise UserError(
                    f"This key belongs to a different {name} account than {account.label}'s, so it cannot "
                    "replace its key (its strategies and orders live on the first one). Nothing was changed.",
                    reason=_OTHER_OWNER,
                )
            return
        # Only orders the exchange acknowledged prove anything: one whose send never got an answer is
        # "not found" by any key, of any account.
        live = [o for o in await self._store.orders.in_states(LIVE, account_id=account.id) if o.exchange_order_id]
        proof = live[:_PROOF_ORDERS] or await self._store.orders.latest_sent(account.id, _PROOF_ORDERS)
        if not proof and adapter(account.venue).names_owner:
            # Connected before uids were recorded (or its uid could not be read), and no order to compare: any
            # Binance key would pass. Kraken names no account at all, so there "no orders" is the design.
            raise UserError(
                f"I cannot check that this key belongs to the same {name} account as {account.label}: it was "
                "connected before Strata recorded which exchange account a key belongs to, and it has no orders "
                f"to compare. Nothing was changed. Send /disconnect {account.label}, then /connect the new key "
                "(strategies of the old account end with it).",
                reason=_OWNER_UNCHECKED,
            )
        for order in proof:
            try:
                found = await self._gateway.fetch_order_by_client_id(
                    account.venue, credentials, order.symbol, order.client_order_id
                )
            except ExchangeFailure:
                raise UserError(
                    f"I could not check that this key belongs to the same {name} account as {account.label}. "
                    "Nothing was changed; please try again in a minute.",
                    reason=_OWNER_UNCHECKED,
                ) from None
            if found is None:
                raise UserError(
                    f"This key cannot see {account.label}'s orders on {name}: it belongs to another account, so "
                    "it cannot replace its key. Nothing was changed.",
                    reason=_OTHER_OWNER,
                )

    async def list_accounts(self, user_id: int, *, with_balances: bool = True) -> list[AccountView]:
        """The accounts refreshed now (`refreshed_accounts`), or without balances (for pickers)."""
        if with_balances:
            return await self.refreshed_accounts(user_id)
        return [_view(a, None) for a in await self._store.accounts.list_for_user(user_id)]

    async def stored_accounts(self, user_id: int) -> list[AccountView]:
        """The accounts with their last fetched balances and positions, "as of" then; no exchange call.

        What /accounts shows at once, before `refreshed_accounts` answers.
        """
        accounts = await self._store.accounts.list_for_user(user_id)
        stored = await self._store.balances.for_accounts([a.id for a in accounts])
        return [_stored_view(a, stored.get(a.id)) for a in accounts]

    async def refreshed_accounts(self, user_id: int, account_ids: Collection[int] | None = None) -> list[AccountView]:
        """The accounts' (all, or these of the user's) balances and futures positions fetched now, at once, stored.

        Each account gets at most REFRESH_TIMEOUT_S, so one slow or failing venue never holds the others; an
        account that cannot be read now shows its stored figures with a short reason. One user's refreshes,
        however many and however often, read only within their fair share of each venue's budget.
        """
        accounts = await self._store.accounts.list_for_user(user_id)
        if account_ids is not None:
            accounts = [a for a in accounts if a.id in account_ids]
        stored = await self._store.balances.for_accounts([a.id for a in accounts])
        with charged_to(f"user:{user_id}"):
            return list(await asyncio.gather(*(self._refreshed(a, stored.get(a.id)) for a in accounts)))

    async def owned(self, user_id: int, account_id: int) -> Account:
        """The account if the caller owns it; the same answer for "not yours" and "does not exist"."""
        account = await self._store.accounts.get_owned(user_id, account_id)
        if account is None:
            raise UserError("That account is not (or no longer) connected.", reason="no such account")
        return account

    async def by_label(self, user_id: int, label: str) -> Account | None:
        return await self._store.accounts.by_label(user_id, label)

    async def credentials(self, account: Account) -> Credentials:
        if adapter(account.venue).simulated:  # no key: its book stands for it
            return PaperCredentials(account.id)
        sealed = await self._store.accounts.credential(account.id)
        if sealed is None:
            raise CredentialUnreadable(f"account {account.id} has no stored credential")
        creds = await self._vault.unseal(sealed, user_id=account.user_id, venue=account.venue)
        register_secret(creds.api_key)  # a real key: scrubbed from every log for the life of the process
        register_secret(creds.secret)
        return creds

    async def rename(self, user_id: int, account_id: int, new_label: str) -> Account:
        account = await self.owned(user_id, account_id)
        label = new_label.strip()
        if not label or len(label) > 32 or not all(c.isalnum() or c in "-_" for c in label):
            raise UserError("A label is 1–32 letters, digits, '-' or '_'.")
        if label in reserved_labels() and label not in (account.venue, adapter(account.venue).label):
            raise UserError("A label cannot be another exchange's id.")
        if label in await self._store.accounts.labels_for_user(user_id) and label != account.label:
            raise UserError(f"You already have an account labelled {label}.")
        await self._store.accounts.rename(user_id, account_id, label)
        return await self.owned(user_id, account_id)

    async def strategies_to_stop(self, user_id: int, account_id: int) -> list[str]:
        """The names of the strategies disconnecting this account would stop (for its confirmation)."""
        account = await self.owned(user_id, account_id)
        return [] if self._strategies_to_stop is None else await self._strategies_to_stop(account.id)

    async def disconnect(self, user_id: int, account_id: int) -> Disconnected:
        """Stop the account's strategies (cancelling their orders), shred the data key, delete the rows.

        Returns each stopped strategy's summary, taken before its rows go with the account. Audited
        (disconnect, ok or refused); the entry outlives the account.
        """
        async with self._audit.attempt(
            "disconnect", actor_id=user_id, user_id=user_id, target=f"account #{account_id}"
        ) as attempt:
            return await self._disconnect(attempt, user_id, account_id)

    async def _disconnect(self, attempt: Attempt, user_id: int, account_id: int) -> Disconnected:
        account = await self.owned(user_id, account_id)
        attempt.target = _account_target(account.label, account.venue)
        # A key that can withdraw still cancels (its strategies are paused, its orders left open until now).
        if account.status not in (ACTIVE, KEY_UNSAFE):  # its key cannot cancel: the confirmation lists what stays
            raise UserError(
                f"The key of {account.label} no longer works, so its orders cannot be cancelled from here: send "
                f"/disconnect {account.label} again to see which ones to cancel on the exchange.",
                reason="the key does not work",
            )
        stopped = () if self._stop_strategies is None else await self._stop_strategies(account.id)
        left = await self._store.orders.in_states(LIVE, account_id=account.id)
        if left:
            # Shredding the key now would leave these orders on the exchange, out of our reach for good.
            raise UserError(
                _orders_left_text(account.label, left),
                reason=f"{_stopped_words(len(stopped))}; {len(left)} order(s) not settled yet, key kept",
            )
        sealed = await self._store.accounts.credential(account.id)
        if sealed is not None:
            await self._vault.shred(sealed.dek_id)
        async with self._store.db.transaction() as tx:
            await self._store.accounts.delete(tx, account.id)
            gone = "simulated balances deleted" if adapter(account.venue).simulated else "key destroyed"
            await attempt.done(detail=f"{_stopped_words(len(stopped))}; {gone}", tx=tx)
        logger.info("user %s disconnected account %s", user_id, account.id)
        return Disconnected(account=account, left_open=(), stopped=tuple(stopped))

    async def valued_balances(self, user_id: int) -> list[AccountView]:
        """Every account with all its non-zero assets valued in its quote, as /accounts values them (for /balance)."""
        accounts = await self._store.accounts.list_for_user(user_id)
        with charged_to(f"user:{user_id}"):
            return list(await asyncio.gather(*(self._view_with_balance(a) for a in accounts)))

    async def _view_with_balance(self, account: Account) -> AccountView:
        """The account with every asset fetched now (stored for /accounts); "unavailable" on any failure."""
        if account.status != ACTIVE:
            return _view(account, None)
        try:
            balances, positions = await self._fetch(account)
        except CredentialUnreadable:
            return _view(account, None, note=_fix_note(account.label, KEY_UNREADABLE))
        except Exception as exc:  # an outage must not break /balance
            logger.info("balance of account %s unavailable: %s", account.id, type(exc).__name__)
            return _view(account, None, note="balance unavailable right now")
        return _view(account, balances, positions=positions)

    async def _refreshed(self, account: Account, stored: BalanceSnapshot | None) -> AccountView:
        """The account's top assets and positions fetched now; on failure its stored ones with the reason."""
        if account.status != ACTIVE:
            return _stored_view(account, stored)
        try:
            balances, positions = await asyncio.wait_for(self._fetch(account), REFRESH_TIMEOUT_S)
        except Exception as exc:  # an outage, a timeout, an unreadable key: /accounts still answers
            logger.info("refresh of account %s failed: %s", account.id, type(exc).__name__)
            return replace(_stored_view(account, stored), refresh_error=_refresh_reason(exc))
        return _view(account, balances[:TOP_ASSETS], positions=_position_views(positions))

    async def _fetch(self, account: Account) -> tuple[tuple[AssetValue, ...], tuple[StoredPosition, ...] | None]:
        """Fetch the account's balance (every asset, valued) and, on futures, its open positions; store them."""
        creds = await self.credentials(account)

        async def balances() -> tuple[AssetValue, ...]:
            lines = await asyncio.wait_for(self._gateway.fetch_balance(account.venue, creds), BALANCE_TIMEOUT_S)
            return await self._valued(account.venue, {asset: line.total for asset, line in lines.items()})

        async def positions() -> tuple[StoredPosition, ...] | None:
            if not adapter(account.venue).futures:
                return None
            rows = await asyncio.wait_for(self._gateway.fetch_positions(account.venue, creds), BALANCE_TIMEOUT_S)
            return tuple([await self._position(account.venue, row) for row in rows])

        valued, open_positions = await asyncio.gather(balances(), positions())
        await self._store.balances.save(account.id, _stored(valued), open_positions, utcnow())
        return valued, open_positions

    async def _position(self, venue: str, row) -> StoredPosition:
        """A venue's position row as shown: unsigned size with its side, and the market's step and tick."""
        try:
            market = await self._gateway.market(venue, row.symbol)
            step, tick = market.amount_step, market.price_tick
        except ExchangeFailure:
            step = tick = None
        side = row.side or ("long" if row.contracts > 0 else "short")
        return StoredPosition(
            symbol=row.symbol, side=side, size=abs(row.contracts), entry=row.entry_price, mark=row.mark_price,
            unrealised=row.unrealized_pnl, leverage=row.leverage, step=step, tick=tick,
        )

    async def _valued(self, venue: str, balances: dict[str, Decimal]) -> tuple[AssetValue, ...]:
        """Value the non-zero assets in the venue's stable quote, largest value first (unknown values last)."""
        items = [(a, amt) for a, amt in balances.items() if amt > 0]
        quote = valuation_quote(venue)

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
        return tuple(valued)


def valuation_quote(venue: str) -> str:
    """The currency an account's assets are valued in: the venue's main stable quote."""
    return known.valuation_quote if (known := find(venue)) is not None else "USDT"


#: Why a key was refused, for the audit log: our words for `KeyRejected.reason`, never the venue's text.
KEY_REFUSALS = {
    "malformed": "not a valid key",
    "hmac_only": "not an HMAC key",
    "invalid_key": "the exchange rejected the key",
    "withdraw_enabled": "the key can withdraw",
    "futures_disabled": "the key cannot trade futures",
    "trading_disabled": "the key cannot trade",
    "ip_not_whitelisted": "the key's IP restriction excludes this bot",
    "nonce": "the exchange refused the request's timing",
    "unverifiable": "the key's permissions could not be verified",
    "unavailable": "the exchange could not be reached",
    "unsupported": "not an exchange Strata connects to",
}
_KEY_CONNECTED = "the key is already connected"
_OWNER_CONNECTED = "the exchange account is already connected"
_OWNER_UNCHECKED = "could not check which exchange account the key belongs to"
_OTHER_OWNER = "the key belongs to another exchange account"


def key_refusal(reason: str) -> str:
    return KEY_REFUSALS.get(reason, "the key was refused")


def _account_target(label: str, venue: str) -> str:
    """An account as the audit log names it: its label and venue (it may be gone when the entry is read)."""
    return f"account {label} ({venue_name(venue)})"


def _permissions_words(permissions) -> str:
    """What the stored key may do, as the audit log shows it (withdrawals are never among them)."""
    return f"key permissions: {', '.join(permissions)}" if permissions else ""


def _stopped_words(count: int) -> str:
    return f"{count} strateg{'y' if count == 1 else 'ies'} stopped"


_ALREADY_CONNECTED = (
    "This API key is already connected to this bot. One key can be connected once: create a separate key on "
    "the exchange for this account."
)


def _owner_connected_message(user_id: int, venue: str, holder: Account) -> str:
    """Why a second connection of one exchange account is refused; nothing about another user's account."""
    if holder.user_id == user_id:
        return (
            f"This {venue_name(venue)} account is already connected as {holder.label}. One exchange account is "
            "connected once, so two budgets never count on the same balance. Nothing was stored. To use this "
            f"new key for it, send /connect replace {holder.label} (its strategies are kept)."
        )
    return (
        f"This {venue_name(venue)} account is already connected to this bot. One exchange account can be "
        "connected once, so nothing was stored."
    )


def _fix_note(label: str, status: str) -> str | None:
    """What a suspended account's state means and how to fix it (shown by /accounts)."""
    fix = f"fix: /connect replace {label} with a new key (strategies kept), or /disconnect {label}"
    if status == KEY_REJECTED:
        return f"key rejected by the exchange (I retry it every few minutes); {fix}"
    if status == KEY_UNREADABLE:
        return f"stored key unreadable (failed its integrity check); {fix}"
    if status == KEY_REMOVED:
        return f"its key was deleted when the host closed the service; /disconnect {label} removes the account"
    if status == KEY_UNSAFE:
        return f"key can withdraw (turned on after /connect): revoke it or turn withdrawals off (I re-check it); {fix}"
    return None


def _left(order: Order) -> LeftOpen:
    return LeftOpen(
        symbol=order.symbol, side=order.side, type=order.type, amount=order.amount, price=order.price,
        client_order_id=order.client_order_id, exchange_order_id=order.exchange_order_id,
    )


def _view(account: Account, balances, note: str | None = None, **extra) -> AccountView:
    note = note or _fix_note(account.label, account.status)
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
        **extra,
    )


def _stored_view(account: Account, stored: BalanceSnapshot | None) -> AccountView:
    """The account with its stored figures "as of" their fetch (no balances when none were ever fetched)."""
    if stored is None:
        return _view(account, None)
    balances = tuple(AssetValue(a.asset, a.amount, a.value) for a in stored.assets[:TOP_ASSETS])
    return _view(account, balances, positions=_position_views(stored.positions), as_of=stored.fetched_at)


def _position_views(rows: tuple[StoredPosition, ...] | None) -> tuple[PositionView, ...] | None:
    """The venue's position rows as the one position view every chat view renders."""
    return None if rows is None else tuple(stored_position_view(row) for row in rows)


def _stored(balances: tuple[AssetValue, ...]) -> list[StoredAsset]:
    return [StoredAsset(b.asset, b.amount, b.value) for b in balances]


def _refresh_reason(exc: BaseException) -> str:
    """Why an account could not be refreshed, in a few words (never the venue's raw text)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {REFRESH_TIMEOUT_S:g} s"
    if isinstance(exc, CredentialUnreadable):
        return "the stored key is unreadable"
    if isinstance(exc, ExchangeFailure):
        return {
            Action.RETRY: "the exchange did not answer or had an internal error",
            Action.BACKOFF: "the exchange asked us to slow down",
            Action.RESYNC: "the exchange refused the request's timing",
            Action.AUTH: "the exchange rejected the key",
        }.get(exc.action, "the exchange returned an unexpected error")
    return "unexpected error"


def _orders_left_text(label: str, left: list) -> str:
    """Why /disconnect kept the key: orders whose fate is not known yet, or open ones the exchange kept."""
    unconfirmed = sum(1 for order in left if order.status in UNCONFIRMED)
    still_open = len(left) - unconfirmed
    reasons = []
    if unconfirmed:
        reasons.append(
            f"{unconfirmed} order(s) on {label} could not be confirmed yet (the exchange has not told me whether "
            "they arrived); I keep checking and will tell you how they end"
        )
    if still_open:
        reasons.append(f"I could not cancel {still_open} open order(s) on {label}: the exchange did not confirm it")
    return (
        "; ".join(reasons) + ". Its strategies are stopped, but nothing was deleted: the key is kept so those orders "
        "stay within reach. Try /disconnect again in a moment (or cancel the orders on the exchange)."
    )
