"""Strategy parameters: declared specs, parsing of `key=value` text, and user-facing errors.

Each strategy lists its parameters as `ParamSpec`s so `/strategies` can describe them and `/allocate ...
key=value` can be parsed and validated in one place. Every failure raises `ParamError` with a message fit to
show to the user as it is. Values round-trip through text (`dump_params` → `parse_params`) so storage can keep
the canonical strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Literal

Kind = Literal["decimal", "int", "duration", "timeframe", "weights", "choice"]

TIMEFRAMES: Mapping[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "30m": timedelta(minutes=30),
    "1h": timedelta(hours=1),
    "4h": timedelta(hours=4),
    "1d": timedelta(days=1),
}

_DURATION_UNITS: Mapping[str, timedelta] = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
    "m": timedelta(minutes=1),
}
_DURATION_RE = re.compile(r"^(\d{1,6})([mhdw])$")
_ASSET_RE = re.compile(r"^[A-Z0-9]{1,20}$")
_DURATION_HELP = "use a whole number and a unit m, h, d or w, at least 1m (e.g. 15m, 4h, 1d)"

#: Bounds on every number a user types (budgets, amounts, prices, weights). Any finite Decimal is far too
#: much: `1e100000000` formats as a 100-million-character string. At most 20 significant digits and a
#: magnitude between 1e-12 and 1e13 (adjusted exponent −12…12) cover every real budget, price and step; the
#: text itself is checked for length before `Decimal()` sees it.
MAX_NUMBER_TEXT = 40
MAX_SIGNIFICANT_DIGITS = 20
MAX_ADJUSTED_EXPONENT = 12
_RANGE_HELP = "use a number between 0.000000000001 and 9999999999999"
#: How much of the user's own text an error message repeats.
SHOWN_CHARS = 24


class ParamError(ValueError):
    """A parameter is missing, unknown or out of range; the message is shown to the user as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ParamSpec:
    """One parameter a strategy accepts: how to parse it, its default and its allowed range."""

    name: str
    kind: Kind
    description: str
    default: object = None
    # Shown instead of `default` when the default is computed later (e.g. "budget/10").
    default_text: str | None = None
    required: bool = False
    minimum: object = None
    maximum: object = None
    # True: the value must be strictly greater than `minimum` (e.g. an amount must be > 0).
    strict_minimum: bool = False
    # A "choice" parameter: the words it accepts (e.g. grid spacing `arith` or `geo`).
    choices: tuple[str, ...] = ()

    def describe_default(self) -> str:
        """Return the default as the user would type it, or say that the parameter is required."""
        if self.required:
            return "required"
        if self.default_text is not None:
            return self.default_text
        if self.default is None:
            return "none"
        return format_value(self.kind, self.default)

    def parse(self, text: str) -> object:
        """Parse and range-check one value typed by the user."""
        text = text.strip()
        if not text:
            raise ParamError(f"{self.name}: a value is needed after '{self.name}='")
        if self.kind == "choice":
            return parse_choice(text, self.choices, self.name)
        value = _PARSERS[self.kind](text, self.name)
        self._check_range(value)
        return value

    def _check_range(self, value: object) -> None:
        if self.kind == "weights" or self.kind == "timeframe":
            return
        low, high = self.minimum, self.maximum
        if low is not None:
            too_low = value <= low if self.strict_minimum else value < low  # type: ignore[operator]
            if too_low:
                relation = "greater than" if self.strict_minimum else "at least"
                raise ParamError(f"{self.name} must be {relation} {format_value(self.kind, low)}")
        if high is not None and value > high:  # type: ignore[operator]
            raise ParamError(f"{self.name} must be at most {format_value(self.kind, high)}")


def shown(text: str, limit: int = SHOWN_CHARS) -> str:
    """The user's text as an error message may repeat it: at most `limit` characters, cut with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_decimal(text: str, name: str = "value") -> Decimal:
    """Parse a bounded decimal number such as `10`, `0.5` or `65000.25` (see `MAX_SIGNIFICANT_DIGITS`)."""
    text = text.strip()
    if len(text) > MAX_NUMBER_TEXT:
        raise ParamError(f"{name}: '{shown(text)}' is too long for a number")
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ParamError(f"{name}: '{shown(text)}' is not a number") from None
    if not value.is_finite():
        raise ParamError(f"{name}: '{shown(text)}' is not a finite number")
    if value.is_zero():
        return Decimal(0)  # `0E-100000000` would otherwise print a hundred million zeros
    significant = len("".join(map(str, value.as_tuple().digits)).rstrip("0"))  # no leading zeros in a tuple
    if significant > MAX_SIGNIFICANT_DIGITS:
        raise ParamError(f"{name}: '{shown(text)}' has too many digits; at most {MAX_SIGNIFICANT_DIGITS} "
                         "significant digits")
    if not -MAX_ADJUSTED_EXPONENT <= value.adjusted() <= MAX_ADJUSTED_EXPONENT:
        raise ParamError(f"{name}: '{shown(text)}' is out of range; {_RANGE_HELP}")
    return value


def parse_int(text: str, name: str = "value") -> int:
    """Parse a whole number."""
    text = text.strip()
    if not re.fullmatch(r"[+-]?\d{1,9}", text):
        raise ParamError(f"{name}: '{shown(text)}' is not a whole number")
    return int(text)


def parse_duration(text: str, name: str = "duration") -> timedelta:
    """Parse `<n><m|h|d|w>` (minutes, hours, days, weeks) into a timedelta of at least one minute."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise ParamError(f"{name}: '{shown(text)}' is not a duration; {_DURATION_HELP}")
    count, unit = int(match.group(1)), match.group(2)
    if count < 1:
        raise ParamError(f"{name}: '{shown(text)}' is too short; {_DURATION_HELP}")
    return count * _DURATION_UNITS[unit]


