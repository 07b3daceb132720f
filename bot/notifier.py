"""The notifier: drains the alert outbox to Telegram at Telegram's pace, never dropping an alert.

Guarantees and their limits:
- **Never lost.** An alert leaves `pending` only when Telegram accepted it (`sent`) or refused it for good
  (`undeliverable`). Network errors, timeouts and 5xx are retried with a per-chat exponential backoff,
  forever.
- **At least once, almost exactly once.** The alert is marked sent right after `send_message` returns, in
  its own short transaction. A crash between the send and the mark (or a lost answer: a timeout after
  Telegram took the message) re-sends that one alert later. Nothing else is ever sent twice: `stop()` lets
  sends in flight finish and be marked before it returns.
- **In order per chat.** A chat has at most one send in flight, and its next alert goes only after the
  previous one was accepted or given up on.
- **Telegram's pace.** One message per `per_chat_interval` per chat, and at most `global_rate` per second
  overall, each request holding its slot from the moment it starts until one window after its answer came
  back, so jitter on the way to Telegram cannot squeeze two windows' worth into one. This is our own
  limiter, because PTB's AIORateLimiter has no per-private-chat limit and halts every request on any 429:
  give the notifier a plain `telegram.Bot` built without it. The handlers' replies share Telegram's budget;
  the occasional 429 that causes is handled like any other.
- **429.** `RetryAfter` pauses that chat for `retry_after` seconds (not a failure: no backoff, no attempt
  counted). When two different chats get a 429 within a second, the flood is global: every send pauses.
- **403 / chat not found.** The user blocked the bot or the chat is gone: all their pending alerts become
  `undeliverable`, the user is marked inactive, and nothing more is sent to them (alerts queued meanwhile
  are made undeliverable as they are read). `/start` re-activates them (`UserRepository.upsert`); the
  backlog kept as undeliverable is not re-sent, only alerts queued after that.
- **400** (message too long, bad markup…): that alert becomes `undeliverable` with Telegram's description;
  the chat carries on with its next alert.

Alert texts are Telegram HTML (`parse_mode`, "HTML" by default): their writers escape every value. Should
Telegram still refuse the markup ("can't parse entities"), the alert is sent once more as plain text, tags
stripped, rather than lost. New alerts are picked up on `wake()` and by polling the table every
`poll_interval` seconds, so alerts queued by another process or before a restart go out too.

**One notifier per database.** Alerts are claimed (storage/outbox.py), not read past an id cursor. On PostgreSQL
several fronts may run by mistake (or on purpose, as standbys): only the holder of the notifier's leader lock
sends (storage/leader.py); the others wait, and the first to take the lock after the holder dies releases its
claims and carries on, so every alert is still sent once, in order per chat. Engine workers in other processes
wake the leader through LISTEN/NOTIFY. `leading` is set while this notifier holds the lock and `on_lost` is
called when it loses it: a front answers users only while it leads (bot/runtime.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import math
import os
import random
import re
import secrets
import socket
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import telegram
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning

from storage.leader import NOTIFIER_LOCK, OUTBOX_CHANNEL, LeaderLock
from storage.models import Alert
from storage.store import Store

log = logging.getLogger(__name__)
_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9-]*(?:\s[^<>]*)?>")

WINDOW_MARGIN_S = 0.005  # slack on top of the global window for clock rounding
SPACING_TOLERANCE = 2  # starts may run this many spacings ahead, to catch up on timer lateness
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 60.0
GLOBAL_FLOOD_WINDOW_S = 1.0  # 429s on two chats this close together mean the overall limit was hit
DRAIN_TIMEOUT_S = 15.0
LOAD_BATCH = 1000
MAX_LOADED = 20_000  # alerts held in memory at once; the rest stay in the table until these drain
LEADER_CHECK_S = 2.0  # how often a standby tries the leader lock, and the leader checks it still holds it


@dataclass
class NotifierStats:
    """Counters since start, for logs, tests and the benchmark."""

    sent: int = 0
    undeliverable: int = 0
    rate_limited: int = 0  # 429s received and honoured
    global_pauses: int = 0
    transient_failures: int = 0  # network errors, timeouts, 5xx: retried
    users_blocked: int = 0


class Notifier:
    """Send pending outbox alerts with Telegram's limits, retries and in-order delivery per chat."""

    def __init__(
        self,
        store: Store,
        bot: telegram.Bot,
        *,
        per_chat_interval: float = 1.0,
        global_rate: float = 30.0,
        poll_interval: float = 1.0,
        retry_backoff: float = BACKOFF_BASE_S,
        parse_mode: str | None = "HTML",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_chat_interval < 0 or global_rate <= 0 or poll_interval <= 0:
            raise ValueError("per_chat_interval must be >= 0, global_rate and poll_interval > 0")
        self._store = store
        self._bot = bot
        self._per_chat_interval = per_chat_interval
        self._global_slots = max(1, round(global_rate))
        self._global_window = self._global_slots / global_rate + WINDOW_MARGIN_S
        self._spacing = 1.0 / global_rate
        self._theoretical_start = 0.0  # GCRA: starts are spread 1/global_rate apart, small catch-up allowed
        self._poll_interval = poll_interval
        self._retry_backoff = retry_backoff
        self._parse_mode = parse_mode
        self._as_plain: set[int] = set()  # alerts whose markup Telegram refused: resend as plain text
        self._clock = clock
        self.stats = NotifierStats()

        self._queues: dict[int, deque[Alert]] = {}
        self._loaded = 0
        #: Who claims alerts: unique per notifier instance, readable in the table when debugging.
        self.claimer = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"
        self._leader = LeaderLock(store.db, NOTIFIER_LOCK)
        self._leader_checked = -math.inf
        self._ready_at: dict[int, float] = {}  # chat -> earliest next send (pacing, 429, backoff)
        self._failures: dict[int, int] = {}  # chat -> consecutive transient failures
        self._busy: set[int] = set()  # chats with a send in flight
        self._in_flight = 0
        self._finished: deque[float] = deque()  # when recent sends got their answer (global window)
        self._paused_until = 0.0
        self._recent_429: dict[int, float] = {}  # chat -> when it last got a 429
        self._blocked_users: set[int] = set()
        self._unmarked: set[int] = set()  # accepted by Telegram, mark not yet written

        #: Set while this notifier holds the leader lock (always, on SQLite).
        self.leading = asyncio.Event()
        #: Called (synchronously) when the lock is lost after it was held.
        self.on_lost: Callable[[], None] | None = None
        self._nudge = asyncio.Event()
        self._load_requested = True
        self._stopping = False
        self._runner: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start sending; the bot is initialised if it can be (the caller owns its shutdown).

        Telegram being unreachable at start-up is not an error: sends work without `getMe`, and the alerts
        wait in the table, retried with backoff, until Telegram answers.
        """
        if self._runner is not None:
            return
        try:
            await self._bot.initialize()
        except TelegramError as exc:
            log.warning("notifier starting while Telegram is unreachable: %s", self._describe(exc))
        self._stopping = False
        self._load_requested = True
        self._leader_checked = -math.inf
        self._runner = asyncio.create_task(self._run(), name="notifier")

    async def stop(self) -> None:
        """Stop taking new alerts, let sends in flight finish and be marked, then return."""
        if self._runner is None:
            return
        self._stopping = True
        self._nudge.set()
        await self._runner
        self._runner = None
        if self._sends:
            _done, pending = await asyncio.wait(set(self._sends), timeout=DRAIN_TIMEOUT_S)
            for task in pending:  # a hung send stays pending in the table: it goes out after the restart
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._in_flight = 0  # a send cancelled before it began never released its slot
        self._busy.clear()
        await self._flush_unmarked()
        if self._leader.held:
            await self._store.outbox.release_claims(of=self.claimer)  # the next notifier sends what is left
        await self._leader.release()
        self.leading.clear()
        self._drop_loaded()

    def wake(self) -> None:
        """Tell the notifier new alerts are waiting (cheap and synchronous: call it after the commit)."""
        self._load_requested = True
        self._nudge.set()

    @property
    def pending_in_memory(self) -> int:
        """Alerts loaded and not yet settled (for tests and progress reports)."""
        return self._loaded

    @property
    def is_leader(self) -> bool:
        """Whether this notifier is the one sending (always, on SQLite)."""
        return self._leader.held

    async def _lead(self) -> bool:
        """Take or keep the leader lock (checked every LEADER_CHECK_S); True while this notifier may send."""
        now = self._clock()
        if now - self._leader_checked < LEADER_CHECK_S:
            return self._leader.held
        self._leader_checked = now
        if self._leader.held:
            if not await self._leader.still_held():
                log.warning("notifier %s lost the leader lock; standing by", self.claimer)
                self._drop_loaded()
                self.leading.clear()
                if self.on_lost is not None:
                    self.on_lost()
            return self._leader.held
        if await self._leader.try_acquire():
            released = await self._store.outbox.release_claims(except_of=self.claimer)
            await self._leader.listen(OUTBOX_CHANNEL, self.wake)
            log.info("notifier %s is sending (took over %d claimed alert(s))", self.claimer, released)
            self._load_requested = True
            self.leading.set()
        return self._leader.held

    def _drop_loaded(self) -> None:
        """Forget what was loaded (claims stay in the table: whoever leads next releases and sends them)."""
        self._queues.clear()
        self._loaded = 0

    async def _run(self) -> None:
        next_poll = self._clock()
        while not self._stopping:
            try:
                if not await self._lead():
                    await self._wait(LEADER_CHECK_S)
                    continue
                if self._load_requested or self._clock() >= next_poll:
                    self._load_requested = False
                    next_poll = self._clock() + self._poll_interval
                    await self._flush_unmarked()
                    await self._load()
                delay = self._dispatch(self._clock())
            except Exception:
                log.exception("notifier loop failed; retrying at the next poll")
                delay = self._poll_interval
            await self._wait(min(delay, max(0.0, next_poll - self._clock())))

    async def _wait(self, seconds: float) -> None:
        if seconds > 0 and not self._nudge.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._nudge.wait()
        self._nudge.clear()

    async def _load(self) -> None:
        """Read alerts queued since the last read into per-chat queues; settle those of unreachable users."""
        unreachable: dict[int, str] = {}
        while self._loaded < MAX_LOADED:
            batch = await self._store.outbox.claim_pending(self.claimer, min(LOAD_BATCH, MAX_LOADED - self._loaded))
            for item in batch:
                alert = item.alert
                blocked = item.user_active is False or (
                    item.user_active is None and alert.user_id in self._blocked_users
                )
                if blocked:
                    unreachable[alert.user_id] = "user inactive: blocked the bot or chat not found"
                    continue
                self._queues.setdefault(alert.chat_id, deque()).append(alert)
                self._loaded += 1
            if len(batch) < LOAD_BATCH:
                break
        for user_id, reason in unreachable.items():
            await self._settle_user(user_id, reason, deactivate=False)
        now = self._clock()
        self._ready_at = {c: at for c, at in self._ready_at.items() if at > now or c in self._queues}

    def _dispatch(self, now: float) -> float:
        """Start every send allowed now; return how long until the next one may be (inf: wait for a nudge)."""
        if self._stopping:
            return math.inf
        if now < self._paused_until:
            return self._paused_until - now
        free_at = self._global_free_at(now)
        if free_at > now:  # no send can start before then, whichever chat is ready: skip the scan
            return free_at - now
        next_at = math.inf
        ready: list[tuple[int, int]] = []
        for chat_id, queue in self._queues.items():
            if not queue or chat_id in self._busy:
                continue
            at = self._ready_at.get(chat_id, 0.0)
            if at <= now:
                ready.append((queue[0].id, chat_id))
            else:
                next_at = min(next_at, at)
        ready.sort()  # oldest alert first, across chats
        for _, chat_id in ready:
            free_at = self._global_free_at(now)
            if free_at > now:
                next_at = min(next_at, free_at)
                break
            self._start_send(self._queues[chat_id][0], now)
        return next_at - now

    def _global_free_at(self, now: float) -> float:
        """When a request may start without exceeding `global_rate` in any window Telegram counts.

        Two rules: (1) a request holds one of `global_rate` slots from its start until one window after its
        answer, which is safe whatever the network jitter; (2) starts are spread evenly (`1/global_rate`
        apart, with a tolerance of two spacings for timer lateness), so requests do not queue behind each
        other in bursts: queueing would lengthen rule 1's hold and cost throughput.
        """
        while self._finished and self._finished[0] <= now - self._global_window:
            self._finished.popleft()
        spread_at = self._theoretical_start - SPACING_TOLERANCE * self._spacing
        if self._in_flight + len(self._finished) < self._global_slots:
            return max(now, spread_at)
        if self._finished:
            return max(self._finished[0] + self._global_window, spread_at)
        return math.inf  # every slot is in flight: a completion will nudge us

    def _start_send(self, alert: Alert, now: float) -> None:
        self._busy.add(alert.chat_id)
        self._in_flight += 1
        self._ready_at[alert.chat_id] = now + self._per_chat_interval
        self._theoretical_start = max(self._theoretical_start, now) + self._spacing
        task = asyncio.create_task(self._send(alert), name=f"notifier-send-{alert.id}")
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send(self, alert: Alert) -> None:
        try:
            await self._deliver(alert)
        except Exception:  # never let one alert kill the notifier; it stays pending and is retried
            log.exception("alert %s: unexpected error while settling it", alert.id)
            self._back_off(alert.chat_id)
        finally:
            self._busy.discard(alert.chat_id)  # only now: the chat's next alert waits for this one's mark
            self._nudge.set()

    async def _post(self, alert: Alert) -> None:
        """One sendMessage (sendPhoto for an alert with a photo, its text the caption); its global slot is
        released the moment Telegram answers, before any DB write."""
        plain = self._parse_mode is None or alert.id in self._as_plain
        text = _plain_text(alert.text) if plain and self._parse_mode else alert.text
        try:
            photo = await self._store.outbox.photo(alert.id) if alert.has_photo else None
            if photo is not None:
                await self._bot.send_photo(
                    chat_id=alert.chat_id, photo=photo, caption=text, parse_mode=None if plain else self._parse_mode,
                    disable_notification=alert.silent,
                )
                return
            await self._bot.send_message(
                chat_id=alert.chat_id,
                text=text,
                parse_mode=None if plain else self._parse_mode,
                disable_notification=alert.silent,
                reply_markup=_keyboard(alert.buttons),
            )
        finally:
            self._in_flight -= 1
            self._finished.append(self._clock())
            self._nudge.set()

    async def _deliver(self, alert: Alert) -> None:
        try:
            await self._post(alert)
        except RetryAfter as exc:
            self._rate_limited(alert, _retry_after_seconds(exc))
        except Forbidden as exc:
            await self._settle_user(alert.user_id, self._describe(exc), deactivate=True)
        except ChatMigrated as exc:  # only groups migrate; alerts go to private chats
            await self._give_up(alert, f"chat migrated to {exc.new_chat_id}")
        except BadRequest as exc:
            if "chat not found" in exc.message.lower():
                await self._settle_user(alert.user_id, self._describe(exc), deactivate=True)
            elif "can't parse entities" in exc.message.lower() and alert.id not in self._as_plain:
                log.warning("alert %s: markup refused (%s); resending as plain text", alert.id, exc.message)
                self._as_plain.add(alert.id)
            else:
                await self._give_up(alert, self._describe(exc))
        except TelegramError as exc:  # NetworkError, TimedOut, 5xx, InvalidToken: retry, never drop
            self.stats.transient_failures += 1
            log.warning("alert %s to chat %s: %s; retrying", alert.id, alert.chat_id, self._describe(exc))
            self._back_off(alert.chat_id)
            with contextlib.suppress(Exception):
                await self._store.outbox.record_failure(alert.id, self._describe(exc))
        else:
            self._pop(alert)
            self._as_plain.discard(alert.id)
            self._failures.pop(alert.chat_id, None)
            self.stats.sent += 1
            await self._mark_sent(alert.id)

    def _rate_limited(self, alert: Alert, seconds: float) -> None:
        now = self._clock()
        self.stats.rate_limited += 1
        self._ready_at[alert.chat_id] = max(self._ready_at.get(alert.chat_id, 0.0), now + seconds)
        horizon = now - GLOBAL_FLOOD_WINDOW_S
        self._recent_429 = {c: at for c, at in self._recent_429.items() if at > horizon}
        others = [c for c in self._recent_429 if c != alert.chat_id]
        self._recent_429[alert.chat_id] = now
        if others:
            self.stats.global_pauses += 1
            self._paused_until = max(self._paused_until, now + seconds)
        log.info(
            "alert %s: Telegram asked to wait %.0f s (%s)",
            alert.id,
            seconds,
            "everything paused" if others else f"chat {alert.chat_id} paused",
        )

    def _back_off(self, chat_id: int) -> None:
        failures = self._failures.get(chat_id, 0) + 1
        self._failures[chat_id] = failures
        delay = min(BACKOFF_CAP_S, self._retry_backoff * 2 ** (failures - 1)) * random.uniform(0.8, 1.2)  # noqa: S311
        self._ready_at[chat_id] = max(self._ready_at.get(chat_id, 0.0), self._clock() + delay)

    async def _give_up(self, alert: Alert, error: str) -> None:
        log.warning("alert %s to chat %s refused, kept as undeliverable: %s", alert.id, alert.chat_id, error)
        self._pop(alert)
        self._as_plain.discard(alert.id)
        self.stats.undeliverable += 1
        await self._store.outbox.mark_undeliverable(alert.id, error)

    async def _settle_user(self, user_id: int, error: str, *, deactivate: bool) -> None:
        """Make every pending alert of the user undeliverable and (on 403) mark them inactive, atomically."""
        async with self._store.db.transaction() as tx:
            count = await self._store.outbox.mark_user_undeliverable(tx, user_id, error)
            if deactivate:
                await self._store.users.set_active(user_id, False, tx=tx)
        for chat_id, queue in self._queues.items():
            kept = deque(a for a in queue if a.user_id != user_id)
            self._loaded -= len(queue) - len(kept)
            self._queues[chat_id] = kept
        self.stats.undeliverable += count
        if deactivate:
            self._blocked_users.add(user_id)
            self.stats.users_blocked += 1
            log.warning("user %s unreachable (%s): %d alert(s) kept as undeliverable", user_id, error, count)

    def _pop(self, alert: Alert) -> None:
        queue = self._queues.get(alert.chat_id)
        if queue and queue[0].id == alert.id:
            queue.popleft()
            self._loaded -= 1
            if not queue:
                del self._queues[alert.chat_id]

    async def _mark_sent(self, alert_id: int) -> None:
        """Write the mark now; if the database refuses, remember it so the alert is never sent again here."""
        try:
            await self._store.outbox.mark_sent(alert_id)
        except Exception:
            log.exception("alert %s was delivered but could not be marked yet; will retry the mark", alert_id)
            self._unmarked.add(alert_id)

    async def _flush_unmarked(self) -> None:
        for alert_id in sorted(self._unmarked):
            try:
                await self._store.outbox.mark_sent(alert_id)
            except Exception:
                log.exception("alert %s: marking it sent failed again", alert_id)
                return
            self._unmarked.discard(alert_id)

    def _describe(self, exc: TelegramError) -> str:
        """Telegram's description of an error, with the bot token scrubbed should a URL ever appear in it."""
        text = f"{type(exc).__name__}: {exc.message}"
        token = getattr(self._bot, "token", "")
        return text.replace(token, "[REDACTED]") if token else text


def _keyboard(rows: tuple[tuple[tuple[str, str], ...], ...]) -> InlineKeyboardMarkup | None:
    if not rows:
        return None
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(label, callback_data=data) for label, data in row] for row in rows]
    )


def _plain_text(text: str) -> str:
    """An HTML alert as plain text: tags dropped, entities decoded (the fallback when markup is refused)."""
    return html.unescape(_TAG.sub("", text)).strip() or text


def _retry_after_seconds(exc: RetryAfter) -> float:
    """`RetryAfter.retry_after` in seconds, whatever PTB_TIMEDELTA says (reading it as int warns in 22.x)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    return max(seconds, 0.0)
