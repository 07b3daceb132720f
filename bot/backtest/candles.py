"""Public candles for backtests: paged from the venue through the gateway, kept on disk per venue, market, timeframe.

A venue serves candles a page at a time (Binance Spot up to 1,000 per request from a start time; Kraken at most
its last 720, whatever older start is asked), so a range is read page by page, each a public call through the
gateway's shared client (the venue's request budget counts it like any other). What was read is kept in
`<data dir>/candles/<venue>/<BASE>_<QUOTE>-<timeframe>.json` with how far back the venue was asked: a later
backtest over the same range reads the file and asks the venue only for the candles that closed since, and a
venue that had nothing older is not asked again for it.

Only closed candles are kept (the open one still moves). Files are written whole to a temporary name then
renamed, so a crash never leaves half a file; an unreadable file is read again from the venue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.strategies.base import Candle
from bot.strategies.params import TIMEFRAMES

logger = logging.getLogger(__name__)

#: Candles per request, as each venue serves them (Binance klines: 1,000 at most; Kraken OHLC: 720, always the
#: latest ones); another venue gets ccxt's usual 500.
PAGE = {"binance": 1000, "kraken": 720}
DEFAULT_PAGE = 500
#: Never more requests than this for one range (a year of 1h candles on Binance is 9).
MAX_PAGES = 40


def step_ms(timeframe: str) -> int:
    return int(TIMEFRAMES[timeframe].total_seconds() * 1000)


class CandleStore:
    """Candles of (venue, symbol, timeframe) ranges, from the disk cache first, then from the venue."""

    def __init__(self, gateway: Any, directory: Path) -> None:
        self.gateway = gateway
        self.directory = directory
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = {}

    async def closed(self, venue: str, symbol: str, timeframe: str, since_ms: int, until_ms: int) -> list[Candle]:
        """The candles that opened at or after `since_ms` and closed by `until_ms`, oldest first."""
        step = step_ms(timeframe)
        key = (venue, symbol, timeframe)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # two users backtesting one market read the venue once
            asked_from, rows = await asyncio.to_thread(self._load, key)
            if not rows or since_ms < asked_from:
                fetched = await self._fetch(venue, symbol, timeframe, since_ms, until_ms, step)
                rows = _merge(rows, fetched)
                asked_from = since_ms if asked_from == 0 else min(asked_from, since_ms)
                await asyncio.to_thread(self._save, key, asked_from, rows)
            elif rows[-1][0] + 2 * step <= until_ms:  # a candle closed since the file was written
                fetched = await self._fetch(venue, symbol, timeframe, rows[-1][0] + step, until_ms, step)
                if fetched:
                    rows = _merge(rows, fetched)
                    await asyncio.to_thread(self._save, key, asked_from, rows)
        return [Candle.from_ccxt(r) for r in rows if since_ms <= r[0] and r[0] + step <= until_ms]

    async def _fetch(
        self, venue: str, symbol: str, timeframe: str, since_ms: int, until_ms: int, step: int
    ) -> list[list[Any]]:
        page = PAGE.get(venue, DEFAULT_PAGE)
        rows: list[list[Any]] = []
        since = since_ms
        for _ in range(MAX_PAGES):
            got = await self.gateway.fetch_ohlcv_page(venue, symbol, timeframe, since, page)
            fresh = [r for r in got if int(r[0]) >= since and int(r[0]) + step <= until_ms]
            if not fresh:
                break
            rows += fresh
            since = int(fresh[-1][0]) + step
            if since + step > until_ms or len(got) < page:
                break  # the range is read, or the venue had no more (Kraken's one page of its latest)
        return [[int(r[0]), *(str(v) for v in r[1:6])] for r in rows]

    def _path(self, key: tuple[str, str, str]) -> Path:
        venue, symbol, timeframe = key
        safe = symbol.replace("/", "_").replace(":", "_")
        return self.directory / venue / f"{safe}-{timeframe}.json"

    def _load(self, key: tuple[str, str, str]) -> tuple[int, list[list[Any]]]:
        path = self._path(key)
        try:
            data = json.loads(path.read_text())
            return int(data["asked_from"]), [[int(r[0]), *r[1:6]] for r in data["rows"]]
        except FileNotFoundError:
            return 0, []
        except (ValueError, KeyError, TypeError, IndexError):
            logger.warning("candle cache %s unreadable: reading the venue again", path)
            return 0, []

    def _save(self, key: tuple[str, str, str], asked_from: int, rows: list[list[Any]]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"asked_from": asked_from, "rows": rows}, separators=(",", ":")))
        os.replace(temporary, path)


def _merge(old: list[list[Any]], new: list[list[Any]]) -> list[list[Any]]:
    by_time = {int(r[0]): r for r in old}
    by_time.update({int(r[0]): r for r in new})
    return [by_time[t] for t in sorted(by_time)]


def utc_ms(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1000)