def format_duration(value: timedelta) -> str:
    """Format a duration in the largest unit that divides it exactly (`timedelta(days=7)` → `1w`)."""
    for unit, size in _DURATION_UNITS.items():
        if value % size == timedelta(0):
            return f"{value // size}{unit}"
    return f"{value.total_seconds() / 60:g}m"


def parse_timeframe(text: str, name: str = "timeframe") -> str:
    """Accept one of the candle timeframes the strategies support."""
    text = text.strip()
    if text not in TIMEFRAMES:
        raise ParamError(f"{name}: '{shown(text)}' is not supported; choose one of {', '.join(TIMEFRAMES)}")
    return text


def parse_choice(text: str, choices: Sequence[str], name: str = "value") -> str:
    """Accept one of a parameter's words, in any case (`GEO` → `geo`)."""
    word = text.strip().lower()
    if word not in choices:
        raise ParamError(f"{name}: '{shown(text.strip())}' is not an option; choose {' or '.join(choices)}")
    return word


def parse_weights(text: str, name: str = "weights") -> dict[str, Decimal]:
    """Parse `BTC:50,ETH:50` into asset → percent; weights must be positive and sum to exactly 100."""
    weights: dict[str, Decimal] = {}
    for part in text.split(","):
        asset, sep, raw = part.strip().partition(":")
        asset = asset.strip().upper()
        if not sep or not asset or not raw.strip():
            raise ParamError(f"{name}: '{shown(part.strip())}' should look like ASSET:PERCENT, e.g. BTC:50,ETH:50")
        if not _ASSET_RE.match(asset):
            raise ParamError(f"{name}: '{shown(asset)}' is not an asset code")
        if asset in weights:
            raise ParamError(f"{name}: {asset} is listed twice")
        weight = parse_decimal(raw, f"{name} for {asset}")
        if weight <= 0:
            raise ParamError(f"{name}: the weight of {asset} must be greater than 0")
        weights[asset] = weight
    total = sum(weights.values(), Decimal(0))
    if total != 100:
        raise ParamError(f"{name} must sum to 100; these sum to {format_value('decimal', total)}")
    return weights


def parse_budget(text: str) -> Decimal:
    """Parse an allocation budget: a finite number greater than zero."""
    value = parse_decimal(text, "budget")
    if value <= 0:
        raise ParamError("budget must be greater than 0")
    return value


def split_assignments(tokens: Iterable[str]) -> dict[str, str]:
    """Split `key=value` tokens from a command line into a mapping; a repeated key is an error."""
    raw: dict[str, str] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise ParamError(f"'{shown(token)}' should look like name=value, e.g. every=1d")
        if key in raw:
            raise ParamError(f"{shown(key)} is given twice")
        raw[key] = value
    return raw


def parse_params(specs: Sequence[ParamSpec], raw: Mapping[str, str], *, strategy: str) -> dict[str, object]:
    """Parse user text against the specs: unknown names and missing required ones are errors."""
    by_name = {spec.name: spec for spec in specs}
    for key in raw:
        if key not in by_name:
            known = ", ".join(by_name) or "none"
            raise ParamError(f"{shown(strategy)} has no parameter '{shown(key)}'; its parameters are: {known}")
    values: dict[str, object] = {}
    for spec in specs:
        if spec.name in raw:
            values[spec.name] = spec.parse(raw[spec.name])
        elif spec.required:
            raise ParamError(f"{strategy} needs {spec.name}=…: {spec.description}")
        else:
            values[spec.name] = spec.default
    return values


def dump_params(specs: Sequence[ParamSpec], values: Mapping[str, object]) -> dict[str, str]:
    """Return the canonical text of each set value, which `parse_params` reads back to equal values."""
    return {
        spec.name: format_value(spec.kind, values[spec.name])
        for spec in specs
        if values.get(spec.name) is not None
    }


def format_value(kind: Kind, value: object) -> str:
    """Format a parsed value the way a user would type it."""
    if kind == "duration":
        return format_duration(value)  # type: ignore[arg-type]
    if kind == "weights":
        return ",".join(f"{asset}:{_plain(w)}" for asset, w in value.items())  # type: ignore[attr-defined]
    if kind == "decimal":
        return _plain(value)  # type: ignore[arg-type]
    return str(value)


def _plain(value: Decimal) -> str:
    """Format a decimal without exponent or trailing zeros (`1E+2` → `100`, `0.50` → `0.5`)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


_PARSERS = {
    "decimal": parse_decimal,
    "int": parse_int,
    "duration": parse_duration,
    "timeframe": parse_timeframe,
    "weights": parse_weights,
}
