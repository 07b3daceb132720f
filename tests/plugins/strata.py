"""The whole bot under test: `python -m bot run`'s application, on the fake Telegram and fake exchanges.

`strata` starts the real Application (real PTB HTTP stack, long polling) with a configuration built only from
the DESIGN.md contract's variables, pointed at the in-process fakes, with logs captured at DEBUG so tests can
grep them for secrets.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bot.app import build_application
from bot.config import Settings, load_settings
from bot.redaction import configure_logging
from bot.runtime import Runtime
from bot.sandbox.lifecycle import lifecycle
from tests.databases import database_for
from tests.plugins.telegram import POLL_TIMEOUT_SECONDS

MASTER_KEY = base64.b64encode(bytes(range(32))).decode()


@dataclass
class Strata:
    """A running bot plus the fakes around it, with small scripting helpers."""

    tg: object
    exchanges: object
    settings: Settings
    runtime: Runtime
    log: io.StringIO
    data_dir: Path

    async def send(self, user_id: int, text: str, **kwargs) -> dict:
        return self.tg.user_sends(user_id, text, **kwargs)

    async def next_reply(self, chat_id: int, *, timeout: float = 10.0, contains: str | None = None):
        """The bot's next message (or edit) in the chat, optionally the next one containing `contains`."""
        predicate = None
        if contains is not None:
            needle = contains.lower()

            def predicate(record) -> bool:
                return needle in (record.text or "").lower()

        return await self.tg.wait_for_message(chat_id, timeout=timeout, predicate=predicate)

    async def press(self, user_id: int, message, button: str | int, *, chat_id: int | None = None) -> str:
        return self.tg.press_button(user_id, message, button, chat_id=chat_id)

    def files_bytes(self) -> bytes:
        """Every byte of every file in the data folder and the key store (databases, WAL, master key)."""
        blobs = []
        for path in sorted(self.data_dir.rglob("*")):
            if path.is_file():
                blobs.append(path.read_bytes())
        return b"".join(blobs)


def strata_env(tg, exchanges, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_API_URL": tg.base_url,
        "STRATA_DATA_DIR": str(data_dir),
        "STRATA_MASTER_KEY": MASTER_KEY,
        "STRATA_EXCHANGE_URLS": exchanges.exchange_urls,
        "STRATA_FILL_POLL_SECONDS": "0.5",
        "LOG_LEVEL": "DEBUG",
    }
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def run_strata(tg, exchanges, data_dir: Path, **extra: str) -> AsyncIterator[Strata]:
    if (url := await database_for(data_dir)) and "STRATA_DATABASE_URL" not in extra:
        extra["STRATA_DATABASE_URL"] = url
    settings = load_settings(strata_env(tg, exchanges, data_dir, **extra), dotenv=False)
    log = io.StringIO()
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    configure_logging(settings.log_level, stream=log)
    try:
        runtime = Runtime(settings)
        app = build_application(settings, runtime=runtime)
        async with lifecycle(app, poll_timeout=POLL_TIMEOUT_SECONDS):
            yield Strata(tg, exchanges, settings, runtime, log, data_dir)
    finally:
        for handler in list(root.handlers):
            if handler not in saved_handlers:
                root.removeHandler(handler)
        root.setLevel(saved_level)


@pytest.fixture
def make_strata(fake_telegram, fake_exchanges, tmp_path) -> Callable[..., contextlib.AbstractAsyncContextManager]:
    """`async with make_strata(STRATA_ALLOWED_USERS="1") as s:` — the bot with extra configuration."""

    def factory(**extra: str):
        return run_strata(fake_telegram, fake_exchanges, tmp_path / "data", **extra)

    return factory


@pytest.fixture
async def strata(make_strata) -> AsyncIterator[Strata]:
    async with make_strata() as running:
        yield running


__all__ = ["MASTER_KEY", "Strata", "make_strata", "run_strata", "strata", "strata_env"]
