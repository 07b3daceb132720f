"""`python -m bot demo`, driven through pipes as a person (or a script) would drive it, and its price feed.

The demo runs as a real subprocess with a minimal environment (no token, no .env in its working folder), so
these tests prove it starts from nothing but the installed package, shows the real bot's replies with
numbered buttons, connects a demo key end to end, keeps the secrets out of its files and logs, and stops
cleanly on `:quit` and on end of input.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

import bot
from bot.sandbox.demo_feed import PriceFeed
from bot.sandbox.exchanges import make_books

REPO = Path(bot.__file__).resolve().parent.parent
STEP_TIMEOUT = 15.0


class DemoProcess:
    """A running `python -m bot demo` with its stdout read incrementally (no pipe can fill up)."""

    def __init__(self, cwd: Path, data_dir: Path) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(cwd),
            "PYTHONPATH": str(REPO),  # the code under test, installed or not
            "LOG_LEVEL": "DEBUG",  # the most talkative log, to search for secrets
        }
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "bot", "demo", "--data-dir", str(data_dir)],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.output = ""
        self.errors = ""
        self._seen = 0
        self._changed = threading.Condition()
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, "output"), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, "errors"), daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _drain(self, stream, attribute: str) -> None:
        for line in stream:
            with self._changed:
                setattr(self, attribute, getattr(self, attribute) + line)
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = STEP_TIMEOUT) -> re.Match[str]:
        """The first match of `pattern` in the output after the previous match; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        with self._changed:
            while True:
                found = regex.search(self.output, self._seen)
                if found:
                    self._seen = found.end()
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._alive_readers()):
                    raise AssertionError(
                        f"{pattern!r} not in the demo's output within {timeout}s.\n--- stdout\n{self.output}"
                        f"\n--- stderr\n{self.errors}"
                    )
                self._changed.wait(min(remaining, 0.2))

    def _alive_readers(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def type(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def end_input(self) -> None:
        self.proc.stdin.close()

    def finish(self, timeout: float = STEP_TIMEOUT) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            self.close()
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for thread in self._threads:
            thread.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()


@pytest.fixture
def demo(tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    process = DemoProcess(cwd, tmp_path / "data")
    yield process
    process.close()


def demo_keys_from_banner(output: str) -> dict[str, tuple[str, str]]:
    keys = {}
    for venue, pattern in (("binance", r"binance \(Spot and Futures\)"), ("kraken", "kraken")):
        found = re.search(pattern + r"\s+key\s+(\S+)\n\s+secret\s+(\S+)", output)
        assert found, f"the banner shows the {venue} demo key and secret"
        keys[venue] = (found.group(1), found.group(2))
    return keys


def test_a_number_typed_in_a_guided_step_is_text_even_where_a_button_has_that_number(demo):
    """Buttons are pressed with `#N`; a bare number is always the user's answer (here a budget of 2 at the step
    whose buttons are [#1] Back and [#2] Cancel: before, typing 2 pressed Cancel)."""
    demo.wait_for(r"Bot log: ")
    demo.type("/connect")
    demo.wait_for(r"\[#1\] Binance Spot")
    demo.type("#1")
    demo.wait_for(r"Now send the API key")
    demo.type(":key binance")
    demo.wait_for(r"Now send the secret")
    demo.type(":secret binance")
    demo.wait_for(r"Connected Binance Spot")
    demo.type("/allocate")
    demo.wait_for(r"Which account")
    demo.type("#1")
    demo.wait_for(r"Which strategy")
    demo.type("#1")
    demo.wait_for(r"Which market")
    demo.type("#1")
    demo.wait_for(r"What budget")
    demo.wait_for(r"\[#2\] Cancel")
    demo.type("2")
    demo.wait_for(r"you #\d+: 2\n")
    demo.wait_for(r"Budget 2 USDT\. Parameters of DCA")
    demo.type(":quit")
    assert demo.finish() == 0, demo.errors
    assert "pressed" not in demo.output.split("What budget")[-1], "no button was pressed after the budget question"
    assert "Cancelled" not in demo.output and "cancelled" not in demo.output


def every_file_bytes(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file())


def test_demo_chat_connects_the_demo_key_by_numbered_button_and_keeps_its_secret_out_of_files(demo, tmp_path):
    demo.wait_for(r"Strata offline demo")
    demo.wait_for(r"Bot log: ")
    keys = demo_keys_from_banner(demo.output)
    demo.type(":help")
    demo.wait_for(r":price SYMBOL PRICE")
    demo.type("#3")
    demo.wait_for(r"\(demo\) no message with buttons")
    assert "bot #" not in demo.output, "demo commands and a number without buttons are not sent to the bot"

    demo.type("/start")
    demo.wait_for(r"bot #\d+: Strata runs trading strategies")
    demo.type("/connect")
    demo.wait_for(r"Which exchange")
    demo.wait_for(r"\[#1\] Binance Spot")
    demo.wait_for(r"\[#2\] Binance Futures")
    demo.type("#1")
    demo.wait_for(r"Now send the API key")
    demo.type(":key binance")
    demo.wait_for(r"Now send the secret")
    demo.type(":secret binance")
    demo.wait_for(r"Connected Binance Spot")
    demo.type("/accounts")
    demo.wait_for(r"Your accounts")
    demo.wait_for(r"Your accounts — updated")
    demo.wait_for(r"10,000\.00 USDT")
    demo.type(":price BTC/USDT 70000")
    demo.wait_for(r"BTC/USDT is now 70000 on binance, binanceusdm")
    demo.type(":prices")
    demo.wait_for(r"binance\s+BTC/USDT\s+70000 \(scripted\)")
    demo.type(":quit")
    assert demo.finish() == 0, demo.errors

    output = demo.output
    assert "Demo stopped." in output
    assert "<b>" not in output and "</i>" not in output, "HTML is rendered as plain text"
    assert len(re.findall(r"\(the bot deleted your message #\d+\)", output)) >= 2, "key and secret deleted"
    api_key, secret = keys["binance"]
    assert secret not in output.split("=" * 78)[-1], "the secret is echoed as a placeholder, not in full"
    assert "Traceback" not in demo.errors

    data = tmp_path / "data"
    log = data / "demo.log"
    assert log.is_file() and log.stat().st_size > 0, "the bot logged (at DEBUG) into the data folder"
    assert "Traceback" not in log.read_text()
    blob = every_file_bytes(data)
    assert (data / "strata.db").is_file() and (data / "keystore.db").is_file()
    for value in (api_key, secret, *keys["kraken"]):
        for form in (value.encode(), value.encode().hex().encode(), base64.b64encode(value.encode())):
            assert form not in blob, "a demo key reached a file of the data folder (database or log)"


def test_a_newcomer_runs_a_paper_dca_and_a_paper_grid_in_the_demo_without_any_key(demo):
    demo.wait_for(r"Bot log: ")
    demo.type("/connect")
    demo.wait_for(r"Or press Paper to try first")
    menu = demo.wait_for(r"\[#(\d+)\] Paper\n")
    demo.type(f"#{menu.group(1)}")
    demo.wait_for(r"Which exchange's prices\?")
    demo.wait_for(r"\[#1\] Binance Spot")
    demo.type("#1")
    demo.wait_for(r"📝 Paper account paper opened")
    demo.wait_for(r"10,000\.00 USDT")
    demo.type(":price BTC/USDT 27400")  # a still market: the grid's levels below are known
    demo.wait_for(r"BTC/USDT is now 27400")
    demo.type("/allocate paper dca 100 BTC/USDT every=1d amount=20")
    demo.wait_for(r"Account: paper \(📝 Paper \(Binance Spot prices\)\)")
    demo.type("#1")
    demo.wait_for(r"DCA #1 on BTC/USDT · 📝 Paper is running")
    demo.wait_for(r"DCA #1 BTC/USDT · 📝 Paper: filled\n\s+Bought [\d.]+ BTC at 27,400\.00 USDT")
    demo.type("/allocate paper grid 1000 BTC/USDT low=26500 high=28500 levels=5")
    demo.wait_for(r"Strategy: Grid")
    demo.type("#1")
    demo.wait_for(r"Grid #2 on BTC/USDT · 📝 Paper is running")
    demo.type(":wait 3")  # its buys rest at 26,500 and 27,000
    demo.type(":price BTC/USDT 26900")
    demo.wait_for(r"Grid #2 BTC/USDT · 📝 Paper: filled\n\s+Bought [\d.]+ BTC at 27,000\.00 USDT")
    demo.type(":wait 3")  # its sell rests at 27,500
    demo.type(":price BTC/USDT 27600")
    demo.wait_for(r"Grid #2 BTC/USDT · 📝 Paper: filled\n\s+Sold [\d.]+ BTC at 27,500\.00 USDT")
    demo.wait_for(r"Realised P&L net of fees: \+[\d.]+ USDT on this fill")
    demo.type("/status")
    demo.wait_for(r"#2 Grid BTC/USDT · 📝 Paper on paper — ▶️ running")
    demo.type(":quit")
    assert demo.finish() == 0, demo.errors
    assert "Traceback" not in demo.errors


def test_demo_stops_cleanly_at_end_of_input(demo):
    demo.wait_for(r"Bot log: ")
    demo.type("/start")
    demo.end_input()
    demo.wait_for(r"Strata runs trading strategies")
    demo.wait_for(r"Demo stopped\.")
    assert demo.finish() == 0, demo.errors


def test_a_second_demo_on_the_same_data_folder_exits_non_zero_in_one_line(demo, tmp_path):
    demo.wait_for(r"Bot log: ")
    cwd = tmp_path / "cwd"

    second = DemoProcess(cwd, tmp_path / "data")
    code = second.finish(timeout=60)

    assert code != 0
    lines = second.errors.strip().splitlines()
    assert len(lines) == 1 and "data folder" in lines[0] and "Traceback" not in second.errors, second.errors
    assert "Bot log" not in second.output
    demo.type("/start")
    demo.wait_for(r"Strata runs trading strategies")  # the first demo is unaffected
    demo.end_input()
    assert demo.finish() == 0, demo.errors


# ---------------------------------------------------------------------------------------------- price feed
def test_price_feed_replays_recorded_candles_and_a_scripted_price_holds_until_resumed():
    books = make_books()
    feed = PriceFeed(books)
    assert ("BTC/USDT", "1m") in feed.feeds["binance"] and ("BTC/USDT:USDT", "1m") in feed.feeds[
        "binanceusdm"
    ]
    before = books["binance"].candles("BTC/USDT", "1m")
    feed.step()
    after = books["binance"].candles("BTC/USDT", "1m")
    assert len(after) == len(before) + 1, "one recorded candle more is visible"
    assert books["binance"].price("BTC/USDT") == after[-1].close != before[-1].close

    venues, _ = feed.set_price("btc/usdt", "70000")
    assert venues[:2] == ["binance", "binanceusdm"]
    feed.step()
    assert books["binance"].price("BTC/USDT") == Decimal(70000)
    assert books["binanceusdm"].price("BTC/USDT:USDT") == Decimal(70000)
    assert books["binance"].price("ETH/USDT") is not None
    feed.resume()
    feed.step()
    assert books["binance"].price("BTC/USDT") != Decimal(70000)


def test_price_feed_fills_a_resting_limit_order_the_scripted_price_crosses():
    books = make_books()
    book = books["binance"]
    book.add_key("k" * 64, "s" * 64, balances={"USDT": "10000"})
    price = book.price("BTC/USDT")
    limit = (price * Decimal("0.9")).quantize(Decimal("0.01"))
    order = book.place_order("k" * 64, "BTC/USDT", "buy", "limit", "0.01", limit)
    _, fills = PriceFeed(books).set_price("BTC/USDT", str(limit - 1))
    assert fills == 1 and book.find_order(order.id).status == "closed"


def test_price_feed_starts_a_finished_recording_again_from_its_middle():
    books = {"kraken": make_books(("kraken",))["kraken"]}
    feed = PriceFeed(books)
    book = books["kraken"]
    while book.advance("BTC/USD"):
        pass
    recorded = book.candles("BTC/USD", "1m")
    feed.step()
    assert len(book.candles("BTC/USD", "1m")) == len(recorded) // 2 + 1
    assert book.price("BTC/USD") == recorded[len(recorded) // 2].close
