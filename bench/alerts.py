"""Alert throughput: fills' alerts to distinct chats through the fake Telegram enforcing Telegram's limits.

The fake Bot API server runs in another process (`python -m bot.sandbox.telegram_server --limits`); this
process holds a real SQLite outbox with one fill alert per chat (half queued before the notifier starts, the
rest recorded while it sends, as fills would be), and the notifier sends them through a real
python-telegram-bot `Bot`. Ends with one JSON line:

    {"bench": "alerts", "msgs_per_s": …, "lost": …, "duplicated": …, "unhandled_429": …}

targets (DESIGN.md section 6): msgs_per_s ≥ 28, lost = duplicated = unhandled_429 = 0. `lost` counts
alerts the fake never received, `duplicated` extra copies it received, `unhandled_429` the 429s the fake
answered that the notifier did not honour (all 429s answered are reported as `rejected_429`).

Run: `python -m bench.alerts` (1,000 alerts to 1,000 chats, ~35 s) or `python -m bench.alerts --quick`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("PTB_TIMEDELTA", "true")  # PTB 22.x warns on every RetryAfter otherwise

import aiohttp
import telegram

from bot.notifier import Notifier
from storage.store import Store

TOKEN = "123456:BENCH-TOKEN"  # noqa: S105 - the fake server's token
FIRST_CHAT = 1_000_000


def start_fake_telegram() -> tuple[subprocess.Popen[str], str]:
    """Start the fake in its own process with limits on; return it and its root URL."""
    process = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "bot.sandbox.telegram_server", "--port", "0", "--token", TOKEN, "--limits"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("fake-telegram ready "):
        process.kill()
        raise RuntimeError(f"fake Telegram did not start: {line!r}")
    base_url = line.removeprefix("fake-telegram ready ")
    return process, base_url.removesuffix("/bot")


def pin_to_two_cores() -> str:
    """Pin this process (not the fake, started before) to cores 0 and 1, as DESIGN.md section 6 asks."""
    if not hasattr(os, "sched_setaffinity"):
        return "unpinned"
    cores = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(0, cores)
    return f"cores {cores}"


async def run(alerts: int, chats: int, data_dir: Path, fake_url: str, upfront: bool) -> dict[str, object]:
    chat_ids = [FIRST_CHAT + i for i in range(chats)]
    async with aiohttp.ClientSession() as control:
        async with control.post(f"{fake_url}/_sandbox/users", json={"user_ids": chat_ids}) as answer:
            answer.raise_for_status()

        store = await Store.open(data_dir / "main.db")
        try:
            for chat_id in chat_ids:
                await store.users.upsert(chat_id, chat_id)
            texts = [
                f"#{n} Bought 0.0015 BTC at 64,250.00 USDT (fee 0.09 USDT). Budget used 96.4/500."
                for n in range(alerts)
            ]
            expected = {text: chat_ids[n % chats] for n, text in enumerate(texts)}
            backlog = alerts if upfront else alerts // 2
            await queue_fills(store, texts[:backlog], expected)
            print(
                f"queued {backlog} fill alerts for {chats} chats; the rest arrive while sending", flush=True
            )

            async with telegram.Bot(TOKEN, base_url=f"{fake_url}/bot") as bot:
                notifier = Notifier(store, bot)
                started = time.perf_counter()
                await notifier.start()
                notifier.wake()
                trickle = asyncio.create_task(trickle_fills(store, notifier, texts[backlog:], expected))
                elapsed = await wait_until_settled(store, notifier, started, alerts)
                await trickle
                await notifier.stop()
            counts = await store.outbox.counts()
        finally:
            await store.close()

        async with control.get(f"{fake_url}/_sandbox/outbox", params={"after": "0"}) as answer:
            received = (await answer.json())["messages"]
        async with control.get(f"{fake_url}/_sandbox/stats") as answer:
            stats = await answer.json()

    copies = Counter(m["text"] for m in received if m["method"] == "sendMessage")
    misplaced = sum(1 for m in received if expected.get(m["text"], m["chat_id"]) != m["chat_id"])
    lost = sum(1 for text in expected if copies[text] == 0)
    duplicated = sum(n - 1 for n in copies.values() if n > 1)
    times = sorted(m["time"] for m in received)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {
        "bench": "alerts",
        "msgs_per_s": round(len(copies) / elapsed, 2) if elapsed else 0.0,
        "lost": lost,
        "duplicated": duplicated,
        "unhandled_429": max(0, stats["rejected_429"] - notifier.stats.rate_limited),
        "alerts": alerts,
        "chats": chats,
        "seconds": round(elapsed, 2),
        "steady_msgs_per_s": round((len(times) - 1) / span, 2) if span else 0.0,
        "rejected_429": stats["rejected_429"],
        "transient_failures": notifier.stats.transient_failures,
        "misplaced": misplaced,
        "outbox": counts,
    }


async def queue_fills(store: Store, texts: list[str], chat_of: dict[str, int]) -> None:
    """Queue fill alerts as the engine does: inside a write transaction, one alert per fill."""
    async with store.db.transaction() as tx:
        for text in texts:
            chat_id = chat_of[text]
            await store.outbox.enqueue(tx, user_id=chat_id, chat_id=chat_id, kind="fill", text=text)


async def trickle_fills(store: Store, notifier: Notifier, texts: list[str], chat_of: dict[str, int]) -> None:
    """Fills recorded while the notifier is busy: 10 per transaction, ~100 per second, each batch a wake()."""
    for start in range(0, len(texts), 10):
        await queue_fills(store, texts[start : start + 10], chat_of)
        notifier.wake()
        await asyncio.sleep(0.1)


async def wait_until_settled(store: Store, notifier: Notifier, started: float, alerts: int) -> float:
    """Print progress every second until nothing is pending; return the seconds since `started`."""
    last_report = started
    while True:
        await asyncio.sleep(0.05)
        now = time.perf_counter()
        settled = notifier.stats.sent + notifier.stats.undeliverable
        if notifier.pending_in_memory == 0 and settled >= alerts:
            if (await store.outbox.counts())["pending"] == 0:
                return now - started
        if now - last_report >= 1.0:
            last_report = now
            rate = notifier.stats.sent / (now - started)
            print(
                f"  {now - started:5.1f}s sent {notifier.stats.sent}/{alerts} ({rate:.1f} msg/s), "
                f"429s honoured {notifier.stats.rate_limited}",
                flush=True,
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size: 100 alerts to 100 chats")
    parser.add_argument("--alerts", type=int, help="number of fill alerts (default 1000, quick 100)")
    parser.add_argument("--chats", type=int, help="number of distinct chats (default: one per alert)")
    parser.add_argument("--upfront", action="store_true", help="queue every alert before starting")
    args = parser.parse_args(argv)
    alerts = args.alerts or (100 if args.quick else 1000)
    chats = min(args.chats or alerts, alerts)

    process, fake_url = start_fake_telegram()
    try:
        print(f"fake Telegram at {fake_url} (limits on); bench process {pin_to_two_cores()}", flush=True)
        with tempfile.TemporaryDirectory(prefix="strata-bench-alerts-") as data_dir:
            result = asyncio.run(run(alerts, chats, Path(data_dir), fake_url, args.upfront))
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        if process.poll() is None:
            process.kill()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
