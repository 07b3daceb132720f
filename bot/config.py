"""The configuration contract of DESIGN.md section 4, read from the environment (and `.env`).

Every name here is relied upon by deployment scripts and acceptance tools; each invalid value raises
`ConfigError` with a message that names the variable, so the operator knows what to fix.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bot.exchanges.venues import adapters
from bot.secret import Secret
from storage.db import is_postgres, sqlite_path

DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org/bot"
#: Who may use the bot: everyone, only STRATA_ALLOWED_USERS, or whoever an admin approved.
ACCESS_MODES = ("open", "allowlist", "approval")
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


class ConfigError(Exception):
    """A configuration value is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Validated settings; secrets stay wrapped in `Secret`."""

    telegram_token: Secret | None
    telegram_api_url: str
    data_dir: Path
    keystore_path: Path
    master_key: Secret | None
    master_key_file: Path | None
    exchange_urls: Mapping[str, str] = field(default_factory=dict)
    sandbox: bool = False
    fill_poll_seconds: float = 10.0
    #: Fills pushed by the venues' user-data streams (polling then only sweeps streamed accounts every 5 min).
    streams: bool = True
    allowed_users: frozenset[int] = frozenset()
    #: STRATA_ADMINS: who approves and blocks users (/users); always let in, never blocked.
    admins: frozenset[int] = frozenset()
    #: STRATA_ACCESS: one of ACCESS_MODES.
    access: str = "open"
    log_level: str = "INFO"
    max_accounts_per_user: int = 10
    max_strategies_per_user: int = 50
    #: `STRATA_DATABASE_URL` / `STRATA_KEYSTORE_URL` as given (None: the SQLite files of the data folder).
    #: Not in repr(): a URL may carry the database's password (registered with the log redactor at start-up).
    database_url: str | None = field(default=None, repr=False)
    keystore_url: str | None = field(default=None, repr=False)

    def database_passwords(self) -> list[str]:
        """The passwords inside the database URLs, for `bot.redaction.register_secret`."""
        return [p for url in (self.database_url, self.keystore_url) if url and (p := urlsplit(url).password)]

    @property
    def database_path(self) -> Path | None:
        """The main database's SQLite file (None when it is on PostgreSQL)."""
        if self.database_url is None:
            return self.data_dir / "strata.db"
        return None if is_postgres(self.database_url) else sqlite_path(self.database_url)

    @property
    def database(self) -> Path | str:
        """What `storage.db.connect` opens for the main database: a SQLite file or a PostgreSQL URL."""
        return self.database_path or self.database_url

    @property
    def keystore(self) -> Path | str:
        """What `Vault.open` opens: the key store's SQLite file or its PostgreSQL URL."""
        if self.keystore_url is not None and is_postgres(self.keystore_url):
            return self.keystore_url
        return self.keystore_path

    @property
    def uses_postgres(self) -> bool:
        return self.database_path is None

    @property
    def default_master_key_path(self) -> Path:
        return self.data_dir / "master.key"

    def require_token(self) -> Secret:
        """Return the bot token, or explain which variable to set."""
        if not self.telegram_token:
            raise ConfigError(
                "TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather and export "
                "TELEGRAM_BOT_TOKEN=<token> (or put it in .env). Try `python -m bot demo` to run offline."
            )
        return self.telegram_token


