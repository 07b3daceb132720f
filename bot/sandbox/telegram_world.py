"""The fake Telegram's world: users, chats, live messages, the update queue and what the bot did.

Tests and the offline demo script it (a user sends text, presses a button, blocks the bot; Telegram starts
refusing sends) and read it back (what the bot sent, edited, deleted, answered). The Bot API methods in
`telegram_api` act on it. Everything runs on one event loop: scripting calls are plain functions, only the
waits are coroutines.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.sandbox.telegram_limits import COUNTED_METHODS, FloodLimits
from bot.sandbox.telegram_records import (
    AnsweredCallback,
    BotMessage,
    ChatAction,
    DeletedMessage,
    Rejection,
)

JSON = dict[str, Any]
MessageRef = int | BotMessage | Mapping[str, Any]

# Telegram marks every /command (optionally /command@botname) that starts the text or follows whitespace.
_COMMAND = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,64})?")


@dataclass(slots=True)
class _Fault:
    status: int
    description: str
    retry_after: int | None
    remaining: int


class ApiError(Exception):
    """A Bot API error answer: HTTP status, `description`, and optional `parameters`."""

    def __init__(self, status: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(f"{status} {description}")
        self.status = status
        self.description = description
        self.parameters = parameters


class TelegramWorld:
    """State of one fake Telegram with one bot; scripting calls for tests, recorded effects for assertions."""

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",  # noqa: S107 - a fake token for a fake server
        *,
        bot_username: str = "strata_test_bot",
        bot_first_name: str = "Strata",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        bot_id, _, _ = token.partition(":")
        if not bot_id.isdigit():
            raise ValueError("a bot token looks like '<digits>:<secret>'")
        self.token = token
        self.bot_user: JSON = {
            "id": int(bot_id),
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
        }
        self._users: dict[int, JSON] = {}
        self._chats: dict[int, JSON] = {}
        self._messages: dict[tuple[int, int], JSON] = {}
        self._sources: dict[tuple[int, int], dict[str, Any]] = {}  # bot messages' text/caption as sent
        self._next_message_id: dict[int, int] = {}
        self._updates: deque[JSON] = deque()
        self._update_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._open_callbacks: set[str] = set()
        self._updates_changed = asyncio.Event()
        self._outbox_changed = asyncio.Event()
        self._read_upto: dict[int, int] = {}
        self._closed = False

        self._limits = FloodLimits(clock)
        self._limits_on = False
        self._blocked: set[int] = set()
        self._delete_failures: dict[int, str] = {}
        self._faults: dict[str, deque[_Fault]] = {}

        self.outbox: list[BotMessage] = []  # sends and edits, in order
        self.sent: list[BotMessage] = []  # sendMessage / sendPhoto
        self.edited: list[BotMessage] = []  # editMessage*
        self.deleted: list[DeletedMessage] = []
        self.answered_callbacks: list[AnsweredCallback] = []
        self.chat_actions: list[ChatAction] = []
        self.rejected: list[Rejection] = []
        self.calls: Counter[str] = Counter()  # method name as the client spelled it -> calls
        self._commands: dict[str, list[JSON]] = {}

    # ---- scripting: people and chats -------------------------------------------------------------

    def add_user(
        self,
        user_id: int,
        *,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str = "en",
    ) -> JSON:
        """Register (or update) a user and their private chat with the bot; return the User object."""
        if user_id <= 0:
            raise ValueError("user ids are positive")
        user = self._users.setdefault(
            user_id, {"id": user_id, "is_bot": False, "first_name": f"User{user_id}", "language_code": language_code}
        )
        if first_name is not None:
            user["first_name"] = first_name
        if username is not None:
            user["username"] = username
        chat = {"id": user_id, "type": "private", "first_name": user["first_name"]}
        if "username" in user:
            chat["username"] = user["username"]
        self._chats[user_id] = chat
        return copy.deepcopy(user)

    def add_group(self, chat_id: int, *, title: str = "Test group", chat_type: str = "group") -> JSON:
        """Register a group or supergroup chat (negative id) the bot is a member of; return the Chat."""
        if chat_id >= 0 or chat_type not in ("group", "supergroup"):
            raise ValueError("group chats have negative ids and type 'group' or 'supergroup'")
        self._chats[chat_id] = {"id": chat_id, "type": chat_type, "title": title}
        return copy.deepcopy(self._chats[chat_id])

    def user_sends(
        self,
        user_id: int,
        text: str,
        *,
        chat_id: int | None = None,
        chat_type: str | None = None,
        first_name: str | None = None,
        username: str | None = None,
    ) -> JSON:
        """Have a user send `text`; queue the update for getUpdates and return the Message object.

        /commands carry `bot_command` entities so CommandHandler matches. Writing in a private chat
        unblocks the bot, as a user who restarts a blocked bot does.
        """
        user = self.add_user(user_id, first_name=first_name, username=username)
        chat_id = user_id if chat_id is None else chat_id
        chat_type = chat_type or ("private" if chat_id == user_id else "group")
        if chat_type == "private":
            if chat_id != user_id:
                raise ValueError("a private chat's id is the user's id")
            self._blocked.discard(chat_id)
        elif chat_id not in self._chats:
            self.add_group(chat_id, chat_type=chat_type)
        message = self._new_message(chat_id, user, {"text": text})
        entities = [
            {"type": "bot_command", "offset": _utf16_len(text[: m.start()]), "length": _utf16_len(m.group())}
            for m in _COMMAND.finditer(text)
        ]
        if entities:
            message["entities"] = entities
        self._enqueue({"message": message})
        return copy.deepcopy(message)

    def user_edits(self, user_id: int, message: MessageRef, text: str) -> JSON:
        """Have a user edit one of their own messages to `text`; queue the `edited_message` update, as Telegram does.

        The update carries the whole message with its original `date` and a new `edit_date`; an edited command
        keeps no `bot_command` entities unless the new text has one.
        """
        current = self._live(message, user_id)
        if current.get("from", {}).get("id") != user_id:
            raise ValueError("a user can only edit their own messages")
        current["text"] = text
        current["edit_date"] = int(time.time())
        current.pop("entities", None)
        entities = [
            {"type": "bot_command", "offset": _utf16_len(text[: m.start()]), "length": _utf16_len(m.group())}
            for m in _COMMAND.finditer(text)
        ]
        if entities:
            current["entities"] = entities
        self._enqueue({"edited_message": copy.deepcopy(current)})
        return copy.deepcopy(current)

    def press_button(self, user_id: int, message: MessageRef, button: str | int, *, chat_id: int | None = None) -> str:
        """Press an inline button (by text or flat index) of a bot message as it now stands; return the query id.

        `message` is a BotMessage, a Message object, or a message id in `chat_id` (default: the user's
        private chat).
        """
        current = self._live(message, chat_id if chat_id is not None else user_id)
        rows = (current.get("reply_markup") or {}).get("inline_keyboard") or []
        buttons = [b for row in rows for b in row]
        if isinstance(button, int):
            chosen = buttons[button] if -len(buttons) <= button < len(buttons) else None
        else:
            chosen = next((b for b in buttons if b.get("text") == button), None)
        if chosen is None or "callback_data" not in chosen:
            texts = [b.get("text") for b in buttons]
            raise LookupError(f"no callback button {button!r} on message {current['message_id']}; buttons: {texts}")
        return self._callback_query(user_id, current, chosen["callback_data"])

    def press_callback_data(self, user_id: int, message: MessageRef, data: str, *, chat_id: int | None = None) -> str:
        """Send a callback query with arbitrary `data` from a message, as a tampered client can; return its id.

        Telegram does not check that the message has a button with this data, so neither does the fake.
        """
        current = self._live(message, chat_id if chat_id is not None else user_id)
        return self._callback_query(user_id, current, data)

    # ---- scripting: faults and limits -------------------------------------------------------------

    def enforce_limits(self, on: bool = True) -> None:
        """Turn Telegram's flood limits on (or off); refused calls get 429 with `retry_after`."""
        self._limits_on = on

    def block_user(self, chat_id: int) -> None:
        """The user blocked the bot: sends to this chat get 403 until unblocked or the user writes again."""
        self._blocked.add(chat_id)

    def unblock_user(self, chat_id: int) -> None:
        self._blocked.discard(chat_id)

    def fail_next(
        self, method: str, status: int, description: str, count: int = 1, *, retry_after: int | None = None
    ) -> None:
        """Answer the next `count` calls of `method` with this error instead of doing them."""
        self._faults.setdefault(method.lower(), deque()).append(_Fault(status, description, retry_after, count))

    def make_delete_fail(
        self, chat_id: int, fail: bool = True, *, description: str = "Bad Request: message can't be deleted"
    ) -> None:
        """Make deleteMessage in this chat answer 400 (or, with fail=False, work again)."""
        if fail:
            self._delete_failures[chat_id] = description
        else:
            self._delete_failures.pop(chat_id, None)

    # ---- reading what happened --------------------------------------------------------------------

    @property
    def rejected_429(self) -> int:
        """How many calls were refused with 429 Too Many Requests."""
        return sum(1 for r in self.rejected if r.status == 429)

    @property
    def commands(self) -> list[JSON]:
        """The command list last set with setMyCommands for the default scope and language."""
        return copy.deepcopy(self._commands.get(_scope_key(None, None), []))

    @property
    def pending_updates(self) -> int:
        """Updates queued but not yet acknowledged by a getUpdates offset."""
        return len(self._updates)

    def cursor(self) -> int:
        """A point in the outbox: pass it as `after` to wait only for what the bot does from now on."""
        return len(self.outbox)

    def messages_in(self, chat_id: int) -> list[JSON]:
        """The chat's live messages (the user's and the bot's, as last edited), oldest first."""
        found = [m for (c, _), m in self._messages.items() if c == chat_id]
        return copy.deepcopy(sorted(found, key=lambda m: m["message_id"]))

    def message(self, chat_id: int, message_id: int) -> JSON | None:
        found = self._messages.get((chat_id, message_id))
        return copy.deepcopy(found) if found is not None else None

    async def wait_for_message(
        self,
        chat_id: int,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - the scripting API reads best with a plain timeout
        predicate: Callable[[BotMessage], bool] | None = None,
        after: int | None = None,
    ) -> BotMessage:
        """Return the next message the bot sent or edited in `chat_id` (matching `predicate`).

        Without `after`, "next" means after the last one this method returned for the chat, so successive
        calls walk through the conversation; `after=cursor()` starts from a chosen point instead.
        """
        start = self._read_upto.get(chat_id, 0) if after is None else after
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            changed = self._outbox_changed
            for record in self.outbox[start:]:
                if record.chat_id == chat_id and (predicate is None or predicate(record)):
                    self._read_upto[chat_id] = max(self._read_upto.get(chat_id, 0), record.seq + 1)
                    return record
            start = max(start, len(self.outbox))
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                seen = [(r.method, r.text or r.caption) for r in self.outbox if r.chat_id == chat_id]
                raise TimeoutError(f"no matching bot message in chat {chat_id} within {timeout}s; chat had {seen}")
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                pass

    # ---- used by the Bot API methods (telegram_api) ------------------------------------------------

    def chat(self, chat_id: int) -> JSON | None:
        return self._chats.get(chat_id)

    def is_blocked(self, chat_id: int) -> bool:
        return chat_id in self._blocked

    def delete_failure(self, chat_id: int) -> str | None:
        return self._delete_failures.get(chat_id)

    def take_fault(self, method: str) -> _Fault | None:
        """Consume one injected fault for `method`, if any is scheduled."""
        queue = self._faults.get(method.lower())
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.popleft()
        return fault

    def admit(self, method: str, chat_id: int) -> int | None:
        """Apply the flood limits to a counted call: None if admitted, else the `retry_after` seconds."""
        if not self._limits_on or method.lower() not in COUNTED_METHODS:
            return None
        return self._limits.admit(chat_id)

    def note_rejection(self, method: str, chat_id: int | str | None, error: ApiError) -> None:
        self.rejected.append(Rejection(method, chat_id, error.status, error.description, time.time()))

    def post_bot_message(
        self, method: str, chat_id: int, content: JSON, params: Mapping[str, Any], source: Mapping[str, Any]
    ) -> JSON:
        """Store a new bot message with `content` (as the Message carries it), record it, return it.

        `source` holds the text or caption and parse_mode as the bot sent them, for the records.
        """
        message = self._new_message(chat_id, self.bot_user, content)
        self._sources[(chat_id, message["message_id"])] = dict(source)
        self._record(method, message, params, self.sent)
        return copy.deepcopy(message)

    def edit_bot_message(
        self,
        method: str,
        chat_id: int,
        message_id: int,
        changes: JSON,
        params: Mapping[str, Any],
        source: Mapping[str, Any],
    ) -> JSON:
        """Apply `changes` to a stored message (a None value removes the field), record it, return it."""
        message = self._messages[(chat_id, message_id)]
        for key, value in changes.items():
            if value is None:
                message.pop(key, None)
            else:
                message[key] = value
        message["edit_date"] = int(time.time())
        self._sources.setdefault((chat_id, message_id), {}).update(source)
        self._record(method, message, params, self.edited)
        return copy.deepcopy(message)

    def stored_message(self, chat_id: int, message_id: int) -> JSON | None:
        """The live stored message (not a copy): for the API's checks only."""
        return self._messages.get((chat_id, message_id))

    def is_from_bot(self, message: Mapping[str, Any]) -> bool:
        return message.get("from", {}).get("id") == self.bot_user["id"]

    def delete(self, chat_id: int, message_id: int) -> bool:
        """Remove a message; False if it does not exist."""
        if self._messages.pop((chat_id, message_id), None) is None:
            return False
        self._sources.pop((chat_id, message_id), None)
        self.deleted.append(DeletedMessage(chat_id, message_id, time.time()))
        return True

    def answer_callback(self, query_id: str, text: str | None, show_alert: bool, url: str | None) -> bool:
        """Close an open callback query; False if it is unknown or already answered."""
        if query_id not in self._open_callbacks:
            return False
        self._open_callbacks.discard(query_id)
        self.answered_callbacks.append(AnsweredCallback(query_id, text, show_alert, url, time.time()))
        return True

    def note_chat_action(self, chat_id: int, action: str) -> None:
        self.chat_actions.append(ChatAction(chat_id, action, time.time()))

    def set_commands(self, commands: list[JSON], scope: JSON | None, language_code: str | None) -> None:
        self._commands[_scope_key(scope, language_code)] = copy.deepcopy(commands)

    def get_commands(self, scope: JSON | None, language_code: str | None) -> list[JSON]:
        return copy.deepcopy(self._commands.get(_scope_key(scope, language_code), []))

    def delete_commands(self, scope: JSON | None, language_code: str | None) -> None:
        self._commands.pop(_scope_key(scope, language_code), None)

    def drop_pending_updates(self) -> None:
        self._updates.clear()

    async def next_updates(self, offset: int | None, limit: int, wait_seconds: float) -> list[JSON]:
        """getUpdates: acknowledge below `offset`, then wait up to `wait_seconds` for updates; return a batch."""
        if offset is not None and offset < 0:
            while len(self._updates) > -offset:
                self._updates.popleft()
        elif offset is not None:
            while self._updates and self._updates[0]["update_id"] < offset:
                self._updates.popleft()
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while not self._updates and not self._closed:
            changed = self._updates_changed
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                break
        return copy.deepcopy(list(itertools.islice(self._updates, limit)))

    def close(self) -> None:
        """Release every waiting long poll and answer new ones at once (server shutdown)."""
        self._closed = True
        self._updates_changed = _wake(self._updates_changed)

    def reopen(self) -> None:
        """Let long polls block again after a close (server restarted)."""
        self._closed = False

    # ---- internals --------------------------------------------------------------------------------

    def _new_message(self, chat_id: int, sender: JSON, content: JSON) -> JSON:
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        message = {
            "message_id": message_id,
            "from": copy.deepcopy(sender),
            "chat": copy.deepcopy(self._chats[chat_id]),
            "date": int(time.time()),
            **copy.deepcopy(content),
        }
        self._messages[(chat_id, message_id)] = message
        return message

    def _record(self, method: str, message: JSON, params: Mapping[str, Any], into: list[BotMessage]) -> None:
        source = self._sources.get((message["chat"]["id"], message["message_id"]), {})
        record = BotMessage(
            seq=len(self.outbox),
            method=method,
            chat_id=message["chat"]["id"],
            message_id=message["message_id"],
            text=source.get("text"),
            reply_markup=copy.deepcopy(params.get("reply_markup")),
            disable_notification=bool(params.get("disable_notification", False)),
            time=time.time(),
            parse_mode=source.get("parse_mode"),
            caption=source.get("caption"),
            plain_text=message.get("text", message.get("caption")),
            photo=getattr(params.get("photo"), "data", None),
        )
        self.outbox.append(record)
        into.append(record)
        self._outbox_changed = _wake(self._outbox_changed)

    def _callback_query(self, user_id: int, message: JSON, data: str) -> str:
        user = self.add_user(user_id)
        query_id = f"{self.bot_user['id']}{next(self._callback_ids):08d}"
        self._open_callbacks.add(query_id)
        chat_instance = str(abs(message["chat"]["id"]) * 7919 + self.bot_user["id"])
        self._enqueue(
            {
                "callback_query": {
                    "id": query_id,
                    "from": user,
                    "message": copy.deepcopy(message),
                    "chat_instance": chat_instance,
                    "data": data,
                }
            }
        )
        return query_id

    def _enqueue(self, payload: JSON) -> None:
        self._updates.append({"update_id": next(self._update_ids), **payload})
        self._updates_changed = _wake(self._updates_changed)

    def _live(self, message: MessageRef, default_chat: int) -> JSON:
        """The stored message a script refers to (BotMessage, Message object, or id in `default_chat`)."""
        if isinstance(message, BotMessage):
            chat_id, message_id = message.chat_id, message.message_id
        elif isinstance(message, Mapping):
            chat_id, message_id = int(message["chat"]["id"]), int(message["message_id"])
        else:
            chat_id, message_id = default_chat, int(message)
        current = self._messages.get((chat_id, message_id))
        if current is None:
            raise LookupError(f"message {message_id} in chat {chat_id} does not exist (deleted?)")
        return current


def _wake(event: asyncio.Event) -> asyncio.Event:
    """Wake everyone waiting on `event`; return a fresh event for the next change."""
    event.set()
    return asyncio.Event()


def _utf16_len(text: str) -> int:
    """Telegram measures entity offsets and lengths in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _scope_key(scope: Mapping[str, Any] | None, language_code: str | None) -> str:
    scope_type = (scope or {}).get("type", "default")
    extra = ",".join(f"{k}={v}" for k, v in sorted((scope or {}).items()) if k != "type")
    return f"{scope_type}[{extra}]/{language_code or ''}"
