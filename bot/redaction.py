"""Logging that cannot leak: the bot token, API keys and secrets are scrubbed from every record.

Three layers, because the libraries leak in different ways (LIBRARY-FACTS):
1. loggers that dump secrets by design are clamped: httpx/httpcore log URLs with the bot token at INFO;
   telegram's ExtBot/Application log whole updates (a user's API secret) at DEBUG; ccxt logs request headers
   (the API key) at DEBUG; aiohttp.access logs `/bot<token>/` paths. They stay at WARNING even when
   LOG_LEVEL=DEBUG;
2. a filter on every handler (and `logging.lastResort`) rewrites the message and the formatted traceback,
   replacing every registered secret (and its hex and base64 forms) and anything shaped like a bot token or a
   request signature;
3. secrets are registered the moment they enter the process, before anything can log them: real credentials
   (unsealed from the vault, or validated by /connect) and the bot token with `register_secret`, kept for the
   life of the process; text that merely looks like a key (a message pasted in a chat, an intake message not
   validated yet) with `register_possible_secret`, word by word (only words as long as a key can be), in a
   bounded tier that forgets its oldest values first — so anyone pasting key-shaped text by the thousand can
   never push a real credential out of the registry, nor make it hold more than a few MB.
"""

from __future__ import annotations

import base64
import logging
import re
import sys
import threading

from bot.secret import Secret

REDACTED = "[REDACTED]"
_CLAMPED_LOGGERS = (
    "httpx",
    "httpcore",
    "telegram.ext.ExtBot",
    "telegram.Bot",
    "telegram.ext.Application",
    "telegram.ext.Updater",
    "telegram.ext._application",
    "telegram.ext._updater",
    "telegram.request",
    "ccxt",
    "aiohttp.access",
    "aiohttp.client",
    "apscheduler.executors.default",
    "aiosqlite",
)
_PATTERNS = [
    # A Telegram bot token, also inside URLs (`/bot123:ABC…/getMe`, where `\b` would not match).
    re.compile(r"(?<!\d)\d{5,12}:[A-Za-z0-9_-]{30,}"),
    re.compile(r"(?i)(signature=)[0-9a-f]{16,}"),
    re.compile(r"(?i)(X-MBX-APIKEY['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9]+"),
    re.compile(r"(?i)(API-(?:Key|Sign)['\"]?\s*[:=]\s*['\"]?)[A-Za-z0-9+/=]+"),
]


