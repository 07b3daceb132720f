"""Logs never leak: registered secrets, bot tokens and request signatures are scrubbed at every level,
from the libraries' own loggers, in tracebacks and via `logging.lastResort`; secrets print as asterisks."""

from __future__ import annotations

import base64
import copy
import io
import json
import logging
import pickle
import secrets
import string

import pytest

from bot.redaction import REDACTED, configure_logging, redact, register_possible_secret, register_secret
from bot.secret import Credentials, Secret

LEAKY_LOGGERS = ("httpx", "telegram.ext.ExtBot", "ccxt.base.exchange")
BOT_TOKEN = "7012345678:AAF" + "x1Y2z3W4v5U6t7S8r9Q0p1O2n3M4l5K6"


def fresh_secret() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(48))


@pytest.fixture
def log_stream():
    """The process's logging as `LOG_LEVEL=DEBUG` configures it, into a buffer; restored afterwards."""
    root = logging.getLogger()
    for name in LEAKY_LOGGERS:
        logging.getLogger(name)
    saved_root = root.level
    saved = {
        n: lg.level for n, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)
    }
    stream = io.StringIO()
    handler = configure_logging("DEBUG", stream=stream)
    yield stream
    root.removeHandler(handler)
    root.setLevel(saved_root)
    for name, logger in logging.Logger.manager.loggerDict.items():
        if isinstance(logger, logging.Logger):
            logger.setLevel(saved.get(name, logging.NOTSET))


@pytest.fixture
def chatty(log_stream):
    """The leaky loggers let through at DEBUG (as if a library reset its level): only the filter protects."""
    for name in LEAKY_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    return log_stream


@pytest.mark.parametrize("name", LEAKY_LOGGERS)
def test_leaky_loggers_stay_quiet_at_debug(log_stream, name):
    logger = logging.getLogger(name)

    logger.debug("debug record %s", "marker-debug")
    logger.info("HTTP Request: POST https://api.telegram.org/bot%s/getMe", BOT_TOKEN)
    logger.warning("marker-warning")

    output = log_stream.getvalue()
    assert "marker-debug" not in output and "getMe" not in output
    assert "marker-warning" in output
    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG


@pytest.mark.parametrize("name", LEAKY_LOGGERS)
def test_a_registered_secret_never_reaches_the_stream_in_any_form(chatty, name):
    value = fresh_secret()
    register_secret(value)
    logger = logging.getLogger(name)

    logger.debug("request headers %s", {"X-Custom-Key": value})
    logger.debug("update text: " + value)
    logger.warning("hex %s base64 %s", value.encode().hex(), base64.b64encode(value.encode()))
    logger.error("as a Secret %s %r", Secret(value), Secret(value))

    output = chatty.getvalue()
    assert value not in output
    assert value.encode().hex() not in output
    assert output.count(REDACTED) >= 4
    assert "**********" in output


@pytest.mark.parametrize("name", LEAKY_LOGGERS)
def test_an_unregistered_bot_token_is_scrubbed_also_inside_a_url(chatty, name):
    logger = logging.getLogger(name)

    logger.debug("HTTP Request: POST https://api.telegram.org/bot%s/getUpdates 200", BOT_TOKEN)
    logger.warning("Calling Bot API endpoint `getMe` with token %s", BOT_TOKEN)
    logger.warning("GET /file/bot%s/photos/1.jpg", BOT_TOKEN)

    output = chatty.getvalue()
    assert BOT_TOKEN not in output
    assert BOT_TOKEN.split(":")[1] not in output
    assert output.count(REDACTED) == 3


@pytest.mark.parametrize("name", LEAKY_LOGGERS)
def test_request_signatures_and_api_key_headers_are_scrubbed(chatty, name):
    signature = secrets.token_hex(32)
    api_key = fresh_secret()
    kraken_sign = base64.b64encode(secrets.token_bytes(64)).decode()
    logger = logging.getLogger(name)

    logger.debug("GET https://api.binance.com/api/v3/account?timestamp=1700000000000&signature=%s", signature)
    logger.debug("headers {'X-MBX-APIKEY': '%s'}", api_key)
    logger.debug("headers {'API-Key': '%s', 'API-Sign': '%s'}", api_key, kraken_sign)

    output = chatty.getvalue()
    assert signature not in output
    assert api_key not in output
    assert kraken_sign not in output
    assert "signature=" + REDACTED in output


