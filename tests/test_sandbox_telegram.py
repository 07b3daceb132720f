"""The fake Telegram Bot API server, proven through python-telegram-bot's real HTTP stack."""

from __future__ import annotations

import asyncio
import datetime as dtm
import logging
import sys

import aiohttp
import pytest
from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters, Update
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes
from telegram.request import HTTPXRequest

from bot.sandbox.telegram_limits import FloodLimits
from bot.sandbox.telegram_server import FakeTelegram
from tests.plugins.telegram import application_builder, polling

USER = 4242
KEYBOARD = InlineKeyboardMarkup(
    [[InlineKeyboardButton("Pause", callback_data="pause:7"), InlineKeyboardButton("Docs", url="https://x.y")]]
)


async def _start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(f"Hello {update.effective_user.first_name}", reply_markup=KEYBOARD)


async def _pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    query = update.callback_query
    await query.answer("Paused")
    await query.edit_message_text(f"Strategy paused ({query.data})")


def _bot_app(fake: FakeTelegram) -> Application:
    app = application_builder(fake).build()
    app.add_handler(CommandHandler("start", _start))
    app.add_handler(CallbackQueryHandler(_pressed))
    return app


@pytest.fixture
async def bot(fake_telegram: FakeTelegram):
    """A PTB Bot (initialized, real HTTP) talking to the fake, for direct API calls."""
    app = application_builder(fake_telegram).build()
    async with app:
        yield app.bot


async def test_start_command_reaches_command_handler_and_reply_is_recorded(fake_telegram: FakeTelegram) -> None:
    async with polling(_bot_app(fake_telegram)):
        sent = fake_telegram.user_sends(USER, "/start", first_name="Ada")
        reply = await fake_telegram.wait_for_message(USER)

    assert sent["entities"] == [{"type": "bot_command", "offset": 0, "length": 6}]
    assert (reply.method, reply.text, reply.button_texts) == ("sendMessage", "Hello Ada", ["Pause", "Docs"])
    assert [m["text"] for m in fake_telegram.messages_in(USER)] == ["/start", "Hello Ada"]
    assert fake_telegram.pending_updates == 0  # acknowledged through getUpdates' offset


async def test_button_press_is_answered_and_edits_the_message(fake_telegram: FakeTelegram) -> None:
    async with polling(_bot_app(fake_telegram)):
        fake_telegram.user_sends(USER, "/start")
        menu = await fake_telegram.wait_for_message(USER)
        query_id = fake_telegram.press_button(USER, menu, "Pause")
        edited = await fake_telegram.wait_for_message(USER)

    assert [a.callback_query_id for a in fake_telegram.answered_callbacks] == [query_id]
    assert fake_telegram.answered_callbacks[0].text == "Paused"
    assert (edited.method, edited.message_id, edited.text) == (
        "editMessageText",
        menu.message_id,
        "Strategy paused (pause:7)",
    )
    live = fake_telegram.message(USER, menu.message_id)
    assert live is not None and "reply_markup" not in live  # editing text without a keyboard removes it
    assert fake_telegram.edited == [edited]


async def test_pressing_a_missing_or_url_button_is_a_scripting_error(fake_telegram: FakeTelegram, bot) -> None:
    fake_telegram.add_user(USER)
    message = await bot.send_message(USER, "menu", reply_markup=KEYBOARD)

    with pytest.raises(LookupError, match="Resume"):
        fake_telegram.press_button(USER, message.message_id, "Resume")
    with pytest.raises(LookupError):
        fake_telegram.press_button(USER, message.message_id, 1)  # the URL button has no callback data


async def test_a_tampered_client_can_send_callback_data_no_button_has(fake_telegram: FakeTelegram) -> None:
    async with polling(_bot_app(fake_telegram)):
        fake_telegram.user_sends(USER, "/start")
        menu = await fake_telegram.wait_for_message(USER)
        fake_telegram.press_callback_data(USER, menu.message_id, "pause:999")
        edited = await fake_telegram.wait_for_message(USER)

    assert edited.text == "Strategy paused (pause:999)"


async def test_get_updates_long_polls_instead_of_answering_empty_at_once(fake_telegram: FakeTelegram) -> None:
    async with polling(_bot_app(fake_telegram), timeout=5):
        await asyncio.sleep(1.0)
        polls_while_idle = fake_telegram.calls["getUpdates"]

    assert 1 <= polls_while_idle <= 2


