"""Pytest fixtures for the fake Telegram Bot API server, and helpers to run a real PTB Application on it.

async def test_start_replies(fake_telegram, telegram_builder):
    app = telegram_builder.build()
    app.add_handler(CommandHandler("start", start))
    async with polling(app):
        fake_telegram.user_sends(42, "/start")
        reply = await fake_telegram.wait_for_message(42)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from telegram.ext import Application, ApplicationBuilder

from bot.sandbox.telegram_server import FakeTelegram

# Short long polls keep shutdown quick; the fake still blocks for this long when nothing happens.
POLL_TIMEOUT_SECONDS = 1


def application_builder(fake: FakeTelegram) -> ApplicationBuilder:
    """A PTB builder wired to `fake`: its token and URLs, no rate limiter (tests decide about limits)."""
    return ApplicationBuilder().token(fake.token).base_url(fake.base_url).base_file_url(f"{fake.url}/file/bot")


@contextlib.asynccontextmanager
async def polling(app: Application, *, timeout: int = POLL_TIMEOUT_SECONDS) -> AsyncIterator[Application]:
    """Run `app` with long polling for the duration of the block, then shut it down cleanly."""
    await app.initialize()
    try:
        await app.start()
        await app.updater.start_polling(poll_interval=0, timeout=timeout)
        try:
            yield app
        finally:
            if app.updater.running:
                await app.updater.stop()
            if app.running:
                await app.stop()
    finally:
        await app.shutdown()


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    """A started fake Telegram (token `fake_telegram.token`), stopped after the test."""
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def telegram_builder(fake_telegram: FakeTelegram) -> ApplicationBuilder:
    """An ApplicationBuilder pointed at `fake_telegram`; add options, then `.build()`."""
    return application_builder(fake_telegram)
