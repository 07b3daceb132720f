"""`python -m bot demo`: try the real bot offline, chatting with it in this terminal.

Starts, on 127.0.0.1 random ports in this process: the fake Telegram Bot API, the fake exchanges (Binance
Spot, Binance USD-M Futures, Kraken) with one funded, trade-only demo key per venue, a price feed replaying
real recorded market data, and the same Application `python -m bot run` builds, configured only through the
documented environment variables (pointed at the fakes). Then every line the person types is sent as a
private-chat message from a demo user, and what the bot sends, edits and deletes is printed back. No token,
no network, no account needed; works from a fresh clone after `pip install .`.

The demo's own commands start with `:` (see `HELP`); `#N` presses button [#N] of the latest message with
buttons, and any other line, a bare number included, is sent as the person's message (a budget typed in a
guided step is an answer, never a press).
Only `LOG_LEVEL` is taken from the caller's environment (default WARNING); logs go to `demo.log` in the data
folder so they never garble the chat.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from telegram.ext import Application

from bot.config import load_settings
from bot.redaction import configure_logging, register_secret
from bot.sandbox.demo_chat import BUTTON_PREFIX, ChatView, LineReader
from bot.sandbox.demo_feed import PriceFeed
from bot.sandbox.exchanges import FakeExchanges, start_fake_exchanges
from bot.sandbox.lifecycle import lifecycle
from bot.sandbox.telegram_server import FakeTelegram
from storage.files import ensure_private_dir
from storage.lock import ProcessLocks

DEMO_USER_ID = 4242
DEMO_USER_NAME = "Demo"
FEED_INTERVAL_SECONDS = 2.0
LOG_FILE = "demo.log"
_SEED_FILE = "demo-keys.seed"
_VENUE_NAMES = {"binance": "Binance Spot", "binanceusdm": "Binance Futures", "kraken": "Kraken"}

#: What each demo key holds, per venue book (a Binance key works on spot and futures, as a real one does).
BALANCES = {
    "binance": {"USDT": "10000", "BTC": "0.25", "ETH": "2"},
    "binanceusdm": {"USDT": "10000"},
    "kraken": {"USD": "10000", "USDT": "5000", "BTC": "0.25"},
}

HELP = """\
Demo commands (any other line is sent to the bot as your message):
  #1, #2, ...           press button [#1], [#2]... of the latest message with buttons (also :press N);
                        a bare number is sent as text (e.g. a budget: 50)
  :key VENUE            send the demo API key of binance, futures or kraken as your message
  :secret VENUE         send that venue's demo secret as your message
  :keys                 show the demo keys again
  :price SYMBOL PRICE   set a price on every venue listing SYMBOL and pause its replay,
                        e.g. :price BTC/USDT 27000 (limit orders it crosses fill)
  :prices               current prices
  :feed on|off          resume (scripted symbols too) or pause the market replay
  :step [N]             advance the market replay N candles now
  :wait [SECONDS]       read no input for a while (scripts: let fills and alerts arrive)
  :say TEXT             send TEXT as it is (e.g. a line starting with ':' or '#')
  :help                 this list
  :quit                 stop the demo (Ctrl-D too)"""


@dataclass(frozen=True)
class DemoKey:
    """A demo API key pair registered on the fake venues it names."""

    name: str
    venues: tuple[str, ...]
    api_key: str
    secret: str


def demo_keys(seed: bytes) -> dict[str, DemoKey]:
    """The demo's key pairs, derived from `seed`, shaped like the real venues' (the bot checks the format)."""

    def derive(label: str) -> bytes:
        return hmac.new(seed, label.encode(), hashlib.sha512).digest()

    return {
        "binance": DemoKey(
            "binance",
            ("binance", "binanceusdm"),
            derive("binance-key").hex()[:64],
            derive("binance-secret").hex()[:64],
        ),
        "kraken": DemoKey(
            "kraken",
            ("kraken",),
            base64.b64encode(derive("kraken-key")[:42]).decode(),
            base64.b64encode(derive("kraken-secret")).decode(),
        ),
    }


_KEY_ALIASES = {"binance": "binance", "spot": "binance", "binanceusdm": "binance", "futures": "binance"}
_KEY_ALIASES["kraken"] = "kraken"


def run_demo(data_dir: Path | None = None) -> int:
    """Run the demo until :quit, end of input or Ctrl-C; return the exit status (0)."""
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    with _data_folder(data_dir) as (folder, temporary), ProcessLocks(folder, folder / "keystore.db"):
        # The demo's settings keep the default key store in its folder (demo_environment sets no path).
        return asyncio.run(_demo(folder, temporary))


@contextlib.contextmanager
def _data_folder(data_dir: Path | None) -> Iterator[tuple[Path, bool]]:
    if data_dir is not None:
        folder = data_dir.expanduser().resolve()
        ensure_private_dir(folder)
        yield folder, False
        return
    with tempfile.TemporaryDirectory(prefix="strata-demo-") as tmp:
        folder = Path(tmp) / "data"
        ensure_private_dir(folder)
        yield folder, True


def _seed(folder: Path) -> bytes:
    """The seed of the demo keys, kept in the data folder so a kept folder's stored keys stay valid."""
    path = folder / _SEED_FILE
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    seed = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(seed.hex() + "\n")
    return seed


