"""The configuration contract (DESIGN.md section 4): defaults, malformed values named, `.env` support."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from unittest import mock

import pytest

from bot.config import DEFAULT_TELEGRAM_API_URL, ConfigError, load_settings, parse_exchange_urls
from bot.master_key import load_master_key

KEY_32 = base64.b64encode(bytes(range(32))).decode()
ALL_VARIABLES = (
    "TELEGRAM_BOT_TOKEN",
    "TELEGRAM_API_URL",
    "STRATA_DATA_DIR",
    "STRATA_KEYSTORE_PATH",
    "STRATA_MASTER_KEY",
    "STRATA_MASTER_KEY_FILE",
    "STRATA_EXCHANGE_URLS",
    "STRATA_SANDBOX",
    "STRATA_FILL_POLL_SECONDS",
    "STRATA_STREAMS",
    "STRATA_ALLOWED_USERS",
    "STRATA_ADMINS",
    "STRATA_ACCESS",
    "LOG_LEVEL",
    "STRATA_MAX_ACCOUNTS_PER_USER",
    "STRATA_MAX_STRATEGIES_PER_USER",
)


def test_every_variable_has_its_documented_default():
    settings = load_settings({}, dotenv=False)

    assert settings.telegram_token is None
    assert settings.telegram_api_url == "https://api.telegram.org/bot" == DEFAULT_TELEGRAM_API_URL
    assert settings.data_dir == Path("./data")
    assert settings.keystore_path == Path("./data") / "keystore.db"
    assert settings.master_key is None
    assert settings.master_key_file is None
    assert settings.default_master_key_path == Path("./data") / "master.key"
    assert dict(settings.exchange_urls) == {}
    assert settings.sandbox is False
    assert settings.fill_poll_seconds == 10
    assert settings.streams is True
    assert settings.allowed_users == frozenset()
    assert settings.admins == frozenset()
    assert settings.access == "open"
    assert settings.log_level == "INFO"
    assert settings.max_accounts_per_user == 10
    assert settings.max_strategies_per_user == 50


def test_empty_values_mean_the_defaults():
    settings = load_settings(dict.fromkeys(ALL_VARIABLES, ""), dotenv=False)

    assert settings == load_settings({}, dotenv=False)


def test_keystore_defaults_to_the_data_dir_and_can_be_moved_elsewhere(tmp_path):
    settings = load_settings({"STRATA_DATA_DIR": str(tmp_path / "d")}, dotenv=False)
    assert settings.keystore_path == tmp_path / "d" / "keystore.db"
    assert settings.database_path.parent == tmp_path / "d"
    assert settings.database_path != settings.keystore_path

    moved = load_settings(
        {"STRATA_DATA_DIR": str(tmp_path / "d"), "STRATA_KEYSTORE_PATH": str(tmp_path / "other" / "ks.db")},
        dotenv=False,
    )
    assert moved.keystore_path == tmp_path / "other" / "ks.db"


def test_valid_values_are_parsed():
    settings = load_settings(
        {
            "TELEGRAM_BOT_TOKEN": "123456:abc",
            "TELEGRAM_API_URL": "http://127.0.0.1:8081/bot{token}/",
            "STRATA_MASTER_KEY": KEY_32,
            "STRATA_EXCHANGE_URLS": " binance=http://127.0.0.1:9001/ , kraken=https://localhost:9002",
            "STRATA_SANDBOX": "1",
            "STRATA_FILL_POLL_SECONDS": "2.5",
            "STRATA_STREAMS": "off",
            "STRATA_ALLOWED_USERS": "42, 7",
            "LOG_LEVEL": "debug",
            "STRATA_MAX_ACCOUNTS_PER_USER": "3",
            "STRATA_MAX_STRATEGIES_PER_USER": "120",
        },
        dotenv=False,
    )

    assert settings.telegram_token.reveal() == "123456:abc"
    assert settings.telegram_api_url == "http://127.0.0.1:8081/bot{token}/"
    assert settings.master_key.reveal() == KEY_32
    assert dict(settings.exchange_urls) == {
        "binance": "http://127.0.0.1:9001",
        "kraken": "https://localhost:9002",
    }
    assert settings.sandbox is True
    assert settings.fill_poll_seconds == 2.5
    assert settings.streams is False
    assert settings.allowed_users == frozenset({42, 7})
    assert settings.log_level == "DEBUG"
    assert settings.max_accounts_per_user == 3
    assert settings.max_strategies_per_user == 120


def test_every_venue_id_is_accepted_in_exchange_urls():
    text = ",".join(
        f"{v}=http://127.0.0.1:{9000 + i}" for i, v in enumerate(("binance", "binanceusdm", "kraken"))
    )
    assert list(parse_exchange_urls(text)) == ["binance", "binanceusdm", "kraken"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STRATA_EXCHANGE_URLS", "binance=http://127.0.0.1:9001/api"),
        ("STRATA_EXCHANGE_URLS", "binance=http://127.0.0.1:9001/?x=1"),
        ("STRATA_EXCHANGE_URLS", "bitmex=http://127.0.0.1:9001"),
        ("STRATA_EXCHANGE_URLS", "binance http://127.0.0.1:9001"),
        ("STRATA_EXCHANGE_URLS", "binance="),
        ("STRATA_EXCHANGE_URLS", "=http://127.0.0.1:9001"),
        ("STRATA_EXCHANGE_URLS", "binance=http://127.0.0.1:99999"),
        ("STRATA_EXCHANGE_URLS", "binance=http://127.0.0.1:port"),
        ("STRATA_EXCHANGE_URLS", "binance=ftp://127.0.0.1:9001"),
        ("STRATA_EXCHANGE_URLS", "binance=127.0.0.1:9001"),
        ("STRATA_EXCHANGE_URLS", "binance=http://user:pw@127.0.0.1:9001"),
        ("STRATA_MASTER_KEY", "not base64 at all!"),
        ("STRATA_MASTER_KEY", base64.b64encode(bytes(16)).decode()),
        ("STRATA_MASTER_KEY", base64.b64encode(bytes(33)).decode()),
        ("STRATA_MASTER_KEY", base64.urlsafe_b64encode(b"\xfb" * 32).decode()),
        ("STRATA_SANDBOX", "2"),
        ("STRATA_SANDBOX", "maybe"),
        ("STRATA_STREAMS", "sometimes"),
        ("STRATA_FILL_POLL_SECONDS", "-1"),
        ("STRATA_FILL_POLL_SECONDS", "0"),
        ("STRATA_FILL_POLL_SECONDS", "abc"),
        ("STRATA_FILL_POLL_SECONDS", "nan"),
        ("STRATA_FILL_POLL_SECONDS", "inf"),
        ("STRATA_ALLOWED_USERS", "abc"),
        ("STRATA_ALLOWED_USERS", "42,@bob"),
        ("STRATA_ADMINS", "abc"),
        ("STRATA_ADMINS", "42,@bob"),
        ("STRATA_ADMINS", "0"),
        ("STRATA_ADMINS", "-5"),
        ("STRATA_ADMINS", "4.2"),
        ("STRATA_ADMINS", "²"),
        ("STRATA_ACCESS", "closed"),
        ("STRATA_ACCESS", "approval"),  # without STRATA_ADMINS nobody could approve anyone
        ("STRATA_ACCESS", "allowlist"),  # without STRATA_ALLOWED_USERS nobody would be let in
        ("LOG_LEVEL", "LOUD"),
        ("STRATA_MAX_ACCOUNTS_PER_USER", "0"),
        ("STRATA_MAX_ACCOUNTS_PER_USER", "1e3"),
        ("STRATA_MAX_STRATEGIES_PER_USER", "²"),
        ("STRATA_MAX_STRATEGIES_PER_USER", "-5"),
        ("TELEGRAM_API_URL", "ftp://api.telegram.org/bot"),
        ("TELEGRAM_API_URL", "api.telegram.org/bot"),
    ],
)
def test_an_invalid_value_is_refused_with_a_message_naming_its_variable(variable, value):
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value}, dotenv=False)

    message = str(caught.value)
    assert variable in message
    assert "\n" not in message
    if variable == "STRATA_MASTER_KEY":
        assert value not in message  # the (bad) key itself is never echoed


def test_both_master_key_variables_set_is_an_error_naming_both(tmp_path):
    key_file = tmp_path / "k"
    key_file.write_text(KEY_32)

    with pytest.raises(ConfigError) as caught:
        load_settings({"STRATA_MASTER_KEY": KEY_32, "STRATA_MASTER_KEY_FILE": str(key_file)}, dotenv=False)

    assert re.search(r"STRATA_MASTER_KEY(?!_FILE)", str(caught.value))
    assert "STRATA_MASTER_KEY_FILE" in str(caught.value)
    assert KEY_32 not in str(caught.value)


@pytest.mark.parametrize(
    "content", ["not base64!!", base64.b64encode(bytes(31)).decode(), ""], ids=["garbage", "short", "empty"]
)
def test_a_malformed_master_key_file_is_refused_naming_the_variable(tmp_path, content):
    key_file = tmp_path / "master.key"
    key_file.write_text(content)
    settings = load_settings({"STRATA_MASTER_KEY_FILE": str(key_file)}, dotenv=False)

    with pytest.raises(ConfigError, match="STRATA_MASTER_KEY_FILE"):
        load_master_key(settings)


def test_a_missing_master_key_file_is_refused_naming_the_variable(tmp_path):
    settings = load_settings(
        {"STRATA_MASTER_KEY_FILE": str(tmp_path / "absent.key"), "STRATA_DATA_DIR": str(tmp_path / "data")},
        dotenv=False,
    )

    with pytest.raises(ConfigError, match="STRATA_MASTER_KEY_FILE"):
        load_master_key(settings)
    assert not (tmp_path / "data").exists()  # no key was generated in its place


def test_a_master_key_file_with_a_trailing_newline_is_read(tmp_path):
    key_file = tmp_path / "master.key"
    key_file.write_text(KEY_32 + "\n")
    settings = load_settings({"STRATA_MASTER_KEY_FILE": str(key_file)}, dotenv=False)

    assert load_master_key(settings) == bytes(range(32))


@pytest.fixture
def clean_environ(monkeypatch, tmp_path):
    """An isolated os.environ (restored afterwards, also for what `.env` loading adds) and an empty cwd."""
    with mock.patch.dict(os.environ, clear=False):
        for name in ALL_VARIABLES:
            os.environ.pop(name, None)
        monkeypatch.chdir(tmp_path)
        yield tmp_path


def test_dotenv_in_the_working_directory_fills_unset_variables_only(clean_environ):
    (clean_environ / ".env").write_text(
        "TELEGRAM_BOT_TOKEN=from-dotenv\nLOG_LEVEL=DEBUG\nSTRATA_ALLOWED_USERS=5,6\n# a comment\n"
    )
    os.environ["TELEGRAM_BOT_TOKEN"] = "from-environment"

    settings = load_settings()

    assert settings.telegram_token.reveal() == "from-environment"
    assert settings.log_level == "DEBUG"
    assert settings.allowed_users == frozenset({5, 6})


def test_dotenv_values_are_validated_like_the_environment(clean_environ):
    (clean_environ / ".env").write_text("STRATA_SANDBOX=2\n")

    with pytest.raises(ConfigError, match="STRATA_SANDBOX"):
        load_settings()


def test_dotenv_is_ignored_when_disabled(clean_environ):
    (clean_environ / ".env").write_text("LOG_LEVEL=DEBUG\n")

    assert load_settings(dotenv=False).log_level == "INFO"


def test_settings_repr_hides_the_token_and_master_key():
    token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
    settings = load_settings({"TELEGRAM_BOT_TOKEN": token, "STRATA_MASTER_KEY": KEY_32}, dotenv=False)

    text = f"{settings!r} {settings}"
    assert token not in text
    assert KEY_32 not in text


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({}, "open"),
        ({"STRATA_ALLOWED_USERS": "5"}, "allowlist"),
        ({"STRATA_ADMINS": "7"}, "approval"),
        ({"STRATA_ADMINS": "7", "STRATA_ALLOWED_USERS": "5"}, "approval"),
        ({"STRATA_ADMINS": "7", "STRATA_ACCESS": "open"}, "open"),
        ({"STRATA_ADMINS": "7", "STRATA_ALLOWED_USERS": "5", "STRATA_ACCESS": " AllowList "}, "allowlist"),
        ({"STRATA_ADMINS": "7, 8", "STRATA_ACCESS": "approval"}, "approval"),
    ],
)
def test_the_access_mode_defaults_from_admins_then_the_allowlist(env, mode):
    settings = load_settings(env, dotenv=False)

    assert settings.access == mode
    assert settings.admins == frozenset(int(i) for i in env.get("STRATA_ADMINS", "").split(",") if i.strip())


def test_an_open_bot_with_an_allowlist_is_refused_naming_both():
    with pytest.raises(ConfigError) as caught:
        load_settings({"STRATA_ACCESS": "open", "STRATA_ALLOWED_USERS": "5"}, dotenv=False)

    assert "STRATA_ACCESS" in str(caught.value) and "STRATA_ALLOWED_USERS" in str(caught.value)