def test_a_traceback_carrying_a_secret_is_scrubbed(chatty):
    value = fresh_secret()
    register_secret(value)
    logger = logging.getLogger("ccxt.base.exchange")

    try:
        raise ValueError(f"binance rejected key {value} and token {BOT_TOKEN}")
    except ValueError:
        logger.exception("request failed")
    try:
        raise RuntimeError("wrapped") from KeyError(value)
    except RuntimeError as exc:
        logging.getLogger("bot").error("failed: %s", exc, exc_info=exc)

    output = chatty.getvalue()
    assert "Traceback" in output and "ValueError" in output and "KeyError" in output
    assert value not in output
    assert BOT_TOKEN not in output


def test_a_stack_dump_carrying_a_secret_is_scrubbed(chatty):
    value = fresh_secret()
    register_secret(value)

    logging.getLogger("httpx").warning("where %s", value, stack_info=True)

    output = chatty.getvalue()
    assert "Stack (most recent call last)" in output
    assert value not in output


def test_the_last_resort_handler_also_scrubs(log_stream, capsys):
    value = fresh_secret()
    register_secret(value)
    orphan = logging.getLogger("strata.tests.orphan")  # no handler anywhere up its chain
    orphan.propagate = False
    try:
        orphan.error("secret %s token %s", value, BOT_TOKEN)
        try:
            raise OSError(value)
        except OSError:
            orphan.exception("with traceback")
    finally:
        orphan.propagate = True

    err = capsys.readouterr().err
    assert "secret " + REDACTED in err and "Traceback" in err
    assert value not in err
    assert BOT_TOKEN not in err
    assert value not in log_stream.getvalue()


def test_registered_secrets_are_scrubbed_in_their_hex_and_base64_forms():
    value = fresh_secret()
    register_secret(Secret(value))
    text = " ".join(
        [
            value,
            value.encode().hex(),
            base64.b64encode(value.encode()).decode(),
            base64.urlsafe_b64encode(value.encode()).decode(),
        ]
    )

    assert redact(text) == " ".join([REDACTED] * 4)


def test_text_without_secrets_is_left_alone():
    text = "Order 12345 filled: 0.01 BTC at 43000.5 USDT (fee 0.43) at 2024-01-01T12:30:00+00:00"

    assert redact(text) == text


# --- the secret value types ---


def test_a_secret_never_shows_in_repr_str_or_formatting():
    value = fresh_secret()
    secret = Secret(value)

    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>60}",
        "%s %r" % (secret, secret),  # noqa: UP031 - logging's own formatting
    ]
    shown += [repr([secret]), repr({"k": secret}), str(ValueError(secret)), format(secret, "")]

    for text in shown:
        assert value not in text
        assert "*" in text
    assert secret.reveal() == value


def test_credentials_never_show_in_repr_str_or_formatting():
    key, value = fresh_secret(), fresh_secret()
    creds = Credentials(key, value)

    shown = [
        repr(creds),
        str(creds),
        f"{creds}",
        f"{creds!r}",
        "%s" % (creds,),  # noqa: UP031 - logging's own formatting
        repr([creds]),
        str(KeyError(creds)),
    ]
    shown += [repr(creds.api_key), str(creds.secret)]

    for text in shown:
        assert key not in text and value not in text
    assert creds.api_key.reveal() == key and creds.secret.reveal() == value


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_secrets_and_credentials_refuse_to_be_pickled(protocol):
    value = fresh_secret()

    for item in (Secret(value), Credentials(value, value), {"nested": [Secret(value)]}):
        with pytest.raises(TypeError):
            pickle.dumps(item, protocol=protocol)


