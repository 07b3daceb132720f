"""Fill → alert latency: resting orders filled by the fake at random times, pushed by streams or polled.

Set-up (not measured): the fake venues run in another process with one sandbox key per account; each
account (stored like /connect does) gets `--per-account` grids whose ladder is one resting buy limit 10 %
under the price, placed by a first run of the engine. Default: 1,000 accounts × 1 order in `--mode stream`
(the venue's user-data stream pushes fills; polling is a 5-minute safety sweep), 100 × 10 in `--mode poll`
(STRATA_STREAMS=off: every fill is polled).

Measured: a fresh gateway and engine (the real rate budgets, `STRATA_FILL_POLL_SECONDS` = `--poll`) run as
in production — scheduler, grids re-running every minute, the fill poller, the streams. In stream mode the
bench first waits until every account's subscription is live and its first backfill done (the figures printed
as "start-up"). It then fills every resting order through the fake's control API at a uniformly random time
within `--spread` seconds, noting the time just BEFORE asking (so latency is never understated), and reads
the fill alerts the engine enqueues in the outbox (their `created_at`, written in the fill's own transaction).
Latency = enqueue time − fill time; the alert is not sent here (bench/alerts.py measures sending). In stream
mode the fake drops every stream connection `--drop-at` seconds into the fills (default: half-way): the fills
in the gap reach the bot through the backfill on re-subscription, and the connection attempts of the reconnect
are counted against Binance's 300 per 5 minutes per IP.

Fill-tracking weight is read from the fake Binance's own counters: the weight of the endpoints that track fills
(`myTrades`, `order` lookups, `openOrders`, `allOrders`) spent from the first fill to the last alert, split
into the steady part and the re-subscription backfill after the drop.

Ends with one JSON line: {"bench": "latency", "poll_s", "p50_s", "p95_s", "max_s", "mode",
"fill_tracking_weight", "reconnects", …}. Targets: stream p95 ≤ 1 s with fill-tracking weight ≈ 0 and
reconnects within 300 per 5 minutes (issue 21); poll p95 ≤ poll_s + 1 (DESIGN.md section 6).
Venues: `binance` (WebSocket API, 1,000 subscriptions on one connection), `binanceusdm` (a listenKey per account,
several on one `/private` connection, subscribed at 8 per second) and `kraken` (one connection per account, at
most 150 connection attempts per 10 minutes per IP: 1,000 accounts take about an hour to subscribe, so
`--startup-wait` bounds the wait and the fills start with the accounts streamed by then, the others polled; the
latency is then also printed per kind of account, as `streamed_p95_s` and `polled_p95_s`).
Run: `python bench/latency.py --venue binance` (~8 min) or `python bench/latency.py --quick` (CI size).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import (
    Fakes,
    Plan,
    RecordingBudgets,
    World,
    connect_accounts,
    cpu_seconds,
    create_strategies,
    fresh_weight_window,
    grid_params,
    lifted_budgets,
    machine,
    open_world,
    pin_to_two_cores,
    prices,
    result_line,
    run_all,
    say,
    start_fakes,
    user_of,
)
from bot.engine.context import utc_now
from bot.exchanges.streams import PROTOCOLS
from bot.exchanges.venues import adapter

SYMBOLS = {"binance": "BTC/USDT", "binanceusdm": "BTC/USDT:USDT", "kraken": "BTC/USDT"}
#: Venues whose fake counts Binance request weight per IP and minute.
WEIGHED = ("binance", "binanceusdm")
STRATEGY_IN_ALERT = re.compile(r"#(\d+) ")
#: The fake venues' endpoints that track fills (not those placing orders, reading balances or prices).
FILL_TRACKING = {
    "GET /api/v3/myTrades", "GET /api/v3/order", "GET /api/v3/openOrders", "GET /api/v3/allOrders",
    "GET /fapi/v1/userTrades", "GET /fapi/v1/order", "GET /fapi/v1/openOrders", "GET /fapi/v1/allOrders",
    "POST /0/private/OpenOrders", "POST /0/private/ClosedOrders", "POST /0/private/QueryOrders",
    "POST /0/private/TradesHistory",
}


def attempt_limit(venue: str) -> tuple[int, float]:
    """The venue's connection attempts allowed per IP and their window, as its stream protocol models them
    (Binance Spot and USD-M: 300 per 5 minutes; Kraken: 150 per 10 minutes)."""
    known = PROTOCOLS[adapter(venue).user_stream]
    return known.attempt_limit, known.attempt_window


async def populate(data_dir: Path, fakes: Fakes, venue: str, accounts: int, per_account: int) -> int:
    world = await open_world(data_dir, fakes.exchange_urls, budgets=lifted_budgets(), streams=False)
    try:
        symbol = SYMBOLS[venue]
        account_ids = await connect_accounts(world, range(accounts), venue)
        price = (await prices(world, venue, [symbol]))[symbol]
        plans = [
            Plan(account_id, user_of(n), "grid", symbol, Decimal(100), grid_params(price))
            for n, account_id in enumerate(account_ids)
            for _ in range(per_account)
        ]
        ids = await create_strategies(world, plans, now=utc_now())
        seconds = await run_all(ids, world.engine.run_strategy, label="ladders")
        row = await world.store.db.fetchone("SELECT COUNT(*) AS n FROM orders WHERE status = 'open'")
        say(f"{len(ids)} grids on {accounts} {venue} accounts armed in {seconds:.1f}s: {row['n']} resting orders")
        assert row["n"] == len(ids), "every grid must rest exactly one buy"
        return row["n"]
    finally:
        await world.close()


class Tracking:
    """Fill-tracking requests and weight the fake counted, between two snapshots of its counters."""

    def __init__(self, fakes: Fakes, venue: str) -> None:
        self.fakes, self.venue = fakes, venue

    async def snapshot(self) -> tuple[Counter[str], Counter[str]]:
        stats = await self.fakes.stats(self.venue)
        return Counter(stats["requests"]), Counter(stats.get("weight_by_path", {}))

    @staticmethod
    def spent(before: tuple[Counter[str], Counter[str]], after: tuple[Counter[str], Counter[str]]) -> dict[str, Any]:
        requests = {k: after[0][k] - before[0][k] for k in FILL_TRACKING if after[0][k] > before[0][k]}
        weight = sum(after[1][k] - before[1][k] for k in FILL_TRACKING)
        return {"weight": weight, "requests": sum(requests.values()), "by_endpoint": requests}


def most_in_window(times: list[float], window: float) -> int:
    """The most attempts within any `window` seconds."""
    times = sorted(times)
    best, left = 0, 0
    for right, at in enumerate(times):
        while times[left] <= at - window:
            left += 1
        best = max(best, right - left + 1)
    return best


async def wait_streamed(world: World, account_ids: set[int], limit_s: float, *, partial: bool = False) -> float:
    """Wait until every account's subscription is live and the backfills it triggered are done (`partial`: past
    `limit_s`, go on with those live by then; the others are polled)."""
    streams = world.engine.streams
    assert streams is not None
    started = time.monotonic()
    last = started
    while True:
        live = sum(1 for a in account_ids if streams.streamed(a))
        if live == len(account_ids):
            break
        if time.monotonic() - started > limit_s:
            if partial:
                say(f"  {live}/{len(account_ids)} accounts streamed after {limit_s:.0f}s: the fills start, the others "
                    "are polled")
                break
            raise AssertionError(f"only {live}/{len(account_ids)} accounts streamed after {limit_s:.0f}s")
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            say(f"  {live}/{len(account_ids)} accounts streamed after {last - started:.0f}s")
        await asyncio.sleep(0.05)
    await streams.settle()
    return time.monotonic() - started


async def quiet(
    tracking: Tracking, *, since: float, at_least: float, still: float = 3.0, at_most: float = 180.0
) -> None:
    """Wait until the poller's first round is over: `at_least` seconds after `since` (it spreads its accounts
    over 0.8 × its interval) and no fill-tracking request for `still` seconds (its budget waits); no longer than
    `at_most` (accounts streamed one by one, as Kraken's are, have their safety sweeps spread out: never quiet)."""
    previous, calm_since = None, time.monotonic()
    while time.monotonic() - since < at_least + at_most:
        counts = (await tracking.snapshot())[0]
        requests = sum(counts[k] for k in FILL_TRACKING)
        now = time.monotonic()
        if requests != previous:
            previous, calm_since = requests, now
        elif now - calm_since >= still and now - since >= at_least:
            return
        await asyncio.sleep(0.5)


async def measure(data_dir: Path, fakes: Fakes, args: argparse.Namespace) -> dict[str, object]:
    venue, stream = args.venue, args.mode == "stream"
    budgets = RecordingBudgets()
    world = await open_world(data_dir, fakes.exchange_urls, budgets=budgets, poll_seconds=args.poll,
                             jitter_seconds=2.0, streams=stream)
    engine = world.engine
    tracking = Tracking(fakes, venue)
    figures: dict[str, Any] = {}
    try:
        rows = await world.store.db.fetchall("SELECT client_order_id, strategy_id, account_id FROM orders")
        strategy_of = {r["client_order_id"]: r["strategy_id"] for r in rows}
        account_of = {r["strategy_id"]: r["account_id"] for r in rows}
        streamed_when_filled: dict[int, bool] = {}
        account_ids = {r["account_id"] for r in await world.store.db.fetchall("SELECT account_id FROM orders")}
        before_start = await tracking.snapshot()
        started = time.monotonic()
        await engine.start()
        if stream:
            streamed_s = await wait_streamed(world, account_ids, limit_s=args.startup_wait, partial=True)
            live = sum(1 for a in account_ids if engine.streams.streamed(a))
            if live == len(account_ids):
                await quiet(tracking, since=started, at_least=engine.effective_poll_interval)
            else:  # the accounts not streamed are polled all along: no quiet moment to wait for
                await asyncio.sleep(max(0.0, started + engine.effective_poll_interval - time.monotonic()))
            seconds = time.monotonic() - started
            start_spent = Tracking.spent(before_start, await tracking.snapshot())
            hub = engine.streams.hubs[venue]
            say(f"start-up: {live}/{len(account_ids)} accounts streamed on {hub.connections} connection(s) and "
                f"backfilled in {streamed_s:.1f}s, the poller's first round over after {seconds:.1f}s; fill-tracking "
                f"weight {start_spent['weight']} ({start_spent['requests']} requests: that round + the backfills)")
            figures |= {"startup_s": round(seconds, 1), "startup_fill_tracking_weight": start_spent["weight"],
                        "streamed_at_start": live}
        resting = [o for o in await fakes.open_orders(venue) if o["client_order_id"] in strategy_of]
        rng = random.Random(args.seed)
        plan = sorted((rng.uniform(0, args.spread), o) for o in resting)
        filled_at: dict[int, float] = {}
        longest_interval = engine.effective_poll_interval
        say(f"filling {len(plan)} resting orders at random times over {args.spread:.0f}s "
            f"(mode {args.mode}, STRATA_FILL_POLL_SECONDS={args.poll:g}"
            + (f", stream connections dropped at {args.drop_at:g}s)" if stream and args.drop_at >= 0 else ")"))
        marks: dict[str, Any] = {"start": await tracking.snapshot()}
        fill_start, cpu_start, fakes_cpu_start = time.time(), cpu_seconds(), cpu_seconds(fakes.process.pid)

        async def fill_all() -> None:
            begin = time.time()
            for offset, order in plan:
                await asyncio.sleep(max(0.0, begin + offset - time.time()))
                remaining = Decimal(order["amount"]) - Decimal(order["filled"])
                strategy = strategy_of[order["client_order_id"]]
                streamed_when_filled[strategy] = stream and engine.streams.streamed(account_of[strategy])
                at = time.time()
                await fakes.call("POST", f"/books/{venue}/fill", {"order_id": order["id"], "amount": str(remaining)})
                filled_at[strategy] = at

        async def drop_and_recover() -> None:
            await asyncio.sleep(args.drop_at)
            marks["fake_clock_at_drop"] = (await fakes.stream_stats(venue) or {}).get("now", 0.0)
            marks["before_drop"] = await tracking.snapshot()
            dropped_at = time.monotonic()
            dropped = await fakes.drop_streams(venue)
            await asyncio.sleep(0.05)  # let the hub see the close before asking whether accounts are live
            marks["recovery_s"] = await wait_streamed(world, account_ids, limit_s=args.startup_wait)
            marks["recovered_after_s"] = time.monotonic() - dropped_at
            marks["after_recovery"] = await tracking.snapshot()
            say(f"  dropped {dropped} stream connection(s): every account streamed and backfilled again after "
                f"{marks['recovered_after_s']:.1f}s")

        filler = asyncio.create_task(fill_all())
        dropper = asyncio.create_task(drop_and_recover()) if stream and args.drop_at >= 0 else None
        alerts: dict[int, float] = {}
        alert_count: Counter[int] = Counter()
        last_id = 0
        deadline = time.time() + args.spread + 60 + 20 * args.poll
        last_report = time.time()
        while time.time() < deadline:
            await asyncio.sleep(0.1)
            longest_interval = max(longest_interval, engine.effective_poll_interval)
            for row in await world.store.db.fetchall(
                "SELECT id, text, created_at FROM outbox WHERE kind = 'fill' AND id > ? ORDER BY id", (last_id,)
            ):
                last_id = row["id"]
                match = STRATEGY_IN_ALERT.search(row["text"])
                if match:
                    strategy = int(match.group(1))
                    alert_count[strategy] += 1
                    alerts.setdefault(strategy, datetime.fromisoformat(row["created_at"]).timestamp())
            if time.time() - last_report >= 5:
                last_report = time.time()
                say(f"  {len(filled_at)}/{len(plan)} filled, {len(alerts)} alerts enqueued, poll interval "
                    f"{engine.effective_poll_interval:.1f}s")
            if filler.done() and len(alerts) >= len(plan) and (dropper is None or dropper.done()):
                break
        await filler
        if dropper is not None:
            if not dropper.done():
                dropper.cancel()
            await asyncio.gather(dropper, return_exceptions=True)
        if stream and len(alerts) >= len(plan):
            await engine.streams.settle()  # (past the deadline, updates may still wait on the budget: not here)
        await asyncio.sleep(0.5)  # a duplicate would be enqueued by now
        for row in await world.store.db.fetchall(
            "SELECT text FROM outbox WHERE kind = 'fill' AND id > ? ORDER BY id", (last_id,)
        ):
            match = STRATEGY_IN_ALERT.search(row["text"])
            if match:
                alert_count[int(match.group(1))] += 1
        end = await tracking.snapshot()
        span = time.time() - fill_start
        cpu = (cpu_seconds() - cpu_start) / span, (cpu_seconds(fakes.process.pid) - fakes_cpu_start) / span
        by_path: Counter[str] = Counter()
        for charge in budgets.between(fill_start, time.time()):
            if charge.venue == venue:
                by_path[charge.path] += charge.weight or 1
        say(f"from the first fill on ({span:.0f}s): bot process {cpu[0]:.0%} of a core, fakes {cpu[1]:.0%}; load "
            f"average {os.getloadavg()[0]:.2f} (machine shared); the bot's {venue} requests by endpoint (Binance "
            f"weight, else count): {dict(by_path.most_common(5))}")
        latencies = sorted(alerts[s] - filled_at[s] for s in filled_at if s in alerts)
        missing = len(filled_at) - len(latencies)
        duplicated = sum(n - 1 for n in alert_count.values() if n > 1)
        weight = sum(c.weight for c in budgets.charges if c.venue == venue)
        tracked = Tracking.spent(marks["start"], end)
        say(f"{len(latencies)} alerts, {missing} fills without an alert, {duplicated} duplicated; longest poll "
            f"interval {longest_interval:.1f}s; Binance weight spent {weight} (bot's budget, every endpoint)")
        say(f"fill-tracking weight from the first fill to the last alert: {tracked['weight']} "
            f"({tracked['requests']} requests: {tracked['by_endpoint'] or 'none'})")
        figures |= {"fill_tracking_requests": tracked["requests"]}
        reconnects = 0
        if "before_drop" in marks:
            recovered = marks.get("after_recovery", end)
            steady = (Tracking.spent(marks["start"], marks["before_drop"])["weight"]
                      + Tracking.spent(recovered, end)["weight"])
            backfill = Tracking.spent(marks["before_drop"], recovered)
            recovery = marks.get("recovered_after_s")
            say(f"  of which steady {steady}, from the drop until every account was streamed and backfilled again "
                f"{backfill['weight']} ({backfill['requests']} requests; "
                + (f"recovered in {recovery:.1f}s)" if recovery is not None else "not recovered by the deadline)"))
            figures |= {"fill_tracking_weight_steady": steady, "resubscribe_weight": backfill["weight"],
                        "recovery_s": round(recovery, 1) if recovery is not None else None}
        if stream:
            counted = await fakes.stream_stats(venue) or {"attempts": []}
            attempts = counted["attempts"]
            reconnects = sum(1 for at in attempts if at >= marks.get("fake_clock_at_drop", float("inf")))
            limit, window = attempt_limit(venue)
            worst = most_in_window(attempts, window)
            after = f"{reconnects} after the drop" if "fake_clock_at_drop" in marks else "no drop"
            say(f"stream connection attempts: {len(attempts)} in the run ({after}); most in any "
                f"{window:.0f}s: {worst} (limit {limit})")
            figures |= {"connection_attempts": len(attempts), "attempts_per_5min_max": most_in_window(attempts, 300.0),
                        "attempts_per_window_max": worst, "attempt_window_s": window, "attempt_limit": limit,
                        "stream_updates": engine.streams.updates}
            split = {
                mode: sorted(alerts[s] - filled_at[s] for s in filled_at
                             if s in alerts and streamed_when_filled[s] == is_streamed)
                for mode, is_streamed in (("streamed", True), ("polled", False))
            }
            if split["polled"]:  # some accounts were not streamed yet when their order filled: polling covered them
                for mode, values in split.items():
                    if values:
                        p95_mode = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
                        say(f"  fills on {mode} accounts: {len(values)}, p50 {statistics.median(values):.2f}s, "
                            f"p95 {p95_mode:.2f}s, max {values[-1]:.2f}s")
                        figures |= {f"{mode}_fills": len(values), f"{mode}_p95_s": round(p95_mode, 2)}
    finally:
        await world.close()
    if not latencies:
        raise AssertionError("no fill alert was enqueued")
    def percentile(share: float) -> float:
        return latencies[min(len(latencies) - 1, round(share * (len(latencies) - 1)))]

    p95 = percentile(0.95)
    return {
        "poll_s": args.poll,
        "p50_s": round(statistics.median(latencies), 2),
        "p95_s": round(p95, 2),
        "max_s": round(latencies[-1], 2),
        "mode": args.mode,
        "fill_tracking_weight": tracked["weight"],
        "reconnects": reconnects,
        "orders": len(plan),
        "missing_alerts": missing,
        "duplicated_alerts": duplicated,
        "effective_poll_s": round(longest_interval, 1),
        "min_s": round(latencies[0], 2),
        "p90_s": round(percentile(0.90), 2),
        "p99_s": round(percentile(0.99), 2),
        "over_1s": sum(1 for x in latencies if x > 1.0),
        "binance_weight": weight,
        **figures,
        "measured_to": "alert enqueued in the outbox",
    }


async def run(args: argparse.Namespace, fakes: Fakes) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="strata-bench-latency-") as tmp:
        data_dir = Path(tmp)
        await populate(data_dir, fakes, args.venue, args.accounts, args.per_account)
        if args.venue in WEIGHED:
            await fresh_weight_window(fakes, args.venue, allowed=1000)
        figures = await measure(data_dir, fakes, args)
        await fakes.close_session()
    return {"bench": "latency", **figures, "venue": args.venue, "accounts": args.accounts, **machine()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI size: stream mode, 10 accounts × 2 orders")
    parser.add_argument("--venue", choices=sorted(SYMBOLS), default="binance")
    parser.add_argument("--mode", choices=("stream", "poll"), default="stream",
                        help="stream: fills pushed by the venue's user-data stream; poll: STRATA_STREAMS=off")
    parser.add_argument("--accounts", type=int, help="accounts (default stream 1000, poll 100, quick 10)")
    parser.add_argument("--per-account", type=int, help="resting orders per account (default stream 1, poll 10, "
                                                         "quick 2)")
    parser.add_argument("--poll", type=float, help="STRATA_FILL_POLL_SECONDS (default 10, quick 2)")
    parser.add_argument("--spread", type=float, help="fills happen within this many seconds (default 60, quick 4)")
    parser.add_argument("--drop-at", type=float, help="stream mode: drop every stream connection this many "
                                                       "seconds into the fills (default half the spread; -1: never)")
    parser.add_argument("--startup-wait", type=float, default=600.0,
                        help="stream mode: seconds to wait for every account to be streamed before the fills start "
                             "(then they start anyway: the accounts not streamed yet are polled); also the limit of "
                             "the recovery after a drop")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)
    stream = args.mode == "stream"
    args.accounts = args.accounts or (10 if args.quick else 1000 if stream else 100)
    args.per_account = args.per_account or (2 if args.quick else 1 if stream else 10)
    args.poll = args.poll or (2.0 if args.quick else 10.0)
    args.spread = args.spread or (4.0 if args.quick else 60.0)
    args.drop_at = args.spread / 2 if args.drop_at is None else args.drop_at
    if stream and adapter(args.venue).user_stream is None:
        say(f"skipped: {args.venue} has no user-data stream in this checkout (its adapter names none); "
            f"run --mode poll, or --venue binance")
        result_line({"bench": "latency", "venue": args.venue, "mode": args.mode, "skipped": "no stream"})
        return
    fakes = start_fakes(args.accounts)
    try:
        say(f"fakes in process {fakes.process.pid}; bench process {pin_to_two_cores()}")
        result = asyncio.run(run(args, fakes))
    finally:
        fakes.stop()
    result_line(result)


if __name__ == "__main__":
    main()
