"""The daily summary's text: what went in and came back (spot), the position (futures), never a negative "used"."""

from __future__ import annotations

from decimal import Decimal

from bot.services.strategies import StrategyStatus
from bot.summary import summary_text

D = Decimal


def status(**changes) -> StrategyStatus:
    fields = dict(
        id=3, kind="dca", title="DCA", symbol="BTC/USDT", account_label="binance", venue_name="Binance Spot",
        status="active", pause_reason=None, note=None, budget=D(1000), quote="USDT", used=D("-78.92"),
        invested=D("500.50"), returned=D("579.42"), reserved=D(0), left=D(1000), open_orders=0, holdings={},
        average_entry=None, futures=False, entry_price=None, realised_pnl=D("78.92"), unrealised_pnl=D(0),
        fees=D("1.08"), next_run=None, fill_poll_seconds=10.0,
    )
    fields.update(changes)
    return StrategyStatus(**fields)


def test_a_spot_line_shows_invested_and_returned_instead_of_a_negative_used():
    line = summary_text("2026-12-04", [status()]).splitlines()[1]
    assert line == (
        "#3 DCA BTC/USDT (active), budget 1,000.00 USDT: invested 500.50, returned 579.42; realised +78.92, "
        "unrealised 0.00, fees 1.08"
    )


def test_a_futures_line_shows_the_position_not_sale_proceeds_as_returned_money():
    short = status(symbol="BTC/USDT:USDT", futures=True, holdings={"BTC": D("-0.003")}, invested=D("120.1"),
                   returned=D("150.2"), realised_pnl=D("-2.5"), unrealised_pnl=D("1.25"))
    line = summary_text("2026-12-04", [short]).splitlines()[1]
    assert "position short 0.003 BTC" in line and "invested" not in line and "returned" not in line
    assert "realised -2.50, unrealised +1.25" in line
    flat = summary_text("2026-12-04", [status(futures=True, holdings={})]).splitlines()[1]
    assert "position flat" in flat


def test_a_rebalance_line_names_its_weights_and_the_user_s_name_escaped():
    line = summary_text("2026-12-04", [status(kind="rebalance", symbol="USDT",
                                               label="#3 Rebalance BTC 50 / ETH 50 “<core>”")]).splitlines()[1]
    assert line.startswith("#3 Rebalance BTC 50 / ETH 50 “&lt;core&gt;” (active)")


def test_a_long_summary_is_sent_in_parts_between_lines_with_every_line_kept():
    from bot.summary import MAX_PARTS, TELEGRAM_TEXT_LIMIT, _parts, _units

    statuses = [status(id=n, label=f"#{n} DCA BTC/USDT “retirement savings plan no. {n:02d}”") for n in range(50)]
    text = summary_text("2026-12-04", statuses)
    assert _units(text) > TELEGRAM_TEXT_LIMIT
    parts = _parts(text)
    assert 1 < len(parts) <= MAX_PARTS
    assert all(_units(part) <= TELEGRAM_TEXT_LIMIT for part in parts)
    assert parts[1].startswith(f"📊 <b>Daily summary</b>, continued (2/{len(parts)})\n")
    kept = [line for part in parts for line in part.split("\n") if "continued (" not in line]
    assert kept == text.split("\n")
    assert _parts("short") == ["short"]
