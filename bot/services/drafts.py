"""Half-built allocations of the guided `/allocate` flow and previews awaiting "Confirm", in process memory.

A draft holds no secret, but like the key intake it stays out of PTB's `user_data` so that a restart never
replays a half-confirmed allocation: after a restart the user simply starts again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum

DRAFT_TTL_S = 900.0


class DraftStep(Enum):
    ACCOUNT = "account"
    STRATEGY = "strategy"
    SYMBOL = "symbol"
    BUDGET = "budget"
    PARAMS = "params"
    CONFIRM = "confirm"


#: The steps in the order they are asked; Back goes one step up this list.
STEP_ORDER = tuple(DraftStep)


@dataclass
class Draft:
    """One user's answers so far. Each answer is stored only once its step has checked it, in its own field:
    a later step's answer is never read as an earlier one's. Changing an answer forgets the later answers it
    invalidates (another account forgets the strategy onward; another strategy or market forgets the
    parameters), so nothing checked against the old answer is reused unchecked."""

    user_id: int
    step: DraftStep = DraftStep.ACCOUNT
    account_label: str | None = None
    venue: str | None = None
    kind: str | None = None
    symbol: str | None = None
    quote: str | None = None
    budget: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.monotonic)

    @property
    def awaits_text(self) -> bool:
        return self.step in (DraftStep.SYMBOL, DraftStep.BUDGET, DraftStep.PARAMS)

    def back(self) -> DraftStep:
        """Go back one step, keeping every answer given so far (the first step stays where it is)."""
        self.step = STEP_ORDER[max(0, STEP_ORDER.index(self.step) - 1)]
        return self.step

    def go_to(self, step: DraftStep) -> None:
        """Return to an earlier step (where a refusal can be fixed); never skip ahead of the answers given."""
        if STEP_ORDER.index(step) < STEP_ORDER.index(self.step):
            self.step = step

    def set_account(self, label: str, venue: str) -> None:
        if (label, venue) != (self.account_label, self.venue):
            self.kind = self.symbol = self.quote = self.budget = None
            self.params = {}
        self.account_label, self.venue, self.step = label, venue, DraftStep.STRATEGY

    def set_kind(self, kind: str) -> None:
        if kind != self.kind:
            self.symbol = self.quote = self.budget = None
            self.params = {}
        self.kind, self.step = kind, DraftStep.SYMBOL

    def set_symbol(self, symbol: str, quote: str) -> None:
        if symbol != self.symbol:
            self.params = {}
        self.symbol, self.quote, self.step = symbol, quote, DraftStep.BUDGET

    def set_budget(self, budget: str) -> None:
        self.budget, self.step = budget, DraftStep.PARAMS


class Drafts:
    """One draft per user and the one preview they may confirm, both expiring after a quarter of an hour.

    Only a user's newest summary can be confirmed: showing a new one expires the older, and `/cancel` or a
    summary's Cancel button expires it too, so a Confirm pressed on a summary the user walked away from
    starts nothing. An /edit summary is such a preview too: one pending summary per user, /allocate's or /edit's.
    """

    def __init__(self, ttl: float = DRAFT_TTL_S) -> None:
        self.ttl = ttl
        self._drafts: dict[int, Draft] = {}
        self._previews: dict[str, tuple[float, object]] = {}

    def begin(self, user_id: int) -> Draft:
        draft = Draft(user_id=user_id)
        self._drafts[user_id] = draft
        return draft

    def get(self, user_id: int) -> Draft | None:
        draft = self._drafts.get(user_id)
        if draft is not None and time.monotonic() - draft.created > self.ttl:
            del self._drafts[user_id]
            return None
        return draft

    def pop(self, user_id: int) -> Draft | None:
        return self._drafts.pop(user_id, None)

    def keep_preview(self, preview) -> None:
        """Make `preview` the user's confirmable summary, expiring any older one of theirs."""
        self._expire_previews()
        self.drop_previews(preview.user_id)
        self._previews[preview.token] = (time.monotonic(), preview)

    def drop_previews(self, user_id: int) -> bool:
        """Expire the user's pending summary; True if there was one."""
        mine = [token for token, (_, preview) in self._previews.items() if preview.user_id == user_id]
        for token in mine:
            del self._previews[token]
        return bool(mine)

    def take_preview(self, token: str, user_id: int):
        """The preview behind a Confirm button, only for the user it was made for (else None)."""
        self._expire_previews()
        entry = self._previews.get(token)
        if entry is None or entry[1].user_id != user_id:
            return None
        del self._previews[token]
        return entry[1]

    def _expire_previews(self) -> None:
        horizon = time.monotonic() - self.ttl
        for token in [t for t, (born, _) in self._previews.items() if born < horizon]:
            del self._previews[token]
