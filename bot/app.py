"""Build the python-telegram-bot Application: handlers, lifecycle (post_init / post_shutdown), error handler.

One event loop for everything: post_init opens the databases, the vault, the exchange gateway, the engine and
the notifier on PTB's loop; post_shutdown closes them in reverse order.
"""

from __future__ import annotations

import logging
import os

from telegram import LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.ext import Application, ApplicationBuilder, Defaults

from bot.config import Settings
from bot.runtime import Runtime, check_startup
from bot.update_order import PerUserUpdateProcessor
from handlers import register_handlers
from handlers.start import set_commands

logger = logging.getLogger(__name__)

# Opt into python-telegram-bot's coming behaviour: durations such as RetryAfter.retry_after are timedeltas.
# Without it PTB 22 emits a deprecation warning on every 429; the notifier reads either form.
os.environ.setdefault("PTB_TIMEDELTA", "true")


async def preflight(settings: Settings) -> None:
    """Fail fast, before touching Telegram, on a wrong master key or an unusable data folder."""
    await check_startup(settings)


def build_application(settings: Settings, *, runtime: Runtime | None = None) -> Application:
    token = settings.require_token().reveal()
    builder = (
        ApplicationBuilder()
        .token(token)
        .base_url(settings.telegram_api_url)
        .defaults(Defaults(parse_mode=ParseMode.HTML, link_preview_options=LinkPreviewOptions(is_disabled=True)))
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
        .concurrent_updates(PerUserUpdateProcessor())
    )
    application = builder.build()
    rt = runtime or Runtime(settings)
    application.bot_data["runtime"] = rt
    register_handlers(application, rt)
    application.add_error_handler(_on_error)
    return application


async def _post_init(application: Application) -> None:
    rt: Runtime = application.bot_data["runtime"]
    rt.stop_application = application.stop_running
    await rt.start(application.bot)
    await set_commands(application.bot)
    logger.info("Strata is up as @%s", application.bot.username)


async def _post_shutdown(application: Application) -> None:
    rt: Runtime = application.bot_data["runtime"]
    await rt.close()


async def _on_error(update: object, context) -> None:
    """Log the failure (redacted) and tell the user something went wrong, never the details."""
    logger.error("error while handling an update", exc_info=context.error)
    if isinstance(update, Update) and update.effective_chat is not None:
        try:
            if update.callback_query is not None:
                await update.callback_query.answer()
            await update.effective_chat.send_message(
                "Sorry, something went wrong on my side. Nothing was lost; please try again."
            )
        except Exception:  # the chat may be unreachable; the log already has the cause
            logger.debug("could not report an error to chat", exc_info=True)