def load_settings(environ: Mapping[str, str] | None = None, *, dotenv: bool = True) -> Settings:
    """Read and validate the configuration; `.env` fills only variables not already set."""
    if environ is None:
        if dotenv:
            _load_dotenv()
        environ = os.environ
    env = {k: v for k, v in environ.items() if v is not None}

    token = env.get("TELEGRAM_BOT_TOKEN", "").strip()
    data_dir = Path(env.get("STRATA_DATA_DIR", "").strip() or "./data")
    keystore = env.get("STRATA_KEYSTORE_PATH", "").strip()
    keystore_url = _parse_database_url(env.get("STRATA_KEYSTORE_URL", ""), "STRATA_KEYSTORE_URL")
    if keystore and keystore_url:
        raise ConfigError(
            "STRATA_KEYSTORE_PATH and STRATA_KEYSTORE_URL are both set: keep exactly one of them."
        )
    if keystore_url and not is_postgres(keystore_url):
        keystore = str(sqlite_path(keystore_url))
    master_key = env.get("STRATA_MASTER_KEY", "").strip()
    master_key_file = env.get("STRATA_MASTER_KEY_FILE", "").strip()
    if master_key and master_key_file:
        raise ConfigError(
            "STRATA_MASTER_KEY and STRATA_MASTER_KEY_FILE are both set: keep exactly one of them."
        )
    if master_key:
        decode_master_key(master_key, "STRATA_MASTER_KEY")
    allowed_users = _parse_allowed_users(env.get("STRATA_ALLOWED_USERS", ""))
    admins = _parse_admins(env.get("STRATA_ADMINS", ""))

    return Settings(
        telegram_token=Secret(token) if token else None,
        telegram_api_url=_parse_api_url(env.get("TELEGRAM_API_URL", "").strip()),
        data_dir=data_dir,
        keystore_path=Path(keystore) if keystore else data_dir / "keystore.db",
        keystore_url=keystore_url,
        database_url=_parse_database_url(env.get("STRATA_DATABASE_URL", ""), "STRATA_DATABASE_URL"),
        master_key=Secret(master_key) if master_key else None,
        master_key_file=Path(master_key_file) if master_key_file else None,
        exchange_urls=parse_exchange_urls(env.get("STRATA_EXCHANGE_URLS", "")),
        sandbox=_parse_bool(env.get("STRATA_SANDBOX", ""), "STRATA_SANDBOX"),
        fill_poll_seconds=_parse_positive_float(
            env.get("STRATA_FILL_POLL_SECONDS", ""), "STRATA_FILL_POLL_SECONDS", 10.0
        ),
        streams=_parse_switch(env.get("STRATA_STREAMS", ""), "STRATA_STREAMS", default=True),
        allowed_users=allowed_users,
        admins=admins,
        access=_parse_access(env.get("STRATA_ACCESS", ""), admins=admins, allowed_users=allowed_users),
        log_level=_parse_log_level(env.get("LOG_LEVEL", "")),
        max_accounts_per_user=_parse_limit(
            env.get("STRATA_MAX_ACCOUNTS_PER_USER", ""), "STRATA_MAX_ACCOUNTS_PER_USER", 10
        ),
        max_strategies_per_user=_parse_limit(
            env.get("STRATA_MAX_STRATEGIES_PER_USER", ""), "STRATA_MAX_STRATEGIES_PER_USER", 50
        ),
    )


def _parse_database_url(text: str, name: str) -> str | None:
    """`sqlite:///relative/path`, `sqlite:////absolute/path` or `postgresql://user:pass@host:port/db`."""
    text = text.strip()
    if not text:
        return None
    if is_postgres(text):
        parts = urlsplit(text)
        if not parts.hostname and "host=" not in parts.query:
            raise ConfigError(f"{name}: a postgresql:// URL needs a host, e.g. postgresql://strata:pw@db:5432/strata.")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise ConfigError(f"{name}: the port of the postgresql:// URL is not a number.") from None
        return text
    if text.startswith("sqlite:"):
        try:
            path = sqlite_path(text)
        except ValueError as exc:
            raise ConfigError(f"{name}: {exc}.") from None
        if not str(path) or str(path) == ".":
            raise ConfigError(f"{name}: the sqlite URL names no file (sqlite:///path/to/strata.db).")
        return text
    raise ConfigError(f"{name} must start with sqlite:/// or postgresql:// (got {text.split(':', 1)[0]!r}).")


def decode_master_key(text: str, source: str) -> bytes:
    """Decode a standard-base64 master key of exactly 32 bytes; `source` names where it came from."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{source} is not valid standard base64 (expected 32 random bytes).") from None
    if len(raw) != 32:
        raise ConfigError(f"{source} must decode to exactly 32 bytes, got {len(raw)}.")
    return raw


def known_venues() -> tuple[str, ...]:
    """The venue ids `STRATA_EXCHANGE_URLS` may name: every registered venue adapter's, and `paper`."""
    return tuple(dict.fromkeys((*(v.id for v in adapters()), "paper")))


