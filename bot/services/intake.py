"""The half-finished key intake of `/connect`, kept in process memory only.

The API key waits here (as a `Secret`) between the user's two messages. It never enters PTB's
`user_data`, persistence, the database or logs, and is dropped on completion, `/cancel` and timeout.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum

from bot.secret import Secret

INTAKE_TIMEOUT_S = 300.0
_CLOSED_MEMORY = timedelta(minutes=2)

# A long run of key-alphabet characters with no spaces, or a PEM block: what an API key or secret looks like.
_KEYISH = re.compile(r"^[A-Za-z0-9+/=_\-]{32,}$")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")


def looks_like_key(text: str | None) -> bool:
    """True when a message is probably an API key or secret (used to delete stray ones).

    A message made only of key-shaped words counts too: the key and the secret pasted together (one per line,
    as the intake accepts them) are a key pair; so does one addressed to someone ("@bot <key>", one of the few
    messages a bot sees in a group with privacy mode on).
    """
    if not text:
        return False
    stripped = text.strip()
    if _PEM.search(stripped):
        return True
    words = [word for word in stripped.split() if not word.startswith("@")]
    return bool(words) and all(_KEYISH.match(word) for word in words)


class Step(Enum):
    VENUE = "venue"
    API_KEY = "api_key"
    SECRET = "secret"  # noqa: S105 - a step name, not a password
    CHECKING = "checking"


@dataclass
class Intake:
    user_id: int
    chat_id: int
    step: Step = Step.VENUE
    venue: str | None = None
    api_key: Secret | None = None
    menu_message_id: int | None = None
    #: Set when the key replaces the key of this existing account (its venue is then fixed).
    replace_account_id: int | None = None
    replace_label: str | None = None
    deadline: float = field(default_factory=lambda: time.monotonic() + INTAKE_TIMEOUT_S)
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Intake(user_id={self.user_id}, step={self.step.value}, venue={self.venue})"


class IntakeBook:
    """One pending intake per user, each expiring after `timeout` seconds of the flow's start."""

    def __init__(
        self, on_expire: Callable[[Intake], Awaitable[None]] | None = None, timeout: float = INTAKE_TIMEOUT_S
    ) -> None:
        self._pending: dict[int, Intake] = {}
        self._closed: dict[int, datetime] = {}
        self._on_expire = on_expire
        self.timeout = timeout
        self._tasks: set[asyncio.Task] = set()

    def begin(self, user_id: int, chat_id: int) -> Intake:
        self.clear(user_id)
        intake = Intake(user_id=user_id, chat_id=chat_id, deadline=time.monotonic() + self.timeout)
        loop = asyncio.get_running_loop()
        intake._timer = loop.call_later(self.timeout, self._expire, user_id, intake)
        self._pending[user_id] = intake
        return intake

    def get(self, user_id: int) -> Intake | None:
        return self._pending.get(user_id)

    def hold(self, intake: Intake) -> None:
        """Stop the timeout clock: the key is being checked, and the check itself is bounded."""
        if intake._timer is not None:
            intake._timer.cancel()
            intake._timer = None

    def clear(self, user_id: int) -> Intake | None:
        """Forget the user's intake (and the API key it held), remembering when it ended."""
        intake = self._pending.pop(user_id, None)
        if intake is not None:
            if intake._timer is not None:
                intake._timer.cancel()
            intake.api_key = None
            self._closed[user_id] = datetime.now(UTC)
        return intake

    def sent_during_intake(self, user_id: int, sent_at: datetime | None) -> bool:
        """Whether a message (by Telegram's send time) was sent before the user's intake ended.

        Updates of one user are handled in order, so a message typed while the key was being checked is only
        handled after the intake closed; it still belongs to the intake and must be deleted.
        """
        closed = self._closed.get(user_id)
        if closed is None or sent_at is None:
            return False
        if datetime.now(UTC) - closed > _CLOSED_MEMORY:
            del self._closed[user_id]
            return False
        # Telegram dates have whole seconds: only a message from a second before the close is surely earlier
        # (one from the closing second may be the user's next answer; a key-shaped one is caught anyway).
        return sent_at < closed.replace(microsecond=0)

    def __len__(self) -> int:
        return len(self._pending)

    def _expire(self, user_id: int, intake: Intake) -> None:
        if self._pending.get(user_id) is not intake:
            return
        self.clear(user_id)
        if self._on_expire is not None:
            task = asyncio.get_running_loop().create_task(self._on_expire(intake))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