async def test_long_poll_returns_as_soon_as_an_update_arrives_and_offset_acknowledges(
    fake_telegram: FakeTelegram, bot
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    poll = asyncio.create_task(bot.get_updates(timeout=5, read_timeout=10))
    await asyncio.sleep(0.1)
    fake_telegram.user_sends(USER, "hello")
    updates = await poll

    assert loop.time() - started < 1.0
    assert [u.message.text for u in updates] == ["hello"]
    assert await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0) == ()
    assert fake_telegram.pending_updates == 0


async def test_wrong_token_makes_ptb_raise_invalid_token(fake_telegram: FakeTelegram) -> None:
    # Own request objects: a failed initialize() leaves PTB's HTTP clients open, so close them here.
    requests = HTTPXRequest(), HTTPXRequest()
    app = (
        application_builder(fake_telegram)
        .token("999999:WRONG")
        .request(requests[0])
        .get_updates_request(requests[1])
        .build()
    )

    try:
        with pytest.raises(InvalidToken):
            await app.initialize()
    finally:
        for request in requests:
            await request.shutdown()
    assert fake_telegram.rejected == []  # refused before any method ran


async def test_unknown_method_answers_404_not_found(fake_telegram: FakeTelegram) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake_telegram.base_url}{fake_telegram.token}/sendTeleportation") as response,
    ):
        body = await response.json()

    assert (response.status, body) == (404, {"ok": False, "error_code": 404, "description": "Not Found"})


async def test_json_bodies_are_accepted_like_form_bodies(fake_telegram: FakeTelegram) -> None:
    fake_telegram.add_user(USER)
    url = f"{fake_telegram.base_url}{fake_telegram.token}/sendMessage"
    async with aiohttp.ClientSession() as session, session.post(url, json={"chat_id": USER, "text": "123"}) as response:
        body = await response.json()

    assert body["ok"] is True and body["result"]["text"] == "123"


async def test_sending_to_an_unknown_chat_is_chat_not_found(bot) -> None:
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(777, "anyone there?")


async def test_replying_to_a_missing_message_is_bad_request_unless_allowed(fake_telegram: FakeTelegram, bot) -> None:
    fake_telegram.add_user(USER)

    with pytest.raises(BadRequest, match="Message to be replied not found"):
        await bot.send_message(USER, "x", reply_parameters=ReplyParameters(99))
    sent = await bot.send_message(USER, "y", reply_parameters=ReplyParameters(99, allow_sending_without_reply=True))
    assert sent.reply_to_message is None


async def test_bot_deletes_a_user_message_once_and_a_second_delete_is_bad_request(
    fake_telegram: FakeTelegram, bot
) -> None:
    key_message = fake_telegram.user_sends(USER, "api-key secret-part")

    assert await bot.delete_message(USER, key_message["message_id"]) is True
    assert fake_telegram.messages_in(USER) == []
    assert [(d.chat_id, d.message_id) for d in fake_telegram.deleted] == [(USER, key_message["message_id"])]
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await bot.delete_message(USER, key_message["message_id"])


async def test_delete_failure_can_be_scripted_per_chat(fake_telegram: FakeTelegram, bot) -> None:
    key_message = fake_telegram.user_sends(USER, "secret")
    fake_telegram.make_delete_fail(USER)

    with pytest.raises(BadRequest, match="can't be deleted"):
        await bot.delete_message(USER, key_message["message_id"])
    assert fake_telegram.message(USER, key_message["message_id"]) is not None


async def test_editing_an_unknown_message_or_to_identical_content_is_bad_request(
    fake_telegram: FakeTelegram, bot
) -> None:
    fake_telegram.add_user(USER)
    message = await bot.send_message(USER, "status", reply_markup=KEYBOARD)

    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("x", chat_id=USER, message_id=999)
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_text("status", chat_id=USER, message_id=message.message_id, reply_markup=KEYBOARD)
    edited = await bot.edit_message_reply_markup(chat_id=USER, message_id=message.message_id, reply_markup=None)
    assert edited.reply_markup is None and fake_telegram.edited[-1].method == "editMessageReplyMarkup"


async def test_malformed_html_is_refused_like_telegram(fake_telegram: FakeTelegram, bot) -> None:
    fake_telegram.add_user(USER)

    with pytest.raises(BadRequest, match="Can't parse entities"):
        await bot.send_message(USER, "price <b>1 < 2</b>", parse_mode="HTML")
    with pytest.raises(BadRequest, match=r'(?i)unsupported start tag "br"'):
        await bot.send_message(USER, "line<br>line", parse_mode="HTML")
    assert fake_telegram.sent == []


