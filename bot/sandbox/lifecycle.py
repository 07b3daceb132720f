"""Run a python-telegram-bot Application inside an event loop we own, as `run_polling` would.

`Application.run_polling` owns the loop and blocks until a signal; tests and the offline demo need the bot on
their own loop next to the fakes, started and stopped on demand. This follows run_polling's order exactly
(post_init before polling, post_shutdown after shutdown), so what is proven here is what `python -m bot run`
does.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from telegram.ext import Application


@contextlib.asynccontextmanager
async def lifecycle(app: Application, *, poll_timeout: int = 1) -> AsyncIterator[Application]:
    """The steps of `Application.run_polling`, in its order, post_init and post_shutdown included.

    A short `poll_timeout` (seconds a getUpdates long poll may block) keeps shutdown quick.
    """
    await app.initialize()
    try:
        if app.post_init:
            await app.post_init(app)
        await app.updater.start_polling(poll_interval=0, timeout=poll_timeout)
        await app.start()
        try:
            yield app
        finally:
            if app.updater.running:
                await app.updater.stop()
            if app.running:
                await app.stop()
    finally:
        await app.shutdown()
        if app.post_shutdown:
            await app.post_shutdown(app)
