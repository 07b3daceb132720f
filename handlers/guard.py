"""Checks that run before every other handler: stray keys posted in chats, then the user allowlist.

Stray keys come first: a key pasted (or edited in) by anyone, allowlisted or not, is deleted.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import ApplicationHandlerStop, MessageHandler, TypeHandler, filters

from bot.redaction import register_possible_secret
from bot.services.intake import looks_like_key
from handlers.common import Context, runtime

logger = logging.getLogger(__name__)

PRIVATE_BOT = "Sorry, this Strata bot is private. You can run your own: it is open source and self-hostable."
STRAY_KEY_DELETED = (
    "⚠️ That message looked like an API key or secret, so I deleted it. If it was a real key, revoke it on the "
    "exchange now. To connect an account, use /connect in a private chat with me."
)
STRAY_KEY_NOT_DELETED = (
    "⚠️ That message looks like an API key or secret and I could not delete it. Delete it yourself now and "
    "revoke the key on the exchange. To connect an account, use /connect in a private chat with me."
)


async def allowlist_gate(update: Update, context: Context) -> None:
    """Refuse every update from users outside STRATA_ALLOWED_USERS, button presses included."""
    allowed = runtime(context).settings.allowed_users
    if not allowed:
        return
    user = update.effective_user
    if user is not None and user.id in allowed:
        return
    if update.callback_query is not None:
        await update.callback_query.answer(PRIVATE_BOT, show_alert=True)
    elif update.effective_message is not None and update.effective_chat is not None:
        if update.effective_chat.type == "private":
            await update.effective_message.reply_text(PRIVATE_BOT)
    raise ApplicationHandlerStop


class _StrayKey(filters.MessageFilter):
    """A text message (new or edited) that looks like a key and is not part of this user's key intake."""

    def __init__(self, intakes) -> None:
        super().__init__(name="StrayKey")
        self._intakes = intakes

    def filter(self, message) -> bool:
        if not looks_like_key(message.text or message.caption):
            return False
        user = message.from_user
        in_intake = (
            message.chat.type == "private" and user is not None and self._intakes.get(user.id) is not None
        )
        return not in_intake


async def delete_stray_key(update: Update, context: Context) -> None:
    message = update.effective_message
    register_possible_secret((message.text or message.caption or "").strip())
    try:
        await message.delete()
        text = STRAY_KEY_DELETED
    except TelegramError:
        text = STRAY_KEY_NOT_DELETED
    logger.info("deleted a key-looking message in chat %s", message.chat_id)
    await context.bot.send_message(message.chat_id, text)
    raise ApplicationHandlerStop


GROUP_COMMANDS = frozenset({"start", "help", "connect"})


class _PrivateOnlyCommand(filters.MessageFilter):
    """A command outside a private chat that shows or changes someone's money (all but /start, /help, /connect)."""

    def filter(self, message) -> bool:
        text = message.text or ""
        if message.chat.type == "private" or not text.startswith("/"):
            return False
        command = text[1:].split(maxsplit=1)[0].split("@", 1)[0].lower() if len(text) > 1 else ""
        return command not in GROUP_COMMANDS


async def private_only(update: Update, context: Context) -> None:
    """Balances, strategies and settings are never shown in, or routed to, a group."""
    await update.effective_message.reply_text(
        f"For your privacy, use this command in a private chat with me (@{context.bot.username})."
    )
    raise ApplicationHandlerStop


def handlers(intakes) -> list[tuple[int, object]]:
    """(group, handler) pairs; negative groups run before the feature handlers."""
    return [
        (-4, MessageHandler(_StrayKey(intakes), delete_stray_key)),
        (-3, TypeHandler(Update, allowlist_gate)),
        (-2, MessageHandler(_PrivateOnlyCommand(name="PrivateOnlyCommand"), private_only)),
    ]
