"""The reply helpers' safety net: any HTML splits into parts Telegram accepts, never inside a tag or entity."""

from __future__ import annotations

import pytest

from bot.sandbox.telegram_html import render_html
from handlers.common import MAX_TEXT, page_of, pager_row, parse_id, split_html, text_units


def plain(parts: list[str]) -> list[str]:
    return [render_html(part)[0] for part in parts]  # raises if a part does not parse like Telegram's


def test_a_short_text_is_one_part_unchanged():
    assert split_html("<b>hi</b> &amp; bye") == ["<b>hi</b> &amp; bye"]


@pytest.mark.parametrize(
    "text",
    [
        "\n".join(f"<b>#{i} DCA</b> BTC/USDT &amp; 🚀 <i>{'x' * (i % 90)}</i>" for i in range(150)),
        "<code>" + "a&lt;b 🚀 " * 1500 + "</code>",
        "<b>" + "y" * 9000 + "</b>\n<i>" + "é" * 3000 + "</i>",
        "<b>open <i>nested\n" + "\n".join("z" * 70 for _ in range(120)) + "</i> still</b>",
    ],
)
def test_long_html_splits_into_parts_that_each_parse_and_fit(text):
    parts = split_html(text, max_parts=100)
    assert len(parts) > 1
    assert all(text_units(part) <= MAX_TEXT for part in parts)
    rendered = plain(parts)
    whole = render_html(text)[0]
    assert "".join(r.replace("\n", "") for r in rendered) == whole.replace("\n", "")


def test_beyond_the_part_limit_the_text_is_cut_and_says_so():
    parts = split_html("\n".join("w" * 100 for _ in range(1000)))
    assert len(parts) == 4 and parts[-1].endswith("(cut: too long for Telegram)")
    assert all(text_units(part) <= MAX_TEXT for part in parts)


def test_pages_clamp_and_pager_buttons_point_to_neighbours():
    items = list(range(12))
    assert page_of(items, 1, 5) == ([0, 1, 2, 3, 4], 1, 3)
    assert page_of(items, 9, 5) == ([10, 11], 3, 3)
    assert page_of([], 1, 5) == ([], 1, 1)
    assert pager_row("st:page", 2, 3) == [("◀ page 1", "st:page:1"), ("page 3 ▶", "st:page:3")]
    assert pager_row("st:page", 1, 1) == []


@pytest.mark.parametrize("text", ["²", "١٢", "12345678901234567890", "9223372036854775808", "0", "-1", "+1", " 1", ""])
def test_forged_ids_are_refused(text):
    assert parse_id(text) is None


def test_ids_within_sqlite_range_parse():
    assert parse_id("1") == 1
    assert parse_id("9223372036854775807") == 2**63 - 1
