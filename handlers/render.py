"""Turn service results into chat text (HTML). Formatting only: no decisions, no I/O."""

from __future__ import annotations

from decimal import Decimal

from bot.services.accounts import AccountView, AssetValue, Connected
from handlers.common import esc


def fmt_amount(value: Decimal | None, places: int = 8) -> str:
    """A Decimal without float noise or trailing zeros (`0.00100000` → `0.001`)."""
    if value is None:
        return "?"
    q = value.quantize(Decimal(1).scaleb(-places)) if value.as_tuple().exponent < -places else value
    text = format(q.normalize(), "f")
    return text


def fmt_money(value: Decimal | None, currency: str = "") -> str:
    if value is None:
        return "?"
    text = f"{value.quantize(Decimal('0.01')):,}"
    return f"{text} {currency}".strip()


def balances_lines(balances: tuple[AssetValue, ...] | None) -> list[str]:
    if balances is None:
        return ["  balance unavailable right now"]
    if not balances:
        return ["  no funds"]
    lines = []
    for item in balances:
        value = f" ≈ {fmt_money(item.value)}" if item.value is not None and item.value != item.amount else ""
        lines.append(f"  {esc(item.asset)}: {fmt_amount(item.amount)}{value}")
    return lines


def account_lines(view: AccountView) -> list[str]:
    status = "active" if view.status == "active" else "⛔ key rejected"
    head = f"<b>{esc(view.label)}</b> — {esc(view.venue_name)} — {status}"
    lines = [head, *balances_lines(view.balances)]
    if view.note:
        lines.append(f"  <i>{esc(view.note)}</i>")
    return lines


def connected_text(result: Connected) -> str:
    view = result.account
    lines = [
        f"✅ Connected <b>{esc(view.venue_name)}</b> as <b>{esc(view.label)}</b>.",
        "Balances (top assets):",
        *balances_lines(view.balances),
    ]
    if view.permissions:
        lines.append("Permissions seen: " + esc(", ".join(view.permissions)))
    for warning in result.warnings:
        lines.append(f"⚠️ {esc(warning)}")
    if view.testnet:
        lines.append("🧪 Testnet account: the withdraw permission could not be checked there.")
    lines.append("Next: /allocate a budget to a strategy (/strategies lists them).")
    return "\n".join(lines)


def accounts_text(views: list[AccountView]) -> str:
    if not views:
        return "You have no connected accounts yet. /connect one."
    lines = ["<b>Your accounts</b>"]
    for view in views:
        lines.append("")
        lines.extend(account_lines(view))
    return "\n".join(lines)