def test_secrets_refuse_to_be_serialised_or_copied_into_storage():
    value = fresh_secret()

    with pytest.raises(TypeError):
        json.dumps({"secret": Secret(value)})
    with pytest.raises(TypeError):
        copy.deepcopy(Credentials(value, value))
    with pytest.raises(AttributeError):
        Secret(value)._value = "changed"  # type: ignore[misc]


def test_words_shorter_than_a_key_are_not_registered_so_ordinary_log_text_survives():
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    register_secret("binance")
    register_secret("Kraken-1")
    logging.getLogger("bot.test").info("connected binance and Kraken-1")
    assert "connected binance and Kraken-1" in stream.getvalue()


def test_a_registered_secret_is_found_inside_longer_tokens_and_among_many_others():
    for _ in range(2000):
        register_secret(secrets.token_hex(32))
    target = secrets.token_hex(32)
    register_secret(target)
    text = f"url?apiKey={target}&x=1 header:{target.upper()}{target} b64 {base64.b64encode(target.encode()).decode()}"
    scrubbed = redact(text)
    assert target not in scrubbed
    assert base64.b64encode(target.encode()).decode() not in scrubbed


def test_a_real_credential_is_never_evicted_by_key_shaped_text_pasted_by_the_thousand():
    # Before the fix every key-shaped message went into the one bounded registry: ~16,000 of them pushed a
    # connected key out, and it could then reach a log in clear.
    real_key, real_secret = secrets.token_hex(32), fresh_secret()
    register_secret(real_key)
    register_secret(Credentials(real_key, real_secret).secret)
    for _ in range(20_000):
        register_possible_secret(secrets.token_hex(32))
    text = f"apiKey={real_key} secret {real_secret} hex {real_secret.encode().hex()}"
    scrubbed = redact(text)
    assert real_key not in scrubbed and real_secret not in scrubbed
    assert real_secret.encode().hex() not in scrubbed


def test_key_shaped_text_is_scrubbed_while_it_is_among_the_recent_ones():
    stray = secrets.token_hex(32)
    register_possible_secret(stray)
    assert stray not in redact(f"pasted {stray}")


def test_a_value_first_seen_as_key_shaped_text_stays_once_it_turns_out_to_be_a_real_key():
    value = secrets.token_hex(32)
    register_possible_secret(value)  # pasted during /connect, not validated yet
    register_secret(value)  # validated and stored
    for _ in range(20_000):
        register_possible_secret(secrets.token_hex(32))
    assert value not in redact(value)


@pytest.mark.timing
def test_key_shaped_text_pasted_by_the_thousand_holds_a_bounded_amount_of_memory():
    # Before the fix the bounded tier counted forms, not their size: a key-shaped message of 4,000 characters
    # was kept with its hex and base64 forms (~17 KB), so the ~16,000 messages the tier holds took ~300 MB.
    import gc
    import tracemalloc

    register_possible_secret(fresh_secret())  # the registry's own structures exist before measuring
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(3000):
            register_possible_secret(secrets.token_urlsafe(3000)[:4000])
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 8_000_000, f"3,000 pasted messages hold {held / 1e6:.0f} MB"


def test_a_key_and_secret_pasted_together_are_each_scrubbed_alone():
    key, secret = secrets.token_hex(32), fresh_secret()
    register_possible_secret(f"{key}\n{secret}")
    scrubbed = redact(f"key={key} secret={secret} hex={secret.encode().hex()}")
    assert key not in scrubbed and secret not in scrubbed and secret.encode().hex() not in scrubbed


def test_a_message_of_many_key_shaped_words_adds_only_a_few_values_to_the_bounded_tier():
    # Each message may push older key-shaped values out of the bounded tier (a pending /connect key among them):
    # a message of 120 key-length words must not count as 120 messages.
    pending = secrets.token_hex(32)
    register_possible_secret(pending)
    for _ in range(2000):
        register_possible_secret(" ".join(secrets.token_hex(16) for _ in range(120)))
    assert pending not in redact(pending)