async def test_html_is_rendered_into_text_and_entities_like_telegram(fake_telegram: FakeTelegram, bot) -> None:
    fake_telegram.add_user(USER)
    source = '<b>BTC</b> 1 &lt; 2 <a href="https://example.org/?a=1&amp;b=2">docs</a> 🚀 <i>done</i>'

    message = await bot.send_message(USER, source, parse_mode="HTML")

    assert message.text == "BTC 1 < 2 docs 🚀 done"
    assert [(e.type, e.offset, e.length) for e in message.entities] == [
        ("bold", 0, 3),
        ("text_link", 10, 4),
        ("italic", 18, 4),  # the rocket counts as two UTF-16 code units
    ]
    assert message.entities[1].url == "https://example.org/?a=1&b=2"
    assert message.text_html == source.replace("&amp;", "&")
    record = fake_telegram.sent[-1]
    assert (record.text, record.plain_text, record.parse_mode) == (source, message.text, "HTML")
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_text(source, chat_id=USER, message_id=message.message_id, parse_mode="HTML")


async def test_flood_limits_answer_429_with_retry_after_beyond_a_burst_of_three(
    fake_telegram: FakeTelegram, bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PTB_TIMEDELTA", "true")  # RetryAfter.retry_after as timedelta, without a deprecation
    fake_telegram.add_user(USER)
    fake_telegram.enforce_limits(True)
    first = await bot.send_message(USER, "1")
    for text in ("2", "3"):
        await bot.send_message(USER, text)

    with pytest.raises(RetryAfter) as refused:
        await bot.send_message(USER, "4")
    assert refused.value.retry_after >= dtm.timedelta(seconds=1)
    assert fake_telegram.rejected_429 == 1
    assert [m.text for m in fake_telegram.sent] == ["1", "2", "3"]
    # deleteMessage does not count against the limits
    assert await bot.delete_message(USER, first.message_id) is True


async def test_flood_limits_are_off_unless_enabled(fake_telegram: FakeTelegram, bot) -> None:
    fake_telegram.add_user(USER)
    for i in range(6):
        await bot.send_message(USER, str(i))
    assert fake_telegram.rejected_429 == 0


def test_flood_limits_cap_overall_rate_and_group_minute() -> None:
    now = [0.0]
    limits = FloodLimits(lambda: now[0])

    assert all(limits.admit(chat) is None for chat in range(1, 31))
    assert limits.admit(31) == 1  # 31st message within one second, distinct chats
    now[0] = 1.01
    assert limits.admit(31) is None

    for minute_second in range(20):
        now[0] = 10.0 + minute_second * 2  # well under 1/s per chat, so only the group limit applies
        assert limits.admit(-100) is None
    now[0] = 50.0
    assert limits.admit(-100) == 20  # the first of the 20 was at t=10, so the slot frees at t=70


async def test_blocked_user_gets_forbidden_until_they_write_again(fake_telegram: FakeTelegram, bot) -> None:
    fake_telegram.add_user(USER)
    fake_telegram.block_user(USER)

    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(USER, "alert")
    fake_telegram.user_sends(USER, "/start")
    await bot.send_message(USER, "welcome back")
    assert [m.text for m in fake_telegram.sent] == ["welcome back"]


async def test_injected_fault_answers_the_next_call_only(fake_telegram: FakeTelegram, bot) -> None:
    fake_telegram.add_user(USER)
    fake_telegram.fail_next("sendMessage", 400, "Bad Request: have no rights to send a message")

    with pytest.raises(BadRequest, match="Have no rights"):
        await bot.send_message(USER, "first")
    await bot.send_message(USER, "second")
    assert [m.text for m in fake_telegram.sent] == ["second"]


async def test_commands_photos_and_chat_actions_are_recorded(fake_telegram: FakeTelegram, bot) -> None:
    fake_telegram.add_user(USER)
    await bot.set_my_commands([BotCommand("start", "Begin"), BotCommand("status", "Your strategies")])
    photo = await bot.send_photo(USER, photo=b"\x89PNG fake chart", caption="BTC/USDT", disable_notification=True)
    await bot.send_chat_action(USER, "typing")

    assert fake_telegram.commands == [
        {"command": "start", "description": "Begin"},
        {"command": "status", "description": "Your strategies"},
    ]
    assert [c.command for c in await bot.get_my_commands()] == ["start", "status"]
    assert photo.photo[-1].width == 1280 and photo.caption == "BTC/USDT"
    record = fake_telegram.sent[-1]
    assert (record.method, record.caption, record.disable_notification) == ("sendPhoto", "BTC/USDT", True)
    assert [(a.chat_id, a.action) for a in fake_telegram.chat_actions] == [(USER, "typing")]


async def test_group_commands_and_replies_use_the_group_chat(fake_telegram: FakeTelegram) -> None:
    group = -1001234
    async with polling(_bot_app(fake_telegram)):
        fake_telegram.user_sends(USER, "/start@strata_test_bot", chat_id=group, chat_type="supergroup")
        reply = await fake_telegram.wait_for_message(group)

    assert reply.chat_id == group and reply.text.startswith("Hello")
    # PTB quotes in groups: the reply carries reply_to_message, as from Telegram
    assert fake_telegram.message(group, reply.message_id)["reply_to_message"]["text"] == "/start@strata_test_bot"
    with pytest.raises(ValueError, match="negative"):
        fake_telegram.user_sends(USER, "hi", chat_id=5, chat_type="group")


async def test_restarted_fake_keeps_its_port_and_state(fake_telegram: FakeTelegram, bot) -> None:
    fake_telegram.add_user(USER)
    base_url = fake_telegram.base_url
    await fake_telegram.stop()  # Telegram is down: the bot's calls fail at the network level
    with pytest.raises(NetworkError):
        await bot.send_message(USER, "lost")
    await fake_telegram.start()

    assert fake_telegram.base_url == base_url
    await bot.send_message(USER, "back")
    assert [m.text for m in fake_telegram.sent] == ["back"]


async def test_wait_for_message_times_out_with_what_the_chat_holds(fake_telegram: FakeTelegram, bot) -> None:
    fake_telegram.add_user(USER)
    cursor = fake_telegram.cursor()
    await bot.send_message(USER, "old news")

    with pytest.raises(TimeoutError, match="old news"):
        await fake_telegram.wait_for_message(USER, timeout=0.1, predicate=lambda m: m.text == "fresh")
    assert (await fake_telegram.wait_for_message(USER, after=cursor)).text == "old news"


async def test_server_logs_never_contain_the_token(
    fake_telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with polling(_bot_app(fake_telegram)):
        fake_telegram.user_sends(USER, "/start")
        await fake_telegram.wait_for_message(USER)
    async with aiohttp.ClientSession() as session:
        await (await session.post(f"{fake_telegram.base_url}{fake_telegram.token}/noSuchMethod")).read()

    # PTB's and httpx's own DEBUG lines carry the token; they are the client's business, not the server's.
    server_side = [r for r in caplog.records if not r.name.startswith(("telegram", "httpx", "httpcore"))]
    secret = fake_telegram.token.partition(":")[2]
    assert [r.getMessage() for r in server_side if secret in r.getMessage()] == []


async def test_standalone_process_prints_ready_line_and_serves_control_routes() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.sandbox.telegram_server",
        "--port",
        "0",
        "--token",
        "111:CLI",
        "--limits",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode()
        assert line.startswith("fake-telegram ready http://127.0.0.1:")
        base_url = line.split()[-1]
        root = base_url.removesuffix("/bot")
        async with aiohttp.ClientSession() as session:
            await (await session.post(f"{root}/_sandbox/users", json={"user_ids": [1, 2]})).read()
            async with session.post(f"{base_url}111:CLI/sendMessage", data={"chat_id": "2", "text": "hi"}) as sent:
                assert (await sent.json())["result"]["text"] == "hi"
            async with session.get(f"{root}/_sandbox/stats") as stats:
                assert (await stats.json())["sent"] == 1
            async with session.get(f"{root}/_sandbox/outbox", params={"after": "0"}) as outbox:
                assert [(m["chat_id"], m["text"]) for m in (await outbox.json())["messages"]] == [(2, "hi")]
    finally:
        process.terminate()
        await process.wait()


async def test_over_long_text_and_over_large_keyboards_are_refused_like_telegram(
    fake_telegram: FakeTelegram, bot
) -> None:
    fake_telegram.add_user(USER)
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(USER, "x" * 4097)
    await bot.send_message(USER, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")  # the markup does not count
    buttons = [[InlineKeyboardButton(str(i), callback_data=str(i))] for i in range(101)]
    with pytest.raises(BadRequest, match="Reply markup is too long"):
        await bot.send_message(USER, "menu", reply_markup=InlineKeyboardMarkup(buttons))
    await bot.send_message(USER, "menu", reply_markup=InlineKeyboardMarkup(buttons[:100]))
    assert len(fake_telegram.sent) == 2