class _Registry:
    """The secret strings to scrub, found in a record in time linear in its length, whatever their number.

    Every form (the value, its hex and base64 encodings) is indexed by its first characters; scrubbing looks
    up each position of each key-alphabet run of the text. A regex alternation of all values would cost time
    proportional to their number on every record, and anyone can make the bot register values (each pasted
    key-looking message is one), so that would let a user slow down all logging.

    Two tiers: `protected` forms (real credentials, as many as there are connected keys) are never forgotten;
    the others are bounded, the oldest forgotten first.
    """

    MIN_LENGTH = 12  # no real API key or secret is shorter; shorter words would blank out ordinary log text
    #: The longest word of key-shaped text kept in the bounded tier: no API key or secret is longer (Binance
    #: accepts up to 128 characters, a Kraken secret is 88), and a cap keeps the tier's memory bounded too.
    MAX_POSSIBLE_LENGTH = 200
    #: Key-length words kept per value of key-shaped text: a key, or a key and its secret pasted together.
    #: More would let a few long messages of many words push the older values out of the bounded tier.
    MAX_POSSIBLE_WORDS = 2
    PREFIX = 8
    MAX_FORMS = 50_000
    _RUN = re.compile(r"[A-Za-z0-9+/=_\-]{12,}")

    def __init__(self) -> None:
        self._by_prefix: dict[str, tuple[str, ...]] = {}
        self._order: dict[str, None] = {}  # insertion-ordered set of the bounded tier's forms, for eviction
        self._protected: set[str] = set()  # real credentials' forms: never evicted
        self._odd: tuple[str, ...] = ()  # values with characters outside the key alphabet (PEM text…)
        self._odd_protected: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, value: str, *, protected: bool = False) -> None:
        """Index a value; key-shaped text (not `protected`) word by word, only its first words as long as a key.

        So a key and its secret pasted together are each scrubbed alone, and a pasted blob of thousands of
        characters (no key is that long) costs nothing: the bounded tier holds at most MAX_FORMS short forms,
        and each message adds only a few of them.
        """
        value = value.strip()
        if protected:
            words = [value]
        else:
            sized = [w for w in value.split() if self.MIN_LENGTH <= len(w) <= self.MAX_POSSIBLE_LENGTH]
            words = sized[: self.MAX_POSSIBLE_WORDS]
        with self._lock:
            for word in words:
                self._add_word(word, protected)
            while len(self._order) > self.MAX_FORMS:
                self._forget(next(iter(self._order)))

    def _add_word(self, value: str, protected: bool) -> None:
        """Index one value and its hex and base64 forms (the caller holds the lock)."""
        if len(value) < self.MIN_LENGTH:
            return
        raw = value.encode()
        forms = {value, raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
        for form in forms:
            if not self._RUN.fullmatch(form):
                if protected and form not in self._odd_protected:
                    self._odd_protected = (*self._odd_protected, form)
                elif not protected and form not in self._odd:
                    self._odd = (*self._odd[-99:], form)
                continue
            if form in self._protected:
                continue
            if protected:
                self._protected.add(form)
                if form in self._order:  # already indexed by the bounded tier: from now on it stays
                    del self._order[form]
                    continue
            elif form in self._order:
                continue
            else:
                self._order[form] = None
            prefix = form[: self.PREFIX]
            self._by_prefix[prefix] = (*self._by_prefix.get(prefix, ()), form)

    def _forget(self, form: str) -> None:
        del self._order[form]
        prefix = form[: self.PREFIX]
        rest = tuple(f for f in self._by_prefix.get(prefix, ()) if f != form)
        if rest:
            self._by_prefix[prefix] = rest
        else:
            self._by_prefix.pop(prefix, None)

    def scrub(self, text: str) -> str:
        if self._by_prefix:
            text = self._scrub_indexed(text)
        for odd in (*self._odd_protected, *self._odd):
            text = text.replace(odd, REDACTED)
        for regex in _PATTERNS:
            text = regex.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
        return text

    def _scrub_indexed(self, text: str) -> str:
        by_prefix, width = self._by_prefix, self.PREFIX
        spans: list[tuple[int, int]] = []
        for run in self._RUN.finditer(text):
            start, end = run.span()
            i = start
            while i <= end - width:
                longest = 0
                for form in by_prefix.get(text[i : i + width], ()):
                    if len(form) > longest and text.startswith(form, i):
                        longest = len(form)
                if longest:
                    spans.append((i, i + longest))
                    i += longest
                else:
                    i += 1
        if not spans:
            return text
        pieces, last = [], 0
        for begin, finish in spans:
            pieces.append(text[last:begin])
            pieces.append(REDACTED)
            last = finish
        pieces.append(text[last:])
        return "".join(pieces)


_registry = _Registry()


def register_secret(value: str | Secret | None) -> None:
    """Scrub this real secret (and its hex/base64 forms) from every log record for the life of the process."""
    if value is None:
        return
    _registry.add(value.reveal() if isinstance(value, Secret) else value, protected=True)


def register_possible_secret(value: str | None) -> None:
    """Scrub key-shaped text whose value may not be a real key (bounded: the oldest such values are forgotten)."""
    if value is None:
        return
    _registry.add(value)


def redact(text: str) -> str:
    """Return `text` with every registered secret and secret-shaped token replaced."""
    return _registry.scrub(text)


class RedactingFilter(logging.Filter):
    """Rewrite a record's final message and traceback text with secrets scrubbed."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not break logging
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.exc_info = None if record.exc_text else record.exc_info
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def configure_logging(level: str = "INFO", *, stream=None) -> logging.Handler:
    """Install one redacting handler on the root logger and clamp the loggers that leak by design."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_strata", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._strata = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    install_everywhere()
    return handler


def install_everywhere() -> None:
    """Clamp leaky loggers and put the filter on every existing handler, lastResort included."""
    for name in _CLAMPED_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    handlers = list(logging.getLogger().handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers.extend(logger.handlers)
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
