"""Process a user's updates one at a time, in arrival order, while different users run concurrently.

With plain concurrent updates, a user who sends the API key and the secret in quick succession could have the
secret handled before the key, and a double-tapped "Confirm" could run twice at once. Serialising per user
keeps every flow a sequence without letting one slow exchange call hold up everybody else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor


class PerUserUpdateProcessor(BaseUpdateProcessor):
    def __init__(self, max_concurrent_updates: int = 256) -> None:
        super().__init__(max_concurrent_updates)
        self._locks: dict[int, asyncio.Lock] = {}
        self._waiting: dict[int, int] = {}

    async def process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        """Wait for the user's turn first, then for a concurrency slot.

        The other order would let one user who floods the bot hold every slot while their updates wait on
        each other, stalling everyone else.
        """
        key = _user_key(update)
        if key is None:
            await super().process_update(update, coroutine)
            return
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with lock:
                await super().process_update(update, coroutine)
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:  # forget idle users so the table stays small
                del self._waiting[key]
                self._locks.pop(key, None)

    async def settled(self, user_id: int, timeout: float = 30.0) -> bool:  # noqa: ASYNC109 - a plain bound reads best
        """Wait until the update of `user_id` being handled now, if any, is done (False: it outlasted `timeout`).

        An admin's block waits for it: an order the user was confirming at that moment is then cancelled with
        the rest, and every later update of theirs meets the block in the guard.
        """
        lock = self._locks.get(user_id)
        if lock is None or not lock.locked():
            return True
        try:
            async with asyncio.timeout(timeout), lock:
                return True
        except TimeoutError:
            return False

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        await coroutine

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


def _user_key(update: object) -> int | None:
    if isinstance(update, Update):
        if update.effective_user is not None:
            return update.effective_user.id
        if update.effective_chat is not None:
            return update.effective_chat.id
    return None
