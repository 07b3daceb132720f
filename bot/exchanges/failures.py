"""Our exchange failure types, each with the action the caller must take (diagnosed by `errors.diagnose`).

A leaf module: the venue adapters (`bot.exchanges.venues`) name these actions in their error tables and
raise or catch these failures, and `errors` reads the adapters' tables; both import from here.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """What the caller does about a failure."""

    RETRY = "retry"  # network, 5xx, timeout: retry with backoff
    BACKOFF = "backoff"  # rate limited: wait on the shared budget, then retry
    RESYNC = "resync"  # clock (-1021) or nonce: resync and retry once
    AUTH = "auth"  # key revoked/invalid/not permitted: pause the account, alert once
    FUNDS = "funds"  # insufficient balance or margin: pause the strategy, alert
    INVALID_ORDER = "invalid_order"  # order refused by the venue's rules: pause the strategy, alert
    NOT_FOUND = "not_found"  # the order is unknown to the venue
    UNKNOWN = "unknown"


#: What an AUTH failure means (the alert about a rejected key adds the fix, naming the account's label).
AUTH_REJECTED = (
    "The exchange rejected this account's API key (revoked, expired, IP whitelist, or a missing permission)."
)

_USER_MESSAGES = {
    Action.RETRY: "The exchange did not answer in time or had an internal error; we will try again shortly.",
    Action.BACKOFF: "The exchange asked us to slow down; we will try again after a pause.",
    Action.RESYNC: "The exchange refused the request's timing (clock or nonce); please try again.",
    Action.AUTH: (
        f"{AUTH_REJECTED} Check the key on the exchange, or give the account a new key with "
        "/connect replace followed by its label (see /accounts); its strategies are kept."
    ),
    Action.FUNDS: "Not enough free balance on the exchange for this order. The strategy is paused.",
    Action.INVALID_ORDER: "The exchange refused the order. The strategy is paused.",
    Action.NOT_FOUND: "The exchange does not know this order.",
    Action.UNKNOWN: "The exchange returned an unexpected error.",
}


MSG_OUTCOME_UNKNOWN = "The exchange did not confirm the order in time; we are checking whether it was placed."


class ExchangeFailure(Exception):
    """A failed exchange call, already diagnosed; `str()` and `repr()` are safe to log and show."""

    action: Action = Action.UNKNOWN

    def __init__(
        self,
        venue: str,
        detail: str,
        *,
        code: str | None = None,
        user_message: str | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        self.venue = venue
        self.code = code
        self.detail = detail
        #: True when the request may have reached the venue (a create_order timeout): reconcile by client id.
        self.outcome_unknown = outcome_unknown
        self.user_message = user_message or _USER_MESSAGES[self.action]
        super().__init__(f"{venue} {self.action.value}" + (f" [{code}]" if code else "") + f": {detail}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self!s})"


class TransientFailure(ExchangeFailure):
    action = Action.RETRY


class RateLimited(ExchangeFailure):
    action = Action.BACKOFF


class ResyncNeeded(ExchangeFailure):
    action = Action.RESYNC


class AuthFailure(ExchangeFailure):
    action = Action.AUTH


class FundsFailure(ExchangeFailure):
    action = Action.FUNDS


class InvalidOrderFailure(ExchangeFailure):
    action = Action.INVALID_ORDER


class OrderNotFoundFailure(ExchangeFailure):
    action = Action.NOT_FOUND


class UnknownFailure(ExchangeFailure):
    action = Action.UNKNOWN


FAILURE_TYPES: dict[Action, type[ExchangeFailure]] = {
    cls.action: cls
    for cls in (
        TransientFailure,
        RateLimited,
        ResyncNeeded,
        AuthFailure,
        FundsFailure,
        InvalidOrderFailure,
        OrderNotFoundFailure,
        UnknownFailure,
    )
}

