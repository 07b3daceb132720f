"""No silence: a mistyped command (`/stauts`) or a command name typed as text (`status`) gets the closest command.

The commands suggested are read from the handlers registered on the application when the message arrives, so a
command exists for this module as soon as some module registers it — there is no second list to keep in step.

Runs in its own group after the features (FALLBACK_GROUP): a command no handler knows reaches it untouched, and a
plain-text message is answered only in a private chat when no guided flow (allocation draft, key intake) waits
for text. Group chats get no answer to unknown text (the bot is not the only one addressed there); commands in a
group are answered by the guard (`handlers/guard.py`: private chat only) before they reach this module.
"""

from __future__ import annotations

import difflib
import re

from telegram import Update
from telegram.ext import Application, CommandHandler, MessageHandler, filters

from handlers.common import Context, esc, reply

FALLBACK_GROUP = 50  # after every feature group; the negative groups (access, key safety) still run first
MAX_TYPED = 32  # longer text is not a command name someone mistyped
_STRATEGY_ID = re.compile(r"#?[0-9]{1,9}")


def registered_commands(application: Application) -> list[str]:
    """Every command some registered `CommandHandler` answers, sorted."""
    names: set[str] = set()
    for handlers in application.handlers.values():
        for handler in handlers:
            if isinstance(handler, CommandHandler):
                names.update(handler.commands)
    return sorted(names)


def closest_command(word: str, commands: list[str]) -> str | None:
    """The registered command nearest to `word` (difflib's ratio ≥ 0.6), or None."""
    matches = difflib.get_close_matches(word.lower(), commands, n=1, cutoff=0.6)
    return matches[0] if matches else None


def suggestion_text(word: str, command: str | None) -> str:
    if command is None:
        return f"I don't know /{esc(word)}. /help lists every command."
    return f"I don't know /{esc(word)}. Did you mean /{command}? /help lists every command."


def _command_word(first: str) -> str:
    """`/stauts@StrataBot` → `stauts`."""
    return first[1:].split("@", 1)[0][:MAX_TYPED]


async def unknown_command(update: Update, context: Context) -> None:
    """A command no registered handler answers: name the closest one that exists."""
    message = update.effective_message
    first = (message.text or "").split(maxsplit=1)[0]
    word = _command_word(first)
    commands = registered_commands(context.application)
    if word.lower() in commands:
        return  # answered by its own handler (PTB matches commands case-insensitively)
    if update.effective_chat.type != "private":
        return  # groups: the guard answers commands there (private only); other text is not ours to judge
    await reply(update, suggestion_text(word, closest_command(word, commands)))


class _CommandNameAsText(filters.MessageFilter):
    """A short private text led by a registered command's name (`status`, `Help`, `status 2`) while no guided
    flow is open."""

    def __init__(self, application: Application, runtime) -> None:
        super().__init__(name="CommandNameAsText")
        self._application = application
        self._runtime = runtime

    def filter(self, message) -> bool:
        if message.chat.type != "private" or message.from_user is None or not message.text:
            return False
        words = message.text.split()
        if not words or len(words) > 2 or words[0].lower() not in registered_commands(self._application):
            return False
        if len(words) == 2 and not _STRATEGY_ID.fullmatch(words[1]):  # `status 2`, not "stop buying"
            return False
        user_id = message.from_user.id
        # Any open allocation draft or key intake owns the user's text, whatever step it is at.
        return self._runtime.drafts.get(user_id) is None and self._runtime.intakes.get(user_id) is None


async def command_as_text(update: Update, context: Context) -> None:
    command, *rest = update.effective_message.text.split()
    typed = " ".join([f"/{command.lower()}", *rest])
    await reply(update, f"Commands start with a slash: {esc(typed)}. /help lists every command.")


def handlers(application: Application, runtime) -> list[tuple[int, object]]:
    return [
        (FALLBACK_GROUP, MessageHandler(filters.COMMAND & ~filters.UpdateType.EDITED, unknown_command)),
        (FALLBACK_GROUP, MessageHandler(filters.TEXT & ~filters.COMMAND & ~filters.UpdateType.EDITED
                                        & _CommandNameAsText(application, runtime), command_as_text)),
    ]