def parse_exchange_urls(text: str) -> dict[str, str]:
    """Parse `venue=origin,venue=origin` into a mapping of venue id to bare origin."""
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        venue, sep, origin = (s.strip() for s in item.partition("="))
        if not sep or not venue or not origin:
            raise ConfigError(
                f"STRATA_EXCHANGE_URLS: {item!r} is not of the form venue=scheme://host[:port]."
            )
        if venue not in known_venues():
            raise ConfigError(
                f"STRATA_EXCHANGE_URLS: unknown venue {venue!r}; use one of {', '.join(known_venues())}."
            )
        parts = urlsplit(origin)
        try:
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise ConfigError(f"STRATA_EXCHANGE_URLS: {origin!r} has an invalid port.") from None
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path not in ("", "/")
            or parts.query
            or parts.fragment
            or parts.username
        ):
            raise ConfigError(
                f"STRATA_EXCHANGE_URLS: {origin!r} for {venue} must be a bare origin "
                "scheme://host[:port] with no path."
            )
        result[venue] = f"{parts.scheme}://{parts.netloc}"
    return result


def _load_dotenv() -> None:
    try:
        from dotenv import load_dotenv
    except ImportError:  # pragma: no cover - python-dotenv is a dependency
        return
    load_dotenv(Path.cwd() / ".env", override=False)


def _parse_api_url(text: str) -> str:
    if not text:
        return DEFAULT_TELEGRAM_API_URL
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"TELEGRAM_API_URL must be an http(s) URL such as {DEFAULT_TELEGRAM_API_URL}.")
    return text


def _parse_bool(text: str, name: str) -> bool:
    value = text.strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 0 or 1, got {text!r}.")


def _parse_switch(text: str, name: str, *, default: bool) -> bool:
    """`on`/`off` (also 1/0, true/false, yes/no); empty: `default`."""
    value = text.strip().lower()
    if not value:
        return default
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be on or off, got {text!r}.")


def _parse_positive_float(text: str, name: str, default: float) -> float:
    if not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {text!r}.") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be a positive number of seconds, got {text!r}.")
    return value


def _parse_limit(text: str, name: str, default: int) -> int:
    value = text.strip()
    if not value:
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 6 or int(value) < 1:
        raise ConfigError(f"{name} must be a whole number from 1 to 999999, got {text!r}.")
    return int(value)


def _parse_allowed_users(text: str) -> frozenset[int]:
    ids = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            ids.add(int(part))
        except ValueError:
            raise ConfigError(
                f"STRATA_ALLOWED_USERS must be comma-separated Telegram user ids, got {part!r}."
            ) from None
    return frozenset(ids)


def _parse_admins(text: str) -> frozenset[int]:
    ids = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        if not part.isascii() or not part.isdigit() or int(part) < 1 or len(part) > 19:
            raise ConfigError(
                f"STRATA_ADMINS must be comma-separated Telegram user ids (positive whole numbers), got {part!r}."
            )
        ids.add(int(part))
    return frozenset(ids)


def _parse_access(text: str, *, admins: frozenset[int], allowed_users: frozenset[int]) -> str:
    """STRATA_ACCESS, defaulting as DESIGN.md says; a mode its companion variable leaves meaningless is refused."""
    mode = text.strip().lower()
    if not mode:
        return "approval" if admins else "allowlist" if allowed_users else "open"
    if mode not in ACCESS_MODES:
        raise ConfigError(f"STRATA_ACCESS must be one of {', '.join(ACCESS_MODES)}, got {text!r}.")
    if mode == "approval" and not admins:
        raise ConfigError("STRATA_ACCESS=approval needs STRATA_ADMINS: the Telegram user ids who approve new users.")
    if mode == "allowlist" and not allowed_users:
        raise ConfigError("STRATA_ACCESS=allowlist needs STRATA_ALLOWED_USERS: the Telegram user ids let in.")
    if mode == "open" and allowed_users:
        raise ConfigError(
            "STRATA_ACCESS=open lets everyone in, yet STRATA_ALLOWED_USERS is set: remove one of them."
        )
    return mode


def _parse_log_level(text: str) -> str:
    level = text.strip().upper() or "INFO"
    if level == "WARN":
        level = "WARNING"
    if level not in _LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {text!r}.")
    return level


