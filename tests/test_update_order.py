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


async def test_settled_waits_for_the_users_update_in_hand_and_no_longer_than_the_timeout():
    processor = PerUserUpdateProcessor()
    release = asyncio.Event()
    done: list[int] = []

    async def confirming() -> None:
        await release.wait()
        done.append(1)

    assert await processor.settled(1)  # nothing in hand
    running = asyncio.create_task(processor.process_update(update_from(1, 1), confirming()))
    await asyncio.sleep(0.01)
    assert not await processor.settled(1, timeout=0.05)
    assert await processor.settled(2, timeout=0.05)  # another user's updates are not waited for
    waiter = asyncio.create_task(processor.settled(1))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    release.set()
    assert await asyncio.wait_for(waiter, 1) and done == [1]
    await running