def demo_environment(
    tg: FakeTelegram, exchanges: FakeExchanges, folder: Path, *, temporary: bool
) -> dict[str, str]:
    """The bot's configuration, exactly the variables an operator would set (DESIGN.md section 4)."""
    env = {
        "TELEGRAM_BOT_TOKEN": tg.token,
        "TELEGRAM_API_URL": tg.base_url,
        "STRATA_EXCHANGE_URLS": exchanges.exchange_urls,
        "STRATA_DATA_DIR": str(folder),
        "STRATA_FILL_POLL_SECONDS": "2",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "").strip() or "WARNING",
    }
    if temporary:
        env["STRATA_MASTER_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    # A kept folder keeps the master key the bot generates there, so its key store opens on the next run.
    return env


def _out(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        pass


async def _demo(folder: Path, temporary: bool) -> int:
    keys = demo_keys(_seed(folder))
    log_path = folder / LOG_FILE
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as log_stream:
        token = f"{secrets.randbelow(9 * 10**9) + 10**9}:{secrets.token_urlsafe(26)}"
        tg = FakeTelegram(token, bot_username="strata_demo_bot")
        await tg.start()
        exchanges = await start_fake_exchanges()
        handler = None
        try:
            for key in keys.values():
                for venue in key.venues:
                    if venue in exchanges.books:
                        exchanges.books[venue].add_key(key.api_key, key.secret, balances=BALANCES[venue])
            settings = load_settings(
                demo_environment(tg, exchanges, folder, temporary=temporary), dotenv=False
            )
            register_secret(settings.require_token())
            handler = configure_logging(settings.log_level, stream=log_stream)
            from bot.app import build_application, preflight

            await preflight(settings)
            app = build_application(settings)
            feed = PriceFeed(exchanges.books, FEED_INTERVAL_SECONDS)
            async with lifecycle(app):
                feed.start()
                try:
                    _out(_banner(keys, list(exchanges.books), folder, temporary, log_path))
                    await DemoSession(tg, app, feed, keys).run()
                finally:
                    await feed.stop()
            _out("Demo stopped.")
        finally:
            await exchanges.close()
            await tg.stop()
            if handler is not None:
                import logging

                logging.getLogger().removeHandler(handler)
    return 0


def _banner(keys: dict[str, DemoKey], venue_ids: list[str], folder: Path, temporary: bool, log: Path) -> str:
    venues = ", ".join(_VENUE_NAMES.get(v, v) for v in venue_ids)
    where = (
        f"{folder} (temporary: deleted at exit; --data-dir DIR keeps it)"
        if temporary
        else f"{folder} (kept; the fake exchanges start afresh on every run)"
    )
    lines = [
        "=" * 78,
        "Strata offline demo: the real bot, chatting with you through a fake Telegram, trading on fake",
        f"exchanges ({venues}) on this machine. No token, no network, no real money.",
        f"Prices replay recorded minutes (Binance, April 2023), one per {FEED_INTERVAL_SECONDS:g} s, on every venue.",
        "",
        "Demo API keys (trade-only, no withdrawals; funded with 10,000 USDT/USD and some BTC/ETH):",
        *_key_lines(keys),
        "",
        "First steps (type a line, press Enter):",
        "  /start             the welcome message",
        "  /connect           then type #1 to press [#1] Binance Spot",
        "  :key binance       sends the demo API key as your message (the bot deletes it)",
        "  :secret binance    sends the demo secret: the bot checks it on the fake exchange",
        "  /accounts          your accounts and balances",
        "  /help              everything the bot can do, e.g. (then #1 to press Confirm)",
        "                     /allocate binance dca 100 BTC/USDT every=1m amount=20",
        "  /backtest dca 1000 BTC/USDT every=1d amount=50 days=90   a replay over past candles (no account needed)",
        "  :prices            the replayed market; :price BTC/USDT 27000 moves it (limit orders fill)",
        "Type #N to press button [#N] (a bare number is text); :help lists the demo's commands; :quit ends it.",
        f"Data folder: {where}",
        f"Bot log: {log}",
        "=" * 78,
    ]
    return "\n".join(lines)


def _key_lines(keys: dict[str, DemoKey]) -> list[str]:
    lines = []
    for key in keys.values():
        label = "binance (Spot and Futures)" if key.name == "binance" else key.name
        lines.append(f"  {label:27} key     {key.api_key}")
        lines.append(f"  {'':27} secret  {key.secret}")
    return lines


class DemoSession:
    """The terminal chat: turn each input line into a message, a button press or a demo command."""

    def __init__(self, tg: FakeTelegram, app: Application, feed: PriceFeed, keys: dict[str, DemoKey]) -> None:
        self.tg = tg
        self.app = app
        self.feed = feed
        self.keys = keys
        self.view = ChatView(tg, DEMO_USER_ID, _out)
        self.reader = LineReader()
        self.echo = not sys.stdin.isatty()
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGINT, self._interrupt)
        self.tg.add_user(DEMO_USER_ID, first_name=DEMO_USER_NAME, username="demo_user")
        self.reader.start()
        self.view.start()
        try:
            while True:
                line = await self.reader.readline()
                if line is None:
                    break
                if not await self.handle(line.strip()):
                    break
        finally:
            self.reader.stop()
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signal.SIGINT)
            await self.view.stop()

    def _interrupt(self) -> None:
        self.stopping.set()
        self.reader.finish()

    async def settle(self, limit: float = 30.0) -> None:
        """Wait until the bot has fetched and handled everything sent so far, so scripted input stays in step.

        A pipe delivers the next line at once; without this a button number could be read before the bot
        sent the message whose button it means.
        """

        async def handled() -> None:
            # acknowledged only after PTB queued the update; the fake offers no event for it
            while self.tg.pending_updates:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            await self.app.update_queue.join()  # task_done() comes after the handlers finished

        waiter = asyncio.ensure_future(handled())
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait((waiter, stop), timeout=limit, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stop):
                task.cancel()
        await self.view.wait_quiet()

    async def handle(self, line: str) -> bool:
        """Act on one input line; False ends the demo."""
        if not line:
            return True
        if line.startswith(BUTTON_PREFIX) and line[len(BUTTON_PREFIX) :].isdigit():
            await self.press(int(line[len(BUTTON_PREFIX) :]))
            return True
        if not line.startswith(":"):
            await self.send(line, echo=line)
            return True
        command, _, rest = line[1:].partition(" ")
        command, rest = command.lower(), rest.strip()
        if command in ("quit", "exit", "q"):
            return False
        handler = getattr(self, f"_cmd_{command}", None)
        if handler is None:
            _out(f"(demo) unknown command :{command}; :help lists them")
        else:
            await handler(rest)
        return True

    async def send(self, text: str, *, echo: str) -> None:
        self.view.flush()
        message = self.tg.user_sends(DEMO_USER_ID, text, first_name=DEMO_USER_NAME, username="demo_user")
        self.view.user_message_ids.add(message["message_id"])
        if self.echo:
            _out(f"you #{message['message_id']}: {echo}")
        await self.settle()

    async def press(self, number: int) -> None:
        message = self.view.latest_with_buttons()
        if message is None:
            _out("(demo) no message with buttons to press")
            return
        self.view.flush()
        try:
            self.tg.press_button(DEMO_USER_ID, message["message_id"], number - 1)
        except LookupError:
            _out(f"(demo) message #{message['message_id']} has no button [{BUTTON_PREFIX}{number}]")
            return
        if self.echo:
            _out(f"you: pressed [{BUTTON_PREFIX}{number}] on #{message['message_id']}")
        await self.settle()

    def _key(self, venue: str) -> DemoKey | None:
        name = _KEY_ALIASES.get(venue.lower() or "binance")
        if name is None or name not in self.keys:
            _out("(demo) which venue? :key binance | futures | kraken")
            return None
        return self.keys[name]

    async def _cmd_key(self, rest: str) -> None:
        key = self._key(rest)
        if key is not None:
            await self.send(key.api_key, echo=f"<the {key.name} demo API key>")

    async def _cmd_secret(self, rest: str) -> None:
        key = self._key(rest)
        if key is not None:
            await self.send(key.secret, echo=f"<the {key.name} demo secret>")

    async def _cmd_keys(self, rest: str) -> None:
        _out("\n".join(_key_lines(self.keys)))

    async def _cmd_press(self, rest: str) -> None:
        if not rest.isdigit():
            _out("(demo) usage: :press N")
            return
        await self.press(int(rest))

    async def _cmd_say(self, rest: str) -> None:
        if rest:
            await self.send(rest, echo=rest)

    async def _cmd_help(self, rest: str) -> None:
        _out(HELP)

    async def _cmd_price(self, rest: str) -> None:
        parts = rest.split()
        if len(parts) != 2:
            _out("(demo) usage: :price BTC/USDT 70000")
            return
        try:
            venues, fills = self.feed.set_price(parts[0], parts[1])
        except ValueError as err:
            _out(f"(demo) {err}")
            return
        filled = f"; {fills} resting order(s) filled" if fills else ""
        where = ", ".join(venues)
        _out(f"(demo) {parts[0].upper()} is now {parts[1]} on {where}{filled} (:feed on resumes the replay)")
        if fills:  # the bot sees them at its next fill check
            await self.view.wait_quiet(quiet=FEED_INTERVAL_SECONDS * 1.5, limit=FEED_INTERVAL_SECONDS * 3)

    async def _cmd_prices(self, rest: str) -> None:
        paused = "" if self.feed.running else " (replay paused)"
        _out(f"(demo) prices after {self.feed.steps} replay step(s){paused}:")
        for venue, symbol, price in self.feed.prices():
            mark = " (scripted)" if (venue, symbol) in self.feed.paused else ""
            _out(f"  {venue:12} {symbol:15} {price:f}{mark}")

    async def _cmd_feed(self, rest: str) -> None:
        if rest.lower() == "off":
            self.feed.running = False
            _out("(demo) market replay paused")
        elif rest.lower() in ("on", ""):
            self.feed.resume()
            _out("(demo) market replay running")
        else:
            _out("(demo) usage: :feed on | :feed off")

    async def _cmd_wait(self, rest: str) -> None:
        try:
            seconds = min(max(float(rest or "5"), 0.0), 600.0)
        except ValueError:
            _out("(demo) usage: :wait SECONDS")
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)
        self.view.flush()

    async def _cmd_step(self, rest: str) -> None:
        count = int(rest) if rest.isdigit() else 1
        for _ in range(max(1, min(count, 1000))):
            self.feed.step()
        await self._cmd_prices("")
