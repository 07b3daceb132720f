"""Per-user ordering of updates: one user's updates run in order, other users are never held up by them."""

from __future__ import annotations

import asyncio

from telegram import Chat, Message, Update, User

from bot.update_order import PerUserUpdateProcessor


def update_from(user_id: int, update_id: int) -> Update:
    user = User(user_id, "u", False)
    message = Message(update_id, None, Chat(user_id, "private"), from_user=user)
    return Update(update_id, message=message)


async def test_a_flooding_user_does_not_hold_the_slots_other_users_need():
    processor = PerUserUpdateProcessor(max_concurrent_updates=2)
    await processor.initialize()
    order: list[tuple[int, int]] = []
    release = asyncio.Event()

    async def slow(user_id: int, n: int) -> None:
        order.append((user_id, n))
        await release.wait()

    async def fast(user_id: int, n: int) -> None:
        order.append((user_id, n))

    flood = [asyncio.create_task(processor.process_update(update_from(1, n), slow(1, n))) for n in range(5)]
    await asyncio.sleep(0.05)
    other = asyncio.create_task(processor.process_update(update_from(2, 99), fast(2, 99)))
    await asyncio.wait_for(other, 1)  # user 2 is served while user 1's first update still runs
    assert order == [(1, 0), (2, 99)]
    release.set()
    await asyncio.gather(*flood)
    assert [n for user, n in order if user == 1] == [0, 1, 2, 3, 4]
