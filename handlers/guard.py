"""Checks that run before every other handler: stray keys posted in chats, then who may use the bot.

Stray keys come first: a key pasted (or edited in) by anyone, allowlisted or not, is deleted.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import ApplicationHandlerStop, MessageHandler, TypeHandler, filters

from bot.redaction import register_possible_secret
from bot.services.access import APPROVED, BLOCKED, NOT_LISTED, PENDING, UNKNOWN
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


#: What someone who is not let in gets, by their state (bot.services.access.AccessService.check).
REFUSALS = {
    NOT_LISTED: PRIVATE_BOT,
    UNKNOWN: "This bot lets people in once an admin approves them: send /start to ask for access.",
    PENDING: "⏳ Your request to use this bot is waiting for an admin's approval. I'll tell you here as soon as it "
             "is decided.",
    BLOCKED: "⛔ An admin has blocked your access to this bot.",
}


async def access_gate(update: Update, context: Context) -> None:
    """Let in only who STRATA_ACCESS allows: every update of anyone else stops here, buttons and free text
    included. In approval mode, a newcomer's /start in a private chat files their request with the admins."""
    access = runtime(context).access
    user, chat, message = update.effective_user, update.effective_chat, update.effective_message
    if user is None:
        if access.mode == "open" and not access.admins:
            return
        raise ApplicationHandlerStop  # channel posts and the like: no one to let in
    state = await access.check(user.id)
    private = chat is not None and chat.type == "private"
    if state == UNKNOWN and private and update.message is not None and _is_start(update.message.text):
        state = await access.request(user.id, chat.id, _name(user))
    if state == APPROVED:
        return
    text = REFUSALS[state]
    if update.callback_query is not None:
        await update.callback_query.answer(text, show_alert=True)
    elif message is not None and private:
        await message.reply_text(text)
    raise ApplicationHandlerStop


def _is_start(text: str | None) -> bool:
    words = (text or "").split(maxsplit=1)
    return bool(words) and words[0].split("@", 1)[0].lower() == "/start"


def _name(user) -> str:
    """How the admins see the requester: their name and @username (both theirs to choose, escaped when shown)."""
    return f"{user.full_name} (@{user.username})" if user.username else user.full_name


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
        (-3, TypeHandler(Update, access_gate)),
        (-2, MessageHandler(_PrivateOnlyCommand(name="PrivateOnlyCommand"), private_only)),
    ]
