"""/cancel ends whatever guided flow the user is in (key intake, allocation, a summary awaiting Confirm), storing
nothing."""

from __future__ import annotations

from telegram import Update
from telegram.ext import CommandHandler

from handlers.common import Context, reply, runtime


async def cancel(update: Update, context: Context) -> None:
    rt = runtime(context)
    user_id = update.effective_user.id
    ended = rt.intakes.clear(user_id) is not None
    ended = rt.drafts.pop(user_id) is not None or ended
    ended = rt.drafts.drop_previews(user_id) or ended  # a summary awaiting Confirm
    if ended:
        await reply(update, "Cancelled: nothing was stored.")
    else:
        await reply(update, "There is nothing to cancel.")


def handlers() -> list[tuple[int, object]]:
    return [(0, CommandHandler("cancel", cancel))]
