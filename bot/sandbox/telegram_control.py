"""JSON control routes (`/_sandbox/...`) for driving a fake Telegram that runs in another process.

Benchmarks and the offline demo start `python -m bot.sandbox.telegram_server` and script it over HTTP with
the same verbs tests call in-process: register users, have them write or press buttons, block them, inject
faults, turn the flood limits on, and read back what the bot sent.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from bot.sandbox.telegram_world import TelegramWorld


def add_control_routes(app: web.Application, world: TelegramWorld) -> None:
    """Mount the control routes for `world` on `app`."""

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "calls": dict(world.calls),
                "sent": len(world.sent),
                "edited": len(world.edited),
                "deleted": len(world.deleted),
                "answered_callbacks": len(world.answered_callbacks),
                "rejected": len(world.rejected),
                "rejected_429": world.rejected_429,
                "pending_updates": world.pending_updates,
                "cursor": world.cursor(),
            }
        )

    async def outbox(request: web.Request) -> web.Response:
        after = int(request.query.get("after", "0"))
        # A photo's bytes are not JSON: its size in bytes stands for it.
        records = [{**dataclasses.asdict(record), "photo": None if record.photo is None else len(record.photo)}
                   for record in world.outbox[after:]]
        return web.json_response({"messages": records, "cursor": world.cursor()})

    async def users(request: web.Request) -> web.Response:
        body = await _body(request)
        ids = body.get("user_ids") or [body["user_id"]]
        added = [world.add_user(int(i), first_name=body.get("first_name"), username=body.get("username")) for i in ids]
        return web.json_response({"users": added})

    async def user_sends(request: web.Request) -> web.Response:
        body = await _body(request)
        message = world.user_sends(
            int(body["user_id"]),
            str(body["text"]),
            chat_id=body.get("chat_id"),
            chat_type=body.get("chat_type"),
            first_name=body.get("first_name"),
            username=body.get("username"),
        )
        return web.json_response({"message": message})

    async def press_button(request: web.Request) -> web.Response:
        body = await _body(request)
        try:
            query_id = world.press_button(
                int(body["user_id"]), int(body["message_id"]), body["button"], chat_id=body.get("chat_id")
            )
        except LookupError as error:
            raise web.HTTPNotFound(text=str(error)) from error
        return web.json_response({"callback_query_id": query_id})

    async def limits(request: web.Request) -> web.Response:
        world.enforce_limits(bool((await _body(request)).get("enabled", True)))
        return web.json_response({"ok": True})

    async def block(request: web.Request) -> web.Response:
        body = await _body(request)
        if body.get("blocked", True):
            world.block_user(int(body["chat_id"]))
        else:
            world.unblock_user(int(body["chat_id"]))
        return web.json_response({"ok": True})

    async def fail_next(request: web.Request) -> web.Response:
        body = await _body(request)
        world.fail_next(
            str(body["method"]),
            int(body["status"]),
            str(body["description"]),
            int(body.get("count", 1)),
            retry_after=body.get("retry_after"),
        )
        return web.json_response({"ok": True})

    app.router.add_get("/_sandbox/stats", stats)
    app.router.add_get("/_sandbox/outbox", outbox)
    app.router.add_post("/_sandbox/users", users)
    app.router.add_post("/_sandbox/user_sends", user_sends)
    app.router.add_post("/_sandbox/press_button", press_button)
    app.router.add_post("/_sandbox/limits", limits)
    app.router.add_post("/_sandbox/block", block)
    app.router.add_post("/_sandbox/fail_next", fail_next)


async def _body(request: web.Request) -> dict[str, Any]:
    body = await request.json() if request.can_read_body else {}
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="expected a JSON object")
    return body
