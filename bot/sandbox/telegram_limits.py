"""Telegram's flood limits, as the fake Bot API server enforces them when a test turns them on.

Only message-producing calls count (sendMessage, sendPhoto, editMessage*): 30 per second overall, one per
second per chat with a burst of three, and 20 per minute per group chat (negative chat ids). deleteMessage and
answerCallbackQuery do not count. A refused call consumes nothing, so a client that waits `retry_after`
seconds is admitted.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

COUNTED_METHODS = frozenset(
    {"sendmessage", "sendphoto", "editmessagetext", "editmessagereplymarkup", "editmessagecaption"}
)


class FloodLimits:
    """Admit or refuse counted calls; refusals carry Telegram's whole-second `retry_after`."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        overall_per_second: int = 30,
        chat_per_second: float = 1.0,
        chat_burst: int = 3,
        group_per_minute: int = 20,
    ) -> None:
        self._clock = clock
        self._overall_per_second = overall_per_second
        self._chat_per_second = chat_per_second
        self._chat_burst = chat_burst
        self._group_per_minute = group_per_minute
        self._overall: deque[float] = deque()
        self._buckets: dict[int, tuple[float, float]] = {}  # chat id -> (tokens, at)
        self._groups: dict[int, deque[float]] = {}

    def admit(self, chat_id: int) -> int | None:
        """Count one call to `chat_id` now and return None, or return the seconds to wait before retrying."""
        now = self._clock()
        waits = [0.0]

        _forget_before(self._overall, now - 1.0)
        if len(self._overall) >= self._overall_per_second:
            waits.append(self._overall[0] + 1.0 - now)

        tokens, at = self._buckets.get(chat_id, (float(self._chat_burst), now))
        tokens = min(float(self._chat_burst), tokens + (now - at) * self._chat_per_second)
        if tokens < 1.0:
            waits.append((1.0 - tokens) / self._chat_per_second)

        group = self._groups.setdefault(chat_id, deque()) if chat_id < 0 else None
        if group is not None:
            _forget_before(group, now - 60.0)
            if len(group) >= self._group_per_minute:
                waits.append(group[0] + 60.0 - now)

        wait = max(waits)
        if wait > 0:
            return max(1, math.ceil(wait))
        self._overall.append(now)
        self._buckets[chat_id] = (tokens - 1.0, now)
        if group is not None:
            group.append(now)
        return None


def _forget_before(times: deque[float], horizon: float) -> None:
    while times and times[0] <= horizon:
        times.popleft()
