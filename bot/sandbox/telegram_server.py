"""A fake Telegram Bot API server on 127.0.0.1 for tests, benchmarks and the offline demo.

python-telegram-bot talks to it through `ApplicationBuilder().base_url(fake.base_url)`; requests arrive as
`/bot<TOKEN>/<method>`. In-process use (same event loop as the bot):

    async with FakeTelegram() as fake:
        fake.user_sends(42, "/start")
        reply = await fake.wait_for_message(42)

Standalone, for benchmarks: `python -m bot.sandbox.telegram_server --port 8081 --token 123:T [--limits]`
prints one ready line, then serves the Bot API plus the `/_sandbox/...` control routes until interrupted.
aiohttp's access log is off: it would print the token in every request line.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import signal
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from bot.sandbox.telegram_api import UNAUTHORIZED, UploadedFile, call, decode_params
from bot.sandbox.telegram_control import add_control_routes
from bot.sandbox.telegram_world import TelegramWorld

_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
_INVALID_JSON = {"ok": False, "error_code": 400, "description": "Bad Request: invalid JSON"}


class FakeTelegram(TelegramWorld):
    """A scripted TelegramWorld served over HTTP; see TelegramWorld for the scripting and records."""

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",  # noqa: S107 - a fake token for a fake server
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **world: Any,
    ) -> None:
        super().__init__(token, **world)
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Root URL of the server (control routes live under `/_sandbox/`)."""
        if self._runner is None:
            raise RuntimeError("FakeTelegram is not started")
        return f"http://{self._host}:{self._port}"

    @property
    def base_url(self) -> str:
        """PTB's `base_url`: the token and method are appended to it."""
        return f"{self.url}/bot"

    async def start(self) -> Self:
        """Listen on host:port (port 0 picks a free one; a restart after stop() reuses the same port)."""
        self.reopen()
        app = web.Application(client_max_size=_MAX_UPLOAD_BYTES)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        add_control_routes(app, self)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Release pending long polls and close the server."""
        self.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.match_info["token"].encode(), self.token.encode()):
            return web.json_response(UNAUTHORIZED, status=401)
        try:
            raw = await _read_fields(request)
        except ConnectionResetError:  # the client gave up mid-request (PTB cancels polls on shutdown)
            return web.Response(status=400)
        except ValueError:
            return web.json_response(_INVALID_JSON, status=400)
        status, payload = await call(self, request.match_info["method"], decode_params(raw))
        return web.json_response(payload, status=status)


async def _read_fields(request: web.Request) -> dict[str, Any]:
    """Query string plus body fields: JSON object, urlencoded form, or multipart with uploaded files."""
    raw: dict[str, Any] = dict(request.query)
    if request.can_read_body and request.content_type == "application/json":
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        raw.update(body)
    elif request.can_read_body:
        for key, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                raw[key] = UploadedFile(value.filename, value.content_type, value.file.read())
            else:
                raw[key] = value
    return raw


async def _serve(host: str, port: int, token: str, limits: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with FakeTelegram(token, host=host, port=port) as fake:
        fake.enforce_limits(limits)
        print(f"fake-telegram ready {fake.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Run the fake until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(description="Fake Telegram Bot API server (sandbox)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default="123456:TEST-TOKEN")
    parser.add_argument("--limits", action="store_true", help="enforce Telegram's flood limits")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port, args.token, args.limits))


if __name__ == "__main__":
    main()
