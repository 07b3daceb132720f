"""The offline demo's terminal side: read the person's lines from stdin, show the bot's side of the chat.

Lines come from stdin without blocking the event loop (a terminal, a pipe or a file), so the bot keeps running
while the person types and the demo can be scripted with `printf '/start\n' | python -m bot demo`. The bot's
messages and edits are read back from the fake Telegram's records and printed as the person would see them in
Telegram: HTML rendered as plain text, inline buttons numbered `[#1]`, `[#2]`… so typing `#1` presses one (a bare
number is text: an answer such as a budget).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from bot.sandbox.telegram_records import BotMessage
from bot.sandbox.telegram_world import TelegramWorld

_INDENT = "     "
#: Typed before a button's number to press it: `#2`. A line of digits alone is sent as text.
BUTTON_PREFIX = "#"


class LineReader:
    """stdin as an async source of lines; `readline()` returns None at end of input (or after `finish()`)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdin
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._fd: int | None = None
        self._ended = False

    def start(self) -> None:
        """Watch stdin on the loop (terminals, pipes); use a thread for what epoll refuses (files)."""
        loop = asyncio.get_running_loop()
        fd = self._stream.fileno()
        try:
            loop.add_reader(fd, self._readable, fd)
            self._fd = fd
        except (PermissionError, ValueError, NotImplementedError):
            threading.Thread(target=self._read_blocking, args=(loop,), name="demo-stdin", daemon=True).start()

    def stop(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None

    async def readline(self) -> str | None:
        return await self._queue.get()

    def finish(self) -> None:
        """End the input as EOF would (Ctrl-C, a closed output)."""
        self._queue.put_nowait(None)

    def _readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        if self._ended:
            return
        self._pending += self._decoder.decode(data, final=not data)
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._queue.put_nowait(line.rstrip("\r"))
        if not data:
            if self._pending:
                self._queue.put_nowait(self._pending)
            self._ended = True
            self.stop()
            self._queue.put_nowait(None)

    def _read_blocking(self, loop: asyncio.AbstractEventLoop) -> None:
        buffer = getattr(self._stream, "buffer", None)
        while True:
            data = buffer.read1(65536) if buffer is not None else self._stream.readline().encode()
            loop.call_soon_threadsafe(self._feed, data)
            if not data:
                return


class ChatView:
    """Print what the bot does in one private chat, in order, from the fake Telegram's records."""

    def __init__(self, tg: TelegramWorld, chat_id: int, out: Callable[[str], None]) -> None:
        self.tg = tg
        self.chat_id = chat_id
        self.out = out
        self.user_message_ids: set[int] = set()
        self._outbox_seen = 0
        self._deleted_seen = 0
        self._answers_seen = 0
        self._task: asyncio.Task[None] | None = None

    def _saved(self, record: BotMessage) -> str:
        """Write a photo the bot sent to a file the person can open (a terminal shows no pictures): ": <path>"."""
        if not record.photo:
            return ""
        folder = Path(tempfile.gettempdir()) / "strata-demo-pictures"
        folder.mkdir(exist_ok=True)
        path = folder / f"chat{record.chat_id}-message{record.message_id}.png"
        path.write_bytes(record.photo)
        return f": {path}"

    def activity(self) -> int:
        """A counter that grows with everything the bot does (send, edit, delete, answer a button)."""
        return len(self.tg.outbox) + len(self.tg.deleted) + len(self.tg.answered_callbacks)

    def start(self, interval: float = 0.05) -> None:
        self._task = asyncio.create_task(self._run(interval), name="demo-chat-view")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush()

    async def wait_quiet(self, quiet: float = 0.2, limit: float = 2.0) -> None:
        """Wait until the bot did nothing for `quiet` seconds (at most `limit`), then print what it did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        last, last_change = self.activity(), loop.time()
        while loop.time() < deadline and loop.time() - last_change < quiet:
            await asyncio.sleep(0.05)
            now = self.activity()
            if now != last:
                last, last_change = now, loop.time()
        self.flush()

    def flush(self) -> None:
        """Print every record not printed yet, in the order the bot did things."""
        pending: list[tuple[float, str]] = []
        outbox = self.tg.outbox[self._outbox_seen :]
        self._outbox_seen += len(outbox)
        pending += [(r.time, self.render(r)) for r in outbox if r.chat_id == self.chat_id]
        deleted = self.tg.deleted[self._deleted_seen :]
        self._deleted_seen += len(deleted)
        for gone in deleted:
            if gone.chat_id == self.chat_id:
                whose = "your message" if gone.message_id in self.user_message_ids else "its message"
                pending.append((gone.time, f"(the bot deleted {whose} #{gone.message_id})"))
        answers = self.tg.answered_callbacks[self._answers_seen :]
        self._answers_seen += len(answers)
        for answer in answers:
            if answer.text:
                pending.append((answer.time, f"({'alert' if answer.show_alert else 'notice'}) {answer.text}"))
        for _, text in sorted(pending, key=lambda item: item[0]):
            self.out(text)

    def render(self, record: BotMessage) -> str:
        """One bot message or edit as text lines, its inline buttons numbered from 1."""
        method = record.method.lower()
        live = self.tg.message(record.chat_id, record.message_id) or {}
        if method == "editmessagereplymarkup":
            head = f"bot (buttons of #{record.message_id} changed)"
            body = ""
        else:
            edited = method.startswith("edit")
            head = f"bot #{record.message_id}" + (" (edited)" if edited else "")
            body = record.plain_text or live.get("text") or live.get("caption") or ""
            if method == "sendphoto":
                body = f"[picture{self._saved(record)}] " + body
        lines = body.split("\n") if body else []
        text = f"{head}: {lines[0]}" if lines else head + ":"
        text += "".join("\n" + f"{_INDENT}{line}".rstrip() for line in lines[1:])
        keyboard = button_lines(record.reply_markup)
        if keyboard:
            text += "".join(f"\n{_INDENT}{line}" for line in keyboard)
        elif method == "editmessagereplymarkup":
            text += " buttons removed"
        return text

    def latest_with_buttons(self) -> dict[str, Any] | None:
        """The most recent bot message in the chat that still has inline buttons, as it now stands."""
        for record in reversed(self.tg.outbox):
            if record.chat_id != self.chat_id:
                continue
            live = self.tg.message(record.chat_id, record.message_id)
            if live is not None and inline_buttons(live.get("reply_markup")):
                return live
        return None

    async def _run(self, interval: float) -> None:
        while True:
            self.flush()
            await asyncio.sleep(interval)


def inline_buttons(markup: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = (markup or {}).get("inline_keyboard") or []
    return [button for row in rows for button in row]


def button_lines(markup: dict[str, Any] | None) -> list[str]:
    """Keyboard rows as `[#1] Spot  [#2] Futures`, numbered across rows as press_button's index counts (+1).

    The `#` is what the person types to press (`#2`), so a bare number stays an answer, never a press.
    """
    rows = (markup or {}).get("inline_keyboard") or []
    lines, number = [], 0
    for row in rows:
        cells = []
        for button in row:
            number += 1
            label = f"[{BUTTON_PREFIX}{number}] {button.get('text', '')}"
            if "url" in button:
                label += f" ({button['url']})"
            cells.append(label)
        if cells:
            lines.append("  ".join(cells))
    return lines
