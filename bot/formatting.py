"""How every number is shown to a user: one place, so an alert, `/status` and `/profit` print one figure alike.

The rules (issue 18, item 2):
- money is in a named currency, to the cent, with thousands separators ("1,234.56 USDT"); a non-zero amount
  smaller than a cent keeps two significant digits ("0.0042 USDT") rather than reading as zero;
- an amount of an asset goes to the market's step when it is known ("0.00150 BTC"), else without trailing zeros;
- a price goes to the market's tick when it is known, else to the cent (more digits below 1, for cheap coins);
- signed figures (P&L) carry "+" or "-"; percentages carry their sign and two decimals ("+1.25%").

Every function returns plain text (no HTML): asset codes and digits need no escaping, callers escape what they
interpolate around it. `None` shows as "?" (a figure we could not get, never a made-up zero).
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

UNKNOWN = "?"
CENT = Decimal("0.01")
#: The most decimals any figure gets: Binance's and Kraken's finest steps are 1e-8.
MAX_PLACES = 8


def places_of(step: Decimal | None) -> int | None:
    """The decimals a market's step or tick implies (0.001 → 3, 1 → 0, 0.5 → 1); None when unknown."""
    if step is None or step <= 0:
        return None
    return max(0, -step.normalize().as_tuple().exponent)


def _significant_places(value: Decimal, digits: int) -> int:
    """Decimals that keep `digits` significant digits of a value below 1 (0.0042 with 2 → 4)."""
    leading = value.copy_abs().adjusted()  # 0.0042 → -3
    return min(MAX_PLACES, max(2, digits - 1 - leading))


def number(value: Decimal, places: int, *, strip: bool = False, rounding: str = ROUND_HALF_UP) -> str:
    """A decimal to `places` with thousands separators; `strip` drops trailing zeros."""
    quantized = value.quantize(Decimal(1).scaleb(-places), rounding=rounding)
    if quantized == 0:
        quantized = abs(quantized)  # no "-0.00"
    text = f"{quantized:,f}"
    if strip and "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _with_sign(text: str, value: Decimal, zero_text: str) -> str:
    if text == zero_text or value == 0:
        return text
    return text if text.startswith("-") else f"+{text}"


def money(value: Decimal | None, currency: str, *, signed: bool = False) -> str:
    """A sum of money in `currency`: "1,234.56 USDT"; `signed` for P&L ("+3.11 USDT", "-0.40 USDT")."""
    if value is None:
        return UNKNOWN
    places, tiny = 2, value != 0 and value.copy_abs() < CENT
    if tiny:
        places = _significant_places(value, 2)
    text = number(value, places, strip=tiny)
    if signed:
        text = _with_sign(text, value, number(Decimal(0), places))
    return f"{text} {currency}".strip()


def amount(value: Decimal | None, asset: str, step: Decimal | None = None, *, held: bool = False) -> str:
    """A quantity of an asset, to the market's step when known: "0.00150 BTC"; else trimmed: "0.0015 BTC".

    Rounded down, never up: a user is never shown more of an asset than there is. `held`: a holding, which a
    fee taken in the coin or a sale's dust leaves off the step, keeps its digits when it is off the step
    ("0.0000094 BTC" kept, not "0.00000 BTC").
    """
    if value is None:
        return UNKNOWN
    if held and step is not None and step > 0 and value % step != 0:
        step = None
    places = places_of(step)
    if places is None:
        text = number(value, MAX_PLACES, strip=True, rounding=ROUND_DOWN)
    else:
        text = number(value, places, rounding=ROUND_DOWN)
    return f"{text} {asset}".strip()


def price(value: Decimal | None, quote: str, tick: Decimal | None = None) -> str:
    """A price in `quote`, to the market's tick when known: "67,123.45 USDT"; cheap coins keep 4 digits."""
    if value is None:
        return UNKNOWN
    places = places_of(tick)
    if places is None:
        places = 2 if value.copy_abs() >= 1 or value == 0 else _significant_places(value, 4)
    return f"{number(value, places)} {quote}".strip()


def percent(value: Decimal | None, *, signed: bool = True) -> str:
    """A percentage already multiplied by 100, to two decimals: "+1.25%", "-0.40%", "0.00%"."""
    if value is None:
        return UNKNOWN
    text = number(value, 2)
    if signed:
        text = _with_sign(text, value, "0.00")
    return f"{text}%"
