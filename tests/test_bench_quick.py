"""CI hook for bench/: every benchmark runs at `--quick` size as its own process and ends with its JSON line.

Each script starts its fakes in another process, so this proves the whole chain still works from a clean
checkout: the one-command run, the fakes' launcher, real accounts, the engine, and the issue's result keys.
Speed targets are not asserted at CI size (CI machines vary); correctness figures that must hold at any
size are: no duplicated or lost alert, one market-data request per key per round, no order placed twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timing  # benchmarks: run on the default backend (CI's first pass)

ROOT = Path(__file__).resolve().parent.parent

KEYS = {
    "engine": {"bench", "strategies", "accounts", "evals_per_s", "md_requests_per_key",
               "private_requests_per_round", "binance_weight_per_min", "effective_poll_s"},
    "memory": {"bench", "accounts", "kb_per_account_rss", "kb_per_account_traced"},
    "alerts": {"bench", "msgs_per_s", "lost", "duplicated", "unhandled_429"},
    "latency": {"bench", "poll_s", "p50_s", "p95_s", "max_s", "mode", "fill_tracking_weight", "reconnects"},
    "restart": {"bench", "strategies", "intents", "seconds", "duplicates"},
    "backtest": {"bench", "candles", "seconds_per_strategy", "chart_seconds"},
}


def run_quick(name: str) -> dict[str, object]:
    done = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [sys.executable, str(ROOT / "bench" / f"{name}.py"), "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=150, check=False,
    )
    assert done.returncode == 0, f"bench/{name}.py failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    lines = done.stdout.strip().splitlines()
    assert len(lines) > 1, "a benchmark prints its figures as it goes, then the JSON line"
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize("name", sorted(KEYS))
def test_quick_benchmark_ends_with_its_json_line_holding_the_issue_keys(name: str) -> None:
    result = run_quick(name)
    assert KEYS[name] <= set(result), f"missing keys: {KEYS[name] - set(result)}"
    assert result["bench"] == name
    for key in KEYS[name] - {"bench", "mode"}:
        assert isinstance(result[key], int | float) and not isinstance(result[key], bool), (key, result[key])
    if name == "engine":
        assert result["md_requests_per_key"] == 1.0
        assert result["strategies"] == 100 and result["accounts"] == 50
        assert result["evals_per_s"] > 0 and result["private_requests_per_round"] > 0
        assert result["binance_weight_per_min"] < 6000
    elif name == "memory":
        assert result["kb_per_account_rss"] > 0 and result["kb_per_account_traced"] > 0
        assert result["streams"] is True and result["streamed_accounts"] == result["accounts"]
    elif name == "alerts":
        assert (result["lost"], result["duplicated"], result["unhandled_429"]) == (0, 0, 0)
    elif name == "backtest":
        assert result["candles"] == 720 and result["fills"]["dca"] > 0 and result["fills"]["grid"] > 0
    elif name == "latency":  # --quick: Binance streams, every connection dropped half-way through the fills
        assert (result["mode"], result["venue"]) == ("stream", "binance")
        assert (result["missing_alerts"], result["duplicated_alerts"]) == (0, 0)
        assert 0 <= result["p50_s"] <= result["p95_s"] <= result["max_s"]
        assert result["reconnects"] >= 1 and result["attempts_per_5min_max"] <= 300
        # Polling costs every fill ≥ 24 weight (order + myTrades); streamed fills cost ≈ 0 (a poll may still catch
        # an account while one of its orders is being sent: the poller resolves those).
        assert result["fill_tracking_weight_steady"] < 24 * result["orders"] / 4
    elif name == "restart":
        assert result["intents"] == 20 and result["strategies"] == 100
        assert (result["duplicates"], result["missing"], result["unresolved"]) == (0, 0, 0)


def test_quick_workers_benchmark_splits_the_round_between_two_workers_on_postgresql(postgres_server) -> None:
    """`bench/engine.py --database URL --workers 1,2` (bench/workers.py): after a warm-up round, each worker count
    runs every active strategy once; two workers split the accounts (both run some, none twice)."""
    done = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [sys.executable, str(ROOT / "bench" / "engine.py"), "--quick", "--database", postgres_server,
         "--workers", "1,2", "--repeat", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )
    assert done.returncode == 0, f"bench/engine.py --database failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "engine-workers" and result["strategies"] == 100
    one, two = result["by_workers"]
    # Every strategy still active (after the warm-up round some DCAs have spent their budget) ran once.
    assert one["per_worker_runs"] == [one["active"]] and one["active"] > 50 and one["evals_per_s"] > 0
    assert sum(two["per_worker_runs"]) == two["active"] > 50 and min(two["per_worker_runs"]) > 0
    assert isinstance(result["speedup_2_vs_1"], float)
