"""What the fake Telegram remembers about the bot's behaviour: plain, JSON-friendly records for assertions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BotMessage:
    """A message as the bot left it after one sendMessage / sendPhoto / editMessage* call.

    `text` and `caption` are as the bot sent them (HTML markup included); `plain_text` is what the user
    sees (text or caption with the markup rendered away).
    """

    seq: int  # position in the fake's outbox; `cursor()` values compare against it
    method: str
    chat_id: int
    message_id: int
    text: str | None
    reply_markup: dict[str, Any] | None
    disable_notification: bool
    time: float  # wall clock (time.time()), comparable across processes
    parse_mode: str | None = None
    caption: str | None = None
    plain_text: str | None = None
    photo: bytes | None = None  # sendPhoto: the bytes uploaded (None for a file id or URL, or another method)

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """The inline keyboard's buttons, row by row flattened (empty without an inline keyboard)."""
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [button for row in rows for button in row]

    @property
    def button_texts(self) -> list[str]:
        return [button.get("text", "") for button in self.buttons]


@dataclass(frozen=True, slots=True)
class DeletedMessage:
    """A message the bot deleted through deleteMessage."""

    chat_id: int
    message_id: int
    time: float


@dataclass(frozen=True, slots=True)
class AnsweredCallback:
    """An answerCallbackQuery call that Telegram accepted."""

    callback_query_id: str
    text: str | None
    show_alert: bool
    url: str | None
    time: float


@dataclass(frozen=True, slots=True)
class ChatAction:
    """A sendChatAction call ("typing", "upload_photo", ...)."""

    chat_id: int
    action: str
    time: float


@dataclass(frozen=True, slots=True)
class Rejection:
    """A call the fake answered with an error (429s included), so tests can count refusals."""

    method: str
    chat_id: int | str | None
    status: int
    description: str
    time: float
